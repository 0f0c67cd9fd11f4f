/*
 * tests/unit/router-stubs.c - what broker/router.c and broker/dlv.c call
 * in other broker modules, reduced to what test-router.c needs, so the
 * router links with the shm/ objects and log.o alone.  Each stands in for the function of
 * the same name; the real ones reach into the loop, the control
 * connections and the links, which a unit test of the fan-out has no use
 * for.
 *
 * Must never: decide anything the router is being tested for; each is a
 * table look-up, a flag, or "no link".
 */
#include <errno.h>
#include <stdbool.h>
#include <time.h>

#include "broker/broker.h"
#include "broker/ctl-lanes.h"
#include "broker/router.h"
#include "broker/session.h"
#include "broker/topic.h"
#include "broker/link.h"

/* test-router.c's handle on the links the stubs pretend to have */
unsigned stub_link_refusals; /* link_offer() refuses this many more offers */
unsigned stub_link_offers;   /* offers taken */
unsigned stub_quarantines;

/* session.c: the broker's table, by id */
struct session *session_by_id(struct broker *b, uint64_t id)
{
	for (unsigned i = 0; i < b->nsessions; i++)
		if (b->sessions[i]->id == id)
			return b->sessions[i];
	return NULL;
}

/* session.c: marked, and its TX no longer read (the real one also logs,
 * records an event and cancels the session's loop requests) */
void session_quarantine(struct broker *b, struct session *s, const char *why)
{
	(void)b;
	(void)why;
	if (s->quarantined)
		return;
	s->quarantined = true;
	s->tx_open = false;
	stub_quarantines++;
}

/* ctl-lanes.c: a lane reader's rx_wake (test-router.c has no lanes) */
void ctl_lanes_wake_reader(struct session *s)
{
	(void)s;
}

/* lanes-bridge.c: lanes are off here */
uint64_t lanes_bridge_run(struct broker *b)
{
	(void)b;
	return 0;
}

/* lanes-spill.c: lanes are off here */
uint64_t lanes_spill_run(struct broker *b)
{
	(void)b;
	return 0;
}

/* session-tx.c: the drain is over (test-router.c starts none) */
void session_drain_done(struct session *s)
{
	s->drain_gen = 0;
}

/* topic.c: topics by id - 1 */
struct topic *topic_by_id(struct broker *b, uint32_t id)
{
	if (id == 0 || id > b->ntopics)
		return NULL;
	return b->topics[id - 1];
}

/* link.c: no message of a remote source is ever half delivered here */
bool link_in_flight(struct broker *b, uint64_t src_broker, uint64_t src_session)
{
	(void)b;
	(void)src_broker;
	(void)src_session;
	return false;
}

/* link.c: a link that takes every offer once stub_link_refusals is spent
 * (a full replay buffer before that) */
int link_offer(struct broker *b, unsigned i, uint64_t src, const char *src_name, uint64_t seq,
	       const struct topic *t, const void *payload, uint32_t len)
{
	(void)b;
	(void)i;
	(void)src;
	(void)src_name;
	(void)seq;
	(void)t;
	(void)payload;
	(void)len;
	if (stub_link_refusals) {
		stub_link_refusals--;
		return -EAGAIN;
	}
	stub_link_offers++;
	return 0;
}
