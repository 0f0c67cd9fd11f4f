/*
 * broker/link-data.c - what crosses a link: which topics it bridges (this
 * broker's --bridge patterns and the ones the peer asked for, kept as a
 * mask per topic), the peer's messages delivered to local subscribers,
 * and local messages offered to the peer (into the replay ring in the
 * link file, and the wire when the link is up).
 *
 * The router (router.c) offers only locally published messages: one hop,
 * so two brokers bridging each other never loop.
 *
 * Must never: deliver a topic the link does not bridge; count a message
 * in the file's w before its bytes are in the ring; let a remote source's
 * delivery-table entries go while a message of it is half delivered
 * (link_in_flight says so to the router).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/array.h"
#include "broker/broker.h"
#include "broker/lanes-bridge.h"
#include "broker/link-int.h"
#include "broker/link.h"
#include "broker/log.h"
#include "broker/router.h"
#include "broker/session.h"
#include "broker/topic.h"
#include "shm/atomics.h"

/* ---- topics ---- */

static bool pattern_match(const char *pat, const char *name)
{
	size_t n = strlen(pat);

	if (n && pat[n - 1] == '*')
		return !strncmp(pat, name, n - 1);
	return !strcmp(pat, name);
}

static bool link_bridges(const struct broker *b, const struct link *l, const char *name)
{
	if (l->lc.state == LC_FAILED)
		return false; /* its stream is over, loudly: local traffic goes on */
	for (unsigned i = 0; i < b->o.nbridge; i++)
		if (pattern_match(b->o.bridge[i], name))
			return true;
	for (unsigned i = 0; l->f && i < l->f->peer_topics.n && i < WIRE_TOPICS_MAX; i++)
		if (pattern_match(l->f->peer_topics.name[i], name))
			return true;
	return false;
}

uint64_t link_topic_mask(struct broker *b, const char *name)
{
	uint64_t m = 0;

	for (unsigned i = 0; i < BROKER_MAX_LINKS; i++)
		if (b->links[i] && !b->links[i]->provisional && link_bridges(b, b->links[i], name))
			m |= 1ull << i;
	return m;
}

/* A link came, went, failed or learnt the peer's topics. */
void link_topics_recompute(struct broker *b)
{
	for (unsigned k = 0; k < b->ntopics; k++)
		if (b->topics[k])
			b->topics[k]->links = link_topic_mask(b, b->topics[k]->name);
	/* lane publishers' bridged topics are read for the links too */
	lanes_bridge_topics(b);
}

/* ---- data ---- */

int link_deliver(void *arg, const struct wire_data *d)
{
	struct link *l = arg;
	struct broker *b = l->b;
	struct topic *t = topic_find(b, d->topic);
	/* the origin, from this connection's HELLO (DATA may come in the
	 * same read as the AUTH, before the handshake is marked done) */
	uint64_t origin = l->lp.peer_broker;
	int r;

	/* a peer delivers only into what this link bridges (both sides'
	 * lists): a known topic's mask says so without matching patterns per
	 * message; a link still being proved is in no mask yet */
	bool bridged = t && !l->provisional ? (t->links >> l->slot) & 1 : link_bridges(b, l, d->topic);

	if (!bridged) {
		if (!l->not_bridged++)
			link_event(l, LOG_WARNING, "the peer sent topic '%s', which this link does not"
				   " bridge: dropped (and every such message, counted)", d->topic);
		l->msgs_in++;
		return 0;
	}
	if (!t) {
		l->no_topic++; /* nobody here has ever used it: nobody to deliver to */
		l->msgs_in++;
		return 0;
	}
	/* one source per commit: the delivery tables follow one entry per pass */
	if (l->batch_src != d->src_session || l->batch_broker != origin) {
		router_commit(b);
		l->batch_broker = origin;
		l->batch_src = d->src_session;
	}
	r = router_deliver_remote(b, t, origin, d->src_session, d->src_seq, d->payload, d->len);
	if (r == 0) {
		l->msgs_in++;
		l->stall_broker = l->stall_src = 0;
	} else {
		/* half delivered, maybe: its table entries must stay (dlv_get) */
		l->stall_broker = origin;
		l->stall_src = d->src_session;
	}
	return r;
}

void link_topics(void *arg, const struct wire_topics *t)
{
	struct link *l = arg;
	char list[256] = "";
	size_t n = 0;

	if (!memcmp(&l->f->peer_topics, t, sizeof(*t)))
		return;
	l->f->peer_topics = *t;
	for (unsigned i = 0; i < t->n && n < sizeof(list) - 1; i++)
		n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s", i ? " " : "", t->name[i]);
	link_event(l, LOG_NOTICE, "the peer asks for %u topic pattern(s): %s", t->n, t->n ? list : "none");
	link_topics_recompute(l->b);
}

bool link_in_flight(struct broker *b, uint64_t src_broker, uint64_t src_session)
{
	for (unsigned i = 0; i < BROKER_MAX_LINKS; i++) {
		const struct link *l = b->links[i];

		if (l && l->stall_src == src_session && l->stall_broker == src_broker && src_session)
			return true;
	}
	return false;
}

/* Local message for the peer: into the replay ring (and the wire when up). */
int link_offer(struct broker *b, unsigned i, uint64_t src, const char *src_name, uint64_t seq,
	       const struct topic *t, const void *payload, uint32_t len)
{
	struct link *l = b->links[i];
	struct delivered *d = NULL;
	struct wire_data m;
	int r;

	if (!l || !l->f)
		return 0;
	for (unsigned k = 0; k < l->nsent; k++)
		if (l->sent[k].src_session == src) {
			d = &l->sent[k];
			break;
		}
	if (!d) {
		/* sources that are gone first make room: ids are never reused */
		for (unsigned k = 0; l->nsent == l->capsent && k < l->nsent;)
			if (!session_by_id(b, l->sent[k].src_session))
				l->sent[k] = l->sent[--l->nsent];
			else
				k++;
		if (ARRAY_ROOM(l->sent, l->nsent, l->capsent, 16) < 0)
			return -EAGAIN;
		d = &l->sent[l->nsent++];
		*d = (struct delivered){ .src_session = src, .seq = 0 };
	}
	if (d->seq > seq)
		return 0; /* taken in an earlier, partial pass */
	m = (struct wire_data){ .src_session = src, .src_seq = seq,
				.topic_len = (uint32_t)strlen(t->name), .payload = payload, .len = len };
	memcpy(m.topic, t->name, m.topic_len + 1);
	r = lp_send(&l->lp, &m);
	if (r == -EAGAIN)
		return r; /* the peer has not routed enough: the publisher waits */
	if (r < 0) {
		/* larger than a frame or the ring: said, counted, never silent */
		l->too_big++;
		link_event(l, LOG_WARNING, "message %llu of session %s (%u bytes) not forwarded: %s"
			   " (%llu so far)", (unsigned long long)seq, src_name, len, strerror(-r),
			   (unsigned long long)l->too_big);
	} else {
		/* the bytes are in the ring before the count says so */
		store_release(&l->f->w, l->lp.tx.w);
		l->msgs_out++;
	}
	d->seq = seq + 1;
	return 0;
}
