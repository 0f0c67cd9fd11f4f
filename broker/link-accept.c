/*
 * broker/link-accept.c - the link port (--listen): its listening socket,
 * the accepted connections that have not said which link they are yet
 * (struct link_pending: until their HELLO, 2 s at most), and turning
 * such a connection into its link's connection.
 *
 * Nothing a pending connection says is trusted: its HELLO only names a
 * link, which the key then has to prove (link.c, linkproto.c); until
 * then a stranger's link is provisional and its file is .NAME.new.
 *
 * Must never: let a newcomer that has proved nothing cut a live link;
 * act on a byte of a pending connection before wire.c framed and checked
 * it; leave a pending connection's io_uring poll untagged (gen) when its
 * fd goes.
 */
#include <errno.h>
#include <poll.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/link-int.h"
#include "broker/link.h"
#include "broker/log.h"
#include "shm/clock.h"

/* ---- the listener ---- */

/* Take pending connection i out of the table: the one place a link_pending
 * is freed.  Its fd is the caller's now. */
static int pending_detach(struct broker *b, unsigned i)
{
	struct link_pending *p = b->pending[i];
	int fd = p->fd;

	loop_cancel(b, LINK_OP_PENDING, i, p->gen);
	free(p);
	b->pending[i] = NULL;
	return fd;
}

static void pending_close(struct broker *b, unsigned i, const char *why)
{
	if (why)
		log_msg(LOG_WARNING, "link port: connection from %s refused: %s", b->pending[i]->addr, why);
	close(pending_detach(b, i));
}

/* Refuse with the reason told to the dialer too (an ERROR frame; its side
 * logs it and redials, since nothing here has proved the key yet). */
static void pending_refuse(struct broker *b, unsigned i, int code, const char *why)
{
	struct wire_error e = { .code = code };
	uint8_t fr[WIRE_OVERHEAD + 8 + WIRE_TEXT_MAX];
	int n;

	e.text_len = (uint32_t)snprintf(e.text, sizeof(e.text), "%s", why);
	if (e.text_len > WIRE_TEXT_MAX)
		e.text_len = WIRE_TEXT_MAX;
	n = wire_put_error(fr, sizeof(fr), &e);
	if (n > 0)
		(void)!send(b->pending[i]->fd, fr, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
	pending_close(b, i, why);
}

static void pending_accepted(struct broker *b, int fd)
{
	struct sockaddr_storage a;
	socklen_t al = sizeof(a);
	struct link_pending *p;
	unsigned i;
	int one = 1;

	for (i = 0; i < LINK_PENDING && b->pending[i]; i++)
		;
	p = i < LINK_PENDING ? calloc(1, sizeof(*p)) : NULL;
	if (!p) {
		log_msg(LOG_WARNING, "link port: too many connections saying nothing: one refused");
		close(fd);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (getpeername(fd, (struct sockaddr *)&a, &al) == 0)
		link_addr_text(&a, p->addr, sizeof(p->addr));
	else
		snprintf(p->addr, sizeof(p->addr), "?");
	p->fd = fd;
	p->gen = ++b->pending_gen;
	p->since = clock_mono_ns();
	b->pending[i] = p;
	loop_poll(b, fd, POLLIN, true, LINK_OP_PENDING, i, p->gen);
}

/*
 * Why a connection naming link l (NULL: no such link yet) is refused
 * (-errno, told to the dialer; why says it), or 0.
 */
static int pending_refusal(struct broker *b, const struct link *l, char *why, size_t wl)
{
	uint64_t now, quiet;

	if (!l)
		return 0;
	if (l->role != WIRE_LISTENER) {
		snprintf(why, wl, "it names a link this broker dials");
		return -EINVAL;
	}
	if (l->provisional) {
		snprintf(why, wl, "its link is being set up by another connection");
		return -EADDRINUSE;
	}
	/* a live link is not cut for a newcomer that has proved nothing: a
	 * peer that redialed is let in once the old connection has gone
	 * quiet (a live peer's heartbeats are never this far apart) */
	if (l->lc.state != LC_READY || l->fd < 0)
		return 0;
	now = clock_mono_ns();
	quiet = 2 * b->o.link_heartbeat_ms * NS_PER_MS;
	if (now >= l->last_rx + quiet)
		return 0;
	snprintf(why, wl, "link %s is up and its peer was heard %llu ms ago:"
		 " a second connection under its name waits until it goes quiet"
		 " (two brokers dialing under one name?)",
		 l->name, (unsigned long long)((now > l->last_rx ? now - l->last_rx : 0) / NS_PER_MS));
	return -EADDRINUSE;
}

/* A stranger's link, provisional until the dialer proves the key (NULL:
 * it cannot be made, why says so). */
static struct link *pending_new_link(struct broker *b, const char *name, char *why, size_t wl)
{
	struct link *l;

	if (!link_name_ok(name)) {
		snprintf(why, wl, "a link name that is not [A-Za-z0-9._-]{1,64}");
		return NULL;
	}
	l = link_new(b, name, WIRE_LISTENER);
	if (!l) {
		snprintf(why, wl, "too many links");
		return NULL;
	}
	/* its file has a name of its own until the dialer proves the key */
	l->provisional = true;
	snprintf(l->fname, sizeof(l->fname), ".%s.new", l->name);
	if (link_file_load(b, l, true, why, wl) < 0) {
		link_free(b, l, false);
		return NULL;
	}
	return l;
}

/* Bring l's machine to CONNECTING for a dial-in from addr: false if it
 * cannot take a connection now. */
static bool pending_link_ready(struct broker *b, struct link *l, const char *addr)
{
	/* a link with a connection already: the peer redialed before this side saw the cut */
	if (l->lc.state == LC_READY || l->lc.state == LC_HANDSHAKING) {
		snprintf(l->lp.why, sizeof(l->lp.why), "replaced by a new connection from %s", addr);
		link_lost(b, l, -ECONNRESET);
	}
	if (l->lc.state == LC_IDLE || l->lc.state == LC_BACKOFF)
		link_step(b, l, &(struct lc_event){
			.type = l->lc.state == LC_IDLE ? LC_START : LC_FORCE_RECONNECT,
			.gen = l->lc.gen, .fd = -1 });
	return l->lc.state == LC_CONNECTING;
}

/* Pending connection i becomes l's connection, with the bytes it has read
 * so far (HELLO first) given to l's engine before anything newer. */
static void pending_handover(struct broker *b, unsigned i, struct link *l)
{
	uint8_t buf[sizeof(b->pending[i]->buf)];
	size_t len = b->pending[i]->len;
	size_t room;
	int r;

	snprintf(l->peer_addr, sizeof(l->peer_addr), "%s", b->pending[i]->addr);
	memcpy(buf, b->pending[i]->buf, len);
	l->fd = pending_detach(b, i);
	l->cgen = ++b->link_cgen;
	link_step(b, l, &(struct lc_event){ .type = LC_CONNECTED, .gen = l->lc.gen, .fd = l->fd });
	if (l->dead || l->lc.state != LC_HANDSHAKING)
		return;
	memcpy(lp_in_space(&l->lp, &room), buf, len);
	r = lp_process(&l->lp, len);
	if (r < 0 && r != -EAGAIN) {
		link_proto_error(b, l, r);
		return;
	}
	link_input(b, l);
}

/* Hand an authenticated-to-be connection to its link (by HELLO's name). */
static void pending_to_link(struct broker *b, unsigned i, const struct wire_hello *h)
{
	struct link *l = link_find(b, h->name);
	char why[256];
	int code;

	links_reap(b);
	code = pending_refusal(b, l, why, sizeof(why));
	if (code < 0) {
		pending_refuse(b, i, code, why);
		return;
	}
	if (!l)
		l = pending_new_link(b, h->name, why, sizeof(why));
	if (!l)
		pending_close(b, i, why);
	else if (!pending_link_ready(b, l, b->pending[i]->addr))
		pending_close(b, i, "its link cannot take a connection now");
	else
		pending_handover(b, i, l);
}

static void pending_readable(struct broker *b, unsigned i)
{
	struct link_pending *p = b->pending[i];
	struct wire_hello h;
	enum wire_type t;
	ssize_t k;
	int f;

	k = recv(p->fd, p->buf + p->len, sizeof(p->buf) - p->len, MSG_DONTWAIT);
	if (k == 0) {
		pending_close(b, i, "closed before saying HELLO");
		return;
	}
	if (k < 0) {
		if (errno != EAGAIN && errno != EINTR)
			pending_close(b, i, strerror(errno));
		return;
	}
	p->len += (size_t)k;
	f = wire_frame(p->buf, p->len, &t);
	if (f < 0 || (f == 0 && p->len == sizeof(p->buf))) {
		pending_close(b, i, "not a link protocol frame (garbage, or another protocol)");
		return;
	}
	if (f == 0)
		return;
	if (t != WIRE_HELLO || wire_get_hello(p->buf, (size_t)f, &h) < 0) {
		pending_close(b, i, "its first frame is not a HELLO");
		return;
	}
	if (h.version != WIRE_VERSION) {
		/* said to the peer too, so that its side says so as loudly */
		char why[80];

		snprintf(why, sizeof(why), "link protocol version %u here, %u there", WIRE_VERSION,
			 h.version);
		pending_refuse(b, i, -EPROTONOSUPPORT, why);
		return;
	}
	pending_to_link(b, i, &h);
}

/* ---- the loop's entry points ---- */

void link_accept_cqe(struct broker *b, int res, bool more)
{
	if (res >= 0) {
		pending_accepted(b, res);
	} else if (res == -EMFILE || res == -ENFILE || res == -ENOMEM) {
		/* out of fds: re-arming now would spin; link_run re-arms in
		 * a moment, and this is said once */
		if (!b->link_accept_paused)
			log_msg(LOG_WARNING, "link port: accept: %s: pausing new links",
				strerror(-res));
		b->link_accept_paused = clock_mono_ns();
		return;
	} else if (res != -ECANCELED) {
		log_msg(LOG_WARNING, "link port: accept: %s", strerror(-res));
	}
	if (!more && b->link_listen_fd >= 0 && !b->stopping && !b->link_accept_paused)
		loop_accept(b, b->link_listen_fd, LINK_OP_ACCEPT, 0, 0);
}

void link_accept_pending_cqe(struct broker *b, unsigned a, uint32_t gen, int res, bool more)
{
	if (a < LINK_PENDING && b->pending[a] && b->pending[a]->gen == gen && res >= 0)
		pending_readable(b, a);
	if (!more && a < LINK_PENDING && b->pending[a] && b->pending[a]->gen == gen)
		loop_poll(b, b->pending[a]->fd, POLLIN, true, LINK_OP_PENDING, a, gen);
}

void link_accept_resume(struct broker *b, uint64_t now)
{
	if (b->link_accept_paused && now > b->link_accept_paused &&
	    now - b->link_accept_paused >= 200 * NS_PER_MS && b->link_listen_fd >= 0 && !b->stopping) {
		b->link_accept_paused = 0;
		loop_accept(b, b->link_listen_fd, LINK_OP_ACCEPT, 0, 0);
	}
}

/* a connection that never says HELLO goes after the handshake deadline */
void link_accept_expire(struct broker *b, uint64_t now)
{
	for (unsigned i = 0; i < LINK_PENDING; i++)
		if (b->pending[i] && now > b->pending[i]->since && now - b->pending[i]->since > 2000 * NS_PER_MS)
			pending_close(b, i, "no HELLO within 2 s");
}

uint64_t link_accept_next_due(const struct broker *b)
{
	uint64_t due = UINT64_MAX;

	for (unsigned i = 0; i < LINK_PENDING; i++)
		if (b->pending[i] && b->pending[i]->since + 2000 * NS_PER_MS < due)
			due = b->pending[i]->since + 2000 * NS_PER_MS;
	return due;
}

void link_accept_stop(struct broker *b)
{
	for (unsigned i = 0; i < LINK_PENDING; i++)
		if (b->pending[i])
			pending_close(b, i, NULL);
	if (b->link_listen_fd >= 0)
		close(b->link_listen_fd);
	b->link_listen_fd = -1;
}

/* ---- set-up ---- */

int link_accept_setup(struct broker *b)
{
	char host[256], port[32];
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
	struct addrinfo *ai = NULL;
	int fd, one = 1, r;

	if (link_split_hostport(b->o.listen, host, sizeof(host), port, sizeof(port)) < 0) {
		log_msg(LOG_ERR, "--listen %s: expected HOST:PORT", b->o.listen);
		return -EINVAL;
	}
	r = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
	if (r) {
		log_msg(LOG_ERR, "--listen %s: %s", b->o.listen, gai_strerror(r));
		return -EINVAL;
	}
	r = -1;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0) {
		/*
		 * A broker killed a moment ago leaves its accepted connections
		 * closing (FIN_WAIT) until their peers close too, and until then
		 * the port may refuse a bind even with SO_REUSEADDR: wait for
		 * them, 10 s at most, rather than fail the restart.
		 */
		uint64_t until = clock_mono_ns() + 10000 * NS_PER_MS;
		bool said = false;

		while ((r = bind(fd, ai->ai_addr, ai->ai_addrlen)) < 0 && errno == EADDRINUSE &&
		       clock_mono_ns() < until) {
			if (!said)
				log_msg(LOG_NOTICE, "--listen %s: in use, perhaps by the last run's"
					" closing connections: waiting", b->o.listen);
			said = true;
			usleep(100000);
		}
	}
	if (fd < 0 || r < 0 || listen(fd, 64) < 0) {
		r = -errno;
		log_msg(LOG_ERR, "--listen %s: %s", b->o.listen, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return r;
	}
	freeaddrinfo(ai);
	b->link_listen_fd = fd;
	log_msg(LOG_NOTICE, "links: listening on %s", b->o.listen);
	return 0;
}
