/*
 * broker/exit-bpf.c - the BPF half of crash forensics: load and attach the
 * exit tracer (exit.bpf.c, through its libbpf skeleton), and keep its map
 * of tracked processes.  The tracer knows a process's status the moment
 * its last thread exits, reaped or not, and tells a core dump apart.
 *
 * Needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN), and the broker in the
 * initial pid namespace: the tracer sees global tgids, the broker its
 * peers' pids as SO_PEERCRED gives them in its own namespace.
 *
 * Must never: let libbpf write to stderr on its own (its lines go through
 * the broker's log, at debug level; the last one explains a failure).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/capability.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "broker/broker.h"
#include "broker/exit.h"
#include "broker/log.h"
#include "exit.skel.h"

/* as in exit.bpf.c */
#define EXIT_DONE 2

struct exit_rec {
	uint32_t state;
	int32_t status;
};

struct exit_bpf {
	struct exit_tracer *skel;
	int map_fd;
};

static char libbpf_last[160];

static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char line[512];
	size_t n;

	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n && line[n - 1] == '\n')
		line[--n] = 0;
	if (level != LIBBPF_DEBUG && n) {
		/* cut to fit: the gist of libbpf's complaint comes first */
		size_t k = n < sizeof(libbpf_last) - 1 ? n : sizeof(libbpf_last) - 1;

		memcpy(libbpf_last, line, k);
		libbpf_last[k] = 0;
	}
	log_msg(LOG_DEBUG, "libbpf: %s", line);
	return 0;
}

/* Effective capabilities 0..63 of this process. */
static uint64_t caps_effective(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[2];

	memset(d, 0, sizeof(d));
	if (syscall(SYS_capget, &h, d) < 0)
		return 0;
	return (uint64_t)d[0].effective | (uint64_t)d[1].effective << 32;
}

/*
 * Is this process outside the initial pid namespace?  That namespace's
 * inode number is fixed (PROC_PID_INIT_INO, include/linux/proc_ns.h),
 * which holds even where a container mounted its own /proc (NSpid then
 * shows one pid only).  Unreadable: assume the initial one, the load
 * fails anyway where BPF is not allowed.
 */
#define PROC_PID_INIT_INO 0xEFFFFFFCu

static bool in_child_pidns(void)
{
	struct stat st;

	return stat("/proc/self/ns/pid", &st) == 0 && st.st_ino != PROC_PID_INIT_INO;
}

int exit_bpf_load(struct exit_bpf **out, char *why, size_t n)
{
	uint64_t caps = caps_effective();
	struct exit_bpf *e;
	int r;

	if (in_child_pidns()) {
		snprintf(why, n, "the broker runs in a pid namespace: the tracer sees global pids");
		return -EOPNOTSUPP;
	}
	if (!(caps & (1ull << CAP_SYS_ADMIN)) &&
	    (!(caps & (1ull << CAP_BPF)) || !(caps & (1ull << CAP_PERFMON)))) {
		snprintf(why, n, "no CAP_BPF and CAP_PERFMON");
		return -EPERM;
	}
	e = calloc(1, sizeof(*e));
	if (!e) {
		snprintf(why, n, "out of memory");
		return -ENOMEM;
	}
	libbpf_set_print(libbpf_log);
	libbpf_last[0] = 0;
	e->skel = exit_tracer__open_and_load();
	if (!e->skel) {
		r = -errno;
		snprintf(why, n, "cannot load the tracer: %s%s%s", strerror(-r),
			 libbpf_last[0] ? ": " : "", libbpf_last);
		goto err;
	}
	r = exit_tracer__attach(e->skel);
	if (r < 0) {
		snprintf(why, n, "cannot attach to tp_btf/sched_process_exit: %s", strerror(-r));
		goto err;
	}
	e->map_fd = bpf_map__fd(e->skel->maps.tracked);
	*out = e;
	return 0;
err:
	exit_tracer__destroy(e->skel);
	free(e);
	return r < 0 ? r : -EIO;
}

int exit_bpf_track(struct exit_bpf *e, pid_t tgid)
{
	struct exit_rec rec = { 0, 0 };
	uint32_t k = (uint32_t)tgid;

	/* an entry already there is this process (another connection of
	 * it), or one that died with this pid before: that one starts over */
	if (bpf_map_update_elem(e->map_fd, &k, &rec, BPF_NOEXIST) == 0 || errno == EEXIST) {
		struct exit_rec old;

		if (bpf_map_lookup_elem(e->map_fd, &k, &old) == 0 && old.state == EXIT_DONE)
			bpf_map_update_elem(e->map_fd, &k, &rec, BPF_ANY);
		return 0;
	}
	return -errno;
}

void exit_bpf_untrack(struct exit_bpf *e, pid_t tgid)
{
	uint32_t k = (uint32_t)tgid;

	bpf_map_delete_elem(e->map_fd, &k);
}

int exit_bpf_status(struct exit_bpf *e, pid_t tgid, int *status)
{
	uint32_t k = (uint32_t)tgid;
	struct exit_rec rec;

	if (bpf_map_lookup_elem(e->map_fd, &k, &rec) < 0 || rec.state != EXIT_DONE)
		return -EAGAIN;
	*status = rec.status;
	return 0;
}

void exit_bpf_free(struct exit_bpf *e)
{
	if (!e)
		return;
	exit_tracer__destroy(e->skel);
	free(e);
}
