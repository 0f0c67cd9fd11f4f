/*
 * libclient/lanew.h - libshmb's writer side of the direct data path
 * (docs/design/data-path.md, sections 1-4): one publisher session
 * generation's lanes as the broker hands them over (the PROTO_LANE_TOPIC
 * reply), the pages of their holders (PROTO_HOLDER pushes), and publish
 * into the topic's lane in source order, batched or not, waiting for
 * space with a deadline.
 *
 * Not thread-safe: the session's publish lock covers it.  Nothing here
 * talks to the broker; the caller passes what arrived and drains its
 * socket when asked (before a sleep for space).
 */
#ifndef LIBCLIENT_LANEW_H
#define LIBCLIENT_LANEW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "shm/lane-rw.h"
#include "shm/proto.h"

#define LANEW_LANES 16    /* lanes of one generation (classes) */
#define LANEW_PAGES 1024  /* readers' cursor pages, wake pages, arm pages each */

struct lanew_lane {
	uint32_t number;       /* the broker's number for it */
	uint8_t *data;         /* read-write: page 0 and the ring */
	size_t data_len;
	const uint8_t *meta, *hold;
	uint32_t *tx_wake;     /* its space word */
	uint64_t wake_dev, wake_ino; /* which page (a restarted broker sends another) */
	int guard[2];          /* SIGBUS guard slots of data and meta, or -1 */
	struct lane_writer w;
	bool ended;            /* cut under it (-ESTALE): it takes no more */
};

/* A page another process may cut (a reader's cursor page) is read under
 * the guard; a sealed memfd (wake and arm pages) cannot be cut. */
struct lanew_map {
	uint64_t key;          /* page number, or reader number for wake pages */
	void *map;
	int guard;             /* -1: none needed */
};

struct lanew {
	struct lanew_lane *lanes[LANEW_LANES];
	unsigned nlanes;
	struct lanew_map pages[LANEW_PAGES], wakes[LANEW_PAGES], arms[LANEW_PAGES];
	unsigned npages, nwakes, narms;
	/* each topic's lane by topic id (the broker's ids are dense, below
	 * SHM_LANE_TOPIC_BITS): grown as ids come, NULL where none */
	struct lanew_lane **by_topic;
	uint32_t topics_cap;
	struct lanew_lane *last_lane; /* the lane of last_topic: a stream on one topic */
	uint32_t last_topic;          /* looks nothing up (valid while last_lane is set) */
	struct lanew_lane *open;   /* the lane with a batch not committed yet */
	uint64_t next_order;       /* the session's source sequence */
	uint64_t committed_order;  /* the order after the last committed record */
	void (*drain)(void *ctx);  /* read the socket (HOLDER pushes) before a sleep */
	void *ctx;
	char why[160];
};

void lanew_init(struct lanew *s, uint64_t next_order);
void lanew_free(struct lanew *s);

/* A lane from a PROTO_LANE_TOPIC reply: fds data (read-write), meta,
 * hold, tx_wake, in that order; consumed (closed) whatever happens.  A
 * lane it has already is kept as it is (0).  -errno with s->why. */
int lanew_lane_add(struct lanew *s, uint32_t number, uint64_t ring_size, const int fds[4]);

/* The reply said topic goes into lane `number`. */
int lanew_topic(struct lanew *s, uint32_t topic, uint32_t number);

/* A PROTO_HOLDER push with its descriptors (consumed).  With
 * PROTO_HOLDER_TX_WAKE, the lane's tx_wake page: another than the one it
 * has is mapped over it at the same address (a space wait in progress
 * sleeps on it from its next step). */
int lanew_holder(struct lanew *s, const struct proto_holder *h, const int *fds, unsigned nfds);

/* Whether a holder of one of its lanes names a page or wake word not
 * mapped yet (its PROTO_HOLDER push is still to be read). */
bool lanew_unresolved(const struct lanew *s);

/* Whether this owner has lane `number` (its descriptors came). */
bool lanew_has_lane(const struct lanew *s, uint32_t number);

/*
 * Publish len bytes on topic (which has a lane).  more: leave the batch
 * open (committed by the next publish without it, lanew_flush, or a
 * publish to another lane, which commits it first: records become
 * visible in source order).  Waits for space until deadline (NULL:
 * forever; {0,0}: not at all).  0, -EAGAIN (no room by the deadline),
 * -EMSGSIZE, -ESTALE (the lane was cut: this owner is fenced), -ENOENT
 * (no lane for the topic).
 */
int lanew_publish(struct lanew *s, uint32_t topic, const void *data, uint32_t len, bool more,
		  const struct timespec *deadline);

/* Commit the open batch, if any. */
int lanew_flush(struct lanew *s);

#endif
