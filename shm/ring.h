/*
 * shm/ring.h - a single-producer single-consumer ring of variable-length
 * records in shared memory.
 *
 * Positions are monotonic 64-bit byte offsets masked to an index; they
 * never wrap in practice (2^64 bytes).  Records are 8-byte aligned, start
 * with struct shm_rec_hdr, and never straddle the end of the ring: a
 * padding record fills the tail instead.  A record becomes visible when
 * its commit word is swapped from 0 by a release CAS (layout.h); before
 * committing, the producer zeroes the commit word where the next record
 * will start, so a reader never mistakes an old lap's bytes for a header.
 * The full check keeps 8 bytes of headroom for that word.
 *
 * The largest record (header included, before alignment) is a quarter of
 * the ring (RING_MAX_REC_DIV): a record and the padding before it always
 * fit in an empty ring, so the producer can always make progress.
 *
 * The reader trusts nothing: every header is copied out of shared memory
 * once, then checked (length, alignment, type, generation, sequence,
 * bounds against the ring and the producer's published position) before
 * it is used.  A bad header is reported as -EBADMSG, never a crash or a
 * read out of bounds.
 *
 * Both sides keep their state in process-local structs; the shared words
 * are the commit words in the ring and two positions reached through
 * pointers, because the producer's and the consumer's positions live in
 * different files (layout.h).  This module knows nothing of sessions.
 */
#ifndef SHM_RING_H
#define SHM_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm/layout.h"

#define RING_MAX_REC_DIV 4u
#define RING_SEQ_ANY UINT64_MAX

struct ring {
	uint8_t *data;
	uint64_t size;
	uint64_t mask;
	uint32_t max_rec; /* largest record, header included */
};

/* Checks the size (power of two in [SHM_RING_MIN, SHM_RING_MAX]) and the
 * alignment of data.  -EINVAL otherwise. */
int ring_init(struct ring *r, void *data, uint64_t size);

/* Largest payload a ring of this size takes. */
static inline uint32_t ring_max_payload(const struct ring *r)
{
	return r->max_rec - SHM_REC_HDR_SIZE;
}

static inline uint64_t ring_align(uint64_t n)
{
	return (n + SHM_REC_ALIGN - 1) & ~(uint64_t)(SHM_REC_ALIGN - 1);
}

/* ---- producer ---------------------------------------------------------- */

struct ring_prod {
	struct ring r;
	const uint64_t *cons_pos; /* consumer's released position (the other side's word) */
	uint64_t *prod_pos;       /* our published write position, or NULL */
	uint64_t pos;             /* committed up to here */
	uint64_t seq;             /* sequence of the next committed record */
	uint64_t rsv;             /* reserved up to here */
	uint64_t rsv_seq;         /* sequence of the next reserved record */
	uint64_t first_commit;    /* commit word held back for the slot at pos */
	uint64_t cons_cache;      /* where free space starts: the consumer's position,
				     or the floor if that is further (drop-oldest) */
	uint64_t cons_raw;        /* the consumer's position as last read */
	uint32_t gen;             /* stamped into every record */
};

/*
 * Start producing at (pos, seq); cons_pos is where the consumer publishes
 * how far it has read, and must already be at or behind pos.
 */
int ring_prod_init(struct ring_prod *p, const struct ring *r, const uint64_t *cons_pos,
		   uint64_t *prod_pos, uint64_t pos, uint64_t seq, uint32_t gen);

/* The same, for a ring whose producer may have freed records the consumer
 * has not read (drop-oldest): nothing before `floor` is the consumer's
 * any more, so it may lag more than a lap behind pos. */
int ring_prod_init_floor(struct ring_prod *p, const struct ring *r, const uint64_t *cons_pos,
			 uint64_t *prod_pos, uint64_t pos, uint64_t seq, uint32_t gen,
			 uint64_t floor);

/*
 * Reserve a record of payload_len bytes; *payload points to where the
 * caller writes it.  Several reservations form a batch that one
 * ring_commit() publishes at once.  Returns 0, -EMSGSIZE (larger than
 * ring_max_payload), -EAGAIN (no room until the consumer moves) or
 * -EBADMSG (the consumer's position is impossible: behind its last value,
 * beyond what was written, or misaligned).
 */
int ring_reserve(struct ring_prod *p, uint32_t payload_len, uint16_t type, uint16_t flags,
		 void **payload);

/*
 * Publish everything reserved.  Returns 0, or -ESTALE when the consumer
 * fenced the ring off first (nothing of the batch is published, and it
 * never will be), or -EBADMSG if the slot held something else.
 */
int ring_commit(struct ring_prod *p);

/* Forget what was reserved and not committed. */
void ring_abort(struct ring_prod *p);

/* Reserve, copy and commit one record. */
int ring_write(struct ring_prod *p, const void *buf, uint32_t len, uint16_t type);

/* Bytes free for the producer now (refreshes the consumer position). */
int ring_prod_free(struct ring_prod *p, uint64_t *out);

/* The longest payload ring_reserve() takes now (refreshes the consumer
 * position): 0 and *max_payload, -EAGAIN when not even an empty record
 * fits, or -EBADMSG as ring_reserve() says. */
int ring_prod_room(struct ring_prod *p, uint32_t *max_payload);

/*
 * Drop-oldest: treat everything before pos as consumed, whatever the
 * consumer says.  pos must lie on a record boundary between the
 * consumer's position and what was committed; the caller publishes it to
 * readers before it writes over the bytes it frees.
 */
void ring_prod_set_floor(struct ring_prod *p, uint64_t pos);

/* ---- consumer ---------------------------------------------------------- */

struct ring_cons {
	struct ring r;
	const uint64_t *prod_pos; /* if set, never read at or beyond it */
	uint64_t *cons_pos;       /* ring_release() publishes pos here, or NULL */
	uint64_t pos;             /* next byte to read */
	uint64_t seq;             /* sequence expected next, or RING_SEQ_ANY */
	uint64_t prod_cache;
	uint32_t gen_min;         /* records outside [gen_min, gen_max] are corrupt */
	uint32_t gen_max;
};

struct ring_msg {
	struct shm_rec_hdr hdr; /* private, validated copy */
	const void *payload;    /* in the ring: copy it before trusting its bytes */
	uint32_t len;           /* payload bytes */
	uint64_t pos;           /* where the record starts */
	uint64_t end;           /* position after it */
};

int ring_cons_init(struct ring_cons *c, const struct ring *r, const uint64_t *prod_pos,
		   uint64_t *cons_pos, uint64_t pos, uint64_t seq, uint32_t gen_min,
		   uint32_t gen_max);

/*
 * Look at the next record without consuming it.  0 and *m filled; -EAGAIN
 * when there is none yet; -ESTALE when the ring was fenced off at this
 * point; -EBADMSG when what is there is not a valid record.
 */
int ring_peek(struct ring_cons *c, struct ring_msg *m);

/* Up to n records from the read position on; returns how many (>= 1) or
 * the error ring_peek() gives for the first one. */
int ring_peek_batch(struct ring_cons *c, struct ring_msg *m, unsigned n);

/* Move the read position past m (and every record peeked before it). */
static inline void ring_consume(struct ring_cons *c, const struct ring_msg *m)
{
	c->pos = m->end;
	c->seq = m->hdr.seq + 1;
}

/* Publish the read position to the producer (a release store). */
void ring_release(struct ring_cons *c);

/* Copy out one record's payload (up to cap bytes), consume and release. */
int ring_read(struct ring_cons *c, void *buf, uint32_t cap, struct ring_msg *m);

/*
 * End the ring at the read position: swap SHM_COMMIT_FENCED into the empty
 * slot there, so that the producer's next commit fails with -ESTALE.
 * Returns 0 once fenced, or -EAGAIN when a record was committed there
 * first (drain it, then fence again).
 */
int ring_fence(struct ring_cons *c);

/* Undo ring_fence() at pos (a cut that never took effect): 0, or -ENOENT
 * when no fence is there. */
int ring_unfence(const struct ring *r, uint64_t pos);

/*
 * After a crash of the producer's process: from a published (pos, seq)
 * that may lag, walk forward over valid committed records to the true
 * write position.  Fills *pos and *seq; -EBADMSG if the walk finds a bad
 * header before the first empty slot.
 */
int ring_recover(const struct ring *r, uint64_t cons, uint64_t *pos, uint64_t *seq,
		 uint32_t gen_min, uint32_t gen_max);

#endif
