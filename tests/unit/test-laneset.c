/*
 * tests/unit/test-laneset.c - libshmb's reader over many lanes
 * (libclient/laneset.c; docs/design/data-path.md, section 2 "The library's
 * reader"): lanes built as memfds the way the broker makes them, writers
 * from shm/lane-rw.c (the test plays the broker with shm/hold.h), and a
 * reader set over them: the merge by order and the round robin between
 * publishers, topics skipped and acknowledged over, drop-oldest lanes,
 * bad lanes and files cut under the mapping, the sleep and its wake-ups
 * both ways, pages that come late, and descriptors refused.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"
#include "libclient/laneset.h"
#include "shm/atomics.h"
#include "shm/crc32c.h"
#include "shm/futex.h"

#define RING (64u * 1024u)
#define T_READ 7u    /* the topic the reader reads */
#define T_OTHER 8u   /* in the lanes, not read */
#define T_BAD 9u     /* in no lane's bitmap */
#define ARM_SLOT 5u  /* the reader's arm word */
#define RW (PROT_READ | PROT_WRITE)

/* The reader: its set and the pages the broker gives it. */
struct rdr {
	struct laneset set;
	int arm_fd, rx_fd;
	struct shm_arm_page *arm;
	uint32_t *rx_wake;
	uint8_t buf[4096];
	unsigned ev_bad, ev_end;
	uint64_t bad_pub, end_pub;
	uint32_t bad_lane, end_lane;
};

/* A publisher and the reader's cursor page for it. */
struct tpub {
	uint64_t id;
	int cur_fd;
	struct shm_cursor_page *cur; /* the writers' view of it */
};

/* One lane as the broker makes it, with its writer and the reader's
 * hold entry in it. */
struct tlane {
	struct tpub *pub;
	struct rdr *rd;
	uint32_t no, slot;
	int data_fd, meta_fd, hold_fd, tx_fd;
	uint8_t *data, *meta, *hold;
	uint32_t *tx_wake;
	struct hold_table ht;
	struct ring ring;
	struct lane_writer w;
	uint64_t start;
};

static int memfd(const char *name, size_t len, void **map)
{
	int fd = memfd_create(name, MFD_CLOEXEC);

	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_FATAL(ftruncate(fd, (off_t)len) == 0);
	if (map) {
		*map = mmap(NULL, len, RW, MAP_SHARED, fd, 0);
		CU_ASSERT_FATAL(*map != MAP_FAILED);
	}
	return fd;
}

static void on_event(void *ctx, int ev, uint64_t pub, uint32_t lane)
{
	struct rdr *rd = ctx;

	if (ev == LANESET_EV_BAD) {
		rd->ev_bad++;
		rd->bad_pub = pub;
		rd->bad_lane = lane;
	} else if (ev == LANESET_EV_END) {
		rd->ev_end++;
		rd->end_pub = pub;
		rd->end_lane = lane;
	}
}

static void rdr_open(struct rdr *rd)
{
	memset(rd, 0, sizeof(*rd));
	CU_ASSERT_FATAL(laneset_init(&rd->set, on_event, rd) == 0);
	rd->arm_fd = memfd("arm", 4096, (void **)&rd->arm);
	rd->rx_fd = memfd("rx_wake", 4096, (void **)&rd->rx_wake);
	CU_ASSERT_FATAL(laneset_topic(&rd->set, T_READ, true) == 0);
}

static void rdr_close(struct rdr *rd)
{
	laneset_free(&rd->set);
	munmap(rd->arm, 4096);
	munmap(rd->rx_wake, 4096);
	close(rd->arm_fd);
	close(rd->rx_fd);
}

static void pub_open(struct rdr *rd, struct tpub *p, uint64_t id)
{
	p->id = id;
	p->cur_fd = memfd("cursor", 4096, (void **)&p->cur);
	CU_ASSERT_FATAL(laneset_cursor_page(&rd->set, id, 0, p->cur_fd) == 0);
}

static void pub_close(struct tpub *p)
{
	munmap(p->cur, 4096);
	close(p->cur_fd);
}

static const struct shm_cursor_page *pg_cursor(void *ctx, uint32_t page)
{
	struct tlane *l = ctx;

	return page == 0 ? l->pub->cur : NULL;
}

static const struct shm_arm_page *pg_arm(void *ctx, uint32_t page)
{
	struct tlane *l = ctx;

	return page == 0 ? l->rd->arm : NULL;
}

static uint32_t *pg_wake(void *ctx, uint64_t reader)
{
	struct tlane *l = ctx;

	return reader == 0 ? l->rd->rx_wake : NULL;
}

static void meta_header(struct tlane *l, struct shm_lane_meta_hdr *h)
{
	memset(h, 0, sizeof(*h));
	h->magic = SHM_LANE_MAGIC;
	h->layout_version = SHM_LANE_LAYOUT_VERSION;
	h->kind = SHM_LANE_LOCAL;
	h->publisher = l->pub->id;
	h->generation = 1;
	h->class_no = l->no;
	h->class_uids[0] = (uint32_t)getuid();
	h->nclass_uids = 1;
	h->ring_size = RING;
	h->first_order = 1;
	h->checksum = crc32c(0, h, offsetof(struct shm_lane_meta_hdr, checksum));
}

/* The lane's files, its writer, and the reader's HOLD or WATCH entry
 * added as the broker does (committed end, then the floor protocol). */
static void lane_open(struct tlane *l, struct rdr *rd, struct tpub *p, uint32_t no, uint32_t slot,
		      uint32_t kind)
{
	struct lane_pages pages = { pg_cursor, pg_arm, pg_wake, l };
	struct hold_view v = { .kind = kind, .page = 0, .slot = slot, .arm_page = 0,
			       .arm_slot = ARM_SLOT, .reader = 0 };
	struct shm_lane_meta_hdr h;
	struct shm_lane_meta_state *st;
	uint64_t P;
	int i;

	memset(l, 0, sizeof(*l));
	l->pub = p;
	l->rd = rd;
	l->no = no;
	l->slot = slot;
	l->data_fd = memfd("data", SHM_LANE_RING_OFFSET + RING, (void **)&l->data);
	l->meta_fd = memfd("meta", SHM_LANE_META_SIZE, (void **)&l->meta);
	l->hold_fd = memfd("hold", SHM_HOLD_SIZE, (void **)&l->hold);
	l->tx_fd = memfd("tx_wake", 4096, (void **)&l->tx_wake);
	meta_header(l, &h);
	memcpy(l->meta, &h, sizeof(h));
	st = (void *)(l->meta + SHM_LANE_META_STATE_OFF);
	st->state = SHM_LANE_OPEN;
	l->meta[SHM_LANE_BITMAP_OFF + T_READ / 8] |= 1u << (T_READ % 8);
	l->meta[SHM_LANE_BITMAP_OFF + T_OTHER / 8] |= 1u << (T_OTHER % 8);
	hold_table_init(&l->ht, l->hold);
	CU_ASSERT_FATAL(ring_init(&l->ring, l->data + SHM_LANE_RING_OFFSET, RING) == 0);
	CU_ASSERT_FATAL(lane_writer_init(&l->w, l->data, RING, l->hold, &pages, false, 0, 0, 0) == 0);
	CU_ASSERT_FATAL(lane_find_end(&l->ring, (const void *)l->data, 0, &P) == 0);
	i = hold_add(&l->ht, &v, P);
	CU_ASSERT_FATAL(i >= 0);
	l->start = hold_start(&l->ht, (unsigned)i, (const void *)l->data, P);
}

static int lane_read_by(struct tlane *l, bool drop_oldest, bool in_place, int tx_fd)
{
	struct laneset_desc d = { .lane = l->no, .kind = SHM_LANE_LOCAL, .publisher = l->pub->id,
				.start = l->start, .order = 0, .cursor_page = 0,
				.cursor_slot = l->slot, .drop_oldest = drop_oldest,
				.in_place = in_place };

	return laneset_add(&l->rd->set, &d, l->data_fd, l->meta_fd, tx_fd);
}

static void lane_close(struct tlane *l)
{
	lane_writer_free(&l->w);
	if (l->data)
		munmap(l->data, SHM_LANE_RING_OFFSET + RING);
	munmap(l->meta, SHM_LANE_META_SIZE);
	munmap(l->hold, SHM_HOLD_SIZE);
	munmap(l->tx_wake, 4096);
	close(l->data_fd);
	close(l->meta_fd);
	close(l->hold_fd);
	close(l->tx_fd);
}

/* A reader, npub publishers (1 and 2) with their cursor pages, and n
 * lanes each of kind (HOLD or WATCH): A's lanes 10 + i read in place, B's
 * 20 + i copied, each on slot i. */
struct fx {
	struct rdr rd;
	struct tpub pub[2];
	struct tlane a[2], b[2];
	unsigned npub, n;
};

static void fx_open(struct fx *f, unsigned npub, unsigned n, uint32_t kind, bool drop_oldest)
{
	f->npub = npub;
	f->n = n;
	rdr_open(&f->rd);
	for (unsigned p = 0; p < npub; p++) {
		struct tlane *l = p ? f->b : f->a;

		pub_open(&f->rd, &f->pub[p], p + 1);
		for (unsigned i = 0; i < n; i++) {
			lane_open(&l[i], &f->rd, &f->pub[p], 10 * (p + 1) + i, i, kind);
			CU_ASSERT_FATAL(lane_read_by(&l[i], drop_oldest, p == 0, l[i].tx_fd) == 0);
		}
	}
}

static void fx_close(struct fx *f)
{
	rdr_close(&f->rd);
	for (unsigned p = 0; p < f->npub; p++) {
		for (unsigned i = 0; i < f->n; i++)
			lane_close(p ? &f->b[i] : &f->a[i]);
		pub_close(&f->pub[p]);
	}
}

static uint64_t word(uint64_t pub, uint64_t order)
{
	return pub << 40 | order;
}

/* A record of topic with its order; the payload says who and which. */
static int put(struct tlane *l, uint64_t order, uint32_t topic, uint32_t len)
{
	uint64_t *p;
	int r = lane_reserve(&l->w, topic, order, NULL, len, (void **)&p);

	if (r < 0)
		return r;
	for (uint32_t i = 0; i < len / 8; i++)
		p[i] = word(l->pub->id, order);
	return 0;
}

static bool intact(const struct laneset_msg *m)
{
	const uint64_t *p = m->data;

	for (uint32_t i = 0; i < m->len / 8; i++)
		if (p[i] != word(m->publisher, m->order))
			return false;
	return m->topic_id == T_READ;
}

/* The broker cuts the lane after its last record (section 7).  No
 * CUnit assertion: writer threads cut too. */
static bool cut(struct tlane *l, uint64_t next_order)
{
	struct shm_lane_meta_state *st = (void *)(l->meta + SHM_LANE_META_STATE_OFF);
	struct ring_cons rc;

	if (lane_commit(&l->w) < 0 ||
	    ring_cons_init(&rc, &l->ring, NULL, NULL, l->w.p.pos, RING_SEQ_ANY, 1, 1) < 0 ||
	    ring_fence(&rc) < 0)
		return false;
	st->cut_pos = l->w.p.pos;
	st->cut_lane_seq = l->w.p.seq;
	st->cut_next_order = next_order;
	store_release(&st->state, SHM_LANE_CUT);
	lane_wake_readers(&l->w);
	return true;
}

static uint64_t slot_of(const struct tlane *l)
{
	return load_acquire(&l->pub->cur->slot[l->slot]);
}

/* ---- the merge and the round robin ------------------------------------------ */

/*
 * Two publishers, two lanes each, written before the reader looks: A's
 * old generation cut at 150 and its new one going on from 151 (read in
 * place), B's two class lanes taking orders at random (copied).  Every
 * message arrives once and in order per publisher, the publishers take
 * turns of 64, A's old lane ends, is reported and released once
 * acknowledged, and every slot ends where its lane does.
 */
static void test_merge_fair(void)
{
	struct fx f;
	struct rdr *rd = &f.rd;
	struct tlane *a = f.a, *b = f.b;
	struct laneset_msg m;
	uint64_t next[2] = { 1, 1 }, rng = harness_seed("merge_fair");
	unsigned run = 0, runs = 0, maxrun = 0, cur = 2;
	int open = -1;

	fx_open(&f, 2, 2, SHM_HOLD_HOLD, false);
	for (uint64_t o = 1; o <= 300; o++) {
		int k = (int)(harness_rand(&rng) % 2);

		if (o == 151)
			CU_ASSERT_FATAL(cut(&a[0], 151));
		CU_ASSERT_FATAL(put(&a[o > 150], o, T_READ, 64) == 0);
		/* source order across lanes: another lane's batch is committed first */
		if (open >= 0 && open != k)
			CU_ASSERT_FATAL(lane_commit(&b[open].w) == 0);
		CU_ASSERT_FATAL(put(&b[k], o, T_READ, 8 * (uint32_t)(harness_rand(&rng) % 16)) == 0);
		open = k;
	}
	CU_ASSERT_FATAL(lane_commit(&a[1].w) == 0 && lane_commit(&b[open].w) == 0);
	while (laneset_next(&rd->set, rd->buf, sizeof(rd->buf), &m) == 1) {
		unsigned p = m.publisher == 1 ? 0 : 1;

		CU_ASSERT_FATAL(m.order == next[p]);
		CU_ASSERT_FATAL(intact(&m));
		/* A in place, B copied */
		CU_ASSERT((m.data == rd->buf) == (p == 1 && m.len > 0));
		next[p]++;
		run = p == cur ? run + 1 : 1;
		runs += p != cur;
		cur = p;
		maxrun = run > maxrun ? run : maxrun;
		laneset_ack(&rd->set);
	}
	CU_ASSERT(next[0] == 301 && next[1] == 301);
	CU_ASSERT(maxrun == LANESET_QUANTUM);
	CU_ASSERT(runs >= 600 / LANESET_QUANTUM);
	CU_ASSERT(rd->ev_end == 1 && rd->end_pub == 1 && rd->end_lane == 10 && rd->ev_bad == 0);
	CU_ASSERT(laneset_remove(&rd->set, 10) == -ENOENT);
	for (int i = 0; i < 2; i++) {
		CU_ASSERT(slot_of(&a[i]) == a[i].w.p.pos);
		CU_ASSERT(slot_of(&b[i]) == b[i].w.p.pos);
	}
	CU_ASSERT(laneset_remove(&rd->set, 11) == 0);
	fx_close(&f);
}

struct writer {
	struct tlane *l[2];
	uint64_t n;
	bool cut_half;      /* lane 0 cut at n/2, the rest in lane 1; else at random */
	uint32_t topic;
	uint64_t written;
	int err;
	uint32_t done;
};

/* Write one record, waiting for space as long as its holders need. */
static int put_wait(struct tlane *l, uint64_t order, uint32_t topic, uint32_t len)
{
	int r;

	while ((r = put(l, order, topic, len)) == -EAGAIN) {
		struct timespec d = deadline_in_ns(10000000000ull);

		r = lane_wait_space(&l->w, len, l->tx_wake, &d, NULL, NULL);
		if (r < 0)
			return r;
	}
	return r;
}

/* A publisher in a thread: orders 1..n over its lanes, in source order. */
static void *writer_main(void *arg)
{
	struct writer *wr = arg;
	uint64_t rng = 0x9e3779b97f4a7c15ull ^ wr->l[0]->pub->id;
	int open = -1;

	for (uint64_t o = 1; o <= wr->n && !wr->err; o++) {
		int k = wr->cut_half ? o > wr->n / 2 : (int)(harness_rand(&rng) % 2);
		uint32_t len = 8 * (uint32_t)(harness_rand(&rng) % 48);

		if (wr->cut_half && o == wr->n / 2 + 1 && !cut(wr->l[0], o))
			wr->err = 5;
		if (open >= 0 && open != k && lane_commit(&wr->l[open]->w) < 0)
			wr->err = 1;
		open = k;
		if (put_wait(wr->l[k], o, wr->topic, len) < 0)
			wr->err = 2;
		if (o % 4 == 0 && lane_commit(&wr->l[k]->w) < 0)
			wr->err = 3;
		store_release(&wr->written, o);
	}
	if (open >= 0 && lane_commit(&wr->l[open]->w) < 0)
		wr->err = 4;
	store_release(&wr->done, 1);
	return NULL;
}

/*
 * The same two publishers writing live in threads, 20 000 messages each
 * through 64 KiB lanes: the reader keeps up by sleeping in laneset_wait()
 * and acknowledging, and gets every message once, in order per publisher.
 */
static void test_merge_live(void)
{
	struct fx f;
	struct rdr *rd = &f.rd;
	struct tlane *a = f.a, *b = f.b;
	struct writer wa = { { &a[0], &a[1] }, 20000, true, T_READ, 0, 0, 0 };
	struct writer wb = { { &b[0], &b[1] }, 20000, false, T_READ, 0, 0, 0 };
	struct laneset_msg m;
	uint64_t next[2] = { 1, 1 }, until = clock_mono_ns() + 60000000000ull;
	pthread_t ta, tb;
	unsigned n = 0, bad = 0;

	harness_alarm(90);
	fx_open(&f, 2, 2, SHM_HOLD_HOLD, false);
	pthread_create(&ta, NULL, writer_main, &wa);
	pthread_create(&tb, NULL, writer_main, &wb);
	while ((next[0] <= wa.n || next[1] <= wb.n) && clock_mono_ns() < until && !bad) {
		int r = laneset_next(&rd->set, rd->buf, sizeof(rd->buf), &m);
		struct timespec d;

		if (r == 1) {
			unsigned p = m.publisher == 1 ? 0 : 1;

			bad += m.order != next[p] || !intact(&m);
			next[p] = m.order + 1;
			if (++n % 16 == 0)
				laneset_ack(&rd->set);
			continue;
		}
		bad += r != 0;
		laneset_ack(&rd->set);
		d = deadline_in_ns(100000000);
		bad += laneset_wait(&rd->set, rd->rx_wake, rd->arm, ARM_SLOT, 5000, &d) < 0;
	}
	laneset_ack(&rd->set);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	CU_ASSERT(bad == 0);
	CU_ASSERT(wa.err == 0 && wb.err == 0);
	CU_ASSERT(next[0] == wa.n + 1 && next[1] == wb.n + 1);
	CU_ASSERT(rd->ev_end == 1 && rd->ev_bad == 0);
	fx_close(&f);
}

/* ---- topics not read ---------------------------------------------------------- */

/*
 * A writer of a topic the reader does not read, laps of it: never a
 * message, and the writer is not held (the reader acknowledges over what
 * it skips without being asked).  Then a message is returned and not yet
 * acknowledged: what is skipped after it is acknowledged only with it.
 */
static void test_skip_unread(void)
{
	struct fx f;
	struct rdr *rd = &f.rd;
	struct tlane *l = f.a;
	struct writer wr = { { l, l }, 4000, false, T_OTHER, 0, 0, 0 };
	struct laneset_msg m;
	pthread_t t;
	uint64_t before, order = wr.n + 1;
	unsigned msgs = 0;

	fx_open(&f, 1, 1, SHM_HOLD_HOLD, false);
	pthread_create(&t, NULL, writer_main, &wr);
	WAIT_FOR(({
			 struct timespec d = deadline_in_ns(50000000);

			 msgs += laneset_next(&rd->set, rd->buf, sizeof(rd->buf), &m) != 0;
			 laneset_wait(&rd->set, rd->rx_wake, rd->arm, ARM_SLOT, 0, &d);
			 load_acquire(&wr.done);
		 }),
		 20000);
	pthread_join(t, NULL);
	CU_ASSERT(wr.err == 0 && wr.written == wr.n);
	CU_ASSERT(msgs == 0);
	/* a message returned, not acknowledged */
	CU_ASSERT_FATAL(put(l, order++, T_READ, 64) == 0 && lane_commit(&l->w) == 0);
	WAIT_FOR(laneset_next(&rd->set, rd->buf, sizeof(rd->buf), &m) == 1, 5000);
	CU_ASSERT(m.order == order - 1 && intact(&m));
	before = slot_of(l);
	for (int i = 0; i < 5; i++)
		CU_ASSERT_FATAL(put(l, order++, T_OTHER, 64) == 0);
	CU_ASSERT_FATAL(lane_commit(&l->w) == 0);
	CU_ASSERT(laneset_next(&rd->set, rd->buf, sizeof(rd->buf), &m) == 0);
	CU_ASSERT(slot_of(l) == before);
	laneset_ack(&rd->set);
	CU_ASSERT(slot_of(l) == l->w.p.pos);
	CU_ASSERT(rd->set.skipped == wr.n + 5);
	fx_close(&f);
}

/* Records a spill copied into the RX ring (laneset_floor()) are skipped
 * in the lane as copies, up to the floor and not one past it, and
 * acknowledged over; another publisher's are not touched. */
static void test_floor(void)
{
	struct fx f;
	struct rdr *rd = &f.rd;
	struct laneset_msg m;
	uint64_t order;

	fx_open(&f, 2, 1, SHM_HOLD_HOLD, false);
	for (order = 1; order <= 10; order++)
		CU_ASSERT_FATAL(put(f.a, order, T_READ, 64) == 0 && put(f.b, order, T_READ, 64) == 0);
	CU_ASSERT_FATAL(lane_commit(&f.a->w) == 0 && lane_commit(&f.b->w) == 0);
	/* publisher 1's records up to 6 came through the RX ring (4, then 6) */
	CU_ASSERT(laneset_floor(&rd->set, 1, 4) == 0);
	CU_ASSERT(laneset_floor(&rd->set, 1, 6) == 0);
	CU_ASSERT(laneset_floor(&rd->set, 1, 5) == 0); /* a floor never falls */
	{
		uint64_t next[3] = { 0, 7, 1 };
		unsigned got = 0;

		while (laneset_next(&rd->set, rd->buf, sizeof(rd->buf), &m) == 1) {
			CU_ASSERT_FATAL(m.publisher == 1 || m.publisher == 2);
			CU_ASSERT(m.order == next[m.publisher] && intact(&m));
			next[m.publisher] = m.order + 1;
			got++;
		}
		CU_ASSERT(got == 4 + 10);
		CU_ASSERT(next[1] == 11 && next[2] == 11);
	}
	laneset_ack(&rd->set);
	CU_ASSERT(slot_of(f.a) == f.a->w.p.pos && slot_of(f.b) == f.b->w.p.pos);
	CU_ASSERT(rd->set.skipped == 6);
	fx_close(&f);
}

/*
 * A lane read to its cut and let go, then pushed again as a reattach
 * resends it (from where the broker's hold started, below what was read):
 * the reader reads on from what its slot says it acknowledged, and
 * nothing comes twice.  A broker restarted under a subscriber that read a
 * finished publisher's lane to its end before it reattached sent exactly
 * that.
 */
static void test_push_again(void)
{
	struct fx f;
	struct rdr *rd = &f.rd;
	struct laneset_msg m;
	uint64_t next = 1;

	fx_open(&f, 1, 1, SHM_HOLD_HOLD, false);
	for (uint64_t order = 1; order <= 10; order++)
		CU_ASSERT_FATAL(put(f.a, order, T_READ, 64) == 0);
	CU_ASSERT_FATAL(cut(f.a, 11));
	while (laneset_next(&rd->set, rd->buf, sizeof(rd->buf), &m) == 1) {
		CU_ASSERT(m.order == next && intact(&m));
		next = m.order + 1;
	}
	CU_ASSERT(next == 11 && rd->ev_end == 1);
	laneset_ack(&rd->set);
	/* released once acknowledged: the next look lets it go */
	CU_ASSERT(laneset_next(&rd->set, rd->buf, sizeof(rd->buf), &m) == 0);
	CU_ASSERT(laneset_remove(&rd->set, f.a->no) == -ENOENT);
	CU_ASSERT_FATAL(slot_of(f.a) == f.a->w.p.pos && f.a->start < f.a->w.p.pos);
	/* the push again, from the hold's start */
	CU_ASSERT_FATAL(lane_read_by(f.a, false, true, -1) == 0);
	CU_ASSERT(laneset_next(&rd->set, rd->buf, sizeof(rd->buf), &m) == 0);
	CU_ASSERT(rd->ev_end == 2 && rd->ev_bad == 0);
	CU_ASSERT(slot_of(f.a) == f.a->w.p.pos);
	/* a slot that says nothing sensible (not a record boundary) is not
	 * followed: the push's start counts, as for a reader never told */
	laneset_ack(&rd->set);
	CU_ASSERT(laneset_next(&rd->set, rd->buf, sizeof(rd->buf), &m) == 0);
	store_release(&f.a->pub->cur->slot[f.a->slot], f.a->start + 3);
	CU_ASSERT_FATAL(lane_read_by(f.a, false, true, -1) == 0);
	next = 1;
	while (laneset_next(&rd->set, rd->buf, sizeof(rd->buf), &m) == 1) {
		CU_ASSERT(m.order == next && intact(&m));
		next = m.order + 1;
	}
	CU_ASSERT(next == 11);
	fx_close(&f);
}

/*
 * A lane held again (an unsubscribe's let-go, then a subscribe: the
 * broker's REHOLD push names a new slot and its start) while messages
 * returned from it wait for their acknowledgement: the new slot says what
 * was acknowledged, not what was read, so a crash before the ack brings
 * them again; reading goes on from where it stood; the ack moves the slot.
 */
static void test_rehold_unacked(void)
{
	struct fx f;
	struct rdr *rd = &f.rd;
	struct laneset_msg m;
	struct laneset_desc d;
	uint64_t *slot2;

	fx_open(&f, 1, 1, SHM_HOLD_HOLD, false);
	for (uint64_t order = 1; order <= 10; order++)
		CU_ASSERT_FATAL(put(f.a, order, T_READ, 64) == 0);
	CU_ASSERT_FATAL(lane_commit(&f.a->w) == 0);
	for (int i = 0; i < 5; i++)
		CU_ASSERT_FATAL(laneset_next(&rd->set, rd->buf, sizeof(rd->buf), &m) == 1);
	CU_ASSERT(m.order == 5);
	CU_ASSERT(slot_of(f.a) == f.a->start); /* nothing acknowledged */
	d = (struct laneset_desc){ .lane = f.a->no, .kind = SHM_LANE_LOCAL, .publisher = f.a->pub->id,
				   .start = f.a->start, .cursor_page = 0, .cursor_slot = f.a->slot + 1,
				   .in_place = true };
	slot2 = &f.a->pub->cur->slot[f.a->slot + 1];
	store_release(slot2, f.a->start); /* as the broker writes a new hold's start */
	CU_ASSERT_FATAL(laneset_rehold(&rd->set, &d) == 0);
	CU_ASSERT(load_acquire(slot2) == f.a->start);
	CU_ASSERT_FATAL(laneset_next(&rd->set, rd->buf, sizeof(rd->buf), &m) == 1);
	CU_ASSERT(m.order == 6 && intact(&m));
	laneset_ack(&rd->set);
	CU_ASSERT(load_acquire(slot2) > f.a->start);
	while (laneset_next(&rd->set, rd->buf, sizeof(rd->buf), &m) == 1)
		;
	CU_ASSERT(m.order == 10);
	laneset_ack(&rd->set);
	CU_ASSERT(load_acquire(slot2) == f.a->w.p.pos);
	fx_close(&f);
}

/* ---- drop-oldest ---------------------------------------------------------------- */

/* A drop-oldest reader lapped again and again by a writer nobody holds:
 * orders rise, every message is intact, and what it got plus what it was
 * told it missed is what was written. */
static void test_drop_oldest(void)
{
	struct fx f;
	struct rdr *rd = &f.rd;
	struct tlane *l = f.a;
	struct laneset_msg m;
	uint64_t order = 1, got = 0, missed = 0, last = 0, rng = harness_seed("drop_oldest");

	fx_open(&f, 1, 1, SHM_HOLD_WATCH, true);
	/* one read first: from then on the lane sequence counts what is lost */
	CU_ASSERT_FATAL(put(l, order++, T_READ, 64) == 0 && lane_commit(&l->w) == 0);
	CU_ASSERT_FATAL(laneset_next(&rd->set, rd->buf, sizeof(rd->buf), &m) == 1 && m.order == 1);
	last = got = 1;
	while (order < 100000) {
		unsigned burst = (unsigned)(harness_rand(&rng) % 3000);
		unsigned reads = 1 + (unsigned)(harness_rand(&rng) % 400);

		for (unsigned i = 0; i < burst; i++) {
			CU_ASSERT_FATAL(put(l, order++, T_READ, 64) == 0);
			CU_ASSERT_FATAL(lane_commit(&l->w) == 0);
		}
		for (unsigned i = 0; i < reads && laneset_next(&rd->set, rd->buf, sizeof(rd->buf), &m) == 1;
		     i++) {
			CU_ASSERT_FATAL(m.order > last && m.order - last - 1 == m.missed);
			CU_ASSERT_FATAL(m.data == rd->buf && intact(&m));
			last = m.order;
			got++;
			missed += m.missed;
			laneset_ack(&rd->set);
		}
	}
	while (laneset_next(&rd->set, rd->buf, sizeof(rd->buf), &m) == 1) {
		CU_ASSERT_FATAL(m.order - last - 1 == m.missed);
		last = m.order;
		got++;
		missed += m.missed;
	}
	CU_ASSERT(last == order - 1);
	CU_ASSERT(got + missed == order - 1);
	CU_ASSERT(missed > 0 && got > 10000);
	CU_ASSERT(rd->ev_bad == 0);
	fx_close(&f);
}

/* ---- bad lanes ---------------------------------------------------------------------- */

/* Read everything there is now; counts per publisher (1 or 2). */
static void drain(struct rdr *rd, uint64_t next[2], unsigned *bad)
{
	struct laneset_msg m;
	int r;

	while ((r = laneset_next(&rd->set, rd->buf, sizeof(rd->buf), &m)) == 1) {
		unsigned p = m.publisher == 1 ? 0 : 1;

		*bad += m.order != next[p] || !intact(&m);
		next[p] = m.order + 1;
		laneset_ack(&rd->set);
	}
	*bad += r != 0;
}

/* A writer puts a record of a topic its lane may not carry: that lane is
 * reported bad once and dropped, the other publisher's lane reads on. */
static void test_bad_record(void)
{
	struct fx f;
	struct rdr *rd = &f.rd;
	struct tlane *a = f.a, *b = f.b;
	uint64_t next[2] = { 1, 1 };
	unsigned bad = 0;

	fx_open(&f, 2, 1, SHM_HOLD_HOLD, false);
	for (uint64_t o = 1; o <= 10; o++)
		CU_ASSERT_FATAL(put(a, o, o == 6 ? T_BAD : T_READ, 64) == 0);
	CU_ASSERT_FATAL(lane_commit(&a->w) == 0);
	for (uint64_t o = 1; o <= 100; o++)
		CU_ASSERT_FATAL(put(b, o, T_READ, 64) == 0 && lane_commit(&b->w) == 0);
	drain(rd, next, &bad);
	for (uint64_t o = 101; o <= 200; o++)
		CU_ASSERT_FATAL(put(b, o, T_READ, 64) == 0 && lane_commit(&b->w) == 0);
	drain(rd, next, &bad);
	CU_ASSERT(bad == 0);
	CU_ASSERT(next[0] == 6 && next[1] == 201);
	CU_ASSERT(rd->ev_bad == 1 && rd->bad_pub == 1 && rd->bad_lane == 10);
	CU_ASSERT(laneset_remove(&rd->set, 10) == -ENOENT); /* released once acknowledged */
	fx_close(&f);
}

/* A writer cuts its data file under the reader's mapping: the SIGBUS
 * guard covers the fault, the lane is reported bad, the other reads on. */
static void test_truncated(void)
{
	struct fx f;
	struct rdr *rd = &f.rd;
	struct tlane *a = f.a, *b = f.b;
	uint64_t next[2] = { 1, 1 };
	unsigned bad = 0;

	fx_open(&f, 2, 1, SHM_HOLD_HOLD, false);
	for (uint64_t o = 1; o <= 10; o++) {
		CU_ASSERT_FATAL(put(a, o, T_READ, 64) == 0 && lane_commit(&a->w) == 0);
		CU_ASSERT_FATAL(put(b, o, T_READ, 64) == 0 && lane_commit(&b->w) == 0);
	}
	drain(rd, next, &bad);
	CU_ASSERT(next[0] == 11 && next[1] == 11);
	for (uint64_t o = 11; o <= 20; o++) {
		CU_ASSERT_FATAL(put(a, o, T_READ, 64) == 0 && lane_commit(&a->w) == 0);
		CU_ASSERT_FATAL(put(b, o, T_READ, 64) == 0 && lane_commit(&b->w) == 0);
	}
	/* the writer's own mapping goes first: it would fault too */
	munmap(a->data, SHM_LANE_RING_OFFSET + RING);
	a->data = NULL;
	if (ftruncate(a->data_fd, 0) < 0) {
		HARNESS_SKIP("ftruncate of a memfd refused here");
	} else {
		drain(rd, next, &bad);
		CU_ASSERT(bad == 0);
		CU_ASSERT(next[0] == 11 && next[1] == 21);
		CU_ASSERT(rd->ev_bad == 1 && rd->bad_pub == 1 && rd->bad_lane == 10);
		CU_ASSERT(laneset_remove(&rd->set, 10) == -ENOENT);
	}
	fx_close(&f);
}

/* ---- sleeping and waking -------------------------------------------------------------- */

struct waiter {
	struct rdr *rd;
	uint64_t deadline_ns;
	int ret;
	uint64_t took;
	uint32_t done;
};

static void *waiter_main(void *arg)
{
	struct waiter *w = arg;
	struct timespec d = deadline_in_ns(w->deadline_ns);
	uint64_t t0 = clock_mono_ns();

	w->ret = laneset_wait(&w->rd->set, w->rd->rx_wake, w->rd->arm, ARM_SLOT, 0, &d);
	w->took = clock_mono_ns() - t0;
	store_release(&w->done, 1);
	return NULL;
}

static bool armed(const struct rdr *rd)
{
	return load_acquire(&rd->arm->bits[ARM_SLOT / 64]) & (1ull << (ARM_SLOT % 64));
}

/* The reader asleep in laneset_wait() is woken by a commit, long before
 * its deadline; with nothing written it returns 0 at its deadline. */
static void test_wait(void)
{
	struct fx f;
	struct rdr *rd = &f.rd;
	struct tlane *l = f.a;
	struct laneset_msg m;
	struct waiter w = { .rd = rd, .deadline_ns = 20000000000ull };
	struct timespec d;
	uint64_t t0;
	pthread_t t;

	fx_open(&f, 1, 1, SHM_HOLD_HOLD, false);
	/* nothing: the deadline */
	t0 = clock_mono_ns();
	d = deadline_in_ns(50000000);
	CU_ASSERT(laneset_wait(&rd->set, rd->rx_wake, rd->arm, ARM_SLOT, 100000, &d) == 0);
	CU_ASSERT(clock_mono_ns() - t0 >= 50000000);
	CU_ASSERT(!armed(rd));
	/* asleep, then a commit */
	pthread_create(&t, NULL, waiter_main, &w);
	WAIT_FOR(armed(rd), 5000);
	CU_ASSERT_FATAL(put(l, 1, T_READ, 64) == 0 && lane_commit(&l->w) == 0);
	WAIT_FOR(load_acquire(&w.done), 5000);
	pthread_join(t, NULL);
	CU_ASSERT(w.ret == 1 && w.took < 10000000000ull);
	CU_ASSERT(l->w.wakes == 1);
	CU_ASSERT(!armed(rd));
	CU_ASSERT(laneset_next(&rd->set, rd->buf, sizeof(rd->buf), &m) == 1 && m.order == 1);
	CU_ASSERT(laneset_wait(&rd->set, rd->rx_wake, rd->arm, ARM_SLOT, 0, &(struct timespec){ 0, 0 }) ==
		  0);
	fx_close(&f);
}

struct noisy {
	uint32_t *word;
	uint32_t stop;
};

static void *noisy_main(void *arg)
{
	struct noisy *n = arg;

	while (!load_acquire(&n->stop)) {
		fetch_add_release(n->word, 1);
		futex_wake(n->word, 1);
		sched_yield();
	}
	return NULL;
}

/* A peer that keeps changing rx_wake: after 16 wake-ups without data the
 * reader looks every ms instead, and still finds a message written then. */
static void test_wait_noisy(void)
{
	struct fx f;
	struct rdr *rd = &f.rd;
	struct tlane *l = f.a;
	struct waiter w = { .rd = rd, .deadline_ns = 20000000000ull };
	struct noisy n = { .word = NULL };
	pthread_t t, tn;

	fx_open(&f, 1, 1, SHM_HOLD_HOLD, false);
	n.word = rd->rx_wake;
	pthread_create(&tn, NULL, noisy_main, &n);
	pthread_create(&t, NULL, waiter_main, &w);
	WAIT_FOR(load_relaxed(&rd->set.noisy_steps) > 2, 5000);
	CU_ASSERT(load_relaxed(&rd->set.wait_returns) >= 16);
	CU_ASSERT(!load_acquire(&w.done));
	CU_ASSERT_FATAL(put(l, 1, T_READ, 64) == 0 && lane_commit(&l->w) == 0);
	WAIT_FOR(load_acquire(&w.done), 5000);
	pthread_join(t, NULL);
	store_release(&n.stop, 1);
	pthread_join(tn, NULL);
	CU_ASSERT(w.ret == 1);
	fx_close(&f);
}

/* A writer that took the reader for a noisy one skips a wake (a reader
 * that acknowledges rarely shows it no progress): with a record returned
 * and not acknowledged, the reader looks every ms by itself and finds a
 * commit nobody woke it for at once, not a second later. */
static void test_wait_unacked(void)
{
	struct fx f;
	struct rdr *rd = &f.rd;
	struct tlane *l = f.a;
	struct laneset_msg m;
	struct waiter w = { .rd = rd, .deadline_ns = 20000000000ull };
	pthread_t t;

	fx_open(&f, 1, 1, SHM_HOLD_HOLD, false);
	CU_ASSERT_FATAL(put(l, 1, T_READ, 64) == 0 && lane_commit(&l->w) == 0);
	CU_ASSERT_FATAL(laneset_next(&rd->set, rd->buf, sizeof(rd->buf), &m) == 1);
	pthread_create(&t, NULL, waiter_main, &w);
	WAIT_FOR(armed(rd), 5000);
	/* the writer backed off: it sees no arm bit, wakes nobody */
	lane_disarm(rd->arm, ARM_SLOT);
	CU_ASSERT_FATAL(put(l, 2, T_READ, 64) == 0 && lane_commit(&l->w) == 0);
	CU_ASSERT(l->w.wakes == 0);
	WAIT_FOR(load_acquire(&w.done), 5000);
	pthread_join(t, NULL);
	printf("\n  found after %.1f ms, %llu short sleeps\n", (double)w.took / 1e6,
	       (unsigned long long)load_relaxed(&rd->set.unacked_steps));
	CU_ASSERT(w.ret == 1);
	/* a 1 s sleep would take 1000 ms; a loaded machine may stretch 1 ms */
	CU_ASSERT(w.took < 300000000ull);
	CU_ASSERT(load_relaxed(&rd->set.unacked_steps) >= 1);
	fx_close(&f);
}

struct spacer {
	struct tlane *l;
	int ret;
	uint32_t done;
};

static void *spacer_main(void *arg)
{
	struct spacer *s = arg;
	struct timespec d = deadline_in_ns(20000000000ull);

	s->ret = lane_wait_space(&s->l->w, 256, s->l->tx_wake, &d, NULL, NULL);
	store_release(&s->done, 1);
	return NULL;
}

/* Fill the lane, then a writer thread waits for space (space_arm set);
 * read `n` records of 256 bytes without acknowledging them. */
static void fill_and_wait(struct rdr *rd, struct tlane *l, struct spacer *s, pthread_t *t,
			  unsigned n)
{
	const struct shm_lane_wpage *wp = (const void *)l->data;
	struct laneset_msg m;
	uint64_t order = 1;

	while (put(l, order, T_READ, 256) == 0)
		order++;
	CU_ASSERT_FATAL(lane_commit(&l->w) == 0);
	pthread_create(t, NULL, spacer_main, s);
	WAIT_FOR(load_acquire(&wp->space_arm) != 0, 5000);
	for (unsigned i = 0; i < n; i++) {
		CU_ASSERT_FATAL(laneset_next(&rd->set, rd->buf, sizeof(rd->buf), &m) == 1);
		CU_ASSERT(m.order == i + 1);
	}
}

/* A writer waiting for space is woken by laneset_ack(), not before. */
static void test_space_wait(void)
{
	struct fx f;
	struct rdr *rd = &f.rd;
	struct tlane *l = f.a;
	struct spacer s = { .l = l };
	pthread_t t;

	fx_open(&f, 1, 1, SHM_HOLD_HOLD, false);
	fill_and_wait(rd, l, &s, &t, RING / 4 / 296 + 1);
	/* returned, not acknowledged: no room yet */
	CU_ASSERT(!load_acquire(&s.done));
	laneset_ack(&rd->set);
	WAIT_FOR(load_acquire(&s.done), 5000);
	pthread_join(t, NULL);
	CU_ASSERT(s.ret == 0);
	fx_close(&f);
}

/* The cursor page and the writer's tx_wake come after the lane: what was
 * acknowledged before is stored when the page is mapped, and the writer
 * waiting for that room is woken when its tx_wake arrives. */
static void test_late_pages(void)
{
	struct rdr rd;
	struct tpub A = { .id = 1 };
	struct tlane l;
	struct spacer s = { .l = &l };
	unsigned n = RING / 4 / 296 + 1;
	uint32_t v;
	pthread_t t;

	rdr_open(&rd);
	A.cur_fd = memfd("cursor", 4096, (void **)&A.cur);
	lane_open(&l, &rd, &A, 1, 0, SHM_HOLD_HOLD);
	CU_ASSERT_FATAL(lane_read_by(&l, false, true, -1) == 0);
	fill_and_wait(&rd, &l, &s, &t, n);
	laneset_ack(&rd.set);
	CU_ASSERT(slot_of(&l) == 0); /* not mapped by the reader yet */
	CU_ASSERT_FATAL(laneset_cursor_page(&rd.set, A.id, 0, A.cur_fd) == 0);
	CU_ASSERT(slot_of(&l) == l.start + n * 296);
	CU_ASSERT(laneset_cursor_page(&rd.set, A.id, 0, A.cur_fd) == -EEXIST);
	v = load_acquire(l.tx_wake);
	CU_ASSERT(laneset_set_tx_wake(&rd.set, 1, l.tx_fd) == 0);
	CU_ASSERT(load_acquire(l.tx_wake) == v + 1);
	CU_ASSERT(laneset_set_tx_wake(&rd.set, 1, l.tx_fd) == -EEXIST);
	CU_ASSERT(laneset_set_tx_wake(&rd.set, 99, l.tx_fd) == -ENOENT);
	WAIT_FOR(load_acquire(&s.done), 5000);
	pthread_join(t, NULL);
	CU_ASSERT(s.ret == 0);
	rdr_close(&rd);
	lane_close(&l);
	pub_close(&A);
}

/* ---- refused ---------------------------------------------------------------------------- */

/* Rewrite meta's header: f changes it, crc says whether the checksum is
 * made again to match. */
static void meta_edit(struct tlane *l, void (*f)(struct shm_lane_meta_hdr *), bool crc)
{
	struct shm_lane_meta_hdr h;

	meta_header(l, &h);
	if (f)
		f(&h);
	if (crc)
		h.checksum = crc32c(0, &h, offsetof(struct shm_lane_meta_hdr, checksum));
	memcpy(l->meta, &h, sizeof(h));
}

static void e_magic(struct shm_lane_meta_hdr *h) { h->magic ^= 1; }
static void e_version(struct shm_lane_meta_hdr *h) { h->layout_version = 99; }
static void e_order(struct shm_lane_meta_hdr *h) { h->first_order = 77; }
static void e_ring(struct shm_lane_meta_hdr *h) { h->ring_size = 3 * 4096; }
static void e_pub(struct shm_lane_meta_hdr *h) { h->publisher = 99; }
static void e_kind(struct shm_lane_meta_hdr *h) { h->kind = SHM_LANE_RECEIVED; }

/* Refused with err and a reason, nothing kept. */
static void refused(struct rdr *rd, struct tlane *l, int err)
{
	rd->set.why[0] = '\0';
	CU_ASSERT(lane_read_by(l, false, true, l->tx_fd) == err);
	CU_ASSERT(rd->set.why[0] != '\0');
	CU_ASSERT(rd->set.npub == 0);
}

/* What laneset_add() refuses, each with its errno; then the lane as made. */
static void test_refused(void)
{
	struct rdr rd;
	struct tpub A = { .id = 1 };
	struct tlane l;

	rdr_open(&rd);
	A.cur_fd = memfd("cursor", 4096, (void **)&A.cur);
	lane_open(&l, &rd, &A, 1, 0, SHM_HOLD_HOLD);
	meta_edit(&l, e_order, false);
	refused(&rd, &l, -EILSEQ);
	meta_edit(&l, e_magic, true);
	refused(&rd, &l, -EBADMSG);
	meta_edit(&l, e_version, true);
	refused(&rd, &l, -EPROTONOSUPPORT);
	meta_edit(&l, e_ring, true);
	refused(&rd, &l, -EINVAL);
	meta_edit(&l, e_pub, true);
	refused(&rd, &l, -EINVAL);
	meta_edit(&l, e_kind, true);
	refused(&rd, &l, -EINVAL);
	meta_edit(&l, NULL, true);
	CU_ASSERT_FATAL(ftruncate(l.data_fd, SHM_LANE_RING_OFFSET + RING / 2) == 0);
	refused(&rd, &l, -EMSGSIZE);
	CU_ASSERT_FATAL(ftruncate(l.data_fd, SHM_LANE_RING_OFFSET + RING) == 0);
	CU_ASSERT_FATAL(ftruncate(l.meta_fd, SHM_LANE_META_SIZE + 4096) == 0);
	refused(&rd, &l, -EMSGSIZE);
	CU_ASSERT_FATAL(ftruncate(l.meta_fd, SHM_LANE_META_SIZE) == 0);
	CU_ASSERT_FATAL(ftruncate(l.tx_fd, 8192) == 0);
	refused(&rd, &l, -EMSGSIZE);
	CU_ASSERT_FATAL(ftruncate(l.tx_fd, 4096) == 0);
	l.slot = SHM_CURSOR_SLOTS;
	refused(&rd, &l, -EINVAL);
	l.slot = 0;
	l.start = 4;
	refused(&rd, &l, -EINVAL);
	l.start = 0;
	/* as made: taken once, its number and its slot never twice */
	CU_ASSERT(lane_read_by(&l, false, true, l.tx_fd) == 0);
	CU_ASSERT(lane_read_by(&l, false, true, l.tx_fd) == -EEXIST);
	l.no = 2;
	CU_ASSERT(lane_read_by(&l, false, true, l.tx_fd) == -EEXIST);
	CU_ASSERT(laneset_cursor_page(&rd.set, A.id, 0, l.tx_fd + 1000) < 0);
	CU_ASSERT(laneset_cursor_page(&rd.set, A.id, 0, l.hold_fd) == -EMSGSIZE);
	CU_ASSERT(laneset_topic(&rd.set, SHM_LANE_TOPIC_BITS, true) == -EINVAL);
	CU_ASSERT(laneset_remove(&rd.set, 1) == 0);
	CU_ASSERT(laneset_remove(&rd.set, 1) == -ENOENT);
	CU_ASSERT(rd.set.npub == 0);
	rdr_close(&rd);
	lane_close(&l);
	pub_close(&A);
}

static const struct harness_test laneset_tests[] = {
	{ "merge_fair", test_merge_fair },
	{ "merge_live", test_merge_live },
	{ "skip_unread", test_skip_unread },
	{ "floor", test_floor },
	{ "push_again", test_push_again },
	{ "rehold_unacked", test_rehold_unacked },
	{ "drop_oldest", test_drop_oldest },
	{ "bad_record", test_bad_record },
	{ "truncated", test_truncated },
	{ "wait", test_wait },
	{ "wait_noisy", test_wait_noisy },
	{ "wait_unacked", test_wait_unacked },
	{ "space_wait", test_space_wait },
	{ "late_pages", test_late_pages },
	{ "refused", test_refused },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "lanes", laneset_tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	return harness_main("test-laneset", suites, argc, argv);
}
