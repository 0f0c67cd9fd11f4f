/*
 * broker/link-dial.c - the dialer's side of a link: the address is
 * resolved again before every attempt (in a short-lived thread, so a slow
 * resolver never holds the loop; its answer comes back through a pipe),
 * the connect is non-blocking with the machine's deadline, and --link
 * NAME=HOST:PORT makes the dialers' links at start.
 *
 * Must never: block the loop on a resolver or a connect; let a resolver
 * thread touch the broker (it only writes its answer to the pipe, and
 * takes no signal); take an answer or a completion for a dial that is
 * over (slot and generation, cgen, say which); end a link for good for a
 * network error (dial_err).
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/link-int.h"
#include "broker/link.h"
#include "broker/log.h"

/* ---- resolving ---- */

struct resolve_req {
	char host[256], port[32];
	unsigned slot;
	uint32_t gen;
	int err;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	int wr;
};

static void *resolver(void *arg)
{
	struct resolve_req *q = arg;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG };
	struct addrinfo *ai = NULL;
	int r = getaddrinfo(q->host, q->port, &hints, &ai);

	if (r == 0 && ai && ai->ai_addrlen <= sizeof(q->addr)) {
		memcpy(&q->addr, ai->ai_addr, ai->ai_addrlen);
		q->addrlen = ai->ai_addrlen;
	} else {
		q->err = r == EAI_NONAME ? -EHOSTUNREACH : r == EAI_SYSTEM ? -errno : -EAGAIN;
		if (!q->err)
			q->err = -EHOSTUNREACH;
	}
	if (ai)
		freeaddrinfo(ai);
	/* a pointer is written whole to a pipe (PIPE_BUF) */
	if (write(q->wr, &q, sizeof(q)) != sizeof(q))
		free(q);
	return NULL;
}

/*
 * A dial that failed, as the machine should see it: the network's answers
 * (EACCES from a prohibit route or a firewall, EINVAL from a blackhole,
 * EPERM) pass; only the protocol's own refusals end a link for good.  The
 * system's errno is kept for the log.
 */
static int dial_err(struct link *l, int err)
{
	l->dial_err = err;
	return lc_permanent(err) ? -ENETUNREACH : err;
}

void link_dial_resolve(struct broker *b, struct link *l, uint32_t gen)
{
	struct resolve_req *q = calloc(1, sizeof(*q));
	pthread_attr_t at;
	pthread_t t;
	sigset_t all, old;
	int r;

	if (!q) {
		link_step(b, l, &(struct lc_event){ .type = LC_RESOLVE_FAILED, .gen = gen,
						    .err = dial_err(l, -ENOMEM), .fd = -1 });
		return;
	}
	snprintf(q->host, sizeof(q->host), "%s", l->host);
	snprintf(q->port, sizeof(q->port), "%s", l->port);
	q->slot = l->slot;
	q->gen = gen;
	q->wr = b->resolve_wr;
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&at, 256 * 1024);
	/* the thread takes no signal of the broker's */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&t, &at, resolver, q);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&at);
	if (r) {
		free(q);
		link_step(b, l, &(struct lc_event){ .type = LC_RESOLVE_FAILED, .gen = gen,
						    .err = dial_err(l, -r), .fd = -1 });
	}
}

/* A resolver thread's answer, to its link if that still waits for it. */
static void resolved(struct broker *b, const struct resolve_req *q)
{
	struct link *l = q->slot < BROKER_MAX_LINKS ? b->links[q->slot] : NULL;

	if (!l || l->lc.state != LC_RESOLVING || l->lc.gen != q->gen)
		return; /* a dial that is over */
	if (!q->err) {
		memcpy(&l->addr, &q->addr, q->addrlen);
		l->addrlen = q->addrlen;
	}
	link_step(b, l, &(struct lc_event){ .type = q->err ? LC_RESOLVE_FAILED : LC_RESOLVED,
					    .gen = q->gen, .err = q->err ? dial_err(l, q->err) : 0,
					    .fd = -1 });
}

/* The resolver threads' pipe is readable: every answer in it (each a
 * pointer, written whole), then the poll again unless it is multishot. */
void link_dial_resolver_cqe(struct broker *b, bool more)
{
	struct resolve_req *q;

	while (read(b->resolve_rd, &q, sizeof(q)) == sizeof(q)) {
		resolved(b, q);
		free(q);
	}
	if (!more)
		loop_poll(b, b->resolve_rd, POLLIN, true, LINK_OP_RESOLVE, 0, 0);
}

/* ---- connecting ---- */

void link_dial_connect(struct broker *b, struct link *l, uint32_t gen, uint64_t deadline)
{
	int fd, one = 1;

	l->dial_err = 0;
	if (l->role == WIRE_LISTENER)
		return; /* waiting for the peer to dial in: no deadline */
	fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		link_step(b, l, &(struct lc_event){ .type = LC_CONNECT_FAILED, .gen = gen,
						    .err = dial_err(l, -errno), .fd = -1 });
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	link_addr_text(&l->addr, l->peer_addr, sizeof(l->peer_addr));
	if (connect(fd, (struct sockaddr *)&l->addr, l->addrlen) < 0 && errno != EINPROGRESS) {
		int e = -errno;

		close(fd);
		link_step(b, l, &(struct lc_event){ .type = LC_CONNECT_FAILED, .gen = gen,
						    .err = dial_err(l, e), .fd = -1 });
		return;
	}
	/* writable: connected (or failed: SO_ERROR says) */
	l->fd = fd;
	l->cgen = ++b->link_cgen;
	l->deadline = deadline;
	loop_poll(b, fd, POLLOUT, false, LINK_OP_CONNECT, l->slot, l->cgen);
}

/* A dial's socket is writable: connected, or failed (SO_ERROR says). */
void link_dial_connect_cqe(struct broker *b, struct link *l, int res)
{
	int err = 0;
	socklen_t el = sizeof(err);

	l->deadline = 0;
	if (res < 0 || getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err) {
		int e = err ? -err : res < 0 ? res : -errno;

		link_fd_close(b, l);
		link_step(b, l, &(struct lc_event){ .type = LC_CONNECT_FAILED, .gen = l->lc.gen,
						    .err = dial_err(l, e), .fd = -1 });
		return;
	}
	link_step(b, l, &(struct lc_event){ .type = LC_CONNECTED, .gen = l->lc.gen, .fd = l->fd });
}

/* ---- set-up ---- */

int link_split_hostport(const char *s, char *host, size_t hl, char *port, size_t pl)
{
	const char *colon = strrchr(s, ':');
	size_t n;

	if (!colon || !colon[1] || strlen(colon + 1) >= pl)
		return -EINVAL;
	n = (size_t)(colon - s);
	if (n && s[0] == '[' && s[n - 1] == ']') {
		s++;
		n -= 2;
	}
	if (n >= hl)
		return -EINVAL;
	memcpy(host, s, n);
	host[n] = 0;
	snprintf(port, pl, "%s", colon + 1);
	return 0;
}

/* The dialers' links, from --link NAME=HOST:PORT, and the pipe their
 * resolver threads answer through. */
int link_dial_setup(struct broker *b)
{
	char why[200];
	int fds[2], r;

	if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0)
		return -errno;
	b->resolve_rd = fds[0];
	b->resolve_wr = fds[1];
	for (unsigned i = 0; i < b->o.nlink_spec; i++) {
		char *spec = b->o.link_spec[i], *eq = strchr(spec, '=');
		char name[WIRE_NAME_MAX + 2];
		struct link *l;

		if (!eq || (size_t)(eq - spec) > WIRE_NAME_MAX) {
			log_msg(LOG_ERR, "--link %s: expected NAME=HOST:PORT", spec);
			return -EINVAL;
		}
		memcpy(name, spec, (size_t)(eq - spec));
		name[eq - spec] = 0;
		if (!link_name_ok(name) || link_find(b, name)) {
			log_msg(LOG_ERR, "--link %s: a link name is [A-Za-z0-9._-]{1,64}, once", spec);
			return -EINVAL;
		}
		l = link_new(b, name, WIRE_DIALER);
		if (!l)
			return -ENOMEM;
		if (link_split_hostport(eq + 1, l->host, sizeof(l->host), l->port, sizeof(l->port)) < 0 ||
		    !l->host[0]) {
			log_msg(LOG_ERR, "--link %s: expected NAME=HOST:PORT", spec);
			return -EINVAL;
		}
		r = link_file_load(b, l, false, why, sizeof(why));
		if (r == -ENOENT)
			r = link_file_load(b, l, true, why, sizeof(why));
		if (r < 0) {
			log_msg(LOG_ERR, "%s", why);
			return r;
		}
		if (l->f->w || l->f->routed)
			link_event(l, LOG_NOTICE, "back from links/ (%llu bytes sent, %llu routed by the"
				   " peer, %llu of the peer's routed here)",
				   (unsigned long long)l->f->w, (unsigned long long)l->f->acked,
				   (unsigned long long)l->f->routed);
	}
	return 0;
}
