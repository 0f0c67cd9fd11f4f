/*
 * tests/unit/test-sigbus.c - libshmb's SIGBUS guard (libclient/sigbus.c):
 * a guarded mapping whose file is truncated under it reads as zeroes and
 * is marked bad, its neighbours are untouched, a fault anywhere else goes
 * to the handler that was there before, and the slot table fills and
 * frees as it says.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "libclient/sigbus.h"

#define LEN (4 * 4096)

static sigjmp_buf back;
static volatile sig_atomic_t prev_called;

/* The application's own handler, there before the guard: it must get
 * the faults the guard does not own. */
static void app_sigbus(int sig)
{
	(void)sig;
	prev_called++;
	siglongjmp(back, 1);
}

/* A memfd of LEN bytes filled with c, mapped read-only; its fd in *fd. */
static uint8_t *mapped(int *fd, uint8_t c)
{
	uint8_t buf[LEN];
	uint8_t *p;

	*fd = memfd_create("test-sigbus", MFD_CLOEXEC);
	if (*fd < 0)
		return NULL;
	memset(buf, c, sizeof(buf));
	if (write(*fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
		return NULL;
	p = mmap(NULL, LEN, PROT_READ, MAP_SHARED, *fd, 0);
	return p == MAP_FAILED ? NULL : p;
}

static void test_truncated_reads_zero(void)
{
	int fd1, fd2, s1, s2;
	uint8_t *a = mapped(&fd1, 0x5a), *b = mapped(&fd2, 0xa5);
	uint64_t before = sigbus_faults();

	CU_ASSERT_FATAL(a != NULL && b != NULL);
	s1 = sigbus_add(a, LEN, PROT_READ);
	s2 = sigbus_add(b, LEN, PROT_READ);
	CU_ASSERT_FATAL(s1 >= 0 && s2 >= 0);
	CU_ASSERT(a[LEN - 1] == 0x5a);
	/* the writer shrinks its file under our mapping */
	CU_ASSERT_FATAL(ftruncate(fd1, 0) == 0);
	CU_ASSERT(a[2 * 4096 + 7] == 0); /* would have been SIGBUS */
	CU_ASSERT(a[0] == 0);            /* the whole mapping is covered */
	CU_ASSERT(sigbus_bad(s1));
	CU_ASSERT(sigbus_faults() == before + 1);
	/* the other mapping is as it was */
	CU_ASSERT(!sigbus_bad(s2));
	CU_ASSERT(b[LEN - 1] == 0xa5);
	/* a second read of the covered mapping is no second fault */
	CU_ASSERT(a[LEN - 1] == 0);
	CU_ASSERT(sigbus_faults() == before + 1);
	sigbus_remove(s1);
	sigbus_remove(s2);
	munmap(a, LEN);
	munmap(b, LEN);
	close(fd1);
	close(fd2);
}

/* A hole punched in a file with room left reads as zeroes without a
 * fault: the broker's st_blocks check is what catches it (data-path.md). */
static void test_punched_reads_zero(void)
{
	int fd, s;
	uint8_t *a = mapped(&fd, 0x11);
	uint64_t before = sigbus_faults();

	CU_ASSERT_FATAL(a != NULL);
	s = sigbus_add(a, LEN, PROT_READ);
	CU_ASSERT_FATAL(s >= 0);
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 4096) < 0) {
		HARNESS_SKIP("fallocate(PUNCH_HOLE) is refused here");
	} else {
		CU_ASSERT(a[4096 + 3] == 0);
		CU_ASSERT(a[0] == 0x11);
		CU_ASSERT(sigbus_faults() == before);
	}
	sigbus_remove(s);
	munmap(a, LEN);
	close(fd);
}

/* A fault in a mapping the guard does not own is the application's. */
static void test_other_faults_chained(void)
{
	int fd;
	uint8_t *a = mapped(&fd, 0x22);
	volatile uint8_t v = 1;
	uint64_t before = sigbus_faults();

	CU_ASSERT_FATAL(a != NULL);
	CU_ASSERT_FATAL(ftruncate(fd, 0) == 0);
	prev_called = 0;
	if (sigsetjmp(back, 1) == 0)
		v = a[100];
	CU_ASSERT(prev_called == 1);
	CU_ASSERT(v == 1);
	CU_ASSERT(sigbus_faults() == before);
	munmap(a, LEN);
	close(fd);
}

static void test_slots_fill_and_free(void)
{
	static int got[SIGBUS_SLOTS];
	static uint8_t dummy[SIGBUS_SLOTS];
	int extra, again;

	for (int i = 0; i < SIGBUS_SLOTS; i++) {
		got[i] = sigbus_add(&dummy[i], 1, PROT_READ);
		CU_ASSERT_FATAL(got[i] >= 0);
	}
	extra = sigbus_add(dummy, 1, PROT_READ);
	CU_ASSERT(extra == -ENOSPC);
	sigbus_remove(got[17]);
	again = sigbus_add(dummy, 1, PROT_READ);
	CU_ASSERT(again == got[17]);
	CU_ASSERT(!sigbus_bad(again));
	for (int i = 0; i < SIGBUS_SLOTS; i++)
		sigbus_remove(got[i]);
	/* out of range: nothing, no crash */
	sigbus_remove(-1);
	sigbus_remove(SIGBUS_SLOTS);
	CU_ASSERT(!sigbus_bad(-1));
}

/* A small tmpfs of our own, in a mount namespace of our own: its path,
 * or NULL with why (not root, or namespaces refused here). */
static const char *small_tmpfs(const char **why)
{
	static char dir[] = "/tmp/test-sigbus.XXXXXX";
	static bool done;

	if (done)
		return dir;
	if (!mkdtemp(dir)) {
		*why = "mkdtemp failed";
		return NULL;
	}
	if (unshare(CLONE_NEWNS) < 0) {
		*why = "cannot make a mount namespace (needs root)";
		return NULL;
	}
	if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("tmpfs", dir, "tmpfs", 0, "size=512k") < 0) {
		*why = "cannot mount a tmpfs here";
		return NULL;
	}
	done = true;
	return dir;
}

/*
 * Another process punches a hole in the file under our mapping and takes
 * every block of a small tmpfs, the one the hole gave back too: our next
 * read there faults (the kernel has no page to give the hole), the guard
 * covers it, and a second mapping from elsewhere reads on as it was.
 */
static void test_hole_in_full_tmpfs(void)
{
	const char *why = NULL, *dir = small_tmpfs(&why);
	char path[128], filler[128];
	int fd, gfd, sync[2], st, s, sg;
	uint8_t *a, *good, byte = 0;
	uint64_t before = sigbus_faults();
	struct pollfd p;
	pid_t child;

	if (!dir) {
		HARNESS_SKIP(why);
		return;
	}
	snprintf(path, sizeof(path), "%s/lane", dir);
	snprintf(filler, sizeof(filler), "%s/filler", dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CU_ASSERT_FATAL(fd >= 0);
	{
		uint8_t buf[LEN];

		memset(buf, 0x33, sizeof(buf));
		CU_ASSERT_FATAL(write(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf));
	}
	a = mmap(NULL, LEN, PROT_READ, MAP_SHARED, fd, 0);
	good = mapped(&gfd, 0x44);
	CU_ASSERT_FATAL(a != MAP_FAILED && good != NULL && pipe(sync) == 0);
	s = sigbus_add(a, LEN, PROT_READ);
	sg = sigbus_add(good, LEN, PROT_READ);
	CU_ASSERT_FATAL(s >= 0 && sg >= 0);
	child = fork();
	CU_ASSERT_FATAL(child >= 0);
	if (child == 0) {
		/* the hostile writer: every block of the tmpfs taken, then a hole */
		int ff = open(filler, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		uint8_t buf[4096];

		memset(buf, 0x66, sizeof(buf));
		while (ff >= 0 && write(ff, buf, sizeof(buf)) > 0)
			;
		if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 4096) < 0)
			_exit(2);
		/* and the block the hole gave back */
		while (ff >= 0 && write(ff, buf, sizeof(buf)) > 0)
			;
		_exit(write(sync[1], "x", 1) == 1 ? 0 : 3);
	}
	close(sync[1]);
	p = (struct pollfd){ .fd = sync[0], .events = POLLIN };
	CU_ASSERT_FATAL(poll(&p, 1, 10000) == 1 && read(sync[0], &byte, 1) == 1);
	CU_ASSERT(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	byte = a[4096 + 5]; /* the hole: no page to give it */
	CU_ASSERT(byte == 0);
	CU_ASSERT(sigbus_bad(s));
	CU_ASSERT(sigbus_faults() == before + 1);
	CU_ASSERT(!sigbus_bad(sg));
	CU_ASSERT(good[LEN - 1] == 0x44);
	sigbus_remove(s);
	sigbus_remove(sg);
	munmap(a, LEN);
	munmap(good, LEN);
	close(fd);
	close(gfd);
	close(sync[0]);
	unlink(filler);
	unlink(path);
}

static const struct harness_test tests[] = {
	{ "truncated_reads_zero", test_truncated_reads_zero },
	{ "punched_reads_zero", test_punched_reads_zero },
	{ "other_faults_chained", test_other_faults_chained },
	{ "slots_fill_and_free", test_slots_fill_and_free },
	{ "hole_in_full_tmpfs", test_hole_in_full_tmpfs },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "sigbus", tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	struct sigaction sa;

	/* the application's handler first, then the library's guard */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = app_sigbus;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
	if (sigbus_install() < 0)
		return 1;
	return harness_main("test-sigbus", suites, argc, argv);
}
