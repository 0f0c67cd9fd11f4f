/*
 * bench/result.c - see result.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/result.h"

struct bres bres_new(const char *transport, const char *workload, unsigned size, int rep)
{
	return (struct bres){ .transport = transport, .workload = workload, .size = size,
			      .pinned = bench_pinned, .rep = rep, .msgs_s = -1,
			      .lat = { -1, -1, -1, -1 } };
}

void bres_take(struct bres *r, const struct oneway *o)
{
	r->msgs_s = o->msgs_s;
	r->sent = o->sent;
	r->recv = o->recv;
	r->lost = o->lost;
	r->dup = o->dup;
	r->reord = o->reord;
}

void bres_emit_oneway(const char *transport, const char *workload, unsigned size, int rep,
		      const struct oneway *o)
{
	struct bres r = bres_new(transport, workload, size, rep);
	char extra[48];

	bres_take(&r, o);
	if (o->corrupt) {
		snprintf(extra, sizeof(extra), "corrupt=%llu", (unsigned long long)o->corrupt);
		r.extra = extra;
	}
	bres_emit(&r);
}

void bres_emit(const struct bres *r)
{
	printf("@R\t%s\t%s\t%u\t%d\t%d\t%.1f\t%.3f\t%.3f\t%.3f\t%.3f\t%llu\t%llu\t%llu\t%llu\t%llu\t%s\n",
	       r->transport, r->workload, r->size, r->pinned ? 1 : 0, r->rep, r->msgs_s, r->lat.p50,
	       r->lat.p99, r->lat.p999, r->lat.max, (unsigned long long)r->sent,
	       (unsigned long long)r->recv, (unsigned long long)r->lost, (unsigned long long)r->dup,
	       (unsigned long long)r->reord, r->extra && *r->extra ? r->extra : "-");
	fflush(stdout);
}

void bres_emit_rate(const char *transport, const char *workload, unsigned size, int rep,
		    double rate, uint64_t n)
{
	struct bres r = bres_new(transport, workload, size, rep);

	r.msgs_s = rate;
	r.sent = n;
	r.recv = rate > 0 ? n : 0;
	r.reord = rate > 0 ? 0 : 1;
	bres_emit(&r);
}

void bres_emit_lat(const char *transport, const char *workload, int rep, struct lat l, uint64_t n)
{
	struct bres r = bres_new(transport, workload, 64, rep);

	r.lat = l;
	r.sent = n;
	r.recv = l.p50 < 0 ? 0 : n;
	r.lost = l.p50 < 0 ? n : 0;
	bres_emit(&r);
}

void bres_skip(const char *transport, const char *why)
{
	printf("@S\t%s\t%s\n", transport, why);
	fflush(stdout);
}

int bench_reps(void)
{
	const char *e = getenv("SHMB_BENCH_REPS");
	int n = e ? atoi(e) : 3;

	return n < 1 ? 1 : n > 9 ? 9 : n;
}

bool bench_want(const char *row)
{
	const char *only = getenv("SHMB_BENCH_ONLY");
	char buf[256], *save = NULL;

	if (!only || !*only)
		return true;
	snprintf(buf, sizeof(buf), "%s", only);
	/* alternatives separated by '|' */
	for (char *t = strtok_r(buf, "|", &save); t; t = strtok_r(NULL, "|", &save))
		if (strstr(row, t))
			return true;
	return false;
}

double bench_scale(void)
{
	const char *q = getenv("SHMB_BENCH_QUICK");

	return q && *q && *q != '0' ? 0.1 : 1.0;
}

uint64_t bench_n(uint64_t n)
{
	uint64_t v = (uint64_t)((double)n * bench_scale());

	return v < 1000 ? 1000 : v;
}
