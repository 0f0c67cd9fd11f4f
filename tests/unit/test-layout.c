/*
 * tests/unit/test-layout.c - the layout other processes rely on: sizes,
 * offsets, cache-line separation, commit-word encoding, the checksum, and
 * the files of the direct data path (shm/lane.h).
 */
#include <stddef.h>
#include <string.h>

#include "harness.h"
#include "shm/crc32c.h"
#include "shm/lane.h"
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

/* The direct data path's files (shm/lane.h): each party's words on
 * lines of their own, every file a whole number of pages. */
static void test_lane_layout(void)
{
	const unsigned line = SHM_LINE;
	char magic[8];

	/* the writer's page: the broker's line, then the writer's two */
	CU_ASSERT(offsetof(struct shm_lane_wpage, reclaim) / line == 1);
	CU_ASSERT(offsetof(struct shm_lane_wpage, committed) / line == 1);
	CU_ASSERT(offsetof(struct shm_lane_wpage, space_arm) / line == 2);
	CU_ASSERT(offsetof(struct shm_lane_wpage, short_since) / line == 2);
	CU_ASSERT(SHM_LANE_RING_OFFSET % 4096 == 0);
	/* meta: header with its checksum last, the state line, the bitmap */
	CU_ASSERT(offsetof(struct shm_lane_meta_hdr, checksum) + 4 == sizeof(struct shm_lane_meta_hdr));
	CU_ASSERT(SHM_LANE_META_STATE_OFF % line == 0);
	CU_ASSERT(SHM_LANE_BITMAP_OFF % 4096 == 0);
	CU_ASSERT(SHM_LANE_META_SIZE % 4096 == 0);
	CU_ASSERT(SHM_LANE_TOPIC_BITS / 8 == 131072);
	memcpy(magic, &(uint64_t){ SHM_LANE_MAGIC }, sizeof(magic));
	CU_ASSERT(memcmp(magic, "SHMB-LN", 8) == 0);
	/* hold: a header line and 1023 entries, one line each, in 64 KiB */
	CU_ASSERT(sizeof(struct shm_hold_hdr) + SHM_HOLD_MAX * sizeof(struct shm_hold_ent) == SHM_HOLD_SIZE);
	CU_ASSERT(offsetof(struct shm_hold_ent, tag) == 0);
	/* a cursor page: 504 slots from line 1 */
	CU_ASSERT(offsetof(struct shm_cursor_page, slot) / line == 1);
	CU_ASSERT(sizeof(((struct shm_cursor_page *)0)->slot) == 504 * 8);
	/* an arm page: the bits a writer loads per commit in one line, apart
	 * from the arm words it looks at only when a bit is set */
	CU_ASSERT(sizeof(((struct shm_arm_page *)0)->bits) == line);
	CU_ASSERT(offsetof(struct shm_arm_page, arm) / line == 1);
	CU_ASSERT(SHM_ARM_SLOTS <= 8 * sizeof(((struct shm_arm_page *)0)->bits));
	CU_ASSERT(sizeof(struct shm_arm_page) == 4096);
	/* a lane record: the record header, the lane header, the payload aligned */
	CU_ASSERT((SHM_REC_HDR_SIZE + sizeof(struct shm_lane_msg)) == 40);
	CU_ASSERT((SHM_REC_HDR_SIZE + sizeof(struct shm_lane_msg) + sizeof(struct shm_lane_origin)) %
		  SHM_REC_ALIGN == 0);
}

static const struct harness_test layout_tests[] = {
	{ "sizes_and_offsets", test_sizes_and_offsets },
	{ "cache_line_separation", test_cache_line_separation },
	{ "commit_word", test_commit_word },
	{ "magic_is_readable", test_magic_is_readable },
	{ "crc32c", test_crc32c },
	{ "lane_layout", test_lane_layout },
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
