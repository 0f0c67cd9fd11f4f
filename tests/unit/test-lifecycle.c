/*
 * tests/unit/test-lifecycle.c - the lifecycle machine's pure core, driven
 * with a stepped clock and fixed jitter: the behaviours of
 * docs/design/lifecycle.md that belong to the core (1-10, 12, 13, 17, 18),
 * and a randomized run of 10^5 event sequences checking the invariants after
 * every step.  (The single-flight registry, 11 and 14-16, and the replay
 * rules, 19-24, have their own modules.)
 */
#include <errno.h>
#include <string.h>

#include "harness.h"
#include "libclient/lifecycle.h"

struct fx {
	struct lc m;
	uint64_t t;
	uint32_t rnd;
};

static uint64_t fnow(void *a)
{
	return ((struct fx *)a)->t;
}

static uint32_t frand(void *a)
{
	return ((struct fx *)a)->rnd;
}

static void fx_init(struct fx *f, bool skip_resolve)
{
	struct lc_opts o = { .skip_resolve = skip_resolve };
	struct lc_clock c = { fnow, frand, f };

	memset(f, 0, sizeof(*f));
	f->t = 1000000000ull;
	f->rnd = 0x80000000u; /* no jitter */
	CU_ASSERT_FATAL(lc_init(&f->m, &o, &c) == 0);
}

static int step(struct fx *f, enum lc_ev type, int err, int fd)
{
	struct lc_event ev = { .type = type, .gen = f->m.gen, .err = err, .fd = fd };

	return lc_step(&f->m, &ev);
}

static int step_gen(struct fx *f, enum lc_ev type, uint32_t gen, int err, int fd)
{
	struct lc_event ev = { .type = type, .gen = gen, .err = err, .fd = fd };

	return lc_step(&f->m, &ev);
}

static int n_act(const struct fx *f, enum lc_act_type t)
{
	int n = 0;

	for (unsigned i = 0; i < f->m.nact; i++)
		n += f->m.act[i].type == t;
	return n;
}

static int n_mon(const struct fx *f, enum lc_mon_type t)
{
	int n = 0;

	for (unsigned i = 0; i < f->m.nact; i++)
		n += f->m.act[i].type == LC_ACT_MONITOR && f->m.act[i].mon == t;
	return n;
}

static const struct lc_action *find_act(const struct fx *f, enum lc_act_type t)
{
	for (unsigned i = 0; i < f->m.nact; i++)
		if (f->m.act[i].type == t)
			return &f->m.act[i];
	return NULL;
}

/* IDLE -> READY on fd */
static void to_ready(struct fx *f, int fd)
{
	CU_ASSERT_FATAL(step(f, LC_START, 0, -1) == 0);
	if (f->m.state == LC_RESOLVING)
		CU_ASSERT_FATAL(step(f, LC_RESOLVED, 0, -1) == 0);
	CU_ASSERT_FATAL(step(f, LC_CONNECTED, 0, fd) == 0);
	CU_ASSERT_FATAL(step(f, LC_HANDSHAKE_DONE, 0, -1) == 0);
	CU_ASSERT_FATAL(f->m.state == LC_READY);
}

/* 1: lost twice -> one disconnected, one redial; close twice -> one
 * disconnected, no redial */
static void test_lost_and_close_idempotent(void)
{
	struct fx f;
	uint32_t g;

	fx_init(&f, true);
	to_ready(&f, 7);
	g = f.m.gen;
	CU_ASSERT(step(&f, LC_IO_ERROR, -ECONNRESET, -1) == 0);
	CU_ASSERT(n_mon(&f, LC_MON_DISCONNECTED) == 1);
	CU_ASSERT(n_act(&f, LC_ACT_CLOSE_FD) == 1 && find_act(&f, LC_ACT_CLOSE_FD)->fd == 7);
	CU_ASSERT(n_act(&f, LC_ACT_TIMER) == 1);
	CU_ASSERT(step_gen(&f, LC_IO_ERROR, g, -EPIPE, -1) == 1); /* the second: dropped */
	CU_ASSERT(f.m.nact == 0);

	fx_init(&f, true);
	to_ready(&f, 8);
	CU_ASSERT(step(&f, LC_CLOSE, 0, -1) == 0);
	CU_ASSERT(n_mon(&f, LC_MON_DISCONNECTED) == 1 && n_act(&f, LC_ACT_CLOSE_FD) == 1);
	CU_ASSERT(n_act(&f, LC_ACT_TIMER) == 0 && f.m.state == LC_CLOSED);
	CU_ASSERT(step(&f, LC_CLOSE, 0, -1) == 0);
	CU_ASSERT(f.m.nact == 0);
}

/* 2: lost before READY -> a redial */
static void test_lost_before_ready(void)
{
	struct fx f;

	fx_init(&f, true);
	CU_ASSERT(step(&f, LC_START, 0, -1) == 0);
	CU_ASSERT(step(&f, LC_CONNECTED, 0, 5) == 0);
	CU_ASSERT(step(&f, LC_HANDSHAKE_FAILED, -ECONNRESET, -1) == 0);
	CU_ASSERT(f.m.state == LC_BACKOFF);
	CU_ASSERT(n_act(&f, LC_ACT_CLOSE_FD) == 1 && n_act(&f, LC_ACT_TIMER) == 1);
	CU_ASSERT(n_act(&f, LC_ACT_WAKE) == 0); /* waiters keep waiting */
}

/* 3: refused transitions change nothing */
static void test_refused_transitions(void)
{
	struct fx f;
	struct lc before;

	fx_init(&f, true);
	to_ready(&f, 3);
	before = f.m;
	CU_ASSERT(step(&f, LC_CONNECTED, 0, -1) == -EINVAL); /* READY -> HANDSHAKING */
	CU_ASSERT(step(&f, LC_START, 0, -1) == -EINVAL);
	CU_ASSERT(f.m.state == before.state && f.m.gen == before.gen && f.m.fd == before.fd);
	CU_ASSERT(step(&f, LC_CLOSE, 0, -1) == 0);
	CU_ASSERT(step(&f, LC_HANDSHAKE_DONE, 0, -1) == -EINVAL); /* CLOSED -> READY */
	CU_ASSERT(step(&f, LC_FORCE_RECONNECT, 0, -1) == -EINVAL);
	CU_ASSERT(f.m.state == LC_CLOSED);
	fx_init(&f, true);
	CU_ASSERT(step(&f, LC_FORCE_RECONNECT, 0, -1) == -EINVAL); /* IDLE */
	CU_ASSERT(step(&f, LC_TIMER, 0, -1) == -EINVAL);
	CU_ASSERT(f.m.state == LC_IDLE);
}

/* 4: handshake_succeeded comes before the connection is used */
static void test_handshake_succeeded_first(void)
{
	struct fx f;
	int mon = -1, wk = -1;

	fx_init(&f, true);
	CU_ASSERT(step(&f, LC_START, 0, -1) == 0);
	CU_ASSERT(step(&f, LC_CONNECTED, 0, 4) == 0);
	CU_ASSERT(step(&f, LC_HANDSHAKE_DONE, 0, -1) == 0);
	for (unsigned i = 0; i < f.m.nact; i++) {
		if (f.m.act[i].type == LC_ACT_MONITOR && f.m.act[i].mon == LC_MON_HANDSHAKE_SUCCEEDED)
			mon = (int)i;
		if (f.m.act[i].type == LC_ACT_WAKE)
			wk = (int)i;
	}
	CU_ASSERT(mon >= 0 && wk > mon);
}

/* 5, 8, 9: no listener -> attempting once, connect_failed once, growing
 * back-off capped; then the peer appears and the machine connects */
static void test_dead_peer_then_alive(void)
{
	uint64_t expect = 100000000ull;
	int attempting = 0, failed_said = 0;
	struct fx f;

	fx_init(&f, true);
	CU_ASSERT(step(&f, LC_START, 0, -1) == 0);
	attempting += n_mon(&f, LC_MON_ATTEMPTING);
	for (int i = 0; i < 12; i++) {
		const struct lc_action *tm;

		CU_ASSERT_FATAL(step(&f, LC_CONNECT_FAILED, -ECONNREFUSED, -1) == 0);
		failed_said += n_mon(&f, LC_MON_CONNECT_FAILED);
		CU_ASSERT(f.m.state == LC_BACKOFF);
		tm = find_act(&f, LC_ACT_TIMER);
		CU_ASSERT_FATAL(tm != NULL);
		/* 100, 200, 400 ... ms, capped at 10 s, timed from the attempt's start */
		CU_ASSERT(tm->ns == expect);
		expect = expect * 2 > 10000000000ull ? 10000000000ull : expect * 2;
		f.t += tm->ns;
		CU_ASSERT(step(&f, LC_TIMER, 0, -1) == 0);
		attempting += n_mon(&f, LC_MON_ATTEMPTING);
	}
	CU_ASSERT(attempting == 1);
	CU_ASSERT(failed_said == 1);
	CU_ASSERT(step(&f, LC_CONNECTED, 0, 9) == 0);
	CU_ASSERT(step(&f, LC_HANDSHAKE_DONE, 0, -1) == 0);
	CU_ASSERT(f.m.state == LC_READY && f.m.failures == 0);
}

/* 9: 10 000 jittered delays lie within +-30 % */
static void test_jitter_bounds(void)
{
	uint64_t s = harness_seed("jitter");
	struct fx f;

	fx_init(&f, true);
	for (int i = 0; i < 10000; i++) {
		unsigned n = (unsigned)(harness_rand(&s) % 12);
		uint64_t base = 100000000ull << n, d;

		if (base > 10000000000ull)
			base = 10000000000ull;
		f.rnd = (uint32_t)harness_rand(&s);
		d = lc_delay(&f.m, n);
		CU_ASSERT_FATAL(d >= base * 7 / 10 && d <= base * 13 / 10);
	}
}

/* 6, 7: a reset mid-handshake or a silent peer (the owner's handshake
 * deadline) -> a redial, and a later healthy peer gets the connection */
static void test_handshake_failures_redial(void)
{
	struct fx f;

	fx_init(&f, false);
	CU_ASSERT(step(&f, LC_START, 0, -1) == 0);
	CU_ASSERT(step(&f, LC_RESOLVED, 0, -1) == 0);
	CU_ASSERT(step(&f, LC_CONNECTED, 0, 11) == 0);
	CU_ASSERT(step(&f, LC_HANDSHAKE_FAILED, -ECONNRESET, -1) == 0);
	CU_ASSERT(n_mon(&f, LC_MON_HANDSHAKE_FAILED) == 1 && n_mon(&f, LC_MON_DISCONNECTED) == 1);
	CU_ASSERT(f.m.state == LC_BACKOFF);
	f.t += find_act(&f, LC_ACT_TIMER)->ns;
	CU_ASSERT(step(&f, LC_TIMER, 0, -1) == 0);
	/* 10: resolved again before the attempt */
	CU_ASSERT(n_act(&f, LC_ACT_RESOLVE) == 1);
	CU_ASSERT(step(&f, LC_RESOLVED, 0, -1) == 0);
	CU_ASSERT(step(&f, LC_CONNECTED, 0, 12) == 0);
	CU_ASSERT(step(&f, LC_HANDSHAKE_FAILED, -ETIMEDOUT, -1) == 0); /* said nothing */
	CU_ASSERT(f.m.state == LC_BACKOFF);
	f.t += find_act(&f, LC_ACT_TIMER)->ns;
	CU_ASSERT(step(&f, LC_TIMER, 0, -1) == 0);
	CU_ASSERT(step(&f, LC_RESOLVE_FAILED, -EAGAIN, -1) == 0); /* 10: a failed attempt */
	CU_ASSERT(f.m.state == LC_BACKOFF && f.m.failures == 3);
	f.t += find_act(&f, LC_ACT_TIMER)->ns;
	CU_ASSERT(step(&f, LC_TIMER, 0, -1) == 0);
	CU_ASSERT(step(&f, LC_RESOLVED, 0, -1) == 0);
	CU_ASSERT(step(&f, LC_CONNECTED, 0, 13) == 0);
	CU_ASSERT(step(&f, LC_HANDSHAKE_DONE, 0, -1) == 0);
	CU_ASSERT(f.m.state == LC_READY && f.m.fd == 13);
	/* a permanent error (wrong version) goes to FAILED and answers waiters */
	fx_init(&f, true);
	CU_ASSERT(step(&f, LC_START, 0, -1) == 0);
	CU_ASSERT(step(&f, LC_CONNECTED, 0, 14) == 0);
	CU_ASSERT(step(&f, LC_HANDSHAKE_FAILED, -EPROTONOSUPPORT, -1) == 0);
	CU_ASSERT(f.m.state == LC_FAILED && n_act(&f, LC_ACT_WAKE) == 1);
	CU_ASSERT(find_act(&f, LC_ACT_WAKE)->err == -EPROTONOSUPPORT);
}

/* 12, 13: a read and a write error of one generation -> one reconnect;
 * an error of an older generation is dropped */
static void test_errors_by_generation(void)
{
	struct fx f;
	uint32_t old;

	fx_init(&f, true);
	to_ready(&f, 20);
	old = f.m.gen;
	CU_ASSERT(step(&f, LC_IO_ERROR, -EPIPE, -1) == 0);
	CU_ASSERT(step_gen(&f, LC_IO_ERROR, old, -ECONNRESET, -1) == 1);
	CU_ASSERT(f.m.first_reason == -EPIPE); /* the first reason wins */
	f.t += 10000000000ull;
	CU_ASSERT(step(&f, LC_TIMER, 0, -1) == 0);
	CU_ASSERT(step(&f, LC_CONNECTED, 0, 21) == 0);
	CU_ASSERT(step(&f, LC_HANDSHAKE_DONE, 0, -1) == 0);
	CU_ASSERT(step_gen(&f, LC_IO_ERROR, old, -EPIPE, -1) == 1); /* stale */
	CU_ASSERT(f.m.state == LC_READY && f.m.fd == 21);
	CU_ASSERT(f.m.dropped == 2);
}

/* a long-lived connection that drops redials at once (delay timed from
 * the previous attempt's start) */
static void test_long_lived_redials_at_once(void)
{
	struct fx f;

	fx_init(&f, true);
	to_ready(&f, 30);
	f.t += 3600ull * 1000000000ull;
	CU_ASSERT(step(&f, LC_IO_ERROR, -ECONNRESET, -1) == 0);
	CU_ASSERT(find_act(&f, LC_ACT_TIMER) && find_act(&f, LC_ACT_TIMER)->ns == 0);
}

/* 17, 18: close during CONNECTING aborts at once; a dial completing after
 * that has its fd closed; no fd is left open */
static void test_close_aborts_attempt(void)
{
	struct fx f;
	uint32_t g;

	fx_init(&f, true);
	CU_ASSERT(step(&f, LC_START, 0, -1) == 0);
	g = f.m.gen;
	CU_ASSERT(step(&f, LC_CLOSE, 0, -1) == 0);
	CU_ASSERT(n_act(&f, LC_ACT_ABORT) == 1 && f.m.state == LC_CLOSING);
	CU_ASSERT(n_act(&f, LC_ACT_WAKE) == 1 && find_act(&f, LC_ACT_WAKE)->err == -ESHUTDOWN);
	CU_ASSERT(step_gen(&f, LC_CONNECTED, g, 0, 40) == 0); /* completes anyway */
	CU_ASSERT(n_act(&f, LC_ACT_CLOSE_FD) == 1 && find_act(&f, LC_ACT_CLOSE_FD)->fd == 40);
	CU_ASSERT(f.m.state == LC_CLOSED && f.m.fd < 0);
	/* close during HANDSHAKING closes the fd it holds */
	fx_init(&f, true);
	CU_ASSERT(step(&f, LC_START, 0, -1) == 0);
	CU_ASSERT(step(&f, LC_CONNECTED, 0, 41) == 0);
	CU_ASSERT(step(&f, LC_CLOSE, 0, -1) == 0);
	CU_ASSERT(find_act(&f, LC_ACT_CLOSE_FD) && find_act(&f, LC_ACT_CLOSE_FD)->fd == 41);
	CU_ASSERT(f.m.state == LC_CLOSED);
}

/* force_reconnect: tears down and redials in READY, fires at once in
 * BACKOFF, joins in CONNECTING (docs/design/lifecycle.md) */
static void test_force_reconnect(void)
{
	struct fx f;

	fx_init(&f, true);
	to_ready(&f, 50);
	CU_ASSERT(step(&f, LC_FORCE_RECONNECT, 0, -1) == 0);
	CU_ASSERT(n_act(&f, LC_ACT_CLOSE_FD) == 1 && n_act(&f, LC_ACT_CONNECT) == 1);
	CU_ASSERT(f.m.state == LC_CONNECTING);
	CU_ASSERT(step(&f, LC_FORCE_RECONNECT, 0, -1) == 0);
	CU_ASSERT(f.m.nact == 0 && f.m.state == LC_CONNECTING); /* joined */
	CU_ASSERT(step(&f, LC_CONNECT_FAILED, -ECONNREFUSED, -1) == 0);
	CU_ASSERT(step(&f, LC_FORCE_RECONNECT, 0, -1) == 0);
	CU_ASSERT(f.m.state == LC_CONNECTING && f.m.failures == 0);
}

/*
 * 10^5 random event sequences: after every step, at most one attempt is
 * in flight, every fd handed in is closed exactly once or held, states
 * stay in the table, and whenever the machine reaches READY, FAILED or
 * CLOSED the waiters are answered.
 */
static void test_randomized_invariants(void)
{
	uint64_t s = harness_seed("lifecycle"), runs = (uint64_t)(100000 * harness_scale());
	uint64_t steps = 0, refused = 0;

	for (uint64_t run = 0; run < runs; run++) {
		struct fx f;
		int open_fds = 0, next_fd = 100;

		fx_init(&f, harness_rand(&s) & 1);
		for (int k = 0; k < 24; k++) {
			enum lc_ev ev = (enum lc_ev)(harness_rand(&s) % (LC_ABORTED + 1));
			enum lc_state before = f.m.state;
			uint32_t gen = f.m.gen - (harness_rand(&s) % 4 == 0 ? 1 : 0);
			int fd = ev == LC_CONNECTED ? next_fd++ : -1, rc;
			static const int errs[] = { -ECONNRESET, -ECONNREFUSED, -ETIMEDOUT, -EPROTO };

			if (fd >= 0)
				open_fds++;
			f.t += harness_rand(&s) % 3000000000ull;
			f.rnd = (uint32_t)harness_rand(&s);
			rc = step_gen(&f, ev, gen, errs[harness_rand(&s) % 4], fd);
			steps++;
			if (rc == -EINVAL) {
				refused++;
				CU_ASSERT_FATAL(f.m.state == before && f.m.nact == 0);
				if (fd >= 0)
					open_fds--; /* refused: the owner keeps and closes it */
				continue;
			}
			for (unsigned i = 0; i < f.m.nact; i++)
				if (f.m.act[i].type == LC_ACT_CLOSE_FD)
					open_fds--;
			/* every fd is held by the machine or closed */
			CU_ASSERT_FATAL(open_fds == (f.m.fd >= 0 ? 1 : 0));
			/* a connection fd only in HANDSHAKING or READY */
			CU_ASSERT_FATAL((f.m.fd >= 0) == (f.m.state == LC_HANDSHAKING || f.m.state == LC_READY));
			/* at most one attempt in flight: one dial action per step */
			CU_ASSERT_FATAL(n_act(&f, LC_ACT_CONNECT) + n_act(&f, LC_ACT_RESOLVE) <= 1);
			CU_ASSERT_FATAL(f.m.state <= LC_CLOSED);
			if (f.m.state != before &&
			    (f.m.state == LC_READY || f.m.state == LC_FAILED ||
			     (f.m.state == LC_CLOSED && before != LC_CLOSING)))
				CU_ASSERT_FATAL(n_act(&f, LC_ACT_WAKE) == 1);
		}
	}
	printf("\n  %llu random sequences, %llu steps (%llu refused), invariants held\n",
	       (unsigned long long)runs, (unsigned long long)steps, (unsigned long long)refused);
}

static const struct harness_test lc_tests[] = {
	{ "lost_and_close_idempotent", test_lost_and_close_idempotent },
	{ "lost_before_ready", test_lost_before_ready },
	{ "refused_transitions", test_refused_transitions },
	{ "handshake_succeeded_first", test_handshake_succeeded_first },
	{ "dead_peer_then_alive", test_dead_peer_then_alive },
	{ "jitter_bounds", test_jitter_bounds },
	{ "handshake_failures_redial", test_handshake_failures_redial },
	{ "errors_by_generation", test_errors_by_generation },
	{ "long_lived_redials_at_once", test_long_lived_redials_at_once },
	{ "close_aborts_attempt", test_close_aborts_attempt },
	{ "force_reconnect", test_force_reconnect },
	{ "randomized_invariants", test_randomized_invariants },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "lifecycle", lc_tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	return harness_main("test-lifecycle", suites, argc, argv);
}
