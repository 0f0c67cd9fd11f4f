/*
 * bench/bench-broker.c - end to end through shmbd, 1 publisher -> 1
 * subscriber, beside an AF_UNIX SOCK_SEQPACKET pair and a raw futex
 * ping-pong measured in the same run.
 *
 *   throughput: 64 B and 1 KiB messages, every one checked for order and
 *               content by the subscriber; a run with any loss reports 0
 *   round trip: 64 B ping-pong through the broker (two hops each way),
 *               with spinning readers and with blocking readers (1 us spin)
 *
 * Starts its own broker (build/shmbd) in a fresh directory.  Unpinned,
 * then pinned: one client on CPU 0, the other on CPU 1, the broker placed
 * by the scheduler.  (Both clients on one CPU and the broker on the other
 * was measured too: every hop then pays a stalled vCPU, 120-130 us a round
 * trip; docs/benchmarks.md.)
 */
#include <errno.h>
#include <libgen.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/common.h"
#include "bench/result.h"
#include "bench/shmbd.h"
#include "shm/atomics.h"
#include "shm/futex.h"
#include "shmb.h"
#include "shm/clock.h"
#include "tests/lane-client.h"

#define MAX_SUBS 8
#define MAX_PUBS 8





/* What a stream's processes report back. */
struct stream_res {
	uint32_t ready;
	uint32_t pad;
	uint64_t t_start;           /* the publishers' start */
	uint64_t t_end[MAX_SUBS];   /* each subscriber's last message */
	uint64_t got[MAX_SUBS], lost[MAX_SUBS], dup[MAX_SUBS], reord[MAX_SUBS];
	uint64_t sent[MAX_PUBS];
};

static uint8_t msgbuf[65536];

/*
 * npub publishers -> nsub subscribers on one topic, n messages each
 * publisher, `size` bytes: the seq in bytes 0-7, the publisher in 8-11,
 * the seq's low byte last.  Every subscriber checks every message: per
 * publisher, in order, none twice, none missing.  Fills r.
 */
/* Messages a publisher writes per commit in stream(): 1 publishes each
 * with shmb_publish(); more uses SHMB_PUB_MORE for all but the last. */
static unsigned pub_batch = 1;

static void stream(int npub, int nsub, uint32_t size, uint64_t n, struct bres *r)
{
	struct stream_res *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
				     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t subs[MAX_SUBS], pubs[MAX_PUBS];
	uint64_t end = 0, got = 0;

	memset(sh, 0, sizeof(*sh));
	for (int k = 0; k < nsub; k++) {
		subs[k] = bench_spawn();
		if (subs[k] == 0) {
			uint64_t next[MAX_PUBS] = { 0 }, total = 0;
			uint64_t ack_every = (4u << 20) / (size + 64) / 4 + 1;
			struct shmb_client *c;
			struct shmb_session *s;
			struct shmb_msg m;
			char name[32];

			bench_pin(1);
			snprintf(name, sizeof(name), "bench-sub-%d", k);
			/* one subscriber spins briefly; many must not starve the broker */
			s = open_session(&c, name, nsub == 1 ? 50 : 1);
			shmb_subscribe(s, "tp");
			fetch_add_release(&sh->ready, 1);
			while (total < n * (uint64_t)npub) {
				uint64_t v;
				uint32_t p;

				if (shmb_recv(s, &m, 10000) < 0)
					break;
				memcpy(&v, m.data, 8);
				memcpy(&p, (const uint8_t *)m.data + 8, 4);
				if (p >= (uint32_t)npub || m.len != size ||
				    ((const uint8_t *)m.data)[size - 1] != (uint8_t)v)
					sh->reord[k]++;
				else if (v < next[p])
					sh->dup[k]++;
				else {
					if (v > next[p])
						sh->reord[k]++;
					next[p] = v + 1;
				}
				total++;
				/* often enough that unacknowledged messages never fill the ring */
				if (total % ack_every == 0)
					shmb_ack(s);
			}
			sh->t_end[k] = clock_mono_ns();
			sh->got[k] = total;
			for (int p = 0; p < npub; p++)
				sh->lost[k] += n - (next[p] < n ? next[p] : n);
			shmb_ack(s);
			shmb_session_destroy(s);
			shmb_close(c);
			_exit(0);
		}
	}
	while (load_acquire(&sh->ready) < (uint32_t)nsub)
		usleep(100);
	sh->t_start = clock_mono_ns();
	for (int j = 0; j < npub; j++) {
		pubs[j] = bench_spawn();
		if (pubs[j] == 0) {
			struct shmb_client *c;
			struct shmb_session *s;
			char name[32];

			bench_pin(0);
			snprintf(name, sizeof(name), "bench-pub-%d", j);
			s = open_session(&c, name, 50);
			memset(msgbuf, 0, size);
			memcpy(msgbuf + 8, &j, 4);
			for (uint64_t i = 0; i < n; i++) {
				unsigned more = pub_batch > 1 && (i + 1) % pub_batch && i + 1 < n;

				memcpy(msgbuf, &i, 8);
				msgbuf[size - 1] = (uint8_t)i;
				if (shmb_publish_flags(s, "tp", msgbuf, size, -1, more ? SHMB_PUB_MORE : 0) < 0)
					break;
				sh->sent[j]++;
			}
			shmb_flush(s, 10000);
			shmb_session_destroy(s);
			shmb_close(c);
			_exit(0);
		}
	}
	for (int j = 0; j < npub; j++)
		bench_reap(pubs[j]);
	for (int k = 0; k < nsub; k++)
		bench_reap(subs[k]);
	for (int j = 0; j < npub; j++)
		r->sent += sh->sent[j];
	for (int k = 0; k < nsub; k++) {
		end = sh->t_end[k] > end ? sh->t_end[k] : end;
		got += sh->got[k];
		r->lost += sh->lost[k];
		r->dup += sh->dup[k];
		r->reord += sh->reord[k];
	}
	r->sent *= (uint64_t)nsub; /* each message is owed to every subscriber */
	r->recv = got;
	r->msgs_s = end > sh->t_start ? (double)got / ((double)(end - sh->t_start) / 1e9) : 0;
	munmap(sh, sizeof(*sh));
}

/* ---- the direct data path through the same broker (its default) --------------- */

extern char bench_dir[64];
static unsigned lanes_run; /* names each run's sessions afresh */

/* A reader's session is destroyed when its run ends: a detached one would
 * hold the next runs' lanes of its topic (as a detached subscriber's RX
 * ring holds its publishers on the relay) until --block-timeout. */
static void lanes_reader_done(struct rc *c)
{
	struct proto_close q = { .h = { PROTO_SESSION_CLOSE, sizeof(q), 0 },
				 .session_id = c->session, .flags = PROTO_CLOSE_DESTROY };
	struct proto_reply rep;

	rc_call(c, &q, sizeof(q), &rep, NULL, NULL);
	close(c->fd);
}

/* The writer: its session, its lane, n messages of size bytes (the seq in
 * bytes 0-7), `batch` a commit; then it closes its session. */
static void lanes_writer(uint32_t size, uint64_t n, unsigned batch, uint64_t *t_start)
{
	struct rc c;
	struct lanew w;
	char name[16];

	bench_pin(1); /* the reader is on CPU 0 (pinned runs) */
	lanew_init(&w, 1);
	snprintf(name, sizeof(name), "lw.%u", lanes_run);
	if (rc_open(&c, bench_dir, name, SHM_POLICY_BLOCK) < 0 || rc_lane_topic(&c, &w) != 0)
		_exit(2);
	rc_holders(&c, &w, 1);
	/* more readers' pages as they come, before each sleep for space */
	c.w = &w;
	w.drain = rc_drain;
	w.ctx = &c;
	memset(msgbuf, 0xab, size);
	store_release(t_start, clock_mono_ns());
	for (uint64_t i = 1; i <= n; i++) {
		memcpy(msgbuf, &i, 8);
		if (lanew_publish(&w, c.topic, msgbuf, size, i % batch != 0 && i != n, NULL) < 0)
			_exit(3);
	}
	{
		struct proto_close q = { .h = { PROTO_SESSION_CLOSE, sizeof(q), 0 },
					 .session_id = c.session };
		struct proto_reply rep;

		rc_call(&c, &q, sizeof(q), &rep, NULL, NULL);
	}
	_exit(0);
}

/* 1 -> 1 through a lane the broker made: messages/s as the reader sees
 * them, every one checked (in place) for order and size; 0 on any fault. */
static void lanes_stream(uint32_t size, uint64_t n, unsigned batch, struct bres *r)
{
	uint64_t *t_start = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint64_t next = 1, bad = 0, t_end;
	struct rpush p;
	struct rside s;
	struct rc c;
	pid_t w;

	char name[16];

	lanes_run++;
	snprintf(name, sizeof(name), "lr.%u", lanes_run);
	r->sent = n;
	if (rc_open(&c, bench_dir, name, SHM_POLICY_BLOCK) < 0 || rc_subscribe(&c) != 0) {
		r->lost = n;
		munmap(t_start, 4096);
		return;
	}
	w = bench_spawn();
	if (w == 0)
		lanes_writer(size, n, batch, t_start);
	if (!rc_push(&c, PROTO_LANE, &p) || rside_open(&s, &p) < 0) {
		bad++;
		n = 0;
	}
	while (next <= n) {
		struct lane_rec m;
		int k = lane_read(&s.r, NULL, 0, &m);
		uint64_t v;

		if (k == LANE_NONE) {
			cpu_relax();
			continue;
		}
		if (k != LANE_REC) {
			bad++;
			break;
		}
		memcpy(&v, m.payload, 8);
		if (v != next || m.len != size)
			bad++;
		next++;
		if (next % 64 == 0 || next > n)
			lane_ack(&s.r, m.end);
	}
	t_end = clock_mono_ns();
	bench_reap(w);
	lanes_reader_done(&c);
	r->recv = next - 1;
	r->lost = r->sent - r->recv;
	r->reord = bad;
	r->msgs_s = bad || !*t_start ? 0 : (double)r->recv / ((double)(t_end - *t_start) / 1e9);
	munmap(t_start, 4096);
}

/* One of nr lane readers: its session, ready, then n messages checked in
 * place; its count and the time of its last one into sh. */
static void lanes_fan_reader(unsigned k, uint64_t n, struct stream_res *sh)
{
	uint64_t next = 1;
	struct rpush p;
	struct rside s;
	struct rc c;
	char name[16];

	/* a fresh session each run: a reused one would first be handed its
	 * last run's lane to finish */
	snprintf(name, sizeof(name), "lf%u.%u", lanes_run, k);
	if (rc_open(&c, bench_dir, name, SHM_POLICY_BLOCK) < 0 || rc_subscribe(&c) != 0)
		_exit(2);
	fetch_add_release(&sh->ready, 1);
	if (!rc_push(&c, PROTO_LANE, &p) || rside_open(&s, &p) < 0)
		_exit(3);
	while (next <= n) {
		struct lane_rec m;
		int r = lane_read(&s.r, NULL, 0, &m);
		uint64_t v;

		if (r == LANE_NONE) {
			/* eight readers and a writer on two CPUs: let the writer run
			 * (this raw reader has no wake page to sleep on yet) */
			sched_yield();
			continue;
		}
		if (r != LANE_REC)
			break;
		memcpy(&v, m.payload, 8);
		if (v != next)
			sh->reord[k]++;
		next++;
		if (next % 64 == 0 || next > n)
			lane_ack(&s.r, m.end);
	}
	sh->got[k] = next - 1;
	sh->t_end[k] = clock_mono_ns();
	lanes_reader_done(&c);
	_exit(0);
}

/* 1 -> nr through one lane (the writer batched, 64 a commit): messages/s
 * received in all, from the writer's start to the last reader's end. */
static void lanes_fanout(unsigned nr, uint64_t n, struct bres *r)
{
	struct stream_res *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
				     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint64_t *t_start = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t rd[MAX_SUBS], w;
	uint64_t end = 0;

	memset(sh, 0, sizeof(*sh));
	lanes_run++;
	for (unsigned k = 0; k < nr; k++) {
		rd[k] = bench_spawn();
		if (rd[k] == 0)
			lanes_fan_reader(k, n, sh);
	}
	for (uint64_t until = clock_mono_ns() + 10000000000ull;
	     load_acquire(&sh->ready) < nr && clock_mono_ns() < until;)
		usleep(1000);
	w = bench_spawn();
	if (w == 0)
		lanes_writer(64, n, 64, t_start);
	bench_reap(w);
	r->sent = n * nr;
	for (unsigned k = 0; k < nr; k++) {
		bench_reap(rd[k]);
		r->recv += sh->got[k];
		r->reord += sh->reord[k];
		if (sh->t_end[k] > end)
			end = sh->t_end[k];
	}
	r->lost = r->sent - r->recv;
	r->msgs_s = r->reord || r->lost || end <= *t_start
			    ? 0
			    : (double)r->recv / ((double)(end - *t_start) / 1e9);
	munmap(sh, sizeof(*sh));
	munmap(t_start, 4096);
}

static void emit_rtt(const char *transport, int rep, unsigned spin_us, size_t n)
{
	struct bres r = bres_new(transport, "rtt", 64, rep);

	r.lat = broker_pingpong(spin_us, n);
	r.sent = n;
	r.recv = r.lat.p50 < 0 ? 0 : n;
	r.lost = r.sent - r.recv;
	bres_emit(&r);
}

static void run(int pin_mode)
{
	const uint32_t sizes[] = { 64, 1024, 65536 };
	const size_t lat_n = bench_n(20000);

	bench_pinned = pin_mode;
	bench_pin(0);
	for (int rep = 0; rep < bench_reps(); rep++) {
		/* the broker runs lanes (its default): the relay's rows keep
		 * libshmb on the relay; "shmb lib lanes" rows let it use them */
		setenv("SHMB_LANES", "0", 1);
		for (int k = 0; k < 3 && bench_want("shmb spin"); k++) {
			uint64_t n = bench_n(sizes[k] == 64 ? 2000000 : sizes[k] == 1024 ? 500000 : 30000);
			struct bres r = bres_new("shmb spin", "oneway", sizes[k], rep);

			stream(1, 1, sizes[k], n, &r);
			bres_emit(&r);
		}
		if (bench_want("shmb batched")) {
			/* the batched publish (SHMB_PUB_MORE), 64 a commit */
			struct bres r = bres_new("shmb batched", "oneway", 64, rep);

			pub_batch = 64;
			stream(1, 1, 64, bench_n(2000000), &r);
			pub_batch = 1;
			bres_emit(&r);
		}
		if (bench_want("shmb lanes")) {
			/* the direct data path: the broker makes the lane, then
			 * stands aside */
			struct bres l1 = bres_new("shmb lanes", "oneway", 64, rep);
			struct bres lb = bres_new("shmb lanes batched", "oneway", 64, rep);

			lanes_stream(64, bench_n(2000000), 1, &l1);
			bres_emit(&l1);
			lanes_stream(64, bench_n(2000000), 64, &lb);
			bres_emit(&lb);
			if (!bench_pinned) {
				struct bres lf = bres_new("shmb lanes", "fanout", 64, rep);

				lanes_fanout(MAX_SUBS, bench_n(200000), &lf);
				bres_emit(&lf);
			}
		}
		if (bench_want("shmb lib lanes") || bench_want("shmb lib lanes batched") ||
		    bench_want("shmb lib lanes spin") || bench_want("shmb lib lanes block")) {
			/* libshmb itself on lanes: the same calls as "shmb spin"
			 * and "shmb batched", the broker off the message path
			 * (each row can run alone, for a profile of it:
			 * SHMB_BENCH_ONLY="shmb lib lanes batched") */
			struct bres l1 = bres_new("shmb lib lanes", "oneway", 64, rep);
			struct bres lb = bres_new("shmb lib lanes batched", "oneway", 64, rep);

			unsetenv("SHMB_LANES");
			if (bench_want("shmb lib lanes")) {
				stream(1, 1, 64, bench_n(2000000), &l1);
				bres_emit(&l1);
			}
			if (bench_want("shmb lib lanes batched")) {
				pub_batch = 64;
				stream(1, 1, 64, bench_n(2000000), &lb);
				pub_batch = 1;
				bres_emit(&lb);
			}
			if (!bench_pinned && bench_want("shmb lib lanes spin"))
				emit_rtt("shmb lib lanes spin", rep, 1000000, lat_n);
			if (bench_want("shmb lib lanes block"))
				emit_rtt("shmb lib lanes block", rep, 1, lat_n / 4);
			setenv("SHMB_LANES", "0", 1);
		}
		if (!bench_want("shmb rtt"))
			continue;
		/* spinning clients pinned on both CPUs starve the polling broker */
		if (!bench_pinned)
			emit_rtt("shmb spin", rep, 1000000, lat_n);
		emit_rtt("shmb block", rep, 1, lat_n / 4);
		if (!bench_pinned) {
			struct bres o = bres_new("shmb", "fanout", 64, rep), i = bres_new("shmb", "fanin", 64, rep);

			stream(1, MAX_SUBS, 64, bench_n(200000), &o);
			bres_emit(&o);
			stream(MAX_PUBS, 1, 64, bench_n(200000), &i);
			bres_emit(&i);
		}
	}
	if (bench_pinned)
		bres_skip("shmb spin rtt, pinned", "two spinning clients pinned on the two CPUs leave the"
			  " polling broker no CPU; measured unpinned");
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	/* lanes are the broker's default; --no-lanes would leave the lanes'
	 * rows nothing to run on */
	bench_broker_start(NULL);
	if (argc < 2 || strcmp(argv[1], "--pinned-only"))
		run(0);
	if (sysconf(_SC_NPROCESSORS_ONLN) >= 2)
		run(1);
	else
		bres_skip("shmb, pinned", "fewer than 2 CPUs online");
	bench_broker_stop(true);
	return 0;
}
