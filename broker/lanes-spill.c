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

#include "broker/array.h"
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
/* A record waiting for room in a full spool: its writers are looked at
 * every ms (they do not wake the broker when they run short), every
 * second once that went on for 2 s (an idle writer: a broker that idles
 * with such a spill wakes once a second, its housekeeping tick). */
#define WAITING_POLL_NS 1000000ull
#define WAITING_SLOW_AFTER_NS 2000000000ull
#define WAITING_SLOW_POLL_NS 1000000000ull

struct ids {
	uint64_t *id;
	unsigned n, cap;
};

struct spill {
	struct session *s;
	struct lreader *r;    /* the broker's reader it reads with (the session's
				 reader while it lasts) */
	struct laneset set;
	uint8_t *buf;         /* a record copied out of its lane */
	uint32_t cap;
	struct lwait w;
	unsigned slot;        /* in spills[]: the futex wait's tag, with tag */
	uint32_t tag;
	bool full_said;       /* the log said once that the spool was full */
	bool waiting;         /* a record waits for room, its writer not short yet */
	uint64_t waiting_since;
	struct ids paused;    /* publishers skipped for this pass (waiting for room) */
	struct ids dropped;   /* publishers no longer copied (their lanes let go) */
	uint64_t copied, let_go;
	uint64_t since_ns;    /* when it started */
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
	free(sp->paused.id);
	free(sp->dropped.id);
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
	sp->since_ns = clock_mono_ns();
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
	sp->r = r;
	ctl_lanes_flush(b);
	log_msg(LOG_NOTICE, "session %s: %s: what its lanes bring it is copied into its RX ring from"
		" now on (its publishers go on while it has room)", s->name, why);
	session_event(s, "spilled: %s", why);
	return 1;
}

bool lanes_spill_figures(const struct session *s, uint64_t *copied, uint64_t *let_go,
			 uint64_t *since_ns)
{
	const struct spill *sp = s->spill;

	if (!sp)
		return false;
	*copied = sp->copied;
	*let_go = sp->let_go;
	*since_ns = sp->since_ns;
	return true;
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
	lwait_woke(sp->r);
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

/* A list of publisher ids (a spill's paused and dropped ones). */
static bool ids_has(const struct ids *v, uint64_t id)
{
	for (unsigned i = 0; i < v->n; i++)
		if (v->id[i] == id)
			return true;
	return false;
}

static int ids_add(struct ids *v, uint64_t id)
{
	if (ids_has(v, id))
		return 0;
	if (ARRAY_ROOM(v->id, v->n, v->cap, 8) < 0)
		return -ENOMEM;
	v->id[v->n++] = id;
	return 0;
}

/* Copying of publisher `pub` ends for this spill (design: per reader and
 * publisher, so that a publisher's records reach the reader all through
 * the spool or all through its lanes, in order): what was copied is
 * committed and acknowledged, then each of its lanes is let go at the
 * broker's slot (its writer goes on; the next owner reads it on from
 * there and is told what was overwritten, counted from `order` on lane
 * `lane`, the order before its next record, and as at least one on the
 * others), and so is each lane of it that comes later. */
static void spill_drop(struct broker *b, struct spill *sp, uint64_t pub, uint32_t lane,
		       uint64_t order, const char *why)
{
	struct session *s = sp->s;
	uint32_t lanes[16];
	unsigned n, total = 0;

	router_commit(b);
	if (laneset_unacked(&sp->set))
		laneset_ack(&sp->set);
	while ((n = laneset_lanes(&sp->set, pub, lanes, 16)) > 0) {
		for (unsigned i = 0; i < n; i++) {
			struct blane *l = lanes_by_number(b->lanes, lanes[i]);

			if (l)
				(void)lanes_let_go_order(l, sp->r, lanes[i] == lane ? order : 0);
			(void)laneset_remove(&sp->set, lanes[i]);
		}
		total += n;
	}
	if (ids_add(&sp->dropped, pub) < 0)
		log_msg(LOG_ERR, "%s: no memory: later lanes of session %llu may be copied", sp->who,
			(unsigned long long)pub);
	sp->let_go += total;
	log_msg(sp->full_said ? LOG_INFO : LOG_WARNING, "session %s: %s: the %u lane(s) of session"
		" %llu it read are let go (that publisher goes on; the next owner reads them on"
		" from where the copying stopped and is told what was overwritten)", s->name, why,
		total, (unsigned long long)pub);
	sp->full_said = true;
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
	struct spill *sp = s ? s->spill : NULL;

	/* only what is meant for the reader it reads with: the writer's
	 * pushes of a session with no owner go on to be dropped as ever */
	if (!sp || s->generation != p->generation || p->reader != sp->r->number)
		return false;
	if (p->msg.h.type != PROTO_LANE || !m->lane || (m->flags & PROTO_LANE_RELEASED))
		return true;
	if (ids_has(&sp->dropped, m->publisher)) {
		/* its publisher is not copied any more: let go at once */
		struct blane *l = lanes_by_number(b->lanes, m->lane);

		if (l)
			(void)lanes_let_go_order(l, sp->r, 0);
		return true;
	}
	/* a lane let go before the spill (the block timeout, an unsubscribe):
	 * the spool cannot say what its reader lost there; its publisher is
	 * not copied at all, or its other lanes' records would come before
	 * this one's older ones */
	if (let_go_slot(sp->r, m->page, m->slot)) {
		spill_drop(b, sp, m->publisher, m->lane, 0, "a lane was let go before the spill");
		return true;
	}
	(void)breader_push(&sp->set, p, sp->who);
	return true;
}

/* m of publisher P waits for room in the spool.  P is dropped (all its
 * lanes let go) once a writer of its lanes is short of room; until then
 * its lanes keep what the spool cannot (a reader back soon loses
 * nothing), P is paused for this pass while the others are copied, and
 * the spill is looked at again soon (lanes_spill_poll_ns()). */
static void spill_no_room(struct broker *b, struct spill *sp, const struct laneset_msg *m)
{
	uint32_t lanes[16];
	unsigned n = laneset_lanes(&sp->set, m->publisher, lanes, 16);
	bool a_short = false;

	for (unsigned i = 0; i < n && !a_short; i++) {
		struct blane *l = lanes_by_number(b->lanes, lanes[i]);

		a_short = !l || lanes_writer_short(l);
	}
	if (a_short || laneset_pause(&sp->set, m->publisher, true) < 0 ||
	    ids_add(&sp->paused, m->publisher) < 0) {
		spill_drop(b, sp, m->publisher, m->lane, m->order ? m->order - 1 : 0,
			   "its RX ring is full");
		return;
	}
	if (!sp->waiting_since)
		sp->waiting_since = clock_mono_ns();
	sp->waiting = true;
}

static uint64_t spill_run(struct broker *b, struct spill *sp)
{
	struct session *s = sp->s;
	uint64_t moved = 0, skipped = load_relaxed(&sp->set.skipped);

	/* each pass looks at every publisher again */
	for (unsigned i = 0; i < sp->paused.n; i++)
		(void)laneset_pause(&sp->set, sp->paused.id[i], false);
	sp->paused.n = 0;
	sp->waiting = false;
	while (moved < SPILL_BATCH) {
		struct laneset_msg m;
		uint32_t room = 0;
		int k;

		if (ring_prod_room(&s->rx_prod, &room) < 0 || room < sizeof(struct shm_msg_rx)) {
			/* not even an empty message fits: the next one's publisher */
			if (laneset_peek(&sp->set, &m) <= 0)
				break;
			spill_no_room(b, sp, &m);
			continue;
		}
		room -= (uint32_t)sizeof(struct shm_msg_rx);
		k = laneset_next(&sp->set, sp->buf, room < sp->cap ? room : sp->cap, &m);
		if (k == -EMSGSIZE && m.len > sp->cap) {
			spill_drop(b, sp, m.publisher, m.lane, m.order ? m.order - 1 : 0,
				   "a message is longer than its RX ring can hold");
			continue;
		}
		if (k == -EMSGSIZE) {
			spill_no_room(b, sp, &m);
			continue;
		}
		if (k <= 0)
			break;
		if (m.missed) {
			/* a gap the spool cannot carry (not expected: a lane let
			 * go before the spill is not read): m is read and will be
			 * acknowledged, so the next owner counts it with the gap,
			 * from the order before both */
			spill_drop(b, sp, m.publisher, m.lane,
				   m.order > m.missed + 1 ? m.order - 1 - m.missed : 0,
				   "a lane had lost records");
			continue;
		}
		if (!m.order)
			continue;
		if (router_spool(b, s, session_by_id(b, m.publisher), m.publisher, m.order - 1,
				 m.topic_id, m.data, m.len) < 0) {
			/* no memory: read, not copied, so not acknowledged;
			 * copying starts again from what was (the take-over walk
			 * from the broker's slots), and the reader skips what it
			 * had twice (SHM_RX_SPOOLED) */
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
		/* a commit refused quarantines the session: nothing acknowledged */
		if (s->quarantined) {
			spill_end(b, sp, false);
			return moved;
		}
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
		uint32_t tag;

		if (!sp)
			continue;
		tag = sp->tag;
		r = sp->r;
		if (lwait_backed_off(&sp->w, now, NULL)) {
			found |= spill_run(b, sp) > 0;
			continue;
		}
		if (!lwait_arm(&sp->w, r))
			continue;
		if (spill_run(b, sp)) {
			found = true;
			continue;
		}
		/* spill_run() may have ended it, and started another in its
		 * slot (its memory too): the tag tells */
		if (spills[i] == sp && sp->tag == tag && sp->r == r)
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
			lwait_woke(spills[i]->r);
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
