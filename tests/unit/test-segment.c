/*
 * tests/unit/test-segment.c - session files: directory and file modes,
 * memfd, format/validate round trips, read-only mappings, truncation.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "shm/segment.h"

static char tmpdir[256];

static void mk_tmp(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/dev/shm/shmb-test-seg.XXXXXX");
	CU_ASSERT_FATAL(mkdtemp(tmpdir) != NULL);
}

static void rm_tmp(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	CU_ASSERT(system(cmd) == 0);
}

static const struct seg_rx_params params = {
	.session_id = 42, .broker_id = 9, .owner_uid = 1000,
	.policy = SHM_POLICY_BLOCK, .rx_ring_size = 65536, .tx_ring_size = 16384,
};

static void test_dir_modes(void)
{
	char path[300];
	struct stat st;
	int dfd;

	mk_tmp();
	snprintf(path, sizeof(path), "%s/sessions", tmpdir);
	CU_ASSERT(segment_dir_open(path, 0700, &dfd) == 0);
	CU_ASSERT(fstat(dfd, &st) == 0 && (st.st_mode & 07777) == 0700);
	close(dfd);
	/* a directory others can write is refused */
	CU_ASSERT(chmod(path, 0777) == 0);
	CU_ASSERT(segment_dir_open(path, 0700, &dfd) == -EPERM);
	/* so is a file where the directory should be */
	snprintf(path, sizeof(path), "%s/plain", tmpdir);
	close(open(path, O_CREAT | O_WRONLY, 0600));
	CU_ASSERT(segment_dir_open(path, 0700, &dfd) < 0);
	rm_tmp();
}

static void test_file_create_validate(void)
{
	char path[300];
	struct segment s = SEGMENT_INIT, ro = SEGMENT_INIT;
	struct shm_seg_hdr h;
	struct stat st;
	int dfd, fd;

	mk_tmp();
	snprintf(path, sizeof(path), "%s/sessions", tmpdir);
	CU_ASSERT_FATAL(segment_dir_open(path, 0700, &dfd) == 0);
	CU_ASSERT_FATAL(segment_create(dfd, "rx", segment_file_size(65536), &s) == 0);
	CU_ASSERT(fstat(s.fd, &st) == 0 && (st.st_mode & 07777) == 0600);
	CU_ASSERT(segment_create(dfd, "rx", segment_file_size(65536), &ro) == -EEXIST);
	/* a size no segment has: refused, and no file is left behind */
	CU_ASSERT(segment_create(dfd, "tiny", 100, &ro) == -EBADMSG);
	CU_ASSERT(segment_create(dfd, "tiny", 100, &ro) == -EBADMSG);
	CU_ASSERT(faccessat(dfd, "tiny", F_OK, 0) < 0 && errno == ENOENT);
	/* unformatted: all zeros is not a segment */
	CU_ASSERT(segment_rx_validate(&s, &h) == -EBADMSG);
	CU_ASSERT(segment_rx_format(&s, &params) == 0);
	CU_ASSERT(segment_rx_validate(&s, &h) == 0);
	CU_ASSERT(h.session_id == 42 && h.broker_id == 9 && h.owner_uid == 1000);
	CU_ASSERT(h.rx_ring_size == 65536 && h.tx_ring_size == 16384);
	/* the client's view: a read-only mapping of the same file validates */
	fd = openat(dfd, "rx", O_RDONLY | O_CLOEXEC);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT(segment_map(fd, false, &ro) == 0);
	CU_ASSERT(segment_rx_validate(&ro, &h) == 0);
	segment_rx_ctrl(&s)->rx_write = 4242;
	CU_ASSERT(segment_rx_ctrl(&ro)->rx_write == 4242);
	segment_unmap(&ro);
	segment_unmap(&ro); /* twice is safe */
	/* a tx file is not an rx file, and the reverse */
	CU_ASSERT(segment_tx_validate(&s, &(struct shm_tx_hdr){ 0 }) == -EBADMSG);
	segment_unmap(&s);
	close(dfd);
	rm_tmp();
}

static void test_memfd_tx(void)
{
	struct segment s = SEGMENT_INIT;
	struct shm_tx_hdr h;

	CU_ASSERT_FATAL(segment_create(-1, "tx", segment_file_size(16384), &s) == 0);
	CU_ASSERT(segment_tx_format(&s, 42, 3, 16384, 1000) == 0);
	CU_ASSERT(segment_tx_validate(&s, &h) == 0);
	CU_ASSERT(h.generation == 3 && h.start_seq == 1000 && h.session_id == 42);
	CU_ASSERT(segment_rx_validate(&s, &(struct shm_seg_hdr){ 0 }) == -EBADMSG);
	/* the format refuses sizes that do not match the file */
	CU_ASSERT(segment_tx_format(&s, 42, 3, 32768, 0) == -EINVAL);
	CU_ASSERT(segment_tx_format(&s, 42, 3, 12345, 0) == -EINVAL);
	segment_unmap(&s);
}

static void test_truncated_file(void)
{
	struct segment s = SEGMENT_INIT, again = SEGMENT_INIT;
	struct shm_seg_hdr h;
	int fd;

	CU_ASSERT_FATAL(segment_create(-1, "rx", segment_file_size(65536), &s) == 0);
	CU_ASSERT(segment_rx_format(&s, &params) == 0);
	fd = dup(s.fd);
	/* truncated by half: the header still reads, the size check refuses it */
	CU_ASSERT(ftruncate(fd, (off_t)segment_file_size(32768)) == 0);
	segment_unmap(&s);
	CU_ASSERT(segment_map(fd, false, &again) == 0);
	CU_ASSERT(segment_rx_validate(&again, &h) == -EBADMSG);
	segment_unmap(&again);
	/* truncated to almost nothing: not even mapped */
	CU_ASSERT_FATAL(segment_create(-1, "rx", segment_file_size(65536), &s) == 0);
	fd = dup(s.fd);
	segment_unmap(&s);
	CU_ASSERT(ftruncate(fd, 100) == 0);
	CU_ASSERT(segment_map(fd, false, &again) == -EBADMSG);
}

static const struct harness_test segment_tests[] = {
	{ "dir_modes", test_dir_modes },
	{ "file_create_validate", test_file_create_validate },
	{ "memfd_tx", test_memfd_tx },
	{ "truncated_file", test_truncated_file },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "segment", segment_tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	return harness_main("test-segment", suites, argc, argv);
}
