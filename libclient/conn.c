/*
 * libclient/conn.c - libshmb's control connection: an instance of the
 * lifecycle machine (lifecycle.md), through a registry of one entry, and
 * the connection thread that carries out what the machine asks.
 *
 * The thread dials, says HELLO, reattaches every open session with its
 * token and its subscriptions (decisions.md 6, 24), arms the redial
 * timer, closes fds, reports events, and watches a live connection for a
 * hang-up.  Application threads send their own requests on the live
 * connection, one at a time (c->lock); they wait for it while it is
 * down, and report one that fails under them to the machine, which tears
 * it down once.  Lock order: client.h.
 *
 * Must never: read from a live connection on the connection thread (it
 * polls for hang-ups only, so it never takes a reply meant for a
 * request); close the control fd anywhere but in CLOSE_FD; wait in the
 * connection thread for something only that thread can bring about; call
 * the event callback with a lock held; let the machine's actions run out
 * of the order of its steps.
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

#include "libclient/client.h"
#include "shm/atomics.h"
#include "shm/futex.h"

__thread struct shmb_client *conn_of_thread;

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
		uint64_t now = clock_mono_ns();
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
int conn_rpc(struct shmb_client *c, int fd, void *req, size_t len, struct proto_reply *rep,
	     int *fds, int nfds_max, uint64_t deadline)
{
	return conn_rpc_buf(c, fd, req, len, rep, sizeof(*rep), fds, nfds_max, deadline);
}

/* The same, for a request whose answer may also be a page of up to rcap
 * bytes (PROTO_LIST_REPLY, checked for its length only). */
int conn_rpc_buf(struct shmb_client *c, int fd, void *req, size_t len, void *rbuf, size_t rcap,
		 int *fds, int nfds_max, uint64_t deadline)
{
	struct proto_reply *rep = rbuf;
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
		struct iovec iov = { .iov_base = rbuf, .iov_len = rcap };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf,
				     .msg_controllen = sizeof(cm.buf) };
		int got = 0;
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
				else
					close(fd1);
			}
		}
		/* events (request id 0) need no answer: staleness is also visible
		 * in shared memory, where every call checks it */
		if ((size_t)n >= sizeof(struct proto_hdr) && rep->h.type == PROTO_EVENT) {
			for (int i = 0; i < got; i++)
				close(fds[i]);
			continue;
		}
		if ((size_t)n >= sizeof(struct proto_list_reply) && rep->h.type == PROTO_LIST_REPLY &&
		    rcap > sizeof(*rep) && rep->h.len == (size_t)n && rep->h.req_id == h->req_id &&
		    !(mh.msg_flags & MSG_TRUNC) && !got)
			return 0;
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
		return 0;
	}
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
	r = conn_rpc(c, fd, &q, sizeof(q), &rep, fds, 3, deadline);
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

		r = client_topic_get_locked(c, fd, s->subs[i]->name, deadline, &te);
		if (transport_error(r))
			return r;
		if (r < 0)
			continue; /* the broker refuses the topic now: nothing to restore */
		sq.topic_id = te->id;
		r = conn_rpc(c, fd, &sq, sizeof(sq), &rep, NULL, 0, deadline);
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
 * client_session_free() waits while some are being told. */
static void conn_emit_pending(struct shmb_client *c)
{
	for (;;) {
		struct shmb_event ev[16];
		unsigned n = 0;

		bool closing;

		pthread_mutex_lock(&c->st);
		closing = c->closing;
		pthread_mutex_unlock(&c->st);
		pthread_mutex_lock(&c->slock);
		for (unsigned i = 0; i < c->nsessions && n < 16; i++) {
			struct shmb_session *s = c->sessions[i];

			if (closing)
				; /* shmb_close() is under way: nobody to tell */
			else if (s->ev_pending & EVP_STALE)
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
			client_event(c, ev[i].kind, ev[i].session, ev[i].count);
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
	r = conn_rpc(c, fd, &hello, sizeof(hello), &rep, NULL, 0, deadline);
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
	if (r == 0) {
		/* everything is in place before the machine says READY, so
		 * whoever it wakes finds it so; if a close came meanwhile,
		 * the machine's CLOSE_FD of fd follows and undoes it */
		lcr_hold(e);
		c->ct.poll_fd = fd;
		c->ct.poll_gen = gen;
		c->ct.poll_e = e;
		c->ct.up = true;
		attempt_ended(c, 0, true);
		conn_relink(c);
		lcr_feed(e, &ev);
	} else {
		/* the machine closes fd: it is the connection's */
		attempt_ended(c, r, false);
		ev.type = LC_HANDSHAKE_FAILED;
		ev.err = r;
		lcr_feed(e, &ev);
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
		client_event(c, SHMB_EV_DISCONNECTED, NULL, 0);
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
		c->ct.timer_due = clock_mono_ns() + a->ns;
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
		uint64_t now = clock_mono_ns();

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
	if (c->ct.timer_e && clock_mono_ns() >= c->ct.timer_due) {
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
		/* shmb_close() fed LC_CLOSE before it set stop: what that
		 * asked for (close the fd, end a dial) is in the queue */
		stop = !got && c->stop;
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
	const char *env = getenv("SHMB_DIR");
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
