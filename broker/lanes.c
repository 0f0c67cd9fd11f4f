/*
 * broker/lanes.c - the broker's register of lanes (see lanes.h;
 * docs/design/data-path.md, sections 1, 3 and 7).
 *
 * Must never: start a holder anywhere but where the floor protocol says
 * (hold_start after the entry is in the table); reuse a cursor slot; free
 * a holder's entry while the register still counts it; cut a lane
 * anywhere but after its last committed record; read the order of that
 * record (a successor's start sequence) before the fence is in; leave a
 * reader's arm bit set once its generation ended; let a block reader's
 * hold go before its let-go bit is set.
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
#include "shm/atomics.h"
#include "shm/clock.h"
#include "shm/futex.h"

#define DEFAULT_LANE_RING (1u << 20)

static void guard(struct lanes_reg *g, const void *base, size_t len, uint64_t session, bool add)
{
	if (g->guard)
		g->guard(g->ctx, (void *)base, len, session, add);
}

/* A number was taken: the caller keeps the counters where a restarted
 * broker finds them, before the number can reach a client (data-path.md,
 * section 7, "Re-adoption": numbers are never reused, across restarts
 * too, since clients that outlive a broker keep their mappings by them). */
static void numbers_taken(struct lanes_reg *g)
{
	if (g->numbers_taken)
		g->numbers_taken(g->ctx);
}

static int fail(struct lanes_reg *g, int err, const char *fmt, const char *what)
{
	snprintf(g->why, sizeof(g->why), fmt, what);
	return err;
}

void lanes_init(struct lanes_reg *g, int lanes_dirfd, uint64_t broker_id)
{
	memset(g, 0, sizeof(*g));
	g->lanes_dirfd = lanes_dirfd;
	g->broker_id = broker_id;
	g->ring_size = DEFAULT_LANE_RING;
	g->next_lane = g->next_page = g->next_arm = 1;
	g->next_reader = 1;
}

/* ---- pushes ----------------------------------------------------------------- */

static struct lpush *push_new(struct lanes_reg *g, uint64_t session, uint32_t generation)
{
	struct lpush *p;

	if (g->npush == g->push_cap) {
		unsigned cap = g->push_cap ? 2 * g->push_cap : 16;
		struct lpush *n = realloc(g->push, cap * sizeof(*n));

		if (!n)
			return NULL;
		g->push = n;
		g->push_cap = cap;
	}
	p = &g->push[g->npush++];
	memset(p, 0, sizeof(*p));
	p->session = session;
	p->generation = generation;
	return p;
}

/* A descriptor for a push: a duplicate the push owns. */
static int push_fd(struct lpush *p, int fd)
{
	int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);

	if (d < 0)
		return -errno;
	p->fds[p->nfds++] = d;
	return 0;
}

/* A read-only descriptor of what fd names, for a push. */
static int push_fd_ro(struct lpush *p, int fd)
{
	char path[32];
	int d;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	d = open(path, O_RDONLY | O_CLOEXEC);
	if (d < 0)
		return -errno;
	p->fds[p->nfds++] = d;
	return 0;
}

void lanes_push_done(struct lanes_reg *g)
{
	for (unsigned i = 0; i < g->npush; i++)
		for (unsigned k = 0; k < g->push[i].nfds; k++)
			close(g->push[i].fds[k]);
	g->npush = 0;
}

/* ---- memfd pages ---------------------------------------------------------------- */

static void *page_map(int fd)
{
	void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	return m == MAP_FAILED ? NULL : m;
}

/* A free slot on one of uid's arm pages (a new page when all are full). */
static struct larm *arm_take(struct lanes_reg *g, uid_t uid, uint32_t *slot)
{
	struct larm *a;

	for (a = g->arms; a; a = a->next) {
		if (a->uid != uid)
			continue;
		for (uint32_t s = 0; s < SHM_ARM_SLOTS; s++)
			if (!(a->used[s / 64] & (1ull << (s % 64)))) {
				a->used[s / 64] |= 1ull << (s % 64);
				*slot = s;
				return a;
			}
	}
	a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	if (memfd_page_make("shmb-arm", &a->fd) < 0 || !(a->map = page_map(a->fd))) {
		if (a->fd > 0)
			close(a->fd);
		free(a);
		return NULL;
	}
	a->uid = uid;
	a->number = g->next_arm++;
	numbers_taken(g);
	a->used[0] = 1;
	a->next = g->arms;
	g->arms = a;
	*slot = 0;
	return a;
}

/* Free an arm slot: its word and bit cleared first (a writer that still
 * looks finds nobody asleep), then the slot. */
static void arm_give(struct larm *a, uint32_t slot)
{
	__atomic_fetch_and(&a->map->bits[slot / 64], ~(1ull << (slot % 64)), __ATOMIC_RELEASE);
	store_release(&a->map->arm[slot], 0);
	a->used[slot / 64] &= ~(1ull << (slot % 64));
}

/* ---- readers ------------------------------------------------------------------ */

struct lreader *lanes_reader_new(struct lanes_reg *g, uint64_t session, uint32_t generation,
				 uid_t uid, bool drop_oldest)
{
	struct lreader *r = calloc(1, sizeof(*r));

	if (!r) {
		fail(g, -ENOMEM, "%s", "out of memory");
		return NULL;
	}
	r->session = session;
	r->generation = generation;
	r->uid = uid;
	r->drop_oldest = drop_oldest;
	r->number = g->next_reader++;
	numbers_taken(g);
	if (memfd_page_make("shmb-rx-wake", &r->rx_wake_fd) < 0) {
		fail(g, -EMFILE, "%s", "rx_wake page: memfd");
		free(r);
		return NULL;
	}
	/* kept mapped: the router wakes it with each delivery to a sleeper
	 * (a sealed memfd: nobody can cut it under the broker) */
	r->rx_wake = page_map(r->rx_wake_fd);
	r->arm = r->rx_wake ? arm_take(g, uid, &r->arm_slot) : NULL;
	if (!r->arm) {
		fail(g, -ENOMEM, "%s", r->rx_wake ? "arm page" : "rx_wake page: map");
		if (r->rx_wake)
			munmap(r->rx_wake, 4096);
		close(r->rx_wake_fd);
		free(r);
		return NULL;
	}
	r->next = g->readers;
	g->readers = r;
	return r;
}

/* A cursor slot of r for publisher: on its page for that publisher, or a
 * new page (file sessions/<id>/cur.<gen>.<pub>.<n>) when it has none or
 * its page is used up.  *fresh: the reader was not sent the page yet (a
 * new one, or one whose first holder was refused). */
static struct lpage *page_slot(struct lanes_reg *g, struct lreader *r, uint64_t publisher,
			       uint32_t *slot, bool *fresh)
{
	struct lpage *p;
	char name[96];
	int dirfd;

	for (p = r->pages; p; p = p->next)
		if (p->publisher == publisher && p->used < SHM_CURSOR_SLOTS) {
			*slot = p->used++;
			*fresh = !p->told;
			return p;
		}
	dirfd = g->session_dir ? g->session_dir(g->ctx, r->session) : -1;
	if (dirfd < 0) {
		fail(g, -ENOENT, "%s", "cursor page: no session directory");
		return NULL;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->number = g->next_page++;
	numbers_taken(g);
	snprintf(name, sizeof(name), "cur.%u.%llu.%u", r->generation, (unsigned long long)publisher,
		 p->number);
	p->fd = openat(dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (p->fd >= 0)
		p->ro = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (p->fd < 0 || p->ro < 0 || fallocate(p->fd, 0, 0, 4096) < 0 ||
	    !(p->map = page_map(p->fd))) {
		fail(g, -errno, "cursor page %s: could not make it", name);
		if (p->fd >= 0) {
			close(p->fd);
			unlinkat(dirfd, name, 0);
		}
		if (p->ro > 0)
			close(p->ro);
		free(p);
		return NULL;
	}
	snprintf(p->name, sizeof(p->name), "%s", name);
	guard(g, p->map, 4096, r->session, true);
	p->publisher = publisher;
	p->used = 1;
	p->next = r->pages;
	r->pages = p;
	*slot = 0;
	*fresh = true;
	return p;
}

static struct lhold *held_by(struct blane *l, const struct lreader *r)
{
	for (unsigned i = 0; i < l->nholders; i++)
		if (l->holders[i].r == r)
			return &l->holders[i];
	return NULL;
}

/* Drop holder i of l: its entry freed (the writer goes on without it). */
static void holder_drop(struct blane *l, unsigned i)
{
	hold_free(&l->hold, (unsigned)l->holders[i].idx);
	l->holders[i] = l->holders[--l->nholders];
}

void lanes_reader_wake(struct lreader *r)
{
	fetch_add_release(r->rx_wake, 1);
	futex_wake(r->rx_wake, 1 << 30);
}

void lanes_reader_end(struct lanes_reg *g, struct lreader *r)
{
	struct lreader **pp;

	for (struct blane *l = g->lanes; l; l = l->next)
		for (unsigned i = 0; i < l->nholders; i++)
			if (l->holders[i].r == r) {
				holder_drop(l, i);
				break;
			}
	arm_give(r->arm, r->arm_slot);
	while (r->pages) {
		struct lpage *p = r->pages;
		int dirfd = g->session_dir ? g->session_dir(g->ctx, r->session) : -1;

		r->pages = p->next;
		if (dirfd >= 0)
			unlinkat(dirfd, p->name, 0);
		guard(g, p->map, 4096, r->session, false);
		munmap(p->map, 4096);
		close(p->fd);
		close(p->ro);
		free(p);
	}
	/* after its arm is cleared: a sleeper of this generation looks again
	 * and finds it over */
	lanes_reader_wake(r);
	munmap(r->rx_wake, 4096);
	close(r->rx_wake_fd);
	for (pp = &g->readers; *pp; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	free(r->topics);
	free(r);
}

/* ---- lanes ------------------------------------------------------------------- */

struct blane *lanes_find(struct lanes_reg *g, uint64_t session, uint32_t generation)
{
	for (struct blane *l = g->lanes; l; l = l->next)
		if (l->publisher == session && l->generation == generation && !l->cut)
			return l;
	return NULL;
}

static void lane_unmake(struct lanes_reg *g, struct blane *l)
{
	char name[LANEFILE_NAME_MAX];

	snprintf(name, sizeof(name), "%s", l->f.name);
	guard(g, l->f.data, l->f.data_len, l->publisher, false);
	lanefile_close(&l->f);
	lanefile_remove(g->lanes_dirfd, name);
	if (l->tx_wake_fd >= 0)
		close(l->tx_wake_fd);
	if (l->watch_pidfd >= 0)
		close(l->watch_pidfd);
	free(l->holders);
	free(l->sent);
	free(l);
}

/* The lane of a publisher generation (class 0: {its uid, root}). */
static struct blane *lane_make(struct lanes_reg *g, uint64_t session, uint32_t generation,
			       uid_t uid, uint64_t ring_size)
{
	struct lanefile_params p = {
		.kind = SHM_LANE_LOCAL,
		.publisher = session,
		.generation = generation,
		.class_no = 0,
		.class_uids = { (uint32_t)uid, 0 },
		.nclass_uids = uid ? 2 : 1,
		.ring_size = ring_size ? ring_size : g->ring_size,
		.first_order = 0,
		.broker_id = g->broker_id,
		.number = g->next_lane, /* taken below once the lane is whole */
	};
	struct blane *l = calloc(1, sizeof(*l));

	if (!l || !(l->holders = calloc(SHM_HOLD_MAX, sizeof(*l->holders)))) {
		free(l);
		fail(g, -ENOMEM, "%s", "out of memory");
		return NULL;
	}
	l->tx_wake_fd = l->watch_pidfd = -1;
	if (lanefile_make(g->lanes_dirfd, &p, &l->f) < 0) {
		fail(g, -EIO, "lane: %s", l->f.why);
		free(l->holders);
		free(l);
		return NULL;
	}
	if (memfd_page_make("shmb-tx-wake", &l->tx_wake_fd) < 0) {
		fail(g, -EMFILE, "%s", "tx_wake page: memfd");
		lane_unmake(g, l);
		return NULL;
	}
	l->number = g->next_lane++;
	numbers_taken(g);
	guard(g, l->f.data, l->f.data_len, session, true);
	l->publisher = session;
	l->generation = generation;
	l->uid = uid;
	ring_init(&l->ring, (uint8_t *)l->f.data + SHM_LANE_RING_OFFSET, p.ring_size);
	hold_table_init(&l->hold, l->f.hold);
	lanes_link(g, l);
	return l;
}

void lanes_link(struct lanes_reg *g, struct blane *l)
{
	struct blane **pp = &g->lanes;

	while (*pp && (*pp)->number < l->number)
		pp = &(*pp)->next;
	l->next = *pp;
	*pp = l;
}

/* Whether the writer of l was sent descriptor `key` (a kind in the top
 * bits, a number below); noted as sent when not. */
static bool sent_once(struct blane *l, uint64_t key)
{
	uint64_t *n;

	for (unsigned i = 0; i < l->nsent; i++)
		if (l->sent[i] == key)
			return true;
	n = realloc(l->sent, (l->nsent + 1) * sizeof(*n));
	if (!n)
		return false; /* sent again: harmless */
	l->sent = n;
	l->sent[l->nsent++] = key;
	return false;
}

/* The descriptors the writer of l lacks for holder r on page p. */
static uint32_t writer_lacks(struct blane *l, const struct lreader *r, const struct lpage *p)
{
	return (sent_once(l, 1ull << 62 | p->number) ? 0 : PROTO_HOLDER_PAGE) |
	       (sent_once(l, 2ull << 62 | r->number) ? 0 : PROTO_HOLDER_WAKE) |
	       (sent_once(l, 3ull << 62 | r->arm->number) ? 0 : PROTO_HOLDER_ARM);
}

/* A PROTO_HOLDER push to the writer of l (NULL: no memory). */
static struct lpush *writer_push(struct lanes_reg *g, const struct blane *l, uint32_t flags)
{
	struct lpush *ps = push_new(g, l->publisher, l->generation);

	if (ps)
		ps->msg.holder = (struct proto_holder){
			.h = { PROTO_HOLDER, sizeof(struct proto_holder), 0 },
			.session_id = l->publisher,
			.generation = l->generation,
			.lane = l->number,
			.flags = flags,
		};
	return ps;
}

/* A PROTO_LANE push to reader r about l (NULL: no memory). */
static struct lpush *reader_push(struct lanes_reg *g, const struct blane *l,
				 const struct lreader *r, uint32_t flags)
{
	struct lpush *ps = push_new(g, r->session, r->generation);

	if (!ps)
		return NULL;
	ps->reader = r->number;
	ps->msg.lane = (struct proto_lane){
		.h = { PROTO_LANE, sizeof(struct proto_lane), 0 },
		.session_id = r->session,
		.generation = r->generation,
		.lane = l->number,
		.publisher = l->publisher,
		.ring_size = l->ring.size,
		.kind = SHM_LANE_LOCAL,
		.flags = flags,
	};
	return ps;
}

/* Tell the writer of l about holder r (on page p), the descriptors it lacks. */
static int push_holder(struct lanes_reg *g, struct blane *l, struct lreader *r, struct lpage *p,
		       uint32_t flags)
{
	struct lpush *ps = writer_push(g, l, flags);
	int ret = 0;

	if (!ps)
		return -ENOMEM;
	ps->msg.holder.reader = r->number;
	ps->msg.holder.page = p->number;
	ps->msg.holder.arm_page = r->arm->number;
	if (flags & PROTO_HOLDER_PAGE)
		ret = push_fd(ps, p->ro);
	if (!ret && (flags & PROTO_HOLDER_WAKE))
		ret = push_fd(ps, r->rx_wake_fd);
	if (!ret && (flags & PROTO_HOLDER_ARM))
		/* read-only: a writer of another uid must not set its readers'
		 * bits (a memfd's read-write descriptor reopened without write) */
		ret = push_fd_ro(ps, r->arm->fd);
	return ret;
}

/* r's own sleep words into ps (a LANE push): its rx_wake, its uid's arm
 * page read-write, SELF and its arm slot said; once per reader generation. */
static int push_self(struct lpush *ps, struct lreader *r)
{
	int ret = push_fd(ps, r->rx_wake_fd);

	if (!ret)
		ret = push_fd(ps, r->arm->fd);
	if (!ret) {
		ps->msg.lane.flags |= PROTO_LANE_SELF;
		ps->msg.lane.arm_slot = r->arm_slot;
		r->told_self = true;
	}
	return ret;
}

/* The writer of l is sent the lane's tx_wake page again: after a broker
 * restart it is a new page (the old one was the dead broker's memfd), and
 * its readers are told it in their PROTO_LANE. */
static int push_tx_wake(struct lanes_reg *g, struct blane *l)
{
	struct lpush *ps = writer_push(g, l, PROTO_HOLDER_TX_WAKE);

	return ps ? push_fd(ps, l->tx_wake_fd) : -ENOMEM;
}

/* Tell reader r about lane l (from S), with its page when it is new. */
static int push_lane(struct lanes_reg *g, struct blane *l, struct lreader *r, struct lpage *p,
		     uint32_t slot, bool fresh, uint64_t S, uint64_t order)
{
	struct lpush *ps = reader_push(g, l, r, (r->drop_oldest ? PROTO_LANE_DROP_OLDEST : 0) |
					 (r->uid == l->uid ? PROTO_LANE_IN_PLACE : 0) |
					 (fresh ? PROTO_LANE_PAGE : 0) | PROTO_LANE_WAKE);
	int ret;

	if (!ps)
		return -ENOMEM;
	ps->msg.lane.start = S;
	ps->msg.lane.order = order;
	ps->msg.lane.page = p->number;
	ps->msg.lane.slot = slot;
	ret = push_fd(ps, l->f.data_ro);
	if (!ret)
		ret = push_fd(ps, l->f.meta_ro);
	/* the reader's own page: a descriptor that cannot truncate it, where
	 * the kernel allows (the writers read it under their guard anyway) */
	if (!ret && fresh) {
		int dirfd = g->session_dir ? g->session_dir(g->ctx, r->session) : -1;
		int fd = g->client_fd && dirfd >= 0 ? g->client_fd(g->ctx, dirfd, p->name, p->fd)
						     : fcntl(p->fd, F_DUPFD_CLOEXEC, 0);

		if (fd < 0) {
			ret = fd;
		} else {
			ps->fds[ps->nfds++] = fd;
			p->told = true;
		}
	}
	if (!ret)
		ret = push_fd(ps, l->tx_wake_fd);
	/* its own sleep words, once per reader generation */
	if (!ret && !r->told_self)
		ret = push_self(ps, r);
	return ret;
}

int lanes_reader_self(struct lanes_reg *g, struct lreader *r)
{
	struct lpush *ps;

	if (r->told_self)
		return 0;
	ps = push_new(g, r->session, r->generation);
	if (!ps)
		return -ENOMEM;
	ps->reader = r->number;
	ps->msg.lane = (struct proto_lane){
		.h = { PROTO_LANE, sizeof(struct proto_lane), 0 },
		.session_id = r->session,
		.generation = r->generation,
	};
	return push_self(ps, r);
}

/*
 * r holds l from now on: a cursor slot, the entry at the committed end,
 * the floor protocol's start S written into the slot, and both sides
 * told.  Nothing to do when r holds l already.
 */
static int holder_add(struct lanes_reg *g, struct blane *l, struct lreader *r)
{
	const struct shm_lane_wpage *wp = (const void *)l->f.data;
	struct lhold *h = held_by(l, r);
	struct hold_view v;
	struct lpage *p;
	uint32_t slot, flags;
	uint64_t P, S;
	bool fresh, rehold = false;
	int idx, ret;

	if (l->cut)
		return 0;
	if (h && h->released && h->kind == SHM_HOLD_WATCH) {
		/* let go at an unsubscribe: held again from the floor on, its
		 * reader reading on from where it stands if that is higher
		 * (its old slot keeps its let-go bit: until it takes the new
		 * one it reads as a drop-oldest reader, safely) */
		hold_free(&l->hold, (unsigned)h->idx);
		*h = l->holders[--l->nholders];
		rehold = true;
	} else if (h) {
		return 0;
	}
	p = page_slot(g, r, l->publisher, &slot, &fresh);
	if (!p)
		return -ENOMEM;
	ret = lane_find_end(&l->ring, wp, l->known_end, &P);
	if (ret < 0)
		return fail(g, ret, "lane %s: no end found (a bad lane)", l->f.name);
	v = (struct hold_view){ .kind = r->drop_oldest ? SHM_HOLD_WATCH : SHM_HOLD_HOLD,
				.page = p->number, .slot = slot, .arm_page = r->arm->number,
				.arm_slot = r->arm_slot, .reader = r->number };
	idx = hold_add(&l->hold, &v, P);
	if (idx < 0)
		return fail(g, idx, "lane %s: every hold entry is taken", l->f.name);
	S = hold_start(&l->hold, (unsigned)idx, wp, P);
	/* noted as sent only now: a refused holder sent nothing */
	flags = writer_lacks(l, r, p);
	/* the reader's cursor starts where it holds (the reader acks only
	 * forward from there) */
	store_release(&p->map->slot[slot], S);
	l->known_end = P;
	l->holders[l->nholders++] = (struct lhold){ .r = r, .idx = idx, .kind = v.kind, .start = S,
						    .seen = S, .seen_ns = clock_mono_ns() };
	ret = push_lane(g, l, r, p, slot, fresh, S, 0);
	if (!ret && rehold)
		g->push[g->npush - 1].msg.lane.flags |= PROTO_LANE_REHOLD;
	if (!ret)
		ret = push_holder(g, l, r, p, flags);
	return ret;
}

/* The cursor page and slot hold entry h of l names, or NULL. */
static struct lpage *hold_page(const struct blane *l, const struct lhold *h, uint32_t *slot)
{
	struct hold_view v;

	if (!hold_read(&l->hold, (unsigned)h->idx, &v) || v.slot >= SHM_CURSOR_SLOTS)
		return NULL;
	for (struct lpage *p = h->r->pages; p; p = p->next)
		if (p->number == v.page) {
			*slot = v.slot;
			return p;
		}
	return NULL;
}

/* Slot `slot` of page p is no holder's any more: its reader reads on
 * without holding (the block timeout, lanes_let_go). */
static void let_go_mark(struct lpage *p, uint32_t slot)
{
	__atomic_fetch_or(&p->map->let_go[slot / 64], 1ull << (slot % 64), __ATOMIC_RELEASE);
}

/* The cursor slot an entry of old names, or NULL. */
static const uint64_t *old_slot(const struct blane *l, const struct lhold *h)
{
	uint32_t slot;
	const struct lpage *p = hold_page(l, h, &slot);

	return p ? &p->map->slot[slot] : NULL;
}

/* Move h (old's hold of l) to r: a new entry on r's page, started by the
 * take-over walk from old's slot, then old's entry freed. */
static int holder_move(struct lanes_reg *g, struct blane *l, struct lhold *h, struct lreader *r)
{
	const struct shm_lane_wpage *wp = (const void *)l->f.data;
	const uint64_t *slot = old_slot(l, h);
	struct hold_view v;
	struct lpage *p;
	uint32_t s, flags;
	uint64_t S;
	bool fresh;
	int idx, ret;

	p = page_slot(g, r, l->publisher, &s, &fresh);
	if (!p)
		return -ENOMEM;
	/* a block reader's hold let go stays so: the new owner reads on
	 * without holding */
	if (h->kind == SHM_HOLD_WATCH && !r->drop_oldest)
		let_go_mark(p, s);
	v = (struct hold_view){ .kind = h->kind, .page = p->number, .slot = s,
				.arm_page = r->arm->number, .arm_slot = r->arm_slot,
				.reader = r->number };
	idx = hold_add(&l->hold, &v, hold_floor(&l->hold, (unsigned)h->idx));
	if (idx < 0)
		return fail(g, idx, "lane %s: every hold entry is taken", l->f.name);
	/* a slot that cannot be read counts at the floor */
	ret = hold_takeover(&l->hold, (unsigned)h->idx, (unsigned)idx, wp, &l->ring, slot, &S);
	if (ret < 0) {
		hold_free(&l->hold, (unsigned)idx);
		return fail(g, ret, "lane %s: bad records where a reader stood", l->f.name);
	}
	store_release(&p->map->slot[s], S);
	flags = writer_lacks(l, r, p);
	hold_free(&l->hold, (unsigned)h->idx);
	*h = (struct lhold){ .r = r, .idx = idx, .kind = v.kind, .start = S, .seen = S,
			     .seen_ns = clock_mono_ns(), .released = h->released,
			     .order = h->kind == SHM_HOLD_WATCH ? h->order : 0 };
	ret = push_lane(g, l, r, p, s, fresh, S, h->order);
	if (!ret)
		ret = push_holder(g, l, r, p, flags);
	return ret;
}

int lanes_holder_move(struct lanes_reg *g, struct blane *l, struct lhold *h, struct lreader *r)
{
	return holder_move(g, l, h, r);
}

struct lreader *lanes_reader_switch(struct lanes_reg *g, struct lreader *old, uint32_t generation)
{
	struct lreader *r = lanes_reader_new(g, old->session, generation, old->uid, old->drop_oldest);

	if (!r)
		return NULL;
	r->topics = old->topics;
	r->ntopics = old->ntopics;
	r->topics_cap = old->topics_cap;
	old->topics = NULL;
	old->ntopics = old->topics_cap = 0;
	/* cut lanes too: the new owner reads them to their cut */
	for (struct blane *l = g->lanes; l; l = l->next) {
		struct lhold *h = held_by(l, old);

		if (h && holder_move(g, l, h, r) < 0)
			/* that lane is let go; the others move */
			for (unsigned i = 0; i < l->nholders; i++)
				if (l->holders[i].r == old)
					holder_drop(l, i);
	}
	lanes_reader_end(g, old);
	return r;
}

int lanes_resend(struct lanes_reg *g, uint64_t session, uint32_t generation, struct lreader *r)
{
	const uint32_t all = PROTO_HOLDER_PAGE | PROTO_HOLDER_WAKE | PROTO_HOLDER_ARM;
	int ret = 0;

	/* whatever went out before may have been dropped: each descriptor
	 * goes again, once */
	if (r) {
		r->told_self = false;
		for (struct lpage *p = r->pages; p; p = p->next)
			p->told = false;
	}
	for (struct blane *l = g->lanes; l && !ret; l = l->next) {
		bool mine = l->publisher == session && l->generation == generation && !l->cut;

		for (unsigned i = 0; i < l->nholders && !ret; i++) {
			struct lhold *h = &l->holders[i];
			struct lpage *p;
			uint32_t slot;

			if (!mine && h->r != r)
				continue;
			p = hold_page(l, h, &slot);
			if (!p) {
				ret = fail(g, -EBADMSG, "lane %s: a hold entry names no page", l->f.name);
				break;
			}
			/* where it holds from: where a reader that never got the
			 * lane stands, and a duplicate for one that did; not a cut
			 * lane it read to its end (it let it go, and would read it
			 * again from the start) */
			if (h->r == r && !(l->cut && load_acquire(&p->map->slot[slot]) >=
							 load_acquire(&lanefile_state(&l->f)->cut_pos)))
				ret = push_lane(g, l, r, p, slot, !p->told, h->start, 0);
			if (!ret && mine)
				ret = push_holder(g, l, h->r, p, all);
		}
		if (!ret && mine)
			ret = push_tx_wake(g, l);
	}
	return ret;
}

bool lanes_reader_reads(const struct lreader *r, uint32_t topic)
{
	for (unsigned i = 0; i < r->ntopics; i++)
		if (r->topics[i] == topic)
			return true;
	return false;
}

int lanes_topic_use(struct lanes_reg *g, uint64_t session, uint32_t generation, uid_t uid,
		    uint64_t ring_size, uint32_t topic, struct lreader **readers, unsigned nreaders,
		    struct blane **out)
{
	struct blane *l = lanes_find(g, session, generation);
	int ret;

	if (!l && !(l = lane_make(g, session, generation, uid, ring_size)))
		return -EIO;
	ret = lanefile_topic_set(&l->f, topic);
	if (ret < 0)
		return fail(g, ret, "lane %s: topic bit", l->f.name);
	/* the holders before the reply: the writer writes no record of the
	 * topic before it, so each holder sees every one */
	for (unsigned i = 0; i < nreaders; i++) {
		ret = holder_add(g, l, readers[i]);
		if (ret < 0)
			return ret;
	}
	*out = l;
	return 0;
}

/* Whether l carries a topic r reads. */
static bool lane_read_by(const struct blane *l, const struct lreader *r)
{
	for (unsigned i = 0; i < r->ntopics; i++)
		if (lanefile_topic_isset(&l->f, r->topics[i]))
			return true;
	return false;
}

unsigned lanes_unsubscribe(struct lanes_reg *g, struct lreader *r, uint32_t topic)
{
	unsigned n = 0;

	for (unsigned i = 0; i < r->ntopics; i++)
		if (r->topics[i] == topic) {
			r->topics[i] = r->topics[--r->ntopics];
			break;
		}
	if (r->drop_oldest)
		return 0; /* its WATCH entries hold nothing back */
	for (struct blane *l = g->lanes; l; l = l->next) {
		struct lhold *h = held_by(l, r);

		/* a cut lane holds no writer back: it goes once read */
		if (!h || h->kind != SHM_HOLD_HOLD || l->cut ||
		    !lanefile_topic_isset(&l->f, topic) || lane_read_by(l, r))
			continue;
		if (lanes_let_go(l, r) == 0) {
			h = held_by(l, r);
			if (h)
				h->released = true;
			n++;
			/* the reader is told: what it jumps over there from now
			 * on is of topics it left, no gap */
			(void)reader_push(g, l, r, PROTO_LANE_RELEASED);
		}
	}
	return n;
}

int lanes_subscribe(struct lanes_reg *g, struct lreader *r, uint32_t topic)
{
	if (!lanes_reader_reads(r, topic)) {
		if (r->ntopics == r->topics_cap) {
			unsigned cap = r->topics_cap ? 2 * r->topics_cap : 8;
			uint32_t *t = realloc(r->topics, cap * sizeof(*t));

			if (!t)
				return -ENOMEM;
			r->topics = t;
			r->topics_cap = cap;
		}
		r->topics[r->ntopics++] = topic;
	}
	for (struct blane *l = g->lanes; l; l = l->next) {
		int ret;

		if (l->cut || !lanefile_topic_isset(&l->f, topic))
			continue;
		ret = holder_add(g, l, r);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Bump and wake the word of a wake page the broker does not keep mapped. */
static void page_wake(int fd)
{
	uint32_t *w = page_map(fd);

	if (!w)
		return;
	fetch_add_release(w, 1);
	futex_wake(w, 1 << 30);
	munmap(w, 4096);
}

/*
 * Fence l after its last record (the writer's next commit fails), find
 * the order of that record and write the cut fields; state stays OPEN
 * until lane_cut().  Done once: a fenced lane keeps its fence and fields.
 *
 * The order is read only once the fence is in: from then on the writer
 * can commit nothing, so the last record and its order are final.  The
 * lane's bytes are its writer's: a record that fails the walk's checks
 * ends the walk, and the order is the highest one walked before it.  A
 * writer that lies can so make its successor's sequences start too low
 * (its own session's numbering, which only its own readers see) or too
 * high (a gap in its own stream); it cannot make the broker read outside
 * the ring or touch another session.
 */
static int lane_fence(struct lanes_reg *g, struct blane *l)
{
	const struct shm_lane_wpage *wp = (const void *)l->f.data;
	size_t len = SHM_LANE_RING_OFFSET + l->ring.size;
	uint8_t *rw;
	struct ring ring;
	struct ring_cons c;
	uint64_t end = 0, known = l->known_end, order, seq;
	int ret = -EBADMSG, walk;

	if (l->fenced || l->cut)
		return 0;
	rw = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, l->f.data_fd, 0);
	if (rw == MAP_FAILED)
		return fail(g, -errno, "lane %s: map to cut", l->f.name);
	guard(g, rw, len, l->publisher, true);
	ring_init(&ring, rw + SHM_LANE_RING_OFFSET, l->ring.size);
	/* a writer still committing is chased for at most a few laps */
	for (unsigned tries = 0; tries < 64; tries++) {
		ret = lane_find_end(&ring, wp, l->known_end, &end);
		if (ret < 0)
			break;
		l->known_end = end;
		ring_cons_init(&c, &ring, NULL, NULL, end, RING_SEQ_ANY, LANE_REC_GEN, LANE_REC_GEN);
		ret = ring_fence(&c);
		if (ret != -EAGAIN)
			break;
	}
	guard(g, rw, len, l->publisher, false);
	munmap(rw, len);
	if (ret < 0) {
		lanefile_set_bad(&l->f);
		l->cut = true;
		return fail(g, ret, "lane %s: no end to cut at: bad", l->f.name);
	}
	/* fenced: what lies before `end` is all its writer ever committed */
	walk = lane_last_order(&l->ring, wp, known, end, &order, &seq);
	if (walk < 0)
		snprintf(g->why, sizeof(g->why), "lane %s: the order of its last record %s", l->f.name,
			 walk == -ENOENT ? "is not known (reclaimed)" : "is not readable (a bad record)");
	l->fenced = true;
	l->cut_pos = end;
	l->cut_lane_seq = seq;
	l->last_order = order;
	/* the next record's order is one more, in whichever lane it goes */
	ret = lanefile_cut_fields(&l->f, end, seq, order ? order + 1 : 0);
	if (ret < 0)
		return fail(g, ret, "lane %s: cut fields", l->f.name);
	return walk < 0 ? walk : 0;
}

/* Cut l after its last record: the fence (unless it is in), then CUT. */
static int lane_cut(struct lanes_reg *g, struct blane *l)
{
	int ret = lane_fence(g, l), r;

	if (l->cut)
		return ret;
	r = lanefile_cut(&l->f, l->cut_pos, l->cut_lane_seq,
			 l->last_order ? l->last_order + 1 : 0);
	l->cut = true;
	/* its readers find the end; its writer, asleep for space in a call,
	 * looks again and learns that it was fenced */
	for (unsigned i = 0; i < l->nholders; i++)
		lanes_reader_wake(l->holders[i].r);
	if (l->tx_wake_fd >= 0)
		page_wake(l->tx_wake_fd);
	return ret < 0 ? ret : r;
}

/* Raise *next to l's last order. */
static void next_raise(const struct blane *l, uint64_t *next)
{
	if (next && l->last_order > *next)
		*next = l->last_order;
}

/* op on every lane of the publisher generation not cut yet; the first
 * error, every lane tried. */
static int publisher_lanes(struct lanes_reg *g, uint64_t session, uint32_t generation,
			   uint64_t *next_seq, int (*op)(struct lanes_reg *g, struct blane *l))
{
	int ret = 0;

	for (struct blane *l = g->lanes; l; l = l->next)
		if (l->publisher == session && l->generation == generation && !l->cut) {
			int r = op(g, l);

			if (r < 0 && !ret)
				ret = r;
			next_raise(l, next_seq);
		}
	return ret;
}

int lanes_publisher_fence(struct lanes_reg *g, uint64_t session, uint32_t generation,
			  uint64_t *next_seq)
{
	return publisher_lanes(g, session, generation, next_seq, lane_fence);
}

int lanes_publisher_end(struct lanes_reg *g, uint64_t session, uint32_t generation,
			uint64_t *next_seq)
{
	return publisher_lanes(g, session, generation, next_seq, lane_cut);
}

/* Has every holder of cut lane l passed its cut? */
static bool lane_passed(struct blane *l)
{
	uint64_t cut = load_acquire(&lanefile_state(&l->f)->cut_pos);

	for (unsigned i = 0; i < l->nholders; i++) {
		const struct lhold *h = &l->holders[i];
		const struct hold_view *v = NULL;
		struct hold_view hv;
		bool passed = false;

		/* a drop-oldest reader holds nothing, the lane's life included:
		 * its mapping outlives the files */
		if (h->kind == SHM_HOLD_WATCH)
			continue;
		if (hold_read(&l->hold, (unsigned)h->idx, &hv))
			v = &hv;
		for (const struct lpage *p = h->r->pages; p && v; p = p->next)
			if (p->number == v->page && v->slot < SHM_CURSOR_SLOTS)
				/* the reader's word: only compared, never trusted further */
				passed = load_acquire(&p->map->slot[v->slot]) >= cut;
		if (!passed)
			return false;
	}
	return true;
}

void lanes_tick(struct lanes_reg *g)
{
	struct blane **pp = &g->lanes;

	while (*pp) {
		struct blane *l = *pp;

		if (l->cut && (lanefile_state(&l->f)->state == SHM_LANE_BAD || lane_passed(l))) {
			while (l->nholders)
				holder_drop(l, 0);
			*pp = l->next;
			lane_unmake(g, l);
			continue;
		}
		pp = &l->next;
	}
}

/* Forget r: its memory and descriptors only.  Its entries, pages and arm
 * bit stay as they are, for the next broker to re-adopt. */
static void reader_forget(struct lanes_reg *g, struct lreader *r)
{
	while (r->pages) {
		struct lpage *p = r->pages;

		r->pages = p->next;
		guard(g, p->map, 4096, r->session, false);
		munmap(p->map, 4096);
		close(p->fd);
		close(p->ro);
		free(p);
	}
	munmap(r->rx_wake, 4096);
	close(r->rx_wake_fd);
	free(r->topics);
	free(r);
}

/* ---- the block timeout, until spools ----------------------------------------- */

/*
 * Where holder h of l stands, as the broker believes its slot (the
 * reader's word): forward only, aligned, within the committed end `end`,
 * at least the floor; anything else counts as no move (as the writer
 * counts it, section 3).  h->seen_ns is when that crossed into a new
 * slice last: a move inside a slice frees the writer nothing, so a
 * reader that creeps by 8 bytes counts as still.
 */
static uint64_t holder_seen(struct blane *l, struct lhold *h, uint64_t end, uint64_t now)
{
	uint64_t slice = l->ring.size / SHM_LANE_SLICES;
	uint64_t fl = hold_floor(&l->hold, (unsigned)h->idx), c = 0;
	struct lpage *p;
	uint32_t slot;

	p = hold_page(l, h, &slot);
	if (p)
		c = load_acquire(&p->map->slot[slot]);
	if (c % SHM_REC_ALIGN || c > end || (h->seen_ns && c < h->seen))
		c = h->seen_ns ? h->seen : fl;
	if (c < fl)
		c = fl;
	if (!h->seen_ns || c / slice > h->seen / slice)
		h->seen_ns = now;
	if (c > h->seen)
		h->seen = c;
	return h->seen;
}

/*
 * `short_since` is in the writer's page: the writer can write any value
 * there.  A lying writer can so get only its own readers let go, and
 * only those in the lowest slice of its holders with at least an eighth
 * of the lane unread whose slots did not move into a new slice for the
 * whole timeout, as the broker itself watched them: a reader that keeps
 * reading, or that has read nearly everything, is never let go, whatever
 * the writer says.  An honest writer short of room even for its largest
 * record (a quarter of the lane) leaves the reader that holds it more
 * than that unread: its limit is at most a slice and a record below that
 * reader's slot, and it needs room for two records (section 3).  The
 * committed end (lane_find_end) trusts the writer's hint as far as a
 * walk of commit words confirms it; a lie there again counts against its
 * own readers only.
 */
unsigned lanes_stuck(struct blane *l, uint64_t now, uint64_t timeout_ns, struct lreader **out,
		     unsigned cap)
{
	const struct shm_lane_wpage *wp = (const void *)l->f.data;
	uint64_t slice = l->ring.size / SHM_LANE_SLICES, low = UINT64_MAX, since, end;
	unsigned n = 0;

	since = load_relaxed(&wp->short_since);
	if (!since || l->cut || lanefile_state(&l->f)->state == SHM_LANE_BAD)
		return 0;
	if (lane_find_end(&l->ring, wp, l->known_end, &end) < 0)
		return 0; /* a bad lane: its readers drop it, nobody waits on it */
	l->known_end = end;
	for (unsigned i = 0; i < l->nholders; i++) {
		struct lhold *h = &l->holders[i];
		uint64_t c;

		if (h->kind != SHM_HOLD_HOLD)
			continue;
		c = holder_seen(l, h, end, now);
		if (c < low)
			low = c;
	}
	/* since may be later than now: a writer's clock read after ours */
	if (low == UINT64_MAX || now <= since || now - since < timeout_ns)
		return 0;
	for (unsigned i = 0; i < l->nholders && n < cap; i++) {
		const struct lhold *h = &l->holders[i];

		if (h->kind == SHM_HOLD_HOLD && h->seen / slice == low / slice &&
		    h->seen < end && end - h->seen >= l->ring.size / 8 && now > h->seen_ns &&
		    now - h->seen_ns >= timeout_ns)
			out[n++] = h->r;
	}
	return n;
}

struct blane *lanes_by_number(struct lanes_reg *g, uint32_t number)
{
	struct blane *l;

	for (l = g->lanes; l && l->number != number; l = l->next)
		;
	return l;
}

bool lanes_writer_short(const struct blane *l)
{
	const struct shm_lane_wpage *wp = (const void *)l->f.data;

	return load_relaxed(&wp->short_since) != 0;
}

int lanes_let_go_order(struct blane *l, struct lreader *r, uint64_t order)
{
	int ret = lanes_let_go(l, r);
	struct lhold *h = ret == 0 ? held_by(l, r) : NULL;

	if (h)
		h->order = order;
	return ret;
}

int lanes_let_go(struct blane *l, struct lreader *r)
{
	struct lhold *h = held_by(l, r);
	struct hold_view v;
	struct lpage *p;
	uint32_t slot;
	uint64_t fl;
	int idx;

	if (!h || h->kind != SHM_HOLD_HOLD)
		return -ENOENT;
	p = hold_page(l, h, &slot);
	if (!p || !hold_read(&l->hold, (unsigned)h->idx, &v))
		return -ENOENT; /* a reader it cannot tell holds on */
	/* the reader's bit before the entry goes: a read of a byte the
	 * writer overwrote once it saw the entry gone is followed by the
	 * reader's look at the bit (lane-rw.c, hold_let_go) */
	let_go_mark(p, slot);
	fl = hold_floor(&l->hold, (unsigned)h->idx);
	/* freed first: a full table has room for the WATCH entry then (the
	 * reader unwoken for a moment meanwhile, nothing worse) */
	hold_free(&l->hold, (unsigned)h->idx);
	v.kind = SHM_HOLD_WATCH;
	idx = hold_add(&l->hold, &v, fl);
	if (idx < 0) {
		/* no WATCH entry: the register forgets it (its reader reads
		 * on, looking once a second) */
		*h = l->holders[--l->nholders];
	} else {
		h->idx = idx;
		h->kind = SHM_HOLD_WATCH;
	}
	/* the writer, asleep for space, looks at the table again */
	if (l->tx_wake_fd >= 0)
		page_wake(l->tx_wake_fd);
	return 0;
}

void lanes_free(struct lanes_reg *g)
{
	/* the broker stops: what clients share stays as it is (the writers
	 * and readers go on; the next broker re-adopts it) */
	while (g->readers) {
		struct lreader *r = g->readers;

		g->readers = r->next;
		reader_forget(g, r);
	}
	while (g->lanes) {
		struct blane *l = g->lanes;

		g->lanes = l->next;
		guard(g, l->f.data, l->f.data_len, l->publisher, false);
		lanefile_close(&l->f);
		if (l->tx_wake_fd >= 0)
			close(l->tx_wake_fd);
		if (l->watch_pidfd >= 0)
			close(l->watch_pidfd);
		free(l->holders);
		free(l->sent);
		free(l);
	}
	while (g->arms) {
		struct larm *a = g->arms;

		g->arms = a->next;
		munmap(a->map, 4096);
		close(a->fd);
		free(a);
	}
	lanes_push_done(g);
	free(g->push);
	g->push = NULL;
}

int lanes_walk_check(struct lanes_reg *g, uint32_t number, const struct lreader *r,
		     struct blane **out)
{
	struct blane *l;
	uint64_t end;
	int ret;

	for (l = g->lanes; l && l->number != number; l = l->next)
		;
	if (!l || !r || !held_by(l, r))
		return fail(g, -ENOENT, "%s", "not a lane this session reads");
	*out = l;
	if (lanefile_state(&l->f)->state == SHM_LANE_BAD)
		return 1;
	/* the broker's own walk over its read-only, guarded mapping: the
	 * reader's word is only the reason to look */
	ret = lane_find_end(&l->ring, (const void *)l->f.data, l->known_end, &end);
	if (ret == -EBADMSG)
		return 1;
	if (ret < 0)
		return fail(g, ret, "lane %s: cannot walk it", l->f.name);
	l->known_end = end;
	return 0;
}

/* Records from pos (a boundary a holder stands at) to end, at most a lap. */
static uint64_t records_between(const struct blane *l, uint64_t pos, uint64_t end)
{
	struct ring_cons c;
	struct ring_msg m;
	uint64_t n = 0;

	if (pos >= end || end - pos > l->ring.size ||
	    ring_cons_init(&c, &l->ring, NULL, NULL, pos, RING_SEQ_ANY, LANE_REC_GEN,
			   LANE_REC_GEN) < 0)
		return 0;
	while (c.pos < end && ring_peek(&c, &m) == 0 && m.end <= end) {
		ring_consume(&c, &m);
		n++;
	}
	return n;
}

void lanes_session_stats(struct lanes_reg *g, uint64_t session, uint32_t generation,
			 const struct lreader *r, struct lanes_session_stats *st)
{
	memset(st, 0, sizeof(*st));
	for (struct blane *l = g->lanes; l; l = l->next) {
		const struct shm_lane_wpage *wp = (const void *)l->f.data;
		struct lhold *h = r ? held_by(l, r) : NULL;
		uint64_t end, order = 0, lseq = 0;

		if ((l->publisher != session && !h) ||
		    lanefile_state(&l->f)->state == SHM_LANE_BAD)
			continue;
		if (!l->cut && lane_find_end(&l->ring, wp, l->known_end, &end) == 0)
			l->known_end = end;
		end = l->cut ? l->cut_pos : l->known_end;
		if (l->publisher == session) {
			if (l->cut) {
				order = l->last_order;
				lseq = l->cut_lane_seq;
			} else if (lane_last_order(&l->ring, wp, 0, end, &order, &lseq) < 0) {
				order = lseq = 0;
			}
			st->published += lseq;
			if (l->generation == generation && order > st->next_seq)
				st->next_seq = order;
		}
		if (h) {
			const uint64_t *slot = old_slot(l, h);
			uint64_t v = slot ? load_acquire(slot) : end;

			if (v < end) {
				st->depth_bytes += end - v;
				st->depth_msgs += records_between(l, v, end);
			}
		}
	}
}

void lanes_lane_stats(struct blane *l, uint64_t now_ns, struct lane_stats *st)
{
	const struct shm_lane_wpage *wp = (const void *)l->f.data;
	uint64_t end, low = UINT64_MAX, since;

	/* the committed end now: a walk from where the broker last was (a
	 * bad lane keeps what was found before) */
	if (lanefile_state(&l->f)->state != SHM_LANE_BAD &&
	    lane_find_end(&l->ring, wp, l->known_end, &end) == 0)
		l->known_end = end;
	end = l->known_end;

	*st = (struct lane_stats){ .end = end };
	for (unsigned i = 0; i < l->nholders; i++) {
		const uint64_t *slot = old_slot(l, &l->holders[i]);
		uint64_t v;

		if (l->holders[i].kind != SHM_HOLD_HOLD) {
			st->watchers++;
			continue;
		}
		st->holders++;
		/* a reader's word: shown, never trusted beyond the lane */
		v = slot ? load_acquire(slot) : 0;
		if (v < low)
			low = v;
	}
	st->lag = low != UINT64_MAX && low < end ? end - low : 0;
	/* the writer's word, also only shown */
	since = load_relaxed(&wp->short_since);
	st->short_ms = since && since < now_ns ? (now_ns - since) / 1000000ull : 0;
}
