/*
 * bench/common.c - see common.h.
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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
	pid_t p = fork();

	if (p < 0) {
		perror("fork");
		exit(1);
	}
	return p;
}

void bench_reap(pid_t p)
{
	int st;

	waitpid(p, &st, 0);
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

double bench_median(const double *v)
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

double bench_min(const double *v)
{
	double m = v[0];

	for (int i = 1; i < REPS; i++)
		m = v[i] < m ? v[i] : m;
	return m;
}

double bench_max(const double *v)
{
	double m = v[0];

	for (int i = 1; i < REPS; i++)
		m = v[i] > m ? v[i] : m;
	return m;
}

double unix_throughput(uint32_t size, uint64_t n)
{
	int sv[2];
	pid_t prod;
	double rate;
	uint8_t buf[65536];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0) {
		perror("socketpair");
		exit(1);
	}
	prod = bench_spawn();
	if (prod == 0) {
		bench_pin(0);
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
	bench_pin(1);
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
	bench_reap(prod);
	return rate;
}

struct lat unix_pingpong(size_t n)
{
	uint64_t *lat = malloc(n * 8);
	uint8_t buf[64] = { 0 };
	int sv[2];
	pid_t echo;
	struct lat l;

	socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv);
	echo = bench_spawn();
	if (echo == 0) {
		bench_pin(1);
		close(sv[0]);
		while (recv(sv[1], buf, sizeof(buf), 0) == (ssize_t)sizeof(buf))
			if (send(sv[1], buf, sizeof(buf), 0) != (ssize_t)sizeof(buf))
				break;
		_exit(0);
	}
	close(sv[1]);
	bench_pin(0);
	for (size_t i = 0; i < n + 100; i++) {
		uint64_t t0 = mono_ns();

		memcpy(buf, &i, 8);
		send(sv[0], buf, sizeof(buf), 0);
		recv(sv[0], buf, sizeof(buf), 0);
		if (i >= 100)
			lat[i - 100] = mono_ns() - t0;
	}
	close(sv[0]);
	bench_reap(echo);
	l = bench_summarize(lat, n);
	free(lat);
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
		uint64_t t0 = mono_ns();

		store_release(&f->turn, 2 * i + 1);
		futex_wake(&f->turn, 1);
		fpp_wait(&f->turn, 2 * i + 2);
		if (i >= 100)
			f->lat[i - 100] = mono_ns() - t0;
	}
	bench_reap(echo);
	l = bench_summarize(f->lat, n);
	munmap(f, bytes);
	return l;
}
