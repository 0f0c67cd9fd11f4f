/*
 * broker/sys.h - the system calls and constants shmbd needs that libc or
 * Debian 12's 6.1 kernel headers do not provide, in one place.
 */
#ifndef BROKER_SYS_H
#define BROKER_SYS_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

/*
 * Landlock (linux/landlock.h): Debian 12's headers lack the truncate right
 * (ABI 3, kernel 6.2) and glibc wraps none of the calls.
 */
#include <linux/landlock.h>
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)
#endif
#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_restrict_self 446
#endif

static inline long sys_landlock_create_ruleset(const struct landlock_ruleset_attr *attr, size_t size,
					       uint32_t flags)
{
	return syscall(SYS_landlock_create_ruleset, attr, size, flags);
}

static inline long sys_landlock_restrict_self(int ruleset_fd, uint32_t flags)
{
	return syscall(SYS_landlock_restrict_self, ruleset_fd, flags);
}

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* kernel 6.5 */
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

/*
 * PIDFD_GET_INFO (kernel 6.13) and its PIDFD_INFO_EXIT (kernel 6.15), from
 * include/uapi/linux/pidfd.h.  This is the first published size of
 * struct pidfd_info (PIDFD_INFO_SIZE_VER0, 64 bytes); the kernel takes the
 * size from the ioctl number and fills what both sides know, so later
 * additions (coredump_mask, ...) are simply not asked for.  exit_code is a
 * wait(2) status (WIFEXITED, WTERMSIG, WCOREDUMP apply), set only once the
 * process has been reaped; measured on 6.18: before the reap the reply's
 * mask lacks PIDFD_INFO_EXIT, after it the mask is PIDFD_INFO_EXIT |
 * PIDFD_INFO_CGROUPID and exit_code is what waitpid() returned.
 */
struct pidfd_info {
	uint64_t mask;
	uint64_t cgroupid;
	uint32_t pid;
	uint32_t tgid;
	uint32_t ppid;
	uint32_t ruid;
	uint32_t rgid;
	uint32_t euid;
	uint32_t egid;
	uint32_t suid;
	uint32_t sgid;
	uint32_t fsuid;
	uint32_t fsgid;
	int32_t exit_code;
};
_Static_assert(sizeof(struct pidfd_info) == 64, "PIDFD_INFO_SIZE_VER0");
_Static_assert(offsetof(struct pidfd_info, cgroupid) == 8, "pidfd_info.cgroupid");
_Static_assert(offsetof(struct pidfd_info, pid) == 16, "pidfd_info.pid");
_Static_assert(offsetof(struct pidfd_info, exit_code) == 60, "pidfd_info.exit_code");

#ifndef PIDFS_IOCTL_MAGIC
#define PIDFS_IOCTL_MAGIC 0xFF
#endif
#ifndef PIDFD_GET_INFO
#define PIDFD_GET_INFO _IOWR(PIDFS_IOCTL_MAGIC, 11, struct pidfd_info)
#endif
#ifndef PIDFD_INFO_EXIT
#define PIDFD_INFO_EXIT (1ull << 3)
#endif

/*
 * A pidfd for the peer of a connected AF_UNIX socket: SO_PEERPIDFD where
 * the kernel has it (no pid-reuse race), else pidfd_open() of the pid
 * SO_PEERCRED gave.  -1 when neither works (the connection's EOF then is
 * the only death notice).
 */
static inline int sys_peer_pidfd(int sock, pid_t pid)
{
	int fd = -1;
	socklen_t len = sizeof(fd);

	if (getsockopt(sock, SOL_SOCKET, SO_PEERPIDFD, &fd, &len) == 0 && fd >= 0)
		return fd;
	fd = (int)syscall(SYS_pidfd_open, pid, 0);
	return fd >= 0 ? fd : -1;
}

/* A pidfd for pid, or -1 (gone, or no pidfd_open). */
static inline int sys_pidfd_open(pid_t pid)
{
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);

	return fd >= 0 ? fd : -1;
}

#endif
