/*
 * tests/stream.c - the stream tests' shared pieces (stream.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "harness.h"
#include "shm/atomics.h"
#include "shm/crc32c.h"
#include "shm/futex.h"
#include "stream.h"

void payload_make(struct payload *p, uint32_t pub, uint64_t n)
{
	memset(p, 0, sizeof(*p));
	p->pub = pub;
	p->n = n;
	memset(p->fill, (int)(n & 0xff), sizeof(p->fill));
	p->crc = crc32c(0, &p->n, sizeof(*p) - offsetof(struct payload, n));
}

bool payload_ok(const struct shmb_msg *m, struct payload *out)
{
	if (m->len != sizeof(*out))
		return false;
	memcpy(out, m->data, sizeof(*out));
	return out->crc == crc32c(0, &out->n, sizeof(*out) - offsetof(struct payload, n));
}

struct stats *stats_new(void)
{
	struct stats *s = mmap(NULL, sizeof(struct stats), PROT_READ | PROT_WRITE,
			       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	CU_ASSERT_FATAL(s != MAP_FAILED);
	memset(s, 0, sizeof(*s));
	return s;
}

int connect_open(const struct tb *t, const char *name, unsigned flags,
			struct shmb_client **c, struct shmb_session **s)
{
	return connect_open_rx(t, name, flags, 1u << 16, c, s);
}

int connect_open_rx(const struct tb *t, const char *name, unsigned flags, uint32_t rx_ring_size,
		    struct shmb_client **c, struct shmb_session **s)
{
	struct shmb_connect_opts co = { .dir = t->dir };
	struct shmb_session_opts so = { .policy = SHMB_POLICY_DEFAULT, .flags = flags,
					.rx_ring_size = rx_ring_size, .tx_ring_size = 1u << 16 };
	int r = shmb_connect(&co, c);

	if (r < 0)
		return r;
	/* -EAGAIN: a previous owner's records are still being delivered
	 * (docs/design/owners.md, draining); the documented answer
	 * is to ask again */
	TRY_WAIT_FOR((r = shmb_session_open(*c, name, &so, s)) != -EAGAIN, 10000);
	if (r < 0)
		shmb_close(*c);
	return r;
}

int stream_take(struct stats *st, int idx, const struct shmb_msg *m, int npub,
		struct shmb_session *s, unsigned *unacked)
{
	struct payload p = { 0 };

	if (!payload_ok(m, &p) || p.pub >= (uint32_t)npub || m->src_seq != p.n) {
		fprintf(stderr, "subscriber %d: a bad message (src_seq %llu, %u bytes)\n", idx,
			(unsigned long long)m->src_seq, (unsigned)m->len);
		st->errors[idx]++;
		return 12;
	}
	if (p.n < st->next[idx][p.pub]) {
		/* seen before a kill, not acknowledged then */
		if (!st->dups[idx]++)
			fprintf(stderr, "subscriber %d: message %llu of publisher %u delivered again, %llu next\n",
				idx, (unsigned long long)p.n, p.pub,
				(unsigned long long)st->next[idx][p.pub]);
	} else if (p.n == st->next[idx][p.pub]) {
		store_release(&st->next[idx][p.pub], p.n + 1);
		st->received[idx]++;
	} else {
		fprintf(stderr, "subscriber %d: message %llu of publisher %u where %llu was next\n",
			idx, (unsigned long long)p.n, p.pub, (unsigned long long)st->next[idx][p.pub]);
		st->errors[idx]++; /* a gap */
		return 13;
	}
	/* what was seen is recorded before it is acknowledged */
	if (++*unacked == ACK_EVERY) {
		if (shmb_ack(s) < 0)
			return 14;
		*unacked = 0;
	}
	return 0;
}

/* A subscriber process: receive `total` new messages, checking order per
 * publisher; records what it saw before each acknowledgement. */
void subscriber(const struct tb *t, struct stats *st, int idx, uint64_t total, int npub)
{
	struct shmb_client *c;
	struct shmb_session *s;
	char name[32];
	unsigned unacked = 0;

	snprintf(name, sizeof(name), "sub-%d", idx);
	if (connect_open(t, name, 0, &c, &s) < 0 || shmb_subscribe(s, "t") < 0)
		_exit(10);
	fetch_add_release(&st->ready, 1);
	for (;;) {
		uint64_t done = 0;
		struct shmb_msg m;
		int r;

		for (int j = 0; j < npub; j++)
			done += st->next[idx][j];
		if (done >= total)
			break;
		r = shmb_recv(s, &m, 30000);
		if (r < 0)
			_exit(11);
		r = stream_take(st, idx, &m, npub, s, &unacked);
		if (r)
			_exit(r);
	}
	shmb_ack(s);
	shmb_session_close(s);
	shmb_close(c);
	_exit(0);
}

void publisher(const struct tb *t, struct stats *st, int idx, uint64_t n)
{
	struct shmb_client *c;
	struct shmb_session *s;
	char name[32];

	snprintf(name, sizeof(name), "pub-%d", idx);
	if (connect_open(t, name, 0, &c, &s) < 0)
		_exit(20);
	for (uint64_t i = 0; i < n; i++) {
		struct payload p;

		payload_make(&p, (uint32_t)idx, i);
		if (shmb_publish(s, "t", &p, sizeof(p), 30000) < 0)
			_exit(21);
		st->published[idx] = i + 1;
		if (st->pace_us && i % 1000 == 999)
			usleep(st->pace_us);
	}
	if (shmb_flush(s, 30000) < 0)
		_exit(22);
	shmb_session_close(s);
	shmb_close(c);
	_exit(0);
}

pid_t fork_or_die(void)
{
	pid_t parent = getpid(), p = fork();

	CU_ASSERT_FATAL(p >= 0);
	/* a child never outlives a test that gave up on it */
	if (p == 0 && (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent))
		_exit(99);
	return p;
}

bool wait_ready(struct stats *st, uint32_t n)
{
	return TRY_WAIT_FOR(load_acquire(&st->ready) >= n, 10000);
}
