/*
 * broker/lanefile.c - a lane's files (docs/design/data-path.md, sections
 * 1, 5 and 7): lanes/<name>/ with data, meta and hold, made whole or not
 * at all, re-opened after a restart only when every check passes; and
 * the sealed memfd pages that carry wake and arm words.
 *
 * data is written by the lane's writer, who can cut it, grow it or punch
 * holes in it; meta and hold are written by the broker alone and handed
 * out read-only.  So every size here comes from fstat before a mapping
 * is made, meta's header is checked on a copy read with pread, and data
 * is never read here at all (the broker reads it under the SIGBUS guard).
 *
 * Must never: reuse a lane's name (mkdir is the O_EXCL); leave half a
 * lane behind when making one fails; read a byte of a client-writable
 * file through a mapping; touch a bitmap page of the sparse meta before
 * its blocks are reserved (a SIGBUS in the broker on a full tmpfs).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker/lanefile.h"
#include "shm/atomics.h"
#include "shm/crc32c.h"
#include "shm/segment.h"

#define PAGE 4096u
#define HDR_CRC_LEN offsetof(struct shm_lane_meta_hdr, checksum)

static_assert(SHM_LANE_TOPIC_BITS / 8 % PAGE == 0, "the bitmap is whole pages");
static_assert(LANEFILE_BITMAP_PAGES <= 32, "one bit a bitmap page in bitmap_pages");
static_assert(SHM_LANE_META_STATE_OFF + sizeof(struct shm_lane_meta_state) <= PAGE,
	      "header and state in meta's first page");

__attribute__((format(printf, 2, 3)))
static void say(struct lanefile *lf, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(lf->why, sizeof(lf->why), fmt, ap);
	va_end(ap);
}

static void lanefile_reset(struct lanefile *lf)
{
	*lf = (struct lanefile){ .dirfd = -1, .data_fd = -1, .data_ro = -1, .meta_fd = -1,
				 .meta_ro = -1, .hold_ro = -1 };
}

/* A link's name as it may stand inside a directory name (broker/link-file.c's rule). */
static bool link_part_ok(const char *n, size_t len)
{
	if (!len || len > LANEFILE_LINK_NAME_MAX || n[0] == '.')
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= 'A' && n[i] <= 'Z') ||
		      (n[i] >= '0' && n[i] <= '9') || n[i] == '-' || n[i] == '_' || n[i] == '.'))
			return false;
	return true;
}

/* One path component that could be a lane's: no '/', no dot first. */
static bool name_ok(const char *name)
{
	size_t len = strnlen(name, LANEFILE_NAME_MAX);

	return len && len < LANEFILE_NAME_MAX && name[0] != '.' && !strchr(name, '/');
}

/* The directory name a header stands for, or -EINVAL (in lf->why). */
static int lane_name(struct lanefile *lf, uint32_t kind, uint64_t publisher, uint32_t gen,
		     uint32_t class_no, const char *link, size_t link_len)
{
	int n;

	if (kind == SHM_LANE_LOCAL)
		n = snprintf(lf->name, sizeof(lf->name), "%llu.%u.%u",
			     (unsigned long long)publisher, gen, class_no);
	else if (link && link_part_ok(link, link_len))
		n = snprintf(lf->name, sizeof(lf->name), "link.%.*s.%u", (int)link_len, link, class_no);
	else
		n = -1;
	if (n < 0 || (size_t)n >= sizeof(lf->name)) {
		say(lf, "no lane name for kind %u, link name %s", kind, link ? "refused" : "missing");
		return -EINVAL;
	}
	return 0;
}

/* What a header must say whoever wrote it (make and open alike). */
static const char *hdr_fields_bad(const struct shm_lane_meta_hdr *h)
{
	if (h->kind != SHM_LANE_LOCAL && h->kind != SHM_LANE_RECEIVED)
		return "unknown kind";
	if (h->kind == SHM_LANE_RECEIVED && h->generation != 0)
		return "a received lane with a generation";
	if (!segment_ring_size_ok(h->ring_size))
		return "ring size not a power of two within bounds";
	if (h->nclass_uids < 1 || h->nclass_uids > SHM_LANE_CLASS_UIDS)
		return "class uids not 1 to 4";
	return NULL;
}

/* ---- making ------------------------------------------------------------- */

/* Create dirfd/file (O_EXCL, 0600 whatever the umask), size len; alloc:
 * bytes from 0 up to alloc reserved (0 for none). */
static int file_make(struct lanefile *lf, const char *file, uint64_t len, uint64_t alloc)
{
	int fd = openat(lf->dirfd, file, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	int e;

	if (fd < 0) {
		e = -errno;
		say(lf, "cannot create %s/%s: %s", lf->name, file, strerror(-e));
		return e;
	}
	if (fchmod(fd, 0600) < 0 || ftruncate(fd, (off_t)len) < 0 ||
	    (alloc && fallocate(fd, 0, 0, (off_t)alloc) < 0)) {
		e = -errno;
		say(lf, "cannot size %s/%s to %llu bytes: %s", lf->name, file,
		    (unsigned long long)len, strerror(-e));
		close(fd);
		return e;
	}
	return fd;
}

/* A read-only descriptor of the file rw_fd is, by name (the directory is
 * the broker's, 0700); the inode is compared all the same. */
static int reopen_ro(struct lanefile *lf, const char *file, int rw_fd)
{
	struct stat a, b;
	int fd = openat(lf->dirfd, file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	int e;

	if (fd < 0) {
		e = -errno;
		say(lf, "cannot open %s/%s read-only: %s", lf->name, file, strerror(-e));
		return e;
	}
	if (fstat(fd, &a) < 0 || fstat(rw_fd, &b) < 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev) {
		say(lf, "%s/%s changed while it was being opened", lf->name, file);
		close(fd);
		return -ESTALE;
	}
	return fd;
}

static int map(struct lanefile *lf, const char *file, int fd, size_t len, int prot, void **out)
{
	void *p = mmap(NULL, len, prot, MAP_SHARED, fd, 0);
	int e;

	if (p == MAP_FAILED) {
		e = -errno;
		say(lf, "cannot map %s/%s: %s", lf->name, file, strerror(-e));
		return e;
	}
	*out = p;
	return 0;
}

/* data: all of it reserved; line 0 says whose it is, for a core file's reader. */
static int make_data(struct lanefile *lf)
{
	char line[SHM_LINE] = { 0 };
	struct stat st;
	void *p = NULL;
	int r;

	lf->data_len = SHM_LANE_RING_OFFSET + lf->hdr.ring_size;
	r = lf->data_fd = file_make(lf, LANEFILE_DATA, lf->data_len, lf->data_len);
	if (r < 0)
		return r;
	/* a received lane's long name may lose its end: this line is for people */
	snprintf(line, sizeof(line), "shmb lane %.53s", lf->name);
	if (pwrite(lf->data_fd, line, sizeof(line), 0) != (ssize_t)sizeof(line) ||
	    fstat(lf->data_fd, &st) < 0) {
		say(lf, "cannot write %s/data: %s", lf->name, strerror(errno));
		return -EIO;
	}
	/* every block was reserved just now: a later loss is the writer's doing */
	lf->data_blocks = (uint64_t)st.st_blocks;
	r = lf->data_ro = reopen_ro(lf, LANEFILE_DATA, lf->data_fd);
	if (r < 0)
		return r;
	r = map(lf, LANEFILE_DATA, lf->data_fd, lf->data_len, PROT_READ, &p);
	lf->data = p;
	return r;
}

static int make_hold(struct lanefile *lf)
{
	void *p = NULL;
	int fd, r;

	fd = file_make(lf, LANEFILE_HOLD, SHM_HOLD_SIZE, SHM_HOLD_SIZE);
	if (fd < 0)
		return fd;
	r = lf->hold_ro = reopen_ro(lf, LANEFILE_HOLD, fd);
	if (r >= 0)
		r = map(lf, LANEFILE_HOLD, fd, SHM_HOLD_SIZE, PROT_READ | PROT_WRITE, &p);
	close(fd);             /* the mapping keeps the file; nobody needs it writable again */
	if (r < 0)
		return r;
	lf->hold = p;
	return 0;
}

/* meta last: a lane whose meta checks out was made whole.  Sparse but
 * for its first page; the header goes in by pwrite before the mapping. */
static int make_meta(struct lanefile *lf)
{
	struct shm_lane_meta_state st = { .state = SHM_LANE_OPEN };
	void *p = NULL;
	int r;

	r = lf->meta_fd = file_make(lf, LANEFILE_META, SHM_LANE_META_SIZE, PAGE);
	if (r < 0)
		return r;
	lf->hdr.checksum = crc32c(0, &lf->hdr, HDR_CRC_LEN);
	if (pwrite(lf->meta_fd, &st, sizeof(st), SHM_LANE_META_STATE_OFF) != (ssize_t)sizeof(st) ||
	    pwrite(lf->meta_fd, &lf->hdr, sizeof(lf->hdr), 0) != (ssize_t)sizeof(lf->hdr)) {
		say(lf, "cannot write %s/meta: %s", lf->name, strerror(errno));
		return -EIO;
	}
	r = lf->meta_ro = reopen_ro(lf, LANEFILE_META, lf->meta_fd);
	if (r < 0)
		return r;
	r = map(lf, LANEFILE_META, lf->meta_fd, SHM_LANE_META_SIZE, PROT_READ | PROT_WRITE, &p);
	lf->meta = p;
	return r;
}

static int hdr_from_params(struct lanefile *lf, const struct lanefile_params *p)
{
	const char *bad;

	lf->hdr = (struct shm_lane_meta_hdr){
		.magic = SHM_LANE_MAGIC,
		.layout_version = SHM_LANE_LAYOUT_VERSION,
		.kind = p->kind,
		.publisher = p->publisher,
		.generation = p->generation,
		.class_no = p->class_no,
		.nclass_uids = p->nclass_uids,
		.ring_size = p->ring_size,
		.first_order = p->first_order,
		.broker_id = p->broker_id,
		.number = p->number,
	};
	if ((bad = hdr_fields_bad(&lf->hdr))) {
		say(lf, "cannot make a lane: %s", bad);
		return -EINVAL;
	}
	if ((p->kind == SHM_LANE_LOCAL) != !p->link_name) {
		say(lf, "cannot make a lane: a link name goes with a received lane, and only with one");
		return -EINVAL;
	}
	memcpy(lf->hdr.class_uids, p->class_uids, p->nclass_uids * sizeof(p->class_uids[0]));
	return lane_name(lf, p->kind, p->publisher, p->generation, p->class_no, p->link_name,
			 p->link_name ? strlen(p->link_name) : 0);
}

int lanefile_make(int lanes_dirfd, const struct lanefile_params *p, struct lanefile *out)
{
	int r;

	lanefile_reset(out);
	r = hdr_from_params(out, p);
	if (r < 0)
		return r;
	/* never an existing directory: a name once used is never used again */
	if (mkdirat(lanes_dirfd, out->name, 0700) < 0) {
		r = -errno;
		say(out, "cannot make lanes/%s: %s", out->name, strerror(-r));
		return r;
	}
	out->dirfd = openat(lanes_dirfd, out->name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (out->dirfd < 0 || fchmod(out->dirfd, 0700) < 0) {
		r = -errno;
		say(out, "cannot open lanes/%s: %s", out->name, strerror(-r));
	}
	if (r == 0)
		r = make_data(out);
	if (r >= 0)
		r = make_hold(out);
	if (r >= 0)
		r = make_meta(out);
	if (r >= 0)
		return 0;
	lanefile_close(out);
	lanefile_remove(lanes_dirfd, out->name);
	return r;
}

/* ---- re-opening ----------------------------------------------------------- */

/* Open dirfd/file read-write and check it is a regular file of the
 * broker's, closed to others, of exactly size bytes. */
static int file_open(struct lanefile *lf, const char *file, uint64_t size, struct stat *st)
{
	int fd = openat(lf->dirfd, file, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	int e;

	if (fd < 0) {
		e = -errno;
		say(lf, "cannot open %s/%s: %s", lf->name, file, strerror(-e));
		return e;
	}
	if (fstat(fd, st) < 0) {
		e = -errno;
		say(lf, "cannot look at %s/%s: %s", lf->name, file, strerror(-e));
	} else if (!S_ISREG(st->st_mode) || st->st_uid != geteuid() || (st->st_mode & 077)) {
		e = -EPERM;
		say(lf, "%s/%s is not a private file of the broker's", lf->name, file);
	} else if ((uint64_t)st->st_size != size) {
		e = -EMSGSIZE;
		say(lf, "%s/%s is %llu bytes, not %llu", lf->name, file,
		    (unsigned long long)st->st_size, (unsigned long long)size);
	} else {
		return fd;
	}
	close(fd);
	return e;
}

/* The directory this header was made for is the one it is in. */
static bool name_matches(struct lanefile *lf, const char *name)
{
	const struct shm_lane_meta_hdr *h = &lf->hdr;
	const char *dot = strrchr(name, '.');
	size_t plen = strlen("link.");

	if (h->kind == SHM_LANE_RECEIVED) {
		if (strncmp(name, "link.", plen) != 0 || !dot || dot < name + plen)
			return false;
		if (lane_name(lf, h->kind, h->publisher, 0, h->class_no, name + plen,
			      (size_t)(dot - name - plen)) < 0)
			return false;
	} else if (lane_name(lf, h->kind, h->publisher, h->generation, h->class_no, NULL, 0) < 0) {
		return false;
	}
	return strcmp(lf->name, name) == 0;
}

/* meta's header and state, checked on copies read with pread. */
static int meta_check(struct lanefile *lf, const char *name)
{
	struct shm_lane_meta_state st;
	struct shm_lane_meta_hdr *h = &lf->hdr;
	const char *bad;

	if (pread(lf->meta_fd, h, sizeof(*h), 0) != (ssize_t)sizeof(*h) ||
	    pread(lf->meta_fd, &st, sizeof(st), SHM_LANE_META_STATE_OFF) != (ssize_t)sizeof(st)) {
		say(lf, "cannot read %s/meta: %s", name, strerror(errno));
		return -EIO;
	}
	if (h->magic != SHM_LANE_MAGIC) {
		say(lf, "%s/meta is not a lane's (magic %016llx)", name, (unsigned long long)h->magic);
		return -EBADMSG;
	}
	/* another layout may put its checksum elsewhere: version first */
	if (h->layout_version != SHM_LANE_LAYOUT_VERSION) {
		say(lf, "%s/meta has layout version %u, this build knows %u", name,
		    h->layout_version, SHM_LANE_LAYOUT_VERSION);
		return -EPROTONOSUPPORT;
	}
	if (h->checksum != crc32c(0, h, HDR_CRC_LEN)) {
		say(lf, "%s/meta's header fails its checksum", name);
		return -EILSEQ;
	}
	bad = hdr_fields_bad(h);
	if (!bad && st.state != SHM_LANE_OPEN && st.state != SHM_LANE_CUT && st.state != SHM_LANE_BAD)
		bad = "unknown state";
	if (!bad && !name_matches(lf, name))
		bad = "made for another directory";
	snprintf(lf->name, sizeof(lf->name), "%s", name); /* name_matches wrote there */
	if (bad) {
		say(lf, "%s/meta: %s", name, bad);
		return -EINVAL;
	}
	return 0;
}

/* Which bitmap pages hold blocks (a page is allocated before its first bit). */
static uint32_t bitmap_scan(int fd)
{
	uint32_t pages = 0;
	off_t off = SHM_LANE_BITMAP_OFF;

	while (off < (off_t)SHM_LANE_META_SIZE) {
		off_t d = lseek(fd, off, SEEK_DATA), h;

		if (d < 0 && errno == ENXIO)
			break;
		h = d < 0 ? -1 : lseek(fd, d, SEEK_HOLE);
		if (h < 0)        /* no hole finding here: count it all, the higher cost */
			return (uint32_t)((1ull << LANEFILE_BITMAP_PAGES) - 1);
		for (off_t p = d / PAGE * PAGE; p < h && p < (off_t)SHM_LANE_META_SIZE; p += PAGE)
			pages |= 1u << ((p - SHM_LANE_BITMAP_OFF) / PAGE);
		off = h;
	}
	return pages;
}

static int open_files(struct lanefile *lf, const char *name)
{
	struct stat st;
	void *p = NULL;
	int fd, r;

	r = lf->meta_fd = file_open(lf, LANEFILE_META, SHM_LANE_META_SIZE, &st);
	if (r >= 0)
		r = meta_check(lf, name);
	if (r < 0)
		return r;
	lf->data_len = SHM_LANE_RING_OFFSET + lf->hdr.ring_size;
	r = lf->data_fd = file_open(lf, LANEFILE_DATA, lf->data_len, &st);
	if (r < 0)
		return r;
	/* fallocate reserved every block; fewer now is a hole the writer punched */
	if ((uint64_t)st.st_blocks * 512 < lf->data_len) {
		say(lf, "%s/data has lost blocks (%llu of %zu bytes left)", name,
		    (unsigned long long)st.st_blocks * 512, lf->data_len);
		return -ENODATA;
	}
	lf->data_blocks = (uint64_t)st.st_blocks;
	fd = file_open(lf, LANEFILE_HOLD, SHM_HOLD_SIZE, &st);
	if (fd < 0)
		return fd;
	r = lf->hold_ro = reopen_ro(lf, LANEFILE_HOLD, fd);
	if (r >= 0)
		r = map(lf, LANEFILE_HOLD, fd, SHM_HOLD_SIZE, PROT_READ | PROT_WRITE, &p);
	close(fd);
	if (r < 0)
		return r;
	lf->hold = p;
	if ((r = lf->data_ro = reopen_ro(lf, LANEFILE_DATA, lf->data_fd)) < 0 ||
	    (r = lf->meta_ro = reopen_ro(lf, LANEFILE_META, lf->meta_fd)) < 0)
		return r;
	/* data's size was checked above; it is mapped, never read, here */
	if ((r = map(lf, LANEFILE_DATA, lf->data_fd, lf->data_len, PROT_READ, &p)) < 0)
		return r;
	lf->data = p;
	if ((r = map(lf, LANEFILE_META, lf->meta_fd, SHM_LANE_META_SIZE, PROT_READ | PROT_WRITE, &p)) < 0)
		return r;
	lf->meta = p;
	lf->bitmap_pages = bitmap_scan(lf->meta_fd);
	return 0;
}

int lanefile_open(int lanes_dirfd, const char *lane, struct lanefile *out)
{
	char name[LANEFILE_NAME_MAX];
	struct stat st;
	int r;

	/* a copy first: lane may be out->name, which the reset clears */
	snprintf(name, sizeof(name), "%s", lane);
	lanefile_reset(out);
	if (!name_ok(name) || strlen(lane) >= sizeof(name)) {
		say(out, "'%.64s' cannot be a lane's name", name);
		return -EINVAL;
	}
	snprintf(out->name, sizeof(out->name), "%s", name);
	out->dirfd = openat(lanes_dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (out->dirfd < 0) {
		r = -errno;
		say(out, "cannot open lanes/%s: %s", name, strerror(-r));
		return r;
	}
	if (fstat(out->dirfd, &st) < 0 || st.st_uid != geteuid() || (st.st_mode & 077)) {
		say(out, "lanes/%s is not a private directory of the broker's", name);
		r = -EPERM;
	} else {
		r = open_files(out, name);
	}
	if (r < 0)
		lanefile_close(out);
	return r;
}

/* ---- closing and removing ----------------------------------------------- */

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

void lanefile_close(struct lanefile *lf)
{
	if (lf->data)
		munmap((void *)lf->data, lf->data_len);
	if (lf->meta)
		munmap(lf->meta, SHM_LANE_META_SIZE);
	if (lf->hold)
		munmap(lf->hold, SHM_HOLD_SIZE);
	lf->data = lf->meta = lf->hold = NULL;
	close_fd(&lf->dirfd);
	close_fd(&lf->data_fd);
	close_fd(&lf->data_ro);
	close_fd(&lf->meta_fd);
	close_fd(&lf->meta_ro);
	close_fd(&lf->hold_ro);
}

int lanefile_remove(int lanes_dirfd, const char *name)
{
	static const char *const files[] = { LANEFILE_META, LANEFILE_HOLD, LANEFILE_DATA };
	int dfd, r = 0;

	if (!name_ok(name))
		return -EINVAL;
	dfd = openat(lanes_dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (dfd < 0)
		return -errno;
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		if (unlinkat(dfd, files[i], 0) < 0 && errno != ENOENT && !r)
			r = -errno;
	close(dfd);
	if (unlinkat(lanes_dirfd, name, AT_REMOVEDIR) < 0 && !r)
		r = -errno;
	return r;
}

/* ---- the meta words ------------------------------------------------------- */

int lanefile_topic_set(struct lanefile *lf, uint32_t topic_id)
{
	uint8_t *byte, mask = (uint8_t)(1u << (topic_id & 7));
	uint32_t page;

	if (topic_id >= SHM_LANE_TOPIC_BITS)
		return -EINVAL;
	byte = lf->meta + SHM_LANE_BITMAP_OFF + topic_id / 8;
	page = topic_id / 8 / PAGE;
	if (!(lf->bitmap_pages & (1u << page))) {
		/* reserve the page first: a full tmpfs says -ENOSPC here
		 * rather than SIGBUS at the store below */
		if (fallocate(lf->meta_fd, 0, SHM_LANE_BITMAP_OFF + (off_t)page * PAGE, PAGE) < 0)
			return -errno;
		lf->bitmap_pages |= 1u << page;
	}
	/* the broker is this byte's only writer; readers load it after the
	 * descriptor or message that names the topic */
	store_release(byte, (uint8_t)(load_relaxed(byte) | mask));
	return 0;
}

bool lanefile_topic_isset(const struct lanefile *lf, uint32_t topic_id)
{
	if (topic_id >= SHM_LANE_TOPIC_BITS || !(lf->bitmap_pages & (1u << (topic_id / 8 / PAGE))))
		return false;      /* an unallocated page is not read (it would allocate) */
	return load_relaxed(lf->meta + SHM_LANE_BITMAP_OFF + topic_id / 8) & (1u << (topic_id & 7));
}

int lanefile_cut_fields(struct lanefile *lf, uint64_t cut_pos, uint64_t cut_lane_seq,
			uint64_t cut_next_order)
{
	struct shm_lane_meta_state *st = lanefile_state(lf);

	if (load_relaxed(&st->state) != SHM_LANE_OPEN)
		return -EINVAL;
	/* read only after CUT, which a release store publishes */
	store_relaxed(&st->cut_pos, cut_pos);
	store_relaxed(&st->cut_lane_seq, cut_lane_seq);
	store_relaxed(&st->cut_next_order, cut_next_order);
	return 0;
}

int lanefile_cut(struct lanefile *lf, uint64_t cut_pos, uint64_t cut_lane_seq,
		 uint64_t cut_next_order)
{
	struct shm_lane_meta_state *st = lanefile_state(lf);

	if (load_relaxed(&st->state) == SHM_LANE_CUT)
		return load_relaxed(&st->cut_pos) == cut_pos &&
		       load_relaxed(&st->cut_lane_seq) == cut_lane_seq &&
		       load_relaxed(&st->cut_next_order) == cut_next_order ? 0 : -EINVAL;
	if (lanefile_cut_fields(lf, cut_pos, cut_lane_seq, cut_next_order) < 0)
		return -EINVAL;
	/* pairs with a reader's load_acquire of state: CUT brings the fields */
	store_release(&st->state, (uint32_t)SHM_LANE_CUT);
	return 0;
}

void lanefile_set_bad(struct lanefile *lf)
{
	store_release(&lanefile_state(lf)->state, (uint32_t)SHM_LANE_BAD);
}

uint64_t lanefile_bytes(const struct lanefile *lf)
{
	/* meta's first page (header, state) is always allocated */
	uint64_t meta = PAGE + (uint64_t)__builtin_popcount(lf->bitmap_pages) * PAGE;

	return lf->data_len + meta + SHM_HOLD_SIZE;
}

/* ---- sealed memfd pages ----------------------------------------------------- */

#define PAGE_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)
#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

int memfd_page_make(const char *name, int *fd_out)
{
	int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	int e;

	if (fd < 0)
		return -errno;
	/* reserved now: a full memory cgroup fails here, not at a peer's store */
	if (ftruncate(fd, PAGE) < 0 || fallocate(fd, 0, 0, PAGE) < 0 ||
	    fcntl(fd, F_ADD_SEALS, PAGE_SEALS) < 0) {
		e = -errno;
		close(fd);
		return e;
	}
	*fd_out = fd;
	return 0;
}

int memfd_page_check(int fd)
{
	struct stat st;
	int fl, seals;

	/* no path (nlink 0): nobody could have opened it anew and cut it */
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size != PAGE || st.st_nlink != 0)
		return -EMSGSIZE;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || (fl & O_ACCMODE) != O_RDWR)
		return -EACCES;
	seals = fcntl(fd, F_GET_SEALS);
	/* a write seal would keep the page's users from mapping it writable */
	if (seals < 0 || (seals & PAGE_SEALS) != PAGE_SEALS ||
	    (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)))
		return -EPERM;
	return 0;
}
