/*
 * shm/lane-rw.h - a lane's writer and reader (docs/design/data-path.md,
 * sections 2-4): records with their lane header, the writer's limit from
 * the hold table (slices, marks, `reclaim`), the wake of sleeping readers
 * through their arm pages, the space wait, and a reader that follows
 * commit words, checks every record, and acknowledges into its cursor
 * slot.
 *
 * Pure functions over mapped memory.  Which page a hold entry's numbers
 * name is the caller's business (struct lane_pages): libshmb maps them as
 * the broker's HOLDERS messages arrive, the tests map them directly.
 *
 * Must never: write at or past R + ring size (the limit from the hold
 * table); publish a `reclaim` below one it published; trust a cursor
 * slot, an arm word, the hold table's entries outside equal tags, or any
 * byte of a lane it reads.
 */
#ifndef SHM_LANE_RW_H
#define SHM_LANE_RW_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "shm/hold.h"
#include "shm/lane.h"
#include "shm/ring.h"

/* Largest payload after the lane header in a ring of `size` bytes. */
uint32_t lane_max_payload(uint64_t ring_size, bool received);

/* ---- the writer ----------------------------------------------------------- */

/* How the writer reaches what hold entries name.  Each returns NULL while
 * the page is not mapped yet (the entry then counts at its floor, and a
 * sleeper on it is not woken: the broker's push wakes it). */
struct lane_pages {
	const struct shm_cursor_page *(*cursor)(void *ctx, uint32_t page);
	const struct shm_arm_page *(*arm)(void *ctx, uint32_t page);
	uint32_t *(*wake)(void *ctx, uint64_t reader);  /* its rx_wake word */
	void *ctx;
};

#define LANE_SPACE_SPIN_NS 5000u /* as libshmb's default spin before a sleep */
#define LANE_ARM_PAGES 64 /* arm pages one writer follows (32 256 readers) */

struct lane_peer; /* private: one hold entry as the writer follows it */

struct lane_arm_view {
	uint32_t page;                /* its number */
	const struct shm_arm_page *pg;
	uint64_t mine[SHM_LINE / 8];  /* the bits of this writer's readers */
	int16_t peer[SHM_ARM_SLOTS];  /* bit -> index in peers, or -1 */
};

struct lane_writer {
	struct ring_prod p;
	struct shm_lane_wpage *wp;
	struct hold_table hold;
	struct lane_pages pages;
	bool received;               /* records carry their origin */
	uint64_t R;                  /* the limit: nothing below it is kept */
	uint64_t reclaim_pub;        /* the `reclaim` last published */
	uint64_t version;            /* hold.version the peers were read at */
	uint64_t slice;              /* ring size / SHM_LANE_SLICES */
	uint64_t mark_slice[SHM_LANE_SLICES]; /* the slice start each mark is for */
	uint64_t mark_rec[SHM_LANE_SLICES];   /* ... the record covering it */
	struct lane_peer *peer;      /* SHM_HOLD_MAX of them */
	unsigned npeer;
	struct lane_arm_view *armv;  /* LANE_ARM_PAGES */
	unsigned narm;
	bool unmapped;               /* a live HOLD entry names a page not mapped */
	bool unresolved;             /* ... or any page or wake word of a HOLD/WATCH entry */
	uint64_t space_seq;          /* fresh values for space_arm */
	uint64_t space_spin_ns;      /* spin this long for room before sleeping */
	uint64_t wakes, limit_passes; /* statistics */
};

/*
 * Start writing at (pos, seq) in a lane whose page 0 is at `data` (the
 * ring follows) and whose hold file is mapped at `hold`.  A writer that
 * takes over a lane with records in it (the broker, after a restart)
 * passes the `reclaim` it trusts as `from`: the records from there to pos
 * are walked for the slice marks.  -EINVAL on a bad size or position.
 */
int lane_writer_init(struct lane_writer *w, void *data, uint64_t ring_size, void *hold,
		     const struct lane_pages *pages, bool received, uint64_t from, uint64_t pos,
		     uint64_t seq);
void lane_writer_free(struct lane_writer *w);

/*
 * Reserve a record for topic_id with its order (and, in a received lane,
 * its origin); *payload is where the caller writes len bytes.  Records
 * reserved form a batch for lane_commit().  Returns 0, -EMSGSIZE, -EAGAIN
 * (no room below the limit the holders allow now; short_since is set) or
 * -EBADMSG (a reservation the ring refuses).
 */
int lane_reserve(struct lane_writer *w, uint32_t topic_id, uint64_t order,
		 const struct shm_lane_origin *origin, uint32_t len, void **payload);

/* Publish the batch, then wake the readers that sleep.  0, -ESTALE (the
 * lane was cut under it: nothing of the batch is visible) or -EBADMSG. */
int lane_commit(struct lane_writer *w);

/* Forget the records reserved and not committed. */
void lane_abort(struct lane_writer *w);

/* Wake the readers whose arm bit is set and whose arming was not woken
 * yet (lane_commit() does it; exposed for the broker's pushes). */
void lane_wake_readers(struct lane_writer *w);

/*
 * Wait until a record of len bytes fits, or until the deadline (NULL:
 * none; {0,0}: do not sleep).  `tx_wake` is the writer's space futex word.
 * The caller drains its socket (HOLDERS) before each sleep through
 * `before_sleep` (may be NULL).  0 when it fits, -ETIMEDOUT, or the error
 * of committing an open batch first (-ESTALE: the lane was cut).
 */
int lane_wait_space(struct lane_writer *w, uint32_t len, uint32_t *tx_wake,
		    const struct timespec *deadline, void (*before_sleep)(void *ctx), void *ctx);

/* Bytes a record of payload len takes in the ring (header, lane header,
 * alignment). */
uint64_t lane_rec_bytes(const struct lane_writer *w, uint32_t len);

/* ---- the reader ----------------------------------------------------------- */

enum lane_read_ret {
	LANE_NONE = 0,  /* nothing yet */
	LANE_REC = 1,   /* a record in *m */
	LANE_END = 2,   /* a CUT lane read to its cut: the lane is over */
};

/* One record, checked. */
struct lane_rec {
	const void *payload;   /* in the lane (LANE_HOLD readers), else in the caller's buffer */
	uint32_t len;
	uint32_t topic_id;
	uint64_t order;
	struct shm_lane_origin origin; /* received lanes */
	uint64_t pos, end;     /* where the record lies */
	uint64_t lane_seq;
	uint64_t missed;       /* drop-oldest: lane records lost before it */
};

struct lane_reader {
	struct ring_cons c;
	const struct shm_lane_wpage *wp;
	const struct shm_lane_meta_state *st;
	const uint8_t *bitmap;
	uint64_t *slot;        /* its cursor slot, or NULL */
	uint32_t *tx_wake;     /* its writer's space word, or NULL until mapped */
	uint64_t acked;        /* the slot as last stored */
	uint64_t slice;
	uint64_t last_order;   /* of the last record returned or skipped */
	uint64_t reclaim_seen; /* drop-oldest: the last `reclaim` loaded */
	uint64_t space_woken;
	uint64_t lost_seq0;    /* drop-oldest: the sequence expected before a jump */
	bool lost;             /* ... records were jumped over since the last consume */
	bool received, drop_oldest, order_any;
	int bad;               /* a negative errno once the lane is bad */
};

/*
 * Read a lane from pos (a boundary the broker gave: the start of a hold,
 * or the position acknowledged) with `order` the last order delivered
 * before it (0: none).  `data` is page 0 (read-only), `meta` the meta
 * file.  `slot` (or NULL) is in a cursor page mapped whole, whose line
 * 0 says whether its hold was let go.  drop_oldest readers copy every
 * record and jump over what the writer reclaimed.
 */
int lane_reader_init(struct lane_reader *r, const void *data, uint64_t ring_size, const void *meta,
		     uint64_t *slot, bool received, bool drop_oldest, uint64_t pos, uint64_t order);

/*
 * The next record.  A hold reader gets it in place (valid until it
 * acknowledges past it, while it holds: see lane_unheld()); a
 * drop-oldest reader gets it copied into buf (cap bytes; -EMSGSIZE if it
 * does not fit, the record left unread) with `missed` counting the
 * records lost before it.  Returns enum lane_read_ret or -EBADMSG (a bad
 * lane: r->bad is set, the reader never reads it again).  The record is
 * consumed: the next call returns the one after it.
 */
int lane_read(struct lane_reader *r, void *buf, uint32_t cap, struct lane_rec *m);

/*
 * A hold reader whose hold was let go (the broker's block timeout, until
 * spools) finds its slot's bit set in line 0 of its cursor page (slot:
 * a slot of a cursor page mapped whole): lane_peek() then makes it a
 * drop-oldest reader (r->drop_oldest set: it copies into buf, jumps over
 * what was overwritten and counts it in `missed`).  A caller that copies
 * a record it peeked in place asks lane_unheld() after its copy: true,
 * the copy may hold overwritten bytes (peek again).
 */
bool lane_unheld(const struct lane_reader *r);

/* lane_read() in two steps: the record, checked (a drop-oldest reader
 * may already have jumped over lost records to reach it), and, once the
 * caller takes it, the move past it.  A merge peeks at the heads of a
 * publisher's lanes and consumes the lowest order. */
int lane_peek(struct lane_reader *r, void *buf, uint32_t cap, struct lane_rec *m);
void lane_consume(struct lane_reader *r, const struct lane_rec *m);

/* Acknowledge up to pos (a record's end): the slot's release store, and,
 * when it crossed a slice, a wake of a writer waiting for space. */
void lane_ack(struct lane_reader *r, uint64_t pos);

/* Arm and disarm a reader's sleep (section 4): the fresh value into its
 * arm word, its bit (release); the caller fences and looks again. */
void lane_arm(struct shm_arm_page *pg, uint32_t slot, uint64_t value);
void lane_disarm(struct shm_arm_page *pg, uint32_t slot);

#endif
