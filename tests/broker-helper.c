/*
 * tests/broker-helper.c - see broker-helper.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "broker-helper.h"
#include "harness.h"
#include "shmb.h"

static void broker_path(char *out, size_t n)
{
	char self[512];
	ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);

	self[k > 0 ? k : 0] = 0;
	snprintf(out, n, "%s/../shmbd", dirname(self));
}

static char next_dir[256];

/* 1: the broker answers; -1: it exited (t->pid is cleared); 0: not yet */
static int tb_started(struct tb *t)
{
	struct shmb_connect_opts o = { .dir = t->dir };
	struct shmb_client *c;
	int st;

	if (shmb_connect(&o, &c) == 0) {
		shmb_close(c);
		return 1;
	}
	if (waitpid(t->pid, &st, WNOHANG) == t->pid) {
		t->pid = 0;
		return -1;
	}
	return 0;
}

void tb_use_dir(const char *dir)
{
	snprintf(next_dir, sizeof(next_dir), "%s", dir);
}

int tb_start(struct tb *t, ...)
{
	char path[600];
	const char *argv[32], *extra;
	int argc = 0;
	va_list ap;
	int r = 0;

	if (next_dir[0]) {
		snprintf(t->dir, sizeof(t->dir), "%s", next_dir);
		next_dir[0] = 0;
	} else {
		snprintf(t->dir, sizeof(t->dir), "/dev/shm/shmb-test.XXXXXX");
		if (!mkdtemp(t->dir))
			return -errno;
	}
	snprintf(t->log, sizeof(t->log), "%s.log", t->dir);
	broker_path(path, sizeof(path));
	argv[argc++] = path;
	argv[argc++] = "--dir";
	argv[argc++] = t->dir;
	va_start(ap, t);
	for (const char *a; argc < 30 && (a = va_arg(ap, const char *));)
		argv[argc++] = a;
	va_end(ap);
	/* SHMB_TEST_BROKER_ARGS: one more option for every broker of the run
	 * (test-lib-lanes.sh's relay runs of the stream tests: --no-lanes) */
	extra = getenv("SHMB_TEST_BROKER_ARGS");
	if (extra && *extra && argc < 30)
		argv[argc++] = extra;
	argv[argc] = NULL;
	t->pid = fork();
	if (t->pid == 0) {
		int fd = open(t->log, O_WRONLY | O_CREAT | O_APPEND, 0644);

		if (fd >= 0)
			dup2(fd, 2);
		execv(path, (char *const *)argv);
		_exit(127);
	}
	if (t->pid < 0)
		return -errno;
	if (!TRY_WAIT_FOR((r = tb_started(t)) != 0, 10000))
		return -ETIMEDOUT;
	return r > 0 ? 0 : -ECHILD;
}

bool tb_on_lanes(void)
{
	const char *a = getenv("SHMB_TEST_BROKER_ARGS");

	return !a || !strstr(a, "--no-lanes");
}

int tb_wait_child(pid_t pid, unsigned timeout_ms)
{
	pid_t r = 0;
	int st;

	if (pid <= 0)
		return -1; /* never kill(0): that is our own process group */
	if (TRY_WAIT_FOR((r = waitpid(pid, &st, WNOHANG)) != 0, timeout_ms)) {
		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		return -1;
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	return -1;
}

int tb_stop(struct tb *t)
{
	int r;

	if (t->pid <= 0)
		return -1;
	kill(t->pid, SIGTERM);
	r = tb_wait_child(t->pid, 10000);
	t->pid = 0;
	return r;
}

void tb_cleanup(struct tb *t)
{
	char cmd[700];

	/* SHMB_TEST_KEEP=1 keeps the directory and the log for a post-mortem */
	if (getenv("SHMB_TEST_KEEP")) {
		fprintf(stderr, "kept %s and %s\n", t->dir, t->log);
		return;
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", t->dir, t->log);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", t->dir);
}

bool tb_alive(const struct tb *t)
{
	return t->pid > 0 && kill(t->pid, 0) == 0 && waitpid(t->pid, NULL, WNOHANG) == 0;
}

int tb_log_count(const struct tb *t, const char *needle)
{
	FILE *f = fopen(t->log, "r");
	char line[2048];
	int n = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, needle) != NULL;
	fclose(f);
	return n;
}

int tb_raw_connect(const struct tb *t)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = 5 };
	int fd;

	if (snprintf(a.sun_path, sizeof(a.sun_path), "%s/control", t->dir) >= (int)sizeof(a.sun_path))
		return -1;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(fd);
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}
