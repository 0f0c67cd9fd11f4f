/*
 * libclient/lifecycle.c - the lifecycle machine's pure core
 * (lifecycle.h, docs/design/lifecycle.md).
 *
 * Must never: act on an event of an older generation; tear a connection
 * down twice; leave a waiter unanswered when the machine reaches READY,
 * FAILED or CLOSED; leak an fd that a late completion hands in.
 */
#include <assert.h>
#include <errno.h>
#include <string.h>

#include "libclient/lifecycle.h"

static const char *const state_names[] = {
	"idle", "resolving", "connecting", "handshaking", "ready",
	"backoff", "failed", "closing", "closed",
};

const char *lc_state_name(enum lc_state s)
{
	return (unsigned)s < sizeof(state_names) / sizeof(state_names[0]) ? state_names[s] : "?";
}

bool lc_permanent(int err)
{
	switch (-err) {
	case EPROTO:          /* protocol mismatch */
	case EPROTONOSUPPORT: /* version mismatch */
	case EACCES:          /* authentication refused */
	case EPERM:
	case ERANGE:          /* the peer's counts cannot be reconciled */
	case ECANCELED:       /* an explicit abort */
	case EINVAL:          /* a malformed endpoint */
		return true;
	default:
		return false;
	}
}

int lc_init(struct lc *m, const struct lc_opts *o, const struct lc_clock *clock)
{
	if (!clock || !clock->now || !clock->random)
		return -EINVAL;
	memset(m, 0, sizeof(*m));
	m->o = (struct lc_opts){
		.base_ns = 100000000ull,
		.cap_ns = 10000000000ull,
		.connect_timeout_ns = 2000000000ull,
		.handshake_timeout_ns = 2000000000ull,
	};
	if (o) {
		if (o->base_ns)
			m->o.base_ns = o->base_ns;
		if (o->cap_ns)
			m->o.cap_ns = o->cap_ns;
		if (o->connect_timeout_ns)
			m->o.connect_timeout_ns = o->connect_timeout_ns;
		if (o->handshake_timeout_ns)
			m->o.handshake_timeout_ns = o->handshake_timeout_ns;
		m->o.skip_resolve = o->skip_resolve;
	}
	if (m->o.base_ns > m->o.cap_ns)
		return -EINVAL;
	m->clock = *clock;
	m->state = LC_IDLE;
	m->fd = -1;
	return 0;
}

uint64_t lc_delay(const struct lc *m, unsigned n)
{
	uint64_t d = m->o.cap_ns;
	/* jitter in [-0.3, +0.3) of the delay, applied after the cap
	 * (docs/design/lifecycle.md) */
	int64_t r = (int64_t)m->clock.random(m->clock.arg) - (int64_t)0x80000000u;

	if (n < 63 && (m->o.base_ns << n) >> n == m->o.base_ns && (m->o.base_ns << n) < d)
		d = m->o.base_ns << n;
	return (uint64_t)((int64_t)d + (int64_t)((__int128)d * 3 / 10 * r / 0x80000000ll));
}

static struct lc_action *act(struct lc *m, enum lc_act_type t)
{
	struct lc_action *a = &m->act[m->nact < LC_MAX_ACTS ? m->nact++ : LC_MAX_ACTS - 1];

	*a = (struct lc_action){ .type = t, .gen = m->gen, .fd = -1 };
	return a;
}

static void monitor(struct lc *m, enum lc_mon_type t, int64_t detail)
{
	struct lc_action *a = act(m, LC_ACT_MONITOR);

	a->mon = t;
	a->detail = detail;
	a->time = m->clock.now(m->clock.arg);
}

static void wake(struct lc *m, int err)
{
	act(m, LC_ACT_WAKE)->err = err;
}

static void begin_attempt(struct lc *m)
{
	uint64_t now = m->clock.now(m->clock.arg);

	m->gen++;
	m->attempt_start = now;
	m->first_reason = 0;
	if (!m->in_cycle) {
		m->in_cycle = true;
		m->said_resolved = false;
		m->said_connect_err = 0;
		monitor(m, LC_MON_ATTEMPTING, 0);
	}
	if (m->o.skip_resolve) {
		m->state = LC_CONNECTING;
		act(m, LC_ACT_CONNECT)->ns = now + m->o.connect_timeout_ns;
	} else {
		/* resolved again before every attempt */
		m->state = LC_RESOLVING;
		act(m, LC_ACT_RESOLVE);
	}
}

/* The one teardown: idempotent, the first reason wins. */
static void teardown(struct lc *m, int reason)
{
	if (!m->first_reason)
		m->first_reason = reason ? reason : -ECONNRESET;
	if (m->fd >= 0) {
		act(m, LC_ACT_CLOSE_FD)->fd = m->fd;
		m->fd = -1;
		monitor(m, LC_MON_DISCONNECTED, m->first_reason);
	}
}

/* An attempt failed (or a connection was lost): retry later, or give up. */
static void attempt_failed(struct lc *m, int err)
{
	uint64_t now, due, delay;

	if (lc_permanent(err)) {
		m->state = LC_FAILED;
		monitor(m, LC_MON_FAILED, err);
		wake(m, err);
		return;
	}
	/* timed from the start of the previous attempt: a long-lived
	 * connection that drops redials at once, a flapping one is throttled */
	delay = lc_delay(m, m->failures);
	m->failures++;
	now = m->clock.now(m->clock.arg);
	due = m->attempt_start + delay;
	m->state = LC_BACKOFF;
	monitor(m, LC_MON_BACKOFF, (int64_t)delay);
	act(m, LC_ACT_TIMER)->ns = due > now ? due - now : 0;
}

static int drop(struct lc *m, const struct lc_event *ev)
{
	m->dropped++;
	/* a dial that completes too late: its fd is not ours to keep */
	if (ev->type == LC_CONNECTED && ev->fd >= 0)
		act(m, LC_ACT_CLOSE_FD)->fd = ev->fd;
	return 1;
}

/*
 * An event that does not fit the state: of an older generation it is
 * dropped (stale); of the current one it is a transition the table does
 * not have (-EINVAL, nothing changes) — except a dial that completes
 * after close, whose fd is closed (and which ends the closing).
 */
static int misfit(struct lc *m, const struct lc_event *ev)
{
	if (ev->gen != m->gen)
		return drop(m, ev);
	if (ev->type == LC_CONNECTED && (m->state == LC_CLOSING || m->state == LC_CLOSED)) {
		drop(m, ev);
		if (m->state == LC_CLOSING) {
			m->state = LC_CLOSED;
			monitor(m, LC_MON_CLOSED, 0);
		}
		return 0;
	}
	return -EINVAL;
}

/* The event is of the current attempt and answers the state it expects. */
static bool fits(const struct lc *m, const struct lc_event *ev, enum lc_state want)
{
	return m->state == want && ev->gen == m->gen;
}

/* ---- one handler per event: 0, 1 (dropped) or -EINVAL, as lc_step ---- */

static int on_start(struct lc *m, const struct lc_event *ev)
{
	(void)ev;
	if (m->state != LC_IDLE)
		return -EINVAL;
	begin_attempt(m);
	return 0;
}

static int on_resolved(struct lc *m, const struct lc_event *ev)
{
	if (!fits(m, ev, LC_RESOLVING))
		return misfit(m, ev);
	if (!m->said_resolved) {
		m->said_resolved = true;
		monitor(m, LC_MON_RESOLVED, 0);
	}
	m->state = LC_CONNECTING;
	act(m, LC_ACT_CONNECT)->ns = m->clock.now(m->clock.arg) + m->o.connect_timeout_ns;
	return 0;
}

static int on_resolve_failed(struct lc *m, const struct lc_event *ev)
{
	if (!fits(m, ev, LC_RESOLVING))
		return misfit(m, ev);
	attempt_failed(m, ev->err); /* counts as a failed attempt */
	return 0;
}

static int on_connected(struct lc *m, const struct lc_event *ev)
{
	struct lc_action *a;

	if (!fits(m, ev, LC_CONNECTING))
		return misfit(m, ev);
	m->fd = ev->fd;
	monitor(m, LC_MON_CONNECTED, 0);
	m->state = LC_HANDSHAKING;
	a = act(m, LC_ACT_HANDSHAKE);
	a->fd = m->fd;
	a->ns = m->clock.now(m->clock.arg) + m->o.handshake_timeout_ns;
	return 0;
}

static int on_connect_failed(struct lc *m, const struct lc_event *ev)
{
	if (!fits(m, ev, LC_CONNECTING))
		return misfit(m, ev);
	/* the same failure again in this cycle is not said again */
	if (m->said_connect_err != ev->err) {
		m->said_connect_err = ev->err;
		monitor(m, LC_MON_CONNECT_FAILED, ev->err);
	}
	attempt_failed(m, ev->err);
	return 0;
}

static int on_handshake_done(struct lc *m, const struct lc_event *ev)
{
	if (!fits(m, ev, LC_HANDSHAKING))
		return misfit(m, ev);
	/* said before the connection carries any traffic */
	monitor(m, LC_MON_HANDSHAKE_SUCCEEDED, 0);
	m->state = LC_READY;
	m->failures = 0;
	m->in_cycle = false;
	wake(m, 0);
	return 0;
}

static int on_handshake_failed(struct lc *m, const struct lc_event *ev)
{
	if (!fits(m, ev, LC_HANDSHAKING))
		return misfit(m, ev);
	monitor(m, LC_MON_HANDSHAKE_FAILED, ev->err);
	teardown(m, ev->err); /* a reset mid-handshake still redials */
	attempt_failed(m, ev->err);
	return 0;
}

static int on_io_error(struct lc *m, const struct lc_event *ev)
{
	/* acted on once per generation, only while READY */
	if (!fits(m, ev, LC_READY) || m->acted_gen == ev->gen)
		return drop(m, ev);
	m->acted_gen = ev->gen;
	teardown(m, ev->err);
	attempt_failed(m, ev->err);
	return 0;
}

static int on_timer(struct lc *m, const struct lc_event *ev)
{
	if (!fits(m, ev, LC_BACKOFF))
		return misfit(m, ev);
	begin_attempt(m);
	return 0;
}

static int on_force_reconnect(struct lc *m, const struct lc_event *ev)
{
	(void)ev;
	switch (m->state) {
	case LC_READY:
		teardown(m, -ECONNRESET);
		m->failures = 0;
		begin_attempt(m);
		return 0;
	case LC_BACKOFF:
		m->failures = 0;
		begin_attempt(m); /* fires at once */
		return 0;
	case LC_RESOLVING:
	case LC_CONNECTING:
	case LC_HANDSHAKING:
		m->failures = 0;
		return 0; /* joins the dial in flight and shares its result */
	default:
		return -EINVAL;
	}
}

static int on_close(struct lc *m, const struct lc_event *ev)
{
	(void)ev;
	switch (m->state) {
	case LC_CLOSING:
	case LC_CLOSED:
		return 0; /* a no-op */
	case LC_RESOLVING:
	case LC_CONNECTING:
		/* abort the attempt in flight without waiting for it */
		act(m, LC_ACT_ABORT);
		m->state = LC_CLOSING;
		wake(m, -ESHUTDOWN);
		return 0;
	default:
		teardown(m, -ESHUTDOWN);
		m->state = LC_CLOSED;
		monitor(m, LC_MON_CLOSED, 0);
		wake(m, -ESHUTDOWN);
		return 0;
	}
}

static int on_aborted(struct lc *m, const struct lc_event *ev)
{
	if (m->state != LC_CLOSING)
		return misfit(m, ev);
	m->state = LC_CLOSED;
	monitor(m, LC_MON_CLOSED, 0);
	return 0;
}

typedef int lc_handler(struct lc *m, const struct lc_event *ev);

static lc_handler *const handlers[] = {
	[LC_START] = on_start,
	[LC_RESOLVED] = on_resolved,
	[LC_RESOLVE_FAILED] = on_resolve_failed,
	[LC_CONNECTED] = on_connected,
	[LC_CONNECT_FAILED] = on_connect_failed,
	[LC_HANDSHAKE_DONE] = on_handshake_done,
	[LC_HANDSHAKE_FAILED] = on_handshake_failed,
	[LC_IO_ERROR] = on_io_error,
	[LC_TIMER] = on_timer,
	[LC_FORCE_RECONNECT] = on_force_reconnect,
	[LC_CLOSE] = on_close,
	[LC_ABORTED] = on_aborted,
};
/* a new event gets its handler here, or lc_step() refuses it */
static_assert(sizeof(handlers) / sizeof(handlers[0]) == LC_ABORTED + 1, "an event without a handler");

int lc_step(struct lc *m, const struct lc_event *ev)
{
	m->nact = 0;
	if ((unsigned)ev->type >= sizeof(handlers) / sizeof(handlers[0]) || !handlers[ev->type])
		return -EINVAL;
	return handlers[ev->type](m, ev);
}
