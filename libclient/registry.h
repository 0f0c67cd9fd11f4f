/*
 * libclient/registry.h - the single-flight registry around the lifecycle
 * machine (docs/design/lifecycle.md, "Single flight"): an endpoint maps to one
 * machine; callers that need the same endpoint share one dial; each caller
 * waits for "connected or failed" with its own timeout; a permanent
 * failure removes the entry, so the next request dials anew.
 *
 * The registry holds the lock and the waiters; the machine stays pure.
 * Actions the machine asks for are handed to the owner's exec callback,
 * outside the lock, in order.
 */
#ifndef LIBCLIENT_REGISTRY_H
#define LIBCLIENT_REGISTRY_H

#include <pthread.h>
#include <stdint.h>

#include "libclient/lifecycle.h"

#define LCR_ENDPOINT_MAX 128
#define LCR_MAX_ENTRIES 64

struct lc_registry;

struct lc_entry {
	char endpoint[LCR_ENDPOINT_MAX];
	struct lc m;
	struct lc_registry *reg;
	pthread_cond_t cond;
	unsigned refs;        /* lcr_get() references not yet put */
	uint64_t results;     /* answers given to waiters so far */
	int result;           /* the last answer: 0 connected, or an error */
	uint64_t dials;       /* attempts started (resolve or connect actions) */
	int removed;
};

typedef void (*lcr_exec_fn)(struct lc_entry *e, const struct lc_action *acts, unsigned n,
			    void *arg);

struct lc_registry {
	pthread_mutex_t lock;
	struct lc_entry *entries[LCR_MAX_ENTRIES];
	unsigned n;
	struct lc_opts opts;
	struct lc_clock clock;
	lcr_exec_fn exec;
	void *arg;
};

int lcr_init(struct lc_registry *r, const struct lc_opts *o, const struct lc_clock *clock,
	     lcr_exec_fn exec, void *arg);

/* Remove every entry (none may still be referenced) and free them. */
void lcr_fini(struct lc_registry *r);

/* The entry for endpoint, created and started if there is none (one dial
 * for any number of callers).  Take a reference; lcr_put() gives it back.
 * 0, -EINVAL (malformed endpoint: fails at once), -ENOSPC, -ENOMEM. */
int lcr_get(struct lc_registry *r, const char *endpoint, struct lc_entry **out);
void lcr_put(struct lc_entry *e);

/* One more reference on an entry the caller already holds (an owner that
 * stores the pointer, for instance with an action it runs later). */
void lcr_hold(struct lc_entry *e);

/* A copy of the entry's machine, taken under the lock (state, gen,
 * failures: for the owner's status reports). */
void lcr_snapshot(struct lc_entry *e, struct lc *out);

/* Wait until the entry is connected (0) or failed (its error), for at
 * most timeout_ns: -ETIMEDOUT for this caller only; the dial goes on. */
int lcr_wait(struct lc_entry *e, uint64_t timeout_ns);

/* Feed the machine an event (from the owner's I/O); 0, 1 (dropped), -EINVAL. */
int lcr_feed(struct lc_entry *e, const struct lc_event *ev);

/* force_reconnect: joins a dial in flight and shares its result. */
int lcr_force_reconnect(struct lc_entry *e);

/* Remove e, but only if it is still the entry for its endpoint: an old
 * connection's late callback never removes its successor. */
void lcr_remove(struct lc_entry *e);

#endif
