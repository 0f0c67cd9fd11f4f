/*
 * tests/unit/lane-fx.c - the lane tests' shared fixture (see lane-fx.h).
 */
#include <sys/mman.h>

#include "harness.h"
#include "lane-fx.h"
#include "shm/atomics.h"

void *fx_shared(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	CU_ASSERT_FATAL(p != MAP_FAILED);
	return p;
}

void fx_open(struct fx *f)
{
	f->data = fx_shared(SHM_LANE_RING_OFFSET + RING);
	f->meta = fx_shared(SHM_LANE_META_SIZE);
	f->hold = fx_shared(SHM_HOLD_SIZE);
	f->cur = fx_shared(NPAGES * sizeof(*f->cur));
	f->arm = fx_shared(sizeof(*f->arm));
	f->rx_wake = fx_shared(4096);
	f->tx_wake = f->rx_wake + 1000;
	hold_table_init(&f->ht, f->hold);
	ring_init(&f->ring, f->data + SHM_LANE_RING_OFFSET, RING);
	f->meta[SHM_LANE_BITMAP_OFF + TOPIC / 8] |= 1u << (TOPIC % 8);
	((struct shm_lane_meta_state *)(f->meta + SHM_LANE_META_STATE_OFF))->state = SHM_LANE_OPEN;
}

void fx_close(struct fx *f)
{
	munmap(f->data, SHM_LANE_RING_OFFSET + RING);
	munmap(f->meta, SHM_LANE_META_SIZE);
	munmap(f->hold, SHM_HOLD_SIZE);
	munmap(f->cur, NPAGES * sizeof(*f->cur));
	munmap(f->arm, sizeof(*f->arm));
	munmap(f->rx_wake, 4096);
}

const struct shm_cursor_page *pg_cursor(void *ctx, uint32_t page)
{
	struct fx *f = ctx;

	return page < NPAGES ? &f->cur[page] : NULL;
}

const struct shm_arm_page *pg_arm(void *ctx, uint32_t page)
{
	struct fx *f = ctx;

	return page == 0 ? f->arm : NULL;
}

uint32_t *pg_wake(void *ctx, uint64_t reader)
{
	struct fx *f = ctx;

	return reader < 64 ? &f->rx_wake[reader * 4] : NULL;
}

void writer_open(struct fx *f, struct lane_writer *w)
{
	struct lane_pages pages = { pg_cursor, pg_arm, pg_wake, f };

	CU_ASSERT_FATAL(lane_writer_init(w, f->data, RING, f->hold, &pages, false, 0, 0, 0) == 0);
}

uint64_t holder_add(struct fx *f, uint32_t kind, unsigned rd, unsigned *idx)
{
	const struct shm_lane_wpage *wp = (const void *)f->data;
	struct hold_view v = { .kind = kind, .page = 0, .slot = rd, .arm_page = 0,
			       .arm_slot = rd, .reader = rd };
	uint64_t P, S;
	int i;

	CU_ASSERT_FATAL(lane_find_end(&f->ring, wp, 0, &P) == 0);
	i = hold_add(&f->ht, &v, P);
	CU_ASSERT_FATAL(i >= 0);
	S = hold_start(&f->ht, (unsigned)i, wp, P);
	CU_ASSERT(S >= P);
	store_release(&f->cur[0].slot[rd], S);
	*idx = (unsigned)i;
	return S;
}

void reader_open(struct fx *f, struct lane_reader *r, unsigned rd, bool drop_oldest,
		 uint64_t start)
{
	CU_ASSERT_FATAL(lane_reader_init(r, f->data, RING, f->meta, &f->cur[0].slot[rd], false,
					 drop_oldest, start, 0) == 0);
	r->tx_wake = f->tx_wake;
}

int put(struct lane_writer *w, uint64_t order, uint32_t len)
{
	uint64_t *p;
	int r = lane_reserve(w, TOPIC, order, NULL, len, (void **)&p);

	if (r < 0)
		return r;
	for (uint32_t i = 0; i < len / 8; i++)
		p[i] = order;
	return 0;
}

bool intact(const struct lane_rec *m)
{
	const uint64_t *p = m->payload;

	for (uint32_t i = 0; i < m->len / 8; i++)
		if (p[i] != m->order)
			return false;
	return m->topic_id == TOPIC;
}

