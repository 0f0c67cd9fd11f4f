/*
 * tests/unit/test-hostile.c - hostile shared memory.  Every field of a
 * record header and of both segment headers is set to hostile values; the
 * reader must answer with an error code, never crash or read out of
 * bounds (this suite also runs under `make asan`, where a stray read
 * would be caught).  Ends with random garbage thrown at the reader.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "shm/crc32c.h"
#include "shm/ring.h"
#include "shm/segment.h"

#define RSZ 4096u

struct hx {
	uint8_t *mem;
	struct ring r;
	uint64_t prod_word, cons_word;
	struct ring_prod p;
	struct ring_cons c;
};

/* A ring holding one valid record of `len` payload bytes at `start`. */
static void hx_init(struct hx *h, uint64_t start, uint32_t len, bool bound)
{
	void *dst;

	memset(h, 0, sizeof(*h));
	/* exactly the ring: ASan flags any byte read outside it */
	h->mem = aligned_alloc(4096, RSZ);
	CU_ASSERT_FATAL(h->mem != NULL);
	memset(h->mem, 0, RSZ);
	CU_ASSERT_FATAL(ring_init(&h->r, h->mem, RSZ) == 0);
	h->prod_word = h->cons_word = start;
	CU_ASSERT_FATAL(ring_prod_init(&h->p, &h->r, &h->cons_word, &h->prod_word, start, 50, 3) == 0);
	CU_ASSERT_FATAL(ring_cons_init(&h->c, &h->r, bound ? &h->prod_word : NULL, &h->cons_word,
				       start, 50, 2, 3) == 0);
	CU_ASSERT_FATAL(ring_reserve(&h->p, len, SHM_REC_DATA, 0, &dst) == 0);
	memset(dst, 0xab, len);
	CU_ASSERT_FATAL(ring_commit(&h->p) == 0);
}

static struct shm_rec_hdr *hx_rec(struct hx *h)
{
	return (struct shm_rec_hdr *)(h->mem + (h->c.pos & h->r.mask));
}

static int hx_peek(struct hx *h)
{
	struct ring_msg m;

	return ring_peek(&h->c, &m);
}

static void test_valid_baseline(void)
{
	struct hx h;

	hx_init(&h, 0, 40, true);
	CU_ASSERT(hx_peek(&h) == 0);
	free(h.mem);
}

static void test_hostile_commit_length(void)
{
	const uint32_t lens[] = { 1, 7, 8, 23, RSZ / 4 + 1, RSZ, 0x7fffffffu, 0xffffffffu & ~SHM_COMMIT_PAD };

	for (int bound = 0; bound < 2; bound++) {
		for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
			struct hx h;

			hx_init(&h, 0, 40, bound);
			hx_rec(&h)->commit = shm_commit_word(lens[i], 50);
			CU_ASSERT(hx_peek(&h) == -EBADMSG);
			free(h.mem);
		}
		/* zero: "nothing here"; the producer's word says otherwise when bound */
		{
			struct hx h;

			hx_init(&h, 0, 40, bound);
			hx_rec(&h)->commit = 0;
			CU_ASSERT(hx_peek(&h) == (bound ? -EBADMSG : -EAGAIN));
			free(h.mem);
		}
	}
}

/* A valid-looking length that runs past the end of the ring. */
static void test_length_crossing_ring_end(void)
{
	struct hx h;

	hx_init(&h, RSZ - 64, 16, false);
	hx_rec(&h)->commit = shm_commit_word(200, 50);
	CU_ASSERT(hx_peek(&h) == -EBADMSG);
	free(h.mem);
	/* and one that runs past what the producer published */
	hx_init(&h, 0, 16, true);
	hx_rec(&h)->commit = shm_commit_word(200, 50);
	CU_ASSERT(hx_peek(&h) == -EBADMSG);
	free(h.mem);
}

static void test_hostile_pad(void)
{
	struct hx h;

	/* a pad that does not end exactly at the ring's end */
	hx_init(&h, RSZ - 64, 8, false);
	hx_rec(&h)->commit = shm_commit_word(SHM_COMMIT_PAD | 32, 50);
	CU_ASSERT(hx_peek(&h) == -EBADMSG);
	hx_rec(&h)->commit = shm_commit_word(SHM_COMMIT_PAD | 128, 50);
	CU_ASSERT(hx_peek(&h) == -EBADMSG);
	hx_rec(&h)->commit = shm_commit_word(SHM_COMMIT_PAD | 0, 50);
	CU_ASSERT(hx_peek(&h) == -EBADMSG);
	free(h.mem);
	/* a pad at the start of the ring (it would cover all of it) */
	hx_init(&h, 0, 8, false);
	hx_rec(&h)->commit = shm_commit_word(SHM_COMMIT_PAD | RSZ, 50);
	CU_ASSERT(hx_peek(&h) == -EBADMSG);
	free(h.mem);
	/* two pads in a row */
	hx_init(&h, RSZ - 64, 8, false);
	hx_rec(&h)->commit = shm_commit_word(SHM_COMMIT_PAD | 64, 50);
	*(uint64_t *)h.mem = shm_commit_word(SHM_COMMIT_PAD | RSZ, 50);
	CU_ASSERT(hx_peek(&h) == -EBADMSG);
	free(h.mem);
}

static void test_hostile_sequence(void)
{
	struct hx h;

	hx_init(&h, 0, 40, true);
	hx_rec(&h)->commit = shm_commit_word(SHM_REC_HDR_SIZE + 40, 51);
	CU_ASSERT(hx_peek(&h) == -EBADMSG);
	free(h.mem);
	hx_init(&h, 0, 40, true);
	hx_rec(&h)->seq = 49;
	CU_ASSERT(hx_peek(&h) == -EBADMSG);
	hx_rec(&h)->seq = 50 + (1ull << 32); /* low bits agree, the rest does not */
	CU_ASSERT(hx_peek(&h) == -EBADMSG);
	free(h.mem);
}

static void test_hostile_type_and_generation(void)
{
	const uint16_t types[] = { 0, SHM_REC_TYPE_MAX + 1, 0xffff };
	const uint32_t gens[] = { 0, 1, 4, 0xffffffffu };
	struct hx h;

	for (size_t i = 0; i < 3; i++) {
		hx_init(&h, 0, 40, true);
		hx_rec(&h)->type = types[i];
		CU_ASSERT(hx_peek(&h) == -EBADMSG);
		free(h.mem);
	}
	for (size_t i = 0; i < 4; i++) {
		hx_init(&h, 0, 40, true);
		hx_rec(&h)->gen = gens[i];
		CU_ASSERT(hx_peek(&h) == -EBADMSG);
		free(h.mem);
	}
	hx_init(&h, 0, 40, true);
	hx_rec(&h)->gen = 2; /* older but still in the accepted range */
	CU_ASSERT(hx_peek(&h) == 0);
	hx_rec(&h)->flags = 0xffff; /* free for the layer above */
	CU_ASSERT(hx_peek(&h) == 0);
	free(h.mem);
}

static void test_fenced_marker(void)
{
	struct hx h;

	hx_init(&h, 0, 40, true);
	hx_rec(&h)->commit = SHM_COMMIT_FENCED;
	CU_ASSERT(hx_peek(&h) == -ESTALE);
	free(h.mem);
}

static void test_hostile_producer_position(void)
{
	const uint64_t bad[] = { 1, 4, RSZ * 2, UINT64_MAX, UINT64_MAX - 7 };
	struct hx h;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		hx_init(&h, 1024, 40, true);
		h.prod_word = bad[i] == 1 || bad[i] == 4 ? 1024 + bad[i] : bad[i];
		if (bad[i] == 4)
			h.prod_word = 1000; /* behind the reader */
		CU_ASSERT(hx_peek(&h) == -EBADMSG);
		free(h.mem);
	}
}

static void test_recover_stops_on_garbage(void)
{
	struct hx h;
	uint64_t pos = 0, seq = 50;

	hx_init(&h, 0, 40, false);
	hx_rec(&h)->type = 77;
	CU_ASSERT(ring_recover(&h.r, 0, &pos, &seq, 2, 3) == -EBADMSG);
	pos = RSZ * 4;
	CU_ASSERT(ring_recover(&h.r, 0, &pos, &seq, 2, 3) == -EBADMSG);
	free(h.mem);
}

/* Random bytes everywhere, random positions: only error codes come back. */
static void test_random_garbage(void)
{
	uint64_t s = harness_seed("garbage"), n = (uint64_t)(20000 * harness_scale());
	unsigned ok = 0, bad = 0, other = 0;

	for (uint64_t i = 0; i < n; i++) {
		struct hx h;
		struct ring_msg m[4];
		int r;

		hx_init(&h, (harness_rand(&s) % 1024) * 8, 40, i % 2);
		for (unsigned k = 0; k < 8; k++) {
			uint64_t off = harness_rand(&s) % (RSZ / 8);
			uint64_t v = harness_rand(&s);

			/* bias some words towards plausible lengths */
			if (k % 2)
				v = shm_commit_word((uint32_t)(v % 300), h.c.seq + (v >> 60));
			((uint64_t *)h.mem)[off] = v;
		}
		if (i % 3 == 0)
			h.prod_word = harness_rand(&s);
		r = ring_peek_batch(&h.c, m, 4);
		if (r > 0) {
			ok++;
			for (int k = 0; k < r; k++) {
				CU_ASSERT_FATAL((const uint8_t *)m[k].payload >= h.mem);
				CU_ASSERT_FATAL((const uint8_t *)m[k].payload + m[k].len <= h.mem + RSZ);
			}
		} else if (r == -EBADMSG || r == -EAGAIN || r == -ESTALE) {
			bad++;
		} else {
			other++;
		}
		free(h.mem);
	}
	CU_ASSERT(other == 0);
	printf("\n  %llu garbage rings: %u still read, %u refused\n", (unsigned long long)n, ok, bad);
}

/* ---- segment headers ----------------------------------------------------- */

static const struct seg_rx_params params = {
	.session_id = 1, .broker_id = 2, .owner_uid = 3,
	.policy = SHM_POLICY_DROP_OLDEST, .rx_ring_size = 16384, .tx_ring_size = 8192,
};

/* Set one field, optionally fix the checksum up so the field check itself
 * has to catch it, and validate. */
static int rx_with(size_t off, size_t width, uint64_t value, bool fix_checksum)
{
	struct segment s = SEGMENT_INIT;
	struct shm_seg_hdr h;
	int r;

	CU_ASSERT_FATAL(segment_create(-1, "rx", segment_file_size(16384), &s) == 0);
	CU_ASSERT_FATAL(segment_rx_format(&s, &params) == 0);
	memcpy(s.base + off, &value, width);
	if (fix_checksum) {
		uint32_t c = crc32c(0, s.base, offsetof(struct shm_seg_hdr, checksum));

		memcpy(s.base + offsetof(struct shm_seg_hdr, checksum), &c, 4);
	}
	r = segment_rx_validate(&s, &h);
	segment_unmap(&s);
	return r;
}

static void test_hostile_segment_header(void)
{
#define F(field) offsetof(struct shm_seg_hdr, field), sizeof(((struct shm_seg_hdr *)0)->field)
	for (int fix = 0; fix < 2; fix++) {
		CU_ASSERT(rx_with(F(magic), 0x1234, fix) == -EBADMSG);
		CU_ASSERT(rx_with(F(magic), SHM_MAGIC_TX, fix) == -EBADMSG);
		CU_ASSERT(rx_with(F(version), 2, fix) == -EPROTONOSUPPORT);
		CU_ASSERT(rx_with(F(version), 0, fix) == -EPROTONOSUPPORT);
		CU_ASSERT(rx_with(F(ring_offset), 0, fix) == -EBADMSG);
		CU_ASSERT(rx_with(F(ring_offset), 4095, fix) == -EBADMSG);
		CU_ASSERT(rx_with(F(rx_ring_size), 16383, fix) == -EBADMSG);
		CU_ASSERT(rx_with(F(rx_ring_size), 32768, fix) == -EBADMSG);
		CU_ASSERT(rx_with(F(rx_ring_size), 0, fix) == -EBADMSG);
		CU_ASSERT(rx_with(F(rx_ring_size), UINT64_MAX, fix) == -EBADMSG);
		CU_ASSERT(rx_with(F(rx_ring_size), 1ull << 62, fix) == -EBADMSG);
		CU_ASSERT(rx_with(F(tx_ring_size), 1000, fix) == -EBADMSG);
		CU_ASSERT(rx_with(F(tx_ring_size), 1ull << 40, fix) == -EBADMSG);
		CU_ASSERT(rx_with(F(policy), 7, fix) == -EBADMSG);
	}
	/* fields with no range of their own are caught by the checksum */
	CU_ASSERT(rx_with(F(session_id), 99, false) == -EBADMSG);
	CU_ASSERT(rx_with(F(owner_uid), 0, false) == -EBADMSG);
	CU_ASSERT(rx_with(F(broker_id), 0, false) == -EBADMSG);
	CU_ASSERT(rx_with(F(created_ns), 0, false) == -EBADMSG);
	CU_ASSERT(rx_with(F(checksum), 0, false) == -EBADMSG);
	CU_ASSERT(rx_with(F(session_id), 99, true) == 0);
#undef F
}

static int tx_with(size_t off, size_t width, uint64_t value, bool fix_checksum)
{
	struct segment s = SEGMENT_INIT;
	struct shm_tx_hdr h;
	int r;

	CU_ASSERT_FATAL(segment_create(-1, "tx", segment_file_size(8192), &s) == 0);
	CU_ASSERT_FATAL(segment_tx_format(&s, 1, 2, 8192, 77) == 0);
	memcpy(s.base + off, &value, width);
	if (fix_checksum) {
		uint32_t c = crc32c(0, s.base, offsetof(struct shm_tx_hdr, checksum));

		memcpy(s.base + offsetof(struct shm_tx_hdr, checksum), &c, 4);
	}
	r = segment_tx_validate(&s, &h);
	segment_unmap(&s);
	return r;
}

static void test_hostile_tx_header(void)
{
#define F(field) offsetof(struct shm_tx_hdr, field), sizeof(((struct shm_tx_hdr *)0)->field)
	for (int fix = 0; fix < 2; fix++) {
		CU_ASSERT(tx_with(F(magic), SHM_MAGIC_RX, fix) == -EBADMSG);
		CU_ASSERT(tx_with(F(version), 99, fix) == -EPROTONOSUPPORT);
		CU_ASSERT(tx_with(F(ring_offset), 8, fix) == -EBADMSG);
		CU_ASSERT(tx_with(F(tx_ring_size), 4096, fix) == -EBADMSG);
		CU_ASSERT(tx_with(F(tx_ring_size), 12288, fix) == -EBADMSG);
	}
	CU_ASSERT(tx_with(F(generation), 3, false) == -EBADMSG);
	CU_ASSERT(tx_with(F(start_seq), 0, false) == -EBADMSG);
	CU_ASSERT(tx_with(F(session_id), 5, false) == -EBADMSG);
#undef F
}

static const struct harness_test record_tests[] = {
	{ "valid_baseline", test_valid_baseline },
	{ "hostile_commit_length", test_hostile_commit_length },
	{ "length_crossing_ring_end", test_length_crossing_ring_end },
	{ "hostile_pad", test_hostile_pad },
	{ "hostile_sequence", test_hostile_sequence },
	{ "hostile_type_and_generation", test_hostile_type_and_generation },
	{ "fenced_marker", test_fenced_marker },
	{ "hostile_producer_position", test_hostile_producer_position },
	{ "recover_stops_on_garbage", test_recover_stops_on_garbage },
	{ "random_garbage", test_random_garbage },
	{ NULL, NULL },
};

static const struct harness_test segment_tests[] = {
	{ "hostile_segment_header", test_hostile_segment_header },
	{ "hostile_tx_header", test_hostile_tx_header },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "hostile-records", record_tests },
	{ "hostile-segments", segment_tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	return harness_main("test-hostile", suites, argc, argv);
}
