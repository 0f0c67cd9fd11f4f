/*
 * bench/bench-lane.c - a prototype of the direct data path (issue 17,
 * docs/design/data-path.md): a publisher writes a *lane*, a record ring in
 * a tmpfs file that its reader maps read-only, and no third process
 * touches a message.  Measured beside the raw rows of bench-ring.c, so the
 * gain is shown before the library moves.
 *
 * What the prototype has of the design:
 *   - the lane: shm/ring.c's ring in a tmpfs file, written by one process,
 *     mapped PROT_READ from an O_RDONLY fd by the reader, allocated in full;
 *   - the reader follows commit words (no producer position on its path)
 *     and keeps its acknowledged position in a cursor page only it writes,
 *     which the writer maps read-only;
 *   - writer-side reclaim: short of space, the writer reads the cursor,
 *     clamped to [last seen, committed] (a lying reader cannot make it
 *     overwrite what another holder has not read, nor fail it);
 *   - wake-ups between the two processes only: the reader's wait word, a
 *     "sleeping" sequence in its cursor page (odd: asleep) that the writer
 *     checks after a full fence once per commit, waking each arming at
 *     most once, no system call while nobody sleeps; the writer's own
 *     space-wait flag and word, checked by the reader after it releases;
 *   - per-message publish (commit and wake check per record) and batched
 *     publish (one commit per batch);
 *   - the SIGBUS guard: a reader's handler maps zero pages over a lane
 *     whose writer truncated it, marks the lane bad, and the reader keeps
 *     its other lanes.
 * What it leaves to the library: sessions, the broker's files and pages,
 * holders and floors of several readers, drop-oldest, spill.
 *
 * Rows (bench/result.h): "lane batched" and "lane 1/msg" one-way, "lane
 * spin" (spinning readers), "lane block" (the library's default 5 us spin,
 * then sleep) and "lane futex" (no spin) round trips, "lane batched"
 * fan-out to 8 readers, "lane guard" (extra: what the hostile writer did
 * and what the reader survived), and "lane block" beside "AF_UNIX
 * seqpacket" round trips with two CPU-bound processes running (rtt-load).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench/common.h"
#include "bench/result.h"
#include "shm/atomics.h"
#include "shm/clock.h"
#include "shm/futex.h"
#include "shm/lane-rw.h"
#include "shm/ring.h"

#define LANE_RING (1u << 22)   /* 4 MiB, as bench-ring.c's rings */
#define LANE_HDR 4096u         /* the writer-written header page */
#define DEFAULT_SPIN_NS 5000u  /* libshmb's default spin_us */
#define SPIN_FOREVER UINT64_MAX
#define BATCH 256

/* ---- the three shared pieces of a lane ------------------------------------ */

/* Page 0 of the lane file: written by the writer, read by its readers. */
struct lane_hdr {
	uint32_t space_waiting;  /* the writer sleeps for space on its space word */
	uint8_t pad[60];
};

/* The reader's cursor slot: written by the reader, read by the writer. */
struct lane_cursor {
	uint64_t acked;          /* released up to here */
	uint8_t pad0[56];
};

/*
 * The arm words of up to ARM_PER_PAGE readers of one uid (the design: a
 * page the broker makes per reader uid, read-write for those readers,
 * read-only for their writers).  A sleeping reader stores a fresh arm
 * value, then sets its bit in line 0; a writer loads line 0 per commit
 * and looks only at the arm words whose bit is set: one cache line per
 * 504 readers instead of one per reader (data-path.md, open question 2).
 */
#define ARM_PER_PAGE 504u
struct arm_page {
	uint64_t bits[8];        /* line 0: bit i set while reader i may sleep */
	uint64_t arm[ARM_PER_PAGE]; /* a fresh non-zero value per arming, 0 awake */
};

/* The wait words (a sealed memfd page in the design): the reader's wait
 * object, and the writer's space word. */
struct lane_wait {
	uint32_t rd_word;
	uint8_t pad0[60];
	uint32_t sp_word;
	uint8_t pad1[60];
};

#define MAX_READERS 8       /* reader processes */
#define MAX_WATCHERS 1024   /* cursor pages a writer scans */

struct lane_files {
	int lane_rw, lane_ro;    /* the lane file: the writer's fd, the readers' */
	unsigned nr;             /* readers (cursor pages) */
	unsigned nhold;          /* the first nhold hold the writer back; the rest only watch */
	struct lane_cursor *cur; /* one a reader (the design: its page, RO for the writer) */
	struct arm_page *arm;    /* one per ARM_PER_PAGE readers */
	unsigned narm;
	struct lane_wait *wait;  /* one a reader; wait[0].sp_word is the writer's */
};

static void die(const char *what)
{
	perror(what);
	exit(1);
}

/* A tmpfs file allocated in full, opened twice, its name gone; the
 * pages of nr readers. */
static void lane_files_open(struct lane_files *f, unsigned nr)
{
	char path[] = "/dev/shm/shmb-lane-XXXXXX";

	f->lane_rw = mkostemp(path, O_CLOEXEC);
	if (f->lane_rw < 0)
		die("lane: mkostemp");
	f->lane_ro = open(path, O_RDONLY | O_CLOEXEC);
	unlink(path);
	if (f->lane_ro < 0 || fallocate(f->lane_rw, 0, 0, LANE_HDR + LANE_RING) < 0)
		die("lane: file");
	f->nr = nr;
	f->nhold = nr;
	f->cur = bench_shalloc(nr * sizeof(*f->cur));
	f->narm = (nr + ARM_PER_PAGE - 1) / ARM_PER_PAGE;
	f->arm = bench_shalloc(f->narm * sizeof(*f->arm));
	f->wait = bench_shalloc(nr * sizeof(*f->wait));
}

static void lane_files_close(struct lane_files *f)
{
	close(f->lane_rw);
	close(f->lane_ro);
	bench_shfree(f->cur, f->nr * sizeof(*f->cur));
	bench_shfree(f->arm, f->narm * sizeof(*f->arm));
	bench_shfree(f->wait, f->nr * sizeof(*f->wait));
}

/* ---- the writer ------------------------------------------------------------- */

struct pl_writer {
	struct ring_prod p;
	struct lane_hdr *h;
	unsigned nr, nhold;
	const struct lane_cursor *cur;  /* its readers' cursor pages */
	const struct arm_page *arm;     /* their arm pages */
	unsigned narm;
	struct lane_wait *wait;         /* their wait words; wait[0].sp_word: its own */
	uint64_t reclaim;        /* where free space starts: ring_prod reads it */
	uint64_t seen[MAX_WATCHERS];      /* each reader's cursor as last seen (clamped) */
	uint64_t last_woken[MAX_WATCHERS];/* each reader's arming last woken */
	uint64_t wakes;
};

static void pl_writer_open(struct pl_writer *w, const struct lane_files *f)
{
	uint8_t *base = mmap(NULL, LANE_HDR + LANE_RING, PROT_READ | PROT_WRITE, MAP_SHARED,
			     f->lane_rw, 0);
	struct ring r;

	if (base == MAP_FAILED)
		die("lane: writer mmap");
	memset(w, 0, sizeof(*w));
	w->h = (struct lane_hdr *)base;
	w->nr = f->nr;
	w->nhold = f->nhold;
	w->cur = f->cur;
	w->arm = f->arm;
	w->narm = f->narm;
	w->wait = f->wait;
	ring_init(&r, base + LANE_HDR, LANE_RING);
	ring_prod_init(&w->p, &r, &w->reclaim, NULL, 0, 0, 1);
}

/* Writer-side reclaim: the least of the readers' cursors, each clamped
 * to [last seen, committed]; a lie can only hold back its own reads. */
static void pl_reclaim(struct pl_writer *w)
{
	uint64_t least = w->p.pos;

	for (unsigned i = 0; i < w->nhold; i++) {
		uint64_t a = load_acquire(&w->cur[i].acked) & ~(uint64_t)(SHM_REC_ALIGN - 1);

		if (a > w->p.pos)
			a = w->p.pos;
		if (a > w->seen[i])
			w->seen[i] = a;
		if (w->seen[i] < least)
			least = w->seen[i];
	}
	if (least > w->reclaim)
		w->reclaim = least;
}

/* Wake reader i if this arming of it was not woken yet. */
static void pl_wake_one(struct pl_writer *w, unsigned i)
{
	uint64_t s = load_relaxed(&w->arm[i / ARM_PER_PAGE].arm[i % ARM_PER_PAGE]);

	if (s && s != w->last_woken[i]) {
		w->last_woken[i] = s;
		fetch_add_release(&w->wait[i].rd_word, 1);
		futex_wake(&w->wait[i].rd_word, 1);
		w->wakes++;
	}
}

/* After a commit: wake the readers that sleep.  Pairs with the fence in
 * pl_read(): the commit word is stored before the arm bits are read;
 * the reader's arm word and bit are stored before it looks at the ring.
 * One line a page when nobody sleeps. */
static void pl_wake(struct pl_writer *w)
{
	fence_full();
	for (unsigned g = 0; g < w->narm; g++) {
		for (unsigned k = 0; k < 8; k++) {
			/* acquire: the arm word was stored before its bit */
			uint64_t b = load_acquire(&w->arm[g].bits[k]);

			while (b) {
				unsigned i = g * ARM_PER_PAGE + k * 64 + (unsigned)__builtin_ctzll(b);

				b &= b - 1;
				if (i < w->nr)
					pl_wake_one(w, i);
			}
		}
	}
}

static void pl_commit(struct pl_writer *w);

/* Reserve payload bytes, reclaiming and then waiting for space. */
static void *pl_reserve(struct pl_writer *w, uint32_t len)
{
	uint64_t spin_until = 0;
	void *dst;

	for (;;) {
		uint32_t v;

		if (ring_reserve(&w->p, len, SHM_REC_DATA, 0, &dst) == 0)
			return dst;
		pl_reclaim(w);
		if (ring_reserve(&w->p, len, SHM_REC_DATA, 0, &dst) == 0)
			return dst;
		/* a batch that fills the ring is published: its reader frees it */
		if (w->p.rsv != w->p.pos) {
			pl_commit(w);
			continue;
		}
		if (!spin_until)
			spin_until = clock_mono_ns() + DEFAULT_SPIN_NS;
		if (clock_mono_ns() < spin_until) {
			cpu_relax();
			continue;
		}
		/* sleep for space: the flag, a full fence, one more look */
		v = load_acquire(&w->wait->sp_word);
		store_release(&w->h->space_waiting, 1);
		fence_full();
		pl_reclaim(w);
		if (ring_reserve(&w->p, len, SHM_REC_DATA, 0, &dst) == 0) {
			store_release(&w->h->space_waiting, 0);
			return dst;
		}
		{
			struct timespec d = deadline_in_ns(10000000);

			futex_wait(&w->wait->sp_word, v, &d);
		}
		store_release(&w->h->space_waiting, 0);
		spin_until = 0;
	}
}

static void pl_commit(struct pl_writer *w)
{
	ring_commit(&w->p);
	pl_wake(w);
}

/* ---- the reader ------------------------------------------------------------- */

struct pl_reader {
	struct ring_cons c;
	const struct lane_hdr *h;
	struct lane_cursor *cur;
	uint64_t *arm;           /* its arm word, and its bit in line 0 */
	uint64_t *arm_bits, arm_bit, arm_seq;
	struct lane_wait *wait;
	uint32_t *space;         /* the writer's space word */
	uint8_t *base;
	uint64_t spin_ns;
	uint64_t sleeps;
	int guard;               /* its slot in the SIGBUS guard, or -1 */
};

/* ---- the SIGBUS guard (the reader's side) ---------------------------------- */

#define GUARD_MAX 8
static struct {
	void *base;
	size_t len;
	volatile sig_atomic_t bad;
} guards[GUARD_MAX];
static volatile sig_atomic_t sigbus_count;
static struct sigaction guard_prev;

/* A fault inside a guarded lane: zero pages over all of it, the lane is
 * bad.  Anything else goes to the handler that was there before. */
static void guard_sigbus(int sig, siginfo_t *si, void *uc)
{
	for (int i = 0; i < GUARD_MAX; i++) {
		uint8_t *b = guards[i].base;

		if (b && (uint8_t *)si->si_addr >= b && (uint8_t *)si->si_addr < b + guards[i].len) {
			mmap(b, guards[i].len, PROT_READ, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			guards[i].bad = 1;
			sigbus_count++;
			return;
		}
	}
	if (guard_prev.sa_flags & SA_SIGINFO) {
		guard_prev.sa_sigaction(sig, si, uc);
	} else if (guard_prev.sa_handler != SIG_IGN && guard_prev.sa_handler != SIG_DFL) {
		guard_prev.sa_handler(sig);
	} else {
		signal(SIGBUS, SIG_DFL);
		raise(SIGBUS);
	}
}

static void guard_install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = guard_sigbus;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &guard_prev);
}

static int guard_add(void *base, size_t len)
{
	for (int i = 0; i < GUARD_MAX; i++)
		if (!guards[i].base) {
			guards[i].bad = 0;
			guards[i].len = len;
			store_release(&guards[i].base, base);
			return i;
		}
	return -1;
}

static bool pl_bad(const struct pl_reader *r)
{
	return r->guard >= 0 && guards[r->guard].bad;
}

static void pl_reader_open(struct pl_reader *r, const struct lane_files *f, unsigned idx,
			     uint64_t spin_ns, bool guarded)
{
	struct ring ring;

	memset(r, 0, sizeof(*r));
	r->base = mmap(NULL, LANE_HDR + LANE_RING, PROT_READ, MAP_SHARED, f->lane_ro, 0);
	if (r->base == MAP_FAILED)
		die("lane: reader mmap");
	r->guard = guarded ? guard_add(r->base, LANE_HDR + LANE_RING) : -1;
	r->h = (const struct lane_hdr *)r->base;
	r->cur = &f->cur[idx];
	r->arm = &f->arm[idx / ARM_PER_PAGE].arm[idx % ARM_PER_PAGE];
	r->arm_bits = &f->arm[idx / ARM_PER_PAGE].bits[(idx % ARM_PER_PAGE) / 64];
	r->arm_bit = 1ull << (idx % 64);
	r->wait = &f->wait[idx];
	r->space = &f->wait[0].sp_word;
	r->spin_ns = spin_ns;
	ring_init(&ring, r->base + LANE_HDR, LANE_RING);
	/* commit words only: no producer position on the reader's path */
	ring_cons_init(&r->c, &ring, NULL, &r->cur->acked, 0, 0, 1, 1);
}

/* Acknowledge what was consumed; a writer waiting for space is woken. */
static void pl_release(struct pl_reader *r)
{
	ring_release(&r->c);
	/* pairs with the writer's fence in pl_reserve(): acked is stored
	 * before space_waiting is read */
	fence_full();
	if (load_acquire(&r->h->space_waiting)) {
		fetch_add_release(r->space, 1);
		futex_wake(r->space, 1);
	}
}

/* Up to n records, waiting for the first: spin, then sleep (with a
 * deadline, so a swallowed wake-up costs at most that).  -EIO: bad lane. */
static int pl_read(struct pl_reader *r, struct ring_msg *m, unsigned n)
{
	uint64_t spin_until = 0;

	for (;;) {
		int k = ring_peek_batch(&r->c, m, n);
		uint32_t v;

		if (k > 0)
			return k;
		if (k == -EBADMSG || pl_bad(r))
			return -EIO;
		if (r->spin_ns == SPIN_FOREVER) {
			cpu_relax();
			continue;
		}
		if (!spin_until)
			spin_until = clock_mono_ns() + r->spin_ns;
		if (r->spin_ns && clock_mono_ns() < spin_until) {
			cpu_relax();
			continue;
		}
		/* arm: the wait word's value, a fresh arm value, its bit
		 * (release: the writer loads the bit with acquire, then the
		 * word), a full fence, one more look */
		v = load_acquire(&r->wait->rd_word);
		store_relaxed(r->arm, ++r->arm_seq);
		__atomic_fetch_or(r->arm_bits, r->arm_bit, __ATOMIC_RELEASE);
		fence_full();
		k = ring_peek_batch(&r->c, m, n);
		if (k <= 0 && !pl_bad(r)) {
			struct timespec d = deadline_in_ns(10000000);

			futex_wait(&r->wait->rd_word, v, &d);
			r->sleeps++;
		}
		__atomic_fetch_and(r->arm_bits, ~r->arm_bit, __ATOMIC_RELAXED);
		store_relaxed(r->arm, 0);
		if (k > 0)
			return k;
		spin_until = 0;
	}
}

/* ---- one-way ---------------------------------------------------------------- */

struct oneway_arg {
	struct lane_files *f;
	uint32_t size;
	uint64_t n;
	unsigned batch;          /* records per commit: 1 or BATCH */
};

static void oneway_writer(void *arg)
{
	struct oneway_arg *a = arg;
	struct pl_writer w;
	uint64_t seq = 0;

	pl_writer_open(&w, a->f);
	while (seq < a->n) {
		unsigned k = 0;

		do {
			uint8_t *dst = pl_reserve(&w, a->size);

			memset(dst, (int)(seq & 0xff), a->size);
			memcpy(dst, &seq, 8);
			seq++;
			k++;
		} while (k < a->batch && seq < a->n);
		pl_commit(&w);
	}
}

/*
 * Messages/s as the reader sees them; 0 when any record was wrong.  nw
 * cursor pages: the reader's, and nw - 1 of readers that hold nothing and
 * never sleep, whose arm words the writer still looks at on every commit
 * (what a wide fan-out costs it: data-path.md, open question 2).
 */
static double lane_oneway(uint32_t size, uint64_t n, unsigned batch, uint64_t spin_ns, unsigned nw)
{
	struct lane_files f;
	struct oneway_arg a = { &f, size, n, batch };
	struct pl_reader r;
	struct ring_msg msg[BATCH];
	uint64_t next = 0, bad = 0, t0;
	pid_t wr;
	double rate;

	lane_files_open(&f, nw);
	f.nhold = 1;
	wr = bench_child(0, oneway_writer, &a);
	bench_pin(1);
	pl_reader_open(&r, &f, 0, spin_ns, false);
	t0 = clock_mono_ns();
	while (next < n) {
		int k = pl_read(&r, msg, BATCH);

		if (k < 0) {
			bad++;
			break;
		}
		for (int i = 0; i < k; i++) {
			const uint8_t *pl = msg[i].payload;
			uint64_t s;

			/* read in place: the first word and the last byte, as the raw row */
			memcpy(&s, pl, 8);
			if (s != next || msg[i].len != size || pl[size - 1] != (uint8_t)(next & 0xff))
				bad++;
			next++;
		}
		ring_consume(&r.c, &msg[k - 1]);
		pl_release(&r);
	}
	rate = (double)n / ((double)(clock_mono_ns() - t0) / 1e9);
	bench_reap(wr);
	munmap(r.base, LANE_HDR + LANE_RING);
	lane_files_close(&f);
	return bad ? 0 : rate;
}

/* ---- the library's lane code (shm/lane-rw.c) beside the prototype ------------ */

/* One lane as the broker will make it: page 0 and the ring, meta (one
 * topic), the hold table with the reader's HOLD entry, its cursor page,
 * its arm page and the two wake words; all in memory shared across fork. */
struct rw_lane {
	uint8_t *data, *meta, *hold;
	struct shm_cursor_page *cur;
	struct shm_arm_page *arm;
	uint32_t *wake;          /* [0] the reader's rx_wake, [16] the writer's tx_wake */
};

static const struct shm_cursor_page *rw_cursor(void *ctx, uint32_t page)
{
	return page == 0 ? ((struct rw_lane *)ctx)->cur : NULL;
}

static const struct shm_arm_page *rw_arm(void *ctx, uint32_t page)
{
	return page == 0 ? ((struct rw_lane *)ctx)->arm : NULL;
}

static uint32_t *rw_wake(void *ctx, uint64_t reader)
{
	return reader == 0 ? ((struct rw_lane *)ctx)->wake : NULL;
}

static void rw_lane_open(struct rw_lane *l)
{
	struct hold_table ht;
	struct hold_view v = { .kind = SHM_HOLD_HOLD };

	l->data = bench_shalloc(SHM_LANE_RING_OFFSET + LANE_RING);
	l->meta = bench_shalloc(SHM_LANE_BITMAP_OFF + 4096);
	l->hold = bench_shalloc(SHM_HOLD_SIZE);
	l->cur = bench_shalloc(sizeof(*l->cur));
	l->arm = bench_shalloc(sizeof(*l->arm));
	l->wake = bench_shalloc(4096);
	l->meta[SHM_LANE_BITMAP_OFF] = 1; /* topic 0 */
	hold_table_init(&ht, l->hold);
	hold_add(&ht, &v, 0);
}

static void rw_lane_close(struct rw_lane *l)
{
	bench_shfree(l->data, SHM_LANE_RING_OFFSET + LANE_RING);
	bench_shfree(l->meta, SHM_LANE_BITMAP_OFF + 4096);
	bench_shfree(l->hold, SHM_HOLD_SIZE);
	bench_shfree(l->cur, sizeof(*l->cur));
	bench_shfree(l->arm, sizeof(*l->arm));
	bench_shfree(l->wake, 4096);
}

struct rw_arg {
	struct rw_lane *l;
	uint32_t size;
	uint64_t n;
	unsigned batch;
};

static void rw_writer(void *arg)
{
	struct rw_arg *a = arg;
	struct lane_pages pages = { rw_cursor, rw_arm, rw_wake, a->l };
	struct lane_writer w;
	uint64_t seq = 0;

	if (lane_writer_init(&w, a->l->data, LANE_RING, a->l->hold, &pages, false, 0, 0, 0))
		die("lane-rw: writer");
	while (seq < a->n) {
		unsigned k = 0;

		do {
			void *dst;

			while (lane_reserve(&w, 0, seq + 1, NULL, a->size, &dst) == -EAGAIN)
				lane_wait_space(&w, a->size, &a->l->wake[16], NULL, NULL, NULL);
			msg_fill(dst, seq, a->size);
			seq++;
			k++;
		} while (k < a->batch && seq < a->n);
		lane_commit(&w);
	}
	lane_writer_free(&w);
}

/* The next record: spin DEFAULT_SPIN_NS, then arm and sleep on rx_wake. */
static int rw_next(struct rw_lane *l, struct lane_reader *r, struct lane_rec *m, uint64_t *arm_seq)
{
	uint64_t spin_until = 0;

	for (;;) {
		int k = lane_read(r, NULL, 0, m);
		uint32_t v;
		struct timespec d;

		if (k != LANE_NONE)
			return k;
		if (!spin_until)
			spin_until = clock_mono_ns() + DEFAULT_SPIN_NS;
		if (clock_mono_ns() < spin_until) {
			cpu_relax();
			continue;
		}
		v = load_acquire(&l->wake[0]);
		lane_arm(l->arm, 0, ++*arm_seq);
		fence_full();
		k = lane_read(r, NULL, 0, m);
		if (k == LANE_NONE) {
			d = deadline_in_ns(10000000);
			futex_wait(&l->wake[0], v, &d);
		}
		lane_disarm(l->arm, 0);
		if (k != LANE_NONE)
			return k;
		spin_until = 0;
	}
}

/* Messages/s through shm/lane-rw.c: read in place, acknowledged a batch
 * at a time; 0 when any record was wrong. */
static double rw_oneway(uint32_t size, uint64_t n, unsigned batch)
{
	struct rw_lane l;
	struct rw_arg a = { &l, size, n, batch };
	struct lane_reader r;
	struct lane_rec m;
	uint64_t next = 0, bad = 0, t0, arm_seq = 0;
	pid_t wr;

	rw_lane_open(&l);
	wr = bench_child(0, rw_writer, &a);
	bench_pin(1);
	if (lane_reader_init(&r, l.data, LANE_RING, l.meta, &l.cur->slot[0], false, false, 0, 0))
		die("lane-rw: reader");
	r.tx_wake = &l.wake[16];
	t0 = clock_mono_ns();
	while (next < n) {
		if (rw_next(&l, &r, &m, &arm_seq) != LANE_REC) {
			bad++;
			break;
		}
		if (!msg_intact(m.payload, m.len, next, size))
			bad++;
		next++;
		if (next % BATCH == 0 || next == n)
			lane_ack(&r, m.end);
	}
	{
		double rate = (double)n / ((double)(clock_mono_ns() - t0) / 1e9);

		bench_reap(wr);
		rw_lane_close(&l);
		return bad ? 0 : rate;
	}
}

/* ---- round trips ------------------------------------------------------------ */

struct rtt_shared {
	uint64_t bad;
	uint64_t lat[];
};

struct rtt_arg {
	struct lane_files *f;    /* [0]: to the echo, [1]: back */
	uint64_t spin_ns;
	size_t n;
};

static void rtt_send(struct pl_writer *w, uint64_t v)
{
	uint8_t *dst = pl_reserve(w, 64);

	memset(dst, 0, 64);
	memcpy(dst, &v, 8);
	pl_commit(w);
}

static uint64_t rtt_recv(struct pl_reader *r)
{
	struct ring_msg m;
	uint64_t v = UINT64_MAX;

	if (pl_read(r, &m, 1) == 1) {
		memcpy(&v, m.payload, 8);
		ring_consume(&r->c, &m);
		pl_release(r);
	}
	return v;
}

static void rtt_echo(void *arg)
{
	struct rtt_arg *a = arg;
	struct pl_reader in;
	struct pl_writer out;

	pl_reader_open(&in, &a->f[0], 0, a->spin_ns, false);
	pl_writer_open(&out, &a->f[1]);
	for (size_t i = 0; i < a->n + 100; i++)
		rtt_send(&out, rtt_recv(&in));
}

static struct lat lane_rtt(uint64_t spin_ns, size_t n)
{
	struct lane_files f[2];
	struct rtt_arg a = { f, spin_ns, n };
	size_t bytes = sizeof(struct rtt_shared) + n * 8;
	struct rtt_shared *sh = bench_shalloc(bytes);
	struct pl_reader in;
	struct pl_writer out;
	struct lat l;
	pid_t echo;

	lane_files_open(&f[0], 1);
	lane_files_open(&f[1], 1);
	echo = bench_child(1, rtt_echo, &a);
	bench_pin(0);
	pl_writer_open(&out, &f[0]);
	pl_reader_open(&in, &f[1], 0, spin_ns, false);
	for (size_t i = 0; i < n + 100; i++) {
		uint64_t t0 = clock_mono_ns();

		rtt_send(&out, i);
		if (rtt_recv(&in) != i)
			sh->bad++;
		if (i >= 100) /* warm-up dropped */
			sh->lat[i - 100] = clock_mono_ns() - t0;
	}
	bench_reap(echo);
	l = bench_summarize(sh->lat, n);
	if (sh->bad)
		l.p50 = -1;
	munmap(in.base, LANE_HDR + LANE_RING);
	lane_files_close(&f[0]);
	lane_files_close(&f[1]);
	bench_shfree(sh, bytes);
	return l;
}

/* ---- fan-out ---------------------------------------------------------------- */

struct fan_shared {
	uint32_t ready;
	uint64_t got[MAX_READERS], bad[MAX_READERS], t_end[MAX_READERS];
};

struct fan_arg {
	struct lane_files *f;
	struct fan_shared *sh;
	unsigned idx;
	uint64_t n;
};

/* One of the readers of a lane: every message, in order, checked. */
static void fan_reader(void *arg)
{
	struct fan_arg *a = arg;
	struct pl_reader r;
	struct ring_msg m[BATCH];
	uint64_t next = 0;

	pl_reader_open(&r, a->f, a->idx, DEFAULT_SPIN_NS, false);
	fetch_add_release(&a->sh->ready, 1);
	while (next < a->n) {
		int k = pl_read(&r, m, BATCH);

		if (k < 0)
			break;
		for (int i = 0; i < k; i++) {
			if (!msg_intact(m[i].payload, m[i].len, next, 64))
				a->sh->bad[a->idx]++;
			next++;
		}
		ring_consume(&r.c, &m[k - 1]);
		pl_release(&r);
	}
	a->sh->got[a->idx] = next;
	a->sh->t_end[a->idx] = clock_mono_ns();
}

/* 1 -> nr: messages/s received in all; the writer holds back for the
 * slowest reader (the least of their cursors) and wakes only sleepers. */
static void lane_fanout(unsigned nr, uint64_t n, int rep)
{
	struct lane_files f;
	struct fan_shared *sh = bench_shalloc(sizeof(*sh));
	struct fan_arg a[MAX_READERS];
	struct bres res = bres_new("lane batched", "fanout", 64, rep);
	pid_t rd[MAX_READERS];
	struct pl_writer w;
	uint64_t t0, t_end = 0, seq = 0;
	char extra[64];

	lane_files_open(&f, nr);
	for (unsigned i = 0; i < nr; i++) {
		a[i] = (struct fan_arg){ &f, sh, i, n };
		rd[i] = bench_child(1, fan_reader, &a[i]);
	}
	while (load_acquire(&sh->ready) < nr)
		usleep(100);
	bench_pin(0);
	pl_writer_open(&w, &f);
	t0 = clock_mono_ns();
	while (seq < n) {
		for (unsigned k = 0; k < BATCH && seq < n; k++, seq++)
			msg_fill(pl_reserve(&w, 64), seq, 64);
		pl_commit(&w);
	}
	for (unsigned i = 0; i < nr; i++) {
		bench_reap(rd[i]);
		res.recv += sh->got[i];
		res.lost += n - sh->got[i];
		res.reord += sh->bad[i];
		if (sh->t_end[i] > t_end)
			t_end = sh->t_end[i];
	}
	res.sent = n * nr;
	res.msgs_s = (double)res.recv / ((double)(t_end - t0) / 1e9);
	snprintf(extra, sizeof(extra), "readers=%u writer_wakes=%llu", nr, (unsigned long long)w.wakes);
	res.extra = extra;
	bres_emit(&res);
	munmap(w.h, LANE_HDR + LANE_RING);
	lane_files_close(&f);
	bench_shfree(sh, sizeof(*sh));
}

/* ---- under load ------------------------------------------------------------- */

/* Two CPU-bound processes beside the measurement, on no CPU in particular. */
static void load_start(pid_t busy[2])
{
	for (int i = 0; i < 2; i++) {
		busy[i] = bench_spawn();
		if (busy[i] == 0)
			for (volatile uint64_t x = 0;; x++)
				;
	}
}

static void load_stop(pid_t busy[2])
{
	for (int i = 0; i < 2; i++) {
		kill(busy[i], SIGKILL);
		bench_wait(busy[i]);
	}
}

/* ---- a hostile writer ------------------------------------------------------- */

struct hostile_arg {
	struct lane_files *good, *evil;
	uint64_t n;              /* what the good writer sends */
};

/* Writes records into its lane, then truncates it under its reader,
 * grows it again, punches holes, and goes on writing. */
static void hostile_writer(void *arg)
{
	struct hostile_arg *a = arg;
	struct pl_writer w;
	uint64_t seq = 0;

	pl_writer_open(&w, a->evil);
	for (int round = 0; round < 20; round++) {
		/* its own mapping would fault too: the file is grown back first */
		if (round == 6)
			ftruncate(a->evil->lane_rw, LANE_HDR + LANE_RING);
		for (int i = 0; i < 1000; i++) {
			uint8_t *dst = pl_reserve(&w, 64);

			memset(dst, 0xee, 64);
			memcpy(dst, &seq, 8);
			seq++;
			pl_commit(&w);
		}
		if (round == 5)
			ftruncate(a->evil->lane_rw, 0);
		if (round >= 8)
			fallocate(a->evil->lane_rw, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				  LANE_HDR + (off_t)(round % 4) * (LANE_RING / 4), LANE_RING / 4);
		usleep(1000);
	}
}

static void good_writer(void *arg)
{
	struct hostile_arg *a = arg;
	struct pl_writer w;

	pl_writer_open(&w, a->good);
	for (uint64_t seq = 0; seq < a->n; seq++) {
		uint8_t *dst = pl_reserve(&w, 64);

		msg_fill(dst, seq, 64);
		pl_commit(&w);
	}
}

/* One reader of two lanes, one of them hostile: it must survive, say the
 * hostile lane is bad, and get every message of the good one in order. */
static void lane_guard(int rep)
{
	struct lane_files good, evil;
	struct hostile_arg a = { &good, &evil, bench_n(2000000) };
	struct pl_reader rg, re;
	struct ring_msg m[BATCH];
	uint64_t next = 0, bad = 0, evil_msgs = 0;
	bool evil_bad = false;
	struct bres res = bres_new("lane guard", "oneway", 64, rep);
	char extra[160];
	pid_t pg, pe;

	lane_files_open(&good, 1);
	lane_files_open(&evil, 1);
	guard_install();
	/* the reader maps both before either writer starts */
	pl_reader_open(&rg, &good, 0, 0, true);
	pl_reader_open(&re, &evil, 0, 0, true);
	pe = bench_child(0, hostile_writer, &a);
	pg = bench_child(0, good_writer, &a);
	bench_pin(1);
	while (next < a.n) {
		int k = ring_peek_batch(&rg.c, m, BATCH);

		if (k > 0) {
			for (int i = 0; i < k; i++) {
				if (!msg_intact(m[i].payload, m[i].len, next, 64))
					bad++;
				next++;
			}
			ring_consume(&rg.c, &m[k - 1]);
			pl_release(&rg);
		} else if (k == -EBADMSG || pl_bad(&rg)) {
			bad++;
			break;
		}
		if (!evil_bad) {
			k = ring_peek_batch(&re.c, m, BATCH);
			if (k > 0) {
				evil_msgs += (uint64_t)k;
				ring_consume(&re.c, &m[k - 1]);
				pl_release(&re);
			} else if (k == -EBADMSG || pl_bad(&re)) {
				evil_bad = true; /* the event naming its source, in the library */
			}
		}
	}
	bench_reap(pg);
	bench_reap(pe);
	res.sent = a.n;
	res.recv = next;
	res.lost = a.n - next;
	res.reord = bad;
	snprintf(extra, sizeof(extra),
		 "hostile=truncate+grow+punch sigbus=%d hostile_lane=%s read_before=%llu",
		 (int)sigbus_count, evil_bad ? "reported-bad" : "NOT-REPORTED",
		 (unsigned long long)evil_msgs);
	res.extra = extra;
	res.msgs_s = evil_bad && !bad ? 1 : 0;
	bres_emit(&res);
	munmap(rg.base, LANE_HDR + LANE_RING);
	munmap(re.base, LANE_HDR + LANE_RING);
	lane_files_close(&good);
	lane_files_close(&evil);
}

/* ---- reporting ---------------------------------------------------------------- */

static void run(int pin_mode)
{
	const uint32_t sizes[] = { 64, 1024, 65536 };
	const size_t lat_n = bench_n(20000), lat_n_block = bench_n(5000);
	const uint64_t n64 = bench_n(10000000);

	bench_pinned = pin_mode;
	for (int rep = 0; rep < bench_reps(); rep++) {
		for (int s = 0; s < 3; s++) {
			uint64_t n = bench_n(sizes[s] == 64 ? 10000000 : sizes[s] == 1024 ? 2000000 : 100000);

			if (bench_want("lane batched"))
				bres_emit_rate("lane batched", "oneway", sizes[s], rep,
					       lane_oneway(sizes[s], n, BATCH, DEFAULT_SPIN_NS, 1), n);
		}
		if (bench_want("lane-rw batched"))
			bres_emit_rate("lane-rw batched", "oneway", 64, rep, rw_oneway(64, n64, BATCH), n64);
		if (bench_want("lane-rw 1/msg"))
			bres_emit_rate("lane-rw 1/msg", "oneway", 64, rep, rw_oneway(64, n64, 1), n64);
		if (bench_want("lane 1/msg"))
			bres_emit_rate("lane 1/msg", "oneway", 64, rep,
				       lane_oneway(64, n64, 1, DEFAULT_SPIN_NS, 1), n64);
		if (bench_want("lane 1/msg, 1000 watchers"))
			bres_emit_rate("lane 1/msg, 1000 watchers", "oneway", 64, rep,
				       lane_oneway(64, n64 / 5, 1, DEFAULT_SPIN_NS, 1000), n64 / 5);
		if (bench_want("lane batched, 1000 watchers"))
			bres_emit_rate("lane batched, 1000 watchers", "oneway", 64, rep,
				       lane_oneway(64, n64, BATCH, DEFAULT_SPIN_NS, 1000), n64);
		if (!bench_want("lane spin rtt"))
			continue;
		bres_emit_lat("lane spin", "rtt", rep, lane_rtt(SPIN_FOREVER, lat_n), lat_n);
		bres_emit_lat("lane block", "rtt", rep, lane_rtt(DEFAULT_SPIN_NS, lat_n_block),
			      lat_n_block);
		bres_emit_lat("lane futex", "rtt", rep, lane_rtt(0, lat_n_block), lat_n_block);
		if (!pin_mode) {
			pid_t busy[2];
			uint64_t bad = 0;
			struct lat l;

			lane_fanout(MAX_READERS, bench_n(2000000), rep);
			lane_guard(rep);
			/* beside two CPU-bound processes: the default wait, and AF_UNIX */
			load_start(busy);
			bres_emit_lat("lane block", "rtt-load", rep, lane_rtt(DEFAULT_SPIN_NS, lat_n_block),
				      lat_n_block);
			l = chan_rtt(CHAN_SEQPACKET, lat_n_block, &bad);
			if (bad)
				l.p50 = -1;
			bres_emit_lat("AF_UNIX seqpacket", "rtt-load", rep, l, lat_n_block);
			load_stop(busy);
		}
	}
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2 || strcmp(argv[1], "--pinned-only"))
		run(0);
	if (sysconf(_SC_NPROCESSORS_ONLN) >= 2)
		run(1);
	else
		bres_skip("lane prototype, pinned", "fewer than 2 CPUs online");
	return 0;
}
