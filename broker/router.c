/*
 * broker/router.c - fan-out of TX records to subscribers' RX rings.
 *
 * In order per publisher; batched (one commit and at most one wake-up per
 * subscriber per pass); the publisher's TX read position advances only
 * after every delivery of what it read is committed.  When a subscriber
 * under the `block` policy is full, the publisher stops at that record;
 * subscribers that already got it are remembered (struct delivered) so a
 * retry never delivers it twice.
 *
 * Must never: trust a TX record before ring_peek() validated its header;
 * re-read a length from shared memory after checking it; advance tx_read
 * past a record not yet committed to every subscriber.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker/array.h"
#include "broker/broker.h"
#include "broker/ctl-lanes.h"
#include "broker/dlv.h"
#include "broker/lanes-bridge.h"
#include "broker/lanes-spill.h"
#include "broker/link.h"
#include "broker/log.h"
#include "broker/router.h"
#include "broker/session.h"
#include "broker/topic.h"
#include "shm/atomics.h"
#include "shm/clock.h"
#include "shm/futex.h"

#define ROUTE_BATCH 64

static struct session **dirty;
static unsigned ndirty, capdirty;

static int mark_dirty(struct session *s)
{
	if (s->rx_dirty)
		return 0;
	if (ARRAY_ROOM(dirty, ndirty, capdirty, 64) < 0)
		return -ENOMEM;
	dirty[ndirty++] = s;
	s->rx_dirty = true;
	return 0;
}

static void commit_dirty(struct broker *b)
{
	for (unsigned i = 0; i < ndirty; i++) {
		struct session *s = dirty[i];
		int r = ring_commit(&s->rx_prod);

		s->rx_dirty = false;
		if (r < 0) {
			session_quarantine(b, s, "its RX ring refused a commit");
			continue;
		}
		/* committed: now the table may say so
		 * (docs/design/recovery.md, delivery tables) */
		dlv_sync(s);
		if (!s->txc)
			continue;
		/* pairs with the reader's fence in wake_wait() */
		if (wake_signal(&s->rxc->rx_signal, &s->txc->rx_waiters)) {
			b->wakes_sent++;
			/* a sleeper that reads lanes too sleeps on its rx_wake,
			 * having counted itself in rx_waiters first */
			ctl_lanes_wake_reader(s);
		}
		/* a poller (shmb_session_fd) gets a byte; a full pipe is readable already.
		 * wake_signal's full fence orders rx_write before this load. */
		if (s->notify_wr >= 0 && (load_relaxed(&s->txc->client_flags) & SHM_CLIENT_POLLER))
			(void)!write(s->notify_wr, "", 1);
	}
	ndirty = 0;
}

/*
 * Drop-oldest (docs/design/rings.md, back-pressure): free the oldest record
 * the subscriber has not acknowledged.  The new drop position is published
 * (release, then a store-store fence) before any byte it frees is written
 * again, so a reader that copied such bytes sees the move when it re-reads
 * it.  Returns 0, or -EAGAIN when there is nothing committed to drop.
 */
static int drop_oldest(struct broker *b, struct session *sub)
{
	struct ring_prod *p = &sub->rx_prod;
	struct ring_cons c;
	struct ring_msg m;
	uint64_t free_bytes;

	/* what this pass reserved for it goes out first, in order, and the
	 * table says so before any byte is written again */
	if (p->rsv != p->pos) {
		if (ring_commit(p) < 0)
			return -EAGAIN;
		dlv_sync(sub);
	}
	if (ring_prod_free(p, &free_bytes) < 0) {
		session_quarantine(b, sub, "its rx_acked is impossible (behind, misaligned or ahead)");
		return -EAGAIN;
	}
	if (p->cons_cache >= p->pos ||
	    ring_cons_init(&c, &p->r, NULL, NULL, p->cons_cache, RING_SEQ_ANY, 1, UINT32_MAX) < 0 ||
	    ring_peek(&c, &m) < 0)
		return -EAGAIN;
	store_release(&sub->rxc->rx_drop, m.end);
	/* the drop position is out before the freed bytes are overwritten */
	fence_release();
	ring_prod_set_floor(p, m.end);
	sub->dropped_oldest++;
	return 0;
}

/* One message on its way to subscribers, from a local publisher or a link. */
struct src_msg {
	uint64_t src_broker, src_session, seq; /* its source, as the delivery tables know it */
	uint32_t topic_id;
	uint32_t flags;       /* SHM_RX_* */
	const void *data;
	uint32_t len;
	const char *from;     /* for the log */
};

/* Deliver one message to one subscriber: 0, or -EAGAIN when it is full. */
static int deliver_to(struct broker *b, struct session *sub, const struct src_msg *x)
{
	/* a spill's copies are told apart by the reader (SHM_RX_SPOOLED):
	 * they take no entry of the delivery table */
	bool spooled = x->flags & SHM_RX_SPOOLED;
	struct delivered *d = spooled ? NULL : dlv_get(b, sub, x->src_broker, x->src_session);
	struct shm_msg_rx rx = {
		.topic_id = x->topic_id,
		.flags = x->flags,
		.src_broker = x->src_broker,
		.src_session = x->src_session,
		.src_seq = x->seq,
	};
	uint8_t *dst;
	int r;

	if (!d && !spooled)
		return -EAGAIN;
	if (d && d->seq > x->seq)
		return 0; /* delivered in an earlier, partial pass */
	for (;;) {
		r = ring_reserve(&sub->rx_prod, (uint32_t)sizeof(rx) + x->len, SHM_REC_DATA, 0,
				 (void **)&dst);
		if (r != -EAGAIN || sub->policy != SHM_POLICY_DROP_OLDEST || drop_oldest(b, sub) < 0)
			break;
	}
	if (r == -EAGAIN) {
		if (!sub->full_since)
			sub->full_since = clock_mono_ns();
		return r;
	}
	sub->full_since = 0;
	if (r == -EMSGSIZE) {
		/* larger than this subscriber's ring can ever hold */
		log_msg(LOG_WARNING, "message of %u bytes from %s too large for %s: not delivered",
			x->len, x->from, sub->name);
		if (d) {
			d->seq = x->seq + 1;
			sub->dlv_touched = (int)(d - sub->dlv);
		}
		return 0;
	}
	if (r < 0) {
		session_quarantine(b, sub, "its rx_acked is impossible (behind, misaligned or ahead)");
		return 0;
	}
	memcpy(dst, &rx, sizeof(rx));
	memcpy(dst + sizeof(rx), x->data, x->len);
	if (d) {
		d->seq = x->seq + 1;
		sub->dlv_touched = (int)(d - sub->dlv);
	}
	sub->delivered_out++;
	if (mark_dirty(sub) < 0) {
		ring_abort(&sub->rx_prod);
		if (d)
			d->seq = x->seq;
		return -EAGAIN;
	}
	return 0;
}

static int deliver(struct broker *b, struct session *pub, struct session *sub,
		   const struct ring_msg *m, const struct shm_msg_tx *tx)
{
	struct src_msg x = {
		.src_broker = b->broker_id,
		.src_session = pub->id,
		.seq = m->hdr.seq,
		.topic_id = tx->topic_id,
		.data = (const uint8_t *)m->payload + sizeof(*tx),
		.len = m->len - (uint32_t)sizeof(*tx),
		.from = pub->name,
	};

	return deliver_to(b, sub, &x);
}

int router_deliver_remote(struct broker *b, struct topic *t, uint64_t src_broker, uint64_t src_session,
			  uint64_t seq, const void *payload, uint32_t len)
{
	struct src_msg x = {
		.src_broker = src_broker,
		.src_session = src_session,
		.seq = seq,
		.topic_id = t->id,
		.data = payload,
		.len = len,
		.from = "a remote link",
	};
	bool blocked = false;

	for (unsigned j = 0; j < t->nsubs; j++) {
		struct session *sub = t->subs[j];

		if (!sub->quarantined && deliver_to(b, sub, &x) == -EAGAIN)
			blocked = true;
	}
	if (blocked)
		return -EAGAIN;
	t->routed++;
	b->routed++;
	return 0;
}

int router_spool(struct broker *b, struct session *sub, const struct session *pub, uint64_t pub_id,
		 uint64_t seq, uint32_t topic_id, const void *data, uint32_t len)
{
	struct src_msg x = {
		.src_broker = b->broker_id,
		.src_session = pub_id,
		.seq = seq,
		.topic_id = topic_id,
		.flags = SHM_RX_SPOOLED,
		.data = data,
		.len = len,
		.from = pub ? pub->name : "(a publisher gone)",
	};

	return deliver_to(b, sub, &x);
}

void router_commit(struct broker *b)
{
	commit_dirty(b);
}

/*
 * Route what one TX file holds, from the reader c, publishing progress to
 * *read_seq (and c's released position).  Returns records moved; *state is
 * 0 (emptied or blocked), or -ESTALE when c reached the fence.
 */
static uint64_t route_ring(struct broker *b, struct session *s, struct ring_cons *c,
			   uint64_t *read_seq, int *state)
{
	struct ring_msg m[ROUTE_BATCH];
	uint64_t moved = 0;
	int k;

	*state = 0;
	k = ring_peek_batch(c, m, ROUTE_BATCH);
	if (k == -EAGAIN)
		return 0;
	if (k == -ESTALE) {
		*state = -ESTALE;
		return 0;
	}
	if (k < 0) {
		session_quarantine(b, s, "corrupt record header in its TX ring");
		return 0;
	}
	for (int i = 0; i < k; i++) {
		struct shm_msg_tx tx;
		struct topic *t;
		bool blocked = false;

		if (m[i].hdr.type != SHM_REC_DATA || m[i].len < sizeof(tx)) {
			session_quarantine(b, s, "malformed message in its TX ring");
			break;
		}
		/* one copy of the message header, checked, then used */
		memcpy(&tx, m[i].payload, sizeof(tx));
		t = topic_by_id(b, tx.topic_id);
		if (!t || (s->uid != 0 && t->owner != s->uid)) {
			s->dropped_topic++;
		} else {
			for (unsigned j = 0; j < t->nsubs; j++) {
				struct session *sub = t->subs[j];

				if (sub->quarantined)
					continue;
				if (deliver(b, s, sub, &m[i], &tx) == -EAGAIN)
					blocked = true;
			}
			/* bridged: each link takes it too (one hop: only local publishers) */
			for (uint64_t lm = t->links; lm; lm &= lm - 1)
				if (link_offer(b, (unsigned)__builtin_ctzll(lm), s->id, s->name,
					       m[i].hdr.seq, t,
					       (const uint8_t *)m[i].payload + sizeof(tx),
					       m[i].len - (uint32_t)sizeof(tx)) == -EAGAIN)
					blocked = true;
		}
		if (blocked) {
			s->blocked = true;
			break;
		}
		if (t)
			t->routed++;
		ring_consume(c, &m[i]);
		moved++;
	}
	/* deliveries first, then the publisher's read position */
	commit_dirty(b);
	if (moved) {
		s->routed_in += moved;
		b->routed += moved;
		/* the sequence first: a crash between the two leaves the old
		 * position, where the record still lies whose header a restart
		 * trusts over this word (recovery.md) */
		store_release(read_seq, c->seq);
		ring_release(c);
	}
	return moved;
}

uint64_t router_session(struct broker *b, struct session *s)
{
	uint64_t moved = 0;
	int state;

	s->blocked = false;
	if (s->quarantined)
		return 0;
	if (s->drain_gen) {
		/* a previous owner's records go first: order per publisher */
		moved = route_ring(b, s, &s->drain_cons, &s->rxc->drain_read_seq, &state);
		if (state == -ESTALE || s->drain_cons.pos == s->drain_end)
			session_drain_done(s);
		else
			return moved;
	}
	if (!s->tx_open)
		return moved;
	{
		uint64_t n = route_ring(b, s, &s->tx_cons, &s->rxc->tx_read_seq, &state);

		if (n && s->txc)
			wake_signal(&s->rxc->tx_space_signal, &s->txc->tx_space_waiters);
		return moved + n;
	}
}

uint64_t router_run(struct broker *b)
{
	uint64_t moved = 0;

	for (unsigned i = 0; i < b->nsessions; i++)
		moved += router_session(b, b->sessions[i]);
	/* lane publishers' messages for the links */
	return moved + lanes_bridge_run(b) + lanes_spill_run(b);
}
