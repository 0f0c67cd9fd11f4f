/*
 * tests/unit/test-lanefile.c - a lane's files (broker/lanefile.c): made
 * and re-opened with equal fields, never made twice, refused when any
 * check fails (and nothing leaks), topic bits, the cut, removal, failures
 * half way leaving nothing, and the sealed memfd pages.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker/lanefile.h"
#include "harness.h"
#include "shm/crc32c.h"

#define RING 65536u

static char tmpdir[256];
static int lanes = -1;

/* A fresh SHMB-like directory with an empty lanes/ (0700). */
static void mk_tmp(void)
{
	char path[300];

	snprintf(tmpdir, sizeof(tmpdir), "/dev/shm/shmb-test-lane.XXXXXX");
	CU_ASSERT_FATAL(mkdtemp(tmpdir) != NULL);
	snprintf(path, sizeof(path), "%s/lanes", tmpdir);
	CU_ASSERT_FATAL(mkdir(path, 0700) == 0);
	lanes = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	CU_ASSERT_FATAL(lanes >= 0);
}

static void rm_tmp(void)
{
	char cmd[300];

	close(lanes);
	lanes = -1;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	CU_ASSERT(system(cmd) == 0);
}

static struct lanefile_params local_params(uint32_t class_no)
{
	return (struct lanefile_params){
		.kind = SHM_LANE_LOCAL, .publisher = 42, .generation = 3, .class_no = class_no,
		.class_uids = { 1000, 0 }, .nclass_uids = 2, .ring_size = RING,
		.first_order = 100, .broker_id = 9, .number = 77,
	};
}

/* Entries in a directory, "." and ".." aside. */
static int entries(int dirfd, const char *sub)
{
	int fd = openat(dirfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct dirent *e;
	DIR *d;
	int n = 0;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	while ((e = readdir(d)))
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(d);
	return n;
}

static int open_fds(void)
{
	return entries(AT_FDCWD, "/proc/self/fd");
}

static uint64_t blocks_of(int dirfd, const char *name)
{
	struct stat st;

	return fstatat(dirfd, name, &st, 0) == 0 ? (uint64_t)st.st_blocks * 512 : 0;
}

static unsigned mode_of(int dirfd, const char *name)
{
	struct stat st;

	return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 ? st.st_mode & 07777 : 0;
}

static int accmode(int fd)
{
	return fcntl(fd, F_GETFL) & O_ACCMODE;
}

static void test_make_open_round_trip(void)
{
	struct lanefile_params p = local_params(0);
	struct lanefile a, b;
	struct shm_lane_meta_hdr h;
	char line[SHM_LINE];

	mk_tmp();
	CU_ASSERT_FATAL(lanefile_make(lanes, &p, &a) == 0);
	CU_ASSERT_STRING_EQUAL(a.name, "42.3.0");
	CU_ASSERT(mode_of(lanes, "42.3.0") == 0700);
	CU_ASSERT(mode_of(a.dirfd, "data") == 0600 && mode_of(a.dirfd, "meta") == 0600 &&
		  mode_of(a.dirfd, "hold") == 0600);
	/* data and hold fully allocated, meta only its first page (sparse) */
	CU_ASSERT(blocks_of(a.dirfd, "data") == 4096 + RING);
	CU_ASSERT(blocks_of(a.dirfd, "hold") == SHM_HOLD_SIZE);
	CU_ASSERT(blocks_of(a.dirfd, "meta") == 4096);
	CU_ASSERT(lanefile_bytes(&a) == 4096 + RING + 4096 + SHM_HOLD_SIZE);
	CU_ASSERT(a.data_len == 4096 + RING && a.data_blocks * 512 == 4096 + RING);
	/* who made it, for a core file's reader */
	CU_ASSERT(pread(a.data_ro, line, sizeof(line), 0) == sizeof(line));
	CU_ASSERT(strncmp(line, "shmb lane 42.3.0", 16) == 0);
	CU_ASSERT(memcmp(a.data, line, sizeof(line)) == 0);
	/* the header on the file, by its readers' descriptor */
	CU_ASSERT(pread(a.meta_ro, &h, sizeof(h), 0) == sizeof(h));
	CU_ASSERT(h.magic == SHM_LANE_MAGIC && h.layout_version == SHM_LANE_LAYOUT_VERSION);
	CU_ASSERT(h.checksum == crc32c(0, &h, offsetof(struct shm_lane_meta_hdr, checksum)));
	CU_ASSERT(h.kind == SHM_LANE_LOCAL && h.publisher == 42 && h.generation == 3 &&
		  h.class_no == 0 && h.nclass_uids == 2 && h.class_uids[0] == 1000 &&
		  h.class_uids[1] == 0 && h.ring_size == RING && h.first_order == 100 &&
		  h.broker_id == 9 && h.number == 77);
	CU_ASSERT(lanefile_state(&a)->state == SHM_LANE_OPEN);
	/* what clients get: read-only but for the broker's own data and meta */
	CU_ASSERT(accmode(a.data_fd) == O_RDWR && accmode(a.meta_fd) == O_RDWR);
	CU_ASSERT(accmode(a.data_ro) == O_RDONLY && accmode(a.meta_ro) == O_RDONLY &&
		  accmode(a.hold_ro) == O_RDONLY);
	CU_ASSERT(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, a.hold_ro, 0) == MAP_FAILED);
	lanefile_close(&a);
	lanefile_close(&a); /* twice is harmless */

	CU_ASSERT_FATAL(lanefile_open(lanes, "42.3.0", &b) == 0);
	CU_ASSERT(memcmp(&b.hdr, &h, sizeof(h)) == 0);
	CU_ASSERT(lanefile_state(&b)->state == SHM_LANE_OPEN);
	CU_ASSERT(b.data_len == 4096 + RING && b.bitmap_pages == 0);
	CU_ASSERT(lanefile_bytes(&b) == 4096 + RING + 4096 + SHM_HOLD_SIZE);
	CU_ASSERT(accmode(b.data_ro) == O_RDONLY && accmode(b.meta_ro) == O_RDONLY &&
		  accmode(b.hold_ro) == O_RDONLY);
	lanefile_close(&b);
	rm_tmp();
}

static void test_received_lane(void)
{
	struct lanefile_params p = local_params(1);
	struct lanefile a;

	mk_tmp();
	p.kind = SHM_LANE_RECEIVED;
	p.link_name = "east.1";
	/* a received lane has no generation */
	CU_ASSERT(lanefile_make(lanes, &p, &a) == -EINVAL);
	p.generation = 0;
	CU_ASSERT_FATAL(lanefile_make(lanes, &p, &a) == 0);
	CU_ASSERT_STRING_EQUAL(a.name, "link.east.1.1");
	lanefile_close(&a);
	CU_ASSERT(lanefile_open(lanes, "link.east.1.1", &a) == 0);
	CU_ASSERT(a.hdr.kind == SHM_LANE_RECEIVED && a.hdr.class_no == 1);
	lanefile_close(&a);
	/* moved to another class number: not this directory's header */
	CU_ASSERT(renameat(lanes, "link.east.1.1", lanes, "link.east.1.2") == 0);
	CU_ASSERT(lanefile_open(lanes, "link.east.1.2", &a) == -EINVAL);
	rm_tmp();
}

static void test_make_twice(void)
{
	struct lanefile_params p = local_params(0);
	struct lanefile a, b;

	mk_tmp();
	CU_ASSERT_FATAL(lanefile_make(lanes, &p, &a) == 0);
	CU_ASSERT(lanefile_topic_set(&a, 5) == 0);
	p.first_order = 7;
	CU_ASSERT(lanefile_make(lanes, &p, &b) == -EEXIST);
	CU_ASSERT(b.why[0] != '\0' && b.dirfd == -1 && b.meta == NULL);
	/* the first is untouched, on the file and in its mapping */
	CU_ASSERT(entries(lanes, ".") == 1 && entries(lanes, "42.3.0") == 3);
	CU_ASSERT(lanefile_topic_isset(&a, 5) && lanefile_state(&a)->state == SHM_LANE_OPEN);
	lanefile_close(&a);
	CU_ASSERT(lanefile_open(lanes, "42.3.0", &a) == 0);
	CU_ASSERT(a.hdr.first_order == 100 && lanefile_topic_isset(&a, 5));
	lanefile_close(&a);
	rm_tmp();
}

/* ---- refusals at re-open ------------------------------------------------- */

/* Rewrite meta's header through a path, CRC recomputed when asked. */
static void meta_poke(int dirfd, size_t off, const void *v, size_t len, bool recrc)
{
	int fd = openat(dirfd, "meta", O_RDWR);
	struct shm_lane_meta_hdr h;

	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT(pwrite(fd, v, len, (off_t)off) == (ssize_t)len);
	if (recrc) {
		CU_ASSERT(pread(fd, &h, sizeof(h), 0) == sizeof(h));
		h.checksum = crc32c(0, &h, offsetof(struct shm_lane_meta_hdr, checksum));
		CU_ASSERT(pwrite(fd, &h, sizeof(h), 0) == sizeof(h));
	}
	close(fd);
}

static void set_size(int dirfd, const char *file, off_t size)
{
	int fd = openat(dirfd, file, O_RDWR);

	CU_ASSERT(fd >= 0 && ftruncate(fd, size) == 0);
	close(fd);
}

static void c_crc(int d)
{
	uint8_t x = 0x5a;

	meta_poke(d, offsetof(struct shm_lane_meta_hdr, broker_id), &x, 1, false);
}
static void c_magic(int d)
{
	uint64_t m = SHM_LANE_MAGIC ^ 1;

	meta_poke(d, 0, &m, sizeof(m), true);
}
static void c_version(int d)
{
	uint32_t v = SHM_LANE_LAYOUT_VERSION + 1;

	meta_poke(d, offsetof(struct shm_lane_meta_hdr, layout_version), &v, 4, true);
}
static void c_kind(int d)
{
	uint32_t k = 7;

	meta_poke(d, offsetof(struct shm_lane_meta_hdr, kind), &k, 4, true);
}
static void c_nuids(int d)
{
	uint32_t n = SHM_LANE_CLASS_UIDS + 1;

	meta_poke(d, offsetof(struct shm_lane_meta_hdr, nclass_uids), &n, 4, true);
}
static void c_state(int d)
{
	uint32_t s = 9;

	meta_poke(d, SHM_LANE_META_STATE_OFF, &s, 4, false);
}
static void c_ring_size(int d)
{
	uint64_t r = RING / 2;

	meta_poke(d, offsetof(struct shm_lane_meta_hdr, ring_size), &r, 8, true);
}
static void c_meta_short(int d) { set_size(d, "meta", 4096); }
static void c_data_short(int d) { set_size(d, "data", 4096 + RING / 2); }
static void c_data_grown(int d)
{
	int fd = openat(d, "data", O_RDWR);

	/* the writer's own way: a write past the end */
	CU_ASSERT(fd >= 0 && pwrite(fd, "x", 1, 4096 + RING) == 1);
	close(fd);
}
static void c_data_hole(int d)
{
	int fd = openat(d, "data", O_RDWR);

	CU_ASSERT(fd >= 0 && fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 8192, 8192) == 0);
	close(fd);
}
static void c_hold_grown(int d) { set_size(d, "hold", SHM_HOLD_SIZE + 4096); }
static void c_hold_gone(int d) { CU_ASSERT(unlinkat(d, "hold", 0) == 0); }
static void c_meta_link(int d)
{
	CU_ASSERT(renameat(d, "meta", d, "meta.real") == 0);
	CU_ASSERT(symlinkat("meta.real", d, "meta") == 0);
}
static void c_data_dir(int d)
{
	CU_ASSERT(unlinkat(d, "data", 0) == 0 && mkdirat(d, "data", 0700) == 0);
}
static void c_hold_mode(int d) { CU_ASSERT(fchmodat(d, "hold", 0644, 0) == 0); }
static void c_dir_mode(int d) { CU_ASSERT(fchmod(d, 0755) == 0); }

static void test_open_refuses(void)
{
	static const struct {
		const char *what;
		void (*corrupt)(int dirfd);
		int err;
	} cases[] = {
		{ "a byte of the header", c_crc, -EILSEQ },
		{ "the magic", c_magic, -EBADMSG },
		{ "the layout version", c_version, -EPROTONOSUPPORT },
		{ "the kind", c_kind, -EINVAL },
		{ "the number of class uids", c_nuids, -EINVAL },
		{ "the state", c_state, -EINVAL },
		{ "the ring size against data", c_ring_size, -EMSGSIZE },
		{ "meta truncated", c_meta_short, -EMSGSIZE },
		{ "data truncated", c_data_short, -EMSGSIZE },
		{ "data grown", c_data_grown, -EMSGSIZE },
		{ "a hole in data", c_data_hole, -ENODATA },
		{ "hold grown", c_hold_grown, -EMSGSIZE },
		{ "hold gone", c_hold_gone, -ENOENT },
		{ "meta a symlink", c_meta_link, -ELOOP },
		{ "data a directory", c_data_dir, -EISDIR },
		{ "hold readable by others", c_hold_mode, -EPERM },
		{ "the directory open to others", c_dir_mode, -EPERM },
	};
	struct lanefile a;
	int fds;

	mk_tmp();
	fds = open_fds();
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct lanefile_params p = local_params(i);
		int r;

		CU_ASSERT_FATAL(lanefile_make(lanes, &p, &a) == 0);
		cases[i].corrupt(a.dirfd);
		lanefile_close(&a);
		r = lanefile_open(lanes, a.name, &a);
		if (r != cases[i].err)
			printf("\n  %s: %d (%s), expected %d\n", cases[i].what, r, a.why, cases[i].err);
		CU_ASSERT(r == cases[i].err);
		CU_ASSERT(a.why[0] != '\0' && a.dirfd == -1 && a.data_fd == -1 && a.meta == NULL &&
			  a.hold == NULL && a.data == NULL);
	}
	/* every refusal closed what it had opened */
	CU_ASSERT(open_fds() == fds);
	/* names that are no lane's, whatever is on disk */
	CU_ASSERT(lanefile_open(lanes, "", &a) == -EINVAL);
	CU_ASSERT(lanefile_open(lanes, "..", &a) == -EINVAL);
	CU_ASSERT(lanefile_open(lanes, "../lanes", &a) == -EINVAL);
	CU_ASSERT(lanefile_open(lanes, "42.3.0/", &a) == -EINVAL);
	CU_ASSERT(lanefile_open(lanes, "42.9.9", &a) == -ENOENT);
	/* a lane moved to another lane's name: its header says otherwise */
	{
		struct lanefile_params p = local_params(90);

		CU_ASSERT_FATAL(lanefile_make(lanes, &p, &a) == 0);
		lanefile_close(&a);
		CU_ASSERT(renameat(lanes, "42.3.90", lanes, "42.3.91") == 0);
		CU_ASSERT(lanefile_open(lanes, "42.3.91", &a) == -EINVAL);
	}
	CU_ASSERT(open_fds() == fds);
	rm_tmp();
}

/* ---- the meta words -------------------------------------------------------- */

static void test_topics(void)
{
	static const uint32_t set[] = { 0, 7, 8, 32767, 32768, SHM_LANE_TOPIC_BITS - 1 };
	struct lanefile_params p = local_params(0);
	struct lanefile a;
	uint8_t b[2];

	mk_tmp();
	CU_ASSERT_FATAL(lanefile_make(lanes, &p, &a) == 0);
	for (unsigned i = 0; i < sizeof(set) / sizeof(set[0]); i++)
		CU_ASSERT(lanefile_topic_set(&a, set[i]) == 0);
	CU_ASSERT(lanefile_topic_set(&a, SHM_LANE_TOPIC_BITS) == -EINVAL);
	CU_ASSERT(lanefile_topic_set(&a, UINT32_MAX) == -EINVAL);
	CU_ASSERT(!lanefile_topic_isset(&a, SHM_LANE_TOPIC_BITS) && !lanefile_topic_isset(&a, UINT32_MAX));
	for (unsigned i = 0; i < sizeof(set) / sizeof(set[0]); i++)
		CU_ASSERT(lanefile_topic_isset(&a, set[i]));
	CU_ASSERT(!lanefile_topic_isset(&a, 1) && !lanefile_topic_isset(&a, 9) &&
		  !lanefile_topic_isset(&a, 32769) && !lanefile_topic_isset(&a, 70000));
	/* the layout readers rely on: bit t & 7 of byte t / 8 */
	CU_ASSERT(pread(a.meta_ro, b, 2, SHM_LANE_BITMAP_OFF) == 2 && b[0] == 0x81 && b[1] == 0x01);
	/* three bitmap pages allocated (0, 1 and 31), no more; counted and on the file */
	CU_ASSERT(a.bitmap_pages == (1u | 2u | (1u << 31)));
	CU_ASSERT(blocks_of(a.dirfd, "meta") == 4 * 4096);
	CU_ASSERT(lanefile_bytes(&a) == blocks_of(a.dirfd, "data") + blocks_of(a.dirfd, "meta") +
					 blocks_of(a.dirfd, "hold"));
	lanefile_close(&a);
	/* after a restart: the same bits, the same pages counted */
	CU_ASSERT_FATAL(lanefile_open(lanes, "42.3.0", &a) == 0);
	CU_ASSERT(a.bitmap_pages == (1u | 2u | (1u << 31)));
	for (unsigned i = 0; i < sizeof(set) / sizeof(set[0]); i++)
		CU_ASSERT(lanefile_topic_isset(&a, set[i]));
	CU_ASSERT(!lanefile_topic_isset(&a, 70000));
	CU_ASSERT(lanefile_bytes(&a) == 4096 + RING + 4 * 4096 + SHM_HOLD_SIZE);
	lanefile_close(&a);
	rm_tmp();
}

static void read_state(int fd, struct shm_lane_meta_state *st)
{
	CU_ASSERT(pread(fd, st, sizeof(*st), SHM_LANE_META_STATE_OFF) == sizeof(*st));
}

static void test_cut(void)
{
	struct lanefile_params p = local_params(0);
	struct shm_lane_meta_state st;
	struct lanefile a;

	mk_tmp();
	CU_ASSERT_FATAL(lanefile_make(lanes, &p, &a) == 0);
	/* step 2 of an owner switch: the fields, the lane still OPEN */
	CU_ASSERT(lanefile_cut_fields(&a, 4096, 17, 118) == 0);
	read_state(a.meta_ro, &st);
	CU_ASSERT(st.state == SHM_LANE_OPEN && st.cut_pos == 4096 && st.cut_lane_seq == 17 &&
		  st.cut_next_order == 118);
	/* undone (a switch that never took effect), then done for real */
	CU_ASSERT(lanefile_cut_fields(&a, 0, 0, 0) == 0);
	CU_ASSERT(lanefile_cut(&a, 8192, 33, 150) == 0);
	read_state(a.meta_ro, &st);
	CU_ASSERT(st.state == SHM_LANE_CUT && st.cut_pos == 8192 && st.cut_lane_seq == 33 &&
		  st.cut_next_order == 150);
	/* a restart finishing the same cut; never another one */
	CU_ASSERT(lanefile_cut(&a, 8192, 33, 150) == 0);
	CU_ASSERT(lanefile_cut(&a, 8200, 33, 150) == -EINVAL);
	CU_ASSERT(lanefile_cut_fields(&a, 1, 2, 3) == -EINVAL);
	read_state(a.meta_ro, &st);
	CU_ASSERT(st.state == SHM_LANE_CUT && st.cut_pos == 8192);
	lanefile_close(&a);
	/* it stays cut across a restart */
	CU_ASSERT_FATAL(lanefile_open(lanes, "42.3.0", &a) == 0);
	CU_ASSERT(lanefile_state(&a)->state == SHM_LANE_CUT && lanefile_state(&a)->cut_pos == 8192);
	/* BAD is final */
	lanefile_set_bad(&a);
	read_state(a.meta_ro, &st);
	CU_ASSERT(st.state == SHM_LANE_BAD);
	CU_ASSERT(lanefile_cut(&a, 8192, 33, 150) == -EINVAL);
	CU_ASSERT(lanefile_cut_fields(&a, 8192, 33, 150) == -EINVAL);
	lanefile_close(&a);
	CU_ASSERT_FATAL(lanefile_open(lanes, "42.3.0", &a) == 0);
	CU_ASSERT(lanefile_state(&a)->state == SHM_LANE_BAD);
	lanefile_close(&a);
	rm_tmp();
}

/* The writer cuts its data file to nothing under the broker's mapping:
 * nothing here reads data, so nothing faults; re-opening refuses it. */
static void test_writer_cuts_data(void)
{
	struct lanefile_params p = local_params(0);
	struct lanefile a;
	int w;

	mk_tmp();
	CU_ASSERT_FATAL(lanefile_make(lanes, &p, &a) == 0);
	w = openat(a.dirfd, "data", O_RDWR | O_CLOEXEC);
	CU_ASSERT(w >= 0 && ftruncate(w, 0) == 0);
	close(w);
	CU_ASSERT(lanefile_topic_set(&a, 40000) == 0 && lanefile_topic_isset(&a, 40000));
	CU_ASSERT(lanefile_cut(&a, 4096, 1, 2) == 0);
	lanefile_set_bad(&a);
	CU_ASSERT(lanefile_bytes(&a) == 4096 + RING + 2 * 4096 + SHM_HOLD_SIZE);
	lanefile_close(&a);
	CU_ASSERT(lanefile_open(lanes, "42.3.0", &a) == -EMSGSIZE);
	CU_ASSERT(lanefile_remove(lanes, "42.3.0") == 0 && entries(lanes, ".") == 0);
	rm_tmp();
}

/* ---- removal and failures half way -------------------------------------- */

static void test_remove(void)
{
	struct lanefile_params p = local_params(0);
	struct lanefile a;

	mk_tmp();
	CU_ASSERT_FATAL(lanefile_make(lanes, &p, &a) == 0);
	CU_ASSERT(lanefile_topic_set(&a, 3) == 0);
	CU_ASSERT(lanefile_remove(lanes, a.name) == 0);
	CU_ASSERT(entries(lanes, ".") == 0);
	/* the broker's mappings outlive the names */
	CU_ASSERT(lanefile_topic_isset(&a, 3));
	lanefile_close(&a);
	CU_ASSERT(lanefile_remove(lanes, "42.3.0") == -ENOENT);
	CU_ASSERT(lanefile_remove(lanes, "..") == -EINVAL);
	/* a lane missing a file (a make cut short by a crash) goes too */
	CU_ASSERT_FATAL(lanefile_make(lanes, &p, &a) == 0);
	CU_ASSERT(unlinkat(a.dirfd, "meta", 0) == 0);
	lanefile_close(&a);
	CU_ASSERT(lanefile_remove(lanes, "42.3.0") == 0);
	CU_ASSERT(entries(lanes, ".") == 0);
	rm_tmp();
}

/* Make with a file size limit: the make fails at the file that passes it. */
static int make_limited(rlim_t limit, struct lanefile *a)
{
	struct lanefile_params p = local_params(0);
	struct rlimit old, lim;
	int r;

	CU_ASSERT_FATAL(getrlimit(RLIMIT_FSIZE, &old) == 0);
	lim = (struct rlimit){ .rlim_cur = limit, .rlim_max = old.rlim_max };
	CU_ASSERT_FATAL(setrlimit(RLIMIT_FSIZE, &lim) == 0);
	r = lanefile_make(lanes, &p, a);
	CU_ASSERT_FATAL(setrlimit(RLIMIT_FSIZE, &old) == 0);
	return r;
}

static void test_half_way(void)
{
	struct lanefile_params p = local_params(0);
	void (*old)(int) = signal(SIGXFSZ, SIG_IGN);
	struct lanefile a;
	int fds;

	mk_tmp();
	fds = open_fds();
	/* refused before anything is made */
	p.ring_size = RING + 4096;
	CU_ASSERT(lanefile_make(lanes, &p, &a) == -EINVAL);
	p.ring_size = SHM_RING_MIN / 2;
	CU_ASSERT(lanefile_make(lanes, &p, &a) == -EINVAL);
	p = local_params(0);
	p.nclass_uids = 0;
	CU_ASSERT(lanefile_make(lanes, &p, &a) == -EINVAL);
	p = local_params(0);
	p.link_name = "east";
	CU_ASSERT(lanefile_make(lanes, &p, &a) == -EINVAL);
	p.kind = SHM_LANE_RECEIVED;
	p.generation = 0;
	p.link_name = "../east";
	CU_ASSERT(lanefile_make(lanes, &p, &a) == -EINVAL);
	p.link_name = NULL;
	CU_ASSERT(lanefile_make(lanes, &p, &a) == -EINVAL);
	CU_ASSERT(entries(lanes, ".") == 0);
	/* the data file cannot be sized: the directory and the file go */
	CU_ASSERT(make_limited(32768, &a) == -EFBIG);
	CU_ASSERT(a.why[0] != '\0' && a.dirfd == -1);
	CU_ASSERT(entries(lanes, ".") == 0);
	/* data and hold made, meta cannot be: all three go */
	CU_ASSERT(make_limited(4096 + RING, &a) == -EFBIG);
	CU_ASSERT(entries(lanes, ".") == 0);
	CU_ASSERT(open_fds() == fds);
	/* and the name was never used: it can be made now */
	CU_ASSERT(make_limited(RLIM_INFINITY, &a) == 0);
	lanefile_close(&a);
	signal(SIGXFSZ, old);
	rm_tmp();
}

/* A lanes/ directory that is gone: nothing can be made, whoever runs it. */
static void test_unwritable_dir(void)
{
	struct lanefile_params p = local_params(0);
	char path[300];
	struct lanefile a;

	mk_tmp();
	snprintf(path, sizeof(path), "%s/lanes", tmpdir);
	CU_ASSERT(rmdir(path) == 0);
	CU_ASSERT(lanefile_make(lanes, &p, &a) == -ENOENT);
	CU_ASSERT(a.why[0] != '\0' && a.dirfd == -1);
	CU_ASSERT(entries(AT_FDCWD, tmpdir) == 0);
	rm_tmp();
}

/* ---- sealed memfd pages ------------------------------------------------------ */

static int memfd_sized(unsigned flags, off_t size, int seals)
{
	int fd = memfd_create("test-page", MFD_CLOEXEC | flags);

	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT(ftruncate(fd, size) == 0);
	if (seals)
		CU_ASSERT(fcntl(fd, F_ADD_SEALS, seals) == 0);
	return fd;
}

static void test_memfd_page(void)
{
	const int three = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
	char path[64], tmp[] = "/tmp/shmb-test-page.XXXXXX";
	struct stat st;
	uint64_t *w, v = 0;
	int fd, other;

	CU_ASSERT_FATAL(memfd_page_make("shmb-wake", &fd) == 0);
	CU_ASSERT(fstat(fd, &st) == 0 && st.st_size == 4096);
	CU_ASSERT((fcntl(fd, F_GETFD) & FD_CLOEXEC) && fcntl(fd, F_GET_SEALS) == three);
	CU_ASSERT(memfd_page_check(fd) == 0);
	/* nobody can cut or grow it, nor unseal it */
	CU_ASSERT(ftruncate(fd, 0) < 0 && errno == EPERM);
	CU_ASSERT(ftruncate(fd, 8192) < 0 && errno == EPERM);
	CU_ASSERT(fallocate(fd, 0, 0, 8192) < 0 && errno == EPERM);
	CU_ASSERT(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) < 0 && errno == EPERM);
	/* its users map it writable */
	w = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CU_ASSERT_FATAL(w != MAP_FAILED);
	w[0] = 1;
	CU_ASSERT(pread(fd, &v, 8, 0) == 8 && v == 1);
	munmap(w, 4096);
	/* the same page reopened read-only is no page to keep */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	other = open(path, O_RDONLY | O_CLOEXEC);
	CU_ASSERT(other >= 0 && memfd_page_check(other) == -EACCES);
	close(other);
	close(fd);

	/* unsealed, or sealed only against more seals */
	fd = memfd_sized(MFD_ALLOW_SEALING, 4096, 0);
	CU_ASSERT(memfd_page_check(fd) == -EPERM);
	close(fd);
	fd = memfd_sized(0, 4096, 0);
	CU_ASSERT(memfd_page_check(fd) == -EPERM);
	close(fd);
	/* two of the three */
	fd = memfd_sized(MFD_ALLOW_SEALING, 4096, F_SEAL_SHRINK | F_SEAL_SEAL);
	CU_ASSERT(memfd_page_check(fd) == -EPERM);
	close(fd);
	/* sealed against writing: its users could not map it */
	fd = memfd_sized(MFD_ALLOW_SEALING, 4096, three | F_SEAL_WRITE);
	CU_ASSERT(memfd_page_check(fd) == -EPERM);
	close(fd);
	/* two pages */
	fd = memfd_sized(MFD_ALLOW_SEALING, 8192, three);
	CU_ASSERT(memfd_page_check(fd) == -EMSGSIZE);
	close(fd);
	/* files with a path, on tmpfs and elsewhere; a pipe; no descriptor */
	fd = open("/dev/shm", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	CU_ASSERT(fd >= 0 && ftruncate(fd, 4096) == 0 && memfd_page_check(fd) < 0);
	close(fd);
	fd = mkstemp(tmp);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT(ftruncate(fd, 4096) == 0 && memfd_page_check(fd) == -EMSGSIZE);
	unlink(tmp);
	/* unlinked: no path left, but no seals either */
	CU_ASSERT(memfd_page_check(fd) < 0);
	close(fd);
	{
		int pp[2];

		CU_ASSERT_FATAL(pipe(pp) == 0);
		CU_ASSERT(memfd_page_check(pp[1]) == -EMSGSIZE);
		close(pp[0]);
		close(pp[1]);
	}
	CU_ASSERT(memfd_page_check(-1) == -EMSGSIZE);
}

static const struct harness_test lanefile_tests[] = {
	{ "make_open_round_trip", test_make_open_round_trip },
	{ "received_lane", test_received_lane },
	{ "make_twice", test_make_twice },
	{ "open_refuses", test_open_refuses },
	{ "topics", test_topics },
	{ "cut", test_cut },
	{ "writer_cuts_data", test_writer_cuts_data },
	{ "remove", test_remove },
	{ "half_way", test_half_way },
	{ "unwritable_dir", test_unwritable_dir },
	{ "memfd_page", test_memfd_page },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "lanefile", lanefile_tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	return harness_main("test-lanefile", suites, argc, argv);
}
