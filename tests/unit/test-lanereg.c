/*
 * tests/unit/test-lanereg.c - the broker's register of lanes
 * (broker/lanes.c): a publisher's first use of a topic makes its lane and
 * starts its subscribers there, a later subscriber joins by the floor
 * protocol, each side is told with the descriptors it lacks, and the
 * descriptors work: a writer and a reader built from them move every
 * record, the publisher's end cuts the lane after its last record, the
 * reader reads to the cut and the lane goes once passed; a reader that
 * ends frees its writer; a reader that holds a writer short of room
 * without moving for the block timeout is let go (and only such a one).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker/lanes.h"
#include "harness.h"
#include "lane-env.h"
#include "shm/atomics.h"
#include "shm/clock.h"
#include "shm/lane-rw.h"

#define PUB 11u
#define TOPIC 5u

static const struct lpush *push_to(const struct lanes_reg *g, uint64_t session, uint32_t type)
{
	for (unsigned i = 0; i < g->npush; i++)
		if (g->push[i].session == session && g->push[i].msg.h.type == type)
			return &g->push[i];
	return NULL;
}

static void *map(int fd, size_t len, int prot)
{
	void *m = mmap(NULL, len, prot, MAP_SHARED, fd, 0);

	CU_ASSERT_FATAL(m != MAP_FAILED);
	return m;
}

/* What the writer maps from its HOLDER pushes: page numbers to mappings. */
struct wpages {
	uint32_t page_no[8], arm_no[8];
	const struct shm_cursor_page *page[8];
	const struct shm_arm_page *arm[8];
	uint64_t reader[8];
	uint32_t *wake[8];
	unsigned npage, narm, nwake;
};

static void wpages_take(struct wpages *w, const struct lpush *p)
{
	const struct proto_holder *h = &p->msg.holder;
	unsigned k = 0;

	if (h->flags & PROTO_HOLDER_PAGE) {
		w->page_no[w->npage] = h->page;
		w->page[w->npage++] = map(p->fds[k++], 4096, PROT_READ);
	}
	if (h->flags & PROTO_HOLDER_WAKE) {
		w->reader[w->nwake] = h->reader;
		w->wake[w->nwake++] = map(p->fds[k++], 4096, PROT_READ | PROT_WRITE);
	}
	if (h->flags & PROTO_HOLDER_ARM) {
		w->arm_no[w->narm] = h->arm_page;
		w->arm[w->narm++] = map(p->fds[k++], 4096, PROT_READ);
	}
	CU_ASSERT(k == p->nfds);
}

static const struct shm_cursor_page *w_cursor(void *ctx, uint32_t page)
{
	struct wpages *w = ctx;

	for (unsigned i = 0; i < w->npage; i++)
		if (w->page_no[i] == page)
			return w->page[i];
	return NULL;
}

static const struct shm_arm_page *w_arm(void *ctx, uint32_t page)
{
	struct wpages *w = ctx;

	for (unsigned i = 0; i < w->narm; i++)
		if (w->arm_no[i] == page)
			return w->arm[i];
	return NULL;
}

static uint32_t *w_wake(void *ctx, uint64_t reader)
{
	struct wpages *w = ctx;

	for (unsigned i = 0; i < w->nwake; i++)
		if (w->reader[i] == reader)
			return w->wake[i];
	return NULL;
}

/* A reader as libshmb will build it from a PROTO_LANE push. */
struct rside {
	uint8_t *data, *meta;
	struct shm_cursor_page *page;
	struct lane_reader r;
	size_t len;
};

static void rside_open(struct rside *s, const struct lpush *p)
{
	const struct proto_lane *m = &p->msg.lane;

	CU_ASSERT_FATAL(m->flags & PROTO_LANE_PAGE);
	/* the reader's own rx_wake and arm page come with its first lane */
	CU_ASSERT_FATAL(p->nfds == (m->flags & PROTO_LANE_SELF ? 6u : 4u));
	s->len = SHM_LANE_RING_OFFSET + m->ring_size;
	s->data = map(p->fds[0], s->len, PROT_READ);
	s->meta = map(p->fds[1], SHM_LANE_META_SIZE, PROT_READ);
	s->page = map(p->fds[2], 4096, PROT_READ | PROT_WRITE);
	CU_ASSERT_FATAL(lane_reader_init(&s->r, s->data, m->ring_size, s->meta, &s->page->slot[m->slot],
					 false, !!(m->flags & PROTO_LANE_DROP_OLDEST), m->start,
					 m->order) == 0);
	CU_ASSERT(s->page->slot[m->slot] == m->start);
}

/* A subscriber before the publisher's first use, one after: both are
 * told with the descriptors each lacks, their entries are in the table,
 * and records written through descriptors the pushes gave arrive whole;
 * an owner switch fences after the last and reads its order, the
 * generation's end cuts there, the readers read to the cut, the lane
 * goes once both passed it. */
static void test_end_to_end(void)
{
	struct lane_env e;
	struct lreader *r1, *r2;
	struct blane *l;
	struct wpages wp = { 0 };
	struct lane_pages pages = { w_cursor, w_arm, w_wake, &wp };
	struct lane_writer w;
	struct rside s1, s2;
	struct lane_rec m;
	uint8_t *wdata;
	const struct lpush *p;
	uint64_t got1 = 0, got2 = 0, next = 0;
	char name[LANEFILE_NAME_MAX];

	lane_env_open(&e, 64 * 1024);
	r1 = lanes_reader_new(&e.g, 1, 1, 1000, false);
	CU_ASSERT_FATAL(r1 != NULL);
	CU_ASSERT(lanes_subscribe(&e.g, r1, TOPIC) == 0);
	CU_ASSERT(e.g.npush == 0); /* no lane carries it yet */
	CU_ASSERT_FATAL(lanes_topic_use(&e.g, PUB, 1, 1000, 0, TOPIC, &r1, 1, &l) == 0);
	snprintf(name, sizeof(name), "%s", l->f.name);
	CU_ASSERT(lanefile_topic_isset(&l->f, TOPIC));
	CU_ASSERT(l->nholders == 1);
	CU_ASSERT_FATAL((p = push_to(&e.g, 1, PROTO_LANE)) != NULL);
	CU_ASSERT(p->msg.lane.flags & PROTO_LANE_IN_PLACE); /* same uid */
	CU_ASSERT(p->msg.lane.lane == l->number && p->msg.lane.publisher == PUB);
	rside_open(&s1, p);
	CU_ASSERT_FATAL((p = push_to(&e.g, PUB, PROTO_HOLDER)) != NULL);
	CU_ASSERT(p->msg.holder.flags == (PROTO_HOLDER_PAGE | PROTO_HOLDER_WAKE | PROTO_HOLDER_ARM));
	wpages_take(&wp, p);
	lanes_push_done(&e.g);

	/* the writer, from the broker's own data descriptor (the control
	 * layer hands it one opened under Landlock) */
	wdata = map(l->f.data_fd, l->f.data_len, PROT_READ | PROT_WRITE);
	{
		uint8_t *hold = map(l->f.hold_ro, SHM_HOLD_SIZE, PROT_READ);

		CU_ASSERT_FATAL(lane_writer_init(&w, wdata, l->ring.size, hold, &pages, false, 0, 0, 0) == 0);
	}
	for (uint64_t i = 1; i <= 100; i++) {
		uint64_t *pl;

		CU_ASSERT_FATAL(lane_reserve(&w, TOPIC, i, NULL, 8, (void **)&pl) == 0);
		*pl = i;
		CU_ASSERT_FATAL(lane_commit(&w) == 0);
	}
	/* a second subscriber joins the running lane: from the end, page and
	 * wake new to the writer, the arm page not (same uid) */
	r2 = lanes_reader_new(&e.g, 2, 1, 1000, false);
	CU_ASSERT(lanes_subscribe(&e.g, r2, TOPIC) == 0);
	CU_ASSERT_FATAL((p = push_to(&e.g, 2, PROTO_LANE)) != NULL);
	CU_ASSERT(p->msg.lane.start == w.p.pos);
	rside_open(&s2, p);
	CU_ASSERT_FATAL((p = push_to(&e.g, PUB, PROTO_HOLDER)) != NULL);
	CU_ASSERT(p->msg.holder.flags == (PROTO_HOLDER_PAGE | PROTO_HOLDER_WAKE));
	wpages_take(&wp, p);
	lanes_push_done(&e.g);
	for (uint64_t i = 101; i <= 200; i++) {
		uint64_t *pl;

		CU_ASSERT_FATAL(lane_reserve(&w, TOPIC, i, NULL, 8, (void **)&pl) == 0);
		*pl = i;
		CU_ASSERT_FATAL(lane_commit(&w) == 0);
	}
	CU_ASSERT(w.npeer >= 2);
	/* a new owner is coming: fenced after record 200, the fields
	 * written, its last order read (the successor's start), not CUT */
	CU_ASSERT(lanes_publisher_fence(&e.g, PUB, 1, &next) == 0);
	CU_ASSERT(next == 200);
	CU_ASSERT(lanefile_state(&l->f)->state == SHM_LANE_OPEN);
	CU_ASSERT(lanefile_state(&l->f)->cut_pos == w.p.pos);
	CU_ASSERT(lanefile_state(&l->f)->cut_lane_seq == 200);
	CU_ASSERT(lanefile_state(&l->f)->cut_next_order == 201);
	{
		uint64_t *pl;

		CU_ASSERT(lane_reserve(&w, TOPIC, 201, NULL, 8, (void **)&pl) == 0);
		CU_ASSERT(lane_commit(&w) == -ESTALE);
	}
	while (lane_read(&s1.r, NULL, 0, &m) == LANE_REC) {
		CU_ASSERT(m.order == ++got1 && *(const uint64_t *)m.payload == got1);
		lane_ack(&s1.r, m.end);
	}
	/* a fence in an OPEN lane is a switch not finished: no end yet */
	CU_ASSERT(lane_read(&s1.r, NULL, 0, &m) == LANE_NONE);
	/* the generation ends (after the switch's commit point): CUT after
	 * record 200, at the same place; the order stays what it was */
	next = 7;
	CU_ASSERT(lanes_publisher_end(&e.g, PUB, 1, &next) == 0);
	CU_ASSERT(next == 200);
	CU_ASSERT(lanefile_state(&l->f)->state == SHM_LANE_CUT);
	CU_ASSERT(lanefile_state(&l->f)->cut_pos == w.p.pos);
	CU_ASSERT(lanes_publisher_end(&e.g, PUB, 1, &next) == 0 && next == 200);
	CU_ASSERT(lane_read(&s1.r, NULL, 0, &m) == LANE_END);
	CU_ASSERT(got1 == 200);
	got2 = 100;
	while (lane_read(&s2.r, NULL, 0, &m) == LANE_REC)
		CU_ASSERT(m.order == ++got2);
	CU_ASSERT(got2 == 200);
	/* r2 has not acknowledged: the lane stays */
	lanes_tick(&e.g);
	CU_ASSERT(faccessat(e.lanes, name, F_OK, 0) == 0);
	lane_ack(&s2.r, m.end);
	lanes_tick(&e.g);
	CU_ASSERT(faccessat(e.lanes, name, F_OK, 0) < 0 && errno == ENOENT);
	CU_ASSERT(e.g.lanes == NULL);
	lane_writer_free(&w);
	lane_env_close(&e);
}

/* A reader that does not move holds its writer; once its generation ends
 * the writer goes on, and the reader's arm word and bit are clear. */
static void test_reader_end(void)
{
	struct lane_env e;
	struct lreader *r;
	struct blane *l;
	struct wpages wp = { 0 };
	struct lane_pages pages = { w_cursor, w_arm, w_wake, &wp };
	struct lane_writer w;
	struct shm_arm_page *arm;
	uint8_t *wdata, *hold;
	uint64_t order = 1;
	uint32_t slot;
	int ret;

	lane_env_open(&e, 64 * 1024);
	r = lanes_reader_new(&e.g, 3, 1, 1000, false);
	CU_ASSERT_FATAL(r != NULL);
	lanes_subscribe(&e.g, r, TOPIC);
	CU_ASSERT_FATAL(lanes_topic_use(&e.g, PUB, 1, 1000, 0, TOPIC, &r, 1, &l) == 0);
	wpages_take(&wp, push_to(&e.g, PUB, PROTO_HOLDER));
	arm = map(r->arm->fd, 4096, PROT_READ | PROT_WRITE);
	slot = r->arm_slot;
	lane_arm(arm, slot, 99); /* as if asleep */
	lanes_push_done(&e.g);
	wdata = map(l->f.data_fd, l->f.data_len, PROT_READ | PROT_WRITE);
	hold = map(l->f.hold_ro, SHM_HOLD_SIZE, PROT_READ);
	CU_ASSERT_FATAL(lane_writer_init(&w, wdata, l->ring.size, hold, &pages, false, 0, 0, 0) == 0);
	do {
		void *pl;

		ret = lane_reserve(&w, TOPIC, order++, NULL, 200, &pl);
		if (ret == 0)
			lane_commit(&w);
	} while (ret == 0);
	CU_ASSERT(ret == -EAGAIN);
	CU_ASSERT(w.wakes == 1); /* the sleeper, once */
	lanes_reader_end(&e.g, r);
	CU_ASSERT(arm->arm[slot] == 0 && !(arm->bits[slot / 64] & (1ull << (slot % 64))));
	for (int i = 0; i < 2000; i++) {
		void *pl;

		CU_ASSERT_FATAL(lane_reserve(&w, TOPIC, order++, NULL, 200, &pl) == 0);
		CU_ASSERT_FATAL(lane_commit(&w) == 0);
	}
	lane_writer_free(&w);
	lane_env_close(&e);
}

/* Readers of two uids get two arm pages; a reader of another uid than
 * the writer reads by copy (no PROTO_LANE_IN_PLACE); a drop-oldest reader
 * is a WATCH entry. */
/* A cut lane goes once its block readers passed the cut, whatever its
 * drop-oldest readers (which hold nothing) did; before that it stays. */
static void test_cut_watchers(void)
{
	struct lane_env e;
	struct lreader *r[2];
	struct blane *l;
	struct wpages wp = { 0 };
	struct lane_pages pages = { w_cursor, w_arm, w_wake, &wp };
	struct lane_writer w;
	struct rside s;
	struct lane_rec m;
	char name[LANEFILE_NAME_MAX];
	uint8_t *wdata, *hold;

	lane_env_open(&e, 64 * 1024);
	r[0] = lanes_reader_new(&e.g, 6, 1, 1000, false);
	r[1] = lanes_reader_new(&e.g, 7, 1, 1000, true);
	CU_ASSERT_FATAL(r[0] && r[1]);
	lanes_subscribe(&e.g, r[0], TOPIC);
	lanes_subscribe(&e.g, r[1], TOPIC);
	CU_ASSERT_FATAL(lanes_topic_use(&e.g, PUB, 1, 1000, 0, TOPIC, r, 2, &l) == 0);
	snprintf(name, sizeof(name), "%s", l->f.name);
	rside_open(&s, push_to(&e.g, 6, PROTO_LANE));
	lanes_push_done(&e.g);
	wdata = map(l->f.data_fd, l->f.data_len, PROT_READ | PROT_WRITE);
	hold = map(l->f.hold_ro, SHM_HOLD_SIZE, PROT_READ);
	CU_ASSERT_FATAL(lane_writer_init(&w, wdata, l->ring.size, hold, &pages, false, 0, 0, 0) == 0);
	for (uint64_t i = 1; i <= 10; i++) {
		uint64_t *pl;

		CU_ASSERT_FATAL(lane_reserve(&w, TOPIC, i, NULL, 8, (void **)&pl) == 0);
		*pl = i;
		CU_ASSERT_FATAL(lane_commit(&w) == 0);
	}
	CU_ASSERT(lanes_publisher_end(&e.g, PUB, 1, NULL) == 0);
	/* the block reader has not read: the lane stays */
	lanes_tick(&e.g);
	CU_ASSERT(faccessat(e.lanes, name, F_OK, 0) == 0);
	while (lane_read(&s.r, NULL, 0, &m) == LANE_REC)
		lane_ack(&s.r, m.end);
	/* the drop-oldest reader never acknowledged anything: it goes anyway */
	lanes_tick(&e.g);
	CU_ASSERT(faccessat(e.lanes, name, F_OK, 0) < 0 && errno == ENOENT);
	lane_writer_free(&w);
	lane_env_close(&e);
}

/* Publish 8-byte records (each its order) until the lane is full. */
static uint64_t fill(struct lane_writer *w, uint64_t *order)
{
	uint64_t n = 0, *pl;

	while (lane_reserve(w, TOPIC, *order, NULL, 8, (void **)&pl) == 0) {
		*pl = (*order)++;
		CU_ASSERT_FATAL(lane_commit(w) == 0);
		n++;
	}
	return n;
}

/* Read and acknowledge what s has (up to max records): how many. */
static uint64_t drain(struct rside *s, uint64_t max)
{
	struct lane_rec m;
	uint64_t n = 0, v;

	while (n < max && lane_read(&s->r, &v, sizeof(v), &m) == LANE_REC) {
		lane_ack(&s->r, m.end);
		n++;
	}
	return n;
}

/*
 * The block timeout on lanes: a writer short of room and a reader that
 * read everything, one that stopped.  Only the stopped one is stuck, and
 * only once both the writer's short_since and its own last move into a
 * new slice are a timeout old (a move, even one the broker saw late,
 * starts the wait again; a creep inside a slice does not).  Let go, its
 * slot's bit is set and its entry is a WATCH: the writer laps it, and it
 * reads on by copy, whole records in order, what it lost counted.  A
 * writer that says it is short while its reader has nearly everything
 * read gets nobody let go.  The let-go reader's next owner generation
 * takes the WATCH over with the bit set.
 */
static void test_stuck(void)
{
	const uint64_t T = 1000000000ull;
	struct lane_env e;
	struct lreader *r[2], *st[4], *r1b;
	struct blane *l;
	struct wpages wp = { 0 };
	struct lane_pages pages = { w_cursor, w_arm, w_wake, &wp };
	struct lane_writer w;
	struct rside s0, s1, s1b;
	struct shm_lane_wpage *wpg;
	struct lane_rec m;
	const struct lpush *p;
	uint8_t *wdata, *hold;
	uint64_t order = 1, t1, next, v, missed = 0, got = 0, slice;
	uint32_t slot1;

	lane_env_open(&e, 64 * 1024);
	r[0] = lanes_reader_new(&e.g, 6, 1, 1000, false);
	r[1] = lanes_reader_new(&e.g, 7, 1, 1000, false);
	CU_ASSERT_FATAL(r[0] && r[1]);
	lanes_subscribe(&e.g, r[0], TOPIC);
	lanes_subscribe(&e.g, r[1], TOPIC);
	CU_ASSERT_FATAL(lanes_topic_use(&e.g, PUB, 1, 1000, 0, TOPIC, r, 2, &l) == 0);
	rside_open(&s0, push_to(&e.g, 6, PROTO_LANE));
	CU_ASSERT_FATAL((p = push_to(&e.g, 7, PROTO_LANE)) != NULL);
	slot1 = p->msg.lane.slot;
	rside_open(&s1, p);
	for (unsigned i = 0; i < e.g.npush; i++)
		if (e.g.push[i].msg.h.type == PROTO_HOLDER)
			wpages_take(&wp, &e.g.push[i]);
	lanes_push_done(&e.g);
	wdata = map(l->f.data_fd, l->f.data_len, PROT_READ | PROT_WRITE);
	wpg = (struct shm_lane_wpage *)wdata;
	hold = map(l->f.hold_ro, SHM_HOLD_SIZE, PROT_READ);
	CU_ASSERT_FATAL(lane_writer_init(&w, wdata, l->ring.size, hold, &pages, false, 0, 0,
					 0) == 0);
	slice = l->ring.size / SHM_LANE_SLICES;

	/* not short: nobody is looked at */
	CU_ASSERT(lanes_stuck(l, clock_mono_ns() + 10 * T, T, st, 4) == 0);
	CU_ASSERT(fill(&w, &order) > 1000);
	CU_ASSERT(drain(&s1, 100) == 100); /* s1 moved (unseen by the broker), then stops */
	CU_ASSERT(drain(&s0, UINT64_MAX) == order - 1);
	CU_ASSERT(fill(&w, &order) > 0);   /* s0's room used; held by s1 now */
	CU_ASSERT(wpg->short_since != 0);
	t1 = wpg->short_since + 1;
	/* short for less than the timeout: nobody (s1's move is seen now) */
	CU_ASSERT(lanes_stuck(l, t1, T, st, 4) == 0);
	/* the writer short a timeout long, s1's move seen less than that ago */
	CU_ASSERT(lanes_stuck(l, t1 + T - 1, T, st, 4) == 0);
	/* a creep of 8 bytes inside its slice is no move */
	CU_ASSERT_FATAL(s1.page->slot[slot1] % slice + 8 < slice);
	s1.page->slot[slot1] += 8;
	CU_ASSERT(lanes_stuck(l, t1 + T, T, st, 4) == 1 && st[0] == r[1]);
	/* a lying short_since changes nothing for a reader that read it all */
	wpg->short_since = 1;
	CU_ASSERT(lanes_stuck(l, t1 + T, T, st, 4) == 1 && st[0] == r[1]);
	/* a move into a new slice starts its wait again */
	CU_ASSERT(drain(&s1, slice / 40 + 1) == slice / 40 + 1);
	CU_ASSERT(lanes_stuck(l, t1 + 2 * T, T, st, 4) == 0);
	CU_ASSERT(lanes_stuck(l, t1 + 3 * T - 1, T, st, 4) == 0);
	CU_ASSERT(lanes_stuck(l, t1 + 3 * T, T, st, 4) == 1 && st[0] == r[1]);

	/* let go: the bit, then a WATCH; the writer laps it, s0 reading */
	CU_ASSERT(lanes_let_go(l, r[1]) == 0);
	CU_ASSERT(s1.page->let_go[slot1 / 64] & (1ull << (slot1 % 64)));
	CU_ASSERT(s0.page->let_go[0] == 0 || s0.page != s1.page);
	CU_ASSERT(lanes_let_go(l, r[1]) == -ENOENT);
	CU_ASSERT(l->nholders == 2);
	for (unsigned i = 0; i < l->nholders; i++)
		CU_ASSERT(l->holders[i].kind == (l->holders[i].r == r[1] ? SHM_HOLD_WATCH
									: SHM_HOLD_HOLD));
	for (uint64_t k = 0; k < 10000; k++) {
		uint64_t *pl;

		if (lane_reserve(&w, TOPIC, order, NULL, 8, (void **)&pl) < 0) {
			CU_ASSERT_FATAL(drain(&s0, UINT64_MAX) > 0);
			CU_ASSERT_FATAL(lane_reserve(&w, TOPIC, order, NULL, 8, (void **)&pl) == 0);
		}
		*pl = order++;
		CU_ASSERT_FATAL(lane_commit(&w) == 0);
	}
	CU_ASSERT(drain(&s0, UINT64_MAX) > 0);
	CU_ASSERT(s0.r.c.pos == w.p.pos && !s0.r.drop_oldest);
	CU_ASSERT(lanes_stuck(l, t1 + 5 * T, T, st, 4) == 0); /* s0 read it all */
	/* a writer that says it is short while its reader has nearly all
	 * read (a few records left, long unmoved) gets nobody let go */
	wpg->short_since = 1;
	CU_ASSERT(lanes_stuck(l, t1 + 6 * T, T, st, 4) == 0); /* s0's move seen */
	for (int k = 0; k < 10; k++) {
		uint64_t *pl;

		CU_ASSERT_FATAL(lane_reserve(&w, TOPIC, order, NULL, 8, (void **)&pl) == 0);
		*pl = order++;
		CU_ASSERT_FATAL(lane_commit(&w) == 0);
	}
	wpg->short_since = 1;
	CU_ASSERT(lanes_stuck(l, t1 + 10 * T, T, st, 4) == 0);
	next = 100 + slice / 40 + 2;
	while (lane_read(&s1.r, &v, sizeof(v), &m) == LANE_REC) {
		CU_ASSERT_FATAL(m.order == next + m.missed && v == m.order);
		next = m.order + 1;
		missed += m.missed;
		got++;
	}
	CU_ASSERT(s1.r.drop_oldest);
	CU_ASSERT(next == order && missed > 0 && got > 0);

	/* the session's next owner: the WATCH moves, the bit with it */
	r1b = lanes_reader_switch(&e.g, r[1], 2);
	CU_ASSERT_FATAL(r1b != NULL);
	CU_ASSERT_FATAL((p = push_to(&e.g, 7, PROTO_LANE)) != NULL);
	CU_ASSERT(!(p->msg.lane.flags & PROTO_LANE_DROP_OLDEST));
	rside_open(&s1b, p);
	CU_ASSERT(s1b.page->let_go[p->msg.lane.slot / 64] & (1ull << (p->msg.lane.slot % 64)));
	lanes_push_done(&e.g);
	CU_ASSERT(lane_read(&s1b.r, &v, sizeof(v), &m) == LANE_NONE || m.order < order);
	CU_ASSERT(s1b.r.drop_oldest);
	lane_writer_free(&w);
	lane_env_close(&e);
}

static void test_classes(void)
{
	struct lane_env e;
	struct lreader *r[2];
	struct blane *l;
	const struct lpush *p;
	struct hold_view v;

	lane_env_open(&e, 64 * 1024);
	r[0] = lanes_reader_new(&e.g, 4, 1, 0, false);   /* root */
	r[1] = lanes_reader_new(&e.g, 5, 1, 1000, true); /* the writer's uid, drop-oldest */
	CU_ASSERT_FATAL(r[0] && r[1]);
	CU_ASSERT(r[0]->arm != r[1]->arm);
	lanes_subscribe(&e.g, r[0], TOPIC);
	lanes_subscribe(&e.g, r[1], TOPIC);
	CU_ASSERT_FATAL(lanes_topic_use(&e.g, PUB, 1, 1000, 0, TOPIC, r, 2, &l) == 0);
	CU_ASSERT_FATAL((p = push_to(&e.g, 4, PROTO_LANE)) != NULL);
	CU_ASSERT(!(p->msg.lane.flags & PROTO_LANE_IN_PLACE));
	CU_ASSERT_FATAL((p = push_to(&e.g, 5, PROTO_LANE)) != NULL);
	CU_ASSERT(p->msg.lane.flags & PROTO_LANE_DROP_OLDEST);
	CU_ASSERT(hold_read(&l->hold, (unsigned)l->holders[1].idx, &v) && v.kind == SHM_HOLD_WATCH);
	CU_ASSERT(hold_read(&l->hold, (unsigned)l->holders[0].idx, &v) && v.kind == SHM_HOLD_HOLD);
	/* a topic outside the lane: nothing to hold */
	lanes_push_done(&e.g);
	CU_ASSERT(lanes_subscribe(&e.g, r[0], TOPIC + 1) == 0);
	CU_ASSERT(e.g.npush == 0);
	lane_env_close(&e);
}

/*
 * Every push names the reader it is for: two readers of one session and
 * generation (a spill's reader beside its owner's) each get their own
 * LANE push, the writer's HOLDER pushes name none.  A spill takes only
 * its own reader's pushes (broker/lanes-spill.c).
 */
static void test_push_target(void)
{
	struct lane_env e;
	struct lreader *r[2];
	struct blane *l;
	unsigned lanes[2] = { 0, 0 }, holders = 0;

	lane_env_open(&e, 64 * 1024);
	r[0] = lanes_reader_new(&e.g, 6, 1, 1000, false);
	r[1] = lanes_reader_new(&e.g, 6, 1, 1000, false);
	CU_ASSERT_FATAL(r[0] && r[1] && r[0]->number != r[1]->number);
	lanes_subscribe(&e.g, r[0], TOPIC);
	lanes_subscribe(&e.g, r[1], TOPIC);
	CU_ASSERT_FATAL(lanes_topic_use(&e.g, PUB, 1, 1000, 0, TOPIC, r, 2, &l) == 0);
	CU_ASSERT(lanes_reader_self(&e.g, r[1]) == 0 || r[1]->told_self);
	for (unsigned i = 0; i < e.g.npush; i++) {
		const struct lpush *p = &e.g.push[i];

		if (p->msg.h.type == PROTO_HOLDER) {
			CU_ASSERT(p->reader == 0 && p->session == PUB);
			holders++;
		} else if (p->msg.h.type == PROTO_LANE && p->msg.lane.lane) {
			CU_ASSERT_FATAL(p->reader == r[0]->number || p->reader == r[1]->number);
			lanes[p->reader == r[1]->number]++;
		} else if (p->msg.h.type == PROTO_LANE) {
			/* a reader's own pages (lane 0) */
			CU_ASSERT(p->reader == r[0]->number || p->reader == r[1]->number);
		}
	}
	CU_ASSERT(lanes[0] == 1 && lanes[1] == 1);
	CU_ASSERT(holders >= 2);
	lanes_push_done(&e.g);
	lane_env_close(&e);
}

/* A lane whose hold table is full (other holders: SPILL entries), a
 * reader refused there, then one entry freed and the reader taken: *l the
 * lane, the pushes of the second subscribe queued. */
static struct lreader *refused_then_taken(struct lane_env *e, struct blane **l)
{
	struct hold_view spill = { .kind = SHM_HOLD_SPILL };
	struct lreader *r;

	CU_ASSERT_FATAL(lanes_topic_use(&e->g, PUB, 1, 1000, 0, TOPIC, NULL, 0, l) == 0);
	r = lanes_reader_new(&e->g, 6, 1, 1000, false);
	CU_ASSERT_FATAL(r != NULL);
	for (unsigned i = 0; i < SHM_HOLD_MAX; i++)
		CU_ASSERT_FATAL(hold_add(&(*l)->hold, &spill, 0) >= 0);
	CU_ASSERT(lanes_subscribe(&e->g, r, TOPIC) == -ENOSPC);
	CU_ASSERT((*l)->nholders == 0 && e->g.npush == 0);
	hold_free(&(*l)->hold, 7);
	CU_ASSERT_FATAL(lanes_subscribe(&e->g, r, TOPIC) == 0);
	CU_ASSERT((*l)->nholders == 1);
	return r;
}

/* The writer is sent the page, wake and arm descriptors of a reader it
 * was refused once (before, the refused attempt marked them sent, so the
 * writer never mapped that holder's page: it counted the entry at its
 * floor for good, and never woke the reader). */
static void test_refused_writer(void)
{
	struct lane_env e;
	struct blane *l;
	const struct lpush *p;

	lane_env_open(&e, 64 * 1024);
	refused_then_taken(&e, &l);
	CU_ASSERT_FATAL((p = push_to(&e.g, PUB, PROTO_HOLDER)) != NULL);
	CU_ASSERT(p->msg.holder.flags == (PROTO_HOLDER_PAGE | PROTO_HOLDER_WAKE | PROTO_HOLDER_ARM));
	CU_ASSERT(p->nfds == 3);
	lane_env_close(&e);
}

/* The reader is sent its cursor page with the first lane it is told of
 * (before, the page made for the refused attempt counted as sent, and
 * the reader never got it: it could not acknowledge). */
static void test_refused_page(void)
{
	struct lane_env e;
	struct blane *l;
	const struct lpush *p;
	struct rside s;

	lane_env_open(&e, 64 * 1024);
	refused_then_taken(&e, &l);
	CU_ASSERT_FATAL((p = push_to(&e.g, 6, PROTO_LANE)) != NULL);
	CU_ASSERT_FATAL(p->msg.lane.flags & PROTO_LANE_PAGE);
	rside_open(&s, p);
	CU_ASSERT(p->msg.lane.slot == 1); /* slot 0 stays unused: never reused */
	lane_env_close(&e);
}

static const struct harness_test reg_tests[] = {
	{ "end_to_end", test_end_to_end },
	{ "reader_end", test_reader_end },
	{ "classes", test_classes },
	{ "push_target", test_push_target },
	{ "cut_watchers", test_cut_watchers },
	{ "stuck", test_stuck },
	{ "refused_writer", test_refused_writer },
	{ "refused_page", test_refused_page },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "lanereg", reg_tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	return harness_main("test-lanereg", suites, argc, argv);
}
