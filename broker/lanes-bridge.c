/*
 * broker/lanes-bridge.c - the links' reader of lanes (docs/design/
 * data-path.md, section 7, "Links"; lanes-bridge.h).
 *
 * On the relay a local publisher's message reaches the links when the
 * broker routes it out of the TX ring (router.c, link_offer()).  A lane
 * publisher writes no TX ring, so the broker reads its lanes instead: one
 * reader of the register (lanes.c), under a stand-in session id no client
 * has, subscribed to every topic a link bridges.  It holds those lanes as
 * any block reader does (a link with no room holds its publishers, as on
 * the relay), its cursor pages live in lanes/.bridge, its writers wake it
 * through its arm page and rx_wake like any reader, and the loop sleeps on
 * that word in io_uring (loop.c).  It reads with libshmb's laneset: each
 * publisher's lanes merged by order, so each link sees a publisher's
 * messages in source order, which its `sent` table needs (link_offer()
 * skips what is below the sequence it took last).
 *
 * A record is acknowledged only after every link that bridges its topic
 * took it into its replay ring: a broker killed in between offers it
 * again after its restart (the lanes and this reader's pages are
 * re-adopted, lanes-adopt.c), and the peer's delivery tables drop the
 * copy, as they drop what a relay restart routes twice.
 *
 * Must never: acknowledge a record a link has not taken; hand a link a
 * publisher's messages out of order; trust a byte of a lane (laneset
 * checks every record, copies the payload before it is offered, and
 * reads under libshmb's SIGBUS guard).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/ctl-lanes.h"
#include "broker/lanes-bridge.h"
#include "broker/lanes.h"
#include "broker/link.h"
#include "broker/log.h"
#include "broker/loop.h"
#include "broker/topic.h"
#include "broker/uring-futex.h"
#include "libclient/laneset.h"
#include "shm/atomics.h"
#include "shm/clock.h"
#include "shm/lane-rw.h"

#define BRIDGE_DIR ".bridge"   /* in lanes/: lanes-adopt.c skips dot names */
#define BRIDGE_BATCH 4096      /* records per call: the loop's other work goes on */
#define BRIDGE_UID ((uid_t)-1) /* no process has it: an arm page of its own */
/* A writer can bump the reader's rx_wake at will (it maps it to wake it):
 * this many wake-ups in a window that brought records for fewer than
 * half of them, and the reader sleeps unarmed for a while, looked at
 * every ms instead (as the relay backs off a noisy tx_signal). */
#define NOISY_WAKES 100u
#define NOISY_WINDOW_NS 200000000ull
#define NOISY_BACKOFF_NS 200000000ull
#define NOISY_POLL_NS 1000000ull

struct lbridge {
	struct session s;      /* the stand-in: id, name, dirfd, generation, uid */
	struct laneset set;
	bool set_ready;
	uint8_t *buf;          /* a record copied out of its lane */
	uint32_t cap;
	struct laneset_msg m;  /* read, not yet taken by every link */
	bool pending;
	bool futex_armed;
	uint64_t arm_seq;
	uint64_t offered, bad;
	/* noisy wake-ups: the window's start, its wake-ups and records */
	uint64_t win_start, win_moved, backoff_until;
	uint32_t win_wakes;
	uint64_t backoffs;
};

static struct lbridge *bridge(struct broker *b)
{
	return b->lanes_bridge;
}

struct session *lanes_bridge_session(struct broker *b)
{
	return bridge(b) ? &bridge(b)->s : NULL;
}

struct lreader *lanes_bridge_reader(struct broker *b)
{
	return bridge(b) ? bridge(b)->s.lane_reader : NULL;
}

static void on_event(void *ctx, int event, uint64_t publisher, uint32_t lane)
{
	struct lbridge *br = ctx;

	if (event != LANESET_EV_BAD)
		return;
	br->bad++;
	log_msg(LOG_WARNING, "links: lane %u of session %llu is bad: what it still held is not"
		" forwarded", lane, (unsigned long long)publisher);
}

static void futex_done(struct broker *b, unsigned kind, unsigned a, uint32_t gen, int res,
		       bool more)
{
	(void)kind;
	(void)a;
	(void)gen;
	(void)res;
	(void)more;
	if (bridge(b)) {
		bridge(b)->futex_armed = false;
		bridge(b)->win_wakes++;
	}
}

int lanes_bridge_init(struct broker *b)
{
	struct lbridge *br;
	int fd;

	if (mkdirat(b->lanes->lanes_dirfd, BRIDGE_DIR, 0700) < 0 && errno != EEXIST)
		return -errno;
	fd = openat(b->lanes->lanes_dirfd, BRIDGE_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC |
		    O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	br = calloc(1, sizeof(*br));
	if (!br) {
		close(fd);
		return -ENOMEM;
	}
	if (laneset_init(&br->set, on_event, br) < 0) {
		free(br);
		close(fd);
		return -ENOMEM;
	}
	br->set_ready = true;
	br->s.id = LANES_BRIDGE_ID;
	br->s.generation = 1;
	br->s.uid = BRIDGE_UID;
	br->s.policy = SHM_POLICY_BLOCK;
	br->s.dirfd = fd;
	snprintf(br->s.name, sizeof(br->s.name), "%s", "(the links)");
	br->arm_seq = clock_mono_ns();
	b->lanes_bridge = br;
	loop_on(b, LANES_BRIDGE_OP_FUTEX, futex_done);
	return 0;
}

int lanes_bridge_start(struct broker *b)
{
	struct lbridge *br = bridge(b);
	struct lreader *r;
	int ret;

	if (!br)
		return 0;
	r = br->s.lane_reader;
	if (!r) {
		r = lanes_reader_new(b->lanes, br->s.id, br->s.generation, br->s.uid, false);
		if (!r) {
			log_msg(LOG_ERR, "links: no lane reader: %s", b->lanes->why);
			return -ENOMEM;
		}
		br->s.lane_reader = r;
	}
	/* the lanes it held in the earlier run, from where it acknowledged */
	ret = lanes_resend(b->lanes, br->s.id, br->s.generation, r);
	ctl_lanes_flush(b);
	if (ret < 0)
		log_msg(LOG_WARNING, "links: lanes: %s", b->lanes->why);
	lanes_bridge_topics(b);
	return 0;
}

void lanes_bridge_free(struct broker *b)
{
	struct lbridge *br = bridge(b);

	if (!br)
		return;
	if (br->offered || br->bad)
		log_msg(LOG_NOTICE, "links: %llu lane records offered to the links, %llu bad lane(s)",
			(unsigned long long)br->offered, (unsigned long long)br->bad);
	if (br->set_ready)
		laneset_free(&br->set);
	/* its reader is the register's (lanes_free); its pages stay for
	 * the next run */
	close(br->s.dirfd);
	free(br->s.topics);
	free(br->buf);
	free(br);
	b->lanes_bridge = NULL;
}

/* A PROTO_LANE push: data, meta, [cursor page], [tx_wake], [rx_wake, arm]
 * (its own words: the broker has them already). */
void lanes_bridge_push(struct broker *b, const struct lpush *p)
{
	struct lbridge *br = bridge(b);
	const struct proto_lane *m = &p->msg.lane;
	int page_fd = -1, wake_fd = -1, ret;
	struct laneset_desc d;

	if (!br || p->msg.h.type != PROTO_LANE || m->lane == 0 || (m->flags & PROTO_LANE_RELEASED))
		return;
	if (laneset_push_desc(m, p->fds, p->nfds, &d, &page_fd, &wake_fd) < 0) {
		log_msg(LOG_ERR, "links: lane %u came with %u descriptors, not what its flags say:"
			" not read", m->lane, p->nfds);
		return;
	}
	/* copied out before a link takes it: never read in place */
	d.in_place = d.drop_oldest = false;
	/* a page or lane it has already (a resend) is refused: nothing to do */
	if (page_fd >= 0)
		(void)laneset_cursor_page(&br->set, m->publisher, m->page, page_fd);
	ret = laneset_add(&br->set, &d, p->fds[0], p->fds[1], wake_fd);
	if (ret == -EEXIST && wake_fd >= 0)
		(void)laneset_set_tx_wake(&br->set, m->lane, wake_fd);
	else if (ret < 0 && ret != -EEXIST)
		log_msg(LOG_WARNING, "links: lane %u not read: %s", m->lane, br->set.why);
}

void lanes_bridge_topics(struct broker *b)
{
	struct lbridge *br = bridge(b);
	struct lreader *r = br ? br->s.lane_reader : NULL;
	if (!r)
		return;
	for (unsigned k = 0; k < b->ntopics; k++) {
		const struct topic *t = b->topics[k];

		if (!t || !t->links || lanes_reader_reads(r, t->id))
			continue;
		/* a topic once bridged stays read: whether a record goes to a
		 * link is its topic's mask at the time (bridge_offer) */
		if (laneset_topic(&br->set, t->id, true) < 0 ||
		    lanes_subscribe(b->lanes, r, t->id) < 0)
			log_msg(LOG_WARNING, "links: topic %s: lanes: %s", t->name, b->lanes->why);
	}
	/* the lanes to it, the new holder to each writer */
	ctl_lanes_flush(b);
}

/* m to every link its topic is bridged to now: 0, or -EAGAIN when one has
 * no room (those that took it skip it next time: link_offer's table). */
static int bridge_offer(struct broker *b, const struct laneset_msg *m)
{
	const struct topic *t = topic_by_id(b, m->topic_id);
	const struct session *pub;
	int ret = 0;

	if (!t || !t->links || !m->order)
		return 0;
	pub = session_by_id(b, m->publisher);
	for (uint64_t lm = t->links; lm; lm &= lm - 1)
		if (link_offer(b, (unsigned)__builtin_ctzll(lm), m->publisher,
			       pub ? pub->name : "(gone)", m->order - 1, t, m->data, m->len) == -EAGAIN)
			ret = -EAGAIN;
	return ret;
}

uint64_t lanes_bridge_run(struct broker *b)
{
	struct lbridge *br = bridge(b);
	uint64_t moved = 0, skipped;

	if (!br || !br->s.lane_reader)
		return 0;
	skipped = load_relaxed(&br->set.skipped);
	while (moved < BRIDGE_BATCH) {
		if (!br->pending) {
			int k = laneset_next(&br->set, br->buf, br->cap, &br->m);

			if (k == -EMSGSIZE && br->m.len > br->cap) {
				uint8_t *n = realloc(br->buf, br->m.len);

				if (!n)
					break;
				br->buf = n;
				br->cap = br->m.len;
				continue;
			}
			if (k <= 0)
				break;
			br->pending = true;
		}
		if (bridge_offer(b, &br->m) == -EAGAIN)
			break;
		br->pending = false;
		br->offered++;
		moved++;
	}
	/* what every link took (and what no link wanted) is let go; a record
	 * waiting for room is not, nor anything after it */
	if (moved && !br->pending)
		laneset_ack(&br->set);
	/* records of topics no link bridges are what an honest writer woke
	 * it for too */
	br->win_moved += moved + load_relaxed(&br->set.skipped) - skipped;
	return moved;
}

/* Once a window: back off when its wake-ups brought too little. */
static bool backed_off(struct lbridge *br, uint64_t now)
{
	if (now - br->win_start >= NOISY_WINDOW_NS) {
		if (br->win_wakes > NOISY_WAKES && br->win_moved < br->win_wakes / 2) {
			if (now >= br->backoff_until)
				log_msg(LOG_WARNING, "links: a lane writer wakes the broker's reader of"
					" lanes with no records (%u wake-ups, %llu records in %llu"
					" ms): backed off, looked at every ms", br->win_wakes,
					(unsigned long long)br->win_moved,
					(unsigned long long)(NOISY_WINDOW_NS / 1000000));
			br->backoff_until = now + NOISY_BACKOFF_NS;
			br->backoffs++;
		}
		br->win_start = now;
		br->win_wakes = 0;
		br->win_moved = 0;
	}
	return now < br->backoff_until;
}

uint64_t lanes_bridge_poll_ns(struct broker *b)
{
	struct lbridge *br = bridge(b);

	return br && clock_mono_ns() < br->backoff_until ? NOISY_POLL_NS : 0;
}

bool lanes_bridge_arm(struct broker *b)
{
	struct lbridge *br = bridge(b);
	struct lreader *r = br ? br->s.lane_reader : NULL;
	uint32_t v;

	if (!r || !r->arm)
		return false;
	if (backed_off(br, clock_mono_ns()))
		/* unarmed: writers do not wake it, the loop looks every ms */
		return lanes_bridge_run(b) > 0;
	v = load_acquire(r->rx_wake);
	br->arm_seq += 1 + !(br->arm_seq + 1); /* fresh, never 0 */
	lane_arm(r->arm->map, r->arm_slot, br->arm_seq);
	/* pairs with the writer's fence between its commit and its look at
	 * the bits: it sees the arm, or this look sees the record */
	fence_full();
	if (lanes_bridge_run(b))
		return true;
	if (b->uring_futex && !br->futex_armed) {
		struct io_uring_sqe *sqe = loop_sqe(b);

		if (sqe) {
			uring_prep_futex_wait(sqe, r->rx_wake, v);
			io_uring_sqe_set_data64(sqe, (uint64_t)LANES_BRIDGE_OP_FUTEX << 56);
			br->futex_armed = true;
		}
	}
	return false;
}

void lanes_bridge_woke(struct broker *b)
{
	struct lreader *r = lanes_bridge_reader(b);

	if (r && r->arm)
		lane_disarm(r->arm->map, r->arm_slot);
}
