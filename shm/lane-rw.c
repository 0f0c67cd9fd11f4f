/*
 * shm/lane-rw.c - a lane's writer and reader (see lane-rw.h;
 * docs/design/data-path.md, sections 2-4).
 *
 * Must never: write below the limit R (ring_prod's consumer position is
 * R, a private word this file computes); publish a `reclaim` that falls;
 * use a limit before the fence and the hold table's version check that
 * make a new holder see it or be seen; read a lane past a recorded cut;
 * return a record whose header, topic or order was not checked on a
 * private copy; return a record read in place as good once the reader's
 * hold was let go (its bit, looked at after the reads).
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shm/atomics.h"
#include "shm/clock.h"
#include "shm/futex.h"
#include "shm/lane-rw.h"

#define SPACE_SLEEP_MAX_NS 1000000000ull  /* no writer sleeps longer without a look */
#define SPACE_SLEEP_UNMAPPED_NS 2000000ull /* while a HOLD page is not mapped */
#define NOISY_WAKES 500u                   /* wakes without progress ... */
#define NOISY_WINDOW_NS 100000000ull       /* ... in this long: a noisy reader */
#define NOISY_GAP_NS 1000000ull            /* then at most one wake a ms */

struct lane_peer {
	struct hold_view v;
	bool live;
	const uint64_t *slot;  /* its cursor slot (HOLD, WATCH), NULL until mapped */
	const uint64_t *arm;   /* its arm word, NULL until mapped */
	uint32_t *wake;        /* its rx_wake, NULL until mapped */
	uint64_t last_seen;    /* HOLD: its slot as last believed */
	uint64_t eff;          /* HOLD: the limit it allowed last (never falls) */
	uint64_t woken;        /* the arm value last woken */
	uint64_t win_start;    /* noisy readers: the window's start */
	uint32_t win_wakes;    /* ... wakes in it that brought no progress */
	uint64_t slot_at_wake; /* ... its slot at the last wake */
	uint64_t quiet_until;  /* backed off: one wake a ms until then */
	uint64_t last_wake;
};

static uint32_t lane_hdr_bytes(bool received)
{
	return (uint32_t)(sizeof(struct shm_lane_msg) + (received ? sizeof(struct shm_lane_origin) : 0));
}

uint32_t lane_max_payload(uint64_t ring_size, bool received)
{
	struct ring r = { .size = ring_size, .max_rec = (uint32_t)(ring_size / RING_MAX_REC_DIV) };

	return ring_max_payload(&r) - lane_hdr_bytes(received);
}

/* ---- slice marks ---------------------------------------------------------- */

/* Note the record boundary covering each slice start in [from, to): a
 * record of rec_bytes bytes ends at `to`, after a pad if one was put in. */
static void marks_note(struct lane_writer *w, uint64_t from, uint64_t to, uint64_t rec_bytes)
{
	uint64_t data = to - rec_bytes;
	uint64_t s = (from + w->slice - 1) / w->slice * w->slice;

	for (; s < to; s += w->slice) {
		unsigned i = (unsigned)((s / w->slice) % SHM_LANE_SLICES);

		w->mark_slice[i] = s;
		w->mark_rec[i] = s >= data ? data : from;
	}
}

/* The record boundary at or before p noted for p's slice; false when
 * that slice's note is of another lap (or none was made). */
static bool mark_of(const struct lane_writer *w, uint64_t p, uint64_t *out)
{
	uint64_t s = p / w->slice * w->slice;
	unsigned i = (unsigned)((s / w->slice) % SHM_LANE_SLICES);

	if (p == s && p == w->p.pos) {
		/* the committed end on a slice start: the record covering it
		 * starts there, though none was reserved yet to note it (or
		 * an aborted batch noted another); a reader that acknowledged
		 * all of it in one ack would otherwise count for nothing */
		*out = p;
		return true;
	}
	if (w->mark_slice[i] != s || w->mark_rec[i] > p)
		return false;
	*out = w->mark_rec[i];
	return true;
}

/* Walk committed records in [from, to) for their marks (a writer taking
 * over a lane with records in it). */
static int marks_walk(struct lane_writer *w, uint64_t from, uint64_t to)
{
	struct ring_cons c;
	struct ring_msg m;
	int r = ring_cons_init(&c, &w->p.r, NULL, NULL, from, RING_SEQ_ANY, LANE_REC_GEN,
			       LANE_REC_GEN);

	while (r == 0 && c.pos < to) {
		uint64_t at = c.pos;

		r = ring_peek(&c, &m);
		if (r < 0 || m.end > to)
			return -EINVAL;
		marks_note(w, at, m.end, m.end - m.pos);
		ring_consume(&c, &m);
	}
	return r;
}

/* ---- the writer: following the hold table ---------------------------------- */

static struct lane_arm_view *armv_get(struct lane_writer *w, uint32_t page)
{
	const struct shm_arm_page *pg;
	struct lane_arm_view *a;

	for (unsigned i = 0; i < w->narm; i++)
		if (w->armv[i].page == page)
			return &w->armv[i];
	if (w->narm == LANE_ARM_PAGES || !w->pages.arm || !(pg = w->pages.arm(w->pages.ctx, page)))
		return NULL;
	a = &w->armv[w->narm++];
	a->page = page;
	a->pg = pg;
	memset(a->mine, 0, sizeof(a->mine));
	memset(a->peer, 0xff, sizeof(a->peer));
	return a;
}

/* Where an entry's pages are, as far as they are mapped. */
static void peer_resolve(struct lane_writer *w, struct lane_peer *pe, unsigned idx)
{
	const struct shm_cursor_page *cp = NULL;
	struct lane_arm_view *a = NULL;

	pe->slot = pe->arm = NULL;
	pe->wake = NULL;
	if (pe->v.kind != SHM_HOLD_HOLD && pe->v.kind != SHM_HOLD_WATCH)
		return;
	if (w->pages.cursor && pe->v.slot < SHM_CURSOR_SLOTS)
		cp = w->pages.cursor(w->pages.ctx, pe->v.page);
	if (cp)
		pe->slot = &cp->slot[pe->v.slot];
	else if (pe->v.kind == SHM_HOLD_HOLD)
		w->unmapped = true;
	if (w->pages.wake)
		pe->wake = w->pages.wake(w->pages.ctx, pe->v.reader);
	if (pe->v.arm_slot < SHM_ARM_SLOTS)
		a = armv_get(w, pe->v.arm_page);
	if (a) {
		pe->arm = &a->pg->arm[pe->v.arm_slot];
		a->mine[pe->v.arm_slot / 64] |= 1ull << (pe->v.arm_slot % 64);
		a->peer[pe->v.arm_slot] = (int16_t)idx;
	}
	/* a page whose HOLDERS push is not read yet: looked up again at each
	 * look until it comes (peers_remap), not only when the table changes */
	if ((w->pages.cursor && !cp && pe->v.slot < SHM_CURSOR_SLOTS) ||
	    (w->pages.wake && !pe->wake) ||
	    (w->pages.arm && !a && pe->v.arm_slot < SHM_ARM_SLOTS && w->narm < LANE_ARM_PAGES))
		w->unresolved = true;
}

/* Read the table again after its version changed. */
static void peers_refresh(struct lane_writer *w, uint64_t version)
{
	/* pairs with the broker's store_release of n in hold_add() */
	uint64_t n = load_acquire(&w->hold.hdr->n);

	if (n > SHM_HOLD_MAX)
		n = SHM_HOLD_MAX;
	w->narm = 0;
	w->unmapped = w->unresolved = false;
	w->npeer = (unsigned)n;
	for (unsigned i = 0; i < SHM_HOLD_MAX; i++) {
		struct lane_peer *pe = &w->peer[i];
		struct hold_view v;

		if (i >= n || !hold_read(&w->hold, i, &v)) {
			/* free, or changing: the version check says which */
			pe->live = false;
			continue;
		}
		if (!pe->live || pe->v.tag != v.tag) {
			uint64_t fl = hold_floor(&w->hold, i);

			memset(pe, 0, sizeof(*pe));
			pe->last_seen = pe->eff = fl;
		}
		pe->v = v;
		pe->live = true;
		peer_resolve(w, pe, i);
	}
	w->version = version;
}

/* Look up again the pages of the live entries (some were not mapped). */
static void peers_remap(struct lane_writer *w)
{
	w->unmapped = w->unresolved = false;
	for (unsigned i = 0; i < w->npeer; i++)
		if (w->peer[i].live)
			peer_resolve(w, &w->peer[i], i);
}

/* What entry pe allows: its floor, raised to the mark of its slot when
 * the slot is believable (section 3, "The writer's limit"). */
static uint64_t peer_limit(struct lane_writer *w, unsigned idx, struct lane_peer *pe)
{
	uint64_t fl = hold_floor(&w->hold, idx), c, m;

	if (pe->v.kind != SHM_HOLD_HOLD || !pe->slot)
		return fl;
	/* pairs with the reader's store_release in lane_ack() */
	c = load_acquire(pe->slot);
	if (c % SHM_REC_ALIGN || c < pe->last_seen || c > w->p.pos)
		c = pe->last_seen;
	pe->last_seen = c;
	if (mark_of(w, c, &m) && m > pe->eff)
		pe->eff = m;
	return pe->eff > fl ? pe->eff : fl;
}

/* The least mark at or above want, or C when none is known. */
static uint64_t mark_above(const struct lane_writer *w, uint64_t want)
{
	uint64_t s = (want + w->slice - 1) / w->slice * w->slice, m;

	for (; s <= w->p.pos; s += w->slice)
		if (mark_of(w, s, &m) && m >= want)
			return m;
	return w->p.pos;
}

/*
 * Raise the limit so that `need` more bytes fit after what is reserved,
 * about an eighth of the lane at a time, as far as the holders allow.
 * Publishes `reclaim`, fences, and uses the limit only if the table did
 * not change meanwhile (the floor protocol's writer side).
 */
static void lane_limit(struct lane_writer *w, uint64_t need)
{
	uint64_t size = w->p.r.size;
	uint64_t want = w->p.rsv + need > size ? w->p.rsv + need - size : 0;

	for (;;) {
		/* pairs with the broker's store_release of version */
		uint64_t v0 = load_acquire(&w->hold.hdr->version), T = w->p.pos, R_new;

		if (v0 != w->version)
			peers_refresh(w, v0);
		else if (w->unresolved)
			peers_remap(w);
		w->limit_passes++;
		for (unsigned i = 0; i < w->npeer; i++) {
			struct lane_peer *pe = &w->peer[i];
			uint64_t e;

			if (!pe->live || pe->v.kind == SHM_HOLD_WATCH)
				continue;
			e = peer_limit(w, i, pe);
			if (e < T)
				T = e;
		}
		R_new = mark_above(w, want > w->R + size / 8 ? want : w->R + size / 8);
		if (R_new > T)
			R_new = T;
		if (R_new < w->R)
			R_new = w->R;
		if (R_new > w->reclaim_pub) {
			/* pairs with load_acquire of reclaim in hold_start() and
			 * in drop-oldest readers */
			store_release(&w->wp->reclaim, R_new);
			w->reclaim_pub = R_new;
		}
		fence_full();
		if (load_acquire(&w->hold.hdr->version) != v0)
			continue;
		w->R = R_new;
		return;
	}
}

/* ---- the writer ------------------------------------------------------------- */

int lane_writer_init(struct lane_writer *w, void *data, uint64_t ring_size, void *hold,
		     const struct lane_pages *pages, bool received, uint64_t from, uint64_t pos,
		     uint64_t seq)
{
	struct ring r;
	int ret;

	memset(w, 0, sizeof(*w));
	ret = ring_init(&r, (uint8_t *)data + SHM_LANE_RING_OFFSET, ring_size);
	if (ret < 0 || from > pos || pos - from > ring_size || from % SHM_REC_ALIGN)
		return ret < 0 ? ret : -EINVAL;
	w->wp = data;
	w->received = received;
	w->slice = ring_size / SHM_LANE_SLICES;
	w->R = w->reclaim_pub = from;
	w->version = UINT64_MAX;
	w->space_spin_ns = LANE_SPACE_SPIN_NS;
	if (pages)
		w->pages = *pages;
	hold_table_init(&w->hold, hold);
	w->peer = calloc(SHM_HOLD_MAX, sizeof(*w->peer));
	w->armv = calloc(LANE_ARM_PAGES, sizeof(*w->armv));
	if (!w->peer || !w->armv) {
		lane_writer_free(w);
		return -ENOMEM;
	}
	ret = ring_prod_init(&w->p, &r, &w->R, NULL, pos, seq, LANE_REC_GEN);
	if (ret == 0 && from < pos)
		ret = marks_walk(w, from, pos);
	if (ret < 0)
		lane_writer_free(w);
	return ret;
}

void lane_writer_free(struct lane_writer *w)
{
	free(w->peer);
	free(w->armv);
	w->peer = NULL;
	w->armv = NULL;
}

uint64_t lane_rec_bytes(const struct lane_writer *w, uint32_t len)
{
	return ring_align((uint64_t)SHM_REC_HDR_SIZE + lane_hdr_bytes(w->received) + len);
}

int lane_reserve(struct lane_writer *w, uint32_t topic_id, uint64_t order,
		 const struct shm_lane_origin *origin, uint32_t len, void **payload)
{
	uint32_t hb = lane_hdr_bytes(w->received);
	uint64_t before = w->p.rsv, rec;
	struct shm_lane_msg *lm;
	void *pl;
	int r;

	if (len > lane_max_payload(w->p.r.size, w->received))
		return -EMSGSIZE;
	r = ring_reserve(&w->p, hb + len, SHM_REC_DATA, 0, &pl);
	if (r == -EAGAIN) {
		/* the worst case: a pad to the end of the ring, the record, the
		 * next commit word */
		lane_limit(w, lane_rec_bytes(w, len) * 2 + sizeof(uint64_t));
		r = ring_reserve(&w->p, hb + len, SHM_REC_DATA, 0, &pl);
	}
	if (r < 0) {
		if (r == -EAGAIN && !load_relaxed(&w->wp->short_since))
			store_relaxed(&w->wp->short_since, clock_mono_ns());
		return r;
	}
	if (load_relaxed(&w->wp->short_since))
		store_relaxed(&w->wp->short_since, 0);
	rec = lane_rec_bytes(w, len);
	marks_note(w, before, w->p.rsv, rec);
	lm = pl;
	lm->topic_id = topic_id;
	lm->flags = 0;
	lm->order = order;
	if (w->received)
		memcpy(lm + 1, origin, sizeof(*origin));
	*payload = (uint8_t *)pl + hb;
	return 0;
}

int lane_commit(struct lane_writer *w)
{
	uint64_t before = w->p.pos;
	int r = ring_commit(&w->p);

	if (r < 0)
		return r;
	if (w->p.pos / w->slice != before / w->slice)
		/* a hint for the broker's walks, stored per slice crossed */
		store_release(&w->wp->committed, w->p.pos);
	if (w->p.pos != before)
		lane_wake_readers(w);
	return 0;
}

void lane_abort(struct lane_writer *w)
{
	ring_abort(&w->p);
}

/* ---- the writer: waking readers ---------------------------------------------- */

/* A reader whose wakes bring no progress is woken at most once a ms for
 * a while (section 4, "Noisy peers"). */
static bool peer_quiet(struct lane_peer *pe, uint64_t now)
{
	uint64_t c = pe->slot ? load_relaxed(pe->slot) : 0;

	if (now - pe->win_start > NOISY_WINDOW_NS) {
		pe->win_start = now;
		pe->win_wakes = 0;
	}
	if (c == pe->slot_at_wake && ++pe->win_wakes > NOISY_WAKES)
		pe->quiet_until = now + NOISY_WINDOW_NS;
	pe->slot_at_wake = c;
	return now < pe->quiet_until && now - pe->last_wake < NOISY_GAP_NS;
}

static void peer_wake(struct lane_writer *w, struct lane_peer *pe)
{
	/* after the acquire of its bit: the value it armed with */
	uint64_t s = load_relaxed(pe->arm), now;

	if (!s || s == pe->woken || !pe->wake)
		return;
	now = clock_mono_ns();
	if (peer_quiet(pe, now))
		return; /* not marked woken: the next commit tries again */
	pe->woken = s;
	pe->last_wake = now;
	/* pairs with the reader's load_acquire of rx_wake before it armed */
	fetch_add_release(pe->wake, 1);
	futex_wake(pe->wake, INT_MAX);
	w->wakes++;
}

void lane_wake_readers(struct lane_writer *w)
{
	uint64_t v;

	/* pairs with the reader's fence between its arm and its look: the
	 * commit word is stored before the bits are loaded */
	fence_full();
	v = load_acquire(&w->hold.hdr->version);
	if (v != w->version)
		peers_refresh(w, v);
	else if (w->unresolved)
		peers_remap(w);
	for (unsigned g = 0; g < w->narm; g++) {
		struct lane_arm_view *a = &w->armv[g];

		for (unsigned k = 0; k < SHM_LINE / 8; k++) {
			uint64_t b = a->mine[k];

			if (!b)
				continue;
			/* pairs with the release of the bit in lane_arm(): the
			 * arm word was stored before it */
			b &= load_acquire(&a->pg->bits[k]);
			while (b) {
				unsigned bit = k * 64 + (unsigned)__builtin_ctzll(b);
				int16_t idx = bit < SHM_ARM_SLOTS ? a->peer[bit] : -1;

				b &= b - 1;
				if (idx >= 0 && w->peer[idx].live && w->peer[idx].arm)
					peer_wake(w, &w->peer[idx]);
			}
		}
	}
}

/* ---- the writer: waiting for space --------------------------------------------- */

static struct timespec space_deadline(const struct lane_writer *w, const struct timespec *deadline)
{
	struct timespec d = deadline_in_ns(w->unmapped ? SPACE_SLEEP_UNMAPPED_NS : SPACE_SLEEP_MAX_NS);

	if (deadline && (deadline->tv_sec < d.tv_sec ||
			 (deadline->tv_sec == d.tv_sec && deadline->tv_nsec < d.tv_nsec)))
		return *deadline;
	return d;
}

static bool fits(struct lane_writer *w, uint32_t len)
{
	uint64_t need = lane_rec_bytes(w, len) * 2 + sizeof(uint64_t);

	if (w->p.rsv + need <= w->R + w->p.r.size)
		return true;
	lane_limit(w, need);
	return w->p.rsv + need <= w->R + w->p.r.size;
}

int lane_wait_space(struct lane_writer *w, uint32_t len, uint32_t *tx_wake,
		    const struct timespec *deadline, void (*before_sleep)(void *ctx), void *ctx)
{
	unsigned idle = 0;

	uint64_t spin_until;

	/* an open batch that fills the lane is published: its readers free it */
	if (w->p.rsv != w->p.pos) {
		int ret = lane_commit(w);

		if (ret < 0)
			return ret; /* -ESTALE: cut under it; the batch is gone */
	}
	/* a reader on the other CPU frees room within microseconds: a
	 * sleep and a wake-up cost tens of them */
	spin_until = clock_mono_ns() + w->space_spin_ns;
	while (w->space_spin_ns && !fits(w, len) && clock_mono_ns() < spin_until)
		cpu_relax();
	while (!fits(w, len)) {
		/* pairs with the reader's fetch_add_release in lane_ack() */
		uint32_t v = load_acquire(tx_wake);
		struct timespec d;

		if (!load_relaxed(&w->wp->short_since))
			store_relaxed(&w->wp->short_since, clock_mono_ns());
		if (deadline && !deadline->tv_sec && !deadline->tv_nsec)
			return -ETIMEDOUT;
		if (before_sleep)
			before_sleep(ctx);
		store_relaxed(&w->wp->space_arm, ++w->space_seq);
		/* pairs with the reader's fence after its slot store */
		fence_full();
		if (fits(w, len))
			break;
		d = space_deadline(w, deadline);
		if (deadline && clock_mono_ns() >= (uint64_t)deadline->tv_sec * 1000000000ull +
							   (uint64_t)deadline->tv_nsec) {
			store_relaxed(&w->wp->space_arm, 0);
			return -ETIMEDOUT;
		}
		/* a word that keeps changing without room: 1 ms steps */
		if (++idle > 16) {
			struct timespec ms = deadline_in_ns(NOISY_GAP_NS);

			futex_wait(&idle, idle, &ms);
		} else {
			futex_wait(tx_wake, v, &d);
		}
	}
	store_relaxed(&w->wp->space_arm, 0);
	store_relaxed(&w->wp->short_since, 0);
	return 0;
}

/* ---- the reader -------------------------------------------------------------- */

int lane_reader_init(struct lane_reader *r, const void *data, uint64_t ring_size, const void *meta,
		     uint64_t *slot, bool received, bool drop_oldest, uint64_t pos, uint64_t order)
{
	struct ring ring;
	int ret;

	memset(r, 0, sizeof(*r));
	ret = ring_init(&ring, (uint8_t *)data + SHM_LANE_RING_OFFSET, ring_size);
	if (ret < 0)
		return ret;
	r->wp = data;
	r->st = (const struct shm_lane_meta_state *)((const uint8_t *)meta + SHM_LANE_META_STATE_OFF);
	r->bitmap = (const uint8_t *)meta + SHM_LANE_BITMAP_OFF;
	r->slot = slot;
	r->acked = pos;
	r->slice = ring_size / SHM_LANE_SLICES;
	r->last_order = order;
	r->order_any = order == 0;
	r->received = received;
	r->drop_oldest = drop_oldest;
	r->reclaim_seen = pos;
	/* commit words only: the writer's position is not on this path.  A
	 * local lane's writer starts at position 0 with sequence 0, so a
	 * reader from there knows its sequence: a drop-oldest reader lapped
	 * before its first read counts exactly what it lost */
	return ring_cons_init(&r->c, &ring, NULL, NULL, pos, pos == 0 && !received ? 0 : RING_SEQ_ANY,
			      LANE_REC_GEN, LANE_REC_GEN);
}

static int lane_bad(struct lane_reader *r)
{
	r->bad = -EBADMSG;
	return -EBADMSG;
}

/*
 * What the lane's state allows at the read position, where `something`
 * (a record, a fence, garbage) or nothing was found: LANE_REC to go on
 * with what is there, LANE_END at a recorded cut, LANE_NONE while open
 * with nothing there (a fence in an open lane is a switch not finished),
 * -EBADMSG in a BAD lane, past a cut, or with nothing below a cut.
 * Nothing at or past a recorded cut is read, whatever is there: the fence
 * is in memory the old owner can write.
 */
static int lane_state_at(struct lane_reader *r, bool something)
{
	/* pairs with the broker's store_release of state after the cut
	 * fields; after the commit word's load, so a cut recorded before
	 * the old owner wrote over its fence is seen */
	uint32_t st = load_acquire(&r->st->state);
	uint64_t cut;

	if (st == SHM_LANE_BAD)
		return lane_bad(r);
	if (st != SHM_LANE_CUT)
		return something ? LANE_REC : LANE_NONE;
	cut = load_relaxed(&r->st->cut_pos);
	if (r->c.pos == cut)
		return LANE_END;
	if (r->c.pos > cut)
		return lane_bad(r);
	/* the broker walked committed records up to the cut: nothing below
	 * it is empty or fenced unless the old owner emptied it (a
	 * drop-oldest reader lapped there has jumped already) */
	return something ? LANE_REC : lane_bad(r);
}

/* The lane header of a checked record, on a private copy. */
static int lane_check(struct lane_reader *r, const struct ring_msg *rm, struct lane_rec *m)
{
	uint32_t hb = lane_hdr_bytes(r->received);
	struct shm_lane_msg lm;

	if (rm->len < hb || rm->hdr.type != SHM_REC_DATA)
		return -EBADMSG;
	memcpy(&lm, rm->payload, sizeof(lm));
	if (lm.topic_id >= SHM_LANE_TOPIC_BITS || lm.flags ||
	    !(load_relaxed(&r->bitmap[lm.topic_id / 8]) & (1u << (lm.topic_id % 8))))
		return -EBADMSG;
	if (!r->order_any && lm.order <= r->last_order)
		return -EBADMSG;
	if (r->received)
		memcpy(&m->origin, (const uint8_t *)rm->payload + sizeof(lm), sizeof(m->origin));
	m->topic_id = lm.topic_id;
	m->order = lm.order;
	m->payload = (const uint8_t *)rm->payload + hb;
	m->len = rm->len - hb;
	m->pos = rm->pos;
	m->end = rm->end;
	m->lane_seq = rm->hdr.seq;
	return 0;
}

/* Drop-oldest: everything below `reclaim` is gone; jump there. */
static bool lane_jump(struct lane_reader *r)
{
	/* pairs with the writer's store_release of reclaim before it
	 * overwrote anything below it */
	uint64_t rc = load_acquire(&r->wp->reclaim);

	if (rc % SHM_REC_ALIGN || rc <= r->c.pos || rc < r->reclaim_seen)
		return false;
	if (!r->lost) {
		/* counted from here when the next record is consumed */
		r->lost = true;
		r->lost_seq0 = r->c.seq;
	}
	r->reclaim_seen = rc;
	r->c.pos = rc;
	r->c.seq = RING_SEQ_ANY;
	return true;
}

/*
 * Was a hold reader's hold let go (the broker's block timeout, until
 * spools: its entry is a WATCH now)?  Its slot's bit in line 0 of its
 * cursor page (a page mapped whole: found by rounding the slot's
 * address).  After the reads of a record: the broker sets the bit before
 * it frees the entry, and the writer overwrites only after it saw the
 * entry freed and fenced, so a read that saw an overwritten byte is
 * followed by a load that sees the bit.  `reclaim` would not do: a
 * thrown-away limit can leave it above a live holder (test-lane-edges
 * takeover_stale_reclaim).  No slot (not mapped yet): no hold the broker
 * could have let go that the reader could tell.
 */
static bool hold_let_go(const struct lane_reader *r)
{
	const struct shm_cursor_page *pg;
	size_t i;

	if (!r->slot)
		return false;
	pg = (const void *)((uintptr_t)r->slot & ~(uintptr_t)(sizeof(*pg) - 1));
	i = (size_t)(r->slot - pg->slot);
	if (i >= SHM_CURSOR_SLOTS)
		return false;
	fence_acquire();
	/* pairs with the broker's release of the bit before it frees the entry */
	return load_acquire(&pg->let_go[i / 64]) & (1ull << (i % 64));
}

bool lane_unheld(const struct lane_reader *r)
{
	return hold_let_go(r);
}

static int lane_read_copy(struct lane_reader *r, void *buf, uint32_t cap, struct lane_rec *m);

static int lane_read_hold(struct lane_reader *r, void *buf, uint32_t cap, struct lane_rec *m)
{
	struct ring_msg rm;
	int ret = ring_peek(&r->c, &rm), ok = ret, st;

	if (ret == 0)
		ok = lane_check(r, &rm, m);
	if (hold_let_go(r)) {
		/* not held any more: what it read may be overwritten; it reads
		 * on as a drop-oldest reader (copies, jumps, counts the loss) */
		r->drop_oldest = true;
		return lane_read_copy(r, buf, cap, m);
	}
	st = lane_state_at(r, ret != -EAGAIN && ret != -ESTALE);
	if (st != LANE_REC)
		return st;
	if (ok < 0)
		return lane_bad(r);
	m->missed = 0;
	return LANE_REC;
}

static int lane_read_copy(struct lane_reader *r, void *buf, uint32_t cap, struct lane_rec *m)
{
	for (unsigned tries = 0; tries < 64; tries++) {
		struct ring_msg rm;
		int ret = ring_peek(&r->c, &rm), ok = -EBADMSG, st;

		if (ret == 0 && (ok = lane_check(r, &rm, m)) == 0) {
			if (m->len > cap)
				return -EMSGSIZE;
			memcpy(buf, m->payload, m->len);
		}
		/* the copy is good only if nothing below it was reclaimed
		 * since: pairs with the writer's store of reclaim, fence,
		 * overwrite */
		fence_acquire();
		if (lane_jump(r))
			continue;
		st = lane_state_at(r, ret != -EAGAIN && ret != -ESTALE);
		if (st != LANE_REC)
			return st;
		if (ret < 0 || ok < 0)
			return lane_bad(r);
		m->payload = buf;
		m->missed = 0;
		/* a jump over a pad alone (a reader stopped at the ring's
		 * tail) lands on the very sequence expected: none lost */
		if (r->lost && r->lost_seq0 != RING_SEQ_ANY && rm.hdr.seq >= r->lost_seq0)
			m->missed = rm.hdr.seq - r->lost_seq0;
		else if (r->lost)
			/* from where nothing was read yet: the orders say how
			 * many at most (lane_check: above the last), or at
			 * least one was lost */
			m->missed = !r->order_any ? m->order - r->last_order - 1 : 1;
		return LANE_REC;
	}
	return LANE_NONE; /* overwritten as fast as it reads: later */
}

int lane_peek(struct lane_reader *r, void *buf, uint32_t cap, struct lane_rec *m)
{
	if (r->bad)
		return r->bad;
	if (!r->drop_oldest)
		return lane_read_hold(r, buf, cap, m);
	return lane_read_copy(r, buf, cap, m);
}

void lane_consume(struct lane_reader *r, const struct lane_rec *m)
{
	r->c.pos = m->end;
	r->c.seq = m->lane_seq + 1;
	r->last_order = m->order;
	r->order_any = false;
	r->lost = false;
}

int lane_read(struct lane_reader *r, void *buf, uint32_t cap, struct lane_rec *m)
{
	int ret = lane_peek(r, buf, cap, m);

	if (ret == LANE_REC)
		lane_consume(r, m);
	return ret;
}

void lane_ack(struct lane_reader *r, uint64_t pos)
{
	uint64_t s;

	if (!r->slot || pos <= r->acked || pos % SHM_REC_ALIGN)
		return;
	/* pairs with the writer's load_acquire in peer_limit() */
	store_release(r->slot, pos);
	if (pos / r->slice == r->acked / r->slice) {
		/* inside one slice the writer's limit cannot move */
		r->acked = pos;
		return;
	}
	r->acked = pos;
	/* pairs with the writer's fence after it armed space_arm */
	fence_full();
	s = load_relaxed(&r->wp->space_arm);
	if (s && s != r->space_woken && r->tx_wake) {
		r->space_woken = s;
		fetch_add_release(r->tx_wake, 1);
		futex_wake(r->tx_wake, INT_MAX);
	}
}

void lane_arm(struct shm_arm_page *pg, uint32_t slot, uint64_t value)
{
	store_relaxed(&pg->arm[slot], value);
	/* pairs with the writer's load_acquire of the bits */
	__atomic_fetch_or(&pg->bits[slot / 64], 1ull << (slot % 64), __ATOMIC_RELEASE);
}

void lane_disarm(struct shm_arm_page *pg, uint32_t slot)
{
	__atomic_fetch_and(&pg->bits[slot / 64], ~(1ull << (slot % 64)), __ATOMIC_RELAXED);
	store_relaxed(&pg->arm[slot], 0);
}
