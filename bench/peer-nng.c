/*
 * bench/peer-nng.c - nng (nanomsg-next-gen) over ipc:// (a Unix socket in
 * a temporary directory), the other broker-less messaging library a user
 * might pick instead of shmb, between two processes:
 *
 *   oneway: push0 (dials) -> pull0 (listens), 64 B, 1 KiB and 64 KiB
 *           messages; push0 blocks when no pipe can take a message (it
 *           never drops), and the receiver checks every message for order
 *           and content anyway
 *   rtt:    64 B req0 -> rep0 round trips, every reply checked
 *
 * Each side opens its socket after fork() and after pinning itself, so
 * nng's thread pool starts on that side's CPU.  nng has no linger: a
 * socket closed with messages still queued drops them, so the sender
 * stays open until the receiver is done (a pipe tells it).  Blocking
 * calls throughout: the transport is "nng ipc" (compared with "shmb
 * block").
 */
#include <errno.h>
#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/common.h"
#include "bench/result.h"
#include "shm/futex.h"

#define NAME "nng ipc"
#define MSG_MAX 65536
#define NNG_BUF 1000        /* messages each side queues (send-/recv-buffer) */
#define TIMEOUT_MS 10000    /* a side that hears nothing this long gives up */

static char dir[64];

struct nrun {
	char url[128];
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

static void die(const char *what, const char *url, int rv)
{
	fprintf(stderr, "peer-nng: %s %s: %s\n", what, url, nng_strerror(rv));
	_exit(1);
}

/* Opens a socket with open(), with the buffers and timeouts of this
 * program, listening on or dialling url. */
static nng_socket nsock(int (*open)(nng_socket *), const char *url, int listen)
{
	nng_socket s;
	int rv = open(&s);

	if (rv)
		die("open", url, rv);
	/* not every protocol has both buffers: the ones it has are set */
	nng_socket_set_int(s, NNG_OPT_SENDBUF, NNG_BUF);
	nng_socket_set_int(s, NNG_OPT_RECVBUF, NNG_BUF);
	nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, TIMEOUT_MS);
	nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, TIMEOUT_MS);
	/* the dialler may come first: it keeps trying in the background */
	rv = listen ? nng_listen(s, url, NULL, 0) : nng_dial(s, url, NULL, NNG_FLAG_NONBLOCK);
	if (rv)
		die(listen ? "listen" : "dial", url, rv);
	return s;
}

static void wait_done(struct nrun *r)
{
	char c;

	close(r->done[1]);
	while (read(r->done[0], &c, 1) < 0 && errno == EINTR)
		;
}

/* ---- one-way: push0 -> pull0 ------------------------------------------------- */

static void push_side(void *arg)
{
	struct nrun *r = arg;
	nng_socket s = nsock(nng_push0_open, r->url, 0);
	uint8_t *buf = malloc(MSG_MAX);

	for (uint64_t seq = 0; buf && seq < r->n; seq++) {
		msg_fill(buf, seq, r->size);
		if (nng_send(s, buf, r->size, 0))
			break;
		r->sent = seq + 1;
	}
	wait_done(r); /* closing now would throw queued messages away */
	nng_close(s);
	free(buf);
}

static void pull_side(void *arg)
{
	struct nrun *r = arg;
	nng_socket s = nsock(nng_pull0_open, r->url, 1);
	uint8_t *buf = malloc(MSG_MAX + 1);
	struct msg_check c;
	size_t len;

	msg_check_init(&c, r->n, r->size);
	/* n messages, or silence for TIMEOUT_MS: what is missing then shows */
	while (buf && c.recv < r->n && (len = MSG_MAX + 1, !nng_recv(s, buf, &len, 0)))
		msg_check(&c, buf, len);
	msg_check_done(&c, r->n, &r->o);
	nng_close(s);
	free(buf);
}

/* ---- round trip: req0 -> rep0 ------------------------------------------------ */

static void rep_side(void *arg)
{
	struct nrun *r = arg;
	nng_socket s = nsock(nng_rep0_open, r->url, 1);
	uint8_t buf[MSG_MAX + 1];

	for (uint64_t i = 0; i < r->n + 100; i++) {
		size_t len = sizeof(buf);

		if (nng_recv(s, buf, &len, 0) || nng_send(s, buf, len, 0))
			break;
	}
	wait_done(r); /* the last reply must leave before the close */
	nng_close(s);
}

static void req_side(void *arg)
{
	struct nrun *r = arg;
	nng_socket s = nsock(nng_req0_open, r->url, 0);
	uint8_t out[64], in[MSG_MAX + 1];

	r->bad = r->n;
	for (uint64_t i = 0; i < r->n + 100; i++) {
		uint64_t t0 = clock_mono_ns();
		size_t len = sizeof(in);

		msg_fill(out, i, sizeof(out));
		if (nng_send(s, out, sizeof(out), 0) || nng_recv(s, in, &len, 0))
			break;
		if (i < 100) /* warm-up (and the connection) dropped */
			continue;
		r->lat[i - 100] = clock_mono_ns() - t0;
		if (msg_intact(in, len, i, sizeof(out)))
			r->bad--;
	}
	close(r->done[1]); /* done: the replier may close */
	nng_close(s);
}

/* ---- running ----------------------------------------------------------------- */

static struct nrun *nrun_new(const char *what, uint32_t size, uint64_t n, size_t bytes)
{
	struct nrun *r = bench_shalloc(bytes);

	snprintf(r->url, sizeof(r->url), "ipc://%s/%s", dir, what);
	r->size = size;
	r->n = n;
	if (pipe(r->done) < 0) {
		perror("peer-nng: pipe");
		exit(1);
	}
	return r;
}

/* a listens on CPU 1, b dials on CPU 0; done[0] sees EOF once neither
 * child holds done[1] any more */
static void nrun_go(struct nrun *r, void (*b)(void *), void (*a)(void *))
{
	pid_t pa = bench_child(1, a, r), pb = bench_child(0, b, r);

	close(r->done[0]);
	close(r->done[1]);
	bench_wait(pa);
	bench_wait(pb);
}

static void oneway(uint32_t size, uint64_t n, int rep)
{
	struct nrun *r = nrun_new("ow", size, n, sizeof(struct nrun));
	struct bres b = bres_new(NAME, "oneway", size, rep);
	char extra[96];

	nrun_go(r, push_side, pull_side);
	snprintf(extra, sizeof(extra), "push0-pull0 buf=%d%s", NNG_BUF, r->o.corrupt ? " corrupt" : "");
	bres_take(&b, &r->o);
	b.sent = r->sent; /* what the sender says it sent */
	b.extra = extra;
	bres_emit(&b);
	bench_shfree(r, sizeof(struct nrun));
}

static void rtt(size_t n, int rep)
{
	size_t bytes = sizeof(struct nrun) + n * 8;
	struct nrun *r = nrun_new("rtt", 64, n, bytes);
	struct bres b = bres_new(NAME, "rtt", 64, rep);

	nrun_go(r, req_side, rep_side);
	b.lat = bench_summarize(r->lat, n);
	b.sent = n;
	b.recv = n - r->bad;
	b.lost = r->bad;
	b.extra = "req0-rep0";
	bres_emit(&b);
	bench_shfree(r, bytes);
}

static void run(int pinned)
{
	bench_pinned = pinned;
	for (int rep = 0; rep < bench_reps(); rep++) {
		oneway(64, bench_n(30000), rep);
		oneway(1024, bench_n(20000), rep);
		oneway(65536, bench_n(3000), rep);
		rtt(bench_n(20000), rep);
	}
}

int main(void)
{
	strcpy(dir, "/tmp/shmb-bench-nng-XXXXXX");
	if (!mkdtemp(dir)) {
		perror("peer-nng: mkdtemp");
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
		fprintf(stderr, "peer-nng: pinned runs skipped: fewer than 2 CPUs online\n");
	return 0;
}
