/*
 * tests/broker-helper.h - start a real shmbd in a fresh SHMB_DIR for a
 * test, wait until it answers, stop it.  No sleeping and hoping: start
 * waits for a successful connect, stop for the exit, each with a deadline.
 */
#ifndef TESTS_BROKER_HELPER_H
#define TESTS_BROKER_HELPER_H

#include <stdbool.h>
#include <sys/types.h>

struct tb {
	char dir[256];
	char log[300];
	pid_t pid;
};

/* Start build/shmbd (found beside the test binary) with extra arguments
 * (NULL-terminated).  0 or -errno. */
int tb_start(struct tb *t, ...);

/* Do this run's brokers run lanes?  They do by default; not when
 * SHMB_TEST_BROKER_ARGS is --no-lanes (test-lib-lanes.sh's relay runs).
 * For a case that passes no lane option of its own. */
bool tb_on_lanes(void);

/* The next tb_start() uses this (existing, empty) directory instead of a
 * fresh one under /dev/shm. */
void tb_use_dir(const char *dir);

/* SIGTERM and wait (deadline 10 s); returns the exit status, or -1. */
int tb_stop(struct tb *t);

/* Remove the directory (after tb_stop). */
void tb_cleanup(struct tb *t);

/* Wait for a child with a deadline; its exit code, 128+signal, or -1. */
int tb_wait_child(pid_t pid, unsigned timeout_ms);

/* Does the broker still run? */
bool tb_alive(const struct tb *t);

/* A bare SOCK_SEQPACKET connection to the control socket (5 s receive
 * timeout), for tests that send raw bytes: the fd, or -1. */
int tb_raw_connect(const struct tb *t);

/* Count lines of the broker's log containing `needle`. */
int tb_log_count(const struct tb *t, const char *needle);

#endif
