/*
 * libclient/client.c - libshmb: the control connection, sessions, publish,
 * receive and acknowledge.
 *
 * The control socket carries set-up only; messages go through the two
 * session files the broker passes over SCM_RIGHTS: rx (mapped read-only)
 * and tx.<generation> (mapped read-write).  A client validates both
 * headers before it trusts anything in them.
 *
 * The control connection is an instance of the lifecycle machine
 * (lifecycle.md), through a registry of one entry.  A connection thread
 * per client carries out what the machine asks: it dials, says HELLO,
 * reattaches every open session with its token and its subscriptions
 * (decisions.md 6, 24), arms the redial timer, closes fds, reports
 * events, and watches a live connection for a hang-up.  Application
 * threads send their own requests on the live connection, one at a time;
 * they wait for it while it is down, and report one that fails under them
 * to the machine, which tears it down once.
 *
 * Locks, always taken in this order: c->lock (one request in flight on
 * the connection; the fd; the sessions' tokens and topics) -> c->slock
 * (the sessions array, changed with both held; the epoll sets; pending
 * events) -> c->st (the machine's entry, the action queue, counters, the
 * callback) -> c->tlock (the topic cache) -> the registry's own lock.
 *
 * Must never: write to the rx mapping (it is read-only; a write faults);
 * call FUTEX_WAKE for the broker unless broker_waiting says it sleeps;
 * read from a live connection on the connection thread (it polls for
 * hang-ups only, so it never takes a reply meant for a request); close
 * the control fd anywhere but in the connection thread's CLOSE_FD; call
 * the event callback with a lock held; free a session while the
 * connection thread may report an event about it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "shm/atomics.h"
#include "shm/futex.h"
#include "shm/proto.h"
#include "shm/ring.h"
#include "shm/segment.h"
#include "libclient/internal.h"
#include "libclient/registry.h"
#include "shmb.h"

#define SHMB_EXPORT __attribute__((visibility("default")))

#define MS 1000000ull
#define FOREVER_NS (1ull << 62)

struct topic_entry {
	uint32_t id;
	uint32_t epoch; /* the id is the broker's while this equals c->topic_epoch */
	char name[PROTO_TOPIC_MAX + 1];
};

/* A batch of actions of one machine step, for the connection thread. */
struct conn_batch {
	struct lc_entry *e; /* held until the batch ran */
	unsigned n;
	struct lc_action acts[LC_MAX_ACTS];
};

/* Application threads wait for room when fewer than CONN_QUEUE_SPARE
 * slots are free; the connection thread never has to: it takes a batch
 * out before it runs it, and each batch feeds the machine at most once. */
#define CONN_QUEUE 32
#define CONN_QUEUE_SPARE 4

/* Pending session events, told by the connection thread. */
#define EVP_REATTACHED 0x1u
#define EVP_STALE 0x2u

struct shmb_client {
	pthread_mutex_t lock;
	pthread_mutex_t slock;
	pthread_mutex_t st;
	pthread_mutex_t tlock;
	pthread_cond_t st_cond;   /* queue room, attempts ended, emitters done */

	/* c->lock; written by the connection thread only */
	int fd;                   /* the live control connection, or -1 */
	uint32_t fd_gen;          /* its attempt generation */
	struct lc_entry *fd_entry;/* its machine (held) */
	uint64_t next_req;
	uint64_t broker_id;

	/* c->slock */
	struct shmb_session **sessions; /* open on this client, freed by shmb_close */
	unsigned nsessions, cap_sessions;
	uint32_t linked;          /* atomic: up, every session reattached, epolls set */

	/* c->tlock */
	struct topic_entry **topics; /* entries never move: shmb_msg.topic points at them */
	unsigned ntopics;
	uint32_t topic_epoch;     /* +1 when the broker changes (atomic for readers) */

	/* c->st */
	struct lc_registry reg;
	struct lc_entry *entry;   /* the machine (held); replaced after a permanent failure */
	uint32_t gen_before;      /* attempt generations of replaced machines */
	struct conn_batch q[CONN_QUEUE];
	unsigned qhead, qlen;
	bool closing;
	unsigned emitting;        /* the connection thread is telling session events */
	shmb_event_fn event_fn;
	void *event_arg;
	uint64_t handshakes, disconnects, attempts_ended;
	int last_error, last_reason;
	uint64_t backoff_ns;
	uint64_t info_broker_id;

	/* fixed after shmb_connect() */
	struct sockaddr_un addr;
	char endpoint[LCR_ENDPOINT_MAX];
	uint64_t ctl_timeout_ns;
	int evfd;                 /* wakes the connection thread */
	pthread_t thread;
	bool thread_started;
	bool reg_ready;
	uint64_t rng;             /* jitter; used under the registry's lock */

	/* the connection thread's own */
	struct {
		int poll_fd;              /* the live connection it watches, or -1 */
		uint32_t poll_gen;
		struct lc_entry *poll_e;  /* held */
		struct lc_entry *timer_e; /* held while a timer is armed */
		uint32_t timer_gen;
		uint64_t timer_due;
		bool up;                  /* a connection was up and is not yet told lost */
	} ct;
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
	int notify_rd; /* read end of the broker's poll pipe; the number never changes */
	bool drop_oldest;  /* the broker may drop what this reader has not read */
	uint8_t *copy;     /* drop-oldest: messages are copied out, then checked */
	uint64_t gap_from; /* drop-oldest: RX sequence expected before a jump, or 0 */
	int epfd;      /* shmb_session_fd(): an epoll fd holding notify_rd, or -1 (slock) */
	uint32_t stale_told;  /* atomic: SHMB_EV_STALE was told */
	uint32_t notify_eof;  /* atomic: the broker closed our poll pipe: we are detached */
	uint32_t lost;        /* atomic: a redial found the broker no longer has it for us */
	const char *last_topic;   /* the caller's pointer of the last publish, */
	char last_name[PROTO_TOPIC_MAX + 1]; /* its text then, */
	uint32_t last_id;         /* and its id: one strcmp instead of a lookup */
	uint32_t last_epoch;
	uint32_t last_rx_id;      /* the last received topic and its name */
	uint32_t last_rx_epoch;
	const char *last_rx_name;

	/* for the reattach (c->lock) */
	char name[PROTO_NAME_MAX + 1];
	uint8_t token[PROTO_TOKEN_LEN];
	struct topic_entry **subs; /* its subscriptions, as this client asked for them */
	unsigned nsubs, cap_subs;

	/* the connection thread's own marks (under c->lock or c->slock) */
	bool hs_ok;        /* reattached by the handshake in progress */
	bool wake_lost;    /* lost: sleepers still to be woken */
	unsigned ev_pending; /* EVP_* (slock) */
};

/* The client whose connection thread this is, in that thread. */
static __thread struct shmb_client *conn_of_thread;

static bool stale(const struct shmb_session *s);

/* ---- events --------------------------------------------------------------- */

/* Never under a lock: the callback may call shmb_ functions. */
static void event_emit(struct shmb_client *c, int kind, struct shmb_session *s, uint64_t count)
{
	struct shmb_event ev = { .kind = kind, .session = s, .count = count };
	shmb_event_fn fn;
	void *arg;

	pthread_mutex_lock(&c->st);
	fn = c->event_fn;
	arg = c->event_arg;
	pthread_mutex_unlock(&c->st);
	if (fn)
		fn(&ev, arg);
}

SHMB_EXPORT void shmb_set_event_cb(struct shmb_client *c, shmb_event_fn fn, void *arg)
{
	pthread_mutex_lock(&c->st);
	c->event_fn = fn;
	c->event_arg = arg;
	pthread_mutex_unlock(&c->st);
}

/* ---- control requests ------------------------------------------------------- */

static struct timespec ts_of_ns(uint64_t ns)
{
	return (struct timespec){ .tv_sec = (time_t)(ns / 1000000000ull),
				  .tv_nsec = (long)(ns % 1000000000ull) };
}

static void evfd_kick(struct shmb_client *c)
{
	uint64_t one = 1;

	(void)!write(c->evfd, &one, sizeof(one));
}

/*
 * The handshake's wait for fd: until the deadline, or until shmb_close()
 * wants the thread back (-ECANCELED).  0 when fd has something to say.
 */
static int hs_wait(struct shmb_client *c, int fd, short events, uint64_t deadline)
{
	for (;;) {
		struct pollfd p[2] = { { .fd = fd, .events = events }, { .fd = c->evfd, .events = POLLIN } };
		uint64_t now = mono_ns();
		struct timespec ts;
		bool closing;

		if (now >= deadline)
			return -ETIMEDOUT;
		ts = ts_of_ns(deadline - now);
		if (ppoll(p, 2, &ts, NULL) < 0 && errno != EINTR)
			return -errno;
		if (p[1].revents & POLLIN) {
			uint64_t v;

			/* the queue it signals is looked at after the handshake */
			(void)!read(c->evfd, &v, sizeof(v));
			pthread_mutex_lock(&c->st);
			closing = c->closing;
			pthread_mutex_unlock(&c->st);
			if (closing)
				return -ECANCELED;
		}
		if (p[0].revents)
			return 0;
	}
}

/*
 * One request and its reply on fd; the request gets its id here (c->lock
 * held).  deadline 0: as long as it takes (an application's request; the
 * connection thread's shutdown() of the fd ends it); otherwise the
 * handshake's, also cancelled by shmb_close().  Returns 0 when a reply
 * came (its error in rep->err; fds only without one), -EPIPE (the
 * connection failed), -EPROTO (an answer this library does not
 * understand), -ETIMEDOUT, -ECANCELED.
 */
static int rpc_on(struct shmb_client *c, int fd, void *req, size_t len, struct proto_reply *rep,
		  int *fds, int nfds_max, uint64_t deadline)
{
	struct proto_hdr *h = req;
	int dontwait = deadline ? MSG_DONTWAIT : 0, r;

	h->req_id = ++c->next_req;
	h->len = (uint32_t)len;
	for (;;) {
		ssize_t n;

		if (deadline && (r = hs_wait(c, fd, POLLOUT, deadline)) < 0)
			return r;
		n = send(fd, req, len, MSG_NOSIGNAL | dontwait);
		if (n == (ssize_t)len)
			break;
		if (n < 0 && (errno == EINTR || (errno == EAGAIN && deadline)))
			continue;
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
		int got = 0, extra = 0;
		ssize_t n;

		if (deadline && (r = hs_wait(c, fd, POLLIN, deadline)) < 0)
			return r;
		n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | dontwait);
		if (n < 0 && (errno == EINTR || (errno == EAGAIN && deadline)))
			continue;
		if (n <= 0)
			return -EPIPE;
		for (struct cmsghdr *ch = CMSG_FIRSTHDR(&mh); ch; ch = CMSG_NXTHDR(&mh, ch)) {
			if (ch->cmsg_level != SOL_SOCKET || ch->cmsg_type != SCM_RIGHTS)
				continue;
			for (size_t i = 0; i < (ch->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
				int fd1;

				memcpy(&fd1, CMSG_DATA(ch) + i * sizeof(int), sizeof(int));
				if (got < nfds_max)
					fds[got++] = fd1;
				else {
					close(fd1);
					extra++;
				}
			}
		}
		/* events (request id 0) need no answer: staleness is also visible
		 * in shared memory, where every call checks it */
		if ((size_t)n >= sizeof(struct proto_hdr) && rep->h.type == PROTO_EVENT) {
			for (int i = 0; i < got; i++)
				close(fds[i]);
			continue;
		}
		if ((size_t)n != sizeof(*rep) || rep->h.type != PROTO_REPLY ||
		    rep->h.req_id != h->req_id || (mh.msg_flags & MSG_TRUNC)) {
			for (int i = 0; i < got; i++)
				close(fds[i]);
			return -EPROTO;
		}
		if (rep->err < 0 || got < nfds_max) {
			for (int i = 0; i < got; i++)
				close(fds[i]);
			if (rep->err == 0)
				return -EPROTO; /* an open without its fds */
		}
		(void)extra;
		return 0;
	}
}

/* An application's request on the live connection (c->lock held). */
static int rpc_locked(struct shmb_client *c, void *req, size_t len, struct proto_reply *rep, int *fds,
		      int nfds_max)
{
	int r = rpc_on(c, c->fd, req, len, rep, fds, nfds_max, 0);

	return r < 0 ? r : rep->err;
}

/* ---- the machine's entry ------------------------------------------------------ */

/*
 * The client's machine, held for the caller.  After a permanent failure
 * the registry has dropped it, and this starts a fresh one (lifecycle.md:
 * the next request starts fresh).
 */
static int conn_entry(struct shmb_client *c, struct lc_entry **out)
{
	struct lc_entry *e, *old = NULL;
	int r = lcr_get(&c->reg, c->endpoint, &e);

	if (r < 0)
		return r;
	pthread_mutex_lock(&c->st);
	if (e != c->entry) {
		struct lc m = { .state = LC_FAILED };

		/* only a failed one is replaced: a caller that got the old
		 * entry late must not put it back */
		if (c->entry)
			lcr_snapshot(c->entry, &m);
		if (m.state == LC_FAILED) {
			old = c->entry;
			c->gen_before += old ? m.gen : 0;
			lcr_hold(e);
			c->entry = e;
		}
	}
	pthread_mutex_unlock(&c->st);
	if (old)
		lcr_put(old);
	*out = e;
	return 0;
}

/*
 * The machine's actions go to the connection thread, in the order of the
 * steps that made them.  This runs outside the registry's lock, in
 * whichever thread fed the machine.
 */
static void conn_exec(struct lc_entry *e, const struct lc_action *acts, unsigned n, void *arg)
{
	struct shmb_client *c = arg;
	bool self = conn_of_thread == c;
	struct conn_batch *b;

	lcr_hold(e);
	pthread_mutex_lock(&c->st);
	while (!self && c->qlen >= CONN_QUEUE - CONN_QUEUE_SPARE)
		pthread_cond_wait(&c->st_cond, &c->st);
	b = &c->q[(c->qhead + c->qlen++) % CONN_QUEUE];
	b->e = e;
	b->n = n;
	memcpy(b->acts, acts, n * sizeof(acts[0]));
	pthread_mutex_unlock(&c->st);
	if (!self)
		evfd_kick(c);
}

/* ---- waiting for the connection --------------------------------------------------- */

struct ctl_try {
	uint64_t deadline;   /* for the connection to come up; 0: not started */
	bool retried;
	struct lc_entry *e;  /* the machine of the connection in use (held) */
	uint32_t gen;
};

/* Wait until the connection is up: 0, -ENOTCONN, or a permanent error. */
static int ctl_wait(struct shmb_client *c, uint64_t deadline)
{
	struct lc_entry *e;
	uint64_t now = mono_ns();
	int r = conn_entry(c, &e);

	if (r < 0)
		return r;
	if (conn_of_thread == c) {
		/* the event callback: its own thread cannot wait for itself */
		struct lc m;

		lcr_snapshot(e, &m);
		r = m.state == LC_READY ? 0 : -ENOTCONN;
	} else {
		r = lcr_wait(e, deadline > now ? deadline - now : 0);
	}
	lcr_put(e);
	return r == -ETIMEDOUT || r == -ESHUTDOWN ? -ENOTCONN : r;
}

/* Take c->lock with a live connection in c->fd, waiting for one up to
 * the control timeout.  0 (lock held) or an error (not held). */
static int ctl_enter(struct shmb_client *c, struct ctl_try *t)
{
	if (!t->deadline)
		t->deadline = mono_ns() + c->ctl_timeout_ns;
	for (;;) {
		int r = ctl_wait(c, t->deadline);

		if (r < 0)
			return r;
		pthread_mutex_lock(&c->lock);
		if (c->fd >= 0) {
			t->e = c->fd_entry;
			t->gen = c->fd_gen;
			lcr_hold(t->e);
			return 0;
		}
		pthread_mutex_unlock(&c->lock);
		if (mono_ns() >= t->deadline || conn_of_thread == c)
			return -ENOTCONN;
		/* up in the machine, but the thread is still swapping the fd */
		usleep(1000);
	}
}

/*
 * Release c->lock after a request.  A connection that failed under it is
 * reported to the machine (once per generation is acted on); returns
 * true when the request is to be sent once more, over the next one.
 */
static bool ctl_leave(struct shmb_client *c, struct ctl_try *t, int *r)
{
	struct lc_entry *e = t->e;

	pthread_mutex_unlock(&c->lock);
	t->e = NULL;
	if (*r == -EPIPE || *r == -EPROTO) {
		/* a garbled answer leaves the connection unusable, but is no
		 * reason to give up on the broker: a temporary error */
		struct lc_event ev = { .type = LC_IO_ERROR, .gen = t->gen, .fd = -1,
				       .err = *r == -EPIPE ? -EPIPE : -EBADMSG };

		lcr_feed(e, &ev);
	}
	lcr_put(e);
	if (*r == -EPIPE && !t->retried) {
		t->retried = true;
		return true;
	}
	return false;
}

/* ---- topics ----------------------------------------------------------------- */

/* The cached entry for name, valid or not (c->tlock held). */
static struct topic_entry *topic_find(struct shmb_client *c, const char *name)
{
	for (unsigned i = 0; i < c->ntopics; i++)
		if (!strcmp(c->topics[i]->name, name))
			return c->topics[i];
	return NULL;
}

/*
 * The topic's entry with a valid id, interned over the live connection
 * if this client has no valid id for it (c->lock held).  The entry stays
 * for the client's life (shmb_msg.topic and the subscription lists point
 * at it).  0, the broker's error, or rpc_on()'s.
 */
static int topic_get_locked(struct shmb_client *c, int fd, const char *name, uint64_t deadline,
			    struct topic_entry **out)
{
	struct proto_topic q = { .h.type = PROTO_TOPIC };
	struct proto_reply rep;
	struct topic_entry *e;
	size_t len = strlen(name);
	int r;

	pthread_mutex_lock(&c->tlock);
	e = topic_find(c, name);
	if (!e) {
		struct topic_entry **n = realloc(c->topics, (c->ntopics + 1) * sizeof(*n));

		if (n)
			c->topics = n;
		e = n ? calloc(1, sizeof(*e)) : NULL;
		if (e) {
			memcpy(e->name, name, len + 1);
			c->topics[c->ntopics++] = e; /* epoch 0: no id yet */
		}
	}
	r = !e ? -ENOMEM : e->epoch == c->topic_epoch ? 1 : 0;
	pthread_mutex_unlock(&c->tlock);
	if (r) {
		*out = e;
		return r < 0 ? r : 0;
	}
	q.name_len = (uint32_t)len;
	memcpy(q.name, name, len);
	r = rpc_on(c, fd, &q, sizeof(q), &rep, NULL, 0, deadline);
	if (r == 0 && rep.err == 0) {
		pthread_mutex_lock(&c->tlock);
		e->id = rep.u.topic.topic_id;
		e->epoch = c->topic_epoch;
		pthread_mutex_unlock(&c->tlock);
	}
	*out = e;
	return r < 0 ? r : rep.err;
}

static bool topic_name_ok(const char *name)
{
	size_t len = strlen(name);

	return len > 0 && len <= PROTO_TOPIC_MAX;
}

/* The topic's id: from the cache, else one request.  Also returns the
 * epoch it belongs to. */
static int topic_id(struct shmb_client *c, const char *name, uint32_t *id, uint32_t *epoch)
{
	struct ctl_try t = { 0 };
	struct topic_entry *e;
	int r;

	if (!topic_name_ok(name))
		return -EINVAL;
	pthread_mutex_lock(&c->tlock);
	e = topic_find(c, name);
	if (e && e->epoch == c->topic_epoch) {
		*id = e->id;
		*epoch = e->epoch;
		pthread_mutex_unlock(&c->tlock);
		return 0;
	}
	pthread_mutex_unlock(&c->tlock);
	while ((r = ctl_enter(c, &t)) == 0) {
		r = topic_get_locked(c, c->fd, name, 0, &e);
		if (r == 0) {
			pthread_mutex_lock(&c->tlock);
			*id = e->id;
			*epoch = e->epoch;
			pthread_mutex_unlock(&c->tlock);
		}
		if (!ctl_leave(c, &t, &r))
			break;
	}
	return r;
}

/* The name of a topic id of the current broker, "" if this client does
 * not know it.  Only the topic lock: the data path never waits for a
 * control request. */
static const char *topic_name(struct shmb_client *c, uint32_t id)
{
	const char *name = "";

	pthread_mutex_lock(&c->tlock);
	for (unsigned i = 0; i < c->ntopics; i++)
		if (c->topics[i]->id == id && c->topics[i]->epoch == c->topic_epoch) {
			name = c->topics[i]->name;
			break;
		}
	pthread_mutex_unlock(&c->tlock);
	return name;
}

/* ---- the connection thread -------------------------------------------------------- */

static void attempt_ended(struct shmb_client *c, int err, bool up)
{
	pthread_mutex_lock(&c->st);
	c->attempts_ended++;
	if (up) {
		c->handshakes++;
		c->backoff_ns = 0;
	} else {
		c->last_error = err;
	}
	pthread_cond_broadcast(&c->st_cond);
	pthread_mutex_unlock(&c->st);
}

/*
 * Dial.  A Unix socket connects at once or fails at once (-EAGAIN when
 * its backlog is full, a temporary error), so a non-blocking connect
 * never outlasts the connect deadline and never holds up a close.  The
 * fd is blocking afterwards: application threads wait in recvmsg().
 */
static int conn_dial(struct shmb_client *c, int *out)
{
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), fl;

	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&c->addr, sizeof(c->addr)) < 0 ||
	    (fl = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	*out = fd;
	return 0;
}

static bool same_file(int a, int b)
{
	struct stat sa, sb;

	return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
	       sa.st_ino == sb.st_ino;
}

/* The broker no longer has s for us: from now on its calls say -ESTALE. */
static void session_mark_lost(struct shmb_client *c, struct shmb_session *s)
{
	store_relaxed(&s->lost, 1);
	/* pairs with the sleepers' fence in wake_wait(): set lost, then
	 * look at the waiter counts (conn_wake_lost) */
	fence_full();
	s->wake_lost = true;
	if (!__atomic_exchange_n(&s->stale_told, 1, __ATOMIC_RELAXED)) {
		pthread_mutex_lock(&c->slock);
		s->ev_pending |= EVP_STALE;
		pthread_mutex_unlock(&c->slock);
	}
}

static bool transport_error(int r)
{
	return r == -EPIPE || r == -EPROTO || r == -ETIMEDOUT || r == -ECANCELED;
}

/*
 * Reattach s over the new connection fd (c->lock held): the same owner
 * with its token, never a new generation (PROTO_OPEN_REATTACH).  The
 * broker's files must be the very ones mapped; the new poll pipe takes
 * the place of the old one under the same fd number, so an fd an
 * application thread holds stays valid.  Then its subscriptions again,
 * in case the broker forgot them (subscribing is idempotent).  A session
 * the broker no longer has for us is marked lost, and that is no failure
 * of the handshake; an error of the connection is.
 */
static int session_reattach(struct shmb_client *c, int fd, struct shmb_session *s, uint64_t deadline)
{
	struct proto_open q = { .h.type = PROTO_SESSION_OPEN, .policy = UINT32_MAX,
				.flags = PROTO_OPEN_TOKEN | PROTO_OPEN_REATTACH };
	struct proto_reply rep;
	int fds[3], r;
	bool same;

	q.name_len = (uint32_t)strlen(s->name);
	memcpy(q.name, s->name, q.name_len);
	memcpy(q.token, s->token, sizeof(q.token));
	r = rpc_on(c, fd, &q, sizeof(q), &rep, fds, 3, deadline);
	if (r < 0)
		return r;
	switch (-rep.err) {
	case 0:
		break;
	case ENOENT: /* gone: destroyed, expired, or a broker that does not know it */
	case ESTALE: /* another owner now */
	case EBADMSG: /* quarantined */
	case EINVAL:
	case EPERM:
	case EACCES:
		session_mark_lost(c, s);
		return 0;
	default:
		return rep.err; /* the broker could not answer now (fds, memory): later */
	}
	same = rep.u.open.session_id == s->id && rep.u.open.generation == s->generation &&
	       same_file(fds[0], s->rx.fd) && same_file(fds[1], s->tx.fd);
	close(fds[0]);
	close(fds[1]);
	if (!same) {
		close(fds[2]);
		session_mark_lost(c, s);
		return 0;
	}
	if (dup3(fds[2], s->notify_rd, O_CLOEXEC) < 0) {
		r = -errno;
		close(fds[2]);
		return r;
	}
	close(fds[2]);
	for (unsigned i = 0; i < s->nsubs; i++) {
		struct proto_sub sq = { .h.type = PROTO_SUBSCRIBE, .session_id = s->id };
		struct topic_entry *te;

		r = topic_get_locked(c, fd, s->subs[i]->name, deadline, &te);
		if (transport_error(r))
			return r;
		if (r < 0)
			continue; /* the broker refuses the topic now: nothing to restore */
		sq.topic_id = te->id;
		r = rpc_on(c, fd, &sq, sizeof(sq), &rep, NULL, 0, deadline);
		if (r < 0)
			return r;
	}
	s->hs_ok = true;
	return 0;
}

/*
 * The connection is up and every session reattached: put the poll pipes
 * back into the epoll sets (a lost session's old pipe too: it is at EOF,
 * so its poller learns -ESTALE), and say which sessions to tell about.
 */
static void conn_relink(struct shmb_client *c)
{
	struct epoll_event ev = { .events = EPOLLIN };

	pthread_mutex_lock(&c->slock);
	for (unsigned i = 0; i < c->nsessions; i++) {
		struct shmb_session *s = c->sessions[i];
		bool add = s->hs_ok || load_relaxed(&s->lost);

		if (add && s->epfd >= 0 && epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->notify_rd, &ev) < 0 &&
		    errno == EEXIST)
			epoll_ctl(s->epfd, EPOLL_CTL_MOD, s->notify_rd, &ev);
		if (s->hs_ok) {
			store_relaxed(&s->notify_eof, 0);
			s->ev_pending |= EVP_REATTACHED;
			s->hs_ok = false;
		}
	}
	/* pairs with the load in notify_drain(): an EOF from now on is news */
	store_release(&c->linked, 1);
	pthread_mutex_unlock(&c->slock);
}

/*
 * Wake whoever sleeps on a lost session.  The broker bumps no futex word
 * for it, so a sleeper that checked just before the mark and sleeps just
 * after one wake would miss it: wake until the waiter counts (our own
 * tx file) are zero, for at most about a second.
 */
static void conn_wake_lost(struct shmb_client *c)
{
	for (int round = 0; round < 1000; round++) {
		bool waiting = false;

		pthread_mutex_lock(&c->slock);
		for (unsigned i = 0; i < c->nsessions; i++) {
			struct shmb_session *s = c->sessions[i];

			if (!s->wake_lost)
				continue;
			futex_wake(&s->rxc->rx_signal, 0x7fffffff);
			futex_wake(&s->rxc->tx_space_signal, 0x7fffffff);
			fence_full();
			if (load_relaxed(&s->txc->rx_waiters) || load_relaxed(&s->txc->tx_space_waiters))
				waiting = true;
			else
				s->wake_lost = false;
		}
		pthread_mutex_unlock(&c->slock);
		if (!waiting)
			return;
		usleep(1000);
	}
}

/* Tell the pending session events, a few at a time, outside every lock;
 * session_free() waits while some are being told. */
static void conn_emit_pending(struct shmb_client *c)
{
	for (;;) {
		struct shmb_event ev[16];
		unsigned n = 0;

		pthread_mutex_lock(&c->slock);
		for (unsigned i = 0; i < c->nsessions && n < 16; i++) {
			struct shmb_session *s = c->sessions[i];

			if (s->ev_pending & EVP_STALE)
				ev[n++] = (struct shmb_event){ SHMB_EV_STALE, s, 0 };
			else if (s->ev_pending & EVP_REATTACHED)
				ev[n++] = (struct shmb_event){ SHMB_EV_REATTACHED, s, s->generation };
			s->ev_pending = 0;
		}
		if (n) {
			pthread_mutex_lock(&c->st);
			c->emitting++;
			pthread_mutex_unlock(&c->st);
		}
		pthread_mutex_unlock(&c->slock);
		if (!n)
			return;
		for (unsigned i = 0; i < n; i++)
			event_emit(c, ev[i].kind, ev[i].session, ev[i].count);
		pthread_mutex_lock(&c->st);
		c->emitting--;
		pthread_cond_broadcast(&c->st_cond);
		pthread_mutex_unlock(&c->st);
	}
}

/*
 * HANDSHAKE: HELLO, then the reattach of every open session, all within
 * the handshake deadline and holding c->lock, so no request and no
 * session open or close comes in between.  The fd becomes the client's
 * before the machine hears of success, so a waiter woken by it finds it.
 */
static void conn_handshake(struct shmb_client *c, struct lc_entry *e, int fd, uint32_t gen,
			   uint64_t deadline)
{
	struct proto_hello hello = { .h.type = PROTO_HELLO, .version = PROTO_VERSION };
	struct lc_event ev = { .type = LC_HANDSHAKE_DONE, .gen = gen, .fd = -1 };
	struct proto_reply rep;
	int r;

	pthread_mutex_lock(&c->lock);
	r = rpc_on(c, fd, &hello, sizeof(hello), &rep, NULL, 0, deadline);
	if (r == 0)
		r = rep.err;
	if (r == 0) {
		if (rep.u.hello.broker_id != c->broker_id) {
			/* another broker: the topic ids this client knows are
			 * the old one's (the entries stay; their ids are looked
			 * up again) */
			pthread_mutex_lock(&c->tlock);
			store_relaxed(&c->topic_epoch, c->topic_epoch + 1);
			pthread_mutex_unlock(&c->tlock);
			c->broker_id = rep.u.hello.broker_id;
			pthread_mutex_lock(&c->st);
			c->info_broker_id = c->broker_id;
			pthread_mutex_unlock(&c->st);
		}
		for (unsigned i = 0; r == 0 && i < c->nsessions; i++)
			if (!load_relaxed(&c->sessions[i]->lost))
				r = session_reattach(c, fd, c->sessions[i], deadline);
	}
	if (r == 0) {
		lcr_hold(e);
		c->fd = fd;
		c->fd_gen = gen;
		c->fd_entry = e;
	} else {
		for (unsigned i = 0; i < c->nsessions; i++)
			c->sessions[i]->hs_ok = false;
	}
	pthread_mutex_unlock(&c->lock);
	if (r == 0 && lcr_feed(e, &ev) == 0) {
		lcr_hold(e);
		c->ct.poll_fd = fd;
		c->ct.poll_gen = gen;
		c->ct.poll_e = e;
		c->ct.up = true;
		conn_relink(c);
		attempt_ended(c, 0, true);
	} else if (r < 0) {
		/* the machine closes fd: it is the connection's */
		attempt_ended(c, r, false);
		ev.type = LC_HANDSHAKE_FAILED;
		ev.err = r;
		lcr_feed(e, &ev);
	} else {
		/* closed meanwhile: the machine's CLOSE_FD of fd follows */
		pthread_mutex_lock(&c->lock);
		for (unsigned i = 0; i < c->nsessions; i++)
			c->sessions[i]->hs_ok = false;
		pthread_mutex_unlock(&c->lock);
	}
	conn_wake_lost(c);
	conn_emit_pending(c);
}

/*
 * CLOSE_FD.  The live connection first leaves the epoll sets (else a
 * poller would spin on the EOF its pipes are about to show), then is shut
 * down, so that an application thread waiting in recvmsg() on it returns
 * and lets go of c->lock, then closed under c->lock.
 */
static void conn_close_fd(struct shmb_client *c, int fd)
{
	bool live = fd == c->fd; /* only this thread writes c->fd */
	struct lc_entry *old = NULL;

	if (live) {
		store_release(&c->linked, 0);
		pthread_mutex_lock(&c->slock);
		for (unsigned i = 0; i < c->nsessions; i++) {
			struct shmb_session *s = c->sessions[i];

			if (s->epfd >= 0 && !load_relaxed(&s->lost))
				epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->notify_rd, NULL);
		}
		pthread_mutex_unlock(&c->slock);
	}
	shutdown(fd, SHUT_RDWR);
	pthread_mutex_lock(&c->lock);
	close(fd);
	if (live) {
		old = c->fd_entry;
		c->fd = -1;
		c->fd_entry = NULL;
	}
	pthread_mutex_unlock(&c->lock);
	if (old)
		lcr_put(old);
	if (c->ct.poll_fd == fd) {
		c->ct.poll_fd = -1;
		lcr_put(c->ct.poll_e);
		c->ct.poll_e = NULL;
	}
}

static void conn_monitor(struct shmb_client *c, const struct lc_action *a)
{
	bool tell = false;

	pthread_mutex_lock(&c->st);
	switch (a->mon) {
	case LC_MON_DISCONNECTED:
		/* a connection that was up is lost: said once per connection,
		 * not for an attempt that never came up, nor at shmb_close() */
		if (c->ct.up) {
			c->ct.up = false;
			c->disconnects++;
			c->last_reason = (int)a->detail;
			tell = !c->closing;
		}
		break;
	case LC_MON_BACKOFF:
		c->backoff_ns = (uint64_t)a->detail;
		break;
	default:
		break;
	}
	pthread_mutex_unlock(&c->st);
	if (tell)
		event_emit(c, SHMB_EV_DISCONNECTED, NULL, 0);
}

/* Carry out one action of the machine of entry e. */
static void conn_act(struct shmb_client *c, struct lc_entry *e, const struct lc_action *a)
{
	struct lc_event ev = { .gen = a->gen, .fd = -1 };
	int fd = -1, r;

	switch (a->type) {
	case LC_ACT_RESOLVE: /* a socket path needs none (skip_resolve) */
		ev.type = LC_RESOLVED;
		lcr_feed(e, &ev);
		break;
	case LC_ACT_CONNECT:
		r = conn_dial(c, &fd);
		if (r < 0) {
			attempt_ended(c, r, false);
			ev.type = LC_CONNECT_FAILED;
			ev.err = r;
		} else {
			ev.type = LC_CONNECTED;
			ev.fd = fd;
		}
		/* acted on or dropped, the machine owns fd now (a dropped one
		 * comes back as CLOSE_FD); refused, nobody does */
		if (lcr_feed(e, &ev) < 0 && fd >= 0)
			close(fd);
		break;
	case LC_ACT_HANDSHAKE:
		conn_handshake(c, e, a->fd, a->gen, a->ns);
		break;
	case LC_ACT_TIMER:
		if (c->ct.timer_e)
			lcr_put(c->ct.timer_e);
		lcr_hold(e);
		c->ct.timer_e = e;
		c->ct.timer_gen = a->gen;
		c->ct.timer_due = mono_ns() + a->ns;
		break;
	case LC_ACT_CLOSE_FD:
		conn_close_fd(c, a->fd);
		break;
	case LC_ACT_ABORT:
		/* dials run in this thread, so none is in flight now */
		ev.type = LC_ABORTED;
		lcr_feed(e, &ev);
		break;
	case LC_ACT_MONITOR:
		conn_monitor(c, a);
		break;
	case LC_ACT_WAKE:
		/* the registry woke its waiters; shmb_connect() waits here */
		pthread_mutex_lock(&c->st);
		pthread_cond_broadcast(&c->st_cond);
		pthread_mutex_unlock(&c->st);
		break;
	}
}

/* Idle: wait for a queued batch, the redial timer, or a hang-up of the
 * live connection (events 0: only POLLHUP and POLLERR are reported, so
 * this thread never takes a reply an application thread waits for). */
static void conn_poll(struct shmb_client *c)
{
	struct pollfd p[2] = { { .fd = c->evfd, .events = POLLIN },
			       { .fd = c->ct.poll_fd, .events = 0 } };
	struct timespec ts, *tp = NULL;

	if (c->ct.timer_e) {
		uint64_t now = mono_ns();

		ts = ts_of_ns(c->ct.timer_due > now ? c->ct.timer_due - now : 0);
		tp = &ts;
	}
	if (ppoll(p, c->ct.poll_fd >= 0 ? 2 : 1, tp, NULL) < 0 && errno != EINTR) {
		struct timespec pause = { .tv_nsec = 1000000 };

		nanosleep(&pause, NULL); /* out of memory for the poll: try again */
		return;
	}
	if (p[0].revents & POLLIN) {
		uint64_t v;

		(void)!read(c->evfd, &v, sizeof(v));
	}
	if (c->ct.poll_fd >= 0 && (p[1].revents & (POLLHUP | POLLERR | POLLNVAL))) {
		struct lc_event ev = { .type = LC_IO_ERROR, .gen = c->ct.poll_gen, .fd = -1,
				       .err = -ECONNRESET };
		struct lc_entry *e = c->ct.poll_e;

		/* an EOF on a poll pipe is no detach from now on */
		store_release(&c->linked, 0);
		c->ct.poll_fd = -1;
		c->ct.poll_e = NULL;
		lcr_feed(e, &ev);
		lcr_put(e);
	}
	if (c->ct.timer_e && mono_ns() >= c->ct.timer_due) {
		struct lc_event ev = { .type = LC_TIMER, .gen = c->ct.timer_gen, .fd = -1 };
		struct lc_entry *e = c->ct.timer_e;

		c->ct.timer_e = NULL;
		lcr_feed(e, &ev);
		lcr_put(e);
	}
}

static void *conn_main(void *arg)
{
	struct shmb_client *c = arg;

	conn_of_thread = c;
	for (;;) {
		struct conn_batch b;
		bool got, stop;

		pthread_mutex_lock(&c->st);
		got = c->qlen > 0;
		if (got) {
			b = c->q[c->qhead];
			c->qhead = (c->qhead + 1) % CONN_QUEUE;
			c->qlen--;
			pthread_cond_broadcast(&c->st_cond);
		}
		/* shmb_close() fed LC_CLOSE before it set closing: what that
		 * asked for (close the fd, end a dial) is in the queue */
		stop = !got && c->closing;
		pthread_mutex_unlock(&c->st);
		if (got) {
			for (unsigned i = 0; i < b.n; i++)
				conn_act(c, b.e, &b.acts[i]);
			lcr_put(b.e);
		} else if (stop) {
			break;
		} else {
			conn_poll(c);
		}
	}
	if (c->ct.timer_e)
		lcr_put(c->ct.timer_e);
	if (c->ct.poll_e)
		lcr_put(c->ct.poll_e);
	c->ct.timer_e = c->ct.poll_e = NULL;
	return NULL;
}

/* ---- connect, close, reconnect, info ------------------------------------------------ */

static uint64_t clock_now(void *arg)
{
	(void)arg;
	return mono_ns();
}

static uint32_t clock_random(void *arg)
{
	struct shmb_client *c = arg;
	uint64_t x = c->rng; /* xorshift64*, under the registry's lock */

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	c->rng = x;
	return (uint32_t)((x * 0x2545f4914f6cdd1dull) >> 32);
}

static uint64_t ms_or(unsigned ms, uint64_t dflt)
{
	return ms ? (uint64_t)ms * MS : dflt;
}

/* Everything but the thread and the dial; shmb_close() undoes any part. */
static int client_init(struct shmb_client *c, const struct shmb_connect_opts *o)
{
	const char *dir = o->dir ? o->dir : getenv("SHMB_DIR");
	struct lc_opts lo = {
		.base_ns = ms_or(o->redial_base_ms, 100 * MS),
		.cap_ns = ms_or(o->redial_cap_ms, 2000 * MS),
		.connect_timeout_ns = ms_or(o->connect_timeout_ms, 2000 * MS),
		.handshake_timeout_ns = ms_or(o->handshake_timeout_ms, 2000 * MS),
		.skip_resolve = true,
	};
	struct lc_clock clock = { clock_now, clock_random, c };
	size_t n = 0;

	c->fd = -1;
	c->evfd = -1;
	c->ct.poll_fd = -1;
	c->topic_epoch = 1;
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->slock, NULL);
	pthread_mutex_init(&c->st, NULL);
	pthread_mutex_init(&c->tlock, NULL);
	pthread_cond_init(&c->st_cond, NULL);
	if (!dir || !*dir)
		dir = "/run/shmb";
	c->addr.sun_family = AF_UNIX;
	if (snprintf(c->addr.sun_path, sizeof(c->addr.sun_path), "%s/control", dir) >=
	    (int)sizeof(c->addr.sun_path))
		return -ENAMETOOLONG;
	/* the registry's name for it: one entry per client, so only a label
	 * (the registry allows no spaces; a path may have them) */
	for (const char *p = c->addr.sun_path; *p && n + 1 < sizeof(c->endpoint); p++)
		c->endpoint[n++] = *p == ' ' ? '_' : *p;
	c->ctl_timeout_ns = o->control_timeout_ms < 0 ? FOREVER_NS
			    : ms_or((unsigned)o->control_timeout_ms, 5000 * MS);
	if (getrandom(&c->rng, sizeof(c->rng), GRND_NONBLOCK) != sizeof(c->rng))
		c->rng = mono_ns() ^ (uintptr_t)c;
	c->rng |= 1;
	if (lcr_init(&c->reg, &lo, &clock, conn_exec, c) < 0)
		return -EINVAL;
	c->reg_ready = true;
	c->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	return c->evfd < 0 ? -errno : 0;
}

/* How shmb_connect() waits for the first connection. */
static int connect_wait(struct shmb_client *c, struct lc_entry *e, int wait_ms)
{
	int r;

	if (wait_ms == 0) {
		/* one attempt, as before the redial: its outcome */
		pthread_mutex_lock(&c->st);
		while (!c->attempts_ended)
			pthread_cond_wait(&c->st_cond, &c->st);
		r = c->handshakes ? 0 : c->last_error ? c->last_error : -ECONNREFUSED;
		pthread_mutex_unlock(&c->st);
		return r;
	}
	r = lcr_wait(e, wait_ms < 0 ? FOREVER_NS : (uint64_t)wait_ms * MS);
	if (r == -ETIMEDOUT) {
		/* no broker in time: say what the last attempt found */
		pthread_mutex_lock(&c->st);
		if (c->last_error)
			r = c->last_error;
		pthread_mutex_unlock(&c->st);
	}
	return r;
}

SHMB_EXPORT int shmb_connect(const struct shmb_connect_opts *opts, struct shmb_client **out)
{
	static const struct shmb_connect_opts none;
	struct shmb_client *c = calloc(1, sizeof(*c));
	struct lc_entry *e;
	sigset_t all, old;
	int r;

	if (!c)
		return -ENOMEM;
	r = client_init(c, opts ? opts : &none);
	if (r < 0)
		goto err;
	/* the thread takes no signal meant for the application */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = -pthread_create(&c->thread, NULL, conn_main, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r < 0)
		goto err;
	c->thread_started = true;
	r = conn_entry(c, &e); /* starts the machine: the first dial */
	if (r < 0)
		goto err;
	r = connect_wait(c, e, opts ? opts->wait_ms : 0);
	lcr_put(e);
	if (r < 0)
		goto err;
	*out = c;
	return 0;
err:
	shmb_close(c);
	return r;
}

/* Binaries built against 0.2 pass the options as they were then, { dir }
 * only: they reach this one (symbol version SHMB_0.1). */
struct shmb_connect_opts_0_2 {
	const char *dir;
};

__attribute__((visibility("default"), symver("shmb_connect@SHMB_0.1")))
int compat_connect_0_2(const struct shmb_connect_opts_0_2 *opts, struct shmb_client **out);
int compat_connect_0_2(const struct shmb_connect_opts_0_2 *opts, struct shmb_client **out)
{
	struct shmb_connect_opts o = { .dir = opts ? opts->dir : NULL };

	return shmb_connect(&o, out);
}

static void session_free(struct shmb_session *s);

SHMB_EXPORT void shmb_close(struct shmb_client *c)
{
	if (!c)
		return;
	if (c->thread_started) {
		struct lc_event ev = { .type = LC_CLOSE, .fd = -1 };
		struct lc_entry *e;

		pthread_mutex_lock(&c->st);
		e = c->entry;
		pthread_mutex_unlock(&c->st);
		/* what the close asks for is queued before the thread may stop */
		if (e)
			lcr_feed(e, &ev);
		pthread_mutex_lock(&c->st);
		c->closing = true;
		pthread_mutex_unlock(&c->st);
		evfd_kick(c);
		pthread_join(c->thread, NULL);
	}
	/* the connection is closed: the broker detached them all at once */
	while (c->nsessions)
		session_free(c->sessions[--c->nsessions]);
	free(c->sessions);
	if (c->entry)
		lcr_put(c->entry);
	if (c->reg_ready)
		lcr_fini(&c->reg);
	if (c->evfd >= 0)
		close(c->evfd);
	for (unsigned i = 0; i < c->ntopics; i++)
		free(c->topics[i]);
	free(c->topics);
	pthread_cond_destroy(&c->st_cond);
	pthread_mutex_destroy(&c->tlock);
	pthread_mutex_destroy(&c->st);
	pthread_mutex_destroy(&c->slock);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

SHMB_EXPORT int shmb_reconnect(struct shmb_client *c)
{
	struct lc_entry *e;
	int r = conn_entry(c, &e); /* after a permanent failure: a fresh dial */

	if (r < 0)
		return r;
	/* in BACKOFF it fires at once; during a dial it joins it; refused
	 * (-EINVAL) only where waiting says why */
	lcr_force_reconnect(e);
	if (conn_of_thread == c) {
		lcr_put(e);
		return 0; /* from the event callback: the redial runs after it */
	}
	r = lcr_wait(e, c->ctl_timeout_ns);
	lcr_put(e);
	return r == -ETIMEDOUT || r == -ESHUTDOWN ? -ENOTCONN : r;
}

SHMB_EXPORT int shmb_client_info(struct shmb_client *c, struct shmb_client_info *i)
{
	struct lc_entry *e;
	struct lc m;
	uint32_t before;

	memset(i, 0, sizeof(*i));
	pthread_mutex_lock(&c->st);
	e = c->entry;
	lcr_hold(e);
	before = c->gen_before;
	i->reconnects = c->handshakes ? c->handshakes - 1 : 0;
	i->disconnects = c->disconnects;
	i->last_reason = c->last_reason;
	i->last_error = c->last_error;
	i->backoff_ms = (uint32_t)(c->backoff_ns / MS);
	i->broker_id = c->info_broker_id;
	pthread_mutex_unlock(&c->st);
	lcr_snapshot(e, &m);
	lcr_put(e);
	i->connected = m.state == LC_READY;
	i->attempt_gen = before + m.gen;
	i->failures = m.failures;
	if (m.state != LC_BACKOFF)
		i->backoff_ms = 0;
	return 0;
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

/* Room for one more session in c->sessions, made before the open, so an
 * open session is always in the array the reattach goes through. */
static int sessions_reserve(struct shmb_client *c)
{
	int r = 0;

	pthread_mutex_lock(&c->slock);
	if (c->nsessions == c->cap_sessions) {
		unsigned cap = c->cap_sessions ? 2 * c->cap_sessions : 8;
		struct shmb_session **n = realloc(c->sessions, cap * sizeof(*n));

		if (n) {
			c->sessions = n;
			c->cap_sessions = cap;
		} else {
			r = -ENOMEM;
		}
	}
	pthread_mutex_unlock(&c->slock);
	return r;
}

/* Take s out of the array (c->lock held, so no reattach is under way). */
static void session_unlist(struct shmb_client *c, struct shmb_session *s)
{
	pthread_mutex_lock(&c->slock);
	for (unsigned i = 0; i < c->nsessions; i++)
		if (c->sessions[i] == s) {
			c->sessions[i] = c->sessions[--c->nsessions];
			break;
		}
	pthread_mutex_unlock(&c->slock);
}

SHMB_EXPORT int shmb_session_open(struct shmb_client *c, const char *name,
				  const struct shmb_session_opts *opts, struct shmb_session **out)
{
	struct proto_open q = { .h.type = PROTO_SESSION_OPEN, .policy = UINT32_MAX };
	struct proto_reply rep;
	struct ctl_try t = { 0 };
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
	r = sessions_reserve(c);
	if (r < 0)
		return r;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->rx = (struct segment)SEGMENT_INIT;
	s->tx = (struct segment)SEGMENT_INIT;
	s->notify_rd = -1;
	s->epfd = -1;
	s->c = c;
	memcpy(s->name, name, len + 1);
	s->flags = opts ? opts->flags : 0;
	s->spin_ns = (uint64_t)(opts && opts->spin_us ? opts->spin_us : 5) * 1000;
	while ((r = ctl_enter(c, &t)) == 0) {
		r = rpc_locked(c, &q, sizeof(q), &rep, fds, 3);
		if (r == 0) {
			s->notify_rd = fds[2];
			s->id = rep.u.open.session_id;
			s->generation = rep.u.open.generation;
			s->created = (int)rep.u.open.created;
			memcpy(s->token, rep.u.open.token, sizeof(s->token));
			r = session_map(s, fds[0], fds[1], &rep);
		}
		if (r == 0) {
			/* in the array under the same c->lock as the open: the
			 * next reattach knows it */
			pthread_mutex_lock(&c->slock);
			c->sessions[c->nsessions++] = s;
			pthread_mutex_unlock(&c->slock);
		}
		if (!ctl_leave(c, &t, &r))
			break;
	}
	if (r < 0) {
		segment_unmap(&s->rx);
		segment_unmap(&s->tx);
		if (s->notify_rd >= 0)
			close(s->notify_rd);
		free(s->copy);
		free(s);
		return r;
	}
	*out = s;
	if (!s->created)
		event_emit(c, SHMB_EV_REATTACHED, s, s->generation);
	return 0;
}

/* Free s, which is in no array any more: once the connection thread is
 * not telling events (one may be about s), unless this is that thread. */
static void session_free(struct shmb_session *s)
{
	struct shmb_client *c = s->c;

	pthread_mutex_lock(&c->st);
	while (c->emitting && conn_of_thread != c)
		pthread_cond_wait(&c->st_cond, &c->st);
	pthread_mutex_unlock(&c->st);
	if (s->epfd >= 0)
		close(s->epfd);
	close(s->notify_rd);
	free(s->copy);
	free(s->subs);
	segment_unmap(&s->rx);
	segment_unmap(&s->tx);
	free(s);
}

static int session_end(struct shmb_session *s, uint32_t flags)
{
	struct proto_close q = { .h.type = PROTO_SESSION_CLOSE, .session_id = s->id, .flags = flags };
	struct shmb_client *c = s->c;
	struct proto_reply rep;
	struct ctl_try t = { 0 };
	bool unlisted = false;
	int r;

	if (load_relaxed(&s->lost)) {
		r = -ESTALE; /* the broker has it no more */
	} else {
		while ((r = ctl_enter(c, &t)) == 0) {
			r = rpc_locked(c, &q, sizeof(q), &rep, NULL, 0);
			/* out of the array under the same c->lock as the close,
			 * so no reattach brings it back; kept for a retry */
			if (r != -EPIPE || t.retried) {
				session_unlist(c, s);
				unlisted = true;
			}
			if (!ctl_leave(c, &t, &r))
				break;
		}
	}
	if (!unlisted) {
		pthread_mutex_lock(&c->lock);
		session_unlist(c, s);
		pthread_mutex_unlock(&c->lock);
	}
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
	/* pairs with the broker's store_release of the generation; `lost`
	 * with the fence in session_mark_lost() */
	return load_acquire(&s->rxc->generation) != s->generation || load_relaxed(&s->lost);
}

/* -ESTALE, telling the event callback the first time. */
static int stale_err(struct shmb_session *s)
{
	if (!__atomic_exchange_n(&s->stale_told, 1, __ATOMIC_RELAXED))
		event_emit(s->c, SHMB_EV_STALE, s, 0);
	return -ESTALE;
}

/* Keep the session's list of topics as the broker now has it (c->lock
 * held), for the reattach.  Room was made before the request. */
static void subs_note(struct shmb_session *s, struct topic_entry *te, uint32_t type, uint32_t flags)
{
	unsigned i;

	if (type == PROTO_SUBSCRIBE && (flags & PROTO_SUB_RESET))
		s->nsubs = 0;
	for (i = 0; i < s->nsubs && s->subs[i] != te; i++)
		;
	if (type == PROTO_SUBSCRIBE && i == s->nsubs)
		s->subs[s->nsubs++] = te;
	else if (type == PROTO_UNSUBSCRIBE && i < s->nsubs)
		s->subs[i] = s->subs[--s->nsubs];
}

static int subs_reserve(struct shmb_session *s)
{
	if (s->nsubs == s->cap_subs) {
		unsigned cap = s->cap_subs ? 2 * s->cap_subs : 8;
		struct topic_entry **n = realloc(s->subs, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		s->subs = n;
		s->cap_subs = cap;
	}
	return 0;
}

static int sub_req(struct shmb_session *s, const char *topic, uint32_t type, uint32_t flags)
{
	struct proto_sub q = { .h.type = type, .session_id = s->id, .flags = flags };
	struct shmb_client *c = s->c;
	struct proto_reply rep;
	struct ctl_try t = { 0 };
	int r;

	if (stale(s))
		return stale_err(s);
	if (!topic_name_ok(topic))
		return -EINVAL;
	while ((r = ctl_enter(c, &t)) == 0) {
		struct topic_entry *te;

		/* the id and the request on one connection, so both are of
		 * one broker */
		r = subs_reserve(s);
		if (r == 0)
			r = topic_get_locked(c, c->fd, topic, 0, &te);
		if (r == 0) {
			q.topic_id = te->id;
			r = rpc_locked(c, &q, sizeof(q), &rep, NULL, 0);
		}
		if (r == 0)
			subs_note(s, te, type, flags);
		if (!ctl_leave(c, &t, &r))
			break;
	}
	return r;
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
	/* ids are the broker's: a new broker (epoch) needs a new look-up */
	if (topic == s->last_topic && s->last_id &&
	    s->last_epoch == load_relaxed(&s->c->topic_epoch) && !strcmp(topic, s->last_name)) {
		h.topic_id = s->last_id;
	} else {
		r = topic_id(s->c, topic, &h.topic_id, &s->last_epoch);
		if (r < 0)
			return r;
		strcpy(s->last_name, topic); /* topic_id() checked its length */
		s->last_topic = topic;
		s->last_id = h.topic_id;
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
	/* the pipe ends with its connection too: then the library redials
	 * and reattaches, and that is no detach (pairs with conn_relink()) */
	if (n == 0 && !load_relaxed(&s->notify_eof) && load_acquire(&s->c->linked)) {
		store_relaxed(&s->notify_eof, 1); /* the fd stays readable: say why */
		if (!stale(s))
			event_emit(s->c, SHMB_EV_DETACHED, s, 0);
	}
}

SHMB_EXPORT int shmb_session_fd(struct shmb_session *s)
{
	struct epoll_event ev = { .events = EPOLLIN };
	struct shmb_client *c = s->c;
	int fd, r = 0;

	pthread_mutex_lock(&c->slock);
	if (s->epfd >= 0) {
		pthread_mutex_unlock(&c->slock);
		return s->epfd;
	}
	fd = epoll_create1(EPOLL_CLOEXEC);
	if (fd < 0)
		r = -errno;
	/* while the connection is down the pipe stays out of the set; the
	 * reattach puts it in (a lost session's at once: it says -ESTALE) */
	else if ((load_acquire(&c->linked) || load_relaxed(&s->lost)) &&
		 epoll_ctl(fd, EPOLL_CTL_ADD, s->notify_rd, &ev) < 0)
		r = -errno;
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		pthread_mutex_unlock(&c->slock);
		return r;
	}
	s->epfd = fd;
	pthread_mutex_unlock(&c->slock);
	/* from now on the broker writes a byte after each delivery; the full
	 * fence pairs with the broker's: flag, then the caller's next look */
	__atomic_fetch_or(&s->txc->client_flags, SHM_CLIENT_POLLER, __ATOMIC_RELAXED);
	fence_full();
	return fd;
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
			return load_relaxed(&s->notify_eof) ? -ENOTCONN : -EAGAIN;
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
	if (rx.topic_id != s->last_rx_id || !s->last_rx_name ||
	    s->last_rx_epoch != load_relaxed(&s->c->topic_epoch)) {
		s->last_rx_epoch = load_relaxed(&s->c->topic_epoch);
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
	struct ctl_try t = { 0 };
	int r;

	while ((r = ctl_enter(c, &t)) == 0) {
		r = rpc_locked(c, &q, sizeof(q), rep, NULL, 0);
		if (!ctl_leave(c, &t, &r))
			break;
	}
	return r;
}

void *client_session_tx_base(struct shmb_session *s, size_t *len, int *fd)
{
	*len = s->tx.len;
	*fd = s->tx.fd;
	return s->tx.base;
}
