/*
 * broker/lanes-adopt.c - lanes re-adopted by a restarted broker
 * (docs/design/data-path.md, section 7, "Re-adoption"; lanes-adopt.h).
 *
 * The writers and readers of lanes outlive the broker: they keep writing
 * and reading what they mapped, and REATTACH with the same owner
 * generation.  So at start every lanes/ directory is re-opened with the
 * checks of lanefile.c, its data mapped under the SIGBUS guard, and its
 * hold table read back into the register: each entry names a cursor
 * page (sessions/<id>/cur.<gen>.<pub>.<n>) and so a reader session and
 * generation; the entry is moved, by the take-over of data-path.md
 * section 3, to an entry naming the reader's new wake and arm pages (the
 * old ones were memfds of the dead broker, gone with it), or to a page of
 * the session's current generation when a reader's owner switch was cut
 * short.  Then a lane no current, living generation writes is cut, and
 * lanes_tick() removes what nothing holds.  Nobody is told anything here:
 * each owner is sent its pushes again at its REATTACH (lanes_resend(),
 * ctl_lanes_opened()), and its library switches to the new pages.
 *
 * The register's numbers (lanes, cursor pages, arm pages, readers) name
 * mappings clients keep: a writer never maps a page number twice.  A
 * client that outlived a broker still holds the old numbers, so the
 * counters live in lanes/numbers, written as each number is taken (before
 * it can reach anyone), and start past the highest number found at
 * re-adoption too.
 *
 * Must never: give a number a client may still know; read a lane's data
 * or a cursor page but under the SIGBUS guard; start a re-adopted holder
 * anywhere but where the take-over (or, for an entry whose floor protocol
 * the dead broker did not finish, the floor protocol) says; remove a lane
 * a reader holds or a living writer of a current generation writes;
 * serve a lane whose files fail a check.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/lanes-adopt.h"
#include "broker/lanes-bridge.h"
#include "broker/lanes.h"
#include "broker/log.h"
#include "broker/session.h"
#include "shm/atomics.h"
#include "shm/clock.h"
#include "shm/crc32c.h"

#define NUMBERS_FILE "numbers"
#define NUMBERS_MAGIC 0x4f4e4c2d424d4853ull /* "SHMB-LNO" */

/* lanes/numbers: the next number of each kind the register gives. */
struct numbers_rec {
	uint64_t magic;
	uint32_t lane, page, arm, pad;
	uint64_t reader;
	uint32_t crc, pad2;
};

/* Only the loop's thread takes numbers. */
static int numbers_fd = -1;
static bool numbers_failed;

/* A cursor page file found in a session's directory. */
struct apage {
	struct session *s;
	uint32_t gen, number;
	uint64_t pub;
	char name[64];
};

struct adoption {
	struct broker *b;
	struct lanes_reg *g;
	struct apage *pages;
	unsigned npages, cap;
	uint32_t max_lane, max_page, max_arm;
	uint64_t max_reader;
	unsigned lanes, holders, freed, removed, quarantined;
};

/* ---- the numbers ------------------------------------------------------------ */

static void numbers_keep(void *ctx)
{
	struct broker *b = ctx;
	struct lanes_reg *g = b->lanes;
	struct numbers_rec n = { .magic = NUMBERS_MAGIC, .lane = g->next_lane, .page = g->next_page,
				 .arm = g->next_arm, .reader = g->next_reader };

	n.crc = crc32c(0, &n, offsetof(struct numbers_rec, crc));
	/* a pwrite is whole in the page cache, whatever kills the broker */
	if (pwrite(numbers_fd, &n, sizeof(n), 0) != (ssize_t)sizeof(n) && !numbers_failed) {
		numbers_failed = true;
		log_msg(LOG_ERR, "lanes: %s/lanes/" NUMBERS_FILE " cannot be written (%s): a broker"
			" restarted after this one may give a number a client still knows",
			b->o.dir, strerror(errno));
	}
}

/* The numbers file, opened (made when missing); *n what it says, zero
 * when it says nothing trustworthy. */
static int numbers_open(struct adoption *a, struct numbers_rec *n)
{
	int fd = openat(a->g->lanes_dirfd, NUMBERS_FILE,
			O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	struct stat st;
	ssize_t got;

	memset(n, 0, sizeof(*n));
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
		close(fd);
		return -EPERM;
	}
	/* its block now: a full filesystem refuses lanes here, not later */
	if (fallocate(fd, 0, 0, sizeof(*n)) < 0 && errno != EOPNOTSUPP) {
		int e = -errno;

		close(fd);
		return e;
	}
	got = pread(fd, n, sizeof(*n), 0);
	if (got == (ssize_t)sizeof(*n) && n->magic == NUMBERS_MAGIC &&
	    n->crc == crc32c(0, n, offsetof(struct numbers_rec, crc)))
		return fd;
	if (st.st_size > 0)
		log_msg(LOG_WARNING, "lanes: lanes/" NUMBERS_FILE " is damaged: numbers start past"
			" the highest the lanes and pages found name");
	memset(n, 0, sizeof(*n));
	return fd;
}

static uint32_t max32(uint32_t a, uint32_t b)
{
	return a > b ? a : b;
}

/* ---- what the sessions' directories hold ------------------------------------- */

static struct apage *page_add(struct adoption *a)
{
	if (a->npages == a->cap) {
		unsigned cap = a->cap ? 2 * a->cap : 32;
		struct apage *n = realloc(a->pages, cap * sizeof(*n));

		if (!n)
			return NULL;
		a->pages = n;
		a->cap = cap;
	}
	return memset(&a->pages[a->npages++], 0, sizeof(struct apage));
}

/* Every cursor page file of every re-adopted session, and of the links'
 * reader (lanes-bridge.c), which stands in as one more session. */
static void pages_scan(struct adoption *a)
{
	for (unsigned i = 0; i <= a->b->nsessions; i++) {
		struct session *s = i < a->b->nsessions ? a->b->sessions[i]
						       : lanes_bridge_session(a->b);
		int fd;
		DIR *d;
		struct dirent *e;

		if (!s)
			continue;
		fd = fcntl(s->dirfd, F_DUPFD_CLOEXEC, 0);
		d = fd >= 0 ? fdopendir(fd) : NULL;
		if (!d) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		/* a duplicate shares the offset an earlier walk left at the end */
		rewinddir(d);
		while ((e = readdir(d))) {
			unsigned gen, no;
			unsigned long long pub;
			struct apage *p;
			int k = 0;

			if (sscanf(e->d_name, "cur.%u.%llu.%u%n", &gen, &pub, &no, &k) != 3 ||
			    e->d_name[k] || strlen(e->d_name) >= sizeof(p->name))
				continue;
			p = page_add(a);
			if (!p)
				break;
			p->s = s;
			p->gen = gen;
			p->pub = pub;
			p->number = no;
			/* its length was checked above */
			snprintf(p->name, sizeof(p->name), "%.63s", e->d_name);
			a->max_page = max32(a->max_page, no);
		}
		closedir(d);
	}
}

static struct apage *page_named(struct adoption *a, uint32_t number)
{
	for (unsigned i = 0; i < a->npages; i++)
		if (a->pages[i].number == number)
			return &a->pages[i];
	return NULL;
}

/* ---- the lanes' files ----------------------------------------------------------- */

/* Move lanes/<name> aside into quarantine/, saying why. */
static void lane_quarantine(struct adoption *a, const char *name, const char *why)
{
	char to[300];

	snprintf(to, sizeof(to), "quarantine/lane.%s.%lld", name, (long long)time(NULL));
	a->quarantined++;
	if (renameat(a->g->lanes_dirfd, name, a->b->dirfd, to) < 0) {
		log_msg(LOG_ERR, "lane %s: %s; and it cannot be moved aside (%s): left in place,"
			" not served", name, why, strerror(errno));
		return;
	}
	log_msg(LOG_ERR, "lane %s quarantined at start-up: %s; its files are in %s/%s", name, why,
		a->b->o.dir, to);
}

/* A lane whose making the dead broker did not finish: meta (made last)
 * is missing, or its header was not written yet.  Nobody was given it. */
static bool lane_unfinished(int lanes_dirfd, const char *name)
{
	int d = openat(lanes_dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	uint64_t magic = 1;
	bool unfinished;
	int fd;

	if (d < 0)
		return false;
	fd = openat(d, "meta", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	unfinished = fd < 0 ? errno == ENOENT
			    : pread(fd, &magic, sizeof(magic), 0) >= 0 && magic == 0;
	if (fd >= 0)
		close(fd);
	close(d);
	return unfinished;
}

static void guard_add(struct lanes_reg *g, const void *base, size_t len, uint64_t session)
{
	if (g->guard)
		g->guard(g->ctx, (void *)base, len, session, true);
}

static void guard_del(struct lanes_reg *g, const void *base)
{
	if (g->guard)
		g->guard(g->ctx, (void *)base, 0, 0, false);
}

static void blane_free(struct lanes_reg *g, struct blane *l)
{
	if (l->f.data)
		guard_del(g, l->f.data);
	lanefile_close(&l->f);
	if (l->tx_wake_fd >= 0)
		close(l->tx_wake_fd);
	free(l->holders);
	free(l);
}

/* Highest numbers an entry names: its writer may map pages by them. */
static void entries_note(struct adoption *a, const struct blane *l)
{
	uint32_t n = load_acquire(&l->hold.hdr->n);

	for (unsigned i = 0; i < n && i < SHM_HOLD_MAX; i++) {
		struct hold_view v;

		if (!hold_read(&l->hold, i, &v))
			continue;
		a->max_page = max32(a->max_page, v.page);
		a->max_arm = max32(a->max_arm, v.arm_page);
		if (v.reader > a->max_reader)
			a->max_reader = v.reader;
	}
}

/* lanes/<name> re-opened into the register, or why not. */
static const char *lane_open(struct adoption *a, const char *name)
{
	struct lanes_reg *g = a->g;
	const struct shm_lane_wpage *wp;
	struct shm_lane_meta_state *st;
	struct blane *l = calloc(1, sizeof(*l));
	int r;

	if (!l || !(l->holders = calloc(SHM_HOLD_MAX, sizeof(*l->holders)))) {
		free(l);
		return "out of memory";
	}
	l->tx_wake_fd = l->watch_pidfd = -1;
	r = lanefile_open(g->lanes_dirfd, name, &l->f);
	if (r < 0) {
		static char why[sizeof(l->f.why)];

		snprintf(why, sizeof(why), "%s", l->f.why);
		blane_free(g, l);
		return why;
	}
	if (l->f.hdr.kind != SHM_LANE_LOCAL || !l->f.hdr.number) {
		blane_free(g, l);
		return l->f.hdr.kind != SHM_LANE_LOCAL ? "a received lane (no link writes lanes yet)"
						       : "its header names no lane number";
	}
	for (struct blane *o = g->lanes; o; o = o->next)
		if (o->number == l->f.hdr.number) {
			blane_free(g, l);
			return "another lane has its number";
		}
	/* a new page: the old one was a memfd of the broker that died */
	if (memfd_page_make("shmb-tx-wake", &l->tx_wake_fd) < 0) {
		blane_free(g, l);
		return "no tx_wake page (memfd)";
	}
	l->number = l->f.hdr.number;
	l->publisher = l->f.hdr.publisher;
	l->generation = l->f.hdr.generation;
	l->uid = l->f.hdr.class_uids[0];
	/* its writer may cut or punch it any time: read under the guard only */
	guard_add(g, l->f.data, l->f.data_len, l->publisher);
	ring_init(&l->ring, (uint8_t *)l->f.data + SHM_LANE_RING_OFFSET, l->f.hdr.ring_size);
	hold_table_init(&l->hold, l->f.hold);
	wp = (const void *)l->f.data;
	st = lanefile_state(&l->f);
	if (st->state == SHM_LANE_CUT) {
		l->cut = l->fenced = true;
		l->cut_pos = l->known_end = st->cut_pos;
		l->cut_lane_seq = st->cut_lane_seq;
		l->last_order = st->cut_next_order ? st->cut_next_order - 1 : 0;
	} else if (st->state == SHM_LANE_BAD) {
		l->cut = true;
	} else if (lane_find_end(&l->ring, wp, 0, &l->known_end) < 0) {
		/* its own writer wrote what is no record: its stream only */
		log_msg(LOG_WARNING, "lane %s: no end found (a bad record): bad, and cut", name);
		lanefile_set_bad(&l->f);
		l->cut = true;
	}
	a->max_lane = max32(a->max_lane, l->number);
	entries_note(a, l);
	lanes_link(g, l);
	a->lanes++;
	return NULL;
}

static void lanes_open(struct adoption *a)
{
	int fd = fcntl(a->g->lanes_dirfd, F_DUPFD_CLOEXEC, 0);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *e;

	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	rewinddir(d);
	while ((e = readdir(d))) {
		const char *why;

		if (e->d_name[0] == '.' || !strcmp(e->d_name, NUMBERS_FILE))
			continue;
		why = lane_open(a, e->d_name);
		if (!why)
			continue;
		if (lane_unfinished(a->g->lanes_dirfd, e->d_name)) {
			if (lanefile_remove(a->g->lanes_dirfd, e->d_name) == 0)
				log_msg(LOG_INFO, "lane %s: made when the broker died, given to nobody:"
					" removed", e->d_name);
			a->removed++;
			continue;
		}
		lane_quarantine(a, e->d_name, why);
	}
	closedir(d);
}

/* ---- readers and holders -------------------------------------------------------- */

static struct lreader *reader_find(struct lanes_reg *g, uint64_t session, uint32_t gen)
{
	for (struct lreader *r = g->readers; r; r = r->next)
		if (r->session == session && r->generation == gen)
			return r;
	return NULL;
}

/* The register's reader of s's generation gen, made when it has none.
 * The current generation's is s->lane_reader. */
static struct lreader *reader_get(struct adoption *a, struct session *s, uint32_t gen)
{
	struct lreader *r = reader_find(a->g, s->id, gen);

	if (r)
		return r;
	r = lanes_reader_new(a->g, s->id, gen, s->uid, s->policy == SHM_POLICY_DROP_OLDEST);
	if (!r) {
		log_msg(LOG_WARNING, "session %s: lanes: no reader re-made: %s", s->name, a->g->why);
		return NULL;
	}
	if (gen == s->generation)
		s->lane_reader = r;
	return r;
}

/* Cursor page p (a file of r's session) as one of r's pages.  Full: no
 * new slot is taken on it (which slots its reader was given is not
 * known, and a slot is never given twice). */
static struct lpage *page_get(struct adoption *a, struct lreader *r, struct apage *ap)
{
	struct lpage *p;
	struct stat st;

	for (p = r->pages; p; p = p->next)
		if (p->number == ap->number)
			return p;
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->fd = openat(ap->s->dirfd, ap->name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	p->ro = p->fd >= 0 ? openat(ap->s->dirfd, ap->name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW) : -1;
	if (p->fd < 0 || p->ro < 0 || fstat(p->fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    st.st_size != 4096 || st.st_uid != geteuid()) {
		log_msg(LOG_WARNING, "session %s: cursor page %s cannot be re-adopted", ap->s->name,
			ap->name);
		goto fail;
	}
	p->map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, p->fd, 0);
	if (p->map == MAP_FAILED) {
		p->map = NULL;
		goto fail;
	}
	/* its reader writes it and could cut it under the broker */
	guard_add(a->g, p->map, 4096, r->session);
	p->publisher = ap->pub;
	p->number = ap->number;
	p->used = SHM_CURSOR_SLOTS;
	snprintf(p->name, sizeof(p->name), "%s", ap->name);
	p->next = r->pages;
	r->pages = p;
	return p;
fail:
	if (p->fd >= 0)
		close(p->fd);
	if (p->ro >= 0)
		close(p->ro);
	free(p);
	return NULL;
}

static struct lhold *held_by(struct blane *l, const struct lreader *r)
{
	for (unsigned i = 0; i < l->nholders; i++)
		if (l->holders[i].r == r)
			return &l->holders[i];
	return NULL;
}

/*
 * Entry idx of l, r's (of the session's current generation) on page p,
 * moved to an entry naming r's new wake and arm pages: the same cursor
 * slot, started where the take-over walk says (the last record boundary
 * at or below the slot, at least the floor), or, when the slot lies below
 * the floor (the dead broker added the entry and never wrote the slot,
 * so its reader was never told), by the floor protocol, the start then
 * written into the slot as lanes.c does for a new holder.  Old entry
 * freed last: at every moment one of the two holds at least as much.
 */
static int entry_rewrite(struct blane *l, unsigned idx, const struct hold_view *v,
			 struct lreader *r, struct lpage *p)
{
	const struct shm_lane_wpage *wp = (const void *)l->f.data;
	uint64_t *slot = &p->map->slot[v->slot];
	uint64_t fl = hold_floor(&l->hold, idx), S;
	struct hold_view nv = *v;
	int n;

	nv.reader = r->number;
	nv.arm_page = r->arm->number;
	nv.arm_slot = r->arm_slot;
	n = hold_add(&l->hold, &nv, fl);
	if (n < 0)
		return n;
	if (load_acquire(slot) < fl) {
		S = hold_start(&l->hold, (unsigned)n, wp, fl);
		store_release(slot, S);
	} else if (hold_takeover(&l->hold, idx, (unsigned)n, wp, &l->ring, slot, &S) < 0) {
		hold_free(&l->hold, (unsigned)n);
		return -EBADMSG;
	}
	hold_free(&l->hold, idx);
	/* the block timeout counts from the restart; a block reader's WATCH
	 * entry (let go at an unsubscribe or the block timeout: which, the
	 * dead broker knew) is held again by its next subscribe to one of
	 * the lane's topics, as one let go at an unsubscribe */
	l->holders[l->nholders++] = (struct lhold){
		.r = r, .idx = n, .kind = v->kind, .start = S, .seen = S, .seen_ns = clock_mono_ns(),
		.released = v->kind == SHM_HOLD_WATCH && !r->drop_oldest };
	return 0;
}

/* Every live entry of l back in the register as a holder, or freed. */
static void entries_adopt(struct adoption *a, struct blane *l)
{
	uint32_t n = load_acquire(&l->hold.hdr->n);
	uint16_t live[SHM_HOLD_MAX];
	unsigned nlive = 0;

	/* the live ones first: a rewrite takes a free slot, maybe one not
	 * looked at yet, and must not be taken for an entry of the old run */
	for (unsigned i = 0; i < n && i < SHM_HOLD_MAX; i++)
		if (load_acquire(&l->hold.ent[i].tag) & SHM_HOLD_LIVE)
			live[nlive++] = (uint16_t)i;
	for (unsigned k = 0; k < nlive; k++) {
		unsigned i = live[k];
		struct hold_view v;
		struct apage *ap;
		struct lreader *r = NULL;
		struct lpage *p = NULL;
		const char *why = NULL;

		if (!hold_read(&l->hold, i, &v))
			continue;
		ap = page_named(a, v.page);
		if (v.kind != SHM_HOLD_HOLD && v.kind != SHM_HOLD_WATCH)
			why = "of a kind nothing makes yet";
		else if (!ap || ap->pub != l->publisher || v.slot >= SHM_CURSOR_SLOTS)
			why = "naming a cursor page that is gone";
		else if (ap->gen > ap->s->generation)
			why = "of a reader generation never given out";
		else if (!(r = reader_get(a, ap->s, ap->gen)) || !(p = page_get(a, r, ap)))
			why = "of a reader that cannot be re-made";
		else if (held_by(l, r))
			why = "a second one of its reader";
		if (!why && ap->gen < ap->s->generation) {
			/* a reader's owner switch the broker did not finish: moved
			 * to the current generation below, as it would have been */
			l->holders[l->nholders++] = (struct lhold){
				.r = r, .idx = (int)i, .kind = v.kind, .start = hold_floor(&l->hold, i) };
			continue;
		}
		if (!why) {
			int ret = entry_rewrite(l, i, &v, r, p);

			if (ret == -ENOSPC) {
				/* kept as it is: it holds, but names the dead
				 * broker's pages, so its writer cannot wake its
				 * reader (who sleeps 1 s at most) */
				log_msg(LOG_WARNING, "lane %s: hold entry %u kept on the old wake"
					" pages: every entry is taken", l->f.name, i);
				l->holders[l->nholders++] = (struct lhold){
					.r = r, .idx = (int)i, .kind = v.kind,
					.start = hold_floor(&l->hold, i), .seen = hold_floor(&l->hold, i),
					.seen_ns = clock_mono_ns() };
				ret = 0;
			}
			if (ret == 0) {
				a->holders++;
				continue;
			}
			why = "bad records where its reader stood";
		}
		log_msg(LOG_INFO, "lane %s: hold entry %u (page %u slot %u) freed: %s", l->f.name, i,
			v.page, v.slot, why);
		hold_free(&l->hold, i);
		a->freed++;
	}
}

static void holder_forget(struct blane *l, struct lhold *h)
{
	hold_free(&l->hold, (unsigned)h->idx);
	*h = l->holders[--l->nholders];
}

/* Readers of older generations (a switch cut short): their holds move to
 * the session's current reader by the take-over, and they end (their
 * pages removed). */
static void old_readers_move(struct adoption *a)
{
	struct lreader *r = a->g->readers, *next;

	for (; r; r = next) {
		struct session *s = session_by_id(a->b, r->session);
		struct lreader *cur;

		next = r->next;
		if (!s || r->generation == s->generation)
			continue;
		cur = reader_get(a, s, s->generation);
		for (struct blane *l = a->g->lanes; l; l = l->next) {
			struct lhold *h = held_by(l, r);

			if (!h)
				continue;
			/* already moved before the broker died: the old one goes */
			if (cur && !held_by(l, cur)) {
				if (lanes_holder_move(a->g, l, h, cur) == 0) {
					a->holders++;
					continue;
				}
				log_msg(LOG_WARNING, "session %s: lane %s let go: %s", s->name,
					l->f.name, a->g->why);
			}
			holder_forget(l, h);
		}
		/* a reader just made went first in the list, before r: next
		 * is still r's successor */
		lanes_reader_end(a->g, r);
	}
}

/* Sessions whose owners read lanes and that held none: a reader all the
 * same (the lanes made while it is detached hold for it); and every
 * reader its session's subscriptions. */
static void readers_complete(struct adoption *a)
{
	for (unsigned i = 0; i < a->b->nsessions; i++) {
		struct session *s = a->b->sessions[i];
		struct lreader *r = s->lane_reader;

		if (!r && faccessat(s->dirfd, LANES_READER_MARK, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
			r = reader_get(a, s, s->generation);
		if (!r)
			continue;
		if (!r->topics && s->ntopics && (r->topics = malloc(s->ntopics * sizeof(uint32_t)))) {
			memcpy(r->topics, s->topics, s->ntopics * sizeof(uint32_t));
			r->ntopics = r->topics_cap = s->ntopics;
		}
		/* made when a page named it and no mark said so (a crash
		 * between the two): the next start knows it too */
		{
			int fd = openat(s->dirfd, LANES_READER_MARK,
					O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);

			if (fd >= 0)
				close(fd);
		}
	}
}

/* ---- writers ----------------------------------------------------------------- */

/* Undo the fence of an owner switch that never took effect (its
 * generation was not stored): the cut fields cleared, the fence marker
 * swapped back, so that the same owner writes on (as tx_recover() does
 * for its TX file). */
static void lane_unfence(struct adoption *a, struct blane *l)
{
	struct shm_lane_meta_state *st = lanefile_state(&l->f);
	size_t len = SHM_LANE_RING_OFFSET + l->ring.size;
	bool fields = st->cut_pos || st->cut_lane_seq || st->cut_next_order;
	struct ring ring;
	uint8_t *rw;
	int r;

	rw = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, l->f.data_fd, 0);
	if (rw == MAP_FAILED) {
		log_msg(LOG_WARNING, "lane %s: cannot map it to undo a fence: %s", l->f.name,
			strerror(errno));
		return;
	}
	guard_add(a->g, rw, len, l->publisher);
	ring_init(&ring, rw + SHM_LANE_RING_OFFSET, l->ring.size);
	r = ring_unfence(&ring, l->known_end);
	guard_del(a->g, rw);
	munmap(rw, len);
	if (fields)
		lanefile_cut_fields(&l->f, 0, 0, 0);
	if (r == 0 || fields)
		log_msg(LOG_INFO, "lane %s: fenced by an owner switch that never took effect: its"
			" writer writes on", l->f.name);
}

/* Each open lane stays open for a living owner of its generation, whose
 * death cuts it (ctl_lanes_deaths); every other is cut after its last
 * record (section 7: steps 1, 2 and 5), its order kept for the session's
 * next owner. */
static void writers_settle(struct adoption *a)
{
	for (struct blane *l = a->g->lanes; l; l = l->next) {
		struct session *s = session_by_id(a->b, l->publisher);
		uint64_t *next = s ? &s->lanes_next_seq : NULL;

		if (l->cut) {
			if (next && l->last_order > *next)
				*next = l->last_order;
			continue;
		}
		if (s && l->generation > s->generation) {
			/* no owner ever had that generation: nobody wrote it */
			log_msg(LOG_WARNING, "lane %s: of a generation its session never gave out:"
				" removed", l->f.name);
			lanefile_set_bad(&l->f);
			l->cut = true;
			continue;
		}
		if (s && l->generation == s->generation && s->adopted_pidfd >= 0) {
			lane_unfence(a, l);
			l->watch_pidfd = fcntl(s->adopted_pidfd, F_DUPFD_CLOEXEC, 0);
			if (l->watch_pidfd >= 0)
				continue;
		}
		if (lanes_publisher_end(a->g, l->publisher, l->generation, next) < 0)
			log_msg(LOG_WARNING, "lanes: %s", a->g->why);
	}
}

/* Cursor pages no holder names (their reader let them go, or the broker
 * died making them). */
static void pages_sweep(struct adoption *a)
{
	for (unsigned i = 0; i < a->npages; i++) {
		const struct apage *p = &a->pages[i];
		bool kept = false;

		for (struct lreader *r = a->g->readers; r && !kept; r = r->next)
			for (struct lpage *q = r->pages; q && !kept; q = q->next)
				kept = r->session == p->s->id && q->number == p->number;
		if (!kept)
			unlinkat(p->s->dirfd, p->name, 0);
	}
}

int lanes_adopt(struct broker *b)
{
	struct adoption a = { .b = b, .g = b->lanes };
	struct lanes_reg *g = b->lanes;
	struct numbers_rec n;
	unsigned was_cut = 0, cut = 0, removed = 0;

	numbers_fd = numbers_open(&a, &n);
	if (numbers_fd < 0)
		return numbers_fd;
	pages_scan(&a);
	lanes_open(&a);
	/* past every number a client may know, before any is taken */
	g->next_lane = max32(max32(n.lane, a.max_lane + 1), g->next_lane);
	g->next_page = max32(max32(n.page, a.max_page + 1), g->next_page);
	g->next_arm = max32(max32(n.arm, a.max_arm + 1), g->next_arm);
	if (n.reader > g->next_reader)
		g->next_reader = n.reader;
	if (a.max_reader + 1 > g->next_reader)
		g->next_reader = a.max_reader + 1;
	g->numbers_taken = numbers_keep;
	numbers_keep(b);
	for (struct blane *l = g->lanes; l; l = l->next)
		if (lanefile_state(&l->f)->state != SHM_LANE_BAD)
			entries_adopt(&a, l);
	old_readers_move(&a);
	readers_complete(&a);
	for (struct blane *l = g->lanes; l; l = l->next)
		was_cut += l->cut;
	writers_settle(&a);
	for (struct blane *l = g->lanes; l; l = l->next) {
		cut += l->cut;
		removed++;
	}
	lanes_tick(g);
	for (struct blane *l = g->lanes; l; l = l->next)
		removed--;
	pages_sweep(&a);
	/* nobody is attached: every owner is told again at its REATTACH */
	lanes_push_done(g);
	free(a.pages);
	if (a.lanes || a.quarantined || a.removed)
		log_msg(LOG_NOTICE, "lanes re-adopted: %u lane(s) (%u cut now, %u removed as passed"
			" or held by nobody), %u holder(s), %u entr%s freed; %u unfinished lane(s)"
			" removed, %u quarantined", a.lanes, cut - was_cut, removed, a.holders, a.freed,
			a.freed == 1 ? "y" : "ies", a.removed, a.quarantined);
	return 0;
}

void lanes_adopt_stop(void)
{
	if (numbers_fd >= 0)
		close(numbers_fd);
	numbers_fd = -1;
}
