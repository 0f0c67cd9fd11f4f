/*
 * broker/session.c - the session table and topics: create, attach (with
 * generations and fencing), detach, expire, destroy, subscriptions.
 *
 * Must never: act on an owner uid, policy or topic read from shared
 * memory (the broker's own table is the truth); let one uid see or touch
 * another uid's session; switch TX files before the old one is drained
 * and fenced (decisions.md 7-8).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker/broker.h"
#include "shm/atomics.h"
#include "shm/futex.h"

/* RX records are stamped with the broker's writer generation. */
#define RX_WRITER_GEN 1u

int session_table_init(struct broker *b)
{
	b->next_session_id = 1;
	return 0;
}

struct session *session_find(struct broker *b, uid_t uid, const char *name)
{
	for (unsigned i = 0; i < b->nsessions; i++)
		if (b->sessions[i]->uid == uid && !strcmp(b->sessions[i]->name, name))
			return b->sessions[i];
	return NULL;
}

struct session *session_by_id(struct broker *b, uint64_t id)
{
	for (unsigned i = 0; i < b->nsessions; i++)
		if (b->sessions[i]->id == id)
			return b->sessions[i];
	return NULL;
}

static bool name_ok(const char *n, size_t len)
{
	if (len == 0 || len > PROTO_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = n[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		      ch == '-' || ch == '_' || ch == '.' || ch == ':' || ch == '@'))
			return false;
	}
	return n[0] != '.';
}

static unsigned sessions_of(struct broker *b, uid_t uid)
{
	unsigned n = 0;

	for (unsigned i = 0; i < b->nsessions; i++)
		n += b->sessions[i]->uid == uid;
	return n;
}

/* Is the process behind this pidfd still running? */
static bool pidfd_alive(int pidfd)
{
	struct pollfd p = { .fd = pidfd, .events = POLLIN };

	if (pidfd < 0)
		return false;
	return poll(&p, 1, 0) == 0;
}

static bool owner_alive(struct session *s)
{
	return s->owner && !s->owner->dead && pidfd_alive(s->owner->pidfd);
}

/* Create tx.<gen> for a new owner; rx_acked and the first sequence carry on. */
static int tx_file_create(struct broker *b, struct session *s, uint32_t gen, uint64_t start_seq,
			  uint64_t rx_acked, struct segment *out)
{
	char name[32];
	uint64_t tx_size = s->rx.len ? ((struct shm_seg_hdr *)s->rx.base)->tx_ring_size : 0;
	int r;

	(void)b;
	snprintf(name, sizeof(name), "tx.%u", gen);
	unlinkat(s->dirfd, name, 0);
	r = segment_create(s->dirfd, name, segment_file_size(tx_size), out);
	if (r < 0)
		return r;
	r = segment_tx_format(out, s->id, gen, tx_size, start_seq);
	if (r < 0) {
		segment_unmap(out);
		unlinkat(s->dirfd, name, 0);
		return r;
	}
	/* the new owner reads on from what the last one acknowledged */
	segment_tx_ctrl(out)->rx_acked = rx_acked;
	return 0;
}

/* Switch the broker's TX reading to a freshly created file. */
static int tx_adopt(struct session *s, struct segment *tx, uint32_t gen, uint64_t start_seq)
{
	struct ring r;
	int ret;

	ret = ring_init(&r, segment_ring_data(tx), tx->len - SHM_RING_OFFSET);
	if (ret < 0)
		return ret;
	s->tx = *tx;
	s->txc = segment_tx_ctrl(&s->tx);
	if (guard_add(s->tx.base, s->tx.len, s) < 0)
		return -ENOMEM;
	/* commit words only: the client's published position is a hint */
	ret = ring_cons_init(&s->tx_cons, &r, NULL, &s->rxc->tx_read, 0, start_seq, gen, gen);
	if (ret < 0)
		return ret;
	store_release(&s->rxc->tx_read, 0);
	store_release(&s->rxc->tx_read_seq, start_seq);
	s->rx_prod.cons_pos = &s->txc->rx_acked;
	s->tx_open = true;
	s->futex_armed = false;
	return 0;
}

static void tx_drop(struct session *s)
{
	char name[32];

	if (!s->tx_open && !s->tx.base)
		return;
	snprintf(name, sizeof(name), "tx.%u", s->generation);
	guard_remove(s->tx.base);
	segment_unmap(&s->tx);
	unlinkat(s->dirfd, name, 0);
	s->txc = NULL;
	s->tx_open = false;
	s->futex_armed = false;
}

static int session_create(struct broker *b, struct conn *c, const struct proto_open *req,
			  const char *name, struct session **out)
{
	struct seg_rx_params p = {
		.broker_id = b->broker_id,
		.owner_uid = (uint32_t)c->uid,
		.policy = req->policy == UINT32_MAX ? SHM_POLICY_BLOCK : req->policy,
		.rx_ring_size = req->rx_ring_size ? req->rx_ring_size : b->o.rx_ring_size,
		.tx_ring_size = req->tx_ring_size ? req->tx_ring_size : b->o.tx_ring_size,
	};
	struct segment tx = SEGMENT_INIT;
	struct session *s;
	char dname[32];
	struct ring r;
	int ret;

	if (!segment_ring_size_ok(p.rx_ring_size) || !segment_ring_size_ok(p.tx_ring_size) ||
	    p.policy > SHM_POLICY_DROP_OLDEST)
		return -EINVAL;
	if (c->uid != 0 && sessions_of(b, c->uid) >= b->o.max_sessions_per_uid)
		return -EDQUOT;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->id = b->next_session_id++;
	p.session_id = s->id;
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->uid = c->uid;
	s->policy = p.policy;
	s->generation = 1;
	s->ephemeral = req->flags & PROTO_OPEN_EPHEMERAL;
	s->rx = (struct segment)SEGMENT_INIT;
	s->tx = (struct segment)SEGMENT_INIT;
	s->drain_tx = (struct segment)SEGMENT_INIT;
	s->owner_pidfd = -1;
	s->notify_wr = -1;
	snprintf(dname, sizeof(dname), "%llu", (unsigned long long)s->id);
	if (mkdirat(b->sessions_dirfd, dname, 0700) < 0 && errno != EEXIST) {
		ret = -errno;
		goto err_free;
	}
	s->dirfd = openat(b->sessions_dirfd, dname, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dirfd < 0) {
		ret = -errno;
		goto err_dir;
	}
	unlinkat(s->dirfd, "rx", 0);
	ret = segment_create(s->dirfd, "rx", segment_file_size(p.rx_ring_size), &s->rx);
	if (ret < 0)
		goto err_dirfd;
	ret = segment_rx_format(&s->rx, &p);
	if (ret < 0)
		goto err_rx;
	s->rxc = segment_rx_ctrl(&s->rx);
	store_release(&s->rxc->generation, s->generation);
	ret = ring_init(&r, segment_ring_data(&s->rx), p.rx_ring_size);
	if (ret < 0)
		goto err_rx;
	ret = tx_file_create(b, s, 1, 0, 0, &tx);
	if (ret < 0)
		goto err_rx;
	/* cons_pos is pointed at the tx file's rx_acked by tx_adopt() */
	ret = ring_prod_init(&s->rx_prod, &r, &segment_tx_ctrl(&tx)->rx_acked, &s->rxc->rx_write, 0, 0,
			     RX_WRITER_GEN);
	if (ret < 0)
		goto err_tx;
	ret = tx_adopt(s, &tx, 1, 0);
	if (ret < 0)
		goto err_tx;
	if (b->nsessions == b->cap_sessions) {
		unsigned cap = b->cap_sessions ? 2 * b->cap_sessions : 64;
		struct session **n = realloc(b->sessions, cap * sizeof(*n));

		if (!n) {
			ret = -ENOMEM;
			goto err_all;
		}
		b->sessions = n;
		b->cap_sessions = cap;
	}
	b->sessions[b->nsessions++] = s;
	*out = s;
	return 0;
err_all:
	tx_drop(s);
	goto err_rx;
err_tx:
	segment_unmap(&tx);
	unlinkat(s->dirfd, "tx.1", 0);
err_rx:
	segment_unmap(&s->rx);
	unlinkat(s->dirfd, "rx", 0);
err_dirfd:
	close(s->dirfd);
err_dir:
	unlinkat(b->sessions_dirfd, dname, AT_REMOVEDIR);
err_free:
	free(s);
	return ret;
}

static void notify_close(struct session *s)
{
	/* the owner's read end sees EOF: a poller wakes and learns why */
	if (s->notify_wr >= 0)
		close(s->notify_wr);
	s->notify_wr = -1;
}

/*
 * A new poll pipe for the new owner (decisions.md 21): the broker keeps
 * the write end, the owner gets the read end.  Returns the read end.
 */
static int notify_new(struct session *s)
{
	int p[2];

	notify_close(s);
	if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0)
		return -errno;
	s->notify_wr = p[1];
	return p[0];
}

static void owner_set(struct session *s, struct conn *c)
{
	s->full_since = 0;
	s->owner = c;
	s->owner_pid = c->pid;
	s->owner_pidfd = c->pidfd;
	s->detached_ns = 0;
	s->detach_reason = NULL;
}

/*
 * Cut the current owner off: walk over every record it committed, and
 * swap the fence marker into the slot after the last one.  A commit that
 * races with the swap either lands first (then the walk goes on) or fails
 * with -ESTALE in the client: nothing it was told "sent" is lost.
 */
static int tx_cut(struct session *s, uint64_t *end_pos, uint64_t *end_seq)
{
	/* each retry walks on from where the last walk ended, not from the start */
	uint64_t pos = s->tx_cons.pos, seq = s->tx_cons.seq;

	for (int tries = 0; tries < 1000; tries++) {
		struct ring_cons c;
		int r;

		r = ring_recover(&s->tx_cons.r, s->tx_cons.pos, &pos, &seq, s->generation, s->generation);
		if (r < 0)
			return r;
		r = ring_cons_init(&c, &s->tx_cons.r, NULL, NULL, pos, seq, s->generation, s->generation);
		if (r < 0)
			return r;
		if (ring_fence(&c) == 0) {
			*end_pos = pos;
			*end_seq = seq;
			return 0;
		}
	}
	return -EAGAIN;
}

void session_rx_start(struct session *s, uint64_t *pos, uint64_t *seq)
{
	struct ring_prod *p = &s->rx_prod;
	struct ring_cons c;
	struct ring_msg m;
	uint64_t free_bytes;

	/* past what was acknowledged, and past what drop-oldest dropped */
	(void)ring_prod_free(p, &free_bytes);
	*pos = p->cons_cache;
	*seq = RING_SEQ_ANY;
	if (*pos >= p->pos)
		*seq = p->seq;
	else if (ring_cons_init(&c, &p->r, NULL, NULL, *pos, RING_SEQ_ANY, 1, UINT32_MAX) == 0 &&
		 ring_peek(&c, &m) == 0)
		*seq = m.hdr.seq; /* our own ring: readable, nothing overwrites it now */
}

void session_drain_done(struct session *s)
{
	char name[32];

	if (!s->drain_gen)
		return;
	snprintf(name, sizeof(name), "tx.%u", s->drain_gen);
	guard_remove(s->drain_tx.base);
	segment_unmap(&s->drain_tx);
	unlinkat(s->dirfd, name, 0);
	s->drain_gen = 0;
	store_release(&s->rxc->drain_generation, 0);
}

/*
 * A new owner: cut the old TX file off, give the session a new generation
 * and a new TX file whose sequence continues where the old one ended.
 * What the old owner committed and the router has not delivered yet is
 * delivered from the old file first (decisions.md 8); one such drain at a
 * time, so a further new owner meanwhile gets -EAGAIN.
 */
static int session_new_generation(struct broker *b, struct session *s)
{
	struct segment tx = SEGMENT_INIT;
	uint32_t gen = s->generation + 1;
	uint64_t start_seq = s->tx_cons.seq, end_pos = s->tx_cons.pos, acked;
	int r;

	if (s->drain_gen) {
		router_session(b, s);
		if (s->drain_gen)
			return -EAGAIN;
	}
	if (s->tx_open) {
		router_session(b, s);
		r = tx_cut(s, &end_pos, &start_seq);
		if (r < 0)
			return r;
	}
	/* what the last owner acknowledged, read now (and checked) from its file */
	{
		uint64_t free_bytes;

		if (ring_prod_free(&s->rx_prod, &free_bytes) < 0)
			log_msg(LOG_WARNING, "session %s: impossible rx_acked left by its last owner;"
				" resuming from the last valid one", s->name);
	}
	acked = s->rx_prod.cons_cache;
	r = tx_file_create(b, s, gen, start_seq, acked, &tx);
	if (r < 0)
		return r;
	loop_cancel_session(b, s);
	if (s->tx_open && s->tx_cons.pos != end_pos) {
		/* the old file keeps being delivered, before anything new */
		s->drain_tx = s->tx;
		s->drain_cons = s->tx_cons;
		s->drain_cons.cons_pos = &s->rxc->drain_read;
		/* never read past the cut, whatever the old owner writes there */
		s->drain_end = end_pos;
		s->drain_cons.prod_pos = &s->drain_end;
		s->drain_cons.prod_cache = s->drain_cons.pos;
		s->drain_gen = s->generation;
		store_release(&s->rxc->drain_read, s->drain_cons.pos);
		store_release(&s->rxc->drain_read_seq, s->drain_cons.seq);
		store_release(&s->rxc->drain_generation, s->drain_gen);
		s->tx = (struct segment)SEGMENT_INIT;
		s->txc = NULL;
		s->tx_open = false;
	} else {
		tx_drop(s);
	}
	s->generation = gen;
	r = tx_adopt(s, &tx, gen, start_seq);
	if (r < 0) {
		segment_unmap(&tx);
		return r;
	}
	/* wake every reader: a fenced owner learns -ESTALE, others re-check */
	store_release(&s->rxc->generation, gen);
	fetch_add_release(&s->rxc->rx_signal, 1);
	fetch_add_release(&s->rxc->tx_space_signal, 1);
	futex_wake(&s->rxc->rx_signal, 0x7fffffff);
	futex_wake(&s->rxc->tx_space_signal, 0x7fffffff);
	return 0;
}

int session_open(struct broker *b, struct conn *c, const struct proto_open *req, struct session **out,
		 int *created, int *notify_rd)
{
	char name[PROTO_NAME_MAX + 1];
	struct session *s;
	int r;

	if (req->name_len == 0 || req->name_len > PROTO_NAME_MAX || !name_ok(req->name, req->name_len))
		return -EINVAL;
	memcpy(name, req->name, req->name_len);
	name[req->name_len] = 0;
	if (req->policy != UINT32_MAX && req->policy > SHM_POLICY_DROP_OLDEST)
		return -EINVAL;
	s = session_find(b, c->uid, name);
	if (req->flags & PROTO_OPEN_REATTACH) {
		/* a client back after a lost connection: its own session as it
		 * was, or nothing; never a new session or a new generation */
		if (req->flags & (PROTO_OPEN_FRESH | PROTO_OPEN_TAKEOVER))
			return -EINVAL;
		if (!s)
			return -ENOENT;
		if (!(req->flags & PROTO_OPEN_TOKEN) || memcmp(req->token, s->token, sizeof(s->token)))
			return -ESTALE;
	}
	if (s && (req->flags & PROTO_OPEN_FRESH)) {
		if (owner_alive(s) && s->owner != c && !(req->flags & PROTO_OPEN_TAKEOVER))
			return -EBUSY;
		session_destroy(b, s, "replaced by a fresh session");
		s = NULL;
	}
	if (!s) {
		r = session_create(b, c, req, name, &s);
		if (r < 0)
			return r;
		if (getrandom(s->token, sizeof(s->token), 0) != sizeof(s->token))
			return -EIO;
		owner_set(s, c);
		*notify_rd = notify_new(s);
		*created = 1;
		*out = s;
		log_msg(LOG_INFO, "session %s (id %llu, uid %u) created, generation 1, owner pid %d",
			s->name, (unsigned long long)s->id, (unsigned)s->uid, (int)c->pid);
		return 0;
	}
	*created = 0;
	if (s->quarantined)
		return -EBADMSG;
	/* ring sizes and policy are fixed at creation (decisions.md 20) */
	if ((req->rx_ring_size && req->rx_ring_size != s->rx_prod.r.size) ||
	    (req->tx_ring_size && req->tx_ring_size != s->tx_cons.r.size) ||
	    (req->policy != UINT32_MAX && req->policy != s->policy))
		return -EINVAL;
	if ((req->flags & PROTO_OPEN_TOKEN) && !memcmp(req->token, s->token, sizeof(s->token))) {
		/* the same owner over a new connection: same generation, same file */
		owner_set(s, c);
		*notify_rd = notify_new(s);
		/* a byte the old pipe carried may be lost with it: a poller
		 * that reattaches looks at its ring once more */
		if (*notify_rd >= 0 && (req->flags & PROTO_OPEN_REATTACH) && s->txc &&
		    (load_relaxed(&s->txc->client_flags) & SHM_CLIENT_POLLER))
			(void)!write(s->notify_wr, "", 1);
		*out = s;
		log_msg(LOG_INFO, "session %s resumed by its owner (pid %d), generation %u", s->name,
			(int)c->pid, s->generation);
		return 0;
	}
	if (owner_alive(s) && !(req->flags & PROTO_OPEN_TAKEOVER))
		return -EBUSY;
	{
		struct conn *old = s->owner;

		r = session_new_generation(b, s);
		if (r < 0)
			return r;
		if (old && old != c && !old->dead)
			ctl_push_event(b, old, PROTO_EV_STALE, s->id);
	}
	if (getrandom(s->token, sizeof(s->token), 0) != sizeof(s->token))
		return -EIO;
	owner_set(s, c);
	*notify_rd = notify_new(s);
	*out = s;
	log_msg(LOG_NOTICE, "session %s reattached by pid %d: generation %u", s->name, (int)c->pid,
		s->generation);
	return 0;
}

/* Has the router taken every committed record out of its TX file(s)? */
bool session_tx_drained(struct session *s)
{
	struct ring_msg m;

	if (s->drain_gen)
		return false;
	return !s->tx_open || s->quarantined || ring_peek(&s->tx_cons, &m) < 0;
}

void session_detach(struct broker *b, struct session *s, const char *reason)
{
	if (!s->owner)
		return;
	s->owner = NULL;
	s->owner_pidfd = -1;
	notify_close(s);
	s->detached_ns = now_ns();
	s->detach_reason = reason;
	if (s->ephemeral) {
		if (session_tx_drained(s)) {
			session_destroy(b, s, reason);
			return;
		}
		/* what it published is delivered first, then it goes (expire) */
		log_msg(LOG_INFO, "session %s: %s; delivering what it published, then destroying it",
			s->name, reason);
		return;
	}
	log_msg(LOG_NOTICE, "session %s detached: %s (owner pid %d); keeps receiving for %llu ms",
		s->name, reason, (int)s->owner_pid, (unsigned long long)b->o.session_ttl_ms);
}

void session_conn_gone(struct broker *b, struct conn *c, const char *reason)
{
	for (unsigned i = 0; i < b->nsessions;) {
		struct session *s = b->sessions[i];
		unsigned before = b->nsessions;

		if (s->owner == c)
			session_detach(b, s, reason);
		if (b->nsessions == before)
			i++;
	}
}

static void topic_drop_sub(struct topic *t, struct session *s)
{
	for (unsigned i = 0; i < t->nsubs; i++)
		if (t->subs[i] == s) {
			t->subs[i] = t->subs[--t->nsubs];
			return;
		}
}

void session_destroy(struct broker *b, struct session *s, const char *reason)
{
	char dname[32];

	log_msg(LOG_NOTICE, "session %s (id %llu) destroyed: %s", s->name, (unsigned long long)s->id,
		reason);
	for (unsigned i = 0; i < s->ntopics; i++) {
		struct topic *t = topic_by_id(b, s->topics[i]);

		if (t)
			topic_drop_sub(t, s);
	}
	/* no subscriber keeps a dedup entry for a source that is gone */
	for (unsigned i = 0; i < b->nsessions; i++) {
		struct session *o = b->sessions[i];

		for (unsigned k = 0; k < o->ndlv; k++)
			if (o->dlv[k].src_session == s->id)
				o->dlv[k--] = o->dlv[--o->ndlv];
	}
	loop_cancel_session(b, s);
	notify_close(s);
	/* a client still mapping it learns -ESTALE at its next call */
	store_release(&s->rxc->generation, 0);
	fetch_add_release(&s->rxc->rx_signal, 1);
	fetch_add_release(&s->rxc->tx_space_signal, 1);
	futex_wake(&s->rxc->rx_signal, 0x7fffffff);
	futex_wake(&s->rxc->tx_space_signal, 0x7fffffff);
	tx_drop(s);
	session_drain_done(s);
	segment_unmap(&s->rx);
	unlinkat(s->dirfd, "rx", 0);
	close(s->dirfd);
	snprintf(dname, sizeof(dname), "%llu", (unsigned long long)s->id);
	unlinkat(b->sessions_dirfd, dname, AT_REMOVEDIR);
	for (unsigned i = 0; i < b->nsessions; i++)
		if (b->sessions[i] == s) {
			b->sessions[i] = b->sessions[--b->nsessions];
			break;
		}
	free(s->topics);
	free(s->dlv);
	free(s);
}

void session_quarantine(struct broker *b, struct session *s, const char *why)
{
	if (s->quarantined)
		return;
	s->quarantined = true;
	log_msg(LOG_ERR, "session %s (id %llu) quarantined: %s", s->name, (unsigned long long)s->id,
		why);
	loop_cancel_session(b, s);
	s->tx_open = false;
	/* the owner is detached by session_reap(), outside any routing pass
	 * that may still hold a pointer to this session */
}

void session_reap(struct broker *b)
{
	for (unsigned i = 0; i < b->nsessions;) {
		struct session *s = b->sessions[i];
		unsigned before = b->nsessions;

		if (s->quarantined && s->owner)
			session_detach(b, s, "quarantined");
		if (b->nsessions == before)
			i++;
	}
}

void session_expire(struct broker *b, uint64_t now)
{
	for (unsigned i = 0; i < b->nsessions;) {
		struct session *s = b->sessions[i];

		/* caught up since it last held a publisher back */
		if (s->full_since) {
			uint64_t free_bytes;

			if (ring_prod_free(&s->rx_prod, &free_bytes) == 0 &&
			    free_bytes >= s->rx_prod.r.size / 2)
				s->full_since = 0;
		}
		/* an ephemeral session whose owner went: gone once delivered */
		if (!s->owner && s->ephemeral && session_tx_drained(s)) {
			session_destroy(b, s, "its owner went and what it published is delivered");
			continue;
		}
		/* a live reader that holds publishers back too long loses its
		 * session's attachment (decisions.md 15); the session keeps what
		 * it has and expires like any detached one */
		if (s->owner && s->full_since &&
		    now - s->full_since >= b->o.block_timeout_ms * 1000000ull) {
			session_detach(b, s, "its RX ring was full for longer than --block-timeout");
			if (i >= b->nsessions || b->sessions[i] != s)
				continue;
		}

		/* detached_ns may be later than now: a detach just above */
		if (!s->owner && s->detached_ns && now > s->detached_ns &&
		    now - s->detached_ns >= b->o.session_ttl_ms * 1000000ull) {
			session_destroy(b, s, "expired (detached longer than --session-ttl)");
			continue;
		}
		i++;
	}
}

/* ---- topics ---------------------------------------------------------------- */

struct topic *topic_by_id(struct broker *b, uint32_t id)
{
	if (id == 0 || id > b->ntopics)
		return NULL;
	return b->topics[id - 1];
}

static bool topic_access(const struct topic *t, uid_t uid)
{
	/* a topic is private to the uid that used it first; root sees all */
	return uid == 0 || t->owner == uid;
}

static uint64_t topic_name_hash(const char *name)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (; *name; name++)
		h = (h ^ (uint8_t)*name) * 1099511628211ull;
	return h;
}

/* Room for one more topic at under half load: double and re-insert. */
static int topic_hash_grow(struct broker *b)
{
	unsigned cap = b->topic_hash_cap ? 2 * b->topic_hash_cap : 256;
	uint32_t *t;

	if ((b->ntopics + 1) * 2 <= b->topic_hash_cap)
		return 0;
	t = calloc(cap, sizeof(*t));
	if (!t)
		return -ENOMEM;
	for (unsigned i = 0; i < b->ntopics; i++) {
		uint64_t k = topic_name_hash(b->topics[i]->name) & (cap - 1);

		while (t[k])
			k = (k + 1) & (cap - 1);
		t[k] = b->topics[i]->id;
	}
	free(b->topic_hash);
	b->topic_hash = t;
	b->topic_hash_cap = cap;
	return 0;
}

/* Topics owned per uid: a short list, since uids are few.  Adds `add`
 * and returns the count (0 when the list cannot grow: no cap then). */
static unsigned uid_topics(struct broker *b, uid_t uid, unsigned add)
{
	struct uid_count *n;

	for (unsigned i = 0; i < b->nuids; i++)
		if (b->uids[i].uid == uid)
			return b->uids[i].topics += add;
	n = realloc(b->uids, (b->nuids + 1) * sizeof(*n));
	if (!n)
		return 0;
	b->uids = n;
	b->uids[b->nuids] = (struct uid_count){ .uid = uid, .topics = add };
	return b->uids[b->nuids++].topics;
}

int topic_intern(struct broker *b, uid_t uid, const char *name, uint32_t *id)
{
	struct topic *t, **n;
	uint64_t k;

	if (b->topic_hash_cap) {
		for (k = topic_name_hash(name) & (b->topic_hash_cap - 1); b->topic_hash[k];
		     k = (k + 1) & (b->topic_hash_cap - 1)) {
			t = b->topics[b->topic_hash[k] - 1];
			if (!strcmp(t->name, name)) {
				if (!topic_access(t, uid))
					return -EPERM;
				*id = t->id;
				return 0;
			}
		}
	}
	if (b->ntopics >= 1u << 20)
		return -ENOSPC;
	/* one uid cannot use up the topic space of all (decisions.md 19) */
	if (uid != 0 && uid_topics(b, uid, 0) >= b->o.max_topics_per_uid)
		return -EDQUOT;
	if (topic_hash_grow(b) < 0)
		return -ENOMEM;
	t = calloc(1, sizeof(*t));
	n = realloc(b->topics, (b->ntopics + 1) * sizeof(*n));
	if (!t || !n) {
		free(t);
		if (n)
			b->topics = n;
		return -ENOMEM;
	}
	b->topics = n;
	t->id = b->ntopics + 1;
	t->owner = uid;
	snprintf(t->name, sizeof(t->name), "%s", name);
	b->topics[b->ntopics++] = t;
	uid_topics(b, uid, 1);
	for (k = topic_name_hash(name) & (b->topic_hash_cap - 1); b->topic_hash[k];
	     k = (k + 1) & (b->topic_hash_cap - 1))
		;
	b->topic_hash[k] = t->id;
	*id = t->id;
	return 0;
}

int session_unsubscribe(struct broker *b, struct session *s, uint32_t topic_id)
{
	struct topic *t = topic_by_id(b, topic_id);

	if (!t || !topic_access(t, s->uid))
		return -ENOENT;
	for (unsigned i = 0; i < s->ntopics; i++)
		if (s->topics[i] == topic_id) {
			s->topics[i] = s->topics[--s->ntopics];
			topic_drop_sub(t, s);
			return 0;
		}
	return -ENOENT;
}

int session_subscribe(struct broker *b, struct session *s, uint32_t topic_id, bool reset)
{
	struct topic *t = topic_by_id(b, topic_id);
	struct session **subs;
	uint32_t *ids;

	if (!t || !topic_access(t, s->uid))
		return -ENOENT;
	if (reset)
		while (s->ntopics)
			session_unsubscribe(b, s, s->topics[0]);
	for (unsigned i = 0; i < s->ntopics; i++)
		if (s->topics[i] == topic_id)
			return 0;
	ids = realloc(s->topics, (s->ntopics + 1) * sizeof(*ids));
	if (!ids)
		return -ENOMEM;
	s->topics = ids;
	subs = realloc(t->subs, (t->nsubs + 1) * sizeof(*subs));
	if (!subs)
		return -ENOMEM;
	t->subs = subs;
	s->topics[s->ntopics++] = topic_id;
	t->subs[t->nsubs++] = s;
	return 0;
}
