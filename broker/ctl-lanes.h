/*
 * broker/ctl-lanes.h - the direct data path in the running broker, on by
 * default (ctl-lanes.c; --no-lanes turns it off).  Every function does
 * nothing when lanes are off.
 */
#ifndef BROKER_CTL_LANES_H
#define BROKER_CTL_LANES_H

#include <stdbool.h>
#include <stdint.h>

#include "shm/proto.h"

struct broker;
struct conn;
struct session;

/* At start-up: SHMB_DIR/lanes and the register (unless --no-lanes). */
int ctl_lanes_start(struct broker *b);
void ctl_lanes_stop(struct broker *b);
/* Send every push the register queued to its session's owner (if it
 * still has that owner generation; the links' reader applies its own),
 * then close their descriptors. */
void ctl_lanes_flush(struct broker *b);

/* PROTO_LANE_TOPIC: the reply, then the pushes it caused. */
int ctl_lane_topic(struct broker *b, struct conn *c, const struct proto_lane_topic *q);

/* PROTO_LANE_BAD: a reader says a lane has a bad record; the broker walks
 * it itself and, finding one, makes it BAD and quarantines its writer. */
int ctl_lane_bad(struct broker *b, struct conn *c, const struct proto_lane_bad *q);

/* s subscribed to topic: holders on the lanes that carry it. */
void ctl_lanes_subscribed(struct broker *b, struct session *s, uint32_t topic);
/* s unsubscribed from topic: the lanes its reader holds that carry no
 * topic it still reads are let go (lanes_unsubscribe), so an idle reader
 * holds no publisher of a topic it left. */
void ctl_lanes_unsubscribed(struct broker *b, struct session *s, uint32_t topic);

enum ctl_lanes_end {
	/* the owner's connection went (or it was detached for being slow):
	 * the same generation may come back (PROTO_OPEN_REATTACH) and write
	 * on, so its lanes stay open while its process lives */
	CTL_LANES_DETACHED,
	/* the generation is over: a new owner (called after the commit
	 * point), closed by its owner, quarantined */
	CTL_LANES_ENDED,
	/* the session is destroyed or expired (after its generation 0 is
	 * stored) */
	CTL_LANES_GONE,
};

/* A reader session's own sleep word and arm page, pushed before the
 * reply to its subscribe: it sleeps on them from its first wait on. */
void ctl_lanes_reader_self(struct broker *b, struct session *s);

/*
 * Owner generation `gen` of s ends as `how` says.  Its lanes are cut
 * (their readers and its tx_wake woken) when it is over, and when its
 * process dies detached (ctl_lanes_deaths); a reader's holds stay while
 * the session lives and are let go when it is gone (its rx_wake woken).
 */
void ctl_lanes_session_end(struct broker *b, struct session *s, uint32_t gen,
			   enum ctl_lanes_end how);

/*
 * A new owner generation of s is coming: generation gen's open lanes are
 * fenced after their last record and their cut fields written (the cut
 * is finished by ctl_lanes_session_end(CTL_LANES_ENDED) after the commit
 * point), and s->lanes_next_seq is raised to their highest order, where
 * the successor's source sequence starts.  Failures are logged.
 */
void ctl_lanes_fence(struct broker *b, struct session *s, uint32_t gen);

/* A detached writer's process may have died (the exit watch saw a death;
 * also every housekeeping tick): the lanes of each one that did are cut. */
void ctl_lanes_deaths(struct broker *b);

/* s's owner was answered: a new owner takes the last one's holds over;
 * the same owner back over a lane connection is sent again every push
 * it may have missed while detached (lanes_resend). */
void ctl_lanes_opened(struct broker *b, struct session *s);

/* s has a new owner generation and no owner yet (an admin's kick): its
 * reader moves to that generation now, holds and all, so the lanes made
 * while it waits are held for it too (as its RX ring receives on the
 * relay) and its next owner takes them over with the rest. */
void ctl_lanes_ownerless(struct broker *b, struct session *s);

/* s, a reader with no owner, cannot come back as it was (why: closed by
 * its owner, say): the broker copies what its lanes bring it into its RX
 * ring until its next owner comes (lanes-spill.c). */
void ctl_lanes_spill(struct broker *b, struct session *s, const char *why);

/* s's RX sleepers are being woken: a lane reader of s sleeps on its
 * rx_wake alone (its RX ring is one more source), so that is woken too. */
void ctl_lanes_wake_reader(struct session *s);

/* About once a second: a lane whose writer cut, grew or punched its data
 * file is BAD (its readers drop it) and, while the writer is the
 * session's owner, the session is quarantined (data-path.md, section 5). */
void ctl_lanes_sweep(struct broker *b);

/* Housekeeping: lanes passed by every holder go. */
void ctl_lanes_tick(struct broker *b);

#endif
