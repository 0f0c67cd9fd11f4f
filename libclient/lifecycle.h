/*
 * libclient/lifecycle.h - the one state machine every dialed connection
 * goes through (docs/design/lifecycle.md): the pure core.
 *
 * It does no I/O, reads no clock and takes no lock.  The owner feeds it
 * events (lc_step) and carries out the actions it leaves in m->act[]:
 * resolve, connect or hand-shake with a deadline, arm a timer, close an
 * fd, abort an attempt, emit a monitor event, wake waiters.  The clock
 * and the random source are injected, so tests step time and fix jitter.
 *
 * "Generation" here is the attempt counter
 * (docs/design/lifecycle.md, generations): it grows by one before every
 * attempt; every completion and error carries the generation it belongs to,
 * and one of an older generation is dropped.
 */
#ifndef LIBCLIENT_LIFECYCLE_H
#define LIBCLIENT_LIFECYCLE_H

#include <stdbool.h>
#include <stdint.h>

#include "shm/clock.h"

enum lc_state {
	LC_IDLE, LC_RESOLVING, LC_CONNECTING, LC_HANDSHAKING, LC_READY,
	LC_BACKOFF, LC_FAILED, LC_CLOSING, LC_CLOSED,
};

enum lc_ev {
	LC_START, LC_RESOLVED, LC_RESOLVE_FAILED, LC_CONNECTED, LC_CONNECT_FAILED,
	LC_HANDSHAKE_DONE, LC_HANDSHAKE_FAILED, LC_IO_ERROR, LC_TIMER,
	LC_FORCE_RECONNECT, LC_CLOSE, LC_ABORTED,
};

struct lc_event {
	enum lc_ev type;
	uint32_t gen; /* the attempt it belongs to */
	int err;      /* negative errno, for failures */
	int fd;       /* LC_CONNECTED */
};

enum lc_act_type {
	LC_ACT_RESOLVE,   /* resolve the address again (gen) */
	LC_ACT_CONNECT,   /* dial (gen), deadline in ns */
	LC_ACT_HANDSHAKE, /* start the handshake on fd (gen), deadline in ns */
	LC_ACT_TIMER,     /* fire LC_TIMER after ns */
	LC_ACT_CLOSE_FD,  /* close fd */
	LC_ACT_ABORT,     /* abort the attempt (gen) in flight; report LC_ABORTED */
	LC_ACT_MONITOR,   /* emit mon */
	LC_ACT_WAKE,      /* answer every waiter with err (0: connected) */
};

enum lc_mon_type {
	LC_MON_ATTEMPTING, LC_MON_RESOLVED, LC_MON_CONNECT_FAILED, LC_MON_CONNECTED,
	LC_MON_HANDSHAKE_SUCCEEDED, LC_MON_HANDSHAKE_FAILED, LC_MON_DISCONNECTED,
	LC_MON_BACKOFF, LC_MON_CLOSED, LC_MON_FAILED,
};

struct lc_action {
	enum lc_act_type type;
	uint32_t gen;
	int fd;
	int err;
	uint64_t ns;             /* deadline (connect, handshake) or delay (timer) */
	enum lc_mon_type mon;    /* LC_ACT_MONITOR */
	int64_t detail;          /* monitor detail: an error, or a delay in ns */
	uint64_t time;           /* monitor time */
};

struct lc_clock {
	uint64_t (*now)(void *arg);     /* nanoseconds, monotonic */
	uint32_t (*random)(void *arg);  /* uniform; 2^31 means "no jitter" */
	void *arg;
};

/* The system's monotonic clock, as an lc_clock's now (tests inject their own). */
static inline uint64_t lc_clock_mono(void *arg)
{
	(void)arg;
	return clock_mono_ns();
}

struct lc_opts {
	uint64_t base_ns;              /* first retry delay: 100 ms */
	uint64_t cap_ns;               /* largest delay: 10 s */
	uint64_t connect_timeout_ns;   /* 2 s */
	uint64_t handshake_timeout_ns; /* 2 s */
	bool skip_resolve;             /* a local Unix socket */
};

#define LC_MAX_ACTS 8

struct lc {
	enum lc_state state;
	uint32_t gen;
	int fd;                 /* the connection's fd, -1 when none */
	unsigned failures;      /* failed attempts since the last READY */
	uint64_t attempt_start; /* when the current (or last) attempt began */
	int first_reason;       /* the first reason of the current teardown */
	uint32_t acted_gen;     /* an io_error of this generation was acted on */
	bool in_cycle;          /* "attempting" said for this reconnect cycle */
	bool said_resolved;     /* duplicate suppression within a cycle */
	int said_connect_err;
	uint64_t dropped;       /* stale or repeated errors dropped */
	struct lc_opts o;
	struct lc_clock clock;
	struct lc_action act[LC_MAX_ACTS];
	unsigned nact;
};

/* 0, or -EINVAL for impossible options. */
int lc_init(struct lc *m, const struct lc_opts *o, const struct lc_clock *clock);

/*
 * Feed one event.  Returns 0 when acted on (actions in m->act[0..nact)),
 * 1 when dropped as stale or repeated (counted; actions may still close a
 * late fd), -EINVAL when the transition is not in the table (nothing
 * changes).
 */
int lc_step(struct lc *m, const struct lc_event *ev);

/* The retry delay after n failed attempts: min(cap, base * 2^n), then
 * jitter of +-30 % from the random source. */
uint64_t lc_delay(const struct lc *m, unsigned n);

/* Permanent errors go to FAILED; all others to BACKOFF. */
bool lc_permanent(int err);

const char *lc_state_name(enum lc_state s);

#endif
