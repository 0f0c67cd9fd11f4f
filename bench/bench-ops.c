/*
 * bench/bench-ops.c - shmb as an operator sees it: how its cost grows with
 * the sessions it holds, and what a crash costs.
 *
 *   scale-lat   64 B round trips between one active pair while N idle
 *               sessions (1, 10, 100, 1000; 4 KiB rings) stay attached
 *   scale-cpu   the broker's CPU time while those N sit idle and while
 *               the pair runs, and its memory per session (resident
 *               memory of shmbd, and tmpfs blocks of the session files)
 *   recovery-sub     a 10^5-message stream paced at 20 000 msgs/s; the
 *                    subscriber (a named session) SIGKILLed 20 times and
 *                    started again each time
 *   recovery-broker  the same stream; the broker SIGKILLed 5 times and
 *                    started again on the same directory each time
 *
 * Recovery counts every message by its sequence: missing, received more
 * than once, out of order within one run of the subscriber, and the time
 * from a restart (the subscriber's fork, the broker's exec) to the next
 * message the subscriber gets.  Mosquitto runs the same scenario
 * (bench/peer-mosquitto.c).  Result lines: bench/result.h.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "bench/common.h"
#include "bench/result.h"
#include "bench/shmbd.h"
#include "shm/atomics.h"
#include "shm/futex.h"
#include "shmb.h"

/* ---- scale ----------------------------------------------------------------- */

struct hold {
	uint32_t opened, stop;
};

/* One process holding n idle sessions attached, until told to stop. */
static pid_t holder(struct hold *h, unsigned n)
{
	pid_t p = bench_spawn();

	if (p == 0) {
		struct shmb_connect_opts co = { .dir = bench_dir };
		struct shmb_session_opts so = { .rx_ring_size = 4096, .tx_ring_size = 4096,
						.flags = SHMB_FRESH };
		struct shmb_session **s = calloc(n, sizeof(*s));
		struct shmb_client *c;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (!s || shmb_connect(&co, &c) < 0)
			_exit(1);
		for (unsigned i = 0; i < n; i++) {
			char name[32];

			snprintf(name, sizeof(name), "idle-%u", i);
			if (shmb_session_open(c, name, &so, &s[i]) < 0 || shmb_subscribe(s[i], "idle") < 0)
				_exit(2);
			store_release(&h->opened, i + 1);
		}
		while (!load_acquire(&h->stop))
			usleep(10000);
		for (unsigned i = 0; i < n; i++)
			shmb_session_destroy(s[i]);
		shmb_close(c);
		_exit(0);
	}
	return p;
}

static void scale(int rep)
{
	static const unsigned ns[] = { 1, 10, 100, 1000 };
	const char *const extra[] = { "--max-sessions-per-uid", "5000", "--max-memory-per-uid",
				      "10000000000", NULL };

	for (unsigned k = 0; k < sizeof(ns) / sizeof(ns[0]); k++) {
		struct hold *h = mmap(NULL, sizeof(*h), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
				      -1, 0);
		struct bres lat = bres_new("shmb block", "scale-lat", ns[k], rep);
		struct bres cpu = bres_new("shmb", "scale-cpu", ns[k], rep);
		uint64_t rss0, shm0, c0, t0, idle_ns, busy_ns, busy_t, n = bench_n(20000) / 4;
		uint64_t deadline;
		char text[256];
		pid_t p;

		memset(h, 0, sizeof(*h));
		bench_broker_start(extra);
		rss0 = bench_broker_rss_kib();
		shm0 = bench_broker_shm_bytes();
		p = holder(h, ns[k]);
		deadline = clock_mono_ns() + 60ull * 1000000000ull;
		while (load_acquire(&h->opened) < ns[k] && clock_mono_ns() < deadline)
			usleep(1000);
		/* idle: everybody attached, nobody publishing */
		usleep(200000);
		c0 = bench_broker_cpu_ns();
		t0 = clock_mono_ns();
		usleep(bench_scale() < 1 ? 500000 : 1000000);
		idle_ns = bench_broker_cpu_ns() - c0;
		idle_ns = idle_ns * 1000000000ull / (clock_mono_ns() - t0);
		/* busy: the pair's round trips */
		c0 = bench_broker_cpu_ns();
		t0 = clock_mono_ns();
		lat.lat = broker_pingpong(1, n);
		busy_t = clock_mono_ns() - t0;
		busy_ns = (bench_broker_cpu_ns() - c0) * 1000000000ull / busy_t;
		lat.sent = n;
		lat.recv = lat.lat.p50 < 0 ? 0 : n;
		lat.lost = lat.sent - lat.recv;
		bres_emit(&lat);
		snprintf(text, sizeof(text),
			 "idle_cpu=%.3f%% busy_cpu=%.1f%% rss_per_session=%.1fKiB shm_per_session=%.1fKiB",
			 idle_ns / 1e7, busy_ns / 1e7,
			 (double)((int64_t)bench_broker_rss_kib() - (int64_t)rss0) / ns[k],
			 (double)(bench_broker_shm_bytes() - shm0) / 1024.0 / ns[k]);
		cpu.extra = text;
		cpu.sent = cpu.recv = ns[k];
		if (load_acquire(&h->opened) < ns[k])
			cpu.lost = ns[k] - load_acquire(&h->opened); /* sessions that did not open */
		bres_emit(&cpu);
		store_release(&h->stop, 1);
		bench_reap(p);
		bench_broker_stop(true);
		munmap(h, sizeof(*h));
	}
}

/* ---- recovery ---------------------------------------------------------------- */

#define REC_RATE 20000 /* messages/s */
#define REC_MAX_RESTARTS 64

struct rec {
	uint32_t sub_ready, pub_done;
	uint64_t n;
	uint64_t restart_ns[REC_MAX_RESTARTS]; /* when each restart began */
	uint64_t first_ns[REC_MAX_RESTARTS];   /* the first message after it */
	uint64_t from_seq[REC_MAX_RESTARTS];   /* ... among sequences from this one on */
	uint32_t run;                          /* the restart the stream is in */
	uint32_t pad;
	uint64_t pub_next;                     /* the publisher's next sequence */
	uint64_t reord;
	uint8_t count[];                        /* receipts of each sequence, saturating */
};

static struct rec *rec_new(uint64_t n)
{
	struct rec *r = mmap(NULL, sizeof(*r) + n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
			     -1, 0);

	if (r == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	memset(r, 0, sizeof(*r) + n);
	r->n = n;
	return r;
}

/* The subscriber: a named session, resumed at each start; every message
 * recorded, then acknowledged (at-least-once: a kill repeats at most what
 * was not yet acknowledged). */
static pid_t rec_sub(struct rec *r)
{
	pid_t p = bench_spawn();

	if (p == 0) {
		struct shmb_connect_opts co = { .dir = bench_dir, .wait_ms = 10000 };
		struct shmb_session_opts so = { .rx_ring_size = 1u << 20, .tx_ring_size = 1u << 16,
						.spin_us = 1 };
		struct shmb_client *c;
		struct shmb_session *s;
		uint64_t last = UINT64_MAX;
		int e;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (shmb_connect(&co, &c) < 0)
			_exit(1);
		while ((e = shmb_session_open(c, "rec-sub", &so, &s)) == -EAGAIN || e == -EBUSY)
			usleep(1000);
		if (e < 0 || shmb_subscribe(s, "rec") < 0)
			_exit(2);
		store_release(&r->sub_ready, 1);
		for (;;) {
			struct shmb_msg m;
			uint64_t v;

			e = shmb_recv(s, &m, 100);
			if (e == -ETIMEDOUT) {
				if (load_acquire(&r->pub_done))
					break;
				continue;
			}
			if (e < 0)
				_exit(3);
			memcpy(&v, m.data, 8);
			{
				uint32_t run = load_acquire(&r->run);

				/* the first message after the latest restart (for a
				 * broker restart: one the new broker routed) */
				if (!r->first_ns[run] && v >= r->from_seq[run])
					r->first_ns[run] = clock_mono_ns();
			}
			if (v < r->n) {
				if (r->count[v] < 255)
					r->count[v]++;
				/* backwards, and not a message seen before: out of order */
				if (last != UINT64_MAX && v < last && r->count[v] == 1)
					r->reord++;
				last = v;
			}
			shmb_ack(s);
		}
		shmb_session_close(s);
		shmb_close(c);
		_exit(0);
	}
	return p;
}

static pid_t rec_pub(struct rec *r)
{
	pid_t p = bench_spawn();

	if (p == 0) {
		struct shmb_connect_opts co = { .dir = bench_dir, .control_timeout_ms = 10000 };
		struct shmb_session_opts so = { .rx_ring_size = 1u << 16, .tx_ring_size = 1u << 20 };
		struct shmb_client *c;
		struct shmb_session *s;
		uint8_t buf[64] = { 0 };
		uint64_t t0;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (shmb_connect(&co, &c) < 0 || shmb_session_open(c, "rec-pub", &so, &s) < 0)
			_exit(1);
		t0 = clock_mono_ns();
		for (uint64_t i = 0; i < r->n; i++) {
			/* paced: message i leaves at i / REC_RATE seconds */
			uint64_t due = t0 + i * (1000000000ull / REC_RATE);

			while (clock_mono_ns() < due)
				usleep(50);
			memcpy(buf, &i, 8);
			if (shmb_publish(s, "rec", buf, sizeof(buf), -1) < 0)
				_exit(2);
			store_release(&r->pub_next, i + 1);
		}
		shmb_flush(s, 30000);
		shmb_session_destroy(s);
		shmb_close(c);
		_exit(0);
	}
	return p;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* kill_sub: the subscriber is killed `kills` times, else the broker. */
static void recovery(bool kill_sub, unsigned kills, int rep)
{
	uint64_t n = bench_n(100000), stream_ns = n * (1000000000ull / REC_RATE);
	struct rec *r = rec_new(n);
	struct bres b = bres_new("shmb", kill_sub ? "recovery-sub" : "recovery-broker", 64, rep);
	uint64_t waits[REC_MAX_RESTARTS], deadline;
	unsigned nw = 0;
	char text[200];
	pid_t sub, pub;

	bench_broker_start(NULL);
	r->first_ns[0] = 1; /* run 0 is the start, not a restart */
	sub = rec_sub(r);
	while (!load_acquire(&r->sub_ready))
		usleep(1000);
	pub = rec_pub(r);
	for (unsigned k = 1; k <= kills && k < REC_MAX_RESTARTS; k++) {
		/* spread over the stream's first 80 % */
		usleep((useconds_t)(stream_ns * 8 / 10 / (kills + 1) / 1000));
		if (kill_sub) {
			kill(sub, SIGKILL);
			bench_reap(sub);
			r->restart_ns[k] = clock_mono_ns();
			store_release(&r->run, k);
			sub = rec_sub(r);
		} else {
			bench_broker_kill();
			/* what is published from now on only a new broker can route */
			r->from_seq[k] = load_acquire(&r->pub_next);
			r->restart_ns[k] = clock_mono_ns();
			store_release(&r->run, k);
			bench_broker_start(NULL);
		}
	}
	bench_reap(pub);
	store_release(&r->pub_done, 1);
	deadline = clock_mono_ns() + 30ull * 1000000000ull;
	while (clock_mono_ns() < deadline) {
		uint64_t got = 0;

		for (uint64_t i = 0; i < n; i++)
			got += r->count[i] > 0;
		if (got == n)
			break;
		usleep(10000);
	}
	kill(sub, SIGTERM);
	bench_reap(sub);
	for (uint64_t i = 0; i < n; i++) {
		b.recv += r->count[i];
		b.lost += r->count[i] == 0;
		b.dup += r->count[i] > 1 ? r->count[i] - 1u : 0;
	}
	b.sent = n;
	b.reord = r->reord;
	for (unsigned k = 1; k <= kills && k < REC_MAX_RESTARTS; k++)
		if (r->first_ns[k] > r->restart_ns[k])
			waits[nw++] = r->first_ns[k] - r->restart_ns[k];
	for (unsigned k = 0; k < nw; k++)
		fprintf(stderr, "  restart %u: next message after %.1f ms\n", k + 1, waits[k] / 1e6);
	qsort(waits, nw, sizeof(waits[0]), cmp_u64);
	snprintf(text, sizeof(text), "kills=%u first_msg_ms_median=%.1f first_msg_ms_max=%.1f",
		 kills, nw ? waits[nw / 2] / 1e6 : -1.0, nw ? waits[nw - 1] / 1e6 : -1.0);
	b.extra = text;
	bres_emit(&b);
	bench_broker_stop(true);
	munmap(r, sizeof(*r) + n);
}

/* bench-ops [scale|sub|broker]: all three, or one (to look at it alone). */
int main(int argc, char **argv)
{
	const char *only = argc > 1 ? argv[1] : "";

	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	bench_pinned = 0;
	for (int rep = 0; rep < bench_reps() && (!*only || !strcmp(only, "scale")); rep++)
		scale(rep);
	/* one run each: the stream is paced, its length fixed by the rate */
	if (!*only || !strcmp(only, "sub"))
		recovery(true, 20, 0);
	if (!*only || !strcmp(only, "broker"))
		recovery(false, 5, 0);
	return 0;
}
