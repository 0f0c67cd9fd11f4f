/*
 * libclient/lanew.c - libshmb's writer side of the direct data path (see
 * lanew.h; docs/design/data-path.md, sections 1-4).
 *
 * Must never: make a record visible before one with a lower source
 * sequence (a publish to another lane commits the open batch first);
 * read a page another process can cut except under the SIGBUS guard;
 * keep a descriptor it was given (each is mapped, then closed).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "libclient/lanew.h"
#include "libclient/sigbus.h"

static int fail(struct lanew *s, int err, const char *what)
{
	snprintf(s->why, sizeof(s->why), "%s", what);
	return err;
}

void lanew_init(struct lanew *s, uint64_t next_order)
{
	memset(s, 0, sizeof(*s));
	s->next_order = next_order ? next_order : 1;
	s->committed_order = s->next_order;
}

/* Map fd (exactly len bytes by fstat, else -EMSGSIZE) and close it. */
static void *map_fd(int fd, size_t len, int prot, int *err)
{
	struct stat st;
	void *m = MAP_FAILED;

	*err = 0;
	if (fstat(fd, &st) < 0)
		*err = -errno;
	else if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != len)
		*err = -EMSGSIZE;
	else if ((m = mmap(NULL, len, prot, MAP_SHARED, fd, 0)) == MAP_FAILED)
		*err = -errno;
	close(fd);
	return *err ? NULL : m;
}

static void lane_drop(struct lanew_lane *l)
{
	lane_writer_free(&l->w);
	for (int k = 0; k < 2; k++)
		if (l->guard[k] >= 0)
			sigbus_remove(l->guard[k]);
	if (l->data)
		munmap(l->data, l->data_len);
	if (l->meta)
		munmap((void *)l->meta, SHM_LANE_META_SIZE);
	if (l->hold)
		munmap((void *)l->hold, SHM_HOLD_SIZE);
	if (l->tx_wake)
		munmap(l->tx_wake, 4096);
	free(l);
}

static struct lanew_map *map_find(struct lanew_map *t, unsigned n, uint64_t key)
{
	for (unsigned i = 0; i < n; i++)
		if (t[i].key == key)
			return &t[i];
	return NULL;
}

/* The lane_pages callbacks: what hold entries name, as far as mapped. */
static const struct shm_cursor_page *cb_cursor(void *ctx, uint32_t page)
{
	struct lanew *s = ctx;
	struct lanew_map *m = map_find(s->pages, s->npages, page);

	return m ? m->map : NULL;
}

static const struct shm_arm_page *cb_arm(void *ctx, uint32_t page)
{
	struct lanew *s = ctx;
	struct lanew_map *m = map_find(s->arms, s->narms, page);

	return m ? m->map : NULL;
}

static uint32_t *cb_wake(void *ctx, uint64_t reader)
{
	struct lanew *s = ctx;
	struct lanew_map *m = map_find(s->wakes, s->nwakes, reader);

	return m ? m->map : NULL;
}

int lanew_lane_add(struct lanew *s, uint32_t number, uint64_t ring_size, const int fds[4])
{
	struct lane_pages pages = { cb_cursor, cb_arm, cb_wake, s };
	struct lanew_lane *l;
	int err = 0, ret;

	/* asked again for it (PROTO_LANE_TOPIC_FDS): one writer per lane */
	if (lanew_has_lane(s, number)) {
		for (int k = 0; k < 4; k++)
			close(fds[k]);
		return 0;
	}
	if (s->nlanes == LANEW_LANES || ring_size > SHM_RING_MAX || !(l = calloc(1, sizeof(*l)))) {
		for (int k = 0; k < 4; k++)
			close(fds[k]);
		return fail(s, -ENOSPC, "no room for another lane");
	}
	l->number = number;
	l->guard[0] = l->guard[1] = -1;
	l->data_len = SHM_LANE_RING_OFFSET + ring_size;
	l->data = map_fd(fds[0], l->data_len, PROT_READ | PROT_WRITE, &err);
	if (!err)
		l->meta = map_fd(fds[1], SHM_LANE_META_SIZE, PROT_READ, &err);
	else
		close(fds[1]);
	if (!err)
		l->hold = map_fd(fds[2], SHM_HOLD_SIZE, PROT_READ, &err);
	else
		close(fds[2]);
	if (!err) {
		struct stat st;

		if (fstat(fds[3], &st) == 0) {
			l->wake_dev = st.st_dev;
			l->wake_ino = st.st_ino;
		}
		l->tx_wake = map_fd(fds[3], 4096, PROT_READ | PROT_WRITE, &err);
	} else {
		close(fds[3]);
	}
	if (err) {
		lane_drop(l);
		return fail(s, err, "a lane's descriptor is not what it should be");
	}
	/* its own lane cannot be cut by a reader (they map it read-only), but
	 * the broker's quarantine may cut it: a guarded mapping, not a crash */
	if (sigbus_install() == 0) {
		l->guard[0] = sigbus_add(l->data, l->data_len, PROT_READ | PROT_WRITE);
		l->guard[1] = sigbus_add((void *)l->meta, SHM_LANE_META_SIZE, PROT_READ);
	}
	ret = lane_writer_init(&l->w, l->data, ring_size, (void *)l->hold, &pages, false, 0, 0, 0);
	if (ret < 0) {
		lane_drop(l);
		return fail(s, ret, "a lane of an impossible size");
	}
	s->lanes[s->nlanes++] = l;
	return 0;
}

static struct lanew_lane *lane_by_number(struct lanew *s, uint32_t number)
{
	for (unsigned i = 0; i < s->nlanes; i++)
		if (s->lanes[i]->number == number)
			return s->lanes[i];
	return NULL;
}

int lanew_topic(struct lanew *s, uint32_t topic, uint32_t number)
{
	struct lanew_lane *l = lane_by_number(s, number);

	if (!l)
		return fail(s, -ENOENT, "a topic for a lane this owner does not have");
	s->last_lane = NULL;
	if (topic >= SHM_LANE_TOPIC_BITS)
		return fail(s, -EINVAL, "a topic id out of range");
	if (topic >= s->topics_cap) {
		uint32_t cap = s->topics_cap ? s->topics_cap : 64;
		struct lanew_lane **n;

		while (cap <= topic)
			cap *= 2;
		n = realloc(s->by_topic, cap * sizeof(*n));
		if (!n)
			return fail(s, -ENOMEM, "no memory for the topic table");
		memset(n + s->topics_cap, 0, (cap - s->topics_cap) * sizeof(*n));
		s->by_topic = n;
		s->topics_cap = cap;
	}
	s->by_topic[topic] = l;
	return 0;
}

bool lanew_unresolved(const struct lanew *s)
{
	for (unsigned i = 0; i < s->nlanes; i++)
		if (s->lanes[i]->w.unresolved)
			return true;
	return false;
}

bool lanew_has_lane(const struct lanew *s, uint32_t number)
{
	for (unsigned i = 0; i < s->nlanes; i++)
		if (s->lanes[i]->number == number)
			return true;
	return false;
}

/* Keep a mapping of one 4096-byte page under key (replacing nothing:
 * a number is never reused by the broker). */
static int map_keep(struct lanew *s, struct lanew_map *t, unsigned *n, uint64_t key, int fd,
		    int prot, bool guard)
{
	int err;
	void *m;

	if (map_find(t, *n, key)) {
		close(fd);
		return 0;
	}
	if (*n == LANEW_PAGES) {
		close(fd);
		return fail(s, -ENOSPC, "too many readers' pages");
	}
	m = map_fd(fd, 4096, prot, &err);
	if (!m)
		return fail(s, err, "a reader's page is not what it should be");
	t[*n] = (struct lanew_map){ key, m, -1 };
	/* a cursor page is its reader's file: it could cut it under us */
	if (guard && sigbus_install() == 0)
		t[*n].guard = sigbus_add(m, 4096, prot);
	(*n)++;
	return 0;
}

/* Lane `number`'s tx_wake replaced by the page fd (consumed), unless it
 * is the same: mapped elsewhere, then moved over the old address in one
 * step, so that a wait holding the address never finds it unmapped. */
static int wake_replace(struct lanew *s, uint32_t number, int fd)
{
	struct lanew_lane *l = lane_by_number(s, number);
	struct stat st;
	int err = 0;
	void *m;

	if (!l || fstat(fd, &st) < 0 || (st.st_dev == l->wake_dev && st.st_ino == l->wake_ino)) {
		close(fd);
		return 0;
	}
	m = map_fd(fd, 4096, PROT_READ | PROT_WRITE, &err);
	if (!m)
		return fail(s, err, "a lane's tx_wake is not what it should be");
	if (mremap(m, 4096, 4096, MREMAP_MAYMOVE | MREMAP_FIXED, l->tx_wake) == MAP_FAILED) {
		err = -errno;
		munmap(m, 4096);
		return fail(s, err, "a lane's tx_wake cannot be replaced");
	}
	l->wake_dev = st.st_dev;
	l->wake_ino = st.st_ino;
	return 0;
}

int lanew_holder(struct lanew *s, const struct proto_holder *h, const int *fds, unsigned nfds)
{
	unsigned k = 0;
	int ret = 0;

	if ((h->flags & PROTO_HOLDER_PAGE) && k < nfds && !ret)
		ret = map_keep(s, s->pages, &s->npages, h->page, fds[k++], PROT_READ, true);
	if ((h->flags & PROTO_HOLDER_WAKE) && k < nfds && !ret)
		ret = map_keep(s, s->wakes, &s->nwakes, h->reader, fds[k++], PROT_READ | PROT_WRITE,
			       false);
	if ((h->flags & PROTO_HOLDER_ARM) && k < nfds && !ret)
		ret = map_keep(s, s->arms, &s->narms, h->arm_page, fds[k++], PROT_READ, false);
	if ((h->flags & PROTO_HOLDER_TX_WAKE) && k < nfds && !ret)
		ret = wake_replace(s, h->lane, fds[k++]);
	while (k < nfds)
		close(fds[k++]);
	/* the writers look at the table again with what is mapped now */
	for (unsigned i = 0; i < s->nlanes; i++)
		s->lanes[i]->w.version = UINT64_MAX;
	return ret;
}

/* The topic's lane: the last one asked for without a search (a publish
 * is on the message path), else from the table. */
static struct lanew_lane *lane_of(struct lanew *s, uint32_t topic)
{
	if (s->last_lane && s->last_topic == topic)
		return s->last_lane;
	if (topic >= s->topics_cap || !s->by_topic[topic])
		return NULL;
	s->last_topic = topic;
	s->last_lane = s->by_topic[topic];
	return s->last_lane;
}

static int lane_commit_open(struct lanew *s)
{
	struct lanew_lane *l = s->open;
	int ret;

	if (!l)
		return 0;
	s->open = NULL;
	ret = lane_commit(&l->w);
	if (ret == -ESTALE)
		l->ended = true;
	else if (ret == 0)
		s->committed_order = s->next_order;
	return ret;
}

int lanew_publish(struct lanew *s, uint32_t topic, const void *data, uint32_t len, bool more,
		  const struct timespec *deadline)
{
	struct lanew_lane *l = lane_of(s, topic);
	void *dst;
	int ret;

	if (!l)
		return fail(s, -ENOENT, "no lane for the topic yet");
	if (l->ended)
		return -ESTALE;
	/* source order across lanes: another lane's batch goes first */
	if (s->open && s->open != l && (ret = lane_commit_open(s)) < 0)
		return ret;
	while ((ret = lane_reserve(&l->w, topic, s->next_order, NULL, len, &dst)) == -EAGAIN) {
		if (s->open == l)
			s->open = NULL; /* lane_wait_space commits it first */
		ret = lane_wait_space(&l->w, len, l->tx_wake, deadline, s->drain, s->ctx);
		if (ret == -ESTALE)
			l->ended = true;
		else if (ret >= 0 || ret == -ETIMEDOUT)
			s->committed_order = s->next_order; /* the batch went first */
		if (ret < 0)
			return ret == -ETIMEDOUT ? -EAGAIN : ret;
	}
	if (ret < 0)
		return ret;
	if (len)
		memcpy(dst, data, len);
	s->next_order++;
	s->open = l;
	return more ? 0 : lane_commit_open(s);
}

int lanew_flush(struct lanew *s)
{
	return lane_commit_open(s);
}

void lanew_free(struct lanew *s)
{
	struct lanew_map *t[3] = { s->pages, s->wakes, s->arms };
	unsigned n[3] = { s->npages, s->nwakes, s->narms };

	for (unsigned i = 0; i < s->nlanes; i++)
		lane_drop(s->lanes[i]);
	for (int k = 0; k < 3; k++)
		for (unsigned i = 0; i < n[k]; i++) {
			if (t[k][i].guard >= 0)
				sigbus_remove(t[k][i].guard);
			munmap(t[k][i].map, 4096);
		}
	free(s->by_topic);
	memset(s, 0, sizeof(*s));
}
