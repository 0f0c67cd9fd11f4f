/*
 * libclient/conn.c - libshmb's control connection as the application
 * threads see it: shmb_connect(), shmb_close(), shmb_reconnect(),
 * shmb_client_info(); the client's instance of the lifecycle machine
 * (docs/design/lifecycle.md), through a registry of one entry, whose
 * actions this file queues for the connection thread (conn-thread.c);
 * and the requests sent on the connection.
 *
 * Application threads send their own requests on the live connection,
 * one at a time (c->lock); they wait for it while it is down, and report
 * one that fails under them to the machine, which tears it down once.
 * The handshake (conn-handshake.c) sends its requests through the same
 * conn_rpc(), with a deadline.  Lock order: client.h.
 *
 * Must never: close the control fd (only the connection thread's
 * CLOSE_FD does); wait in the connection thread for something only that
 * thread can bring about (conn_of_thread says who is calling); let the
 * machine's actions run out of the order of its steps.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "libclient/client.h"
#include "libclient/conn-int.h"
#include "shm/atomics.h"

/* ---- control requests ------------------------------------------------------- */

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
		uint64_t now = clock_mono_ns();
		struct timespec ts;
		bool closing;

		if (now >= deadline)
			return -ETIMEDOUT;
		ts = conn_timespec(deadline - now);
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
int conn_rpc(struct shmb_client *c, int fd, void *req, size_t len, struct proto_reply *rep,
	     int *fds, int nfds_max, uint64_t deadline)
{
	return conn_rpc_buf(c, fd, req, len, rep, sizeof(*rep), fds, nfds_max, deadline);
}

/* Send the request whole: 0 or an error as conn_rpc_buf's. */
static int rpc_send(struct shmb_client *c, int fd, const void *req, size_t len, uint64_t deadline)
{
	int dontwait = deadline ? MSG_DONTWAIT : 0, r;

	for (;;) {
		ssize_t n;

		if (deadline && (r = hs_wait(c, fd, POLLOUT, deadline)) < 0)
			return r;
		n = send(fd, req, len, MSG_NOSIGNAL | dontwait);
		if (n == (ssize_t)len)
			return 0;
		if (n < 0 && (errno == EINTR || (errno == EAGAIN && deadline)))
			continue;
		return -EPIPE;
	}
}

#define RPC_FDS 8 /* the most a message brings (a LANE push: 6) */

/* The fds a message brought (SCM_RIGHTS), at most RPC_FDS (the kernel
 * closes what does not fit).  Returns how many are in fds. */
static int rpc_fds(struct msghdr *mh, int *fds)
{
	int got = 0;

	for (struct cmsghdr *ch = CMSG_FIRSTHDR(mh); ch; ch = CMSG_NXTHDR(mh, ch)) {
		if (ch->cmsg_level != SOL_SOCKET || ch->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < (ch->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int fd1;

			memcpy(&fd1, CMSG_DATA(ch) + i * sizeof(int), sizeof(int));
			if (got < RPC_FDS)
				fds[got++] = fd1;
			else
				close(fd1);
		}
	}
	return got;
}

static void close_fds(const int *fds, int n)
{
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

/* A message that needs no answer: events (staleness is also visible in
 * shared memory, where every call checks it), and the lane pushes, which
 * go to their sessions (or are dropped, fds closed, when this client did
 * not ask for lanes).  true: it was one (fds taken care of). */
static bool rpc_push(struct shmb_client *c, const void *msg, size_t n, int *fds, int got)
{
	const struct proto_hdr *h = msg;

	if (n < sizeof(*h) || (h->type != PROTO_EVENT && h->type != PROTO_LANE &&
			       h->type != PROTO_HOLDER && h->type != PROTO_READER_TOPICS))
		return false;
	if (h->type != PROTO_EVENT && load_relaxed(&c->lanes))
		client_lanes_dispatch(c, msg, n, fds, got);
	else
		close_fds(fds, got);
	return true;
}

static int rpc_buf(struct shmb_client *c, int fd, void *req, size_t len, void *rbuf, size_t rcap,
		   int *fds, int nfds_max, uint64_t deadline, bool opt_fds)
{
	struct proto_reply *rep = rbuf;
	struct proto_hdr *h = req;
	int dontwait = deadline ? MSG_DONTWAIT : 0, r;

	h->req_id = ++c->next_req;
	h->len = (uint32_t)len;
	r = rpc_send(c, fd, req, len, deadline);
	if (r < 0)
		return r;
	for (;;) {
		union {
			struct cmsghdr h;
			char buf[CMSG_SPACE(RPC_FDS * sizeof(int))];
		} cm;
		struct iovec iov = { .iov_base = rbuf, .iov_len = rcap };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf,
				     .msg_controllen = sizeof(cm.buf) };
		int got, all[RPC_FDS];
		ssize_t n;

		if (deadline && (r = hs_wait(c, fd, POLLIN, deadline)) < 0)
			return r;
		n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | dontwait);
		if (n < 0 && (errno == EINTR || (errno == EAGAIN && deadline)))
			continue;
		if (n <= 0)
			return -EPIPE;
		got = rpc_fds(&mh, all);
		if (!(mh.msg_flags & MSG_TRUNC) && rpc_push(c, rbuf, (size_t)n, all, got))
			continue;
		if ((size_t)n >= sizeof(struct proto_list_reply) && rep->h.type == PROTO_LIST_REPLY &&
		    rcap > sizeof(*rep) && rep->h.len == (size_t)n && rep->h.req_id == h->req_id &&
		    !(mh.msg_flags & MSG_TRUNC) && !got)
			return 0;
		if ((size_t)n != sizeof(*rep) || rep->h.type != PROTO_REPLY ||
		    rep->h.req_id != h->req_id || (mh.msg_flags & MSG_TRUNC) || got > nfds_max) {
			close_fds(all, got);
			return -EPROTO;
		}
		if (rep->err < 0 || got < nfds_max) {
			close_fds(all, got);
			if (rep->err == 0 && !(opt_fds && got == 0))
				return -EPROTO; /* an open without its fds */
			return 0;
		}
		if (got)
			memcpy(fds, all, (size_t)got * sizeof(int));
		return 0;
	}
}

/* The same, for a request whose answer may also be a page of up to rcap
 * bytes (PROTO_LIST_REPLY, checked for its length only). */
int conn_rpc_buf(struct shmb_client *c, int fd, void *req, size_t len, void *rbuf, size_t rcap,
		 int *fds, int nfds_max, uint64_t deadline)
{
	return rpc_buf(c, fd, req, len, rbuf, rcap, fds, nfds_max, deadline, false);
}

int conn_rpc_opt_fds(struct shmb_client *c, void *req, size_t len, struct proto_reply *rep,
		     int *fds, int nfds_max)
{
	int r = rpc_buf(c, c->fd, req, len, rep, sizeof(*rep), fds, nfds_max, 0, true);

	return r < 0 ? r : rep->err;
}

/* The pushes waiting on fd, to their sessions (c->lock held: no request
 * is in flight, so only pushes can be there). */
static void drain_locked(struct shmb_client *c, int fd)
{
	while (fd >= 0) {
		union {
			struct proto_lane lane;
			struct proto_holder holder;
			struct proto_reader_topics topics;
			struct proto_reply rep;
		} m;
		union {
			struct cmsghdr h;
			char buf[CMSG_SPACE(RPC_FDS * sizeof(int))];
		} cm;
		struct iovec iov = { .iov_base = &m, .iov_len = sizeof(m) };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf,
				     .msg_controllen = sizeof(cm.buf) };
		int all[RPC_FDS], got;
		/* no request is in flight (c->lock): only pushes can be there;
		 * an EOF is the connection thread's to see */
		ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);

		if (n <= 0)
			break;
		got = rpc_fds(&mh, all);
		if ((mh.msg_flags & MSG_TRUNC) || !rpc_push(c, &m, (size_t)n, all, got))
			close_fds(all, got);
	}
}

bool conn_drain_pushes(struct shmb_client *c)
{
	if (!load_relaxed(&c->lanes) || pthread_mutex_trylock(&c->lock))
		return false;
	drain_locked(c, c->fd);
	pthread_mutex_unlock(&c->lock);
	return true;
}

void conn_drain_pushes_locked(struct shmb_client *c, int fd)
{
	if (load_relaxed(&c->lanes))
		drain_locked(c, fd);
}

/* An application's request on the live connection (c->lock held). */
int conn_rpc_locked(struct shmb_client *c, void *req, size_t len, struct proto_reply *rep, int *fds,
		    int nfds_max)
{
	int r = conn_rpc(c, c->fd, req, len, rep, fds, nfds_max, 0);

	return r < 0 ? r : rep->err;
}

/* ---- the machine's entry ------------------------------------------------------ */

/*
 * The client's machine, held for the caller.  After a permanent failure
 * the registry has dropped it, and this starts a fresh one
 * (docs/design/lifecycle.md: the next request starts fresh).
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

/* Wait until the connection is up: 0, -ENOTCONN, or a permanent error. */
static int conn_wait(struct shmb_client *c, uint64_t deadline)
{
	struct lc_entry *e;
	uint64_t now = clock_mono_ns();
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
int conn_enter(struct shmb_client *c, struct conn_try *t)
{
	if (!t->deadline)
		t->deadline = clock_mono_ns() + c->ctl_timeout_ns;
	for (;;) {
		int r = conn_wait(c, t->deadline);

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
		if (clock_mono_ns() >= t->deadline || conn_of_thread == c)
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
bool conn_leave(struct shmb_client *c, struct conn_try *t, int *r)
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

/* ---- connect, close, reconnect, info ------------------------------------------------ */

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
	return ms ? (uint64_t)ms * NS_PER_MS : dflt;
}

/* Everything but the thread and the dial; shmb_close() undoes any part. */
static int client_init(struct shmb_client *c, const struct shmb_connect_opts *o)
{
	const char *env = getenv("SHMB_DIR"), *lanes = getenv("SHMB_LANES");
	const char *dir = o->dir ? o->dir : env && *env ? env : NULL; /* empty: unset */
	struct lc_opts lo = {
		.base_ns = ms_or(o->redial_base_ms, 100 * NS_PER_MS),
		.cap_ns = ms_or(o->redial_cap_ms, 2000 * NS_PER_MS),
		.connect_timeout_ns = ms_or(o->connect_timeout_ms, 2000 * NS_PER_MS),
		.handshake_timeout_ns = ms_or(o->handshake_timeout_ms, 2000 * NS_PER_MS),
		.skip_resolve = true,
	};
	struct lc_clock clock = { lc_clock_mono, clock_random, c };
	size_t n = 0;

	c->fd = -1;
	c->evfd = -1;
	c->ct.poll_fd = -1;
	c->topic_epoch = 1;
	/* the direct data path where the broker runs it, unless told not to */
	c->no_lanes = lanes && !strcmp(lanes, "0");
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
			    : ms_or((unsigned)o->control_timeout_ms, 5000 * NS_PER_MS);
	if (getrandom(&c->rng, sizeof(c->rng), GRND_NONBLOCK) != sizeof(c->rng))
		c->rng = clock_mono_ns() ^ (uintptr_t)c;
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
	r = lcr_wait(e, wait_ms < 0 ? FOREVER_NS : (uint64_t)wait_ms * NS_PER_MS);
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

SHMB_EXPORT void shmb_close(struct shmb_client *c)
{
	if (!c)
		return;
	if (c->thread_started) {
		struct lc_event ev = { .type = LC_CLOSE, .fd = -1 };
		struct lc_entry *e;

		/* closing first: from now on no event is told, and a handshake
		 * under way gives up */
		pthread_mutex_lock(&c->st);
		c->closing = true;
		e = c->entry;
		pthread_mutex_unlock(&c->st);
		evfd_kick(c);
		/* what the close asks for is queued before the thread may stop */
		if (e)
			lcr_feed(e, &ev);
		pthread_mutex_lock(&c->st);
		c->stop = true;
		pthread_mutex_unlock(&c->st);
		evfd_kick(c);
		pthread_join(c->thread, NULL);
	}
	client_lanes_waker_stop(c);
	/* the connection is closed: the broker detached them all at once */
	while (c->nsessions)
		client_session_free(c->sessions[--c->nsessions]);
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
	i->backoff_ms = (uint32_t)(c->backoff_ns / NS_PER_MS);
	i->broker_id = c->info_broker_id;
	pthread_mutex_unlock(&c->st);
	lcr_snapshot(e, &m);
	lcr_put(e);
	/* up, and every session reattached (pairs with conn_relink()) */
	i->connected = m.state == LC_READY && load_acquire(&c->linked);
	i->attempt_gen = before + m.gen;
	i->failures = m.failures;
	if (m.state != LC_BACKOFF)
		i->backoff_ms = 0;
	return 0;
}
