/*
 * tests/unit/test-futex.c - futex wait/wake and the counted-waiter
 * protocol across real processes.  Every wait has a deadline; no test
 * sleeps and hopes: it waits for a condition it can observe.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "shm/atomics.h"
#include "shm/futex.h"

struct shared {
	uint32_t word;
	uint32_t waiters;
	uint32_t data;
	uint32_t pad;
	uint32_t word2;
	uint32_t waiters2;
	uint64_t counter;
};

static struct shared *shared_new(void)
{
	struct shared *s = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	CU_ASSERT_FATAL(s != MAP_FAILED);
	memset(s, 0, sizeof(*s));
	return s;
}

static bool data_ready(void *arg)
{
	return load_acquire(&((struct shared *)arg)->data) != 0;
}

/* Does /proc say pid sleeps?  (So the wake below really wakes it.) */
static bool proc_sleeping(pid_t pid)
{
	char path[64], buf[512];
	FILE *f;
	char *p;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] == 'S';
}

static int wait_child(pid_t pid, uint64_t timeout_ns)
{
	int st;

	if (TRY_WAIT_FOR(waitpid(pid, &st, WNOHANG) == pid, timeout_ns / 1000000))
		return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	return -1;
}

static void test_signal_without_waiter_skips_syscall(void)
{
	struct shared *s = shared_new();

	CU_ASSERT(wake_signal(&s->word, &s->waiters) == 0);
	CU_ASSERT(s->word == 1);
	s->waiters = 1;
	CU_ASSERT(wake_signal(&s->word, &s->waiters) == 1);
	CU_ASSERT(s->word == 2);
	munmap(s, 4096);
}

static void test_timeout(void)
{
	struct shared *s = shared_new();
	struct timespec d;
	uint64_t t0;
	int r;

	CU_ASSERT(futex_wait(&s->word, 5, NULL) == -EAGAIN);
	t0 = clock_mono_ns();
	d = deadline_in_ns(50 * 1000000ull);
	r = wake_wait(&s->word, &s->waiters, data_ready, s, 10000, &d);
	CU_ASSERT(r == -ETIMEDOUT);
	CU_ASSERT(clock_mono_ns() - t0 >= 50 * 1000000ull);
	CU_ASSERT(clock_mono_ns() - t0 < 5000 * 1000000ull);
	CU_ASSERT(s->waiters == 0);
	d = deadline_in_ns(20 * 1000000ull);
	CU_ASSERT(futex_wait(&s->word, s->word, &d) == -ETIMEDOUT);
	munmap(s, 4096);
}

static void test_blocked_reader_woken_by_one_write(void)
{
	struct shared *s = shared_new();
	pid_t pid = fork();
	uint64_t t0;

	if (pid == 0) {
		struct timespec d = deadline_in_ns(20ull * 1000000000ull);

		_exit(wake_wait(&s->word, &s->waiters, data_ready, s, 0, &d) == 0 ? 0 : 1);
	}
	CU_ASSERT_FATAL(pid > 0);
	/* the child announced itself and is asleep in the kernel */
	WAIT_FOR(proc_sleeping(pid), 5000);
	CU_ASSERT(load_acquire(&s->waiters) == 1);
	t0 = clock_mono_ns();
	store_release(&s->data, 1);
	CU_ASSERT(wake_signal(&s->word, &s->waiters) == 1);
	CU_ASSERT(wait_child(pid, 10ull * 1000000000ull) == 0);
	printf("\n  woken after %.1f us\n", (double)(clock_mono_ns() - t0) / 1000.0);
	CU_ASSERT(s->waiters == 0);
	munmap(s, 4096);
}

struct pp_arg {
	struct shared *s;
	uint64_t want;
};

static bool counter_reached(void *arg)
{
	struct pp_arg *a = arg;

	return load_acquire(&a->s->counter) >= a->want;
}

/* Two processes hand a counter back and forth, sleeping every time. */
static void test_stress_ping_pong(void)
{
	struct shared *s = shared_new();
	const uint64_t rounds = (uint64_t)(20000 * harness_scale());
	uint64_t timeouts = 0;
	pid_t pid = fork();

	if (pid == 0) {
		struct pp_arg a = { s, 0 };

		for (uint64_t i = 0; i < rounds; i++) {
			struct timespec d = deadline_in_ns(5ull * 1000000000ull);

			a.want = 2 * i + 1;
			if (wake_wait(&s->word, &s->waiters, counter_reached, &a, i % 3 ? 0 : 2000, &d))
				_exit(2);
			store_release(&s->counter, 2 * i + 2);
			wake_signal(&s->word2, &s->waiters2);
		}
		_exit(0);
	}
	CU_ASSERT_FATAL(pid > 0);
	{
		struct pp_arg a = { s, 0 };

		for (uint64_t i = 0; i < rounds; i++) {
			struct timespec d = deadline_in_ns(5ull * 1000000000ull);

			store_release(&s->counter, 2 * i + 1);
			wake_signal(&s->word, &s->waiters);
			a.want = 2 * i + 2;
			if (wake_wait(&s->word2, &s->waiters2, counter_reached, &a, i % 5 ? 0 : 1000, &d)) {
				timeouts++;
				break;
			}
		}
	}
	CU_ASSERT(timeouts == 0);
	CU_ASSERT(wait_child(pid, 30ull * 1000000000ull) == 0);
	CU_ASSERT(s->counter == 2 * rounds);
	printf("\n  %llu round trips, no lost wake-up\n", (unsigned long long)rounds);
	munmap(s, 4096);
}

static void *thread_waiter(void *arg)
{
	struct shared *s = arg;
	struct timespec d = deadline_in_ns(20ull * 1000000000ull);

	return (void *)(intptr_t)wake_wait(&s->word, &s->waiters, data_ready, s, 0, &d);
}

/* Waiters are counted: one signal wakes every sleeper. */
static void test_many_waiters_one_signal(void)
{
	struct shared *s = shared_new();
	pthread_t t[4];

	for (int i = 0; i < 4; i++)
		CU_ASSERT_FATAL(pthread_create(&t[i], NULL, thread_waiter, s) == 0);
	WAIT_FOR(load_acquire(&s->waiters) >= 4, 5000);
	CU_ASSERT(load_acquire(&s->waiters) == 4);
	store_release(&s->data, 1);
	wake_signal(&s->word, &s->waiters);
	for (int i = 0; i < 4; i++) {
		void *r;

		pthread_join(t[i], &r);
		CU_ASSERT((intptr_t)r == 0);
	}
	CU_ASSERT(s->waiters == 0);
	munmap(s, 4096);
}

static const struct harness_test futex_tests[] = {
	{ "signal_without_waiter_skips_syscall", test_signal_without_waiter_skips_syscall },
	{ "timeout", test_timeout },
	{ "blocked_reader_woken_by_one_write", test_blocked_reader_woken_by_one_write },
	{ "stress_ping_pong", test_stress_ping_pong },
	{ "many_waiters_one_signal", test_many_waiters_one_signal },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "futex", futex_tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	return harness_main("test-futex", suites, argc, argv);
}
