/*
 * broker/session.c - the session table: create, open (a new session, its
 * owner back, or a new owner), detach, kick, expire, destroy.  A session's
 * TX files and generation switch are in session-tx.c, its topics in
 * topic.c, its re-adoption after a restart in adopt.c.
 *
 * Must never: act on an owner uid, policy or topic read from shared
 * memory (the broker's own table is the truth); let one uid see or touch
 * another uid's session; switch TX files before the old one is drained
 * and fenced (docs/design/owners.md).
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
#include <unistd.h>

#include "broker/array.h"
#include "broker/broker.h"
#include "broker/ctl-lanes.h"
#include "broker/ctl.h"
#include "broker/dlv.h"
#include "broker/log.h"
#include "broker/session-int.h"
#include "broker/session.h"
#include "broker/state.h"
#include "broker/topic.h"
#include "shm/atomics.h"
#include "shm/clock.h"
#include "shm/futex.h"

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

void session_event(struct session *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_event_put(&s->ev[s->nev++ % SESSION_EVENTS], fmt, ap);
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

void session_adopted_forget(struct session *s)
{
	if (s->adopted_pidfd >= 0)
		close(s->adopted_pidfd);
	s->adopted_pidfd = -1;
}

/* Put s in the broker's table: 0 or -ENOMEM. */
int session_table_add(struct broker *b, struct session *s)
{
	if (ARRAY_ROOM(b->sessions, b->nsessions, b->cap_sessions, 64) < 0)
		return -ENOMEM;
	b->sessions[b->nsessions++] = s;
	return 0;
}

void session_blank(struct session *s)
{
	s->rx = s->tx = s->drain_tx = (struct segment)SEGMENT_INIT;
	s->dirfd = s->owner_pidfd = s->adopted_pidfd = s->notify_wr = -1;
	s->reader_watch_pidfd = -1;
	s->dlv_touched = -1;
}

/* A new session's settings, the broker's defaults filled in: 0, or why it
 * may not be created (-EINVAL, -EDQUOT, -EOVERFLOW). */
static int session_params(struct broker *b, const struct conn *c, const struct proto_open *req,
			  struct seg_rx_params *p)
{
	*p = (struct seg_rx_params){
		.broker_id = b->broker_id,
		.owner_uid = (uint32_t)c->uid,
		.policy = req->policy == UINT32_MAX ? SHM_POLICY_BLOCK : req->policy,
		.rx_ring_size = req->rx_ring_size ? req->rx_ring_size : b->o.rx_ring_size,
		.tx_ring_size = req->tx_ring_size ? req->tx_ring_size : b->o.tx_ring_size,
	};
	if (!segment_ring_size_ok(p->rx_ring_size) || !segment_ring_size_ok(p->tx_ring_size) ||
	    p->policy > SHM_POLICY_DROP_OLDEST)
		return -EINVAL;
	if (c->uid != 0 && sessions_of(b, c->uid) >= b->o.max_sessions_per_uid)
		return -EDQUOT;
	/* one uid cannot fill the tmpfs that every session lives in
	 * (docs/design/owners.md, access) */
	if (c->uid != 0 && memory_of(b, c->uid) + session_memory(p->rx_ring_size, p->tx_ring_size) >
				   b->o.max_memory_per_uid)
		return -EDQUOT;
	/* never a wrapped id, whatever start-up found
	 * (docs/design/owners.md, ids) */
	if (b->next_session_id == 0 || b->next_session_id >= SESSION_ID_LIMIT) {
		log_msg(LOG_ERR, "no session id left (the next would be %llu): no new session",
			(unsigned long long)b->next_session_id);
		return -EOVERFLOW;
	}
	return 0;
}

/* In s's new directory: the rx file and the first TX file, tx.1.  What
 * a failure leaves is undone by session_unmake(). */
static int session_files_make(struct broker *b, struct session *s, const char *dname,
			      const struct seg_rx_params *p)
{
	struct ring r;
	int ret;

	s->dirfd = openat(b->sessions_dirfd, dname, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dirfd < 0)
		return -errno;
	unlinkat(s->dirfd, "rx", 0);
	ret = segment_create(s->dirfd, "rx", segment_file_size(p->rx_ring_size), &s->rx);
	if (ret < 0)
		return ret;
	ret = segment_rx_format(&s->rx, p);
	if (ret < 0)
		return ret;
	s->rxc = segment_rx_ctrl(&s->rx);
	s->dlv_shm = segment_dlv_table(&s->rx);
	store_release(&s->rxc->generation, s->generation);
	ret = ring_init(&r, segment_ring_data(&s->rx), p->rx_ring_size);
	if (ret < 0)
		return ret;
	ret = session_tx_create(s, 1, 0, 0, &s->tx);
	if (ret < 0)
		return ret;
	/* cons_pos is pointed at the tx file's rx_acked by session_tx_adopt() */
	ret = ring_prod_init(&s->rx_prod, &r, &segment_tx_ctrl(&s->tx)->rx_acked, &s->rxc->rx_write, 0,
			     0, RX_WRITER_GEN);
	if (ret < 0)
		return ret;
	return session_tx_adopt(s, &s->tx, 1, 0);
}

/* Undo what session_files_make() made of s, its directory too, and free s. */
static void session_unmake(struct broker *b, struct session *s, const char *dname)
{
	session_tx_drop(s);
	segment_unmap(&s->rx);
	if (s->dirfd >= 0) {
		unlinkat(s->dirfd, "rx", 0);
		close(s->dirfd);
	}
	unlinkat(b->sessions_dirfd, dname, AT_REMOVEDIR);
	free(s);
}

static int session_create(struct broker *b, struct conn *c, const struct proto_open *req,
			  const char *name, struct session **out)
{
	struct seg_rx_params p;
	struct session *s;
	char dname[32];
	int ret;

	ret = session_params(b, c, req, &p);
	if (ret < 0)
		return ret;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	session_blank(s);
	s->id = b->next_session_id++;
	p.session_id = s->id;
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->uid = c->uid;
	s->policy = p.policy;
	s->generation = 1;
	s->ephemeral = req->flags & PROTO_OPEN_EPHEMERAL;
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
		free(s);
		return ret;
	}
	ret = session_files_make(b, s, dname, &p);
	if (ret == 0)
		ret = session_table_add(b, s);
	if (ret < 0) {
		session_unmake(b, s, dname);
		return ret;
	}
	*out = s;
	return 0;
}

static void notify_close(struct session *s)
{
	/* the owner's read end sees EOF: a poller wakes and learns why */
	if (s->notify_wr >= 0)
		close(s->notify_wr);
	s->notify_wr = -1;
}

/*
 * A new poll pipe for the new owner (docs/design/rings.md, pollable fd):
 * the broker keeps the write end, the owner gets the read end.
 * Returns the read end.
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
	session_adopted_forget(s);
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

/* How session_open() went, which decides what the new owner is told. */
enum open_outcome {
	OPEN_CREATED = 1, /* a new session, generation 1 */
	OPEN_RESUMED,     /* its owner over a new connection: same generation */
	OPEN_ATTACHED,    /* a new owner: a new generation */
};

/* The request's name, copied out and checked, and its policy: 0 or -EINVAL. */
static int open_name(const struct proto_open *req, char name[PROTO_NAME_MAX + 1])
{
	if (req->name_len == 0 || req->name_len > PROTO_NAME_MAX || !name_ok(req->name, req->name_len))
		return -EINVAL;
	memcpy(name, req->name, req->name_len);
	name[req->name_len] = 0;
	if (req->policy != UINT32_MAX && req->policy > SHM_POLICY_DROP_OLDEST)
		return -EINVAL;
	return 0;
}

/* Does the request carry s's token?  After a restart only its hash is
 * known (the state file's). */
static bool open_token_ok(const struct session *s, const struct proto_open *req)
{
	uint8_t h[SESSION_TOKEN_HASH_LEN];

	if (!(req->flags & PROTO_OPEN_TOKEN))
		return false;
	session_token_hash(req->token, h);
	return sodium_memcmp(h, s->token_hash, sizeof(h)) == 0;
}

/* A client back after a lost connection: its own session as it was, or
 * nothing; never a new session or a new generation. */
static int open_reattach_check(const struct session *s, const struct proto_open *req)
{
	if (req->flags & (PROTO_OPEN_FRESH | PROTO_OPEN_TAKEOVER))
		return -EINVAL;
	if (!s)
		return -ENOENT;
	return open_token_ok(s, req) ? 0 : -ESTALE;
}

/* An existing session as the request asks for it: not quarantined, and
 * ring sizes and policy as fixed at creation
 * (docs/design/owners.md, session calls). */
static int open_fits(const struct session *s, const struct proto_open *req)
{
	if (s->quarantined)
		return -EBADMSG;
	if ((req->rx_ring_size && req->rx_ring_size != s->rx_prod.r.size) ||
	    (req->tx_ring_size && req->tx_ring_size != s->tx_cons.r.size) ||
	    (req->policy != UINT32_MAX && req->policy != s->policy))
		return -EINVAL;
	return 0;
}

static int open_create(struct broker *b, struct conn *c, const struct proto_open *req,
		       const char *name, struct session **out)
{
	struct session *s = NULL;
	int r;

	r = session_create(b, c, req, name, &s);
	if (r < 0)
		return r;
	/* its id and owner are written before anyone hears of it */
	r = owner_new(b, s, c);
	if (r < 0) {
		session_destroy(b, s, "its creation could not be recorded");
		return r;
	}
	log_msg(LOG_INFO, "session %s (id %llu, uid %u) created, generation 1, owner pid %d", s->name,
		(unsigned long long)s->id, (unsigned)s->uid, (int)c->pid);
	session_event(s, "created by pid %d (%s%s), generation 1", (int)c->pid,
		      s->policy == SHM_POLICY_DROP_OLDEST ? "drop-oldest" : "block",
		      s->ephemeral ? ", ephemeral" : "");
	*out = s;
	return OPEN_CREATED;
}

/* The same owner (its token) over a new connection: same generation,
 * same file. */
static int open_resume(struct broker *b, struct conn *c, const struct proto_open *req,
		       struct session *s)
{
	memcpy(s->token, req->token, sizeof(s->token));
	if (s->owner_pid != c->pid) {
		pid_t was = s->owner_pid;
		int r;

		s->owner_pid = c->pid;
		r = state_session(b, s);
		if (r < 0) {
			s->owner_pid = was;
			return r;
		}
	}
	owner_set(s, c);
	log_msg(LOG_INFO, "session %s resumed by its owner (pid %d), generation %u", s->name,
		(int)c->pid, s->generation);
	session_event(s, "resumed by its owner, pid %d, over a new connection (generation %u)",
		      (int)c->pid, s->generation);
	return OPEN_RESUMED;
}

/* A new owner, without the token: refused while the old one lives unless
 * it takes over; the old one is fenced off by a new generation. */
static int open_attach(struct broker *b, struct conn *c, const struct proto_open *req,
		       struct session *s)
{
	struct conn *old = s->owner;
	int r;

	if (owner_alive(s) && !(req->flags & PROTO_OPEN_TAKEOVER) && !adopted_owner(s, c))
		return -EBUSY;
	r = session_new_generation(b, s);
	if (r < 0)
		return r;
	if (old && old != c && !old->dead) {
		ctl_push_event(b, old, PROTO_EV_STALE, s->id);
		session_event(s, "taken over from live pid %d", (int)old->pid);
	}
	r = owner_new(b, s, c);
	if (r < 0) {
		/* nobody may hold a token the state file does not know */
		session_detach(b, s, "its new owner could not be recorded");
		return r;
	}
	log_msg(LOG_NOTICE, "session %s reattached by pid %d: generation %u", s->name, (int)c->pid,
		s->generation);
	session_event(s, "attached by pid %d: generation %u", (int)c->pid, s->generation);
	return OPEN_ATTACHED;
}

int session_open(struct broker *b, struct conn *c, const struct proto_open *req, struct session **out,
		 int *created, int *notify_rd)
{
	char name[PROTO_NAME_MAX + 1];
	struct session *s;
	int how, rd;

	how = open_name(req, name);
	if (how < 0)
		return how;
	s = session_find(b, c->uid, name);
	if ((req->flags & PROTO_OPEN_REATTACH) && (how = open_reattach_check(s, req)) < 0)
		return how;
	if (s && (req->flags & PROTO_OPEN_FRESH)) {
		if (owner_alive(s) && s->owner != c && !(req->flags & PROTO_OPEN_TAKEOVER))
			return -EBUSY;
		session_destroy(b, s, "replaced by a fresh session");
		s = NULL;
	}
	if (!s)
		how = open_create(b, c, req, name, &s);
	else if ((how = open_fits(s, req)) == 0)
		how = open_token_ok(s, req) ? open_resume(b, c, req, s) : open_attach(b, c, req, s);
	if (how < 0)
		return how;
	rd = notify_new(s);
	/* a byte the old pipe carried may be lost with it: a poller that
	 * reattaches looks at its ring once more */
	if (rd >= 0 && how == OPEN_RESUMED && (req->flags & PROTO_OPEN_REATTACH) && s->txc &&
	    (load_relaxed(&s->txc->client_flags) & SHM_CLIENT_POLLER))
		(void)!write(s->notify_wr, "", 1);
	*out = s;
	*created = how == OPEN_CREATED;
	*notify_rd = rd;
	return 0;
}

bool session_detach(struct broker *b, struct session *s, const char *reason)
{
	if (!s->owner)
		return false;
	/* its holds stay; its lanes stay open for the same owner's REATTACH
	 * while its process lives, unless it may not come back */
	ctl_lanes_session_end(b, s, s->generation,
			      s->quarantined ? CTL_LANES_ENDED : CTL_LANES_DETACHED);
	s->owner = NULL;
	s->owner_pidfd = -1;
	notify_close(s);
	/* no owner to wait for after a restart: anyone of its uid may resume it */
	if (state_session(b, s) < 0)
		log_msg(LOG_WARNING, "session %s: its detach could not be recorded", s->name);
	s->detached_ns = clock_mono_ns();
	s->detach_reason = reason;
	session_event(s, "detached: %s (owner pid %d)", reason, (int)s->owner_pid);
	if (s->ephemeral) {
		if (session_tx_drained(s)) {
			char why[200];

			/* on lanes always so: a committed record is delivered
			 * (its readers read the lane to its cut) */
			snprintf(why, sizeof(why), "%s; what it published is delivered", reason);
			session_destroy(b, s, why);
			return true;
		}
		/* what it published is delivered first, then it goes (expire) */
		log_msg(LOG_INFO, "session %s: %s; delivering what it published, then destroying it",
			s->name, reason);
		return false;
	}
	log_msg(LOG_NOTICE, "session %s detached: %s (owner pid %d); keeps receiving for %llu ms",
		s->name, reason, (int)s->owner_pid, (unsigned long long)b->o.session_ttl_ms);
	return false;
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
	session_adopted_forget(s);
	r = token_new(s);
	if (r < 0)
		return r;
	if (old && !old->dead)
		ctl_push_event(b, old, PROTO_EV_STALE, s->id);
	log_msg(LOG_NOTICE, "session %s (uid %u): owner pid %d kicked by uid %u", s->name,
		(unsigned)s->uid, (int)s->owner_pid, (unsigned)by);
	session_event(s, "kicked by uid %u: owner pid %d fenced off, generation now %u", (unsigned)by,
		      (int)s->owner_pid, s->generation);
	if (old) {
		/* an ephemeral session with nothing left to deliver goes at once */
		if (session_detach(b, s, "kicked by an admin"))
			return 0;
	} else if (state_session(b, s) < 0)
		log_msg(LOG_WARNING, "session %s: its kick could not be recorded", s->name);
	ctl_lanes_ownerless(b, s);
	return 0;
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
	session_adopted_forget(s);
	for (unsigned i = 0; i < s->ntopics; i++) {
		struct topic *t = topic_by_id(b, s->topics[i]);

		if (t)
			topic_drop_sub(t, s);
	}
	/* no subscriber keeps a dedup entry for a source that is gone */
	dlv_forget(b, b->broker_id, s->id);
	loop_cancel_session(b, s);
	notify_close(s);
	/* a client still mapping it learns -ESTALE at its next call */
	store_release(&s->rxc->generation, 0);
	/* after that store: the lanes' sleepers woken (its reader's rx_wake,
	 * its lanes' readers and tx_wake) look and find it over */
	ctl_lanes_session_end(b, s, s->generation, CTL_LANES_GONE);
	fetch_add_release(&s->rxc->rx_signal, 1);
	fetch_add_release(&s->rxc->tx_space_signal, 1);
	futex_wake(&s->rxc->rx_signal, 0x7fffffff);
	futex_wake(&s->rxc->tx_space_signal, 0x7fffffff);
	session_tx_drop(s);
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
	 * that may still hold a pointer to this session; a detached one is
	 * not detached again, and cannot come back: its lanes end here */
	if (!s->owner)
		ctl_lanes_session_end(b, s, s->generation, CTL_LANES_ENDED);
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
		 * session's attachment (docs/design/rings.md, back-pressure);
		 * the session keeps what it has and expires like
		 * any detached one */
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
