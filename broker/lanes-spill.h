/*
 * broker/lanes-spill.h - spill of a reader that cannot come back
 * (docs/design/data-path.md, section 6, and section 9, step 5, for what
 * is built so far): the broker takes its holds over and copies what its
 * lanes bring it into its RX ring, the spool, so that its publishers go
 * on while it is away (a lane whose record does not fit there is let go,
 * and what its writer overwrites is a counted gap); its next owner reads
 * the spool, then the lanes from where the copying stopped.
 */
#ifndef BROKER_LANES_SPILL_H
#define BROKER_LANES_SPILL_H

#include <stdbool.h>
#include <stdint.h>

struct broker;
struct lpush;
struct session;

/* The loop's request kind of a spill's futex wait (loop.h). */
#define LANES_SPILL_OP_FUTEX 10

void lanes_spill_init(struct broker *b);
/* The broker stops: every spill ends as lanes_spill_stop() ends one. */
void lanes_spill_free(struct broker *b);

/*
 * s, a block reader of lanes with no owner whose owner generation cannot
 * come back (its process died, it closed the session, it was kicked),
 * is spilled: its holds move to a reader of the broker's (the take-over
 * walk, from where it acknowledged; its pages no process has) and what
 * they bring is copied into its RX ring.  1 when it is spilled now, 0
 * when it may not be (not such a reader, or spilled already), -errno.
 */
int lanes_spill_start(struct broker *b, struct session *s, const char *why);

/* Copying for s ends (its next owner comes, or it goes): what was copied
 * is committed, then acknowledged in the broker's cursor slots, where the
 * next owner's take-over starts.  Whether s was spilled. */
bool lanes_spill_stop(struct broker *b, struct session *s);

/* s's spill, if it is spilled: what it copied, the lanes it let go, and
 * when it started (CLOCK_MONOTONIC ns).  False when it is not. */
bool lanes_spill_figures(const struct session *s, uint64_t *copied, uint64_t *let_go,
			 uint64_t *since_ns);

/* A push the register queued for a spilled session's reader: true when
 * taken here (its descriptors stay the register's). */
bool lanes_spill_push(struct broker *b, const struct lpush *p);

/* Copy what the lanes hold into the spools: records copied. */
uint64_t lanes_spill_run(struct broker *b);

/* Before the loop sleeps: arm each spill's wake; true when records came
 * meanwhile (do not sleep).  After the sleep, lanes_spill_woke(). */
bool lanes_spill_arm(struct broker *b);
void lanes_spill_woke(struct broker *b);
/* While a spill is backed off: the loop's longest sleep in ns; else 0. */
uint64_t lanes_spill_poll_ns(struct broker *b);

#endif
