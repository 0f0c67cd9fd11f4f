/*
 * broker/loop.c - shmbd's one event loop: io_uring for the control
 * socket, each connection, each peer's pidfd, a futex wait on each
 * session's tx_signal, signals, and the housekeeping timeout.
 *
 * Waking (docs/design/rings.md, "The broker's poll window"): after its
 * last piece of work the loop polls for --poll-us, so under load it never
 * sleeps and a client never pays a wake-up.  Before it sleeps it reads each
 * session's tx_signal, sets broker_waiting, issues a full fence, looks at
 * every ring once more, and only then arms FUTEX_WAIT(tx_signal, value read):
 * a client that commits after that look sees broker_waiting and wakes it, and
 * a commit between the read and the arm makes the wait return at once.
 *
 * Fallback: where io_uring lacks FUTEX_WAIT (kernel < 6.7) or with
 * --no-uring-futex, the idle loop wakes every --fallback-tick-us instead.
 *
 * Must never: free an object an io_uring request still refers to without
 * tagging the request so that its completion is recognised as stale.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "broker/ctl-lanes.h"
#include "broker/broker.h"
#include "broker/ctl.h"
#include "broker/guard.h"
#include "broker/harden.h"
#include "broker/link.h"
#include "broker/log.h"
#include "broker/router.h"
#include "broker/session.h"
#include "broker/topic.h"
#include "broker/uring-futex.h"
#include "broker/lanes-bridge.h"
#include "broker/lanes-spill.h"
#include "shm/atomics.h"
#include "shm/clock.h"

/* the loop's own request kinds; other modules' start at LOOP_KIND_MODULE */
enum op_kind { OP_ACCEPT = 1, OP_CONN, OP_PIDFD, OP_FUTEX, OP_SIGNAL, OP_CANCEL };
_Static_assert(OP_CANCEL < LOOP_KIND_MODULE, "the loop's kinds end below the modules'");

#define UD(kind, a, b) (((uint64_t)(kind) << 56) | ((uint64_t)(a) << 32) | (uint32_t)(b))
#define UD_KIND(u) ((unsigned)((u) >> 56))
#define UD_A(u) ((unsigned)(((u) >> 32) & 0xffffff))
#define UD_B(u) ((uint32_t)(u))
/* futex waits: session id (40 bits) and generation (16 bits) */
#define UD_FUTEX(id, gen) (((uint64_t)OP_FUTEX << 56) | ((uint64_t)((gen) & 0xffff) << 40) | ((id) & 0xffffffffffull))

struct io_uring_sqe *loop_sqe(struct broker *b)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);

	if (!sqe) {
		io_uring_submit(&b->ring);
		sqe = io_uring_get_sqe(&b->ring);
	}
	return sqe;
}

static void arm_accept(struct broker *b)
{
	struct io_uring_sqe *sqe = loop_sqe(b);

	io_uring_prep_multishot_accept(sqe, b->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	io_uring_sqe_set_data64(sqe, UD(OP_ACCEPT, 0, 0));
}

static void arm_poll(struct broker *b, int fd, uint64_t ud)
{
	struct io_uring_sqe *sqe = loop_sqe(b);

	io_uring_prep_poll_multishot(sqe, fd, POLLIN);
	io_uring_sqe_set_data64(sqe, ud);
}

static void cancel(struct broker *b, uint64_t ud)
{
	struct io_uring_sqe *sqe = loop_sqe(b);

	io_uring_prep_cancel64(sqe, ud, 0);
	io_uring_sqe_set_data64(sqe, UD(OP_CANCEL, 0, 0));
}

int loop_init(struct broker *b)
{
	sigset_t ss;
	int r;

	r = io_uring_queue_init(256, &b->ring, 0);
	if (r < 0)
		return r;
	b->uring_futex = !b->o.no_uring_futex && uring_futex_supported(&b->ring);
	if (b->uring_futex)
		log_msg(LOG_INFO, "idle wake-ups: io_uring FUTEX_WAIT on each session's tx_signal");
	else
		log_msg(LOG_WARNING, "idle wake-ups: io_uring FUTEX_WAIT %s; polling every %llu us instead",
			b->o.no_uring_futex ? "disabled" : "not supported by this kernel",
			(unsigned long long)b->o.fallback_tick_us);
	sigemptyset(&ss);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGINT);
	sigprocmask(SIG_BLOCK, &ss, NULL);
	b->signal_fd = signalfd(-1, &ss, SFD_CLOEXEC | SFD_NONBLOCK);
	if (b->signal_fd < 0)
		return -errno;
	arm_accept(b);
	arm_poll(b, b->signal_fd, UD(OP_SIGNAL, 0, 0));
	return 0;
}

void loop_watch_conn(struct broker *b, struct conn *c, int slot)
{
	arm_poll(b, c->fd, UD(OP_CONN, slot, c->slot_gen));
	if (c->pidfd >= 0)
		arm_poll(b, c->pidfd, UD(OP_PIDFD, slot, c->slot_gen));
}

void loop_on(struct broker *b, unsigned kind, loop_handler *fn)
{
	if (kind >= LOOP_KIND_MODULE && kind < LOOP_KINDS)
		b->handler[kind] = fn;
}

void loop_poll(struct broker *b, int fd, unsigned events, bool multishot, unsigned kind, unsigned a,
	       uint32_t gen)
{
	struct io_uring_sqe *sqe = loop_sqe(b);

	if (multishot)
		io_uring_prep_poll_multishot(sqe, fd, events);
	else
		io_uring_prep_poll_add(sqe, fd, events);
	io_uring_sqe_set_data64(sqe, UD(kind, a, gen));
}

void loop_accept(struct broker *b, int fd, unsigned kind, unsigned a, uint32_t gen)
{
	struct io_uring_sqe *sqe = loop_sqe(b);

	io_uring_prep_multishot_accept(sqe, fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	io_uring_sqe_set_data64(sqe, UD(kind, a, gen));
}

void loop_cancel(struct broker *b, unsigned kind, unsigned a, uint32_t gen)
{
	cancel(b, UD(kind, a, gen));
}

void loop_unwatch_conn(struct broker *b, struct conn *c)
{
	cancel(b, UD(OP_CONN, c->slot, c->slot_gen));
	if (c->pidfd >= 0)
		cancel(b, UD(OP_PIDFD, c->slot, c->slot_gen));
}

void loop_cancel_session(struct broker *b, struct session *s)
{
	if (!s->futex_armed)
		return;
	cancel(b, UD_FUTEX(s->id, s->generation));
	s->futex_armed = false;
}

static struct conn *conn_of(struct broker *b, uint64_t ud)
{
	unsigned slot = UD_A(ud);
	struct conn *c = slot < BROKER_MAX_CONNS ? b->conns[slot] : NULL;

	return c && c->slot_gen == UD_B(ud) ? c : NULL;
}

static void on_cqe(struct broker *b, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	bool more = cqe->flags & IORING_CQE_F_MORE;
	struct conn *c;

	switch (UD_KIND(ud)) {
	case OP_ACCEPT:
		if (cqe->res >= 0) {
			ctl_accepted(b, cqe->res);
		} else if (cqe->res == -EMFILE || cqe->res == -ENFILE || cqe->res == -ENOMEM) {
			/* out of fds: re-arming now would spin; the housekeeping
			 * tick re-arms in a moment, and this is said once */
			if (!b->accept_paused)
				log_msg(LOG_WARNING, "accept: %s: pausing new connections",
					strerror(-cqe->res));
			b->accept_paused = true;
			break;
		} else if (cqe->res != -ECANCELED) {
			log_msg(LOG_WARNING, "accept: %s", strerror(-cqe->res));
		}
		if (!more && !b->stopping)
			arm_accept(b);
		break;
	case OP_CONN:
		c = conn_of(b, ud);
		if (!c)
			break;
		ctl_readable(b, c);
		/* ctl_readable may have closed and freed c: look it up again */
		c = conn_of(b, ud);
		if (!more && c)
			arm_poll(b, c->fd, ud);
		break;
	case OP_PIDFD:
		c = conn_of(b, ud);
		if (c && cqe->res >= 0)
			/* the peer process is gone; its sessions detach now */
			ctl_close(b, c, "owner process exited");
		break;
	case OP_FUTEX:
		for (unsigned i = 0; i < b->nsessions; i++) {
			struct session *s = b->sessions[i];

			if (UD_FUTEX(s->id, s->generation) == ud) {
				s->futex_armed = false;
				s->wakes++;
				break;
			}
		}
		break;
	case OP_SIGNAL: {
		struct signalfd_siginfo si;

		while (read(b->signal_fd, &si, sizeof(si)) == sizeof(si)) {
			log_msg(LOG_NOTICE, "signal %d: stopping", (int)si.ssi_signo);
			b->stopping = true;
		}
		if (!more && !b->stopping)
			arm_poll(b, b->signal_fd, ud);
		break;
	}
	default:
		/* another module's request: its handler (none: a stray, dropped) */
		if (UD_KIND(ud) < LOOP_KINDS && b->handler[UD_KIND(ud)])
			b->handler[UD_KIND(ud)](b, UD_KIND(ud), UD_A(ud), UD_B(ud), cqe->res, more);
		break;
	}
}

static unsigned drain_cqes(struct broker *b)
{
	struct io_uring_cqe *cqe;
	unsigned n = 0;

	while (io_uring_peek_cqe(&b->ring, &cqe) == 0) {
		struct io_uring_cqe copy = *cqe;

		io_uring_cqe_seen(&b->ring, cqe);
		on_cqe(b, &copy);
		n++;
	}
	return n;
}

/*
 * Before sleeping: ask every client to wake the broker when it publishes
 * (SHM_WAIT_TX), and a subscriber that holds a publisher back also when it
 * acknowledges (SHM_WAIT_RX_SPACE); plain acknowledgements then cost no
 * wake-up.
 */
static void set_waiting(struct broker *b)
{
	for (unsigned i = 0; i < b->nsessions; i++) {
		struct session *s = b->sessions[i];

		if (s->tx_open)
			store_relaxed(&s->rxc->broker_waiting,
				      SHM_WAIT_TX | (s->full_since ? SHM_WAIT_RX_SPACE : 0));
	}
}

static void clear_waiting(struct broker *b)
{
	for (unsigned i = 0; i < b->nsessions; i++)
		if (b->sessions[i]->tx_open)
			store_relaxed(&b->sessions[i]->rxc->broker_waiting, 0);
}

/* Go to sleep unless there is work; returns after a wake-up or timeout,
 * true when it found work instead of sleeping (keep polling then). */
static bool sleep_idle(struct broker *b)
{
	struct __kernel_timespec ts = { .tv_sec = 1 };

	/* a session under back-off is looked at on the next tick instead */
	for (unsigned i = 0; i < b->nsessions; i++)
		if (b->sessions[i]->backoff_until) {
			ts = (struct __kernel_timespec){ .tv_nsec = 200000000 };
			break;
		}
	struct io_uring_cqe *cqe;
	uint32_t *vals = NULL;
	uint64_t due = link_next_due(b, clock_mono_ns());

	if (due < 1000000000ull && due < (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec)
		ts = (struct __kernel_timespec){ .tv_sec = (long long)(due / 1000000000ull),
						 .tv_nsec = (long long)(due % 1000000000ull) };
	/* the links' reader of lanes, or a spill, backed off: it is looked at
	 * every ms */
	due = lanes_bridge_poll_ns(b);
	if (!due || (lanes_spill_poll_ns(b) && lanes_spill_poll_ns(b) < due))
		due = lanes_spill_poll_ns(b);
	if (due && due < (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec)
		ts = (struct __kernel_timespec){ .tv_nsec = (long long)due };

	if (b->uring_futex && b->nsessions) {
		vals = calloc(b->nsessions, sizeof(*vals));
		if (!vals)
			return true;
		/* the value each wait will expect, read before the last look */
		for (unsigned i = 0; i < b->nsessions; i++)
			if (b->sessions[i]->tx_open)
				vals[i] = load_acquire(&b->sessions[i]->txc->tx_signal);
	}
	set_waiting(b);
	/* pairs with the client's fence in wake_signal(): flag, then rings */
	fence_full();
	/* the links' reader of lanes and each spill arm their wakes and look
	 * once more */
	if (lanes_bridge_arm(b) | lanes_spill_arm(b) || router_run(b) ||
	    link_run(b, clock_mono_ns())) {
		lanes_bridge_woke(b);
		lanes_spill_woke(b);
		clear_waiting(b);
		free(vals);
		return true;
	}
	if (vals) {
		for (unsigned i = 0; i < b->nsessions; i++) {
			struct session *s = b->sessions[i];
			struct io_uring_sqe *sqe;

			if (!s->tx_open || s->futex_armed || s->backoff_until > clock_mono_ns())
				continue;
			sqe = loop_sqe(b);
			uring_prep_futex_wait(sqe, &s->txc->tx_signal, vals[i]);
			io_uring_sqe_set_data64(sqe, UD_FUTEX(s->id, s->generation));
			s->futex_armed = true;
		}
		free(vals);
	} else if (!b->uring_futex && b->nsessions &&
		   (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec > b->o.fallback_tick_us * 1000) {
		ts.tv_sec = 0;
		ts.tv_nsec = (long long)b->o.fallback_tick_us * 1000;
	}
	b->sleeps++;
	io_uring_submit_and_wait_timeout(&b->ring, &cqe, 1, &ts, NULL);
	lanes_bridge_woke(b);
	lanes_spill_woke(b);
	clear_waiting(b);
	return false;
}

/*
 * docs/design/rings.md, wake-ups: a client whose wake word keeps changing
 * with no new records is backed off.  Once per housekeeping window: a
 * session that woke the broker more than WAKE_SPAM times while bringing fewer
 * records than half as many has its wait left unarmed for a window, so its
 * records are picked up by the next tick; a session that behaves again is
 * re-armed as usual.
 */
/* 100 in a 200 ms window: a busy broker on a loaded machine sleeps and
 * wakes no more than a few thousand times a second, and at 500 a spammer
 * that kept it at half a CPU was never caught; an honest client's wakes
 * each bring a record, so the ratio, not the count, tells them apart */
#define WAKE_SPAM 100

static void wake_backoff(struct broker *b, uint64_t now)
{
	for (unsigned i = 0; i < b->nsessions; i++) {
		struct session *s = b->sessions[i];
		/* what its wake-ups brought: records from it, deliveries to it */
		uint64_t progress = s->routed_in + s->delivered_out - s->routed_mark;

		if (s->wakes > WAKE_SPAM && progress < s->wakes / 2) {
			if (!s->backoff_level)
				log_msg(LOG_WARNING, "session %s wakes the broker with no records"
					" (%u wakes, %llu records): backed off", s->name, s->wakes,
					(unsigned long long)progress);
			if (s->backoff_level < 4)
				s->backoff_level++;
			/* 0.2, 0.4, 0.8, 1.6 s: spam that goes on pays more */
			s->backoff_until = now + (200000000ull << (s->backoff_level - 1));
		} else if (s->backoff_until && now >= s->backoff_until) {
			s->backoff_until = 0;
		} else if (!s->backoff_until) {
			s->backoff_level = 0;
		}
		s->wakes = 0;
		s->routed_mark = s->routed_in + s->delivered_out;
	}
}

int loop_run(struct broker *b)
{
	uint64_t last_work = clock_mono_ns(), last_house = last_work, drain_until = 0;
	uint64_t last_sweep = last_work;
	uint64_t poll_ns = b->o.poll_us * 1000ull;
	const uint64_t poll_max = poll_ns > 250000ull ? poll_ns : 250000ull;

	for (;;) {
		uint64_t moved = router_run(b), now;
		unsigned handled;

		guard_check(b);
		session_reap(b);
		io_uring_submit(&b->ring);
		handled = drain_cqes(b);
		now = clock_mono_ns();
		handled += link_run(b, now);
		if (now - last_house >= 200000000ull) {
			session_expire(b, now);
			ctl_expire(b, now);
			topic_rates(b, now);
			wake_backoff(b, now);
			exitw_tick(b, now);
			ctl_lanes_tick(b);
			/* about once a second: clients' TX files as they were made */
			if (now - last_sweep >= 1000000000ull) {
				harden_sweep(b);
				ctl_lanes_sweep(b);
				last_sweep = now;
			}
			if (b->accept_paused && !b->stopping) {
				b->accept_paused = false;
				arm_accept(b);
			}
			last_house = now;
		}
		if (b->stopping) {
			/* finish what is in flight, for at most --drain-timeout */
			if (!drain_until) {
				drain_until = now + b->o.drain_timeout_ms * 1000000ull;
				close(b->listen_fd);
				b->listen_fd = -1;
			}
			if (!moved || now >= drain_until)
				break;
			continue;
		}
		if (moved || handled) {
			last_work = now;
			continue;
		}
		if (now - last_work < poll_ns) {
			cpu_relax();
			continue;
		}
		exitw_idle(b);
		{
			uint64_t slept_at = clock_mono_ns(), woke;
			bool found = sleep_idle(b);

			/*
			 * The poll window adapts (issue 10): work that comes back
			 * within a few windows of a sleep paid a wake-up it did
			 * not need, so the next window doubles (up to 250 us, or
			 * --poll-us if larger); a sleep longer than that halves
			 * it again, down to --poll-us.  An idle broker still
			 * sleeps after its last work plus the window.
			 */
			woke = clock_mono_ns();
			if (found)
				; /* it never slept: nothing to learn */
			else if (woke - slept_at < 4 * poll_ns + 20000)
				poll_ns = poll_ns * 2 > poll_max ? poll_max : poll_ns * 2;
			else if (poll_ns / 2 >= b->o.poll_us * 1000ull)
				poll_ns /= 2;
			/* found work at the last look: poll again; else poll only after work */
			last_work = found ? woke : woke - poll_ns;
		}
	}
	link_stop(b);
	log_msg(LOG_NOTICE, "stopped: %llu messages routed, %llu idle sleeps, %llu reader wake-ups;"
		" segments consistent", (unsigned long long)b->routed, (unsigned long long)b->sleeps,
		(unsigned long long)b->wakes_sent);
	return 0;
}
