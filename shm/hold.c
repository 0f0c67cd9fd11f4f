/*
 * shm/hold.c - the hold table (see hold.h; docs/design/data-path.md,
 * section 3).
 *
 * Must never: let the writer see a live tag over fields not yet written;
 * lower a floor; start a holder below a limit the writer may already use
 * (hold_start and hold_takeover fence after the entry is visible and only
 * then load what the writer published); read a byte outside the ring.
 */
#include <errno.h>
#include <string.h>

#include "shm/atomics.h"
#include "shm/hold.h"

void hold_table_init(struct hold_table *t, void *base)
{
	t->hdr = base;
	t->ent = (struct shm_hold_ent *)((uint8_t *)base + sizeof(struct shm_hold_hdr));
}

/* ---- the broker's side ---------------------------------------------------- */

int hold_add(struct hold_table *t, const struct hold_view *v, uint64_t floor)
{
	for (unsigned i = 0; i < SHM_HOLD_MAX; i++) {
		struct shm_hold_ent *e = &t->ent[i];
		uint64_t tag = load_relaxed(&e->tag);

		if (tag & SHM_HOLD_LIVE)
			continue;
		/* the fields while the tag says free: a writer reading now
		 * sees a free slot, or (tags differ) throws its read away */
		store_relaxed(&e->kind, v->kind);
		store_relaxed(&e->page, v->page);
		store_relaxed(&e->slot, v->slot);
		store_relaxed(&e->arm_page, v->arm_page);
		store_relaxed(&e->arm_slot, v->arm_slot);
		store_relaxed(&e->reader, v->reader);
		store_relaxed(&e->floor, floor);
		if (i >= load_relaxed(&t->hdr->n))
			/* n first: a writer that sees the live tag also scans it */
			store_release(&t->hdr->n, i + 1);
		/* pairs with the load_acquire of the tag in hold_read() */
		store_release(&e->tag, (tag & ~SHM_HOLD_LIVE) + 2 + SHM_HOLD_LIVE);
		/* pairs with the writer's load of version in lane_limit() */
		store_release(&t->hdr->version, load_relaxed(&t->hdr->version) + 1);
		return (int)i;
	}
	return -ENOSPC;
}

void hold_raise(struct hold_table *t, unsigned idx, uint64_t floor)
{
	struct shm_hold_ent *e = &t->ent[idx];

	if (floor > load_relaxed(&e->floor))
		/* one aligned store: the writer's atomic load sees old or new,
		 * and an old floor only holds more */
		store_release(&e->floor, floor);
}

void hold_free(struct hold_table *t, unsigned idx)
{
	struct shm_hold_ent *e = &t->ent[idx];

	store_release(&e->tag, load_relaxed(&e->tag) & ~SHM_HOLD_LIVE);
	store_release(&t->hdr->version, load_relaxed(&t->hdr->version) + 1);
}

uint64_t hold_floor(const struct hold_table *t, unsigned idx)
{
	return load_acquire(&t->ent[idx].floor);
}

int lane_walk_end(const struct ring *r, uint64_t from, uint64_t seq, uint64_t *end,
		  uint64_t *seq_out)
{
	/* the ring's own recovery walk: valid records from `from` on, at
	 * most a lap of them (more is a writer lying) */
	*end = from;
	*seq_out = seq;
	return ring_recover(r, from, end, seq_out, LANE_REC_GEN, LANE_REC_GEN);
}

/*
 * The writer's `reclaim`, or `low` when it is misaligned or below low.
 * No upper bound: a writer no holder stopped may be laps past the end
 * the broker walked a moment ago, and then its `reclaim` is the only
 * start that is not overwritten; a writer that lies about it spoils the
 * reads of its own lane only (its readers find a bad lane or wait).
 */
static uint64_t reclaim_checked(const struct shm_lane_wpage *wp, uint64_t low)
{
	/* pairs with the writer's store_release of reclaim in lane_limit() */
	uint64_t rb = load_acquire(&wp->reclaim);

	if (rb % SHM_REC_ALIGN || rb < low)
		return low;
	return rb;
}

int lane_find_end(const struct ring *r, const struct shm_lane_wpage *wp, uint64_t known,
		  uint64_t *end)
{
	for (unsigned tries = 0; tries < 16; tries++) {
		uint64_t from = reclaim_checked(wp, known), seq, after;
		/* a hint only: forward, aligned, within a lap of reclaim */
		uint64_t hint = load_acquire(&wp->committed);
		int ret;

		if (hint % SHM_REC_ALIGN == 0 && hint > from && hint - from <= r->size)
			from = hint;
		ret = lane_walk_end(r, from, RING_SEQ_ANY, end, &seq);
		/* what the walk read was stored after any reclaim that freed it
		 * (the writer's store, fence, overwrite): this load sees it */
		fence_acquire();
		after = reclaim_checked(wp, known);
		if (ret == 0 && *end >= after)
			return 0;
		if (ret < 0 && after <= from)
			return ret;
		known = after;
	}
	return -EBADMSG;
}

/* Walk committed records from `from` to exactly `end`: the last one's
 * order and the lane sequence after it (both 0 when none was walked). */
static int walk_orders(const struct ring *r, uint64_t from, uint64_t end, uint64_t *order,
		       uint64_t *lane_seq)
{
	struct ring_cons c;
	struct ring_msg m;
	uint64_t last = 0;

	*order = *lane_seq = 0;
	if (from > end || end - from > r->size ||
	    ring_cons_init(&c, r, NULL, NULL, from, RING_SEQ_ANY, LANE_REC_GEN, LANE_REC_GEN) < 0)
		return -EBADMSG;
	while (c.pos < end) {
		struct shm_lane_msg lm;

		/* ring_peek checked the header on its own copy; the lane
		 * header is copied once here and only the copy is used */
		if (ring_peek(&c, &m) < 0 || m.end > end || m.hdr.type != SHM_REC_DATA ||
		    m.len < sizeof(lm))
			return -EBADMSG;
		memcpy(&lm, m.payload, sizeof(lm));
		/* orders rise along a lane (lanew publishes in source order) */
		if (lm.order <= last)
			return -EBADMSG;
		last = *order = lm.order;
		*lane_seq = m.hdr.seq + 1;
		ring_consume(&c, &m);
	}
	return 0;
}

int lane_last_order(const struct ring *r, const struct shm_lane_wpage *wp, uint64_t known,
		    uint64_t end, uint64_t *order, uint64_t *lane_seq)
{
	int ret = -ENOENT;

	*order = *lane_seq = 0;
	for (unsigned tries = 0; tries < 16; tries++) {
		/* pairs with the writer's store_release of reclaim in lane_limit() */
		uint64_t rc = load_acquire(&wp->reclaim), from = rc, after;

		/* a `reclaim` that is no position within a lap below the end
		 * lies, and one at the end has the last record below it: the
		 * broker's own boundary then (a walk over bytes the writer
		 * wrote again fails its checks or misses the end) */
		if (rc % SHM_REC_ALIGN || rc >= end || end - rc > r->size)
			from = known;
		if (from >= end)
			return end ? -ENOENT : 0;
		ret = walk_orders(r, from, end, order, lane_seq);
		/* as in lane_find_end(): a record the walk read was stored
		 * after the reclaim that freed it; unchanged, nothing from
		 * `reclaim` on was written under the walk */
		fence_acquire();
		after = load_acquire(&wp->reclaim);
		if (after == rc)
			return ret;
	}
	return ret;
}

uint64_t hold_start(struct hold_table *t, unsigned idx, const struct shm_lane_wpage *wp,
		    uint64_t P)
{
	uint64_t S;

	/* the entry and version are stored: either this load sees the
	 * writer's newest reclaim, or the writer's version check sees the
	 * entry (its store of reclaim, fence, load of version) */
	fence_full();
	S = reclaim_checked(wp, P);
	hold_raise(t, idx, S);
	return S;
}

int hold_takeover(struct hold_table *t, unsigned old, unsigned new, const struct shm_lane_wpage *wp,
		  const struct ring *r, const uint64_t *slot, uint64_t *start)
{
	uint64_t fl = hold_floor(t, old), low, c;
	struct ring_cons rc;
	struct ring_msg m;
	int ret;

	/* new is in the table at old's floor: only now the slot and reclaim */
	fence_full();
	if (!slot) {
		/* a SPILL or LINK entry held the writer at its floor, a
		 * boundary the broker wrote: nothing from there was overwritten */
		*start = fl;
		hold_raise(t, new, fl);
		return 0;
	}
	low = reclaim_checked(wp, fl);
	c = load_acquire(slot) & ~(uint64_t)(SHM_REC_ALIGN - 1);
	if (c < fl)
		c = fl;
	if (low > c) {
		/*
		 * A `reclaim` above the slot is one the writer published and
		 * never used: every limit it used with old in the table is at
		 * most max(floor, mark(a slot it saw)), and slots only rise
		 * (a lower one is ignored), so the records from the slot on
		 * are intact.  A slot that lies (inside a record) spoils only
		 * the liar's own records (data-path.md, open question 14).
		 */
		*start = c;
		hold_raise(t, new, c);
		return 0;
	}
	ret = ring_cons_init(&rc, r, NULL, NULL, low, RING_SEQ_ANY, LANE_REC_GEN, LANE_REC_GEN);
	if (ret < 0)
		return ret;
	/* the last record boundary at or below the slot, walked: a slot
	 * inside a record never becomes a start */
	while (rc.pos < c) {
		ret = ring_peek(&rc, &m);
		if (ret == -EAGAIN || ret == -ESTALE)
			break;
		if (ret < 0)
			return -EBADMSG;
		if (m.end > c || m.end - low > r->size)
			break;
		ring_consume(&rc, &m);
	}
	*start = rc.pos;
	hold_raise(t, new, rc.pos);
	return 0;
}

/* ---- the writer's side ---------------------------------------------------- */

bool hold_read(const struct hold_table *t, unsigned idx, struct hold_view *v)
{
	const struct shm_hold_ent *e = &t->ent[idx];
	/* pairs with the store_release of the tag in hold_add() */
	uint64_t tag = load_acquire(&e->tag);

	if (!(tag & SHM_HOLD_LIVE))
		return false;
	v->tag = tag;
	v->kind = load_relaxed(&e->kind);
	v->page = load_relaxed(&e->page);
	v->slot = load_relaxed(&e->slot);
	v->arm_page = load_relaxed(&e->arm_page);
	v->arm_slot = load_relaxed(&e->arm_slot);
	v->reader = load_relaxed(&e->reader);
	fence_acquire();
	return load_relaxed(&e->tag) == tag;
}
