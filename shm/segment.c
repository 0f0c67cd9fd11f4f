/*
 * shm/segment.c - session files: create, map, format, validate.
 *
 * Must never: trust a header field before the checksum and the size
 * checks pass; map more than the file holds (a read past the end of a
 * file is SIGBUS, so sizes come from fstat, not from the header).
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shm/crc32c.h"
#include "shm/segment.h"

bool segment_ring_size_ok(uint64_t size)
{
	return size >= SHM_RING_MIN && size <= SHM_RING_MAX && (size & (size - 1)) == 0;
}

int segment_dir_open(const char *path, mode_t mode, int *dirfd)
{
	struct stat st;
	int fd;

	if (mkdir(path, mode) < 0 && errno != EEXIST)
		return -errno;
	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 07777 & ~mode)) {
		close(fd);
		return -EPERM;
	}
	*dirfd = fd;
	return 0;
}

int segment_create(int dirfd, const char *name, size_t len, struct segment *out)
{
	int fd, e;

	if (dirfd >= 0)
		fd = openat(dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	else
		fd = memfd_create(name ? name : "shmb-segment", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* size it and reserve its pages now: on a full tmpfs the create fails
	 * with -ENOSPC, rather than a later store into the mapping with SIGBUS */
	if (ftruncate(fd, (off_t)len) < 0 ||
	    (fallocate(fd, 0, 0, (off_t)len) < 0 && errno != EOPNOTSUPP)) {
		e = -errno;

		close(fd);
		if (dirfd >= 0)
			unlinkat(dirfd, name, 0);
		return e;
	}
	e = segment_map(fd, true, out);
	if (e < 0 && dirfd >= 0)
		unlinkat(dirfd, name, 0); /* a retry must not meet -EEXIST */
	return e;
}

int segment_map(int fd, bool writable, struct segment *out)
{
	struct stat st;
	void *p;
	int e;

	if (fstat(fd, &st) < 0) {
		e = -errno;
		goto err;
	}
	if (!S_ISREG(st.st_mode) || st.st_size < (off_t)segment_file_size(SHM_RING_MIN) ||
	    (uint64_t)st.st_size > segment_file_size(SHM_RING_MAX)) {
		e = -EBADMSG;
		goto err;
	}
	p = mmap(NULL, (size_t)st.st_size, writable ? PROT_READ | PROT_WRITE : PROT_READ,
		 MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		e = -errno;
		goto err;
	}
	*out = (struct segment){ .fd = fd, .base = p, .len = (size_t)st.st_size };
	return 0;
err:
	close(fd);
	return e;
}

void segment_unmap(struct segment *s)
{
	if (s->base)
		munmap(s->base, s->len);
	if (s->fd >= 0)
		close(s->fd);
	*s = (struct segment)SEGMENT_INIT;
}

static uint64_t realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int segment_rx_format(struct segment *s, const struct seg_rx_params *p)
{
	struct shm_seg_hdr h = {
		.magic = SHM_MAGIC_RX,
		.version = SHM_LAYOUT_VERSION,
		.ring_offset = SHM_RING_OFFSET,
		.session_id = p->session_id,
		.broker_id = p->broker_id,
		.owner_uid = p->owner_uid,
		.policy = p->policy,
		.rx_ring_size = p->rx_ring_size,
		.tx_ring_size = p->tx_ring_size,
		.created_ns = realtime_ns(),
	};

	if (!segment_ring_size_ok(p->rx_ring_size) || !segment_ring_size_ok(p->tx_ring_size) ||
	    s->len != segment_file_size(p->rx_ring_size) || p->policy > SHM_POLICY_DROP_OLDEST)
		return -EINVAL;
	h.checksum = crc32c(0, &h, offsetof(struct shm_seg_hdr, checksum));
	memcpy(s->base + SHM_SEG_HDR_OFF, &h, sizeof(h));
	return 0;
}

int segment_tx_format(struct segment *s, uint64_t session_id, uint32_t generation,
		      uint64_t tx_ring_size, uint64_t start_seq)
{
	struct shm_tx_hdr h = {
		.magic = SHM_MAGIC_TX,
		.version = SHM_LAYOUT_VERSION,
		.ring_offset = SHM_RING_OFFSET,
		.session_id = session_id,
		.generation = generation,
		.tx_ring_size = tx_ring_size,
		.start_seq = start_seq,
	};

	if (!segment_ring_size_ok(tx_ring_size) || s->len != segment_file_size(tx_ring_size))
		return -EINVAL;
	h.checksum = crc32c(0, &h, offsetof(struct shm_tx_hdr, checksum));
	memcpy(s->base + SHM_SEG_HDR_OFF, &h, sizeof(h));
	return 0;
}

int segment_rx_validate(const struct segment *s, struct shm_seg_hdr *hdr)
{
	struct shm_seg_hdr h;

	if (!s->base || s->len < SHM_RING_OFFSET)
		return -EBADMSG;
	memcpy(&h, s->base + SHM_SEG_HDR_OFF, sizeof(h));
	if (h.magic != SHM_MAGIC_RX)
		return -EBADMSG;
	/* another layout may put its checksum elsewhere: version first */
	if (h.version != SHM_LAYOUT_VERSION)
		return -EPROTONOSUPPORT;
	if (h.checksum != crc32c(0, &h, offsetof(struct shm_seg_hdr, checksum)))
		return -EBADMSG;
	if (h.ring_offset != SHM_RING_OFFSET || !segment_ring_size_ok(h.rx_ring_size) ||
	    !segment_ring_size_ok(h.tx_ring_size) || h.policy > SHM_POLICY_DROP_OLDEST ||
	    s->len != segment_file_size(h.rx_ring_size))
		return -EBADMSG;
	*hdr = h;
	return 0;
}

int segment_tx_validate(const struct segment *s, struct shm_tx_hdr *hdr)
{
	struct shm_tx_hdr h;

	if (!s->base || s->len < SHM_RING_OFFSET)
		return -EBADMSG;
	memcpy(&h, s->base + SHM_SEG_HDR_OFF, sizeof(h));
	if (h.magic != SHM_MAGIC_TX)
		return -EBADMSG;
	/* another layout may put its checksum elsewhere: version first */
	if (h.version != SHM_LAYOUT_VERSION)
		return -EPROTONOSUPPORT;
	if (h.checksum != crc32c(0, &h, offsetof(struct shm_tx_hdr, checksum)))
		return -EBADMSG;
	if (h.ring_offset != SHM_RING_OFFSET || !segment_ring_size_ok(h.tx_ring_size) ||
	    s->len != segment_file_size(h.tx_ring_size))
		return -EBADMSG;
	*hdr = h;
	return 0;
}
