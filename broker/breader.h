/*
 * broker/breader.h - the broker as a reader of lanes (docs/design/
 * data-path.md, section 4): a reader the broker plays itself (the links'
 * reader, a spilled session's) arms its arm slot, looks once more, and
 * has the loop wait on its rx_wake in io_uring; a writer that bumps that
 * word with nothing to read is backed off, as the relay backs off a noisy
 * tx_signal.
 */
#ifndef BROKER_BREADER_H
#define BROKER_BREADER_H

#include <stdbool.h>
#include <stdint.h>

struct broker;
struct laneset;
struct lpush;
struct lreader;

/* A PROTO_LANE push (data, meta, [cursor page], [tx_wake], [rx_wake, arm]:
 * the reader's own words, which the broker has already) applied to set,
 * every record copied out, never read in place.  who names the reader in
 * the log.  0, or -errno (said in the log). */
int breader_push(struct laneset *set, const struct lpush *p, const char *who);

struct lwait {
	bool futex_armed;      /* a wait on rx_wake is in the ring */
	uint32_t armed_value;  /* rx_wake as loaded before the arm */
	uint64_t arm_seq;      /* fresh arm values */
	/* noisy wake-ups: the window's start, its wake-ups and records */
	uint64_t win_start, win_moved, backoff_until;
	uint32_t win_wakes;
	uint64_t backoffs;
};

void lwait_init(struct lwait *w);

/* Once a window: whether w is backed off now (its wake-ups brought too
 * little); who names the reader in the log (NULL: not logged; a spill's
 * let-go lanes still wake it, honestly). */
bool lwait_backed_off(struct lwait *w, uint64_t now, const char *who);

/* Arm r's slot with a fresh value after loading rx_wake, then a full
 * fence: the caller looks at the lanes once more after this (a writer
 * sees the arm, or that look sees its record).  false when r has no arm
 * page. */
bool lwait_arm(struct lwait *w, struct lreader *r);

/* Nothing found after lwait_arm(): a futex wait on r's rx_wake for the
 * value loaded there, tagged user_data, unless one is in the ring. */
void lwait_sleep(struct broker *b, struct lwait *w, struct lreader *r, uint64_t user_data);

/* The wait completed. */
void lwait_done(struct lwait *w);

/* The loop woke: r's arm slot cleared. */
void lwait_woke(struct lreader *r);

/* While backed off: the loop's longest sleep, in ns; 0 otherwise. */
uint64_t lwait_poll_ns(const struct lwait *w, uint64_t now);

#endif
