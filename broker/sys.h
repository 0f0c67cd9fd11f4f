/*
 * broker/sys.h - the system calls and constants shmbd needs that libc or
 * Debian 12's 6.1 kernel headers do not provide, in one place.
 */
#ifndef BROKER_SYS_H
#define BROKER_SYS_H

#include <errno.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* kernel 6.5 */
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
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
