/*
 * libclient/conn-thread.c - the connection thread of a client: it takes
 * the lifecycle machine's actions in the order of the steps that made
 * them (queued by conn.c) and carries them out: dials, runs the handshake
 * (conn-handshake.c), arms the redial timer, closes fds, reports
 * disconnects; while idle it watches the live connection for a hang-up.
 *
 * Must never: read from a live connection (it polls for hang-ups only,
 * so it never takes a reply meant for an application's request); close
 * the control fd anywhere but in CLOSE_FD; wait for something only this
 * thread can bring about; call the event callback with a lock held.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "libclient/client.h"
#include "libclient/conn-int.h"
#include "shm/atomics.h"

__thread struct shmb_client *conn_of_thread;

void conn_attempt_ended(struct shmb_client *c, int err, bool up)
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

/*
 * CLOSE_FD.  The live connection first leaves the epoll sets (else a
 * poller would spin on the EOF its pipes are about to show), then is shut
 * down, so that an application thread waiting in recvmsg() on it returns
 * and lets go of c->lock, then closed under c->lock.
 */
/* Read and drop what is still queued on fd (pushes nobody read), closing
 * the descriptors they brought: a unix socket closed with unread
 * messages is a reset at the other end, and the broker would take an
 * owner's close for a connection error. */
static void drop_queued(int fd)
{
	for (;;) {
		char buf[512];
		union {
			struct cmsghdr h;
			char b[CMSG_SPACE(8 * sizeof(int))];
		} cm;
		struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
				     .msg_controllen = sizeof(cm.b) };

		if (recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) <= 0)
			return;
		for (struct cmsghdr *ch = CMSG_FIRSTHDR(&mh); ch; ch = CMSG_NXTHDR(&mh, ch)) {
			if (ch->cmsg_level != SOL_SOCKET || ch->cmsg_type != SCM_RIGHTS)
				continue;
			for (size_t i = 0; i < (ch->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
				int d;

				memcpy(&d, CMSG_DATA(ch) + i * sizeof(int), sizeof(int));
				close(d);
			}
		}
	}
}

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
	drop_queued(fd);
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
			conn_attempt_ended(c, r, false);
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

		ts = conn_timespec(c->ct.timer_due > now ? c->ct.timer_due - now : 0);
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

void *conn_main(void *arg)
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
