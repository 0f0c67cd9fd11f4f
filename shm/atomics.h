/*
 * shm/atomics.h - the only memory-ordering primitives shmb uses.
 *
 * Every word shared between processes is read and written through these
 * helpers, never through bare `volatile` or plain loads.  Each call site
 * says in a comment which operation on the other side it pairs with.
 */
#ifndef SHM_ATOMICS_H
#define SHM_ATOMICS_H

#include <stdbool.h>
#include <stdint.h>

/* Pairs with a store_release() of the same word in another process. */
#define load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
/* Publishes every earlier store to a reader that uses load_acquire(). */
#define store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
/* No ordering: a value only this side writes, or a statistic. */
#define load_relaxed(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define store_relaxed(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
/* Orders an earlier store against a later load of another word (Dekker). */
#define fence_full() __atomic_thread_fence(__ATOMIC_SEQ_CST)
/* Orders earlier loads against later loads (re-check after a copy). */
#define fence_acquire() __atomic_thread_fence(__ATOMIC_ACQUIRE)
/* Orders earlier stores against later stores. */
#define fence_release() __atomic_thread_fence(__ATOMIC_RELEASE)

#define fetch_add_relaxed(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
#define fetch_add_release(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELEASE)
#define fetch_sub_relaxed(p, v) __atomic_fetch_sub((p), (v), __ATOMIC_RELAXED)

/*
 * Compare-and-swap with release on success: the commit of a record.  On
 * failure *expected holds the value found (acquire, so a FENCED marker
 * or a foreign record can be inspected).
 */
static inline bool cas_release(uint64_t *p, uint64_t *expected, uint64_t desired)
{
	return __atomic_compare_exchange_n(p, expected, desired, false,
					   __ATOMIC_RELEASE, __ATOMIC_ACQUIRE);
}

/* Sequentially consistent CAS: the consumer's fence-off of a ring slot. */
static inline bool cas_full(uint64_t *p, uint64_t *expected, uint64_t desired)
{
	return __atomic_compare_exchange_n(p, expected, desired, false,
					   __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

#endif
