/*
 * tests/unit/test-lane-rw.c - a lane's writer and reader and its hold
 * table (shm/lane-rw.c, shm/hold.c; docs/design/data-path.md, sections
 * 2-4): records in order through many laps, a writer held by its
 * holders and by nothing else, hostile cursor slots, new holders joining
 * a running writer (the floor protocol) in another process, a held
 * position moved, drop-oldest readers counting what they lost, cuts, bad
 * lanes, and the wake-ups both ways.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "lane-fx.h"
#include "shm/atomics.h"
#include "shm/clock.h"
#include "shm/futex.h"
#include "shm/lane-rw.h"

/* ---- one process: order, laps, a writer held ------------------------------------ */

/* Messages of varied sizes through 40 laps, one reader holding: every one
 * arrives in order and intact, the writer is held while the reader is
 * behind and never otherwise. */
static void test_laps(void)
{
	struct fx f;
	struct lane_writer w;
	struct lane_reader r;
	struct lane_rec m;
	uint64_t next_w = 1, next_r = 1, rng = 7, eagain = 0;
	unsigned idx;

	fx_open(&f);
	writer_open(&f, &w);
	reader_open(&f, &r, 0, false, holder_add(&f, SHM_HOLD_HOLD, 0, &idx));
	while (next_r < 20000) {
		/* write until held, in batches of 1 to 8 */
		for (;;) {
			unsigned k = 1 + (unsigned)(harness_rand(&rng) % 8), j;
			int ret = 0;

			for (j = 0; j < k && (ret = put(&w, next_w, 8 * (uint32_t)(harness_rand(&rng) % 200))) == 0; j++)
				next_w++;
			CU_ASSERT_FATAL(lane_commit(&w) == 0);
			if (ret == -EAGAIN) {
				eagain++;
				break;
			}
			CU_ASSERT_FATAL(ret == 0);
		}
		/* the writer never passed the reader: all of it is there */
		while (lane_read(&r, NULL, 0, &m) == LANE_REC) {
			CU_ASSERT_FATAL(m.order == next_r);
			CU_ASSERT_FATAL(intact(&m));
			next_r++;
			lane_ack(&r, m.end);
		}
		CU_ASSERT_FATAL(next_r == next_w);
	}
	CU_ASSERT(eagain > 40);
	CU_ASSERT(w.wp->short_since != 0);
	lane_writer_free(&w);
	fx_close(&f);
}

/* No holder: the writer laps as it likes (drop-oldest readers only). */
static void test_no_holder(void)
{
	struct fx f;
	struct lane_writer w;

	fx_open(&f);
	writer_open(&f, &w);
	for (uint64_t i = 1; i < 20000; i++) {
		CU_ASSERT_FATAL(put(&w, i, 64) == 0);
		CU_ASSERT_FATAL(lane_commit(&w) == 0);
	}
	CU_ASSERT(w.p.pos > 10 * RING);
	lane_writer_free(&w);
	fx_close(&f);
}

/* A reader's slot past what was committed, backwards, or misaligned
 * counts as no progress; an honest one frees again.  Its floor holds
 * whatever the slot says. */
static void test_hostile_slot(void)
{
	struct fx f;
	struct lane_writer w;
	uint64_t order = 1, held_at, *slot;
	unsigned idx;
	const uint64_t lies[] = { UINT64_MAX - 7, 1ull << 40, 3, 0, 12345 };

	fx_open(&f);
	writer_open(&f, &w);
	holder_add(&f, SHM_HOLD_HOLD, 0, &idx);
	slot = &f.cur[0].slot[0];
	while (put(&w, order, 256) == 0)
		order++;
	CU_ASSERT_FATAL(lane_commit(&w) == 0);
	held_at = w.p.pos;
	for (unsigned i = 0; i < sizeof(lies) / sizeof(lies[0]); i++) {
		store_release(slot, lies[i]);
		CU_ASSERT(put(&w, order, 256) == -EAGAIN);
		CU_ASSERT(w.R == 0);
	}
	/* honest: half the ring read */
	store_release(slot, held_at / 2 / 8 * 8);
	CU_ASSERT(put(&w, order, 256) == 0);
	CU_ASSERT(w.R > 0 && w.R <= held_at / 2);
	/* and backwards again: no progress lost, none gained */
	store_release(slot, 8);
	lane_abort(&w);
	while (put(&w, order, 256) == 0)
		order++;
	CU_ASSERT(w.R <= held_at / 2 && w.p.rsv <= w.R + RING);
	lane_writer_free(&w);
	fx_close(&f);
}

/* A floor above the slot holds; a floor raised frees up to it. */
static void test_floor_holds(void)
{
	struct fx f;
	struct lane_writer w;
	uint64_t order = 1;
	unsigned idx;

	fx_open(&f);
	writer_open(&f, &w);
	holder_add(&f, SHM_HOLD_SPILL, 0, &idx);
	while (put(&w, order, 256) == 0)
		order++;
	CU_ASSERT_FATAL(lane_commit(&w) == 0);
	CU_ASSERT(w.R == 0);
	/* the broker copied half: a SPILL floor is its cursor */
	{
		struct lane_reader r;
		struct lane_rec m;
		uint64_t half = 0;

		reader_open(&f, &r, 1, false, 0);
		while (lane_read(&r, NULL, 0, &m) == LANE_REC && m.end < w.p.pos / 2)
			half = m.end;
		hold_raise(&f.ht, idx, half);
		CU_ASSERT(put(&w, order, 256) == 0);
		CU_ASSERT(w.R > 0 && w.R <= half);
	}
	/* freed: nothing holds the writer */
	hold_free(&f.ht, idx);
	for (int i = 0; i < 1000; i++) {
		CU_ASSERT_FATAL(put(&w, ++order, 256) == 0);
		CU_ASSERT_FATAL(lane_commit(&w) == 0);
	}
	lane_writer_free(&w);
	fx_close(&f);
}

/* ---- two processes: holders join and leave a running writer -------------------- */

struct run {
	uint32_t stop;
	uint64_t written;
};

/* The writer, in a child: consecutive orders as fast as its holders let
 * it, waiting for space on tx_wake. */
static void writer_child(struct fx *f, struct run *run)
{
	struct lane_writer w;
	struct lane_pages pages = { pg_cursor, pg_arm, pg_wake, f };
	uint64_t order = 1, rng = 99;

	if (lane_writer_init(&w, f->data, RING, f->hold, &pages, false, 0, 0, 0))
		_exit(2);
	while (!load_acquire(&run->stop)) {
		uint32_t len = 8 * (uint32_t)(harness_rand(&rng) % 64);
		int r = put(&w, order, len);

		if (r == -EAGAIN) {
			struct timespec d = deadline_in_ns(20000000);

			lane_commit(&w);
			r = lane_wait_space(&w, len, f->tx_wake, &d, NULL, NULL);
			if (r == -ETIMEDOUT)
				continue;
			r = put(&w, order, len);
		}
		if (r < 0)
			_exit(3);
		order++;
		if (order % 4 == 0 && lane_commit(&w) < 0)
			_exit(4);
		store_release(&run->written, order - 1);
	}
	lane_commit(&w);
	_exit(0);
}

/*
 * The floor protocol against a live writer in another process: 1000
 * holders join at the committed end while it writes, each reads 200
 * records and must find every one intact, with consecutive orders (the
 * writer never overwrote a record below a holder's start, nor one it had
 * not acknowledged), then leaves.  Two readers overlap at any time.
 */
static void test_joiners(void)
{
	struct fx f;
	struct run *run = fx_shared(sizeof(*run));
	struct lane_reader r[2];
	unsigned idx[2];
	uint64_t next[2] = { 0, 0 }, got[2] = { 0, 0 }, joined = 0, bad = 0;
	uint64_t last_rec = clock_mono_ns();
	pid_t pid;
	int st;

	harness_alarm(60);
	fx_open(&f);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		/* a test killed by its alarm leaves no writer behind */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		writer_child(&f, run);
	}
	for (unsigned k = 0; k < 2; k++) {
		reader_open(&f, &r[k], k, false, holder_add(&f, SHM_HOLD_HOLD, k, &idx[k]));
		joined++;
	}
	while (joined < 1000 && !bad) {
		/* a reader stranded on an overwritten position sees "nothing
		 * yet" for good: no record for 5 s is a failure, not a hang */
		if (clock_mono_ns() - last_rec > 5000000000ull) {
			bad++;
			break;
		}
		for (unsigned k = 0; k < 2; k++) {
			struct lane_rec m;
			int ret = lane_read(&r[k], NULL, 0, &m);

			if (ret < 0) {
				bad++;
				break;
			}
			if (ret != LANE_REC)
				continue;
			last_rec = clock_mono_ns();
			if ((next[k] && m.order != next[k]) || !intact(&m))
				bad++;
			next[k] = m.order + 1;
			lane_ack(&r[k], m.end);
			if (++got[k] < 200)
				continue;
			/* leave, and a new holder joins on the same slot */
			hold_free(&f.ht, idx[k]);
			reader_open(&f, &r[k], k, false, holder_add(&f, SHM_HOLD_HOLD, k, &idx[k]));
			next[k] = 0;
			got[k] = 0;
			joined++;
		}
	}
	store_release(&run->stop, 1);
	hold_free(&f.ht, idx[0]);
	hold_free(&f.ht, idx[1]);
	futex_wake(f.tx_wake, 1);
	CU_ASSERT(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CU_ASSERT(bad == 0);
	CU_ASSERT(joined == 1000);
	CU_ASSERT(load_acquire(&run->written) > 1000 * 200 / 2);
	munmap(run, sizeof(*run));
	fx_close(&f);
}

/* A held position moved to a new entry (a spill, an owner switch): the
 * start is the last record boundary at or below the old slot, even when
 * the slot points inside a record. */
static void test_takeover(void)
{
	struct fx f;
	struct lane_writer w;
	struct lane_reader r;
	struct lane_rec m, third;
	const struct shm_lane_wpage *wp;
	uint64_t start;
	unsigned idx, idx2;
	struct hold_view v = { .kind = SHM_HOLD_SPILL };

	fx_open(&f);
	wp = (const void *)f.data;
	writer_open(&f, &w);
	holder_add(&f, SHM_HOLD_HOLD, 0, &idx);
	for (uint64_t i = 1; i <= 10; i++)
		CU_ASSERT_FATAL(put(&w, i, 100 * 8) == 0);
	CU_ASSERT_FATAL(lane_commit(&w) == 0);
	reader_open(&f, &r, 1, false, 0);
	for (int i = 0; i < 3; i++)
		CU_ASSERT_FATAL(lane_read(&r, NULL, 0, &m) == LANE_REC);
	third = m;
	/* the slot says: inside the fourth record */
	store_release(&f.cur[0].slot[0], third.end + 48);
	idx2 = (unsigned)hold_add(&f.ht, &v, hold_floor(&f.ht, idx));
	CU_ASSERT(hold_takeover(&f.ht, idx, idx2, wp, &f.ring, &f.cur[0].slot[0], &start) == 0);
	CU_ASSERT(start == third.end);
	CU_ASSERT(hold_floor(&f.ht, idx2) == third.end);
	/* exactly at a boundary */
	store_release(&f.cur[0].slot[0], third.end);
	CU_ASSERT(hold_takeover(&f.ht, idx, idx2, wp, &f.ring, &f.cur[0].slot[0], &start) == 0);
	CU_ASSERT(start == third.end);
	/* past the end: the committed end */
	store_release(&f.cur[0].slot[0], UINT64_MAX - 7);
	CU_ASSERT(hold_takeover(&f.ht, idx, idx2, wp, &f.ring, &f.cur[0].slot[0], &start) == 0);
	CU_ASSERT(start == w.p.pos);
	lane_writer_free(&w);
	fx_close(&f);
}

/* ---- drop-oldest readers, cuts, bad lanes ------------------------------------------ */

/* A WATCH reader that falls behind a writer held by nobody: every record
 * it returns is intact and in order, and what it got plus what it was
 * told it missed is what was written (counted by lane sequence). */
static void test_drop_oldest(void)
{
	struct fx f;
	struct lane_writer w;
	struct lane_reader r;
	struct lane_rec m;
	uint64_t buf[64], order = 1, got = 0, missed = 0, last = 0, rng = 3;
	unsigned idx;

	fx_open(&f);
	writer_open(&f, &w);
	reader_open(&f, &r, 0, true, holder_add(&f, SHM_HOLD_WATCH, 0, &idx));
	while (order < 200000) {
		/* the writer runs ahead by up to three laps between reads */
		unsigned burst = (unsigned)(harness_rand(&rng) % 3000);

		for (unsigned i = 0; i < burst; i++) {
			CU_ASSERT_FATAL(put(&w, order++, 64) == 0);
			CU_ASSERT_FATAL(lane_commit(&w) == 0);
		}
		unsigned reads = 1 + (unsigned)(harness_rand(&rng) % 400);

		for (unsigned i = 0; i < reads; i++) {
			int ret = lane_peek(&r, buf, sizeof(buf), &m);
			struct lane_rec m2;

			CU_ASSERT_FATAL(ret >= 0);
			if (ret != LANE_REC)
				break;
			/* a second look (a merge does) loses no count */
			if (i % 3 == 0 && lane_peek(&r, buf, sizeof(buf), &m2) == LANE_REC &&
			    m2.order == m.order)
				CU_ASSERT_FATAL(m2.missed == m.missed);
			lane_consume(&r, &m);
			CU_ASSERT_FATAL(m.order > last);
			CU_ASSERT_FATAL(intact(&m));
			CU_ASSERT_FATAL(m.order - last - 1 == m.missed);
			last = m.order;
			got++;
			missed += m.missed;
			lane_ack(&r, m.end);
		}
	}
	while (lane_read(&r, buf, sizeof(buf), &m) == LANE_REC) {
		CU_ASSERT_FATAL(m.order - last - 1 == m.missed);
		last = m.order;
		got++;
		missed += m.missed;
	}
	CU_ASSERT(last == order - 1);
	CU_ASSERT(got + missed == order - 1);
	CU_ASSERT(missed > 0 && got > 10000);
	lane_writer_free(&w);
	fx_close(&f);
}

/* A cut lane ends at its recorded cut and nowhere else; a fence in an
 * open lane (a switch not finished) is "nothing yet". */
static void test_cut(void)
{
	struct fx f;
	struct lane_writer w;
	struct lane_reader r, rc;
	struct lane_rec m;
	struct shm_lane_meta_state *st;
	unsigned idx;

	fx_open(&f);
	st = (void *)(f.meta + SHM_LANE_META_STATE_OFF);
	writer_open(&f, &w);
	reader_open(&f, &r, 0, false, holder_add(&f, SHM_HOLD_HOLD, 0, &idx));
	for (uint64_t i = 1; i <= 5; i++)
		CU_ASSERT_FATAL(put(&w, i, 64) == 0);
	CU_ASSERT_FATAL(lane_commit(&w) == 0);
	/* the broker fences at the end: the writer's next commit fails */
	ring_cons_init(&rc.c, &f.ring, NULL, NULL, w.p.pos, RING_SEQ_ANY, 1, 1);
	CU_ASSERT_FATAL(ring_fence(&rc.c) == 0);
	CU_ASSERT(put(&w, 6, 64) == 0);
	CU_ASSERT(lane_commit(&w) == -ESTALE);
	for (int i = 0; i < 5; i++)
		CU_ASSERT(lane_read(&r, NULL, 0, &m) == LANE_REC);
	/* the fence, lane still OPEN: nothing yet, however often asked */
	CU_ASSERT(lane_read(&r, NULL, 0, &m) == LANE_NONE);
	CU_ASSERT(lane_read(&r, NULL, 0, &m) == LANE_NONE);
	/* a cut recorded elsewhere than where the reader is: not its end
	 * (the fence below it is the old owner's: a bad lane) */
	st->cut_pos = w.p.pos + 64;
	store_release(&st->state, SHM_LANE_CUT);
	{
		struct lane_reader r2 = r;

		CU_ASSERT(lane_read(&r2, NULL, 0, &m) == -EBADMSG);
	}
	st->cut_pos = w.p.pos;
	CU_ASSERT(lane_read(&r, NULL, 0, &m) == LANE_END);
	lane_writer_free(&w);
	fx_close(&f);
}

/* What a hostile writer can put in its lane: each makes the lane bad for
 * its reader, which then never reads it again. */
static void test_bad_lane(void)
{
	for (int kind = 0; kind < 4; kind++) {
		struct fx f;
		struct lane_writer w;
		struct lane_reader r;
		struct lane_rec m;
		struct shm_lane_msg *lm;
		void *pl;
		unsigned idx;

		fx_open(&f);
		writer_open(&f, &w);
		reader_open(&f, &r, 0, false, holder_add(&f, SHM_HOLD_HOLD, 0, &idx));
		CU_ASSERT_FATAL(put(&w, 10, 64) == 0);
		CU_ASSERT_FATAL(lane_reserve(&w, TOPIC, 11, NULL, 64, &pl) == 0);
		lm = (struct shm_lane_msg *)pl - 1;
		if (kind == 0)
			lm->topic_id = TOPIC + 1;      /* not in the lane's bitmap */
		else if (kind == 1)
			lm->order = 10;                /* not above the last */
		else if (kind == 2)
			lm->flags = 1;
		else
			lm->topic_id = SHM_LANE_TOPIC_BITS; /* out of range */
		CU_ASSERT_FATAL(lane_commit(&w) == 0);
		CU_ASSERT(lane_read(&r, NULL, 0, &m) == LANE_REC);
		CU_ASSERT(lane_read(&r, NULL, 0, &m) == -EBADMSG);
		CU_ASSERT(put(&w, 12, 64) == 0 && lane_commit(&w) == 0);
		CU_ASSERT(lane_read(&r, NULL, 0, &m) == -EBADMSG);
		lane_writer_free(&w);
		fx_close(&f);
	}
}

/* ---- wake-ups ---------------------------------------------------------------------- */

struct sleeper {
	struct fx *f;
	unsigned rd;
	uint32_t armed;    /* the reader armed and looked: it is about to sleep */
	uint32_t woke;
	uint64_t got;
};

/* A reader that sleeps for one record: read v, arm, fence, look, wait. */
static void *sleeper_main(void *arg)
{
	struct sleeper *s = arg;
	struct lane_reader r;
	struct lane_rec m;
	uint32_t *word = &s->f->rx_wake[s->rd * 4];
	uint64_t start = load_acquire(&s->f->cur[0].slot[s->rd]);

	lane_reader_init(&r, s->f->data, RING, s->f->meta, &s->f->cur[0].slot[s->rd], false, false,
			 start, 0);
	for (;;) {
		uint32_t v = load_acquire(word);
		struct timespec d = deadline_in_ns(5000000000ull);

		lane_arm(s->f->arm, s->rd, 1000 + s->got);
		fence_full();
		if (lane_read(&r, NULL, 0, &m) == LANE_REC)
			break;
		store_release(&s->armed, 1);
		futex_wait(word, v, &d);
		lane_disarm(s->f->arm, s->rd);
		if (lane_read(&r, NULL, 0, &m) == LANE_REC) {
			store_release(&s->woke, 1);
			break;
		}
	}
	lane_disarm(s->f->arm, s->rd);
	s->got++;
	return NULL;
}

/* A sleeping reader is woken by the commit, a reader that does not sleep
 * costs no wake-up, and bits of readers that are not the writer's own
 * (another reader of the uid setting every bit) wake nobody. */
static void test_wake(void)
{
	struct fx f;
	struct lane_writer w;
	struct sleeper s = { .f = &f, .rd = 2 };
	pthread_t t;
	unsigned idx;

	fx_open(&f);
	writer_open(&f, &w);
	holder_add(&f, SHM_HOLD_HOLD, 2, &idx);
	/* nobody asleep: a commit makes no system call */
	CU_ASSERT_FATAL(put(&w, 1, 64) == 0 && lane_commit(&w) == 0);
	CU_ASSERT(w.wakes == 0);
	/* hostile: every bit set, arm words of others non-zero */
	for (unsigned k = 0; k < 8; k++)
		f.arm->bits[k] = ~0ull;
	for (unsigned i = 0; i < SHM_ARM_SLOTS; i++)
		if (i != 2)
			f.arm->arm[i] = 77;
	CU_ASSERT_FATAL(put(&w, 2, 64) == 0 && lane_commit(&w) == 0);
	CU_ASSERT(w.wakes == 0); /* reader 2's own word is 0: awake */
	for (unsigned k = 0; k < 8; k++)
		f.arm->bits[k] = 0;
	store_release(&f.cur[0].slot[2], w.p.pos);
	/* the reader, from where it is, sleeps for the next record */
	pthread_create(&t, NULL, sleeper_main, &s);
	WAIT_FOR(load_acquire(&s.armed), 5000);
	CU_ASSERT_FATAL(put(&w, 3, 64) == 0 && lane_commit(&w) == 0);
	pthread_join(t, NULL);
	CU_ASSERT(s.woke == 1);
	CU_ASSERT(w.wakes == 1);
	lane_writer_free(&w);
	fx_close(&f);
}

struct spacer {
	struct lane_writer *w;
	struct fx *f;
	int ret;
	uint32_t done;
};

static void *spacer_main(void *arg)
{
	struct spacer *s = arg;
	struct timespec d = deadline_in_ns(10000000000ull);

	s->ret = lane_wait_space(s->w, 256, s->f->tx_wake, &d, NULL, NULL);
	store_release(&s->done, 1);
	return NULL;
}

/* A writer waiting for space sleeps (space_arm set) and is woken by the
 * reader's acknowledgement across a slice; with a zero deadline it does
 * not wait at all. */
static void test_space_wait(void)
{
	struct fx f;
	struct lane_writer w;
	struct lane_reader r;
	struct lane_rec m;
	struct spacer s = { .w = &w, .f = &f };
	struct timespec zero = { 0, 0 };
	const struct shm_lane_wpage *wp;
	uint64_t order = 1;
	pthread_t t;
	unsigned idx;

	fx_open(&f);
	wp = (const void *)f.data;
	writer_open(&f, &w);
	reader_open(&f, &r, 0, false, holder_add(&f, SHM_HOLD_HOLD, 0, &idx));
	while (put(&w, order, 256) == 0)
		order++;
	CU_ASSERT(lane_wait_space(&w, 256, f.tx_wake, &zero, NULL, NULL) == -ETIMEDOUT);
	pthread_create(&t, NULL, spacer_main, &s);
	WAIT_FOR(load_acquire(&wp->space_arm) != 0, 5000);
	CU_ASSERT(!load_acquire(&s.done));
	/* read a quarter of the lane, acking each record */
	while (lane_read(&r, NULL, 0, &m) == LANE_REC && m.end < RING / 4)
		lane_ack(&r, m.end);
	lane_ack(&r, m.end);
	WAIT_FOR(load_acquire(&s.done), 5000);
	pthread_join(t, NULL);
	CU_ASSERT(s.ret == 0);
	CU_ASSERT(wp->space_arm == 0 && wp->short_since == 0);
	CU_ASSERT(put(&w, order, 256) == 0);
	lane_writer_free(&w);
	fx_close(&f);
}

static const struct harness_test lane_tests[] = {
	{ "laps", test_laps },
	{ "no_holder", test_no_holder },
	{ "hostile_slot", test_hostile_slot },
	{ "floor_holds", test_floor_holds },
	{ "joiners", test_joiners },
	{ "takeover", test_takeover },
	{ "drop_oldest", test_drop_oldest },
	{ "cut", test_cut },
	{ "bad_lane", test_bad_lane },
	{ "wake", test_wake },
	{ "space_wait", test_space_wait },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "lane_rw", lane_tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	return harness_main("test-lane-rw", suites, argc, argv);
}
