/*
 * broker/link.c - remote links (issue 6, docs/links.md): brokers on two
 * hosts forward the bridged topics to each other over TCP, and a cut,
 * reset or stalled network, or a broker restart, loses nothing.
 *
 * Each link is one instance of the lifecycle machine (libclient/
 * lifecycle.c), driven from the broker's io_uring loop: a dialer resolves
 * and connects (link-dial.c), the handshake has a deadline, back-off is
 * the machine's.  A listener's link uses the same machine: its "connect"
 * is waiting for the peer to dial in (link-accept.c), and it never gives
 * up for good (a wrong key from a stranger must not kill a link).
 *
 * The protocol is linkproto.c's; this file moves its bytes.  Each link's
 * replay ring and counters live in links/NAME (mapped, link-file.c), so a
 * restarted broker picks up where it stopped: the peer's routed count
 * decides what is sent again, and the subscribers' delivery tables drop
 * what a crash sent twice.  What the bytes carry (bridged topics, the
 * messages each way) is link-data.c's.
 *
 * The module is link.c, link-data.c, link-dial.c, link-file.c and
 * link-accept.c; link-int.h is what they share, broker.h what the rest of
 * the broker sees.
 *
 * Only locally published messages are offered to links (router.c): one
 * hop, so two brokers bridging each other never loop.
 *
 * Must never: trust a byte from the network before linkproto checked it;
 * advance `routed` in the file before the deliveries are committed;
 * leave an fd's io_uring requests untagged (cgen) when the fd goes.
 */
#include <errno.h>
#include <arpa/inet.h>
#include <assert.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "broker/broker.h"
#include "broker/link-int.h"
#include "broker/link.h"
#include "shm/segment.h"
#include "broker/log.h"
#include "broker/router.h"
#include "shm/atomics.h"
#include "shm/clock.h"

/* ---- events, for the log and shmbctl links ---- */

void link_event(struct link *l, int level, const char *fmt, ...)
{
	struct log_event *e = &l->ev[l->nev++ % LINK_EVENTS];
	va_list ap;

	va_start(ap, fmt);
	log_event_put(e, fmt, ap);
	va_end(ap);
	log_msg(level, "link %s: %s", l->name, e->text);
}

static const char *err_text(int err)
{
	switch (-err) {
	case ETIMEDOUT: return "timed out";
	case EBADMSG: return "a corrupt frame";
	case ECONNRESET: return "connection reset";
	case EPIPE: return "connection closed";
	default: return strerror(-err);
	}
}

/* ---- link objects ---- */

static uint32_t clock_random(void *arg)
{
	(void)arg;
	return randombytes_random();
}

static struct wire_topics my_topics;

/* Cancel every request of l's current connection (its completions come
 * back -ECANCELED, or are recognised as stale by their cgen). */
static void link_cancel_io(struct broker *b, const struct link *l)
{
	loop_cancel(b, LINK_OP_CONNECT, l->slot, l->cgen);
	loop_cancel(b, LINK_OP_IN, l->slot, l->cgen);
	loop_cancel(b, LINK_OP_OUT, l->slot, l->cgen);
}

struct link *link_new(struct broker *b, const char *name, enum wire_role role)
{
	struct lc_opts lo = { .skip_resolve = role == WIRE_LISTENER };
	struct lc_clock ck = { lc_clock_mono, clock_random, NULL };
	struct link *l;
	unsigned slot;

	for (slot = 0; slot < BROKER_MAX_LINKS && b->links[slot]; slot++)
		;
	if (slot == BROKER_MAX_LINKS)
		return NULL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->b = b;
	l->slot = slot;
	l->fd = l->filefd = -1;
	l->role = role;
	snprintf(l->name, sizeof(l->name), "%s", name);
	snprintf(l->fname, sizeof(l->fname), "%s", name);
	if (lc_init(&l->lc, &lo, &ck) < 0 || lp_init(&l->lp, role, name, b->broker_id, b->link_key, 0) < 0) {
		free(l);
		return NULL;
	}
	l->lp.ops = (struct lp_ops){ .deliver = link_deliver, .topics = link_topics, .arg = l };
	l->lp.topics = &my_topics;
	b->links[slot] = l;
	return l;
}

void link_free(struct broker *b, struct link *l, bool remove)
{
	if (l->fd >= 0) {
		link_cancel_io(b, l);
		close(l->fd);
	}
	lp_free(&l->lp);
	link_file_close(b, l, remove);
	b->links[l->slot] = NULL;
	free(l->sent);
	free(l);
}

struct link *link_find(struct broker *b, const char *name)
{
	for (unsigned i = 0; i < BROKER_MAX_LINKS; i++)
		if (b->links[i] && !b->links[i]->dead && !strcmp(b->links[i]->name, name))
			return b->links[i];
	return NULL;
}

/* Free the links that died (a stranger's, refused): callers are done with them. */
void links_reap(struct broker *b)
{
	for (unsigned i = 0; i < BROKER_MAX_LINKS; i++)
		if (b->links[i] && b->links[i]->dead)
			link_free(b, b->links[i], true);
}

/* ---- shmbctl links (ctl.c asks) ---- */

struct link *link_named(struct broker *b, const char *name)
{
	struct link *l = link_find(b, name);

	/* one still proving who it is does not exist yet */
	return l && !l->provisional ? l : NULL;
}

static_assert(WIRE_NAME_MAX == PROTO_LINK_NAME_MAX, "link names: one limit");
static_assert(sizeof(((struct link *)0)->peer_addr) <= sizeof(((struct proto_link_info *)0)->peer),
	      "link info peer");
static_assert(sizeof(((struct link *)0)->reason) <= sizeof(((struct proto_link_info *)0)->reason),
	      "link info reason");

void link_info(const struct broker *b, const struct link *l, struct proto_link_info *i, uint64_t now)
{
	const char *state = lc_state_name(l->lc.state);
	size_t n = 0;

	memset(i, 0, sizeof(*i));
	/* a listener "connects" by waiting for its peer to dial in; one back
	 * from links/ waits too, before its first dial-in starts its machine */
	if (l->role == WIRE_LISTENER && (l->lc.state == LC_CONNECTING || l->lc.state == LC_IDLE))
		state = "waiting";
	i->slot = l->slot;
	i->generation = l->lc.gen;
	i->failures = l->lc.failures;
	i->backoff_ms = l->backoff_ns / NS_PER_MS;
	if (l->lc.state == LC_BACKOFF && l->timer_at > now)
		i->retry_ms = (l->timer_at - now + NS_PER_MS - 1) / NS_PER_MS;
	if (l->lc.state == LC_READY && now > l->last_rx)
		i->idle_ms = (now - l->last_rx) / NS_PER_MS;
	i->sent = l->lp.tx.w;
	i->acked = l->lp.tx.acked;
	i->replayed = l->lp.replayed;
	i->received = l->lp.routed;
	i->msgs_out = l->msgs_out;
	i->msgs_in = l->msgs_in;
	i->no_topic = l->no_topic;
	i->wire_out = l->wire_out;
	i->wire_in = l->wire_in;
	i->connects = l->connects;
	i->peer_broker = l->f ? l->f->peer_broker : l->lp.peer_broker;
	i->events = l->nev;
	i->created_ns = l->f ? l->f->created_ns : 0;
	snprintf(i->name, sizeof(i->name), "%s", l->name);
	snprintf(i->role, sizeof(i->role), "%s", l->role == WIRE_DIALER ? "dialer" : "listener");
	snprintf(i->state, sizeof(i->state), "%s", state);
	if (l->role == WIRE_DIALER)
		snprintf(i->address, sizeof(i->address), strchr(l->host, ':') ? "[%s]:%s" : "%s:%s",
			 l->host, l->port);
	else
		snprintf(i->address, sizeof(i->address), "%s", b->o.listen ? b->o.listen : "");
	snprintf(i->peer, sizeof(i->peer), "%s", l->peer_addr);
	snprintf(i->reason, sizeof(i->reason), "%s", l->reason);
	if (!l->f)
		return;
	i->npeer_topics = l->f->peer_topics.n;
	/* whole names only: what is listed is exact, npeer_topics says if some did not fit */
	for (unsigned k = 0; k < l->f->peer_topics.n && k < WIRE_TOPICS_MAX; k++) {
		const char *t = l->f->peer_topics.name[k];
		size_t tl = strnlen(t, WIRE_TOPIC_MAX);

		if (n + !!n + tl >= sizeof(i->peer_topics))
			break;
		if (n)
			i->peer_topics[n++] = ' ';
		memcpy(i->peer_topics + n, t, tl);
		n += tl;
	}
}

/* ---- the machine's actions ---- */

void link_fd_close(struct broker *b, struct link *l)
{
	if (l->fd < 0)
		return;
	link_cancel_io(b, l);
	close(l->fd);
	l->fd = -1;
	l->cgen = ++b->link_cgen;
	l->in_armed = l->out_armed = false;
	l->stalled = l->more_in = false;
	l->deadline = 0;
}

void link_addr_text(const struct sockaddr_storage *a, char *out, size_t n)
{
	char h[64] = "?";
	unsigned port = 0;

	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *s = (const void *)a;

		inet_ntop(AF_INET, &s->sin_addr, h, sizeof(h));
		port = ntohs(s->sin_port);
		snprintf(out, n, "%s:%u", h, port);
	} else if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const void *)a;

		inet_ntop(AF_INET6, &s->sin6_addr, h, sizeof(h));
		port = ntohs(s->sin6_port);
		snprintf(out, n, "[%s]:%u", h, port);
	} else {
		snprintf(out, n, "?");
	}
}

static void link_flush(struct broker *b, struct link *l);

static void act_handshake(struct broker *b, struct link *l, uint64_t deadline)
{
	int r = lp_connected(&l->lp);

	l->deadline = deadline;
	if (r < 0) {
		link_step(b, l, &(struct lc_event){ .type = LC_HANDSHAKE_FAILED, .gen = l->lc.gen, .err = r, .fd = -1 });
		return;
	}
	l->connects++;
	l->last_rx = l->last_ping = clock_mono_ns();
	loop_poll(b, l->fd, POLLIN, true, LINK_OP_IN, l->slot, l->cgen);
	l->in_armed = true;
	link_flush(b, l);
}

static void act_monitor(struct link *l, const struct lc_action *a)
{
	switch (a->mon) {
	case LC_MON_ATTEMPTING:
		if (l->role == WIRE_DIALER)
			link_event(l, LOG_INFO, "dialing %s:%s (attempt %u)", l->host, l->port, a->gen);
		break;
	case LC_MON_CONNECT_FAILED:
		link_event(l, LOG_WARNING, "connect to %s:%s failed: %s", l->host, l->port,
			   err_text(l->dial_err ? l->dial_err : (int)a->detail));
		break;
	case LC_MON_CONNECTED:
		link_event(l, LOG_INFO, "connected %s %s", l->role == WIRE_DIALER ? "to" : "from",
			   l->peer_addr);
		break;
	case LC_MON_HANDSHAKE_SUCCEEDED:
		link_event(l, LOG_NOTICE, "up (%s, generation %u): %llu bytes replayed so far,"
			   " peer has routed %llu of %llu sent", l->peer_addr, a->gen,
			   (unsigned long long)l->lp.replayed, (unsigned long long)l->lp.peer_routed,
			   (unsigned long long)l->lp.tx.w);
		break;
	case LC_MON_HANDSHAKE_FAILED:
		link_event(l, LOG_WARNING, "handshake failed: %s", l->lp.why[0] ? l->lp.why : err_text((int)a->detail));
		break;
	case LC_MON_DISCONNECTED:
		snprintf(l->reason, sizeof(l->reason), "%s",
			 l->lp.why[0] ? l->lp.why : err_text((int)a->detail));
		link_event(l, LOG_WARNING, "down: %s", l->reason);
		break;
	case LC_MON_BACKOFF:
		l->backoff_ns = (uint64_t)a->detail;
		if (l->role == WIRE_DIALER)
			link_event(l, LOG_INFO, "redial in %llu ms", (unsigned long long)(a->detail / (int64_t)NS_PER_MS));
		break;
	case LC_MON_FAILED:
		link_event(l, LOG_ERR, "FAILED for good: %s; fix the cause (a wrong key: the key files"
			   " must be the same on both hosts, compare their sha256sum) and restart this broker",
			   l->lp.why[0] ? l->lp.why : err_text((int)a->detail));
		break;
	default:
		break;
	}
}

void link_step(struct broker *b, struct link *l, const struct lc_event *ev)
{
	struct lc_action acts[LC_MAX_ACTS];
	unsigned n;
	enum lc_state before = l->lc.state;

	if (lc_step(&l->lc, ev) < 0)
		return;
	n = l->lc.nact;
	memcpy(acts, l->lc.act, n * sizeof(*acts));
	for (unsigned i = 0; i < n; i++) {
		const struct lc_action *a = &acts[i];

		switch (a->type) {
		case LC_ACT_RESOLVE:
			link_dial_resolve(b, l, a->gen);
			break;
		case LC_ACT_CONNECT:
			link_dial_connect(b, l, a->gen, a->ns);
			break;
		case LC_ACT_HANDSHAKE:
			act_handshake(b, l, a->ns);
			break;
		case LC_ACT_TIMER:
			l->timer_at = clock_mono_ns() + a->ns;
			if (!l->timer_at)
				l->timer_at = 1;
			break;
		case LC_ACT_CLOSE_FD:
			if (a->fd == l->fd)
				link_fd_close(b, l);
			else if (a->fd >= 0)
				close(a->fd);
			break;
		case LC_ACT_ABORT:
			link_fd_close(b, l);
			link_step(b, l, &(struct lc_event){ .type = LC_ABORTED, .gen = a->gen, .fd = -1 });
			break;
		case LC_ACT_MONITOR:
			act_monitor(l, a);
			break;
		case LC_ACT_WAKE:
			break;
		}
	}
	if ((before == LC_FAILED) != (l->lc.state == LC_FAILED))
		link_topics_recompute(b);
}

/*
 * This connection is over.  Temporary errors redial (and replay);
 * permanent ones (wrong key, gap, other version) end a dialer's link for
 * good.  A listener never gives up: the next dial-in is tried afresh.
 */
void link_lost(struct broker *b, struct link *l, int err)
{
	struct lc_event ev = { .gen = l->lc.gen, .fd = -1 };

	if (l->lp.state == LP_FAILED && !lc_permanent(err))
		err = -EPROTO;
	if (l->lp.state != LP_FAILED && lc_permanent(err))
		err = -EBADMSG; /* a dropped connection, not a refusal */
	if (l->role == WIRE_LISTENER && lc_permanent(err))
		err = -ECONNREFUSED;
	ev.err = err;
	if (l->lc.state == LC_READY) {
		ev.type = LC_IO_ERROR;
	} else if (l->lc.state == LC_HANDSHAKING) {
		ev.type = LC_HANDSHAKE_FAILED;
	} else if (l->lc.state == LC_CONNECTING) {
		ev.type = LC_CONNECT_FAILED;
		link_fd_close(b, l);
	} else {
		link_fd_close(b, l);
		return;
	}
	link_step(b, l, &ev);
	link_fd_close(b, l);
	if (l->provisional) {
		/* a stranger's HELLO made it: nothing of it is kept (freed by
		 * links_reap, once every caller up the stack is done with it) */
		if (!l->dead)
			log_msg(LOG_WARNING, "link %s: a dial-in from %s refused: %s", l->name,
				l->peer_addr, l->lp.why[0] ? l->lp.why : err_text(err));
		l->dead = true;
		return;
	}
	/* a new connection starts a clean engine, keeping the counters */
	if (l->lp.state == LP_FAILED && l->role == WIRE_LISTENER)
		l->lp.state = LP_IDLE;
	l->lp.why[0] = 0;
}

/* ---- I/O ---- */

static void link_flush(struct broker *b, struct link *l)
{
	for (;;) {
		size_t n;
		const uint8_t *p = lp_output(&l->lp, &n);
		ssize_t k;

		if (!n || l->fd < 0)
			return;
		if (l->lc.state != LC_HANDSHAKING && l->lc.state != LC_READY)
			return;
		k = send(l->fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (k > 0) {
			lp_sent(&l->lp, (size_t)k);
			l->wire_out += (uint64_t)k;
			continue;
		}
		if (k < 0 && (errno == EAGAIN || errno == EINTR)) {
			if (!l->out_armed) {
				loop_poll(b, l->fd, POLLOUT, false, LINK_OP_OUT, l->slot, l->cgen);
				l->out_armed = true;
			}
			return;
		}
		link_lost(b, l, k < 0 ? -errno : -EPIPE);
		return;
	}
}

/* Before a connection goes for an error of the protocol's: what is queued
 * (an ERROR saying why, the AUTH before it) goes out if the socket takes
 * it now, so the peer can say the same in its log. */
void link_flush_last(struct link *l)
{
	size_t n;
	const uint8_t *p = lp_output(&l->lp, &n);

	if (n && l->fd >= 0)
		(void)!send(l->fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* After input: commit deliveries, then count them routed in the file. */
void link_input_done(struct broker *b, struct link *l)
{
	router_commit(b);
	l->batch_broker = l->batch_src = 0;
	store_release(&l->f->routed, l->lp.routed);
	store_release(&l->f->acked, l->lp.tx.acked);
}

static void handshake_check(struct broker *b, struct link *l)
{
	if (l->lc.state == LC_HANDSHAKING && l->lp.state == LP_READY) {
		bool was = l->provisional;

		if (!l->f->peer_broker || l->f->peer_broker != l->lp.peer_broker)
			l->f->peer_broker = l->lp.peer_broker;
		l->provisional = false;
		l->deadline = 0;
		store_release(&l->f->acked, l->lp.tx.acked);
		if (was) {
			link_file_proved(b, l);
			link_event(l, LOG_NOTICE, "a new link, from %s", l->peer_addr);
		}
		link_step(b, l, &(struct lc_event){ .type = LC_HANDSHAKE_DONE, .gen = l->lc.gen, .fd = -1 });
		if (was)
			link_topics_recompute(b);
	}
}

/* The engine refused what the peer sent (r): what was delivered before it
 * is committed, the peer is told why, and this connection is over. */
void link_proto_error(struct broker *b, struct link *l, int r)
{
	link_input_done(b, l);
	link_flush_last(l);
	link_lost(b, l, r);
}

/* Read what the socket holds (a bounded amount per pass) and handle it. */
void link_input(struct broker *b, struct link *l)
{
	size_t total = 0;

	l->more_in = false;
	while (l->fd >= 0) {
		if (total >= (4u << 20)) {
			/* fair to the rest of the loop; the rest on the next pass
			 * (the poll fires only for new bytes) */
			l->more_in = true;
			break;
		}
		size_t room;
		uint8_t *at;
		ssize_t k;
		int r;

		if (l->stalled) {
			r = lp_process(&l->lp, 0);
			if (r == -EAGAIN)
				break;
			l->stalled = false;
			if (r < 0) {
				link_proto_error(b, l, r);
				return;
			}
		}
		at = lp_in_space(&l->lp, &room);
		if (!room) {
			l->stalled = true;
			break;
		}
		k = recv(l->fd, at, room, MSG_DONTWAIT);
		if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) {
			link_input_done(b, l);
			link_lost(b, l, k == 0 ? -EPIPE : -errno);
			return;
		}
		if (k < 0)
			break;
		total += (size_t)k;
		l->wire_in += (uint64_t)k;
		l->last_rx = clock_mono_ns();
		r = lp_process(&l->lp, (size_t)k);
		if (r == -EAGAIN) {
			l->stalled = true;
			break;
		}
		if (r < 0) {
			link_proto_error(b, l, r);
			return;
		}
		handshake_check(b, l);
	}
	link_input_done(b, l);
	handshake_check(b, l);
	link_flush(b, l);
}

/* ---- the loop's entry points ---- */

/* The link in slot a, if gen still tags its connection (NULL: an older
 * connection's completion). */
static struct link *cqe_link(struct broker *b, unsigned a, uint32_t gen)
{
	struct link *l = a < BROKER_MAX_LINKS ? b->links[a] : NULL;

	return l && l->cgen == gen && l->fd >= 0 ? l : NULL;
}

/* Slot a's socket is readable: read, then re-arm the poll unless it is
 * still armed (multishot) or the connection went. */
static void cqe_in(struct broker *b, unsigned a, uint32_t gen, bool more)
{
	struct link *l = cqe_link(b, a, gen);

	if (!l)
		return;
	if (!more)
		l->in_armed = false;
	link_input(b, l);
	l = cqe_link(b, a, gen);
	if (l && !l->in_armed) {
		loop_poll(b, l->fd, POLLIN, true, LINK_OP_IN, l->slot, l->cgen);
		l->in_armed = true;
	}
}

/* Slot a's socket is writable again: send what is queued. */
static void cqe_out(struct broker *b, unsigned a, uint32_t gen)
{
	struct link *l = cqe_link(b, a, gen);

	if (!l)
		return;
	l->out_armed = false;
	link_flush(b, l);
}

void link_cqe(struct broker *b, unsigned kind, unsigned a, uint32_t gen, int res, bool more)
{
	struct link *l;

	switch (kind) {
	case LINK_OP_ACCEPT:
		link_accept_cqe(b, res, more);
		break;
	case LINK_OP_PENDING:
		link_accept_pending_cqe(b, a, gen, res, more);
		break;
	case LINK_OP_RESOLVE:
		link_dial_resolver_cqe(b, more);
		break;
	case LINK_OP_CONNECT:
		l = cqe_link(b, a, gen);
		if (l)
			link_dial_connect_cqe(b, l, res);
		break;
	case LINK_OP_IN:
		cqe_in(b, a, gen, more);
		break;
	case LINK_OP_OUT:
		cqe_out(b, a, gen);
		break;
	default:
		break;
	}
	links_reap(b);
}

unsigned link_run(struct broker *b, uint64_t now)
{
	unsigned work = 0;

	link_accept_resume(b, now);
	for (unsigned i = 0; i < BROKER_MAX_LINKS; i++) {
		struct link *l = b->links[i];

		if (!l || l->dead)
			continue;
		if (l->timer_at && now >= l->timer_at) {
			l->timer_at = 0;
			link_step(b, l, &(struct lc_event){ .type = LC_TIMER, .gen = l->lc.gen, .fd = -1 });
			work++;
		}
		if (l->deadline && now >= l->deadline) {
			l->deadline = 0;
			snprintf(l->lp.why, sizeof(l->lp.why), "%s timed out",
				 l->lc.state == LC_CONNECTING ? "connect" : "handshake");
			link_lost(b, l, -ETIMEDOUT);
			work++;
			continue;
		}
		if (l->lc.state != LC_READY || l->fd < 0)
			continue;
		if (l->stalled) {
			/* the peer waits on us, not the other way round */
			l->last_rx = now;
			link_input(b, l);
			work += !l->stalled;
		} else if (l->more_in) {
			/* the last read stopped at its cap, not at the socket's end */
			link_input(b, l);
			work++;
		}
		if (b->links[i] != l || l->fd < 0)
			continue;
		/* last_rx may be later than now: read in this very pass */
		if (now > l->last_rx && now - l->last_rx >= b->o.link_timeout_ms * NS_PER_MS) {
			snprintf(l->lp.why, sizeof(l->lp.why), "nothing heard from the peer for %llu ms",
				 (unsigned long long)((now - l->last_rx) / NS_PER_MS));
			link_lost(b, l, -ETIMEDOUT);
			work++;
			continue;
		}
		if (now > l->last_ping && now - l->last_ping >= b->o.link_heartbeat_ms * NS_PER_MS) {
			l->last_ping = now;
			lp_ping(&l->lp, now);
		}
		{
			size_t n;

			lp_output(&l->lp, &n);
			if (n && !l->out_armed) {
				link_flush(b, l);
				work++;
			}
		}
	}
	link_accept_expire(b, now);
	links_reap(b);
	return work;
}

uint64_t link_next_due(struct broker *b, uint64_t now)
{
	uint64_t due = UINT64_MAX;

#define DUE(t) do { uint64_t t_ = (t); due = t_ <= now ? 0 : t_ - now < due ? t_ - now : due; } while (0)
	for (unsigned i = 0; i < BROKER_MAX_LINKS; i++) {
		struct link *l = b->links[i];

		if (!l || l->dead)
			continue;
		if (l->more_in)
			DUE(now);
		if (l->timer_at)
			DUE(l->timer_at);
		if (l->deadline)
			DUE(l->deadline);
		if (l->lc.state == LC_READY) {
			DUE(l->last_ping + b->o.link_heartbeat_ms * NS_PER_MS);
			DUE(l->last_rx + b->o.link_timeout_ms * NS_PER_MS);
			if (l->stalled)
				DUE(now + 1000000);
		}
	}
	if (link_accept_next_due(b) != UINT64_MAX)
		DUE(link_accept_next_due(b));
#undef DUE
	return due;
}

/* ---- set-up ---- */

int link_check(struct broker *b)
{
	char why[200];

	b->link_listen_fd = b->resolve_rd = b->resolve_wr = b->links_dirfd = -1;
	if (!b->o.listen && !b->o.nlink_spec)
		return 0;
	if (!b->o.link_key) {
		log_msg(LOG_ERR, "links need a key: --link-key FILE (64 hex digits, mode 0600)");
		return -EINVAL;
	}
	if (linkkey_load(b->o.link_key, b->link_key, why, sizeof(why)) < 0) {
		log_msg(LOG_ERR, "--link-key %s: %s", b->o.link_key, why);
		return -EACCES;
	}
	return 0;
}

int link_setup(struct broker *b)
{
	char path[4096];
	int r;

	if (!b->o.listen && !b->o.nlink_spec) {
		if (b->o.nbridge)
			log_msg(LOG_WARNING, "--bridge given, but no --link or --listen: nothing is bridged");
		return 0;
	}
	my_topics.n = b->o.nbridge;
	for (unsigned i = 0; i < b->o.nbridge; i++)
		snprintf(my_topics.name[i], sizeof(my_topics.name[i]), "%s", b->o.bridge[i]);
	snprintf(path, sizeof(path), "%s/links", b->o.dir);
	r = segment_dir_open(path, 0700, &b->links_dirfd);
	if (r < 0) {
		log_msg(LOG_ERR, "%s: %s (must be a directory of mode 0700 owned by uid %u)", path,
			strerror(-r), (unsigned)geteuid());
		return r;
	}
	r = link_dial_setup(b);
	if (r < 0)
		return r;
	if (b->o.listen) {
		r = link_accept_setup(b);
		if (r < 0)
			return r;
	}
	link_file_reload(b);
	link_topics_recompute(b);
	return 0;
}

/* After loop_init: arm what the loop watches, start dialing. */
void link_start(struct broker *b)
{
	for (unsigned k = LINK_OP_ACCEPT; k <= LINK_OP_OUT; k++)
		loop_on(b, k, link_cqe);
	if (b->resolve_rd >= 0)
		loop_poll(b, b->resolve_rd, POLLIN, true, LINK_OP_RESOLVE, 0, 0);
	if (b->link_listen_fd >= 0)
		loop_accept(b, b->link_listen_fd, LINK_OP_ACCEPT, 0, 0);
	for (unsigned i = 0; i < BROKER_MAX_LINKS; i++)
		if (b->links[i] && b->links[i]->role == WIRE_DIALER)
			link_step(b, b->links[i], &(struct lc_event){ .type = LC_START, .fd = -1 });
}

void link_stop(struct broker *b)
{
	for (unsigned i = 0; i < BROKER_MAX_LINKS; i++) {
		struct link *l = b->links[i];

		if (!l)
			continue;
		/* what can still go out goes (best effort: the peer replays the rest) */
		if (l->lc.state == LC_READY)
			link_flush_last(l);
		link_free(b, l, l->provisional || l->dead);
	}
	link_accept_stop(b);
}
