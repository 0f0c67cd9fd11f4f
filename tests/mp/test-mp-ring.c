/*
 * tests/mp/test-mp-ring.c - a producer and a consumer process over one
 * shared segment, killed for real.
 *
 * consumer_killed: 10^7 checksummed records; the consumer is SIGKILLed at
 * random points at least 20 times and restarted from the released
 * position (rx_acked).  Counts what was sent and what arrived: no record
 * lost, none torn, order kept; redelivery only of what had not been
 * released (at most one batch per kill).
 *
 * producer_killed: the producer is SIGKILLed mid-stream 30 times while it
 * writes large records slowly; the consumer then drains the ring and must
 * never see a partial record.  It also counts how often the kill landed
 * between a record's reservation and its commit, to show the case was hit.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "shm/atomics.h"
#include "shm/crc32c.h"
#include "shm/futex.h"
#include "shm/ring.h"
#include "shm/segment.h"

#define BATCH 64

/* The test's shared page: positions and wake points on their own lines. */
struct mp_ctl {
	uint64_t prod_word;
	uint8_t pad0[56];
	uint64_t cons_word;
	uint8_t pad1[56];
	uint32_t data_word, data_waiters, space_word, space_waiters;
	uint8_t pad2[48];
	/* what the consumers saw, written before each release */
	uint64_t next_seq;    /* every seq below this was seen (in order) */
	uint64_t redelivered; /* records seen again after a restart */
	uint64_t errors;      /* torn, out of order, lost */
	uint64_t bytes;
};

struct mp {
	struct segment seg;
	struct mp_ctl *ctl;
	struct ring r;
};

static void mp_open(struct mp *m, uint64_t ring_size)
{
	m->seg = (struct segment)SEGMENT_INIT;
	CU_ASSERT_FATAL(segment_create(-1, "mp-ring", segment_file_size(ring_size), &m->seg) == 0);
	m->ctl = (struct mp_ctl *)m->seg.base;
	CU_ASSERT_FATAL(ring_init(&m->r, segment_ring_data(&m->seg), ring_size) == 0);
}

/* The payload of record seq: [seq][len][crc][bytes...], crc over the rest. */
static uint32_t payload_len(uint64_t seq, uint32_t min, uint32_t spread)
{
	return min + (uint32_t)((seq * 0x9e3779b97f4a7c15ull) >> 40) % spread;
}

static void payload_fill(uint8_t *p, uint64_t seq, uint32_t len, bool slow)
{
	uint32_t crc;

	memcpy(p, &seq, 8);
	memcpy(p + 8, &len, 4);
	if (slow) {
		volatile uint8_t *v = p;

		for (uint32_t i = 16; i < len; i++)
			v[i] = (uint8_t)(seq + i);
	} else {
		for (uint32_t i = 16; i < len; i++)
			p[i] = (uint8_t)(seq + i);
	}
	crc = crc32c(crc32c(0, p, 12), p + 16, len - 16);
	memcpy(p + 12, &crc, 4);
}

static bool payload_ok(const uint8_t *p, uint32_t len, uint64_t seq)
{
	uint64_t s;
	uint32_t l, crc;

	if (len < 16)
		return false;
	memcpy(&s, p, 8);
	memcpy(&l, p + 8, 4);
	memcpy(&crc, p + 12, 4);
	return s == seq && l == len && crc == crc32c(crc32c(0, p, 12), p + 16, len - 16);
}

struct moved {
	const uint64_t *word;
	uint64_t seen;
};

static bool word_moved(void *arg)
{
	struct moved *m = arg;

	return load_acquire(m->word) != m->seen;
}

static void producer(struct mp *m, uint64_t n, uint32_t min, uint32_t spread, bool slow)
{
	struct ring_prod p;
	uint64_t seq = 0;
	unsigned pending = 0;

	if (ring_prod_init(&p, &m->r, &m->ctl->cons_word, &m->ctl->prod_word, 0, 0, 1))
		_exit(10);
	while (seq < n) {
		uint32_t len = payload_len(seq, min, spread);
		void *dst;
		int r = ring_reserve(&p, len, SHM_REC_DATA, 0, &dst);

		if (r == -EAGAIN) {
			struct moved mv = { &m->ctl->cons_word, load_acquire(&m->ctl->cons_word) };
			struct timespec d = deadline_in_ns(30ull * 1000000000ull);

			if (pending) {
				if (ring_commit(&p))
					_exit(11);
				wake_signal(&m->ctl->data_word, &m->ctl->data_waiters);
				pending = 0;
			}
			/* a consumer may be dead for a while: wait for the next one */
			if (wake_wait(&m->ctl->space_word, &m->ctl->space_waiters, word_moved, &mv, 20000, &d))
				_exit(12);
			continue;
		}
		if (r)
			_exit(13);
		payload_fill(dst, seq, len, slow);
		seq++;
		if (++pending == (slow ? 1u : 32u) || seq == n) {
			if (ring_commit(&p))
				_exit(14);
			wake_signal(&m->ctl->data_word, &m->ctl->data_waiters);
			pending = 0;
		}
	}
	_exit(0);
}

/* One consumer's life: from the released position to the end, or its kill. */
static void consumer(struct mp *m, uint64_t n)
{
	struct mp_ctl *ctl = m->ctl;
	struct ring_cons c;
	struct ring_msg msg[BATCH];

	if (ring_cons_init(&c, &m->r, &ctl->prod_word, &ctl->cons_word, load_acquire(&ctl->cons_word),
			   RING_SEQ_ANY, 1, 1))
		_exit(20);
	for (;;) {
		uint64_t next = load_relaxed(&ctl->next_seq);
		int k = ring_peek_batch(&c, msg, BATCH);

		if (k == -EAGAIN) {
			struct moved mv = { &ctl->prod_word, c.pos };
			struct timespec d = deadline_in_ns(30ull * 1000000000ull);

			if (next == n)
				_exit(0);
			if (wake_wait(&ctl->data_word, &ctl->data_waiters, word_moved, &mv, 20000, &d))
				_exit(21);
			continue;
		}
		if (k < 0) {
			fetch_add_relaxed(&ctl->errors, 1);
			_exit(22);
		}
		for (int i = 0; i < k; i++) {
			uint64_t seq = msg[i].hdr.seq;

			if (!payload_ok(msg[i].payload, msg[i].len, seq)) {
				fetch_add_relaxed(&ctl->errors, 1);
				_exit(23);
			}
			if (seq < next) {
				/* seen before the last kill, never released */
				store_relaxed(&ctl->redelivered, ctl->redelivered + 1);
			} else if (seq == next) {
				next++;
			} else {
				fetch_add_relaxed(&ctl->errors, 1); /* a gap: lost records */
				_exit(24);
			}
			store_relaxed(&ctl->bytes, ctl->bytes + msg[i].len);
		}
		/* what we saw is recorded before we release it: a kill in between
		 * makes a redelivery, never a loss */
		store_release(&ctl->next_seq, next);
		ring_consume(&c, &msg[k - 1]);
		ring_release(&c);
		wake_signal(&ctl->space_word, &ctl->space_waiters);
	}
}

static pid_t spawn_consumer(struct mp *m, uint64_t n)
{
	pid_t pid = fork();

	if (pid == 0)
		consumer(m, n);
	return pid;
}

static int reap(pid_t pid, uint64_t timeout_ns)
{
	int st;

	if (TRY_WAIT_FOR(waitpid(pid, &st, WNOHANG) == pid, timeout_ns / 1000000))
		return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	return -1;
}

static void test_consumer_killed(void)
{
	uint64_t s = harness_seed("consumer kills");
	uint64_t n = (uint64_t)(10000000 * harness_scale());
	unsigned kills = 0, min_kills = 20;
	struct mp m;
	pid_t prod, cons;
	uint64_t t0 = clock_mono_ns();
	int rc;

	/* the kill loop may run 120 s, the last consumer as long again */
	harness_alarm(300);

	mp_open(&m, 1u << 20);
	prod = fork();
	if (prod == 0)
		producer(&m, n, 16, 112, false);
	CU_ASSERT_FATAL(prod > 0);
	cons = spawn_consumer(&m, n);
	while (kills < min_kills && clock_mono_ns() - t0 < 120ull * 1000000000ull) {
		uint64_t at = load_acquire(&m.ctl->next_seq);

		usleep(500 + harness_rand(&s) % 8000);
		if (load_acquire(&m.ctl->next_seq) == at && at != n) {
			/* no progress since the last restart yet: let it run */
			continue;
		}
		if (load_acquire(&m.ctl->next_seq) >= n)
			break;
		kill(cons, SIGKILL);
		rc = reap(cons, 5ull * 1000000000ull);
		CU_ASSERT(rc == 128 + SIGKILL);
		kills++;
		cons = spawn_consumer(&m, n);
	}
	rc = reap(cons, 120ull * 1000000000ull);
	CU_ASSERT(rc == 0);
	CU_ASSERT(reap(prod, 10ull * 1000000000ull) == 0);
	printf("\n  sent %llu, received %llu in order (%.1f MB), %u kills, %llu redelivered"
	       " (unreleased at a kill), %llu errors, %.2f s\n",
	       (unsigned long long)n, (unsigned long long)m.ctl->next_seq, m.ctl->bytes / 1e6, kills,
	       (unsigned long long)m.ctl->redelivered, (unsigned long long)m.ctl->errors,
	       (clock_mono_ns() - t0) / 1e9);
	CU_ASSERT(kills >= min_kills);
	CU_ASSERT(m.ctl->next_seq == n);
	CU_ASSERT(m.ctl->errors == 0);
	CU_ASSERT(m.ctl->redelivered <= (uint64_t)kills * BATCH);
	segment_unmap(&m.seg);
}

static void test_producer_killed(void)
{
	uint64_t s = harness_seed("producer kills");
	unsigned trials = 30, mid_write = 0;
	uint64_t total = 0;

	for (unsigned t = 0; t < trials; t++) {
		struct mp m;
		struct ring_cons c;
		struct ring_msg msg;
		uint64_t until, next = 0;
		pid_t prod;
		int r;

		mp_open(&m, 1u << 18);
		prod = fork();
		if (prod == 0)
			producer(&m, UINT64_MAX, 2000, 2000, true);
		CU_ASSERT_FATAL(prod > 0);
		/* the broker's view of a TX ring: commit words only, no bound */
		CU_ASSERT_FATAL(ring_cons_init(&c, &m.r, NULL, &m.ctl->cons_word, 0, 0, 1, 1) == 0);
		until = clock_mono_ns() + (1 + harness_rand(&s) % 20) * 1000000ull;
		for (bool killed = false;;) {
			if (!killed && clock_mono_ns() >= until) {
				kill(prod, SIGKILL);
				CU_ASSERT(reap(prod, 5ull * 1000000000ull) == 128 + SIGKILL);
				killed = true;
			}
			r = ring_peek(&c, &msg);
			if (r == -EAGAIN) {
				if (killed)
					break;
				continue;
			}
			CU_ASSERT_FATAL(r == 0);
			CU_ASSERT_FATAL(payload_ok(msg.payload, msg.len, next));
			next++;
			ring_consume(&c, &msg);
			ring_release(&c);
			wake_signal(&m.ctl->space_word, &m.ctl->space_waiters);
		}
		/* the record the producer died in: reserved (its header is there),
		 * never committed, so never seen */
		{
			const struct shm_rec_hdr *h =
				(const void *)(segment_ring_data(&m.seg) + (c.pos & m.r.mask));

			if (load_acquire(&h->commit) == 0 && h->seq == next && h->gen == 1)
				mid_write++;
		}
		total += next;
		segment_unmap(&m.seg);
	}
	printf("\n  %u producer kills, %u of them mid-record; %llu whole records read, none partial\n",
	       trials, mid_write, (unsigned long long)total);
	CU_ASSERT(mid_write >= 1);
}

static const struct harness_test mp_tests[] = {
	{ "consumer_killed", test_consumer_killed },
	{ "producer_killed", test_producer_killed },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "mp-ring", mp_tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	return harness_main("test-mp-ring", suites, argc, argv);
}
