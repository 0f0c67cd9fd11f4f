/*
 * broker/lanes-bridge.h - the links' reader of lanes (docs/design/
 * data-path.md, section 7, "Links"): with lanes on, the broker holds every
 * lane that carries a bridged topic, as one more reader, and offers what
 * it reads to the links as the relay offers what it routes from a TX ring.
 */
#ifndef BROKER_LANES_BRIDGE_H
#define BROKER_LANES_BRIDGE_H

#include <stdbool.h>
#include <stdint.h>

#include "broker/session.h"

struct broker;
struct lpush;
struct lreader;

/* The reader's stand-in session id: above every session's (session.h),
 * so no push or page of a client is ever taken for the bridge's. */
#define LANES_BRIDGE_ID SESSION_ID_LIMIT

/* The loop's request kind of the bridge's futex wait (loop.h). */
#define LANES_BRIDGE_OP_FUTEX 9

/* Made before the lanes of an earlier run are re-adopted: its stand-in
 * session (lanes/.bridge for its cursor pages) is what lanes-adopt.c
 * re-makes its reader from.  0 or -errno. */
int lanes_bridge_init(struct broker *b);
/* After re-adoption: its reader (re-made, or new), its lanes read again,
 * the bridged topics subscribed. */
int lanes_bridge_start(struct broker *b);
void lanes_bridge_free(struct broker *b);

/* Its stand-in session, for re-adoption (NULL when lanes are off). */
struct session *lanes_bridge_session(struct broker *b);
/* Its reader (NULL when it has none). */
struct lreader *lanes_bridge_reader(struct broker *b);

/* A push the register queued for the bridge's reader: applied here
 * (its descriptors stay the register's). */
void lanes_bridge_push(struct broker *b, const struct lpush *p);

/* Every topic some link bridges is one the bridge reads (a link came,
 * went, or learnt its peer's topics; a lane is asked for a topic). */
void lanes_bridge_topics(struct broker *b);

/* Offer what the lanes hold to the links: records offered (a link with
 * no room keeps the record for the next call, and so its lanes). */
uint64_t lanes_bridge_run(struct broker *b);

/* Before the loop sleeps: arm the reader's wake (its arm word, a futex
 * wait on its rx_wake in the ring); true when records came meanwhile
 * (do not sleep).  After the sleep, lanes_bridge_woke(). */
bool lanes_bridge_arm(struct broker *b);
void lanes_bridge_woke(struct broker *b);
/* While the reader is backed off (its wake-ups brought too little): the
 * loop's longest sleep, in ns; 0 otherwise. */
uint64_t lanes_bridge_poll_ns(struct broker *b);

#endif
