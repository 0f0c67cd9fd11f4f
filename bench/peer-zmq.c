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
 *   fanout: 1 XPUB (binds) -> 8 SUB processes, 64 B, unpinned; both marks
 *           0 (unlimited: PUB drops at its mark, it never blocks), and
 *           the publisher starts only once all 8 subscriptions have
 *           reached it (XPUB_VERBOSE shows each one), since PUB drops
 *           whatever it sends before a subscriber has joined
 *   fanin:  8 PUSH processes (connect) -> 1 PULL (binds), 64 B, unpinned
 *   Fan workloads check every message per publisher (its id in bytes
 *   8-11): in order, none missing, none twice, as bench-broker's stream().
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
#define FAN 8               /* subscribers of fanout, publishers of fanin */
#define FAN_SIZE 64

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
	snprintf(path, sizeof(path), "%s/fan", dir);
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
		uint64_t t0 = clock_mono_ns();
		int len;

		msg_fill(out, i, sizeof(out));
		if (zmq_send(s, out, sizeof(out), 0) != (int)sizeof(out))
			break;
		len = zmq_recv(s, in, sizeof(in), 0);
		if (len < 0)
			break;
		if (i < 100) /* warm-up (and the connection) dropped */
			continue;
		r->lat[i - 100] = clock_mono_ns() - t0;
		if (msg_intact(in, (size_t)len, i, sizeof(out)))
			r->bad--;
	}
	zclose(ctx, s);
}

/* ---- fan-out: XPUB -> 8 SUB; fan-in: 8 PUSH -> PULL -------------------------- */

struct fan {
	char ep[128];
	int npub, nsub;
	uint64_t n;          /* messages each publisher sends */
	int done[2];         /* EOF on done[0]: every receiver has finished */
	volatile uint32_t ready, go;
	uint64_t t_start;    /* the publishers' start */
	uint64_t t_end[FAN]; /* each subscriber's last message */
	uint64_t got[FAN], lost[FAN], dup[FAN], reord[FAN], sent[FAN];
};

static int fan_idx; /* the child's index, set by the parent before each fork */

/* msg_fill's message with the publisher's id over bytes 8-11 */
static void fan_fill(uint8_t *buf, int id, uint64_t seq)
{
	msg_fill(buf, seq, FAN_SIZE);
	memcpy(buf + 8, &id, 4);
}

/* 1 when buf is intact; *id and *seq say whose message and which */
static int fan_intact(const uint8_t *buf, int len, uint32_t *id, uint64_t *seq)
{
	uint8_t m[FAN_SIZE];

	if (len != FAN_SIZE)
		return 0;
	memcpy(m, buf, FAN_SIZE);
	memcpy(id, m + 8, 4);
	memcpy(seq, m, 8);
	memset(m + 8, m[12], 4); /* the id's bytes back to the pattern */
	return msg_intact(m, FAN_SIZE, *seq, FAN_SIZE);
}

static void fan_ready_wait(struct fan *f)
{
	__atomic_add_fetch(&f->ready, 1, __ATOMIC_SEQ_CST);
	while (!__atomic_load_n(&f->go, __ATOMIC_ACQUIRE))
		usleep(50);
}

static void fan_wait_done(struct fan *f)
{
	char c;

	close(f->done[1]);
	while (read(f->done[0], &c, 1) < 0 && errno == EINTR)
		;
}

/* Receives npub * n messages (or until TIMEOUT_MS of silence), checking
 * each per publisher as bench-broker's stream() does. */
static void fan_receive(struct fan *f, void *s, int k)
{
	uint64_t next[FAN] = { 0 }, total = 0, want = f->n * (uint64_t)f->npub;
	uint8_t buf[FAN_SIZE + 1];
	int len;

	while (total < want && (len = zmq_recv(s, buf, sizeof(buf), 0)) >= 0) {
		uint64_t v;
		uint32_t p;

		if (!fan_intact(buf, len, &p, &v) || p >= (uint32_t)f->npub)
			f->reord[k]++;
		else if (v < next[p])
			f->dup[k]++;
		else {
			if (v > next[p])
				f->reord[k]++;
			next[p] = v + 1;
		}
		total++;
	}
	f->t_end[k] = clock_mono_ns();
	f->got[k] = total;
	for (int p = 0; p < f->npub; p++)
		f->lost[k] += f->n - (next[p] < f->n ? next[p] : f->n);
}

static void fan_send(struct fan *f, void *s, int id)
{
	uint8_t buf[FAN_SIZE];

	for (uint64_t seq = 0; seq < f->n; seq++) {
		fan_fill(buf, id, seq);
		if (zmq_send(s, buf, FAN_SIZE, 0) != FAN_SIZE)
			break;
		f->sent[id] = seq + 1;
	}
}

static void xpub_side(void *arg)
{
	struct fan *f = arg;
	void *ctx = zmq_ctx_new(), *s = zsock(ctx, ZMQ_XPUB);
	int zero = 0, one = 1, joined = 0;
	uint64_t end = clock_mono_ns() + 10000000000ull;
	uint8_t sub[64];

	zmq_setsockopt(s, ZMQ_SNDHWM, &zero, sizeof(zero));
	zmq_setsockopt(s, ZMQ_XPUB_VERBOSE, &one, sizeof(one));
	if (zmq_bind(s, f->ep) < 0) {
		fprintf(stderr, "peer-zmq: bind %s: %s\n", f->ep, zmq_strerror(errno));
		_exit(1);
	}
	/* one subscription message (1, topic "") per SUB that has joined */
	while (joined < f->nsub && clock_mono_ns() < end)
		if (zmq_recv(s, sub, sizeof(sub), 0) >= 1 && sub[0] == 1)
			joined++;
	if (joined < f->nsub)
		fprintf(stderr, "peer-zmq: fanout: %d of %d subscribers joined\n", joined, f->nsub);
	fan_ready_wait(f);
	fan_send(f, s, 0);
	fan_wait_done(f);
	zclose(ctx, s);
}

static void sub_side(void *arg)
{
	struct fan *f = arg;
	void *ctx = zmq_ctx_new(), *s = zsock(ctx, ZMQ_SUB);
	int zero = 0, k = fan_idx;

	zmq_setsockopt(s, ZMQ_RCVHWM, &zero, sizeof(zero));
	zmq_setsockopt(s, ZMQ_SUBSCRIBE, "", 0);
	if (zmq_connect(s, f->ep) < 0)
		fprintf(stderr, "peer-zmq: connect %s: %s\n", f->ep, zmq_strerror(errno));
	__atomic_add_fetch(&f->ready, 1, __ATOMIC_SEQ_CST);
	fan_receive(f, s, k);
	zclose(ctx, s);
}

static void fpush_side(void *arg)
{
	struct fan *f = arg;
	void *ctx = zmq_ctx_new(), *s = zsock(ctx, ZMQ_PUSH);

	if (zmq_connect(s, f->ep) < 0)
		fprintf(stderr, "peer-zmq: connect %s: %s\n", f->ep, zmq_strerror(errno));
	fan_ready_wait(f);
	fan_send(f, s, fan_idx);
	fan_wait_done(f); /* closing now could throw queued messages away */
	zclose(ctx, s);
}

static void fpull_side(void *arg)
{
	struct fan *f = arg;
	void *ctx = zmq_ctx_new(), *s = zsock(ctx, ZMQ_PULL);

	if (zmq_bind(s, f->ep) < 0) {
		fprintf(stderr, "peer-zmq: bind %s: %s\n", f->ep, zmq_strerror(errno));
		_exit(1);
	}
	__atomic_add_fetch(&f->ready, 1, __ATOMIC_SEQ_CST);
	fan_receive(f, s, 0);
	zclose(ctx, s);
}

/* npub publishers -> nsub subscribers, n messages each publisher; the
 * publishers start together once every side is ready.  Fills b as
 * bench-broker's stream() does. */
static void fan_run(struct fan *f, void (*pub)(void *), void (*sub)(void *), struct bres *b)
{
	pid_t subs[FAN], pubs[FAN];
	uint64_t end = 0, deadline = clock_mono_ns() + 20000000000ull;

	if (pipe(f->done) < 0) {
		perror("peer-zmq: pipe");
		exit(1);
	}
	for (int k = 0; k < f->nsub; k++) {
		fan_idx = k;
		subs[k] = bench_child(1, sub, f);
	}
	for (int j = 0; j < f->npub; j++) {
		fan_idx = j;
		pubs[j] = bench_child(0, pub, f);
	}
	close(f->done[0]);
	close(f->done[1]);
	while (__atomic_load_n(&f->ready, __ATOMIC_ACQUIRE) < (uint32_t)(f->npub + f->nsub) &&
	       clock_mono_ns() < deadline)
		usleep(100);
	f->t_start = clock_mono_ns();
	__atomic_store_n(&f->go, 1, __ATOMIC_RELEASE);
	for (int j = 0; j < f->npub; j++)
		bench_wait(pubs[j]);
	for (int k = 0; k < f->nsub; k++)
		bench_wait(subs[k]);
	for (int j = 0; j < f->npub; j++)
		b->sent += f->sent[j];
	for (int k = 0; k < f->nsub; k++) {
		end = f->t_end[k] > end ? f->t_end[k] : end;
		b->recv += f->got[k];
		b->lost += f->lost[k];
		b->dup += f->dup[k];
		b->reord += f->reord[k];
	}
	b->sent *= (uint64_t)f->nsub; /* each message is owed to every subscriber */
	b->msgs_s = end > f->t_start ? (double)b->recv / ((double)(end - f->t_start) / 1e9) : 0;
}

static void fan(const char *workload, int npub, int nsub, uint64_t n, int rep)
{
	struct fan *f = bench_shalloc(sizeof(*f));
	struct bres b = bres_new(NAME, workload, FAN_SIZE, rep);

	snprintf(f->ep, sizeof(f->ep), "ipc://%s/fan", dir);
	f->npub = npub;
	f->nsub = nsub;
	f->n = n;
	if (nsub > 1) {
		b.extra = "xpub-sub hwm=0";
		fan_run(f, xpub_side, sub_side, &b);
	} else {
		b.extra = "push-pull";
		fan_run(f, fpush_side, fpull_side, &b);
	}
	bres_emit(&b);
	bench_shfree(f, sizeof(*f));
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
	bres_take(&b, &r->o);
	b.sent = r->sent; /* what the sender says it sent */
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
		/* like shmb's: unpinned only (9 processes on 2 CPUs) */
		if (!pinned) {
			fan("fanout", 1, FAN, bench_n(200000), rep);
			fan("fanin", FAN, 1, bench_n(25000), rep);
		}
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
