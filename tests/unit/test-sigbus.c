/*
 * tests/unit/test-sigbus.c - libshmb's SIGBUS guard (libclient/sigbus.c):
 * a guarded mapping whose file is truncated under it reads as zeroes and
 * is marked bad, its neighbours are untouched, a fault anywhere else goes
 * to the handler that was there before, and the slot table fills and
 * frees as it says.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
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

static const struct harness_test tests[] = {
	{ "truncated_reads_zero", test_truncated_reads_zero },
	{ "punched_reads_zero", test_punched_reads_zero },
	{ "other_faults_chained", test_other_faults_chained },
	{ "slots_fill_and_free", test_slots_fill_and_free },
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
