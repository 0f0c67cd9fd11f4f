/*
 * tests/integration/test-broker.c - a real shmbd in a fresh SHMB_DIR,
 * real client processes, real kills.  Every test counts what was sent and
 * what arrived and fails on loss, reorder, or a duplicate outside the
 * unacknowledged window.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "broker-helper.h"
#include "stream.h"
#include "harness.h"
#include "libclient/internal.h"
#include "shm/atomics.h"
#include "shm/crc32c.h"
#include "shm/futex.h"
#include "shm/layout.h"
#include "shm/proto.h"
#include "shmb.h"

static void test_three_by_three(void)
{
	const uint64_t n = (uint64_t)(100000 * harness_scale());
	struct stats *st = stats_new();
	pid_t subs[NSUB], pubs[NPUB];
	uint64_t t0;
	struct tb t;

	CU_ASSERT_FATAL(tb_start(&t, "--poll-us", "20", NULL) == 0);
	for (int i = 0; i < NSUB; i++)
		if ((subs[i] = fork_or_die()) == 0)
			subscriber(&t, st, i, n * NPUB, NPUB);
	CU_ASSERT_FATAL(wait_ready(st, NSUB));
	t0 = clock_mono_ns();
	for (int j = 0; j < NPUB; j++)
		if ((pubs[j] = fork_or_die()) == 0)
			publisher(&t, st, j, n);
	for (int j = 0; j < NPUB; j++)
		CU_ASSERT(tb_wait_child(pubs[j], 120000) == 0);
	for (int i = 0; i < NSUB; i++)
		CU_ASSERT(tb_wait_child(subs[i], 120000) == 0);
	printf("\n  %d publishers x %llu messages -> %d subscribers in %.2f s:", NPUB,
	       (unsigned long long)n, NSUB, (clock_mono_ns() - t0) / 1e9);
	for (int i = 0; i < NSUB; i++) {
		printf(" [sub %d: %llu received, %llu dup, %llu errors]", i,
		       (unsigned long long)st->received[i], (unsigned long long)st->dups[i],
		       (unsigned long long)st->errors[i]);
		CU_ASSERT(st->received[i] == n * NPUB);
		CU_ASSERT(st->dups[i] == 0);
		CU_ASSERT(st->errors[i] == 0);
		for (int j = 0; j < NPUB; j++)
			CU_ASSERT(st->next[i][j] == n);
	}
	printf("\n");
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	munmap(st, sizeof(*st));
}

static void test_subscriber_killed(void)
{
	const uint64_t n = (uint64_t)(1000000 * harness_scale());
	uint64_t s = harness_seed("subscriber kills"), t0;
	struct stats *st = stats_new();
	unsigned kills = 0, want = 30;
	pid_t pub, sub;
	struct tb t;

	/* the kill loop alone may run 120 s, then each child gets 60 s */
	harness_alarm(300);

	/* the stream lasts long enough for the kills (a second at least):
	 * on lanes a million messages took 0.2 s, fewer than 30 kills */
	st->pace_us = 1000;
	CU_ASSERT_FATAL(tb_start(&t, "--poll-us", "20", NULL) == 0);
	if ((sub = fork_or_die()) == 0)
		subscriber(&t, st, 0, n, 1);
	CU_ASSERT_FATAL(wait_ready(st, 1));
	t0 = clock_mono_ns();
	if ((pub = fork_or_die()) == 0)
		publisher(&t, st, 0, n);
	while (kills < want && clock_mono_ns() - t0 < 120ull * 1000000000ull) {
		uint64_t at = load_acquire(&st->next[0][0]);

		usleep(1000 + (unsigned)(harness_rand(&s) % 8000));
		if (load_acquire(&st->next[0][0]) == at)
			continue; /* let the new one make progress first */
		if (load_acquire(&st->next[0][0]) >= n)
			break;
		kill(sub, SIGKILL);
		{
			int st_code = tb_wait_child(sub, 5000);

			/* it may have taken the last message just before the kill */
			if (st_code == 0 && load_acquire(&st->next[0][0]) >= n) {
				sub = 0;
				break;
			}
			if (st_code != 128 + SIGKILL)
				printf("\n  subscriber ended with %d before its kill\n", st_code);
			CU_ASSERT(st_code == 128 + SIGKILL);
		}
		kills++;
		st->ready = 0;
		if ((sub = fork_or_die()) == 0)
			subscriber(&t, st, 0, n, 1);
	}
	CU_ASSERT(tb_wait_child(pub, 120000) == 0);
	CU_ASSERT(!sub || tb_wait_child(sub, 120000) == 0);
	printf("\n  sent %llu, received %llu in order, %u SIGKILLs, %llu redelivered (each unacknowledged"
	       " at a kill, same source and sequence), %llu errors, %.2f s\n",
	       (unsigned long long)n, (unsigned long long)st->received[0], kills,
	       (unsigned long long)st->dups[0], (unsigned long long)st->errors[0],
	       (clock_mono_ns() - t0) / 1e9);
	CU_ASSERT(kills >= want);
	/* next[] is the record of what arrived in order (no gap is possible
	 * without an error); received[] is bumped just after it, so a kill
	 * between the two leaves it one short, at most once per kill */
	CU_ASSERT(st->next[0][0] == n);
	CU_ASSERT(st->received[0] <= n && st->received[0] + kills >= n);
	CU_ASSERT(st->errors[0] == 0);
	CU_ASSERT(st->dups[0] <= (uint64_t)kills * ACK_EVERY);
	CU_ASSERT(tb_log_count(&t, "detached") >= (int)kills);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	munmap(st, sizeof(*st));
}

/* A publisher SIGKILLed mid-stream; its successor learns exactly which
 * messages were accepted, and the subscriber sees each once, whole. */
static void test_publisher_killed(void)
{
	struct stats *st = stats_new();
	struct shmb_client *sc, *pc;
	struct shmb_session *ss, *ps;
	struct shmb_session_info info;
	uint64_t s = harness_seed("publisher kill"), got = 0;
	pid_t pub;
	struct tb t;

	CU_ASSERT_FATAL(tb_start(&t, "--poll-us", "20", NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "sink", 0, &sc, &ss) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(ss, "t") == 0);
	if ((pub = fork_or_die()) == 0)
		publisher(&t, st, 0, UINT64_MAX / 2);
	/* kill it once it is well into the stream.  The point is drawn afresh
	 * at each look: the sink reads nothing yet, so the publisher stops
	 * once the rings are full, and a fresh draw finds a point below that
	 * (on lanes, one lane of the default size: about 900 messages) */
	WAIT_FOR(load_acquire(&st->published[0]) >= 500 + harness_rand(&s) % 5000, 30000);
	kill(pub, SIGKILL);
	CU_ASSERT(tb_wait_child(pub, 5000) == 128 + SIGKILL);
	/* its successor: a new generation that knows what was accepted */
	CU_ASSERT_FATAL(connect_open(&t, "pub-0", 0, &pc, &ps) == 0);
	CU_ASSERT(shmb_session_info(ps, &info) == 0);
	CU_ASSERT(info.generation == 2);
	CU_ASSERT(info.created == 0);
	CU_ASSERT(info.tx_next_seq == info.tx_start_seq);
	CU_ASSERT(info.tx_start_seq >= st->published[0]);
	CU_ASSERT(info.tx_start_seq <= st->published[0] + 1);
	for (uint64_t i = info.tx_start_seq; i < info.tx_start_seq + 100; i++) {
		struct payload p;

		payload_make(&p, 0, i);
		CU_ASSERT_FATAL(shmb_publish(ps, "t", &p, sizeof(p), 10000) == 0);
	}
	/* every accepted message arrives once, whole, in order */
	while (got < info.tx_start_seq + 100) {
		struct shmb_msg m;
		struct payload p;

		if (shmb_recv(ss, &m, 10000) < 0)
			break;
		if (!payload_ok(&m, &p) || p.n != got || m.src_seq != got)
			break;
		got++;
		if (got % 64 == 0)
			shmb_ack(ss);
	}
	printf("\n  publisher killed after %llu accepted; successor (generation %u) starts at %llu;"
	       " subscriber got %llu of %llu, whole and in order\n",
	       (unsigned long long)st->published[0], info.generation,
	       (unsigned long long)info.tx_start_seq, (unsigned long long)got,
	       (unsigned long long)(info.tx_start_seq + 100));
	CU_ASSERT(got == info.tx_start_seq + 100);
	{
		struct shmb_msg m;

		CU_ASSERT(shmb_recv(ss, &m, 0) == -EAGAIN);
	}
	shmb_session_close(ps);
	shmb_close(pc);
	shmb_session_close(ss);
	shmb_close(sc);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	munmap(st, sizeof(*st));
}

struct ev_count {
	int stale, disconnected, gap, detached, reattached;
	uint64_t gap_total, last_generation;
};

static void count_event(const struct shmb_event *ev, void *arg)
{
	struct ev_count *n = arg;

	n->stale += ev->kind == SHMB_EV_STALE;
	n->disconnected += ev->kind == SHMB_EV_DISCONNECTED;
	n->detached += ev->kind == SHMB_EV_DETACHED;
	if (ev->kind == SHMB_EV_REATTACHED) {
		n->reattached++;
		n->last_generation = ev->count;
	}
	if (ev->kind == SHMB_EV_GAP) {
		n->gap++;
		n->gap_total += ev->count;
	}
}

static void test_takeover_and_stale(void)
{
	struct ev_count evs = { 0 };
	struct shmb_client *a, *b, *sc;
	struct shmb_session *sa, *sb, *ss;
	struct shmb_connect_opts co = { 0 };
	struct shmb_session_opts take = { .policy = SHMB_POLICY_DEFAULT, .flags = SHMB_TAKEOVER };
	struct shmb_msg m;
	struct tb t;
	int got = 0;

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	co.dir = t.dir;
	co.control_timeout_ms = 200; /* for b, once the broker is gone */
	CU_ASSERT_FATAL(connect_open(&t, "watcher", 0, &sc, &ss) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(ss, "t") == 0);
	CU_ASSERT_FATAL(connect_open(&t, "x", 0, &a, &sa) == 0);
	shmb_set_event_cb(a, count_event, &evs);
	CU_ASSERT(shmb_publish(sa, "t", "from-a", 6, 1000) == 0);
	CU_ASSERT_FATAL(shmb_connect(&co, &b) == 0);
	shmb_set_event_cb(b, count_event, &evs);
	/* the owner lives: refused without take-over */
	CU_ASSERT(shmb_session_open(b, "x", NULL, &sb) == -EBUSY);
	CU_ASSERT_FATAL(shmb_session_open(b, "x", &take, &sb) == 0);
	{
		struct shmb_session_info i;

		shmb_session_info(sb, &i);
		CU_ASSERT(i.generation == 2);
		CU_ASSERT(i.tx_start_seq == 1); /* a's message was accepted before the cut */
	}
	/* the old owner is fenced off */
	CU_ASSERT(shmb_publish(sa, "t", "late-a", 6, 1000) == -ESTALE);
	CU_ASSERT(shmb_recv(sa, &m, 0) == -ESTALE);
	CU_ASSERT(shmb_ack(sa) == -ESTALE);
	CU_ASSERT(evs.stale == 1); /* told once, not at every call */
	CU_ASSERT(evs.reattached == 1 && evs.last_generation == 2);
	CU_ASSERT(shmb_publish(sb, "t", "from-b", 6, 1000) == 0);
	while (shmb_recv(ss, &m, 2000) == 0) {
		if (got == 0)
			CU_ASSERT(m.len == 6 && !memcmp(m.data, "from-a", 6) && m.src_seq == 0);
		if (got == 1)
			CU_ASSERT(m.len == 6 && !memcmp(m.data, "from-b", 6) && m.src_seq == 1);
		got++;
		if (got == 2)
			break;
	}
	CU_ASSERT(got == 2);
	/* the broker goes away: b says so once, and its control requests
	 * wait for a redial up to its control timeout (test-redial.c has
	 * the redial itself) */
	shmb_set_event_cb(a, NULL, NULL);
	CU_ASSERT(tb_stop(&t) == 0);
	CU_ASSERT(shmb_subscribe(sb, "u") == -ENOTCONN);
	CU_ASSERT(shmb_subscribe(sb, "u") == -ENOTCONN);
	/* told by b's connection thread */
	WAIT_FOR(__atomic_load_n(&evs.disconnected, __ATOMIC_ACQUIRE) >= 1, 5000);
	CU_ASSERT(__atomic_load_n(&evs.disconnected, __ATOMIC_ACQUIRE) == 1);
	shmb_close(a);
	shmb_session_close(sb);
	shmb_close(b);
	shmb_close(sc);
	tb_cleanup(&t);
}

/* A new owner resumes exactly after what the last one acknowledged,
 * even while the ring was never full. */
static void test_resume_after_ack(void)
{
	struct shmb_client *pc, *c;
	struct shmb_session *ps, *s;
	struct shmb_msg m;
	struct payload p;
	struct tb t;
	int got = 0;

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "r", 0, &c, &s) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(s, "t") == 0);
	CU_ASSERT_FATAL(connect_open(&t, "p", 0, &pc, &ps) == 0);
	for (uint64_t i = 0; i < 100; i++) {
		payload_make(&p, 0, i);
		CU_ASSERT_FATAL(shmb_publish(ps, "t", &p, sizeof(p), 1000) == 0);
	}
	for (int i = 0; i < 60; i++)
		CU_ASSERT(shmb_recv(s, &m, 5000) == 0);
	CU_ASSERT(shmb_ack(s) == 0);
	CU_ASSERT(shmb_recv(s, &m, 5000) == 0); /* read, never acknowledged */
	shmb_close(c); /* like a crash: the session stays, detached */
	CU_ASSERT_FATAL(connect_open(&t, "r", 0, &c, &s) == 0);
	while (shmb_recv(s, &m, 200) == 0) {
		CU_ASSERT(payload_ok(&m, &p) && p.n == (uint64_t)(60 + got));
		got++;
	}
	CU_ASSERT(got == 40);
	shmb_close(c);
	shmb_close(pc);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

static void test_other_uid(void)
{
	struct shmb_client *c;
	struct shmb_session *s;
	struct tb t;
	pid_t p;

	if (geteuid() != 0) {
		HARNESS_SKIP("needs root to run a client as another uid (nobody)");
		return;
	}
	CU_ASSERT_FATAL(tb_start(&t, "--max-topics-per-uid", "3", "--max-memory-per-uid", "600000",
				 NULL) == 0);
	CU_ASSERT(chmod(t.dir, 0755) == 0); /* let nobody reach the socket */
	/* (this broker runs with --max-topics-per-uid 3) */
	CU_ASSERT_FATAL(connect_open(&t, "x", 0, &c, &s) == 0);
	CU_ASSERT(shmb_subscribe(s, "secret") == 0);
	if ((p = fork_or_die()) == 0) {
		struct shmb_client *oc;
		struct shmb_session *os;
		struct shmb_session_info i;
		char path[400];
		int fail = 0;

		if (setgid(65534) || setuid(65534))
			_exit(50);
		if (connect_open(&t, "x", 0, &oc, &os) < 0)
			_exit(51);
		shmb_session_info(os, &i);
		fail |= i.created != 1;        /* its own "x", not root's */
		fail |= i.session_id == 1;
		fail |= (shmb_subscribe(os, "secret") != -EPERM) << 1;
		fail |= (shmb_publish(os, "secret", "x", 1, 0) != -EPERM) << 2;
		snprintf(path, sizeof(path), "%s/sessions/1/rx", t.dir);
		fail |= (open(path, O_RDONLY) >= 0) << 3;
		/* a per-uid cap on topics; root's do not count */
		fail |= (shmb_subscribe(os, "a") != 0 || shmb_subscribe(os, "b") != 0 ||
			 shmb_subscribe(os, "c") != 0 || shmb_subscribe(os, "d") != -EDQUOT) << 4;
		/* a per-uid cap on segment memory: 64 KiB rings take 3 x 68 KiB
		 * each, so the third session passes 600000 bytes */
		{
			struct shmb_session_opts so = { .rx_ring_size = 1u << 16,
							.tx_ring_size = 1u << 16 };
			struct shmb_session *s2, *s3;

			fail |= (shmb_session_open(oc, "m2", &so, &s2) != 0) << 5;
			fail |= (shmb_session_open(oc, "m3", &so, &s3) != -EDQUOT) << 6;
		}
		_exit(fail ? 60 + fail : 0);
	}
	CU_ASSERT(tb_wait_child(p, 10000) == 0);
	{
		struct shmb_msg m;

		/* root's session saw nothing of it */
		CU_ASSERT(shmb_recv(s, &m, 0) == -EAGAIN);
	}
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* ---- hostile clients ------------------------------------------------------- */

/* Send raw bytes; return the reply's err, 1 for a clean disconnect. */
static int raw_exchange(int fd, const void *buf, size_t len)
{
	struct proto_reply rep;
	ssize_t n;

	if (send(fd, buf, len, MSG_NOSIGNAL) != (ssize_t)len)
		return errno == EPIPE || errno == ECONNRESET ? 1 : -1000;
	n = recv(fd, &rep, sizeof(rep), 0);
	if (n == 0)
		return 1;
	if (n != sizeof(rep) || rep.h.type != PROTO_REPLY)
		return -1000;
	return rep.err;
}

static void test_malformed_control_messages(void)
{
	uint64_t s = harness_seed("malformed");
	struct shmb_client *pc, *sc;
	struct shmb_session *ps, *ss;
	struct proto_hello hello = { .h = { PROTO_HELLO, sizeof(hello), 1 }, .version = PROTO_VERSION };
	struct shmb_msg m;
	unsigned answered = 0;
	static uint8_t big[70000];
	struct tb t;
	int fd, r;

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "good-sub", 0, &sc, &ss) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(ss, "t") == 0);
	CU_ASSERT_FATAL(connect_open(&t, "good-pub", 0, &pc, &ps) == 0);
	CU_ASSERT(shmb_publish(ps, "t", "before", 6, 1000) == 0);

	/* random bytes, with and without a hello first */
	for (int i = 0; i < 200; i++) {
		uint8_t junk[300];
		size_t len = 1 + harness_rand(&s) % sizeof(junk);

		for (size_t k = 0; k < len; k++)
			junk[k] = (uint8_t)harness_rand(&s);
		if (i % 3 == 0 && len >= sizeof(struct proto_hdr)) {
			/* plausible header, wrong body */
			struct proto_hdr h = { (uint32_t)(harness_rand(&s) % 8), (uint32_t)len, 7 };

			memcpy(junk, &h, sizeof(h));
		}
		fd = tb_raw_connect(&t);
		CU_ASSERT_FATAL(fd >= 0);
		if (i % 2)
			CU_ASSERT(raw_exchange(fd, &hello, sizeof(hello)) == 0);
		r = raw_exchange(fd, junk, len);
		CU_ASSERT(r != -1000 && r <= 1);
		answered += r < 0;
		close(fd);
	}
	/* truncated, oversized, wrong version, wrong order, unknown type */
	fd = tb_raw_connect(&t);
	CU_ASSERT(raw_exchange(fd, &hello, 4) == -EBADMSG);
	close(fd);
	/* larger than any message may be: refused by the kernel, or read
	 * truncated by the broker, which answers and disconnects */
	fd = tb_raw_connect(&t);
	{
		ssize_t n = send(fd, big, sizeof(big), MSG_NOSIGNAL);
		struct proto_reply rep;

		if (n < 0) {
			CU_ASSERT(errno == EMSGSIZE || errno == ENOBUFS);
		} else {
			CU_ASSERT(recv(fd, &rep, sizeof(rep), 0) == sizeof(rep) && rep.err == -EBADMSG);
			CU_ASSERT(recv(fd, &rep, sizeof(rep), 0) == 0);
		}
	}
	close(fd);
	fd = tb_raw_connect(&t);
	{
		struct proto_hello v2 = hello;

		v2.version = 99;
		CU_ASSERT(raw_exchange(fd, &v2, sizeof(v2)) == -EPROTONOSUPPORT);
	}
	close(fd);
	fd = tb_raw_connect(&t);
	{
		struct proto_open o = { .h = { PROTO_SESSION_OPEN, sizeof(o), 2 }, .name_len = 1, .name = "z" };

		CU_ASSERT(raw_exchange(fd, &o, sizeof(o)) == -EPROTO);
	}
	close(fd);
	fd = tb_raw_connect(&t);
	{
		struct proto_hdr h = { 77, sizeof(h), 3 };
		struct proto_open o = { .h = { PROTO_SESSION_OPEN, sizeof(o), 4 }, .name_len = 500 };
		struct proto_close cl = { .h = { PROTO_SESSION_CLOSE, sizeof(cl), 5 }, .session_id = 1 };

		CU_ASSERT(raw_exchange(fd, &hello, sizeof(hello)) == 0);
		/* unknown type: an error, and the connection stays */
		CU_ASSERT(raw_exchange(fd, &h, sizeof(h)) == -EOPNOTSUPP);
		CU_ASSERT(raw_exchange(fd, &o, sizeof(o)) == -EINVAL);
		/* someone else's session (the good subscriber's): not ours */
		CU_ASSERT(raw_exchange(fd, &cl, sizeof(cl)) == -ESTALE);
		/* a lying length field */
		h.type = PROTO_HELLO;
		h.len = 9999;
		CU_ASSERT(raw_exchange(fd, &h, sizeof(h)) == -EBADMSG);
	}
	close(fd);
	/* file descriptors are refused (and closed by the broker) */
	fd = tb_raw_connect(&t);
	{
		union {
			struct cmsghdr h;
			char b[CMSG_SPACE(sizeof(int))];
		} cm = { 0 };
		struct iovec iov = { &hello, sizeof(hello) };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
				     .msg_controllen = sizeof(cm.b) };
		int devnull = open("/dev/null", O_RDONLY);
		struct proto_reply rep;

		cm.h.cmsg_level = SOL_SOCKET;
		cm.h.cmsg_type = SCM_RIGHTS;
		cm.h.cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(&cm.h), &devnull, sizeof(int));
		CU_ASSERT(sendmsg(fd, &mh, 0) == sizeof(hello));
		CU_ASSERT(recv(fd, &rep, sizeof(rep), 0) == sizeof(rep) && rep.err == -EBADMSG);
		close(devnull);
	}
	close(fd);
	/* the broker still serves the good pair, in order */
	CU_ASSERT(tb_alive(&t));
	CU_ASSERT(shmb_publish(ps, "t", "after", 5, 1000) == 0);
	CU_ASSERT(shmb_recv(ss, &m, 5000) == 0 && m.len == 6 && !memcmp(m.data, "before", 6));
	CU_ASSERT(shmb_recv(ss, &m, 5000) == 0 && m.len == 5 && !memcmp(m.data, "after", 5));
	printf("\n  200 junk messages (%u answered with an error, the rest disconnected) and 10 malformed"
	       " ones; the broker kept serving\n", answered);
	shmb_close(pc);
	shmb_close(sc);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

static long broker_ticks(pid_t pid);

/* What a client does after a commit: bump tx_signal and wake the broker
 * (here without looking whether it sleeps). */
static void poke_broker(uint8_t *tx_base)
{
	struct shm_tx_ctrl *txc = (struct shm_tx_ctrl *)(tx_base + SHM_CTRL_OFF);

	__atomic_fetch_add(&txc->tx_signal, 1, __ATOMIC_SEQ_CST);
	futex_wake(&txc->tx_signal, 1);
}

/* A broker, a good subscriber and publisher, and a client `bad` whose one
 * message of 11 bytes ("ok-from-bad") was delivered and acknowledged. */
/* A broker (with one option, or NULL), a good subscriber and publisher,
 * and the client that will misbehave. */
static void hostile_setup_with(struct tb *t, const char *opt, const char *bad, struct shmb_client **sc,
			       struct shmb_session **ss, struct shmb_client **pc,
			       struct shmb_session **ps, struct shmb_client **bc, struct shmb_session **bs)
{
	struct shmb_msg m;

	CU_ASSERT_FATAL(tb_start(t, opt, NULL) == 0);
	CU_ASSERT_FATAL(connect_open(t, "good-sub", 0, sc, ss) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(*ss, "t") == 0);
	CU_ASSERT_FATAL(connect_open(t, "good-pub", 0, pc, ps) == 0);
	CU_ASSERT_FATAL(connect_open(t, bad, 0, bc, bs) == 0);
	CU_ASSERT(shmb_publish(*bs, "t", "ok-from-bad", 11, 1000) == 0);
	CU_ASSERT(shmb_recv(*ss, &m, 5000) == 0 && m.len == 11);
	CU_ASSERT(shmb_ack(*ss) == 0);
}

static void hostile_setup(struct tb *t, const char *bad, struct shmb_client **sc,
			  struct shmb_session **ss, struct shmb_client **pc, struct shmb_session **ps,
			  struct shmb_client **bc, struct shmb_session **bs)
{
	hostile_setup_with(t, NULL, bad, sc, ss, pc, ps, bc, bs);
}

/* Can Landlock deny truncation on this kernel (ABI 3, Linux 6.2)? */
static bool landlock_truncate(void)
{
	long abi = syscall(444 /* landlock_create_ruleset */, NULL, 0, 1 /* VERSION */);

	return abi >= 3;
}

/* A client that keeps waking the broker with no records is backed off
 * (docs/design/rings.md, wake-ups): the broker does not spin on its behalf,
 * and its real messages still arrive. */
static void test_wake_spam_backoff(void)
{
	struct shmb_client *pc, *sc, *bc;
	struct shmb_session *ps, *ss, *bs;
	struct shmb_msg m;
	struct tb t;
	uint8_t *base;
	size_t len;
	int fd;
	long t0, t1;
	uint64_t until, spins = 0;

	hostile_setup(&t, "spammer", &sc, &ss, &pc, &ps, &bc, &bs);
	base = client_session_tx_base(bs, &len, &fd);
	/* spam until the broker says it backed off (more than 100 wake-ups
	 * in a housekeeping window, few records: how soon depends on how
	 * often a loaded machine lets the broker sleep and wake, so no fixed
	 * time), 10 s at most */
	until = clock_mono_ns() + 10000000000ull;
	while (clock_mono_ns() < until &&
	       ((spins & 4095) || tb_log_count(&t, "backed off") == 0)) {
		poke_broker(base);
		spins++;
	}
	CU_ASSERT(tb_log_count(&t, "backed off") >= 1);
	/* then it costs the broker little, however long it goes on */
	spins = 0;
	t0 = broker_ticks(t.pid);
	until = clock_mono_ns() + 2000000000ull;
	while (clock_mono_ns() < until) {
		poke_broker(base);
		spins++;
	}
	t1 = broker_ticks(t.pid);
	printf("\n  backed off: %llu more wake-ups in 2 s cost the broker %ld clock ticks\n",
	       (unsigned long long)spins, t1 - t0);
	/* without back-off the broker spends the whole 2 s (about 200 ticks) */
	CU_ASSERT(t1 - t0 < 100);
	/* real traffic still flows, the spammer's own included */
	CU_ASSERT(shmb_publish(bs, "t", "late", 4, 1000) == 0);
	CU_ASSERT(shmb_recv(ss, &m, 5000) == 0 && m.len == 4);
	CU_ASSERT(shmb_publish(ps, "t", "good", 4, 1000) == 0);
	CU_ASSERT(shmb_recv(ss, &m, 5000) == 0 && m.len == 4);
	shmb_close(bc);
	shmb_close(pc);
	shmb_close(sc);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* A connection that never says HELLO is closed after --hello-timeout. */
static void test_hello_timeout(void)
{
	struct tb t;
	char b;
	int fd;
	uint64_t t0;

	CU_ASSERT_FATAL(tb_start(&t, "--hello-timeout", "1", NULL) == 0);
	fd = tb_raw_connect(&t); /* SO_RCVTIMEO 5 s */
	CU_ASSERT_FATAL(fd >= 0);
	t0 = clock_mono_ns();
	CU_ASSERT(recv(fd, &b, 1, 0) == 0); /* EOF, well before the 5 s */
	CU_ASSERT(clock_mono_ns() - t0 < 4000000000ull);
	close(fd);
	CU_ASSERT(tb_log_count(&t, "no HELLO") == 1);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* After a hostile client: the broker lives and the good pair still talks. */
static void hostile_still_serving(struct tb *t, struct shmb_session *ps, struct shmb_session *ss)
{
	struct shmb_msg m;

	CU_ASSERT(tb_alive(t));
	CU_ASSERT(shmb_publish(ps, "t", "still-fine", 10, 1000) == 0);
	CU_ASSERT(shmb_recv(ss, &m, 5000) == 0 && m.len == 10 && !memcmp(m.data, "still-fine", 10));
}

static void hostile_teardown(struct tb *t, struct shmb_client *sc, struct shmb_client *pc,
			     struct shmb_client *bc)
{
	shmb_close(bc);
	shmb_close(pc);
	shmb_close(sc);
	CU_ASSERT(tb_stop(t) == 0);
	tb_cleanup(t);
}

/* A client scribbles over its own TX ring: its session is quarantined,
 * nobody else notices. */
static void test_scribbling_client(void)
{
	struct shmb_client *pc, *sc, *bc;
	struct shmb_session *ps, *ss, *bs;
	struct shmb_msg m;
	struct tb t;
	uint8_t *base;
	size_t len;
	int fd;

	/* on the relay (--no-lanes): the forged record is in the TX ring the
	 * broker reads, which a lane publisher does not write (test-lib-lanes
	 * forged_lane forges one in a lane instead) */
	hostile_setup_with(&t, "--no-lanes", "bad", &sc, &ss, &pc, &ps, &bc, &bs);
	/* forge a record: a length far beyond the ring, then poke the broker */
	base = client_session_tx_base(bs, &len, &fd);
	{
		uint64_t pos = 48; /* after the one record: 24 + 8 + 11 bytes, aligned */
		uint64_t forged = shm_commit_word(0x7ffffff0, 1);

		memcpy(base + SHM_RING_OFFSET + pos, &forged, 8);
		memset(base, 0xff, 64); /* the header too */
		poke_broker(base);
	}
	/* the broker logs the quarantine */
	WAIT_FOR(tb_log_count(&t, "quarantined") > 0, 5000);
	CU_ASSERT(tb_log_count(&t, "bad") >= 1);
	CU_ASSERT(tb_log_count(&t, "quarantined") >= 1);
	hostile_still_serving(&t, ps, ss);
	CU_ASSERT(shmb_recv(ss, &m, 100) == -ETIMEDOUT); /* nothing forged got through */
	hostile_teardown(&t, sc, pc, bc);
}

/* A client truncates its own TX file under the broker's mapping: the
 * broker's next read there would be SIGBUS; it quarantines the session
 * and goes on. */
/* A client cuts its TX file under the broker (--no-landlock, or a kernel
 * without Landlock's truncate right): the SIGBUS guard or the size sweep
 * quarantines it once, and everyone else is served. */
static void truncate_under_broker(const char *opt)
{
	struct shmb_client *pc, *sc, *bc;
	struct shmb_session *ps, *ss, *bs;
	struct tb t;
	uint8_t *base;
	size_t len;
	int fd;

	hostile_setup_with(&t, opt, "shrinker", &sc, &ss, &pc, &ps, &bc, &bs);
	base = client_session_tx_base(bs, &len, &fd);
	/* keep the first page (header, counters), cut the ring off */
	CU_ASSERT(ftruncate(fd, 4096) == 0);
	poke_broker(base);
	WAIT_FOR(tb_log_count(&t, "truncated") > 0, 5000);
	CU_ASSERT(tb_log_count(&t, "truncated") == 1);
	hostile_still_serving(&t, ps, ss);
	hostile_teardown(&t, sc, pc, bc);
}

/* With Landlock's truncate right (the default where the kernel has it)
 * the client's descriptor cannot cut the file at all. */
static void test_truncating_client(void)
{
	struct shmb_client *pc, *sc, *bc;
	struct shmb_session *ps, *ss, *bs;
	struct tb t;
	size_t len;
	int fd;

	if (!landlock_truncate()) {
		printf("\n  Landlock cannot deny truncation here: the guard's path instead\n");
		truncate_under_broker(NULL);
		return;
	}
	hostile_setup(&t, "shrinker", &sc, &ss, &pc, &ps, &bc, &bs);
	CU_ASSERT(tb_log_count(&t, "opened under Landlock") == 1);
	client_session_tx_base(bs, &len, &fd);
	errno = 0;
	CU_ASSERT(ftruncate(fd, 4096) == -1 && errno == EACCES);
	CU_ASSERT(ftruncate(fd, (off_t)len * 2) == -1 && errno == EACCES);
	CU_ASSERT(tb_log_count(&t, "truncated") == 0);
	hostile_still_serving(&t, ps, ss);
	hostile_teardown(&t, sc, pc, bc);
}

/* The fallback, whatever the kernel: --no-landlock. */
static void test_truncating_client_no_landlock(void)
{
	truncate_under_broker("--no-landlock");
}

/* A client punches a hole in its TX file (no fault while the tmpfs has
 * room): the sweep sees the lost blocks and quarantines it. */
static void test_punching_client(void)
{
	struct shmb_client *pc, *sc, *bc;
	struct shmb_session *ps, *ss, *bs;
	struct tb t;
	size_t len;
	int fd;

	hostile_setup(&t, "puncher", &sc, &ss, &pc, &ps, &bc, &bs);
	client_session_tx_base(bs, &len, &fd);
	CU_ASSERT_FATAL(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 8192, 8192) == 0);
	WAIT_FOR(tb_log_count(&t, "lost blocks") > 0, 5000);
	CU_ASSERT(tb_log_count(&t, "lost blocks") == 1);
	hostile_still_serving(&t, ps, ss);
	hostile_teardown(&t, sc, pc, bc);
}

/* The API guide's example program, run as a user would run it. */
static int run_example(const struct tb *t, char *const argv[], char *out, size_t cap)
{
	char self[512], path[600];
	ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);
	int pfd[2], st;
	size_t n = 0;
	pid_t p;

	self[k > 0 ? k : 0] = 0;
	*strrchr(self, '/') = 0;
	snprintf(path, sizeof(path), "%s/../example-pubsub", self);
	if (pipe(pfd) < 0)
		return -1;
	p = fork();
	if (p == 0) {
		dup2(pfd[1], 1);
		close(pfd[0]);
		setenv("SHMB_DIR", t->dir, 1);
		execv(path, argv);
		_exit(127);
	}
	close(pfd[1]);
	for (ssize_t r; n + 1 < cap && (r = read(pfd[0], out + n, cap - 1 - n)) > 0;)
		n += (size_t)r;
	out[n] = 0;
	close(pfd[0]);
	st = tb_wait_child(p, 20000);
	return st;
}

static void test_example_program(void)
{
	struct shmb_client *c;
	struct shmb_session *s;
	char out[4096];
	struct tb t;
	char *pub[] = { "example-pubsub", "pub", "news", "5", NULL };
	char *sub[] = { "example-pubsub", "sub", "news", "ex", NULL };

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	/* the session exists and is subscribed before anything is published */
	CU_ASSERT_FATAL(connect_open(&t, "ex", 0, &c, &s) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(s, "news") == 0);
	shmb_close(c);
	CU_ASSERT(run_example(&t, pub, out, sizeof(out)) == 0);
	CU_ASSERT(run_example(&t, sub, out, sizeof(out)) == 0);
	CU_ASSERT(strstr(out, "hello 1 ") != NULL);
	CU_ASSERT(strstr(out, "hello 5 ") != NULL);
	CU_ASSERT(strstr(out, "hello 6") == NULL);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

static int epoll_ready(int epfd, int timeout_ms)
{
	struct epoll_event ev;

	return epoll_wait(epfd, &ev, 1, timeout_ms);
}

/* shmb_session_fd() in an application's own epoll loop. */
static void test_pollable_fd(void)
{
	struct shmb_client *pc, *sc, *tc;
	struct shmb_session *ps, *ss, *ts;
	struct shmb_session_opts take = { .policy = SHMB_POLICY_DEFAULT, .flags = SHMB_TAKEOVER };
	struct shmb_connect_opts co = { 0 };
	struct shmb_msg m;
	struct tb t;
	int fd, n = 0;

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	co.dir = t.dir;
	CU_ASSERT_FATAL(connect_open(&t, "poller", 0, &sc, &ss) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(ss, "t") == 0);
	CU_ASSERT_FATAL(connect_open(&t, "p", 0, &pc, &ps) == 0);
	fd = shmb_session_fd(ss);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT(shmb_session_fd(ss) == fd);
	CU_ASSERT(shmb_recv(ss, &m, 0) == -EAGAIN);
	CU_ASSERT(epoll_ready(fd, 0) == 0);
	CU_ASSERT(shmb_publish(ps, "t", "a", 1, 1000) == 0);
	CU_ASSERT(shmb_publish(ps, "t", "b", 1, 1000) == 0);
	/* the documented loop: wait, then receive until -EAGAIN (the two may
	 * be delivered in separate passes) */
	for (int rounds = 0; n < 2 && rounds < 10; rounds++) {
		CU_ASSERT(epoll_ready(fd, 5000) == 1);
		while (shmb_recv(ss, &m, 0) == 0)
			n++;
	}
	CU_ASSERT(n == 2);
	CU_ASSERT(shmb_ack(ss) == 0);
	/* drained: not readable until something new arrives */
	CU_ASSERT(epoll_ready(fd, 0) == 0);
	CU_ASSERT(shmb_publish(ps, "t", "c", 1, 1000) == 0);
	CU_ASSERT(epoll_ready(fd, 5000) == 1);
	CU_ASSERT(shmb_recv(ss, &m, 0) == 0 && m.len == 1 && ((const char *)m.data)[0] == 'c');
	CU_ASSERT(shmb_recv(ss, &m, 0) == -EAGAIN);
	/* a take-over wakes the poller, who learns -ESTALE */
	CU_ASSERT_FATAL(shmb_connect(&co, &tc) == 0);
	CU_ASSERT_FATAL(shmb_session_open(tc, "poller", &take, &ts) == 0);
	CU_ASSERT(epoll_ready(fd, 5000) == 1);
	CU_ASSERT(shmb_recv(ss, &m, 0) == -ESTALE);
	shmb_close(tc);
	shmb_close(pc);
	shmb_close(sc);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* A live subscriber that never reads holds its publishers back only for
 * --block-timeout; detached, it expires after --session-ttl and the
 * publishers go on. */
static void test_block_timeout(void)
{
	struct shmb_client *pc, *sc;
	struct shmb_session *ps, *ss;
	uint8_t buf[1000] = { 0 };
	struct tb t;
	int r = 0, sent = 0;

	struct ev_count evs = { 0 };

	CU_ASSERT_FATAL(tb_start(&t, "--block-timeout", "1", "--session-ttl", "3", NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "slow", 0, &sc, &ss) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(ss, "t") == 0);
	shmb_set_event_cb(sc, count_event, &evs);
	CU_ASSERT(shmb_session_fd(ss) >= 0);
	CU_ASSERT_FATAL(connect_open(&t, "p", 0, &pc, &ps) == 0);
	/* until it is full: its RX ring and the TX ring on the relay, a lane
	 * the size of the broker's default RX ring on lanes */
	while (sent < 100000 && (r = shmb_publish(ps, "t", buf, sizeof(buf), 200)) == 0)
		sent++;
	CU_ASSERT(r == -ETIMEDOUT); /* held back: nothing is dropped for "slow" */
	WAIT_FOR(tb_log_count(&t, "longer than --block-timeout") > 0, 5000);
	{
		struct shmb_msg m;
		int got = 0;

		/* it keeps what it had; then it learns it was detached */
		while ((r = shmb_recv(ss, &m, 0)) == 0)
			got++;
		printf("\n  after the detach: %d received, then %s\n", got, shmb_strerror(r));
		CU_ASSERT(got > 0); /* what its ring held; the rest waits in the publisher's */
		CU_ASSERT(r == -ENOTCONN);
		CU_ASSERT(evs.detached == 1);
	}
	WAIT_FOR(tb_log_count(&t, "expired") > 0, 8000);
	CU_ASSERT(shmb_publish(ps, "t", buf, sizeof(buf), 2000) == 0);
	CU_ASSERT(shmb_flush(ps, 5000) == 0);
	{
		struct shmb_msg m;

		/* its owner learns the session is gone */
		CU_ASSERT(shmb_recv(ss, &m, 0) == -ESTALE);
	}
	printf("\n  %d messages filled the slow subscriber; detached after 1 s, expired after 3 s more;"
	       " the publisher went on\n", sent);
	shmb_close(sc);
	shmb_close(pc);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* drop-oldest: a publisher is never held back; the reader gets whole
 * messages in order and is told how many it missed. */
static void test_drop_oldest(void)
{
	const uint64_t n = (uint64_t)(200000 * harness_scale());
	struct shmb_session_opts so = { .policy = SHMB_POLICY_DROP_OLDEST, .rx_ring_size = 16384 };
	struct shmb_connect_opts co = { 0 };
	struct shmb_client *c;
	struct shmb_session *s;
	uint64_t got = 0, missed = 0, last = 0, bad = 0, gaps = 0;
	struct ev_count evs = { 0 };
	struct tb t;
	pid_t pub;

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	co.dir = t.dir;
	CU_ASSERT_FATAL(shmb_connect(&co, &c) == 0);
	CU_ASSERT_FATAL(shmb_session_open(c, "lossy", &so, &s) == 0);
	shmb_set_event_cb(c, count_event, &evs);
	CU_ASSERT_FATAL(shmb_subscribe(s, "t") == 0);
	/* a publisher that must never block: timeout 0 */
	if ((pub = fork_or_die()) == 0) {
		struct shmb_client *pc;
		struct shmb_session *ps;

		if (connect_open(&t, "fast", 0, &pc, &ps) < 0)
			_exit(1);
		for (uint64_t i = 0; i < n; i++) {
			struct payload p;
			int r;

			payload_make(&p, 0, i);
			while ((r = shmb_publish(ps, "t", &p, sizeof(p), 0)) == -EAGAIN)
				; /* its own TX ring is full for a moment: the broker drains it */
			if (r < 0)
				_exit(2);
		}
		_exit(shmb_flush(ps, 10000) == 0 ? 0 : 3);
	}
	/* a slow reader: it cannot keep up, so the broker drops for it */
	while (got + missed < n) {
		struct shmb_msg m;
		struct payload p;

		if (shmb_recv(s, &m, 5000) < 0)
			break;
		if (!payload_ok(&m, &p) || p.n != m.src_seq || (got && p.n <= last) ||
		    (got && p.n != last + 1 + m.missed))
			bad++;
		gaps += m.missed > 0;
		missed += m.missed;
		last = p.n;
		got++;
		if (got % 16 == 0) {
			shmb_ack(s);
			usleep(got % 4096 == 0 ? 2000 : 0);
		}
	}
	CU_ASSERT(tb_wait_child(pub, 60000) == 0);
	printf("\n  drop-oldest: %llu published, %llu received whole and in order, %llu missed in %llu"
	       " gaps, %llu bad\n", (unsigned long long)n, (unsigned long long)got,
	       (unsigned long long)missed, (unsigned long long)gaps, (unsigned long long)bad);
	CU_ASSERT(bad == 0);
	CU_ASSERT(got + missed == n);
	CU_ASSERT(evs.gap_total == missed && (uint64_t)evs.gap == gaps);
	CU_ASSERT(missed > 0);
	CU_ASSERT(last == n - 1);
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* Broker CPU time (user + system, clock ticks) from /proc. */
static long broker_ticks(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long ut = 0, st = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (!fgets(buf, sizeof(buf), f)) {
		fclose(f);
		return -1;
	}
	fclose(f);
	p = strrchr(buf, ')');
	/* fields after the name: state is 3rd; utime and stime are 14th, 15th */
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return -1;
	return (long)(ut + st);
}

/* Without io_uring FUTEX_WAIT (forced), the broker's fallback still
 * delivers everything; and an idle broker (either way) uses no CPU. */
static void test_fallback_and_idle(void)
{
	const char *modes[2][3] = { { "--poll-us", "50", NULL }, { "--no-uring-futex", NULL, NULL } };

	for (int k = 0; k < 2; k++) {
		struct shmb_client *pc, *sc;
		struct shmb_session *ps, *ss;
		struct tb t;
		long t0, t1;
		int got = 0;

		/* the exit tracer's one-off load (a thread, ~100 ms of CPU) is not
		 * the loop's idleness: this test measures the loop alone */
		CU_ASSERT_FATAL(tb_start(&t, "--exit-reasons", "pidfd", modes[k][0], modes[k][1], NULL) == 0);
		CU_ASSERT_FATAL(connect_open(&t, "s", 0, &sc, &ss) == 0);
		CU_ASSERT_FATAL(shmb_subscribe(ss, "t") == 0);
		CU_ASSERT_FATAL(connect_open(&t, "p", 0, &pc, &ps) == 0);
		for (uint64_t i = 0; i < 20000; i++) {
			struct payload p;
			struct shmb_msg m;

			payload_make(&p, 0, i);
			if (shmb_publish(ps, "t", &p, sizeof(p), 5000) < 0)
				break;
			if (i % 7 == 0) /* let the broker go idle now and then */
				while (shmb_recv(ss, &m, got < (int)i ? 5000 : 0) == 0) {
					got++;
					shmb_ack(ss);
					if (got > (int)i)
						break;
				}
		}
		{
			struct shmb_msg m;

			while (got < 20000 && shmb_recv(ss, &m, 5000) == 0) {
				got++;
				shmb_ack(ss);
			}
		}
		CU_ASSERT(got == 20000);
		if (k == 1)
			CU_ASSERT(tb_log_count(&t, "polling every") == 1);
		/* idle for a second: the io_uring broker sleeps; the fallback
		 * wakes every millisecond, which still costs next to nothing */
		t0 = broker_ticks(t.pid);
		usleep(1000000);
		t1 = broker_ticks(t.pid);
		printf("\n  %s: 20000 delivered; idle second cost %ld clock ticks of CPU\n",
		       k ? "fallback (--no-uring-futex)" : "io_uring FUTEX_WAIT", t1 - t0);
		CU_ASSERT(t0 >= 0 && t1 - t0 <= (k ? 20 : 2));
		shmb_close(pc);
		shmb_close(sc);
		CU_ASSERT(tb_stop(&t) == 0);
		tb_cleanup(&t);
	}
}

/* An ephemeral publisher that dies with messages still in its TX ring:
 * they are delivered before its session goes (review finding). */
static void test_ephemeral_publisher_dies(void)
{
	struct shmb_client *c;
	struct shmb_session *s;
	struct shmb_connect_opts co = { 0 };
	struct shmb_session_opts so = { .policy = SHMB_POLICY_DEFAULT, .rx_ring_size = 4096 };
	struct tb t;
	pid_t p;
	int got = 0;

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	co.dir = t.dir;
	CU_ASSERT_FATAL(shmb_connect(&co, &c) == 0);
	CU_ASSERT_FATAL(shmb_session_open(c, "reader", &so, &s) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(s, "t") == 0);
	if ((p = fork_or_die()) == 0) {
		struct shmb_client *pc;
		struct shmb_session *ps;

		if (connect_open(&t, "eph", SHMB_EPHEMERAL, &pc, &ps) < 0)
			_exit(1);
		for (uint64_t i = 0; i < 200; i++) {
			struct payload pl;

			payload_make(&pl, 0, i);
			if (shmb_publish(ps, "t", &pl, sizeof(pl), 1000) < 0)
				_exit(2);
		}
		_exit(0); /* no flush: most of it is still in the TX ring */
	}
	CU_ASSERT(tb_wait_child(p, 10000) == 0);
	for (;;) {
		struct shmb_msg m;
		struct payload pl;

		if (shmb_recv(s, &m, 2000) < 0)
			break;
		CU_ASSERT(payload_ok(&m, &pl) && pl.n == (uint64_t)got);
		got++;
		shmb_ack(s);
	}
	CU_ASSERT(got == 200);
	WAIT_FOR(tb_log_count(&t, "what it published is delivered") > 0, 5000);
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* A subscriber that held a publisher back, then caught up after the
 * publisher went, is not detached by --block-timeout (review finding). */
static void test_caught_up_not_detached(void)
{
	struct shmb_client *c, *pc;
	struct shmb_session *s, *ps;
	struct shmb_connect_opts co = { 0 };
	struct shmb_session_opts so = { .policy = SHMB_POLICY_DEFAULT, .rx_ring_size = 4096 };
	uint8_t buf[200] = { 0 };
	struct shmb_msg m;
	struct tb t;

	CU_ASSERT_FATAL(tb_start(&t, "--block-timeout", "1", NULL) == 0);
	co.dir = t.dir;
	CU_ASSERT_FATAL(shmb_connect(&co, &c) == 0);
	CU_ASSERT_FATAL(shmb_session_open(c, "reader", &so, &s) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(s, "t") == 0);
	CU_ASSERT_FATAL(connect_open(&t, "pub", SHMB_EPHEMERAL, &pc, &ps) == 0);
	while (shmb_publish(ps, "t", buf, sizeof(buf), 100) == 0)
		;
	shmb_close(pc);
	while (shmb_recv(s, &m, 500) == 0)
		shmb_ack(s);
	/* longer than --block-timeout and a housekeeping tick */
	usleep(2500000);
	CU_ASSERT(tb_log_count(&t, "--block-timeout") == 0);
	CU_ASSERT(shmb_subscribe(s, "u") == 0);
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* A client fills the broker's tmpfs through its own TX file: new sessions
 * are refused with -ENOSPC, the broker and existing sessions go on. */
static void test_tmpfs_full(void)
{
	struct shmb_client *c, *hc, *nc;
	struct shmb_session *s, *hs, *ns, *ps;
	struct shmb_connect_opts co = { 0 };
	struct shmb_msg m;
	char mnt[64], cmd[200];
	struct tb t;
	size_t len;
	int fd;

	if (geteuid() != 0) {
		HARNESS_SKIP("needs root to mount a small tmpfs");
		return;
	}
	snprintf(mnt, sizeof(mnt), "/tmp/shmb-full.XXXXXX");
	CU_ASSERT_FATAL(mkdtemp(mnt) != NULL);
	if (mount("shmb-full", mnt, "tmpfs", 0, "size=12m,mode=0700") < 0) {
		snprintf(cmd, sizeof(cmd), "cannot mount a tmpfs here: %s", strerror(errno));
		HARNESS_SKIP(cmd);
		rmdir(mnt);
		return;
	}
	tb_use_dir(mnt);
	if (tb_start(&t, NULL) != 0) {
		CU_FAIL("broker did not start on the small tmpfs");
		CU_ASSERT(umount2(mnt, MNT_DETACH) == 0);
		rmdir(mnt);
		return;
	}
	co.dir = mnt;
	CU_ASSERT_FATAL(shmb_connect(&co, &c) == 0);
	CU_ASSERT_FATAL(shmb_session_open(c, "ok", NULL, &s) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(s, "t") == 0);
	CU_ASSERT_FATAL(shmb_session_open(c, "ok-pub", NULL, &ps) == 0);
	CU_ASSERT_FATAL(shmb_connect(&co, &hc) == 0);
	CU_ASSERT_FATAL(shmb_session_open(hc, "hog", NULL, &hs) == 0);
	client_session_tx_base(hs, &len, &fd);
	{
		static char junk[1 << 16];
		off_t off = (off_t)len;

		memset(junk, 1, sizeof(junk));
		/* under Landlock its descriptor may not ftruncate; writes past
		 * the end grow the file all the same */
		errno = 0;
		CU_ASSERT(ftruncate(fd, 64 << 20) == 0 || (landlock_truncate() && errno == EACCES));
		while (pwrite(fd, junk, sizeof(junk), off) > 0)
			off += (off_t)sizeof(junk);
		CU_ASSERT(errno == ENOSPC);
	}
	CU_ASSERT_FATAL(shmb_connect(&co, &nc) == 0);
	/* full: no new session, unless the sweep has cut the hog back already */
	{
		int r = shmb_session_open(nc, "new", NULL, &ns);

		CU_ASSERT(r == -ENOSPC || (r == 0 && tb_log_count(&t, "grew") == 1));
	}
	CU_ASSERT(tb_alive(&t));
	/* the sweep quarantines the hog and gives the tmpfs its space back */
	WAIT_FOR(tb_log_count(&t, "grew") == 1, 5000);
	CU_ASSERT(shmb_session_open(nc, "new-after", NULL, &ns) == 0);
	/* what exists keeps working: its pages were reserved when created */
	for (int i = 0; i < 3000; i++)
		if (shmb_publish(ps, "t", "x", 1, 1000) < 0 || shmb_recv(s, &m, 1000) < 0 ||
		    shmb_ack(s) < 0) {
			CU_FAIL("an existing session stopped working");
			break;
		}
	CU_ASSERT(tb_alive(&t));
	shmb_close(nc);
	shmb_close(hc);
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	CU_ASSERT(umount2(mnt, MNT_DETACH) == 0);
	tb_cleanup(&t); /* the (now empty) mount point and the log */
}

/* Thousands of topics: each name maps to one id for every client. */
static void test_many_topics(void)
{
	struct shmb_client *c, *pc;
	struct shmb_session *s, *ps;
	struct tb t;
	char name[32];
	int bad = 0, got = 0;

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "many", 0, &c, &s) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "pub", 0, &pc, &ps) == 0);
	for (int i = 0; i < 3000; i++) {
		snprintf(name, sizeof(name), "topic.%d", i);
		if (shmb_subscribe(s, name) < 0)
			bad++;
	}
	CU_ASSERT(bad == 0);
	/* another client interns the same names (in another order) */
	for (int i = 2999; i >= 0; i -= 7) {
		snprintf(name, sizeof(name), "topic.%d", i);
		CU_ASSERT_FATAL(shmb_publish(ps, name, name, strlen(name), 1000) == 0);
	}
	for (int i = 2999; i >= 0; i -= 7) {
		struct shmb_msg m;

		if (shmb_recv(s, &m, 5000) < 0)
			break;
		snprintf(name, sizeof(name), "topic.%d", i);
		if (strcmp(m.topic, name) || m.len != strlen(name) || memcmp(m.data, name, m.len))
			bad++;
		got++;
		shmb_ack(s);
	}
	CU_ASSERT(got == 429);
	CU_ASSERT(bad == 0);
	shmb_close(pc);
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

static void test_second_broker_refused(void)
{
	struct tb t;
	char cmd[600];

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	snprintf(cmd, sizeof(cmd), "/proc/self/exe");
	{
		pid_t p = fork_or_die();

		if (p == 0) {
			char self[512], path[600];
			ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);
			int fd = open(t.log, O_WRONLY | O_APPEND);

			self[k > 0 ? k : 0] = 0;
			*strrchr(self, '/') = 0;
			snprintf(path, sizeof(path), "%s/../shmbd", self);
			dup2(fd, 2);
			execl(path, path, "--dir", t.dir, (char *)NULL);
			_exit(127);
		}
		CU_ASSERT(tb_wait_child(p, 5000) == 1);
	}
	CU_ASSERT(tb_log_count(&t, "already serves") == 1);
	CU_ASSERT(tb_alive(&t));
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/*
 * A publisher that destroys (or, ephemeral, closes) its session right
 * after publishing, without shmb_flush(): everything shmb_publish()
 * accepted is still delivered.  (The broker once dropped what it had not
 * routed yet.)
 */
static void test_destroy_delivers_published(void)
{
	struct shmb_client *sc, *pc;
	struct shmb_session *ss, *ps;
	struct tb t;

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "dd-sub", 0, &sc, &ss) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(ss, "dd") == 0);
	for (int round = 0; round < 40; round++) {
		unsigned flags = round % 2 ? SHMB_EPHEMERAL : 0;
		uint64_t got = 0;
		struct shmb_msg m;

		CU_ASSERT_FATAL(connect_open(&t, "dd-pub", flags, &pc, &ps) == 0);
		for (uint64_t k = 0; k < 100; k++)
			CU_ASSERT(shmb_publish(ps, "dd", &k, sizeof(k), 1000) == 0);
		{
			int e = flags ? shmb_session_close(ps) : shmb_session_destroy(ps);

			CU_ASSERT(e == 0);
		}
		shmb_close(pc);
		while (got < 100 && shmb_recv(ss, &m, 5000) == 0) {
			uint64_t v;

			memcpy(&v, m.data, sizeof(v));
			CU_ASSERT(v == got);
			got++;
		}
		CU_ASSERT(shmb_ack(ss) == 0);
		CU_ASSERT(got == 100);
		if (got != 100) {
			printf("\n  round %d (%s): %llu of 100 delivered\n", round,
			       flags ? "ephemeral close" : "destroy", (unsigned long long)got);
			break;
		}
	}
	shmb_close(sc);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}


/*
 * late-review: an ephemeral session that subscribes to the topic it
 * publishes on, with its own RX ring full, is closed by its owner.  Its TX
 * can never drain (it is blocked on itself and nobody will read its RX
 * again), so session_detach() leaves it in place until --session-ttl:
 * a subscriber nobody can ever read, holding every other publisher of the
 * topic back.  Before 33074ac the close destroyed it at once.
 */
static void test_ephemeral_self_close(void)
{
	struct shmb_client *ec, *pc;
	struct shmb_session *es, *ps;
	char buf[1024] = { 0 };
	int ok = 0, r = 0;
	struct tb t;

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "self-e", SHMB_EPHEMERAL, &ec, &es) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(es, "self") == 0);
	/* 64 KiB RX and TX: fill its own RX, then leave records in its TX */
	for (int k = 0; k < 100; k++)
		(void)shmb_publish(es, "self", buf, sizeof(buf), 200);
	CU_ASSERT(shmb_session_close(es) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "self-p", 0, &pc, &ps) == 0);
	for (int k = 0; k < 200; k++) {
		r = shmb_publish(ps, "self", buf, sizeof(buf), 2000);
		if (r < 0)
			break;
		ok++;
	}
	printf("\n  another publisher after the ephemeral close: %d of 200 accepted (last %d),"
	       " log lines \"delivering what it published\": %d\n", ok, r,
	       tb_log_count(&t, "delivering what it published"));
	CU_ASSERT(ok == 200);
	shmb_close(pc);
	shmb_close(ec);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* Receive n messages numbered from `from` on, in order; how many came. */
static uint64_t recv_numbered(struct shmb_session *s, uint64_t from, uint64_t n)
{
	uint64_t got = 0;
	struct shmb_msg m;

	while (got < n && shmb_recv(s, &m, 5000) == 0) {
		uint64_t v;

		memcpy(&v, m.data, sizeof(v));
		if (m.len < sizeof(v) || v != from + got)
			break;
		got++;
		shmb_ack(s);
	}
	return got;
}

/* SHMB_PUB_MORE: nothing of a batch is committed until a plain publish,
 * shmb_flush() or a full ring commits it; then all of it arrives, in
 * order; a batch dies with its process. */
static void test_batched_publish(void)
{
	struct shmb_session_opts po = { .tx_ring_size = 16384, .policy = SHMB_POLICY_DEFAULT };
	struct shmb_client *sc, *pc, *c2;
	struct shmb_session *ss, *ps, *s2;
	struct shmb_session_info before, after;
	struct shmb_connect_opts co = { 0 };
	uint8_t buf[100] = { 0 };
	struct shmb_msg m;
	uint64_t v = 0;
	struct tb t;
	int sync[2];
	pid_t p;

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "batch-sink", 0, &sc, &ss) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(ss, "t") == 0);
	co.dir = t.dir;
	CU_ASSERT_FATAL(shmb_connect(&co, &pc) == 0);
	CU_ASSERT_FATAL(shmb_session_open(pc, "batch-pub", &po, &ps) == 0);
	CU_ASSERT(shmb_publish_flags(ps, "t", buf, 8, 1000, 0x80) == -EINVAL);
	/* written, not committed: the committed sequence does not move */
	CU_ASSERT_FATAL(shmb_session_info(ps, &before) == 0);
	for (v = 0; v < 100; v++) {
		memcpy(buf, &v, 8);
		CU_ASSERT(shmb_publish_flags(ps, "t", buf, 8, 1000, SHMB_PUB_MORE) == 0);
	}
	CU_ASSERT_FATAL(shmb_session_info(ps, &after) == 0);
	CU_ASSERT(after.tx_next_seq == before.tx_next_seq);
	CU_ASSERT(shmb_recv(ss, &m, 0) == -EAGAIN);
	/* shmb_flush() commits it, all of it arrives */
	CU_ASSERT(shmb_flush(ps, 5000) == 0);
	CU_ASSERT(recv_numbered(ss, 0, 100) == 100);
	/* a plain publish commits the batch before it, itself last */
	for (; v < 110; v++) {
		memcpy(buf, &v, 8);
		CU_ASSERT(shmb_publish_flags(ps, "t", buf, 8, 1000, SHMB_PUB_MORE) == 0);
	}
	memcpy(buf, &v, 8);
	v++;
	CU_ASSERT(shmb_publish(ps, "t", buf, 8, 1000) == 0);
	CU_ASSERT(recv_numbered(ss, 100, 11) == 11);
	/* a batch of 2.5 TX rings' worth (it fits the subscriber's 64 KiB
	 * RX ring) commits itself each time the TX ring fills */
	for (uint64_t i = 0; i < 300; i++, v++) {
		memcpy(buf, &v, 8);
		if (shmb_publish_flags(ps, "t", buf, sizeof(buf), 5000, SHMB_PUB_MORE) != 0) {
			CU_FAIL("a publish into a batch that filled the ring failed");
			break;
		}
	}
	CU_ASSERT(shmb_flush(ps, 5000) == 0);
	CU_ASSERT(recv_numbered(ss, 111, 300) == 300);
	/* a process killed with a batch open: the committed part only */
	CU_ASSERT_FATAL(pipe(sync) == 0);
	if ((p = fork_or_die()) == 0) {
		if (connect_open(&t, "batch-dies", 0, &c2, &s2) < 0)
			_exit(1);
		for (uint64_t i = 0; i < 50; i++) {
			memcpy(buf, &i, 8);
			if (shmb_publish_flags(s2, "t", buf, 8, 1000, i < 20 ? 0 : SHMB_PUB_MORE) < 0)
				_exit(2);
		}
		(void)!write(sync[1], "x", 1);
		pause();
		_exit(0);
	}
	close(sync[1]);
	CU_ASSERT(read(sync[0], buf, 1) == 1);
	kill(p, SIGKILL);
	tb_wait_child(p, 10000);
	close(sync[0]);
	CU_ASSERT(recv_numbered(ss, 0, 20) == 20);
	/* the 30 written after them were never committed: gone with it */
	WAIT_FOR(tb_log_count(&t, "batch-dies detached") == 1, 5000);
	CU_ASSERT(shmb_recv(ss, &m, 0) == -EAGAIN);
	shmb_close(pc);
	shmb_close(sc);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

static const struct harness_test broker_tests[] = {
	{ "three_by_three", test_three_by_three },
	{ "subscriber_killed", test_subscriber_killed },
	{ "publisher_killed", test_publisher_killed },
	{ "takeover_and_stale", test_takeover_and_stale },
	{ "resume_after_ack", test_resume_after_ack },
	{ "other_uid", test_other_uid },
	{ "second_broker_refused", test_second_broker_refused },
	{ "example_program", test_example_program },
	{ "destroy_delivers_published", test_destroy_delivers_published },
	{ "pollable_fd", test_pollable_fd },
	{ "block_timeout", test_block_timeout },
	{ "drop_oldest", test_drop_oldest },
	{ "fallback_and_idle", test_fallback_and_idle },
	{ "ephemeral_publisher_dies", test_ephemeral_publisher_dies },
	{ "caught_up_not_detached", test_caught_up_not_detached },
	{ "many_topics", test_many_topics },
	{ "batched_publish", test_batched_publish },
	{ NULL, NULL },
};

static const struct harness_test hostile_tests[] = {
	{ "malformed_control_messages", test_malformed_control_messages },
	{ "scribbling_client", test_scribbling_client },
	{ "truncating_client", test_truncating_client },
	{ "truncating_client_no_landlock", test_truncating_client_no_landlock },
	{ "punching_client", test_punching_client },
	{ "tmpfs_full", test_tmpfs_full },
	{ "hello_timeout", test_hello_timeout },
	{ "wake_spam_backoff", test_wake_spam_backoff },
	{ "ephemeral_self_close", test_ephemeral_self_close },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "broker", broker_tests },
	{ "broker-hostile", hostile_tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	return harness_main("test-broker", suites, argc, argv);
}
