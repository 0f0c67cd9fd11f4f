/*
 * tests/stream.h - what the stream tests share: checksummed payloads,
 * counters in shared memory that child processes write and the parent
 * reads, and publisher and subscriber processes that check order and
 * count duplicates and gaps.
 */
#ifndef TESTS_STREAM_H
#define TESTS_STREAM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "broker-helper.h"
#include "shmb.h"

#define NPUB 3
#define NSUB 3
#define ACK_EVERY 32

struct payload {
	uint32_t pub;
	uint32_t crc;
	uint64_t n;
	uint8_t fill[16];
};

void payload_make(struct payload *p, uint32_t pub, uint64_t n);
bool payload_ok(const struct shmb_msg *m, struct payload *out);

/* Counters the children write and the parent reads. */
struct stats {
	uint32_t ready;
	uint32_t pad;
	uint64_t next[NSUB][NPUB]; /* per subscriber, per publisher: next n expected */
	uint64_t dups[NSUB];
	uint64_t errors[NSUB];
	uint64_t received[NSUB];
	uint64_t published[NPUB];
	uint32_t pace_us;          /* publishers sleep this long every 1000 messages */
};

struct stats *stats_new(void);

/* Connect to t's broker and open session `name` (64 KiB rings). */
int connect_open(const struct tb *t, const char *name, unsigned flags, struct shmb_client **c,
		 struct shmb_session **s);
/* The same, with an RX ring of rx_ring_size bytes. */
int connect_open_rx(const struct tb *t, const char *name, unsigned flags, uint32_t rx_ring_size,
		    struct shmb_client **c, struct shmb_session **s);

/* Check one received message against what subscriber idx has seen from
 * npub publishers (order per publisher; a repeat counts as a duplicate),
 * and acknowledge every ACK_EVERY.  0, or an exit code for the child. */
int stream_take(struct stats *st, int idx, const struct shmb_msg *m, int npub,
		struct shmb_session *s, unsigned *unacked);

/* A subscriber process (never returns): session sub-<idx> on topic "t",
 * receives until it has `total` new messages from npub publishers. */
void subscriber(const struct tb *t, struct stats *st, int idx, uint64_t total, int npub)
	__attribute__((noreturn));

/* A publisher process (never returns): session pub-<idx>, n messages. */
void publisher(const struct tb *t, struct stats *st, int idx, uint64_t n) __attribute__((noreturn));

pid_t fork_or_die(void);

/* Wait (10 s at most) until n children said they are ready. */
bool wait_ready(struct stats *st, uint32_t n);

#endif
