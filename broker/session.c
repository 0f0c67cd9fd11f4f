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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <sys/random.h>
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/sys.h"
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

void event_put(struct session_event *e, const char *fmt, va_list ap)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	e->time_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	vsnprintf(e->text, sizeof(e->text), fmt, ap);
}

void session_event(struct session *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	event_put(&s->ev[s->nev++ % SESSION_EVENTS], fmt, ap);
	va_end(ap);
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

/* What a session may hold in segments: its rx file, and two tx files
 * while a previous owner's is still being delivered. */
static uint64_t session_memory(uint64_t rx_size, uint64_t tx_size)
{
	return segment_file_size(rx_size) + 2 * (uint64_t)segment_file_size(tx_size);
}

static uint64_t memory_of(struct broker *b, uid_t uid)
{
	uint64_t m = 0;

	for (unsigned i = 0; i < b->nsessions; i++)
		if (b->sessions[i]->uid == uid)
			m += session_memory(b->sessions[i]->rx_ring_size, b->sessions[i]->tx_ring_size);
	return m;
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
	if (!s->owner)
		/* re-adopted after a restart: its last owner may come back */
		return s->adopted_pidfd >= 0 && pidfd_alive(s->adopted_pidfd);
	return !s->owner->dead && pidfd_alive(s->owner->pidfd);
}

/* The owner the state file names: one attached now, or a re-adopted
 * session's last owner that still lives; 0 for none. */
int session_owner_pid(const struct session *s)
{
	return s->owner || s->adopted_pidfd >= 0 ? (int)s->owner_pid : 0;
}

/* A re-adopted session's last owner asking again without its token (it
 * closed its client while the broker was away) is that owner: a live pid
 * is not reused. */
static bool adopted_owner(const struct session *s, const struct conn *c)
{
	return !s->owner && s->adopted_pidfd >= 0 && s->owner_pid == c->pid;
}

void session_token_hash(const uint8_t *token, uint8_t *out)
{
	crypto_generichash(out, SESSION_TOKEN_HASH_LEN, token, PROTO_TOKEN_LEN, NULL, 0);
}

/* A fresh attach token for a new owner; the state file keeps its hash. */
static int token_new(struct session *s)
{
	if (getrandom(s->token, sizeof(s->token), 0) != sizeof(s->token))
		return -EIO;
	session_token_hash(s->token, s->token_hash);
	return 0;
}

static void owner_set(struct session *s, struct conn *c);

/* c owns s from now on, with a fresh token, recorded before anyone hears
 * of it: 0, or the error that must fail the request. */
static int owner_new(struct broker *b, struct session *s, struct conn *c)
{
	int r;

	owner_set(s, c);
	r = token_new(s);
	return r < 0 ? r : state_session(b, s);
}

static void adopted_forget(struct session *s)
{
	if (s->adopted_pidfd >= 0)
		close(s->adopted_pidfd);
	s->adopted_pidfd = -1;
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
	/* (after the generation is out) the new file is read from its start;
	 * tx_read_gen last: until it names this generation, a restart reads
	 * the file from its start whatever the two words say */
	store_release(&s->rxc->tx_read_seq, start_seq);
	store_release(&s->rxc->tx_read, 0);
	store_release(&s->rxc->tx_read_gen, gen);
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

/* Put s in the broker's table: 0 or -ENOMEM. */
static int sessions_add(struct broker *b, struct session *s)
{
	if (b->nsessions == b->cap_sessions) {
		unsigned cap = b->cap_sessions ? 2 * b->cap_sessions : 64;
		struct session **n = realloc(b->sessions, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		b->sessions = n;
		b->cap_sessions = cap;
	}
	b->sessions[b->nsessions++] = s;
	return 0;
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
	/* one uid cannot fill the tmpfs that every session lives in (decisions.md 19) */
	if (c->uid != 0 && memory_of(b, c->uid) + session_memory(p.rx_ring_size, p.tx_ring_size) >
				   b->o.max_memory_per_uid)
		return -EDQUOT;
	/* never a wrapped id, whatever start-up found (decisions.md 13) */
	if (b->next_session_id == 0 || b->next_session_id >= SESSION_ID_LIMIT) {
		log_msg(LOG_ERR, "no session id left (the next would be %llu): no new session",
			(unsigned long long)b->next_session_id);
		return -EOVERFLOW;
	}
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
	s->adopted_pidfd = -1;
	s->notify_wr = -1;
	s->rx_ring_size = p.rx_ring_size;
	s->tx_ring_size = p.tx_ring_size;
	snprintf(dname, sizeof(dname), "%llu", (unsigned long long)s->id);
	/* ids are never reused, so a directory already there is not ours to
	 * fill: another session's, or something wrong.  It is left alone; the
	 * id is spent and the next request takes the next one. */
	if (mkdirat(b->sessions_dirfd, dname, 0700) < 0) {
		ret = -errno;
		if (ret == -EEXIST)
			log_msg(LOG_ERR, "new session %s: %s/sessions/%s exists already; left as it is,"
				" the session is refused", s->name, b->o.dir, dname);
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
	s->dlv_shm = segment_dlv_table(&s->rx);
	s->dlv_touched = -1;
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
	ret = sessions_add(b, s);
	if (ret < 0)
		goto err_all;
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
	adopted_forget(s);
	s->full_since = 0;
	s->owner = c;
	s->owner_pid = c->pid;
	s->owner_pidfd = c->pidfd;
	s->detached_ns = 0;
	s->detach_reason = NULL;
	/* the last owner's exit reason is history now */
	s->exit_reason[0] = 0;
	s->exit_pending = false;
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
	/* the record first, then the file: a crash between leaves a stray
	 * file that a restart removes, never a drain without its file */
	store_release(&s->rxc->drain_generation, 0);
	snprintf(name, sizeof(name), "tx.%u", s->drain_gen);
	guard_remove(s->drain_tx.base);
	segment_unmap(&s->drain_tx);
	unlinkat(s->dirfd, name, 0);
	s->drain_gen = 0;
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
	uint32_t gen = s->generation + 1, old_gen;
	uint64_t start_seq = s->tx_cons.seq, end_pos = s->tx_cons.pos, acked;
	bool unlink_old = false;
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
	old_gen = s->generation;
	if (s->tx_open && s->tx_cons.pos != end_pos) {
		/* the old file keeps being delivered, before anything new */
		s->drain_tx = s->tx;
		s->drain_cons = s->tx_cons;
		s->drain_cons.cons_pos = &s->rxc->drain_read;
		/* never read past the cut, whatever the old owner writes there;
		 * the cut is recorded where the old owner cannot write */
		s->drain_end = end_pos;
		s->drain_cons.prod_pos = &s->drain_end;
		s->drain_cons.prod_cache = s->drain_cons.pos;
		s->drain_gen = s->generation;
		store_release(&s->rxc->drain_read_seq, s->drain_cons.seq);
		store_release(&s->rxc->drain_read, s->drain_cons.pos);
		store_release(&s->rxc->drain_end_seq, start_seq);
		store_release(&s->rxc->drain_end, end_pos);
		store_release(&s->rxc->drain_generation, s->drain_gen);
		s->tx = (struct segment)SEGMENT_INIT;
		s->txc = NULL;
		s->tx_open = false;
	} else if (s->tx_open || s->tx.base) {
		/* unmapped now, unlinked once the new generation is out: a crash
		 * before that finds the old file whole (recovery.md) */
		guard_remove(s->tx.base);
		segment_unmap(&s->tx);
		s->txc = NULL;
		s->tx_open = false;
		s->futex_armed = false;
		unlink_old = true;
	}
	/* the commit point of the switch; wake every reader: a fenced owner
	 * learns -ESTALE, others re-check */
	s->generation = gen;
	store_release(&s->rxc->generation, gen);
	r = tx_adopt(s, &tx, gen, start_seq);
	if (r < 0) {
		segment_unmap(&tx);
		return r;
	}
	if (unlink_old) {
		char name[32];

		snprintf(name, sizeof(name), "tx.%u", old_gen);
		unlinkat(s->dirfd, name, 0);
	}
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
		uint8_t h[SESSION_TOKEN_HASH_LEN];

		/* a client back after a lost connection: its own session as it
		 * was, or nothing; never a new session or a new generation */
		if (req->flags & (PROTO_OPEN_FRESH | PROTO_OPEN_TAKEOVER))
			return -EINVAL;

		if (!s)
			return -ENOENT;
		if (!(req->flags & PROTO_OPEN_TOKEN))
			return -ESTALE;
		/* after a restart only the hash is known (the state file's) */
		session_token_hash(req->token, h);
		if (sodium_memcmp(h, s->token_hash, sizeof(h)) != 0)
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
		/* its id and owner are written before anyone hears of it */
		r = owner_new(b, s, c);
		if (r < 0) {
			session_destroy(b, s, "its creation could not be recorded");
			return r;
		}
		*notify_rd = notify_new(s);
		*created = 1;
		*out = s;
		log_msg(LOG_INFO, "session %s (id %llu, uid %u) created, generation 1, owner pid %d",
			s->name, (unsigned long long)s->id, (unsigned)s->uid, (int)c->pid);
		session_event(s, "created by pid %d (%s%s), generation 1", (int)c->pid,
			      s->policy == SHM_POLICY_DROP_OLDEST ? "drop-oldest" : "block",
			      s->ephemeral ? ", ephemeral" : "");
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
	if (req->flags & PROTO_OPEN_TOKEN) {
		uint8_t h[SESSION_TOKEN_HASH_LEN];

		session_token_hash(req->token, h);
		if (sodium_memcmp(h, s->token_hash, sizeof(h)) != 0)
			goto not_token;
		/* the same owner over a new connection: same generation, same file */
		memcpy(s->token, req->token, sizeof(s->token));
		if (s->owner_pid != c->pid) {
			pid_t was = s->owner_pid;

			s->owner_pid = c->pid;
			r = state_session(b, s);
			if (r < 0) {
				s->owner_pid = was;
				return r;
			}
		}
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
		session_event(s, "resumed by its owner, pid %d, over a new connection (generation %u)",
			      (int)c->pid, s->generation);
		return 0;
	}
not_token:
	if (owner_alive(s) && !(req->flags & PROTO_OPEN_TAKEOVER) && !adopted_owner(s, c))
		return -EBUSY;
	{
		struct conn *old = s->owner;

		r = session_new_generation(b, s);
		if (r < 0)
			return r;
		if (old && old != c && !old->dead) {
			ctl_push_event(b, old, PROTO_EV_STALE, s->id);
			session_event(s, "taken over from live pid %d", (int)old->pid);
		}
	}
	r = owner_new(b, s, c);
	if (r < 0) {
		/* nobody may hold a token the state file does not know */
		session_detach(b, s, "its new owner could not be recorded");
		return r;
	}
	*notify_rd = notify_new(s);
	*out = s;
	log_msg(LOG_NOTICE, "session %s reattached by pid %d: generation %u", s->name, (int)c->pid,
		s->generation);
	session_event(s, "attached by pid %d: generation %u", (int)c->pid, s->generation);
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
	/* no owner to wait for after a restart: anyone of its uid may resume it */
	if (state_session(b, s) < 0)
		log_msg(LOG_WARNING, "session %s: its detach could not be recorded", s->name);
	s->detached_ns = now_ns();
	s->detach_reason = reason;
	session_event(s, "detached: %s (owner pid %d)", reason, (int)s->owner_pid);
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

unsigned session_conn_gone(struct broker *b, struct conn *c, const char *reason)
{
	unsigned n = 0;

	for (unsigned i = 0; i < b->nsessions;) {
		struct session *s = b->sessions[i];
		unsigned before = b->nsessions;

		if (s->owner == c) {
			session_detach(b, s, reason);
			n++;
			/* still here: it learns why its owner went (exit.c) */
			if (b->nsessions == before) {
				s->exit_reason[0] = 0;
				s->exit_pending = true;
			}
		}
		if (b->nsessions == before)
			i++;
	}
	return n;
}

/*
 * An admin's kick (shmbctl kick): the owner is fenced off as by a take-over
 * (it learns -ESTALE; what it committed is still delivered), its token is
 * replaced by one nobody knows, and the session waits detached for its
 * next owner.  With delete, the session is destroyed.
 */
int session_kick(struct broker *b, struct session *s, bool delete, uid_t by)
{
	struct conn *old = s->owner;
	int r;

	if (delete) {
		if (old && !old->dead)
			ctl_push_event(b, old, PROTO_EV_STALE, s->id);
		log_msg(LOG_NOTICE, "session %s (uid %u): deleted by uid %u (kick --delete)", s->name,
			(unsigned)s->uid, (unsigned)by);
		session_destroy(b, s, "deleted by an admin (kick --delete)");
		return 0;
	}
	if (s->quarantined)
		return -EBADMSG;
	if (!old && s->adopted_pidfd < 0)
		return -EALREADY;
	r = session_new_generation(b, s);
	if (r < 0)
		return r;
	adopted_forget(s);
	r = token_new(s);
	if (r < 0)
		return r;
	if (old && !old->dead)
		ctl_push_event(b, old, PROTO_EV_STALE, s->id);
	log_msg(LOG_NOTICE, "session %s (uid %u): owner pid %d kicked by uid %u", s->name,
		(unsigned)s->uid, (int)s->owner_pid, (unsigned)by);
	session_event(s, "kicked by uid %u: owner pid %d fenced off, generation now %u", (unsigned)by,
		      (int)s->owner_pid, s->generation);
	if (old)
		session_detach(b, s, "kicked by an admin");
	else if (state_session(b, s) < 0)
		log_msg(LOG_WARNING, "session %s: its kick could not be recorded", s->name);
	return 0;
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
	/* gone from the record first: a crash now leaves a directory that the
	 * next start finds unrecorded and quarantines, never a session that
	 * comes back half destroyed; and if that line sets off a rewrite of
	 * the file, the rewrite leaves this session out */
	s->destroying = true;
	if (state_gone(b, s->id) < 0)
		log_msg(LOG_WARNING, "session %s: its destruction could not be recorded; the next"
			" start will quarantine what is left of it", s->name);
	adopted_forget(s);
	for (unsigned i = 0; i < s->ntopics; i++) {
		struct topic *t = topic_by_id(b, s->topics[i]);

		if (t)
			topic_drop_sub(t, s);
	}
	/* no subscriber keeps a dedup entry for a source that is gone */
	for (unsigned i = 0; i < b->nsessions; i++) {
		struct session *o = b->sessions[i];

		for (unsigned k = 0; k < o->ndlv; k++)
			if (o->dlv[k].src_session == s->id && o->dlv[k].src_broker == b->broker_id)
				dlv_free(o, k);
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
	session_event(s, "quarantined: %s", why);
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
		if (!s->owner && s->ephemeral && !owner_alive(s) && session_tx_drained(s)) {
			session_destroy(b, s, "its owner went and what it published is delivered");
			continue;
		}
		/* a live reader that holds publishers back too long loses its
		 * session's attachment (decisions.md 15); the session keeps what
		 * it has and expires like any detached one */
		/* full_since may be later than now: a link delivered after the
		 * loop read its clock */
		if (s->owner && s->full_since && now > s->full_since &&
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

void topic_rates(struct broker *b, uint64_t now)
{
	for (unsigned i = 0; i < b->ntopics; i++) {
		struct topic *t = b->topics[i];

		if (!t)
			continue;
		if (!t->rate_ns) {
			t->rate_ns = now;
			t->rate_mark = t->routed;
		} else if (now - t->rate_ns >= 1000000000ull) {
			t->rate = (t->routed - t->rate_mark) * 1000000000ull / (now - t->rate_ns);
			t->rate_ns = now;
			t->rate_mark = t->routed;
		}
	}
}

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

/*
 * A new topic with the next id, allocated with room for it in the tables
 * but not yet in them: nothing can fail once it is recorded.  Name "" is
 * a placeholder nobody can name.
 */
static struct topic *topic_new(struct broker *b, uid_t uid, const char *name)
{
	struct topic *t, **n;

	if (topic_hash_grow(b) < 0)
		return NULL;
	n = realloc(b->topics, (b->ntopics + 1) * sizeof(*n));
	if (!n)
		return NULL;
	b->topics = n;
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->id = b->ntopics + 1;
	t->owner = uid;
	snprintf(t->name, sizeof(t->name), "%s", name);
	t->links = link_topic_mask(b, t->name);
	return t;
}

/* Put a topic from topic_new() into the tables (room is there). */
static void topic_add(struct broker *b, struct topic *t)
{
	uint64_t k;

	b->topics[b->ntopics++] = t;
	uid_topics(b, t->owner, 1);
	for (k = topic_name_hash(t->name) & (b->topic_hash_cap - 1); b->topic_hash[k];
	     k = (k + 1) & (b->topic_hash_cap - 1))
		;
	b->topic_hash[k] = t->id;
}

static struct topic *topic_append(struct broker *b, uid_t uid, const char *name)
{
	struct topic *t = topic_new(b, uid, name);

	if (t)
		topic_add(b, t);
	return t;
}

struct topic *topic_find(struct broker *b, const char *name)
{
	if (!b->topic_hash_cap)
		return NULL;
	for (uint64_t k = topic_name_hash(name) & (b->topic_hash_cap - 1); b->topic_hash[k];
	     k = (k + 1) & (b->topic_hash_cap - 1))
		if (!strcmp(b->topics[b->topic_hash[k] - 1]->name, name))
			return b->topics[b->topic_hash[k] - 1];
	return NULL;
}

/* A topic from the state file, with its id.  Ids lost with a corrupt line
 * become placeholders (owned by root, unnamed), so later ids stay put. */
int topic_restore(struct broker *b, uint32_t id, uid_t owner, const char *name)
{
	/* a hole is a lost line: a few in a row at most, never a million */
	if (id == 0 || id > TOPIC_ID_MAX || id > b->ntopics + 64 || !*name)
		return -EINVAL;
	if (id <= b->ntopics)
		return strcmp(b->topics[id - 1]->name, name) ? -EINVAL : 0;
	if (topic_find(b, name))
		return -EINVAL;
	while (b->ntopics + 1 < id)
		if (!topic_append(b, 0, ""))
			return -ENOMEM;
	return topic_append(b, owner, name) ? 0 : -ENOMEM;
}

int topic_intern(struct broker *b, uid_t uid, const char *name, uint32_t *id)
{
	struct topic *t = topic_find(b, name);
	int r;

	if (t) {
		if (!topic_access(t, uid))
			return -EPERM;
		*id = t->id;
		return 0;
	}
	if (b->ntopics >= TOPIC_ID_MAX)
		return -ENOSPC;
	/* one uid cannot use up the topic space of all (decisions.md 19) */
	if (uid != 0 && uid_topics(b, uid, 0) >= b->o.max_topics_per_uid)
		return -EDQUOT;
	t = topic_new(b, uid, name);
	if (!t)
		return -ENOMEM;
	/* ids are never reused: a topic is recorded before it exists, so an
	 * id the file does not have is never handed out (nor used again
	 * after a restart for another name) */
	r = state_topic(b, t);
	if (r < 0) {
		free(t);
		return r;
	}
	topic_add(b, t);
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
			/* recorded first: memory never runs ahead of the file */
			int r = state_sub(b, s->id, topic_id, 'U');

			if (r < 0)
				return r;
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
	int r;

	if (!t || !topic_access(t, s->uid))
		return -ENOENT;
	/* each change is recorded before memory follows it: a request that
	 * fails leaves nothing the file does not say */
	if (reset && s->ntopics) {
		r = state_sub(b, s->id, 0, 'R');
		if (r < 0)
			return r;
		while (s->ntopics) {
			struct topic *o = topic_by_id(b, s->topics[0]);

			if (o)
				topic_drop_sub(o, s);
			s->topics[0] = s->topics[--s->ntopics];
		}
	}
	for (unsigned i = 0; i < s->ntopics; i++)
		if (s->topics[i] == topic_id)
			return 0;
	/* room first (unused room is harmless), so nothing fails after the line */
	ids = realloc(s->topics, (s->ntopics + 1) * sizeof(*ids));
	if (!ids)
		return -ENOMEM;
	s->topics = ids;
	subs = realloc(t->subs, (t->nsubs + 1) * sizeof(*subs));
	if (!subs)
		return -ENOMEM;
	t->subs = subs;
	r = state_sub(b, s->id, topic_id, 'B');
	if (r < 0)
		return r;
	s->topics[s->ntopics++] = topic_id;
	t->subs[t->nsubs++] = s;
	return 0;
}

/* ---- re-adoption after a restart --------------------------------------------- */

/* Move sessions/<name> aside into quarantine/, saying why. */
static void quarantine_dir(struct broker *b, const char *dname, const char *what, const char *why)
{
	char to[300];

	snprintf(to, sizeof(to), "quarantine/%s.%lld", dname, (long long)time(NULL));
	if (renameat(b->sessions_dirfd, dname, b->dirfd, to) < 0) {
		log_msg(LOG_ERR, "%s: %s; and it cannot be moved aside (%s): left in place, not served",
			what, why, strerror(errno));
		return;
	}
	b->quarantined_at_start++;
	log_msg(LOG_ERR, "%s quarantined at start-up: %s; its files are in %s/%s", what, why,
		b->o.dir, to);
}

static int map_file(int dirfd, const char *name, struct segment *out)
{
	int fd = openat(dirfd, name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return -errno;
	return segment_map(fd, true, out);
}

/* Map tx.<gen> and check it is this session's, of this generation and
 * size.  The SIGBUS guard covers it before its first byte is read: its
 * owner may be truncating it right now. */
static const char *tx_file_check(struct session *s, uint32_t gen, struct segment *tx,
				 struct shm_tx_hdr *h)
{
	char name[32];

	snprintf(name, sizeof(name), "tx.%u", gen);
	if (map_file(s->dirfd, name, tx) < 0)
		return "its TX file is missing or cannot be mapped";
	if (guard_add(tx->base, tx->len, s) < 0)
		return "out of memory";
	if (segment_tx_validate(tx, h) < 0 || h->session_id != s->id || h->generation != gen ||
	    h->tx_ring_size != s->tx_ring_size)
		return "its TX file's header is invalid";
	return NULL;
}

/*
 * Where to resume reading a ring at pos.  Its sequence word is written
 * before the position (router.c), so after a crash between the two the
 * word may be ahead; the record at pos, if there is one, says which
 * sequence it carries.  It must lie at or below the word, by less than a
 * lap of records.
 */
static int resume_seq(const struct ring *r, uint64_t pos, uint64_t stored, uint32_t gmin,
		      uint32_t gmax, uint64_t *seq)
{
	struct ring_cons c;
	struct ring_msg m;
	int ret;

	if (ring_cons_init(&c, r, NULL, NULL, pos, RING_SEQ_ANY, gmin, gmax) < 0)
		return -EBADMSG;
	ret = ring_peek(&c, &m);
	if (ret == -EAGAIN || ret == -ESTALE) {
		*seq = stored;
		return 0;
	}
	if (ret < 0)
		return ret;
	if (m.hdr.seq > stored || stored - m.hdr.seq > r->size / SHM_REC_HDR_SIZE)
		return -EBADMSG;
	*seq = m.hdr.seq;
	return 0;
}

/*
 * The RX side after a crash (decisions.md 12): walk from where the
 * delivery table is known complete, over valid records, to the true write
 * position, raising the table's entries from the records found there.
 */
static const char *rx_recover(struct session *s)
{
	struct shm_dlv_table *t = s->dlv_shm;
	uint64_t pub = load_acquire(&s->rxc->rx_write), pos = t->pos, seq = t->seq;
	struct ring r;
	struct ring_cons c;
	struct ring_msg m;
	unsigned n = t->n;

	if (n > SHM_DLV_MAX)
		return "its delivery table is corrupt";
	s->dlv = calloc(SHM_DLV_MAX, sizeof(*s->dlv));
	if (!s->dlv)
		return "out of memory";
	for (unsigned i = 0; i < n; i++) {
		s->dlv[i].src_broker = t->ent[i].src_broker;
		s->dlv[i].src_session = t->ent[i].src_session;
		s->dlv[i].seq = t->ent[i].src_session ? t->ent[i].next_seq : 0;
	}
	s->ndlv = n;
	if (ring_init(&r, segment_ring_data(&s->rx), s->rx_ring_size) < 0 || pos > pub ||
	    pub - pos > r.size || resume_seq(&r, pos, seq, RX_WRITER_GEN, RX_WRITER_GEN, &seq) < 0 ||
	    ring_cons_init(&c, &r, NULL, NULL, pos, seq, RX_WRITER_GEN, RX_WRITER_GEN) < 0)
		return "its RX positions are impossible";
	for (;;) {
		struct shm_msg_rx rx;
		struct delivered *d = NULL;

		if (ring_peek(&c, &m) < 0 || m.end - pos > r.size)
			break;
		if (m.hdr.type == SHM_REC_DATA && m.len >= sizeof(rx)) {
			memcpy(&rx, m.payload, sizeof(rx));
			/* a source is its origin broker (this one, or a remote
			 * link's) and its session there */
			for (unsigned i = 0; i < s->ndlv; i++)
				if (s->dlv[i].src_session == rx.src_session &&
				    s->dlv[i].src_broker == rx.src_broker)
					d = &s->dlv[i];
			for (unsigned i = 0; !d && i < SHM_DLV_MAX; i++)
				if (s->dlv[i].src_session == 0) {
					d = &s->dlv[i];
					d->src_broker = rx.src_broker;
					d->src_session = rx.src_session;
					if (i >= s->ndlv)
						s->ndlv = i + 1;
				}
			if (d && d->seq <= rx.src_seq)
				d->seq = rx.src_seq + 1;
		}
		ring_consume(&c, &m);
	}
	if (c.pos < pub)
		return "its RX ring holds a bad record before its published end";
	/* the table, complete up to the true end, then that end published */
	for (unsigned i = 0; i < s->ndlv; i++) {
		t->ent[i].src_broker = s->dlv[i].src_broker;
		t->ent[i].next_seq = s->dlv[i].seq;
		t->ent[i].src_session = s->dlv[i].src_session;
	}
	t->n = s->ndlv;
	store_release(&t->seq, c.seq);
	store_release(&t->pos, c.pos);
	store_release(&s->rxc->rx_write_seq, c.seq);
	store_release(&s->rxc->rx_write, c.pos);
	{
		/* drop-oldest: a reader may lag more than a lap; what lies before
		 * the drop position is no longer its */
		uint64_t floor = s->policy == SHM_POLICY_DROP_OLDEST ? load_acquire(&s->rxc->rx_drop) : 0;

		if (ring_prod_init_floor(&s->rx_prod, &r, &s->txc->rx_acked, &s->rxc->rx_write, c.pos,
					 c.seq, RX_WRITER_GEN, floor) < 0)
			return "its rx_acked is impossible (behind, misaligned or ahead)";
	}
	return NULL;
}

/* The TX file(s): read on from where routing stood. */
static const char *tx_recover(struct session *s, const struct shm_tx_hdr *th)
{
	struct shm_rx_ctrl *x = s->rxc;
	uint32_t gen = s->generation, dg = load_acquire(&x->drain_generation);
	uint64_t pos, seq;
	struct ring r;
	const char *why;

	if (ring_init(&r, segment_ring_data(&s->tx), s->tx_ring_size) < 0)
		return "its TX ring size is impossible";
	if (dg && dg == gen) {
		/* a new owner's switch that never took effect (no generation was
		 * given out): undo its cut, the owner of this file goes on */
		(void)ring_unfence(&r, load_acquire(&x->drain_end));
		store_release(&x->drain_generation, 0);
		dg = 0;
	}
	if (load_acquire(&x->tx_read_gen) == gen) {
		pos = load_acquire(&x->tx_read);
		if (resume_seq(&r, pos, load_acquire(&x->tx_read_seq), gen, gen, &seq) < 0)
			return "its TX read position is impossible";
	} else {
		/* switched to, never read yet: from the start */
		pos = 0;
		seq = th->start_seq;
		store_release(&x->tx_read_seq, seq);
		store_release(&x->tx_read, pos);
		store_release(&x->tx_read_gen, gen);
	}
	if (ring_cons_init(&s->tx_cons, &r, NULL, &x->tx_read, pos, seq, gen, gen) < 0)
		return "its TX read position is impossible";
	{
		/* a cut with nothing left to drain, whose switch never took
		 * effect, ends the current file: reopen it */
		uint64_t end = pos, end_seq = seq;

		if (ring_recover(&r, pos, &end, &end_seq, gen, gen) == 0)
			(void)ring_unfence(&r, end);
	}
	s->txc = segment_tx_ctrl(&s->tx);
	s->tx_open = true;
	if (!dg)
		return NULL;
	/* a previous owner's file still being delivered, up to its recorded cut */
	{
		struct shm_tx_hdr dh;
		uint64_t end = load_acquire(&x->drain_end);

		if (dg > gen || (why = tx_file_check(s, dg, &s->drain_tx, &dh)))
			return "the TX file it was draining is invalid";
		if (ring_init(&r, segment_ring_data(&s->drain_tx), s->tx_ring_size) < 0)
			return "the TX file it was draining is invalid";
		pos = load_acquire(&x->drain_read);
		if (end < pos || end % SHM_REC_ALIGN || end - pos > r.size ||
		    resume_seq(&r, pos, load_acquire(&x->drain_read_seq), dg, dg, &seq) < 0 ||
		    ring_cons_init(&s->drain_cons, &r, NULL, &x->drain_read, pos, seq, dg, dg) < 0)
			return "its drain positions are impossible";
		s->drain_end = end;
	}
	s->drain_cons.prod_pos = &s->drain_end;
	s->drain_cons.prod_cache = s->drain_cons.pos;
	s->drain_gen = dg;
	return NULL;
}

/* Remove files no generation uses: a tx.<n> of a new owner whose switch a
 * crash cut short, or of one drained before the crash. */
static void tx_strays(struct session *s)
{
	int fd = dup(s->dirfd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *e;

	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((e = readdir(d))) {
		unsigned g;
		int k = 0;

		if (sscanf(e->d_name, "tx.%u%n", &g, &k) == 1 && !e->d_name[k] && g != s->generation &&
		    g != s->drain_gen)
			unlinkat(s->dirfd, e->d_name, 0);
	}
	closedir(d);
}

static const char *adopt_one(struct broker *b, struct session *s, const struct state_session *st,
			     const char *dname)
{
	struct shm_seg_hdr h;
	struct shm_tx_hdr th;
	const char *why;

	s->dirfd = openat(b->sessions_dirfd, dname, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (s->dirfd < 0)
		return "its directory cannot be opened";
	if (map_file(s->dirfd, "rx", &s->rx) < 0)
		return "its RX file is missing or cannot be mapped";
	if (segment_rx_validate(&s->rx, &h) < 0)
		return "its RX file's header is invalid (magic, version, size or checksum)";
	if (h.session_id != st->id || h.rx_ring_size != st->rx_size || h.tx_ring_size != st->tx_size ||
	    h.policy != st->policy)
		return "its RX file does not match the state file";
	s->rxc = segment_rx_ctrl(&s->rx);
	s->dlv_shm = segment_dlv_table(&s->rx);
	s->generation = load_acquire(&s->rxc->generation);
	if (s->generation == 0)
		return "it was being destroyed";
	if ((why = tx_file_check(s, s->generation, &s->tx, &th)))
		return why;
	/* rx_prod reads the owner's rx_acked from the TX file */
	s->txc = segment_tx_ctrl(&s->tx);
	if ((why = rx_recover(s)) || (why = tx_recover(s, &th)))
		return why;
	tx_strays(s);
	return NULL;
}

static void adopt_undo(struct session *s)
{
	guard_remove(s->tx.base);
	guard_remove(s->drain_tx.base);
	segment_unmap(&s->tx);
	segment_unmap(&s->drain_tx);
	segment_unmap(&s->rx);
	if (s->dirfd >= 0)
		close(s->dirfd);
	free(s->dlv);
	free(s->topics);
	free(s);
}

/* Re-adopt one recorded session as detached; NULL, or why it cannot be. */
static const char *session_adopt(struct broker *b, const struct state_session *st, const char *dname)
{
	struct session *s = calloc(1, sizeof(*s));
	const char *why;

	if (!s)
		return "out of memory";
	s->id = st->id;
	snprintf(s->name, sizeof(s->name), "%s", st->name);
	s->uid = st->uid;
	s->policy = st->policy;
	s->ephemeral = st->ephemeral;
	s->rx_ring_size = st->rx_size;
	s->tx_ring_size = st->tx_size;
	s->owner_pid = st->pid;
	memcpy(s->token_hash, st->token_hash, sizeof(s->token_hash));
	s->rx = s->tx = s->drain_tx = (struct segment)SEGMENT_INIT;
	s->owner_pidfd = s->adopted_pidfd = s->notify_wr = -1;
	s->dlv_touched = -1;
	why = adopt_one(b, s, st, dname);
	if (!why && sessions_add(b, s) < 0)
		why = "out of memory";
	if (why) {
		adopt_undo(s);
		return why;
	}
	for (unsigned i = 0; i < st->ntopics; i++)
		if (session_subscribe(b, s, st->topics[i], false) < 0)
			log_msg(LOG_WARNING, "session %s: topic %u of its subscriptions is unknown;"
				" dropped", s->name, st->topics[i]);
	/* its last owner may still live: its token is good for --session-ttl,
	 * and anyone else needs take-over while it lives (decisions.md 6) */
	if (st->pid > 0) {
		char proc[32];
		struct stat ps;

		/* a pid reused by another uid's process is not its owner */
		snprintf(proc, sizeof(proc), "/proc/%d", st->pid);
		if (stat(proc, &ps) == 0 && ps.st_uid == s->uid)
			s->adopted_pidfd = sys_pidfd_open(st->pid);
	}
	s->detached_ns = now_ns();
	s->detach_reason = "the broker restarted";
	/* every sleeper from before the crash looks again (decisions.md 9) */
	fetch_add_release(&s->rxc->rx_signal, 1);
	fetch_add_release(&s->rxc->tx_space_signal, 1);
	futex_wake(&s->rxc->rx_signal, 0x7fffffff);
	futex_wake(&s->rxc->tx_space_signal, 0x7fffffff);
	b->adopted++;
	log_msg(LOG_INFO, "session %s (id %llu, uid %u) re-adopted: generation %u, %s",
		s->name, (unsigned long long)s->id, (unsigned)s->uid, s->generation,
		s->adopted_pidfd >= 0 ? "its owner lives" : "its owner is gone");
	if (s->adopted_pidfd >= 0)
		session_event(s, "re-adopted after a broker restart: generation %u, its owner"
			      " (pid %d) lives", s->generation, (int)s->owner_pid);
	else
		session_event(s, "re-adopted after a broker restart: generation %u, its owner is gone",
			      s->generation);
	return NULL;
}

/*
 * At start-up: every directory in sessions/ is either a recorded session,
 * re-adopted as detached after its files pass every check, or moved aside
 * into quarantine/ with the reason in the log.
 */
int session_adopt_all(struct broker *b, const struct state_load *l)
{
	int fd = dup(b->sessions_dirfd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *e;
	bool *seen = calloc(l->n + 1, sizeof(*seen));

	if (!d || !seen) {
		if (d)
			closedir(d);
		else if (fd >= 0)
			close(fd);
		free(seen);
		return -ENOMEM;
	}
	while ((e = readdir(d))) {
		char what[320];
		char *end;
		unsigned long long id;
		const struct state_session *st = NULL;
		const char *why;

		if (e->d_name[0] == '.')
			continue;
		id = strtoull(e->d_name, &end, 10);
		if (*end || id == 0 || id >= SESSION_ID_LIMIT) {
			/* not a name this broker gives: never let it move the ids */
			snprintf(what, sizeof(what), "sessions/%s", e->d_name);
			quarantine_dir(b, e->d_name, what, "its name is not a session id");
			continue;
		}
		/* ids are never reused, even those of what is moved aside */
		if (id >= b->next_session_id)
			b->next_session_id = id + 1;
		for (unsigned i = 0; i < l->n; i++)
			if (l->s[i].id == id) {
				st = &l->s[i];
				seen[i] = true;
			}
		if (!st) {
			snprintf(what, sizeof(what), "sessions/%s", e->d_name);
			quarantine_dir(b, e->d_name, what, "the state file has no record of it");
			continue;
		}
		why = session_adopt(b, st, e->d_name);
		if (why && !strcmp(why, "it was being destroyed")) {
			/* destroyed, but the crash came before its record said so */
			snprintf(what, sizeof(what), "sessions/%s", e->d_name);
			quarantine_dir(b, e->d_name, what, why);
		} else if (why) {
			snprintf(what, sizeof(what), "session %s (id %llu, uid %u)", st->name, id,
				 (unsigned)st->uid);
			quarantine_dir(b, e->d_name, what, why);
		}
	}
	closedir(d);
	for (unsigned i = 0; i < l->n; i++)
		if (!seen[i])
			log_msg(LOG_WARNING, "session %s (id %llu): recorded, but its files are gone;"
				" forgotten", l->s[i].name, (unsigned long long)l->s[i].id);
	free(seen);
	return 0;
}
