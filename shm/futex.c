/*
 * shm/futex.c - the futex system calls (libc does not wrap them) and the
 * counted-waiter protocol described in futex.h.
 *
 * Must never: use a private futex on shared memory; sleep without first
 * announcing itself in the waiter count and re-checking.
 */
#include <errno.h>
#include <sched.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shm/atomics.h"
#include "shm/clock.h"
#include "shm/futex.h"

struct timespec deadline_in_ns(uint64_t ns)
{
	uint64_t t = clock_mono_ns() + ns;

	return (struct timespec){ .tv_sec = (time_t)(t / 1000000000ull),
				  .tv_nsec = (long)(t % 1000000000ull) };
}

int futex_wait(const uint32_t *word, uint32_t expected, const struct timespec *deadline)
{
	/* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline, so a
	 * wait restarted after a spurious wake-up never extends it */
	long r = syscall(SYS_futex, word, FUTEX_WAIT_BITSET, expected, deadline, NULL,
			 FUTEX_BITSET_MATCH_ANY);

	return r == 0 ? 0 : -errno;
}

int futex_wake(const uint32_t *word, int n)
{
	long r = syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0);

	return r < 0 ? -errno : (int)r;
}

int wake_signal(uint32_t *word, const uint32_t *waiters)
{
	/* the release orders the caller's data before the bump */
	fetch_add_release(word, 1);
	/* pairs with the fence in wake_wait(): store word, then load waiters */
	fence_full();
	if (load_relaxed(waiters) == 0)
		return 0;
	futex_wake(word, 0x7fffffff);
	return 1;
}

int wake_signal_mask(uint32_t *word, const uint32_t *flags, uint32_t mask)
{
	fetch_add_release(word, 1);
	/* pairs with the sleeper's fence: set flag, then look at the data */
	fence_full();
	if (!(load_relaxed(flags) & mask))
		return 0;
	futex_wake(word, 0x7fffffff);
	return 1;
}

static bool deadline_passed(const struct timespec *deadline)
{
	struct timespec now;

	if (!deadline)
		return false;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > deadline->tv_sec ||
	       (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

int wake_wait(const uint32_t *word, uint32_t *waiters, wake_ready_fn ready, void *arg,
	      uint64_t spin_ns, const struct timespec *deadline)
{
	uint32_t v;
	int r;

	if (ready(arg))
		return 0;
	if (spin_ns) {
		uint64_t until = clock_mono_ns() + spin_ns;
		unsigned i = 0;

		for (;;) {
			cpu_relax();
			if (ready(arg))
				return 0;
			if ((++i & 63) == 0) {
				if (clock_mono_ns() >= until)
					break;
				/* a long spinner must not starve who it waits for:
				 * where the broker shares this CPU, it runs now (a
				 * short spin, the default 5 us, never yields) */
				if (spin_ns >= 20000)
					sched_yield();
			}
		}
	}
	for (;;) {
		if (deadline_passed(deadline))
			return -ETIMEDOUT;
		/* pairs with fetch_add_release in wake_signal() */
		v = load_acquire(word);
		fetch_add_relaxed(waiters, 1);
		/* pairs with the fence in wake_signal(): store waiters, load data */
		fence_full();
		if (ready(arg)) {
			fetch_sub_relaxed(waiters, 1);
			return 0;
		}
		r = futex_wait(word, v, deadline);
		fetch_sub_relaxed(waiters, 1);
		if (ready(arg))
			return 0;
		if (r == -ETIMEDOUT)
			return r;
		/* woken, changed, interrupted or spurious: check and go again;
		 * anything else (a bad address) would only repeat */
		if (r != 0 && r != -EAGAIN && r != -EINTR)
			return r;
	}
}
