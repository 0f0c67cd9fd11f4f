/*
 * broker/lanefile.h - the files of a lane of the direct data path
 * (docs/design/data-path.md, section 1): make a lane's directory with its
 * data, meta and hold files, re-open one after a restart with every check
 * the design gives, cut it, mark it bad, remove it; and the sealed memfd
 * pages (wake pages, arm pages).
 *
 * Files only: no session, link or client is known here, nothing is
 * logged (a failure says why in lf->why for the caller's log), and no
 * descriptor is sent.  Where each descriptor goes:
 *   - the writer's data descriptor (O_RDWR) is opened under Landlock by
 *     harden_client_fd(b, lf->dirfd, LANEFILE_DATA, lf->data_fd), never
 *     handed out from here (the broker's own data_fd may truncate);
 *   - readers get data_ro and meta_ro, the writer meta_ro and hold_ro
 *     (O_RDONLY: mmap cannot make them writable, they cannot truncate).
 * The broker maps data read-only and must read it only under the SIGBUS
 * guard (guard_add): the writer can cut or punch it at any time.
 */
#ifndef BROKER_LANEFILE_H
#define BROKER_LANEFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm/lane.h"

#define LANEFILE_DATA "data"
#define LANEFILE_META "meta"
#define LANEFILE_HOLD "hold"

/* "link." + a link's name (64 at most, broker/wire.h) + "." + class + NUL */
#define LANEFILE_NAME_MAX 96
#define LANEFILE_LINK_NAME_MAX 64
/* The bitmap's pages (meta is sparse: each is allocated on its first topic). */
#define LANEFILE_BITMAP_PAGES (SHM_LANE_TOPIC_BITS / 8 / 4096)

struct lanefile_params {
	uint32_t kind;         /* SHM_LANE_LOCAL or SHM_LANE_RECEIVED */
	uint64_t publisher;    /* local: the publisher's session id; received: the link's number */
	uint32_t generation;   /* local: the owner generation; received: 0 */
	uint32_t class_no;     /* the lane's number among its publisher's (or link's) */
	uint32_t class_uids[SHM_LANE_CLASS_UIDS];
	uint32_t nclass_uids;
	uint64_t ring_size;    /* a power of two within [SHM_RING_MIN, SHM_RING_MAX] */
	uint64_t first_order;
	uint64_t broker_id;
	uint32_t number;       /* the broker's number for the lane (kept in meta's header) */
	const char *link_name; /* received: the link's name (its directory's middle part) */
};

struct lanefile {
	char name[LANEFILE_NAME_MAX]; /* its directory in lanes/ */
	int dirfd;             /* that directory (the writer's data fd is opened from it) */
	int data_fd;           /* O_RDWR, the broker's own: quarantine cuts it through this */
	int data_ro;           /* O_RDONLY: for readers */
	int meta_fd;           /* O_RDWR, the broker's own: allocates bitmap pages */
	int meta_ro;           /* O_RDONLY: for the writer and readers */
	int hold_ro;           /* O_RDONLY: for the writer */
	const uint8_t *data;   /* PROT_READ; a client's file: read under the guard only */
	size_t data_len;       /* 4096 + ring_size */
	uint8_t *meta;         /* read-write, SHM_LANE_META_SIZE */
	uint8_t *hold;         /* read-write, SHM_HOLD_SIZE */
	struct shm_lane_meta_hdr hdr; /* a checked private copy of meta's header */
	uint64_t data_blocks;  /* data's st_blocks when made or adopted (the sweep's mark) */
	uint32_t bitmap_pages; /* bit i: page i of the bitmap is allocated */
	char why[160];         /* after a failure: what failed, for the log */
};

/*
 * Make lanes/<publisher>.<generation>.<class_no> (local) or
 * lanes/link.<link_name>.<class_no> (received): the directory (0700,
 * never an existing one: -EEXIST), data (fully allocated, its broker line
 * written once), meta (sparse; header with its CRC32C, state OPEN) and
 * hold (fully allocated, zero), each 0600, all mapped.  On failure
 * nothing it made is left, *out holds no descriptor and out->why says
 * what failed.  -EINVAL: bad params; -EOPNOTSUPP: a filesystem that
 * cannot reserve blocks (a lane's files must be fully allocated).
 */
int lanefile_make(int lanes_dirfd, const struct lanefile_params *p, struct lanefile *out);

/*
 * Re-open lanes/<name> after a restart.  Every size comes from fstat
 * before anything is mapped, and the header is checked on a private copy
 * read with pread.  Refused, with out->why said:
 *   -ENOENT, -ELOOP, -EISDIR  a file missing, or a symlink or a directory in its place
 *   -EPERM       a file not a regular file of the broker's uid, or the
 *                directory open to others
 *   -EMSGSIZE    a file of the wrong size (meta, hold; data against ring_size)
 *   -EBADMSG     meta's magic is not a lane's
 *   -EPROTONOSUPPORT  a layout version this build does not know
 *   -EILSEQ      the header's CRC32C does not match
 *   -EINVAL      a field out of range, or the header not this directory's
 *   -ENODATA     data has lost blocks (a hole was punched in it)
 */
int lanefile_open(int lanes_dirfd, const char *name, struct lanefile *out);

/* Unmap and close; safe on a zeroed-then-failed lanefile and twice. */
void lanefile_close(struct lanefile *lf);

/* Unlink lanes/<name>'s three files and the directory (missing files are
 * no error).  Close the lanefile first or after: mappings stay valid. */
int lanefile_remove(int lanes_dirfd, const char *name);

/* Topic t is bit (t & 7) of byte SHM_LANE_BITMAP_OFF + t / 8.  Setting
 * it allocates its bitmap page first (-ENOSPC, not a SIGBUS, on a full
 * tmpfs).  -EINVAL for t >= SHM_LANE_TOPIC_BITS. */
int lanefile_topic_set(struct lanefile *lf, uint32_t topic_id);
bool lanefile_topic_isset(const struct lanefile *lf, uint32_t topic_id);

static inline struct shm_lane_meta_state *lanefile_state(const struct lanefile *lf)
{
	return (struct shm_lane_meta_state *)(lf->meta + SHM_LANE_META_STATE_OFF);
}

/* Write the cut fields, state unchanged (an owner switch's step 2 in
 * data-path.md section 7; zeros clear them when a switch is undone).
 * -EINVAL unless the lane is OPEN. */
int lanefile_cut_fields(struct lanefile *lf, uint64_t cut_pos, uint64_t cut_lane_seq,
			uint64_t cut_next_order);
/* The fields, then state CUT with a release store (a reader that sees CUT
 * sees the fields).  Again with the same fields on a CUT lane: 0 (a
 * restart finishing a cut); anything else on a CUT or BAD lane: -EINVAL. */
int lanefile_cut(struct lanefile *lf, uint64_t cut_pos, uint64_t cut_lane_seq,
		 uint64_t cut_next_order);
/* State BAD (release): readers drop the lane.  Final. */
void lanefile_set_bad(struct lanefile *lf);

/* What the lane costs its writer's uid: data, meta's allocated pages, hold. */
uint64_t lanefile_bytes(const struct lanefile *lf);

/*
 * A wake or arm page: a 4096-byte memfd (close-on-exec) sealed against
 * shrinking, growing and further seals, so nobody cuts it under another's
 * mapping.  *fd_out is read-write.
 */
int memfd_page_make(const char *name, int *fd_out);
/*
 * Whether a page a client hands back (REATTACH) is one: a read-write
 * descriptor of a 4096-byte regular file with no path (a memfd) that has
 * the three seals and no write seal (its users must map it writable).
 * 0, or -EMSGSIZE (not such a file), -EPERM (seals), -EACCES (not O_RDWR).
 */
int memfd_page_check(int fd);

#endif
