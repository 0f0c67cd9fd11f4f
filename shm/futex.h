/*
 * shm/futex.h - futex wait/wake and the counted-waiter protocol.
 *
 * All futexes here are shared (no FUTEX_PRIVATE_FLAG): the words live in
 * memory mapped by two processes, and a private wake never reaches a
 * shared waiter (docs/design/kernel.md).
 *
 * The protocol (docs/design/rings.md, wake-ups).  A wake point is a futex
 * word that the writer bumps and a count of sleepers that waiters keep; in a
 * session they live in different files, since each file has one writer.
 *
 *   writer:  publish data (release) ; word += 1 ; fence_full ;
 *            if waiters != 0: FUTEX_WAKE(word, all)
 *   waiter:  spin up to spin_ns checking ready() ; then loop:
 *            v = word (acquire) ; waiters += 1 ; fence_full ;
 *            if ready(): waiters -= 1, done ;
 *            FUTEX_WAIT(word, v, deadline) ; waiters -= 1
 *
 * Why no wake-up is lost: the two full fences order "store data, load
 * waiters" against "store waiters, load data", so at least one side sees
 * the other.  If the writer sees no waiter, the waiter sees the data.  If
 * the waiter misses the data, the writer sees the count and wakes; the
 * waiter read v before the writer's bump, so FUTEX_WAIT either finds the
 * word changed (-EAGAIN, re-check) or is queued before the wake.
 */
#ifndef SHM_FUTEX_H
#define SHM_FUTEX_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "shm/clock.h"

/* Sleep while *word == expected, until woken or the CLOCK_MONOTONIC
 * deadline (NULL: none).  0 when woken (maybe spuriously), -EAGAIN when
 * the word already differed, -ETIMEDOUT, -EINTR. */
int futex_wait(const uint32_t *word, uint32_t expected, const struct timespec *deadline);

/* Wake up to n sleepers on word; returns how many were woken or -errno. */
int futex_wake(const uint32_t *word, int n);

/* Writer side: bump *word, then wake every sleeper if *waiters says there
 * is one.  Returns 1 when it made the system call, 0 when it did not. */
int wake_signal(uint32_t *word, const uint32_t *waiters);

/* The same, for a single sleeper that announces itself with bits in a
 * flag word: wake only when (*flags & mask). */
int wake_signal_mask(uint32_t *word, const uint32_t *flags, uint32_t mask);

typedef bool (*wake_ready_fn)(void *arg);

/*
 * Waiter side: return 0 as soon as ready(arg) holds; spin for up to spin_ns
 * first, then sleep on word.  -ETIMEDOUT at the deadline (NULL: none).
 * The count of sleepers is incremented only around each sleep.
 */
int wake_wait(const uint32_t *word, uint32_t *waiters, wake_ready_fn ready, void *arg,
	      uint64_t spin_ns, const struct timespec *deadline);

struct timespec deadline_in_ns(uint64_t ns);

#endif
