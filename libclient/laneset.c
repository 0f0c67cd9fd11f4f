/*
 * libclient/laneset.c - libshmb's reader over many lanes (see lanes.h;
 * docs/design/data-path.md, sections 1, 2, 4 and 5).
 *
 * Must never: read a byte of a lane's files outside a mapping the SIGBUS
 * guard covers; trust a size fstat did not give, or a header field before
 * its checksum; acknowledge a record peeked for the merge and not
 * returned, or records skipped past one returned and not yet
 * acknowledged; unmap a lane over or bad while a record returned from it
 * waits for its acknowledgement (laneset_remove() and laneset_free() are the
 * caller saying it is done).
 */
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "libclient/laneset.h"
#include "libclient/sigbus.h"
#include "shm/atomics.h"
#include "shm/clock.h"
#include "shm/crc32c.h"
#include "shm/futex.h"
#include "shm/segment.h"

#define PAGE 4096u
#define SKIP_BUDGET 1024u          /* records of other topics skipped per call, at most */
#define MERGE_TRIES 8u             /* a drop-oldest head that moved under the merge */
#define COUNT_STEPS (4u * LANESET_QUANTUM) /* records walked to size a quantum */
#define SPIN_YIELD_NS 20000ull     /* spinning past this: yield between looks */
#define SLEEP_MAX_NS 1000000000ull /* no sleep longer without a look */
#define NOISY_RETURNS 16u          /* wake-ups in a row without data ... */
#define NOISY_STEP_NS 1000000ull   /* ... then a look every ms for the rest of the wait */
/* With records returned and not acknowledged, a sleep is at most this
 * long: a writer sees no progress in the slot, may take the reader for a
 * noisy one and skip a wake (shm/lane-rw.c wakes it at most once a ms
 * then, and only at a commit): the reader looks for itself as often. */
#define UNACKED_STEP_NS 1000000ull

struct laneset_lane {
	struct lane_reader r;
	struct lane_rec head;      /* the last look at its next record */
	struct laneset_pub *pub;
	uint32_t no, page, slot;
	bool drop_oldest, in_place;
	bool held_drop, held_in_place; /* as the broker described it (a let-go changes the two above) */
	bool released;             /* let go at an unsubscribe: what it jumps over is no gap */
	bool toobig;               /* head is longer than the caller's buffer */
	bool empty;                /* the merge's first look found nothing */
	bool gone;                 /* over or bad: reported, read no more */
	bool returned;             /* a record returned since the last ack */
	uint64_t done;             /* after the last record returned or skipped */
	uint64_t ackpos;           /* acknowledged (stored once its slot is mapped) */
	uint64_t missed;           /* lost before records skipped: told with the next one */
	void *data, *meta;
	size_t data_len;
	uint32_t *tx_wake;
	uint64_t tx_dev, tx_ino;   /* which page tx_wake is (a restarted broker gives another) */
	int sb_data, sb_meta, sb_tx;
};

struct laneset_page {
	uint32_t no;
	struct shm_cursor_page *pg;
	int sb;
};

struct laneset_pub {
	uint64_t id;
	struct laneset_lane **lane;
	unsigned nlane;
	struct laneset_page *page;
	unsigned npage;
	unsigned turn;             /* records left of its quantum; 0: a new turn */
	uint64_t last_order;       /* of the last record returned */
	bool paused;               /* laneset_pause(): not read for now */
};

__attribute__((format(printf, 3, 4)))
static int say(struct laneset *s, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->why, sizeof(s->why), fmt, ap);
	va_end(ap);
	return err;
}

static bool topic_on(const struct laneset *s, uint32_t t)
{
	return t < SHM_LANE_TOPIC_BITS && (s->topics[t / 8] & (1u << (t % 8)));
}

/* ---- mappings -------------------------------------------------------------- */

/* fd's size, as fstat gives it, must be len. */
static int size_is(struct laneset *s, int fd, uint64_t len, const char *file, const char *of,
		   uint32_t no)
{
	struct stat st;
	int e;

	if (fstat(fd, &st) < 0) {
		e = errno;
		return say(s, -e, "%s of %s %u: cannot fstat: %s", file, of, no, strerror(e));
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != len)
		return say(s, -EMSGSIZE, "%s of %s %u is %lld bytes, not %llu", file, of, no,
			   (long long)st.st_size, (unsigned long long)len);
	return 0;
}

/* fd's first len bytes, mapped under the SIGBUS guard before any read. */
static int map_guarded(struct laneset *s, int fd, size_t len, int prot, void **p, int *sb)
{
	void *m;
	int e = sigbus_install();

	if (e < 0)
		return say(s, e, "cannot install the SIGBUS guard: %s", strerror(-e));
	m = mmap(NULL, len, prot, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		e = errno;
		return say(s, -e, "cannot map %zu bytes: %s", len, strerror(e));
	}
	*sb = sigbus_add(m, len, prot);
	if (*sb < 0) {
		munmap(m, len);
		return say(s, *sb, "the SIGBUS guard is full");
	}
	*p = m;
	return 0;
}

/* A 4096-byte page (tx_wake, cursor page) mapped read-write, guarded. */
static int map_page(struct laneset *s, int fd, const char *file, const char *of, uint32_t no,
		    void **p, int *sb)
{
	int ret = size_is(s, fd, PAGE, file, of, no);

	return ret < 0 ? ret : map_guarded(s, fd, PAGE, PROT_READ | PROT_WRITE, p, sb);
}

/* Which file fd is (0, 0 when fstat fails: never equal to a page's). */
static void page_id(int fd, uint64_t *dev, uint64_t *ino)
{
	struct stat st;

	*dev = *ino = 0;
	if (fstat(fd, &st) == 0) {
		*dev = st.st_dev;
		*ino = st.st_ino;
	}
}

/* Map the 4096-byte page fd over the one at `at`, in one step: whoever
 * loads or wakes through `at` meanwhile sees one page or the other, never
 * a hole; the guard over `at` stays. */
static int page_replace(struct laneset *s, int fd, void *at, const char *of, uint32_t no)
{
	void *m;
	int ret = size_is(s, fd, PAGE, "tx_wake", of, no);

	if (ret < 0)
		return ret;
	m = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return say(s, -errno, "%s %u: tx_wake cannot be mapped", of, no);
	if (mremap(m, PAGE, PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, at) == MAP_FAILED) {
		ret = -errno;
		munmap(m, PAGE);
		return say(s, ret, "%s %u: tx_wake cannot be replaced", of, no);
	}
	return 0;
}

static void unmap_guarded(void *p, size_t len, int sb)
{
	if (!p)
		return;
	/* first: the guard never covers a range mapped anew since */
	sigbus_remove(sb);
	munmap(p, len);
}

static void lane_release(struct laneset_lane *l)
{
	unmap_guarded(l->data, l->data_len, l->sb_data);
	unmap_guarded(l->meta, SHM_LANE_META_SIZE, l->sb_meta);
	unmap_guarded(l->tx_wake, PAGE, l->sb_tx);
	free(l);
}

/* ---- publishers and their pages ------------------------------------------- */

static struct laneset_pub *pub_find(const struct laneset *s, uint64_t id)
{
	for (unsigned i = 0; i < s->npub; i++)
		if (s->pub[i]->id == id)
			return s->pub[i];
	return NULL;
}

static struct laneset_pub *pub_get(struct laneset *s, uint64_t id)
{
	struct laneset_pub *p = pub_find(s, id), **np;

	if (p)
		return p;
	np = realloc(s->pub, (s->npub + 1) * sizeof(*np));
	if (!np)
		return NULL;
	s->pub = np;
	p = calloc(1, sizeof(*p));
	if (p) {
		p->id = id;
		s->pub[s->npub++] = p;
	}
	return p;
}

/* Forget publishers with neither lanes nor pages (the turn order kept). */
static void pubs_prune(struct laneset *s)
{
	unsigned k = 0, cur = 0;

	for (unsigned i = 0; i < s->npub; i++) {
		struct laneset_pub *p = s->pub[i];

		if (p->nlane || p->npage) {
			cur += i < s->cur; /* the turn stays where it was */
			s->pub[k++] = p;
			continue;
		}
		free(p->lane);
		free(p->page);
		free(p);
	}
	s->npub = k;
	s->cur = cur;
}

static struct laneset_page *page_of(const struct laneset_pub *p, uint32_t no)
{
	for (unsigned i = 0; i < p->npage; i++)
		if (p->page[i].no == no)
			return &p->page[i];
	return NULL;
}

static struct laneset_lane *lane_find(const struct laneset *s, uint32_t no, unsigned *at)
{
	for (unsigned i = 0; i < s->npub; i++)
		for (unsigned j = 0; j < s->pub[i]->nlane; j++)
			if (s->pub[i]->lane[j]->no == no) {
				*at = j;
				return s->pub[i]->lane[j];
			}
	return NULL;
}

/* ---- adding a lane ---------------------------------------------------------- */

static int desc_check(struct laneset *s, const struct laneset_desc *d)
{
	struct laneset_pub *p = pub_find(s, d->publisher);
	unsigned at;

	if (d->kind != SHM_LANE_LOCAL && d->kind != SHM_LANE_RECEIVED)
		return say(s, -EINVAL, "lane %u: unknown kind %u", d->lane, d->kind);
	if (d->cursor_slot >= SHM_CURSOR_SLOTS || d->start % SHM_REC_ALIGN)
		return say(s, -EINVAL, "lane %u: cursor slot %u or start %llu out of range", d->lane,
			   d->cursor_slot, (unsigned long long)d->start);
	if (lane_find(s, d->lane, &at))
		return say(s, -EEXIST, "lane %u is read already", d->lane);
	for (unsigned i = 0; p && i < p->nlane; i++)
		/* a slot is never shared: another lane's value there would free
		 * what this one did not read */
		if (p->lane[i]->page == d->cursor_page && p->lane[i]->slot == d->cursor_slot)
			return say(s, -EEXIST, "lane %u: cursor slot %u.%u is lane %u's", d->lane,
				   d->cursor_page, d->cursor_slot, p->lane[i]->no);
	return 0;
}

/* meta's size and header, checked on a private copy read with pread. */
static int meta_check(struct laneset *s, const struct laneset_desc *d, int fd,
		      struct shm_lane_meta_hdr *h)
{
	int ret = size_is(s, fd, SHM_LANE_META_SIZE, "meta", "lane", d->lane);

	if (ret < 0)
		return ret;
	if (pread(fd, h, sizeof(*h), 0) != (ssize_t)sizeof(*h))
		return say(s, -EIO, "lane %u: cannot read its meta header", d->lane);
	if (h->magic != SHM_LANE_MAGIC)
		return say(s, -EBADMSG, "lane %u: meta is not a lane's (magic %016llx)", d->lane,
			   (unsigned long long)h->magic);
	/* another layout may put its checksum elsewhere: version first */
	if (h->layout_version != SHM_LANE_LAYOUT_VERSION)
		return say(s, -EPROTONOSUPPORT, "lane %u: layout version %u, this build knows %u",
			   d->lane, h->layout_version, SHM_LANE_LAYOUT_VERSION);
	if (h->checksum != crc32c(0, h, offsetof(struct shm_lane_meta_hdr, checksum)))
		return say(s, -EILSEQ, "lane %u: meta header fails its checksum", d->lane);
	if (!segment_ring_size_ok(h->ring_size))
		return say(s, -EINVAL, "lane %u: ring size %llu not a power of two within bounds",
			   d->lane, (unsigned long long)h->ring_size);
	if (h->kind != d->kind || (h->kind == SHM_LANE_LOCAL && h->publisher != d->publisher))
		return say(s, -EINVAL, "lane %u: meta says kind %u publisher %llu", d->lane, h->kind,
			   (unsigned long long)h->publisher);
	return 0;
}

/* The reader's state, and the lane into its publisher's list. */
static int lane_start(struct laneset *s, struct laneset_lane *l, const struct laneset_desc *d,
		      const struct shm_lane_meta_hdr *h)
{
	struct laneset_pub *p = pub_get(s, d->publisher);
	struct laneset_page *pg = p ? page_of(p, d->cursor_page) : NULL;
	struct laneset_lane **nl = p ? realloc(p->lane, (p->nlane + 1) * sizeof(*nl)) : NULL;
	uint64_t start = d->start, order = d->order, at;
	int ret;

	if (!nl)
		return say(s, -ENOMEM, "lane %u: no memory", d->lane);
	p->lane = nl;
	/*
	 * A push sent again (a reattach) for a lane this set read to its cut
	 * and let go names where the broker's hold started, which may be
	 * below what was read and acknowledged since: the broker checks the
	 * cursor before it sends, the reader may ack its end just after.  The
	 * broker writes a new hold's start into its slot before the push and
	 * only this reader writes there after, so what the slot says is
	 * acknowledged already: read on from there, never twice.
	 */
	if (pg) {
		at = load_acquire(&pg->pg->slot[d->cursor_slot]);
		if (at > start && at % SHM_REC_ALIGN == 0 && at - start <= h->ring_size) {
			start = at;
			order = 0;
		}
	}
	ret = lane_reader_init(&l->r, l->data, h->ring_size, l->meta,
			       pg ? &pg->pg->slot[d->cursor_slot] : NULL, h->kind == SHM_LANE_RECEIVED,
			       d->drop_oldest, start, order);
	if (ret < 0)
		return say(s, ret, "lane %u: cannot read it from %llu", d->lane,
			   (unsigned long long)start);
	l->r.tx_wake = l->tx_wake;
	l->pub = p;
	l->no = d->lane;
	l->page = d->cursor_page;
	l->slot = d->cursor_slot;
	l->drop_oldest = l->held_drop = d->drop_oldest;
	l->in_place = l->held_in_place = d->in_place && !d->drop_oldest;
	l->done = l->ackpos = start;
	p->lane[p->nlane++] = l;
	return 0;
}

int laneset_push_desc(const struct proto_lane *m, const int *fds, unsigned nfds,
		      struct laneset_desc *d, int *page_fd, int *wake_fd)
{
	unsigned want = 2 + !!(m->flags & PROTO_LANE_PAGE) + !!(m->flags & PROTO_LANE_WAKE) +
			2 * !!(m->flags & PROTO_LANE_SELF);
	unsigned k = 2;

	if (nfds != want)
		return -EINVAL;
	*d = (struct laneset_desc){
		.lane = m->lane,
		.kind = m->kind,
		.publisher = m->publisher,
		.start = m->start,
		.order = m->order,
		.cursor_page = m->page,
		.cursor_slot = m->slot,
		.drop_oldest = m->flags & PROTO_LANE_DROP_OLDEST,
		.in_place = m->flags & PROTO_LANE_IN_PLACE,
	};
	*page_fd = (m->flags & PROTO_LANE_PAGE) ? fds[k++] : -1;
	*wake_fd = (m->flags & PROTO_LANE_WAKE) ? fds[k++] : -1;
	return (int)k;
}

int laneset_add(struct laneset *s, const struct laneset_desc *d, int data_fd, int meta_fd,
	      int tx_wake_fd)
{
	struct shm_lane_meta_hdr h;
	struct laneset_lane *l;
	int ret;

	s->why[0] = '\0';
	ret = desc_check(s, d);
	if (ret == 0)
		ret = meta_check(s, d, meta_fd, &h);
	if (ret == 0)
		ret = size_is(s, data_fd, SHM_LANE_RING_OFFSET + h.ring_size, "data", "lane", d->lane);
	if (ret < 0)
		return ret;
	l = calloc(1, sizeof(*l));
	if (!l)
		return say(s, -ENOMEM, "lane %u: no memory", d->lane);
	l->sb_data = l->sb_meta = l->sb_tx = -1;
	l->data_len = SHM_LANE_RING_OFFSET + h.ring_size;
	ret = map_guarded(s, meta_fd, SHM_LANE_META_SIZE, PROT_READ, &l->meta, &l->sb_meta);
	if (ret == 0)
		ret = map_guarded(s, data_fd, l->data_len, PROT_READ, &l->data, &l->sb_data);
	if (ret == 0 && tx_wake_fd >= 0)
		ret = map_page(s, tx_wake_fd, "tx_wake", "lane", d->lane, (void **)&l->tx_wake, &l->sb_tx);
	if (ret == 0 && tx_wake_fd >= 0)
		page_id(tx_wake_fd, &l->tx_dev, &l->tx_ino);
	if (ret == 0)
		ret = lane_start(s, l, d, &h);
	if (ret < 0) {
		lane_release(l);
		pubs_prune(s);
	}
	return ret;
}

static void lane_gone(struct laneset *s, struct laneset_lane *l, int ev);

int laneset_released(struct laneset *s, uint32_t lane)
{
	unsigned at;
	struct laneset_lane *l = lane_find(s, lane, &at);

	if (!l)
		return say(s, -ENOENT, "lane %u is not read", lane);
	l->released = true;
	l->missed = 0;
	return 0;
}

int laneset_rehold(struct laneset *s, const struct laneset_desc *d)
{
	unsigned at;
	struct laneset_lane *l = lane_find(s, d->lane, &at);
	struct laneset_page *pg;
	uint64_t pos = d->start, order = d->order, ack;
	bool received, returned;
	int ret;

	s->why[0] = '\0';
	if (!l || l->gone)
		return say(s, -ENOENT, "lane %u is not read", d->lane);
	if (d->cursor_slot >= SHM_CURSOR_SLOTS || d->start % SHM_REC_ALIGN ||
	    d->publisher != l->pub->id)
		return say(s, -EINVAL, "lane %u: cursor slot %u, start %llu or publisher out of range",
			   d->lane, d->cursor_slot, (unsigned long long)d->start);
	for (unsigned i = 0; i < l->pub->nlane; i++)
		if (l->pub->lane[i] != l && l->pub->lane[i]->page == d->cursor_page &&
		    l->pub->lane[i]->slot == d->cursor_slot)
			return say(s, -EEXIST, "lane %u: cursor slot %u.%u is lane %u's", d->lane,
				   d->cursor_page, d->cursor_slot, l->pub->lane[i]->no);
	/* where it stands is held too when it is at or above the new start;
	 * below it, what lay there was overwritten (records of topics it did
	 * not read then) */
	if (l->done >= d->start) {
		pos = l->done;
		order = l->r.last_order;
	}
	/* the new slot says what the application acknowledged (at least the
	 * broker's start): records returned and not yet acknowledged stay
	 * held, and a crash before the ack brings them again */
	ack = l->ackpos > d->start ? l->ackpos : d->start;
	if (ack > pos)
		ack = pos;
	returned = l->returned && pos > ack;
	pg = page_of(l->pub, d->cursor_page);
	received = l->r.received;
	ret = lane_reader_init(&l->r, l->data, l->data_len - SHM_LANE_RING_OFFSET, l->meta,
			       pg ? &pg->pg->slot[d->cursor_slot] : NULL, received, l->held_drop, pos,
			       order);
	if (ret < 0) {
		lane_gone(s, l, LANESET_EV_BAD);
		return say(s, ret, "lane %u: cannot read it from %llu", d->lane,
			   (unsigned long long)pos);
	}
	l->r.tx_wake = l->tx_wake;
	l->page = d->cursor_page;
	l->slot = d->cursor_slot;
	l->drop_oldest = l->held_drop;
	l->in_place = l->held_in_place;
	l->toobig = l->empty = l->released = false;
	l->returned = returned;
	l->missed = 0;
	l->done = pos;
	l->ackpos = ack;
	l->r.acked = ack; /* the next ack writes the slot */
	if (s->buf_owner == l)
		s->buf_owner = NULL;
	/* the broker wrote the start there; this is at or above it */
	if (l->r.slot)
		store_release(l->r.slot, ack);
	return 0;
}

int laneset_set_tx_wake(struct laneset *s, uint32_t lane, int fd)
{
	unsigned at;
	struct laneset_lane *l = lane_find(s, lane, &at);
	uint64_t arm;
	int ret;

	s->why[0] = '\0';
	if (!l)
		return say(s, -ENOENT, "lane %u is not read", lane);
	if (l->tx_wake) {
		uint64_t dev, ino;

		page_id(fd, &dev, &ino);
		if (dev == l->tx_dev && ino == l->tx_ino)
			return say(s, -EEXIST, "lane %u has its tx_wake", lane);
		/* another page (a restarted broker's): its writer sleeps on
		 * that one from its next look */
		ret = page_replace(s, fd, l->tx_wake, "lane", lane);
		if (ret < 0)
			return ret;
	} else {
		ret = map_page(s, fd, "tx_wake", "lane", lane, (void **)&l->tx_wake, &l->sb_tx);
		if (ret < 0)
			return ret;
	}
	page_id(fd, &l->tx_dev, &l->tx_ino);
	l->r.tx_wake = l->tx_wake;
	/* an ack stored before the page came woke nobody: look once, as
	 * lane_ack() does after a slot store */
	fence_full();
	arm = load_relaxed(&l->r.wp->space_arm);
	if (arm && arm != l->r.space_woken) {
		l->r.space_woken = arm;
		fetch_add_release(l->tx_wake, 1);
		futex_wake(l->tx_wake, INT_MAX);
	}
	return 0;
}

static void store_ack(struct laneset_lane *l, uint64_t pos)
{
	if (pos <= l->ackpos)
		return;
	l->ackpos = pos;
	lane_ack(&l->r, pos); /* nothing yet while the page is not mapped */
}

int laneset_cursor_page(struct laneset *s, uint64_t publisher, uint32_t page_no, int fd)
{
	struct laneset_pub *p = pub_find(s, publisher);
	struct laneset_page *np;
	void *m = NULL;
	int sb = -1, ret;

	s->why[0] = '\0';
	if (p && page_of(p, page_no))
		return say(s, -EEXIST, "cursor page %u of publisher %llu is mapped", page_no,
			   (unsigned long long)publisher);
	ret = map_page(s, fd, "file", "cursor page", page_no, &m, &sb);
	if (ret < 0)
		return ret;
	p = pub_get(s, publisher);
	np = p ? realloc(p->page, (p->npage + 1) * sizeof(*np)) : NULL;
	if (!np) {
		unmap_guarded(m, PAGE, sb);
		pubs_prune(s);
		return say(s, -ENOMEM, "cursor page %u: no memory", page_no);
	}
	p->page = np;
	p->page[p->npage++] = (struct laneset_page){ .no = page_no, .pg = m, .sb = sb };
	for (unsigned i = 0; i < p->nlane; i++) {
		struct laneset_lane *l = p->lane[i];

		if (l->page != page_no || l->r.slot)
			continue;
		l->r.slot = &((struct shm_cursor_page *)m)->slot[l->slot];
		lane_ack(&l->r, l->ackpos);
	}
	return 0;
}

int laneset_remove(struct laneset *s, uint32_t lane)
{
	unsigned at;
	struct laneset_lane *l = lane_find(s, lane, &at);

	if (!l)
		return -ENOENT;
	l->pub->lane[at] = l->pub->lane[--l->pub->nlane];
	if (s->buf_owner == l)
		s->buf_owner = NULL;
	lane_release(l);
	pubs_prune(s);
	return 0;
}

int laneset_topic(struct laneset *s, uint32_t topic_id, bool on)
{
	if (topic_id >= SHM_LANE_TOPIC_BITS)
		return -EINVAL;
	if (on)
		s->topics[topic_id / 8] |= (uint8_t)(1u << (topic_id % 8));
	else
		s->topics[topic_id / 8] &= (uint8_t)~(1u << (topic_id % 8));
	return 0;
}

void laneset_topics_clear(struct laneset *s)
{
	memset(s->topics, 0, SHM_LANE_TOPIC_BITS / 8);
}

int laneset_init(struct laneset *s, laneset_event_fn on_event, void *ctx)
{
	memset(s, 0, sizeof(*s));
	s->topics = calloc(SHM_LANE_TOPIC_BITS / 8, 1);
	if (!s->topics)
		return -ENOMEM;
	s->on_event = on_event;
	s->ctx = ctx;
	/* fresh across the sets a process makes: a writer wakes a value once */
	s->arm_seq = clock_mono_ns();
	s->faults_seen = sigbus_faults();
	return 0;
}

void laneset_free(struct laneset *s)
{
	for (unsigned i = 0; i < s->npub; i++) {
		struct laneset_pub *p = s->pub[i];

		for (unsigned j = 0; j < p->nlane; j++)
			lane_release(p->lane[j]);
		for (unsigned j = 0; j < p->npage; j++)
			unmap_guarded(p->page[j].pg, PAGE, p->page[j].sb);
		free(p->lane);
		free(p->page);
		free(p);
	}
	free(s->pub);
	free(s->topics);
	free(s->floors);
	memset(s, 0, sizeof(*s));
}

/* ---- reading ----------------------------------------------------------------- */

/* The lane reads no more: reported once, released once acknowledged. */
static void lane_gone(struct laneset *s, struct laneset_lane *l, int ev)
{
	if (l->gone)
		return;
	l->gone = true;
	s->sweep = true;
	s->events++;
	if (s->on_event)
		s->on_event(s->ctx, ev, l->pub->id, l->no);
}

/* A file cut under a mapping reads as zeroes from the fault on: its lane
 * is bad, whatever its records looked like (section 5). */
static void faults_scan(struct laneset *s, uint64_t f)
{
	s->faults_seen = f;
	for (unsigned i = 0; i < s->npub; i++)
		for (unsigned j = 0; j < s->pub[i]->nlane; j++) {
			struct laneset_lane *l = s->pub[i]->lane[j];

			if (!l->gone && (sigbus_bad(l->sb_data) || sigbus_bad(l->sb_meta))) {
				l->r.bad = -EBADMSG;
				lane_gone(s, l, LANESET_EV_BAD);
			}
		}
}

/* On the message path twice a message: one load while no fault came. */
static inline void faults_check(struct laneset *s)
{
	uint64_t f = sigbus_faults();

	if (f != s->faults_seen)
		faults_scan(s, f);
}

/* Past a record of a topic the session does not read; acknowledged at
 * once unless a record returned from the lane still waits for its ack
 * (section 2, "Acknowledging"). */
static void lane_skip(struct laneset *s, struct laneset_lane *l)
{
	l->missed += l->head.missed;
	lane_consume(&l->r, &l->head);
	l->done = l->head.end;
	fetch_add_relaxed(&s->skipped, 1);
	if (!l->returned)
		store_ack(l, l->done);
}

/* l's head came already through the RX ring (laneset_floor()). */
static bool below_floor(const struct laneset *s, const struct laneset_lane *l)
{
	return s->nfloors && laneset_below_floor(s, l->pub->id, l->head.order);
}

int laneset_pause(struct laneset *s, uint64_t publisher, bool on)
{
	struct laneset_pub *p = pub_find(s, publisher);

	if (!p)
		return -ENOENT;
	p->paused = on;
	return 0;
}

unsigned laneset_lanes(const struct laneset *s, uint64_t publisher, uint32_t *out, unsigned cap)
{
	const struct laneset_pub *p = pub_find(s, publisher);
	unsigned n = 0;

	for (unsigned i = 0; p && i < p->nlane && n < cap; i++)
		out[n++] = p->lane[i]->no;
	return n;
}

bool laneset_below_floor(const struct laneset *s, uint64_t publisher, uint64_t order)
{
	for (unsigned i = 0; i < s->nfloors; i++)
		if (s->floors[i].publisher == publisher)
			return order <= s->floors[i].order;
	return false;
}

int laneset_floor(struct laneset *s, uint64_t publisher, uint64_t order)
{
	unsigned i;

	for (i = 0; i < s->nfloors && s->floors[i].publisher != publisher; i++)
		;
	if (i == s->nfloors) {
		if (s->nfloors == s->capfloors) {
			unsigned cap = s->capfloors ? 2 * s->capfloors : 4;
			struct laneset_floor *f = realloc(s->floors, cap * sizeof(*f));

			if (!f)
				return -ENOMEM;
			s->floors = f;
			s->capfloors = cap;
		}
		s->floors[s->nfloors++] = (struct laneset_floor){ publisher, 0 };
	}
	if (order > s->floors[i].order)
		s->floors[i].order = order;
	return 0;
}

/* The lane's next record of a topic read, in l->head: LANE_REC, or
 * LANE_NONE (nothing now, the lane gone, or *budget skips spent). */
static int lane_head(struct laneset *s, struct laneset_lane *l, void *buf, uint32_t cap,
		     unsigned *budget)
{
	while (!l->gone) {
		int ret = lane_peek(&l->r, buf, cap, &l->head);

		/* a hold let go (the broker's block timeout): lane_peek made it
		 * a drop-oldest reader, copying into buf from now on */
		if (l->r.drop_oldest && !l->drop_oldest) {
			l->drop_oldest = true;
			l->in_place = false;
		}
		if (l->drop_oldest)
			s->buf_owner = ret == LANE_REC ? l : NULL;
		/* lane_peek checked the header before it found the buffer short
		 * (and counted nothing lost) */
		l->toobig = ret == -EMSGSIZE;
		if (l->toobig)
			l->head.missed = 0;
		if (ret == LANE_NONE)
			return LANE_NONE;
		if (ret == LANE_END) {
			lane_gone(s, l, LANESET_EV_END);
		} else if (ret < 0 && !l->toobig) {
			lane_gone(s, l, LANESET_EV_BAD);
		} else if (topic_on(s, l->head.topic_id) && !below_floor(s, l)) {
			return LANE_REC;
		} else if (*budget) {
			(*budget)--;
			lane_skip(s, l);
		} else {
			return LANE_NONE;
		}
	}
	return LANE_NONE;
}

static struct laneset_lane *lower(struct laneset_lane *a, struct laneset_lane *b)
{
	return !a || b->head.order < a->head.order ? b : a;
}

/* The merge (section 2): every head, the lowest, then, after that
 * acquire, the heads that were empty again: a lower record was committed
 * before the one taken (commit order is source order), so it is seen. */
static struct laneset_lane *pub_lowest(struct laneset *s, struct laneset_pub *p, void *buf,
				     uint32_t cap, unsigned *budget)
{
	struct laneset_lane *best = NULL;
	bool empty = false;

	s->buf_owner = NULL;
	for (unsigned i = 0; i < p->nlane; i++) {
		struct laneset_lane *l = p->lane[i];

		l->empty = lane_head(s, l, buf, cap, budget) != LANE_REC;
		if (l->empty)
			empty = true;
		else
			best = lower(best, l);
	}
	if (!best || !empty)
		return best;
	for (unsigned i = 0; i < p->nlane; i++) {
		struct laneset_lane *l = p->lane[i];

		if (l->empty && lane_head(s, l, buf, cap, budget) == LANE_REC)
			best = lower(best, l);
	}
	return best;
}

/* Return l's head, the merge's lowest: copied unless read in place,
 * looked at for faults after the copy, then consumed.  -EAGAIN: merge
 * again. */
static int take(struct laneset *s, struct laneset_lane *l, void *buf, uint32_t cap,
		struct laneset_msg *out)
{
	struct lane_rec *m = &l->head;
	bool copy = !l->drop_oldest && !l->in_place;

	if (!l->toobig && l->drop_oldest && s->buf_owner != l) {
		/* buf holds another lane's record since this one was looked at */
		struct lane_rec m2;
		int ret = lane_peek(&l->r, buf, cap, &m2);

		s->buf_owner = ret == LANE_REC ? l : NULL;
		if (ret != LANE_REC || m2.order != m->order)
			return -EAGAIN;
		*m = m2;
	}
	*out = (struct laneset_msg){ .len = m->len, .topic_id = m->topic_id, .publisher = l->pub->id,
				   .order = m->order,
				   .missed = l->released ? 0 : l->missed + m->missed, .lane = l->no,
				   .origin = m->origin };
	if (l->toobig || s->peek || (copy && m->len > cap))
		return -EMSGSIZE;
	out->data = m->payload;
	if (copy && m->len) {
		memcpy(buf, m->payload, m->len);
		out->data = buf;
		s->buf_owner = NULL;
		/* its hold let go under the copy: the next peek reads on */
		if (lane_unheld(&l->r))
			return -EAGAIN;
	}
	/* a file cut under the copy read as zeroes: no message */
	faults_check(s);
	if (l->gone)
		return -EAGAIN;
	if (l->pub->last_order && m->order <= l->pub->last_order)
		/* a lane told late can start below what its peers gave: counted,
		 * not blamed (each lane's own order is checked by lane_peek) */
		fetch_add_relaxed(&s->order_falls, 1);
	l->pub->last_order = m->order;
	lane_consume(&l->r, m);
	l->done = m->end;
	l->returned = true;
	l->missed = 0;
	return 1;
}

static int pub_take(struct laneset *s, struct laneset_pub *p, void *buf, uint32_t cap,
		    struct laneset_msg *out, unsigned *budget)
{
	for (unsigned tries = 0; tries < MERGE_TRIES; tries++) {
		struct laneset_lane *l = pub_lowest(s, p, buf, cap, budget);
		int ret;

		if (!l)
			return 0;
		ret = take(s, l, buf, cap, out);
		if (ret != -EAGAIN)
			return ret;
	}
	return 0;
}

/* A new turn's quantum: records of topics read committed in p's lanes
 * now, at most LANESET_QUANTUM, walked on copies of the read positions.  At
 * least 1: a drop-oldest lane lapped under the walk finds its records
 * only through lane_peek's jump. */
static unsigned pub_quantum(const struct laneset *s, const struct laneset_pub *p)
{
	unsigned n = 0;

	/* alone, it waits for nobody: the walk would read every record twice */
	if (s->npub == 1)
		return LANESET_QUANTUM;

	for (unsigned i = 0; i < p->nlane && n < LANESET_QUANTUM; i++) {
		struct ring_cons c = p->lane[i]->r.c;
		struct ring_msg m;
		struct shm_lane_msg lm;

		if (p->lane[i]->gone)
			continue;
		for (unsigned k = 0; k < COUNT_STEPS && n < LANESET_QUANTUM && ring_peek(&c, &m) == 0;
		     k++) {
			if (m.len >= sizeof(lm)) {
				memcpy(&lm, m.payload, sizeof(lm));
				n += topic_on(s, lm.topic_id);
			}
			ring_consume(&c, &m);
		}
	}
	return n ? n : 1;
}

/* Release the lanes that are over once nothing returned from them waits
 * for an ack. */
static void sweep(struct laneset *s)
{
	if (!s->sweep)
		return;
	s->sweep = false;
	for (unsigned i = 0; i < s->npub; i++) {
		struct laneset_pub *p = s->pub[i];

		for (unsigned j = 0; j < p->nlane;) {
			struct laneset_lane *l = p->lane[j];

			if (!l->gone || l->returned) {
				s->sweep |= l->gone;
				j++;
				continue;
			}
			/* its end acknowledged: the broker may free it */
			store_ack(l, l->done);
			p->lane[j] = p->lane[--p->nlane];
			if (s->buf_owner == l)
				s->buf_owner = NULL;
			lane_release(l);
		}
	}
	pubs_prune(s);
}

int laneset_next(struct laneset *s, void *buf, uint32_t cap, struct laneset_msg *out)
{
	unsigned budget = SKIP_BUDGET;

	faults_check(s);
	sweep(s);
	for (unsigned visits = 0; s->npub && visits <= s->npub; visits++) {
		struct laneset_pub *p;
		int ret;

		if (s->cur >= s->npub)
			s->cur = 0;
		p = s->pub[s->cur];
		if (p->paused) {
			p->turn = 0;
			s->cur++;
			continue;
		}
		if (!p->turn)
			p->turn = pub_quantum(s, p);
		ret = pub_take(s, p, buf, cap, out, &budget);
		if (ret < 0 || (ret == 1 && --p->turn))
			return ret;
		/* its quantum spent, or nothing from it now: the next one's turn */
		p->turn = 0;
		s->cur++;
		if (ret == 1)
			return 1;
	}
	/* a fault in what was looked at is reported now, not a call later */
	faults_check(s);
	sweep(s);
	return 0;
}

int laneset_peek(struct laneset *s, struct laneset_msg *out)
{
	int ret;

	s->peek = true;
	ret = laneset_next(s, NULL, 0, out);
	s->peek = false;
	if (ret == -EMSGSIZE) {
		out->data = NULL;
		return 1;
	}
	return ret < 0 ? 0 : ret;
}

void laneset_ack(struct laneset *s)
{
	for (unsigned i = 0; i < s->npub; i++)
		for (unsigned j = 0; j < s->pub[i]->nlane; j++) {
			struct laneset_lane *l = s->pub[i]->lane[j];

			store_ack(l, l->done);
			l->returned = false;
		}
	sweep(s);
}

/* ---- sleeping ------------------------------------------------------------------ */

/* Anything to return or report?  Every lane's head (a drop-oldest lane
 * also against `reclaim`: lane_peek jumps), records of other topics
 * skipped on the way. */
static bool laneset_look(struct laneset *s)
{
	uint64_t scratch, events = s->events;
	unsigned budget = SKIP_BUDGET;

	faults_check(s);
	for (unsigned i = 0; i < s->npub; i++)
		for (unsigned j = 0; j < s->pub[i]->nlane; j++)
			if (lane_head(s, s->pub[i]->lane[j], &scratch, 0, &budget) == LANE_REC)
				return true;
	faults_check(s);
	return s->events != events || !budget || (s->look_more && s->look_more(s->ctx));
}

bool laneset_unacked(const struct laneset *s)
{
	for (unsigned i = 0; i < s->npub; i++)
		for (unsigned j = 0; j < s->pub[i]->nlane; j++)
			if (s->pub[i]->lane[j]->done > s->pub[i]->lane[j]->ackpos)
				return true;
	return false;
}

int laneset_wait(struct laneset *s, uint32_t *rx_wake, struct shm_arm_page *arm,
	       uint32_t arm_slot, uint64_t spin_ns, const struct timespec *deadline)
{
	uint64_t end = deadline ? (uint64_t)deadline->tv_sec * 1000000000ull +
					  (uint64_t)deadline->tv_nsec
				: UINT64_MAX;
	uint64_t t0 = clock_mono_ns(), now = t0;
	unsigned returns = 0;

	if (arm_slot >= SHM_ARM_SLOTS)
		return -EINVAL;
	for (; now - t0 < spin_ns && now < end; now = clock_mono_ns()) {
		if (laneset_look(s))
			return 1;
		if (now - t0 > SPIN_YIELD_NS)
			sched_yield();
		else
			cpu_relax();
	}
	for (;;) {
		/* pairs with a writer's fetch_add_release after it saw the arm */
		uint32_t v = load_acquire(rx_wake);
		bool noisy = returns >= NOISY_RETURNS, found;
		uint64_t step = noisy ? NOISY_STEP_NS : laneset_unacked(s) ? UNACKED_STEP_NS
									   : SLEEP_MAX_NS;
		struct timespec d;

		if (s->before_sleep)
			s->before_sleep(s->ctx); /* the caller's socket (LANES), after v */
		if (!noisy) {
			s->arm_seq += 1 + !(s->arm_seq + 1); /* fresh, never 0 */
			lane_arm(arm, arm_slot, s->arm_seq);
			/* pairs with the writer's fence between its commit and its
			 * load of the bits: it sees the arm, or this look the record */
			fence_full();
		}
		found = laneset_look(s);
		now = clock_mono_ns();
		if (found || now >= end) {
			if (!noisy)
				lane_disarm(arm, arm_slot);
			return found;
		}
		d = deadline_in_ns(end - now < step ? end - now : step);
		if (noisy) {
			/* a peer keeps changing rx_wake: a look every ms, unarmed */
			fetch_add_relaxed(&s->noisy_steps, 1);
			clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &d, NULL);
			continue;
		}
		if (futex_wait(rx_wake, v, &d) != -ETIMEDOUT) {
			/* woken: the next look says whether for data */
			returns++;
			fetch_add_relaxed(&s->wait_returns, 1);
		} else if (step == UNACKED_STEP_NS) {
			fetch_add_relaxed(&s->unacked_steps, 1);
		}
		lane_disarm(arm, arm_slot);
	}
}
