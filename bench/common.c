/*
 * bench/common.c - see common.h.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/common.h"
#include "shm/atomics.h"
#include "shm/futex.h"

int bench_pinned;

void bench_pin(int cpu)
{
	cpu_set_t s;

	if (!bench_pinned)
		return;
	CPU_ZERO(&s);
	CPU_SET(cpu, &s);
	sched_setaffinity(0, sizeof(s), &s);
}

pid_t bench_spawn(void)
{
	pid_t parent = getpid(), p = fork();

	if (p < 0) {
		perror("fork");
		exit(1);
	}
	if (p == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent) /* it died before the line above */
			_exit(1);
	}
	return p;
}

void bench_reap(pid_t p)
{
	bench_wait(p);
}

int bench_wait(pid_t p)
{
	int st;

	while (waitpid(p, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return !WIFEXITED(st) || WEXITSTATUS(st);
}

pid_t bench_child(int cpu, void (*fn)(void *), void *arg)
{
	pid_t p = bench_spawn();

	if (p == 0) {
		bench_pin(cpu);
		fn(arg);
		_exit(0);
	}
	return p;
}

void *bench_shalloc(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		perror("bench: mmap");
		exit(1);
	}
	return p;
}

void bench_shfree(void *p, size_t bytes)
{
	munmap(p, bytes);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

struct lat bench_summarize(uint64_t *s, size_t n)
{
	qsort(s, n, 8, cmp_u64);
	return (struct lat){ s[n / 2] / 1e3, s[n * 99 / 100] / 1e3, s[n * 999 / 1000] / 1e3,
			     s[n - 1] / 1e3 };
}

/* ---- message checking ------------------------------------------------------ */

static uint8_t msg_byte(uint64_t seq)
{
	return (uint8_t)(seq * 131 + 7);
}

void msg_fill(void *buf, uint64_t seq, size_t size)
{
	memset(buf, msg_byte(seq), size);
	memcpy(buf, &seq, size < 8 ? size : 8);
}

int msg_intact(const void *buf, size_t len, uint64_t seq, size_t size)
{
	const uint8_t *p = buf;
	uint64_t s;

	if (len != size || size < 9)
		return len == size && size >= 8 && !memcmp(p, &seq, 8);
	memcpy(&s, p, 8);
	/* all the rest one byte: it equals its neighbour all along */
	return s == seq && p[8] == msg_byte(seq) && !memcmp(p + 8, p + 9, size - 9);
}

void msg_check_init(struct msg_check *c, uint64_t n, size_t size)
{
	*c = (struct msg_check){ .n = n, .size = size };
	c->seen = calloc((n + 63) / 64, 8);
	if (!c->seen) {
		perror("bench: calloc");
		exit(1);
	}
}

void msg_check(struct msg_check *c, const void *buf, size_t len)
{
	uint64_t t = clock_mono_ns(), seq = UINT64_MAX;

	if (!c->recv++)
		c->t_first = t;
	c->t_last = t;
	if (len >= 8)
		memcpy(&seq, buf, 8);
	if (seq >= c->n || !msg_intact(buf, len, seq, c->size)) {
		c->corrupt++;
		return;
	}
	if (c->seen[seq / 64] & (1ull << (seq % 64))) {
		c->dup++;
		return;
	}
	c->seen[seq / 64] |= 1ull << (seq % 64);
	c->distinct++;
	if (seq + 1 < c->top)
		c->reord++; /* arrived after a later one */
	else
		c->top = seq + 1;
}

void msg_check_done(struct msg_check *c, uint64_t sent, struct oneway *o)
{
	double s = (double)(c->t_last - c->t_first) / 1e9;

	*o = (struct oneway){ .msgs_s = s > 0 ? (double)c->recv / s : 0, .sent = sent,
			      .recv = c->recv, .lost = sent > c->distinct ? sent - c->distinct : 0,
			      .dup = c->dup, .reord = c->reord, .corrupt = c->corrupt };
	free(c->seen);
	c->seen = NULL;
}

/* ---- kernel channels: socket pairs and pipes ------------------------------- */

#define CHAN_MAX 65536

struct chan_end {
	int rd, wr;
};

struct chan_run {
	enum chan_kind kind;
	struct chan_end e[2]; /* e[0]: sender / pinger, e[1]: receiver / echo */
	uint32_t size;
	uint64_t n, sent, bad;
	struct oneway o;
	uint64_t lat[]; /* round-trip samples */
};

static void chan_open(struct chan_run *r, int duplex)
{
	int a[2], b[2] = { -1, -1 }, rc;

	if (r->kind == CHAN_PIPE) {
		rc = pipe(a);
		if (!rc && duplex)
			rc = pipe(b);
		r->e[0] = (struct chan_end){ b[0], a[1] };
		r->e[1] = (struct chan_end){ a[0], b[1] };
	} else {
		rc = socketpair(AF_UNIX, r->kind == CHAN_STREAM ? SOCK_STREAM : SOCK_SEQPACKET, 0, a);
		r->e[0] = (struct chan_end){ a[0], a[0] };
		r->e[1] = (struct chan_end){ a[1], a[1] };
	}
	if (rc < 0) {
		perror("bench: socketpair/pipe");
		exit(1);
	}
}

/* (r lives in shared memory: the fds in it stay as the parent made them) */
static void chan_close_end(struct chan_end e)
{
	if (e.rd >= 0)
		close(e.rd);
	if (e.wr >= 0 && e.wr != e.rd)
		close(e.wr);
}

static int chan_send(enum chan_kind k, int fd, const uint8_t *buf, size_t size)
{
	size_t done = 0;

	if (k == CHAN_SEQPACKET)
		return send(fd, buf, size, 0) == (ssize_t)size ? 0 : -1;
	while (done < size) { /* a stream: the frame may go in pieces */
		ssize_t w = write(fd, buf + done, size - done);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		done += (size_t)w;
	}
	return 0;
}

/* One message into buf (CHAN_MAX + 1 bytes): its length, 0 at the end. */
static ssize_t chan_recv(enum chan_kind k, int fd, uint8_t *buf, size_t size)
{
	size_t done = 0;

	if (k == CHAN_SEQPACKET) /* a longer record shows as a wrong length */
		return recv(fd, buf, CHAN_MAX + 1, 0);
	while (done < size) { /* a stream: one frame is `size` bytes */
		ssize_t r = read(fd, buf + done, size - done);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return done ? (ssize_t)done : r;
		done += (size_t)r;
	}
	return (ssize_t)done;
}

static void oneway_sender(void *arg)
{
	struct chan_run *r = arg;
	uint8_t *buf = malloc(CHAN_MAX);

	chan_close_end(r->e[1]);
	for (uint64_t seq = 0; buf && seq < r->n; seq++) {
		msg_fill(buf, seq, r->size);
		if (chan_send(r->kind, r->e[0].wr, buf, r->size) < 0)
			break;
		r->sent = seq + 1;
	}
	chan_close_end(r->e[0]);
	free(buf);
}

static void oneway_receiver(void *arg)
{
	struct chan_run *r = arg;
	uint8_t *buf = malloc(CHAN_MAX + 1);
	struct msg_check c;
	ssize_t len;

	chan_close_end(r->e[0]);
	msg_check_init(&c, r->n, r->size);
	/* until the sender closes its end: anything extra shows too */
	while (buf && (len = chan_recv(r->kind, r->e[1].rd, buf, r->size)) > 0)
		msg_check(&c, buf, (size_t)len);
	msg_check_done(&c, r->n, &r->o);
	free(buf);
}

struct oneway chan_oneway(enum chan_kind k, uint32_t size, uint64_t n)
{
	struct chan_run *r = bench_shalloc(sizeof(*r));
	struct oneway o;
	pid_t tx, rx;

	r->kind = k;
	r->size = size;
	r->n = n;
	chan_open(r, 0);
	rx = bench_child(1, oneway_receiver, r);
	tx = bench_child(0, oneway_sender, r);
	chan_close_end(r->e[0]);
	chan_close_end(r->e[1]);
	bench_wait(tx);
	bench_wait(rx);
	o = r->o;
	o.sent = r->sent; /* lost counts from the n asked: a sender's failure shows */
	bench_shfree(r, sizeof(*r));
	return o;
}

static void rtt_echo(void *arg)
{
	struct chan_run *r = arg;
	uint8_t buf[CHAN_MAX + 1];
	ssize_t len;

	chan_close_end(r->e[0]);
	while ((len = chan_recv(r->kind, r->e[1].rd, buf, 64)) > 0)
		if (chan_send(r->kind, r->e[1].wr, buf, (size_t)len) < 0)
			break;
	chan_close_end(r->e[1]);
}

static void rtt_pinger(void *arg)
{
	struct chan_run *r = arg;
	uint8_t out[64], in[CHAN_MAX + 1];

	chan_close_end(r->e[1]);
	r->bad = r->n;
	for (uint64_t i = 0; i < r->n + 100; i++) {
		uint64_t t0 = clock_mono_ns();
		ssize_t len;

		msg_fill(out, i, sizeof(out));
		if (chan_send(r->kind, r->e[0].wr, out, sizeof(out)) < 0)
			break;
		len = chan_recv(r->kind, r->e[0].rd, in, sizeof(out));
		if (len <= 0)
			break;
		if (i < 100) /* warm-up dropped */
			continue;
		r->lat[i - 100] = clock_mono_ns() - t0;
		if (msg_intact(in, (size_t)len, i, sizeof(out)))
			r->bad--;
	}
	chan_close_end(r->e[0]);
}

struct lat chan_rtt(enum chan_kind k, size_t n, uint64_t *bad)
{
	size_t bytes = sizeof(struct chan_run) + n * 8;
	struct chan_run *r = bench_shalloc(bytes);
	struct lat l;
	pid_t echo, ping;

	r->kind = k;
	r->n = n;
	chan_open(r, 1);
	echo = bench_child(1, rtt_echo, r);
	ping = bench_child(0, rtt_pinger, r);
	chan_close_end(r->e[0]);
	chan_close_end(r->e[1]);
	bench_wait(ping);
	bench_wait(echo);
	l = bench_summarize(r->lat, n);
	*bad = r->bad;
	bench_shfree(r, bytes);
	return l;
}

struct fpp {
	uint32_t turn;
	uint32_t pad;
	uint64_t lat[];
};

/* Wait until *w == want, sleeping on the futex (no spin): the bare cost
 * of a cross-process blocking hand-off. */
static void fpp_wait(uint32_t *w, uint32_t want)
{
	uint32_t v;

	while ((v = load_acquire(w)) != want)
		futex_wait(w, v, NULL);
}

struct lat futex_pingpong(size_t n)
{
	size_t bytes = sizeof(struct fpp) + (n + 100) * 8;
	struct fpp *f = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct lat l;
	pid_t echo;

	if (f == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	f->turn = 0;
	echo = bench_spawn();
	if (echo == 0) {
		bench_pin(1);
		for (uint32_t i = 0; i < n + 100; i++) {
			fpp_wait(&f->turn, 2 * i + 1);
			store_release(&f->turn, 2 * i + 2);
			futex_wake(&f->turn, 1);
		}
		_exit(0);
	}
	bench_pin(0);
	for (uint32_t i = 0; i < n + 100; i++) {
		uint64_t t0 = clock_mono_ns();

		store_release(&f->turn, 2 * i + 1);
		futex_wake(&f->turn, 1);
		fpp_wait(&f->turn, 2 * i + 2);
		if (i >= 100)
			f->lat[i - 100] = clock_mono_ns() - t0;
	}
	bench_reap(echo);
	l = bench_summarize(f->lat, n);
	munmap(f, bytes);
	return l;
}
