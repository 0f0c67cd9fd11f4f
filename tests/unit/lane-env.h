/*
 * tests/unit/lane-env.h - a broker's register of lanes (broker/lanes.c) in
 * a fresh directory with lanes/ and sessions/, for the tests that play
 * the broker in their own process (test-lanereg, test-lanew).
 */
#ifndef TESTS_LANE_ENV_H
#define TESTS_LANE_ENV_H

#include <stdint.h>

#include "broker/lanes.h"

struct lane_env {
	char dir[64];
	int root, lanes, sessions;
	int sdir[64];          /* sessions/<id> for ids below 64, made on first use */
	struct lanes_reg g;
};

/* Under /tmp, lanes of ring_size bytes by default; CUnit-fatal on failure. */
void lane_env_open(struct lane_env *e, uint64_t ring_size);
/* The register freed, the directory removed. */
void lane_env_close(struct lane_env *e);

#endif
