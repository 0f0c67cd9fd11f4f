/*
 * broker/ctl.c - the control socket: accept, identify peers, read and
 * answer control messages (shm/proto.h).  The admin verbs (listings,
 * kick) are in ctl-admin.c.
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
#include "broker/ctl-int.h"
#include "broker/ctl-lanes.h"
#include "broker/guard.h"
#include "broker/harden.h"
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

int ctl_send_msg(struct conn *c, const void *msg, size_t len, const int *fds, int nfds)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(CTL_MAX_FDS * sizeof(int))];
	} cm;
	struct iovec iov = { .iov_base = (void *)msg, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (nfds > CTL_MAX_FDS)
		return -EINVAL;
	if (nfds) {
		memset(&cm, 0, sizeof(cm));
		mh.msg_control = cm.buf;
		mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		cm.h.cmsg_level = SOL_SOCKET;
		cm.h.cmsg_type = SCM_RIGHTS;
		cm.h.cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(&cm.h), fds, nfds * sizeof(int));
	}
	if (sendmsg(c->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)len)
		return -errno;
	return 0;
}

int ctl_send_reply(struct conn *c, const struct proto_reply *r, const int *fds, int nfds)
{
	return ctl_send_msg(c, r, sizeof(*r), fds, nfds);
}

void ctl_reply_init(struct proto_reply *r, uint64_t req_id, int err)
{
	memset(r, 0, sizeof(*r));
	r->h.type = PROTO_REPLY;
	r->h.len = sizeof(*r);
	r->h.req_id = req_id;
	r->err = err;
}

int ctl_reply_err(struct conn *c, uint64_t req_id, int err, const char *fmt, ...)
{
	struct proto_reply r;
	va_list ap;

	ctl_reply_init(&r, req_id, err);
	va_start(ap, fmt);
	vsnprintf(r.u.text, sizeof(r.u.text), fmt, ap);
	va_end(ap);
	return ctl_send_reply(c, &r, NULL, 0);
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
		return ctl_reply_err(c, q->h.req_id, ret, "cannot open session: %s", strerror(-ret));
	ctl_reply_init(&r, q->h.req_id, 0);
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
	{
		char name[32];

		/* a descriptor that cannot truncate, where Landlock allows (harden.c) */
		snprintf(name, sizeof(name), "tx.%u", s->generation);
		fds[1] = harden_client_fd(b, s->dirfd, name, s->tx.fd);
	}
	if (fds[0] < 0 || fds[1] < 0 || fds[2] < 0) {
		ret = fds[2] < 0 ? fds[2] : fds[1] < 0 ? fds[1] : -errno;
		for (int i = 0; i < 3; i++)
			if (fds[i] >= 0)
				close(fds[i]);
		return ctl_reply_err(c, q->h.req_id, ret, "cannot pass the segment: %s", strerror(-ret));
	}
	ret = ctl_send_reply(c, &r, fds, 3);
	for (int i = 0; i < 3; i++)
		close(fds[i]);
	/* after the reply: a new owner's lanes follow it (and a spill
	 * stops, the holds move to the new generation, even when the reply
	 * could not be sent: that owner's loss is noticed next) */
	ctl_lanes_opened(b, s);
	return ret;
}

static int do_close(struct broker *b, struct conn *c, const struct proto_close *q)
{
	struct session *s;
	int err = 0;

	s = owned(b, c, q->session_id, &err);
	if (!s)
		return ctl_reply_err(c, q->h.req_id, err, "no such session of yours attached here");
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
		/* its owner is done with this generation: its lanes end (a
		 * lost connection leaves them open for a REATTACH) */
		ctl_lanes_session_end(b, s, s->generation, CTL_LANES_ENDED);
		session_detach(b, s, "closed by its owner");
		snprintf(s->exit_reason, sizeof(s->exit_reason), "closed normally");
		/* its generation is over: copied for until its next owner */
		ctl_lanes_spill(b, s, "closed by its owner");
	}
	return ctl_reply_err(c, q->h.req_id, 0, "ok");
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
		return ctl_reply_err(c, q->h.req_id, -EINVAL, "bad topic name");
	memcpy(name, q->name, q->name_len);
	name[q->name_len] = 0;
	ret = topic_intern(b, c->uid, name, &id);
	if (ret < 0)
		return ctl_reply_err(c, q->h.req_id, ret, "topic %s: %s", name, strerror(-ret));
	ctl_reply_init(&r, q->h.req_id, 0);
	r.u.topic.topic_id = id;
	return ctl_send_reply(c, &r, NULL, 0);
}

static int do_sub(struct broker *b, struct conn *c, const struct proto_sub *q, bool sub)
{
	struct session *s;
	int err = 0;

	s = owned(b, c, q->session_id, &err);
	if (!s)
		return ctl_reply_err(c, q->h.req_id, err, "no such session of yours attached here");
	err = sub ? topic_subscribe(b, s, q->topic_id, q->flags & PROTO_SUB_RESET)
		  : topic_unsubscribe(b, s, q->topic_id);
	if (sub && err == 0)
		ctl_lanes_reader_self(b, s);
	/* before the reply: the lanes let go are known when it returns */
	if (!sub && err == 0)
		ctl_lanes_unsubscribed(b, s, q->topic_id);
	err = ctl_reply_err(c, q->h.req_id, err, err ? "no such topic" : "ok");
	/* after the reply: the lanes' pushes follow it */
	if (sub && err == 0)
		ctl_lanes_subscribed(b, s, q->topic_id);
	return err;
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
	ctl_reply_init(&r, q->h.req_id, 0);
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
	return ctl_send_reply(c, &r, NULL, 0);
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
	[PROTO_LANE_TOPIC] = sizeof(struct proto_lane_topic),
	[PROTO_LANE_BAD] = sizeof(struct proto_lane_bad),
};

/* One message; returns <0 when the connection must be closed. */
static int ctl_message(struct broker *b, struct conn *c, const void *buf, size_t n)
{
	struct proto_hdr h;
	int r;

	if (n < sizeof(h))
		return ctl_reply_err(c, 0, -EBADMSG, "message shorter than a header"), -EBADMSG;
	memcpy(&h, buf, sizeof(h));
	if (h.len != n)
		return ctl_reply_err(c, h.req_id, -EBADMSG, "length field %u but %zu bytes", h.len, n),
		       -EBADMSG;
	if (h.type >= sizeof(proto_size) / sizeof(proto_size[0]) || !proto_size[h.type])
		return ctl_reply_err(c, h.req_id, -EOPNOTSUPP, "unknown message type %u", h.type);
	if (n != proto_size[h.type])
		return ctl_reply_err(c, h.req_id, -EBADMSG, "type %u must be %u bytes, not %zu", h.type,
				 proto_size[h.type], n),
		       -EBADMSG;
	if (!c->hello && h.type != PROTO_HELLO)
		return ctl_reply_err(c, h.req_id, -EPROTO, "the first message must be HELLO"), -EPROTO;
	switch (h.type) {
	case PROTO_HELLO: {
		const struct proto_hello *q = buf;
		struct proto_reply rep;

		if (q->version != PROTO_VERSION)
			return ctl_reply_err(c, h.req_id, -EPROTONOSUPPORT,
					 "protocol version %u; this broker speaks %u", q->version,
					 PROTO_VERSION),
			       -EPROTONOSUPPORT;
		c->hello = true;
		c->lanes = q->flags & PROTO_HELLO_LANES;
		ctl_reply_init(&rep, h.req_id, 0);
		rep.u.hello.version = PROTO_VERSION;
		if (c->lanes && b->lanes)
			rep.u.hello.flags = PROTO_HELLO_LANES;
		rep.u.hello.broker_id = b->broker_id;
		rep.u.hello.broker_pid = (uint64_t)getpid();
		return ctl_send_reply(c, &rep, NULL, 0);
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
		r = ctl_admin_list(b, c, buf);
		break;
	case PROTO_KICK:
		r = ctl_admin_kick(b, c, buf);
		break;
	case PROTO_LANE_TOPIC:
		r = ctl_lane_topic(b, c, buf);
		break;
	case PROTO_LANE_BAD:
		r = ctl_lane_bad(b, c, buf);
		break;
	default:
		r = ctl_reply_err(c, h.req_id, -EOPNOTSUPP, "unknown message type %u", h.type);
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
			ctl_reply_err(c, 0, -EBADMSG, "%s", had_fds ? "no fds accepted" : "message too large");
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
