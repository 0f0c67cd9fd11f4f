/*
 * broker/ctl.c - the control socket: accept, identify peers, read and
 * answer control messages (shm/proto.h).
 *
 * Every message is length-checked against the struct its type names
 * before a field is read.  A malformed message gets an error reply and
 * its connection is closed; an unknown type gets -EOPNOTSUPP; nothing a
 * peer sends affects another connection.  Peers are who SO_PEERCRED says.
 *
 * Must never: take a uid or pid from a message; let a request name a
 * session of another uid (it does not exist for them: -ENOENT).
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/ctl.h"
#include "broker/guard.h"
#include "broker/link.h"
#include "broker/log.h"
#include "broker/router.h"
#include "broker/session.h"
#include "broker/sys.h"
#include "broker/topic.h"
#include "shm/atomics.h"
#include "shm/clock.h"

int ctl_listen(struct broker *b)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd;

	if (snprintf(a.sun_path, sizeof(a.sun_path), "%s/control", b->o.dir) >= (int)sizeof(a.sun_path))
		return -ENAMETOOLONG;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* we hold the directory's lock: a socket file left here is stale */
	unlink(a.sun_path);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || chmod(a.sun_path, 0666) < 0 ||
	    listen(fd, 128) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	b->listen_fd = fd;
	return 0;
}

void ctl_accepted(struct broker *b, int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	struct conn *c;
	int slot = -1;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		close(fd);
		return;
	}
	{
		unsigned mine = 0;

		for (int i = 0; i < BROKER_MAX_CONNS; i++) {
			if (!b->conns[i] && slot < 0)
				slot = i;
			else if (b->conns[i] && b->conns[i]->uid == cred.uid)
				mine++;
		}
		/* one uid cannot take every connection (and fd) from the others */
		if (cred.uid != 0 && mine >= BROKER_MAX_CONNS_PER_UID) {
			log_msg(LOG_WARNING, "connection from pid %d refused: uid %u has %u connections",
				(int)cred.pid, (unsigned)cred.uid, mine);
			close(fd);
			return;
		}
	}
	c = slot >= 0 ? calloc(1, sizeof(*c)) : NULL;
	if (!c) {
		log_msg(LOG_WARNING, "connection from pid %d refused: too many connections", (int)cred.pid);
		close(fd);
		return;
	}
	c->slot = slot;
	c->fd = fd;
	c->uid = cred.uid;
	c->pid = cred.pid;
	c->pidfd = sys_peer_pidfd(fd, cred.pid);
	c->accepted_ns = clock_mono_ns();
	c->slot_gen = ++b->conn_gen[slot];
	b->conns[slot] = c;
	log_msg(LOG_DEBUG, "connection from pid %d uid %u", (int)c->pid, (unsigned)c->uid);
	exitw_track(b, c);
	loop_watch_conn(b, c, slot);
}

void ctl_close(struct broker *b, struct conn *c, const char *why)
{
	unsigned owned;

	if (c->dead)
		return;
	c->dead = true;
	log_msg(LOG_DEBUG, "connection of pid %d closed: %s", (int)c->pid, why);
	owned = session_conn_gone(b, c, why);
	/* why the process went, if it did, is learnt from a copy of its pidfd */
	exitw_conn_gone(b, c, owned);
	loop_unwatch_conn(b, c);
	if (c->pidfd >= 0)
		close(c->pidfd);
	close(c->fd);
	b->conns[c->slot] = NULL;
	b->conn_gen[c->slot]++;
	free(c);
}

static int send_reply(struct conn *c, const struct proto_reply *r, const int *fds, int nfds)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(3 * sizeof(int))];
	} cm;
	struct iovec iov = { .iov_base = (void *)r, .iov_len = sizeof(*r) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (nfds) {
		memset(&cm, 0, sizeof(cm));
		mh.msg_control = cm.buf;
		mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		cm.h.cmsg_level = SOL_SOCKET;
		cm.h.cmsg_type = SCM_RIGHTS;
		cm.h.cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(&cm.h), fds, nfds * sizeof(int));
	}
	if (sendmsg(c->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)sizeof(*r))
		return -errno;
	return 0;
}

static void reply_init(struct proto_reply *r, uint64_t req_id, int err)
{
	memset(r, 0, sizeof(*r));
	r->h.type = PROTO_REPLY;
	r->h.len = sizeof(*r);
	r->h.req_id = req_id;
	r->err = err;
}

static int reply_err(struct conn *c, uint64_t req_id, int err, const char *fmt, ...)
{
	struct proto_reply r;
	va_list ap;

	reply_init(&r, req_id, err);
	va_start(ap, fmt);
	vsnprintf(r.u.text, sizeof(r.u.text), fmt, ap);
	va_end(ap);
	return send_reply(c, &r, NULL, 0);
}

void ctl_push_event(struct broker *b, struct conn *c, uint32_t kind, uint64_t session_id)
{
	struct proto_event e = {
		.h = { .type = PROTO_EVENT, .len = sizeof(e), .req_id = 0 },
		.kind = kind,
		.session_id = session_id,
	};

	(void)b;
	send(c->fd, &e, sizeof(e), MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* The session named by a request: only the connection that owns it. */
static struct session *owned(struct broker *b, struct conn *c, uint64_t id, int *err)
{
	struct session *s = session_by_id(b, id);

	if (!s || s->uid != c->uid) {
		*err = -ENOENT;
		return NULL;
	}
	if (s->owner != c) {
		*err = -ESTALE;
		return NULL;
	}
	return s;
}

static int do_open(struct broker *b, struct conn *c, const struct proto_open *q)
{
	struct proto_reply r;
	struct session *s;
	int created = 0, fds[3] = { -1, -1, -1 }, ret;

	ret = session_open(b, c, q, &s, &created, &fds[2]);
	if (ret < 0)
		return reply_err(c, q->h.req_id, ret, "cannot open session: %s", strerror(-ret));
	reply_init(&r, q->h.req_id, 0);
	r.u.open.session_id = s->id;
	r.u.open.generation = s->generation;
	r.u.open.policy = s->policy;
	r.u.open.rx_ring_size = s->rx_prod.r.size;
	r.u.open.tx_ring_size = s->tx_cons.r.size;
	r.u.open.broker_id = b->broker_id;
	r.u.open.created = (uint32_t)created;
	session_rx_start(s, &r.u.open.rx_pos, &r.u.open.rx_seq);
	memcpy(r.u.open.token, s->token, sizeof(s->token));
	/* the client gets the rx file read-only, never by path */
	fds[0] = openat(s->dirfd, "rx", O_RDONLY | O_CLOEXEC);
	fds[1] = dup(s->tx.fd);
	if (fds[0] < 0 || fds[1] < 0 || fds[2] < 0) {
		ret = fds[2] < 0 ? fds[2] : -errno;
		for (int i = 0; i < 3; i++)
			if (fds[i] >= 0)
				close(fds[i]);
		return reply_err(c, q->h.req_id, ret, "cannot pass the segment: %s", strerror(-ret));
	}
	ret = send_reply(c, &r, fds, 3);
	for (int i = 0; i < 3; i++)
		close(fds[i]);
	return ret;
}

static int do_close(struct broker *b, struct conn *c, const struct proto_close *q)
{
	struct session *s;
	int err = 0;

	s = owned(b, c, q->session_id, &err);
	if (!s)
		return reply_err(c, q->h.req_id, err, "no such session of yours attached here");
	if ((q->flags & PROTO_CLOSE_DESTROY) || s->ephemeral) {
		/* what it published is delivered first, as far as its subscribers
		 * have room now (shmb_flush() waits for all of it); bounded, so
		 * that an owner who keeps publishing cannot hold the loop */
		for (int k = 0; k < 1024 && !session_tx_drained(s) && router_session(b, s) > 0; k++)
			;
		if (!session_tx_drained(s))
			log_msg(LOG_WARNING, "session %s %s before its subscribers had room for"
				" everything it published (no shmb_flush)", s->name,
				q->flags & PROTO_CLOSE_DESTROY ? "destroyed" : "closed (ephemeral)");
		session_destroy(b, s, q->flags & PROTO_CLOSE_DESTROY ? "destroyed by its owner"
								 : "closed by its owner (ephemeral)");
	} else {
		session_detach(b, s, "closed by its owner");
		snprintf(s->exit_reason, sizeof(s->exit_reason), "closed normally");
	}
	return reply_err(c, q->h.req_id, 0, "ok");
}

static bool topic_name_ok(const char *n, uint32_t len)
{
	if (len == 0 || len > PROTO_TOPIC_MAX)
		return false;
	for (uint32_t i = 0; i < len; i++)
		if ((unsigned char)n[i] <= ' ' || (unsigned char)n[i] >= 0x7f)
			return false;
	return true;
}

static int do_topic(struct broker *b, struct conn *c, const struct proto_topic *q)
{
	char name[PROTO_TOPIC_MAX + 1];
	struct proto_reply r;
	uint32_t id;
	int ret;

	if (!topic_name_ok(q->name, q->name_len))
		return reply_err(c, q->h.req_id, -EINVAL, "bad topic name");
	memcpy(name, q->name, q->name_len);
	name[q->name_len] = 0;
	ret = topic_intern(b, c->uid, name, &id);
	if (ret < 0)
		return reply_err(c, q->h.req_id, ret, "topic %s: %s", name, strerror(-ret));
	reply_init(&r, q->h.req_id, 0);
	r.u.topic.topic_id = id;
	return send_reply(c, &r, NULL, 0);
}

static int do_sub(struct broker *b, struct conn *c, const struct proto_sub *q, bool sub)
{
	struct session *s;
	int err = 0;

	s = owned(b, c, q->session_id, &err);
	if (!s)
		return reply_err(c, q->h.req_id, err, "no such session of yours attached here");
	err = sub ? topic_subscribe(b, s, q->topic_id, q->flags & PROTO_SUB_RESET)
		  : topic_unsubscribe(b, s, q->topic_id);
	return reply_err(c, q->h.req_id, err, err ? "no such topic" : "ok");
}

static int do_status(struct broker *b, struct conn *c, const struct proto_status *q)
{
	struct proto_reply r;
	uint64_t n = 0, att = 0, quar = 0;

	for (unsigned i = 0; i < b->nsessions; i++) {
		struct session *s = b->sessions[i];

		/* root sees every session; others only their own */
		if (c->uid != 0 && s->uid != c->uid)
			continue;
		n++;
		att += s->owner != NULL;
		quar += s->quarantined;
	}
	reply_init(&r, q->h.req_id, 0);
	r.u.status.pid = (uint64_t)getpid();
	r.u.status.uptime_ns = clock_mono_ns() - b->start_ns;
	r.u.status.sessions = n;
	r.u.status.attached = att;
	r.u.status.routed = b->routed;
	r.u.status.topics = b->ntopics;
	r.u.status.quarantined = quar;
	r.u.status.adopted = b->adopted;
	r.u.status.quarantined_at_start = b->quarantined_at_start;
	snprintf(r.u.status.exit_method, sizeof(r.u.status.exit_method), "%s", exitw_method(b));
	return send_reply(c, &r, NULL, 0);
}

/* ---- admin verbs (decisions.md 18, 19) ----------------------------------- */

/*
 * Whose sessions an admin request may see: root every uid's, unless it
 * names one; anyone else only its own, and naming another uid is -EPERM.
 * *all: every uid; else *uid.
 */
static int adm_scope(const struct conn *c, uint32_t flags, uint32_t req_uid, bool *all, uid_t *uid)
{
	*all = false;
	*uid = c->uid;
	if (flags & PROTO_ADM_UID) {
		if (c->uid != 0 && req_uid != c->uid)
			return -EPERM;
		*uid = req_uid;
	} else if (c->uid == 0) {
		*all = true;
	}
	return 0;
}

static bool adm_name(uint32_t flags, uint32_t len, const char *in, char *out)
{
	if (!(flags & PROTO_ADM_NAME))
		return true;
	if (len == 0 || len > PROTO_NAME_MAX)
		return false;
	memcpy(out, in, len);
	out[len] = 0;
	return strlen(out) == len;
}

static bool adm_match(const struct session *s, bool all, uid_t uid, const char *name)
{
	return (all || s->uid == uid) && (!name[0] || !strcmp(s->name, name));
}

/* The one session an admin request names, or NULL after an error reply
 * (none: -ENOENT; one per uid of several, for root: -ENOTUNIQ). */
static struct session *adm_find(struct broker *b, struct conn *c, uint64_t req_id, bool all,
				uid_t uid, const char *name)
{
	struct session *s = NULL;
	unsigned found = 0;

	for (unsigned i = 0; i < b->nsessions; i++)
		if (adm_match(b->sessions[i], all, uid, name)) {
			s = b->sessions[i];
			found++;
		}
	if (!s)
		reply_err(c, req_id, -ENOENT, "no session '%s'%s", name, all ? "" : " of this uid");
	else if (found > 1)
		reply_err(c, req_id, -ENOTUNIQ,
			  "sessions named '%s' exist for several uids: name one with --uid", name);
	return found == 1 ? s : NULL;
}

static int by_id(const void *a, const void *b)
{
	uint64_t x = (*(struct session *const *)a)->id, y = (*(struct session *const *)b)->id;

	return x < y ? -1 : x > y;
}

static void session_info(struct broker *b, struct session *s, struct proto_session_info *i)
{
	const struct shm_seg_hdr *h = (const void *)s->rx.base;
	uint64_t now = clock_mono_ns(), pos, seq;
	struct timespec rt;

	memset(i, 0, sizeof(*i));
	i->id = s->id;
	i->uid = (uint32_t)s->uid;
	i->pid = session_owner_pid(s) ? session_owner_pid(s) : (int32_t)s->owner_pid;
	i->generation = s->generation;
	i->state = s->quarantined ? PROTO_SESSION_QUARANTINED
		 : s->owner ? PROTO_SESSION_ATTACHED : PROTO_SESSION_DETACHED;
	i->policy = s->policy;
	i->flags = (s->ephemeral ? PROTO_SI_EPHEMERAL : 0) | (s->full_since ? PROTO_SI_FULL : 0) |
		   (s->drain_gen ? PROTO_SI_DRAINING : 0);
	i->rx_ring_size = s->rx_prod.r.size;
	if (!s->quarantined) {
		/* what its owners acknowledged (checked), up to what was written */
		session_rx_start(s, &pos, &seq);
		i->rx_depth_bytes = s->rx_prod.pos - pos;
		i->rx_depth_msgs = seq == RING_SEQ_ANY ? 0 : s->rx_prod.seq - seq;
	}
	i->tx_seq = s->tx_cons.seq;
	i->published = s->routed_in;
	i->delivered = s->delivered_out;
	i->dropped = s->dropped_oldest;
	i->full_ms = s->full_since && now > s->full_since ? (now - s->full_since) / 1000000 : 0;
	clock_gettime(CLOCK_REALTIME, &rt);
	if (h) {
		uint64_t created = load_relaxed(&h->created_ns);
		uint64_t rnow = (uint64_t)rt.tv_sec * 1000000000ull + (uint64_t)rt.tv_nsec;

		i->age_ms = rnow > created ? (rnow - created) / 1000000 : 0;
	}
	i->detached_ms = !s->owner && s->detached_ns ? (now - s->detached_ns) / 1000000 : 0;
	i->ntopics = s->ntopics;
	snprintf(i->name, sizeof(i->name), "%s", s->name);
	snprintf(i->detach_reason, sizeof(i->detach_reason), "%s", s->detach_reason ? s->detach_reason : "");
	snprintf(i->exit_reason, sizeof(i->exit_reason), "%s", s->exit_reason);
	(void)b;
}

static int send_page(struct conn *c, struct proto_list_reply *p, uint32_t entry_size)
{
	p->h.type = PROTO_LIST_REPLY;
	p->entry_size = entry_size;
	p->h.len = (uint32_t)(sizeof(*p) + (size_t)p->count * entry_size);
	if (send(c->fd, p, p->h.len, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)p->h.len)
		return -errno;
	return 0;
}

static int list_sessions(struct broker *b, struct conn *c, const struct proto_list *q,
			 struct proto_list_reply *p, bool all, uid_t uid, const char *name)
{
	const unsigned room = (PROTO_MAX_MSG - sizeof(*p)) / sizeof(struct proto_session_info);
	struct proto_session_info *out = (void *)(p + 1);
	struct session **m = malloc((b->nsessions + 1) * sizeof(*m));
	unsigned n = 0;

	if (!m)
		return reply_err(c, q->h.req_id, -ENOMEM, "out of memory");
	for (unsigned i = 0; i < b->nsessions; i++)
		if (b->sessions[i]->id >= q->cursor && adm_match(b->sessions[i], all, uid, name))
			m[n++] = b->sessions[i];
	if (!n && name[0] && !q->cursor) {
		free(m);
		return reply_err(c, q->h.req_id, -ENOENT, "no session '%s'%s", name,
				 all ? "" : " of this uid");
	}
	qsort(m, n, sizeof(*m), by_id);
	for (p->count = 0; p->count < n && p->count < room; p->count++)
		session_info(b, m[p->count], &out[p->count]);
	/* a TX file its client truncated faults on the read of its rx_acked:
	 * quarantined now, and listed so */
	guard_check(b);
	for (unsigned k = 0; k < p->count; k++)
		if (m[k]->quarantined)
			out[k].state = PROTO_SESSION_QUARANTINED;
	p->next = n > room ? m[room]->id : 0;
	free(m);
	return send_page(c, p, sizeof(*out));
}

static int list_topics(struct broker *b, struct conn *c, const struct proto_list *q,
		       struct proto_list_reply *p)
{
	const unsigned room = (PROTO_MAX_MSG - sizeof(*p)) / sizeof(struct proto_topic_info);
	struct proto_topic_info *out = (void *)(p + 1);

	topic_rates(b, clock_mono_ns());
	p->next = 0;
	/* topics are kept by id - 1, so id order is array order */
	for (uint64_t k = q->cursor ? q->cursor - 1 : 0; k < b->ntopics; k++) {
		struct topic *t = b->topics[k];

		if (!t || (c->uid != 0 && t->owner != c->uid))
			continue;
		if (p->count == room) {
			p->next = t->id;
			break;
		}
		out[p->count] = (struct proto_topic_info){
			.id = t->id,
			.owner_uid = (uint32_t)t->owner,
			.subscribers = t->nsubs,
			.routed = t->routed,
			.rate = t->rate,
		};
		snprintf(out[p->count].name, sizeof(out[p->count].name), "%s", t->name);
		p->count++;
	}
	return send_page(c, p, sizeof(*out));
}

/* An event ring of size slots holding the last of nev events, oldest first. */
static int send_events(struct conn *c, struct proto_list_reply *p, const struct log_event *ev,
		       unsigned size, uint64_t nev)
{
	struct proto_event_info *out = (void *)(p + 1);

	for (uint64_t k = nev > size ? nev - size : 0; k < nev; k++) {
		const struct log_event *e = &ev[k % size];

		out[p->count].time_ns = e->time_ns;
		snprintf(out[p->count].text, sizeof(out[p->count].text), "%s", e->text);
		p->count++;
	}
	p->next = 0;
	return send_page(c, p, sizeof(*out));
}

static int list_events(struct broker *b, struct conn *c, const struct proto_list *q,
		       struct proto_list_reply *p, bool all, uid_t uid, const char *name)
{
	struct session *s;

	if (!name[0])
		return reply_err(c, q->h.req_id, -EINVAL, "events are listed for one named session");
	s = adm_find(b, c, q->h.req_id, all, uid, name);
	if (!s)
		return 0;
	return send_events(c, p, s->ev, SESSION_EVENTS, s->nev);
}

/* Every link (or the one named), in slot order: at most BROKER_MAX_LINKS,
 * so one page (proto.h checks that they fit). */
static int list_links(struct broker *b, struct conn *c, const struct proto_list *q,
		      struct proto_list_reply *p, const char *name)
{
	struct proto_link_info *out = (void *)(p + 1);
	uint64_t now = clock_mono_ns();

	static_assert(BROKER_MAX_LINKS <= 64, "a page holds 64 links");
	p->flags = b->link_listen_fd >= 0 ? PROTO_LR_LISTENING : 0;
	for (uint64_t k = q->cursor ? q->cursor - 1 : 0; k < BROKER_MAX_LINKS; k++) {
		struct link *l = b->links[k];

		/* one still proving who it is is not listed: a stranger's HELLO made it */
		if (!l || l->provisional || (name[0] && strcmp(l->name, name)))
			continue;
		link_info(b, l, &out[p->count++], now);
	}
	if (!p->count && name[0])
		return reply_err(c, q->h.req_id, -ENOENT, "no link '%s'", name);
	p->next = 0;
	return send_page(c, p, sizeof(*out));
}

static int list_link_events(struct broker *b, struct conn *c, const struct proto_list *q,
			    struct proto_list_reply *p, const char *name)
{
	struct link *l;

	if (!name[0])
		return reply_err(c, q->h.req_id, -EINVAL, "events are listed for one named link");
	l = link_named(b, name);
	if (!l)
		return reply_err(c, q->h.req_id, -ENOENT, "no link '%s'", name);
	return send_events(c, p, l->ev, LINK_EVENTS, l->nev);
}

static int do_list(struct broker *b, struct conn *c, const struct proto_list *q)
{
	static uint64_t page[PROTO_MAX_MSG / sizeof(uint64_t)];
	struct proto_list_reply *p = (void *)page;
	char name[PROTO_NAME_MAX + 1] = "";
	bool all, links;
	uid_t uid;
	int r;

	if (q->flags & ~(PROTO_ADM_UID | PROTO_ADM_NAME))
		return reply_err(c, q->h.req_id, -EINVAL, "unknown list flags %#x", q->flags);
	links = q->kind == PROTO_LIST_LINKS || q->kind == PROTO_LIST_LINK_EVENTS;
	if (!adm_name(q->flags, q->name_len, q->name, name))
		return reply_err(c, q->h.req_id, -EINVAL, "bad %s name", links ? "link" : "session");
	memset(p, 0, sizeof(*p));
	p->h.req_id = q->h.req_id;
	p->kind = q->kind;
	/* links are the broker's, not a uid's, and hold no secret (their
	 * key is not listed): any uid may see them all; UID does not apply */
	if (q->kind == PROTO_LIST_LINKS)
		return list_links(b, c, q, p, name);
	if (q->kind == PROTO_LIST_LINK_EVENTS)
		return list_link_events(b, c, q, p, name);
	r = adm_scope(c, q->flags, q->uid, &all, &uid);
	if (r < 0)
		return reply_err(c, q->h.req_id, r, "uid %u may list only its own sessions",
				 (unsigned)c->uid);
	switch (q->kind) {
	case PROTO_LIST_SESSIONS:
		return list_sessions(b, c, q, p, all, uid, name);
	case PROTO_LIST_TOPICS:
		return list_topics(b, c, q, p);
	case PROTO_LIST_EVENTS:
		return list_events(b, c, q, p, all, uid, name);
	default:
		return reply_err(c, q->h.req_id, -EINVAL, "unknown list kind %u", q->kind);
	}
}

static int do_kick(struct broker *b, struct conn *c, const struct proto_kick *q)
{
	char name[PROTO_NAME_MAX + 1] = "";
	struct session *s;
	bool all;
	uid_t uid;
	int r;

	if (q->flags & ~(PROTO_ADM_UID | PROTO_KICK_DELETE))
		return reply_err(c, q->h.req_id, -EINVAL, "unknown kick flags %#x", q->flags);
	if (!adm_name(PROTO_ADM_NAME, q->name_len, q->name, name))
		return reply_err(c, q->h.req_id, -EINVAL, "bad session name");
	r = adm_scope(c, q->flags, q->uid, &all, &uid);
	if (r < 0)
		return reply_err(c, q->h.req_id, r, "uid %u may kick only its own sessions",
				 (unsigned)c->uid);
	s = adm_find(b, c, q->h.req_id, all, uid, name);
	if (!s)
		return 0;
	r = session_kick(b, s, q->flags & PROTO_KICK_DELETE, c->uid);
	switch (r) {
	case 0:
		return reply_err(c, q->h.req_id, 0, "ok");
	case -EALREADY:
		return reply_err(c, q->h.req_id, r, "session '%s' has no owner to kick"
				 " (--delete destroys it)", name);
	case -EBADMSG:
		return reply_err(c, q->h.req_id, r, "session '%s' is quarantined: only --delete"
				 " applies", name);
	case -EAGAIN:
		return reply_err(c, q->h.req_id, r, "session '%s' is still delivering a previous"
				 " owner's messages: try again", name);
	default:
		return reply_err(c, q->h.req_id, r, "cannot kick session '%s': %s", name, strerror(-r));
	}
}

static const uint32_t proto_size[] = {
	[PROTO_HELLO] = sizeof(struct proto_hello),
	[PROTO_SESSION_OPEN] = sizeof(struct proto_open),
	[PROTO_SESSION_CLOSE] = sizeof(struct proto_close),
	[PROTO_TOPIC] = sizeof(struct proto_topic),
	[PROTO_SUBSCRIBE] = sizeof(struct proto_sub),
	[PROTO_UNSUBSCRIBE] = sizeof(struct proto_sub),
	[PROTO_STATUS] = sizeof(struct proto_status),
	[PROTO_LIST] = sizeof(struct proto_list),
	[PROTO_KICK] = sizeof(struct proto_kick),
};

/* One message; returns <0 when the connection must be closed. */
static int ctl_message(struct broker *b, struct conn *c, const void *buf, size_t n)
{
	struct proto_hdr h;
	int r;

	if (n < sizeof(h))
		return reply_err(c, 0, -EBADMSG, "message shorter than a header"), -EBADMSG;
	memcpy(&h, buf, sizeof(h));
	if (h.len != n)
		return reply_err(c, h.req_id, -EBADMSG, "length field %u but %zu bytes", h.len, n),
		       -EBADMSG;
	if (h.type >= sizeof(proto_size) / sizeof(proto_size[0]) || !proto_size[h.type])
		return reply_err(c, h.req_id, -EOPNOTSUPP, "unknown message type %u", h.type);
	if (n != proto_size[h.type])
		return reply_err(c, h.req_id, -EBADMSG, "type %u must be %u bytes, not %zu", h.type,
				 proto_size[h.type], n),
		       -EBADMSG;
	if (!c->hello && h.type != PROTO_HELLO)
		return reply_err(c, h.req_id, -EPROTO, "the first message must be HELLO"), -EPROTO;
	switch (h.type) {
	case PROTO_HELLO: {
		const struct proto_hello *q = buf;
		struct proto_reply rep;

		if (q->version != PROTO_VERSION)
			return reply_err(c, h.req_id, -EPROTONOSUPPORT,
					 "protocol version %u; this broker speaks %u", q->version,
					 PROTO_VERSION),
			       -EPROTONOSUPPORT;
		c->hello = true;
		reply_init(&rep, h.req_id, 0);
		rep.u.hello.version = PROTO_VERSION;
		rep.u.hello.broker_id = b->broker_id;
		rep.u.hello.broker_pid = (uint64_t)getpid();
		return send_reply(c, &rep, NULL, 0);
	}
	case PROTO_SESSION_OPEN:
		r = do_open(b, c, buf);
		break;
	case PROTO_SESSION_CLOSE:
		r = do_close(b, c, buf);
		break;
	case PROTO_TOPIC:
		r = do_topic(b, c, buf);
		break;
	case PROTO_SUBSCRIBE:
	case PROTO_UNSUBSCRIBE:
		r = do_sub(b, c, buf, h.type == PROTO_SUBSCRIBE);
		break;
	case PROTO_STATUS:
		r = do_status(b, c, buf);
		break;
	case PROTO_LIST:
		r = do_list(b, c, buf);
		break;
	case PROTO_KICK:
		r = do_kick(b, c, buf);
		break;
	default:
		r = reply_err(c, h.req_id, -EOPNOTSUPP, "unknown message type %u", h.type);
	}
	return r;
}

void ctl_readable(struct broker *b, struct conn *c)
{
	static uint8_t buf[PROTO_MAX_MSG];

	for (;;) {
		union {
			struct cmsghdr h;
			char buf[CMSG_SPACE(16 * sizeof(int))];
		} cm;
		struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf,
				     .msg_controllen = sizeof(cm.buf) };
		ssize_t n = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		bool had_fds = false;

		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			ctl_close(b, c, n == 0 ? "connection closed" : "connection error");
			return;
		}
		/* a client passes no fds: close any it sent */
		for (struct cmsghdr *h = CMSG_FIRSTHDR(&mh); h; h = CMSG_NXTHDR(&mh, h))
			if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS) {
				int *fds = (int *)CMSG_DATA(h);
				size_t k = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);

				for (size_t i = 0; i < k; i++)
					close(fds[i]);
				had_fds = true;
			}
		if (had_fds || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
			log_msg(LOG_WARNING, "pid %d sent %s: connection closed", (int)c->pid,
				had_fds ? "file descriptors" : "an oversized message");
			reply_err(c, 0, -EBADMSG, "%s", had_fds ? "no fds accepted" : "message too large");
			ctl_close(b, c, "protocol violation");
			return;
		}
		int r = ctl_message(b, c, buf, (size_t)n);

		if (r == -EBADMSG || r == -EPROTO || r == -EPROTONOSUPPORT) {
			log_msg(LOG_WARNING, "pid %d uid %u: malformed control message: connection closed",
				(int)c->pid, (unsigned)c->uid);
			ctl_close(b, c, "protocol violation");
			return;
		}
		if (r < 0) {
			/* a reply that cannot be sent: the peer does not read them */
			log_msg(LOG_WARNING, "pid %d uid %u: a reply could not be sent (%s): connection"
				" closed", (int)c->pid, (unsigned)c->uid, strerror(-r));
			ctl_close(b, c, "replies not read");
			return;
		}
	}
}

/* Idle connections that never said HELLO hold fds for nothing. */
void ctl_expire(struct broker *b, uint64_t now)
{
	for (int i = 0; i < BROKER_MAX_CONNS; i++) {
		struct conn *c = b->conns[i];

		if (c && !c->hello && now - c->accepted_ns >= b->o.hello_timeout_ms * 1000000ull) {
			log_msg(LOG_INFO, "pid %d said no HELLO within --hello-timeout: closed", (int)c->pid);
			ctl_close(b, c, "no HELLO in time");
		}
	}
}
