/*
 * tests/unit/test-layout.c - the layout other processes rely on: sizes,
 * offsets, cache-line separation, commit-word encoding, the checksum.
 */
#include <stddef.h>
#include <string.h>

#include "harness.h"
#include "shm/crc32c.h"
#include "shm/layout.h"

static void test_sizes_and_offsets(void)
{
	CU_ASSERT(sizeof(struct shm_seg_hdr) == 128);
	CU_ASSERT(sizeof(struct shm_tx_hdr) == 128);
	CU_ASSERT(sizeof(struct shm_rec_hdr) == 24);
	CU_ASSERT(SHM_RING_OFFSET % 4096 == 0);
	CU_ASSERT(SHM_CTRL_OFF >= sizeof(struct shm_seg_hdr));
	CU_ASSERT(SHM_CTRL_OFF >= sizeof(struct shm_tx_hdr));
	CU_ASSERT(offsetof(struct shm_seg_hdr, checksum) + 4 == sizeof(struct shm_seg_hdr));
	CU_ASSERT(offsetof(struct shm_tx_hdr, checksum) + 4 == sizeof(struct shm_tx_hdr));
}

/* The producer's and the consumer's words of one ring never share a line. */
static void test_cache_line_separation(void)
{
	size_t line = SHM_CACHELINE;

	CU_ASSERT(offsetof(struct shm_rx_ctrl, rx_write) / line !=
		  offsetof(struct shm_rx_ctrl, tx_read) / line);
	CU_ASSERT(offsetof(struct shm_rx_ctrl, rx_signal) / line == 0);
	CU_ASSERT(offsetof(struct shm_rx_ctrl, tx_space_signal) / line == 1);
	CU_ASSERT(offsetof(struct shm_tx_ctrl, tx_write) / line !=
		  offsetof(struct shm_tx_ctrl, rx_acked) / line);
	CU_ASSERT(offsetof(struct shm_tx_ctrl, rx_waiters) / line == 1);
	CU_ASSERT((SHM_CTRL_OFF + offsetof(struct shm_rx_ctrl, rx_signal)) % 4 == 0);
	CU_ASSERT((SHM_CTRL_OFF + offsetof(struct shm_tx_ctrl, tx_signal)) % 4 == 0);
}

static void test_commit_word(void)
{
	uint64_t c = shm_commit_word(1234, 0x1122334455667788ull);

	CU_ASSERT(shm_commit_len(c) == 1234);
	CU_ASSERT(shm_commit_seq_lo(c) == 0x55667788u);
	/* a record of header size with sequence 0 is not "empty" */
	CU_ASSERT(shm_commit_word(SHM_REC_HDR_SIZE, 0) != 0);
	/* no real commit word equals the fence marker: lengths stay below 2^31 */
	CU_ASSERT(shm_commit_word(SHM_RING_MAX / 4, UINT64_MAX) != SHM_COMMIT_FENCED);
	CU_ASSERT((SHM_RING_MAX / 4) < SHM_COMMIT_PAD);
}

static void test_magic_is_readable(void)
{
	uint64_t m = SHM_MAGIC_RX;

	CU_ASSERT(memcmp(&m, "SHMB-RX", 8) == 0);
	m = SHM_MAGIC_TX;
	CU_ASSERT(memcmp(&m, "SHMB-TX", 8) == 0);
}

static void test_crc32c(void)
{
	uint32_t a, b;

	CU_ASSERT(crc32c(0, "123456789", 9) == 0xe3069283u);
	CU_ASSERT(crc32c(0, "", 0) == 0);
	a = crc32c(0, "hello world", 11);
	b = crc32c(crc32c(0, "hello ", 6), "world", 5);
	CU_ASSERT(a == b);
	/* the CPU's instruction (where there is one) and the table agree on
	 * every length and alignment, chained or not */
	{
		static uint8_t buf[4096 + 16];
		uint64_t s = 0x9e3779b97f4a7c15ull;
		unsigned bad = 0;

		for (size_t i = 0; i < sizeof(buf); i++) {
			s = s * 6364136223846793005ull + 1442695040888963407ull;
			buf[i] = (uint8_t)(s >> 56);
		}
		for (size_t off = 0; off < 16; off++)
			for (size_t len = 0; len + off <= sizeof(buf); len += len < 64 ? 1 : 61) {
				uint32_t h = crc32c(7, buf + off, len), t = crc32c_portable(7, buf + off, len);

				bad += h != t;
			}
		CU_ASSERT(bad == 0);
		CU_ASSERT(crc32c_portable(0, "123456789", 9) == 0xe3069283u);
	}
}

static const struct harness_test layout_tests[] = {
	{ "sizes_and_offsets", test_sizes_and_offsets },
	{ "cache_line_separation", test_cache_line_separation },
	{ "commit_word", test_commit_word },
	{ "magic_is_readable", test_magic_is_readable },
	{ "crc32c", test_crc32c },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "layout", layout_tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	return harness_main("test-layout", suites, argc, argv);
}
