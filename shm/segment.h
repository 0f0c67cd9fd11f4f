/*
 * shm/segment.h - create, map and validate the files of a session.
 *
 * A segment is a file in a private directory (mode 0600 in 0700) or, for
 * unit tests, a memfd.  Validation works on a private copy of the header
 * and checks magic, layout version, ring offset, ring sizes against the
 * file's real size, and the header checksum, before anything else in the
 * mapping is trusted.  This module does not decide where sessions live or
 * who may open them; the broker does.
 */
#ifndef SHM_SEGMENT_H
#define SHM_SEGMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shm/layout.h"

struct segment {
	int fd;
	uint8_t *base;
	size_t len;
};

#define SEGMENT_INIT { .fd = -1, .base = NULL, .len = 0 }

struct seg_rx_params {
	uint64_t session_id;
	uint64_t broker_id;
	uint32_t owner_uid;
	uint32_t policy;
	uint64_t rx_ring_size;
	uint64_t tx_ring_size;
};

static inline size_t segment_file_size(uint64_t ring_size)
{
	return SHM_RING_OFFSET + (size_t)ring_size;
}

/* True for a power of two within [SHM_RING_MIN, SHM_RING_MAX]. */
bool segment_ring_size_ok(uint64_t size);

/*
 * Open the directory at path, creating it with `mode` if absent.  It must
 * be a directory owned by the effective uid with no permission bits beyond
 * `mode`: -EPERM otherwise (someone else could swap files in it).
 */
int segment_dir_open(const char *path, mode_t mode, int *dirfd);

/* Create name in dirfd (O_EXCL, 0600), or a memfd when dirfd < 0; size it
 * to len bytes of zeros and map it read-write. */
int segment_create(int dirfd, const char *name, size_t len, struct segment *out);

/* Map an existing fd (the fd is taken over, even on error).  The length
 * is the file's size now; -EBADMSG if it is not a plausible segment size. */
int segment_map(int fd, bool writable, struct segment *out);

/* Unmap and close; safe on SEGMENT_INIT and twice. */
void segment_unmap(struct segment *s);

/* Write a fresh header (and checksum) into an rx / tx file. */
int segment_rx_format(struct segment *s, const struct seg_rx_params *p);
int segment_tx_format(struct segment *s, uint64_t session_id, uint32_t generation,
		      uint64_t tx_ring_size, uint64_t start_seq);

/*
 * Validate a mapped file; on success *hdr is a checked private copy.
 * -EBADMSG: not a segment of this kind, sizes wrong, or checksum wrong;
 * -EPROTONOSUPPORT: a layout version this build does not know.
 */
int segment_rx_validate(const struct segment *s, struct shm_seg_hdr *hdr);
int segment_tx_validate(const struct segment *s, struct shm_tx_hdr *hdr);

static inline struct shm_rx_ctrl *segment_rx_ctrl(const struct segment *s)
{
	return (struct shm_rx_ctrl *)(s->base + SHM_CTRL_OFF);
}

static inline struct shm_dlv_table *segment_dlv_table(const struct segment *s)
{
	return (struct shm_dlv_table *)(s->base + SHM_DLV_OFF);
}

static inline struct shm_tx_ctrl *segment_tx_ctrl(const struct segment *s)
{
	return (struct shm_tx_ctrl *)(s->base + SHM_CTRL_OFF);
}

static inline uint8_t *segment_ring_data(const struct segment *s)
{
	return s->base + SHM_RING_OFFSET;
}

#endif
