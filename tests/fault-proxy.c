/*
 * tests/fault-proxy.c - see fault-proxy.h.  One thread polls the
 * listening socket and both ends of every pair; the mode is read at each
 * turn, so a switch takes effect within one poll timeout (10 ms).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fault-proxy.h"

#define FP_MAX_PAIRS 64

struct pair {
	int down_fd; /* the dialer's connection to us */
	int up_fd;   /* ours to the listener */
};

struct fproxy {
	int lfd;
	uint16_t target;
	pthread_t th;
	pthread_mutex_t lock;
	enum fp_mode mode;
	bool cut_pending, stop;
	uint64_t mode_gen, seen_gen; /* a switch is in force once seen_gen reaches mode_gen */
	pthread_cond_t seen;
	struct pair pairs[FP_MAX_PAIRS];
	unsigned npairs;
	struct fp_stats st;
};

static void pair_close(struct fproxy *p, unsigned i, bool reset)
{
	struct pair *x = &p->pairs[i];

	if (reset) {
		struct linger l = { .l_onoff = 1, .l_linger = 0 };

		setsockopt(x->down_fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
		setsockopt(x->up_fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	}
	close(x->down_fd);
	close(x->up_fd);
	p->pairs[i] = p->pairs[--p->npairs];
}

static int dial(uint16_t port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Move (or drop) what one end has; false when that end is gone. */
static bool pump(struct fproxy *p, int from, int to, bool drop, uint64_t *moved)
{
	char buf[65536];
	ssize_t n = recv(from, buf, sizeof(buf), MSG_DONTWAIT);

	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
		return false;
	if (n < 0)
		return true;
	if (drop) {
		p->st.dropped += (uint64_t)n;
		return true;
	}
	for (ssize_t off = 0; off < n;) {
		ssize_t w = send(to, buf + off, (size_t)(n - off), MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		off += w;
	}
	*moved += (uint64_t)n;
	return true;
}

static void *run(void *arg)
{
	struct fproxy *p = arg;

	for (;;) {
		struct pollfd pf[1 + 2 * FP_MAX_PAIRS];
		unsigned n = 0;
		enum fp_mode m;

		pthread_mutex_lock(&p->lock);
		if (p->stop) {
			while (p->npairs)
				pair_close(p, 0, false);
			pthread_mutex_unlock(&p->lock);
			return NULL;
		}
		if (p->cut_pending) {
			p->st.cut += p->npairs;
			while (p->npairs)
				pair_close(p, 0, p->mode == FP_RESET);
			p->cut_pending = false;
			p->mode = FP_PASS;
		}
		m = p->mode;
		if (p->seen_gen != p->mode_gen) {
			p->seen_gen = p->mode_gen;
			pthread_cond_broadcast(&p->seen);
		}
		pf[n++] = (struct pollfd){ .fd = p->lfd, .events = POLLIN };
		for (unsigned i = 0; i < p->npairs; i++) {
			/* stalled: nothing is read, so nothing moves either way */
			short ev = m == FP_STALL ? 0 : POLLIN;

			pf[n++] = (struct pollfd){ .fd = p->pairs[i].down_fd, .events = ev };
			pf[n++] = (struct pollfd){ .fd = p->pairs[i].up_fd, .events = ev };
		}
		pthread_mutex_unlock(&p->lock);
		if (poll(pf, n, 10) <= 0)
			continue;
		pthread_mutex_lock(&p->lock);
		if (pf[0].revents & POLLIN) {
			int d = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC), u = d >= 0 ? dial(p->target) : -1;

			if (d >= 0 && u >= 0 && p->npairs < FP_MAX_PAIRS) {
				p->pairs[p->npairs++] = (struct pair){ d, u };
				p->st.accepted++;
			} else {
				if (d >= 0)
					close(d);
				if (u >= 0)
					close(u);
			}
		}
		/* pairs are looked at by the poll slots they had; a closed one
		 * moves the last pair into its slot, so go from the end */
		for (unsigned i = (n - 1) / 2; i-- > 0;) {
			short dr = pf[1 + 2 * i].revents, ur = pf[2 + 2 * i].revents;
			bool ok = true;

			if (i >= p->npairs || m == FP_STALL)
				continue;
			if (dr)
				ok = pump(p, p->pairs[i].down_fd, p->pairs[i].up_fd, m == FP_DROP_UP, &p->st.up);
			if (ok && ur)
				ok = pump(p, p->pairs[i].up_fd, p->pairs[i].down_fd, m == FP_DROP_DOWN,
					  &p->st.down);
			if (!ok)
				pair_close(p, i, false);
		}
		pthread_mutex_unlock(&p->lock);
	}
}

struct fproxy *fproxy_start(uint16_t target, uint16_t *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	struct fproxy *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->target = target;
	p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (p->lfd < 0 || bind(p->lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(p->lfd, 16) < 0 ||
	    getsockname(p->lfd, (struct sockaddr *)&a, &len) < 0) {
		if (p->lfd >= 0)
			close(p->lfd);
		free(p);
		return NULL;
	}
	*port = ntohs(a.sin_port);
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->seen, NULL);
	if (pthread_create(&p->th, NULL, run, p) != 0) {
		close(p->lfd);
		free(p);
		return NULL;
	}
	return p;
}

void fproxy_mode(struct fproxy *p, enum fp_mode m)
{
	uint64_t gen;

	pthread_mutex_lock(&p->lock);
	p->mode = m;
	if (m == FP_CLOSE || m == FP_RESET)
		p->cut_pending = true;
	gen = ++p->mode_gen;
	/* in force when this returns: the loop has taken it (and cut, if asked) */
	while (p->seen_gen < gen)
		pthread_cond_wait(&p->seen, &p->lock);
	pthread_mutex_unlock(&p->lock);
}

void fproxy_stats(struct fproxy *p, struct fp_stats *s)
{
	pthread_mutex_lock(&p->lock);
	*s = p->st;
	pthread_mutex_unlock(&p->lock);
}

void fproxy_stop(struct fproxy *p)
{
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->th, NULL);
	close(p->lfd);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->seen);
	free(p);
}
