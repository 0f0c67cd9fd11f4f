/*
 * tests/unit/test-lanew.c - libshmb's writer side of the lanes
 * (libclient/lanew.c) against the broker's register (broker/lanes.c) in
 * the same process: the lane and the holders' pages arrive as the
 * control layer will pass them, published messages reach a reader built
 * from its PROTO_LANE push in source order, batches stay invisible until
 * committed, a publisher held by a reader waits and times out, and goes
 * on when the reader acknowledges; a reader that cuts its cursor page
 * under the writer costs the writer nothing but that reader's progress;
 * a cut lane answers -ESTALE.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker/lanes.h"
#include "harness.h"
#include "lane-env.h"
#include "libclient/lanew.h"
#include "libclient/sigbus.h"
#include "shm/atomics.h"

#define PUB 21u
#define TOPIC 9u
#define TOPIC2 10u

struct env {
	struct lane_env l;
	struct lanew w;
};

static void env_open(struct env *e)
{
	lane_env_open(&e->l, 16 * 1024);
	lanew_init(&e->w, 1);
}

static void env_close(struct env *e)
{
	lanew_free(&e->w);
	lane_env_close(&e->l);
}

static int dup_fd(int fd)
{
	return fcntl(fd, F_DUPFD_CLOEXEC, 0);
}

/* What the control layer will do for a publisher's first use of topic:
 * the register's work, the reply's descriptors to lanew, the pushes to
 * the writer to lanew; the reader's PROTO_LANE push kept for the test. */
static struct lpush *topic_use(struct env *e, uint32_t topic, struct lreader **rd, unsigned n,
			       struct lpush *reader_push)
{
	struct blane *l;
	bool had;

	CU_ASSERT_FATAL(lanes_topic_use(&e->l.g, PUB, 1, 1000, 0, topic, rd, n, &l) == 0);
	had = false;
	for (unsigned i = 0; i < e->w.nlanes; i++)
		had |= e->w.lanes[i]->number == l->number;
	if (!had) {
		int fds[4] = { dup_fd(l->f.data_fd), dup_fd(l->f.meta_ro), dup_fd(l->f.hold_ro),
			       dup_fd(l->tx_wake_fd) };

		CU_ASSERT_FATAL(lanew_lane_add(&e->w, l->number, l->ring.size, fds) == 0);
	}
	CU_ASSERT_FATAL(lanew_topic(&e->w, topic, l->number) == 0);
	for (unsigned i = 0; i < e->l.g.npush; i++) {
		struct lpush *p = &e->l.g.push[i];
		int fds[LANES_MAX_PUSH_FDS];

		if (p->msg.h.type == PROTO_HOLDER) {
			for (unsigned k = 0; k < p->nfds; k++)
				fds[k] = dup_fd(p->fds[k]);
			CU_ASSERT(lanew_holder(&e->w, &p->msg.holder, fds, p->nfds) == 0);
		} else if (reader_push) {
			*reader_push = *p;
			for (unsigned k = 0; k < p->nfds; k++)
				reader_push->fds[k] = dup_fd(p->fds[k]);
		}
	}
	lanes_push_done(&e->l.g);
	return reader_push;
}

struct rside {
	uint8_t *data, *meta;
	struct shm_cursor_page *page;
	int page_fd;
	struct lane_reader r;
};

static void rside_open(struct rside *s, const struct lpush *p)
{
	const struct proto_lane *m = &p->msg.lane;

	s->data = mmap(NULL, SHM_LANE_RING_OFFSET + m->ring_size, PROT_READ, MAP_SHARED, p->fds[0], 0);
	s->meta = mmap(NULL, SHM_LANE_META_SIZE, PROT_READ, MAP_SHARED, p->fds[1], 0);
	s->page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, p->fds[2], 0);
	s->page_fd = p->fds[2];
	CU_ASSERT_FATAL(s->data != MAP_FAILED && s->meta != MAP_FAILED && s->page != MAP_FAILED);
	CU_ASSERT_FATAL(lane_reader_init(&s->r, s->data, m->ring_size, s->meta, &s->page->slot[m->slot],
					 false, false, m->start, m->order) == 0);
	s->r.tx_wake = NULL;
}

/* Two topics in one lane, batched and not: the reader gets every
 * message in source order, a batch only once committed. */
static void test_publish(void)
{
	struct env e;
	struct lreader *r;
	struct lpush rp;
	struct rside s;
	struct lane_rec m;
	uint64_t want = 1;
	struct timespec zero = { 0, 0 };

	env_open(&e);
	r = lanes_reader_new(&e.l.g, 1, 1, 1000, false);
	lanes_subscribe(&e.l.g, r, TOPIC);
	lanes_subscribe(&e.l.g, r, TOPIC2);
	CU_ASSERT(lanew_publish(&e.w, TOPIC, "x", 1, false, &zero) == -ENOENT);
	rside_open(&s, topic_use(&e, TOPIC, &r, 1, &rp));
	topic_use(&e, TOPIC2, &r, 1, NULL);
	CU_ASSERT(e.w.nlanes == 1);
	for (uint64_t i = 1; i <= 30; i++)
		CU_ASSERT_FATAL(lanew_publish(&e.w, i % 2 ? TOPIC : TOPIC2, &i, 8, i % 3 != 0, &zero) == 0);
	/* 30 is a multiple of 3: everything committed */
	while (lane_read(&s.r, NULL, 0, &m) == LANE_REC) {
		CU_ASSERT(m.order == want && *(const uint64_t *)m.payload == want);
		CU_ASSERT(m.topic_id == (want % 2 ? TOPIC : TOPIC2));
		want++;
	}
	CU_ASSERT(want == 31);
	/* a batch left open is invisible until flushed */
	CU_ASSERT(lanew_publish(&e.w, TOPIC, &want, 8, true, &zero) == 0);
	CU_ASSERT(lane_read(&s.r, NULL, 0, &m) == LANE_NONE);
	CU_ASSERT(lanew_flush(&e.w) == 0);
	CU_ASSERT(lane_read(&s.r, NULL, 0, &m) == LANE_REC && m.order == 31);
	env_close(&e);
}

/* A reader that does not acknowledge holds the publisher: with a deadline
 * it gets -EAGAIN; once the reader acknowledges it goes on.  A reader that
 * cuts its cursor page under the writer is covered by the guard: the
 * writer lives, held as before. */
static void test_held(void)
{
	struct env e;
	struct lreader *r;
	struct lpush rp;
	struct rside s;
	struct lane_rec m;
	struct timespec zero = { 0, 0 };
	char buf[512] = { 0 };
	uint64_t n = 0;
	int ret;

	env_open(&e);
	r = lanes_reader_new(&e.l.g, 2, 1, 1000, false);
	lanes_subscribe(&e.l.g, r, TOPIC);
	rside_open(&s, topic_use(&e, TOPIC, &r, 1, &rp));
	while ((ret = lanew_publish(&e.w, TOPIC, buf, sizeof(buf), false, &zero)) == 0)
		n++;
	CU_ASSERT(ret == -EAGAIN);
	CU_ASSERT(n > 16 && n < 40); /* about a 16 KiB lane's worth */
	{
		struct timespec d;

		clock_gettime(CLOCK_MONOTONIC, &d);
		d.tv_nsec += 20000000;
		if (d.tv_nsec >= 1000000000) {
			d.tv_sec++;
			d.tv_nsec -= 1000000000;
		}
		CU_ASSERT(lanew_publish(&e.w, TOPIC, buf, sizeof(buf), false, &d) == -EAGAIN);
	}
	while (lane_read(&s.r, NULL, 0, &m) == LANE_REC)
		lane_ack(&s.r, m.end);
	CU_ASSERT(lanew_publish(&e.w, TOPIC, buf, sizeof(buf), false, &zero) == 0);
	/* the reader cuts its page: its slot reads 0 from now on */
	CU_ASSERT(ftruncate(s.page_fd, 0) == 0);
	while ((ret = lanew_publish(&e.w, TOPIC, buf, sizeof(buf), false, &zero)) == 0)
		;
	CU_ASSERT(ret == -EAGAIN);
	CU_ASSERT(sigbus_faults() > 0);
	env_close(&e);
}

/* The publisher's generation ended (a new owner took over): the lane is
 * cut under the writer, which gets -ESTALE and keeps it. */
static void test_cut(void)
{
	struct env e;
	struct lreader *r;
	struct timespec zero = { 0, 0 };

	env_open(&e);
	r = lanes_reader_new(&e.l.g, 3, 1, 1000, false);
	lanes_subscribe(&e.l.g, r, TOPIC);
	topic_use(&e, TOPIC, &r, 1, NULL);
	CU_ASSERT(lanew_publish(&e.w, TOPIC, "a", 1, false, &zero) == 0);
	CU_ASSERT(lanes_publisher_end(&e.l.g, PUB, 1, NULL) == 0);
	CU_ASSERT(lanew_publish(&e.w, TOPIC, "b", 1, false, &zero) == -ESTALE);
	CU_ASSERT(lanew_publish(&e.w, TOPIC, "c", 1, false, &zero) == -ESTALE);
	env_close(&e);
}

static const struct harness_test lanew_tests[] = {
	{ "publish", test_publish },
	{ "held", test_held },
	{ "cut", test_cut },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "lanew", lanew_tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	return harness_main("test-lanew", suites, argc, argv);
}
