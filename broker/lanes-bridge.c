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
#include "broker/breader.h"
#include "broker/topic.h"
#include "libclient/laneset.h"
#include "shm/atomics.h"
#include "shm/clock.h"
#include "shm/lane-rw.h"

#define BRIDGE_DIR ".bridge"   /* in lanes/: lanes-adopt.c skips dot names */
#define BRIDGE_BATCH 4096      /* records per call: the loop's other work goes on */
#define BRIDGE_UID ((uid_t)-1) /* no process has it: an arm page of its own */

struct lbridge {
	struct session s;      /* the stand-in: id, name, dirfd, generation, uid */
	struct laneset set;
	bool set_ready;
	uint8_t *buf;          /* a record copied out of its lane */
	uint32_t cap;
	struct laneset_msg m;  /* read, not yet taken by every link */
	bool pending;
	struct lwait w;        /* its sleep on rx_wake (lwait.c) */
	uint64_t offered, bad;
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
	if (bridge(b))
		lwait_done(&bridge(b)->w);
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
	lwait_init(&br->w);
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

void lanes_bridge_push(struct broker *b, const struct lpush *p)
{
	if (bridge(b))
		(void)breader_push(&bridge(b)->set, p, "links");
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
	br->w.win_moved += moved + load_relaxed(&br->set.skipped) - skipped;
	return moved;
}

uint64_t lanes_bridge_poll_ns(struct broker *b)
{
	struct lbridge *br = bridge(b);

	return br ? lwait_poll_ns(&br->w, clock_mono_ns()) : 0;
}

bool lanes_bridge_arm(struct broker *b)
{
	struct lbridge *br = bridge(b);
	struct lreader *r = br ? br->s.lane_reader : NULL;

	if (!r || !r->arm)
		return false;
	if (lwait_backed_off(&br->w, clock_mono_ns(), "links"))
		/* unarmed: writers do not wake it, the loop looks every ms */
		return lanes_bridge_run(b) > 0;
	lwait_arm(&br->w, r);
	if (lanes_bridge_run(b))
		return true;
	lwait_sleep(b, &br->w, r, (uint64_t)LANES_BRIDGE_OP_FUTEX << 56);
	return false;
}

void lanes_bridge_woke(struct broker *b)
{
	lwait_woke(lanes_bridge_reader(b));
}
