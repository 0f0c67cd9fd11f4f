/*
 * libclient/client.c - libshmb: topics, sessions, publish, receive and
 * acknowledge (the control connection is conn*.c's, shmbctl's admin
 * requests client-admin.c's).
 *
 * The control socket carries set-up only; messages go through the two
 * session files the broker passes over SCM_RIGHTS: rx (mapped read-only)
 * and tx.<generation> (mapped read-write).  A client validates both
 * headers before it trusts anything in them.  The message calls use
 * shared memory alone, so they go on while the broker is away.
 *
 * Must never: write to the rx mapping (it is read-only; a write faults);
 * call FUTEX_WAKE for the broker unless broker_waiting says it sleeps;
 * wait for a control request on the data path (the topic cache has a
 * lock of its own); free a session while the connection thread may
 * report an event about it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "libclient/client.h"
#include "libclient/internal.h"
#include "shm/atomics.h"
#include "shm/futex.h"

static bool stale(const struct shmb_session *s);

/* ---- events --------------------------------------------------------------- */

/* Never under a lock: the callback may call shmb_ functions. */
void client_event(struct shmb_client *c, int kind, struct shmb_session *s, uint64_t count)
{
	struct shmb_event ev = { .kind = kind, .session = s, .count = count };
	shmb_event_fn fn;
	void *arg;

	pthread_mutex_lock(&c->st);
	fn = c->event_fn;
	arg = c->event_arg;
	pthread_mutex_unlock(&c->st);
	if (fn)
		fn(&ev, arg);
}

SHMB_EXPORT void shmb_set_event_cb(struct shmb_client *c, shmb_event_fn fn, void *arg)
{
	pthread_mutex_lock(&c->st);
	c->event_fn = fn;
	c->event_arg = arg;
	pthread_mutex_unlock(&c->st);
}

/* ---- topics ----------------------------------------------------------------- */

/* The cached entry for name, valid or not (c->tlock held). */
static struct topic_entry *topic_find(struct shmb_client *c, const char *name)
{
	for (unsigned i = 0; i < c->ntopics; i++)
		if (!strcmp(c->topics[i]->name, name))
			return c->topics[i];
	return NULL;
}

/*
 * The topic's entry with a valid id, interned over the live connection
 * if this client has no valid id for it (c->lock held).  The entry stays
 * for the client's life (shmb_msg.topic and the subscription lists point
 * at it).  0, the broker's error, or conn_rpc()'s.
 */
int client_topic_get_locked(struct shmb_client *c, int fd, const char *name, uint64_t deadline,
			    struct topic_entry **out)
{
	struct proto_topic q = { .h.type = PROTO_TOPIC };
	struct proto_reply rep;
	struct topic_entry *e;
	size_t len = strlen(name);
	int r;

	pthread_mutex_lock(&c->tlock);
	e = topic_find(c, name);
	if (!e) {
		struct topic_entry **n = realloc(c->topics, (c->ntopics + 1) * sizeof(*n));

		if (n)
			c->topics = n;
		e = n ? calloc(1, sizeof(*e)) : NULL;
		if (e) {
			memcpy(e->name, name, len + 1);
			c->topics[c->ntopics++] = e; /* epoch 0: no id yet */
		}
	}
	r = !e ? -ENOMEM : e->epoch == c->topic_epoch ? 1 : 0;
	pthread_mutex_unlock(&c->tlock);
	if (r) {
		*out = e;
		return r < 0 ? r : 0;
	}
	q.name_len = (uint32_t)len;
	memcpy(q.name, name, len);
	r = conn_rpc(c, fd, &q, sizeof(q), &rep, NULL, 0, deadline);
	if (r == 0 && rep.err == 0) {
		pthread_mutex_lock(&c->tlock);
		e->id = rep.u.topic.topic_id;
		e->epoch = c->topic_epoch;
		pthread_mutex_unlock(&c->tlock);
	}
	*out = e;
	return r < 0 ? r : rep.err;
}

static bool topic_name_ok(const char *name)
{
	size_t len = strlen(name);

	return len > 0 && len <= PROTO_TOPIC_MAX;
}

/* The topic's id: from the cache, else one request.  Also returns the
 * epoch it belongs to. */
static int topic_id(struct shmb_client *c, const char *name, uint32_t *id, uint32_t *epoch)
{
	struct conn_try t = { 0 };
	struct topic_entry *e;
	int r;

	if (!topic_name_ok(name))
		return -EINVAL;
	pthread_mutex_lock(&c->tlock);
	e = topic_find(c, name);
	if (e && e->epoch == c->topic_epoch) {
		*id = e->id;
		*epoch = e->epoch;
		pthread_mutex_unlock(&c->tlock);
		return 0;
	}
	pthread_mutex_unlock(&c->tlock);
	while ((r = conn_enter(c, &t)) == 0) {
		r = client_topic_get_locked(c, c->fd, name, 0, &e);
		if (r == 0) {
			pthread_mutex_lock(&c->tlock);
			*id = e->id;
			*epoch = e->epoch;
			pthread_mutex_unlock(&c->tlock);
		}
		if (!conn_leave(c, &t, &r))
			break;
	}
	return r;
}

/* The name of a topic id of the current broker, "" if this client does
 * not know it.  Only the topic lock: the data path never waits for a
 * control request. */
static const char *topic_name(struct shmb_client *c, uint32_t id)
{
	const char *name = "";

	pthread_mutex_lock(&c->tlock);
	for (unsigned i = 0; i < c->ntopics; i++)
		if (c->topics[i]->id == id && c->topics[i]->epoch == c->topic_epoch) {
			name = c->topics[i]->name;
			break;
		}
	pthread_mutex_unlock(&c->tlock);
	return name;
}

/* ---- sessions ------------------------------------------------------------- */

static int session_map(struct shmb_session *s, int rx_fd, int tx_fd, const struct proto_reply *rep)
{
	struct shm_seg_hdr rh;
	struct shm_tx_hdr th;
	struct ring r;
	int ret;

	ret = segment_map(rx_fd, false, &s->rx);
	if (ret < 0) {
		close(tx_fd);
		return ret;
	}
	ret = segment_map(tx_fd, true, &s->tx);
	if (ret < 0)
		return ret;
	if (segment_rx_validate(&s->rx, &rh) < 0 || segment_tx_validate(&s->tx, &th) < 0 ||
	    rh.session_id != rep->u.open.session_id || th.session_id != rh.session_id ||
	    th.generation != rep->u.open.generation)
		return -EBADMSG;
	s->rxc = segment_rx_ctrl(&s->rx);
	s->txc = segment_tx_ctrl(&s->tx);
	s->tx_start_seq = th.start_seq;
	s->drop_oldest = rh.policy == SHM_POLICY_DROP_OLDEST;
	if (s->drop_oldest && !(s->copy = malloc(rh.rx_ring_size / RING_MAX_REC_DIV)))
		return -ENOMEM;
	ret = ring_init(&r, segment_ring_data(&s->rx), rh.rx_ring_size);
	if (ret == 0)
		/* where the broker says: past what was acknowledged or dropped */
		ret = ring_cons_init(&s->rx_cons, &r, &s->rxc->rx_write, &s->txc->rx_acked,
				     rep->u.open.rx_pos, rep->u.open.rx_seq, 1, UINT32_MAX);
	if (ret == 0)
		ret = ring_init(&r, segment_ring_data(&s->tx), th.tx_ring_size);
	if (ret == 0)
		ret = ring_prod_init(&s->tx_prod, &r, &s->rxc->tx_read, &s->txc->tx_write, 0,
				     th.start_seq, th.generation);
	return ret < 0 ? -EBADMSG : 0;
}

/* Room for one more session in c->sessions, made before the open, so an
 * open session is always in the array the reattach goes through. */
static int sessions_reserve(struct shmb_client *c)
{
	int r = 0;

	pthread_mutex_lock(&c->slock);
	if (c->nsessions == c->cap_sessions) {
		unsigned cap = c->cap_sessions ? 2 * c->cap_sessions : 8;
		struct shmb_session **n = realloc(c->sessions, cap * sizeof(*n));

		if (n) {
			c->sessions = n;
			c->cap_sessions = cap;
		} else {
			r = -ENOMEM;
		}
	}
	pthread_mutex_unlock(&c->slock);
	return r;
}

/* Take s out of the array (c->lock held, so no reattach is under way). */
static void session_unlist(struct shmb_client *c, struct shmb_session *s)
{
	pthread_mutex_lock(&c->slock);
	for (unsigned i = 0; i < c->nsessions; i++)
		if (c->sessions[i] == s) {
			c->sessions[i] = c->sessions[--c->nsessions];
			break;
		}
	pthread_mutex_unlock(&c->slock);
}

SHMB_EXPORT int shmb_session_open(struct shmb_client *c, const char *name,
				  const struct shmb_session_opts *opts, struct shmb_session **out)
{
	struct proto_open q = { .h.type = PROTO_SESSION_OPEN, .policy = UINT32_MAX };
	struct proto_reply rep;
	struct conn_try t = { 0 };
	struct shmb_session *s;
	size_t len = name ? strlen(name) : 0;
	int fds[3], r;

	if (len == 0 || len > PROTO_NAME_MAX)
		return -EINVAL;
	if (opts) {
		if (opts->policy < SHMB_POLICY_DEFAULT || opts->policy > SHMB_POLICY_DROP_OLDEST)
			return -EINVAL;
		if (opts->policy != SHMB_POLICY_DEFAULT)
			q.policy = (uint32_t)opts->policy;
		q.rx_ring_size = opts->rx_ring_size;
		q.tx_ring_size = opts->tx_ring_size;
		q.flags = (opts->flags & SHMB_TAKEOVER ? PROTO_OPEN_TAKEOVER : 0) |
			  (opts->flags & SHMB_EPHEMERAL ? PROTO_OPEN_EPHEMERAL : 0) |
			  (opts->flags & SHMB_FRESH ? PROTO_OPEN_FRESH : 0);
	}
	q.name_len = (uint32_t)len;
	memcpy(q.name, name, len);
	r = sessions_reserve(c);
	if (r < 0)
		return r;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->rx = (struct segment)SEGMENT_INIT;
	s->tx = (struct segment)SEGMENT_INIT;
	s->notify_rd = -1;
	s->epfd = -1;
	s->c = c;
	memcpy(s->name, name, len + 1);
	s->flags = opts ? opts->flags : 0;
	s->spin_ns = (uint64_t)(opts && opts->spin_us ? opts->spin_us : 5) * 1000;
	while ((r = conn_enter(c, &t)) == 0) {
		r = conn_rpc_locked(c, &q, sizeof(q), &rep, fds, 3);
		if (r == 0) {
			s->notify_rd = fds[2];
			s->id = rep.u.open.session_id;
			s->generation = rep.u.open.generation;
			s->created = (int)rep.u.open.created;
			memcpy(s->token, rep.u.open.token, sizeof(s->token));
			r = session_map(s, fds[0], fds[1], &rep);
		}
		/* lanes where the broker runs them with this connection; set
		 * before the session is listed, where pushes find it */
		if (r == 0 && load_relaxed(&c->lanes) && !s->ln)
			r = client_lanes_open(s, s->tx_start_seq);
		/* what the broker copied from lanes while the session had no
		 * owner (its spool) comes before the lanes it stopped at: the
		 * RX ring is read up to here before any lane */
		if (r == 0 && s->ln)
			s->spool_until = load_acquire(&s->rxc->rx_write);
		if (r == 0) {
			/* in the array under the same c->lock as the open: the
			 * next reattach knows it */
			pthread_mutex_lock(&c->slock);
			c->sessions[c->nsessions++] = s;
			pthread_mutex_unlock(&c->slock);
		}
		if (!conn_leave(c, &t, &r))
			break;
	}
	if (r < 0) {
		client_lanes_free(s);
		segment_unmap(&s->rx);
		segment_unmap(&s->tx);
		if (s->notify_rd >= 0)
			close(s->notify_rd);
		free(s->copy);
		free(s);
		return r;
	}
	*out = s;
	if (!s->created)
		client_event(c, SHMB_EV_REATTACHED, s, s->generation);
	return 0;
}

/* Free s, which is in no array any more: once the connection thread is
 * not telling events (one may be about s), unless this is that thread. */
void client_session_free(struct shmb_session *s)
{
	struct shmb_client *c = s->c;

	pthread_mutex_lock(&c->st);
	while (c->emitting && conn_of_thread != c)
		pthread_cond_wait(&c->st_cond, &c->st);
	pthread_mutex_unlock(&c->st);
	if (s->epfd >= 0)
		close(s->epfd);
	close(s->notify_rd);
	client_lanes_free(s);
	free(s->copy);
	free(s->subs);
	segment_unmap(&s->rx);
	segment_unmap(&s->tx);
	free(s);
}

static bool stale(const struct shmb_session *s);
static int batch_commit(struct shmb_session *s);

static int session_end(struct shmb_session *s, uint32_t flags)
{
	struct proto_close q = { .h.type = PROTO_SESSION_CLOSE, .session_id = s->id, .flags = flags };
	struct shmb_client *c = s->c;
	struct proto_reply rep;
	struct conn_try t = { 0 };
	bool unlisted = false;
	int r;

	/* an open batch (SHMB_PUB_MORE) is committed: nothing published is dropped */
	if (!stale(s))
		(void)batch_commit(s);
	if (load_relaxed(&s->lost)) {
		r = -ESTALE; /* the broker has it no more */
	} else {
		while ((r = conn_enter(c, &t)) == 0) {
			r = conn_rpc_locked(c, &q, sizeof(q), &rep, NULL, 0);
			/* out of the array under the same c->lock as the close,
			 * so no reattach brings it back; kept for a retry */
			if (r != -EPIPE || t.retried) {
				session_unlist(c, s);
				unlisted = true;
			}
			if (!conn_leave(c, &t, &r))
				break;
		}
	}
	if (!unlisted) {
		pthread_mutex_lock(&c->lock);
		session_unlist(c, s);
		pthread_mutex_unlock(&c->lock);
	}
	client_session_free(s);
	return r;
}

SHMB_EXPORT int shmb_session_close(struct shmb_session *s)
{
	return session_end(s, 0);
}

SHMB_EXPORT int shmb_session_destroy(struct shmb_session *s)
{
	return session_end(s, PROTO_CLOSE_DESTROY);
}

bool client_session_stale(const struct shmb_session *s)
{
	return stale(s);
}

static bool stale(const struct shmb_session *s)
{
	/* pairs with the broker's store_release of the generation; `lost`
	 * with the fence in conn_mark_lost() in conn-handshake.c */
	return load_acquire(&s->rxc->generation) != s->generation || load_relaxed(&s->lost);
}

/* -ESTALE, telling the event callback the first time. */
static int stale_err(struct shmb_session *s)
{
	if (!__atomic_exchange_n(&s->stale_told, 1, __ATOMIC_RELAXED))
		client_event(s->c, SHMB_EV_STALE, s, 0);
	return -ESTALE;
}

/* Keep the session's list of topics as the broker now has it (c->lock
 * held), for the reattach.  Room was made before the request. */
static void subs_note(struct shmb_session *s, struct topic_entry *te, uint32_t type, uint32_t flags)
{
	unsigned i;

	if (type == PROTO_SUBSCRIBE && (flags & PROTO_SUB_RESET))
		s->nsubs = 0;
	for (i = 0; i < s->nsubs && s->subs[i] != te; i++)
		;
	if (type == PROTO_SUBSCRIBE && i == s->nsubs)
		s->subs[s->nsubs++] = te;
	else if (type == PROTO_UNSUBSCRIBE && i < s->nsubs)
		s->subs[i] = s->subs[--s->nsubs];
}

static int subs_reserve(struct shmb_session *s)
{
	if (s->nsubs == s->cap_subs) {
		unsigned cap = s->cap_subs ? 2 * s->cap_subs : 8;
		struct topic_entry **n = realloc(s->subs, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		s->subs = n;
		s->cap_subs = cap;
	}
	return 0;
}

static int sub_req(struct shmb_session *s, const char *topic, uint32_t type, uint32_t flags)
{
	struct proto_sub q = { .h.type = type, .session_id = s->id, .flags = flags };
	struct shmb_client *c = s->c;
	struct proto_reply rep;
	struct conn_try t = { 0 };
	int r;

	if (stale(s))
		return stale_err(s);
	if (!topic_name_ok(topic))
		return -EINVAL;
	while ((r = conn_enter(c, &t)) == 0) {
		struct topic_entry *te;

		/* the id and the request on one connection, so both are of
		 * one broker */
		r = subs_reserve(s);
		if (r == 0)
			r = client_topic_get_locked(c, c->fd, topic, 0, &te);
		if (r == 0) {
			q.topic_id = te->id;
			r = conn_rpc_locked(c, &q, sizeof(q), &rep, NULL, 0);
		}
		if (r == 0 && s->ln) {
			/* the lanes' filter: records of other topics are skipped;
			 * a list the broker sent before this reply goes first */
			client_lanes_apply(s);
			if (flags & PROTO_SUB_RESET)
				for (unsigned i = 0; i < s->nsubs; i++)
					client_lanes_topic(s, s->subs[i]->id, false);
			client_lanes_topic(s, te->id, type == PROTO_SUBSCRIBE);
		}
		if (r == 0)
			subs_note(s, te, type, flags);
		if (!conn_leave(c, &t, &r))
			break;
	}
	return r;
}

SHMB_EXPORT int shmb_subscribe(struct shmb_session *s, const char *topic)
{
	return sub_req(s, topic, PROTO_SUBSCRIBE, 0);
}

SHMB_EXPORT int shmb_unsubscribe(struct shmb_session *s, const char *topic)
{
	return sub_req(s, topic, PROTO_UNSUBSCRIBE, 0);
}

SHMB_EXPORT int shmb_subscribe_only(struct shmb_session *s, const char *const *topics, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int r = sub_req(s, topics[i], PROTO_SUBSCRIBE, i == 0 ? PROTO_SUB_RESET : 0);

		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- messages ---------------------------------------------------------------- */

/* The deadline of a wait of timeout_ms (NULL: none), read from the clock
 * the first time it is needed: a call that does not wait reads no clock
 * (a read per message cost a fifth of a batched stream). */
static const struct timespec *deadline_ms(struct timespec *d, bool *set, int timeout_ms)
{
	if (timeout_ms < 0)
		return NULL;
	if (!*set) {
		*d = deadline_in_ns((uint64_t)timeout_ms * 1000000ull);
		*set = true;
	}
	return d;
}

struct moved {
	const struct shmb_session *s;
	const uint64_t *word;
	uint64_t seen;
};

static bool moved_or_stale(void *arg)
{
	struct moved *m = arg;

	return load_acquire(m->word) != m->seen || stale(m->s);
}

/* Tell the broker there is something for it, if it sleeps waiting for
 * that (SHM_WAIT_TX after a publish, SHM_WAIT_RX_SPACE after an ack). */
static void wake_broker(struct shmb_session *s, uint32_t why)
{
	wake_signal_mask(&s->txc->tx_signal, &s->rxc->broker_waiting, why);
}

/* Commit what SHMB_PUB_MORE left open, and wake the broker: 0 or -ESTALE
 * (fenced: the whole batch is lost with the old generation). */
static int batch_commit(struct shmb_session *s)
{
	if (s->ln) {
		int r = client_lanes_flush(s);

		return r == -ESTALE ? stale_err(s) : r;
	}
	if (s->tx_prod.rsv == s->tx_prod.pos)
		return 0;
	if (ring_commit(&s->tx_prod) < 0)
		return stale_err(s);
	wake_broker(s, SHM_WAIT_TX);
	return 0;
}

SHMB_EXPORT int shmb_publish(struct shmb_session *s, const char *topic, const void *data, size_t len,
			     int timeout_ms)
{
	return shmb_publish_flags(s, topic, data, len, timeout_ms, 0);
}

SHMB_EXPORT int shmb_publish_flags(struct shmb_session *s, const char *topic, const void *data,
				   size_t len, int timeout_ms, unsigned flags)
{
	struct shm_msg_tx h = { 0 };
	struct timespec d;
	bool d_set = false;
	uint8_t *dst;
	int r;

	if (flags & ~SHMB_PUB_MORE)
		return -EINVAL;
	if (stale(s))
		return stale_err(s);
	if (len > UINT32_MAX - sizeof(h))
		return -EMSGSIZE;
	/* ids are the broker's: a new broker (epoch) needs a new look-up */
	if (topic == s->last_topic && s->last_id &&
	    s->last_epoch == load_relaxed(&s->c->topic_epoch) && !strcmp(topic, s->last_name)) {
		h.topic_id = s->last_id;
	} else {
		r = topic_id(s->c, topic, &h.topic_id, &s->last_epoch);
		if (r < 0)
			return r;
		strcpy(s->last_name, topic); /* topic_id() checked its length */
		s->last_topic = topic;
		s->last_id = h.topic_id;
	}
	if (s->ln) {
		r = client_lanes_publish(s, h.topic_id, data, len, timeout_ms, flags & SHMB_PUB_MORE);
		return r == -ESTALE ? stale_err(s) : r;
	}
	for (;;) {
		struct moved mv = { s, &s->rxc->tx_read, load_acquire(&s->rxc->tx_read) };

		r = ring_reserve(&s->tx_prod, (uint32_t)(sizeof(h) + len), SHM_REC_DATA, 0, (void **)&dst);
		if (r != -EAGAIN)
			break;
		/* a batch that fills the ring is committed: the broker frees it */
		if (s->tx_prod.rsv != s->tx_prod.pos) {
			r = batch_commit(s);
			if (r < 0)
				return r;
			continue;
		}
		if (timeout_ms == 0)
			return -EAGAIN;
		r = wake_wait(&s->rxc->tx_space_signal, &s->txc->tx_space_waiters, moved_or_stale, &mv,
			      s->spin_ns, deadline_ms(&d, &d_set, timeout_ms));
		if (r < 0)
			return r;
		if (stale(s))
			return stale_err(s);
	}
	if (r < 0)
		return r == -EBADMSG ? stale_err(s) : r;
	memcpy(dst, &h, sizeof(h));
	memcpy(dst + sizeof(h), data, len);
	if (flags & SHMB_PUB_MORE)
		return 0;
	/* fenced (-ESTALE): cut off by a new owner, with the batch */
	return batch_commit(s);
}

SHMB_EXPORT int shmb_ack(struct shmb_session *s)
{
	if (stale(s))
		return stale_err(s);
	if (s->ln)
		client_lanes_ack(s);
	if (!s->unacked)
		return 0;
	/* rx_acked = the read position: pairs with the broker's prod_refresh() */
	ring_release(&s->rx_cons);
	s->unacked = false;
	wake_broker(s, SHM_WAIT_RX_SPACE);
	return 0;
}

static void notify_drain(struct shmb_session *s)
{
	char buf[256];
	ssize_t n;

	while ((n = read(s->notify_rd, buf, sizeof(buf))) > 0)
		;
	/* the pipe ends with its connection too: then the library redials
	 * and reattaches, and that is no detach (pairs with conn_relink()) */
	if (n == 0 && !load_relaxed(&s->notify_eof) && load_acquire(&s->c->linked)) {
		store_relaxed(&s->notify_eof, 1); /* the fd stays readable: say why */
		if (!stale(s))
			client_event(s->c, SHMB_EV_DETACHED, s, 0);
	}
}

SHMB_EXPORT int shmb_session_fd(struct shmb_session *s)
{
	struct epoll_event ev = { .events = EPOLLIN };
	struct shmb_client *c = s->c;
	int fd, r = 0;

	pthread_mutex_lock(&c->slock);
	if (s->epfd >= 0) {
		pthread_mutex_unlock(&c->slock);
		return s->epfd;
	}
	fd = epoll_create1(EPOLL_CLOEXEC);
	if (fd < 0)
		r = -errno;
	/* while the connection is down the pipe stays out of the set; the
	 * reattach puts it in (a lost session's at once: it says -ESTALE) */
	else if ((load_acquire(&c->linked) || load_relaxed(&s->lost)) &&
		 epoll_ctl(fd, EPOLL_CTL_ADD, s->notify_rd, &ev) < 0)
		r = -errno;
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		pthread_mutex_unlock(&c->slock);
		return r;
	}
	s->epfd = fd;
	pthread_mutex_unlock(&c->slock);
	/* a lane reader's writers wake a futex word: an eventfd stands in */
	r = client_lanes_poll_fd(s, fd);
	if (r < 0)
		return r;
	/* from now on the broker writes a byte after each delivery; the full
	 * fence pairs with the broker's: flag, then the caller's next look */
	__atomic_fetch_or(&s->txc->client_flags, SHM_CLIENT_POLLER, __ATOMIC_RELAXED);
	fence_full();
	return fd;
}

/*
 * Drop-oldest: the broker may be overwriting what we read (r: what
 * ring_peek() said of rm): copy it out, then re-read the drop position
 * (acquire fence between, pairing with the broker's store-store fence);
 * keep the copy only if the record lies at or after it, else jump there
 * (docs/design/rings.md, back-pressure).  true: the reader jumped; read again.
 */
static bool recv_dropped(struct shmb_session *s, struct ring_msg *rm, int r)
{
	uint64_t drop;

	if (r == 0 && rm->len <= ring_max_payload(&s->rx_cons.r))
		memcpy(s->copy, rm->payload, rm->len);
	fence_acquire();
	drop = load_acquire(&s->rxc->rx_drop);
	if ((r == 0 && rm->pos < drop) || (r == -EBADMSG && s->rx_cons.pos < drop)) {
		if (!s->gap_from)
			s->gap_from = s->rx_cons.seq + 1;
		s->rx_cons.pos = drop;
		s->rx_cons.seq = RING_SEQ_ANY;
		s->unacked = true;
		return true;
	}
	if (r == 0)
		rm->payload = s->copy;
	return false;
}

/* m->topic from m->topic_id: one look-up per change of topic. */
static void msg_topic(struct shmb_session *s, struct shmb_msg *m)
{
	if (m->topic_id != s->last_rx_id || !s->last_rx_name ||
	    s->last_rx_epoch != load_relaxed(&s->c->topic_epoch)) {
		s->last_rx_epoch = load_relaxed(&s->c->topic_epoch);
		s->last_rx_name = topic_name(s->c, m->topic_id);
		s->last_rx_id = m->topic_id;
	}
	m->topic = s->last_rx_name;
}

/* Hand the record rm to the caller as m (a gap before it told), and
 * consume it: 0; 1 when it was a copy already returned (consumed, not
 * handed). */
static int recv_take(struct shmb_session *s, struct shmb_msg *m, struct ring_msg *rm)
{
	struct shm_msg_rx rx;
	bool spooled;

	if (rm->len < sizeof(rx))
		return -EBADMSG;
	memcpy(&rx, rm->payload, sizeof(rx));
	spooled = (rx.flags & SHM_RX_SPOOLED) && s->ln;
	/* a spill's copy made again (copying started again from behind what
	 * an earlier one gave): not returned twice */
	if (spooled && client_lanes_spool_dup(s, rx.src_session, rx.src_seq + 1)) {
		ring_consume(&s->rx_cons, rm);
		s->unacked = true;
		return 1;
	}
	m->missed = 0;
	if (s->gap_from) {
		m->missed = rm->hdr.seq - (s->gap_from - 1);
		s->gap_from = 0;
		if (m->missed)
			client_event(s->c, SHMB_EV_GAP, s, m->missed);
	}
	m->data = (const uint8_t *)rm->payload + sizeof(rx);
	m->len = rm->len - sizeof(rx);
	m->topic_id = rx.topic_id;
	msg_topic(s, m);
	m->src_broker = rx.src_broker;
	m->src_session = rx.src_session;
	/* a spill's copy: the lane's records up to it are copies too */
	if (spooled)
		client_lanes_spooled(s, rx.src_session, rx.src_seq + 1);
	m->src_seq = rx.src_seq;
	ring_consume(&s->rx_cons, rm);
	s->unacked = true;
	return 0;
}

/* The RX ring's next message: 0, -EAGAIN (none), or an error. */
static int rx_try(struct shmb_session *s, struct shmb_msg *m)
{
	struct ring_msg rm;
	int r;

	do {
		do
			r = ring_peek(&s->rx_cons, &rm);
		while (r != -EAGAIN && s->drop_oldest && recv_dropped(s, &rm, r));
		if (r < 0)
			return r;
		r = recv_take(s, m, &rm);
	} while (r == 1);
	return r;
}

/* The next message of a session that reads lanes besides its RX ring
 * (the relay's: publishers that do not write lanes), taking turns. */
static int lanes_recv(struct shmb_session *s, struct shmb_msg *m, int timeout_ms)
{
	struct timespec d;
	bool d_set = false;
	bool drained = false, armed = false;
	int r;

	client_lanes_poll_disarm(s);
	for (;;) {
		bool rx_first = client_lanes_rx_first(s);
		bool spool = s->spool_until && s->rx_cons.pos < s->spool_until;

		if (stale(s))
			return stale_err(s);
		if (spool) {
			r = rx_try(s, m);
			if (r == -EAGAIN) {
				s->spool_until = 0; /* not there after all: both, as always */
				continue;
			}
		} else {
			s->spool_until = 0;
			/* the RX ring's turn only when it has something (its
			 * write position: one load, where a look cost a call,
			 * a peek and its checks at every other message) */
			rx_first = rx_first && load_acquire(&s->rxc->rx_write) != s->rx_cons.pos;
			r = rx_first ? rx_try(s, m) : client_lanes_next(s, m);
			if (r == -EAGAIN)
				r = rx_first ? client_lanes_next(s, m) : rx_try(s, m);
		}
		if (r == 0)
			msg_topic(s, m);
		if (r != -EAGAIN && armed)
			client_lanes_poll_disarm(s); /* found after all */
		if (r != -EAGAIN)
			return r;
		if (!drained) {
			/* nothing: a new lane may wait in the socket (a LANE push) */
			conn_drain_pushes(s->c);
			drained = true;
			continue;
		}
		drained = false;
		if (timeout_ms == 0) {
			/* a poller: empty the fds, arm for the waker, and look
			 * once more (what comes after that look wakes the fd) */
			if (s->epfd >= 0 && !armed) {
				notify_drain(s);
				client_lanes_poll_drain(s);
				fence_full();
				armed = client_lanes_poll_arm(s);
				if (armed)
					continue;
			}
			if (stale(s))
				return stale_err(s);
			return load_relaxed(&s->notify_eof) ? -ENOTCONN : -EAGAIN;
		}
		r = client_lanes_wait(s, deadline_ms(&d, &d_set, timeout_ms));
		if (r < 0)
			return r;
	}
}

SHMB_EXPORT int shmb_recv(struct shmb_session *s, struct shmb_msg *m, int timeout_ms)
{
	struct timespec d;
	bool d_set = false;
	struct ring_msg rm;
	int r;

	if ((s->flags & SHMB_AUTO_ACK) && (s->unacked || s->ln))
		shmb_ack(s);
	if (s->ln)
		return lanes_recv(s, m, timeout_ms);
	for (;;) {
		struct moved mv = { s, &s->rxc->rx_write, s->rx_cons.pos };

		if (stale(s))
			return stale_err(s);
		r = ring_peek(&s->rx_cons, &rm);
		if (r != -EAGAIN)
			break;
		if (timeout_ms == 0) {
			if (s->epfd < 0)
				return -EAGAIN;
			/* a poller: empty the pipe, then look once more, so a
			 * record committed after this look writes a fresh byte */
			notify_drain(s);
			fence_full();
			r = ring_peek(&s->rx_cons, &rm);
			if (r != -EAGAIN)
				break;
			if (stale(s))
				return stale_err(s);
			return load_relaxed(&s->notify_eof) ? -ENOTCONN : -EAGAIN;
		}
		r = wake_wait(&s->rxc->rx_signal, &s->txc->rx_waiters, moved_or_stale, &mv, s->spin_ns,
			      deadline_ms(&d, &d_set, timeout_ms));
		if (r < 0)
			return r;
	}
	if (s->drop_oldest && recv_dropped(s, &rm, r))
		return shmb_recv(s, m, timeout_ms);
	if (r < 0)
		return r;
	return recv_take(s, m, &rm);
}

static bool routed_all(void *arg)
{
	struct shmb_session *s = arg;

	return load_acquire(&s->rxc->tx_read_seq) >= s->tx_prod.seq || stale(s);
}

SHMB_EXPORT int shmb_flush(struct shmb_session *s, int timeout_ms)
{
	struct timespec d;
	bool d_set = false;
	int r;

	if (!stale(s)) {
		r = batch_commit(s);
		if (r < 0)
			return r;
	}
	/* a lane's record is delivered once committed: readers read it there */
	if (s->ln)
		return stale(s) ? stale_err(s) : 0;
	if (routed_all(s))
		return stale(s) ? stale_err(s) : 0;
	if (timeout_ms == 0)
		return -ETIMEDOUT;
	r = wake_wait(&s->rxc->tx_space_signal, &s->txc->tx_space_waiters, routed_all, s, s->spin_ns,
		      deadline_ms(&d, &d_set, timeout_ms));
	if (r < 0)
		return r;
	return stale(s) ? stale_err(s) : 0;
}

SHMB_EXPORT int shmb_session_info(struct shmb_session *s, struct shmb_session_info *i)
{
	*i = (struct shmb_session_info){
		.session_id = s->id,
		.generation = s->generation,
		.created = s->created,
		.rx_acked = load_acquire(&s->txc->rx_acked),
		.tx_next_seq = s->tx_prod.seq,
		.tx_start_seq = s->tx_start_seq,
		.tx_routed_seq = load_acquire(&s->rxc->tx_read_seq),
	};
	if (s->ln)
		i->tx_next_seq = i->tx_routed_seq = client_lanes_next_seq(s);
	return 0;
}

void *client_session_tx_base(struct shmb_session *s, size_t *len, int *fd)
{
	*len = s->tx.len;
	*fd = s->tx.fd;
	return s->tx.base;
}
