/*
 * libclient/client-lanes.c - a session's direct data path in libshmb
 * (docs/design/data-path.md; shmbd --lanes): the pushes the broker sends
 * for it (PROTO_LANE to its reader, PROTO_HOLDER to its writer), queued by
 * whichever thread reads the control connection and taken by the thread
 * that uses the session; its writer (lanew.c) and its reader over many
 * lanes (laneset.c) with its own sleep word and arm page.
 *
 * A session is used by one thread at a time (shmb.h), so its writer and
 * reader need no lock; only the queue does, being filled by other
 * threads (an application thread in a request, or one draining the
 * socket, both under c->lock).
 *
 * Must never: keep a descriptor a push brought (each is mapped, then
 * closed); apply a push meant for another owner generation; block on
 * c->lock from the data path (the socket is drained only when the lock
 * is free: a request in flight reads the pushes itself).
 */
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "libclient/client.h"
#include "libclient/internal.h"
#include "libclient/lanew.h"
#include "libclient/laneset.h"
#include "shm/atomics.h"
#include "shm/futex.h"

#define PUSH_FDS 6

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449 /* Linux 5.16; glibc 2.36's headers may lack it */
#endif

struct lpush_item {
	union {
		struct proto_hdr h;
		struct proto_lane lane;
		struct proto_holder holder;
		struct proto_reader_topics topics;
	} m;
	int fds[PUSH_FDS];
	unsigned nfds;
};

struct client_lanes {
	pthread_mutex_t qlock;
	struct lpush_item *q;   /* pushes not applied yet (qlock) */
	unsigned nq, cap;
	uint32_t pending;       /* atomic: nq != 0, looked at without the lock */
	struct lanew w;         /* the writer of this owner generation */
	struct laneset set;     /* the reader */
	uint32_t *rx_wake;      /* the reader's own sleep word and arm page, */
	struct shm_arm_page *arm; /* from its first LANE push (PROTO_LANE_SELF) */
	uint32_t arm_slot;
	uint64_t wake_dev, wake_ino; /* which page rx_wake is */
	/* other pages a later PROTO_LANE_SELF brought (a restarted broker's:
	 * the old ones were the dead broker's memfds), mapped over the old
	 * ones by self_switch() where no sleep holds the old arm slot */
	uint32_t *next_wake;
	struct shm_arm_page *next_arm;
	uint32_t next_arm_slot;
	uint64_t next_dev, next_ino;
	uint8_t *buf;           /* copied records */
	uint32_t buf_cap;
	uint32_t drain_tick;    /* the socket is looked at every 1024 calls, */
	uint64_t drained_ns;    /* or every ms while a holder's pages are awaited, */
	bool drain_missed;      /* or at the next call when a request kept the last off */
	bool rx_first;          /* the RX ring's turn before the lanes' */
	uint64_t bad_lanes;
	uint64_t bad_pub[8];    /* publishers of lanes found bad, to be told, */
	uint32_t bad_lane[8];   /* and those lanes, to be reported to the broker */
	unsigned nbad;
	/* shmb_session_fd(): its eventfd, written by the client's waker when
	 * rx_wake moves from poll_v while poll_armed (c->slock for the fd) */
	int poll_efd;
	uint32_t poll_armed;    /* atomic */
	uint32_t poll_v;
	/* armed with records returned and not acknowledged: a writer may
	 * take it for a noisy reader and skip its wake, so the waker makes
	 * its fd readable every ms (as laneset_wait() looks; atomic) */
	uint32_t poll_unacked;
};

static void close_fds(const int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
}

static void on_lane_event(void *ctx, int event, uint64_t publisher, uint32_t lane)
{
	struct shmb_session *s = ctx;

	/* told after the set's call returns: the callback may call back */
	if (event == LANESET_EV_BAD) {
		s->ln->bad_lanes++;
		if (s->ln->nbad < sizeof(s->ln->bad_pub) / sizeof(s->ln->bad_pub[0])) {
			s->ln->bad_lane[s->ln->nbad] = lane;
			s->ln->bad_pub[s->ln->nbad++] = publisher;
		}
	}
}

/* Tell the broker (PROTO_LANE_BAD): it walks the lane itself and, finding
 * the bad record, quarantines the writer.  Only while connected: the
 * data path does not wait for a redial for it.  Its answer changes
 * nothing here (the lane is dropped either way). */
static void report_bad(struct shmb_session *s, uint32_t lane)
{
	struct proto_lane_bad q = { .h.type = PROTO_LANE_BAD, .session_id = s->id, .lane = lane };
	struct shmb_client *c = s->c;
	struct conn_try t = { 0 };
	struct proto_reply rep;
	int r;

	if (!load_acquire(&c->linked))
		return;
	while ((r = conn_enter(c, &t)) == 0) {
		r = conn_rpc_locked(c, &q, sizeof(q), &rep, NULL, 0);
		if (!conn_leave(c, &t, &r))
			break;
	}
}

/* SHMB_EV_SOURCE_BAD for each lane the set dropped as bad. */
static void tell_bad(struct shmb_session *s)
{
	struct client_lanes *ln = s->ln;

	while (ln->nbad) {
		ln->nbad--;
		report_bad(s, ln->bad_lane[ln->nbad]);
		client_event(s->c, SHMB_EV_SOURCE_BAD, s, ln->bad_pub[ln->nbad]);
	}
}

/* The writer's drain before it sleeps for space: the HOLDER pushes that
 * may name the pages of the readers it waits for. */
static void writer_drain(void *ctx)
{
	struct shmb_session *s = ctx;

	conn_drain_pushes(s->c);
	client_lanes_apply(s);
}

static bool look_more(void *ctx);
static void self_switch(struct shmb_session *s);

int client_lanes_open(struct shmb_session *s, uint64_t start_seq)
{
	struct client_lanes *ln = calloc(1, sizeof(*ln));

	if (!ln)
		return -ENOMEM;
	ln->buf_cap = 4096;
	ln->buf = malloc(ln->buf_cap);
	if (!ln->buf || laneset_init(&ln->set, on_lane_event, s) < 0) {
		free(ln->buf);
		free(ln);
		return -ENOMEM;
	}
	pthread_mutex_init(&ln->qlock, NULL);
	ln->poll_efd = -1;
	/* a lane's order 0 means "none": order = source sequence + 1 */
	lanew_init(&ln->w, start_seq + 1);
	ln->w.drain = writer_drain;
	ln->w.ctx = s;
	ln->set.before_sleep = writer_drain; /* the same: drain, then apply */
	ln->set.look_more = look_more;
	s->ln = ln;
	return 0;
}

void client_lanes_free(struct shmb_session *s)
{
	struct client_lanes *ln = s->ln;

	if (!ln)
		return;
	lanew_free(&ln->w);
	laneset_free(&ln->set);
	for (unsigned i = 0; i < ln->nq; i++)
		close_fds(ln->q[i].fds, ln->q[i].nfds);
	free(ln->q);
	if (ln->rx_wake)
		munmap(ln->rx_wake, 4096);
	if (ln->arm)
		munmap(ln->arm, 4096);
	if (ln->next_wake)
		munmap(ln->next_wake, 4096);
	if (ln->next_arm)
		munmap(ln->next_arm, 4096);
	if (ln->poll_efd >= 0)
		close(ln->poll_efd);
	pthread_mutex_destroy(&ln->qlock);
	free(ln->buf);
	free(ln);
	s->ln = NULL;
}

/* ---- pushes ------------------------------------------------------------------- */

void client_lanes_dispatch(struct shmb_client *c, const void *msg, size_t n, const int *fds,
			   int nfds)
{
	const struct proto_hdr *h = msg;
	struct shmb_session *s = NULL;
	uint64_t id;
	uint32_t gen;
	bool kept = false;

	if (h->type == PROTO_LANE && n == sizeof(struct proto_lane)) {
		id = ((const struct proto_lane *)msg)->session_id;
		gen = ((const struct proto_lane *)msg)->generation;
	} else if (h->type == PROTO_HOLDER && n == sizeof(struct proto_holder)) {
		id = ((const struct proto_holder *)msg)->session_id;
		gen = ((const struct proto_holder *)msg)->generation;
	} else if (h->type == PROTO_READER_TOPICS && n == sizeof(struct proto_reader_topics)) {
		id = ((const struct proto_reader_topics *)msg)->session_id;
		gen = ((const struct proto_reader_topics *)msg)->generation;
	} else {
		close_fds((const int *)fds, (unsigned)nfds);
		return;
	}
	pthread_mutex_lock(&c->slock);
	for (unsigned i = 0; i < c->nsessions; i++)
		if (c->sessions[i]->id == id && c->sessions[i]->generation == gen) {
			s = c->sessions[i];
			break;
		}
	if (s && s->ln && nfds <= PUSH_FDS) {
		struct client_lanes *ln = s->ln;

		pthread_mutex_lock(&ln->qlock);
		if (ln->nq == ln->cap) {
			unsigned cap = ln->cap ? 2 * ln->cap : 16;
			struct lpush_item *q = realloc(ln->q, cap * sizeof(*q));

			if (q) {
				ln->q = q;
				ln->cap = cap;
			}
		}
		if (ln->nq < ln->cap) {
			struct lpush_item *p = &ln->q[ln->nq++];

			memcpy(&p->m, msg, n);
			memcpy(p->fds, fds, (size_t)nfds * sizeof(int));
			p->nfds = (unsigned)nfds;
			kept = true;
			store_release(&ln->pending, 1);
		}
		pthread_mutex_unlock(&ln->qlock);
		/* its reader may sleep: it applies the push when woken (a
		 * request of another thread may have read it, not the reader) */
		if (kept && h->type == PROTO_LANE)
			client_lanes_wake(s);
	}
	pthread_mutex_unlock(&c->slock);
	if (!kept)
		close_fds((const int *)fds, (unsigned)nfds);
}

/* Map one page of a push (4096 bytes, read-write). */
static void *page_map(int fd)
{
	void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	return m == MAP_FAILED ? NULL : m;
}

/* A PROTO_LANE push: data, meta, [cursor page], [tx_wake], [rx_wake, arm]. */
static void apply_lane(struct client_lanes *ln, const struct proto_lane *m, const int *fds,
		       unsigned nfds)
{
	struct laneset_desc d;
	int page_fd = -1, wake_fd = -1, k;

	if (m->flags == PROTO_LANE_RELEASED) {
		if (nfds == 0)
			(void)laneset_released(&ln->set, m->lane);
		return;
	}
	if (m->lane == 0 && m->flags == PROTO_LANE_SELF) {
		/* only the reader's own words (sent at its subscribe) */
		if (nfds != 2)
			return;
		k = 0;
	} else {
		k = laneset_push_desc(m, fds, nfds, &d, &page_fd, &wake_fd);
		if (k < 0)
			return; /* not what the flags say: a broker bug; the lane is not read */
	}
	if ((m->flags & PROTO_LANE_SELF) && m->arm_slot < SHM_ARM_SLOTS) {
		struct stat st;
		uint32_t *w = NULL;
		struct shm_arm_page *a = NULL;

		/* the same page again (a reattach's resend): nothing to do */
		if (fstat(fds[k], &st) == 0 &&
		    (!ln->rx_wake || st.st_dev != ln->wake_dev || st.st_ino != ln->wake_ino) &&
		    (!ln->next_wake || st.st_dev != ln->next_dev || st.st_ino != ln->next_ino)) {
			w = page_map(fds[k]);
			a = page_map(fds[k + 1]);
		}
		if (w && a && !ln->rx_wake) {
			ln->arm_slot = m->arm_slot;
			ln->arm = a;
			ln->wake_dev = st.st_dev;
			ln->wake_ino = st.st_ino;
			/* last: the reader sleeps on it once both are there */
			store_release(&ln->rx_wake, w);
		} else if (w && a) {
			if (ln->next_wake) {
				munmap(ln->next_wake, 4096);
				munmap(ln->next_arm, 4096);
			}
			ln->next_wake = w;
			ln->next_arm = a;
			ln->next_arm_slot = m->arm_slot;
			ln->next_dev = st.st_dev;
			ln->next_ino = st.st_ino;
		} else {
			if (w)
				munmap(w, 4096);
			if (a)
				munmap(a, 4096);
		}
	}
	/* a page already mapped, or a lane already read (a push sent again
	 * after a reattach), is refused with -EEXIST: nothing to do */
	if (m->lane == 0)
		return;
	if (page_fd >= 0)
		(void)laneset_cursor_page(&ln->set, m->publisher, m->page, page_fd);
	/* let go at an unsubscribe, held again: read on from where it stands */
	if ((m->flags & PROTO_LANE_REHOLD) && laneset_rehold(&ln->set, &d) != -ENOENT)
		return;
	if (laneset_add(&ln->set, &d, fds[0], fds[1], wake_fd) == -EEXIST && wake_fd >= 0)
		(void)laneset_set_tx_wake(&ln->set, m->lane, wake_fd);
}

/* The session's topics as the broker has them: a new owner generation
 * reads what its session is subscribed to, not only what it subscribed. */
static void apply_topics(struct client_lanes *ln, const struct proto_reader_topics *m)
{
	if (m->flags & PROTO_TOPICS_FIRST)
		laneset_topics_clear(&ln->set);
	for (uint32_t i = 0; i < m->count && i < PROTO_READER_TOPICS_MAX; i++)
		(void)laneset_topic(&ln->set, m->ids[i], true);
}

void client_lanes_apply(struct shmb_session *s)
{
	struct client_lanes *ln = s->ln;
	struct lpush_item *q;
	unsigned n;

	if (!ln || !load_acquire(&ln->pending))
		return;
	pthread_mutex_lock(&ln->qlock);
	q = ln->q;
	n = ln->nq;
	ln->q = NULL;
	ln->nq = ln->cap = 0;
	store_relaxed(&ln->pending, 0);
	pthread_mutex_unlock(&ln->qlock);
	for (unsigned i = 0; i < n; i++) {
		struct lpush_item *p = &q[i];

		if (p->m.h.type == PROTO_LANE) {
			apply_lane(ln, &p->m.lane, p->fds, p->nfds);
			close_fds(p->fds, p->nfds);
		} else if (p->m.h.type == PROTO_HOLDER) {
			(void)lanew_holder(&ln->w, &p->m.holder, p->fds, p->nfds); /* consumed */
		} else {
			apply_topics(ln, &p->m.topics);
			close_fds(p->fds, p->nfds);
		}
	}
	free(q);
}

/* Every 1024 calls on the message path, the socket: a session that never
 * sleeps still takes its pushes, and the broker's socket buffer never
 * fills with them.  While a holder's pages are awaited (a new reader, or
 * every reader after a broker restart, whose wake pages are new), at
 * every call a ms after the last look, or after a look a request kept
 * off (the lock was busy: a reattach): until they come its writer cannot
 * wake that reader, who then sleeps out its deadline.  The clock is read
 * only then (a read per message was a fifth of a stream's time). */
static void maybe_drain(struct shmb_session *s)
{
	struct client_lanes *ln = s->ln;

	if (lanew_unresolved(&ln->w)) {
		uint64_t now = clock_mono_ns();

		if (ln->drain_missed || now - ln->drained_ns >= 1000000ull) {
			ln->drain_missed = !conn_drain_pushes(s->c);
			ln->drained_ns = now;
		}
	} else if (!(++ln->drain_tick & 1023)) {
		conn_drain_pushes(s->c);
	}
	client_lanes_apply(s);
}

/* ---- the writer --------------------------------------------------------------- */

/* The topic's lane from the broker, if this generation has none for it. */
static int lane_for(struct shmb_session *s, uint32_t topic)
{
	struct proto_lane_topic q = { .h.type = PROTO_LANE_TOPIC, .session_id = s->id,
				      .topic_id = topic };
	struct shmb_client *c = s->c;
	struct conn_try t = { 0 };
	struct proto_reply rep;
	int fds[4], r;

	while ((r = conn_enter(c, &t)) == 0) {
		r = conn_rpc_opt_fds(c, &q, sizeof(q), &rep, fds, 4);
		if (r == 0 && rep.u.lane.fds == 4) {
			r = lanew_lane_add(&s->ln->w, rep.u.lane.lane, rep.u.lane.ring_size, fds);
		} else if (r == 0 && !lanew_has_lane(&s->ln->w, rep.u.lane.lane) &&
			   !(q.flags & PROTO_LANE_TOPIC_FDS)) {
			/* the reply that made it never came (a broker restart, a
			 * lost connection): once more, asking for its descriptors */
			q.flags |= PROTO_LANE_TOPIC_FDS;
			r = conn_rpc_opt_fds(c, &q, sizeof(q), &rep, fds, 4);
			if (r == 0 && rep.u.lane.fds == 4)
				r = lanew_lane_add(&s->ln->w, rep.u.lane.lane, rep.u.lane.ring_size,
						   fds);
		}
		if (r == 0)
			r = lanew_topic(&s->ln->w, topic, rep.u.lane.lane);
		if (!conn_leave(c, &t, &r))
			break;
	}
	return r;
}

int client_lanes_publish(struct shmb_session *s, uint32_t topic, const void *data, size_t len,
			 int timeout_ms, bool more)
{
	static const struct timespec now = { 0, 0 };
	struct client_lanes *ln = s->ln;
	struct timespec d;
	int r;

	if (len > UINT32_MAX)
		return -EMSGSIZE;
	maybe_drain(s);
	/* the deadline is read from the clock only when there is no room:
	 * a clock read per message was a fifth of a batched stream's time */
	r = lanew_publish(&ln->w, topic, data, (uint32_t)len, more, &now);
	/* a topic's first publish: its lane from the broker, then again (the
	 * look-up is lanew_publish's own, not a search before each publish) */
	if (r == -ENOENT) {
		r = lane_for(s, topic);
		if (r == 0)
			r = lanew_publish(&ln->w, topic, data, (uint32_t)len, more, &now);
	}
	if (r != -EAGAIN || timeout_ms == 0)
		return r;
	if (timeout_ms > 0)
		d = deadline_in_ns((uint64_t)timeout_ms * 1000000ull);
	r = lanew_publish(&ln->w, topic, data, (uint32_t)len, more, timeout_ms > 0 ? &d : NULL);
	return r == -EAGAIN && timeout_ms > 0 ? -ETIMEDOUT : r;
}

int client_lanes_flush(struct shmb_session *s)
{
	return lanew_flush(&s->ln->w);
}

uint64_t client_lanes_next_seq(const struct shmb_session *s)
{
	return s->ln->w.committed_order - 1; /* what a batch holds open is not counted */
}

/* ---- the reader --------------------------------------------------------------- */

void client_lanes_spooled(struct shmb_session *s, uint64_t publisher, uint64_t order)
{
	(void)laneset_floor(&s->ln->set, publisher, order);
}

bool client_lanes_spool_dup(const struct shmb_session *s, uint64_t publisher, uint64_t order)
{
	return laneset_below_floor(&s->ln->set, publisher, order);
}

int client_lanes_topic(struct shmb_session *s, uint32_t topic, bool on)
{
	return laneset_topic(&s->ln->set, topic, on);
}

int client_lanes_next(struct shmb_session *s, struct shmb_msg *m)
{
	struct client_lanes *ln = s->ln;
	struct laneset_msg lm;
	int r;

	maybe_drain(s);
	if (ln->next_wake)
		self_switch(s);
	while ((r = laneset_next(&ln->set, ln->buf, ln->buf_cap, &lm)) == -EMSGSIZE) {
		uint8_t *b = malloc(lm.len);

		if (!b)
			return -ENOMEM;
		free(ln->buf);
		ln->buf = b;
		ln->buf_cap = lm.len;
	}
	tell_bad(s);
	if (r < 0)
		return r;
	if (r == 0)
		return -EAGAIN;
	m->data = lm.data;
	m->len = lm.len;
	m->topic_id = lm.topic_id;
	m->src_broker = s->c->broker_id;
	m->src_session = lm.publisher;
	m->src_seq = lm.order - 1;
	m->missed = lm.missed;
	if (lm.missed)
		client_event(s->c, SHMB_EV_GAP, s, lm.missed);
	return 0;
}

void client_lanes_ack(struct shmb_session *s)
{
	laneset_ack(&s->ln->set);
}

bool client_lanes_rx_first(struct shmb_session *s)
{
	return s->ln->rx_first = !s->ln->rx_first;
}

/*
 * The reader's own pages replaced by those a later PROTO_LANE_SELF
 * brought: a restarted broker gave it a new sleep word and arm slot, and
 * its writers wake those once the broker told them (their hold entries
 * name them).  Called where no sleep is under way (laneset_wait() arms
 * the slot it was given): the old slot disarmed first, then each new page
 * moved over the old one at the same address, so that another thread
 * that wakes or watches rx_wake (the connection's, the poll waker) never
 * finds it unmapped; a sleeper on the old word wakes within its 1 s.
 */
static void self_switch(struct shmb_session *s)
{
	struct client_lanes *ln = s->ln;

	if (!ln->next_wake)
		return;
	store_relaxed(&ln->poll_armed, 0);
	lane_disarm(ln->arm, ln->arm_slot);
	if (mremap(ln->next_arm, 4096, 4096, MREMAP_MAYMOVE | MREMAP_FIXED, ln->arm) != MAP_FAILED &&
	    mremap(ln->next_wake, 4096, 4096, MREMAP_MAYMOVE | MREMAP_FIXED, ln->rx_wake) !=
		    MAP_FAILED) {
		ln->arm_slot = ln->next_arm_slot;
		ln->wake_dev = ln->next_dev;
		ln->wake_ino = ln->next_ino;
		/* anyone asleep on it looks again */
		client_lanes_wake(s);
	} else {
		/* cannot happen but for no memory: the old pages stay, and the
		 * writers' wakes miss this reader (it sleeps 1 s at most) */
		munmap(ln->next_wake, 4096);
		munmap(ln->next_arm, 4096);
	}
	ln->next_wake = NULL;
	ln->next_arm = NULL;
}

/* Something to read besides the lanes: the RX ring, a push, staleness,
 * new pages of its own to switch to. */
static bool look_more(void *ctx)
{
	struct shmb_session *s = ctx;

	return load_acquire(&s->rxc->rx_write) != s->rx_cons.pos || load_acquire(&s->ln->pending) ||
	       s->ln->next_wake || client_session_stale(s);
}

/* Without rx_wake yet, the pushes that bring it are looked for here: the
 * broker wakes rx_signal after them, and nobody else may read them. */
static bool ready_no_wake(void *ctx)
{
	struct shmb_session *s = ctx;

	conn_drain_pushes(s->c);
	return look_more(s) || load_acquire(&s->ln->rx_wake);
}

int client_lanes_wait(struct shmb_session *s, const struct timespec *deadline)
{
	struct client_lanes *ln = s->ln;
	uint32_t *rx_wake;
	int r;

	self_switch(s);
	rx_wake = load_acquire(&ln->rx_wake);
	if (!rx_wake) {
		/* no own word yet: the broker wakes rx_signal for the RX ring
		 * and after the push that brings rx_wake.  10 ms at a time: a
		 * request of another thread may read that push, and it cannot
		 * wake this word (it is the broker's) */
		uint64_t now = clock_mono_ns(), end = now + 10000000ull;
		struct timespec step = deadline_in_ns(end - now);
		bool last = deadline && ((uint64_t)deadline->tv_sec * 1000000000ull +
					 (uint64_t)deadline->tv_nsec) <= end;

		r = wake_wait(&s->rxc->rx_signal, &s->txc->rx_waiters, ready_no_wake, s, s->spin_ns,
			      last ? deadline : &step);
		return r == -ETIMEDOUT && !last ? 0 : r;
	}
	/* the broker wakes rx_wake for RX deliveries while this says we may
	 * sleep; laneset_wait's fence orders it before the looks */
	fetch_add_relaxed(&s->txc->rx_waiters, 1);
	r = laneset_wait(&ln->set, rx_wake, ln->arm, ln->arm_slot, s->spin_ns, deadline);
	fetch_sub_relaxed(&s->txc->rx_waiters, 1);
	if (r < 0)
		return r;
	return r ? 0 : -ETIMEDOUT;
}

/* Wake a reader of this session asleep on its lanes' word (the library's
 * own wakes: a lost session, a reattach). */
void client_lanes_wake(struct shmb_session *s)
{
	uint32_t *w = s->ln ? load_acquire(&s->ln->rx_wake) : NULL;

	if (w) {
		fetch_add_release(w, 1);
		futex_wake(w, 0x7fffffff);
	}
}

/* ---- the pollable fd ------------------------------------------------------------ */

/*
 * A lane writer wakes its readers through rx_wake, a futex word, which an
 * epoll set cannot watch.  So a session that reads lanes has an eventfd
 * in its epoll set (besides the broker's pipe, which still tells of RX
 * deliveries), and one thread per client, started by the first
 * shmb_session_fd() of such a session, sleeps on the rx_wake of every
 * session whose shmb_recv(s, &m, 0) found nothing and armed (FUTEX_WAITV,
 * Linux 5.16+; without it, a look every 2 ms), and writes the eventfd of
 * each whose word moved.  Once a second it writes them all: a wake-up a
 * hostile peer swallowed (data-path.md, section 4, "Deadlines") delays a
 * poller by a second at most, and an idle fd turns readable once a second,
 * which shmb_session_fd()'s "readable when messages may be waiting"
 * allows.
 */
#define WAKER_MAX 127 /* sessions watched at once, besides the control word */
#define POLL_UNACKED_NS 1000000ull /* an armed fd with records unacknowledged: a look a ms */

static void efd_kick(int fd)
{
	uint64_t one = 1;

	(void)!write(fd, &one, sizeof(one));
}

static void *waker_main(void *arg)
{
	struct shmb_client *c = arg;
	bool have_waitv = true;

	for (;;) {
		struct futex_waitv wv[WAKER_MAX + 1];
		unsigned n = 1;
		uint64_t now = clock_mono_ns(), due;
		bool all, short_pass, want_short = false;
		long r;

		pthread_mutex_lock(&c->slock);
		if (c->waker.stop) {
			pthread_mutex_unlock(&c->slock);
			return NULL;
		}
		wv[0] = (struct futex_waitv){ .val = load_acquire(&c->waker.word),
					      .uaddr = (uintptr_t)&c->waker.word,
					      .flags = FUTEX_32 }; /* shared, as futex_wake() */
		all = now >= c->waker.tick_due;
		if (all)
			c->waker.tick_due = now + c->waker.tick_ns;
		short_pass = c->waker.short_due && now >= c->waker.short_due;
		for (unsigned i = 0; i < c->nsessions; i++) {
			struct client_lanes *ln = c->sessions[i]->ln;
			uint32_t *w;

			if (!ln || ln->poll_efd < 0)
				continue;
			if (all) {
				efd_kick(ln->poll_efd);
				continue;
			}
			w = load_acquire(&ln->rx_wake);
			if (!w || !load_acquire(&ln->poll_armed))
				continue;
			if (load_relaxed(&ln->poll_unacked)) {
				if (short_pass) {
					/* a look of its own, a ms on */
					store_relaxed(&ln->poll_armed, 0);
					efd_kick(ln->poll_efd);
					continue;
				}
				want_short = true;
			}
			if (load_acquire(w) != load_relaxed(&ln->poll_v)) {
				/* moved: tell the poller, watch no more until it
				 * looked and armed again */
				store_relaxed(&ln->poll_armed, 0);
				efd_kick(ln->poll_efd);
				continue;
			}
			if (n <= WAKER_MAX) {
				wv[n++] = (struct futex_waitv){ .val = load_relaxed(&ln->poll_v),
								.uaddr = (uintptr_t)w,
								.flags = FUTEX_32 };
			}
		}
		c->waker.short_due = want_short ? now + POLL_UNACKED_NS : 0;
		pthread_mutex_unlock(&c->slock);
		if (all)
			continue;
		due = want_short && c->waker.short_due < c->waker.tick_due ? c->waker.short_due
									  : c->waker.tick_due;
		if (have_waitv) {
			struct timespec d;

			d.tv_sec = (time_t)(due / 1000000000ull);
			d.tv_nsec = (long)(due % 1000000000ull);
			r = syscall(SYS_futex_waitv, wv, n, 0, &d, CLOCK_MONOTONIC);
			if (r < 0 && errno == ENOSYS)
				have_waitv = false;
		}
		if (!have_waitv) {
			struct timespec pause = { .tv_nsec = 2000000 };

			nanosleep(&pause, NULL);
		}
		/* the next pass looks at every armed word again */
	}
}

/* Wake the waker: a session armed, or it is to stop. */
static void waker_kick(struct shmb_client *c)
{
	fetch_add_release(&c->waker.word, 1);
	futex_wake(&c->waker.word, 1);
}

int client_lanes_poll_fd(struct shmb_session *s, int epfd)
{
	struct epoll_event ev = { .events = EPOLLIN };
	struct shmb_client *c = s->c;
	struct client_lanes *ln = s->ln;
	int fd, r = 0;

	if (!ln || ln->poll_efd >= 0)
		return 0;
	fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (fd < 0)
		return -errno;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	pthread_mutex_lock(&c->slock);
	ln->poll_efd = fd;
	if (!c->waker.started) {
		sigset_t all, old;

		/* the thread takes no signal meant for the application */
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		const char *e = getenv("SHMB_LANE_POLL_TICK_MS");

		/* the tick's length: a test sets it long, so that only the
		 * writers' wakes can make a fd readable */
		c->waker.tick_ns = (e && atoi(e) > 0 ? (uint64_t)atoi(e) : 1000) * 1000000ull;
		c->waker.tick_due = clock_mono_ns() + c->waker.tick_ns;
		r = -pthread_create(&c->waker.th, NULL, waker_main, c);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		c->waker.started = r == 0;
	}
	pthread_mutex_unlock(&c->slock);
	return r;
}

void client_lanes_waker_stop(struct shmb_client *c)
{
	bool started;

	pthread_mutex_lock(&c->slock);
	c->waker.stop = true;
	started = c->waker.started;
	pthread_mutex_unlock(&c->slock);
	if (started) {
		waker_kick(c);
		pthread_join(c->waker.th, NULL);
	}
}

void client_lanes_poll_drain(struct shmb_session *s)
{
	uint64_t v;

	if (s->ln && s->ln->poll_efd >= 0)
		while (read(s->ln->poll_efd, &v, sizeof(v)) > 0)
			;
}

void client_lanes_poll_disarm(struct shmb_session *s)
{
	struct client_lanes *ln = s->ln;

	if (ln && load_relaxed(&ln->poll_armed)) {
		store_relaxed(&ln->poll_armed, 0);
		lane_disarm(ln->arm, ln->arm_slot);
	}
}

bool client_lanes_poll_arm(struct shmb_session *s)
{
	struct client_lanes *ln = s->ln;
	uint32_t *w = ln ? load_acquire(&ln->rx_wake) : NULL;

	if (!w || ln->poll_efd < 0)
		return false;
	/* as laneset_wait() arms: the value first, then the arm, a fence,
	 * and a look the caller makes; the waker sleeps on that value */
	store_relaxed(&ln->poll_v, load_acquire(w));
	store_relaxed(&ln->poll_unacked, laneset_unacked(&ln->set));
	ln->set.arm_seq += 1 + !(ln->set.arm_seq + 1);
	lane_arm(ln->arm, ln->arm_slot, ln->set.arm_seq);
	store_release(&ln->poll_armed, 1);
	fence_full();
	waker_kick(s->c);
	return true;
}

struct shm_arm_page *client_session_lane_arm(struct shmb_session *s, uint32_t *slot)
{
	if (!s->ln || !load_acquire(&s->ln->rx_wake))
		return NULL;
	*slot = s->ln->arm_slot;
	return s->ln->arm;
}

void *client_session_lane_data(struct shmb_session *s, size_t *len)
{
	if (!s->ln || !s->ln->w.nlanes)
		return NULL;
	*len = s->ln->w.lanes[0]->data_len;
	return s->ln->w.lanes[0]->data;
}
