/*
 * bench/common.h - what every benchmark program shares: placement on
 * CPUs, child processes, latency summaries, medians of repetitions, and
 * the baselines measured beside shmb in the same run (an AF_UNIX
 * SOCK_SEQPACKET pair, a raw futex ping-pong).
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define REPS 3

extern int bench_pinned; /* 1: pin the two sides to CPU 0 and CPU 1 */

void bench_pin(int cpu);
pid_t bench_spawn(void);
void bench_reap(pid_t p);

struct lat {
	double p50, p99, p999, max; /* microseconds; p50 < 0 marks a run with errors */
};

/* Sorts s (nanoseconds) and summarizes it. */
struct lat bench_summarize(uint64_t *s, size_t n);

double bench_median(const double *v);
double bench_min(const double *v);
double bench_max(const double *v);

/* One-way messages/s of `size`-byte messages over AF_UNIX SOCK_SEQPACKET,
 * every message checked; 0 on any loss. */
double unix_throughput(uint32_t size, uint64_t n);

/* 64-byte round trips over AF_UNIX SOCK_SEQPACKET (blocking). */
struct lat unix_pingpong(size_t n);

/* Round trips of a bare futex hand-off between two processes (no spin). */
struct lat futex_pingpong(size_t n);

#endif
