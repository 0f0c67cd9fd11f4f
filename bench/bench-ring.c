/*
 * bench/bench-ring.c - the limits shmb is measured against: what two
 * processes get from bare shared memory and a bare futex, with no broker
 * and no protocol.
 *
 *   raw shm ring   one-way throughput through the shm layer's SPSC ring,
 *                  64 B, 1 KiB, 64 KiB records, batched commits, every
 *                  record checked for order and content on the receiver
 *   raw shm ring 1/commit  the same at 64 B, one record per commit: the
 *                  baseline of a publish call per message
 *   raw shm spin   64 B round trips over two rings, spinning readers
 *   raw shm futex  the same with futex-blocked readers (no spin), the
 *                  counted-waiter protocol of docs/layout.md
 *   raw futex      a bare futex hand-off between two processes: the cost
 *                  of one wake-up each way
 *
 * Unpinned, then with the two processes on CPU 0 and CPU 1.  Prints
 * result lines (bench/result.h); bench/report.sh makes the tables.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/common.h"
#include "bench/result.h"
#include "shm/atomics.h"
#include "shm/futex.h"
#include "shm/ring.h"
#include "shm/segment.h"

#define RING_SIZE (1u << 22)

struct shared {
	uint64_t prod[2];
	uint8_t pad0[48];
	uint64_t cons[2];
	uint8_t pad1[48];
	uint32_t word[2], waiters[2];
	uint8_t pad2[48];
	uint64_t result_ns;
	uint64_t bad;
	uint64_t lat[]; /* round-trip samples */
};

struct bench_mem {
	struct segment seg;
	struct shared *sh;
	struct ring r[2];
};

static void mem_open(struct bench_mem *m, size_t samples)
{
	size_t ctl = (sizeof(struct shared) + samples * 8 + 4095) & ~(size_t)4095;

	m->sh = mmap(NULL, ctl, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	m->seg = (struct segment)SEGMENT_INIT;
	if (m->sh == MAP_FAILED || segment_create(-1, "bench", 2 * (size_t)RING_SIZE, &m->seg) < 0) {
		perror("bench: memory");
		exit(1);
	}
	ring_init(&m->r[0], m->seg.base, RING_SIZE);
	ring_init(&m->r[1], m->seg.base + RING_SIZE, RING_SIZE);
}

static void mem_close(struct bench_mem *m, size_t samples)
{
	munmap(m->sh, (sizeof(struct shared) + samples * 8 + 4095) & ~(size_t)4095);
	segment_unmap(&m->seg);
}

/* ---- one-way throughput ---------------------------------------------------- */

/* batch: records per commit (256: as many as there is room for, up to 256) */
static double ring_throughput(uint32_t size, uint64_t n, unsigned batch)
{
	struct bench_mem m;
	pid_t prod;
	double rate;

	mem_open(&m, 0);
	prod = bench_spawn();
	if (prod == 0) {
		struct ring_prod p;
		uint64_t seq = 0;

		bench_pin(0);
		ring_prod_init(&p, &m.r[0], &m.sh->cons[0], &m.sh->prod[0], 0, 0, 1);
		while (seq < n) {
			unsigned k = 0;
			void *dst;

			/* move every record there is room for, then publish once */
			while (k < batch && seq < n && ring_reserve(&p, size, SHM_REC_DATA, 0, &dst) == 0) {
				memset(dst, (int)(seq & 0xff), size);
				memcpy(dst, &seq, 8);
				seq++;
				k++;
			}
			if (k)
				ring_commit(&p);
			else
				cpu_relax();
		}
		_exit(0);
	}
	{
		struct ring_cons c;
		struct ring_msg msg[256];
		uint64_t next = 0, t0, bad = 0;

		bench_pin(1);
		ring_cons_init(&c, &m.r[0], &m.sh->prod[0], &m.sh->cons[0], 0, 0, 1, 1);
		t0 = clock_mono_ns();
		while (next < n) {
			int k = ring_peek_batch(&c, msg, 256);

			if (k <= 0) {
				cpu_relax();
				continue;
			}
			for (int i = 0; i < k; i++) {
				const uint8_t *pl = msg[i].payload;
				uint64_t s;

				memcpy(&s, pl, 8);
				if (s != next || msg[i].len != size || pl[size - 1] != (uint8_t)(next & 0xff))
					bad++;
				next++;
			}
			ring_consume(&c, &msg[k - 1]);
			ring_release(&c);
		}
		rate = (double)n / ((double)(clock_mono_ns() - t0) / 1e9);
		if (bad)
			rate = 0; /* a figure with any loss does not count */
	}
	bench_reap(prod);
	mem_close(&m, 0);
	return rate;
}

/* ---- ping-pong ------------------------------------------------------------- */

struct pp_wait {
	const uint64_t *word;
	uint64_t pos;
};

static bool pp_ready(void *arg)
{
	struct pp_wait *w = arg;

	return load_acquire(w->word) != w->pos;
}

/* One side of a ring ping-pong: receive on ring `in`, send on `out`. */
struct pp_side {
	struct ring_prod p;
	struct ring_cons c;
	struct bench_mem *m;
	int in, out;
	uint64_t spin_ns;
	bool blocking;
};

static void pp_side_init(struct pp_side *s, struct bench_mem *m, int in, int out, bool blocking)
{
	s->m = m;
	s->in = in;
	s->out = out;
	s->blocking = blocking;
	ring_prod_init(&s->p, &m->r[out], &m->sh->cons[out], &m->sh->prod[out], 0, 0, 1);
	ring_cons_init(&s->c, &m->r[in], &m->sh->prod[in], &m->sh->cons[in], 0, 0, 1, 1);
}

static void pp_send(struct pp_side *s, uint64_t v)
{
	uint8_t msg[64];

	memset(msg, 0, sizeof(msg));
	memcpy(msg, &v, 8);
	ring_write(&s->p, msg, sizeof(msg), SHM_REC_DATA);
	if (s->blocking)
		wake_signal(&s->m->sh->word[s->out], &s->m->sh->waiters[s->out]);
}

static uint64_t pp_recv(struct pp_side *s)
{
	struct ring_msg msg;
	uint64_t v;

	for (;;) {
		if (ring_peek(&s->c, &msg) == 0)
			break;
		if (s->blocking) {
			struct pp_wait w = { &s->m->sh->prod[s->in], s->c.pos };

			wake_wait(&s->m->sh->word[s->in], &s->m->sh->waiters[s->in], pp_ready, &w, 0, NULL);
		} else {
			cpu_relax();
		}
	}
	memcpy(&v, msg.payload, 8);
	ring_consume(&s->c, &msg);
	ring_release(&s->c);
	return v;
}

static struct lat ring_pingpong(bool blocking, size_t n)
{
	struct bench_mem m;
	struct pp_side a, b;
	pid_t echo;
	struct lat l;

	mem_open(&m, n);
	echo = bench_spawn();
	if (echo == 0) {
		bench_pin(1);
		pp_side_init(&b, &m, 0, 1, blocking);
		for (size_t i = 0; i < n + 100; i++)
			pp_send(&b, pp_recv(&b));
		_exit(0);
	}
	bench_pin(0);
	pp_side_init(&a, &m, 1, 0, blocking);
	for (size_t i = 0; i < n + 100; i++) {
		uint64_t t0 = clock_mono_ns();

		pp_send(&a, i);
		if (pp_recv(&a) != i)
			m.sh->bad++;
		if (i >= 100) /* warm-up dropped */
			m.sh->lat[i - 100] = clock_mono_ns() - t0;
	}
	bench_reap(echo);
	l = bench_summarize(m.sh->lat, n);
	if (m.sh->bad)
		l.p50 = -1;
	mem_close(&m, n);
	return l;
}

/* ---- reporting ---------------------------------------------------------------- */

/* The limits: what two processes get from bare shared memory and a bare
 * futex, with no broker and no protocol (bench/result.h lines). */
static void run(int pin_mode)
{
	const uint32_t sizes[] = { 64, 1024, 65536 };
	const size_t lat_n = bench_n(20000), lat_n_block = bench_n(5000);

	bench_pinned = pin_mode;
	for (int rep = 0; rep < bench_reps(); rep++) {
		for (int s = 0; s < 3; s++) {
			uint64_t n = bench_n(sizes[s] == 64 ? 10000000 : sizes[s] == 1024 ? 2000000 : 100000);
			/* ring_throughput reports 0 for a run with any bad record */
			bres_emit_rate("raw shm ring", "oneway", sizes[s], rep,
				       ring_throughput(sizes[s], n, 256), n);
		}
		/* the baseline of a publish per message: one record a commit */
		bres_emit_rate("raw shm ring 1/commit", "oneway", 64, rep,
			       ring_throughput(64, bench_n(10000000), 1), bench_n(10000000));
		bres_emit_lat("raw shm spin", "rtt", rep, ring_pingpong(false, lat_n), lat_n);
		bres_emit_lat("raw shm futex", "rtt", rep, ring_pingpong(true, lat_n_block), lat_n_block);
		bres_emit_lat("raw futex", "rtt", rep, futex_pingpong(lat_n_block), lat_n_block);
	}
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2 || strcmp(argv[1], "--pinned-only"))
		run(0);
	if (sysconf(_SC_NPROCESSORS_ONLN) >= 2)
		run(1);
	else
		bres_skip("raw limits, pinned", "fewer than 2 CPUs online");
	return 0;
}
