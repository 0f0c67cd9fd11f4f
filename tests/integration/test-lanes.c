/*
 * tests/integration/test-lanes.c - the direct data path through a real
 * shmbd started with --lanes (broker/ctl-lanes.c), by clients that speak
 * its messages themselves (libshmb does not yet): descriptors over the
 * control socket, a writer (libclient/lanew.c) in one process and a
 * reader (shm/lane-rw.c) in another.  Every message arrives once and in
 * order; a writer SIGKILLed mid-stream has its lane cut after its last
 * committed record (nothing committed is lost, the reader learns the
 * end); a broker SIGSTOPped stops nobody; a reader SIGKILLed while
 * holding its writer frees it; a live reader that stops reading is let
 * go after --block-timeout (detached, reading on without holding) while
 * another reads everything; libshmb clients beside them are not
 * disturbed; a writer that punches its lane loses it and its session;
 * without
 * --lanes, or for another's session, no lane.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "broker-helper.h"
#include "lane-client.h"
#include "shmb.h"
#include "stream.h"
#include "harness.h"
#include "libclient/lanew.h"
#include "shm/atomics.h"
#include "shm/clock.h"
#include "shm/futex.h"
#include "shm/lane-rw.h"
#include "shm/proto.h"
#include "shm/segment.h"


/* ---- the writer, in a child ------------------------------------------------------ */

struct wshared {
	uint32_t ready;       /* the writer has its lane and its holder */
	uint64_t committed;   /* messages published (committed) so far */
};

/* Open session `name`, take the lane of the topic, publish n messages
 * (order i carries i) in batches of up to 16, then close the session. */
static void writer_named_main(const struct tb *t, struct wshared *sh, uint64_t n, const char *name)
{
	struct rc c;
	struct lanew w;
	uint64_t i = 1;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	lanew_init(&w, 1);
	if (rc_open(&c, t->dir, name, SHM_POLICY_BLOCK) < 0 || rc_lane_topic(&c, &w) != 0)
		_exit(2);
	rc_holders(&c, &w, 1);
	/* holders that come later (a reader's new owner) before each sleep */
	c.w = &w;
	w.drain = rc_drain;
	w.ctx = &c;
	store_release(&sh->ready, 1);
	for (; i <= n; i++) {
		bool more = i % 16 != 0 && i != n;

		if (lanew_publish(&w, c.topic, &i, sizeof(i), more, NULL) < 0)
			_exit(3);
		if (!more)
			store_release(&sh->committed, i);
	}
	{
		struct proto_close q = { .h = { PROTO_SESSION_CLOSE, sizeof(q), 0 },
					 .session_id = c.session };
		struct proto_reply rep;

		rc_call(&c, &q, sizeof(q), &rep, NULL, NULL);
	}
	_exit(0);
}

static void writer_main(const struct tb *t, struct wshared *sh, uint64_t n)
{
	writer_named_main(t, sh, n, "w");
}

/* A broker with --lanes, a subscriber "r" here, a writer of n messages
 * (writer_main) in a child; the reader side built from its LANE push,
 * which *p keeps.  Returns the writer's pid. */
static pid_t pair_start(struct tb *t, struct rc *r, struct rside *s, struct rpush *p,
			struct wshared *sh, uint64_t n)
{
	pid_t w;

	CU_ASSERT_FATAL(tb_start(t, "--lanes", NULL) == 0);
	CU_ASSERT_FATAL(rc_open(r, t->dir, "r", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT_FATAL(rc_subscribe(r) == 0);
	w = fork();
	if (w == 0)
		writer_main(t, sh, n);
	CU_ASSERT_FATAL(rc_push(r, PROTO_LANE, p));
	CU_ASSERT_FATAL(rside_open(s, p) == 0);
	return w;
}

/* A subscriber, then a writer in another process publishing 200 000
 * messages through the lane: all arrive, in order, then the lane's end
 * (the writer closed its session: the broker cut the lane). */
static void test_stream(void)
{
	struct tb t;
	struct rc r;
	struct rpush p;
	struct rside s;
	struct wshared *sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	const uint64_t n = 200000;
	uint64_t next = 1;
	bool end;
	pid_t w;
	int st;

	w = pair_start(&t, &r, &s, &p, sh, n);
	CU_ASSERT(p.m.lane.publisher != r.session && p.m.lane.start == 0);
	CU_ASSERT(p.m.lane.flags & PROTO_LANE_IN_PLACE);
	CU_ASSERT(read_lane(&s, &next, 0, &end) == 0);
	CU_ASSERT(next == n + 1);
	CU_ASSERT(end);
	CU_ASSERT(waitpid(w, &st, 0) == w && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	munmap(sh, 4096);
}

/* The writer SIGKILLed mid-stream: the broker cuts its lane after the
 * last record it committed.  The reader gets every message up to there
 * (at least all the writer knew committed), in order, then the end. */
static void test_writer_killed(void)
{
	struct tb t;
	struct rc r;
	struct rpush p;
	struct rside s;
	struct wshared *sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint64_t committed, next = 1;
	bool end;
	pid_t w;

	w = pair_start(&t, &r, &s, &p, sh, UINT64_MAX / 2);
	CU_ASSERT(read_lane(&s, &next, 50000, &end) == 0 && !end);
	kill(w, SIGKILL);
	CU_ASSERT(tb_wait_child(w, 5000) >= 0);
	committed = load_acquire(&sh->committed);
	/* the rest, to the cut: nothing committed is missing, nothing after */
	CU_ASSERT(read_lane(&s, &next, 0, &end) == 0);
	CU_ASSERT(end);
	CU_ASSERT(next - 1 >= committed);
	/* beyond what the writer noted: at most the batch of 16 it committed
	 * (whole, or in part when the lane filled under it) and was killed
	 * before noting */
	CU_ASSERT(next - 1 <= committed + 16);
	/* cut because its process died (its lost connection alone keeps it) */
	CU_ASSERT(tb_log_count(&t, "its detached owner (pid") == 1);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	munmap(sh, 4096);
}

/* The broker SIGSTOPped mid-stream: writer and reader go on without it
 * (100 000 messages while it is stopped), and after SIGCONT to the end. */
static void test_broker_stopped(void)
{
	struct tb t;
	struct rc r;
	struct rpush p;
	struct rside s;
	struct wshared *sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	const uint64_t n = 300000;
	uint64_t next = 1;
	bool end;
	pid_t w;

	w = pair_start(&t, &r, &s, &p, sh, n);
	CU_ASSERT(read_lane(&s, &next, 50000, &end) == 0 && !end);
	CU_ASSERT_FATAL(kill(t.pid, SIGSTOP) == 0);
	CU_ASSERT(read_lane(&s, &next, 150000, &end) == 0 && !end);
	CU_ASSERT(next == 150001);
	CU_ASSERT(kill(t.pid, SIGCONT) == 0);
	CU_ASSERT(read_lane(&s, &next, 0, &end) == 0);
	CU_ASSERT(next == n + 1 && end);
	CU_ASSERT(tb_wait_child(w, 10000) == 0);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	munmap(sh, 4096);
}

/* The reader, in a child: its session, then 1000 messages, then it
 * stops reading (holding its writer) until killed. */
static void reader_main(const struct tb *t, struct wshared *sh)
{
	struct rc r;
	struct rpush p;
	struct rside s;
	uint64_t next = 1;
	bool end;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (rc_open(&r, t->dir, "r", SHM_POLICY_BLOCK) < 0 || rc_subscribe(&r) != 0)
		_exit(2);
	store_release(&sh->ready, 1);
	if (!rc_push(&r, PROTO_LANE, &p) || rside_open(&s, &p) < 0)
		_exit(3);
	if (read_lane(&s, &next, 1000, &end) < 0)
		_exit(4);
	store_release(&sh->committed, next - 1);
	for (;;)
		pause();
}

/* n publishes that must not wait: 0 when all went, else the error. */
static int burst(struct lanew *w, uint32_t topic, unsigned n)
{
	struct timespec zero = { 0, 0 };
	uint64_t v = 7;

	for (unsigned k = 0; k < n; k++) {
		int r = lanew_publish(w, topic, &v, sizeof(v), false, &zero);

		if (r < 0)
			return r;
	}
	return 0;
}

/* A reader SIGKILLed while its writer waits on it, its session kept for
 * ten minutes: the broker spills it (copies the lane into its RX ring,
 * then lets the lane go) and the writer goes on, long before the session
 * expires. */
static void test_reader_killed(void)
{
	struct tb t;
	struct rc c;
	struct lanew w;
	struct wshared *sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct timespec zero = { 0, 0 };
	uint64_t i = 1;
	pid_t rd;
	int ret;

	CU_ASSERT_FATAL(tb_start(&t, "--lanes", "--tx-ring-size", "65536", "--rx-ring-size", "65536",
				 "--session-ttl", "600000", NULL) == 0);
	rd = fork();
	if (rd == 0)
		reader_main(&t, sh);
	WAIT_FOR_FATAL(load_acquire(&sh->ready), 5000);
	lanew_init(&w, 1);
	CU_ASSERT_FATAL(rc_open(&c, t.dir, "w", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT_FATAL(rc_lane_topic(&c, &w) == 0);
	rc_holders(&c, &w, 1);
	/* 1000 read, then held: a 64 KiB lane fills, and fills again once
	 * the reader acknowledged its 1000 */
	while ((ret = lanew_publish(&w, c.topic, &i, sizeof(i), false, &zero)) == 0 && i < 100000)
		i++;
	CU_ASSERT(ret == -EAGAIN);
	WAIT_FOR(load_acquire(&sh->committed) == 1000, 5000);
	while ((ret = lanew_publish(&w, c.topic, &i, sizeof(i), false, &zero)) == 0 && i < 100000)
		i++;
	CU_ASSERT(ret == -EAGAIN);
	kill(rd, SIGKILL);
	CU_ASSERT(tb_wait_child(rd, 5000) >= 0);
	/* its owner cannot come back: copied for, then let go; more than a
	 * lane's worth goes through without waiting, the session alive */
	WAIT_FOR(burst(&w, c.topic, 3000) == 0, 10000);
	CU_ASSERT(tb_log_count(&t, "session r: its detached owner died: what its lanes bring it is"
				   " copied") == 1);
	CU_ASSERT(tb_log_count(&t, "destroyed") == 0);
	lanew_free(&w);
	close(c.fd);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	munmap(sh, 4096);
}

/* The spool: what the broker copied into the session's RX ring (rx and
 * tx its segments) while it had no owner, up to where the ring was
 * written at the open: each record the next message (source sequence
 * and payload).  -1 at the first that is not. */
static int read_spool(const struct segment *rx, const struct segment *tx, uint64_t *next)
{
	struct shm_rx_ctrl *rxc = segment_rx_ctrl(rx);
	struct shm_tx_ctrl *txc = segment_tx_ctrl(tx);
	uint64_t until = load_acquire(&rxc->rx_write);
	struct shm_seg_hdr h;
	struct ring_cons c;
	struct ring_msg m;
	struct ring r;

	if (segment_rx_validate(rx, &h) < 0 || ring_init(&r, segment_ring_data(rx), h.rx_ring_size) < 0 ||
	    ring_cons_init(&c, &r, &rxc->rx_write, &txc->rx_acked, load_acquire(&txc->rx_acked),
			   RING_SEQ_ANY, 1, UINT32_MAX) < 0)
		return -1;
	while (c.pos < until) {
		struct shm_msg_rx x;
		uint64_t v;

		if (ring_peek(&c, &m) < 0 || m.len != sizeof(x) + 8)
			return -1;
		memcpy(&x, m.payload, sizeof(x));
		memcpy(&v, (const uint8_t *)m.payload + sizeof(x), 8);
		if (x.src_seq + 1 != *next || v != *next)
			return -1;
		(*next)++;
		ring_consume(&c, &m);
	}
	ring_release(&c);
	return 0;
}

/* A reader SIGKILLed mid-stream and started again on its session: the
 * broker copies what the lanes bring it into its RX ring meanwhile
 * (lanes-spill.c; 16 MiB, room for the whole stream, so that nothing is
 * let go: test-lib-lanes spill_full_gap has that), and its new owner
 * generation takes the holds over where that copying stopped: it reads
 * the RX ring, then the lane from there, every message once, in order,
 * to the end. */
static void test_reader_restart(void)
{
	struct tb t;
	struct rc r;
	struct rpush p;
	struct rside s;
	struct wshared *rs = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct wshared *ws = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	const uint64_t n = 200000;
	struct segment rx = SEGMENT_INIT, tx = SEGMENT_INIT;
	uint64_t next = 1001, spooled;
	int seg[2] = { -1, -1 };
	bool end;
	pid_t rd, w;

	CU_ASSERT_FATAL(tb_start(&t, "--lanes", "--tx-ring-size", "65536", "--rx-ring-size", "16777216",
				 NULL) == 0);
	rd = fork();
	if (rd == 0)
		reader_main(&t, rs);
	WAIT_FOR_FATAL(load_acquire(&rs->ready), 5000);
	w = fork();
	if (w == 0)
		writer_main(&t, ws, n);
	WAIT_FOR_FATAL(load_acquire(&rs->committed) == 1000, 10000);
	kill(rd, SIGKILL);
	CU_ASSERT(tb_wait_child(rd, 5000) >= 0);
	/* the same session, a new owner (once the broker saw the old go) */
	WAIT_FOR_FATAL(rc_open_ex(&r, t.dir, "r", SHM_POLICY_BLOCK, 0, seg) == 0 ||
			       (close(r.fd), false), 5000);
	CU_ASSERT(r.generation >= 2);
	CU_ASSERT_FATAL(segment_map(seg[0], false, &rx) == 0 && segment_map(seg[1], true, &tx) == 0);
	CU_ASSERT(read_spool(&rx, &tx, &next) == 0);
	spooled = next - 1001;
	CU_ASSERT_FATAL(rc_push(&r, PROTO_LANE, &p));
	CU_ASSERT_FATAL(rside_open(&s, &p) == 0);
	CU_ASSERT(read_lane(&s, &next, 0, &end) == 0);
	printf("\n  the new owner read %llu from its RX ring, then %llu from the lane\n",
	       (unsigned long long)spooled, (unsigned long long)(next - 1001 - spooled));
	CU_ASSERT(next == n + 1);
	CU_ASSERT(end);
	CU_ASSERT(tb_wait_child(w, 10000) == 0);
	segment_unmap(&rx);
	segment_unmap(&tx);
	close(r.fd);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	munmap(rs, 4096);
	munmap(ws, 4096);
}

/* Read what s has until the lane ends, as a reader whose hold was let
 * go: into a buffer (it copies now), every record's payload its order,
 * each order the next expected plus what the reader counted lost before
 * it; 0 at the end, -1 on a wrong record or nothing for 10 s. */
static int read_unheld(struct rside *s, uint64_t *next, uint64_t *got, uint64_t *missed)
{
	uint64_t idle = clock_mono_ns(), v;
	struct lane_rec m;

	for (;;) {
		int r = lane_read(&s->r, &v, sizeof(v), &m);

		if (r == LANE_END)
			return 0;
		if (r < 0)
			return -1;
		if (r == LANE_NONE) {
			if (clock_mono_ns() - idle > 10000000000ull)
				return -1;
			sched_yield();
			continue;
		}
		idle = clock_mono_ns();
		if (m.order != *next + m.missed || m.len != 8 || v != m.order)
			return -1;
		(*got)++;
		*missed += m.missed;
		*next = m.order + 1;
		lane_ack(&s->r, m.end);
	}
}

struct keeper {
	uint32_t ready;
	int ok;           /* 1: read every message in order, then the end */
	uint64_t next;
};

/* A reader that keeps reading, in a child: session "ra", to the end. */
static void keeper_main(const struct tb *t, struct keeper *k)
{
	struct rc r;
	struct rpush p;
	struct rside s;
	bool end;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/* ephemeral: gone when done (it would hold the next lane) */
	if (rc_open_ex(&r, t->dir, "ra", SHM_POLICY_BLOCK, PROTO_OPEN_EPHEMERAL, NULL) < 0 ||
	    rc_subscribe(&r) != 0)
		_exit(2);
	store_release(&k->ready, 1);
	if (!rc_push(&r, PROTO_LANE, &p) || rside_open(&s, &p) < 0)
		_exit(3);
	k->next = 1;
	k->ok = read_lane(&s, &k->next, 0, &end) == 0 && end;
	_exit(0);
}

/* Two readers of one lane; one stops reading after 1000 messages.  Its
 * writer, short of room, waits for it --block-timeout (1 s) only: then
 * its hold is let go and its session detached (the relay's log line), the
 * writer goes on (its session lives, detached: no expiry is waited for),
 * and the reader that keeps reading gets every message in order.  The
 * stopped one then reads on without holding while the writer laps it:
 * it copies, and every record it gets is whole and in order, what it
 * lost counted, to the lane's end.  Detached so, it holds a new writer's
 * lane back no longer than the timeout either. */
static void test_reader_block_timeout(void)
{
	struct tb t;
	struct rc b;
	struct rpush pb;
	struct rside sb;
	const int prot = PROT_READ | PROT_WRITE, fl = MAP_SHARED | MAP_ANONYMOUS;
	struct wshared *sh = mmap(NULL, 4096, prot, fl, -1, 0);
	struct wshared *sh2 = mmap(NULL, 4096, prot, fl, -1, 0);
	struct keeper *k = mmap(NULL, 4096, prot, fl, -1, 0);
	const uint64_t n = 2000000;
	uint64_t nb = 1, got = 0, missed = 0, t0, held;
	bool end;
	pid_t w, ka;

	CU_ASSERT_FATAL(tb_start(&t, "--lanes", "--tx-ring-size", "65536",
				 "--rx-ring-size", "65536", "--block-timeout", "1",
				 "--session-ttl", "60", NULL) == 0);
	ka = fork();
	if (ka == 0)
		keeper_main(&t, k);
	WAIT_FOR_FATAL(load_acquire(&k->ready), 5000);
	CU_ASSERT_FATAL(rc_open(&b, t.dir, "rb", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT_FATAL(rc_subscribe(&b) == 0);
	w = fork();
	if (w == 0)
		writer_main(&t, sh, n);
	CU_ASSERT_FATAL(rc_push(&b, PROTO_LANE, &pb));
	CU_ASSERT_FATAL(rside_open(&sb, &pb) == 0);
	CU_ASSERT(read_lane(&sb, &nb, 1000, &end) == 0 && !end && nb == 1001);
	t0 = clock_mono_ns();
	/* b reads no more: the writer waits (a 64 KiB lane) ... */
	CU_ASSERT(load_acquire(&sh->committed) < 5000);
	WAIT_FOR_FATAL(tb_log_count(&t, "session rb detached: it held a lane's writer back for"
					" longer than --block-timeout") == 1, 5000);
	held = clock_mono_ns() - t0;
	CU_ASSERT(held >= 1000000000ull);
	/* ... then goes on without it, its session alive (no expiry) */
	WAIT_FOR(load_acquire(&sh->committed) > 100000, 5000);
	/* b reads on while the writer laps it */
	CU_ASSERT(read_unheld(&sb, &nb, &got, &missed) == 0);
	CU_ASSERT(sb.r.drop_oldest);
	CU_ASSERT(nb == n + 1);
	CU_ASSERT(missed > 0 && got > 0);
	CU_ASSERT(1000 + got + missed == n);
	CU_ASSERT(tb_wait_child(w, 20000) == 0);
	CU_ASSERT(tb_wait_child(ka, 20000) == 0);
	CU_ASSERT(k->ok == 1 && k->next == n + 1);
	WAIT_FOR(tb_log_count(&t, "session ra (id 1) destroyed") == 1, 5000);
	CU_ASSERT(tb_log_count(&t, "session ra detached: it held") == 0);
	/* a new writer's lane, held by b (detached, it still holds new
	 * lanes of its topics): b, detached for the block timeout, holds it
	 * back no longer than that either */
	w = fork();
	if (w == 0)
		writer_named_main(&t, sh2, 100000, "w2");
	CU_ASSERT(tb_wait_child(w, 15000) == 0);
	CU_ASSERT(tb_log_count(&t, "session rb no longer holds it") == 2);
	CU_ASSERT(tb_log_count(&t, "session rb detached") == 1);
	CU_ASSERT(tb_log_count(&t, "expired") == 0);
	printf("\n  the stopped reader: let go after %.2f s; then %llu read, %llu counted lost\n",
	       (double)held / 1e9, (unsigned long long)got, (unsigned long long)missed);
	close(b.fd);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	munmap(sh, 4096);
	munmap(sh2, 4096);
	munmap(k, 4096);
}

struct sleeper {
	uint32_t ready, armed;
	int woke;         /* futex_wait's result: woken (0 or -EAGAIN), not -ETIMEDOUT */
	uint64_t got;     /* the order read after it */
};

/* A reader that sleeps on the words the broker gave it with its first
 * lane (PROTO_LANE_SELF): arm, look, FUTEX_WAIT on rx_wake. */
static void sleeper_main(const struct tb *t, struct sleeper *sl)
{
	struct rc r;
	struct rpush p;
	struct rside s;
	struct lane_rec m;
	uint32_t v;
	struct timespec d;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (rc_open(&r, t->dir, "r", SHM_POLICY_BLOCK) < 0 || rc_subscribe(&r) != 0)
		_exit(2);
	store_release(&sl->ready, 1);
	if (!rc_push(&r, PROTO_LANE, &p) || rside_open(&s, &p) < 0 || !s.rx_wake || !s.arm)
		_exit(3);
	d = deadline_in_ns(10000000000ull);
	/* as a reader does: a wake with nothing to read (the broker's bump
	 * after its LANE push may come after this load) sleeps again */
	for (uint64_t arm = 1;; arm++) {
		int r;

		v = load_acquire(s.rx_wake);
		lane_arm(s.arm, s.arm_slot, arm);
		fence_full();
		r = lane_read(&s.r, NULL, 0, &m);
		if (r == LANE_REC) {
			lane_disarm(s.arm, s.arm_slot);
			break;
		}
		if (r != LANE_NONE)
			_exit(4);
		store_release(&sl->armed, 1);
		sl->woke = futex_wait(s.rx_wake, v, &d);
		lane_disarm(s.arm, s.arm_slot);
		if (sl->woke == -ETIMEDOUT)
			_exit(0);
	}
	sl->got = m.order;
	_exit(0);
}

/* The reader's own sleep words come with its first lane, and the writer
 * wakes it through them: it sleeps on rx_wake, one publish wakes it (not
 * its 10 s deadline) and it reads the message. */
static void test_reader_sleeps(void)
{
	struct tb t;
	struct rc c;
	struct lanew w;
	struct sleeper *sl = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint64_t one = 1;
	pid_t rd;

	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	rd = fork();
	if (rd == 0)
		sleeper_main(&t, sl);
	WAIT_FOR_FATAL(load_acquire(&sl->ready), 5000);
	lanew_init(&w, 1);
	CU_ASSERT_FATAL(rc_open(&c, t.dir, "w", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT_FATAL(rc_lane_topic(&c, &w) == 0);
	rc_holders(&c, &w, 1);
	CU_ASSERT(w.narms == 1 && w.nwakes == 1);
	WAIT_FOR_FATAL(load_acquire(&sl->armed), 5000);
	CU_ASSERT(lanew_publish(&w, c.topic, &one, sizeof(one), false, NULL) == 0);
	CU_ASSERT(tb_wait_child(rd, 5000) == 0);
	CU_ASSERT(sl->woke != -ETIMEDOUT);
	CU_ASSERT(sl->got == 1);
	lanew_free(&w);
	close(c.fd);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	munmap(sl, 4096);
}

/* PROTO_SESSION_CLOSE of c's session (its owner is done: its lanes end). */
static int close_session(struct rc *c)
{
	struct proto_close q = { .h = { PROTO_SESSION_CLOSE, sizeof(q), 0 },
				 .session_id = c->session };
	struct proto_reply rep;

	return rc_call(c, &q, sizeof(q), &rep, NULL, NULL) < 0 ? -1 : rep.err;
}

/* Publish orders from..to (each carries its order), one record each. */
static int publish_range(struct lanew *w, uint32_t topic, uint64_t from, uint64_t to)
{
	for (uint64_t i = from; i <= to; i++) {
		int r = lanew_publish(w, topic, &i, sizeof(i), false, NULL);

		if (r < 0)
			return r;
	}
	return 0;
}

/* A writer whose connection closes while it lives (as libshmb's does
 * before it reconnects): its lane stays open, it writes on while
 * detached and after its REATTACH (the same generation: the same lane,
 * its holder told again), and its reader gets every message in order
 * with no end between; the end comes when it closes its session. */
static void test_writer_reattaches(void)
{
	struct tb t;
	struct rc w, r;
	struct lanew lw;
	struct rpush p, h;
	struct rside s;
	struct lane_rec m;
	uint64_t next = 1;
	bool end;

	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	CU_ASSERT_FATAL(rc_open(&r, t.dir, "r", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT_FATAL(rc_subscribe(&r) == 0);
	lanew_init(&lw, 1);
	CU_ASSERT_FATAL(rc_open(&w, t.dir, "w", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT_FATAL(rc_lane_topic(&w, &lw) == 0);
	rc_holders(&w, &lw, 1);
	CU_ASSERT_FATAL(rc_push(&r, PROTO_LANE, &p));
	CU_ASSERT_FATAL(rside_open(&s, &p) == 0);
	CU_ASSERT_FATAL(publish_range(&lw, w.topic, 1, 1000) == 0);
	close(w.fd);
	w.fd = -1;
	WAIT_FOR_FATAL(tb_log_count(&t, "session w detached") == 1, 5000);
	/* detached, alive: the lane is still its own */
	CU_ASSERT_FATAL(publish_range(&lw, w.topic, 1001, 2000) == 0);
	CU_ASSERT(read_lane(&s, &next, 2000, &end) == 0 && !end && next == 2001);
	CU_ASSERT(lane_read(&s.r, NULL, 0, &m) == LANE_NONE);
	CU_ASSERT_FATAL(rc_reattach(&w, t.dir, "w") == 0);
	/* its holder again, all its descriptors (it ignores what it has) */
	CU_ASSERT_FATAL(rc_push(&w, PROTO_HOLDER, &h));
	CU_ASSERT(h.m.holder.page == p.m.lane.page && h.nfds == 3);
	lanew_holder(&lw, &h.m.holder, h.fds, h.nfds);
	/* the same lane: no new one, no descriptors */
	CU_ASSERT(rc_lane_topic(&w, &lw) == 0 && lw.nlanes == 1);
	CU_ASSERT_FATAL(publish_range(&lw, w.topic, 2001, 3000) == 0);
	CU_ASSERT(read_lane(&s, &next, 3000, &end) == 0 && !end && next == 3001);
	CU_ASSERT(close_session(&w) == 0);
	CU_ASSERT(read_lane(&s, &next, 0, &end) == 0 && end && next == 3001);
	CU_ASSERT(tb_log_count(&t, "lanes of generation") == 0);
	lanew_free(&lw);
	close(w.fd);
	close(r.fd);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* The writer, in a child: its lane, 100 messages, then its connection
 * closed (it lives on) until killed. */
static void detached_writer_main(const struct tb *t, struct wshared *sh)
{
	struct rc c;
	struct lanew w;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	lanew_init(&w, 1);
	if (rc_open(&c, t->dir, "w", SHM_POLICY_BLOCK) < 0 || rc_lane_topic(&c, &w) != 0)
		_exit(2);
	rc_holders(&c, &w, 1);
	if (publish_range(&w, c.topic, 1, 100) < 0)
		_exit(3);
	close(c.fd);
	store_release(&sh->ready, 1);
	for (;;)
		pause();
}

/* A writer that closed its connection and died later, after the exit
 * watch stopped looking at it ("closed normally"): its lane is cut all
 * the same (the broker watches a detached writer's process while it has
 * open lanes), its reader gets everything, then the end, and the
 * session's next owner starts its sequence after the last record. */
static void test_writer_dies_detached(void)
{
	struct tb t;
	struct rc r;
	struct rpush p;
	struct rside s;
	struct wshared *sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct lane_rec m;
	uint64_t next = 1;
	bool end;
	pid_t w;

	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	CU_ASSERT_FATAL(rc_open(&r, t.dir, "r", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT_FATAL(rc_subscribe(&r) == 0);
	w = fork();
	if (w == 0)
		detached_writer_main(&t, sh);
	CU_ASSERT_FATAL(rc_push(&r, PROTO_LANE, &p));
	CU_ASSERT_FATAL(rside_open(&s, &p) == 0);
	WAIT_FOR_FATAL(load_acquire(&sh->ready), 5000);
	WAIT_FOR_FATAL(tb_log_count(&t, "closed normally") == 1, 5000);
	CU_ASSERT(read_lane(&s, &next, 100, &end) == 0 && !end && next == 101);
	/* open while it lives: nothing more, and no end */
	CU_ASSERT(lane_read(&s.r, NULL, 0, &m) == LANE_NONE);
	kill(w, SIGKILL);
	CU_ASSERT(tb_wait_child(w, 5000) >= 0);
	CU_ASSERT(read_lane(&s, &next, 0, &end) == 0 && end && next == 101);
	CU_ASSERT(tb_log_count(&t, "its detached owner") == 1);
	{
		/* its successor numbers on after its last record: the order
		 * read when the lane was cut at the death is kept for it */
		struct shmb_connect_opts co = { .dir = t.dir };
		struct shmb_client *nc;
		struct shmb_session *ns;
		struct shmb_session_info info;

		CU_ASSERT_FATAL(shmb_connect(&co, &nc) == 0);
		CU_ASSERT_FATAL(shmb_session_open(nc, "w", NULL, &ns) == 0);
		CU_ASSERT(shmb_session_info(ns, &info) == 0);
		CU_ASSERT(info.generation == 2);
		CU_ASSERT(info.tx_start_seq == 100);
		shmb_close(nc);
	}
	close(r.fd);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	munmap(sh, 4096);
}

/* A reader whose connection closed while a new writer came and
 * published: it holds the new lane all the same (as its RX ring would
 * take the messages), and at its REATTACH it is told of the lane (with
 * its own sleep words) and reads everything, in order, to the end. */
static void test_reader_reattaches(void)
{
	struct tb t;
	struct rc w, r;
	struct lanew lw;
	struct rpush p;
	struct rside s;
	uint64_t next = 1;
	bool end;

	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	CU_ASSERT_FATAL(rc_open(&r, t.dir, "r", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT_FATAL(rc_subscribe(&r) == 0);
	close(r.fd);
	r.fd = -1;
	WAIT_FOR_FATAL(tb_log_count(&t, "session r detached") == 1, 5000);
	lanew_init(&lw, 1);
	CU_ASSERT_FATAL(rc_open(&w, t.dir, "w", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT_FATAL(rc_lane_topic(&w, &lw) == 0);
	rc_holders(&w, &lw, 1);
	CU_ASSERT(lw.npages == 1 && lw.nwakes == 1);
	CU_ASSERT_FATAL(publish_range(&lw, w.topic, 1, 1000) == 0);
	CU_ASSERT_FATAL(rc_reattach(&r, t.dir, "r") == 0);
	CU_ASSERT_FATAL(rc_push(&r, PROTO_LANE, &p));
	CU_ASSERT(p.m.lane.flags & PROTO_LANE_SELF);
	CU_ASSERT(p.m.lane.publisher == w.session && p.m.lane.start == 0);
	CU_ASSERT_FATAL(rside_open(&s, &p) == 0);
	CU_ASSERT_FATAL(publish_range(&lw, w.topic, 1001, 2000) == 0);
	CU_ASSERT(close_session(&w) == 0);
	CU_ASSERT(read_lane(&s, &next, 0, &end) == 0 && end && next == 2001);
	lanew_free(&lw);
	close(w.fd);
	close(r.fd);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* What a child asleep on a futex word saw. */
struct nap {
	uint32_t subscribed; /* its session subscribed (a lane writer may come) */
	uint32_t ready;   /* it read the word and is about to sleep */
	int woke;         /* futex_wait's result: woken (0 or -EAGAIN), not -ETIMEDOUT */
	uint64_t slept_ns;
	uint64_t rx_write; /* its RX ring's write position after it (relay_sleeper_main) */
};

/* Sleep on word (value v) for up to 10 s, saying so first. */
static void nap(struct nap *n, const uint32_t *word, uint32_t v)
{
	struct timespec d = deadline_in_ns(10000000000ull);
	uint64_t t0 = clock_mono_ns();

	store_release(&n->ready, 1);
	n->woke = futex_wait(word, v, &d);
	n->slept_ns = clock_mono_ns() - t0;
}

/* A lane reader (a lane gives it its rx_wake) that sleeps on rx_wake as
 * libshmb's does: counted in its tx file's rx_waiters first, then armed,
 * then a look at its lanes and its RX ring. */
static void relay_sleeper_main(const struct tb *t, struct nap *n)
{
	struct segment rx = SEGMENT_INIT, tx = SEGMENT_INIT;
	struct shm_tx_ctrl *txc;
	struct shm_rx_ctrl *rxc;
	struct rc r;
	struct rpush p;
	struct rside s;
	struct lane_rec m;
	int seg[2] = { -1, -1 };
	uint32_t v;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (rc_open_ex(&r, t->dir, "r", SHM_POLICY_BLOCK, 0, seg) < 0 || rc_subscribe(&r) != 0 ||
	    segment_map(seg[0], false, &rx) < 0 || segment_map(seg[1], true, &tx) < 0)
		_exit(2);
	store_release(&n->subscribed, 1);
	rxc = segment_rx_ctrl(&rx);
	txc = segment_tx_ctrl(&tx);
	/* a request answered after the LANE push: the broker's bump of
	 * rx_wake that follows its push is done before this sleep */
	if (!rc_push(&r, PROTO_LANE, &p) || rside_open(&s, &p) < 0 || !s.rx_wake ||
	    rc_subscribe(&r) != 0)
		_exit(3);
	v = load_acquire(s.rx_wake);
	fetch_add_relaxed(&txc->rx_waiters, 1);
	lane_arm(s.arm, s.arm_slot, 1);
	fence_full();
	if (lane_read(&s.r, NULL, 0, &m) != LANE_NONE || load_acquire(&rxc->rx_write) != 0)
		_exit(4);
	nap(n, s.rx_wake, v);
	lane_disarm(s.arm, s.arm_slot);
	fetch_sub_relaxed(&txc->rx_waiters, 1);
	n->rx_write = load_acquire(&rxc->rx_write);
	_exit(0);
}

/* A lane reader asleep on its rx_wake is woken by a message the relay
 * delivers into its RX ring (a libshmb publisher's, which does not
 * speak lanes), not by its 10 s deadline. */
static void test_relay_wakes_lane_reader(void)
{
	struct tb t;
	struct rc c;
	struct lanew w;
	struct shmb_client *pc;
	struct shmb_session *ps;
	struct nap *n = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint64_t one = 1;
	pid_t rd;

	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	rd = fork();
	if (rd == 0)
		relay_sleeper_main(&t, n);
	/* a lane writer, so that the reader has a lane and its rx_wake */
	WAIT_FOR_FATAL(load_acquire(&n->subscribed), 5000);
	lanew_init(&w, 1);
	CU_ASSERT_FATAL(rc_open(&c, t.dir, "w", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT_FATAL(rc_lane_topic(&c, &w) == 0);
	WAIT_FOR_FATAL(load_acquire(&n->ready), 5000);
	/* a relay publisher: libshmb told not to use lanes */
	setenv("SHMB_LANES", "0", 1);
	CU_ASSERT_FATAL(connect_open(&t, "lib-pub", 0, &pc, &ps) == 0);
	unsetenv("SHMB_LANES");
	CU_ASSERT(shmb_publish(ps, TOPIC_NAME, &one, sizeof(one), 1000) == 0);
	CU_ASSERT(tb_wait_child(rd, 15000) == 0);
	CU_ASSERT(n->woke != -ETIMEDOUT && n->slept_ns < 5000000000ull);
	CU_ASSERT(n->rx_write > 0);
	shmb_close(pc);
	lanew_free(&w);
	close(c.fd);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	munmap(n, 4096);
}

/* A lane reader asleep on its rx_wake (no RX counting: only the broker's
 * wakes reach it). */
static void lane_sleeper_main(const struct tb *t, struct nap *n)
{
	struct rc r;
	struct rpush p;
	struct rside s;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (rc_open(&r, t->dir, "r", SHM_POLICY_BLOCK) < 0 || rc_subscribe(&r) != 0)
		_exit(2);
	store_release(&n->subscribed, 1);
	/* as above: the bump after the LANE push is behind it */
	if (!rc_push(&r, PROTO_LANE, &p) || rside_open(&s, &p) < 0 || !s.rx_wake ||
	    rc_subscribe(&r) != 0)
		_exit(3);
	nap(n, s.rx_wake, load_acquire(s.rx_wake));
	_exit(0);
}

/* At an owner switch of a reader session the old generation's rx_wake
 * is woken: its owner asleep learns at once that it was fenced. */
static void test_switch_wakes_reader(void)
{
	struct tb t;
	struct rc c, r2;
	struct lanew w;
	struct nap *n = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t rd;

	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	rd = fork();
	if (rd == 0)
		lane_sleeper_main(&t, n);
	WAIT_FOR_FATAL(load_acquire(&n->subscribed), 5000);
	lanew_init(&w, 1);
	CU_ASSERT_FATAL(rc_open(&c, t.dir, "w", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT_FATAL(rc_lane_topic(&c, &w) == 0);
	WAIT_FOR_FATAL(load_acquire(&n->ready), 5000);
	CU_ASSERT_FATAL(rc_open_ex(&r2, t.dir, "r", SHM_POLICY_BLOCK, PROTO_OPEN_TAKEOVER, NULL) == 0);
	CU_ASSERT(r2.generation == 2);
	CU_ASSERT(tb_wait_child(rd, 15000) == 0);
	CU_ASSERT(n->woke != -ETIMEDOUT && n->slept_ns < 5000000000ull);
	lanew_free(&w);
	close(c.fd);
	close(r2.fd);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	munmap(n, 4096);
}

/* A writer asleep on its lane's tx_wake (as in a wait for space). */
static void tx_sleeper_main(const struct tb *t, struct nap *n)
{
	struct rc c;
	struct lanew w;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	lanew_init(&w, 1);
	if (rc_open(&c, t->dir, "w", SHM_POLICY_BLOCK) < 0 || rc_lane_topic(&c, &w) != 0 ||
	    w.nlanes != 1)
		_exit(2);
	nap(n, w.lanes[0]->tx_wake, load_acquire(w.lanes[0]->tx_wake));
	_exit(0);
}

/* A publisher session taken over: its old generation's lanes are cut and
 * the writer asleep on their tx_wake is woken (it learns it was fenced). */
static void test_cut_wakes_writer(void)
{
	struct tb t;
	struct rc w2;
	struct nap *n = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t wr;

	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	wr = fork();
	if (wr == 0)
		tx_sleeper_main(&t, n);
	WAIT_FOR_FATAL(load_acquire(&n->ready), 5000);
	CU_ASSERT_FATAL(rc_open_ex(&w2, t.dir, "w", SHM_POLICY_BLOCK, PROTO_OPEN_TAKEOVER, NULL) == 0);
	CU_ASSERT(w2.generation == 2);
	CU_ASSERT(tb_wait_child(wr, 15000) == 0);
	CU_ASSERT(n->woke != -ETIMEDOUT && n->slept_ns < 5000000000ull);
	close(w2.fd);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	munmap(n, 4096);
}

/* A reader that says a good lane is bad is not believed: the broker walks
 * the lane itself, answers -EINVAL and punishes nobody; one that names a
 * lane it does not read gets -ENOENT. */
static void test_lying_reader(void)
{
	struct proto_lane_bad q = { .h = { PROTO_LANE_BAD, sizeof(q), 0 } };
	struct proto_reply rep;
	struct tb t;
	struct rc r, w;
	struct lanew lw;
	struct rpush p;
	uint64_t one = 1;

	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	CU_ASSERT_FATAL(rc_open(&r, t.dir, "r", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT_FATAL(rc_subscribe(&r) == 0);
	lanew_init(&lw, 1);
	CU_ASSERT_FATAL(rc_open(&w, t.dir, "w", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT_FATAL(rc_lane_topic(&w, &lw) == 0);
	CU_ASSERT(lanew_publish(&lw, w.topic, &one, sizeof(one), false, NULL) == 0);
	CU_ASSERT_FATAL(rc_push(&r, PROTO_LANE, &p));
	for (unsigned i = 0; i < p.nfds; i++)
		close(p.fds[i]);
	q.session_id = r.session;
	q.lane = p.m.lane.lane;
	CU_ASSERT(rc_call(&r, &q, sizeof(q), &rep, NULL, NULL) == 0 && rep.err == -EINVAL);
	q.lane = p.m.lane.lane + 1000;
	CU_ASSERT(rc_call(&r, &q, sizeof(q), &rep, NULL, NULL) == 0 && rep.err == -ENOENT);
	/* another's session */
	q.session_id = w.session;
	q.lane = p.m.lane.lane;
	CU_ASSERT(rc_call(&r, &q, sizeof(q), &rep, NULL, NULL) == 0 && rep.err == -ENOENT);
	CU_ASSERT(tb_log_count(&t, "finds it good") == 1);
	CU_ASSERT(tb_log_count(&t, "quarantined") == 0);
	/* the writer goes on */
	CU_ASSERT(lanew_publish(&lw, w.topic, &one, sizeof(one), false, NULL) == 0);
	lanew_free(&lw);
	close(w.fd);
	close(r.fd);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* With --no-lanes the broker says so, and a session that is not the
 * caller's gets no lane. */
static void test_refused(void)
{
	struct tb t;
	struct rc c, other;
	struct lanew w;

	lanew_init(&w, 1);
	CU_ASSERT_FATAL(tb_start(&t, "--no-lanes", NULL) == 0);
	CU_ASSERT_FATAL(rc_open(&c, t.dir, "w", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT(rc_lane_topic(&c, &w) == -EOPNOTSUPP);
	close(c.fd);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	CU_ASSERT_FATAL(rc_open(&c, t.dir, "w", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT_FATAL(rc_open(&other, t.dir, "x", SHM_POLICY_BLOCK) == 0);
	other.session = c.session; /* someone else's session */
	CU_ASSERT(rc_lane_topic(&other, &w) == -ESTALE);
	c.topic = 999999;
	CU_ASSERT(rc_lane_topic(&c, &w) == -ENOENT);
	close(c.fd);
	close(other.fd);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	lanew_free(&w);
}

/* libshmb clients on a --lanes broker, beside a lane writer on their
 * topic: no lane message reaches them (they did not ask), their relay
 * stream is whole, and the lane reader gets the lane writer's. */
static void test_mixed(void)
{
	struct tb t;
	struct shmb_client *pc, *sc;
	struct shmb_session *ps, *ss;
	struct shmb_msg m;
	struct rc w, r;
	struct lanew lw;
	struct rpush p;
	struct rside s;
	uint64_t next = 1, got = 0;
	bool end;

	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	/* libshmb clients that do not ask for lanes (SHMB_LANES=0): the relay */
	setenv("SHMB_LANES", "0", 1);
	CU_ASSERT_FATAL(connect_open(&t, "lib-sub", 0, &sc, &ss) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(ss, TOPIC_NAME) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "lib-pub", 0, &pc, &ps) == 0);
	unsetenv("SHMB_LANES");
	CU_ASSERT_FATAL(rc_open(&r, t.dir, "r", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT_FATAL(rc_subscribe(&r) == 0);
	lanew_init(&lw, 1);
	CU_ASSERT_FATAL(rc_open(&w, t.dir, "w", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT_FATAL(rc_lane_topic(&w, &lw) == 0);
	rc_holders(&w, &lw, 1); /* one holder: the lane reader, not lib-sub */
	CU_ASSERT(lw.npages == 1);
	CU_ASSERT_FATAL(rc_push(&r, PROTO_LANE, &p));
	CU_ASSERT_FATAL(rside_open(&s, &p) == 0);
	for (uint64_t i = 1; i <= 1000; i++) {
		CU_ASSERT_FATAL(lanew_publish(&lw, w.topic, &i, sizeof(i), false, NULL) == 0);
		CU_ASSERT_FATAL(shmb_publish(ps, TOPIC_NAME, &i, sizeof(i), 1000) == 0);
	}
	CU_ASSERT(read_lane(&s, &next, 1000, &end) == 0 && next == 1001);
	while (got < 1000 && shmb_recv(ss, &m, 2000) == 0) {
		uint64_t v;

		memcpy(&v, m.data, 8);
		CU_ASSERT(v == got + 1);
		got++;
		shmb_ack(ss);
	}
	CU_ASSERT(got == 1000);
	/* the library's connection is healthy: a request still works */
	CU_ASSERT(shmb_subscribe(ss, "another") == 0);
	shmb_close(pc);
	shmb_close(sc);
	lanew_free(&lw);
	close(w.fd);
	close(r.fd);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* A writer punches a hole in its lane: within the broker's sweep the lane
 * is BAD (its reader drops it with -EBADMSG, no crash anywhere) and the
 * writer's session is quarantined, said in the log. */
static void test_punching_writer(void)
{
	struct tb t;
	struct rc w, r;
	struct lanew lw;
	struct rpush p;
	struct rside s;
	struct lane_rec m;
	uint64_t next = 1;
	bool end;

	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	CU_ASSERT_FATAL(rc_open(&r, t.dir, "r", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT_FATAL(rc_subscribe(&r) == 0);
	lanew_init(&lw, 1);
	CU_ASSERT_FATAL(rc_open(&w, t.dir, "w", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT_FATAL(rc_lane_topic(&w, &lw) == 0);
	CU_ASSERT_FATAL(w.data_fd >= 0);
	rc_holders(&w, &lw, 1);
	CU_ASSERT_FATAL(rc_push(&r, PROTO_LANE, &p));
	CU_ASSERT_FATAL(rside_open(&s, &p) == 0);
	for (uint64_t i = 1; i <= 100; i++)
		CU_ASSERT_FATAL(lanew_publish(&lw, w.topic, &i, sizeof(i), false, NULL) == 0);
	CU_ASSERT(read_lane(&s, &next, 100, &end) == 0 && next == 101);
	CU_ASSERT_FATAL(fallocate(w.data_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 8192,
				  8192) == 0);
	WAIT_FOR(lane_read(&s.r, NULL, 0, &m) == -EBADMSG, 5000);
	WAIT_FOR(tb_log_count(&t, "was changed by its writer") == 1, 5000);
	WAIT_FOR(tb_log_count(&t, "quarantined: its lane was changed") == 1, 5000);
	lanew_free(&lw);
	close(w.data_fd);
	close(w.fd);
	close(r.fd);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* Lanes in dir/lanes (-1 when it cannot be read). */
static int lanes_count(const struct tb *t)
{
	char path[300];
	struct dirent *e;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "%s/lanes", t->dir);
	d = opendir(path);
	if (!d)
		return -1;
	/* lanes, not the broker's numbers file beside them */
	while ((e = readdir(d)))
		n += e->d_name[0] != '.' && strcmp(e->d_name, "numbers") != 0;
	closedir(d);
	return n;
}

/* A writer that punches its lane while detached (its connection closed,
 * it lives): the session is quarantined, and since it cannot come back
 * its lane is cut and removed then, not when its process dies or its
 * session expires. */
static void test_punching_detached_writer(void)
{
	struct tb t;
	struct rc w, r;
	struct lanew lw;
	struct rpush p;
	struct rside s;
	struct lane_rec m;

	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	CU_ASSERT_FATAL(rc_open(&r, t.dir, "r", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT_FATAL(rc_subscribe(&r) == 0);
	lanew_init(&lw, 1);
	CU_ASSERT_FATAL(rc_open(&w, t.dir, "w", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT_FATAL(rc_lane_topic(&w, &lw) == 0);
	CU_ASSERT_FATAL(w.data_fd >= 0);
	rc_holders(&w, &lw, 1);
	CU_ASSERT_FATAL(rc_push(&r, PROTO_LANE, &p));
	CU_ASSERT_FATAL(rside_open(&s, &p) == 0);
	CU_ASSERT_FATAL(publish_range(&lw, w.topic, 1, 100) == 0);
	close(w.fd);
	WAIT_FOR_FATAL(tb_log_count(&t, "session w detached") == 1, 5000);
	CU_ASSERT(lanes_count(&t) == 1);
	CU_ASSERT_FATAL(fallocate(w.data_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 8192,
				  8192) == 0);
	WAIT_FOR(tb_log_count(&t, "quarantined: its lane was changed") == 1, 5000);
	WAIT_FOR(lane_read(&s.r, NULL, 0, &m) == -EBADMSG, 5000);
	WAIT_FOR(lanes_count(&t) == 0, 5000);
	lanew_free(&lw);
	close(w.data_fd);
	close(r.fd);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

static const struct harness_test lanes_tests[] = {
	{ "punching_writer", test_punching_writer },
	{ "mixed", test_mixed },
	{ "reader_killed", test_reader_killed },
	{ "reader_restart", test_reader_restart },
	{ "reader_block_timeout", test_reader_block_timeout },
	{ "reader_sleeps", test_reader_sleeps },
	{ "refused", test_refused },
	{ "lying_reader", test_lying_reader },
	{ "stream", test_stream },
	{ "writer_killed", test_writer_killed },
	{ "broker_stopped", test_broker_stopped },
	{ "writer_reattaches", test_writer_reattaches },
	{ "writer_dies_detached", test_writer_dies_detached },
	{ "reader_reattaches", test_reader_reattaches },
	{ "relay_wakes_lane_reader", test_relay_wakes_lane_reader },
	{ "switch_wakes_reader", test_switch_wakes_reader },
	{ "cut_wakes_writer", test_cut_wakes_writer },
	{ "punching_detached_writer", test_punching_detached_writer },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "lanes", lanes_tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	return harness_main("test-lanes", suites, argc, argv);
}
