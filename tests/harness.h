/*
 * tests/harness.h - what every test program shares.
 *
 * Each test program is a CUnit registry run by harness_main().  It ends
 * with one machine-readable line that tests/run-tests.sh sums:
 *     RESULT <program> passed=N failed=N skipped=N
 * CUnit has no skip, so a test that cannot run here calls
 * HARNESS_SKIP("why") and returns; it is counted as skipped, never passed.
 *
 * No test sleeps and hopes: a test waits for a condition with WAIT_FOR,
 * which fails the test naming the condition if the deadline passes.  Each
 * test runs under an alarm, so a hang ends the program with the test's
 * name instead of running into run-tests.sh's per-program timeout.
 */
#ifndef TESTS_HARNESS_H
#define TESTS_HARNESS_H

#include <CUnit/CUnit.h>
#include <stdbool.h>
#include <stdint.h>

struct harness_test {
	const char *name;
	void (*fn)(void);
};

struct harness_suite {
	const char *name;
	const struct harness_test *tests; /* ends with { NULL, NULL } */
};

int harness_main(const char *program, const struct harness_suite *suites, int argc, char **argv);

void harness_skip(const char *test, const char *why);
#define HARNESS_SKIP(why) harness_skip(__func__, why)

/*
 * Waiting for a condition.  WAIT_FOR(cond, deadline_ms) evaluates cond
 * until it holds or deadline_ms have passed, sleeping a little longer each
 * time (50 us doubling to 1 ms: quick conditions are seen quickly, slow
 * ones cost little CPU).  On timeout it records a CUnit failure naming the
 * condition, file and line.  It evaluates to whether cond held, so a
 * caller can bail out: if (!WAIT_FOR(...)) return;
 * WAIT_FOR_FATAL ends the test on timeout, as CU_ASSERT_FATAL does.
 * TRY_WAIT_FOR records nothing: for helpers that return a result (the
 * caller asserts), for child processes and threads (CUnit's failure list
 * is the main thread's), and for waits whose timeout is not a failure.
 * cond is evaluated at least once, and once more after the last sleep.
 */
struct harness_wait {
	uint64_t until_ns;
	unsigned sleep_us;
};

void harness_wait_begin(struct harness_wait *w, uint64_t deadline_ms);
/* false once the deadline has passed; else sleeps one back-off step */
bool harness_wait_more(struct harness_wait *w);

#define TRY_WAIT_FOR(cond, deadline_ms)                                           \
	({                                                                        \
		struct harness_wait harness_w_;                                   \
		bool harness_held_;                                               \
		harness_wait_begin(&harness_w_, (deadline_ms));                   \
		while (!(harness_held_ = (cond)) && harness_wait_more(&harness_w_)) \
			;                                                         \
		harness_held_;                                                    \
	})

/* the text is made here, not in WAIT_FOR: an argument passed on is
 * macro-expanded first, and the failure should show what the test says */
#define HARNESS_WAIT_ASSERT_(cond, deadline_ms, text, fatal)                      \
	({                                                                        \
		bool harness_ok_ = TRY_WAIT_FOR(cond, deadline_ms);               \
		CU_assertImplementation(harness_ok_, __LINE__, text, __FILE__, "", \
					(fatal));                                 \
		harness_ok_;                                                      \
	})

#define WAIT_FOR(cond, deadline_ms)                                               \
	HARNESS_WAIT_ASSERT_(cond, deadline_ms,                                   \
			     "WAIT_FOR(" #cond ", " #deadline_ms " ms) timed out", CU_FALSE)
#define WAIT_FOR_FATAL(cond, deadline_ms)                                         \
	HARNESS_WAIT_ASSERT_(cond, deadline_ms,                                   \
			     "WAIT_FOR_FATAL(" #cond ", " #deadline_ms " ms) timed out", CU_TRUE)

/*
 * The per-test alarm: SHMB_TEST_ALARM seconds (default 120, 0: none),
 * times SHMB_TEST_SCALE when that is above 1.  When it rings, the program
 * prints "TIMEOUT in test <suite>/<test>" to stderr and exits 1.  A test
 * whose own bounded loops may legitimately run longer calls
 * harness_alarm(seconds) first, saying why; it replaces the default for
 * that test only.  Tests must not use alarm() or SIGALRM themselves.
 */
void harness_alarm(unsigned seconds);

/* A deterministic pseudo-random generator for tests (xorshift64*). */
static inline uint64_t harness_rand(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

/* Seed from SHMB_TEST_SEED or the clock; printed so a failure can be replayed. */
uint64_t harness_seed(const char *what);

/* A scaling knob for long tests: SHMB_TEST_SCALE (default 1.0). */
double harness_scale(void);

#endif
