/*
 * broker/ctl-lanes.h - the direct data path in the running broker, behind
 * --lanes (ctl-lanes.c).  Every function does nothing when lanes are off.
 */
#ifndef BROKER_CTL_LANES_H
#define BROKER_CTL_LANES_H

#include <stdbool.h>
#include <stdint.h>

#include "shm/proto.h"

struct broker;
struct conn;
struct session;

/* At start-up: SHMB_DIR/lanes and the register (with --lanes). */
int ctl_lanes_start(struct broker *b);
void ctl_lanes_stop(struct broker *b);

/* PROTO_LANE_TOPIC: the reply, then the pushes it caused. */
int ctl_lane_topic(struct broker *b, struct conn *c, const struct proto_lane_topic *q);

/* s subscribed to topic: holders on the lanes that carry it. */
void ctl_lanes_subscribed(struct broker *b, struct session *s, uint32_t topic);

/* s's owner generation ended (detach, a new owner; gone: destroyed): its
 * lanes are cut; its holds are let go only when the session is gone. */
void ctl_lanes_session_end(struct broker *b, struct session *s, bool gone);

/* A reader session's own sleep word and arm page, pushed before the
 * reply to its subscribe: it sleeps on them from its first wait on. */
void ctl_lanes_reader_self(struct broker *b, struct session *s);

/* s's new owner was answered: the holds of the last owner move to it. */
void ctl_lanes_opened(struct broker *b, struct session *s);

/* About once a second: a lane whose writer cut, grew or punched its data
 * file is BAD (its readers drop it) and, while the writer is the
 * session's owner, the session is quarantined (data-path.md, section 5). */
void ctl_lanes_sweep(struct broker *b);

/* Housekeeping: lanes passed by every holder go. */
void ctl_lanes_tick(struct broker *b);

#endif
