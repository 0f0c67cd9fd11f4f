/*
 * shm/lane.h - the bytes of the direct data path's shared files
 * (docs/design/data-path.md, sections 1-4): a lane (its data file with the
 * writer's page and the ring, its broker-written meta and hold files), a
 * reader's cursor page, an arm page, and the lane message header.
 *
 * Layout only, no policy.  Every field another process relies on is
 * pinned by a static_assert; lines written by different parties never
 * share a cache line.  Nothing here is trusted by the process that reads
 * it without the checks data-path.md gives for each word ("Every shared
 * word").
 */
#ifndef SHM_LANE_H
#define SHM_LANE_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "shm/layout.h"

#define SHM_LANE_LAYOUT_VERSION 1u
#define SHM_LINE 64u

/* ---- the data file: the writer's page, then the ring -------------------- */

/* Page 0 of a lane's data file.  Line 0 is written once by the broker
 * (who made the lane, for people reading a core file) and trusted by
 * nobody; lines 1 and 2 by the lane's writer. */
struct shm_lane_wpage {
	uint8_t broker_line[SHM_LINE];
	uint64_t reclaim;      /* line 1: nothing below it is kept (release, never falls) */
	uint64_t committed;    /* a hint: stored when the writer crosses a slice */
	uint8_t pad1[SHM_LINE - 16];
	uint64_t space_arm;    /* line 2: non-zero while the writer waits for room */
	uint64_t short_since;  /* CLOCK_MONOTONIC ns of its first failed reservation, 0 with room */
	uint8_t pad2[SHM_LINE - 16];
	uint8_t rest[4096 - 3 * SHM_LINE];
};

#define SHM_LANE_RING_OFFSET 4096u
/* A lane's ring is cut in slices: the writer advances its limit by slice
 * marks, and an acknowledgement only matters when it crosses one. */
#define SHM_LANE_SLICES 64u

/* ---- the meta file: written by the broker only --------------------------- */

#define SHM_LANE_MAGIC 0x004e4c2d424d4853ull /* "SHMB-LN\0" */

enum shm_lane_kind {
	SHM_LANE_LOCAL = 1,    /* written by a publisher session's generation */
	SHM_LANE_RECEIVED = 2, /* written by the broker for a link */
};

enum shm_lane_state {
	SHM_LANE_OPEN = 1,
	SHM_LANE_CUT = 2,      /* read up to cut_pos, then the lane is over */
	SHM_LANE_BAD = 3,      /* readers drop it */
};

#define SHM_LANE_CLASS_UIDS 4

/* Written once at creation, covered by its checksum (CRC32C of bytes
 * 0..123). */
struct shm_lane_meta_hdr {
	uint64_t magic;
	uint32_t layout_version;
	uint32_t kind;         /* enum shm_lane_kind */
	uint64_t publisher;    /* the publisher's session id, or the link's number */
	uint32_t generation;   /* the publisher's owner generation (0: received) */
	uint32_t class_no;     /* which of the publisher's lanes of this generation */
	uint32_t class_uids[SHM_LANE_CLASS_UIDS]; /* who may read every topic in it */
	uint32_t nclass_uids;
	uint32_t pad0;
	uint64_t ring_size;
	uint64_t first_order;  /* the order (source sequence) of its first record */
	uint64_t broker_id;
	uint32_t number;       /* the broker's number for it (PROTO_LANE, PROTO_HOLDER): a
				* restarted broker re-adopts it under that number, which
				* its writer and readers know it by */
	uint8_t reserved[124 - 84];
	uint32_t checksum;
};

/* The line after the header: how the lane stands. */
struct shm_lane_meta_state {
	uint32_t state;        /* enum shm_lane_state */
	uint32_t pad0;
	uint64_t cut_pos;      /* CUT: the position the lane ends at */
	uint64_t cut_lane_seq; /* ... the lane sequence there */
	uint64_t cut_next_order; /* ... the order of the next record (in another lane) */
	uint8_t pad1[SHM_LINE - 32];
};

#define SHM_LANE_META_STATE_OFF 128u
/* One bit per topic id (2^20 of them, TOPIC_ID_MAX): the topics the lane
 * may carry; topic t is bit (t & 7) of byte t / 8.  A sparse file:
 * untouched pages cost nothing. */
#define SHM_LANE_TOPIC_BITS (1u << 20)
#define SHM_LANE_BITMAP_OFF 4096u
#define SHM_LANE_META_SIZE (SHM_LANE_BITMAP_OFF + SHM_LANE_TOPIC_BITS / 8)

/* ---- the hold file: written by the broker, mapped by the writer only ----- */

enum shm_hold_kind {
	SHM_HOLD_HOLD = 1,     /* a block reader: its cursor slot, at least its floor */
	SHM_HOLD_WATCH = 2,    /* a drop-oldest reader: for wake-ups only */
	SHM_HOLD_SPILL = 3,    /* the broker, copying into a reader's spool: its floor */
	SHM_HOLD_LINK = 4,     /* the broker, for a link: its floor */
};

struct shm_hold_hdr {
	uint64_t version;      /* +1 (release) after every change */
	uint64_t broker_arm;   /* the broker's arm word as a reader */
	uint32_t n;            /* entries in use are among the first n */
	uint32_t pad0;
	uint8_t pad1[SHM_LINE - 24];
};

/* One holder.  Its fields are valid between two equal loads of a live tag. */
struct shm_hold_ent {
	uint64_t tag;          /* bit 0: live; the rest counts the slot's reuses */
	uint32_t kind;         /* enum shm_hold_kind */
	uint32_t page;         /* HOLD/WATCH: the cursor page (its number in HOLDERS) */
	uint32_t slot;         /* ... and the slot in it */
	uint32_t arm_page;     /* HOLD/WATCH: the reader's arm page (its number in HOLDERS) */
	uint64_t reader;       /* a number for logs, not the reader's session id */
	uint64_t floor;        /* HOLD: the least it holds; SPILL/LINK: the broker's cursor */
	uint32_t arm_slot;     /* HOLD/WATCH: the reader's arm word in that page */
	uint8_t pad1[SHM_LINE - 44];
};

#define SHM_HOLD_SIZE 65536u
#define SHM_HOLD_MAX ((SHM_HOLD_SIZE - sizeof(struct shm_hold_hdr)) / sizeof(struct shm_hold_ent))
#define SHM_HOLD_LIVE 1ull

/* ---- a reader's cursor page: written by that reader generation ----------- */

#define SHM_CURSOR_SLOTS ((4096u - SHM_LINE) / 8u)

struct shm_cursor_page {
	/* line 0, broker-written: bit i set once slot i's hold was let go
	 * (until spools, the block timeout): its reader reads that lane on
	 * without holding.  Zero otherwise. */
	uint64_t let_go[SHM_LINE / 8];
	uint64_t slot[SHM_CURSOR_SLOTS]; /* per lane of the publisher: acknowledged up to here */
};

/* ---- an arm page: the sleep words of up to 504 readers of one uid -------- */

/* Broker-made, a sealed memfd per reader uid (and per 504 of its reader
 * generations); read-write for those readers, read-only for their
 * writers.  A reader about to sleep stores a fresh value into its arm
 * word, then sets its bit in line 0; a writer loads line 0 once per
 * commit and looks only at the arm words of its own readers whose bit
 * is set.  Shared by one uid's readers only: one can disturb only the
 * sleep of another process of its own uid (data-path.md, section 4). */
#define SHM_ARM_SLOTS ((4096u - SHM_LINE) / 8u)

struct shm_arm_page {
	uint64_t bits[SHM_LINE / 8]; /* line 0: bit i set while slot i's reader may sleep */
	uint64_t arm[SHM_ARM_SLOTS]; /* a fresh non-zero value per arming, 0 awake */
};

/* ---- a record in a lane: after struct shm_rec_hdr ------------------------ */

struct shm_lane_msg {
	uint32_t topic_id;     /* set in the lane's bitmap */
	uint32_t flags;        /* 0 */
	uint64_t order;        /* local: the source sequence; received: the frame's stream offset */
};

/* Received lanes only: the origin, after struct shm_lane_msg. */
struct shm_lane_origin {
	uint64_t src_broker;
	uint64_t src_session;
	uint64_t src_seq;
};

/* ---- what other processes rely on ---------------------------------------- */

static_assert(sizeof(struct shm_lane_wpage) == 4096, "writer page is one page");
static_assert(offsetof(struct shm_lane_wpage, reclaim) == 64, "reclaim on line 1");
static_assert(offsetof(struct shm_lane_wpage, committed) == 72, "committed on line 1");
static_assert(offsetof(struct shm_lane_wpage, space_arm) == 128, "space_arm on line 2");
static_assert(offsetof(struct shm_lane_wpage, short_since) == 136, "short_since on line 2");
static_assert(SHM_LANE_RING_OFFSET == sizeof(struct shm_lane_wpage), "ring after the writer page");
static_assert(sizeof(struct shm_lane_meta_hdr) == 128, "meta header size");
static_assert(offsetof(struct shm_lane_meta_hdr, publisher) == 16, "meta publisher");
static_assert(offsetof(struct shm_lane_meta_hdr, ring_size) == 56, "meta ring_size");
static_assert(offsetof(struct shm_lane_meta_hdr, number) == 80, "meta lane number");
static_assert(offsetof(struct shm_lane_meta_hdr, checksum) == 124, "meta checksum last");
static_assert(sizeof(struct shm_lane_meta_state) == SHM_LINE, "meta state is one line");
static_assert(offsetof(struct shm_lane_meta_state, cut_pos) == 8, "cut_pos");
static_assert(SHM_LANE_META_STATE_OFF == sizeof(struct shm_lane_meta_hdr), "state after header");
static_assert(SHM_LANE_META_STATE_OFF + SHM_LINE <= SHM_LANE_BITMAP_OFF, "bitmap after state");
static_assert(sizeof(struct shm_hold_hdr) == SHM_LINE, "hold header is one line");
static_assert(sizeof(struct shm_hold_ent) == SHM_LINE, "a hold entry is one line");
static_assert(offsetof(struct shm_hold_ent, floor) == 32, "hold floor");
static_assert(offsetof(struct shm_hold_ent, arm_page) == 20, "hold arm page");
static_assert(offsetof(struct shm_hold_ent, arm_slot) == 40, "hold arm slot");
static_assert(SHM_HOLD_MAX == 1023, "1023 holders a lane");
static_assert(sizeof(struct shm_cursor_page) == 4096, "cursor page is one page");
static_assert(SHM_CURSOR_SLOTS == 504, "504 lanes of one publisher a page");
static_assert(offsetof(struct shm_cursor_page, slot) == SHM_LINE, "slots from line 1");
static_assert(SHM_CURSOR_SLOTS <= 8 * sizeof(((struct shm_cursor_page *)0)->let_go), "a bit each");
static_assert(sizeof(struct shm_arm_page) == 4096, "arm page is one page");
static_assert(SHM_ARM_SLOTS == 504, "504 readers an arm page");
static_assert(SHM_ARM_SLOTS <= 8 * sizeof(((struct shm_arm_page *)0)->bits), "a bit each");
static_assert(sizeof(struct shm_lane_msg) == 16, "lane message header");
static_assert(sizeof(struct shm_lane_origin) == 24, "origin of a received record");
static_assert((SHM_REC_HDR_SIZE + sizeof(struct shm_lane_msg)) % SHM_REC_ALIGN == 0,
	      "lane payloads stay 8-byte aligned");

#endif
