/*
 * tests/lane-client.c - a raw client of shmbd's lane messages (see
 * lane-client.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "lane-client.h"
#include "shm/clock.h"

int rc_connect(const char *dir)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = 5 };
	int fd;

	if (snprintf(a.sun_path, sizeof(a.sun_path), "%s/control", dir) >= (int)sizeof(a.sun_path))
		return -1;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* One message with its descriptors; 0, or -1 (closed, timeout, garbage). */
int rc_recv(struct rc *c, void *buf, size_t cap, int *fds, unsigned *nfds)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(8 * sizeof(int))];
	} cm;
	struct iovec iov = { buf, cap };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
			     .msg_controllen = sizeof(cm.b) };
	ssize_t n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC);

	*nfds = 0;
	if (n < (ssize_t)sizeof(struct proto_hdr))
		return -1;
	for (struct cmsghdr *h = CMSG_FIRSTHDR(&mh); h; h = CMSG_NXTHDR(&mh, h))
		if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS) {
			*nfds = (unsigned)((h->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			memcpy(fds, CMSG_DATA(h), *nfds * sizeof(int));
		}
	return 0;
}

/* Send a request and wait for its reply, queueing pushes that come first. */
int rc_call(struct rc *c, void *msg, size_t len, struct proto_reply *rep, int *fds,
		   unsigned *nfds)
{
	struct proto_hdr *h = msg;

	h->req_id = ++c->req;
	if (send(c->fd, msg, len, MSG_NOSIGNAL) != (ssize_t)len)
		return -1;
	for (;;) {
		struct rpush p;

		if (rc_recv(c, &p.m, sizeof(p.m), p.fds, &p.nfds) < 0)
			return -1;
		if (p.m.h.type == PROTO_REPLY && p.m.h.req_id == c->req) {
			memcpy(rep, &p.m, sizeof(*rep));
			if (fds)
				memcpy(fds, p.fds, p.nfds * sizeof(int));
			if (nfds)
				*nfds = p.nfds;
			return 0;
		}
		if (c->nq < MAXP)
			c->q[c->nq++] = p;
	}
}

/* The next push of type (waiting up to 5 s); false if none came. */
bool rc_push(struct rc *c, uint32_t type, struct rpush *out)
{
	for (;;) {
		for (unsigned i = 0; i < c->nq; i++) {
			struct rpush *p = &c->q[i];

			if (p->m.h.type != type)
				continue;
			/* the reader's own words before its first lane (sent at
			 * its subscribe): they go with the next lane handed out */
			if (type == PROTO_LANE && p->m.lane.lane == 0 &&
			    p->m.lane.flags == PROTO_LANE_SELF && !c->has_self) {
				c->self = *p;
				c->has_self = true;
				c->q[i--] = c->q[--c->nq];
				continue;
			}
			*out = *p;
			c->q[i] = c->q[--c->nq];
			if (type == PROTO_LANE && c->has_self &&
			    !(out->m.lane.flags & PROTO_LANE_SELF) && out->nfds + 2 <= 8) {
				out->fds[out->nfds++] = c->self.fds[0];
				out->fds[out->nfds++] = c->self.fds[1];
				out->m.lane.flags |= PROTO_LANE_SELF;
				out->m.lane.arm_slot = c->self.m.lane.arm_slot;
				c->has_self = false;
			}
			return true;
		}
		if (c->nq == MAXP || rc_recv(c, &c->q[c->nq].m, sizeof(c->q[0].m), c->q[c->nq].fds,
					     &c->q[c->nq].nfds) < 0)
			return false;
		c->nq++;
	}
}

static int rc_hello(struct rc *c)
{
	struct proto_hello hello = { .h = { PROTO_HELLO, sizeof(hello), 0 }, .version = PROTO_VERSION,
				     .flags = PROTO_HELLO_LANES };
	struct proto_reply rep;

	if (rc_call(c, &hello, sizeof(hello), &rep, NULL, NULL) < 0 || rep.err)
		return -1;
	return 0;
}

/* PROTO_SESSION_OPEN of name with flags (and c's token when asked);
 * the reply into rep, its descriptors into seg or closed. */
static int rc_session_open(struct rc *c, const char *name, uint32_t policy, uint32_t flags,
			   struct proto_reply *rep, int seg[2])
{
	struct proto_open o = { .h = { PROTO_SESSION_OPEN, sizeof(o), 0 }, .policy = policy,
				.flags = flags };
	int fds[4];
	unsigned n = 0;

	o.name_len = (uint32_t)strlen(name);
	memcpy(o.name, name, o.name_len);
	if (flags & PROTO_OPEN_TOKEN)
		memcpy(o.token, c->token, sizeof(o.token));
	if (rc_call(c, &o, sizeof(o), rep, fds, &n) < 0)
		return -1;
	for (unsigned i = 0; i < n; i++) {
		if (seg && i < 2 && !rep->err)
			seg[i] = fds[i];
		else
			close(fds[i]);
	}
	return rep->err;
}

int rc_open_ex(struct rc *c, const char *dir, const char *name, uint32_t policy, uint32_t flags,
	       int seg[2])
{
	struct proto_topic tp = { .h = { PROTO_TOPIC, sizeof(tp), 0 } };
	struct proto_reply rep;

	memset(c, 0, sizeof(*c));
	c->data_fd = -1;
	c->fd = rc_connect(dir);
	if (c->fd < 0 || rc_hello(c) < 0 || rc_session_open(c, name, policy, flags, &rep, seg) != 0)
		return -1;
	c->session = rep.u.open.session_id;
	c->generation = rep.u.open.generation;
	memcpy(c->token, rep.u.open.token, sizeof(c->token));
	tp.name_len = (uint32_t)strlen(TOPIC_NAME);
	memcpy(tp.name, TOPIC_NAME, tp.name_len);
	if (rc_call(c, &tp, sizeof(tp), &rep, NULL, NULL) < 0 || rep.err)
		return -1;
	c->topic = rep.u.topic.topic_id;
	return 0;
}

/* Connect, HELLO, open session `name` (policy), intern the topic. */
int rc_open(struct rc *c, const char *dir, const char *name, uint32_t policy)
{
	return rc_open_ex(c, dir, name, policy, 0, NULL);
}

int rc_reattach(struct rc *c, const char *dir, const char *name)
{
	struct proto_reply rep;
	int r;

	if (c->fd >= 0)
		close(c->fd);
	c->fd = rc_connect(dir);
	if (c->fd < 0 || rc_hello(c) < 0)
		return -1;
	r = rc_session_open(c, name, UINT32_MAX, PROTO_OPEN_TOKEN | PROTO_OPEN_REATTACH, &rep, NULL);
	if (r != 0)
		return r;
	if (rep.u.open.session_id != c->session || rep.u.open.generation != c->generation)
		return -ESTALE;
	return 0;
}

int rc_subscribe(struct rc *c)
{
	struct proto_sub q = { .h = { PROTO_SUBSCRIBE, sizeof(q), 0 }, .session_id = c->session,
			       .topic_id = c->topic };
	struct proto_reply rep;

	return rc_call(c, &q, sizeof(q), &rep, NULL, NULL) < 0 ? -1 : rep.err;
}

/* PROTO_LANE_TOPIC; the lane (and, the first time, its descriptors) into w. */
int rc_lane_topic(struct rc *c, struct lanew *w)
{
	struct proto_lane_topic q = { .h = { PROTO_LANE_TOPIC, sizeof(q), 0 },
				      .session_id = c->session, .topic_id = c->topic };
	struct proto_reply rep;
	int fds[4];
	unsigned n = 0;

	if (rc_call(c, &q, sizeof(q), &rep, fds, &n) < 0)
		return -1;
	if (rep.err)
		return rep.err;
	if (n == 4 && c->data_fd < 0)
		c->data_fd = fcntl(fds[0], F_DUPFD_CLOEXEC, 0);
	if (n == 4 && lanew_lane_add(w, rep.u.lane.lane, rep.u.lane.ring_size, fds) < 0)
		return -1;
	return lanew_topic(w, c->topic, rep.u.lane.lane);
}

/* Every HOLDER push queued or coming within 5 s (at least `want`). */
void rc_holders(struct rc *c, struct lanew *w, unsigned want)
{
	struct rpush p;

	for (unsigned got = 0; got < want && rc_push(c, PROTO_HOLDER, &p); got++)
		lanew_holder(w, &p.m.holder, p.fds, p.nfds);
}

void rc_drain(void *ctx)
{
	struct rc *c = ctx;
	struct rpush p;

	for (;;) {
		union {
			struct cmsghdr h;
			char b[CMSG_SPACE(8 * sizeof(int))];
		} cm;
		struct iovec iov = { &p.m, sizeof(p.m) };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
				     .msg_controllen = sizeof(cm.b) };
		ssize_t n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);

		if (n < (ssize_t)sizeof(struct proto_hdr))
			return;
		p.nfds = 0;
		for (struct cmsghdr *h = CMSG_FIRSTHDR(&mh); h; h = CMSG_NXTHDR(&mh, h))
			if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS) {
				p.nfds = (unsigned)((h->cmsg_len - CMSG_LEN(0)) / sizeof(int));
				memcpy(p.fds, CMSG_DATA(h), p.nfds * sizeof(int));
			}
		if (p.m.h.type == PROTO_HOLDER && c->w) {
			lanew_holder(c->w, &p.m.holder, p.fds, p.nfds);
		} else {
			for (unsigned i = 0; i < p.nfds; i++)
				close(p.fds[i]);
		}
	}
}

int rside_open(struct rside *s, const struct rpush *p)
{
	const struct proto_lane *m = &p->m.lane;

	bool self = m->flags & PROTO_LANE_SELF;

	if (p->nfds != (self ? 6u : 4u) || !(m->flags & PROTO_LANE_PAGE))
		return -1;
	s->data = mmap(NULL, SHM_LANE_RING_OFFSET + m->ring_size, PROT_READ, MAP_SHARED, p->fds[0], 0);
	s->meta = mmap(NULL, SHM_LANE_META_SIZE, PROT_READ, MAP_SHARED, p->fds[1], 0);
	s->page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, p->fds[2], 0);
	s->tx_wake = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, p->fds[3], 0);
	s->rx_wake = self ? mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, p->fds[4], 0) : NULL;
	s->arm = self ? mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, p->fds[5], 0) : NULL;
	s->arm_slot = m->arm_slot;
	for (unsigned i = 0; i < p->nfds; i++)
		close(p->fds[i]);
	if (s->data == MAP_FAILED || s->meta == MAP_FAILED || s->page == MAP_FAILED ||
	    s->tx_wake == MAP_FAILED || s->rx_wake == MAP_FAILED || s->arm == MAP_FAILED)
		return -1;
	if (lane_reader_init(&s->r, s->data, m->ring_size, s->meta, &s->page->slot[m->slot], false,
			     false, m->start, m->order) < 0)
		return -1;
	s->r.tx_wake = s->tx_wake;
	return 0;
}

/* Read from s until the lane ends, *next passes stop (when not 0), or
 * nothing comes for 10 s, checking order and payload and acknowledging
 * each record; *next is the order expected next.  0, or -1 on a wrong
 * record or a bad lane; *end: the lane ended. */
int read_lane(struct rside *s, uint64_t *next, uint64_t stop, bool *end)
{
	uint64_t idle = clock_mono_ns();
	struct lane_rec m;

	*end = false;
	while (!stop || *next <= stop) {
		int r = lane_read(&s->r, NULL, 0, &m);

		if (r == LANE_END) {
			*end = true;
			return 0;
		}
		if (r < 0)
			return -1;
		if (r == LANE_NONE) {
			if (clock_mono_ns() - idle > 10000000000ull)
				return 0;
			sched_yield();
			continue;
		}
		idle = clock_mono_ns();
		if (m.order != *next || m.len != 8 || *(const uint64_t *)m.payload != *next)
			return -1;
		(*next)++;
		/* every record: a writer waiting for space is woken at slices */
		lane_ack(&s->r, m.end);
	}
	return 0;
}

