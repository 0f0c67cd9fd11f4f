/*
 * broker/uring-futex.h - io_uring futex operations, prepared by hand.
 *
 * Debian 12's liburing (2.3) predates IORING_OP_FUTEX_WAIT/WAKE (kernel
 * 6.7), and its kernel headers (6.1) lack the futex2 flags; this is the one
 * place that knows their numbers and field layout (docs/design/kernel.md):
 *
 *   op    FUTEX_WAIT 51, FUTEX_WAKE 52
 *   fd    futex2 flags: FUTEX2_SIZE_U32 (required), no FUTEX2_PRIVATE since
 *         the words are shared between processes
 *   addr  the 32-bit futex word
 *   off   expected value (wait) / how many to wake (wake)
 *   addr3 bit mask, FUTEX_BITSET_MATCH_ANY (0 is -EINVAL)
 *
 * A wait completes with 0 when woken, -EAGAIN when the word already
 * differed (treat as ready).  A plain futex(2) FUTEX_WAKE from a client
 * wakes it.  Every wait must carry a deadline (a linked timeout): a wait
 * that shared/private flags mismatch would never complete.  Check support
 * with uring_futex_supported() at start-up and fall back where it is
 * missing.
 */
#ifndef BROKER_URING_FUTEX_H
#define BROKER_URING_FUTEX_H

#include <liburing.h>
#include <linux/futex.h>
#include <stdbool.h>
#include <stdint.h>

#define URING_OP_FUTEX_WAIT 51
#define URING_OP_FUTEX_WAKE 52
#ifndef FUTEX2_SIZE_U32
#define FUTEX2_SIZE_U32 0x02
#endif
#ifndef FUTEX_BITSET_MATCH_ANY
#define FUTEX_BITSET_MATCH_ANY 0xffffffff
#endif

static inline void uring_prep_futex_wait(struct io_uring_sqe *sqe, const uint32_t *word,
					 uint32_t expected)
{
	io_uring_prep_rw(URING_OP_FUTEX_WAIT, sqe, FUTEX2_SIZE_U32, word, 0, expected);
	sqe->addr3 = FUTEX_BITSET_MATCH_ANY;
}

static inline void uring_prep_futex_wake(struct io_uring_sqe *sqe, const uint32_t *word, uint32_t n)
{
	io_uring_prep_rw(URING_OP_FUTEX_WAKE, sqe, FUTEX2_SIZE_U32, word, 0, n);
	sqe->addr3 = FUTEX_BITSET_MATCH_ANY;
}

/* Does this kernel's io_uring know both futex operations? */
static inline bool uring_futex_supported(struct io_uring *ring)
{
	struct io_uring_probe *p = io_uring_get_probe_ring(ring);
	bool ok;

	if (!p)
		return false;
	ok = io_uring_opcode_supported(p, URING_OP_FUTEX_WAIT) &&
	     io_uring_opcode_supported(p, URING_OP_FUTEX_WAKE);
	io_uring_free_probe(p);
	return ok;
}

#endif
