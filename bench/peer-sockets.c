/*
 * bench/peer-sockets.c - the kernel channels a user might pick instead of
 * shmb between two processes on one host, all blocking:
 *
 *   "AF_UNIX seqpacket"  a SOCK_SEQPACKET socketpair, one record a message
 *   "AF_UNIX stream"     a SOCK_STREAM socketpair, messages framed by size
 *   "pipe"               pipe(2) (two for the round trip), framed by size
 *
 *   oneway: 64 B, 1 KiB and 64 KiB messages, sender and receiver in two
 *           processes; the receiver checks every message for order and
 *           content (bench/common.c, chan_oneway)
 *   rtt:    64 B ping-pong, every reply checked (chan_rtt)
 *
 * Default buffer sizes everywhere (socket buffers, 64 KiB pipes): what a
 * user gets without tuning.  Result lines only (bench/result.h), every
 * repetition unpinned, then pinned when 2+ CPUs are online.
 */
#include <stdio.h>
#include <unistd.h>

#include "bench/common.h"
#include "bench/result.h"

static const struct {
	enum chan_kind kind;
	const char *name;
} chans[] = {
	{ CHAN_SEQPACKET, "AF_UNIX seqpacket" },
	{ CHAN_STREAM, "AF_UNIX stream" },
	{ CHAN_PIPE, "pipe" },
};

static const struct {
	uint32_t size;
	uint64_t n;
} oneway_sizes[] = { { 64, 100000 }, { 1024, 60000 }, { 65536, 5000 } };

static void emit_rtt(const char *name, size_t n, struct lat l, uint64_t bad, int rep)
{
	struct bres r = bres_new(name, "rtt", 64, rep);

	r.lat = l;
	r.sent = n;
	r.recv = n - bad;
	r.lost = bad;
	bres_emit(&r);
}

static void run(int pinned)
{
	size_t rtt_n = bench_n(20000);

	bench_pinned = pinned;
	for (int rep = 0; rep < bench_reps(); rep++)
		for (size_t c = 0; c < sizeof(chans) / sizeof(chans[0]); c++) {
			uint64_t bad;
			struct lat l;

			for (size_t s = 0; s < sizeof(oneway_sizes) / sizeof(oneway_sizes[0]); s++) {
				struct oneway o = chan_oneway(chans[c].kind, oneway_sizes[s].size,
							      bench_n(oneway_sizes[s].n));

				bres_emit_oneway(chans[c].name, "oneway", oneway_sizes[s].size, rep, &o);
			}
			l = chan_rtt(chans[c].kind, rtt_n, &bad);
			emit_rtt(chans[c].name, rtt_n, l, bad, rep);
		}
}

int main(void)
{
	run(0);
	if (sysconf(_SC_NPROCESSORS_ONLN) >= 2)
		run(1);
	else
		fprintf(stderr, "peer-sockets: pinned runs skipped: fewer than 2 CPUs online\n");
	return 0;
}
