/*
 * broker/adopt.c - re-adoption after a restart: every directory in
 * sessions/ is matched with the state file's record, its files are
 * checked, its rings walked forward to their true ends, and it comes back
 * detached; what fails a check is moved aside into quarantine/.
 *
 * Must never: serve a session whose files fail a check; read a TX file
 * before the SIGBUS guard covers it; deliver anything twice after the
 * restart (the delivery tables are raised from what the RX ring holds).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/ctl-lanes.h"
#include "broker/guard.h"
#include "broker/harden.h"
#include "broker/log.h"
#include "broker/session-int.h"
#include "broker/session.h"
#include "broker/state.h"
#include "broker/sys.h"
#include "broker/topic.h"
#include "shm/atomics.h"
#include "shm/clock.h"
#include "shm/futex.h"

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
				 struct shm_tx_hdr *h, uint64_t *blocks)
{
	char name[32];

	snprintf(name, sizeof(name), "tx.%u", gen);
	if (map_file(s->dirfd, name, tx) < 0)
		return "its TX file is missing or cannot be mapped";
	if (guard_add(tx->base, tx->len, s) < 0)
		return "out of memory";
	if (harden_note(tx->fd, blocks) < 0)
		return "its TX file cannot be looked at";
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
 * The RX side after a crash (docs/design/recovery.md, delivery tables):
 * walk from where the delivery table is known complete, over valid
 * records, to the true write position, raising the table's entries from the
 * records found there.
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

		if (dg > gen || (why = tx_file_check(s, dg, &s->drain_tx, &dh, &s->drain_blocks)))
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
	if ((why = tx_file_check(s, s->generation, &s->tx, &th, &s->tx_blocks)))
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
	session_blank(s);
	s->id = st->id;
	snprintf(s->name, sizeof(s->name), "%s", st->name);
	s->uid = st->uid;
	s->policy = st->policy;
	s->ephemeral = st->ephemeral;
	s->rx_ring_size = st->rx_size;
	s->tx_ring_size = st->tx_size;
	s->owner_pid = st->pid;
	memcpy(s->token_hash, st->token_hash, sizeof(s->token_hash));
	why = adopt_one(b, s, st, dname);
	if (!why && session_table_add(b, s) < 0)
		why = "out of memory";
	if (why) {
		adopt_undo(s);
		return why;
	}
	for (unsigned i = 0; i < st->ntopics; i++)
		if (topic_subscribe(b, s, st->topics[i], false) < 0)
			log_msg(LOG_WARNING, "session %s: topic %u of its subscriptions is unknown;"
				" dropped", s->name, st->topics[i]);
	/* its last owner may still live: its token is good for --session-ttl,
	 * and anyone else needs take-over while it lives
	 * (docs/design/owners.md, tokens) */
	if (st->pid > 0) {
		char proc[32];
		struct stat ps;

		/* a pid reused by another uid's process is not its owner */
		snprintf(proc, sizeof(proc), "/proc/%d", st->pid);
		if (stat(proc, &ps) == 0 && ps.st_uid == s->uid)
			s->adopted_pidfd = sys_pidfd_open(st->pid);
		/* one that exited and is not reaped yet is gone too */
		if (s->adopted_pidfd >= 0 &&
		    poll(&(struct pollfd){ .fd = s->adopted_pidfd, .events = POLLIN }, 1, 0) == 1)
			session_adopted_forget(s);
	}
	s->detached_ns = clock_mono_ns();
	s->detach_reason = "the broker restarted";
	/* every sleeper from before the crash looks again
	 * (docs/design/rings.md, wake-ups) */
	fetch_add_release(&s->rxc->rx_signal, 1);
	fetch_add_release(&s->rxc->tx_space_signal, 1);
	futex_wake(&s->rxc->rx_signal, 0x7fffffff);
	futex_wake(&s->rxc->tx_space_signal, 0x7fffffff);
	/* a lane reader sleeps on its rx_wake, a memfd of the broker that
	 * died: none here yet (lanes are re-adopted after the sessions, with
	 * new pages, which its owner is given at its REATTACH) */
	ctl_lanes_wake_reader(s);
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

/* The broker's own lines: its id, the next session id, the topics with
 * their ids, in file order.  A topic line that contradicts what came
 * before counts as a bad line. */
void adopt_broker(struct broker *b, struct state_load *l)
{
	if (l->have_header)
		b->broker_id = l->broker_id;
	if (l->next_session_id > b->next_session_id)
		b->next_session_id = l->next_session_id;
	for (unsigned i = 0; i < l->nt; i++)
		if (topic_restore(b, l->t[i].id, l->t[i].owner, l->t[i].name) < 0) {
			l->lines--;
			state_bad_line(l, l->t[i].line);
		}
}

/*
 * At start-up: every directory in sessions/ is either a recorded session,
 * re-adopted as detached after its files pass every check, or moved aside
 * into quarantine/ with the reason in the log.
 */
int adopt_all(struct broker *b, const struct state_load *l)
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
