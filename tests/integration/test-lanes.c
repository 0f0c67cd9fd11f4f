/*
 * tests/integration/test-lanes.c - the direct data path through a real
 * shmbd started with --lanes (broker/ctl-lanes.c), by clients that speak
 * its messages themselves (libshmb does not yet): descriptors over the
 * control socket, a writer (libclient/lanew.c) in one process and a
 * reader (shm/lane-rw.c) in another.  Every message arrives once and in
 * order; a writer SIGKILLed mid-stream has its lane cut after its last
 * committed record (nothing committed is lost, the reader learns the
 * end); a broker SIGSTOPped stops nobody; a reader SIGKILLed while
 * holding its writer frees it; without
 * --lanes, or for another's session, no lane.
 */
#include <errno.h>
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
#include "harness.h"
#include "libclient/lanew.h"
#include "shm/atomics.h"
#include "shm/clock.h"
#include "shm/lane-rw.h"
#include "shm/proto.h"

#define TOPIC_NAME "lane.t"
#define MAXP 64

/* ---- a raw client: requests, replies, pushes with their descriptors ----------- */

struct rpush {
	union {
		struct proto_hdr h;
		struct proto_lane lane;
		struct proto_holder holder;
		uint8_t raw[256];
	} m;
	int fds[4];
	unsigned nfds;
};

struct rc {
	int fd;
	uint64_t req;
	uint64_t session;
	uint32_t generation, topic;
	struct rpush q[MAXP];
	unsigned nq;
};

/* One message with its descriptors; 0, or -1 (closed, timeout, garbage). */
static int rc_recv(struct rc *c, void *buf, size_t cap, int *fds, unsigned *nfds)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(8 * sizeof(int))];
	} cm;
	struct iovec iov = { buf, cap };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
			     .msg_controllen = sizeof(cm.b) };
	ssize_t n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC);

	*nfds = 0;
	if (n < (ssize_t)sizeof(struct proto_hdr))
		return -1;
	for (struct cmsghdr *h = CMSG_FIRSTHDR(&mh); h; h = CMSG_NXTHDR(&mh, h))
		if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS) {
			*nfds = (unsigned)((h->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			memcpy(fds, CMSG_DATA(h), *nfds * sizeof(int));
		}
	return 0;
}

/* Send a request and wait for its reply, queueing pushes that come first. */
static int rc_call(struct rc *c, void *msg, size_t len, struct proto_reply *rep, int *fds,
		   unsigned *nfds)
{
	struct proto_hdr *h = msg;

	h->req_id = ++c->req;
	if (send(c->fd, msg, len, MSG_NOSIGNAL) != (ssize_t)len)
		return -1;
	for (;;) {
		struct rpush p;

		if (rc_recv(c, &p.m, sizeof(p.m), p.fds, &p.nfds) < 0)
			return -1;
		if (p.m.h.type == PROTO_REPLY && p.m.h.req_id == c->req) {
			memcpy(rep, &p.m, sizeof(*rep));
			if (fds)
				memcpy(fds, p.fds, p.nfds * sizeof(int));
			if (nfds)
				*nfds = p.nfds;
			return 0;
		}
		if (c->nq < MAXP)
			c->q[c->nq++] = p;
	}
}

/* The next push of type (waiting up to 5 s); false if none came. */
static bool rc_push(struct rc *c, uint32_t type, struct rpush *out)
{
	for (;;) {
		for (unsigned i = 0; i < c->nq; i++)
			if (c->q[i].m.h.type == type) {
				*out = c->q[i];
				c->q[i] = c->q[--c->nq];
				return true;
			}
		if (c->nq == MAXP || rc_recv(c, &c->q[c->nq].m, sizeof(c->q[0].m), c->q[c->nq].fds,
					     &c->q[c->nq].nfds) < 0)
			return false;
		c->nq++;
	}
}

/* Connect, HELLO, open session `name` (policy), intern the topic. */
static int rc_open(struct rc *c, const struct tb *t, const char *name, uint32_t policy)
{
	struct proto_hello hello = { .h = { PROTO_HELLO, sizeof(hello), 0 }, .version = PROTO_VERSION };
	struct proto_open o = { .h = { PROTO_SESSION_OPEN, sizeof(o), 0 }, .policy = policy };
	struct proto_topic tp = { .h = { PROTO_TOPIC, sizeof(tp), 0 } };
	struct proto_reply rep;
	int fds[4];
	unsigned n;

	memset(c, 0, sizeof(*c));
	c->fd = tb_raw_connect(t);
	if (c->fd < 0 || rc_call(c, &hello, sizeof(hello), &rep, NULL, NULL) < 0 || rep.err)
		return -1;
	o.name_len = (uint32_t)strlen(name);
	memcpy(o.name, name, o.name_len);
	if (rc_call(c, &o, sizeof(o), &rep, fds, &n) < 0 || rep.err)
		return -1;
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
	c->session = rep.u.open.session_id;
	c->generation = rep.u.open.generation;
	tp.name_len = (uint32_t)strlen(TOPIC_NAME);
	memcpy(tp.name, TOPIC_NAME, tp.name_len);
	if (rc_call(c, &tp, sizeof(tp), &rep, NULL, NULL) < 0 || rep.err)
		return -1;
	c->topic = rep.u.topic.topic_id;
	return 0;
}

static int rc_subscribe(struct rc *c)
{
	struct proto_sub q = { .h = { PROTO_SUBSCRIBE, sizeof(q), 0 }, .session_id = c->session,
			       .topic_id = c->topic };
	struct proto_reply rep;

	return rc_call(c, &q, sizeof(q), &rep, NULL, NULL) < 0 ? -1 : rep.err;
}

/* PROTO_LANE_TOPIC; the lane (and, the first time, its descriptors) into w. */
static int rc_lane_topic(struct rc *c, struct lanew *w)
{
	struct proto_lane_topic q = { .h = { PROTO_LANE_TOPIC, sizeof(q), 0 },
				      .session_id = c->session, .topic_id = c->topic };
	struct proto_reply rep;
	int fds[4];
	unsigned n = 0;

	if (rc_call(c, &q, sizeof(q), &rep, fds, &n) < 0)
		return -1;
	if (rep.err)
		return rep.err;
	if (n == 4 && lanew_lane_add(w, rep.u.lane.lane, rep.u.lane.ring_size, fds) < 0)
		return -1;
	return lanew_topic(w, c->topic, rep.u.lane.lane);
}

/* Every HOLDER push queued or coming within 5 s (at least `want`). */
static void rc_holders(struct rc *c, struct lanew *w, unsigned want)
{
	struct rpush p;

	for (unsigned got = 0; got < want && rc_push(c, PROTO_HOLDER, &p); got++)
		lanew_holder(w, &p.m.holder, p.fds, p.nfds);
}

/* A reader from its PROTO_LANE push. */
struct rside {
	uint8_t *data, *meta;
	struct shm_cursor_page *page;
	uint32_t *tx_wake;
	struct lane_reader r;
};

static int rside_open(struct rside *s, const struct rpush *p)
{
	const struct proto_lane *m = &p->m.lane;

	if (p->nfds != 4 || !(m->flags & PROTO_LANE_PAGE))
		return -1;
	s->data = mmap(NULL, SHM_LANE_RING_OFFSET + m->ring_size, PROT_READ, MAP_SHARED, p->fds[0], 0);
	s->meta = mmap(NULL, SHM_LANE_META_SIZE, PROT_READ, MAP_SHARED, p->fds[1], 0);
	s->page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, p->fds[2], 0);
	s->tx_wake = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, p->fds[3], 0);
	for (int i = 0; i < 4; i++)
		close(p->fds[i]);
	if (s->data == MAP_FAILED || s->meta == MAP_FAILED || s->page == MAP_FAILED ||
	    s->tx_wake == MAP_FAILED)
		return -1;
	if (lane_reader_init(&s->r, s->data, m->ring_size, s->meta, &s->page->slot[m->slot], false,
			     false, m->start, m->order) < 0)
		return -1;
	s->r.tx_wake = s->tx_wake;
	return 0;
}

/* ---- the writer, in a child ------------------------------------------------------ */

struct wshared {
	uint32_t ready;       /* the writer has its lane and its holder */
	uint64_t committed;   /* messages published (committed) so far */
};

/* Open session "w", take the lane of the topic, publish n messages
 * (order i carries i) in batches of up to 16, then close the session. */
static void writer_main(const struct tb *t, struct wshared *sh, uint64_t n)
{
	struct rc c;
	struct lanew w;
	uint64_t i = 1;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	lanew_init(&w, 1);
	if (rc_open(&c, t, "w", SHM_POLICY_BLOCK) < 0 || rc_lane_topic(&c, &w) != 0)
		_exit(2);
	rc_holders(&c, &w, 1);
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

/* Read from s until the lane ends, *next passes stop (when not 0), or
 * nothing comes for 10 s, checking order and payload and acknowledging
 * each record; *next is the order expected next.  0, or -1 on a wrong
 * record or a bad lane; *end: the lane ended. */
static int read_lane(struct rside *s, uint64_t *next, uint64_t stop, bool *end)
{
	uint64_t idle = clock_mono_ns();
	struct lane_rec m;

	*end = false;
	while (!stop || *next <= stop) {
		int r = lane_read(&s->r, NULL, 0, &m);

		if (r == LANE_END) {
			*end = true;
			return 0;
		}
		if (r < 0)
			return -1;
		if (r == LANE_NONE) {
			if (clock_mono_ns() - idle > 10000000000ull)
				return 0;
			sched_yield();
			continue;
		}
		idle = clock_mono_ns();
		if (m.order != *next || m.len != 8 || *(const uint64_t *)m.payload != *next)
			return -1;
		(*next)++;
		/* every record: a writer waiting for space is woken at slices */
		lane_ack(&s->r, m.end);
	}
	return 0;
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

	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	CU_ASSERT_FATAL(rc_open(&r, &t, "r", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT_FATAL(rc_subscribe(&r) == 0);
	w = fork();
	if (w == 0)
		writer_main(&t, sh, n);
	CU_ASSERT_FATAL(rc_push(&r, PROTO_LANE, &p));
	CU_ASSERT(p.m.lane.publisher != r.session && p.m.lane.start == 0);
	CU_ASSERT(p.m.lane.flags & PROTO_LANE_IN_PLACE);
	CU_ASSERT_FATAL(rside_open(&s, &p) == 0);
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

	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	CU_ASSERT_FATAL(rc_open(&r, &t, "r", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT_FATAL(rc_subscribe(&r) == 0);
	w = fork();
	if (w == 0)
		writer_main(&t, sh, UINT64_MAX / 2);
	CU_ASSERT_FATAL(rc_push(&r, PROTO_LANE, &p));
	CU_ASSERT_FATAL(rside_open(&s, &p) == 0);
	CU_ASSERT(read_lane(&s, &next, 50000, &end) == 0 && !end);
	kill(w, SIGKILL);
	CU_ASSERT(tb_wait_child(w, 5000) >= 0);
	committed = load_acquire(&sh->committed);
	/* the rest, to the cut: nothing committed is missing, nothing after */
	CU_ASSERT(read_lane(&s, &next, 0, &end) == 0);
	CU_ASSERT(end);
	CU_ASSERT(next - 1 >= committed);
	CU_ASSERT(next - 1 < committed + 16); /* at most the open batch beyond */
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

	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	CU_ASSERT_FATAL(rc_open(&r, &t, "r", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT_FATAL(rc_subscribe(&r) == 0);
	w = fork();
	if (w == 0)
		writer_main(&t, sh, n);
	CU_ASSERT_FATAL(rc_push(&r, PROTO_LANE, &p));
	CU_ASSERT_FATAL(rside_open(&s, &p) == 0);
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
	if (rc_open(&r, t, "r", SHM_POLICY_BLOCK) < 0 || rc_subscribe(&r) != 0)
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

/* A reader SIGKILLed while its writer waits on it: the broker lets its
 * hold go and the writer goes on. */
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

	CU_ASSERT_FATAL(tb_start(&t, "--lanes", "--tx-ring-size", "65536", NULL) == 0);
	rd = fork();
	if (rd == 0)
		reader_main(&t, sh);
	WAIT_FOR_FATAL(load_acquire(&sh->ready), 5000);
	lanew_init(&w, 1);
	CU_ASSERT_FATAL(rc_open(&c, &t, "w", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT_FATAL(rc_lane_topic(&c, &w) == 0);
	rc_holders(&c, &w, 1);
	/* 1000 read, then held: a 64 KiB lane fills */
	while ((ret = lanew_publish(&w, c.topic, &i, sizeof(i), false, &zero)) == 0 && i < 100000)
		i++;
	CU_ASSERT(ret == -EAGAIN);
	WAIT_FOR(load_acquire(&sh->committed) == 1000, 5000);
	kill(rd, SIGKILL);
	CU_ASSERT(tb_wait_child(rd, 5000) >= 0);
	WAIT_FOR(lanew_publish(&w, c.topic, &i, sizeof(i), false, &zero) == 0, 5000);
	for (int k = 0; k < 10000; k++)
		CU_ASSERT_FATAL(lanew_publish(&w, c.topic, &i, sizeof(i), false, &zero) == 0);
	lanew_free(&w);
	close(c.fd);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	munmap(sh, 4096);
}

/* Without --lanes the broker says so, and a session that is not the
 * caller's gets no lane. */
static void test_refused(void)
{
	struct tb t;
	struct rc c, other;
	struct lanew w;

	lanew_init(&w, 1);
	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	CU_ASSERT_FATAL(rc_open(&c, &t, "w", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT(rc_lane_topic(&c, &w) == -EOPNOTSUPP);
	close(c.fd);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
	CU_ASSERT_FATAL(tb_start(&t, "--lanes", NULL) == 0);
	CU_ASSERT_FATAL(rc_open(&c, &t, "w", SHM_POLICY_BLOCK) == 0);
	CU_ASSERT_FATAL(rc_open(&other, &t, "x", SHM_POLICY_BLOCK) == 0);
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

static const struct harness_test lanes_tests[] = {
	{ "reader_killed", test_reader_killed },
	{ "refused", test_refused },
	{ "stream", test_stream },
	{ "writer_killed", test_writer_killed },
	{ "broker_stopped", test_broker_stopped },
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
