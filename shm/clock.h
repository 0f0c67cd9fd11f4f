/*
 * shm/clock.h - the one clock everything measures time with: monotonic
 * nanoseconds (deadlines, timeouts, rates), and the wall clock where a
 * time is shown to people or stored (events, segment headers).
 */
#ifndef SHM_CLOCK_H
#define SHM_CLOCK_H

#include <stdint.h>
#include <time.h>

#define NS_PER_MS 1000000ull

static inline uint64_t clock_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t clock_real_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#endif
