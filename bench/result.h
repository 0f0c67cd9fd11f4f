/*
 * bench/result.h - how every benchmark program reports: one line per
 * measurement (and one per repetition), which bench/report.sh turns into
 * the markdown tables, the ratios and the plots.  A program never prints
 * its own tables: every figure goes through here, so every transport is
 * summarised the same way (median, min-max over the repetitions).
 *
 * Line format (tab-separated, on stdout):
 *
 *   @R transport workload size pinned rep msgs_s p50 p99 p999 max sent recv lost dup reord extra
 *   @S transport why
 *
 * transport  what carried the messages, e.g. "shmb spin", "iceoryx waitset",
 *            "mosquitto tcp qos1", "raw futex"; shmb's own rows start with
 *            "shmb"
 * workload   oneway | rtt | rtt-load (two CPU-bound processes beside) | fanout | fanin | scale-lat | scale-cpu |
 *            recovery-sub | recovery-broker
 * size       message bytes (scale-*: sessions attached)
 * msgs_s     messages per second (throughput workloads), else -1
 * p50..max   microseconds (latency workloads), else -1
 * sent..reord  what was published, received, missing, duplicated and
 *            out of order; a throughput figure with lost/reord > 0 does
 *            not count (the report says so)
 * extra      "key=value ..." the report shows as it is (e.g. a restart
 *            time, a CPU figure), or "-"
 *
 * @S marks a transport that could not be measured here, with the reason
 * (for a missing peer: the install command).
 */
#ifndef BENCH_RESULT_H
#define BENCH_RESULT_H

#include <stdbool.h>
#include <stdint.h>

#include "bench/common.h"

struct bres {
	const char *transport;
	const char *workload;
	unsigned size;
	bool pinned;
	int rep;
	double msgs_s;   /* < 0: not measured */
	struct lat lat;  /* p50 < 0: not measured */
	uint64_t sent, recv, lost, dup, reord;
	const char *extra; /* NULL: none */
};

/* A result with nothing measured yet (msgs_s and latencies -1). */
struct bres bres_new(const char *transport, const char *workload, unsigned size, int rep);

/* A one-way run's figures and counts, as its receiver saw them. */
void bres_take(struct bres *r, const struct oneway *o);

void bres_emit(const struct bres *r);
/* bres_take() of a one-way run, emitted, with corrupt=N as its extra if any. */
void bres_emit_oneway(const char *transport, const char *workload, unsigned size, int rep,
		      const struct oneway *o);
/* A throughput figure of a run that checks every message itself and
 * reports 0 when any was wrong (n sent; all received, or counted bad). */
void bres_emit_rate(const char *transport, const char *workload, unsigned size, int rep,
		    double rate, uint64_t n);
/* 64 B round trips: their latencies, or p50 < 0 when any reply was wrong. */
void bres_emit_lat(const char *transport, const char *workload, int rep, struct lat l, uint64_t n);
void bres_skip(const char *transport, const char *why);

/* Repetitions (3; SHMB_BENCH_REPS overrides) and the size factor of a
 * run: 1, or 0.1 under QUICK=1 (SHMB_BENCH_QUICK=1). */
int bench_reps(void);
/* SHMB_BENCH_ONLY=TEXT[|TEXT...]: run only the rows whose name contains
 * one of the TEXTs (to measure one change; make bench runs every row). */
bool bench_want(const char *row);
double bench_scale(void);
uint64_t bench_n(uint64_t n); /* n * bench_scale(), at least 1000 */

#endif
