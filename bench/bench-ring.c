/*
 * bench/bench-ring.c - the shm layer between two processes, beside an
 * AF_UNIX SOCK_SEQPACKET pair measured in the same run.
 *
 *   throughput: one-way, 64 B and 1 KiB records, every record checked for
 *               order and content on the receiving side
 *   ping-pong:  64 B round trips: spinning readers, futex-blocked readers
 *               (no spin), and the socket pair; p50/p99/p99.9/max
 *
 * Each figure is the median of REPS runs, with min-max.  Run unpinned and
 * with the two processes pinned to different CPUs.  Prints a markdown
 * table.  Not a test: nothing here passes or fails.
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

#include "shm/atomics.h"
#include "shm/futex.h"
#include "shm/ring.h"
#include "shm/segment.h"

#define REPS 3
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

static int pinned;

static void pin(int cpu)
{
	cpu_set_t s;

	if (!pinned)
		return;
	CPU_ZERO(&s);
	CPU_SET(cpu, &s);
	sched_setaffinity(0, sizeof(s), &s);
}

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

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static pid_t spawn(void)
{
	pid_t p = fork();

	if (p < 0) {
		perror("fork");
		exit(1);
	}
	return p;
}

static void reap(pid_t p)
{
	int st;

	waitpid(p, &st, 0);
}

/* ---- one-way throughput ---------------------------------------------------- */

static double ring_throughput(uint32_t size, uint64_t n)
{
	struct bench_mem m;
	pid_t prod;
	double rate;

	mem_open(&m, 0);
	prod = spawn();
	if (prod == 0) {
		struct ring_prod p;
		uint64_t seq = 0;

		pin(0);
		ring_prod_init(&p, &m.r[0], &m.sh->cons[0], &m.sh->prod[0], 0, 0, 1);
		while (seq < n) {
			unsigned k = 0;
			void *dst;

			/* move every record there is room for, then publish once */
			while (k < 256 && seq < n && ring_reserve(&p, size, SHM_REC_DATA, 0, &dst) == 0) {
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

		pin(1);
		ring_cons_init(&c, &m.r[0], &m.sh->prod[0], &m.sh->cons[0], 0, 0, 1, 1);
		t0 = mono_ns();
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
		rate = (double)n / ((double)(mono_ns() - t0) / 1e9);
		if (bad)
			rate = 0; /* a figure with any loss does not count */
	}
	reap(prod);
	mem_close(&m, 0);
	return rate;
}

static double unix_throughput(uint32_t size, uint64_t n)
{
	int sv[2];
	pid_t prod;
	double rate;
	uint8_t buf[65536];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0) {
		perror("socketpair");
		exit(1);
	}
	prod = spawn();
	if (prod == 0) {
		pin(0);
		close(sv[1]);
		memset(buf, 0, sizeof(buf));
		for (uint64_t seq = 0; seq < n; seq++) {
			memset(buf, (int)(seq & 0xff), size);
			memcpy(buf, &seq, 8);
			if (send(sv[0], buf, size, 0) != (ssize_t)size)
				_exit(1);
		}
		_exit(0);
	}
	close(sv[0]);
	pin(1);
	{
		uint64_t next = 0, t0 = mono_ns(), bad = 0;

		while (next < n) {
			ssize_t r = recv(sv[1], buf, sizeof(buf), 0);
			uint64_t s;

			if (r <= 0)
				break;
			memcpy(&s, buf, 8);
			if (s != next || r != (ssize_t)size)
				bad++;
			next++;
		}
		rate = (double)next / ((double)(mono_ns() - t0) / 1e9);
		if (bad || next != n)
			rate = 0;
	}
	close(sv[1]);
	reap(prod);
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

struct lat {
	double p50, p99, p999, max;
};

static struct lat summarize(uint64_t *s, size_t n)
{
	qsort(s, n, 8, cmp_u64);
	return (struct lat){ s[n / 2] / 1e3, s[n * 99 / 100] / 1e3, s[n * 999 / 1000] / 1e3,
			     s[n - 1] / 1e3 };
}

static struct lat ring_pingpong(bool blocking, size_t n)
{
	struct bench_mem m;
	struct pp_side a, b;
	pid_t echo;
	struct lat l;

	mem_open(&m, n);
	echo = spawn();
	if (echo == 0) {
		pin(1);
		pp_side_init(&b, &m, 0, 1, blocking);
		for (size_t i = 0; i < n + 100; i++)
			pp_send(&b, pp_recv(&b));
		_exit(0);
	}
	pin(0);
	pp_side_init(&a, &m, 1, 0, blocking);
	for (size_t i = 0; i < n + 100; i++) {
		uint64_t t0 = mono_ns();

		pp_send(&a, i);
		if (pp_recv(&a) != i)
			m.sh->bad++;
		if (i >= 100) /* warm-up dropped */
			m.sh->lat[i - 100] = mono_ns() - t0;
	}
	reap(echo);
	l = summarize(m.sh->lat, n);
	if (m.sh->bad)
		l.p50 = -1;
	mem_close(&m, n);
	return l;
}

static struct lat unix_pingpong(size_t n)
{
	uint64_t *lat = malloc(n * 8);
	uint8_t buf[64] = { 0 };
	int sv[2];
	pid_t echo;
	struct lat l;

	socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv);
	echo = spawn();
	if (echo == 0) {
		pin(1);
		close(sv[0]);
		while (recv(sv[1], buf, sizeof(buf), 0) == (ssize_t)sizeof(buf))
			if (send(sv[1], buf, sizeof(buf), 0) != (ssize_t)sizeof(buf))
				break;
		_exit(0);
	}
	close(sv[1]);
	pin(0);
	for (size_t i = 0; i < n + 100; i++) {
		uint64_t t0 = mono_ns();

		memcpy(buf, &i, 8);
		send(sv[0], buf, sizeof(buf), 0);
		recv(sv[0], buf, sizeof(buf), 0);
		if (i >= 100)
			lat[i - 100] = mono_ns() - t0;
	}
	close(sv[0]);
	reap(echo);
	l = summarize(lat, n);
	free(lat);
	return l;
}

/* ---- reporting ---------------------------------------------------------------- */

static double median3(double *v)
{
	double t[REPS];

	memcpy(t, v, sizeof(t));
	for (int i = 0; i < REPS; i++)
		for (int j = i + 1; j < REPS; j++)
			if (t[j] < t[i]) {
				double x = t[i];

				t[i] = t[j];
				t[j] = x;
			}
	return t[REPS / 2];
}

static double vmin(double *v)
{
	double m = v[0];

	for (int i = 1; i < REPS; i++)
		m = v[i] < m ? v[i] : m;
	return m;
}

static double vmax(double *v)
{
	double m = v[0];

	for (int i = 1; i < REPS; i++)
		m = v[i] > m ? v[i] : m;
	return m;
}

static void run(int pin_mode)
{
	const uint32_t sizes[] = { 64, 1024 };
	const size_t lat_n = 20000, lat_n_block = 5000;

	pinned = pin_mode;
	printf("\n### %s\n\n", pinned ? "pinned: the two processes on CPU 0 and CPU 1"
				       : "unpinned: the scheduler places the processes");
	printf("| one-way throughput | shm ring msgs/s (min-max) | ring GB/s | AF_UNIX seqpacket msgs/s "
	       "(min-max) | ratio ring/AF_UNIX |\n|---|---|---|---|---|\n");
	for (int s = 0; s < 2; s++) {
		double rr[REPS], uu[REPS];
		uint64_t n = sizes[s] == 64 ? 10000000 : 2000000;

		for (int i = 0; i < REPS; i++) {
			rr[i] = ring_throughput(sizes[s], n);
			uu[i] = unix_throughput(sizes[s], n / 10);
		}
		printf("| %u B | %.2f M (%.2f-%.2f) | %.2f | %.3f M (%.3f-%.3f) | %.1fx |\n", sizes[s],
		       median3(rr) / 1e6, vmin(rr) / 1e6, vmax(rr) / 1e6, median3(rr) * sizes[s] / 1e9,
		       median3(uu) / 1e6, vmin(uu) / 1e6, vmax(uu) / 1e6, median3(rr) / median3(uu));
	}
	printf("\n| 64 B round trip, us | p50 (min-max) | p99 | p99.9 | max | p50 ratio to AF_UNIX |\n"
	       "|---|---|---|---|---|---|\n");
	{
		double p50[3][REPS], p99[3][REPS], p999[3][REPS], mx[3][REPS];
		const char *name[3] = { "shm ring, spinning readers", "shm ring, futex-blocked readers",
					"AF_UNIX seqpacket (blocking)" };

		for (int i = 0; i < REPS; i++) {
			struct lat l[3] = { ring_pingpong(false, lat_n), ring_pingpong(true, lat_n_block),
					    unix_pingpong(lat_n_block) };

			for (int k = 0; k < 3; k++) {
				p50[k][i] = l[k].p50;
				p99[k][i] = l[k].p99;
				p999[k][i] = l[k].p999;
				mx[k][i] = l[k].max;
			}
		}
		for (int k = 0; k < 3; k++)
			printf("| %s | %.2f (%.2f-%.2f) | %.2f | %.2f | %.1f | %.3fx |\n", name[k],
			       median3(p50[k]), vmin(p50[k]), vmax(p50[k]), median3(p99[k]),
			       median3(p999[k]), median3(mx[k]), median3(p50[k]) / median3(p50[2]));
	}
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("## shm layer: two processes, %d repetitions, medians (min-max)\n", REPS);
	if (argc < 2 || strcmp(argv[1], "--pinned-only"))
		run(0);
	if (sysconf(_SC_NPROCESSORS_ONLN) >= 2)
		run(1);
	else
		printf("\npinned run skipped: fewer than 2 CPUs online\n");
	return 0;
}
