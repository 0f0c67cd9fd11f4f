/*
 * bench/peer-zmq.c - ZeroMQ (libzmq) over ipc:// (a Unix socket in a
 * temporary directory), the broker-less messaging library a user might
 * pick instead of shmb, between two processes:
 *
 *   oneway: PUSH (connects) -> PULL (binds), 64 B, 1 KiB and 64 KiB
 *           messages; PUSH blocks at its high-water mark rather than drop
 *           (both marks set to ZMQ_HWM explicitly), and the receiver
 *           checks every message for order and content anyway
 *   rtt:    64 B REQ -> REP round trips, every reply checked
 *
 * Each side makes its own context after fork() (a context does not
 * survive one), after pinning itself, so ZeroMQ's I/O thread runs on the
 * same CPU as its side.  The sender keeps its socket open until the
 * receiver is done (a pipe tells it).  Blocking calls throughout: the
 * transport is "zmq ipc" (compared with "shmb block").
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "bench/common.h"
#include "bench/result.h"
#include "shm/futex.h"

#define NAME "zmq ipc"
#define MSG_MAX 65536
#define ZMQ_HWM 1000        /* messages each side queues before PUSH blocks */
#define TIMEOUT_MS 2000     /* a side that hears nothing this long gives up */

static char dir[64];

struct zrun {
	char ep[128];
	uint32_t size;
	uint64_t n, sent, bad;
	int done[2]; /* EOF on done[0]: the receiver has finished */
	struct oneway o;
	uint64_t lat[];
};

static void cleanup(void)
{
	char path[128];

	if (!dir[0])
		return;
	snprintf(path, sizeof(path), "%s/ow", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/rtt", dir);
	unlink(path);
	rmdir(dir);
	dir[0] = 0;
}

static void on_signal(int sig)
{
	cleanup();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void *zsock(void *ctx, int type)
{
	void *s = zmq_socket(ctx, type);
	int hwm = ZMQ_HWM, tmo = TIMEOUT_MS;

	if (!s) {
		fprintf(stderr, "peer-zmq: zmq_socket: %s\n", zmq_strerror(errno));
		_exit(1);
	}
	zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof(hwm));
	zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof(hwm));
	zmq_setsockopt(s, ZMQ_SNDTIMEO, &tmo, sizeof(tmo));
	zmq_setsockopt(s, ZMQ_RCVTIMEO, &tmo, sizeof(tmo));
	return s;
}

static void zclose(void *ctx, void *s)
{
	int linger = 0;

	zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
	zmq_close(s);
	zmq_ctx_term(ctx);
}

static void wait_done(struct zrun *r)
{
	char c;

	close(r->done[1]);
	while (read(r->done[0], &c, 1) < 0 && errno == EINTR)
		;
}

/* ---- one-way: PUSH -> PULL --------------------------------------------------- */

static void push_side(void *arg)
{
	struct zrun *r = arg;
	void *ctx = zmq_ctx_new(), *s = zsock(ctx, ZMQ_PUSH);
	uint8_t *buf = malloc(MSG_MAX);

	if (zmq_connect(s, r->ep) < 0)
		fprintf(stderr, "peer-zmq: connect %s: %s\n", r->ep, zmq_strerror(errno));
	for (uint64_t seq = 0; buf && seq < r->n; seq++) {
		msg_fill(buf, seq, r->size);
		if (zmq_send(s, buf, r->size, 0) != (int)r->size)
			break;
		r->sent = seq + 1;
	}
	wait_done(r); /* closing now could throw queued messages away */
	zclose(ctx, s);
	free(buf);
}

static void pull_side(void *arg)
{
	struct zrun *r = arg;
	void *ctx = zmq_ctx_new(), *s = zsock(ctx, ZMQ_PULL);
	uint8_t *buf = malloc(MSG_MAX + 1);
	struct msg_check c;
	int len;

	if (zmq_bind(s, r->ep) < 0) {
		fprintf(stderr, "peer-zmq: bind %s: %s\n", r->ep, zmq_strerror(errno));
		_exit(1);
	}
	msg_check_init(&c, r->n, r->size);
	/* n messages, or silence for TIMEOUT_MS: what is missing then shows */
	while (buf && c.recv < r->n && (len = zmq_recv(s, buf, MSG_MAX + 1, 0)) >= 0)
		msg_check(&c, buf, (size_t)len);
	msg_check_done(&c, r->n, &r->o);
	zclose(ctx, s);
	free(buf);
}

/* ---- round trip: REQ -> REP -------------------------------------------------- */

static void rep_side(void *arg)
{
	struct zrun *r = arg;
	void *ctx = zmq_ctx_new(), *s = zsock(ctx, ZMQ_REP);
	uint8_t buf[MSG_MAX + 1];
	int len;

	if (zmq_bind(s, r->ep) < 0) {
		fprintf(stderr, "peer-zmq: bind %s: %s\n", r->ep, zmq_strerror(errno));
		_exit(1);
	}
	for (uint64_t i = 0; i < r->n + 100; i++) {
		len = zmq_recv(s, buf, sizeof(buf), 0);
		if (len < 0 || zmq_send(s, buf, (size_t)len, 0) != len)
			break;
	}
	zclose(ctx, s);
}

static void req_side(void *arg)
{
	struct zrun *r = arg;
	void *ctx = zmq_ctx_new(), *s = zsock(ctx, ZMQ_REQ);
	uint8_t out[64], in[MSG_MAX + 1];

	r->bad = r->n;
	if (zmq_connect(s, r->ep) < 0)
		fprintf(stderr, "peer-zmq: connect %s: %s\n", r->ep, zmq_strerror(errno));
	for (uint64_t i = 0; i < r->n + 100; i++) {
		uint64_t t0 = mono_ns();
		int len;

		msg_fill(out, i, sizeof(out));
		if (zmq_send(s, out, sizeof(out), 0) != (int)sizeof(out))
			break;
		len = zmq_recv(s, in, sizeof(in), 0);
		if (len < 0)
			break;
		if (i < 100) /* warm-up (and the connection) dropped */
			continue;
		r->lat[i - 100] = mono_ns() - t0;
		if (msg_intact(in, (size_t)len, i, sizeof(out)))
			r->bad--;
	}
	zclose(ctx, s);
}

/* ---- running ----------------------------------------------------------------- */

static struct zrun *zrun_new(const char *what, uint32_t size, uint64_t n, size_t bytes)
{
	struct zrun *r = bench_shalloc(bytes);

	snprintf(r->ep, sizeof(r->ep), "ipc://%s/%s", dir, what);
	r->size = size;
	r->n = n;
	if (pipe(r->done) < 0) {
		perror("peer-zmq: pipe");
		exit(1);
	}
	return r;
}

/* rx binds, tx connects: rx on CPU 1, tx on CPU 0; rx's end makes tx stop */
static void zrun_go(struct zrun *r, void (*tx)(void *), void (*rx)(void *))
{
	pid_t prx = bench_child(1, rx, r), ptx = bench_child(0, tx, r);

	close(r->done[0]);
	close(r->done[1]);
	bench_wait(prx);
	bench_wait(ptx);
}

static void oneway(uint32_t size, uint64_t n, int rep)
{
	struct zrun *r = zrun_new("ow", size, n, sizeof(struct zrun));
	struct bres b = bres_new(NAME, "oneway", size, rep);
	char extra[96];

	zrun_go(r, push_side, pull_side);
	snprintf(extra, sizeof(extra), "push-pull hwm=%d%s", ZMQ_HWM, r->o.corrupt ? " corrupt" : "");
	b.msgs_s = r->o.msgs_s;
	b.sent = r->sent;
	b.recv = r->o.recv;
	b.lost = r->o.lost;
	b.dup = r->o.dup;
	b.reord = r->o.reord;
	b.extra = extra;
	bres_emit(&b);
	bench_shfree(r, sizeof(struct zrun));
}

static void rtt(size_t n, int rep)
{
	size_t bytes = sizeof(struct zrun) + n * 8;
	struct zrun *r = zrun_new("rtt", 64, n, bytes);
	struct bres b = bres_new(NAME, "rtt", 64, rep);

	zrun_go(r, req_side, rep_side);
	b.lat = bench_summarize(r->lat, n);
	b.sent = n;
	b.recv = n - r->bad;
	b.lost = r->bad;
	b.extra = "req-rep";
	bres_emit(&b);
	bench_shfree(r, bytes);
}

static void run(int pinned)
{
	bench_pinned = pinned;
	for (int rep = 0; rep < bench_reps(); rep++) {
		oneway(64, bench_n(300000), rep);
		oneway(1024, bench_n(80000), rep);
		oneway(65536, bench_n(4000), rep);
		rtt(bench_n(20000), rep);
	}
}

int main(void)
{
	strcpy(dir, "/tmp/shmb-bench-zmq-XXXXXX");
	if (!mkdtemp(dir)) {
		perror("peer-zmq: mkdtemp");
		return 1;
	}
	atexit(cleanup);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGHUP, on_signal);
	signal(SIGPIPE, on_signal);
	run(0);
	if (sysconf(_SC_NPROCESSORS_ONLN) >= 2)
		run(1);
	else
		fprintf(stderr, "peer-zmq: pinned runs skipped: fewer than 2 CPUs online\n");
	return 0;
}
