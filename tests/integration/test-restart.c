/*
 * tests/integration/test-restart.c - the broker killed with SIGKILL and
 * restarted on the same SHMB_DIR while clients stream through it, and
 * damaged files found at start-up.  Every test counts what was sent and
 * what arrived and fails on loss, reorder or duplicate.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "broker-helper.h"
#include "harness.h"
#include "libclient/internal.h"
#include "shm/atomics.h"
#include "shm/futex.h"
#include "shm/layout.h"
#include "shm/proto.h"
#include "shmb.h"
#include "stream.h"

/* Shared with the children: the stream's counters and the stop signal. */
struct run {
	struct stats st;
	uint32_t stop;   /* publishers: stop publishing, flush, exit */
	uint32_t done[NPUB]; /* publisher j has stopped; st.published[j] is final */
	/* each client at its end (subscribers 0.., then publishers): */
	uint32_t connected[NSUB + NPUB]; /* connected again, sessions reattached */
	uint32_t generation[NSUB + NPUB];/* its session's owner generation */
	uint32_t attempts[NSUB + NPUB];  /* its connection's attempt generation */
	uint64_t reconnects[NSUB + NPUB];
};

/* At a child's end: wait (10 s at most) for its connection to be back,
 * then say what its connection and session went through. */
static void report_end(struct run *run, int k, struct shmb_client *c, struct shmb_session *s)
{
	struct shmb_client_info ci;
	struct shmb_session_info si;

	TRY_WAIT_FOR(shmb_client_info(c, &ci) != 0 || ci.connected, 10000);
	shmb_session_info(s, &si);
	run->connected[k] = (uint32_t)ci.connected;
	run->attempts[k] = ci.attempt_gen;
	run->reconnects[k] = ci.reconnects;
	run->generation[k] = si.generation;
}

static struct run *run_new(void)
{
	struct run *r = mmap(NULL, sizeof(*r), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
			     -1, 0);

	CU_ASSERT_FATAL(r != MAP_FAILED);
	memset(r, 0, sizeof(*r));
	return r;
}

/* The churn session, as a new owner: 0, 1 (no connection), or the open's
 * error once it is not one a broker kill or a previous owner explains (or
 * still is after 30 s: a broker that never lets it in fails the test). */
static int churn_open(const struct shmb_connect_opts *co, const struct shmb_session_opts *so,
		      struct shmb_client **c, struct shmb_session **s)
{
	int r;

	if (shmb_connect(co, c) < 0)
		return 1;
	TRY_WAIT_FOR((r = shmb_session_open(*c, "churn", so, s)) != -EAGAIN && r != -EBUSY &&
		     r != -ENOTCONN && r != -EPIPE, 30000);
	return r;
}

/* Publish until told to stop, a little at a time, so the stream spans the
 * kills; then flush and say how many. */
static void __attribute__((noreturn)) pub_proc(const struct tb *t, struct run *run, int idx)
{
	struct shmb_client *c;
	struct shmb_session *s;
	char name[32];
	uint64_t i = 0;

	snprintf(name, sizeof(name), "pub-%d", idx);
	if (connect_open(t, name, 0, &c, &s) < 0)
		_exit(20);
	fetch_add_release(&run->st.ready, 1);
	while (!load_acquire(&run->stop)) {
		struct payload p;

		payload_make(&p, (uint32_t)idx, i);
		if (shmb_publish(s, "t", &p, sizeof(p), 30000) < 0)
			_exit(21);
		store_release(&run->st.published[idx], ++i);
		if (i % 64 == 0)
			usleep(200);
	}
	if (shmb_flush(s, 30000) < 0)
		_exit(22);
	store_release(&run->done[idx], 1);
	report_end(run, NSUB + idx, c, s);
	_exit(0);
}

/* Receive, checking order per publisher, until every publisher is done
 * and everything it published has arrived. */
static void __attribute__((noreturn)) sub_proc(const struct tb *t, struct run *run, int idx)
{
	struct stats *st = &run->st;
	struct shmb_client *c;
	struct shmb_session *s;
	char name[32];
	unsigned unacked = 0;

	snprintf(name, sizeof(name), "sub-%d", idx);
	if (connect_open(t, name, 0, &c, &s) < 0 || shmb_subscribe(s, "t") < 0)
		_exit(10);
	fetch_add_release(&st->ready, 1);
	for (;;) {
		struct shmb_msg m;
		bool all = true;
		int r;

		for (int j = 0; j < NPUB; j++)
			all &= load_acquire(&run->done[j]) &&
			       st->next[idx][j] == load_acquire(&st->published[j]);
		if (all)
			break;
		r = shmb_recv(s, &m, 200);
		if (r == -ETIMEDOUT || r == -EAGAIN)
			continue;
		if (r < 0)
			_exit(11);
		r = stream_take(st, idx, &m, NPUB, s, &unacked);
		if (r)
			_exit(r);
		/* the last subscriber is slow: its ring fills, publishers wait
		 * on it, and fan-outs stand half done when the broker dies */
		if (idx == NSUB - 1 && st->received[idx] % 512 == 0)
			usleep(2000);
	}
	shmb_ack(s);
	report_end(run, idx, c, s);
	_exit(0);
}

/* ---- watching deliveries from outside: the RX rings' write sequences ---- */

struct watch {
	char dir[300];
	const struct run *run;
	pthread_t th;
	uint32_t quit;
	uint64_t from_ns;  /* look for a delivery after this moment ... */
	uint64_t base;     /* ... beyond this many records */
	uint64_t seen_ns;  /* when it came (0: not yet) */
};

/* Records the broker has written into every RX ring, read from the files. */
static uint64_t rx_written(const char *dir)
{
	char path[600];
	DIR *d;
	struct dirent *e;
	uint64_t sum = 0;

	snprintf(path, sizeof(path), "%s/sessions", dir);
	d = opendir(path);
	if (!d)
		return 0;
	while ((e = readdir(d))) {
		struct shm_rx_ctrl x;
		int fd;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/sessions/%s/rx", dir, e->d_name);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (pread(fd, &x, sizeof(x), SHM_CTRL_OFF) == (ssize_t)sizeof(x))
			sum += x.rx_write_seq;
		close(fd);
	}
	closedir(d);
	return sum;
}

/* Does the broker run lanes (the default; not in test-lib-lanes.sh's
 * --no-lanes runs)?  Then the messages go through no RX ring, and a
 * delivery is one a subscriber took (a lane needs no broker to move: the
 * stream flows on while it is down). */
static bool on_lanes(void)
{
	return tb_on_lanes();
}

/* Deliveries so far: records in the RX rings, or on lanes what the
 * subscribers took. */
static uint64_t delivered(const char *dir, const struct run *run)
{
	uint64_t sum = 0;

	if (!on_lanes())
		return rx_written(dir);
	for (int i = 0; i < NSUB; i++)
		sum += load_acquire(&run->st.received[i]);
	return sum;
}

static void *watch_main(void *arg)
{
	struct watch *w = arg;

	while (!load_acquire(&w->quit)) {
		uint64_t from = load_acquire(&w->from_ns), base = load_acquire(&w->base);

		/* only for the round it read: the main thread may start another */
		if (from && delivered(w->dir, w->run) > base && load_acquire(&w->from_ns) == from) {
			uint64_t zero = 0, now = clock_mono_ns();

			__atomic_compare_exchange_n(&w->seen_ns, &zero, now, false, __ATOMIC_ACQ_REL,
						    __ATOMIC_ACQUIRE);
		}
		usleep(200);
	}
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void test_broker_killed(void)
{
	const unsigned want = 20 + (unsigned)(5 * harness_scale());
	uint64_t seed = harness_seed("broker kills"), t0, lat[64], back[64];
	unsigned nback = 0;
	struct shmb_client *watcher;
	struct run *run = run_new();
	struct watch w = { 0 };
	pid_t subs[NSUB], pubs[NPUB];
	unsigned kills = 0, nlat = 0;
	uint64_t total = 0;
	struct tb t;

	/* the kill loop alone may run 120 s, then each child gets 60 s */
	harness_alarm(300);

	CU_ASSERT_FATAL(tb_start(&t, "--poll-us", "20", NULL) == 0);
	snprintf(w.dir, sizeof(w.dir), "%s", t.dir);
	w.run = run;
	CU_ASSERT_FATAL(pthread_create(&w.th, NULL, watch_main, &w) == 0);
	for (int i = 0; i < NSUB; i++)
		if ((subs[i] = fork_or_die()) == 0)
			sub_proc(&t, run, i);
	CU_ASSERT_FATAL(wait_ready(&run->st, NSUB));
	for (int j = 0; j < NPUB; j++)
		if ((pubs[j] = fork_or_die()) == 0)
			pub_proc(&t, run, j);
	CU_ASSERT_FATAL(wait_ready(&run->st, NSUB + NPUB));
	{
		/* the test's own client, to ask the broker how many are attached */
		struct shmb_connect_opts co = { .dir = t.dir, .control_timeout_ms = 200,
						.redial_base_ms = 10, .redial_cap_ms = 50 };

		CU_ASSERT_FATAL(shmb_connect(&co, &watcher) == 0);
	}
	t0 = clock_mono_ns();
	while (kills < want && clock_mono_ns() - t0 < 120ull * 1000000000ull) {
		/* a random point in the stream */
		usleep(10000 + (unsigned)(harness_rand(&seed) % 60000));
		CU_ASSERT_FATAL(kill(t.pid, SIGKILL) == 0);
		CU_ASSERT_FATAL(tb_wait_child(t.pid, 5000) == 128 + SIGKILL);
		kills++;
		store_release(&w.from_ns, 0);
		store_release(&w.base, delivered(t.dir, run));
		store_release(&w.seen_ns, 0);
		store_release(&w.from_ns, clock_mono_ns());
		tb_use_dir(t.dir);
		CU_ASSERT_FATAL(tb_start(&t, "--poll-us", "20", NULL) == 0);
		/* the stream flows again before the next kill */
		WAIT_FOR_FATAL(load_acquire(&w.seen_ns) != 0, 10000);
		if (nlat < 64)
			lat[nlat++] = load_acquire(&w.seen_ns) - w.from_ns;
		/* every other time, the next kill waits until every client has
		 * redialled and reattached its session */
		if (kills % 2 == 1 && nback < 64) {
			struct proto_reply rep = { 0 };

			WAIT_FOR_FATAL(client_status(watcher, &rep) == 0 &&
				       rep.u.status.attached == NSUB + NPUB, 10000);
			back[nback++] = clock_mono_ns() - w.from_ns;
		}
	}
	store_release(&run->stop, 1);
	for (int j = 0; j < NPUB; j++) {
		CU_ASSERT(tb_wait_child(pubs[j], 60000) == 0);
		total += run->st.published[j];
	}
	for (int i = 0; i < NSUB; i++)
		CU_ASSERT(tb_wait_child(subs[i], 60000) == 0);
	store_release(&w.quit, 1);
	pthread_join(w.th, NULL);
	shmb_close(watcher);
	qsort(lat, nlat, sizeof(lat[0]), cmp_u64);
	qsort(back, nback, sizeof(back[0]), cmp_u64);
	printf("\n  broker SIGKILLed and restarted %u times in %.1f s; %d publishers sent %llu;"
	       " restart to first delivery: median %.1f ms, max %.1f ms; to every client"
	       " reattached (%u times): median %.1f ms, max %.1f ms\n", kills,
	       (clock_mono_ns() - t0) / 1e9, NPUB, (unsigned long long)total,
	       nlat ? lat[nlat / 2] / 1e6 : 0.0, nlat ? lat[nlat - 1] / 1e6 : 0.0, nback,
	       nback ? back[nback / 2] / 1e6 : 0.0, nback ? back[nback - 1] / 1e6 : 0.0);
	CU_ASSERT(kills >= 20);
	/* every client rode through: connected again, its session's owner
	 * generation unchanged (a token reattach is the same owner,
	 * docs/design/owners.md, tokens), its connection's attempt
	 * generation advanced */
	for (int k = 0; k < NSUB + NPUB; k++) {
		printf("  [%s %d: connected %u, session generation %u, connection attempt %u,"
		       " %llu reconnects]\n", k < NSUB ? "sub" : "pub", k < NSUB ? k : k - NSUB,
		       run->connected[k], run->generation[k], run->attempts[k],
		       (unsigned long long)run->reconnects[k]);
		CU_ASSERT(run->connected[k] == 1);
		CU_ASSERT(run->generation[k] == 1);
		CU_ASSERT(run->attempts[k] > 1);
		CU_ASSERT(run->reconnects[k] >= 1);
	}
	for (int i = 0; i < NSUB; i++) {
		printf("  [sub %d: %llu received, %llu dup, %llu errors]\n", i,
		       (unsigned long long)run->st.received[i], (unsigned long long)run->st.dups[i],
		       (unsigned long long)run->st.errors[i]);
		CU_ASSERT(run->st.received[i] == total);
		CU_ASSERT(run->st.dups[i] == 0);
		CU_ASSERT(run->st.errors[i] == 0);
		for (int j = 0; j < NPUB; j++)
			CU_ASSERT(run->st.next[i][j] == run->st.published[j]);
	}
	{
		struct shmb_client *c;
		struct shmb_connect_opts co = { .dir = t.dir };
		struct proto_reply rep;

		/* every session is still there */
		CU_ASSERT_FATAL(shmb_connect(&co, &c) == 0);
		CU_ASSERT(client_status(c, &rep) == 0);
		CU_ASSERT(rep.u.status.sessions == NPUB + NSUB);
		CU_ASSERT(rep.u.status.quarantined == 0);
		CU_ASSERT(rep.u.status.adopted == NPUB + NSUB);
		shmb_close(c);
	}
	CU_ASSERT(tb_log_count(&t, "quarantined at start-up") == 0);
	CU_ASSERT(tb_log_count(&t, "quarantined:") == 0);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	munmap(run, sizeof(*run));
}

/* ---- damaged files at start-up -------------------------------------------- */

/* The id the state file gives session `name`, or 0. */
static unsigned long long state_id(const char *dir, const char *name)
{
	char path[600], line[1024];
	unsigned long long id = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/state", dir);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long i;
		char n[128];

		line[strcspn(line, "\n")] = 0;
		if (sscanf(line, "%*x S %llu %*u %*u %*u %*u %*u %*d %*s %127s", &i, n) == 2 &&
		    !strcmp(n, name))
			id = i;
	}
	fclose(f);
	return id;
}

/* Damage the S record of `name` in the state file (its CRC then fails). */
static int state_damage(const char *dir, const char *name)
{
	char path[600], *buf, *p;
	struct stat st;
	char needle[160];
	int fd, r = -1;

	snprintf(path, sizeof(path), "%s/state", dir);
	fd = open(path, O_RDWR);
	if (fd < 0 || fstat(fd, &st) < 0)
		return -1;
	buf = calloc(1, (size_t)st.st_size + 1);
	if (buf && pread(fd, buf, (size_t)st.st_size, 0) == st.st_size) {
		snprintf(needle, sizeof(needle), " %s\n", name);
		/* every record of it (a detach writes one more): the first
		 * character of the name flipped, so the line no longer checks */
		for (p = buf; (p = strstr(p, needle)); p++) {
			p[1] ^= 0x20;
			r = 0;
		}
		if (r == 0)
			r = pwrite(fd, buf, (size_t)st.st_size, 0) == st.st_size ? 0 : -1;
	}
	/* and a torn last line, as a kill in the middle of an append leaves */
	if (r == 0 && pwrite(fd, "0badcafe S 999 0 0 0 4096", 25, st.st_size) != 25)
		r = -1;
	free(buf);
	close(fd);
	return r;
}

static void test_damaged_at_start(void)
{
	const char *names[] = { "good", "badrx", "badtx", "norec", "pub" };
	struct shmb_connect_opts co;
	struct shmb_client *c;
	struct shmb_session *s[5], *g, *p;
	struct shmb_session_info info;
	unsigned long long ids[5], maxid = 0;
	struct proto_reply rep;
	char path[700];
	struct tb t;
	int fd, got = 0, bad = 0;

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	co = (struct shmb_connect_opts){ .dir = t.dir };
	CU_ASSERT_FATAL(shmb_connect(&co, &c) == 0);
	for (int i = 0; i < 5; i++) {
		CU_ASSERT_FATAL(shmb_session_open(c, names[i], NULL, &s[i]) == 0);
		if (i < 4)
			CU_ASSERT_FATAL(shmb_subscribe(s[i], "t") == 0);
	}
	for (int k = 0; k < 10; k++)
		CU_ASSERT_FATAL(shmb_publish(s[4], "t", &k, sizeof(k), 1000) == 0);
	CU_ASSERT_FATAL(shmb_flush(s[4], 5000) == 0);
	shmb_close(c);
	/* the broker has recorded that they have no owner any more: the
	 * restarted one need not wait for this (live) process to come back */
	WAIT_FOR_FATAL(tb_log_count(&t, "detached: connection closed") >= 5, 10000);
	for (int i = 0; i < 5; i++) {
		ids[i] = state_id(t.dir, names[i]);
		CU_ASSERT_FATAL(ids[i] != 0);
		if (ids[i] > maxid)
			maxid = ids[i];
	}
	CU_ASSERT_FATAL(kill(t.pid, SIGKILL) == 0);
	CU_ASSERT_FATAL(tb_wait_child(t.pid, 5000) == 128 + SIGKILL);

	/* badrx: a header byte flipped; badtx: its TX file cut short;
	 * norec: its record in the state file corrupted */
	snprintf(path, sizeof(path), "%s/sessions/%llu/rx", t.dir, ids[1]);
	fd = open(path, O_RDWR);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_FATAL(pwrite(fd, "\x7f", 1, 40) == 1);
	close(fd);
	snprintf(path, sizeof(path), "%s/sessions/%llu/tx.1", t.dir, ids[2]);
	CU_ASSERT_FATAL(truncate(path, 4096) == 0);
	CU_ASSERT_FATAL(state_damage(t.dir, "norec") == 0);

	tb_use_dir(t.dir);
	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	CU_ASSERT(tb_log_count(&t, "quarantined at start-up") == 3);
	CU_ASSERT(tb_log_count(&t, "state: line") >= 2); /* the corrupt one, the torn one */
	for (int i = 1; i <= 3; i++) {
		snprintf(path, sizeof(path), "%s/sessions/%llu", t.dir, ids[i]);
		CU_ASSERT(access(path, F_OK) < 0);
	}
	CU_ASSERT_FATAL(shmb_connect(&co, &c) == 0);
	CU_ASSERT(client_status(c, &rep) == 0);
	CU_ASSERT(rep.u.status.adopted == 2);
	CU_ASSERT(rep.u.status.quarantined_at_start == 3);
	CU_ASSERT(rep.u.status.sessions == 2);

	/* the rest is served: what "good" had not read is still there, and
	 * new messages follow it */
	CU_ASSERT_FATAL(shmb_session_open(c, "good", NULL, &g) == 0);
	CU_ASSERT_FATAL(shmb_session_open(c, "pub", NULL, &p) == 0);
	CU_ASSERT(shmb_session_info(g, &info) == 0);
	CU_ASSERT(info.session_id == ids[0]);
	CU_ASSERT(info.created == 0);
	for (int k = 10; k < 15; k++)
		CU_ASSERT(shmb_publish(p, "t", &k, sizeof(k), 1000) == 0);
	for (int k = 0; k < 15; k++) {
		struct shmb_msg m;
		int v;

		if (shmb_recv(g, &m, 5000) < 0)
			break;
		memcpy(&v, m.data, sizeof(v));
		bad += v != k || m.len != sizeof(v);
		got++;
	}
	CU_ASSERT(got == 15);
	CU_ASSERT(bad == 0);
	/* ids are never reused, not even those moved aside */
	{
		struct shmb_session *f;

		CU_ASSERT_FATAL(shmb_session_open(c, "fresh", NULL, &f) == 0);
		CU_ASSERT(shmb_session_info(f, &info) == 0);
		CU_ASSERT(info.session_id > maxid);
	}
	/* the quarantined names can be used again: new sessions */
	CU_ASSERT_FATAL(shmb_session_open(c, "badrx", NULL, &s[1]) == 0);
	CU_ASSERT(shmb_session_info(s[1], &info) == 0);
	CU_ASSERT(info.created == 1);
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* CRC32C of a record, as the state file writes it. */
#include "shm/crc32c.h"

/*
 * State files whose lines check but say nonsense: records mutated at
 * random (and re-checksummed), so the parser, not the checksum, must
 * refuse them.  Each time the broker starts, serves a new session, and
 * keeps what it could not understand out.
 */
static void test_state_fuzz(void)
{
	static const char *recs[] = {
		"H 1 00000000000000aa 7", "T 1 0 news", "T 2 1000 a%20b", "S 1 0 0 0 65536 65536 0 "
		"0000000000000000000000000000000000000000000000000000000000000000 alpha",
		"B 1 1", "U 1 1", "R 1", "G 1", "B 1 2",
	};
	const char junk[] = " 0123456789abcdefxHTSBUGR%-\t\n\x01\xff";
	uint64_t seed = harness_seed("state fuzz");
	unsigned rounds = (unsigned)(20 * harness_scale()) + 5, served = 0;
	struct tb t;

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	for (unsigned round = 0; round < rounds; round++) {
		char path[600];
		FILE *f;

		CU_ASSERT_FATAL(kill(t.pid, SIGKILL) == 0);
		CU_ASSERT_FATAL(tb_wait_child(t.pid, 5000) == 128 + SIGKILL);
		snprintf(path, sizeof(path), "%s/state", t.dir);
		f = fopen(path, "w");
		CU_ASSERT_FATAL(f != NULL);
		for (int i = 0; i < 200; i++) {
			char line[256];
			size_t len;

			snprintf(line, sizeof(line), "%s", recs[harness_rand(&seed) % 9]);
			len = strlen(line);
			for (int k = (int)(harness_rand(&seed) % 4); k > 0; k--) {
				size_t at = harness_rand(&seed) % (len + 1);

				switch (harness_rand(&seed) % 3) {
				case 0: /* change a byte */
					if (at < len)
						line[at] = junk[harness_rand(&seed) % (sizeof(junk) - 1)];
					break;
				case 1: /* cut */
					line[at] = 0;
					len = at;
					break;
				default: /* insert a number, maybe a huge one */
					snprintf(line + at, sizeof(line) - at, "%llu",
						 (unsigned long long)harness_rand(&seed));
					len = strlen(line);
				}
			}
			line[strcspn(line, "\n")] = 0;
			fprintf(f, "%08x %s\n", crc32c(0, line, strlen(line)), line);
		}
		fclose(f);
		tb_use_dir(t.dir);
		CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
		{
			struct shmb_connect_opts co = { .dir = t.dir };
			struct shmb_client *c;
			struct shmb_session *s;
			char name[32];

			snprintf(name, sizeof(name), "fuzz-%u", round);
			if (shmb_connect(&co, &c) == 0) {
				if (shmb_session_open(c, name, NULL, &s) == 0 &&
				    shmb_subscribe(s, "news") == 0)
					served++;
				shmb_close(c);
			}
		}
	}
	printf("\n  %u state files of 200 mutated lines each: the broker started and served every time"
	       " (%u/%u)\n", rounds, served, rounds);
	CU_ASSERT(served == rounds);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/*
 * A publisher that gives its session a new owner (and so a new generation,
 * a fenced old TX file and a drain) every 50 messages, while the broker is
 * SIGKILLed at random: every switch may be cut at any point.  The
 * subscriber gets every message whose publish returned 0, once, in order.
 */
static void __attribute__((noreturn)) owner_churn(const struct tb *t, struct run *run)
{
	struct shmb_connect_opts co = { .dir = t->dir, .wait_ms = 20000, .redial_base_ms = 5,
					.redial_cap_ms = 50, .control_timeout_ms = 20000 };
	struct shmb_session_opts so = { .rx_ring_size = 1u << 14, .tx_ring_size = 1u << 14 };
	uint64_t i = 0;

	fetch_add_release(&run->st.ready, 1);
	while (!load_acquire(&run->stop)) {
		struct shmb_client *c;
		struct shmb_session *s;
		int r;

		r = churn_open(&co, &so, &c, &s);
		if (r == 1)
			_exit(30);
		if (r < 0)
			_exit(31);
		for (int k = 0; k < 50; k++) {
			struct payload p;

			payload_make(&p, 0, i);
			r = shmb_publish(s, "t", &p, sizeof(p), 20000);
			if (r == -ESTALE)
				break; /* not sent: sent again by the next owner */
			if (r < 0)
				_exit(32);
			store_release(&run->st.published[0], ++i);
		}
		/* no flush: the next owner's switch drains what is left */
		shmb_close(c);
	}
	{
		struct shmb_client *c;
		struct shmb_session *s;
		int r;

		r = churn_open(&co, &so, &c, &s);
		if (r == 1)
			_exit(33);
		if (r < 0 || shmb_flush(s, 20000) < 0)
			_exit(34);
	}
	store_release(&run->done[0], 1);
	for (int j = 1; j < NPUB; j++)
		store_release(&run->done[j], 1);
	_exit(0);
}

static void test_owner_switches_killed(void)
{
	uint64_t seed = harness_seed("owner switch kills"), t0;
	struct run *run = run_new();
	unsigned kills = 0, quarantined = 0;
	pid_t sub, pub;
	struct tb t;

	/* the kill loop alone may run 120 s, then each child gets 60 s */
	harness_alarm(300);

	CU_ASSERT_FATAL(tb_start(&t, "--poll-us", "20", NULL) == 0);
	if ((sub = fork_or_die()) == 0)
		sub_proc(&t, run, 0);
	CU_ASSERT_FATAL(wait_ready(&run->st, 1));
	if ((pub = fork_or_die()) == 0)
		owner_churn(&t, run);
	CU_ASSERT_FATAL(wait_ready(&run->st, 2));
	t0 = clock_mono_ns();
	while (kills < 20 && clock_mono_ns() - t0 < 120ull * 1000000000ull) {
		uint64_t at = load_acquire(&run->st.published[0]);

		usleep(5000 + (unsigned)(harness_rand(&seed) % 40000));
		/* only while the stream moves: a kill of an idle broker tests nothing */
		TRY_WAIT_FOR(load_acquire(&run->st.published[0]) != at, 10000);
		CU_ASSERT_FATAL(kill(t.pid, SIGKILL) == 0);
		CU_ASSERT_FATAL(tb_wait_child(t.pid, 5000) == 128 + SIGKILL);
		kills++;
		tb_use_dir(t.dir);
		CU_ASSERT_FATAL(tb_start(&t, "--poll-us", "20", NULL) == 0);
	}
	store_release(&run->stop, 1);
	CU_ASSERT(tb_wait_child(pub, 60000) == 0);
	CU_ASSERT(tb_wait_child(sub, 60000) == 0);
	quarantined = (unsigned)tb_log_count(&t, "quarantined");
	printf("\n  %u kills during owner switches: %llu published, %llu received, %llu dup, %llu"
	       " errors, %u quarantine lines, %d new owners\n", kills,
	       (unsigned long long)run->st.published[0], (unsigned long long)run->st.received[0],
	       (unsigned long long)run->st.dups[0], (unsigned long long)run->st.errors[0],
	       quarantined - (unsigned)tb_log_count(&t, "0 quarantined"),
	       tb_log_count(&t, "reattached by pid"));
	CU_ASSERT(kills >= 20);
	CU_ASSERT(run->st.received[0] == run->st.published[0]);
	CU_ASSERT(run->st.dups[0] == 0);
	CU_ASSERT(run->st.errors[0] == 0);
	CU_ASSERT(tb_log_count(&t, "quarantined at start-up") == 0);
	CU_ASSERT(tb_log_count(&t, "quarantined:") == 0);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	munmap(run, sizeof(*run));
}

/* A drop-oldest reader far behind (more than a lap) survives a restart. */
static void test_drop_oldest_lagging(void)
{
	struct shmb_session_opts so = { .policy = SHMB_POLICY_DROP_OLDEST, .rx_ring_size = 4096 };
	struct shmb_connect_opts co;
	struct shmb_client *c;
	struct shmb_session *s, *p;
	struct proto_reply rep;
	char buf[100] = { 0 };
	uint64_t got = 0, missed = 0, last = 0;
	struct tb t;

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	co = (struct shmb_connect_opts){ .dir = t.dir, .redial_base_ms = 5, .redial_cap_ms = 50 };
	CU_ASSERT_FATAL(shmb_connect(&co, &c) == 0);
	CU_ASSERT_FATAL(shmb_session_open(c, "slow", &so, &s) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(s, "t") == 0);
	CU_ASSERT_FATAL(shmb_session_open(c, "fast", NULL, &p) == 0);
	for (int i = 1; i <= 200; i++) {
		memcpy(buf, &i, sizeof(i));
		CU_ASSERT_FATAL(shmb_publish(p, "t", buf, sizeof(buf), 1000) == 0);
	}
	CU_ASSERT_FATAL(shmb_flush(p, 5000) == 0);
	CU_ASSERT_FATAL(kill(t.pid, SIGKILL) == 0);
	CU_ASSERT_FATAL(tb_wait_child(t.pid, 5000) == 128 + SIGKILL);
	tb_use_dir(t.dir);
	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	CU_ASSERT(tb_log_count(&t, "quarantined at start-up") == 0);
	CU_ASSERT(shmb_reconnect(c) == 0);
	CU_ASSERT(client_status(c, &rep) == 0);
	CU_ASSERT(rep.u.status.adopted == 2);
	for (;;) {
		struct shmb_msg m;
		int v;

		if (shmb_recv(s, &m, 300) < 0)
			break;
		memcpy(&v, m.data, sizeof(v));
		CU_ASSERT((uint64_t)v > last);
		last = (uint64_t)v;
		missed += m.missed;
		got++;
	}
	printf("\n  after the restart: %llu received, %llu reported dropped, the last %llu\n",
	       (unsigned long long)got, (unsigned long long)missed, (unsigned long long)last);
	CU_ASSERT(got > 0);
	CU_ASSERT(last == 200);
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* A clean stop and start: sessions, subscriptions and topics come back. */
static void test_clean_restart(void)
{
	struct shmb_connect_opts co;
	struct shmb_client *c;
	struct shmb_session *s, *p;
	struct shmb_session_info info;
	uint64_t id;
	struct tb t;
	int got = 0;

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	co = (struct shmb_connect_opts){ .dir = t.dir };
	CU_ASSERT_FATAL(shmb_connect(&co, &c) == 0);
	CU_ASSERT_FATAL(shmb_session_open(c, "s", NULL, &s) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(s, "a") == 0);
	CU_ASSERT_FATAL(shmb_subscribe(s, "b") == 0);
	CU_ASSERT_FATAL(shmb_unsubscribe(s, "a") == 0);
	CU_ASSERT(shmb_session_info(s, &info) == 0);
	id = info.session_id;
	shmb_close(c);
	WAIT_FOR_FATAL(tb_log_count(&t, "detached: connection closed") >= 1, 10000);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_use_dir(t.dir);
	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	CU_ASSERT_FATAL(shmb_connect(&co, &c) == 0);
	CU_ASSERT_FATAL(shmb_session_open(c, "p", NULL, &p) == 0);
	CU_ASSERT(shmb_publish(p, "a", "no", 2, 1000) == 0);
	CU_ASSERT(shmb_publish(p, "b", "yes", 3, 1000) == 0);
	CU_ASSERT(shmb_flush(p, 5000) == 0);
	CU_ASSERT_FATAL(shmb_session_open(c, "s", NULL, &s) == 0);
	CU_ASSERT(shmb_session_info(s, &info) == 0);
	CU_ASSERT(info.session_id == id);
	for (;;) {
		struct shmb_msg m;

		if (shmb_recv(s, &m, 300) < 0)
			break;
		CU_ASSERT(m.len == 3 && !memcmp(m.data, "yes", 3));
		CU_ASSERT(!strcmp(m.topic, "b"));
		got++;
	}
	CU_ASSERT(got == 1);
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* Has every subscriber received something? */
static bool all_receiving(const struct run *run)
{
	for (int i = 0; i < NSUB; i++)
		if (!load_acquire(&run->st.received[i]))
			return false;
	return true;
}

/*
 * SIGTERM while the stream flows: the broker routes what is in flight for
 * at most --drain-timeout (1 s here), exits 0, and the next broker
 * delivers the rest: nothing lost, nothing twice.
 */
static void test_sigterm_drain(void)
{
	struct run *run = run_new();
	pid_t subs[NSUB], pubs[NPUB];
	uint64_t t0, took, total = 0, base;
	struct tb t;

	CU_ASSERT_FATAL(tb_start(&t, "--poll-us", "20", "--drain-timeout", "1", NULL) == 0);
	for (int i = 0; i < NSUB; i++)
		if ((subs[i] = fork_or_die()) == 0)
			sub_proc(&t, run, i);
	CU_ASSERT_FATAL(wait_ready(&run->st, NSUB));
	for (int j = 0; j < NPUB; j++)
		if ((pubs[j] = fork_or_die()) == 0)
			pub_proc(&t, run, j);
	CU_ASSERT_FATAL(wait_ready(&run->st, NSUB + NPUB));
	/* the stream flows: every subscriber has something */
	WAIT_FOR(all_receiving(run), 10000);
	t0 = clock_mono_ns();
	CU_ASSERT_FATAL(kill(t.pid, SIGTERM) == 0);
	CU_ASSERT(tb_wait_child(t.pid, 10000) == 0);
	took = clock_mono_ns() - t0;
	printf("\n  SIGTERM with the stream flowing: exited 0 after %.2f s (--drain-timeout 1)\n",
	       took / 1e9);
	/* it stops at the first pass that moves nothing (publishers never
	 * stop, so what is "in flight" keeps growing), and never later than
	 * --drain-timeout; what it left is the next broker's */
	CU_ASSERT(took < 3000000000ull);
	base = delivered(t.dir, run);
	tb_use_dir(t.dir);
	CU_ASSERT_FATAL(tb_start(&t, "--poll-us", "20", NULL) == 0);
	/* the stream flows again: the new broker delivers */
	WAIT_FOR(delivered(t.dir, run) > base, 10000);
	store_release(&run->stop, 1);
	for (int j = 0; j < NPUB; j++) {
		CU_ASSERT(tb_wait_child(pubs[j], 60000) == 0);
		total += run->st.published[j];
	}
	for (int i = 0; i < NSUB; i++)
		CU_ASSERT(tb_wait_child(subs[i], 60000) == 0);
	for (int i = 0; i < NSUB; i++) {
		CU_ASSERT(run->st.received[i] == total);
		CU_ASSERT(run->st.dups[i] == 0);
		CU_ASSERT(run->st.errors[i] == 0);
	}
	printf("  %d publishers sent %llu; each subscriber got them all, once\n", NPUB,
	       (unsigned long long)total);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	munmap(run, sizeof(*run));
}

/* Lines in the state file; -1 if it cannot be read. */
static long state_nlines(const char *dir)
{
	char path[600];
	long n = 0;
	FILE *f;
	int ch;

	snprintf(path, sizeof(path), "%s/state", dir);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while ((ch = getc(f)) != EOF)
		n += ch == '\n';
	fclose(f);
	return n;
}

/*
 * One session opened and closed thousands of times: every attach and every
 * detach appends a line that replaces the last one, so what is live stays
 * two records (header, session) and compaction must keep the file near
 * four times that plus its slack of 1024 lines, not let it grow forever.
 */
static void test_state_churn(void)
{
	struct shmb_session_opts so = { .rx_ring_size = 4096, .tx_ring_size = 4096 };
	const unsigned cycles = 1500 + (unsigned)(1500 * harness_scale());
	struct shmb_connect_opts co;
	struct shmb_client *c;
	struct shmb_session *s;
	long lines, most = 0;
	unsigned done = 0;
	struct tb t;

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	co = (struct shmb_connect_opts){ .dir = t.dir };
	CU_ASSERT_FATAL(shmb_connect(&co, &c) == 0);
	for (unsigned i = 0; i < cycles; i++) {
		if (shmb_session_open(c, "churn", &so, &s) < 0)
			break;
		if (shmb_session_close(s) < 0)
			break;
		done++;
		if (i % 256 == 0 && (lines = state_nlines(t.dir)) > most)
			most = lines;
	}
	lines = state_nlines(t.dir);
	if (lines > most)
		most = lines;
	printf("\n  %u open/close cycles: the state file has %ld lines at the end, %ld at most\n",
	       done, lines, most);
	CU_ASSERT(done == cycles);
	CU_ASSERT(lines > 0);
	CU_ASSERT(most < 4 * 2 + 1100);
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* The state file's lines whose checksum fails, and whether it ends in
 * the middle of a line; -1 if it cannot be read. */
static int state_bad_lines(const char *dir, bool *torn)
{
	char path[600], *buf, *p, *end;
	struct stat st;
	int fd, bad = 0;

	snprintf(path, sizeof(path), "%s/state", dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0)
		return -1;
	buf = malloc((size_t)st.st_size + 1);
	if (!buf || pread(fd, buf, (size_t)st.st_size, 0) != st.st_size) {
		free(buf);
		close(fd);
		return -1;
	}
	close(fd);
	end = buf + st.st_size;
	*torn = st.st_size > 0 && end[-1] != '\n';
	for (p = buf; p < end;) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		unsigned crc;

		if (!nl)
			break;
		*nl = 0;
		if (nl - p < 10 || sscanf(p, "%8x ", &crc) != 1 ||
		    crc != crc32c(0, p + 9, (size_t)(nl - p - 9)))
			bad++;
		p = nl + 1;
	}
	free(buf);
	return bad;
}

/*
 * The state file cannot grow (RLIMIT_FSIZE set on the running broker,
 * SIGXFSZ ignored): a topic's line is written in part, then refused.  The
 * request fails, nothing of the line stays in the file, and the topic
 * does not exist: once the file can grow again, the same topic is
 * recorded properly, and after a restart every line checks and the
 * subscription made then is still there.  A subscribe and an unsubscribe
 * refused the same way change nothing either.
 */
static void test_state_write_fails(void)
{
	char topic[PROTO_TOPIC_MAX + 1], path[600];
	struct shmb_connect_opts co;
	struct shmb_client *c;
	struct shmb_session *s, *p;
	struct shmb_session_info info;
	struct rlimit was, lim;
	struct stat before, after;
	struct shmb_msg m;
	uint64_t id;
	bool torn = false;
	struct tb t;
	int r;

	memset(topic, 'L', PROTO_TOPIC_MAX);
	topic[PROTO_TOPIC_MAX] = 0;
	/* inherited by the broker through fork and exec: it gets EFBIG, not killed */
	signal(SIGXFSZ, SIG_IGN);
	r = tb_start(&t, "--rx-ring-size", "4096", "--tx-ring-size", "4096", NULL);
	signal(SIGXFSZ, SIG_DFL);
	CU_ASSERT_FATAL(r == 0);
	co = (struct shmb_connect_opts){ .dir = t.dir };
	CU_ASSERT_FATAL(shmb_connect(&co, &c) == 0);
	CU_ASSERT_FATAL(shmb_session_open(c, "s", NULL, &s) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(s, "short") == 0);
	CU_ASSERT_FATAL(shmb_session_open(c, "p", NULL, &p) == 0);
	CU_ASSERT_FATAL(shmb_publish(p, "other", "", 0, 1000) == 0); /* the topic exists */
	snprintf(path, sizeof(path), "%s/state", t.dir);
	CU_ASSERT_FATAL(stat(path, &before) == 0);
	/* room for 100 more bytes: the topic's line is longer */
	CU_ASSERT_FATAL(prlimit(t.pid, RLIMIT_FSIZE, NULL, &was) == 0);
	lim = was;
	lim.rlim_cur = (rlim_t)before.st_size + 100;
	CU_ASSERT_FATAL(prlimit(t.pid, RLIMIT_FSIZE, &lim, NULL) == 0);
	r = shmb_subscribe(s, topic);
	printf("\n  the state file at its size limit: subscribe to a new topic -> %d (%s)\n", r,
	       strerror(-r));
	CU_ASSERT(r < 0);
	CU_ASSERT(stat(path, &after) == 0);
	CU_ASSERT(after.st_size == before.st_size);
	CU_ASSERT(state_bad_lines(t.dir, &torn) == 0);
	CU_ASSERT(!torn);
	/* no room at all: neither of these happens */
	lim.rlim_cur = (rlim_t)after.st_size;
	CU_ASSERT_FATAL(prlimit(t.pid, RLIMIT_FSIZE, &lim, NULL) == 0);
	CU_ASSERT(shmb_unsubscribe(s, "short") < 0);
	CU_ASSERT(shmb_subscribe(s, "other") < 0);
	/* the file can grow again: still subscribed to short, not to other */
	CU_ASSERT_FATAL(prlimit(t.pid, RLIMIT_FSIZE, &was, NULL) == 0);
	CU_ASSERT(shmb_publish(p, "other", "other", 5, 1000) == 0);
	CU_ASSERT(shmb_publish(p, "short", "short", 5, 1000) == 0);
	CU_ASSERT(shmb_flush(p, 5000) == 0);
	CU_ASSERT(shmb_recv(s, &m, 5000) == 0 && m.len == 5 && !memcmp(m.data, "short", 5));
	shmb_ack(s);
	/* and the topic is new: its line is written now */
	CU_ASSERT_FATAL(shmb_subscribe(s, topic) == 0);
	CU_ASSERT(shmb_session_info(s, &info) == 0);
	id = info.session_id;
	shmb_close(c);
	WAIT_FOR_FATAL(tb_log_count(&t, "detached: connection closed") >= 2, 10000);
	CU_ASSERT_FATAL(kill(t.pid, SIGKILL) == 0);
	CU_ASSERT_FATAL(tb_wait_child(t.pid, 5000) == 128 + SIGKILL);
	CU_ASSERT(state_bad_lines(t.dir, &torn) == 0);
	CU_ASSERT(!torn);

	tb_use_dir(t.dir);
	CU_ASSERT_FATAL(tb_start(&t, "--rx-ring-size", "4096", "--tx-ring-size", "4096", NULL) == 0);
	CU_ASSERT(tb_log_count(&t, "state: line") == 0);
	CU_ASSERT(tb_log_count(&t, "of its subscriptions is unknown") == 0);
	CU_ASSERT_FATAL(shmb_connect(&co, &c) == 0);
	CU_ASSERT_FATAL(shmb_session_open(c, "s", NULL, &s) == 0);
	CU_ASSERT(shmb_session_info(s, &info) == 0);
	CU_ASSERT(info.session_id == id);
	CU_ASSERT_FATAL(shmb_session_open(c, "p", NULL, &p) == 0);
	CU_ASSERT(shmb_publish(p, topic, "long", 4, 1000) == 0);
	CU_ASSERT(shmb_publish(p, "short", "short", 5, 1000) == 0);
	CU_ASSERT(shmb_flush(p, 5000) == 0);
	CU_ASSERT(shmb_recv(s, &m, 5000) == 0 && m.len == 4 && !memcmp(m.data, "long", 4));
	CU_ASSERT(shmb_recv(s, &m, 5000) == 0 && m.len == 5 && !memcmp(m.data, "short", 5));
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* Append one record to the state file, with its checksum. */
static int state_add(const char *dir, const char *rec)
{
	char path[600];
	FILE *f;
	int r;

	snprintf(path, sizeof(path), "%s/state", dir);
	f = fopen(path, "a");
	if (!f)
		return -1;
	r = fprintf(f, "%08x %s\n", crc32c(0, rec, strlen(rec)), rec) < 0;
	return fclose(f) == 0 && r == 0 ? 0 : -1;
}

/*
 * Lines that check but name ids past the limit: a header whose next
 * session id is 2^64-1 (the next ids would wrap to 0, then 1, an id in
 * use) and a session whose id is 2^63.  The parser refuses both; new
 * sessions get the ids after the recorded ones, and the old one is
 * untouched.  Then a directory that is already there when a new session
 * would take its id: that session is refused, the directory left alone.
 */
static void test_state_huge_ids(void)
{
	struct shmb_connect_opts co;
	struct shmb_client *c;
	struct shmb_session *s, *n[3];
	struct shmb_session_info info;
	unsigned long long old, id[3], bid = 0;
	char path[700], rec[300], line[1024];
	struct shmb_msg m;
	struct tb t;
	FILE *f;

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	co = (struct shmb_connect_opts){ .dir = t.dir };
	CU_ASSERT_FATAL(shmb_connect(&co, &c) == 0);
	CU_ASSERT_FATAL(shmb_session_open(c, "old", NULL, &s) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(s, "t") == 0);
	CU_ASSERT(shmb_session_info(s, &info) == 0);
	old = info.session_id;
	shmb_close(c);
	WAIT_FOR_FATAL(tb_log_count(&t, "detached: connection closed") >= 1, 10000);
	CU_ASSERT_FATAL(kill(t.pid, SIGKILL) == 0);
	CU_ASSERT_FATAL(tb_wait_child(t.pid, 5000) == 128 + SIGKILL);

	snprintf(path, sizeof(path), "%s/state", t.dir);
	f = fopen(path, "r");
	CU_ASSERT_FATAL(f != NULL);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%*x H 1 %llx", &bid) == 1)
			break;
	fclose(f);
	CU_ASSERT_FATAL(bid != 0);
	snprintf(rec, sizeof(rec), "H 1 %016llx 18446744073709551615", bid);
	CU_ASSERT_FATAL(state_add(t.dir, rec) == 0);
	snprintf(rec, sizeof(rec), "S 9223372036854775808 %u 0 0 65536 65536 0 %064d huge",
		 (unsigned)getuid(), 0);
	CU_ASSERT_FATAL(state_add(t.dir, rec) == 0);

	tb_use_dir(t.dir);
	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	CU_ASSERT(tb_log_count(&t, "is corrupt") == 2);
	CU_ASSERT_FATAL(shmb_connect(&co, &c) == 0);
	for (int i = 0; i < 3; i++) {
		char name[8];

		snprintf(name, sizeof(name), "n%d", i);
		CU_ASSERT_FATAL(shmb_session_open(c, name, NULL, &n[i]) == 0);
		CU_ASSERT(shmb_session_info(n[i], &info) == 0);
		id[i] = info.session_id;
		printf("%s  new session %s: id %llu\n", i ? "" : "\n", name, id[i]);
		CU_ASSERT(id[i] > old && id[i] < old + 100);
		CU_ASSERT(i == 0 || id[i] == id[i - 1] + 1);
	}
	/* the old session is still there, its files and subscription intact */
	CU_ASSERT_FATAL(shmb_session_open(c, "old", NULL, &s) == 0);
	CU_ASSERT(shmb_session_info(s, &info) == 0);
	CU_ASSERT(info.session_id == old);
	CU_ASSERT(info.created == 0);
	CU_ASSERT(shmb_publish(n[0], "t", "hi", 2, 1000) == 0);
	CU_ASSERT(shmb_flush(n[0], 5000) == 0);
	CU_ASSERT(shmb_recv(s, &m, 5000) == 0 && m.len == 2 && !memcmp(m.data, "hi", 2));

	/* a directory where the next session would go: refused, left alone */
	snprintf(path, sizeof(path), "%s/sessions/%llu", t.dir, id[2] + 1);
	CU_ASSERT_FATAL(mkdir(path, 0700) == 0);
	snprintf(path, sizeof(path), "%s/sessions/%llu/mine", t.dir, id[2] + 1);
	CU_ASSERT_FATAL(close(open(path, O_WRONLY | O_CREAT, 0600)) == 0);
	CU_ASSERT(shmb_session_open(c, "late", NULL, &n[0]) < 0);
	CU_ASSERT(tb_log_count(&t, "exists already") == 1);
	CU_ASSERT(access(path, F_OK) == 0);
	snprintf(path, sizeof(path), "%s/sessions/%llu/rx", t.dir, id[2] + 1);
	CU_ASSERT(access(path, F_OK) < 0);
	CU_ASSERT_FATAL(shmb_session_open(c, "late", NULL, &n[0]) == 0);
	CU_ASSERT(shmb_session_info(n[0], &info) == 0);
	CU_ASSERT(info.session_id == id[2] + 2);
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/*
 * A NUL byte in an early line: the record that created session "first",
 * which the lines of its detach and its next attach repeat before it
 * subscribes.  That line is corrupt; every line after it still counts:
 * both sessions come back with their subscriptions, and the file is not
 * taken to end at the NUL.
 */
static void test_state_nul(void)
{
	const char *names[] = { "first", "second" };
	struct shmb_connect_opts co;
	struct shmb_client *c;
	struct shmb_session *s[2], *p;
	struct shmb_session_info info;
	unsigned long long ids[2];
	char path[600], *buf, *at;
	struct proto_reply rep;
	struct stat st;
	struct shmb_msg m;
	bool torn = true;
	struct tb t;
	int fd;

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	co = (struct shmb_connect_opts){ .dir = t.dir };
	CU_ASSERT_FATAL(shmb_connect(&co, &c) == 0);
	CU_ASSERT_FATAL(shmb_session_open(c, names[0], NULL, &s[0]) == 0);
	CU_ASSERT_FATAL(shmb_session_close(s[0]) == 0);
	for (int i = 0; i < 2; i++) {
		CU_ASSERT_FATAL(shmb_session_open(c, names[i], NULL, &s[i]) == 0);
		CU_ASSERT_FATAL(shmb_subscribe(s[i], "t") == 0);
		CU_ASSERT(shmb_session_info(s[i], &info) == 0);
		ids[i] = info.session_id;
	}
	shmb_close(c);
	WAIT_FOR_FATAL(tb_log_count(&t, "detached: connection closed") >= 2, 10000);
	CU_ASSERT_FATAL(kill(t.pid, SIGKILL) == 0);
	CU_ASSERT_FATAL(tb_wait_child(t.pid, 5000) == 128 + SIGKILL);
	/* nothing to fault before the NUL */
	CU_ASSERT(state_bad_lines(t.dir, &torn) == 0);

	snprintf(path, sizeof(path), "%s/state", t.dir);
	fd = open(path, O_RDWR);
	CU_ASSERT_FATAL(fd >= 0 && fstat(fd, &st) == 0);
	buf = calloc(1, (size_t)st.st_size + 1);
	CU_ASSERT_FATAL(buf && pread(fd, buf, (size_t)st.st_size, 0) == st.st_size);
	at = strstr(buf, " first\n");
	CU_ASSERT_FATAL(at != NULL);
	/* the middle of that line, and the detach repeats the record later */
	CU_ASSERT_FATAL(strstr(at + 1, " first\n") != NULL);
	while (at > buf && at[-1] != '\n')
		at--;
	CU_ASSERT_FATAL(pwrite(fd, "", 1, at - buf + 20) == 1);
	free(buf);
	close(fd);

	tb_use_dir(t.dir);
	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	CU_ASSERT(tb_log_count(&t, "is corrupt") == 1);
	CU_ASSERT(tb_log_count(&t, "incomplete") == 0);
	CU_ASSERT(tb_log_count(&t, "a copy is kept") == 1);
	CU_ASSERT_FATAL(shmb_connect(&co, &c) == 0);
	CU_ASSERT(client_status(c, &rep) == 0);
	CU_ASSERT(rep.u.status.adopted == 2);
	CU_ASSERT(rep.u.status.quarantined_at_start == 0);
	CU_ASSERT_FATAL(shmb_session_open(c, "p", NULL, &p) == 0);
	CU_ASSERT(shmb_publish(p, "t", "x", 1, 1000) == 0);
	CU_ASSERT(shmb_flush(p, 5000) == 0);
	for (int i = 0; i < 2; i++) {
		CU_ASSERT_FATAL(shmb_session_open(c, names[i], NULL, &s[i]) == 0);
		CU_ASSERT(shmb_session_info(s[i], &info) == 0);
		CU_ASSERT(info.session_id == ids[i]);
		CU_ASSERT(info.created == 0);
		CU_ASSERT(shmb_recv(s[i], &m, 5000) == 0 && m.len == 1);
	}
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* Does the state file record session id (an S line not followed by a G)?
 * *s_lines: how many S lines it has for it. */
static bool state_records(const char *dir, unsigned long long id, unsigned *s_lines)
{
	char path[600], line[1024];
	bool rec = false;
	FILE *f;

	*s_lines = 0;

	snprintf(path, sizeof(path), "%s/state", dir);
	f = fopen(path, "r");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long i;
		char kind;

		if (sscanf(line, "%*x %c %llu", &kind, &i) == 2 && i == id &&
		    (kind == 'S' || kind == 'G')) {
			rec = kind == 'S';
			*s_lines += kind == 'S';
		}
	}
	fclose(f);
	return rec;
}

/*
 * Sessions created and destroyed over and over, so that the file is
 * rewritten now and then by the G line of a destroy.  That rewrite must
 * leave the session out, and its G line must not be lost with the old
 * file: the session would be recorded again though its files are gone (a
 * kill before the destroy ends would bring it back).  Runs until three
 * rewrites came from a destroy.
 */
static void test_state_destroy_compacts(void)
{
	struct shmb_session_opts so = { .rx_ring_size = 4096, .tx_ring_size = 4096 };
	struct shmb_connect_opts co;
	struct shmb_client *c;
	struct shmb_session *s;
	struct shmb_session_info info;
	unsigned cycles = 0, by_destroy = 0, recorded = 0, kept = 0;
	struct tb t;

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	co = (struct shmb_connect_opts){ .dir = t.dir };
	CU_ASSERT_FATAL(shmb_connect(&co, &c) == 0);
	while (by_destroy < 3 && cycles < 20000) {
		long before;
		unsigned s_lines;
		bool rewritten;

		if (shmb_session_open(c, "gone", &so, &s) < 0 || shmb_session_info(s, &info) < 0)
			break;
		/* a line more every third time: rewrites fall on every kind of line */
		if (cycles % 3 == 0 && shmb_subscribe(s, "t") < 0)
			break;
		before = state_nlines(t.dir);
		if (shmb_session_destroy(s) < 0)
			break;
		rewritten = state_nlines(t.dir) < before;
		by_destroy += rewritten;
		recorded += state_records(t.dir, info.session_id, &s_lines);
		/* the rewrite left it out: nothing of it but the G line */
		kept += rewritten && s_lines > 0;
		cycles++;
	}
	printf("\n  %u sessions created and destroyed; %u rewrites of the state file set off by a"
	       " destroy, %u of them kept the session; destroyed sessions still recorded: %u\n",
	       cycles, by_destroy, kept, recorded);
	CU_ASSERT(by_destroy == 3);
	CU_ASSERT(kept == 0);
	CU_ASSERT(recorded == 0);
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	CU_ASSERT(tb_log_count(&t, "its files are gone") == 0);
	tb_use_dir(t.dir);
	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	CU_ASSERT(tb_log_count(&t, "its files are gone") == 0);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

#define MID_TOPICS 4096

/*
 * What the state file says session `id` is subscribed to, as got[k] for
 * topic "k<k>"; -1 if a line of it names a topic the file does not have.
 */
static int state_subs(const char *dir, unsigned long long id, uint8_t *got)
{
	char path[600], line[1024];
	static int knum[MID_TOPICS + 1]; /* topic id -> k, or -1 */
	FILE *f;
	int r = 0;

	snprintf(path, sizeof(path), "%s/state", dir);
	f = fopen(path, "r");
	if (!f)
		return -1;
	memset(got, 0, MID_TOPICS);
	for (int i = 0; i <= MID_TOPICS; i++)
		knum[i] = -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long sid;
		unsigned tid, k;
		char kind;

		if (sscanf(line, "%*x T %u %*u k%u", &tid, &k) == 2 && tid <= MID_TOPICS &&
		    k < MID_TOPICS) {
			knum[tid] = (int)k;
			continue;
		}
		if (sscanf(line, "%*x R %llu", &sid) == 1 && sid == id) {
			memset(got, 0, MID_TOPICS);
			continue;
		}
		if (sscanf(line, "%*x %c %llu %u", &kind, &sid, &tid) != 3 || sid != id ||
		    (kind != 'B' && kind != 'U'))
			continue;
		if (tid > MID_TOPICS || knum[tid] < 0) {
			r = -1;
			continue;
		}
		got[knum[tid]] = kind == 'B';
	}
	fclose(f);
	return r;
}

/*
 * A rewrite of the state file set off by the line of a subscription
 * change (a new topic's T line, a B line, a U line) must not drop that
 * change.  Another session's attach and detach lines bring the log to the
 * point where the next line crosses the rewrite threshold (four times the
 * header, topics, sessions and subscriptions, plus 1024: recovery.md),
 * then the change is made; after it, the file must say what the broker
 * holds.  Each kind twice.
 */
static void test_state_compact_mid_change(void)
{
	struct shmb_session_opts so = { .rx_ring_size = 4096, .tx_ring_size = 4096 };
	static uint8_t want[MID_TOPICS], got[MID_TOPICS];
	static const char *const kinds[] = { "a new topic", "an unsubscribe", "a subscribe" };
	struct shmb_connect_opts co;
	struct shmb_client *c;
	struct shmb_session *s, *x = NULL;
	struct shmb_session_info info;
	unsigned ntopics = 0, nsubs = 0, done = 0, set_off[3] = { 0 }, wrong = 0;
	uint64_t t0 = clock_mono_ns();
	struct tb t;

	memset(want, 0, sizeof(want));
	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	co = (struct shmb_connect_opts){ .dir = t.dir };
	CU_ASSERT_FATAL(shmb_connect(&co, &c) == 0);
	CU_ASSERT_FATAL(shmb_session_open(c, "subs", &so, &s) == 0);
	CU_ASSERT_FATAL(shmb_session_info(s, &info) == 0);
	CU_ASSERT_FATAL(shmb_session_open(c, "churn", &so, &x) == 0);
	while (done < 6 && clock_mono_ns() - t0 < 60ull * 1000000000ull) {
		/* live: the header, the topics, two sessions, the subscriptions */
		long lines = state_nlines(t.dir), live = 1 + ntopics + 2 + nsubs;
		int kind = (int)(done % 3), r;
		char topic[16];
		unsigned k;

		CU_ASSERT_FATAL(lines > 0);
		if (lines < 4 * live + 1024) {
			/* one line that replaces another */
			if (x) {
				r = shmb_session_close(x);
				x = NULL;
			} else {
				r = shmb_session_open(c, "churn", &so, &x);
			}
			CU_ASSERT_FATAL(r == 0);
			continue;
		}
		/* the next line crosses: a new topic (T, then B), the unsubscribe
		 * of that topic (U), and its subscribe again (B) */
		k = kind == 0 ? ntopics : ntopics - 1;
		snprintf(topic, sizeof(topic), "k%u", k);
		r = kind == 1 ? shmb_unsubscribe(s, topic) : shmb_subscribe(s, topic);
		CU_ASSERT_FATAL(r == 0);
		if (kind == 0)
			ntopics++;
		want[k] = kind != 1;
		nsubs += kind == 1 ? -1u : 1;
		set_off[kind] += state_nlines(t.dir) < lines;
		if (state_subs(t.dir, info.session_id, got) < 0 || memcmp(got, want, MID_TOPICS)) {
			printf("\n  after %s that set off a rewrite, the state file is wrong", kinds[kind]);
			wrong++;
		}
		done++;
	}
	printf("\n  rewrites set off by a new topic %u, an unsubscribe %u, a subscribe %u;"
	       " the file wrong after %u of them\n", set_off[0], set_off[1], set_off[2], wrong);
	CU_ASSERT(done == 6);
	CU_ASSERT(set_off[0] == 2 && set_off[1] == 2 && set_off[2] == 2);
	CU_ASSERT(wrong == 0);
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* The longest topic name whose every character the state file escapes
 * (200 '%', 600 characters written): recorded, and back after a restart. */
static void test_state_escaped_topic(void)
{
	char topic[PROTO_TOPIC_MAX + 1];
	struct shmb_connect_opts co;
	struct shmb_client *c;
	struct shmb_session *s, *p;
	struct shmb_msg m;
	struct tb t;

	memset(topic, '%', PROTO_TOPIC_MAX);
	topic[PROTO_TOPIC_MAX] = 0;
	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	co = (struct shmb_connect_opts){ .dir = t.dir };
	CU_ASSERT_FATAL(shmb_connect(&co, &c) == 0);
	CU_ASSERT_FATAL(shmb_session_open(c, "s", NULL, &s) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(s, topic) == 0);
	shmb_close(c);
	WAIT_FOR_FATAL(tb_log_count(&t, "detached: connection closed") >= 1, 10000);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_use_dir(t.dir);
	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	CU_ASSERT(tb_log_count(&t, "state: line") == 0);
	CU_ASSERT_FATAL(shmb_connect(&co, &c) == 0);
	CU_ASSERT_FATAL(shmb_session_open(c, "p", NULL, &p) == 0);
	CU_ASSERT(shmb_publish(p, topic, "x", 1, 1000) == 0);
	CU_ASSERT(shmb_flush(p, 5000) == 0);
	CU_ASSERT_FATAL(shmb_session_open(c, "s", NULL, &s) == 0);
	CU_ASSERT(shmb_recv(s, &m, 5000) == 0 && m.len == 1 && !strcmp(m.topic, topic));
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

static const struct harness_test tests[] = {
	{ "clean_restart", test_clean_restart },
	{ "broker_killed", test_broker_killed },
	{ "sigterm_drain", test_sigterm_drain },
	{ "owner_switches_killed", test_owner_switches_killed },
	{ "drop_oldest_lagging", test_drop_oldest_lagging },
	{ NULL, NULL },
};

/* Damaged input: also run under ASan (make asan) */
static const struct harness_test hostile_tests[] = {
	{ "damaged_at_start", test_damaged_at_start },
	{ "state_fuzz", test_state_fuzz },
	{ "state_write_fails", test_state_write_fails },
	{ "state_huge_ids", test_state_huge_ids },
	{ "state_nul", test_state_nul },
	{ NULL, NULL },
};

/* The state file under churn, and its longest lines */
static const struct harness_test state_tests[] = {
	{ "state_churn", test_state_churn },
	{ "state_destroy_compacts", test_state_destroy_compacts },
	{ "state_compact_mid_change", test_state_compact_mid_change },
	{ "state_escaped_topic", test_state_escaped_topic },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "restart", tests },
	{ "broker-hostile", hostile_tests },
	{ "state", state_tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	return harness_main("test-restart", suites, argc, argv);
}
