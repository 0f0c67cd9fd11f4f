/*
 * tests/unit/test-router.c - the fan-out (broker/router.c, with its
 * delivery tables, broker/dlv.c) on its own: sessions built here on memfd
 * segments as session.c builds them, their clients' sides driven with the
 * shm/ ring API as libclient drives it, and router_session() /
 * router_run() between.  In order per publisher,
 * the source in every RX record, a record for a topic it may not use
 * dropped and counted, a full `block` subscriber holding the publisher
 * back with no loss and no duplicate when it resumes, a `drop-oldest`
 * one never holding it back.  What the router calls in other broker
 * modules is in router-stubs.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "broker/router.h"
#include "broker/session.h"
#include "broker/topic.h"
#include "broker/log.h"
#include "harness.h"
#include "shm/atomics.h"

/* router-stubs.c */
extern unsigned stub_link_refusals, stub_link_offers, stub_quarantines;

#define BROKER_ID 0xb0b0cafeull
#define UID 1000u
/* RX records carry the broker's writer generation (session-int.h's RX_WRITER_GEN) */
#define RX_GEN 1u

/* A session as the broker holds it, with its client's two ends. */
struct peer {
	struct session *s;
	struct ring_prod pub; /* the client's TX producer (libclient's tx_prod) */
	struct ring_cons sub; /* the client's RX reader (libclient's rx_cons) */
	uint64_t sent;        /* records it published */
	uint64_t got;         /* records it read */
	uint64_t next;        /* the source sequence it expects next */
	uint64_t dup, gap, bad;
};

static struct broker *b;

static void broker_new(void)
{
	b = calloc(1, sizeof(*b));
	CU_ASSERT_FATAL(b != NULL);
	b->broker_id = BROKER_ID;
	b->dirfd = b->sessions_dirfd = b->state_fd = -1;
	stub_link_refusals = stub_link_offers = stub_quarantines = 0;
}

static struct topic *topic_new(uid_t owner, const char *name)
{
	struct topic *t = calloc(1, sizeof(*t));
	struct topic **q = realloc(b->topics, (b->ntopics + 1) * sizeof(*q));

	CU_ASSERT_FATAL(t != NULL && q != NULL);
	b->topics = q;
	t->id = b->ntopics + 1;
	t->owner = owner;
	snprintf(t->name, sizeof(t->name), "%s", name);
	b->topics[b->ntopics++] = t;
	return t;
}

static void subscribe(struct topic *t, struct peer *p)
{
	struct session **q = realloc(t->subs, (t->nsubs + 1) * sizeof(*q));

	CU_ASSERT_FATAL(q != NULL);
	t->subs = q;
	t->subs[t->nsubs++] = p->s;
}

/*
 * A session's files and rings as session_files_make() and
 * session_tx_adopt() make them (memfds, generation 1, sequences from 0),
 * and its client's ends as libclient maps them.
 */
static void peer_new(struct peer *p, uid_t uid, uint32_t policy, uint64_t rx_size, uint64_t tx_size)
{
	struct session *s = calloc(1, sizeof(*s));
	struct session **q = realloc(b->sessions, (b->nsessions + 1) * sizeof(*q));
	struct seg_rx_params sp;
	struct ring rr, tr;

	CU_ASSERT_FATAL(s != NULL && q != NULL);
	memset(p, 0, sizeof(*p));
	p->s = s;
	b->sessions = q;
	b->sessions[b->nsessions++] = s;
	/* session_blank() */
	s->rx = s->tx = s->drain_tx = (struct segment)SEGMENT_INIT;
	s->dirfd = s->owner_pidfd = s->adopted_pidfd = s->notify_wr = -1;
	s->dlv_touched = -1;
	s->id = b->nsessions;
	snprintf(s->name, sizeof(s->name), "s%llu", (unsigned long long)s->id);
	s->uid = uid;
	s->policy = policy;
	s->generation = 1;
	s->rx_ring_size = rx_size;
	s->tx_ring_size = tx_size;
	sp = (struct seg_rx_params){ .session_id = s->id, .broker_id = BROKER_ID, .owner_uid = uid,
				     .policy = policy, .rx_ring_size = rx_size, .tx_ring_size = tx_size };

	/* the rx file: the broker produces, the client reads */
	CU_ASSERT_FATAL(segment_create(-1, "rx", segment_file_size(rx_size), &s->rx) == 0);
	CU_ASSERT_FATAL(segment_rx_format(&s->rx, &sp) == 0);
	s->rxc = segment_rx_ctrl(&s->rx);
	s->dlv_shm = segment_dlv_table(&s->rx);
	store_release(&s->rxc->generation, 1);
	CU_ASSERT_FATAL(ring_init(&rr, segment_ring_data(&s->rx), rx_size) == 0);

	/* tx.1: the client produces, the broker reads */
	CU_ASSERT_FATAL(segment_create(-1, "tx.1", segment_file_size(tx_size), &s->tx) == 0);
	CU_ASSERT_FATAL(segment_tx_format(&s->tx, s->id, 1, tx_size, 0) == 0);
	s->txc = segment_tx_ctrl(&s->tx);
	CU_ASSERT_FATAL(ring_init(&tr, segment_ring_data(&s->tx), tx_size) == 0);

	CU_ASSERT_FATAL(ring_prod_init(&s->rx_prod, &rr, &s->txc->rx_acked, &s->rxc->rx_write, 0, 0,
				       RX_GEN) == 0);
	CU_ASSERT_FATAL(ring_cons_init(&s->tx_cons, &tr, NULL, &s->rxc->tx_read, 0, 0, 1, 1) == 0);
	store_release(&s->rxc->tx_read_gen, 1);
	s->tx_open = true;

	/* the client's ends */
	CU_ASSERT_FATAL(ring_prod_init(&p->pub, &tr, &s->rxc->tx_read, &s->txc->tx_write, 0, 0, 1) == 0);
	CU_ASSERT_FATAL(ring_cons_init(&p->sub, &rr, &s->rxc->rx_write, &s->txc->rx_acked, 0, 0, 1,
				       UINT32_MAX) == 0);
}

static void broker_free(void)
{
	for (unsigned i = 0; i < b->nsessions; i++) {
		struct session *s = b->sessions[i];

		segment_unmap(&s->rx);
		segment_unmap(&s->tx);
		free(s->dlv);
		free(s);
	}
	for (unsigned i = 0; i < b->ntopics; i++) {
		free(b->topics[i]->subs);
		free(b->topics[i]);
	}
	free(b->sessions);
	free(b->topics);
	free(b);
	b = NULL;
}

/* Message i's payload: its number, then (i % 40) bytes of i's low byte. */
static uint32_t payload_of(uint64_t i, uint8_t *buf)
{
	uint32_t n = 8 + (uint32_t)(i % 40);

	memcpy(buf, &i, 8);
	memset(buf + 8, (int)(i & 0xff), n - 8);
	return n;
}

/* Publish as shmb_publish() does: the topic id in a shm_msg_tx, then the
 * payload, one committed record.  0, or -EAGAIN when the TX ring is full. */
static int publish_raw(struct peer *p, uint32_t topic_id, const void *data, uint32_t len)
{
	struct shm_msg_tx h = { .topic_id = topic_id };
	uint8_t *dst;
	int r = ring_reserve(&p->pub, (uint32_t)sizeof(h) + len, SHM_REC_DATA, 0, (void **)&dst);

	if (r < 0)
		return r;
	memcpy(dst, &h, sizeof(h));
	memcpy(dst + sizeof(h), data, len);
	CU_ASSERT_FATAL(ring_commit(&p->pub) == 0);
	p->sent++;
	return 0;
}

/* Publish message number p->sent (its source sequence) to topic_id. */
static int publish(struct peer *p, uint32_t topic_id)
{
	uint8_t buf[64];
	uint32_t n = payload_of(p->sent, buf);

	return publish_raw(p, topic_id, buf, n);
}

/*
 * Read and acknowledge what a subscriber's RX ring holds, as shmb_recv()
 * and shmb_ack() do; each record must come from `from` on topic_id and
 * carry the next source sequence (a lower one is a duplicate, a higher
 * one a gap).  Returns records read.
 */
static uint64_t drain(struct peer *p, const struct peer *from, uint32_t topic_id)
{
	struct ring_msg m;
	uint64_t n = 0;

	while (ring_peek(&p->sub, &m) == 0) {
		struct shm_msg_rx rx;
		uint8_t want[64];
		uint64_t v;

		if (m.hdr.type != SHM_REC_DATA || m.len < sizeof(rx) + 8) {
			p->bad++;
		} else {
			memcpy(&rx, m.payload, sizeof(rx));
			memcpy(&v, (const uint8_t *)m.payload + sizeof(rx), 8);
			if (rx.topic_id != topic_id || rx.src_broker != BROKER_ID ||
			    rx.src_session != from->s->id || rx.src_seq != v ||
			    m.len - sizeof(rx) != payload_of(v, want) ||
			    memcmp((const uint8_t *)m.payload + sizeof(rx), want, m.len - sizeof(rx)))
				p->bad++;
			else if (v < p->next)
				p->dup++;
			else if (v > p->next)
				p->gap++;
			if (v >= p->next)
				p->next = v + 1;
		}
		p->got++;
		n++;
		ring_consume(&p->sub, &m);
	}
	ring_release(&p->sub); /* rx_acked */
	return n;
}

static bool rx_empty(struct peer *p)
{
	struct ring_msg m;

	return ring_peek(&p->sub, &m) == -EAGAIN;
}

/* ---- tests ------------------------------------------------------------------- */

/* One publisher, two subscribers, one bystander: every message to both
 * subscribers once, in order, with its source; none to the bystander. */
static void test_fan_out(void)
{
	struct peer pub, a, c, d;
	struct topic *t, *other;
	const uint64_t n = 5000;
	uint64_t moved = 0;

	broker_new();
	t = topic_new(UID, "news");
	other = topic_new(UID, "other");
	peer_new(&pub, UID, SHM_POLICY_BLOCK, 65536, 16384);
	peer_new(&a, UID, SHM_POLICY_BLOCK, 65536, 16384);
	peer_new(&c, UID, SHM_POLICY_BLOCK, 65536, 16384);
	peer_new(&d, UID, SHM_POLICY_BLOCK, 65536, 16384);
	subscribe(t, &a);
	subscribe(t, &c);
	subscribe(other, &d);

	while (pub.sent < n || moved < n) {
		uint64_t k;

		while (pub.sent < n && publish(&pub, t->id) == 0)
			;
		k = router_run(b);
		CU_ASSERT_FATAL(k > 0);
		moved += k;
		/* the publisher's read position is out once its records are delivered */
		CU_ASSERT(load_acquire(&pub.s->rxc->tx_read_seq) == moved);
		CU_ASSERT(load_acquire(&pub.s->rxc->tx_read) == pub.s->tx_cons.pos);
		drain(&a, &pub, t->id);
		drain(&c, &pub, t->id);
	}
	CU_ASSERT(moved == n);
	CU_ASSERT(a.got == n && a.next == n && a.dup == 0 && a.gap == 0 && a.bad == 0);
	CU_ASSERT(c.got == n && c.next == n && c.dup == 0 && c.gap == 0 && c.bad == 0);
	CU_ASSERT(rx_empty(&d) && d.s->delivered_out == 0);
	CU_ASSERT(pub.s->routed_in == n && pub.s->dropped_topic == 0 && !pub.s->blocked);
	CU_ASSERT(a.s->delivered_out == n && c.s->delivered_out == n);
	CU_ASSERT(t->routed == n && other->routed == 0 && b->routed == n);
	CU_ASSERT(stub_quarantines == 0);
	/* the RX ring's own sequence, and the delivery table after the commit */
	CU_ASSERT(load_acquire(&a.s->rxc->rx_write_seq) == n);
	CU_ASSERT(a.s->dlv_shm->n == 1 && a.s->dlv_shm->ent[0].src_broker == BROKER_ID &&
		  a.s->dlv_shm->ent[0].src_session == pub.s->id && a.s->dlv_shm->ent[0].next_seq == n);
	CU_ASSERT(a.s->dlv_shm->seq == n && a.s->dlv_shm->pos == a.s->rx_prod.pos);
	/* nothing more: nothing moves */
	CU_ASSERT(router_run(b) == 0);
	broker_free();
}

/* A record for an unknown topic, or another uid's, is dropped and counted;
 * the stream goes on around it.  Root may publish to any uid's topic. */
static void test_dropped_topic(void)
{
	struct peer pub, root, a, z;
	struct topic *t, *theirs;
	uint64_t expect[] = { 0, 4, 6 };
	struct ring_msg m;

	broker_new();
	t = topic_new(UID, "news");
	theirs = topic_new(UID + 1, "theirs");
	peer_new(&pub, UID, SHM_POLICY_BLOCK, 65536, 16384);
	peer_new(&root, 0, SHM_POLICY_BLOCK, 65536, 16384);
	peer_new(&a, UID, SHM_POLICY_BLOCK, 65536, 16384);
	peer_new(&z, UID + 1, SHM_POLICY_BLOCK, 65536, 16384);
	subscribe(t, &a);
	subscribe(theirs, &z);

	CU_ASSERT(publish(&pub, t->id) == 0);      /* 0 */
	CU_ASSERT(publish(&pub, 99) == 0);         /* 1: no such topic */
	CU_ASSERT(publish(&pub, theirs->id) == 0); /* 2: another uid's */
	CU_ASSERT(publish(&pub, 0) == 0);          /* 3: never an id */
	CU_ASSERT(publish(&pub, t->id) == 0);      /* 4 */
	CU_ASSERT(publish(&pub, TOPIC_ID_MAX + 1) == 0); /* 5 */
	CU_ASSERT(publish(&pub, t->id) == 0);      /* 6 */
	CU_ASSERT(publish(&root, theirs->id) == 0);
	CU_ASSERT(router_run(b) == 8);
	CU_ASSERT(pub.s->dropped_topic == 4 && pub.s->routed_in == 7 && !pub.s->quarantined);
	CU_ASSERT(root.s->dropped_topic == 0);
	/* theirs->routed is not asserted: it also counts pub's refused record
	 * (route_ring() counts every record whose topic exists) */
	CU_ASSERT(t->routed == 3 && theirs->routed >= 1);
	CU_ASSERT(load_acquire(&pub.s->rxc->tx_read_seq) == 7);
	for (unsigned i = 0; i < 3; i++) {
		struct shm_msg_rx rx;

		CU_ASSERT_FATAL(ring_peek(&a.sub, &m) == 0);
		memcpy(&rx, m.payload, sizeof(rx));
		CU_ASSERT(rx.src_seq == expect[i] && rx.src_session == pub.s->id && rx.topic_id == t->id);
		CU_ASSERT(m.hdr.seq == i); /* the RX ring's own sequence has no holes */
		ring_consume(&a.sub, &m);
	}
	CU_ASSERT(rx_empty(&a));
	/* the other uid's subscriber got root's message only */
	CU_ASSERT(drain(&z, &root, theirs->id) == 1 && z.bad == 0);
	CU_ASSERT(stub_quarantines == 0);
	broker_free();
}

/* A malformed TX record (shorter than its message header, or not a data
 * record) quarantines its publisher; nothing after it is routed, and
 * other publishers go on. */
static void test_malformed_quarantines(void)
{
	struct peer pub, pub2, a;
	struct topic *t;
	uint8_t *dst;

	broker_new();
	t = topic_new(UID, "news");
	peer_new(&pub, UID, SHM_POLICY_BLOCK, 65536, 16384);
	peer_new(&pub2, UID, SHM_POLICY_BLOCK, 65536, 16384);
	peer_new(&a, UID, SHM_POLICY_BLOCK, 65536, 16384);
	subscribe(t, &a);

	CU_ASSERT(publish(&pub, t->id) == 0);
	CU_ASSERT_FATAL(ring_reserve(&pub.pub, 4, SHM_REC_DATA, 0, (void **)&dst) == 0);
	memset(dst, 0, 4);
	CU_ASSERT_FATAL(ring_commit(&pub.pub) == 0);
	pub.sent++;
	CU_ASSERT(publish(&pub, t->id) == 0);
	CU_ASSERT(publish(&pub2, t->id) == 0);
	CU_ASSERT(router_run(b) == 2); /* pub's first, pub2's */
	CU_ASSERT(pub.s->quarantined && !pub2.s->quarantined && stub_quarantines == 1);
	CU_ASSERT(pub.s->routed_in == 1 && load_acquire(&pub.s->rxc->tx_read_seq) == 1);
	CU_ASSERT(router_run(b) == 0);
	CU_ASSERT(a.s->delivered_out == 2);
	broker_free();
}

/*
 * A full `block` subscriber holds the publisher back: the router moves
 * less than was published and says so (blocked, full_since); the other
 * subscriber has the record it stopped at already and does not get it
 * again (its delivery entry) however often routing retries; once the
 * slow one acknowledges, routing resumes.  Both get every message once,
 * in order.
 */
static void test_block_holds_back(void)
{
	struct peer pub, slow, fast;
	struct topic *t;
	const uint64_t n = 2000;
	uint64_t moved = 0, rounds = 0, held = 0;

	broker_new();
	t = topic_new(UID, "news");
	peer_new(&pub, UID, SHM_POLICY_BLOCK, 65536, 65536);
	peer_new(&slow, UID, SHM_POLICY_BLOCK, SHM_RING_MIN, 16384);
	peer_new(&fast, UID, SHM_POLICY_BLOCK, 1u << 20, 16384);
	subscribe(t, &slow);
	subscribe(t, &fast);

	while (moved < n) {
		uint64_t k, before;

		while (pub.sent < n && publish(&pub, t->id) == 0)
			;
		k = router_session(b, pub.s);
		moved += k;
		CU_ASSERT_FATAL(++rounds < 100000);
		/* a pass takes at most a batch: fewer moved is not yet held back */
		if (!pub.s->blocked) {
			CU_ASSERT(k > 0 || moved == pub.sent);
			CU_ASSERT(slow.s->full_since == 0);
			continue;
		}
		/* held back: by the slow one, whose ring is full */
		held++;
		CU_ASSERT(moved < pub.sent);
		CU_ASSERT(slow.s->full_since != 0);
		CU_ASSERT(load_acquire(&pub.s->rxc->tx_read_seq) == moved);
		/* the fast one has every record read so far and the one the
		 * router stopped at; retrying before the slow one reads moves
		 * nothing and duplicates nothing */
		before = fast.s->delivered_out;
		CU_ASSERT(before == moved + 1);
		for (int i = 0; i < 3; i++)
			CU_ASSERT(router_session(b, pub.s) == 0);
		CU_ASSERT(fast.s->delivered_out == before);
		CU_ASSERT(fast.s->dlv[0].seq == moved + 1 && fast.s->dlv[0].src_session == pub.s->id);
		/* the fast one reads now; the slow one every other time only */
		drain(&fast, &pub, t->id);
		if (held % 2 == 0)
			drain(&slow, &pub, t->id);
		else
			CU_ASSERT(router_session(b, pub.s) == 0);
	}
	drain(&slow, &pub, t->id);
	drain(&fast, &pub, t->id);
	CU_ASSERT(held > 10); /* it really was held back, many times */
	CU_ASSERT(moved == n && pub.sent == n);
	CU_ASSERT(!pub.s->blocked && slow.s->full_since == 0);
	CU_ASSERT(slow.got == n && slow.next == n && slow.dup == 0 && slow.gap == 0 && slow.bad == 0);
	CU_ASSERT(fast.got == n && fast.next == n && fast.dup == 0 && fast.gap == 0 && fast.bad == 0);
	CU_ASSERT(slow.s->delivered_out == n && fast.s->delivered_out == n);
	CU_ASSERT(pub.s->routed_in == n && t->routed == n);
	CU_ASSERT(stub_quarantines == 0);
	broker_free();
}

/*
 * A `drop-oldest` subscriber that never reads never holds the publisher
 * back: its oldest records go, its drop position advances, and what is
 * left from there on is the newest messages, in order.  A `block`
 * subscriber beside it that keeps up gets everything.
 */
static void test_drop_oldest(void)
{
	struct peer pub, lazy, keen;
	struct topic *t;
	const uint64_t n = 3000;
	uint64_t moved = 0, drop = 0, advanced = 0, left;
	struct ring_cons c;
	struct ring_msg m;

	broker_new();
	t = topic_new(UID, "news");
	peer_new(&pub, UID, SHM_POLICY_BLOCK, 65536, 16384);
	peer_new(&lazy, UID, SHM_POLICY_DROP_OLDEST, SHM_RING_MIN, 16384);
	peer_new(&keen, UID, SHM_POLICY_BLOCK, 1u << 20, 16384);
	subscribe(t, &lazy);
	subscribe(t, &keen);

	while (pub.sent < n) {
		uint64_t k, d;

		while (pub.sent < n && publish(&pub, t->id) == 0)
			;
		/* a batch a pass, until all of it: never held back */
		while ((k = router_session(b, pub.s)) > 0) {
			CU_ASSERT(!pub.s->blocked && lazy.s->full_since == 0);
			moved += k;
			d = load_acquire(&lazy.s->rxc->rx_drop);
			CU_ASSERT(d >= drop);
			advanced += d > drop;
			drop = d;
		}
		CU_ASSERT_FATAL(moved == pub.sent && !pub.s->blocked);
		drain(&keen, &pub, t->id);
	}
	CU_ASSERT(moved == n);
	CU_ASSERT(advanced > 0 && drop > 0);
	CU_ASSERT(lazy.s->dropped_oldest > 0 && lazy.s->delivered_out == n);
	CU_ASSERT(load_acquire(&lazy.s->txc->rx_acked) == 0); /* it never read */
	CU_ASSERT(keen.got == n && keen.dup == 0 && keen.gap == 0 && keen.bad == 0);

	/* what is left, read from the drop position as libclient jumps there:
	 * the newest messages, in order, up to the last one */
	left = n - lazy.s->dropped_oldest;
	CU_ASSERT_FATAL(ring_cons_init(&c, &lazy.sub.r, &lazy.s->rxc->rx_write, NULL, drop, RING_SEQ_ANY,
				       1, UINT32_MAX) == 0);
	for (uint64_t i = 0; i < left; i++) {
		struct shm_msg_rx rx;

		CU_ASSERT_FATAL(ring_peek(&c, &m) == 0);
		memcpy(&rx, m.payload, sizeof(rx));
		CU_ASSERT(rx.src_seq == n - left + i);
		CU_ASSERT(m.hdr.seq == n - left + i); /* one RX record per message here */
		ring_consume(&c, &m);
	}
	CU_ASSERT(ring_peek(&c, &m) == -EAGAIN);
	CU_ASSERT(stub_quarantines == 0);
	broker_free();
}

/* A message larger than one subscriber's ring can ever hold is skipped
 * for it (never holding the publisher back) and delivered to the others. */
static void test_too_large_for_one(void)
{
	struct peer pub, small, big;
	struct topic *t;
	uint8_t buf[2000];

	broker_new();
	t = topic_new(UID, "news");
	peer_new(&pub, UID, SHM_POLICY_BLOCK, 65536, 65536);
	peer_new(&small, UID, SHM_POLICY_BLOCK, SHM_RING_MIN, 16384);
	peer_new(&big, UID, SHM_POLICY_BLOCK, 65536, 16384);
	subscribe(t, &small);
	subscribe(t, &big);

	CU_ASSERT(publish(&pub, t->id) == 0);
	memset(buf, 0, sizeof(buf));
	memcpy(buf, &pub.sent, 8);
	CU_ASSERT(publish_raw(&pub, t->id, buf, sizeof(buf)) == 0); /* > SHM_RING_MIN / 4 */
	CU_ASSERT(publish(&pub, t->id) == 0);
	CU_ASSERT(router_run(b) == 3 && !pub.s->blocked);
	CU_ASSERT(small.s->delivered_out == 2 && big.s->delivered_out == 3);
	CU_ASSERT(small.s->dlv[0].seq == 3); /* past the skipped one */
	CU_ASSERT(stub_quarantines == 0);
	broker_free();
}

/* A bridged topic: a link that refuses (its replay buffer full) holds the
 * publisher back like a full subscriber; the local subscriber does not
 * get the record twice when the link takes it. */
static void test_link_holds_back(void)
{
	struct peer pub, a;
	struct topic *t;

	broker_new();
	t = topic_new(UID, "bridged");
	t->links = 1u << 3;
	peer_new(&pub, UID, SHM_POLICY_BLOCK, 65536, 16384);
	peer_new(&a, UID, SHM_POLICY_BLOCK, 65536, 16384);
	subscribe(t, &a);

	for (int i = 0; i < 10; i++)
		CU_ASSERT(publish(&pub, t->id) == 0);
	stub_link_refusals = 2;
	CU_ASSERT(router_run(b) == 0 && pub.s->blocked);
	CU_ASSERT(router_run(b) == 0 && pub.s->blocked);
	CU_ASSERT(a.s->delivered_out == 1);
	CU_ASSERT(router_run(b) == 10 && !pub.s->blocked);
	CU_ASSERT(stub_link_offers == 10);
	CU_ASSERT(drain(&a, &pub, t->id) == 10);
	CU_ASSERT(a.next == 10 && a.dup == 0 && a.gap == 0 && a.bad == 0);
	broker_free();
}

/*
 * A remote link's messages (router_deliver_remote): each subscriber gets
 * each once, with the remote source; -EAGAIN while one is full, and a
 * retry does not deliver twice to the ones that got it.
 */
static void test_deliver_remote(void)
{
	struct peer slow, fast;
	struct topic *t;
	const uint64_t n = 500, remote = 0x5eedull, src = 77;
	uint64_t seq = 0, again = 0;
	uint8_t buf[64];
	struct ring_msg m;

	broker_new();
	t = topic_new(UID, "from-afar");
	peer_new(&slow, UID, SHM_POLICY_BLOCK, SHM_RING_MIN, 16384);
	peer_new(&fast, UID, SHM_POLICY_BLOCK, 1u << 20, 16384);
	subscribe(t, &slow);
	subscribe(t, &fast);

	while (seq < n) {
		uint32_t len = payload_of(seq, buf);
		int r = router_deliver_remote(b, t, remote, src, seq, buf, len);

		router_commit(b);
		if (r == -EAGAIN) {
			again++;
			/* the fast one has it already; the retry after the slow one
			 * reads must not add it again */
			CU_ASSERT(fast.s->delivered_out == seq + 1);
			while (ring_peek(&slow.sub, &m) == 0) {
				struct shm_msg_rx rx;

				memcpy(&rx, m.payload, sizeof(rx));
				CU_ASSERT(rx.src_broker == remote && rx.src_session == src &&
					  rx.src_seq == slow.next);
				slow.next = rx.src_seq + 1;
				ring_consume(&slow.sub, &m);
			}
			ring_release(&slow.sub);
			continue;
		}
		CU_ASSERT_FATAL(r == 0);
		seq++;
	}
	CU_ASSERT(again > 0);
	CU_ASSERT(fast.s->delivered_out == n && slow.s->delivered_out == n);
	CU_ASSERT(t->routed == n && b->routed == n);
	CU_ASSERT(fast.s->dlv_shm->ent[0].src_broker == remote && fast.s->dlv_shm->ent[0].next_seq == n);
	broker_free();
}

static const struct harness_test tests[] = {
	{ "fan_out", test_fan_out },
	{ "dropped_topic", test_dropped_topic },
	{ "malformed_quarantines", test_malformed_quarantines },
	{ "block_holds_back", test_block_holds_back },
	{ "drop_oldest", test_drop_oldest },
	{ "too_large_for_one", test_too_large_for_one },
	{ "link_holds_back", test_link_holds_back },
	{ "deliver_remote", test_deliver_remote },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "router", tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	return harness_main("test-router", suites, argc, argv);
}
