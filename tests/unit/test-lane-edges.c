/*
 * tests/unit/test-lane-edges.c - a lane's writer and reader at their
 * edges (shm/lane-rw.c, shm/hold.c; docs/design/data-path.md, sections
 * 2-4 and the rows of section 11 they found): a committed end on a slice
 * start, an aborted batch's marks, a holder's pages mapped after the
 * writer saw its entry, a drop-oldest reader jumping over a pad, an old
 * owner writing over or under its cut, and the order of a lane's last
 * record as the broker reads it at a cut.
 */
#include <errno.h>

#include "harness.h"
#include "lane-fx.h"
#include "shm/atomics.h"
#include "shm/lane-rw.h"

/* ---- slice marks ---------------------------------------------------------------- */

/* A record of exactly one slice (the lane header after the record's). */
static uint32_t slice_payload(void)
{
	return RING / SHM_LANE_SLICES - SHM_REC_HDR_SIZE - (uint32_t)sizeof(struct shm_lane_msg);
}

/* Records of one slice each: the writer runs short at a committed end
 * that lies on a slice start, and its reader acknowledges all of it in
 * one ack.  That end is a record boundary (the next record starts there),
 * so the writer gets its room; before, the slice's mark was unknown (no
 * record covered its first byte yet), the ack counted for nothing, and
 * the writer waited for an ack that could never come. */
static void test_ack_slice_start(void)
{
	struct fx f;
	struct lane_writer w;
	struct lane_reader r;
	struct lane_rec m;
	struct timespec zero = { 0, 0 };
	uint64_t order = 1, last = 0;
	uint32_t len = slice_payload();
	unsigned idx;

	fx_open(&f);
	writer_open(&f, &w);
	reader_open(&f, &r, 0, false, holder_add(&f, SHM_HOLD_HOLD, 0, &idx));
	CU_ASSERT_FATAL(lane_rec_bytes(&w, len) == w.slice);
	while (put(&w, order, len) == 0) {
		CU_ASSERT_FATAL(lane_commit(&w) == 0);
		order++;
	}
	CU_ASSERT_FATAL(w.p.pos % w.slice == 0);
	while (lane_read(&r, NULL, 0, &m) == LANE_REC)
		last = m.end;
	CU_ASSERT_FATAL(last == w.p.pos);
	lane_ack(&r, last);
	CU_ASSERT(lane_wait_space(&w, len, f.tx_wake, &zero, NULL, NULL) == 0);
	CU_ASSERT(put(&w, order, len) == 0);
	lane_writer_free(&w);
	fx_close(&f);
}

/*
 * An aborted batch noted marks for slices it covered; the records written
 * instead end exactly on such a slice start, and the reader acknowledges
 * up to there.  The stale mark (inside a record now) never becomes the
 * limit: `reclaim` stays on record boundaries, and a drop-oldest reader
 * lapped since jumps to a record, not into one.
 */
static void test_abort_marks(void)
{
	struct fx f;
	struct lane_writer w;
	struct lane_reader r, d;
	struct lane_rec m;
	const struct shm_lane_wpage *wp;
	uint64_t order = 1, buf[RING / SHM_LANE_SLICES / 8], last = 0;
	uint32_t len = slice_payload();
	void *pl;
	unsigned idx;

	fx_open(&f);
	wp = (const void *)f.data;
	writer_open(&f, &w);
	reader_open(&f, &r, 0, false, holder_add(&f, SHM_HOLD_HOLD, 0, &idx));
	reader_open(&f, &d, 1, true, 0);
	/* all but the last slice's record of the first lap */
	for (unsigned i = 0; i < SHM_LANE_SLICES - 2; i++) {
		CU_ASSERT_FATAL(put(&w, order++, len) == 0);
		CU_ASSERT_FATAL(lane_commit(&w) == 0);
	}
	/* a batch across the next slice start, records of other sizes: aborted */
	CU_ASSERT_FATAL(lane_reserve(&w, TOPIC, order, NULL, len - 24, &pl) == 0);
	CU_ASSERT_FATAL(lane_reserve(&w, TOPIC, order + 1, NULL, 64, &pl) == 0);
	CU_ASSERT_FATAL(w.p.rsv > w.p.pos + w.slice);
	lane_abort(&w);
	CU_ASSERT_FATAL(put(&w, order++, len) == 0);
	CU_ASSERT_FATAL(lane_commit(&w) == 0);
	CU_ASSERT_FATAL(put(&w, order, len) == -EAGAIN);
	/* the reader reads the lane and acknowledges it in one ack */
	while (lane_read(&r, NULL, 0, &m) == LANE_REC)
		last = m.end;
	CU_ASSERT_FATAL(last == w.p.pos);
	lane_ack(&r, last);
	/* the writer goes on as far as that reader lets it */
	while (put(&w, order, len) == 0) {
		CU_ASSERT_FATAL(lane_commit(&w) == 0);
		order++;
	}
	CU_ASSERT(load_acquire(&wp->reclaim) % w.slice == 0);
	/* a drop-oldest reader lapped since: records, never a bad lane */
	CU_ASSERT(lane_read(&d, buf, sizeof(buf), &m) == LANE_REC);
	CU_ASSERT(lane_read(&d, buf, sizeof(buf), &m) == LANE_REC && intact(&m));
	lane_writer_free(&w);
	fx_close(&f);
}

/* ---- pages not mapped yet ---------------------------------------------------------- */

/* Pages as libshmb maps them: page 1 and reader 5's wake word only once
 * the broker's HOLDERS push was read. */
struct late {
	struct fx *f;
	bool mapped;
};

static const struct shm_cursor_page *late_cursor(void *ctx, uint32_t page)
{
	struct late *l = ctx;

	return page == 1 && !l->mapped ? NULL : pg_cursor(l->f, page);
}

static const struct shm_arm_page *late_arm(void *ctx, uint32_t page)
{
	struct late *l = ctx;

	return pg_arm(l->f, page);
}

static uint32_t *late_wake(void *ctx, uint64_t reader)
{
	struct late *l = ctx;

	return reader == 5 && !l->mapped ? NULL : pg_wake(l->f, reader);
}

/*
 * The broker puts an entry in the table before it pushes its pages, so a
 * writer that commits in between sees the entry with its cursor page and
 * wake word not mapped yet (it counts the entry at its floor).  Once they
 * are mapped, the writer follows that reader's acks and wakes it: before,
 * it looked the pages up only when the table changed again, held the
 * lane at the reader's start for good and never woke it.
 */
static void test_late_pages(void)
{
	struct fx f;
	struct late l = { .f = &f };
	struct lane_pages pages = { late_cursor, late_arm, late_wake, &l };
	const struct shm_lane_wpage *wp;
	struct hold_view v = { .kind = SHM_HOLD_HOLD, .page = 1, .slot = 0, .arm_page = 0,
			       .arm_slot = 5, .reader = 5 };
	struct lane_writer w;
	struct lane_reader r;
	struct lane_rec m;
	uint64_t order = 1, P, S, last = 0;
	int idx;

	fx_open(&f);
	wp = (const void *)f.data;
	CU_ASSERT_FATAL(lane_writer_init(&w, f.data, RING, f.hold, &pages, false, 0, 0, 0) == 0);
	CU_ASSERT_FATAL(lane_find_end(&f.ring, wp, 0, &P) == 0);
	idx = hold_add(&f.ht, &v, P);
	CU_ASSERT_FATAL(idx >= 0);
	S = hold_start(&f.ht, (unsigned)idx, wp, P);
	store_release(&f.cur[1].slot[0], S);
	/* a commit before the push is read: the entry, its pages missing */
	CU_ASSERT_FATAL(put(&w, order++, 256) == 0 && lane_commit(&w) == 0);
	CU_ASSERT_FATAL(w.npeer == 1 && w.unmapped);
	l.mapped = true;
	CU_ASSERT_FATAL(lane_reader_init(&r, f.data, RING, f.meta, &f.cur[1].slot[0], false, false,
					 S, 0) == 0);
	while (put(&w, order, 256) == 0) {
		CU_ASSERT_FATAL(lane_commit(&w) == 0);
		order++;
	}
	while (lane_read(&r, NULL, 0, &m) == LANE_REC)
		last = m.end;
	lane_ack(&r, last);
	CU_ASSERT(put(&w, order, 256) == 0);
	/* asleep: the next commit wakes it */
	lane_arm(f.arm, 5, 42);
	CU_ASSERT(lane_commit(&w) == 0);
	CU_ASSERT(w.wakes == 1);
	lane_writer_free(&w);
	fx_close(&f);
}

/* ---- drop-oldest readers ------------------------------------------------------------ */

/*
 * A drop-oldest reader that stopped at a pad (the tail of the ring) while
 * the writer reclaimed to the record after it jumps over the pad only: it
 * lost nothing, and says so (before, a jump that landed on the very
 * sequence it expected counted one record lost).
 */
static void test_drop_oldest_pad(void)
{
	struct fx f;
	struct lane_writer w;
	struct lane_reader d;
	struct lane_rec m;
	struct hold_view spill = { .kind = SHM_HOLD_SPILL };
	uint64_t buf[128], order = 1, last = 0;
	uint32_t len = 1000 - SHM_REC_HDR_SIZE - (uint32_t)sizeof(struct shm_lane_msg);

	fx_open(&f);
	writer_open(&f, &w);
	reader_open(&f, &d, 0, true, 0);
	/* the broker holds the writer at the record after the pad */
	CU_ASSERT_FATAL(hold_add(&f.ht, &spill, RING) >= 0);
	/* records of 1000 bytes: the 66th does not fit before the end of the
	 * ring, a pad fills the tail; the reader reads up to the pad */
	for (int i = 0; i < 65; i++) {
		CU_ASSERT_FATAL(put(&w, order++, len) == 0);
		CU_ASSERT_FATAL(lane_commit(&w) == 0);
	}
	while (lane_read(&d, buf, sizeof(buf), &m) == LANE_REC)
		last = m.order;
	CU_ASSERT_FATAL(d.c.pos == RING / 1000 * 1000);
	/* the writer goes on, as far as the broker lets it */
	while (put(&w, order, len) == 0) {
		CU_ASSERT_FATAL(lane_commit(&w) == 0);
		order++;
	}
	CU_ASSERT_FATAL(load_acquire(&((struct shm_lane_wpage *)f.data)->reclaim) == RING);
	/* what was reclaimed is the pad: nothing the reader had not read */
	CU_ASSERT(lane_read(&d, buf, sizeof(buf), &m) == LANE_REC);
	CU_ASSERT(m.order == last + 1 && intact(&m));
	CU_ASSERT(m.missed == 0);
	lane_writer_free(&w);
	fx_close(&f);
}

/* ---- cuts ----------------------------------------------------------------------------- */

/* The broker's cut after what w committed: the fence swapped in, the
 * cut recorded, CUT. */
static void cut_here(struct fx *f, const struct lane_writer *w)
{
	struct shm_lane_meta_state *st = (void *)(f->meta + SHM_LANE_META_STATE_OFF);
	struct ring_cons c;

	ring_cons_init(&c, &f->ring, NULL, NULL, w->p.pos, RING_SEQ_ANY, 1, 1);
	CU_ASSERT_FATAL(ring_fence(&c) == 0);
	st->cut_pos = w->p.pos;
	store_release(&st->state, SHM_LANE_CUT);
}

/*
 * The fence is in memory the old owner can write: after the cut it puts
 * the slot back to 0 and commits a record there.  Nothing past a
 * recorded cut is read, by a hold reader or a drop-oldest one: both end
 * at the cut (before, both returned the old owner's record).
 */
static void test_cut_overwritten(void)
{
	struct fx f;
	struct lane_writer w;
	struct lane_reader r, d;
	struct lane_rec m;
	uint64_t buf[64];
	unsigned idx;

	fx_open(&f);
	writer_open(&f, &w);
	reader_open(&f, &r, 0, false, holder_add(&f, SHM_HOLD_HOLD, 0, &idx));
	reader_open(&f, &d, 1, true, 0);
	for (uint64_t i = 1; i <= 5; i++)
		CU_ASSERT_FATAL(put(&w, i, 64) == 0);
	CU_ASSERT_FATAL(lane_commit(&w) == 0);
	cut_here(&f, &w);
	/* the old owner takes the fence away and commits past the cut */
	store_relaxed((uint64_t *)(f.ring.data + (w.p.pos & f.ring.mask)), 0);
	CU_ASSERT_FATAL(put(&w, 6, 64) == 0 && lane_commit(&w) == 0);
	for (int i = 0; i < 5; i++) {
		CU_ASSERT(lane_read(&r, NULL, 0, &m) == LANE_REC);
		CU_ASSERT(lane_read(&d, buf, sizeof(buf), &m) == LANE_REC);
	}
	CU_ASSERT(lane_read(&r, NULL, 0, &m) == LANE_END);
	CU_ASSERT(lane_read(&d, buf, sizeof(buf), &m) == LANE_END);
	lane_writer_free(&w);
	fx_close(&f);
}

/* A CUT lane with nothing at a position below its cut: the old owner
 * emptied a record the broker walked past.  The lane is bad (before, the
 * reader saw "nothing yet" for good, never reached the end, and the lane
 * was never released). */
static void test_cut_emptied(void)
{
	struct fx f;
	struct lane_writer w;
	struct lane_reader r;
	struct lane_rec m, second;
	unsigned idx;

	fx_open(&f);
	writer_open(&f, &w);
	reader_open(&f, &r, 0, false, holder_add(&f, SHM_HOLD_HOLD, 0, &idx));
	for (uint64_t i = 1; i <= 5; i++) {
		CU_ASSERT_FATAL(put(&w, i, 64) == 0);
		CU_ASSERT_FATAL(lane_commit(&w) == 0);
	}
	cut_here(&f, &w);
	CU_ASSERT_FATAL(lane_read(&r, NULL, 0, &m) == LANE_REC);
	CU_ASSERT_FATAL(lane_read(&r, NULL, 0, &second) == LANE_REC);
	/* the third record's commit word, zeroed */
	store_relaxed((uint64_t *)(f.ring.data + (second.end & f.ring.mask)), 0);
	CU_ASSERT(lane_read(&r, NULL, 0, &m) == -EBADMSG);
	lane_writer_free(&w);
	fx_close(&f);
}

/* ---- open: need a design decision ------------------------------------------------- */

/* The broker's work done from inside the writer's refresh of its peers
 * (the cursor page look-up of entry 0): a holder H whose end the broker
 * walked a while ago joins now, by the floor protocol. */
struct hook {
	struct fx *f;
	bool armed;
	uint64_t P;   /* the end the broker walked for H, before the writer lapped it */
	int idx;
	uint64_t S;
};

static const struct shm_cursor_page *hook_cursor(void *ctx, uint32_t page)
{
	struct hook *h = ctx;
	struct hold_view v = { .kind = SHM_HOLD_HOLD, .page = 1, .slot = 0, .arm_page = 0,
			       .arm_slot = 9, .reader = 9 };

	if (h->armed) {
		h->armed = false;
		h->idx = hold_add(&h->f->ht, &v, h->P);
		h->S = hold_start(&h->f->ht, (unsigned)h->idx, (const void *)h->f->data, h->P);
		store_release(&h->f->cur[1].slot[0], h->S);
	}
	return pg_cursor(h->f, page);
}

static const struct shm_arm_page *hook_arm(void *ctx, uint32_t page)
{
	return pg_arm(((struct hook *)ctx)->f, page);
}

static uint32_t *hook_wake(void *ctx, uint64_t reader)
{
	return pg_wake(((struct hook *)ctx)->f, reader);
}

/*
 * OPEN (needs a design decision): the writer stores `reclaim` before its
 * version check (the floor protocol), so a computation that the check
 * throws away leaves `reclaim` above the limit the writer then uses.
 * H joins while the writer computes without it: the broker's load in
 * hold_start comes before the writer's store, so S = the old reclaim, and
 * the writer's check sees H and keeps to S.  `reclaim` stays at the
 * thrown-away value.  H is then taken over (a spill, an owner switch):
 * hold_takeover starts the walk at that `reclaim`, above H's slot, and
 * the records H never read, still intact, are skipped without a gap.
 */
static void test_takeover_stale_reclaim(void)
{
	struct fx f;
	struct hook h = { .f = &f };
	struct lane_pages pages = { hook_cursor, hook_arm, hook_wake, &h };
	const struct shm_lane_wpage *wp;
	struct hold_view spill = { .kind = SHM_HOLD_SPILL };
	struct lane_writer w;
	struct lane_reader r;
	struct lane_rec m;
	uint64_t order = 1, R1, start;
	unsigned a;
	int e2;

	fx_open(&f);
	wp = (const void *)f.data;
	CU_ASSERT_FATAL(lane_writer_init(&w, f.data, RING, f.hold, &pages, false, 0, 0, 0) == 0);
	/* the broker walks the end for H (an empty lane) and is delayed */
	CU_ASSERT_FATAL(lane_find_end(&f.ring, wp, 0, &h.P) == 0);
	/* the writer, held by nobody, laps that end, up to where its next
	 * reservation needs a new limit */
	while (order < 3000 || w.p.rsv + 64 + 8 <= w.R + RING) {
		CU_ASSERT_FATAL(put(&w, order++, 24) == 0);
		CU_ASSERT_FATAL(lane_commit(&w) == 0);
	}
	R1 = load_acquire(&wp->reclaim);
	CU_ASSERT_FATAL(R1 > h.P);
	/* a reader A that has read everything joins (entry 0), then H joins
	 * while the writer reads the table for A */
	holder_add(&f, SHM_HOLD_HOLD, 0, &a);
	h.armed = true;
	CU_ASSERT(put(&w, order, 24) == -EAGAIN);
	CU_ASSERT_FATAL(!h.armed && h.S == R1);
	CU_ASSERT(w.R == R1);                          /* the writer kept to H */
	CU_ASSERT(load_acquire(&wp->reclaim) > R1);    /* what it threw away */
	/* H's records from its start are all there */
	CU_ASSERT_FATAL(lane_reader_init(&r, f.data, RING, f.meta, NULL, false, false, h.S, 0) == 0);
	CU_ASSERT(lane_read(&r, NULL, 0, &m) == LANE_REC && intact(&m));
	/* H taken over: the new holder must start where H stood */
	e2 = hold_add(&f.ht, &spill, hold_floor(&f.ht, (unsigned)h.idx));
	CU_ASSERT_FATAL(e2 >= 0);
	CU_ASSERT(hold_takeover(&f.ht, (unsigned)h.idx, (unsigned)e2, wp, &f.ring,
				&f.cur[1].slot[0], &start) == 0);
	CU_ASSERT(start == h.S);
	lane_writer_free(&w);
	fx_close(&f);
}

/*
 * The order of a lane's last record, as the broker reads it at a cut for
 * the successor's start sequence: walked from `reclaim`; from the
 * broker's own boundary when `reclaim` is the end (or lies); unknown
 * when there is nothing below the end to walk from; and from a writer
 * whose orders do not rise, the highest one before the lie.
 */
static void test_last_order(void)
{
	struct fx f;
	struct lane_writer w;
	struct shm_lane_wpage *wp;
	uint64_t order, seq, mid = 0;

	fx_open(&f);
	wp = (void *)f.data;
	writer_open(&f, &w);
	/* an empty lane: no record, no order */
	CU_ASSERT(lane_last_order(&f.ring, wp, 0, 0, &order, &seq) == 0);
	CU_ASSERT(order == 0 && seq == 0);
	for (uint64_t i = 1; i <= 40; i++) {
		CU_ASSERT_FATAL(put(&w, 3 * i, 100) == 0);
		CU_ASSERT_FATAL(lane_commit(&w) == 0);
		if (i == 20)
			mid = w.p.pos;
	}
	CU_ASSERT(lane_last_order(&f.ring, wp, mid, w.p.pos, &order, &seq) == 0);
	CU_ASSERT(order == 120 && seq == 40);
	/* everything reclaimed: walked from the broker's boundary */
	store_release(&wp->reclaim, w.p.pos);
	CU_ASSERT(lane_last_order(&f.ring, wp, mid, w.p.pos, &order, &seq) == 0);
	CU_ASSERT(order == 120 && seq == 40);
	/* ... and with that at the end too, it is not known */
	CU_ASSERT(lane_last_order(&f.ring, wp, w.p.pos, w.p.pos, &order, &seq) == -ENOENT);
	CU_ASSERT(order == 0);
	/* a `reclaim` that lies (misaligned, past the end): the same */
	store_release(&wp->reclaim, mid + 4);
	CU_ASSERT(lane_last_order(&f.ring, wp, mid, w.p.pos, &order, &seq) == 0 && order == 120);
	store_release(&wp->reclaim, w.p.pos + 4096);
	CU_ASSERT(lane_last_order(&f.ring, wp, mid, w.p.pos, &order, &seq) == 0 && order == 120);
	store_release(&wp->reclaim, 0);
	/* an end inside a record: the walk misses it */
	CU_ASSERT(lane_last_order(&f.ring, wp, 0, w.p.pos - 8, &order, &seq) == -EBADMSG);
	CU_ASSERT(order == 117);
	/* orders that fall: the highest before the lie */
	CU_ASSERT_FATAL(put(&w, 121, 100) == 0 && put(&w, 121, 100) == 0 && put(&w, 500, 8) == 0);
	CU_ASSERT_FATAL(lane_commit(&w) == 0);
	CU_ASSERT(lane_last_order(&f.ring, wp, 0, w.p.pos, &order, &seq) == -EBADMSG);
	CU_ASSERT(order == 121 && seq == 41);
	lane_writer_free(&w);
	fx_close(&f);
}

static const struct harness_test edge_tests[] = {
	{ "ack_slice_start", test_ack_slice_start },
	{ "abort_marks", test_abort_marks },
	{ "late_pages", test_late_pages },
	{ "drop_oldest_pad", test_drop_oldest_pad },
	{ "cut_overwritten", test_cut_overwritten },
	{ "cut_emptied", test_cut_emptied },
	{ "takeover_stale_reclaim", test_takeover_stale_reclaim },
	{ "last_order", test_last_order },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "lane_edges", edge_tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	return harness_main("test-lane-edges", suites, argc, argv);
}
