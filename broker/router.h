/*
 * broker/router.h - fan-out of TX records to subscribers' RX rings
 * (router.c), and of messages from remote links.
 */
#ifndef BROKER_ROUTER_H
#define BROKER_ROUTER_H

#include <stdint.h>

struct broker;
struct session;
struct topic;

/* Move what every TX ring holds to its subscribers; returns records moved. */
uint64_t router_run(struct broker *b);
/* Drain one session's TX ring as far as subscribers allow. */
uint64_t router_session(struct broker *b, struct session *s);
/* A message from a remote link to topic t's subscribers, as the router
 * delivers a local one; (src_broker, src_session) is its source in the
 * subscribers' delivery tables, src_broker another broker's id.
 * 0, or -EAGAIN when a subscriber is full (call again: those that got it
 * are remembered).  router_commit() makes the deliveries visible. */
int router_deliver_remote(struct broker *b, struct topic *t, uint64_t src_broker, uint64_t src_session,
			  uint64_t seq, const void *payload, uint32_t len);
/* A lane record of publisher pub_id (pub: its session, NULL when gone)
 * into sub's spool, its RX ring, as the router delivers, marked
 * SHM_RX_SPOOLED (the reader skips a copy made again; the delivery table
 * is not used).  0, or -EAGAIN (no room, or no memory).  router_commit()
 * makes it visible. */
int router_spool(struct broker *b, struct session *sub, const struct session *pub, uint64_t pub_id,
		 uint64_t seq, uint32_t topic_id, const void *data, uint32_t len);
void router_commit(struct broker *b);

#endif
