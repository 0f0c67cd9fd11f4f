/*
 * libclient/laneset.h - libshmb's reader over many lanes (docs/design/
 * data-path.md, section 2 "The library's reader"): one set per reader
 * session generation, holding the lanes the broker told it to read, each
 * mapped read-only under the SIGBUS guard, and the publishers' cursor
 * pages it acknowledges into.
 *
 * laneset_next() merges each publisher's lanes by `order` and serves the
 * publishers round robin (a quantum of 64 records, or what was committed
 * when the turn began, whichever is less); records of topics the session
 * does not read are consumed silently and acknowledged over; a bad lane is
 * dropped and reported while the others read on.  laneset_wait() is the
 * reader's sleep of section 4 (arm page, rx_wake, deadlines, noisy peers).
 *
 * Not thread-safe: the caller serializes every call on a set.  Nothing in
 * the mapped files is trusted (sizes from fstat, the meta header checked
 * on a private copy, every record checked by shm/lane-rw.c).
 *
 * Left for later: per-lane topic windows [start, end) from the rx lane
 * directory (a subscribe or unsubscribe on a lane already held); today a
 * topic filter applies to every lane of the set alike.
 */
#ifndef LIBCLIENT_LANESET_H
#define LIBCLIENT_LANESET_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "shm/lane-rw.h"
#include "shm/proto.h"

#define LANESET_QUANTUM 64u  /* records a publisher gets per turn, at most */

enum laneset_event {
	LANESET_EV_BAD = 1, /* the lane was dropped: a bad record, or its file cut under us */
	LANESET_EV_END = 2, /* the lane was read to its cut; released once acknowledged */
};

/* A lane as the broker describes it to its reader. */
struct laneset_desc {
	uint32_t lane;         /* the broker's number for it: the handle */
	uint32_t kind;         /* enum shm_lane_kind; meta must say the same */
	uint64_t publisher;    /* its publisher (local lanes: meta must say the same) */
	uint64_t start;        /* where this reader starts: a record boundary */
	uint64_t order;        /* the order delivered before start (0: none) */
	uint32_t cursor_page;  /* the publisher's cursor page it acknowledges into */
	uint32_t cursor_slot;  /* ... and its slot there (< SHM_CURSOR_SLOTS) */
	bool drop_oldest;      /* a drop-oldest reader: copies, jumps, counts `missed` */
	bool in_place;         /* a hold reader of a same-uid writer: payloads in the lane */
};

/* One message. */
struct laneset_msg {
	const void *data;      /* in the lane (in place) or in the caller's buf */
	uint32_t len;
	uint32_t topic_id;
	uint64_t publisher;
	uint64_t order;
	uint64_t missed;       /* drop-oldest: records of this lane lost before it */
	uint32_t lane;
	struct shm_lane_origin origin; /* received lanes */
};

/* Called from within laneset_next(), laneset_wait() and laneset_ack(); it must
 * not call back into the set. */
typedef void (*laneset_event_fn)(void *ctx, int event, uint64_t publisher, uint32_t lane);

struct laneset_pub;
struct laneset_lane;
struct laneset_floor {
	uint64_t publisher, order;
};

struct laneset {
	struct laneset_pub **pub;
	unsigned npub;
	unsigned cur;             /* the publisher whose turn it is */
	uint8_t *topics;          /* one bit per topic id read by the session */
	struct laneset_floor *floors; /* laneset_floor(): per publisher, rarely any */
	unsigned nfloors, capfloors;
	laneset_event_fn on_event;
	void *ctx;
	/* laneset_wait() calls it after loading rx_wake, before it arms: the
	 * caller reads its socket without blocking there (a LANES push is
	 * followed by a wake of rx_wake).  NULL: none. */
	void (*before_sleep)(void *ctx);
	/* laneset_wait() also stops when this says there is something
	 * elsewhere (the session's RX ring, a push, staleness); called where
	 * the lanes are looked at, after the arm and its fence.  NULL: none. */
	bool (*look_more)(void *ctx);
	struct laneset_lane *buf_owner; /* whose record the caller's buf holds now */
	uint64_t faults_seen;     /* sigbus_faults() as last looked at */
	uint64_t arm_seq;         /* fresh arm values */
	uint64_t events;
	bool sweep;               /* a lane is over: release it once acknowledged */
	bool peek;                /* laneset_peek(): every record is "too long" */
	/* statistics */
	/* statistics, read by other threads (relaxed atomics) */
	uint64_t skipped, order_falls, wait_returns, noisy_steps, unacked_steps;
	char why[160];            /* after a refusal: what was wrong */
};

/*
 * What a PROTO_LANE push for a lane (not lane 0) describes: *d, and which
 * of its descriptors are the cursor page and the writer's tx_wake (-1:
 * none); data and meta are fds[0] and fds[1].  Returns the index of the
 * descriptors after them (the reader's own words, with PROTO_LANE_SELF),
 * or -EINVAL when nfds is not what the flags say (the lane is not read).
 */
int laneset_push_desc(const struct proto_lane *m, const int *fds, unsigned nfds,
		      struct laneset_desc *d, int *page_fd, int *wake_fd);

/* 0 or -ENOMEM. */
int laneset_init(struct laneset *s, laneset_event_fn on_event, void *ctx);

/* Unmap everything; a message returned in place is gone with it. */
void laneset_free(struct laneset *s);

/*
 * Read a lane: data and meta mapped read-only after their sizes (fstat)
 * and meta's header (magic, layout version, CRC32C, ring size, kind,
 * publisher) were checked on a private copy; tx_wake (the writer's space
 * word, a 4096-byte page) read-write, or -1 for "not yet"
 * (laneset_set_tx_wake()).  The descriptors stay the caller's.  0, or with
 * s->why said: -EINVAL (a bad description or header field), -EEXIST (the
 * lane or its cursor slot taken), -EMSGSIZE (a file of the wrong size),
 * -EBADMSG (not a lane's meta), -EPROTONOSUPPORT (another layout
 * version), -EILSEQ (the header's checksum), -ENOSPC (the SIGBUS guard is
 * full), -ENOMEM, or mmap's and fstat's errors.
 */
int laneset_add(struct laneset *s, const struct laneset_desc *d, int data_fd, int meta_fd,
	      int tx_wake_fd);

/*
 * A lane read already, let go by the broker at an unsubscribe (it reads
 * as a drop-oldest reader since), held again on d's cursor page and slot
 * from d->start: it reads on as d describes it first, from where it
 * stands when that is at or above d->start, else from d->start (what lay
 * below was overwritten, and gaps there are not counted).  The page comes
 * first (laneset_cursor_page()).  0, -ENOENT (not read: add it instead),
 * -EINVAL, -EEXIST (the slot is another lane's).
 */
int laneset_rehold(struct laneset *s, const struct laneset_desc *d);

/* The broker let the lane go at an unsubscribe (none of its topics is
 * read now): what the reader jumps over there until laneset_rehold() is
 * no gap.  0 or -ENOENT. */
int laneset_released(struct laneset *s, uint32_t lane);

/* The writer's tx_wake page, once it came; or another page than the one
 * the lane has (a restarted broker makes new ones), mapped over it at the
 * same address.  0, -ENOENT, -EEXIST (that same page), -EMSGSIZE. */
int laneset_set_tx_wake(struct laneset *s, uint32_t lane, int fd);

/*
 * A publisher's cursor page page_no (4096 bytes), mapped read-write; its
 * lanes acknowledge into it from now on (what was acknowledged before is
 * stored at once).  0, -EEXIST, -EMSGSIZE, -ENOSPC, -ENOMEM.
 */
int laneset_cursor_page(struct laneset *s, uint64_t publisher, uint32_t page_no, int fd);

/* Stop reading a lane and unmap it now.  0 or -ENOENT (never added, or
 * already released after its end or a fault). */
int laneset_remove(struct laneset *s, uint32_t lane);

/* Records of publisher up to `order` came another way (the broker's
 * copies into the session's RX ring, a spill): its lane records up to
 * there are skipped as copies, acknowledged over.  0 or -ENOMEM. */
int laneset_floor(struct laneset *s, uint64_t publisher, uint64_t order);

/* Whether order of publisher is at or below its floor. */
bool laneset_below_floor(const struct laneset *s, uint64_t publisher, uint64_t order);

/* Read publisher's lanes or not, for now (a paused publisher is skipped
 * by laneset_next() and laneset_peek()).  0 or -ENOENT. */
int laneset_pause(struct laneset *s, uint64_t publisher, bool on);

/* The numbers of publisher's lanes (at most cap into out): how many. */
unsigned laneset_lanes(const struct laneset *s, uint64_t publisher, uint32_t *out, unsigned cap);

/* Read topic_id or not.  0 or -EINVAL. */
int laneset_topic(struct laneset *s, uint32_t topic_id, bool on);

/* Read no topic (before a new list). */
void laneset_topics_clear(struct laneset *s);

/*
 * The next message across every lane: 1 and *out; 0 when there is none
 * now; -EMSGSIZE when the next one is longer than cap (out->len says how
 * long, the record stays unread).  Copied into buf unless read in place.
 * out->data stays valid until laneset_ack() (in place) or the next call
 * (copied).
 */
int laneset_next(struct laneset *s, void *buf, uint32_t cap, struct laneset_msg *out);

/* The message laneset_next() would return, its payload not read and the
 * record left unread (out->data NULL): 1, or 0 when there is none now. */
int laneset_peek(struct laneset *s, struct laneset_msg *out);

/* Whether a record was returned (or skipped) and not acknowledged: the
 * writers see no progress in its slots then. */
bool laneset_unacked(const struct laneset *s);

/* Acknowledge, per lane, every record returned or skipped so far; wakes
 * a writer waiting for the space; releases lanes that are over. */
void laneset_ack(struct laneset *s);

/*
 * Sleep until a message may be there: spin for spin_ns (yielding past
 * 20 us), then arm `arm_slot` of the arm page and sleep on rx_wake, at
 * most 1 s at a time, until the CLOCK_MONOTONIC deadline (NULL: none).
 * 1 when something may be there (a message, or a lane over), 0 at the
 * deadline, -EINVAL for an arm slot out of range.
 */
int laneset_wait(struct laneset *s, uint32_t *rx_wake, struct shm_arm_page *arm,
	       uint32_t arm_slot, uint64_t spin_ns, const struct timespec *deadline);

#endif
