/*
 * libclient/client.c - libshmb: the control connection, sessions, publish,
 * receive and acknowledge.
 *
 * The control socket carries set-up only; messages go through the two
 * session files the broker passes over SCM_RIGHTS: rx (mapped read-only)
 * and tx.<generation> (mapped read-write).  A client validates both
 * headers before it trusts anything in them.
 *
 * Must never: write to the rx mapping (it is read-only; a write faults);
 * call FUTEX_WAKE for the broker unless broker_waiting says it sleeps.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "shm/atomics.h"
#include "shm/futex.h"
#include "shm/proto.h"
#include "shm/ring.h"
#include "shm/segment.h"
#include "libclient/internal.h"
#include "shmb.h"

#define SHMB_EXPORT __attribute__((visibility("default")))

struct topic_entry {
	uint32_t id;
	char name[PROTO_TOPIC_MAX + 1];
};

struct shmb_client {
	int fd;
	pthread_mutex_t lock; /* one request in flight; guards topics */
	uint64_t next_req;
	uint64_t broker_id;
	bool dead;
	struct topic_entry **topics; /* entries never move: shmb_msg.topic points at them */
	unsigned ntopics;
	struct shmb_session **sessions; /* open on this connection, freed by shmb_close */
	unsigned nsessions;
	shmb_event_fn event_fn;
	void *event_arg;
	bool disconnect_told;
};

struct shmb_session {
	struct shmb_client *c;
	uint64_t id;
	uint32_t generation;
	int created;
	unsigned flags;
	uint64_t spin_ns;
	struct segment rx, tx;
	const struct shm_rx_ctrl *rxc;
	struct shm_tx_ctrl *txc;
	struct ring_prod tx_prod;
	struct ring_cons rx_cons;
	uint64_t tx_start_seq;
	bool unacked;
	int notify_rd; /* read end of the broker's poll pipe */
	bool drop_oldest;  /* the broker may drop what this reader has not read */
	uint8_t *copy;     /* drop-oldest: messages are copied out, then checked */
	uint64_t gap_from; /* drop-oldest: RX sequence expected before a jump, or 0 */
	int epfd;      /* shmb_session_fd(): an epoll fd holding notify_rd, or -1 */
	bool stale_told;
	bool notify_eof;   /* the broker closed our poll pipe: we are detached */
	const char *last_topic;   /* the caller's pointer of the last publish, */
	char last_name[PROTO_TOPIC_MAX + 1]; /* its text then, */
	uint32_t last_id;         /* and its id: one strcmp instead of a lookup */
	uint32_t last_rx_id;      /* the last received topic and its name */
	const char *last_rx_name;
};

/* ---- control requests ------------------------------------------------------- */

static int rpc_locked(struct shmb_client *c, void *req, size_t len, struct proto_reply *rep,
		      int *fds, int nfds_max)
{
	struct proto_hdr *h = req;
	int got_fds = 0;

	if (c->dead)
		return -EPIPE;
	h->req_id = ++c->next_req;
	h->len = (uint32_t)len;
	if (send(c->fd, req, len, MSG_NOSIGNAL) != (ssize_t)len) {
		c->dead = true;
		return -EPIPE;
	}
	for (;;) {
		union {
			struct cmsghdr h;
			char buf[CMSG_SPACE(4 * sizeof(int))];
		} cm;
		struct iovec iov = { .iov_base = rep, .iov_len = sizeof(*rep) };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf,
				     .msg_controllen = sizeof(cm.buf) };
		ssize_t n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			c->dead = true;
			return -EPIPE;
		}
		for (struct cmsghdr *ch = CMSG_FIRSTHDR(&mh); ch; ch = CMSG_NXTHDR(&mh, ch)) {
			if (ch->cmsg_level != SOL_SOCKET || ch->cmsg_type != SCM_RIGHTS)
				continue;
			for (size_t i = 0; i < (ch->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
				int fd;

				memcpy(&fd, CMSG_DATA(ch) + i * sizeof(int), sizeof(int));
				if (got_fds < nfds_max)
					fds[got_fds++] = fd;
				else
					close(fd);
			}
		}
		/* events (request id 0) need no answer: staleness is also visible
		 * in shared memory, where every call checks it */
		if ((size_t)n >= sizeof(struct proto_hdr) && rep->h.type == PROTO_EVENT)
			continue;
		if ((size_t)n != sizeof(*rep) || rep->h.type != PROTO_REPLY ||
		    rep->h.req_id != h->req_id) {
			for (int i = 0; i < got_fds; i++)
				close(fds[i]);
			c->dead = true;
			return -EPROTO;
		}
		if (rep->err < 0 || got_fds < nfds_max) {
			for (int i = 0; i < got_fds; i++)
				close(fds[i]);
			return rep->err < 0 ? rep->err : -EPROTO;
		}
		return 0;
	}
}

/* Called in the thread of the call that noticed, never under a lock. */
static void event_emit(struct shmb_client *c, int kind, struct shmb_session *s, uint64_t count)
{
	struct shmb_event ev = { .kind = kind, .session = s, .count = count };

	if (c->event_fn)
		c->event_fn(&ev, c->event_arg);
}

/* After a request, outside the lock: the first loss of the broker is told. */
static void tell_disconnect(struct shmb_client *c)
{
	bool tell;

	pthread_mutex_lock(&c->lock);
	tell = c->dead && !c->disconnect_told;
	c->disconnect_told |= tell;
	pthread_mutex_unlock(&c->lock);
	if (tell)
		event_emit(c, SHMB_EV_DISCONNECTED, NULL, 0);
}

SHMB_EXPORT void shmb_set_event_cb(struct shmb_client *c, shmb_event_fn fn, void *arg)
{
	pthread_mutex_lock(&c->lock);
	c->event_fn = fn;
	c->event_arg = arg;
	pthread_mutex_unlock(&c->lock);
}

static int rpc(struct shmb_client *c, void *req, size_t len, struct proto_reply *rep, int *fds,
	       int nfds)
{
	int r;

	pthread_mutex_lock(&c->lock);
	r = rpc_locked(c, req, len, rep, fds, nfds);
	pthread_mutex_unlock(&c->lock);
	tell_disconnect(c);
	return r;
}

SHMB_EXPORT int shmb_connect(const struct shmb_connect_opts *opts, struct shmb_client **out)
{
	const char *dir = opts && opts->dir ? opts->dir : getenv("SHMB_DIR");
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	struct proto_hello hello = { .h.type = PROTO_HELLO, .version = PROTO_VERSION };
	struct proto_reply rep;
	struct shmb_client *c;
	int r;

	if (!dir || !*dir)
		dir = "/run/shmb";
	if (snprintf(a.sun_path, sizeof(a.sun_path), "%s/control", dir) >= (int)sizeof(a.sun_path))
		return -ENAMETOOLONG;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	pthread_mutex_init(&c->lock, NULL);
	c->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		r = -errno;
		goto err;
	}
	r = rpc(c, &hello, sizeof(hello), &rep, NULL, 0);
	if (r < 0)
		goto err;
	c->broker_id = rep.u.hello.broker_id;
	*out = c;
	return 0;
err:
	if (c->fd >= 0)
		close(c->fd);
	pthread_mutex_destroy(&c->lock);
	free(c);
	return r;
}

static void session_free(struct shmb_session *s);

SHMB_EXPORT void shmb_close(struct shmb_client *c)
{
	if (!c)
		return;
	/* closing the connection detaches them all in the broker at once */
	while (c->nsessions)
		session_free(c->sessions[0]);
	free(c->sessions);
	close(c->fd);
	pthread_mutex_destroy(&c->lock);
	for (unsigned i = 0; i < c->ntopics; i++)
		free(c->topics[i]);
	free(c->topics);
	free(c);
}

/* ---- topics ----------------------------------------------------------------- */

static int topic_id(struct shmb_client *c, const char *name, uint32_t *id)
{
	struct proto_topic q = { .h.type = PROTO_TOPIC };
	struct proto_reply rep;
	size_t len = strlen(name);
	int r;

	if (len == 0 || len > PROTO_TOPIC_MAX)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	for (unsigned i = 0; i < c->ntopics; i++)
		if (!strcmp(c->topics[i]->name, name)) {
			*id = c->topics[i]->id;
			pthread_mutex_unlock(&c->lock);
			return 0;
		}
	q.name_len = (uint32_t)len;
	memcpy(q.name, name, len);
	r = rpc_locked(c, &q, sizeof(q), &rep, NULL, 0);
	if (r == 0) {
		struct topic_entry **n = realloc(c->topics, (c->ntopics + 1) * sizeof(*n));
		struct topic_entry *e = malloc(sizeof(*e));

		*id = rep.u.topic.topic_id;
		if (n)
			c->topics = n;
		if (n && e) {
			e->id = *id;
			snprintf(e->name, sizeof(e->name), "%s", name);
			c->topics[c->ntopics++] = e;
		} else {
			free(e); /* not cached: looked up again next time */
		}
	}
	pthread_mutex_unlock(&c->lock);
	tell_disconnect(c);
	return r;
}

static const char *topic_name(struct shmb_client *c, uint32_t id)
{
	const char *name = "";

	pthread_mutex_lock(&c->lock);
	for (unsigned i = 0; i < c->ntopics; i++)
		if (c->topics[i]->id == id) {
			name = c->topics[i]->name;
			break;
		}
	pthread_mutex_unlock(&c->lock);
	return name;
}

/* ---- sessions ------------------------------------------------------------- */

static int session_map(struct shmb_session *s, int rx_fd, int tx_fd, const struct proto_reply *rep)
{
	struct shm_seg_hdr rh;
	struct shm_tx_hdr th;
	struct ring r;
	int ret;

	ret = segment_map(rx_fd, false, &s->rx);
	if (ret < 0) {
		close(tx_fd);
		return ret;
	}
	ret = segment_map(tx_fd, true, &s->tx);
	if (ret < 0)
		return ret;
	if (segment_rx_validate(&s->rx, &rh) < 0 || segment_tx_validate(&s->tx, &th) < 0 ||
	    rh.session_id != rep->u.open.session_id || th.session_id != rh.session_id ||
	    th.generation != rep->u.open.generation)
		return -EBADMSG;
	s->rxc = segment_rx_ctrl(&s->rx);
	s->txc = segment_tx_ctrl(&s->tx);
	s->tx_start_seq = th.start_seq;
	s->drop_oldest = rh.policy == SHM_POLICY_DROP_OLDEST;
	if (s->drop_oldest && !(s->copy = malloc(rh.rx_ring_size / RING_MAX_REC_DIV)))
		return -ENOMEM;
	ret = ring_init(&r, segment_ring_data(&s->rx), rh.rx_ring_size);
	if (ret == 0)
		/* where the broker says: past what was acknowledged or dropped */
		ret = ring_cons_init(&s->rx_cons, &r, &s->rxc->rx_write, &s->txc->rx_acked,
				     rep->u.open.rx_pos, rep->u.open.rx_seq, 1, UINT32_MAX);
	if (ret == 0)
		ret = ring_init(&r, segment_ring_data(&s->tx), th.tx_ring_size);
	if (ret == 0)
		ret = ring_prod_init(&s->tx_prod, &r, &s->rxc->tx_read, &s->txc->tx_write, 0,
				     th.start_seq, th.generation);
	return ret < 0 ? -EBADMSG : 0;
}

SHMB_EXPORT int shmb_session_open(struct shmb_client *c, const char *name,
				  const struct shmb_session_opts *opts, struct shmb_session **out)
{
	struct proto_open q = { .h.type = PROTO_SESSION_OPEN, .policy = UINT32_MAX };
	struct proto_reply rep;
	struct shmb_session *s;
	size_t len = name ? strlen(name) : 0;
	int fds[3], r;

	if (len == 0 || len > PROTO_NAME_MAX)
		return -EINVAL;
	if (opts) {
		if (opts->policy < SHMB_POLICY_DEFAULT || opts->policy > SHMB_POLICY_DROP_OLDEST)
			return -EINVAL;
		if (opts->policy != SHMB_POLICY_DEFAULT)
			q.policy = (uint32_t)opts->policy;
		q.rx_ring_size = opts->rx_ring_size;
		q.tx_ring_size = opts->tx_ring_size;
		q.flags = (opts->flags & SHMB_TAKEOVER ? PROTO_OPEN_TAKEOVER : 0) |
			  (opts->flags & SHMB_EPHEMERAL ? PROTO_OPEN_EPHEMERAL : 0) |
			  (opts->flags & SHMB_FRESH ? PROTO_OPEN_FRESH : 0);
	}
	q.name_len = (uint32_t)len;
	memcpy(q.name, name, len);
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->rx = (struct segment)SEGMENT_INIT;
	s->tx = (struct segment)SEGMENT_INIT;
	r = rpc(c, &q, sizeof(q), &rep, fds, 3);
	if (r < 0) {
		free(s);
		return r;
	}
	s->notify_rd = fds[2];
	s->epfd = -1;
	s->c = c;
	s->id = rep.u.open.session_id;
	s->generation = rep.u.open.generation;
	s->created = (int)rep.u.open.created;
	s->flags = opts ? opts->flags : 0;
	s->spin_ns = (uint64_t)(opts && opts->spin_us ? opts->spin_us : 5) * 1000;
	r = session_map(s, fds[0], fds[1], &rep);
	if (r < 0) {
		segment_unmap(&s->rx);
		segment_unmap(&s->tx);
		close(s->notify_rd);
		free(s);
		return r;
	}
	pthread_mutex_lock(&c->lock);
	{
		struct shmb_session **n = realloc(c->sessions, (c->nsessions + 1) * sizeof(*n));

		if (n) {
			c->sessions = n;
			c->sessions[c->nsessions++] = s;
		}
	}
	pthread_mutex_unlock(&c->lock);
	*out = s;
	if (!s->created)
		event_emit(c, SHMB_EV_REATTACHED, s, s->generation);
	return 0;
}

static void session_free(struct shmb_session *s)
{
	struct shmb_client *c = s->c;

	pthread_mutex_lock(&c->lock);
	for (unsigned i = 0; i < c->nsessions; i++)
		if (c->sessions[i] == s) {
			c->sessions[i] = c->sessions[--c->nsessions];
			break;
		}
	pthread_mutex_unlock(&c->lock);
	if (s->epfd >= 0)
		close(s->epfd);
	close(s->notify_rd);
	free(s->copy);
	segment_unmap(&s->rx);
	segment_unmap(&s->tx);
	free(s);
}

static int session_end(struct shmb_session *s, uint32_t flags)
{
	struct proto_close q = { .h.type = PROTO_SESSION_CLOSE, .session_id = s->id, .flags = flags };
	struct proto_reply rep;
	int r = rpc(s->c, &q, sizeof(q), &rep, NULL, 0);

	session_free(s);
	return r;
}

SHMB_EXPORT int shmb_session_close(struct shmb_session *s)
{
	return session_end(s, 0);
}

SHMB_EXPORT int shmb_session_destroy(struct shmb_session *s)
{
	return session_end(s, PROTO_CLOSE_DESTROY);
}

static bool stale(const struct shmb_session *s)
{
	/* pairs with the broker's store_release of the generation */
	return load_acquire(&s->rxc->generation) != s->generation;
}

/* -ESTALE, telling the event callback the first time. */
static int stale_err(struct shmb_session *s)
{
	if (!s->stale_told) {
		s->stale_told = true;
		event_emit(s->c, SHMB_EV_STALE, s, 0);
	}
	return -ESTALE;
}

static int sub_req(struct shmb_session *s, const char *topic, uint32_t type, uint32_t flags)
{
	struct proto_sub q = { .h.type = type, .session_id = s->id, .flags = flags };
	struct proto_reply rep;
	int r;

	if (stale(s))
		return stale_err(s);
	r = topic_id(s->c, topic, &q.topic_id);
	if (r < 0)
		return r;
	return rpc(s->c, &q, sizeof(q), &rep, NULL, 0);
}

SHMB_EXPORT int shmb_subscribe(struct shmb_session *s, const char *topic)
{
	return sub_req(s, topic, PROTO_SUBSCRIBE, 0);
}

SHMB_EXPORT int shmb_unsubscribe(struct shmb_session *s, const char *topic)
{
	return sub_req(s, topic, PROTO_UNSUBSCRIBE, 0);
}

SHMB_EXPORT int shmb_subscribe_only(struct shmb_session *s, const char *const *topics, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int r = sub_req(s, topics[i], PROTO_SUBSCRIBE, i == 0 ? PROTO_SUB_RESET : 0);

		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- messages ---------------------------------------------------------------- */

static struct timespec deadline_ms(int timeout_ms)
{
	return deadline_in_ns((uint64_t)timeout_ms * 1000000ull);
}

struct moved {
	const struct shmb_session *s;
	const uint64_t *word;
	uint64_t seen;
};

static bool moved_or_stale(void *arg)
{
	struct moved *m = arg;

	return load_acquire(m->word) != m->seen || stale(m->s);
}

/* Tell the broker there is something for it, if it sleeps waiting for
 * that (SHM_WAIT_TX after a publish, SHM_WAIT_RX_SPACE after an ack). */
static void wake_broker(struct shmb_session *s, uint32_t why)
{
	wake_signal_mask(&s->txc->tx_signal, &s->rxc->broker_waiting, why);
}

SHMB_EXPORT int shmb_publish(struct shmb_session *s, const char *topic, const void *data, size_t len,
			     int timeout_ms)
{
	struct shm_msg_tx h = { 0 };
	struct timespec d = deadline_ms(timeout_ms > 0 ? timeout_ms : 0);
	uint8_t *dst;
	int r;

	if (stale(s))
		return stale_err(s);
	if (len > UINT32_MAX - sizeof(h))
		return -EMSGSIZE;
	if (topic == s->last_topic && s->last_id && !strcmp(topic, s->last_name)) {
		h.topic_id = s->last_id;
	} else {
		r = topic_id(s->c, topic, &h.topic_id);
		if (r < 0)
			return r;
		if (strlen(topic) <= PROTO_TOPIC_MAX) {
			strcpy(s->last_name, topic);
			s->last_topic = topic;
			s->last_id = h.topic_id;
		}
	}
	for (;;) {
		struct moved mv = { s, &s->rxc->tx_read, load_acquire(&s->rxc->tx_read) };

		r = ring_reserve(&s->tx_prod, (uint32_t)(sizeof(h) + len), SHM_REC_DATA, 0, (void **)&dst);
		if (r != -EAGAIN)
			break;
		if (timeout_ms == 0)
			return -EAGAIN;
		r = wake_wait(&s->rxc->tx_space_signal, &s->txc->tx_space_waiters, moved_or_stale, &mv,
			      s->spin_ns, timeout_ms > 0 ? &d : NULL);
		if (r < 0)
			return r;
		if (stale(s))
			return stale_err(s);
	}
	if (r < 0)
		return r == -EBADMSG ? stale_err(s) : r;
	memcpy(dst, &h, sizeof(h));
	memcpy(dst + sizeof(h), data, len);
	r = ring_commit(&s->tx_prod);
	if (r < 0)
		return stale_err(s); /* fenced: cut off by a new owner */
	wake_broker(s, SHM_WAIT_TX);
	return 0;
}

SHMB_EXPORT int shmb_ack(struct shmb_session *s)
{
	if (stale(s))
		return stale_err(s);
	if (!s->unacked)
		return 0;
	/* rx_acked = the read position: pairs with the broker's prod_refresh() */
	ring_release(&s->rx_cons);
	s->unacked = false;
	wake_broker(s, SHM_WAIT_RX_SPACE);
	return 0;
}

static void notify_drain(struct shmb_session *s)
{
	char buf[256];
	ssize_t n;

	while ((n = read(s->notify_rd, buf, sizeof(buf))) > 0)
		;
	if (n == 0 && !s->notify_eof) {
		s->notify_eof = true; /* the fd stays readable: say why, not -EAGAIN */
		if (!stale(s))
			event_emit(s->c, SHMB_EV_DETACHED, s, 0);
	}
}

SHMB_EXPORT int shmb_session_fd(struct shmb_session *s)
{
	struct epoll_event ev = { .events = EPOLLIN };

	if (s->epfd >= 0)
		return s->epfd;
	s->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (s->epfd < 0)
		return -errno;
	if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->notify_rd, &ev) < 0) {
		int e = -errno;

		close(s->epfd);
		s->epfd = -1;
		return e;
	}
	/* from now on the broker writes a byte after each delivery; the full
	 * fence pairs with the broker's: flag, then the caller's next look */
	__atomic_fetch_or(&s->txc->client_flags, SHM_CLIENT_POLLER, __ATOMIC_RELAXED);
	fence_full();
	return s->epfd;
}

SHMB_EXPORT int shmb_recv(struct shmb_session *s, struct shmb_msg *m, int timeout_ms)
{
	struct timespec d = deadline_ms(timeout_ms > 0 ? timeout_ms : 0);
	struct ring_msg rm;
	struct shm_msg_rx rx;
	int r;

	if ((s->flags & SHMB_AUTO_ACK) && s->unacked)
		shmb_ack(s);
	for (;;) {
		struct moved mv = { s, &s->rxc->rx_write, s->rx_cons.pos };

		if (stale(s))
			return stale_err(s);
		r = ring_peek(&s->rx_cons, &rm);
		if (r != -EAGAIN)
			break;
		if (timeout_ms == 0) {
			if (s->epfd < 0)
				return -EAGAIN;
			/* a poller: empty the pipe, then look once more, so a
			 * record committed after this look writes a fresh byte */
			notify_drain(s);
			fence_full();
			r = ring_peek(&s->rx_cons, &rm);
			if (r != -EAGAIN)
				break;
			if (stale(s))
				return stale_err(s);
			return s->notify_eof ? -ENOTCONN : -EAGAIN;
		}
		r = wake_wait(&s->rxc->rx_signal, &s->txc->rx_waiters, moved_or_stale, &mv, s->spin_ns,
			      timeout_ms > 0 ? &d : NULL);
		if (r < 0)
			return r;
	}
	if (s->drop_oldest) {
		/*
		 * The broker may be overwriting what we read: copy it out, then
		 * re-read the drop position (acquire fence between, pairing with
		 * the broker's store-store fence); keep the copy only if the
		 * record lies at or after it, else jump there (decisions.md 15).
		 */
		uint64_t drop;

		if (r == 0 && rm.len <= ring_max_payload(&s->rx_cons.r))
			memcpy(s->copy, rm.payload, rm.len);
		fence_acquire();
		drop = load_acquire(&s->rxc->rx_drop);
		if ((r == 0 && rm.pos < drop) || (r == -EBADMSG && s->rx_cons.pos < drop)) {
			if (!s->gap_from)
				s->gap_from = s->rx_cons.seq + 1;
			s->rx_cons.pos = drop;
			s->rx_cons.seq = RING_SEQ_ANY;
			s->unacked = true;
			return shmb_recv(s, m, timeout_ms);
		}
		if (r == 0)
			rm.payload = s->copy;
	}
	if (r < 0)
		return r;
	if (rm.len < sizeof(rx))
		return -EBADMSG;
	memcpy(&rx, rm.payload, sizeof(rx));
	m->missed = 0;
	if (s->gap_from) {
		m->missed = rm.hdr.seq - (s->gap_from - 1);
		s->gap_from = 0;
		if (m->missed)
			event_emit(s->c, SHMB_EV_GAP, s, m->missed);
	}
	m->data = (const uint8_t *)rm.payload + sizeof(rx);
	m->len = rm.len - sizeof(rx);
	m->topic_id = rx.topic_id;
	if (rx.topic_id != s->last_rx_id || !s->last_rx_name) {
		s->last_rx_name = topic_name(s->c, rx.topic_id);
		s->last_rx_id = rx.topic_id;
	}
	m->topic = s->last_rx_name;
	m->src_broker = rx.src_broker;
	m->src_session = rx.src_session;
	m->src_seq = rx.src_seq;
	ring_consume(&s->rx_cons, &rm);
	s->unacked = true;
	return 0;
}

static bool routed_all(void *arg)
{
	struct shmb_session *s = arg;

	return load_acquire(&s->rxc->tx_read_seq) >= s->tx_prod.seq || stale(s);
}

SHMB_EXPORT int shmb_flush(struct shmb_session *s, int timeout_ms)
{
	struct timespec d = deadline_ms(timeout_ms > 0 ? timeout_ms : 0);
	int r;

	if (routed_all(s))
		return stale(s) ? stale_err(s) : 0;
	if (timeout_ms == 0)
		return -ETIMEDOUT;
	r = wake_wait(&s->rxc->tx_space_signal, &s->txc->tx_space_waiters, routed_all, s, s->spin_ns,
		      timeout_ms > 0 ? &d : NULL);
	if (r < 0)
		return r;
	return stale(s) ? stale_err(s) : 0;
}

SHMB_EXPORT int shmb_session_info(struct shmb_session *s, struct shmb_session_info *i)
{
	*i = (struct shmb_session_info){
		.session_id = s->id,
		.generation = s->generation,
		.created = s->created,
		.rx_acked = load_acquire(&s->txc->rx_acked),
		.tx_next_seq = s->tx_prod.seq,
		.tx_start_seq = s->tx_start_seq,
		.tx_routed_seq = load_acquire(&s->rxc->tx_read_seq),
	};
	return 0;
}

int client_status(struct shmb_client *c, struct proto_reply *rep)
{
	struct proto_status q = { .h.type = PROTO_STATUS };

	return rpc(c, &q, sizeof(q), rep, NULL, 0);
}

void *client_session_tx_base(struct shmb_session *s, size_t *len, int *fd)
{
	*len = s->tx.len;
	*fd = s->tx.fd;
	return s->tx.base;
}
