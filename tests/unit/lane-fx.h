/*
 * tests/unit/lane-fx.h - one lane with its hold table, cursor pages, arm
 * page and wake words in memory shared across fork(), and the helpers
 * the lane tests share (test-lane-rw, test-lane-edges): a writer and
 * readers over it, a holder added as the broker does, records whose
 * payload says their order.
 */
#ifndef TESTS_LANE_FX_H
#define TESTS_LANE_FX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm/lane-rw.h"

#define RING (64u * 1024u)
#define TOPIC 7u
#define NPAGES 4

/* Every shared piece of one lane and its readers, in memory shared
 * across fork(). */
struct fx {
	uint8_t *data;                      /* page 0 and the ring */
	uint8_t *meta;
	uint8_t *hold;
	struct shm_cursor_page *cur;        /* NPAGES cursor pages */
	struct shm_arm_page *arm;           /* one arm page */
	uint32_t *rx_wake;                  /* one word per reader number, 16 bytes apart */
	uint32_t *tx_wake;
	struct hold_table ht;
	struct ring ring;
};

/* len bytes of zeroed memory shared across fork() */
void *fx_shared(size_t len);
void fx_open(struct fx *f);
void fx_close(struct fx *f);

/* struct lane_pages over f: cursor pages 0..NPAGES-1, arm page 0, the
 * wake words of readers 0..63 */
const struct shm_cursor_page *pg_cursor(void *ctx, uint32_t page);
const struct shm_arm_page *pg_arm(void *ctx, uint32_t page);
uint32_t *pg_wake(void *ctx, uint64_t reader);

/* A writer at position 0 with those pages. */
void writer_open(struct fx *f, struct lane_writer *w);

/* A HOLD (or WATCH) entry for reader number `rd` with cursor slot `rd`
 * of page 0 and arm slot `rd`, added as the broker does: the committed
 * end walked from the writer's hint, then the floor protocol.  Returns
 * the start; *idx the entry. */
uint64_t holder_add(struct fx *f, uint32_t kind, unsigned rd, unsigned *idx);

/* Reader number rd (cursor slot rd of page 0) from start. */
void reader_open(struct fx *f, struct lane_reader *r, unsigned rd, bool drop_oldest,
		 uint64_t start);

/* Reserve message `order` of TOPIC (payload: the order, repeated). */
int put(struct lane_writer *w, uint64_t order, uint32_t len);

/* Whether a record read is message m->order of TOPIC, whole. */
bool intact(const struct lane_rec *m);

#endif
