/*
 * broker/ctl-lanes.c - the direct data path in the running broker, on by
 * default (--no-lanes turns it off; docs/design/data-path.md, section 9,
 * step 3): the register of lanes (lanes.c) made at start-up,
 * PROTO_LANE_TOPIC answered, subscriptions and the ends of owner
 * generations passed on, and the pushes it queues sent to the owners.
 *
 * Only clients that ask for lanes in their HELLO use them (libshmb unless
 * SHMB_LANES=0, and tests/integration/test-lanes.c's raw clients); the
 * relay path runs as before beside them.
 *
 * A generation's lanes outlive a lost connection: libshmb reconnects and
 * REATTACHes with the same generation, is sent again what it missed, and
 * writes on; they are cut when the generation ends or its process dies.
 * A live reader that holds a writer back longer than --block-timeout
 * stops holding and is detached, as on the relay (block_timeouts).
 *
 * Must never: hand a writer its data file by anything but a descriptor
 * opened under Landlock where the kernel has it (harden.c); let a
 * session's owner use a lane of a topic its uid may not publish on;
 * leave a push's descriptors open after it was sent or dropped; cut a
 * generation's lanes while its live owner may still come back with it;
 * let a hold go on its writer's word alone (lanes_stuck watches the
 * reader too), or that of a reader detached for another reason than the
 * block timeout before it expires.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/ctl-int.h"
#include "broker/ctl-lanes.h"
#include "broker/ctl.h"
#include "broker/guard.h"
#include "broker/harden.h"
#include "broker/lanes-adopt.h"
#include "broker/lanes-bridge.h"
#include "broker/lanes-spill.h"
#include "broker/lanes.h"
#include "broker/log.h"
#include "broker/session.h"
#include "broker/topic.h"
#include "shm/clock.h"
#include "shm/futex.h"

static int session_dir(void *ctx, uint64_t id)
{
	struct session *s = id == LANES_BRIDGE_ID ? lanes_bridge_session(ctx) : session_by_id(ctx, id);

	return s ? s->dirfd : -1;
}

static void guard_hook(void *ctx, void *base, size_t len, uint64_t id, bool add)
{
	if (add)
		guard_add(base, len, session_by_id(ctx, id));
	else
		guard_remove(base);
}

static int client_fd(void *ctx, int dirfd, const char *name, int own_fd)
{
	return harden_client_fd(ctx, dirfd, name, own_fd);
}

static void adopted_readers(struct broker *b);

int ctl_lanes_start(struct broker *b)
{
	int fd, r;

	if (!b->o.lanes)
		return 0;
	if (mkdirat(b->dirfd, "lanes", 0700) < 0 && errno != EEXIST)
		return -errno;
	fd = openat(b->dirfd, "lanes", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	b->lanes = calloc(1, sizeof(*b->lanes));
	if (!b->lanes) {
		close(fd);
		return -ENOMEM;
	}
	lanes_init(b->lanes, fd, b->broker_id);
	b->lanes->ring_size = b->o.tx_ring_size;
	b->lanes->session_dir = session_dir;
	b->lanes->guard = guard_hook;
	b->lanes->client_fd = client_fd;
	b->lanes->ctx = b;
	lanes_spill_init(b);
	/* the links' reader first: re-adoption re-makes it too */
	r = lanes_bridge_init(b);
	/* the lanes of an earlier run, with their holders (lanes-adopt.c) */
	if (r == 0)
		r = lanes_adopt(b);
	if (r == 0)
		r = lanes_bridge_start(b);
	if (r < 0) {
		ctl_lanes_stop(b);
		return r;
	}
	adopted_readers(b);
	log_msg(LOG_NOTICE, "lanes on: clients that speak them publish into shared lanes their"
		" subscribers read directly");
	return 0;
}

/*
 * After a restart, the re-adopted block readers with no owner: one whose
 * last owner is gone cannot come back and is spilled now (an earlier
 * run's spill starts again from its cursor slots; the copies it made
 * again carry SHM_RX_SPOOLED, which the next owner skips by its floor);
 * one whose owner lives may REATTACH, and its death is watched as a
 * detached owner's is (ctl_lanes_deaths).
 */
static void adopted_readers(struct broker *b)
{
	for (unsigned i = 0; i < b->nsessions; i++) {
		struct session *s = b->sessions[i];

		if (s->owner || !s->lane_reader || s->lane_reader->drop_oldest ||
		    s->lane_reader->generation != s->generation)
			continue;
		if (s->adopted_pidfd >= 0) {
			if (s->reader_watch_pidfd < 0)
				s->reader_watch_pidfd = fcntl(s->adopted_pidfd, F_DUPFD_CLOEXEC, 0);
		} else {
			ctl_lanes_spill(b, s, "its owner did not live through the broker's restart");
		}
	}
}

void ctl_lanes_stop(struct broker *b)
{
	if (!b->lanes)
		return;
	lanes_adopt_stop();
	lanes_spill_free(b);
	lanes_bridge_free(b);
	close(b->lanes->lanes_dirfd);
	lanes_free(b->lanes);
	free(b->lanes);
	b->lanes = NULL;
}

/* The session's subscriptions, before the push that gives a reader
 * generation its own words: it filters its lanes by them. */
static void send_topics(struct session *s)
{
	struct proto_reader_topics m = {
		.h = { PROTO_READER_TOPICS, sizeof(m), 0 },
		.session_id = s->id,
		.generation = s->generation,
		.flags = PROTO_TOPICS_FIRST,
	};
	unsigned i = 0;

	do {
		m.count = 0;
		for (; i < s->ntopics && m.count < PROTO_READER_TOPICS_MAX; i++)
			m.ids[m.count++] = s->topics[i];
		if (ctl_send_msg(s->owner, &m, sizeof(m), NULL, 0) < 0) {
			log_msg(LOG_WARNING, "session %s: its topics could not be sent", s->name);
			return;
		}
		m.flags = 0;
	} while (i < s->ntopics);
}

/* Send every queued push to its session's owner (if it still has that
 * owner generation) but those for session `keep` (0: none), which stay
 * queued; close the sent ones' descriptors. */
static void flush_but(struct broker *b, uint64_t keep)
{
	struct lanes_reg *g = b->lanes;
	unsigned kept = 0;
	int r;

	for (unsigned i = 0; i < g->npush; i++) {
		struct lpush *p = &g->push[i];
		struct session *s;

		if (keep && p->session == keep)
			continue;

		if (p->session == LANES_BRIDGE_ID) {
			/* the broker's own reader, for the links */
			lanes_bridge_push(b, p);
			continue;
		}
		/* a spilled session's reader is the broker's */
		if (lanes_spill_push(b, p))
			continue;
		s = session_by_id(b, p->session);

		if (!s || !s->owner || s->generation != p->generation)
			continue;
		if (p->msg.h.type == PROTO_LANE && (p->msg.lane.flags & PROTO_LANE_SELF))
			send_topics(s);
		if ((r = ctl_send_msg(s->owner, &p->msg, p->msg.h.len, p->fds, (int)p->nfds)) < 0)
			log_msg(LOG_WARNING, "session %s: a lane message could not be sent: %s", s->name,
				strerror(-r));
		else if (p->msg.h.type == PROTO_LANE && s->lane_reader &&
			 s->lane_reader->generation == s->generation &&
			 !(p->msg.lane.flags & PROTO_LANE_SELF))
			/* it sleeps on its rx_wake: it reads the push when woken
			 * (section 4 of data-path.md, "The broker's wakes") */
			lanes_reader_wake(s->lane_reader);
		else if (p->msg.h.type == PROTO_LANE && s->rxc)
			/* one that has not its rx_wake yet sleeps on its RX
			 * ring's word */
			wake_signal(&s->rxc->rx_signal, &s->txc->rx_waiters);
	}
	if (!keep) {
		lanes_push_done(g);
		return;
	}
	/* the sent ones' descriptors closed, the kept ones moved down */
	for (unsigned i = 0; i < g->npush; i++) {
		struct lpush *p = &g->push[i];

		if (p->session == keep) {
			if (kept != i)
				g->push[kept] = *p;
			kept++;
			continue;
		}
		for (unsigned k = 0; k < p->nfds; k++)
			close(p->fds[k]);
	}
	g->npush = kept;
}

void ctl_lanes_flush(struct broker *b)
{
	flush_but(b, 0);
}

/* Whether s's owners read lanes, in its directory: a restarted broker
 * makes a reader of it again, though it held no lane (lanes-adopt.c). */
static void reader_mark(struct session *s, bool on)
{
	int fd;

	if (!on) {
		unlinkat(s->dirfd, LANES_READER_MARK, 0);
		return;
	}
	fd = openat(s->dirfd, LANES_READER_MARK, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd >= 0)
		close(fd);
	else
		log_msg(LOG_WARNING, "session %s: its lane reader cannot be noted (%s): a restarted"
			" broker holds lanes for it only once it holds one", s->name, strerror(errno));
}

/* A new owner that reads lanes takes the holds over where the last
 * reader acknowledged; one that does not lets them go. */
static void reader_switch(struct broker *b, struct session *s)
{
	struct lreader *r = NULL;

	if (s->owner && s->owner->lanes)
		r = lanes_reader_switch(b->lanes, s->lane_reader, s->generation);
	if (!r) {
		lanes_reader_end(b->lanes, s->lane_reader);
		s->lane_reader = NULL;
	} else {
		s->lane_reader = r;
	}
}

/* The session's reader for this owner generation, made on first use. */
static struct lreader *reader_of(struct broker *b, struct session *s)
{
	if (s->lane_reader && s->lane_reader->generation != s->generation)
		reader_switch(b, s);
	if (!s->lane_reader) {
		s->lane_reader = lanes_reader_new(b->lanes, s->id, s->generation, s->uid,
						  s->policy == SHM_POLICY_DROP_OLDEST);
		if (s->lane_reader)
			reader_mark(s, true);
	}
	return s->lane_reader;
}

/* The subscribers of t that may read it and have an owner now (out has
 * room for all of t's subscribers). */
static unsigned readers_of(struct broker *b, const struct topic *t, struct lreader **out)
{
	unsigned n = 0;

	for (unsigned i = 0; i < t->nsubs; i++) {
		struct session *s = t->subs[i];
		struct lreader *r;

		/* only owners that speak the lane messages read lanes; a
		 * detached one that did holds too (as its RX ring would) and
		 * is told at its REATTACH (ctl_lanes_opened) */
		if (s->owner ? !s->owner->lanes
			     : !s->lane_reader || s->lane_reader->generation != s->generation)
			continue;
		if (s->quarantined || (s->uid != 0 && s->uid != t->owner))
			continue;
		r = reader_of(b, s);
		if (r)
			out[n++] = r;
	}
	/* the links' reader, when a link bridges it (out has room for one
	 * more) */
	if (t->links && lanes_bridge_reader(b))
		out[n++] = lanes_bridge_reader(b);
	return n;
}

static int lane_reply(struct broker *b, struct conn *c, uint64_t req_id, struct blane *l, bool fds)
{
	struct proto_reply r;
	int fd[4] = { -1, -1, -1, -1 }, ret;

	ctl_reply_init(&r, req_id, 0);
	r.u.lane.lane = l->number;
	r.u.lane.ring_size = l->ring.size;
	if (!fds)
		return ctl_send_reply(c, &r, NULL, 0);
	/* the writer's data descriptor cannot truncate where Landlock allows */
	fd[0] = harden_client_fd(b, l->f.dirfd, LANEFILE_DATA, l->f.data_fd);
	fd[1] = fcntl(l->f.meta_ro, F_DUPFD_CLOEXEC, 0);
	fd[2] = fcntl(l->f.hold_ro, F_DUPFD_CLOEXEC, 0);
	fd[3] = fcntl(l->tx_wake_fd, F_DUPFD_CLOEXEC, 0);
	if (fd[0] < 0 || fd[1] < 0 || fd[2] < 0 || fd[3] < 0) {
		ret = ctl_reply_err(c, req_id, -EMFILE, "cannot pass the lane's descriptors");
	} else {
		r.u.lane.fds = 4;
		ret = ctl_send_reply(c, &r, fd, 4);
	}
	for (int i = 0; i < 4; i++)
		if (fd[i] >= 0)
			close(fd[i]);
	return ret;
}

int ctl_lane_topic(struct broker *b, struct conn *c, const struct proto_lane_topic *q)
{
	struct session *s = session_by_id(b, q->session_id);
	struct topic *t = topic_by_id(b, q->topic_id);
	struct lreader **rd;
	struct blane *l;
	bool fresh;
	int ret;

	if (!b->lanes)
		return ctl_reply_err(c, q->h.req_id, -EOPNOTSUPP, "lanes are off (shmbd --no-lanes)");
	if (!c->lanes)
		return ctl_reply_err(c, q->h.req_id, -EPROTO, "say PROTO_HELLO_LANES first");
	if (!s || s->uid != c->uid)
		return ctl_reply_err(c, q->h.req_id, -ENOENT, "no such session of yours");
	if (s->owner != c)
		return ctl_reply_err(c, q->h.req_id, -ESTALE, "not this session's owner");
	if (!t)
		return ctl_reply_err(c, q->h.req_id, -ENOENT, "no such topic");
	if (c->uid != 0 && t->owner != c->uid)
		return ctl_reply_err(c, q->h.req_id, -EPERM, "topic %s is another uid's", t->name);
	/* a topic bridged since the links' reader last looked */
	if (t->links)
		lanes_bridge_topics(b);
	/* descriptors for a lane new to its writer, or one whose first
	 * reply it never read (it asks again, saying so) */
	fresh = !lanes_find(b->lanes, s->id, s->generation) || (q->flags & PROTO_LANE_TOPIC_FDS);
	rd = calloc(t->nsubs + 1, sizeof(*rd));
	if (!rd)
		return ctl_reply_err(c, q->h.req_id, -ENOMEM, "out of memory");
	/* a lane holds what the TX ring and a subscriber's RX ring held
	 * between them on the relay: a burst the relay absorbed without
	 * blocking its publisher fits (test-broker batched_publish) */
	ret = lanes_topic_use(b->lanes, s->id, s->generation, s->uid,
			      s->tx_ring_size > b->o.rx_ring_size ? s->tx_ring_size : b->o.rx_ring_size,
			      t->id, rd,
			      readers_of(b, t, rd), &l);
	free(rd);
	if (ret < 0) {
		lanes_push_done(b->lanes);
		log_msg(LOG_WARNING, "session %s: %s", s->name, b->lanes->why);
		return ctl_reply_err(c, q->h.req_id, ret, "%s", b->lanes->why);
	}
	/* the readers are told before the writer's reply: a writer that
	 * fills the lane before a reader's push came waits for a reader that
	 * cannot know the lane yet (a thread that publishes and then polls
	 * for what another session of its own reads would wait for itself);
	 * the writer's own pushes after its reply (it maps its lane first) */
	flush_but(b, s->id);
	ret = lane_reply(b, c, q->h.req_id, l, fresh);
	ctl_lanes_flush(b);
	return ret;
}

void ctl_lanes_subscribed(struct broker *b, struct session *s, uint32_t topic)
{
	struct lreader *r;

	if (!b->lanes || !s->owner || !s->owner->lanes)
		return;
	r = reader_of(b, s);
	if (!r || lanes_subscribe(b->lanes, r, topic) < 0)
		log_msg(LOG_WARNING, "session %s: lanes: %s", s->name, b->lanes->why);
	ctl_lanes_flush(b);
}

void ctl_lanes_unsubscribed(struct broker *b, struct session *s, uint32_t topic)
{
	struct lreader *r = s->lane_reader;
	unsigned n;

	if (!b->lanes || !r || r->generation != s->generation)
		return;
	n = lanes_unsubscribe(b->lanes, r, topic);
	if (n)
		log_msg(LOG_DEBUG, "session %s: %u lane(s) let go at an unsubscribe", s->name, n);
	ctl_lanes_flush(b);
}

void ctl_lanes_reader_self(struct broker *b, struct session *s)
{
	struct lreader *r;

	if (!b->lanes || !s->owner || !s->owner->lanes)
		return;
	r = reader_of(b, s);
	if (!r || lanes_reader_self(b->lanes, r) < 0)
		log_msg(LOG_WARNING, "session %s: lanes: %s", s->name, b->lanes->why);
	ctl_lanes_flush(b);
}

/* s's owner went and may come back while its process lives: a copy of
 * its pidfd tells when it cannot (ctl_lanes_deaths). */
static void watch_reader(struct session *s, uint32_t gen)
{
	if (!s->lane_reader || s->lane_reader->drop_oldest || s->lane_reader->generation != gen ||
	    s->reader_watch_pidfd >= 0 || s->owner_pidfd < 0)
		return;
	s->reader_watch_pidfd = fcntl(s->owner_pidfd, F_DUPFD_CLOEXEC, 0);
}

static void unwatch_reader(struct session *s)
{
	if (s->reader_watch_pidfd >= 0)
		close(s->reader_watch_pidfd);
	s->reader_watch_pidfd = -1;
}

void ctl_lanes_spill(struct broker *b, struct session *s, const char *why)
{
	if (!b->lanes)
		return;
	unwatch_reader(s);
	/* its owner generation is over: a process with the pid it had is not
	 * its owner coming back (a REATTACH would find its holds moved) */
	session_adopted_forget(s);
	if (lanes_spill_start(b, s, why) < 0)
		log_msg(LOG_WARNING, "session %s: not spilled (%s): its holds hold", s->name, why);
}

void ctl_lanes_opened(struct broker *b, struct session *s)
{
	bool spilled;

	if (!b->lanes)
		return;
	unwatch_reader(s);
	/* the copying stops at its slots, where the new owner starts */
	spilled = lanes_spill_stop(b, s);
	if (s->lane_reader && (spilled || s->lane_reader->generation != s->generation)) {
		reader_switch(b, s);
	} else if (s->owner && s->owner->lanes &&
		   lanes_resend(b->lanes, s->id, s->generation, s->lane_reader) < 0) {
		/* ctl_lanes_flush() sends what was queued; the owner lacks the rest */
		log_msg(LOG_WARNING, "session %s: lanes not all told again: %s", s->name,
			b->lanes->why);
	} else if (s->owner && !s->owner->lanes && s->lane_reader) {
		/* back without lanes (a reader re-made for it after a restart):
		 * it cannot read them, and its holds would stop their writers */
		lanes_reader_end(b->lanes, s->lane_reader);
		s->lane_reader = NULL;
		reader_mark(s, false);
	}
	/* its own sleep word and arm page, though it holds no lane: after a
	 * broker restart they are new (the old ones were the dead broker's
	 * memfds) and the library switches to them */
	if (s->owner && s->owner->lanes && s->lane_reader &&
	    lanes_reader_self(b->lanes, s->lane_reader) < 0)
		log_msg(LOG_WARNING, "session %s: lanes: %s", s->name, b->lanes->why);
	ctl_lanes_flush(b);
}

void ctl_lanes_ownerless(struct broker *b, struct session *s)
{
	struct lreader *r;

	if (!b->lanes || s->owner || !s->lane_reader)
		return;
	/* no process has the new generation: copied for it until one does
	 * (the switch to it is the spill's) */
	lanes_spill_stop(b, s);
	unwatch_reader(s);
	if (lanes_spill_start(b, s, "its owner was kicked") > 0 ||
	    s->lane_reader->generation == s->generation)
		return;
	/* readers_of() holds new lanes for a detached session only through
	 * a reader of its current generation: left at the fenced one, it
	 * would miss every lane made before its next owner comes */
	r = lanes_reader_switch(b->lanes, s->lane_reader, s->generation);
	if (!r) {
		log_msg(LOG_WARNING, "session %s: lanes: its holds are let go at the kick: %s",
			s->name, b->lanes->why);
		lanes_reader_end(b->lanes, s->lane_reader);
	}
	s->lane_reader = r;
	/* the pushes went to no owner: the next one is sent them when it
	 * takes this generation's holds over (ctl_lanes_opened) */
	ctl_lanes_flush(b);
}

void ctl_lanes_wake_reader(struct session *s)
{
	if (s->lane_reader)
		lanes_reader_wake(s->lane_reader);
}

/*
 * s's owner generation gen lost its connection: its open lanes are
 * watched through a copy of its process's pidfd (ctl_lanes_deaths), so
 * that the same owner may reattach and write on.  -1 when it cannot be
 * watched (no pidfd): then its lanes are cut now.
 */
static int watch_writer(struct broker *b, struct session *s, uint32_t gen)
{
	for (struct blane *l = b->lanes->lanes; l; l = l->next) {
		int fd;

		if (l->publisher != s->id || l->generation != gen || l->cut)
			continue;
		fd = s->owner_pidfd >= 0 ? fcntl(s->owner_pidfd, F_DUPFD_CLOEXEC, 0) : -1;
		if (fd < 0)
			return -1;
		if (l->watch_pidfd >= 0)
			close(l->watch_pidfd);
		l->watch_pidfd = fd;
	}
	return 0;
}

void ctl_lanes_session_end(struct broker *b, struct session *s, uint32_t gen,
			   enum ctl_lanes_end how)
{
	if (!b->lanes)
		return;
	/* as a publisher: its lanes end after their last record, unless it
	 * may come back as it was */
	if (how != CTL_LANES_DETACHED || watch_writer(b, s, gen) < 0) {
		if (lanes_publisher_end(b->lanes, s->id, gen, &s->lanes_next_seq) < 0)
			log_msg(LOG_WARNING, "session %s: lanes: %s", s->name, b->lanes->why);
	}
	/* as a reader: it holds on while the session lives, detached or not
	 * (a block session's writers wait for it, as with its RX ring);
	 * its next owner takes the holds over (ctl_lanes_opened); once its
	 * owner cannot come back, the broker copies for it (lanes-spill.c) */
	if (how == CTL_LANES_DETACHED)
		watch_reader(s, gen);
	if (how == CTL_LANES_GONE) {
		lanes_spill_stop(b, s);
		unwatch_reader(s);
	}
	if (how == CTL_LANES_GONE && s->lane_reader) {
		lanes_reader_end(b->lanes, s->lane_reader);
		s->lane_reader = NULL;
	}
	/* before its directory goes (it must be empty then) */
	if (how == CTL_LANES_GONE)
		reader_mark(s, false);
	lanes_push_done(b->lanes);
}

void ctl_lanes_fence(struct broker *b, struct session *s, uint32_t gen)
{
	if (!b->lanes)
		return;
	if (lanes_publisher_fence(b->lanes, s->id, gen, &s->lanes_next_seq) < 0)
		log_msg(LOG_WARNING, "session %s: lanes: %s", s->name, b->lanes->why);
}

void ctl_lanes_deaths(struct broker *b)
{
	if (!b->lanes)
		return;
	/* a detached reader's process that died comes back to no session */
	for (unsigned i = 0; i < b->nsessions; i++) {
		struct session *s = b->sessions[i];
		struct pollfd pf = { .fd = s->reader_watch_pidfd, .events = POLLIN };

		if (s->reader_watch_pidfd < 0)
			continue;
		if (s->owner)
			unwatch_reader(s);
		else if (poll(&pf, 1, 0) == 1)
			ctl_lanes_spill(b, s, "its detached owner died");
	}
	for (struct blane *l = b->lanes->lanes; l; l = l->next) {
		struct pollfd pf = { .fd = l->watch_pidfd, .events = POLLIN };
		struct session *s;

		if (l->watch_pidfd < 0)
			continue;
		s = session_by_id(b, l->publisher);
		if (!l->cut && s && !s->owner && s->generation == l->generation) {
			/* alive (or not to be known now): it may still come back */
			if (poll(&pf, 1, 0) != 1)
				continue;
			log_msg(LOG_INFO, "session %s: its detached owner (pid %d) died: the lanes of"
				" generation %u are cut", s->name, (int)s->owner_pid, l->generation);
			/* its last order kept for its next owner generation */
			if (lanes_publisher_end(b->lanes, l->publisher, l->generation,
						&s->lanes_next_seq) < 0)
				log_msg(LOG_WARNING, "session %s: lanes: %s", s->name, b->lanes->why);
		}
		/* cut, or its owner is back: nothing to watch */
		close(l->watch_pidfd);
		l->watch_pidfd = -1;
	}
}

/* Has the writer cut, grown or punched its lane's data file? */
static const char *lane_changed(const struct blane *l)
{
	struct stat st;

	if (fstat(l->f.data_fd, &st) < 0)
		return "it cannot be looked at";
	if ((uint64_t)st.st_size < l->f.data_len)
		return "it was truncated";
	if ((uint64_t)st.st_size > l->f.data_len)
		return "it grew";
	if ((uint64_t)st.st_blocks < l->f.data_blocks)
		return "it lost blocks (a hole was punched in it)";
	return NULL;
}

void ctl_lanes_sweep(struct broker *b)
{
	if (!b->lanes)
		return;
	for (struct blane *l = b->lanes->lanes; l; l = l->next) {
		const char *what;
		struct session *s;

		if (lanefile_state(&l->f)->state == SHM_LANE_BAD || !(what = lane_changed(l)))
			continue;
		/* its readers drop it (they read it under their guards) */
		lanefile_set_bad(&l->f);
		s = session_by_id(b, l->publisher);
		log_msg(LOG_WARNING, "lane %s: its data file was changed by its writer: %s", l->f.name,
			what);
		/* the writer of an open lane is the session's owner now; a cut
		 * lane's is a fenced old owner, whose session is not punished */
		if (s && !l->cut && s->generation == l->generation && !s->quarantined) {
			char why[160];

			snprintf(why, sizeof(why), "its lane was changed by its client: %s", what);
			session_quarantine(b, s, why);
		}
		if (ftruncate(l->f.data_fd, (off_t)l->f.data_len) < 0)
			log_msg(LOG_WARNING, "lane %s: cannot cut it back: %s", l->f.name, strerror(errno));
	}
}

#define STUCK_PER_TICK 64 /* readers let go per tick at most; the rest at the next */

static const char block_reason[] = "it held a lane's writer back for longer than --block-timeout";

/*
 * The block timeout on lanes (data-path.md, section 9, step 3, until
 * spools): a live reader that holds a writer short of room back for
 * longer than --block-timeout (lanes_stuck) stops holding that lane (it
 * reads on without holding, counting what it loses) and its session is
 * detached as the relay detaches a reader whose RX ring stays full
 * (session_expire): session_detach, whose log line ends as the relay's
 * ("longer than --block-timeout"), the pollable fd and SHMB_EV_DETACHED,
 * expiry after --session-ttl.  A session detached so lets go of the
 * other lanes it holds back as their writers wait for it as long; one
 * detached for another reason (its owner died, its connection went)
 * holds until it expires, as its RX ring holds its publishers on the
 * relay.  The detaches come after every lane was looked at: one may
 * destroy a session (an ephemeral one) and its reader with it.
 */
static void block_timeouts(struct broker *b)
{
	uint64_t now = clock_mono_ns(), tmo = b->o.block_timeout_ms * 1000000ull;
	uint64_t ids[STUCK_PER_TICK];
	unsigned nids = 0;

	for (struct blane *l = b->lanes->lanes; l && nids < STUCK_PER_TICK; l = l->next) {
		struct lreader *rd[STUCK_PER_TICK];
		unsigned n = lanes_stuck(l, now, tmo, rd, STUCK_PER_TICK - nids);

		for (unsigned i = 0; i < n; i++) {
			struct session *s = session_by_id(b, rd[i]->session);

			if (!s || s->lane_reader != rd[i] || rd[i]->generation != s->generation ||
			    !(s->owner || s->detach_reason == block_reason) ||
			    lanes_let_go(l, rd[i]) < 0)
				continue;
			log_msg(LOG_INFO, "lane %s: session %s no longer holds it (its writer was"
				" short of room for longer than --block-timeout); it reads on"
				" without holding", l->f.name, s->name);
			if (s->owner)
				ids[nids++] = s->id;
		}
	}
	for (unsigned i = 0; i < nids; i++) {
		struct session *s = session_by_id(b, ids[i]);

		if (s && s->owner)
			session_detach(b, s, block_reason);
	}
}

void ctl_lanes_tick(struct broker *b)
{
	if (!b->lanes)
		return;
	/* a death the exit watch no longer looks for (its process closed
	 * its connection more than EXITW_GRACE_MS before) */
	ctl_lanes_deaths(b);
	block_timeouts(b);
	lanes_tick(b->lanes);
}

int ctl_lane_bad(struct broker *b, struct conn *c, const struct proto_lane_bad *q)
{
	struct session *s = session_by_id(b, q->session_id), *w;
	struct blane *l = NULL;
	int ret;

	if (!b->lanes)
		return ctl_reply_err(c, q->h.req_id, -EOPNOTSUPP, "lanes are off (shmbd --no-lanes)");
	if (!s || s->uid != c->uid || s->owner != c)
		return ctl_reply_err(c, q->h.req_id, -ENOENT, "no such session of yours attached here");
	ret = lanes_walk_check(b->lanes, q->lane, s->lane_reader, &l);
	if (ret < 0)
		return ctl_reply_err(c, q->h.req_id, ret, "%s", b->lanes->why);
	if (ret == 0) {
		log_msg(LOG_NOTICE, "session %s says lane %s has a bad record; the broker finds it"
			" good", s->name, l->f.name);
		return ctl_reply_err(c, q->h.req_id, -EINVAL, "the broker finds lane %u good", q->lane);
	}
	if (lanefile_state(&l->f)->state != SHM_LANE_BAD) {
		/* its other readers drop it too */
		lanefile_set_bad(&l->f);
		log_msg(LOG_WARNING, "lane %s: a record fails its checks (found by its reader %s)",
			l->f.name, s->name);
		w = session_by_id(b, l->publisher);
		/* as the sweep: only the writer that still owns its session */
		if (w && !l->cut && w->generation == l->generation && !w->quarantined)
			session_quarantine(b, w, "its lane has a record that fails its checks");
	}
	return ctl_reply_err(c, q->h.req_id, 0, "ok");
}
