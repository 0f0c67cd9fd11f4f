/*
 * bench/shmbd.h - a broker of the benchmarks' own: started from the build
 * directory in a fresh directory under /dev/shm (or again on the same
 * one, after a kill), stopped, and its CPU time and memory read.
 */
#ifndef BENCH_SHMBD_H
#define BENCH_SHMBD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "bench/common.h"

extern char bench_dir[64];  /* its SHMB_DIR */
extern pid_t bench_broker;  /* its pid */

/* Start shmbd on the existing directory dir with --quiet and extra (a
 * NULL-terminated argument list, or NULL); returns its pid when it
 * answers.  The others keep one broker in bench_dir; this is for a
 * benchmark that needs two. */
pid_t bench_broker_spawn(const char *dir, const char *const *extra);
/* Start shmbd (extra: NULL-terminated argument list, or NULL) in a fresh
 * directory, or, after bench_broker_kill(), again on the same one; returns
 * when it answers. */
void bench_broker_start(const char *const *extra);
/* SIGKILL it (the directory stays). */
void bench_broker_kill(void);
/* SIGTERM it and wait; remove its directory if `clean`. */
void bench_broker_stop(bool clean);
/* Its CPU time so far, in ns (/proc/PID/schedstat). */
uint64_t bench_broker_cpu_ns(void);
/* Its resident memory, in KiB (VmRSS). */
uint64_t bench_broker_rss_kib(void);
/* Bytes of tmpfs its sessions' files take (allocated blocks). */
uint64_t bench_broker_shm_bytes(void);

struct shmb_client;
struct shmb_session;
/* Connect to the bench broker and open `name` fresh (4 MiB rings). */
struct shmb_session *open_session(struct shmb_client **c, const char *name, unsigned spin_us);
/* The same on the broker of dir. */
struct shmb_session *open_session_in(const char *dir, struct shmb_client **c, const char *name,
				     unsigned spin_us);
/* 64 B round trips through the broker between two processes (topics
 * ping and pong), readers spinning spin_us before they sleep. */
struct lat broker_pingpong(unsigned spin_us, size_t n);
/* The same with the pinger on the broker of ping_dir and the echo on
 * that of echo_dir (two brokers joined by a link that bridges both). */
struct lat broker_pingpong_between(const char *ping_dir, const char *echo_dir, unsigned spin_us, size_t n);

#endif
