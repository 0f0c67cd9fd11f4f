/*
 * bench/bench-broker.c - end to end through shmbd, 1 publisher -> 1
 * subscriber, beside an AF_UNIX SOCK_SEQPACKET pair and a raw futex
 * ping-pong measured in the same run.
 *
 *   throughput: 64 B and 1 KiB messages, every one checked for order and
 *               content by the subscriber; a run with any loss reports 0
 *   round trip: 64 B ping-pong through the broker (two hops each way),
 *               with spinning readers and with blocking readers (1 us spin)
 *
 * Starts its own broker (build/shmbd) in a fresh directory.  Unpinned,
 * then pinned: one client on CPU 0, the other on CPU 1, the broker placed
 * by the scheduler.  (Both clients on one CPU and the broker on the other
 * was measured too: every hop then pays a stalled vCPU, 120-130 us a round
 * trip; docs/benchmarks.md.)
 */
#include <errno.h>
#include <libgen.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/common.h"
#include "shm/atomics.h"
#include "shm/futex.h"
#include "shmb.h"

static char dir[64];
static pid_t broker = -1;

struct shared {
	uint32_t ready;
	uint32_t pad;
	uint64_t t_start, t_end, bad, got;
	uint64_t lat[];
};

static void broker_start(void)
{
	char self[512], path[600];
	ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);

	self[k > 0 ? k : 0] = 0;
	snprintf(path, sizeof(path), "%s/../shmbd", dirname(self));
	snprintf(dir, sizeof(dir), "/dev/shm/shmb-bench.XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		exit(1);
	}
	broker = bench_spawn();
	if (broker == 0) {
		const char *poll = getenv("SHMB_BENCH_POLL_US");

		if (poll)
			execl(path, path, "--dir", dir, "--quiet", "--poll-us", poll, (char *)NULL);
		else
			execl(path, path, "--dir", dir, "--quiet", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 2000; i++) {
		struct shmb_connect_opts o = { .dir = dir };
		struct shmb_client *c;

		if (shmb_connect(&o, &c) == 0) {
			shmb_close(c);
			return;
		}
		usleep(1000);
	}
	fprintf(stderr, "bench-broker: %s did not start\n", path);
	exit(1);
}

static void broker_stop(void)
{
	char cmd[128];

	kill(broker, SIGTERM);
	bench_reap(broker);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
}

static struct shmb_session *open_session(struct shmb_client **c, const char *name, unsigned spin_us)
{
	struct shmb_connect_opts co = { .dir = dir };
	struct shmb_session_opts so = { .policy = SHMB_POLICY_DEFAULT, .flags = SHMB_FRESH,
					.rx_ring_size = 4u << 20, .tx_ring_size = 4u << 20,
					.spin_us = spin_us };
	struct shmb_session *s;

	if (shmb_connect(&co, c) < 0 || shmb_session_open(*c, name, &so, &s) < 0) {
		fprintf(stderr, "bench-broker: cannot open %s\n", name);
		exit(1);
	}
	return s;
}

static struct shared *shared_new(size_t samples)
{
	struct shared *sh = mmap(NULL, sizeof(*sh) + samples * 8, PROT_READ | PROT_WRITE,
				 MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (sh == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	memset(sh, 0, sizeof(*sh));
	return sh;
}

static double broker_throughput(uint32_t size, uint64_t n)
{
	struct shared *sh = shared_new(0);
	struct shmb_client *c;
	struct shmb_session *s;
	uint8_t buf[1024];
	double rate;
	pid_t sub;

	sub = bench_spawn();
	if (sub == 0) {
		struct shmb_msg m;
		uint64_t next = 0;

		bench_pin(1);
		s = open_session(&c, "bench-sub", 50);
		shmb_subscribe(s, "tp");
		store_release(&sh->ready, 1);
		while (next < n) {
			uint64_t v;

			if (shmb_recv(s, &m, 10000) < 0)
				break;
			memcpy(&v, m.data, 8);
			if (v != next || m.len != size || ((const uint8_t *)m.data)[size - 1] != (uint8_t)v)
				sh->bad++;
			next++;
			if ((next & 255) == 0)
				shmb_ack(s);
		}
		sh->t_end = mono_ns();
		sh->got = next;
		shmb_ack(s);
		shmb_session_destroy(s);
		shmb_close(c);
		_exit(0);
	}
	bench_pin(0);
	s = open_session(&c, "bench-pub", 50);
	while (!load_acquire(&sh->ready))
		usleep(100);
	memset(buf, 0, sizeof(buf));
	sh->t_start = mono_ns();
	for (uint64_t i = 0; i < n; i++) {
		memcpy(buf, &i, 8);
		buf[size - 1] = (uint8_t)i;
		if (shmb_publish(s, "tp", buf, size, -1) < 0) {
			sh->bad++;
			break;
		}
	}
	shmb_flush(s, 10000);
	bench_reap(sub);
	rate = (double)sh->got / ((double)(sh->t_end - sh->t_start) / 1e9);
	if (sh->bad || sh->got != n)
		rate = 0;
	shmb_session_destroy(s);
	shmb_close(c);
	munmap(sh, sizeof(*sh));
	return rate;
}

static struct lat broker_pingpong(unsigned spin_us, size_t n)
{
	struct shared *sh = shared_new(n + 100);
	struct shmb_client *c;
	struct shmb_session *s;
	uint8_t buf[64] = { 0 };
	struct shmb_msg m;
	struct lat l;
	pid_t echo;

	echo = bench_spawn();
	if (echo == 0) {
		bench_pin(1);
		s = open_session(&c, "bench-echo", spin_us);
		shmb_subscribe(s, "ping");
		store_release(&sh->ready, 1);
		for (size_t i = 0; i < n + 100; i++) {
			if (shmb_recv(s, &m, 10000) < 0)
				_exit(1);
			memcpy(buf, m.data, 8);
			shmb_ack(s);
			shmb_publish(s, "pong", buf, sizeof(buf), -1);
		}
		shmb_session_destroy(s);
		shmb_close(c);
		_exit(0);
	}
	bench_pin(0);
	s = open_session(&c, "bench-ping", spin_us);
	shmb_subscribe(s, "pong");
	while (!load_acquire(&sh->ready))
		usleep(100);
	for (uint64_t i = 0; i < n + 100; i++) {
		uint64_t t0 = mono_ns(), v;

		memcpy(buf, &i, 8);
		shmb_publish(s, "ping", buf, sizeof(buf), -1);
		if (shmb_recv(s, &m, 10000) < 0) {
			sh->bad++;
			break;
		}
		memcpy(&v, m.data, 8);
		sh->bad += v != i;
		shmb_ack(s);
		if (i >= 100)
			sh->lat[i - 100] = mono_ns() - t0;
	}
	bench_reap(echo);
	l = sh->bad ? (struct lat){ -1, -1, -1, -1 } : bench_summarize(sh->lat, n);
	shmb_session_destroy(s);
	shmb_close(c);
	munmap(sh, sizeof(*sh) + (n + 100) * 8);
	return l;
}

static void run(int pin_mode)
{
	const uint32_t sizes[] = { 64, 1024 };
	const size_t lat_n = 5000;
	const char *name[4] = { "shmb via broker, spinning readers",
				"shmb via broker, blocking readers (1 us spin)",
				"raw futex ping-pong (2 processes)", "AF_UNIX seqpacket (blocking)" };

	bench_pinned = pin_mode;
	bench_pin(0);
	printf("\n### %s\n\n", bench_pinned ? "pinned: one client on CPU 0, the other on CPU 1, the broker free"
					    : "unpinned: the scheduler places everyone");
	printf("| one-way, 1 pub -> 1 sub | shmb msgs/s (min-max) | shmb MB/s | AF_UNIX msgs/s | "
	       "ratio shmb/AF_UNIX |\n|---|---|---|---|---|\n");
	for (int k = 0; k < 2 && !getenv("SHMB_BENCH_RT_ONLY"); k++) {
		double rr[REPS], uu[REPS];
		uint64_t n = sizes[k] == 64 ? 2000000 : 500000;

		for (int i = 0; i < REPS; i++) {
			rr[i] = broker_throughput(sizes[k], n);
			uu[i] = unix_throughput(sizes[k], n / 5);
		}
		printf("| %u B | %.2f M (%.2f-%.2f) | %.0f | %.3f M | %.1fx |\n", sizes[k],
		       bench_median(rr) / 1e6, bench_min(rr) / 1e6, bench_max(rr) / 1e6,
		       bench_median(rr) * sizes[k] / 1e6, bench_median(uu) / 1e6,
		       bench_median(rr) / bench_median(uu));
	}
	printf("\n| 64 B round trip, us | p50 (min-max) | p99 | p99.9 | p50 / raw futex |\n"
	       "|---|---|---|---|---|\n");
	{
		double p50[4][REPS], p99[4][REPS], p999[4][REPS];

		for (int i = 0; i < REPS; i++) {
			/* spinning clients on both CPUs starve the polling broker */
			struct lat l[4] = { bench_pinned ? (struct lat){ -1, -1, -1, -1 }
							 : broker_pingpong(1000000, lat_n),
					    broker_pingpong(1, lat_n), futex_pingpong(lat_n),
					    unix_pingpong(lat_n) };

			for (int k = 0; k < 4; k++) {
				p50[k][i] = l[k].p50;
				p99[k][i] = l[k].p99;
				p999[k][i] = l[k].p999;
			}
		}
		for (int k = 0; k < 4; k++)
			if (p50[k][0] < 0)
				printf("| %s | not run: spinning clients on both CPUs starve the broker | | | |\n",
				       name[k]);
			else
				printf("| %s | %.2f (%.2f-%.2f) | %.2f | %.2f | %.2fx |\n", name[k],
			       bench_median(p50[k]), bench_min(p50[k]), bench_max(p50[k]),
			       bench_median(p99[k]), bench_median(p999[k]),
			       bench_median(p50[k]) / bench_median(p50[2]));
	}
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	broker_start();
	printf("\n## through the broker: %d repetitions, medians (min-max); broker --poll-us 50\n", REPS);
	if (argc < 2 || strcmp(argv[1], "--pinned-only"))
		run(0);
	if (sysconf(_SC_NPROCESSORS_ONLN) >= 2)
		run(1);
	else
		printf("\npinned run skipped: fewer than 2 CPUs online\n");
	broker_stop();
	return 0;
}
