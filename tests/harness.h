/*
 * tests/harness.h - what every test program shares.
 *
 * Each test program is a CUnit registry run by harness_main().  It ends
 * with one machine-readable line that tests/run-tests.sh sums:
 *     RESULT <program> passed=N failed=N skipped=N
 * CUnit has no skip, so a test that cannot run here calls
 * HARNESS_SKIP("why") and returns; it is counted as skipped, never passed.
 */
#ifndef TESTS_HARNESS_H
#define TESTS_HARNESS_H

#include <CUnit/CUnit.h>
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
