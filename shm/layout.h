/*
 * shm/layout.h - the bytes two processes agree on.
 *
 * A session is two files (docs/protocol.md, docs/design/segments.md):
 *
 *   sessions/<id>/rx          written by the broker only; a client maps it
 *                             read-only.  Segment header, broker-written
 *                             counters and futex words, then the RX ring.
 *   sessions/<id>/tx.<gen>    written by the client of generation <gen>.
 *                             TX header, client-written counters
 *                             (rx_acked, waiter counts), then the TX ring.
 *
 * So a client can corrupt only what it writes itself, and a fenced-off
 * owner loses its write path with its TX file.
 *
 * Everything here is fixed-width with explicit padding; every offset the
 * other process relies on is pinned by a static_assert.  Nothing in this
 * file is policy: no sockets, no topics, no sessions beyond their ids.
 * Values in shared memory are host byte order (a host-local broker).
 */
#ifndef SHM_LAYOUT_H
#define SHM_LAYOUT_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#define SHM_CACHELINE 64u
#define SHM_PAGE 4096u

/* "SHMB-RX\0" and "SHMB-TX\0" read as little-endian 64-bit words. */
#define SHM_MAGIC_RX 0x0058522d424d4853ull
#define SHM_MAGIC_TX 0x0058542d424d4853ull
#define SHM_LAYOUT_VERSION 1u

/* Ring sizes: a power of two between these bounds. */
#define SHM_RING_MIN (4u * 1024u)
#define SHM_RING_MAX (1ull << 30)

/*
 * The fixed area before a ring: header on its own cache lines, then the
 * counters, padded to a page so that the ring starts page aligned.
 */
#define SHM_RING_OFFSET SHM_PAGE

/* ---- the rx file ------------------------------------------------------ */

/*
 * Segment header.  Written once when the segment is created and never
 * again, so the checksum covers every field before it.  The generation is
 * not here: it changes, and lives in the broker-written counters.
 */
struct shm_seg_hdr {
	uint64_t magic;        /* SHM_MAGIC_RX */
	uint32_t version;      /* SHM_LAYOUT_VERSION */
	uint32_t ring_offset;  /* SHM_RING_OFFSET: where the RX ring starts */
	uint64_t session_id;   /* never reused (docs/design/owners.md, ids) */
	uint64_t broker_id;    /* the broker that created the segment */
	uint32_t owner_uid;    /* informational; the broker trusts its own table */
	uint32_t policy;       /* enum shm_policy */
	uint64_t rx_ring_size; /* bytes, power of two */
	uint64_t tx_ring_size; /* bytes, power of two, for every tx.<gen> file */
	uint64_t created_ns;   /* CLOCK_REALTIME at creation */
	uint8_t reserved[60];
	uint32_t checksum;     /* CRC32C of bytes [0, offsetof(checksum)) */
};

enum shm_policy {
	SHM_POLICY_BLOCK = 0,       /* full RX ring holds publishers back */
	SHM_POLICY_DROP_OLDEST = 1, /* full RX ring drops its oldest records */
};

/*
 * Broker-written counters.  Each group is written by one side of one ring
 * and sits on its own cache line so that the producer and the consumer of
 * a ring never share a line.
 */
struct shm_rx_ctrl {
	/* line 0: the RX ring's producer (broker) */
	uint64_t rx_write;        /* published write position (bytes) */
	uint64_t rx_write_seq;    /* sequence of the next record written */
	uint64_t rx_drop;         /* drop-oldest: records before this are gone */
	uint32_t rx_signal;       /* futex: bumped after RX records are published */
	uint32_t rx_pad0;
	uint8_t pad0[32];

	/* line 1: the TX ring's consumer (broker) */
	uint64_t tx_read;         /* broker's read position in the current TX file */
	uint64_t tx_read_seq;     /* sequence of the next TX record it will read */
	uint32_t tx_space_signal; /* futex: bumped when tx_read advances */
	uint32_t broker_waiting;  /* SHM_WAIT_*: what should wake the sleeping broker */
	uint32_t tx_read_gen;     /* the generation whose file tx_read describes; a
				     new generation's file is read from its start
				     until this says otherwise (recovery) */
	uint32_t pad1a;
	uint8_t pad1[32];

	/* line 2: ownership (docs/design/owners.md) */
	uint32_t generation;      /* current owner generation */
	uint32_t drain_generation;/* TX file still being drained, 0 if none */
	uint64_t drain_read;      /* read position in tx.<drain_generation> */
	uint64_t drain_read_seq;
	uint64_t drain_end;       /* where tx.<drain_generation> was cut off (its */
	uint64_t drain_end_seq;   /* fence lies in client-writable memory) */
	uint8_t pad2[24];
};

/*
 * The delivery table (docs/design/recovery.md, delivery tables),
 * broker-written, after the counters: for each source with records still in
 * flight to this subscriber, the next source sequence it has not been given.
 * The broker updates an entry after the RX records it covers are committed,
 * then publishes (pos, seq): the RX write position up to which the table is
 * complete.  A restarted broker walks the ring from there over valid commit
 * words and raises entries from the records it finds, so a fan-out cut by a
 * crash resumes without delivering anything twice.  An entry with src_session
 * 0 is free.  Clients do not read it.
 */
#define SHM_DLV_OFF 512u
#define SHM_DLV_MAX 128u

struct shm_dlv {
	uint64_t src_broker;
	uint64_t src_session;
	uint64_t next_seq;
};

struct shm_dlv_table {
	uint64_t pos;        /* RX write position the entries are complete up to */
	uint64_t seq;        /* RX sequence at pos */
	uint32_t n;          /* entries in use are among the first n */
	uint8_t pad[44];
	struct shm_dlv ent[SHM_DLV_MAX];
};

/* Bits of shm_rx_ctrl.broker_waiting. */
#define SHM_WAIT_TX 0x1u       /* the broker sleeps: wake it after a TX commit */
#define SHM_WAIT_RX_SPACE 0x2u /* ... and after rx_acked moves (it is full) */

/* ---- the tx.<gen> file ---------------------------------------------- */

struct shm_tx_hdr {
	uint64_t magic;        /* SHM_MAGIC_TX */
	uint32_t version;      /* SHM_LAYOUT_VERSION */
	uint32_t ring_offset;  /* SHM_RING_OFFSET */
	uint64_t session_id;
	uint32_t generation;   /* the owner generation this file belongs to */
	uint32_t reserved0;
	uint64_t tx_ring_size;
	uint64_t start_seq;    /* source sequence of the first record (docs/design/owners.md) */
	uint8_t reserved[76];
	uint32_t checksum;     /* CRC32C of bytes [0, offsetof(checksum)) */
};

/* Bits of shm_tx_ctrl.client_flags. */
#define SHM_CLIENT_POLLER 0x1u /* wants a byte on its pipe when RX fills */

/* Client-written counters: never trusted by the broker
 * (docs/design/segments.md, trust). */
struct shm_tx_ctrl {
	/* line 0: the TX ring's producer (client) */
	uint64_t tx_write;         /* published write position (a hint) */
	uint32_t tx_signal;        /* futex: bumped after TX records commit or
	                            * rx_acked advances (wakes the broker) */
	uint32_t tx_space_waiters; /* publishers sleeping on tx_space_signal */
	uint8_t pad0[48];

	/* line 1: the RX ring's consumer (client) */
	uint64_t rx_acked;         /* cumulative: bytes of RX the client is done with */
	uint32_t rx_waiters;       /* readers sleeping on rx_signal */
	uint32_t client_flags;     /* SHM_CLIENT_* */
	uint8_t pad1[48];
};

/* ---- records --------------------------------------------------------- */

/*
 * Every record starts 8-byte aligned with this header.  The first word is
 * the commit word (docs/design/rings.md, commit word): bits 0-31 the
 * record's length in bytes including this header (unpadded), bits 32-63 the
 * low 32 bits of its sequence.  It is written last, by a compare-and-swap
 * from 0 with release ordering; 0 means "nothing here yet".  A commit
 * word whose length has SHM_COMMIT_PAD set is a padding record that fills
 * the ring to its end; it is only 8 bytes of header (the commit word), it
 * carries the sequence of the record that follows, and it consumes none.
 * SHM_COMMIT_FENCED, swapped in by the consumer, ends the ring for good.
 */
struct shm_rec_hdr {
	uint64_t commit;
	uint16_t type;     /* enum shm_rec_type */
	uint16_t flags;    /* free for the layer above */
	uint32_t gen;      /* the writer's generation */
	uint64_t seq;      /* full 64-bit sequence number */
};

enum shm_rec_type {
	SHM_REC_DATA = 1,    /* a message */
	SHM_REC_CONTROL = 2, /* an in-band notice of the layer above */
	SHM_REC_TYPE_MAX = 2,
};

#define SHM_COMMIT_PAD 0x80000000u
#define SHM_COMMIT_FENCED UINT64_MAX
#define SHM_REC_ALIGN 8u
#define SHM_REC_HDR_SIZE ((uint32_t)sizeof(struct shm_rec_hdr))

static inline uint64_t shm_commit_word(uint32_t len, uint64_t seq)
{
	return (uint64_t)len | ((uint64_t)(uint32_t)seq << 32);
}

static inline uint32_t shm_commit_len(uint64_t c)
{
	return (uint32_t)c;
}

static inline uint32_t shm_commit_seq_lo(uint64_t c)
{
	return (uint32_t)(c >> 32);
}

/*
 * Messages: the payload of a data record starts with one of these.  A TX
 * record names its topic (an id interned over the control socket); the
 * broker delivers it with the topic and the source (broker, session,
 * source sequence), which tells a redelivery from a new message.
 */
struct shm_msg_tx {
	uint32_t topic_id;
	uint32_t reserved;
};

/* Bits of shm_msg_rx.flags. */
#define SHM_RX_SPOOLED 0x1u /* copied from a lane by the broker (a spill): libshmb
			     * skips lane records of that publisher up to it */

struct shm_msg_rx {
	uint32_t topic_id;
	uint32_t flags;
	uint64_t src_broker;
	uint64_t src_session;
	uint64_t src_seq;
};

/* ---- the layout other processes rely on ------------------------------ */

static_assert(sizeof(struct shm_seg_hdr) == 128, "segment header size");
static_assert(offsetof(struct shm_seg_hdr, session_id) == 16, "session_id");
static_assert(offsetof(struct shm_seg_hdr, rx_ring_size) == 40, "rx_ring_size");
static_assert(offsetof(struct shm_seg_hdr, checksum) == 124, "seg checksum");
static_assert(sizeof(struct shm_rx_ctrl) == 3 * SHM_CACHELINE, "rx ctrl size");
static_assert(offsetof(struct shm_rx_ctrl, tx_read) == SHM_CACHELINE, "tx_read line");
static_assert(offsetof(struct shm_rx_ctrl, generation) == 2 * SHM_CACHELINE, "gen line");
static_assert(offsetof(struct shm_rx_ctrl, rx_signal) % 4 == 0, "futex word aligned");
static_assert(offsetof(struct shm_rx_ctrl, tx_space_signal) % 4 == 0, "futex word aligned");
static_assert(sizeof(struct shm_tx_hdr) == 128, "tx header size");
static_assert(offsetof(struct shm_tx_hdr, generation) == 24, "tx generation");
static_assert(offsetof(struct shm_tx_hdr, checksum) == 124, "tx checksum");
static_assert(sizeof(struct shm_tx_ctrl) == 2 * SHM_CACHELINE, "tx ctrl size");
static_assert(offsetof(struct shm_tx_ctrl, rx_acked) == SHM_CACHELINE, "rx_acked line");
static_assert(sizeof(struct shm_rec_hdr) == 24, "record header size");
static_assert(offsetof(struct shm_rec_hdr, commit) == 0, "commit word first");
static_assert(offsetof(struct shm_rec_hdr, seq) == 16, "record seq");
static_assert(sizeof(struct shm_rec_hdr) % SHM_REC_ALIGN == 0, "header keeps alignment");
static_assert(sizeof(struct shm_msg_tx) == 8, "tx message header");
static_assert(sizeof(struct shm_msg_rx) == 32, "rx message header");

/* Where things live inside a mapped file. */
#define SHM_SEG_HDR_OFF 0u
#define SHM_CTRL_OFF 128u
static_assert(SHM_CTRL_OFF % SHM_CACHELINE == 0, "counters start a cache line");
static_assert(SHM_CTRL_OFF + sizeof(struct shm_rx_ctrl) <= SHM_RING_OFFSET, "rx fixed area fits");
static_assert(SHM_CTRL_OFF + sizeof(struct shm_rx_ctrl) <= SHM_DLV_OFF, "table after counters");
static_assert(SHM_DLV_OFF + sizeof(struct shm_dlv_table) <= SHM_RING_OFFSET, "table fits");
static_assert(sizeof(struct shm_dlv_table) == 64 + 24 * SHM_DLV_MAX, "table size");
static_assert(SHM_CTRL_OFF + sizeof(struct shm_tx_ctrl) <= SHM_RING_OFFSET, "tx fixed area fits");

#endif
