/*
 * tests/unit/test-registry.c - single flight around the lifecycle machine
 * (docs/design/lifecycle.md behaviours 11, 14, 15, 16, 23), with real
 * threads.  Dials are completed by the test itself, so nothing depends on
 * timing except the one timeout that is the behaviour under test.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "libclient/registry.h"
#include "shm/atomics.h"
#include "shm/futex.h"

static uint64_t now_fn(void *a)
{
	(void)a;
	return clock_mono_ns();
}

static uint32_t rand_fn(void *a)
{
	(void)a;
	return 0x80000000u;
}

static uint32_t executed; /* actions handed to the owner */

static void exec_fn(struct lc_entry *e, const struct lc_action *acts, unsigned n, void *arg)
{
	(void)e;
	(void)acts;
	(void)arg;
	fetch_add_relaxed(&executed, n);
}

static void reg_init(struct lc_registry *r)
{
	struct lc_opts o = { .skip_resolve = true };
	struct lc_clock c = { now_fn, rand_fn, NULL };

	CU_ASSERT_FATAL(lcr_init(r, &o, &c, exec_fn, NULL) == 0);
}

static void complete_dial(struct lc_entry *e, int fd)
{
	struct lc_event ev = { .type = LC_CONNECTED, .gen = e->m.gen, .fd = fd };

	CU_ASSERT(lcr_feed(e, &ev) == 0);
	ev = (struct lc_event){ .type = LC_HANDSHAKE_DONE, .gen = e->m.gen };
	CU_ASSERT(lcr_feed(e, &ev) == 0);
}

struct waiter {
	struct lc_registry *r;
	struct lc_entry *e;
	uint64_t timeout_ns;
	int result;
	uint32_t done;
	uint32_t forced; /* its force_reconnect (if any) has been fed */
	bool force;
};

static void *waiter_main(void *arg)
{
	struct waiter *w = arg;

	struct lc_entry *e;

	if (lcr_get(w->r, "broker:/run/shmb/control", &e) < 0) {
		w->result = -999;
		store_release(&w->forced, 1);
	} else {
		if (w->force)
			lcr_force_reconnect(e);
		store_release(&w->e, e);
		store_release(&w->forced, 1);
		w->result = lcr_wait(e, w->timeout_ns);
	}
	store_release(&w->done, 1);
	return NULL;
}

/* 14: two requests for one endpoint -> one dial; a waiter whose timeout
 * expires gets -ETIMEDOUT while the other still connects */
static void test_two_requests_one_dial(void)
{
	struct lc_registry r;
	struct waiter a = { .timeout_ns = 50000000ull }, b = { .timeout_ns = 10000000000ull };
	pthread_t ta, tb;

	reg_init(&r);
	a.r = b.r = &r;
	pthread_create(&ta, NULL, waiter_main, &a);
	pthread_create(&tb, NULL, waiter_main, &b);
	WAIT_FOR(load_acquire(&a.done), 5000);
	CU_ASSERT(a.result == -ETIMEDOUT);
	/* b still waits; the dial completes; b sees it */
	WAIT_FOR_FATAL(load_acquire(&b.forced), 5000);
	CU_ASSERT(a.e == b.e);
	CU_ASSERT(a.e->dials == 1);
	complete_dial(b.e, 10);
	WAIT_FOR(load_acquire(&b.done), 5000);
	CU_ASSERT(b.result == 0);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	CU_ASSERT(a.e->dials == 1);
	lcr_put(a.e);
	lcr_put(b.e);
	lcr_fini(&r);
}

/* 11: three force_reconnects during one blocked dial -> one dial, all
 * three see its result */
static void test_force_reconnects_join(void)
{
	struct lc_registry r;
	struct waiter w[3];
	pthread_t t[3];
	struct lc_entry *e;

	reg_init(&r);
	CU_ASSERT_FATAL(lcr_get(&r, "broker:/run/shmb/control", &e) == 0);
	for (int i = 0; i < 3; i++) {
		w[i] = (struct waiter){ .r = &r, .timeout_ns = 10000000000ull, .force = true };
		pthread_create(&t[i], NULL, waiter_main, &w[i]);
	}
	for (int i = 0; i < 3; i++)
		WAIT_FOR_FATAL(load_acquire(&w[i].forced), 5000);
	CU_ASSERT(e->dials == 1);
	complete_dial(e, 11);
	for (int i = 0; i < 3; i++) {
		WAIT_FOR(load_acquire(&w[i].done), 5000);
		CU_ASSERT(w[i].result == 0);
		pthread_join(t[i], NULL);
		lcr_put(w[i].e);
	}
	CU_ASSERT(e->dials == 1);
	lcr_put(e);
	lcr_fini(&r);
}

/* 15, 16: a permanent error removes the entry and the next request dials
 * anew; removing the old entry later leaves its successor alone */
static void test_permanent_error_and_late_remove(void)
{
	struct lc_registry r;
	struct lc_entry *old, *fresh, *again;
	struct lc_event ev;

	reg_init(&r);
	CU_ASSERT_FATAL(lcr_get(&r, "peer:1", &old) == 0);
	ev = (struct lc_event){ .type = LC_CONNECTED, .gen = old->m.gen, .fd = 12 };
	CU_ASSERT(lcr_feed(old, &ev) == 0);
	ev = (struct lc_event){ .type = LC_HANDSHAKE_FAILED, .gen = old->m.gen, .err = -EPROTONOSUPPORT };
	CU_ASSERT(lcr_feed(old, &ev) == 0);
	CU_ASSERT(lcr_wait(old, 1000000000ull) == -EPROTONOSUPPORT);
	CU_ASSERT(r.n == 0);
	CU_ASSERT_FATAL(lcr_get(&r, "peer:1", &fresh) == 0);
	CU_ASSERT(fresh != old && fresh->dials == 1 && r.n == 1);
	lcr_remove(old); /* a late callback of the old connection */
	CU_ASSERT(r.n == 1);
	CU_ASSERT_FATAL(lcr_get(&r, "peer:1", &again) == 0);
	CU_ASSERT(again == fresh);
	lcr_put(old);
	lcr_put(again);
	lcr_put(fresh);
	/* a malformed endpoint fails at once, before any state exists */
	CU_ASSERT(lcr_get(&r, "", &again) == -EINVAL);
	CU_ASSERT(lcr_get(&r, "has space", &again) == -EINVAL);
	CU_ASSERT(r.n == 1);
	lcr_fini(&r);
}

/* 23: close while a waiter waits for a reconnect -> it returns at once
 * with the closed error */
static void test_close_releases_waiters(void)
{
	struct lc_registry r;
	struct waiter w = { .timeout_ns = 30000000000ull };
	struct lc_entry *e;
	struct lc_event ev;
	pthread_t t;
	uint64_t t0;

	reg_init(&r);
	w.r = &r;
	CU_ASSERT_FATAL(lcr_get(&r, "broker:/run/shmb/control", &e) == 0);
	/* the peer is away: the machine backs off and the waiter waits */
	ev = (struct lc_event){ .type = LC_CONNECT_FAILED, .gen = e->m.gen, .err = -ECONNREFUSED };
	CU_ASSERT(lcr_feed(e, &ev) == 0);
	CU_ASSERT(e->m.state == LC_BACKOFF);
	pthread_create(&t, NULL, waiter_main, &w);
	WAIT_FOR_FATAL(load_acquire(&w.forced), 5000);
	t0 = clock_mono_ns();
	ev = (struct lc_event){ .type = LC_CLOSE, .gen = e->m.gen };
	CU_ASSERT(lcr_feed(e, &ev) == 0);
	WAIT_FOR(load_acquire(&w.done), 5000);
	CU_ASSERT(w.result == -ESHUTDOWN);
	CU_ASSERT(clock_mono_ns() - t0 < 1000000000ull); /* at once, not at its 30 s timeout */
	pthread_join(t, NULL);
	lcr_put(w.e);
	lcr_put(e);
	lcr_fini(&r);
}

static const struct harness_test tests[] = {
	{ "two_requests_one_dial", test_two_requests_one_dial },
	{ "force_reconnects_join", test_force_reconnects_join },
	{ "permanent_error_and_late_remove", test_permanent_error_and_late_remove },
	{ "close_releases_waiters", test_close_releases_waiters },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "registry", tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	return harness_main("test-registry", suites, argc, argv);
}
