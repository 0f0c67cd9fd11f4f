/*
 * broker/link-file.c - the link file links/NAME: a link's counters and
 * replay ring, mapped, so a restarted broker picks up where it stopped
 * (the peer's routed count decides what is sent again).  Creates, maps,
 * checks and closes it; names a stranger's file once its key is proved;
 * brings back the listeners' links the directory holds.
 *
 * The file is ours, but it is read as if it were not: a torn or edited
 * file is refused, never trusted (its counters bound every index into
 * the ring).
 *
 * Must never: use a link file whose header or counters did not pass
 * file_open's checks; give a stranger's link (provisional) its real name
 * before the key is proved; follow a symlink or take a file of another uid.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/link-int.h"
#include "broker/link.h"
#include "broker/log.h"
#include "shm/atomics.h"

#define LINK_FILE_VERSION 1u

bool link_name_ok(const char *n)
{
	size_t len = strlen(n);

	if (!len || len > WIRE_NAME_MAX || n[0] == '.')
		return false;
	for (; *n; n++)
		if (!((*n >= 'a' && *n <= 'z') || (*n >= 'A' && *n <= 'Z') || (*n >= '0' && *n <= '9') ||
		      *n == '-' || *n == '_' || *n == '.'))
			return false;
	return true;
}

/* Map links/NAME (create: a new one of capacity bytes).  Checks what it reads. */
static int file_open(struct broker *b, struct link *l, bool create, char *why, size_t wl)
{
	size_t len = LINK_HDR_SIZE + b->o.link_buffer;
	struct stat st;
	int fd;

	fd = openat(b->links_dirfd, l->fname,
		    O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT | O_EXCL : 0), 0600);
	if (fd < 0) {
		snprintf(why, wl, "cannot open links/%s: %s", l->name, strerror(errno));
		return -errno;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
		snprintf(why, wl, "links/%s is not a regular file of this broker's uid", l->name);
		close(fd);
		return -EINVAL;
	}
	if (create) {
		if (ftruncate(fd, (off_t)len) < 0) {
			snprintf(why, wl, "cannot size links/%s: %s", l->name, strerror(errno));
			unlinkat(b->links_dirfd, l->fname, 0);
			close(fd);
			return -ENOSPC;
		}
	} else {
		len = (size_t)st.st_size;
	}
	if (len < LINK_HDR_SIZE + 4096) {
		snprintf(why, wl, "links/%s is too short", l->name);
		close(fd);
		return -EINVAL;
	}
	l->map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (l->map == MAP_FAILED) {
		l->map = NULL;
		snprintf(why, wl, "cannot map links/%s: %s", l->name, strerror(errno));
		close(fd);
		return -ENOMEM;
	}
	l->filefd = fd;
	l->maplen = len;
	l->f = l->map;
	if (create) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		l->f->version = LINK_FILE_VERSION;
		l->f->role = l->role;
		l->f->capacity = len - LINK_HDR_SIZE;
		l->f->created_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
		store_release(&l->f->magic, LINK_FILE_MAGIC);
		return 0;
	}
	/* ours, but checked as if it were not: a torn or edited file is refused */
	if (l->f->magic != LINK_FILE_MAGIC || l->f->version != LINK_FILE_VERSION)
		snprintf(why, wl, "links/%s: not a link file of this version", l->name);
	else if (l->f->role != l->role)
		snprintf(why, wl, "links/%s was a %s's; now it is a %s's", l->name,
			 l->f->role == WIRE_DIALER ? "dialer" : "listener",
			 l->role == WIRE_DIALER ? "dialer" : "listener");
	else if (l->f->capacity != len - LINK_HDR_SIZE || l->f->acked > l->f->w ||
		 l->f->w - l->f->acked > l->f->capacity || l->f->peer_topics.n > WIRE_TOPICS_MAX)
		snprintf(why, wl, "links/%s: its counters are impossible", l->name);
	else
		return 0;
	munmap(l->map, len);
	l->map = NULL;
	l->f = NULL;
	close(fd);
	l->filefd = -1;
	return -EINVAL;
}

/* Open (or create) its file and give the engine its replay ring. */
int link_file_load(struct broker *b, struct link *l, bool create, char *why, size_t wl)
{
	int r = file_open(b, l, create, why, wl);

	if (r < 0)
		return r;
	r = lp_attach(&l->lp, (uint8_t *)l->map + LINK_HDR_SIZE, l->f->capacity, l->f->w,
		      l->f->acked, l->f->routed);
	if (r < 0)
		snprintf(why, wl, "links/%s: its counters are impossible", l->name);
	return r;
}

/* Unmap and close its file (remove: unlink it too). */
void link_file_close(struct broker *b, struct link *l, bool remove)
{
	if (l->map)
		munmap(l->map, l->maplen);
	if (l->filefd >= 0)
		close(l->filefd);
	if (remove)
		unlinkat(b->links_dirfd, l->fname, 0);
}

/* Proved: its file takes its name, and survives a restart. */
void link_file_proved(struct broker *b, struct link *l)
{
	if (renameat2(b->links_dirfd, l->fname, b->links_dirfd, l->name, RENAME_NOREPLACE) == 0)
		snprintf(l->fname, sizeof(l->fname), "%s", l->name);
	else
		link_event(l, LOG_ERR, "cannot name its file links/%s (%s): this link will"
			   " not survive a restart", l->name, strerror(errno));
}

/* What links/ holds from the last run: each listener's link comes back;
 * a dialer's comes back through its --link. */
void link_file_reload(struct broker *b)
{
	DIR *d = fdopendir(dup(b->links_dirfd));
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d))) {
		char why[200];
		struct link *l;

		if (e->d_name[0] == '.') {
			size_t n = strlen(e->d_name);

			/* a stranger's, left by a crash during its handshake */
			if (n > 5 && !strcmp(e->d_name + n - 4, ".new"))
				unlinkat(b->links_dirfd, e->d_name, 0);
			continue;
		}
		if (link_find(b, e->d_name))
			continue;
		if (!link_name_ok(e->d_name))
			continue;
		if (!b->o.listen) {
			log_msg(LOG_WARNING, "links/%s: kept, but this broker neither dials nor listens"
				" for it", e->d_name);
			continue;
		}
		l = link_new(b, e->d_name, WIRE_LISTENER);
		if (!l)
			break;
		if (link_file_load(b, l, false, why, sizeof(why)) < 0) {
			log_msg(LOG_ERR, "%s: left as it is, not used", why);
			link_free(b, l, false);
			continue;
		}
		link_event(l, LOG_NOTICE, "back from links/ (%llu bytes sent, %llu routed by the peer,"
			   " %llu of the peer's routed here); waiting for the peer",
			   (unsigned long long)l->f->w, (unsigned long long)l->f->acked,
			   (unsigned long long)l->f->routed);
	}
	closedir(d);
}
