/*
 * tests/harness.c - runs a test program's CUnit suites and prints the
 * RESULT line (see harness.h).  argv[1], if given, runs only the suite or
 * test whose name it matches.
 */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

static unsigned skipped;

void harness_skip(const char *test, const char *why)
{
	printf("\n  SKIP %s: %s\n", test, why);
	fflush(stdout);
	skipped++;
}

uint64_t harness_seed(const char *what)
{
	const char *e = getenv("SHMB_TEST_SEED");
	uint64_t s;

	if (e && *e)
		s = strtoull(e, NULL, 0);
	else {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		s = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20);
	}
	if (!s)
		s = 1;
	printf("\n  seed for %s: SHMB_TEST_SEED=%llu\n", what, (unsigned long long)s);
	return s;
}

double harness_scale(void)
{
	const char *e = getenv("SHMB_TEST_SCALE");
	double d = e ? strtod(e, NULL) : 1.0;

	return d > 0 ? d : 1.0;
}

int harness_main(const char *program, const struct harness_suite *suites, int argc, char **argv)
{
	const char *only = argc > 1 ? argv[1] : getenv("SHMB_TEST_ONLY");
	unsigned run, failed;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	for (const struct harness_suite *s = suites; s->name; s++) {
		CU_pSuite cs = NULL;

		for (const struct harness_test *t = s->tests; t->name; t++) {
			if (only && strcmp(only, s->name) && strcmp(only, t->name))
				continue;
			if (!cs)
				cs = CU_add_suite(s->name, NULL, NULL);
			if (!cs || !CU_add_test(cs, t->name, t->fn))
				return 2;
		}
	}
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	run = CU_get_number_of_tests_run();
	failed = CU_get_number_of_tests_failed();
	CU_cleanup_registry();
	printf("RESULT %s passed=%u failed=%u skipped=%u\n", program,
	       run - failed - skipped, failed, skipped);
	return failed ? 1 : 0;
}
