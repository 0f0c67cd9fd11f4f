/*
 * broker/lanes-spill.c - spill of a reader that cannot come back
 * (lanes-spill.h; docs/design/data-path.md, section 6).
 *
 * A block reader's holds keep its publishers from writing over what it
 * has not read.  Once its owner generation cannot come back (its process
 * died detached, it closed the session, an admin kicked it), nobody reads
 * for it until its next owner: the broker moves its holds to a reader of
 * its own (lanes_reader_switch(): the take-over walk from where the owner
 * acknowledged, on cursor pages no process has) and reads them with
 * libshmb's laneset, copying each record of a topic the session reads
 * into its RX ring, as the router delivers a relay message (same origin,
 * the source sequence order - 1, the session's delivery table), and then
 * acknowledging it in its own slots: the lanes' space comes back to their
 * writers as the copying goes.  Its next owner's take-over starts at
 * those slots; it reads its RX ring up to where it stood at the open
 * before it reads a lane (libshmb), so each publisher's messages come in
 * order, once.
 *
 * The spool is the RX ring only, for now: a record that does not fit
 * there gets its lane let go (lanes_let_go_order(): the broker's slot
 * marked let go, its entry a WATCH entry, the order before it kept), so
 * that no publisher waits for a reader that is not there; the next owner
 * reads that lane on from the broker's slot as a drop-oldest reader, and
 * what its writer overwrote meanwhile is a gap it is told of, counted
 * from that order.  Budgets and overflow files are not built yet.
 *
 * Must never: acknowledge a record before its copy is committed (a broker
 * killed between the two leaves the slot behind the copy: the next owner
 * skips what the spool gave it, SHM_RX_SPOOLED and laneset_floor(); a
 * spill started again drops it by the delivery table); consume a record the spool has no room
 * for (laneset_next() is given the room as its cap: such a record's lane
 * is let go instead, unread); trust a byte of a
 * lane (laneset checks every record, under libshmb's SIGBUS guard).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/breader.h"
#include "broker/broker.h"
#include "broker/ctl-lanes.h"
#include "broker/lanes-spill.h"
#include "broker/lanes.h"
#include "broker/log.h"
#include "broker/loop.h"
#include "broker/router.h"
#include "broker/session.h"
#include "libclient/laneset.h"
#include "shm/atomics.h"
#include "shm/clock.h"
#include "shm/layout.h"

#define SPILL_BATCH 4096 /* records per call: the loop's other work goes on */
/* A record waiting for room in a full spool: its writer is looked at every
 * ms (it does not wake the broker when it runs short itself), every 50 ms
 * once that went on for 2 s (an idle writer, a cut lane: a broker that
 * idles with such a spill wakes 20 times a second, not 1000). */
#define WAITING_POLL_NS 1000000ull
#define WAITING_SLOW_AFTER_NS 2000000000ull
#define WAITING_SLOW_POLL_NS 50000000ull

struct spill {
	struct session *s;
	struct laneset set;
	uint8_t *buf;         /* a record copied out of its lane */
	uint32_t cap;
	struct lwait w;
	unsigned slot;        /* in spills[]: the futex wait's tag, with tag */
	uint32_t tag;
	bool full_said;       /* the log said once that the spool was full */
	bool waiting;         /* a record waits for room, its writer not short yet */
	uint64_t waiting_since;
	uint64_t copied, let_go, bad;
	char who[160];        /* for the log */
};

static struct spill **spills;
static unsigned nspills;
static uint32_t next_tag;

static void on_event(void *ctx, int event, uint64_t publisher, uint32_t lane)
{
	struct spill *sp = ctx;

	if (event != LANESET_EV_BAD)
		return;
	sp->bad++;
	log_msg(LOG_WARNING, "%s: lane %u of session %llu is bad: what it still held is not"
		" copied", sp->who, lane, (unsigned long long)publisher);
}

static void futex_done(struct broker *b, unsigned kind, unsigned a, uint32_t gen, int res,
		       bool more)
{
	(void)b;
	(void)kind;
	(void)res;
	(void)more;
	if (a < nspills && spills[a] && spills[a]->tag == gen)
		lwait_done(&spills[a]->w);
}

void lanes_spill_init(struct broker *b)
{
	loop_on(b, LANES_SPILL_OP_FUTEX, futex_done);
}

static void spill_free(struct spill *sp)
{
	spills[sp->slot] = NULL;
	laneset_free(&sp->set);
	free(sp->buf);
	free(sp);
}

void lanes_spill_free(struct broker *b)
{
	for (unsigned i = 0; i < nspills; i++)
		if (spills[i])
			lanes_spill_stop(b, spills[i]->s);
	free(spills);
	spills = NULL;
	nspills = 0;
}

static bool spillable(const struct broker *b, const struct session *s)
{
	return b->lanes && !s->spill && !s->owner && !s->quarantined && !s->ephemeral &&
	       s->policy == SHM_POLICY_BLOCK && s->lane_reader && !s->lane_reader->drop_oldest;
}

static int slot_new(struct spill *sp)
{
	unsigned i;

	for (i = 0; i < nspills && spills[i]; i++)
		;
	if (i == nspills) {
		struct spill **n = realloc(spills, (nspills + 16) * sizeof(*n));

		if (!n)
			return -ENOMEM;
		memset(n + nspills, 0, 16 * sizeof(*n));
		spills = n;
		nspills += 16;
	}
	spills[i] = sp;
	sp->slot = i;
	return 0;
}

int lanes_spill_start(struct broker *b, struct session *s, const char *why)
{
	struct spill *sp;
	struct lreader *r;

	if (!spillable(b, s))
		return 0;
	sp = calloc(1, sizeof(*sp));
	if (!sp)
		return -ENOMEM;
	if (laneset_init(&sp->set, on_event, sp) < 0) {
		free(sp);
		return -ENOMEM;
	}
	sp->cap = ring_max_payload(&s->rx_prod.r) - (uint32_t)sizeof(struct shm_msg_rx);
	sp->buf = malloc(sp->cap);
	if (!sp->buf || slot_new(sp) < 0) {
		laneset_free(&sp->set);
		free(sp->buf);
		free(sp);
		return -ENOMEM;
	}
	sp->s = s;
	sp->tag = ++next_tag;
	lwait_init(&sp->w);
	snprintf(sp->who, sizeof(sp->who), "session %s (spilled)", s->name);
	for (unsigned i = 0; i < s->ntopics; i++)
		(void)laneset_topic(&sp->set, s->topics[i], true);
	s->spill = sp;
	/* its holds move to the broker's reader, which ctl_lanes_flush()
	 * tells of each lane (lanes_spill_push) */
	r = lanes_reader_switch(b->lanes, s->lane_reader, s->generation);
	if (!r) {
		log_msg(LOG_WARNING, "session %s: not spilled: %s", s->name, b->lanes->why);
		s->spill = NULL;
		spill_free(sp);
		ctl_lanes_flush(b);
		return -ENOMEM;
	}
	s->lane_reader = r;
	ctl_lanes_flush(b);
	log_msg(LOG_NOTICE, "session %s: %s: what its lanes bring it is copied into its RX ring from"
		" now on (its publishers go on while it has room)", s->name, why);
	session_event(s, "spilled: %s", why);
	return 1;
}

/* Copying ends; what was read is acknowledged only when ack says so. */
static void spill_end(struct broker *b, struct spill *sp, bool ack)
{
	struct session *s = sp->s;

	/* the copies out before the positions past them */
	router_commit(b);
	if (ack && laneset_unacked(&sp->set))
		laneset_ack(&sp->set);
	if (sp->w.futex_armed)
		loop_cancel(b, LANES_SPILL_OP_FUTEX, sp->slot, sp->tag);
	lwait_woke(s->lane_reader);
	s->spill = NULL;
	spill_free(sp);
}

bool lanes_spill_stop(struct broker *b, struct session *s)
{
	struct spill *sp = s->spill;

	if (!sp)
		return false;
	log_msg(LOG_INFO, "session %s: spill ends: %llu records copied into its RX ring, %llu lanes"
		" let go when it was full", s->name, (unsigned long long)sp->copied,
		(unsigned long long)sp->let_go);
	session_event(s, "spill ended: %llu records copied, %llu lanes let go",
		      (unsigned long long)sp->copied, (unsigned long long)sp->let_go);
	spill_end(b, sp, true);
	return true;
}

/* Whether slot `slot` of r's cursor page `page` was let go (line 0). */
static bool let_go_slot(const struct lreader *r, uint32_t page, uint32_t slot)
{
	for (const struct lpage *p = r->pages; p; p = p->next)
		if (p->number == page && slot < SHM_CURSOR_SLOTS)
			return (load_relaxed(&p->map->let_go[slot / 64]) >> (slot % 64)) & 1;
	return false;
}

bool lanes_spill_push(struct broker *b, const struct lpush *p)
{
	struct session *s = session_by_id(b, p->session);
	const struct proto_lane *m = &p->msg.lane;

	if (!s || !s->spill || s->generation != p->generation)
		return false;
	/* a lane let go before the spill (the block timeout, an unsubscribe)
	 * is not copied: the spool cannot say what its reader lost there,
	 * and the next owner reads it on from the slot, counting that */
	if (p->msg.h.type == PROTO_LANE && m->lane && s->lane_reader &&
	    let_go_slot(s->lane_reader, m->page, m->slot))
		return true;
	(void)breader_push(&s->spill->set, p, s->spill->who);
	return true;
}

/* The lane of m (the next record) does not fit in the spool: what was
 * copied is committed and acknowledged, then the lane is let go (its
 * writer goes on; the next owner reads it on from the broker's slot,
 * counting what it finds overwritten after `order`, the last order it
 * had) and no longer read here. */
static void spill_let_go(struct broker *b, struct spill *sp, const struct laneset_msg *m,
			 uint64_t order)
{
	struct session *s = sp->s;
	struct blane *l;

	router_commit(b);
	if (laneset_unacked(&sp->set))
		laneset_ack(&sp->set);
	l = lanes_by_number(b->lanes, m->lane);
	if (l && lanes_let_go_order(l, s->lane_reader, order) < 0)
		l = NULL;
	(void)laneset_remove(&sp->set, m->lane);
	sp->let_go++;
	if (!sp->full_said)
		log_msg(LOG_WARNING, "session %s: its RX ring has no room for a message of %u bytes"
			" from session %llu: lane %u is let go (its publisher goes on; the next"
			" owner reads on from where the copying stopped and is told what was"
			" overwritten)%s", s->name, m->len, (unsigned long long)m->publisher,
			m->lane, l ? "" : " (it was not held)");
	sp->full_said = true;
}

/* m waits for room in the spool.  Its lane is let go once its writer is
 * short of room too (until then the lane keeps what the spool cannot:
 * a reader back soon loses nothing); true then.  Else the spill is
 * looked at again in a ms (lanes_spill_poll_ns()). */
static bool spill_no_room(struct broker *b, struct spill *sp, const struct laneset_msg *m)
{
	struct blane *l = lanes_by_number(b->lanes, m->lane);

	if (!l || lanes_writer_short(l)) {
		spill_let_go(b, sp, m, m->order ? m->order - 1 : 0);
		return true;
	}
	if (!sp->waiting_since)
		sp->waiting_since = clock_mono_ns();
	sp->waiting = true;
	return false;
}

static uint64_t spill_run(struct broker *b, struct spill *sp)
{
	struct session *s = sp->s;
	uint64_t moved = 0, skipped = load_relaxed(&sp->set.skipped);

	sp->waiting = false;
	while (moved < SPILL_BATCH) {
		struct laneset_msg m;
		uint32_t room = 0;
		int k;

		if (ring_prod_room(&s->rx_prod, &room) < 0 || room < sizeof(struct shm_msg_rx)) {
			/* not even an empty message fits: the next one's lane */
			if (laneset_peek(&sp->set, &m) <= 0 || !spill_no_room(b, sp, &m))
				break;
			continue;
		}
		room -= (uint32_t)sizeof(struct shm_msg_rx);
		k = laneset_next(&sp->set, sp->buf, room < sp->cap ? room : sp->cap, &m);
		if (k == -EMSGSIZE && m.len > sp->cap) {
			/* longer than the spool can ever hold */
			spill_let_go(b, sp, &m, m.order ? m.order - 1 : 0);
			continue;
		}
		if (k == -EMSGSIZE) {
			if (!spill_no_room(b, sp, &m))
				break;
			continue;
		}
		if (k <= 0)
			break;
		if (m.missed) {
			/* a gap the spool cannot carry (a lane let go before the
			 * spill, whose push was not skipped): m is read and will
			 * be acknowledged, so the next owner counts it with the
			 * gap, from the order before both */
			spill_let_go(b, sp, &m, m.order > m.missed ? m.order - 1 - m.missed : 0);
			continue;
		}
		if (!m.order)
			continue;
		if (router_spool(b, s, session_by_id(b, m.publisher), m.publisher, m.order - 1,
				 m.topic_id, m.data, m.len) < 0) {
			/* no memory for its delivery table: read, not copied, so
			 * not acknowledged; copying starts again from what was
			 * (the take-over walk from the broker's slots), and the
			 * delivery table drops what was copied since */
			log_msg(LOG_WARNING, "%s: a record could not be copied (no memory): copying"
				" starts again from what was acknowledged", sp->who);
			spill_end(b, sp, false);
			(void)lanes_spill_start(b, s, "copying again");
			return moved;
		}
		if (s->quarantined) {
			/* its RX ring refused the copy: nothing more is copied
			 * for it, and what was read is not acknowledged */
			spill_end(b, sp, false);
			return moved;
		}
		sp->copied++;
		moved++;
	}
	if (moved || laneset_unacked(&sp->set)) {
		router_commit(b);
		laneset_ack(&sp->set);
	}
	if (!sp->waiting)
		sp->waiting_since = 0;
	sp->w.win_moved += moved + load_relaxed(&sp->set.skipped) - skipped;
	return moved;
}

uint64_t lanes_spill_run(struct broker *b)
{
	uint64_t moved = 0;

	for (unsigned i = 0; i < nspills; i++)
		if (spills[i])
			moved += spill_run(b, spills[i]);
	return moved;
}

bool lanes_spill_arm(struct broker *b)
{
	uint64_t now = clock_mono_ns();
	bool found = false;

	for (unsigned i = 0; i < nspills; i++) {
		struct spill *sp = spills[i];
		struct lreader *r;

		if (!sp)
			continue;
		r = sp->s->lane_reader;
		if (lwait_backed_off(&sp->w, now, sp->who)) {
			found |= spill_run(b, sp) > 0;
			continue;
		}
		if (!lwait_arm(&sp->w, r))
			continue;
		if (spill_run(b, sp)) {
			found = true;
			continue;
		}
		/* spill_run() may have ended it */
		if (spills[i] == sp)
			lwait_sleep(b, &sp->w, r, ((uint64_t)LANES_SPILL_OP_FUTEX << 56) |
						  ((uint64_t)sp->slot << 32) | sp->tag);
	}
	return found;
}

void lanes_spill_woke(struct broker *b)
{
	(void)b;
	for (unsigned i = 0; i < nspills; i++)
		if (spills[i])
			lwait_woke(spills[i]->s->lane_reader);
}

uint64_t lanes_spill_poll_ns(struct broker *b)
{
	uint64_t now = clock_mono_ns(), best = 0;

	(void)b;
	for (unsigned i = 0; i < nspills; i++) {
		const struct spill *sp = spills[i];
		uint64_t t = !sp ? 0
			     : !sp->waiting ? lwait_poll_ns(&sp->w, now)
			     : now - sp->waiting_since < WAITING_SLOW_AFTER_NS ? WAITING_POLL_NS
									     : WAITING_SLOW_POLL_NS;

		if (t && (!best || t < best))
			best = t;
	}
	return best;
}
