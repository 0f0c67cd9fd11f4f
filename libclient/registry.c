/*
 * libclient/registry.c - the single-flight registry (registry.h).
 *
 * Must never: run the owner's exec callback with the lock held; leave a
 * waiter waiting on an attempt that ended; remove an entry that is not the
 * one it was asked to remove.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "libclient/registry.h"

int lcr_init(struct lc_registry *r, const struct lc_opts *o, const struct lc_clock *clock,
	     lcr_exec_fn exec, void *arg)
{
	struct lc probe;

	if (!exec || lc_init(&probe, o, clock) < 0)
		return -EINVAL;
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->lock, NULL);
	r->opts = probe.o;
	r->clock = *clock;
	r->exec = exec;
	r->arg = arg;
	return 0;
}

static void unlink_locked(struct lc_entry *e)
{
	struct lc_registry *r = e->reg;

	for (unsigned i = 0; i < r->n; i++)
		if (r->entries[i] == e) {
			r->entries[i] = r->entries[--r->n];
			e->removed = 1;
			return;
		}
}

static void free_if_unused_locked(struct lc_entry *e)
{
	if (e->removed && e->refs == 0) {
		pthread_cond_destroy(&e->cond);
		free(e);
	}
}

/*
 * After a step (lock held): account for what the machine asked, answer
 * waiters, drop a failed entry; then (lock released) hand the actions to
 * the owner.
 */
static void after_step(struct lc_entry *e, struct lc_action *acts, unsigned *n)
{
	*n = e->m.nact;
	memcpy(acts, e->m.act, sizeof(e->m.act[0]) * e->m.nact);
	for (unsigned i = 0; i < *n; i++) {
		if (acts[i].type == LC_ACT_RESOLVE ||
		    (acts[i].type == LC_ACT_CONNECT && e->m.o.skip_resolve))
			e->dials++;
		if (acts[i].type == LC_ACT_WAKE) {
			e->result = acts[i].err;
			e->results++;
			pthread_cond_broadcast(&e->cond);
		}
	}
	/* a permanent failure: the next request starts fresh */
	if (e->m.state == LC_FAILED && !e->removed)
		unlink_locked(e);
}

void lcr_fini(struct lc_registry *r)
{
	pthread_mutex_lock(&r->lock);
	while (r->n) {
		struct lc_entry *e = r->entries[0];

		unlink_locked(e);
		free_if_unused_locked(e);
	}
	pthread_mutex_unlock(&r->lock);
	pthread_mutex_destroy(&r->lock);
}

int lcr_get(struct lc_registry *r, const char *endpoint, struct lc_entry **out)
{
	struct lc_action acts[LC_MAX_ACTS];
	struct lc_event start = { .type = LC_START };
	struct lc_entry *e;
	unsigned n = 0;
	size_t len = endpoint ? strlen(endpoint) : 0;

	/* a malformed endpoint fails at once, before any state exists */
	if (len == 0 || len >= LCR_ENDPOINT_MAX || strchr(endpoint, ' '))
		return -EINVAL;
	pthread_mutex_lock(&r->lock);
	for (unsigned i = 0; i < r->n; i++)
		if (!strcmp(r->entries[i]->endpoint, endpoint)) {
			e = r->entries[i];
			e->refs++;
			pthread_mutex_unlock(&r->lock);
			*out = e;
			return 0;
		}
	if (r->n == LCR_MAX_ENTRIES) {
		pthread_mutex_unlock(&r->lock);
		return -ENOSPC;
	}
	e = calloc(1, sizeof(*e));
	if (!e) {
		pthread_mutex_unlock(&r->lock);
		return -ENOMEM;
	}
	memcpy(e->endpoint, endpoint, len + 1);
	e->reg = r;
	e->refs = 1;
	pthread_cond_init(&e->cond, NULL);
	lc_init(&e->m, &r->opts, &r->clock);
	r->entries[r->n++] = e;
	start.gen = e->m.gen;
	lc_step(&e->m, &start);
	after_step(e, acts, &n);
	pthread_mutex_unlock(&r->lock);
	r->exec(e, acts, n, r->arg);
	*out = e;
	return 0;
}

void lcr_put(struct lc_entry *e)
{
	struct lc_registry *r = e->reg;

	pthread_mutex_lock(&r->lock);
	e->refs--;
	free_if_unused_locked(e);
	pthread_mutex_unlock(&r->lock);
}

void lcr_hold(struct lc_entry *e)
{
	pthread_mutex_lock(&e->reg->lock);
	e->refs++;
	pthread_mutex_unlock(&e->reg->lock);
}

void lcr_snapshot(struct lc_entry *e, struct lc *out)
{
	pthread_mutex_lock(&e->reg->lock);
	*out = e->m;
	pthread_mutex_unlock(&e->reg->lock);
}

int lcr_wait(struct lc_entry *e, uint64_t timeout_ns)
{
	struct lc_registry *r = e->reg;
	struct timespec d;
	int ret;

	clock_gettime(CLOCK_REALTIME, &d);
	d.tv_sec += (time_t)(timeout_ns / 1000000000ull);
	d.tv_nsec += (long)(timeout_ns % 1000000000ull);
	if (d.tv_nsec >= 1000000000l) {
		d.tv_sec++;
		d.tv_nsec -= 1000000000l;
	}
	pthread_mutex_lock(&r->lock);
	for (;;) {
		if (e->m.state == LC_READY) {
			ret = 0;
			break;
		}
		if (e->m.state == LC_FAILED || e->m.state == LC_CLOSED || e->m.state == LC_CLOSING) {
			ret = e->result ? e->result : -ESHUTDOWN;
			break;
		}
		if (pthread_cond_timedwait(&e->cond, &r->lock, &d) == ETIMEDOUT) {
			ret = -ETIMEDOUT; /* this caller gives up; the dial goes on */
			break;
		}
	}
	pthread_mutex_unlock(&r->lock);
	return ret;
}

static int feed(struct lc_entry *e, const struct lc_event *ev)
{
	struct lc_registry *r = e->reg;
	struct lc_action acts[LC_MAX_ACTS];
	unsigned n = 0;
	int ret;

	pthread_mutex_lock(&r->lock);
	ret = lc_step(&e->m, ev);
	if (ret >= 0)
		after_step(e, acts, &n);
	pthread_mutex_unlock(&r->lock);
	if (n)
		r->exec(e, acts, n, r->arg);
	return ret;
}

int lcr_feed(struct lc_entry *e, const struct lc_event *ev)
{
	return feed(e, ev);
}

int lcr_force_reconnect(struct lc_entry *e)
{
	struct lc_event ev = { .type = LC_FORCE_RECONNECT };

	pthread_mutex_lock(&e->reg->lock);
	ev.gen = e->m.gen;
	pthread_mutex_unlock(&e->reg->lock);
	return feed(e, &ev);
}

void lcr_remove(struct lc_entry *e)
{
	struct lc_registry *r = e->reg;

	pthread_mutex_lock(&r->lock);
	/* only if it is still this very entry */
	if (!e->removed)
		unlink_locked(e);
	free_if_unused_locked(e);
	pthread_mutex_unlock(&r->lock);
}
