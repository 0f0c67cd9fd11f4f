/*
 * libclient/conn-handshake.c - the handshake of a new control connection
 * (the machine's HANDSHAKE action, run by the connection thread): HELLO,
 * then every open session reattached with its token and its
 * subscriptions (docs/design/owners.md, docs/design/lifecycle.md), then
 * the poll pipes back in the sessions' epoll sets, sleepers on a session
 * the broker no longer has woken, and the session events told.
 *
 * Must never: give a session a new generation (a reattach keeps the owner
 * and its files, or marks the session lost); take a session the broker
 * says is gone for a failure of the handshake; publish the fd to other
 * threads before every session is reattached; call the event callback
 * with a lock held.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include "libclient/client.h"
#include "libclient/conn-int.h"
#include "shm/atomics.h"
#include "shm/futex.h"

static bool same_file(int a, int b)
{
	struct stat sa, sb;

	return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
	       sa.st_ino == sb.st_ino;
}

/* The broker no longer has s for us: from now on its calls say -ESTALE. */
static void conn_mark_lost(struct shmb_client *c, struct shmb_session *s)
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
static int conn_reattach(struct shmb_client *c, int fd, struct shmb_session *s, uint64_t deadline)
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
		conn_mark_lost(c, s);
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
		conn_mark_lost(c, s);
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
			client_lanes_wake(s);
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
void conn_handshake(struct shmb_client *c, struct lc_entry *e, int fd, uint32_t gen,
		    uint64_t deadline)
{
	struct proto_hello hello = { .h.type = PROTO_HELLO, .version = PROTO_VERSION };
	struct lc_event ev = { .type = LC_HANDSHAKE_DONE, .gen = gen, .fd = -1 };
	struct proto_reply rep;
	int r;

	if (!c->no_lanes)
		hello.flags = PROTO_HELLO_LANES;
	pthread_mutex_lock(&c->lock);
	/* pushes that come during the reattach go to their sessions */
	store_relaxed(&c->lanes, 0);
	r = conn_rpc(c, fd, &hello, sizeof(hello), &rep, NULL, 0, deadline);
	if (r == 0)
		r = rep.err;
	if (r == 0) {
		store_relaxed(&c->lanes, !c->no_lanes && (rep.u.hello.flags & PROTO_HELLO_LANES));
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
				r = conn_reattach(c, fd, c->sessions[i], deadline);
		/* the pushes each reattach brought (the broker sends them right
		 * after its reply), to their sessions now: a session that reads
		 * or writes without waiting would look for them only much later,
		 * and after a broker restart they carry its new wake pages */
		if (r == 0)
			conn_drain_pushes_locked(c, fd);
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
		conn_attempt_ended(c, 0, true);
		conn_relink(c);
		lcr_feed(e, &ev);
	} else {
		/* the machine closes fd: it is the connection's */
		conn_attempt_ended(c, r, false);
		ev.type = LC_HANDSHAKE_FAILED;
		ev.err = r;
		lcr_feed(e, &ev);
	}
	conn_wake_lost(c);
	conn_emit_pending(c);
}
