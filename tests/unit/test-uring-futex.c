/*
 * tests/unit/test-uring-futex.c - the hand-made io_uring futex operations
 * (broker/uring-futex.h) against plain futex(2) in another process, as the
 * broker will use them: it waits in its ring, clients wake with futex(2).
 * Skipped, saying why, on a kernel without IORING_OP_FUTEX_*.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "broker/uring-futex.h"
#include "harness.h"
#include "shm/atomics.h"
#include "shm/futex.h"

struct shared {
	uint32_t word;
	uint32_t waiters;
	uint32_t ready;
};

static bool setup(struct io_uring *ring, struct shared **s)
{
	if (io_uring_queue_init(8, ring, 0) < 0) {
		HARNESS_SKIP("io_uring_queue_init failed: io_uring unavailable here");
		return false;
	}
	if (!uring_futex_supported(ring)) {
		io_uring_queue_exit(ring);
		HARNESS_SKIP("kernel has no IORING_OP_FUTEX_WAIT/WAKE (needs 6.7+); the broker falls back");
		return false;
	}
	*s = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CU_ASSERT_FATAL(*s != MAP_FAILED);
	memset(*s, 0, sizeof(**s));
	return true;
}

/* Submit one wait with a linked timeout of ms, then raise *armed (the
 * wait is queued in the kernel once submitted); return the wait's result. */
static int wait_with_timeout(struct io_uring *ring, const uint32_t *word, uint32_t expected, long ms,
			     uint32_t *armed)
{
	struct __kernel_timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 };
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
	struct io_uring_cqe *cqe;
	int res = 1, seen = 0;

	uring_prep_futex_wait(sqe, word, expected);
	sqe->flags |= IOSQE_IO_LINK;
	sqe->user_data = 1;
	sqe = io_uring_get_sqe(ring);
	io_uring_prep_link_timeout(sqe, &ts, 0);
	sqe->user_data = 2;
	CU_ASSERT_FATAL(io_uring_submit(ring) == 2);
	if (armed)
		store_release(armed, 1);
	while (seen < 2 && io_uring_wait_cqe(ring, &cqe) == 0) {
		if (cqe->user_data == 1)
			res = cqe->res;
		seen++;
		io_uring_cqe_seen(ring, cqe);
	}
	return res;
}

static void test_ring_wait_woken_by_plain_futex(void)
{
	struct io_uring ring;
	struct shared *s;
	pid_t pid;
	int st;

	if (!setup(&ring, &s))
		return;
	s->waiters = 1; /* the ring's wait counts as a sleeper */
	pid = fork();
	if (pid == 0) {
		/* wake once the parent's wait is submitted, hence queued (its
		 * own wait gives up after 10 s; so does this one) */
		if (!TRY_WAIT_FOR(load_acquire(&s->ready), 10000))
			_exit(1);
		wake_signal(&s->word, &s->waiters);
		_exit(0);
	}
	CU_ASSERT(wait_with_timeout(&ring, &s->word, 0, 10000, &s->ready) == 0);
	CU_ASSERT(s->word == 1);
	waitpid(pid, &st, 0);
	io_uring_queue_exit(&ring);
	munmap(s, 4096);
}

static void test_ring_wait_word_already_changed(void)
{
	struct io_uring ring;
	struct shared *s;

	if (!setup(&ring, &s))
		return;
	s->word = 5;
	CU_ASSERT(wait_with_timeout(&ring, &s->word, 4, 5000, NULL) == -EAGAIN);
	io_uring_queue_exit(&ring);
	munmap(s, 4096);
}

static void test_ring_wait_times_out(void)
{
	struct io_uring ring;
	struct shared *s;
	uint64_t t0 = clock_mono_ns();

	if (!setup(&ring, &s))
		return;
	CU_ASSERT(wait_with_timeout(&ring, &s->word, 0, 30, NULL) == -ECANCELED);
	CU_ASSERT(clock_mono_ns() - t0 >= 30 * 1000000ull);
	io_uring_queue_exit(&ring);
	munmap(s, 4096);
}

/* One FUTEX_WAKE through the ring: how many it woke. */
static int ring_wake(struct io_uring *ring, uint32_t *word)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
	struct io_uring_cqe *cqe;
	int woken;

	uring_prep_futex_wake(sqe, word, 1);
	io_uring_submit(ring);
	CU_ASSERT_FATAL(io_uring_wait_cqe(ring, &cqe) == 0);
	CU_ASSERT(cqe->res >= 0);
	woken = cqe->res;
	io_uring_cqe_seen(ring, cqe);
	return woken;
}

static void test_ring_wake_reaches_plain_waiter(void)
{
	struct io_uring ring;
	struct shared *s;
	pid_t pid;
	int st, woken = 0;

	if (!setup(&ring, &s))
		return;
	pid = fork();
	if (pid == 0) {
		struct timespec d = deadline_in_ns(10ull * 1000000000ull);

		fetch_add_relaxed(&s->waiters, 1);
		_exit(futex_wait(&s->word, 0, &d) == 0 ? 0 : 1);
	}
	/* keep waking until the child, once asleep, is woken (bounded) */
	WAIT_FOR((woken = ring_wake(&ring, &s->word)) != 0, 10000);
	CU_ASSERT(woken == 1);
	waitpid(pid, &st, 0);
	CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	io_uring_queue_exit(&ring);
	munmap(s, 4096);
}

static const struct harness_test tests[] = {
	{ "ring_wait_woken_by_plain_futex", test_ring_wait_woken_by_plain_futex },
	{ "ring_wait_word_already_changed", test_ring_wait_word_already_changed },
	{ "ring_wait_times_out", test_ring_wait_times_out },
	{ "ring_wake_reaches_plain_waiter", test_ring_wake_reaches_plain_waiter },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "uring-futex", tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	return harness_main("test-uring-futex", suites, argc, argv);
}
