/*
 * tests/integration/test-lib-lanes.c - libshmb on the direct data path:
 * a broker started with --lanes, and applications that use nothing but
 * <shmb.h>.  The lanes are really used (messages move while the broker
 * is SIGSTOPped, which the relay cannot do), and a session reads its
 * lanes and its RX ring side by side (a publisher told SHMB_LANES=0 goes
 * through the relay): every message of both arrives once and in order.
 *
 * The stream tests of test-broker also run against a broker with --lanes
 * (tests/integration/test-lib-lanes.sh).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker-helper.h"
#include "harness.h"
#include "libclient/internal.h"
#include "shm/atomics.h"
#include "shm/clock.h"
#include "shm/futex.h"
#include "shm/lane-rw.h"
#include "shm/lane.h"
#include "shm/layout.h"
#include "shm/ring.h"
#include "shmb.h"
#include "stream.h"

/* Publish n messages 1..n (8 bytes: the number) on topic "t", batches of
 * up to 16; _exit(0) when all are committed. */
static void pub_main(const struct tb *t, const char *name, uint64_t n, bool relay)
{
	struct shmb_client *c;
	struct shmb_session *s;

	if (relay)
		setenv("SHMB_LANES", "0", 1);
	if (connect_open(t, name, 0, &c, &s) < 0)
		_exit(20);
	for (uint64_t i = 1; i <= n; i++) {
		unsigned fl = i % 16 && i != n ? SHMB_PUB_MORE : 0;

		if (shmb_publish_flags(s, "t", &i, sizeof(i), 30000, fl) < 0)
			_exit(21);
	}
	shmb_session_close(s);
	shmb_close(c);
	_exit(0);
}

/* Receive until every publisher's stream (by src_session) reached n,
 * checking each is 1..n in order.  Returns how many arrived. */
static uint64_t drain_streams(struct shmb_session *s, uint64_t n, unsigned npub, int timeout_ms)
{
	uint64_t next[4] = { 1, 1, 1, 1 }, sess[4] = { 0 }, got = 0;
	struct shmb_msg m;

	while (got < n * npub && shmb_recv(s, &m, timeout_ms) == 0) {
		uint64_t v;
		unsigned k;

		for (k = 0; k < npub && sess[k] && sess[k] != m.src_session; k++)
			;
		CU_ASSERT_FATAL(k < npub);
		sess[k] = m.src_session;
		CU_ASSERT_FATAL(m.len == 8);
		memcpy(&v, m.data, 8);
		if (v != next[k])
			printf("\n  publisher %u: %llu where %llu was next\n", k, (unsigned long long)v,
			       (unsigned long long)next[k]);
		CU_ASSERT_FATAL(v == next[k]);
		CU_ASSERT(m.src_seq == v - 1);
		next[k]++;
		got++;
		if (!(got % 64))
			CU_ASSERT_FATAL(shmb_ack(s) == 0);
	}
	shmb_ack(s);
	return got;
}

/* The broker SIGSTOPped once both sides have their lane: 100 000
 * messages still go from one process to the other. */
static void test_broker_stopped(void)
{
	const uint64_t n = 100000;
	uint32_t *flags = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct shmb_client *c;
	struct shmb_session *s;
	struct shmb_msg m;
	uint64_t next = 2;
	pid_t pub;
	struct tb t;

	CU_ASSERT_FATAL(flags != MAP_FAILED);
	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "sub", 0, &c, &s) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(s, "t") == 0);
	if ((pub = fork_or_die()) == 0) {
		struct shmb_client *pc;
		struct shmb_session *ps;
		uint64_t one = 1;

		/* its lane made (the first use of the topic) with the broker up,
		 * and its reader's cursor page with it: a request answered
		 * after the broker's push brings the push (a writer without
		 * its reader's page cannot reclaim, and only the broker hands
		 * it pages: stopped earlier, it would hold one lane's worth) */
		if (connect_open(&t, "pub", 0, &pc, &ps) < 0 ||
		    shmb_publish(ps, "t", &one, sizeof(one), 5000) < 0 ||
		    shmb_subscribe(ps, "sync") < 0)
			_exit(20);
		store_release(&flags[3], 1);
		/* the parent's go, after its SIGSTOP (30 s at most) */
		for (int k = 0; !load_acquire(&flags[0]) && k < 30000; k++)
			usleep(1000);
		for (uint64_t i = 2; i <= n; i++) {
			unsigned fl = i % 16 && i != n ? SHMB_PUB_MORE : 0;

			int r = shmb_publish_flags(ps, "t", &i, sizeof(i), 30000, fl);

			if (r < 0) {
				flags[1] = (uint32_t)-r;
				flags[2] = (uint32_t)i;
				_exit(21);
			}
		}
		_exit(0);
	}
	CU_ASSERT_FATAL(shmb_recv(s, &m, 10000) == 0 && m.len == 8);
	CU_ASSERT_FATAL(shmb_ack(s) == 0);
	WAIT_FOR_FATAL(load_acquire(&flags[3]), 10000);
	CU_ASSERT_FATAL(kill(t.pid, SIGSTOP) == 0);
	store_release(&flags[0], 1);
	while (next <= n && shmb_recv(s, &m, 10000) == 0) {
		uint64_t v;

		memcpy(&v, m.data, 8);
		CU_ASSERT_FATAL(v == next);
		next++;
		if (!(next % 64))
			shmb_ack(s);
	}
	printf("\n  broker stopped: %llu of %llu messages moved\n", (unsigned long long)(next - 2),
	       (unsigned long long)(n - 1));
	CU_ASSERT(next == n + 1);
	CU_ASSERT(tb_wait_child(pub, 30000) == 0);
	if (flags[1])
		printf("  the publisher's message %u: error %d\n", flags[2], -(int)flags[1]);
	CU_ASSERT(kill(t.pid, SIGCONT) == 0);
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	munmap(flags, 4096);
}

/* A lane publisher and a relay publisher (SHMB_LANES=0) to one subscriber
 * that reads its lanes and its RX ring: both streams whole and in order. */
static void test_relay_beside_lanes(void)
{
	const uint64_t n = 50000;
	struct shmb_client *c;
	struct shmb_session *s;
	pid_t p1, p2;
	struct tb t;

	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "sub", 0, &c, &s) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(s, "t") == 0);
	if ((p1 = fork_or_die()) == 0)
		pub_main(&t, "lane-pub", n, false);
	if ((p2 = fork_or_die()) == 0)
		pub_main(&t, "relay-pub", n, true);
	CU_ASSERT(drain_streams(s, n, 2, 20000) == 2 * n);
	CU_ASSERT(tb_wait_child(p1, 30000) == 0);
	CU_ASSERT(tb_wait_child(p2, 30000) == 0);
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* One publisher's lane carries two topics; the reader's session reads
 * one.  Its new owner generation, which subscribes nothing itself, reads
 * by the session's subscriptions (the broker's list): every message of
 * "t" after its acknowledgement, none of "u". */
static void test_reopened_filters(void)
{
	struct shmb_client *c, *pc;
	struct shmb_session *s, *ps;
	struct shmb_msg m;
	uint64_t next = 1, got_u = 0;
	uint32_t t_id = 0;
	struct tb t;

	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "r", 0, &c, &s) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(s, "t") == 0);
	CU_ASSERT_FATAL(connect_open(&t, "p", 0, &pc, &ps) == 0);
	for (uint64_t i = 1; i <= 200; i++) {
		CU_ASSERT_FATAL(shmb_publish(ps, "t", &i, sizeof(i), 5000) == 0);
		CU_ASSERT_FATAL(shmb_publish(ps, "u", &i, sizeof(i), 5000) == 0);
	}
	for (int i = 0; i < 50; i++) {
		CU_ASSERT_FATAL(shmb_recv(s, &m, 5000) == 0);
		CU_ASSERT(!strcmp(m.topic, "t"));
		t_id = m.topic_id;
		next++;
	}
	CU_ASSERT_FATAL(shmb_ack(s) == 0);
	shmb_close(c); /* like a crash: the session stays, detached */
	CU_ASSERT_FATAL(connect_open(&t, "r", 0, &c, &s) == 0);
	while (shmb_recv(s, &m, 500) == 0) {
		uint64_t v;

		memcpy(&v, m.data, 8);
		/* this client never named "t": the id tells (m.topic is "") */
		if (m.topic_id != t_id) {
			got_u++;
			continue;
		}
		CU_ASSERT_FATAL(v == next);
		next++;
	}
	printf("\n  after the reopen: \"t\" up to %llu of 200, %llu of \"u\"\n",
	       (unsigned long long)next - 1, (unsigned long long)got_u);
	CU_ASSERT(next == 201);
	CU_ASSERT(got_u == 0);
	shmb_close(c);
	shmb_close(pc);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

static int fd_ready(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, timeout_ms);
}

/* shmb_session_fd() of a lane reader: readable when a lane writer wakes
 * it, with the once-a-second tick made a minute long
 * (SHMB_LANE_POLL_TICK_MS), so that a missed wake-up fails the test.
 * 2000 messages from another process, published in bursts with pauses,
 * all arrive in order through the documented loop (wait on the fd, then
 * shmb_recv(s, &m, 0) until -EAGAIN). */
static void test_pollable_fd(void)
{
	const uint64_t n = 2000;
	uint32_t *done = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct shmb_client *c;
	struct shmb_session *s;
	struct shmb_msg m;
	uint64_t next = 1, waits = 0;
	pid_t pub;
	struct tb t;
	int fd;

	setenv("SHMB_LANE_POLL_TICK_MS", "60000", 1);
	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	/* forked before this process has a client: a child of a process
	 * whose library threads run (the connection's, the waker) may
	 * inherit a lock one of them held */
	if ((pub = fork_or_die()) == 0) {
		struct shmb_client *pc;
		struct shmb_session *ps;

		/* the reader's go, once it waits on its fd (30 s at most) */
		for (int k = 0; !load_acquire(&done[1]) && k < 30000; k++)
			usleep(1000);
		if (connect_open(&t, "pub", 0, &pc, &ps) < 0)
			_exit(20);
		for (uint64_t i = 1; i <= n; i++) {
			if (shmb_publish(ps, "t", &i, sizeof(i), 10000) < 0)
				_exit(21);
			if (i % 100 == 0)
				usleep(2000); /* the reader drains and sleeps between bursts */
		}
		/* its session stays until the reader looked at a quiet fd (its
		 * end would cut its lane, which wakes the reader) */
		for (int k = 0; !load_acquire(done) && k < 30000; k++)
			usleep(1000);
		_exit(0);
	}
	CU_ASSERT_FATAL(connect_open(&t, "poller", 0, &c, &s) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(s, "t") == 0);
	fd = shmb_session_fd(s);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT(shmb_recv(s, &m, 0) == -EAGAIN);
	CU_ASSERT(fd_ready(fd, 0) == 0);
	store_release(&done[1], 1);
	while (next <= n && fd_ready(fd, 5000) == 1) {
		waits++;
		while (shmb_recv(s, &m, 0) == 0) {
			uint64_t v;

			memcpy(&v, m.data, 8);
			CU_ASSERT_FATAL(v == next);
			next++;
		}
		CU_ASSERT(shmb_ack(s) == 0);
	}
	printf("\n  %llu of %llu messages through the fd, %llu waits\n",
	       (unsigned long long)next - 1, (unsigned long long)n, (unsigned long long)waits);
	CU_ASSERT(next == n + 1);
	/* drained and quiet: nothing makes it readable */
	CU_ASSERT(shmb_recv(s, &m, 0) == -EAGAIN);
	CU_ASSERT(fd_ready(fd, 200) == 0);
	store_release(done, 1);
	{
		/* 20: it could not open its session; 21: a publish failed */
		int st = tb_wait_child(pub, 30000);

		if (st)
			printf("  the publisher ended with %d\n", st);
		CU_ASSERT(st == 0);
	}
	munmap(done, 4096);
	shmb_close(c);
	unsetenv("SHMB_LANE_POLL_TICK_MS");
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/*
 * A poller with a message returned and not acknowledged, whose writer
 * skips its wake (a writer backs off a reader whose slot shows no
 * progress: played here by clearing the reader's arm bit, so the writer
 * sees nobody asleep): its fd turns readable within a few ms all the
 * same, and the next message arrives through the documented loop; the
 * tick is a minute long, so without the look a ms it would not.
 */
static void test_pollable_unacked(void)
{
	struct shmb_client *c, *pc;
	struct shmb_session *s, *ps;
	struct shmb_msg m;
	struct shm_arm_page *arm;
	uint64_t x = 1, got = 0, t0, took;
	uint32_t slot;
	struct tb t;
	int fd;

	setenv("SHMB_LANE_POLL_TICK_MS", "60000", 1);
	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "poller", 0, &c, &s) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(s, "t") == 0);
	fd = shmb_session_fd(s);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_FATAL(connect_open(&t, "pub", 0, &pc, &ps) == 0);
	CU_ASSERT_FATAL(shmb_publish(ps, "t", &x, sizeof(x), 5000) == 0);
	CU_ASSERT_FATAL(shmb_recv(s, &m, 5000) == 0); /* not acknowledged */
	CU_ASSERT(shmb_recv(s, &m, 0) == -EAGAIN);    /* armed for the waker */
	arm = client_session_lane_arm(s, &slot);
	CU_ASSERT_FATAL(arm != NULL);
	lane_disarm(arm, slot);
	x = 2;
	t0 = clock_mono_ns();
	CU_ASSERT_FATAL(shmb_publish(ps, "t", &x, sizeof(x), 5000) == 0);
	while (!got && clock_mono_ns() - t0 < 5000000000ull && fd_ready(fd, 5000) == 1)
		while (shmb_recv(s, &m, 0) == 0) {
			memcpy(&x, m.data, 8);
			CU_ASSERT(x == 2);
			got++;
		}
	took = clock_mono_ns() - t0;
	printf("\n  the message nobody woke the poller for came after %.1f ms\n", (double)took / 1e6);
	CU_ASSERT(got == 1);
	CU_ASSERT(took < 300000000ull);
	CU_ASSERT(shmb_ack(s) == 0);
	shmb_close(pc);
	shmb_close(c);
	unsetenv("SHMB_LANE_POLL_TICK_MS");
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

struct bad_seen {
	uint32_t n;
	uint64_t publisher;
};

static void on_event(const struct shmb_event *ev, void *arg)
{
	struct bad_seen *b = arg;

	if (ev->kind == SHMB_EV_SOURCE_BAD) {
		b->publisher = ev->count;
		__atomic_add_fetch(&b->n, 1, __ATOMIC_RELEASE);
	}
}

/* A publisher forges a record in its own lane (a commit word with an
 * impossible length where its next record goes): its reader takes the
 * 10 good messages before it, drops the lane and is told
 * SHMB_EV_SOURCE_BAD with that publisher's session id, the broker
 * (told by the reader, checking for itself) quarantines the forger, and
 * another publisher's messages reach the reader as before. */
static void test_forged_lane(void)
{
	uint32_t *flags = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct bad_seen bad = { 0 };
	struct shmb_client *c, *gc;
	struct shmb_session *s, *gs;
	uint64_t forger = 0, good = 0, from_forger = 0;
	struct shmb_msg m;
	pid_t pub;
	struct tb t;

	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "r", 0, &c, &s) == 0);
	shmb_set_event_cb(c, on_event, &bad);
	CU_ASSERT_FATAL(shmb_subscribe(s, "t") == 0);
	if ((pub = fork_or_die()) == 0) {
		struct shmb_client *pc;
		struct shmb_session *ps;
		uint64_t rec = ring_align(SHM_REC_HDR_SIZE + sizeof(struct shm_lane_msg) + 8);
		uint8_t *data;
		size_t len;

		if (connect_open(&t, "forger", 0, &pc, &ps) < 0)
			_exit(20);
		for (uint64_t i = 1; i <= 10; i++)
			if (shmb_publish(ps, "t", &i, sizeof(i), 5000) < 0)
				_exit(21);
		data = client_session_lane_data(ps, &len);
		if (!data || len < SHM_LANE_RING_OFFSET + 11 * rec)
			_exit(22);
		{
			/* where record 11 (ring sequence 10) would go */
			uint64_t forged = shm_commit_word(0x7ffffff0, 10);

			memcpy(data + SHM_LANE_RING_OFFSET + 10 * rec, &forged, 8);
		}
		store_release(&flags[0], 1);
		for (int k = 0; !load_acquire(&flags[1]) && k < 30000; k++)
			usleep(1000); /* its session stays until the reader is done */
		_exit(0);
	}
	WAIT_FOR_FATAL(load_acquire(&flags[0]), 10000);
	CU_ASSERT_FATAL(connect_open(&t, "good", 0, &gc, &gs) == 0);
	for (uint64_t i = 1; i <= 10; i++)
		CU_ASSERT_FATAL(shmb_publish(gs, "t", &i, sizeof(i), 5000) == 0);
	while (good < 10 && shmb_recv(s, &m, 2000) == 0) {
		if (!forger || m.src_session == forger) {
			forger = m.src_session;
			from_forger++;
		} else {
			good++;
		}
	}
	/* nothing more comes; the look finds the forged record */
	CU_ASSERT(shmb_recv(s, &m, 300) == -ETIMEDOUT);
	shmb_ack(s);
	printf("\n  %llu from the forger before its forged record, %llu from the other; %u told bad\n",
	       (unsigned long long)from_forger, (unsigned long long)good, bad.n);
	CU_ASSERT(from_forger == 10);
	CU_ASSERT(good == 10);
	CU_ASSERT(load_acquire(&bad.n) == 1);
	CU_ASSERT(bad.publisher == forger);
	/* the reader told the broker, whose own walk found the record: the
	 * forger's session is quarantined, as for a scribbled TX ring */
	WAIT_FOR(tb_log_count(&t, "fails its checks (found by its reader r)") == 1, 5000);
	WAIT_FOR(tb_log_count(&t, "quarantined") >= 1, 5000);
	store_release(&flags[1], 1);
	CU_ASSERT(tb_wait_child(pub, 30000) == 0);
	shmb_close(gc);
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	munmap(flags, 4096);
}

static void count_gaps(const struct shmb_event *ev, void *arg)
{
	if (ev->kind == SHMB_EV_GAP)
		__atomic_add_fetch((uint64_t *)arg, 1, __ATOMIC_RELAXED);
}

/* Publish from..to on topic (8 bytes: the number) while the reader r
 * keeps up; false at the first publish that fails (a writer held). */
static bool flood(struct shmb_session *ps, const char *topic, uint64_t from, uint64_t to,
		  struct shmb_session *r, uint64_t *r_next)
{
	struct shmb_msg m;

	for (uint64_t i = from; i <= to; i++) {
		int ret = shmb_publish(ps, topic, &i, sizeof(i), 5000);

		if (ret < 0) {
			printf("\n  message %llu on %s: %s\n", (unsigned long long)i, topic,
			       strerror(-ret));
			return false;
		}
		while (shmb_recv(r, &m, 0) == 0) {
			uint64_t v;

			memcpy(&v, m.data, 8);
			CU_ASSERT_FATAL(v == *r_next);
			(*r_next)++;
		}
		shmb_ack(r);
	}
	return true;
}

/* Receive from s until `last` of topic came (5 s without a message:
 * stop); every value above *seen and rising.  Returns how many. */
static uint64_t take_until(struct shmb_session *s, const char *topic, uint64_t last, uint64_t *seen)
{
	struct shmb_msg m;
	uint64_t got = 0;

	while (*seen < last && shmb_recv(s, &m, 5000) == 0) {
		uint64_t v;

		CU_ASSERT_FATAL(m.len == 8);
		CU_ASSERT_FATAL(!strcmp(m.topic, topic));
		memcpy(&v, m.data, 8);
		if (v <= *seen)
			printf("\n  %s: %llu after %llu\n", topic, (unsigned long long)v,
			       (unsigned long long)*seen);
		CU_ASSERT_FATAL(v > *seen);
		*seen = v;
		got++;
	}
	shmb_ack(s);
	return got;
}

/*
 * An idle subscriber that unsubscribed holds no publisher of that topic
 * (as on the relay): its lane is let go at the unsubscribe, so the
 * publisher streams 30 lane rings past it while another subscriber keeps
 * up (with --block-timeout at a minute, a held publisher would time out
 * in 5 s).  Subscribing again holds the lane again: every message from
 * then on arrives, nothing it had before comes twice, and no gap is told.
 * The same after a second unsubscribe, held again this time by the
 * publisher's first message of the session's other topic on that lane.
 */
static void test_unsubscribe_releases(void)
{
	struct shmb_client *ic, *rc, *pc;
	struct shmb_session *is, *rs, *ps;
	uint64_t gaps = 0, r_next = 1, seen = 0, seen_b = 0, n = 20000;
	struct tb t;

	CU_ASSERT_FATAL(tb_start(&t, "--lanes", "--tx-ring-size", "65536", "--rx-ring-size", "65536",
				 "--block-timeout", "60000", NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "idle", 0, &ic, &is) == 0);
	shmb_set_event_cb(ic, count_gaps, &gaps);
	CU_ASSERT_FATAL(shmb_subscribe(is, "a") == 0);
	CU_ASSERT_FATAL(shmb_subscribe(is, "b") == 0);
	CU_ASSERT_FATAL(connect_open(&t, "reader", 0, &rc, &rs) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(rs, "a") == 0);
	CU_ASSERT_FATAL(connect_open(&t, "pub", 0, &pc, &ps) == 0);
	CU_ASSERT_FATAL(flood(ps, "a", 1, 100, rs, &r_next));
	CU_ASSERT_FATAL(take_until(is, "a", 100, &seen) == 100);

	/* idle and unsubscribed: the publisher goes on past it */
	CU_ASSERT_FATAL(shmb_unsubscribe(is, "a") == 0);
	CU_ASSERT(flood(ps, "a", 101, n, rs, &r_next));
	/* subscribed again: from then on, everything */
	CU_ASSERT_FATAL(shmb_subscribe(is, "a") == 0);
	CU_ASSERT(flood(ps, "a", n + 1, n + 100, rs, &r_next));
	CU_ASSERT(take_until(is, "a", n + 100, &seen) >= 100);
	CU_ASSERT(seen == n + 100);

	/* again; held again by the first "b" on the lane this time */
	CU_ASSERT_FATAL(shmb_unsubscribe(is, "a") == 0);
	CU_ASSERT(flood(ps, "a", n + 101, 2 * n, rs, &r_next));
	for (uint64_t i = 1; i <= 50; i++)
		CU_ASSERT_FATAL(shmb_publish(ps, "b", &i, sizeof(i), 5000) == 0);
	CU_ASSERT(take_until(is, "b", 50, &seen_b) == 50);
	CU_ASSERT(r_next == 2 * n + 1);
	printf("\n  the other reader got %llu of %llu; the idle one's gaps: %llu\n",
	       (unsigned long long)r_next - 1, (unsigned long long)2 * n, (unsigned long long)gaps);
	CU_ASSERT(gaps == 0);
	CU_ASSERT(tb_log_count(&t, "longer than --block-timeout") == 0);
	shmb_close(pc);
	shmb_close(rc);
	shmb_close(ic);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* Receive from s, expecting next, next + 1, ... up to last (5 s without
 * a message: stop).  Returns the next one expected. */
static uint64_t take_exact(struct shmb_session *s, uint64_t next, uint64_t last)
{
	struct shmb_msg m;

	while (next <= last && shmb_recv(s, &m, 5000) == 0) {
		uint64_t v;

		CU_ASSERT_FATAL(m.len == 8);
		memcpy(&v, m.data, 8);
		if (v != next)
			printf("\n  %llu where %llu was next\n", (unsigned long long)v,
			       (unsigned long long)next);
		CU_ASSERT_FATAL(v == next);
		CU_ASSERT_FATAL(m.missed == 0);
		next++;
		if (!(next % 64))
			shmb_ack(s);
	}
	shmb_ack(s);
	return next;
}

/* A spill's cast: a subscriber "spilled" (an RX ring of rx bytes) in a
 * child that reads 1..100, acknowledges and is SIGKILLed; a live
 * subscriber of "t" and its publisher in this process, 1..100 sent. */
struct spill_cast {
	struct tb t;
	struct shmb_client *lc, *pc;
	struct shmb_session *ls, *ps;
	uint64_t l_next;
	uint64_t ps_id;        /* the publisher's session id */
};

/* When the subscriber dies: */
enum spill_when {
	SPILL_KILLED,         /* killed with the broker running */
	SPILL_BROKER_DOWN,    /* killed while the broker is down (SIGKILLed) */
	SPILL_AFTER_RESTART,  /* stopped before the broker's SIGKILL, killed after its restart */
	SPILL_LYING,          /* killed with the broker running, its cursor slots lowered to 0 first */
};

/* A hostile reader's last act: every acknowledgement in its cursor pages
 * (sessions/<id>/cur.*) set back to 0, below what its writer overwrote
 * since (the writer ignores a slot that falls; a take-over trusts it). */
static int slots_lower(const struct tb *t, struct shmb_session *s)
{
	struct shmb_session_info i;
	char path[700];
	struct dirent *e;
	DIR *d;
	int n = 0;

	if (shmb_session_info(s, &i) < 0)
		return -1;
	snprintf(path, sizeof(path), "%s/sessions/%llu", t->dir, (unsigned long long)i.session_id);
	d = opendir(path);
	if (!d)
		return -1;
	while ((e = readdir(d))) {
		static const uint8_t zero[SHM_CURSOR_SLOTS * 8];
		char f[1000];
		int fd;

		if (strncmp(e->d_name, "cur.", 4))
			continue;
		snprintf(f, sizeof(f), "%s/%s", path, e->d_name);
		fd = open(f, O_WRONLY);
		if (fd >= 0 && pwrite(fd, zero, sizeof(zero), SHM_LINE) == (ssize_t)sizeof(zero))
			n++;
		if (fd >= 0)
			close(fd);
	}
	closedir(d);
	return n;
}

static void broker_restart(struct spill_cast *k)
{
	CU_ASSERT_FATAL(kill(k->t.pid, SIGKILL) == 0);
	CU_ASSERT_FATAL(tb_wait_child(k->t.pid, 5000) == 128 + SIGKILL);
}

static void spill_cast_when(struct spill_cast *k, uint32_t rx, enum spill_when when);

static void spill_cast(struct spill_cast *k, uint32_t rx)
{
	spill_cast_when(k, rx, SPILL_KILLED);
}

static void spill_cast_when(struct spill_cast *k, uint32_t rx, enum spill_when when)
{
	bool restart;
	uint32_t *flags = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct shmb_client *c;
	struct shmb_session *s;
	pid_t kid;

	CU_ASSERT_FATAL(flags != MAP_FAILED);
	k->l_next = 1;
	CU_ASSERT_FATAL(tb_start(&k->t, "--tx-ring-size", "4096", "--rx-ring-size", "4096",
				 "--session-ttl", "600000", "--block-timeout", "600000", NULL) == 0);
	kid = fork();
	CU_ASSERT_FATAL(kid >= 0);
	if (kid == 0) {
		if (connect_open_rx(&k->t, "spilled", 0, rx, &c, &s) < 0 ||
		    shmb_subscribe(s, "t") < 0)
			_exit(20);
		store_release(&flags[0], 1);
		if (take_exact(s, 1, 100) != 101)
			_exit(21);
		if (when == SPILL_LYING && slots_lower(&k->t, s) < 1)
			_exit(22);
		store_release(&flags[1], 1);
		for (;;)
			pause();
	}
	WAIT_FOR_FATAL(load_acquire(&flags[0]) == 1, 10000);
	CU_ASSERT_FATAL(connect_open(&k->t, "live", 0, &k->lc, &k->ls) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(k->ls, "t") == 0);
	CU_ASSERT_FATAL(connect_open(&k->t, "pub", 0, &k->pc, &k->ps) == 0);
	{
		struct shmb_session_info i;

		shmb_session_info(k->ps, &i);
		k->ps_id = i.session_id;
	}
	CU_ASSERT_FATAL(flood(k->ps, "t", 1, 100, k->ls, &k->l_next));
	WAIT_FOR_FATAL(load_acquire(&flags[1]) == 1, 10000);
	restart = when == SPILL_BROKER_DOWN || when == SPILL_AFTER_RESTART;
	if (when == SPILL_AFTER_RESTART)
		CU_ASSERT_FATAL(kill(kid, SIGSTOP) == 0);
	if (restart)
		broker_restart(k);
	if (when != SPILL_AFTER_RESTART)
		kill(kid, SIGKILL);
	if (restart) {
		tb_use_dir(k->t.dir);
		CU_ASSERT_FATAL(tb_start(&k->t, "--tx-ring-size", "4096", "--rx-ring-size", "4096",
					 "--session-ttl", "600000", "--block-timeout", "600000",
					 NULL) == 0);
	}
	if (when == SPILL_AFTER_RESTART)
		kill(kid, SIGKILL);
	CU_ASSERT(tb_wait_child(kid, 10000) != 0);
	munmap(flags, 4096);
}

static void spill_cast_end(struct spill_cast *k)
{
	CU_ASSERT(tb_log_count(&k->t, "longer than --block-timeout") == 0);
	shmb_close(k->pc);
	shmb_close(k->lc);
	CU_ASSERT(tb_stop(&k->t) == 0);
	tb_cleanup(&k->t);
}

/*
 * A subscriber SIGKILLed, its session kept for ten minutes, holds its
 * publisher no longer: the broker takes its holds over and copies what
 * the lanes bring it into its RX ring (its spool).  The publisher
 * streams 300 lane rings past it while a live subscriber keeps up (with
 * --block-timeout at ten minutes, a held publisher would time out in
 * 5 s); the dead one's successor gets every message from its last
 * acknowledgement on, once and in order, the spool's first, then the
 * lanes' from where the copying stopped; and then the same again, killed
 * a second time.
 */
static void test_spill_dead_reader(void)
{
	const uint64_t n = 20000;
	struct spill_cast k;
	struct shmb_client *c;
	struct shmb_session *s;
	uint64_t next;

	spill_cast(&k, 4u << 20);
	/* dead: the publisher goes on past it */
	CU_ASSERT(flood(k.ps, "t", 101, n, k.ls, &k.l_next));
	CU_ASSERT(k.l_next == n + 1);
	CU_ASSERT(tb_log_count(&k.t, "its detached owner died: what its lanes bring it is copied") == 1);

	/* its successor: the spool, then the lanes, from its acknowledgement */
	CU_ASSERT_FATAL(connect_open_rx(&k.t, "spilled", 0, 4u << 20, &c, &s) == 0);
	next = take_exact(s, 101, n);
	printf("\n  the successor got %llu..%llu of %llu\n", 101ull, (unsigned long long)next - 1,
	       (unsigned long long)n);
	CU_ASSERT(next == n + 1);
	/* it reads the lane again: what comes now comes from there */
	CU_ASSERT(flood(k.ps, "t", n + 1, n + 100, k.ls, &k.l_next));
	CU_ASSERT(take_exact(s, n + 1, n + 100) == n + 101);

	/* closed by its owner: spilled again, and the next owner gets it all */
	CU_ASSERT(shmb_session_close(s) == 0);
	shmb_close(c);
	CU_ASSERT(flood(k.ps, "t", n + 101, 2 * n, k.ls, &k.l_next));
	CU_ASSERT_FATAL(connect_open_rx(&k.t, "spilled", 0, 4u << 20, &c, &s) == 0);
	CU_ASSERT(take_exact(s, n + 101, 2 * n) == 2 * n + 1);
	CU_ASSERT(tb_log_count(&k.t, "closed by its owner: what its lanes bring it is copied") == 1);
	shmb_close(c);
	spill_cast_end(&k);
}

/*
 * A subscriber that dies around a broker restart holds its publisher no
 * longer either: SIGKILLed while the broker is down (its owner is gone
 * when the broker re-adopts it: spilled at the start), or stopped before
 * the broker's SIGKILL and killed after the restart, before it could
 * REATTACH (its re-adopted owner's death is watched).  The publisher
 * streams 300 lane rings past it; the successor gets every message from
 * the last acknowledgement on, once and in order.
 */
static void spill_around_restart(enum spill_when when, const char *logged)
{
	const uint64_t n = 20000;
	struct spill_cast k;
	struct shmb_client *c;
	struct shmb_session *s;
	uint64_t next;

	spill_cast_when(&k, 4u << 20, when);
	CU_ASSERT(flood(k.ps, "t", 101, n, k.ls, &k.l_next));
	CU_ASSERT(k.l_next == n + 1);
	CU_ASSERT(tb_log_count(&k.t, logged) == 1);
	CU_ASSERT_FATAL(connect_open_rx(&k.t, "spilled", 0, 4u << 20, &c, &s) == 0);
	next = take_exact(s, 101, n);
	printf("\n  the successor got %llu..%llu of %llu\n", 101ull, (unsigned long long)next - 1,
	       (unsigned long long)n);
	CU_ASSERT(next == n + 1);
	shmb_close(c);
	spill_cast_end(&k);
}

static void test_spill_broker_down(void)
{
	spill_around_restart(SPILL_BROKER_DOWN, "its owner did not live through the broker's restart:"
			     " what its lanes bring it is copied");
}

static void test_spill_after_restart(void)
{
	spill_around_restart(SPILL_AFTER_RESTART, "its detached owner died: what its lanes bring it"
			     " is copied");
}

/*
 * A subscriber that lowers its acknowledgements to 0 before it dies (a
 * lie) spoils nothing for anyone else: it is spilled from where the lie
 * and its hold entry's floor allow (its successor may get again what it
 * had acknowledged: its own loss), the publisher streams 50 lane rings
 * on past it, and the live subscriber gets every message once and in
 * order.
 */
static void test_spill_lying_reader(void)
{
	const uint64_t n = 5000;
	struct spill_cast k;


	spill_cast_when(&k, 4u << 20, SPILL_LYING);
	CU_ASSERT(flood(k.ps, "t", 101, n, k.ls, &k.l_next));
	CU_ASSERT(k.l_next == n + 1);
	CU_ASSERT(tb_log_count(&k.t, "its detached owner died: what its lanes bring it is copied") == 1);
	spill_cast_end(&k);
}

/*
 * The spool full: a subscriber SIGKILLed with a 64 KiB RX ring, its
 * publisher streaming 20 000 messages past it (300 lane rings; a live
 * subscriber keeps up).  The broker copies what fits, then lets the lane
 * go: the publisher never waits for it.  Its successor gets the spool,
 * then whatever the lane still holds, every message whole and in order,
 * and what was overwritten told as a gap whose count makes up exactly
 * the difference (each message's value is the one expected plus what it
 * says was missed).
 */
static void test_spill_full_gap(void)
{
	const uint64_t n = 20000;
	uint64_t next = 101, got = 0, missed = 0, gaps = 0;
	struct spill_cast k;
	struct shmb_client *c;
	struct shmb_session *s;
	struct shmb_msg m;

	spill_cast(&k, 1u << 16);
	WAIT_FOR(tb_log_count(&k.t, "its detached owner died: what its lanes bring it is copied") == 1,
		 10000);
	/* the spool fills; the lane is let go, and the publisher goes on */
	CU_ASSERT(flood(k.ps, "t", 101, n, k.ls, &k.l_next));
	CU_ASSERT(k.l_next == n + 1);
	CU_ASSERT(tb_log_count(&k.t, "its RX ring is full: the 1 lane(s) of session") == 1);

	CU_ASSERT_FATAL(connect_open(&k.t, "spilled", 0, &c, &s) == 0);
	shmb_set_event_cb(c, count_gaps, &gaps);
	while (next <= n && shmb_recv(s, &m, 5000) == 0) {
		uint64_t v;

		CU_ASSERT_FATAL(m.len == 8);
		memcpy(&v, m.data, 8);
		if (v != next + m.missed)
			printf("\n  %llu where %llu + %llu missed was next\n", (unsigned long long)v,
			       (unsigned long long)next, (unsigned long long)m.missed);
		CU_ASSERT_FATAL(v == next + m.missed);
		missed += m.missed;
		next = v + 1;
		got++;
		if (!(got % 64))
			shmb_ack(s);
	}
	shmb_ack(s);
	printf("\n  the successor got %llu of %llu, %llu told lost in %llu gap(s)\n",
	       (unsigned long long)got, (unsigned long long)n - 100, (unsigned long long)missed,
	       (unsigned long long)gaps);
	CU_ASSERT(next == n + 1);
	CU_ASSERT(got + missed == n - 100);
	CU_ASSERT(missed > 0 && gaps >= 1);
	/* and the lane is read again from then on */
	CU_ASSERT(flood(k.ps, "t", n + 1, n + 100, k.ls, &k.l_next));
	CU_ASSERT(take_exact(s, n + 1, n + 100) == n + 101);
	shmb_close(c);
	spill_cast_end(&k);
}

/*
 * Two publishers behind a full spool: P publishes 1 300 messages and
 * stops (more than the spool holds: its next record waits for room, but
 * its lane is far from full, so it keeps the rest and is not let go),
 * then Q streams 20 000: Q must not wait for the dead subscriber because
 * P's record waits for room (each publisher is paused or let go on its
 * own).  The successor gets all of P's, whole and in order, and Q's in
 * order with what was overwritten told as a gap.
 */
static void test_spill_two_publishers(void)
{
	const uint64_t n = 20000, np = 1300;
	uint64_t next[2] = { 101, 1 }, missed = 0, gaps = 0, got_live = 0;
	struct shmb_client *qc, *c;
	struct shmb_session *qs, *s;
	struct spill_cast k;
	struct shmb_msg m;
	bool ok = true;

	spill_cast(&k, 1u << 16);
	WAIT_FOR(tb_log_count(&k.t, "its detached owner died: what its lanes bring it is copied") == 1,
		 10000);
	CU_ASSERT(flood(k.ps, "t", 101, np, k.ls, &k.l_next));
	CU_ASSERT_FATAL(connect_open(&k.t, "pub-q", 0, &qc, &qs) == 0);
	for (uint64_t i = 1; i <= n && ok; i++) {
		int r = shmb_publish(qs, "t", &i, sizeof(i), 5000);

		if (r < 0) {
			printf("\n  Q's message %llu: %s (the live subscriber had %llu)\n",
			       (unsigned long long)i, strerror(-r), (unsigned long long)got_live);

			ok = false;
		}
		while (shmb_recv(k.ls, &m, 0) == 0)
			got_live++;
		shmb_ack(k.ls);
	}
	CU_ASSERT(ok);
	CU_ASSERT(got_live == n);

	CU_ASSERT_FATAL(connect_open(&k.t, "spilled", 0, &c, &s) == 0);
	shmb_set_event_cb(c, count_gaps, &gaps);
	while ((next[0] <= np || next[1] <= n) && shmb_recv(s, &m, 5000) == 0) {
		unsigned w = m.src_session == k.ps_id ? 0 : 1;
		uint64_t v;

		CU_ASSERT_FATAL(m.len == 8);
		memcpy(&v, m.data, 8);
		if (v != next[w] + m.missed)
			printf("\n  %s: %llu where %llu + %llu missed was next\n", w ? "Q" : "P",
			       (unsigned long long)v, (unsigned long long)next[w],
			       (unsigned long long)m.missed);
		CU_ASSERT_FATAL(v == next[w] + m.missed);
		CU_ASSERT_FATAL(w == 1 || m.missed == 0);
		missed += m.missed;
		next[w] = v + 1;
	}
	shmb_ack(s);
	printf("\n  the successor got P's %llu..%llu and Q's to %llu, %llu told lost in %llu gap(s)\n",
	       101ull, (unsigned long long)next[0] - 1, (unsigned long long)next[1] - 1,
	       (unsigned long long)missed, (unsigned long long)gaps);
	CU_ASSERT(next[0] == np + 1 && next[1] == n + 1);
	shmb_close(c);
	shmb_close(qc);
	spill_cast_end(&k);
}

/*
 * One thread publishes on a new session and polls (timeout 0) another
 * session of its own that reads the topic, after each message: the
 * reader must learn of the new lane before the writer can fill it.  The
 * broker told the reader after the writer's reply; a broker delayed
 * between the two (a 2 ms stall on these machines) let the writer fill
 * its lane first and then wait, in the only thread that could read it
 * (5 of 10 runs timed out with nothing read).  10 rounds, a new
 * publisher each.
 */
static void test_poll_new_lane(void)
{
	struct shmb_client *lc;
	struct shmb_session *ls;
	struct tb t;

	CU_ASSERT_FATAL(tb_start(&t, "--tx-ring-size", "4096", "--rx-ring-size", "4096", NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "live", 0, &lc, &ls) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(ls, "t") == 0);
	for (int round = 0; round < 10; round++) {
		struct shmb_client *qc;
		struct shmb_session *qs;
		struct shmb_msg m;
		uint64_t got = 0;
		char name[32];
		int r = 0;

		snprintf(name, sizeof(name), "pub-%d", round);
		CU_ASSERT_FATAL(connect_open(&t, name, 0, &qc, &qs) == 0);
		for (uint64_t i = 1; i <= 3000 && r == 0; i++) {
			r = shmb_publish(qs, "t", &i, sizeof(i), 2000);
			while (shmb_recv(ls, &m, 0) == 0)
				got++;
			shmb_ack(ls);
		}
		if (r < 0 || got != 3000)
			printf("\n  round %d: publish %s, the poller got %llu of 3000\n", round,
			       strerror(-r), (unsigned long long)got);
		CU_ASSERT(r == 0 && got == 3000);
		shmb_session_close(qs);
		shmb_close(qc);
	}
	shmb_close(lc);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/*
 * A lane publisher SIGKILLed mid-stream (its subscriber reading along),
 * then a successor on its session: the successor's first sequence is
 * right after the last message the broker accepted from it (the broker
 * reads it from the cut lane: nothing of the predecessor went through
 * its TX ring), and the subscriber gets every message of both
 * generations once, src_seq 0, 1, 2, ... with no gap or repeat.
 */
static void test_successor_after_kill(void)
{
	const uint64_t more = 1000;
	uint64_t seed = harness_seed("lane publisher kill"), kill_at, noted, next = 0, src = 0;
	uint64_t *accepted = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1,
				  0);
	struct shmb_client *c, *pc;
	struct shmb_session *s, *ps;
	struct shmb_session_info info;
	struct shmb_msg m;
	pid_t pub;
	struct tb t;
	int code;

	CU_ASSERT_FATAL(accepted != MAP_FAILED);
	kill_at = 2000 + harness_rand(&seed) % 20000;
	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "sub", 0, &c, &s) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(s, "t") == 0);
	if ((pub = fork_or_die()) == 0) {
		struct shmb_client *cc;
		struct shmb_session *cs;

		if (connect_open(&t, "pub", 0, &cc, &cs) < 0)
			_exit(20);
		/* one commit per message: returned 0 means accepted; the count
		 * is noted right after (a kill between the two leaves it one
		 * short) */
		for (uint64_t i = 0;; i++) {
			if (shmb_publish(cs, "t", &i, sizeof(i), 30000) < 0)
				_exit(21);
			store_release(accepted, i + 1);
		}
	}
	/* read along (the publisher never waits for room long), and kill it
	 * once it is well into its stream */
	while (load_acquire(accepted) < kill_at && shmb_recv(s, &m, 10000) == 0) {
		uint64_t v;

		CU_ASSERT_FATAL(m.len == 8);
		memcpy(&v, m.data, 8);
		CU_ASSERT_FATAL(v == next && m.src_seq == next);
		if (!src)
			src = m.src_session;
		CU_ASSERT_FATAL(m.src_session == src);
		next++;
		if (!(next % 64))
			CU_ASSERT_FATAL(shmb_ack(s) == 0);
	}
	CU_ASSERT_FATAL(load_acquire(accepted) >= kill_at);
	kill(pub, SIGKILL);
	code = tb_wait_child(pub, 5000);
	CU_ASSERT_FATAL(code == 128 + SIGKILL);
	noted = load_acquire(accepted);
	/* the successor: generation 2, numbering on from the last accepted */
	CU_ASSERT_FATAL(connect_open(&t, "pub", 0, &pc, &ps) == 0);
	CU_ASSERT_FATAL(shmb_session_info(ps, &info) == 0);
	printf("\n  killed after %llu noted accepted (%llu read by then); successor generation %u"
	       " starts at %llu\n",
	       (unsigned long long)noted, (unsigned long long)next, info.generation,
	       (unsigned long long)info.tx_start_seq);
	CU_ASSERT(info.generation == 2);
	CU_ASSERT(info.tx_start_seq == noted || info.tx_start_seq == noted + 1);
	for (uint64_t i = info.tx_start_seq; i < info.tx_start_seq + more; i++)
		CU_ASSERT_FATAL(shmb_publish(ps, "t", &i, sizeof(i), 10000) == 0);
	/* the rest of the predecessor's stream, then the successor's */
	while (next < info.tx_start_seq + more && shmb_recv(s, &m, 10000) == 0) {
		uint64_t v;

		CU_ASSERT_FATAL(m.len == 8);
		memcpy(&v, m.data, 8);
		if (v != next || m.src_seq != next)
			printf("  message %llu (src_seq %llu) where %llu was next\n",
			       (unsigned long long)v, (unsigned long long)m.src_seq,
			       (unsigned long long)next);
		CU_ASSERT_FATAL(v == next && m.src_seq == next);
		CU_ASSERT_FATAL(m.src_session == src);
		next++;
		if (!(next % 64))
			CU_ASSERT_FATAL(shmb_ack(s) == 0);
	}
	CU_ASSERT(next == info.tx_start_seq + more);
	CU_ASSERT(shmb_ack(s) == 0);
	/* and nothing after it */
	CU_ASSERT(shmb_recv(s, &m, 100) == -ETIMEDOUT);
	shmb_close(pc);
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	munmap(accepted, 4096);
}

/* Shared by broker_restart's processes. */
struct restart_run {
	uint64_t published;    /* the publisher: accepted so far */
	uint32_t ready;        /* reader "a" subscribed */
	uint32_t go;           /* the publisher: publish the second half */
	uint32_t bad;          /* a reader: a message out of order, or lost */
	uint64_t got;          /* reader "a": the last value taken */
	uint64_t pending;      /* ... the one an ack it is making covers */
	uint64_t acked;        /* ... the one its last ack covered */
	uint64_t first;        /* reader "a" restarted: its first value */
};

/* Reader "a", or its successor after a SIGKILL (again): values in order
 * from 1 (the successor: from where the ack stood) to n, noting each
 * ack around it. */
static void __attribute__((noreturn)) restart_reader(const struct tb *t, struct restart_run *run,
						     uint64_t n, bool again)
{
	struct shmb_client *c;
	struct shmb_session *s;
	uint64_t next = 0;
	struct shmb_msg m;

	/* a spool (its RX ring) for the whole stream: killed, the reader is
	 * spilled while the publisher streams on, and gets everything back
	 * only if the spool holds what the lane cannot (a smaller one is a
	 * counted gap: spill_full_gap) */
	if (connect_open_rx(t, "a", 0, 16u << 20, &c, &s) < 0 ||
	    (!again && shmb_subscribe(s, "t") < 0))
		_exit(30);
	store_release(&run->ready, 1);
	while (next != n + 1) {
		uint64_t v;
		int r = shmb_recv(s, &m, 200);

		if (r == -ETIMEDOUT || r == -EAGAIN)
			continue;
		if (r < 0 || m.len != 8)
			_exit(31);
		memcpy(&v, m.data, 8);
		if (!next) {
			next = again ? v : 1;
			store_release(&run->first, v);
		}
		if (v != next || m.src_seq != v - 1) {
			store_release(&run->bad, 1);
			_exit(32);
		}
		store_release(&run->got, v);
		next++;
		if (!(v % 64)) {
			store_release(&run->pending, v);
			if (shmb_ack(s) < 0)
				_exit(33);
			store_release(&run->acked, v);
		}
	}
	shmb_ack(s);
	shmb_close(c);
	_exit(0);
}

/*
 * The broker SIGKILLed while a lane pair streams, and started again on
 * the same directory: it re-adopts the lane with its holder.  The reader
 * reads every message once and in order across the restart; a subscriber
 * new after the restart gets the publisher's messages from its subscribe
 * on; and the reader, SIGKILLed after the restart and started again on
 * its session, resumes from its acknowledgement with nothing lost.
 */
static void test_broker_restart(void)
{
	const uint64_t half = 100000, n = 2 * half;
	struct restart_run *run = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
				       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint64_t last = 0, from = 0, acked, pending, first, at_restart;
	struct shmb_client *c;
	struct shmb_session *s;
	struct shmb_msg m;
	pid_t pub, rd;
	struct tb t;

	CU_ASSERT_FATAL(run != MAP_FAILED);
	harness_alarm(120);
	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	if ((rd = fork_or_die()) == 0)
		restart_reader(&t, run, n, false);
	/* the reader holds before the first message: every one is its */
	WAIT_FOR_FATAL(load_acquire(&run->ready), 10000);
	if ((pub = fork_or_die()) == 0) {
		struct shmb_client *pc;
		struct shmb_session *ps;

		if (connect_open(&t, "p", 0, &pc, &ps) < 0)
			_exit(20);
		/* the first half paced, so that the broker dies mid-stream;
		 * the second once told */
		for (uint64_t i = 1; i <= n; i++) {
			if (i == half + 1)
				for (int k = 0; !load_acquire(&run->go) && k < 60000; k++)
					usleep(1000);
			if (shmb_publish(ps, "t", &i, sizeof(i), 30000) < 0)
				_exit(21);
			store_release(&run->published, i);
			if (i <= half && !(i % 64))
				usleep(100);
		}
		shmb_session_close(ps);
		shmb_close(pc);
		_exit(0);
	}
	WAIT_FOR_FATAL(load_acquire(&run->got) >= 2000, 10000);
	CU_ASSERT_FATAL(kill(t.pid, SIGKILL) == 0);
	CU_ASSERT_FATAL(tb_wait_child(t.pid, 5000) == 128 + SIGKILL);
	printf("\n  broker killed: %llu published, %llu read\n",
	       (unsigned long long)load_acquire(&run->published),
	       (unsigned long long)load_acquire(&run->got));
	tb_use_dir(t.dir);
	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	CU_ASSERT(tb_log_count(&t, "lanes re-adopted: 1 lane(s)") == 1);
	CU_ASSERT(tb_log_count(&t, "quarantined at start-up") == 0);
	at_restart = load_acquire(&run->got);
	/* a new subscriber: the publisher's messages from its subscribe on */
	CU_ASSERT_FATAL(connect_open(&t, "n", 0, &c, &s) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(s, "t") == 0);
	/* the reader again, once it read past the restart */
	WAIT_FOR_FATAL(load_acquire(&run->got) >= at_restart + 1000, 30000);
	kill(rd, SIGKILL);
	CU_ASSERT_FATAL(tb_wait_child(rd, 5000) == 128 + SIGKILL);
	CU_ASSERT(!load_acquire(&run->bad));
	acked = load_acquire(&run->acked);
	pending = load_acquire(&run->pending);
	printf("  reader killed after %llu (acknowledged up to %llu)\n",
	       (unsigned long long)load_acquire(&run->got), (unsigned long long)acked);
	if ((rd = fork_or_die()) == 0)
		restart_reader(&t, run, n, true);
	store_release(&run->go, 1);
	while (last != n && shmb_recv(s, &m, 10000) == 0) {
		uint64_t v;

		CU_ASSERT_FATAL(m.len == 8);
		memcpy(&v, m.data, 8);
		if (!from)
			from = v;
		else if (v != last + 1)
			printf("  new subscriber: %llu after %llu\n", (unsigned long long)v,
			       (unsigned long long)last);
		CU_ASSERT_FATAL((v == from || v == last + 1) && m.src_seq == v - 1);
		last = v;
		if (!(v % 64))
			CU_ASSERT_FATAL(shmb_ack(s) == 0);
	}
	/* all of the second half, published after it subscribed */
	CU_ASSERT(last == n);
	CU_ASSERT(from >= 1 && from <= half + 1);
	CU_ASSERT(tb_wait_child(pub, 30000) == 0);
	CU_ASSERT(tb_wait_child(rd, 30000) == 0);
	first = load_acquire(&run->first);
	printf("  restarted reader resumed at %llu; the new subscriber read %llu to %llu\n",
	       (unsigned long long)first, (unsigned long long)from, (unsigned long long)last);
	/* from its acknowledgement: the one it made, or the one under way */
	CU_ASSERT(first == acked + 1 || first == pending + 1);
	CU_ASSERT(!load_acquire(&run->bad));
	CU_ASSERT(load_acquire(&run->got) == n);
	shmb_close(c);
	CU_ASSERT(tb_log_count(&t, "quarantined") == tb_log_count(&t, "0 quarantined"));
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	munmap(run, 4096);
}

/* Shared by restart_wakes' two processes. */
struct wake_run {
	uint32_t round;        /* the reader: it sleeps in shmb_recv for round k */
	uint32_t full;         /* the writer: its lane is full, its next publish waits */
	uint64_t acked_ns;     /* the reader: its first ack after that */
	uint64_t returned_ns;  /* the writer: when that publish returned */
};

#define WAKE_ROUNDS 5

/*
 * After a broker restart each side has new wake pages (the old ones were
 * the dead broker's memfds): a reader asleep is woken by its writer's
 * commit, and a writer asleep for room by its reader's ack, not by the
 * end of a 1 s sleep.  Each wake is timed against a bound far below that
 * second.
 */
static void test_restart_wakes(void)
{
	struct wake_run *run = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
				    -1, 0);
	uint64_t seed = harness_seed("restart wakes"), worst = 0, got = 0, v;
	struct shmb_client *c;
	struct shmb_session *s;
	struct shmb_msg m;
	pid_t w;
	struct tb t;

	CU_ASSERT_FATAL(run != MAP_FAILED);
	harness_alarm(120);
	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "r", 0, &c, &s) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(s, "t") == 0);
	if ((w = fork_or_die()) == 0) {
		struct shmb_client *wc;
		struct shmb_session *ws;
		uint64_t x = 0;
		int r;

		if (connect_open(&t, "w", 0, &wc, &ws) < 0 ||
		    shmb_publish(ws, "t", &x, sizeof(x), 5000) < 0)
			_exit(20);
		/* after the restart (the reader's round 1): enough publishes to
		 * read the broker's pushes, then one per round, a while after
		 * the reader went to sleep */
		for (uint32_t k = 1; k <= WAKE_ROUNDS; k++) {
			for (int i = 0; !load_acquire(&run->round) && i < 30000; i++)
				usleep(1000);
			if (k == 1)
				for (int i = 0; i < 64; i++)
					if (shmb_publish(ws, "t", &x, sizeof(x), 5000) < 0)
						_exit(21);
			for (int i = 0; load_acquire(&run->round) < k && i < 30000; i++)
				usleep(1000);
			usleep(100000 + (unsigned)(harness_rand(&seed) % 200000));
			x = clock_mono_ns();
			if (shmb_publish(ws, "t", &x, sizeof(x), 5000) < 0)
				_exit(22);
		}
		/* fill the lane (its reader reads no more), then wait for room */
		x = 0;
		while ((r = shmb_publish(ws, "t", &x, sizeof(x), 0)) == 0)
			;
		if (r != -EAGAIN && r != -ETIMEDOUT)
			_exit(23);
		store_release(&run->full, 1);
		if (shmb_publish(ws, "t", &x, sizeof(x), 10000) < 0)
			_exit(24);
		store_release(&run->returned_ns, clock_mono_ns());
		shmb_close(wc);
		_exit(0);
	}
	CU_ASSERT_FATAL(shmb_recv(s, &m, 5000) == 0);
	CU_ASSERT_FATAL(shmb_ack(s) == 0);
	CU_ASSERT_FATAL(kill(t.pid, SIGKILL) == 0);
	CU_ASSERT_FATAL(tb_wait_child(t.pid, 5000) == 128 + SIGKILL);
	tb_use_dir(t.dir);
	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	WAIT_FOR_FATAL(tb_log_count(&t, "resumed by its owner") == 2, 10000);
	/* the writer's warm-up, which also brings this side its pushes */
	store_release(&run->round, 1);
	while (got < 64 && shmb_recv(s, &m, 5000) == 0)
		got++;
	CU_ASSERT_FATAL(got == 64);
	for (uint32_t k = 1; k <= WAKE_ROUNDS; k++) {
		uint64_t lat;

		store_release(&run->round, k);
		CU_ASSERT_FATAL(shmb_recv(s, &m, 5000) == 0);
		memcpy(&v, m.data, 8);
		lat = clock_mono_ns() - v;
		if (lat > worst)
			worst = lat;
		CU_ASSERT_FATAL(shmb_ack(s) == 0);
	}
	/* the writer's turn to sleep */
	WAIT_FOR_FATAL(load_acquire(&run->full), 10000);
	usleep(200000);
	got = 0;
	while (shmb_recv(s, &m, 0) == 0)
		if (!(++got % 64)) {
			CU_ASSERT_FATAL(shmb_ack(s) == 0);
			if (!run->acked_ns)
				store_release(&run->acked_ns, clock_mono_ns());
		}
	CU_ASSERT_FATAL(shmb_ack(s) == 0);
	if (!run->acked_ns)
		store_release(&run->acked_ns, clock_mono_ns());
	CU_ASSERT(tb_wait_child(w, 15000) == 0);
	printf("\n  after the restart: a sleeping reader woken %.1f ms after the commit at worst;"
	       " the writer %.1f ms after the first ack\n", worst / 1e6,
	       ((int64_t)run->returned_ns - (int64_t)run->acked_ns) / 1e6);
	/* a wake that missed costs up to the 1 s a sleep lasts */
	CU_ASSERT(worst < 250000000ull);
	CU_ASSERT(run->returned_ns && run->returned_ns < run->acked_ns + 250000000ull);
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	munmap(run, 4096);
}

/* `shmbctl lanes --json` of t's broker into out (NUL-terminated). */
static int shmbctl_lanes(const struct tb *t, char *out, size_t cap)
{
	char self[512], cmd[1400];
	ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);
	size_t n = 0;
	FILE *f;

	self[k > 0 ? k : 0] = 0;
	snprintf(cmd, sizeof(cmd), "'%s/../shmbctl' -d '%s' lanes --json", dirname(self), t->dir);
	f = popen(cmd, "r");
	if (!f)
		return -1;
	while (n + 1 < cap && fgets(out + n, (int)(cap - n), f))
		n += strlen(out + n);
	out[n] = 0;
	return pclose(f) == 0 ? 0 : -1;
}

/* shmbctl lanes shows a lane's writer, its one holder and how far that
 * holder is behind: all of it while the reader reads nothing, nothing
 * once it read and acknowledged everything. */
static void test_shmbctl_lanes(void)
{
	struct shmb_client *c, *pc;
	struct shmb_session *s, *ps;
	struct shmb_msg m;
	char out[4096];
	int got = 0;
	struct tb t;

	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "r", 0, &c, &s) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(s, "t") == 0);
	CU_ASSERT_FATAL(connect_open(&t, "writer-p", 0, &pc, &ps) == 0);
	for (uint64_t i = 1; i <= 100; i++)
		CU_ASSERT_FATAL(shmb_publish(ps, "t", &i, sizeof(i), 5000) == 0);
	CU_ASSERT_FATAL(shmbctl_lanes(&t, out, sizeof(out)) == 0);
	printf("\n  %s", out);
	CU_ASSERT(strstr(out, "\"writer\":\"writer-p\"") != NULL);
	CU_ASSERT(strstr(out, "\"state\":\"open\"") != NULL);
	CU_ASSERT(strstr(out, "\"holders\":1,\"watchers\":0") != NULL);
	/* 100 records of 8 bytes, 48 bytes each in the ring, none read */
	CU_ASSERT(strstr(out, "\"end\":4800,") != NULL);
	CU_ASSERT(strstr(out, "\"lag\":4800,") != NULL);
	while (got < 100 && shmb_recv(s, &m, 2000) == 0)
		got++;
	CU_ASSERT(got == 100);
	CU_ASSERT(shmb_ack(s) == 0);
	CU_ASSERT_FATAL(shmbctl_lanes(&t, out, sizeof(out)) == 0);
	CU_ASSERT(strstr(out, "\"lag\":0,") != NULL);
	shmb_close(pc);
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* How many lanes shmbctl lists, and how many of them `writer` writes. */
static unsigned lanes_listed(const struct tb *t, const char *writer, unsigned *of_writer)
{
	static char out[1 << 20];
	char key[128];
	unsigned n = 0;

	*of_writer = 0;
	if (shmbctl_lanes(t, out, sizeof(out)) < 0)
		return 0;
	snprintf(key, sizeof(key), "\"writer\":\"%s\"", writer);
	for (const char *p = out; (p = strstr(p, "\"writer\":")); p++) {
		n++;
		if (!strncmp(p, key, strlen(key)))
			(*of_writer)++;
	}
	return n;
}

/* One publisher on 10 000 topics uses one lane; a subscriber of all of
 * them gets every message once and in order. */
static void test_wide_topics(void)
{
	const unsigned n = 10000;
	struct shmb_client *c, *pc;
	struct shmb_session *s, *ps;
	struct shmb_msg m;
	unsigned got = 0, mine = 0;
	char topic[32];
	struct tb t;

	harness_alarm(120);
	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "wide-r", 0, &c, &s) == 0);
	for (unsigned i = 0; i < n; i++) {
		snprintf(topic, sizeof(topic), "wide.%u", i);
		CU_ASSERT_FATAL(shmb_subscribe(s, topic) == 0);
	}
	CU_ASSERT_FATAL(connect_open(&t, "wide-p", 0, &pc, &ps) == 0);
	for (uint64_t i = 0; i < n; i++) {
		int r;

		snprintf(topic, sizeof(topic), "wide.%llu", (unsigned long long)i);
		r = shmb_publish(ps, topic, &i, sizeof(i), 5000);
		if (r < 0)
			printf("\n  message %llu on %s: %s\n", (unsigned long long)i, topic,
			       strerror(-r));
		CU_ASSERT_FATAL(r == 0);
		/* the reader keeps up: one lane ring need not hold them all */
		while (shmb_recv(s, &m, 0) == 0) {
			uint64_t v;

			memcpy(&v, m.data, 8);
			snprintf(topic, sizeof(topic), "wide.%llu", (unsigned long long)v);
			CU_ASSERT_FATAL(v == got && !strcmp(m.topic, topic));
			got++;
		}
		shmb_ack(s);
	}
	while (got < n && shmb_recv(s, &m, 5000) == 0) {
		uint64_t v;

		memcpy(&v, m.data, 8);
		CU_ASSERT_FATAL(v == got);
		got++;
	}
	CU_ASSERT(got == n);
	CU_ASSERT(lanes_listed(&t, "wide-p", &mine) == 1);
	printf("\n  %u topics, %u messages, %u lane(s) of the publisher\n", n, got, mine);
	CU_ASSERT(mine == 1);
	shmb_close(pc);
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* A link key file (64 hex digits, mode 0600) at path (cap 64). */
static void key_file(char *path)
{
	char hex[66];
	uint64_t seed = harness_seed("link key");
	int fd;

	snprintf(path, 64, "/dev/shm/shmb-test-key-XXXXXX");
	fd = mkstemp(path);
	CU_ASSERT_FATAL(fd >= 0);
	for (int i = 0; i < 64; i++)
		hex[i] = "0123456789abcdef"[harness_rand(&seed) % 16];
	hex[64] = '\n';
	CU_ASSERT_FATAL(write(fd, hex, 65) == 65 && fchmod(fd, 0600) == 0);
	close(fd);
}

/*
 * The broker reads a lane for the links when it carries a bridged topic;
 * the lane's records of other topics are let go as it reads them: a
 * publisher of a bridged topic and then of an unbridged one on the same
 * lane streams 30 lane rings of the latter, nobody else holding it (the
 * link dials a closed port meanwhile, so the bridged topic's message
 * waits in its replay ring).
 */
static void test_bridge_lets_go(void)
{
	struct shmb_client *pc;
	struct shmb_session *ps;
	char key[64];
	uint64_t x = 0;
	int fails = 0;
	struct tb t;

	key_file(key);
	CU_ASSERT_FATAL(tb_start(&t, "--lanes", "--tx-ring-size", "65536", "--rx-ring-size", "65536",
				 "--link", "away=127.0.0.1:1", "--bridge", "a", "--link-key", key,
				 NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "bridged-p", 0, &pc, &ps) == 0);
	CU_ASSERT_FATAL(shmb_publish(ps, "a", &x, sizeof(x), 5000) == 0);
	for (x = 1; x <= 40000 && !fails; x++)
		if (shmb_publish(ps, "b", &x, sizeof(x), 5000) < 0) {
			printf("\n  message %llu on b could not be published\n", (unsigned long long)x);
			fails++;
		}
	CU_ASSERT(fails == 0);
	shmb_close(pc);
	CU_ASSERT(tb_stop(&t) == 0);
	CU_ASSERT(tb_log_count(&t, "lane records offered to the links") == 1);
	tb_cleanup(&t);
	unlink(key);
}

/* The first mapping of a memfd named `name` in this process, or NULL. */
static uint32_t *mapped_memfd(const char *name)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	void *at = NULL;

	while (f && !at && fgets(line, sizeof(line), f)) {
		unsigned long lo;

		if (strstr(line, name) && sscanf(line, "%lx-", &lo) == 1)
			at = (void *)lo;
	}
	if (f)
		fclose(f);
	return at;
}

/*
 * A lane writer that bumps and wakes the broker's reader of lanes (the
 * links' reader, whose rx_wake it maps to wake it) in a loop, with no
 * record: the broker backs that reader off (logged) instead of running
 * its loop for each wake-up, and the writer's messages still reach the
 * link's replay ring.
 */
static void test_bridge_wake_spam(void)
{
	uint32_t *flags = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char key[64];
	pid_t w;
	struct tb t;

	CU_ASSERT_FATAL(flags != MAP_FAILED);
	key_file(key);
	CU_ASSERT_FATAL(tb_start(&t, "--lanes", "--link", "away=127.0.0.1:1", "--bridge", "a",
				 "--link-key", key, NULL) == 0);
	if ((w = fork_or_die()) == 0) {
		struct shmb_client *pc;
		struct shmb_session *ps;
		uint32_t *word;
		uint64_t x = 0, until;

		if (connect_open(&t, "spammer", 0, &pc, &ps) < 0)
			_exit(20);
		/* its lane, and the broker's reader's pages with a later publish
		 * (the request for topic c's lane brings the push); a reader
		 * of nothing, it maps no rx_wake of its own */
		if (shmb_publish(ps, "a", &x, sizeof(x), 5000) < 0 ||
		    shmb_publish(ps, "c", &x, sizeof(x), 5000) < 0 ||
		    shmb_publish(ps, "a", &x, sizeof(x), 5000) < 0)
			_exit(21);
		word = mapped_memfd("shmb-rx-wake");
		if (!word)
			_exit(22);
		store_release(&flags[0], 1);
		for (until = clock_mono_ns() + 3000000000ull;
		     clock_mono_ns() < until && !load_acquire(&flags[1]);) {
			fetch_add_release(word, 1);
			futex_wake(word, INT_MAX);
		}
		/* honest again: what it publishes is still read */
		for (x = 1; x <= 100; x++)
			if (shmb_publish(ps, "a", &x, sizeof(x), 5000) < 0)
				_exit(23);
		shmb_close(pc);
		_exit(0);
	}
	WAIT_FOR_FATAL(load_acquire(&flags[0]), 10000);
	WAIT_FOR(tb_log_count(&t, "wakes the broker's reader of lanes with no records") >= 1, 10000);
	store_release(&flags[1], 1);
	CU_ASSERT(tb_wait_child(w, 30000) == 0);
	CU_ASSERT(tb_stop(&t) == 0);
	/* 2 + 100 records of "a", each offered to the link */
	CU_ASSERT(tb_log_count(&t, "links: 102 lane records offered to the links") == 1);
	tb_cleanup(&t);
	unlink(key);
	munmap(flags, 4096);
}

#define MANY_LANES 1000
#define MANY_ROUNDS 8

struct many_run {
	uint32_t ready, round;
	uint64_t sent_ns[MANY_ROUNDS + 1];
	uint32_t from[MANY_ROUNDS + 1];
};

/*
 * A reader of 1 000 lanes (1 000 publisher sessions, one lane each) sleeps
 * on one word: asleep in shmb_recv, it is woken by a commit into any of
 * them, a random one each round, within a bound far below the second a
 * reader sleeps at most without a wake.
 */
static void test_many_lanes(void)
{
	struct many_run *run = mmap(NULL, sizeof(*run), PROT_READ | PROT_WRITE,
				    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint64_t seed = harness_seed("many lanes"), worst = 0;
	struct shmb_client *c;
	struct shmb_session *s;
	struct shmb_msg m;
	unsigned got = 0, mine = 0;
	pid_t w;
	struct tb t;

	CU_ASSERT_FATAL(run != MAP_FAILED);
	memset(run, 0, sizeof(*run));
	harness_alarm(180);
	CU_ASSERT_FATAL(tb_start(&t, "--lanes", "--rx-ring-size", "16384", NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "many-r", 0, &c, &s) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(s, "t") == 0);
	if ((w = fork_or_die()) == 0) {
		struct shmb_connect_opts co = { .dir = t.dir };
		struct shmb_session_opts so = { .policy = SHMB_POLICY_DEFAULT,
						.rx_ring_size = 4096, .tx_ring_size = 4096 };
		static struct shmb_session *ps[MANY_LANES];
		struct shmb_client *pc;
		char name[32];

		if (shmb_connect(&co, &pc) < 0)
			_exit(20);
		for (unsigned i = 0; i < MANY_LANES; i++) {
			uint64_t x = 0;

			snprintf(name, sizeof(name), "many-p%u", i);
			if (shmb_session_open(pc, name, &so, &ps[i]) < 0 ||
			    shmb_publish(ps[i], "t", &x, sizeof(x), 10000) < 0)
				_exit(21);
		}
		store_release(&run->ready, 1);
		for (uint32_t k = 1; k <= MANY_ROUNDS; k++) {
			unsigned j = (unsigned)(harness_rand(&seed) % MANY_LANES);
			uint64_t x;

			for (int i = 0; load_acquire(&run->round) < k && i < 60000; i++)
				usleep(1000);
			/* a while after the reader went to sleep */
			usleep(50000 + (unsigned)(harness_rand(&seed) % 100000));
			run->from[k] = j;
			x = clock_mono_ns();
			store_release(&run->sent_ns[k], x);
			if (shmb_publish(ps[j], "t", &x, sizeof(x), 5000) < 0)
				_exit(22);
		}
		for (int i = 0; load_acquire(&run->round) <= MANY_ROUNDS && i < 60000; i++)
			usleep(1000);
		shmb_close(pc);
		_exit(0);
	}
	/* the first message of each publisher: 1 000 lanes read */
	while (got < MANY_LANES && shmb_recv(s, &m, 10000) == 0)
		got++;
	shmb_ack(s);
	CU_ASSERT_FATAL(got == MANY_LANES);
	WAIT_FOR_FATAL(load_acquire(&run->ready), 30000);
	CU_ASSERT(lanes_listed(&t, "many-p0", &mine) >= MANY_LANES);
	CU_ASSERT(mine == 1);
	for (uint32_t k = 1; k <= MANY_ROUNDS; k++) {
		uint64_t took;

		store_release(&run->round, k);
		CU_ASSERT_FATAL(shmb_recv(s, &m, 10000) == 0);
		took = clock_mono_ns() - load_acquire(&run->sent_ns[k]);
		if (took > worst)
			worst = took;
		shmb_ack(s);
	}
	store_release(&run->round, MANY_ROUNDS + 1);
	printf("\n  %u lanes read; %u wakes through any of them, the slowest %.2f ms\n", got,
	       MANY_ROUNDS, (double)worst / 1e6);
	/* without a wake the reader would sleep out its second */
	CU_ASSERT(worst < 300000000ull);
	CU_ASSERT(tb_wait_child(w, 30000) == 0);
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	munmap(run, sizeof(*run));
}

struct thr_pub {
	struct shmb_session *s;
	uint64_t n;
	int err;
};

static void *thr_publish(void *arg)
{
	struct thr_pub *tp = arg;

	for (uint64_t i = 1; i <= tp->n && !tp->err; i++) {
		unsigned fl = i % 16 && i != tp->n ? SHMB_PUB_MORE : 0;

		tp->err = shmb_publish_flags(tp->s, "t", &i, sizeof(i), 10000, fl);
	}
	return NULL;
}

/*
 * Threads only (no fork: the ThreadSanitizer run, `make tsan`, covers
 * it): a publisher thread of one client; in another client, a session
 * read through its pollable fd (the waker thread) while a second thread
 * of the same client publishes on its own session and makes requests,
 * which read and hand over the first session's pushes.  Both streams
 * arrive whole and in order.
 */
static void test_threads(void)
{
	const uint64_t n = 20000;
	struct shmb_client *a, *b;
	struct shmb_session *pa, *sb, *pb;
	struct thr_pub ta, tb2;
	uint64_t next[2] = { 1, 1 }, sess[2] = { 0, 0 };
	pthread_t th[2];
	struct shmb_msg m;
	struct tb t;
	int fd;

	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "reader", 0, &b, &sb) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(sb, "t") == 0);
	fd = shmb_session_fd(sb);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_FATAL(connect_open(&t, "pub-a", 0, &a, &pa) == 0);
	CU_ASSERT_FATAL(shmb_session_open(b, "pub-b", NULL, &pb) == 0);
	ta = (struct thr_pub){ pa, n, 0 };
	tb2 = (struct thr_pub){ pb, n, 0 };
	CU_ASSERT_FATAL(pthread_create(&th[0], NULL, thr_publish, &ta) == 0);
	CU_ASSERT_FATAL(pthread_create(&th[1], NULL, thr_publish, &tb2) == 0);
	while ((next[0] <= n || next[1] <= n) && fd_ready(fd, 10000) == 1) {
		while (shmb_recv(sb, &m, 0) == 0) {
			uint64_t v;
			unsigned k = sess[0] == m.src_session ? 0 : sess[1] == m.src_session ? 1
				   : !sess[0] ? 0 : 1;

			sess[k] = m.src_session;
			memcpy(&v, m.data, 8);
			CU_ASSERT_FATAL(v == next[k]);
			next[k]++;
		}
		CU_ASSERT(shmb_ack(sb) == 0);
	}
	pthread_join(th[0], NULL);
	pthread_join(th[1], NULL);
	CU_ASSERT(ta.err == 0 && tb2.err == 0);
	CU_ASSERT(next[0] == n + 1 && next[1] == n + 1);
	shmb_close(a);
	shmb_close(b);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

static const struct harness_test tests[] = {
	{ "broker_stopped", test_broker_stopped },
	{ "relay_beside_lanes", test_relay_beside_lanes },
	{ "reopened_filters", test_reopened_filters },
	{ "pollable_fd", test_pollable_fd },
	{ "pollable_unacked", test_pollable_unacked },
	{ "forged_lane", test_forged_lane },
	{ "successor_after_kill", test_successor_after_kill },
	{ "broker_restart", test_broker_restart },
	{ "restart_wakes", test_restart_wakes },
	{ "shmbctl_lanes", test_shmbctl_lanes },
	{ "unsubscribe_releases", test_unsubscribe_releases },
	{ "spill_dead_reader", test_spill_dead_reader },
	{ "spill_broker_down", test_spill_broker_down },
	{ "spill_after_restart", test_spill_after_restart },
	{ "spill_lying_reader", test_spill_lying_reader },
	{ "spill_full_gap", test_spill_full_gap },
	{ "spill_two_publishers", test_spill_two_publishers },
	{ "poll_new_lane", test_poll_new_lane },
	{ "wide_topics", test_wide_topics },
	{ "many_lanes", test_many_lanes },
	{ "bridge_lets_go", test_bridge_lets_go },
	{ "bridge_wake_spam", test_bridge_wake_spam },
	{ NULL, NULL },
};

static const struct harness_test thread_tests[] = {
	{ "threads", test_threads },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "lib_lanes", tests },
	{ "lib_lanes_threads", thread_tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	return harness_main("test-lib-lanes", suites, argc, argv);
}
