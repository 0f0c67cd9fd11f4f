/*
 * broker/exit-pidfd.c - the fallback half of crash forensics: the exit
 * status of a reaped process from its pidfd (PIDFD_GET_INFO with
 * PIDFD_INFO_EXIT, kernel 6.15+).  Needs no privilege: any holder of the
 * pidfd may ask.  The kernel keeps the status from the reap on, so a
 * process nobody reaps (a zombie) has none.
 *
 * Must never: block (the one blocking call, the probe, runs at start-up).
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "broker/exit.h"
#include "broker/sys.h"

int exit_pidfd_status(int pidfd, int *status)
{
	struct pidfd_info i;

	memset(&i, 0, sizeof(i));
	i.mask = PIDFD_INFO_EXIT;
	if (ioctl(pidfd, PIDFD_GET_INFO, &i) < 0)
		/* ENOTTY/EINVAL: a kernel without PIDFD_GET_INFO; ESRCH: gone
		 * before 6.15 (no exit information kept) */
		return -errno;
	if (!(i.mask & PIDFD_INFO_EXIT))
		return -EAGAIN;
	*status = i.exit_code;
	return 0;
}

/*
 * The kernel's version says little (features are backported, and taken
 * out): ask it.  A child that exits 7 at once, reaped, must have
 * PIDFD_INFO_EXIT with exit status 7.
 */
int exit_pidfd_probe(void)
{
	int fd, st = 0, r;
	pid_t p = fork();

	if (p < 0)
		return -errno;
	if (p == 0)
		_exit(7);
	fd = sys_pidfd_open(p);
	while (waitpid(p, NULL, 0) < 0 && errno == EINTR)
		;
	if (fd < 0)
		return -ENOSYS;
	r = exit_pidfd_status(fd, &st);
	close(fd);
	if (r == 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 7))
		r = -EPROTO;
	return r == -EAGAIN ? -EOPNOTSUPP : r;
}
