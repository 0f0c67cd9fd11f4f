/*
 * bench/common.h - what every benchmark program shares: placement on
 * CPUs, child processes, latency summaries, medians of repetitions, and
 * the baselines measured beside shmb in the same run (an AF_UNIX
 * SOCK_SEQPACKET pair, a raw futex ping-pong), and the kernel channels
 * (socket pairs, pipes) bench/peer-sockets.c measures in full.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>


extern int bench_pinned; /* 1: pin the two sides to CPU 0 and CPU 1 */

void bench_pin(int cpu);
/* fork(); the child dies with its parent (PR_SET_PDEATHSIG). */
pid_t bench_spawn(void);
void bench_reap(pid_t p);
/* Waits for p; nonzero when it did not exit with status 0. */
int bench_wait(pid_t p);
/* Forks a child that pins itself to `cpu` (when bench_pinned), runs
 * fn(arg) and exits 0. */
pid_t bench_child(int cpu, void (*fn)(void *), void *arg);
/* Zeroed memory shared with the children forked after; bench_shfree
 * undoes it. */
void *bench_shalloc(size_t bytes);
void bench_shfree(void *p, size_t bytes);

struct lat {
	double p50, p99, p999, max; /* microseconds; p50 < 0 marks a run with errors */
};

/* Sorts s (nanoseconds) and summarizes it. */
struct lat bench_summarize(uint64_t *s, size_t n);


/*
 * Message checking, the same for every transport: message `seq` carries
 * seq in its first 8 bytes and a byte derived from seq in all the rest.
 */
void msg_fill(void *buf, uint64_t seq, size_t size);
/* 1 when buf (len bytes) is message seq of `size` bytes, intact. */
int msg_intact(const void *buf, size_t len, uint64_t seq, size_t size);

/* What one one-way run delivered, as the receiver saw it. */
struct oneway {
	double msgs_s; /* recv / seconds from the first message to the last */
	uint64_t sent, recv, lost, dup, reord, corrupt;
};

/* The receiver's bookkeeping: expects seqs 0..n-1 of `size` bytes. */
struct msg_check {
	uint64_t n, size, recv, distinct, dup, reord, corrupt, top;
	uint64_t t_first, t_last;
	uint64_t *seen; /* bitmap of seqs received */
};

void msg_check_init(struct msg_check *c, uint64_t n, size_t size);
/* Checks one received message (len bytes) for content, order, repeats. */
void msg_check(struct msg_check *c, const void *buf, size_t len);
/* Fills o (sent: what the sender says it sent) and frees c. */
void msg_check_done(struct msg_check *c, uint64_t sent, struct oneway *o);

/* The kernel channels a user might pick instead of shared memory. */
enum chan_kind {
	CHAN_SEQPACKET, /* AF_UNIX SOCK_SEQPACKET socketpair: one message a record */
	CHAN_STREAM,    /* AF_UNIX SOCK_STREAM socketpair, fixed-size framing */
	CHAN_PIPE,      /* pipe(2) (two for a round trip), fixed-size framing */
};

/* One-way: `n` messages of `size` bytes (8..65536), blocking, every one
 * checked by the receiver; the sender on CPU 0, the receiver on CPU 1. */
struct oneway chan_oneway(enum chan_kind k, uint32_t size, uint64_t n);

/* n 64-byte round trips (after 100 warm-up ones), blocking; every reply
 * checked, *bad = replies wrong or missing. */
struct lat chan_rtt(enum chan_kind k, size_t n, uint64_t *bad);

/* Round trips of a bare futex hand-off between two processes (no spin). */
struct lat futex_pingpong(size_t n);

#endif
