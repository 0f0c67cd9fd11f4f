/*
 * tests/harness.c - runs a test program's CUnit suites and prints the
 * RESULT line (see harness.h).  argv[1], if given, runs only the suite or
 * test whose name it matches.  Also the waits (WAIT_FOR) and the per-test
 * alarm.  It must never depend on the code under test: its clock is its
 * own, so a broken shm/ clock cannot hide a hang.
 */
#include <CUnit/Basic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

/* ---- waiting for a condition ---------------------------------------------- */

static uint64_t harness_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void harness_wait_begin(struct harness_wait *w, uint64_t deadline_ms)
{
	w->until_ns = harness_now_ns() + deadline_ms * 1000000ull;
	w->sleep_us = 50;
}

bool harness_wait_more(struct harness_wait *w)
{
	if (harness_now_ns() >= w->until_ns)
		return false;
	usleep(w->sleep_us);
	if (w->sleep_us < 1000)
		w->sleep_us = w->sleep_us * 2 > 1000 ? 1000 : w->sleep_us * 2;
	return true;
}

/* ---- the per-test alarm ---------------------------------------------------- */

/* Written before the alarm is armed, read by the handler: only write(2)
 * and _exit(2) there, both async-signal-safe. */
static char alarm_msg[300];
static size_t alarm_len;

static void alarm_rang(int sig)
{
	(void)sig;
	if (write(2, alarm_msg, alarm_len) < 0)
		_exit(1);
	_exit(1);
}

/* Seconds scaled like the long tests' sizes (SHMB_TEST_SCALE), never less. */
static unsigned alarm_scaled(unsigned seconds)
{
	double s = harness_scale();

	return s > 1.0 ? (unsigned)(seconds * s) : seconds;
}

void harness_alarm(unsigned seconds)
{
	const char *e = getenv("SHMB_TEST_ALARM");
	CU_pSuite s = CU_get_current_suite();
	CU_pTest t = CU_get_current_test();
	int n;

	if (e && *e && strtoul(e, NULL, 10) == 0)
		return; /* SHMB_TEST_ALARM=0: no alarm (a debugger session) */
	n = snprintf(alarm_msg, sizeof(alarm_msg), "\nTIMEOUT in test %s/%s after %u s\n",
		     s && s->pName ? s->pName : "?", t && t->pName ? t->pName : "?",
		     alarm_scaled(seconds));
	alarm_len = n < 0 ? 0 : (size_t)n < sizeof(alarm_msg) ? (size_t)n : sizeof(alarm_msg) - 1;
	alarm(alarm_scaled(seconds));
}

/* CUnit runs this before each test of a suite. */
static void alarm_arm(void)
{
	const char *e = getenv("SHMB_TEST_ALARM");

	harness_alarm(e && *e ? (unsigned)strtoul(e, NULL, 10) : 120);
}

/* ... and this after it (not after a failed CU_ASSERT_FATAL, so the next
 * test's arm and the end of the run disarm too). */
static void alarm_disarm(void)
{
	alarm(0);
}

int harness_main(const char *program, const struct harness_suite *suites, int argc, char **argv)
{
	const char *only = argc > 1 ? argv[1] : getenv("SHMB_TEST_ONLY");
	unsigned run, failed;

	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGALRM, alarm_rang);
	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	for (const struct harness_suite *s = suites; s->name; s++) {
		CU_pSuite cs = NULL;

		for (const struct harness_test *t = s->tests; t->name; t++) {
			if (only && strcmp(only, s->name) && strcmp(only, t->name))
				continue;
			if (!cs)
				cs = CU_add_suite_with_setup_and_teardown(s->name, NULL, NULL,
									  alarm_arm, alarm_disarm);
			if (!cs || !CU_add_test(cs, t->name, t->fn))
				return 2;
		}
	}
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	alarm(0);
	run = CU_get_number_of_tests_run();
	failed = CU_get_number_of_tests_failed();
	CU_cleanup_registry();
	printf("RESULT %s passed=%u failed=%u skipped=%u\n", program,
	       run - failed - skipped, failed, skipped);
	return failed ? 1 : 0;
}
