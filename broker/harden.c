/*
 * broker/harden.c - the files a client may write cannot be cut under
 * anyone's mapping (docs/design/data-path.md, "Hardening in the broker").
 *
 * A client holds its TX file read-write, so it could ftruncate it, punch
 * holes in it, or grow it until the tmpfs every session lives in is full.
 * Three defences, each enough where the one before is missing:
 *   - Landlock (ABI 3, Linux 6.2+): the descriptor a client gets is opened
 *     by a short-lived thread that denied itself LANDLOCK_ACCESS_FS_TRUNCATE
 *     first; whether a descriptor may be truncated is decided at open(2),
 *     so nobody can truncate (or grow by ftruncate) through it.  Where
 *     Landlock lacks it, or with --no-landlock, the client gets a copy of
 *     the broker's own descriptor, as before, and the log says so once.
 *   - The sweep: every second the size and the allocated blocks of every
 *     TX file are compared with what they were when the broker made or
 *     adopted it (fallocate reserved every block).  A file that changed
 *     size or lost blocks quarantines its session, and the broker cuts it
 *     back to the size it made it with through its own descriptor, so the
 *     tmpfs gets back what it grew by (the client's mapping stays valid).
 *   - The SIGBUS guard (guard.c) for a broker read that comes first.
 *
 * Must never: hand a client a descriptor that may truncate where Landlock
 * could have prevented it; run the restricted opener on the loop's thread
 * (the restriction cannot be undone); leave what a quarantined file grew
 * by in the tmpfs.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/harden.h"
#include "broker/log.h"
#include "broker/session.h"
#include "broker/sys.h"

/* The Landlock ABI the kernel speaks (0: none). */
static int landlock_abi(void)
{
	long abi = sys_landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);

	return abi < 0 ? 0 : (int)abi;
}

int harden_init(struct broker *b)
{
	int abi = landlock_abi();

	b->landlock = !b->o.no_landlock && abi >= 3;
	if (b->landlock)
		log_msg(LOG_INFO, "clients' TX files: handed out opened under Landlock (ABI %d),"
			" so clients cannot truncate them", abi);
	else
		log_msg(LOG_WARNING, "clients' TX files: %s; a client may truncate its own TX file"
			" (the SIGBUS guard and the size sweep still stand)",
			b->o.no_landlock ? "Landlock not used (--no-landlock)"
			: abi ? "this kernel's Landlock cannot deny truncation (ABI < 3)"
			      : "Landlock is not available");
	return 0;
}

struct opener {
	int dirfd;
	const char *name;
	int fd;                /* the result, or -errno */
};

/* The restricted thread: deny truncation to itself, then open. */
static void *opener_main(void *arg)
{
	struct opener *o = arg;
	struct landlock_ruleset_attr ra = { .handled_access_fs = LANDLOCK_ACCESS_FS_TRUNCATE };
	int rs;

	o->fd = -EPERM;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		o->fd = -errno;
		return NULL;
	}
	/* handled but granted nowhere: no file may be truncated from here on */
	rs = (int)sys_landlock_create_ruleset(&ra, sizeof(ra), 0);
	if (rs < 0) {
		o->fd = -errno;
		return NULL;
	}
	if (sys_landlock_restrict_self(rs, 0) < 0) {
		o->fd = -errno;
		close(rs);
		return NULL;
	}
	close(rs);
	o->fd = openat(o->dirfd, o->name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (o->fd < 0)
		o->fd = -errno;
	return NULL;
}

int harden_client_fd(struct broker *b, int dirfd, const char *name, int own_fd)
{
	struct opener o = { dirfd, name, -EINVAL };
	sigset_t all, old;
	pthread_t t;
	int r;

	if (!b->landlock) {
		r = fcntl(own_fd, F_DUPFD_CLOEXEC, 0);
		return r < 0 ? -errno : r;
	}
	/* the thread takes no signal: they are the loop's (signalfd, SIGBUS) */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&t, NULL, opener_main, &o);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0)
		return -r;
	pthread_join(t, NULL);
	return o.fd;
}

/* What the broker saw of a file when it made or adopted it. */
int harden_note(int fd, uint64_t *blocks)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	*blocks = (uint64_t)st.st_blocks;
	return 0;
}

/* Has a client cut, grown or punched this file since? */
static const char *changed(const struct segment *seg, uint64_t blocks)
{
	struct stat st;

	if (seg->fd < 0)
		return NULL;
	if (fstat(seg->fd, &st) < 0)
		return "it cannot be looked at";
	if ((uint64_t)st.st_size < seg->len)
		return "it was truncated";
	if ((uint64_t)st.st_size > seg->len)
		return "it grew";
	if ((uint64_t)st.st_blocks < blocks)
		return "it lost blocks (a hole was punched in it)";
	return NULL;
}

static void quarantine(struct broker *b, struct session *s, struct segment *seg, const char *what)
{
	char why[160];

	snprintf(why, sizeof(why), "its TX file was changed by its client: %s", what);
	session_quarantine(b, s, why);
	/* what it grew by goes back to the tmpfs; the size it was made with
	 * stays, so no mapping of it (its client's) faults */
	if (ftruncate(seg->fd, (off_t)seg->len) < 0)
		log_msg(LOG_WARNING, "session %s: cannot cut its TX file back: %s", s->name,
			strerror(errno));
}

void harden_sweep(struct broker *b)
{
	for (unsigned i = 0; i < b->nsessions; i++) {
		struct session *s = b->sessions[i];
		const char *what;

		if (s->quarantined)
			continue;
		if (s->tx.base && (what = changed(&s->tx, s->tx_blocks)))
			quarantine(b, s, &s->tx, what);
		else if (s->drain_gen && (what = changed(&s->drain_tx, s->drain_blocks)))
			quarantine(b, s, &s->drain_tx, what);
	}
}
