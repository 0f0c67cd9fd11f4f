/*
 * bench/shmbd.c - see shmbd.h.
 */
#include <dirent.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench/common.h"
#include "bench/shmbd.h"
#include "shm/atomics.h"
#include "shm/futex.h"
#include "shmb.h"

char bench_dir[64];
pid_t bench_broker = -1;
static const char *const *last_extra;

pid_t bench_broker_spawn(const char *dir, const char *const *extra)
{
	char self[512], path[600];
	ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);
	pid_t pid;

	self[k > 0 ? k : 0] = 0;
	snprintf(path, sizeof(path), "%s/../shmbd", dirname(self));
	pid = bench_spawn();
	if (pid == 0) {
		const char *argv[32] = { path, "--dir", dir, "--quiet" };
		const char *poll = getenv("SHMB_BENCH_POLL_US");
		int n = 4;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (poll) {
			argv[n++] = "--poll-us";
			argv[n++] = poll;
		}
		for (int i = 0; extra && extra[i] && n < 31; i++)
			argv[n++] = extra[i];
		argv[n] = NULL;
		execv(path, (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; i < 5000; i++) {
		struct shmb_connect_opts o = { .dir = dir };
		struct shmb_client *c;

		if (shmb_connect(&o, &c) == 0) {
			shmb_close(c);
			return pid;
		}
		usleep(1000);
	}
	fprintf(stderr, "bench: %s did not start\n", path);
	kill(pid, SIGKILL);
	bench_reap(pid);
	exit(1);
}

void bench_broker_start(const char *const *extra)
{
	if (!bench_dir[0]) {
		snprintf(bench_dir, sizeof(bench_dir), "/dev/shm/shmb-bench.XXXXXX");
		if (!mkdtemp(bench_dir)) {
			perror("mkdtemp");
			exit(1);
		}
		last_extra = extra;
	}
	bench_broker = bench_broker_spawn(bench_dir, last_extra);
}

void bench_broker_kill(void)
{
	kill(bench_broker, SIGKILL);
	bench_reap(bench_broker);
}

void bench_broker_stop(bool clean)
{
	char cmd[128];

	kill(bench_broker, SIGTERM);
	bench_reap(bench_broker);
	if (clean) {
		snprintf(cmd, sizeof(cmd), "rm -rf %s", bench_dir);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", bench_dir);
		bench_dir[0] = 0;
	}
}

uint64_t bench_broker_cpu_ns(void)
{
	char path[64];
	unsigned long long ns = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/schedstat", (int)bench_broker);
	f = fopen(path, "r");
	if (f) {
		if (fscanf(f, "%llu", &ns) != 1)
			ns = 0;
		fclose(f);
	}
	return ns;
}

uint64_t bench_broker_rss_kib(void)
{
	char path[64], line[256];
	unsigned long long kib = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)bench_broker);
	f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %llu", &kib) == 1)
			break;
	if (f)
		fclose(f);
	return kib;
}

uint64_t bench_broker_shm_bytes(void)
{
	char path[128];
	uint64_t total = 0;
	struct dirent *d;
	DIR *sd;

	snprintf(path, sizeof(path), "%s/sessions", bench_dir);
	sd = opendir(path);
	while (sd && (d = readdir(sd))) {
		char sub[400];
		struct dirent *e;
		DIR *fd;

		if (d->d_name[0] == '.')
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", path, d->d_name);
		fd = opendir(sub);
		while (fd && (e = readdir(fd))) {
			char file[700];
			struct stat st;

			snprintf(file, sizeof(file), "%s/%s", sub, e->d_name);
			if (e->d_name[0] != '.' && stat(file, &st) == 0)
				total += (uint64_t)st.st_blocks * 512;
		}
		if (fd)
			closedir(fd);
	}
	if (sd)
		closedir(sd);
	return total;
}

struct shmb_session *open_session(struct shmb_client **c, const char *name, unsigned spin_us)
{
	return open_session_in(bench_dir, c, name, spin_us);
}

struct shmb_session *open_session_in(const char *dir, struct shmb_client **c, const char *name,
				     unsigned spin_us)
{
	struct shmb_connect_opts co = { .dir = dir };
	struct shmb_session_opts so = { .policy = SHMB_POLICY_DEFAULT, .flags = SHMB_FRESH,
					.rx_ring_size = 4u << 20, .tx_ring_size = 4u << 20,
					.spin_us = spin_us };
	struct shmb_session *s;

	if (shmb_connect(&co, c) < 0 || shmb_session_open(*c, name, &so, &s) < 0) {
		fprintf(stderr, "bench: cannot open %s on %s\n", name, dir);
		exit(1);
	}
	return s;
}

struct lat broker_pingpong(unsigned spin_us, size_t n)
{
	return broker_pingpong_between(bench_dir, bench_dir, spin_us, n);
}

struct lat broker_pingpong_between(const char *ping_dir, const char *echo_dir, unsigned spin_us, size_t n)
{
	uint32_t *ready = bench_shalloc(sizeof(*ready)); /* the echo has subscribed */
	uint64_t *lat = malloc(n * sizeof(*lat)), bad = 0;
	struct shmb_client *c;
	struct shmb_session *s;
	uint8_t buf[64] = { 0 };
	struct shmb_msg m;
	struct lat l;
	pid_t echo;
	int r;

	echo = bench_spawn();
	if (echo == 0) {
		bench_pin(1);
		s = open_session_in(echo_dir, &c, "bench-echo", spin_us);
		shmb_subscribe(s, "ping");
		store_release(ready, 1);
		for (size_t i = 0; i < n + 100; i++) {
			int e = shmb_recv(s, &m, 10000);

			if (e < 0) {
				fprintf(stderr, "bench: echo %zu: nothing to answer: %s\n", i, shmb_strerror(e));
				_exit(1);
			}
			memcpy(buf, m.data, 8);
			shmb_ack(s);
			shmb_publish(s, "pong", buf, sizeof(buf), -1);
		}
		shmb_session_destroy(s);
		shmb_close(c);
		_exit(0);
	}
	bench_pin(0);
	s = open_session_in(ping_dir, &c, "bench-ping", spin_us);
	shmb_subscribe(s, "pong");
	while (!load_acquire(ready))
		usleep(100);
	for (uint64_t i = 0; i < n + 100; i++) {
		uint64_t t0 = clock_mono_ns(), v;

		memcpy(buf, &i, 8);
		shmb_publish(s, "ping", buf, sizeof(buf), -1);
		if ((r = shmb_recv(s, &m, 10000)) < 0) {
			fprintf(stderr, "bench: round trip %llu: no answer: %s\n", (unsigned long long)i,
				shmb_strerror(r));
			bad++;
			break;
		}
		memcpy(&v, m.data, 8);
		bad += v != i;
		shmb_ack(s);
		if (i >= 100)
			lat[i - 100] = clock_mono_ns() - t0;
	}
	bench_reap(echo);
	l = bad ? (struct lat){ -1, -1, -1, -1 } : bench_summarize(lat, n);
	shmb_session_destroy(s);
	shmb_close(c);
	free(lat);
	bench_shfree(ready, sizeof(*ready));
	return l;
}

