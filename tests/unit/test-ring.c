/*
 * tests/unit/test-ring.c - the SPSC record ring in one process: empty,
 * full, wrap at every alignment, the largest record, zero-length records,
 * batches, fencing, recovery, and a randomized run checked against a
 * model.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "shm/ring.h"

struct fx {
	uint8_t *mem;
	struct ring r;
	uint64_t prod_word; /* the producer's published position */
	uint64_t cons_word; /* the consumer's released position */
	struct ring_prod p;
	struct ring_cons c;
};

static void fx_init(struct fx *f, uint64_t size, uint64_t start, bool bound)
{
	memset(f, 0, sizeof(*f));
	f->mem = aligned_alloc(4096, size);
	CU_ASSERT_FATAL(f->mem != NULL);
	memset(f->mem, 0, size);
	CU_ASSERT_FATAL(ring_init(&f->r, f->mem, size) == 0);
	f->prod_word = start;
	f->cons_word = start;
	CU_ASSERT_FATAL(ring_prod_init(&f->p, &f->r, &f->cons_word, &f->prod_word, start, 100, 7) == 0);
	CU_ASSERT_FATAL(ring_cons_init(&f->c, &f->r, bound ? &f->prod_word : NULL, &f->cons_word,
				       start, 100, 7, 7) == 0);
}

static void fx_fini(struct fx *f)
{
	free(f->mem);
}

static void fill(uint8_t *b, uint32_t len, uint64_t seq)
{
	for (uint32_t i = 0; i < len; i++)
		b[i] = (uint8_t)(seq * 31 + i * 7 + 1);
}

static int check(const uint8_t *b, uint32_t len, uint64_t seq)
{
	for (uint32_t i = 0; i < len; i++)
		if (b[i] != (uint8_t)(seq * 31 + i * 7 + 1))
			return -1;
	return 0;
}

static int put(struct fx *f, uint32_t len)
{
	uint8_t *dst;
	int r = ring_reserve(&f->p, len, SHM_REC_DATA, 0, (void **)&dst);

	if (r < 0)
		return r;
	fill(dst, len, f->p.rsv_seq - 1);
	return ring_commit(&f->p);
}

static int get(struct fx *f, uint32_t *len)
{
	struct ring_msg m;
	int r = ring_peek(&f->c, &m);

	if (r < 0)
		return r;
	if (check(m.payload, m.len, m.hdr.seq) < 0)
		return -EIO;
	*len = m.len;
	ring_consume(&f->c, &m);
	ring_release(&f->c);
	return 0;
}

static void test_init_rejects(void)
{
	struct ring r;
	uint8_t *mem = aligned_alloc(4096, 1 << 16);

	CU_ASSERT(ring_init(&r, mem, 1000) == -EINVAL);
	CU_ASSERT(ring_init(&r, mem, 2048) == -EINVAL);
	CU_ASSERT(ring_init(&r, mem, 3 * 4096) == -EINVAL);
	CU_ASSERT(ring_init(&r, mem + 4, 4096) == -EINVAL);
	CU_ASSERT(ring_init(&r, NULL, 4096) == -EINVAL);
	CU_ASSERT(ring_init(&r, mem, 4096) == 0);
	CU_ASSERT(r.max_rec == 1024);
	CU_ASSERT(ring_max_payload(&r) == 1024 - SHM_REC_HDR_SIZE);
	free(mem);
}

static void test_empty(void)
{
	struct fx f;
	struct ring_msg m;

	fx_init(&f, 4096, 0, true);
	CU_ASSERT(ring_peek(&f.c, &m) == -EAGAIN);
	fx_fini(&f);
	fx_init(&f, 4096, 0, false);
	CU_ASSERT(ring_peek(&f.c, &m) == -EAGAIN);
	CU_ASSERT(ring_commit(&f.p) == 0); /* nothing reserved: nothing to do */
	CU_ASSERT(ring_peek(&f.c, &m) == -EAGAIN);
	fx_fini(&f);
}

static void test_roundtrip_and_zero_length(void)
{
	struct fx f;
	uint32_t len;
	struct ring_msg m;

	fx_init(&f, 4096, 0, true);
	CU_ASSERT(put(&f, 0) == 0);
	CU_ASSERT(put(&f, 5) == 0);
	CU_ASSERT(f.prod_word == ring_align(SHM_REC_HDR_SIZE) + ring_align(SHM_REC_HDR_SIZE + 5));
	CU_ASSERT(ring_peek(&f.c, &m) == 0);
	CU_ASSERT(m.len == 0 && m.hdr.seq == 100 && m.hdr.gen == 7 && m.hdr.type == SHM_REC_DATA);
	CU_ASSERT(get(&f, &len) == 0 && len == 0);
	CU_ASSERT(get(&f, &len) == 0 && len == 5);
	CU_ASSERT(get(&f, &len) == -EAGAIN);
	CU_ASSERT(f.cons_word == f.prod_word);
	fx_fini(&f);
}

static void test_full(void)
{
	struct fx f;
	uint32_t len, n = 0, payload = 40; /* 64-byte records */

	fx_init(&f, 4096, 0, true);
	while (put(&f, payload) == 0)
		n++;
	/* 4096 bytes hold 64 records of 64, less the 8 bytes of headroom */
	CU_ASSERT(n == 63);
	CU_ASSERT(put(&f, payload) == -EAGAIN);
	{
		uint64_t free_bytes;

		CU_ASSERT(ring_prod_free(&f.p, &free_bytes) == 0 && free_bytes == 64);
	}
	/* 64 bytes take two 24-byte records, each with its 8 of headroom */
	CU_ASSERT(put(&f, 0) == 0);
	CU_ASSERT(put(&f, 0) == 0);
	CU_ASSERT(put(&f, 0) == -EAGAIN);
	/* two reads free 128 bytes: a pad of 16 and a 64-byte record fit */
	CU_ASSERT(get(&f, &len) == 0 && len == payload);
	CU_ASSERT(put(&f, payload) == -EAGAIN);
	CU_ASSERT(get(&f, &len) == 0 && len == payload);
	CU_ASSERT(put(&f, payload) == 0);
	n = 0;
	while (get(&f, &len) == 0)
		n++;
	CU_ASSERT(n == 64);
	CU_ASSERT(get(&f, &len) == -EAGAIN);
	fx_fini(&f);
}

/* Start the ring at every 8-byte offset before its end and write records
 * of every size class across the end: pads appear and are skipped. */
static void test_wrap_every_alignment(void)
{
	const uint64_t size = 4096;

	for (uint64_t back = 8; back <= 512; back += 8) {
		for (uint32_t len = 0; len <= 200; len += 13) {
			struct fx f;
			uint32_t got;
			uint64_t start = 3 * size - back;

			fx_init(&f, size, start, (back / 8) % 2);
			for (int i = 0; i < 6; i++)
				CU_ASSERT_FATAL(put(&f, len + (uint32_t)i) == 0);
			for (int i = 0; i < 6; i++) {
				CU_ASSERT_FATAL(get(&f, &got) == 0);
				CU_ASSERT(got == len + (uint32_t)i);
			}
			CU_ASSERT(get(&f, &got) == -EAGAIN);
			CU_ASSERT(f.c.seq == 106);
			fx_fini(&f);
		}
	}
}

static void test_max_record(void)
{
	struct fx f;
	uint32_t got, max;

	for (uint64_t back = 8; back <= 4096; back += 8) {
		fx_init(&f, 4096, 4096 * 2 - back, true);
		max = ring_max_payload(&f.r);
		CU_ASSERT(put(&f, max + 1) == -EMSGSIZE);
		CU_ASSERT(put(&f, UINT32_MAX) == -EMSGSIZE);
		CU_ASSERT_FATAL(put(&f, max) == 0);
		CU_ASSERT(get(&f, &got) == 0 && got == max);
		/* an empty ring always takes a largest record, wherever it stands */
		CU_ASSERT(put(&f, max) == 0);
		CU_ASSERT(put(&f, max) == 0);
		CU_ASSERT(get(&f, &got) == 0 && got == max);
		CU_ASSERT(get(&f, &got) == 0 && got == max);
		fx_fini(&f);
	}
}

static void test_batch(void)
{
	struct fx f;
	struct ring_msg m[16];
	void *dst;
	int n;

	fx_init(&f, 4096, 4096 - 64, true);
	for (int i = 0; i < 10; i++) {
		CU_ASSERT_FATAL(ring_reserve(&f.p, 30, SHM_REC_DATA, (uint16_t)i, &dst) == 0);
		fill(dst, 30, f.p.rsv_seq - 1);
		/* nothing of a batch is visible before its commit */
		CU_ASSERT(ring_peek(&f.c, &m[0]) == -EAGAIN);
	}
	CU_ASSERT(ring_commit(&f.p) == 0);
	n = ring_peek_batch(&f.c, m, 16);
	CU_ASSERT(n == 10);
	for (int i = 0; i < n; i++) {
		CU_ASSERT(m[i].hdr.seq == 100 + (uint64_t)i);
		CU_ASSERT(m[i].hdr.flags == i);
		CU_ASSERT(check(m[i].payload, m[i].len, m[i].hdr.seq) == 0);
	}
	ring_consume(&f.c, &m[n - 1]);
	ring_release(&f.c);
	CU_ASSERT(ring_peek(&f.c, &m[0]) == -EAGAIN);
	/* an aborted batch leaves no trace */
	CU_ASSERT(ring_reserve(&f.p, 30, SHM_REC_DATA, 0, &dst) == 0);
	CU_ASSERT(ring_reserve(&f.p, 30, SHM_REC_DATA, 0, &dst) == 0);
	ring_abort(&f.p);
	CU_ASSERT(ring_commit(&f.p) == 0);
	CU_ASSERT(ring_peek(&f.c, &m[0]) == -EAGAIN);
	CU_ASSERT(put(&f, 3) == 0);
	CU_ASSERT(ring_peek_batch(&f.c, m, 16) == 1);
	CU_ASSERT(m[0].hdr.seq == 110);
	fx_fini(&f);
}

static void test_fence(void)
{
	struct fx f;
	uint32_t got;

	fx_init(&f, 4096, 0, false);
	CU_ASSERT(put(&f, 10) == 0);
	/* a record stands at the read position: drain first */
	CU_ASSERT(ring_fence(&f.c) == -EAGAIN);
	CU_ASSERT(get(&f, &got) == 0);
	CU_ASSERT(ring_fence(&f.c) == 0);
	CU_ASSERT(ring_fence(&f.c) == 0);
	/* the producer's next commit is refused, and so is every later one */
	CU_ASSERT(put(&f, 10) == -ESTALE);
	CU_ASSERT(put(&f, 10) == -ESTALE);
	CU_ASSERT(get(&f, &got) == -ESTALE);
	CU_ASSERT(f.p.seq == 101);
	fx_fini(&f);
	/* a reader bounded by the producer's word learns of the fence too */
	fx_init(&f, 4096, 0, true);
	CU_ASSERT(put(&f, 10) == 0);
	CU_ASSERT(get(&f, &got) == 0);
	CU_ASSERT(ring_fence(&f.c) == 0);
	CU_ASSERT(get(&f, &got) == -ESTALE);
	fx_fini(&f);
	/* garbage in the slot is not "a record to drain first" */
	fx_init(&f, 4096, 0, false);
	*(uint64_t *)f.mem = 3;
	CU_ASSERT(ring_fence(&f.c) == -EBADMSG);
	fx_fini(&f);
}

static void test_recover(void)
{
	struct fx f;
	uint64_t pos, seq;

	fx_init(&f, 4096, 4096 - 128, false);
	for (int i = 0; i < 20; i++)
		CU_ASSERT_FATAL(put(&f, (uint32_t)(i * 5)) == 0);
	/* the published word lags: recovery walks to the true end */
	pos = 4096 - 128;
	seq = 100;
	CU_ASSERT(ring_recover(&f.r, f.cons_word, &pos, &seq, 7, 7) == 0);
	CU_ASSERT(pos == f.p.pos);
	CU_ASSERT(seq == 120);
	/* a new producer continues where the dead one stopped */
	CU_ASSERT(ring_prod_init(&f.p, &f.r, &f.cons_word, &f.prod_word, pos, seq, 7) == 0);
	CU_ASSERT(put(&f, 9) == 0);
	for (int i = 0; i < 21; i++) {
		uint32_t got;

		CU_ASSERT(get(&f, &got) == 0);
	}
	CU_ASSERT(f.c.seq == 121);
	fx_fini(&f);
}

/* The producer never trusts the consumer's position. */
static void test_bad_consumer_position(void)
{
	struct fx f;

	fx_init(&f, 4096, 0, true);
	while (put(&f, 40) == 0)
		;
	/* the refresh on a full ring finds impossible positions */
	f.cons_word = f.p.pos + 64; /* beyond what was written */
	CU_ASSERT(put(&f, 40) == -EBADMSG);
	f.cons_word = 3; /* misaligned */
	CU_ASSERT(put(&f, 40) == -EBADMSG);
	f.cons_word = 1024;
	CU_ASSERT(put(&f, 40) == 0);
	f.cons_word = 512; /* backwards */
	{
		int r = 0;

		for (int i = 0; i < 40 && r == 0; i++)
			r = put(&f, 40);
		CU_ASSERT(r == -EBADMSG);
	}
	CU_ASSERT(ring_prod_init(&f.p, &f.r, &f.cons_word, NULL, 0, 0, 1) == -EBADMSG);
	/* a whole lap ahead of the consumer is impossible (8 bytes of headroom) */
	f.cons_word = 0;
	CU_ASSERT(ring_prod_init(&f.p, &f.r, &f.cons_word, NULL, 4096, 0, 1) == -EBADMSG);
	CU_ASSERT(ring_prod_init(&f.p, &f.r, &f.cons_word, NULL, 4088, 0, 1) == 0);
	fx_fini(&f);
}

/* A model: a FIFO of (seq, len) the ring must match. */
struct model {
	uint64_t seq[8192];
	uint32_t len[8192];
	unsigned head, tail;
};

static void test_randomized_model(void)
{
	uint64_t s = harness_seed("ring model"), ops = (uint64_t)(1000000 * harness_scale());
	static struct model mdl;
	struct fx f;
	uint64_t writes = 0, reads = 0, fulls = 0;
	struct ring_msg m[32];

	fx_init(&f, 8192, (uint64_t)1 << 40, true);
	mdl.head = mdl.tail = 0;
	for (uint64_t op = 0; op < ops; op++) {
		uint64_t x = harness_rand(&s);
		unsigned kind = x % 8;

		if (kind < 4) {
			/* a batch of 1-4 records; sizes biased towards small */
			unsigned k = 1 + (x >> 8) % 4, done = 0;
			uint32_t maxp = ring_max_payload(&f.r);

			for (unsigned i = 0; i < k; i++) {
				uint32_t len = (x >> 16) % 7 == 0 ? (uint32_t)(harness_rand(&s) % (maxp + 1))
								   : (uint32_t)(harness_rand(&s) % 100);
				uint8_t *dst;
				int r = ring_reserve(&f.p, len, SHM_REC_DATA, 0, (void **)&dst);

				if (r == -EAGAIN) {
					fulls++;
					break;
				}
				CU_ASSERT_FATAL(r == 0);
				fill(dst, len, f.p.rsv_seq - 1);
				mdl.seq[mdl.tail % 8192] = f.p.rsv_seq - 1;
				mdl.len[mdl.tail % 8192] = len;
				mdl.tail++;
				done++;
			}
			if ((x >> 40) % 16 == 0 && done) {
				ring_abort(&f.p);
				mdl.tail -= done;
			} else {
				CU_ASSERT_FATAL(ring_commit(&f.p) == 0);
				writes += done;
			}
		} else {
			unsigned want = 1 + (x >> 8) % 32;
			int n = ring_peek_batch(&f.c, m, want);

			if (n == -EAGAIN) {
				CU_ASSERT_FATAL(mdl.head == mdl.tail);
				ring_release(&f.c);
				continue;
			}
			CU_ASSERT_FATAL(n > 0);
			for (int i = 0; i < n; i++) {
				CU_ASSERT_FATAL(mdl.head != mdl.tail);
				CU_ASSERT_FATAL(m[i].hdr.seq == mdl.seq[mdl.head % 8192]);
				CU_ASSERT_FATAL(m[i].len == mdl.len[mdl.head % 8192]);
				CU_ASSERT_FATAL(check(m[i].payload, m[i].len, m[i].hdr.seq) == 0);
				mdl.head++;
			}
			reads += (uint64_t)n;
			ring_consume(&f.c, &m[n - 1]);
			/* sometimes hold the release back: the producer must wait */
			if ((x >> 48) % 4)
				ring_release(&f.c);
		}
	}
	printf("\n  %llu ops: %llu written, %llu read, %llu full\n", (unsigned long long)ops,
	       (unsigned long long)writes, (unsigned long long)reads, (unsigned long long)fulls);
	CU_ASSERT(reads + (mdl.tail - mdl.head) == writes);
	CU_ASSERT(fulls > 0);
	fx_fini(&f);
}

static const struct harness_test ring_tests[] = {
	{ "init_rejects", test_init_rejects },
	{ "empty", test_empty },
	{ "roundtrip_and_zero_length", test_roundtrip_and_zero_length },
	{ "full", test_full },
	{ "wrap_every_alignment", test_wrap_every_alignment },
	{ "max_record", test_max_record },
	{ "batch", test_batch },
	{ "fence", test_fence },
	{ "recover", test_recover },
	{ "bad_consumer_position", test_bad_consumer_position },
	{ "randomized_model", test_randomized_model },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "ring", ring_tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	return harness_main("test-ring", suites, argc, argv);
}
