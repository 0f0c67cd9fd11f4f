/*
 * broker/ctl-admin.c - the admin verbs of the control socket (docs/
 * operations.md): LIST of sessions, topics, links and their recent events
 * (shmbctl sessions, session NAME, topics, links), and KICK.
 *
 * Must never: show or touch another uid's session unless the caller is
 * root (for anyone else it does not exist: -ENOENT, or -EPERM for naming
 * another uid); send a reply page over 64 KiB.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/ctl.h"
#include "broker/ctl-int.h"
#include "broker/guard.h"
#include "broker/lanefile.h"
#include "broker/lanes-spill.h"
#include "broker/lanes.h"
#include "broker/link.h"
#include "broker/log.h"
#include "broker/router.h"
#include "broker/session.h"
#include "broker/sys.h"
#include "broker/topic.h"
#include "shm/atomics.h"
#include "shm/clock.h"

/*
 * Whose sessions an admin request may see: root every uid's, unless it
 * names one; anyone else only its own, and naming another uid is -EPERM.
 * *all: every uid; else *uid.
 */
static int adm_scope(const struct conn *c, uint32_t flags, uint32_t req_uid, bool *all, uid_t *uid)
{
	*all = false;
	*uid = c->uid;
	if (flags & PROTO_ADM_UID) {
		if (c->uid != 0 && req_uid != c->uid)
			return -EPERM;
		*uid = req_uid;
	} else if (c->uid == 0) {
		*all = true;
	}
	return 0;
}

static bool adm_name(uint32_t flags, uint32_t len, const char *in, char *out)
{
	if (!(flags & PROTO_ADM_NAME))
		return true;
	if (len == 0 || len > PROTO_NAME_MAX)
		return false;
	memcpy(out, in, len);
	out[len] = 0;
	return strlen(out) == len;
}

static bool adm_match(const struct session *s, bool all, uid_t uid, const char *name)
{
	return (all || s->uid == uid) && (!name[0] || !strcmp(s->name, name));
}

/* The one session an admin request names, or NULL after an error reply
 * (none: -ENOENT; one per uid of several, for root: -ENOTUNIQ). */
static struct session *adm_find(struct broker *b, struct conn *c, uint64_t req_id, bool all,
				uid_t uid, const char *name)
{
	struct session *s = NULL;
	unsigned found = 0;

	for (unsigned i = 0; i < b->nsessions; i++)
		if (adm_match(b->sessions[i], all, uid, name)) {
			s = b->sessions[i];
			found++;
		}
	if (!s)
		ctl_reply_err(c, req_id, -ENOENT, "no session '%s'%s", name, all ? "" : " of this uid");
	else if (found > 1)
		ctl_reply_err(c, req_id, -ENOTUNIQ,
			  "sessions named '%s' exist for several uids: name one with --uid", name);
	return found == 1 ? s : NULL;
}

static int by_id(const void *a, const void *b)
{
	uint64_t x = (*(struct session *const *)a)->id, y = (*(struct session *const *)b)->id;

	return x < y ? -1 : x > y;
}

static void session_info(struct broker *b, struct session *s, struct proto_session_info *i)
{
	const struct shm_seg_hdr *h = (const void *)s->rx.base;
	uint64_t now = clock_mono_ns(), pos, seq;
	struct timespec rt;

	memset(i, 0, sizeof(*i));
	i->id = s->id;
	i->uid = (uint32_t)s->uid;
	i->pid = session_owner_pid(s) ? session_owner_pid(s) : (int32_t)s->owner_pid;
	i->generation = s->generation;
	i->state = s->quarantined ? PROTO_SESSION_QUARANTINED
		 : s->owner ? PROTO_SESSION_ATTACHED : PROTO_SESSION_DETACHED;
	i->policy = s->policy;
	i->flags = (s->ephemeral ? PROTO_SI_EPHEMERAL : 0) | (s->full_since ? PROTO_SI_FULL : 0) |
		   (s->drain_gen ? PROTO_SI_DRAINING : 0);
	i->rx_ring_size = s->rx_prod.r.size;
	if (!s->quarantined) {
		/* what its owners acknowledged (checked), up to what was written */
		session_rx_start(s, &pos, &seq);
		i->rx_depth_bytes = s->rx_prod.pos - pos;
		i->rx_depth_msgs = seq == RING_SEQ_ANY ? 0 : s->rx_prod.seq - seq;
	}
	i->tx_seq = s->tx_cons.seq;
	i->published = s->routed_in;
	i->delivered = s->delivered_out;
	if (b->lanes && !s->quarantined) {
		/* on lanes the broker sees no message: what the lanes hold */
		struct lanes_session_stats ls;
		const struct lreader *r = s->lane_reader && s->lane_reader->generation == s->generation
						  ? s->lane_reader : NULL;

		lanes_session_stats(b->lanes, s->id, s->generation, r, &ls);
		if (ls.next_seq > i->tx_seq)
			i->tx_seq = ls.next_seq;
		i->published += ls.published;
		i->rx_depth_msgs += ls.depth_msgs;
		i->rx_depth_bytes += ls.depth_bytes;
	}
	{
		uint64_t since;

		if (lanes_spill_figures(s, &i->spill_copied, &i->spill_let_go, &since)) {
			i->flags |= PROTO_SI_SPILLED;
			i->spill_ms = now > since ? (now - since) / 1000000 : 0;
		}
	}
	i->dropped = s->dropped_oldest;
	i->full_ms = s->full_since && now > s->full_since ? (now - s->full_since) / 1000000 : 0;
	clock_gettime(CLOCK_REALTIME, &rt);
	if (h) {
		uint64_t created = load_relaxed(&h->created_ns);
		uint64_t rnow = (uint64_t)rt.tv_sec * 1000000000ull + (uint64_t)rt.tv_nsec;

		i->age_ms = rnow > created ? (rnow - created) / 1000000 : 0;
	}
	i->detached_ms = !s->owner && s->detached_ns ? (now - s->detached_ns) / 1000000 : 0;
	i->ntopics = s->ntopics;
	snprintf(i->name, sizeof(i->name), "%s", s->name);
	snprintf(i->detach_reason, sizeof(i->detach_reason), "%s", s->detach_reason ? s->detach_reason : "");
	snprintf(i->exit_reason, sizeof(i->exit_reason), "%s", s->exit_reason);
	(void)b;
}

static int send_page(struct conn *c, struct proto_list_reply *p, uint32_t entry_size)
{
	p->h.type = PROTO_LIST_REPLY;
	p->entry_size = entry_size;
	p->h.len = (uint32_t)(sizeof(*p) + (size_t)p->count * entry_size);
	if (send(c->fd, p, p->h.len, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)p->h.len)
		return -errno;
	return 0;
}

static int list_sessions(struct broker *b, struct conn *c, const struct proto_list *q,
			 struct proto_list_reply *p, bool all, uid_t uid, const char *name)
{
	const unsigned room = (PROTO_MAX_MSG - sizeof(*p)) / sizeof(struct proto_session_info);
	struct proto_session_info *out = (void *)(p + 1);
	struct session **m = malloc((b->nsessions + 1) * sizeof(*m));
	unsigned n = 0;

	if (!m)
		return ctl_reply_err(c, q->h.req_id, -ENOMEM, "out of memory");
	for (unsigned i = 0; i < b->nsessions; i++)
		if (b->sessions[i]->id >= q->cursor && adm_match(b->sessions[i], all, uid, name))
			m[n++] = b->sessions[i];
	if (!n && name[0] && !q->cursor) {
		free(m);
		return ctl_reply_err(c, q->h.req_id, -ENOENT, "no session '%s'%s", name,
				 all ? "" : " of this uid");
	}
	qsort(m, n, sizeof(*m), by_id);
	for (p->count = 0; p->count < n && p->count < room; p->count++)
		session_info(b, m[p->count], &out[p->count]);
	/* a TX file its client truncated faults on the read of its rx_acked:
	 * quarantined now, and listed so */
	guard_check(b);
	for (unsigned k = 0; k < p->count; k++)
		if (m[k]->quarantined)
			out[k].state = PROTO_SESSION_QUARANTINED;
	p->next = n > room ? m[room]->id : 0;
	free(m);
	return send_page(c, p, sizeof(*out));
}

static int list_topics(struct broker *b, struct conn *c, const struct proto_list *q,
		       struct proto_list_reply *p)
{
	const unsigned room = (PROTO_MAX_MSG - sizeof(*p)) / sizeof(struct proto_topic_info);
	struct proto_topic_info *out = (void *)(p + 1);

	topic_rates(b, clock_mono_ns());
	p->next = 0;
	/* topics are kept by id - 1, so id order is array order */
	for (uint64_t k = q->cursor ? q->cursor - 1 : 0; k < b->ntopics; k++) {
		struct topic *t = b->topics[k];

		if (!t || (c->uid != 0 && t->owner != c->uid))
			continue;
		if (p->count == room) {
			p->next = t->id;
			break;
		}
		out[p->count] = (struct proto_topic_info){
			.id = t->id,
			.owner_uid = (uint32_t)t->owner,
			.subscribers = t->nsubs,
			.routed = t->routed,
			.rate = t->rate,
		};
		snprintf(out[p->count].name, sizeof(out[p->count].name), "%s", t->name);
		p->count++;
	}
	return send_page(c, p, sizeof(*out));
}

static int lane_cmp(const void *a, const void *b)
{
	uint32_t x = (*(const struct blane *const *)a)->number;
	uint32_t y = (*(const struct blane *const *)b)->number;

	return x < y ? -1 : x > y;
}

/* The lanes (unless shmbd --no-lanes): root sees all, another uid its own writers'. */
static int list_lanes(struct broker *b, struct conn *c, const struct proto_list *q,
		      struct proto_list_reply *p)
{
	const unsigned room = (PROTO_MAX_MSG - sizeof(*p)) / sizeof(struct proto_lane_info);
	struct proto_lane_info *out = (void *)(p + 1);
	uint64_t now = clock_mono_ns();
	struct blane **v = NULL;
	unsigned n = 0, cap = 0;

	p->next = 0;
	for (struct blane *l = b->lanes ? b->lanes->lanes : NULL; l; l = l->next) {
		if ((c->uid != 0 && l->uid != c->uid) || l->number < q->cursor)
			continue;
		if (n == cap) {
			struct blane **nv = realloc(v, (cap = cap ? 2 * cap : 64) * sizeof(*nv));

			if (!nv) {
				free(v);
				return ctl_reply_err(c, q->h.req_id, -ENOMEM, "out of memory");
			}
			v = nv;
		}
		v[n++] = l;
	}
	if (n)
		qsort(v, n, sizeof(*v), lane_cmp);
	for (unsigned k = 0; k < n; k++) {
		struct blane *l = v[k];
		struct session *s = session_by_id(b, l->publisher);
		struct lane_stats st;

		if (p->count == room) {
			p->next = l->number;
			break;
		}
		lanes_lane_stats(l, now, &st);
		out[p->count] = (struct proto_lane_info){
			.number = l->number,
			.generation = l->generation,
			.publisher = l->publisher,
			.uid = (uint32_t)l->uid,
			.state = lanefile_state(&l->f)->state == SHM_LANE_BAD ? PROTO_LANE_BAD_STATE
				 : l->cut ? PROTO_LANE_CUT : PROTO_LANE_OPEN,
			.ring_size = l->ring.size,
			.end = st.end,
			.holders = st.holders,
			.watchers = st.watchers,
			.lag = st.lag,
			.short_ms = st.short_ms,
		};
		snprintf(out[p->count].name, sizeof(out[p->count].name), "%s", s ? s->name : "-");
		p->count++;
	}
	free(v);
	return send_page(c, p, sizeof(*out));
}

/* An event ring of size slots holding the last of nev events, oldest first. */
static int send_events(struct conn *c, struct proto_list_reply *p, const struct log_event *ev,
		       unsigned size, uint64_t nev)
{
	struct proto_event_info *out = (void *)(p + 1);

	for (uint64_t k = nev > size ? nev - size : 0; k < nev; k++) {
		const struct log_event *e = &ev[k % size];

		out[p->count].time_ns = e->time_ns;
		snprintf(out[p->count].text, sizeof(out[p->count].text), "%s", e->text);
		p->count++;
	}
	p->next = 0;
	return send_page(c, p, sizeof(*out));
}

static int list_events(struct broker *b, struct conn *c, const struct proto_list *q,
		       struct proto_list_reply *p, bool all, uid_t uid, const char *name)
{
	struct session *s;

	if (!name[0])
		return ctl_reply_err(c, q->h.req_id, -EINVAL, "events are listed for one named session");
	s = adm_find(b, c, q->h.req_id, all, uid, name);
	if (!s)
		return 0;
	return send_events(c, p, s->ev, SESSION_EVENTS, s->nev);
}

/* Every link (or the one named), in slot order: at most BROKER_MAX_LINKS,
 * so one page (proto.h checks that they fit). */
static int list_links(struct broker *b, struct conn *c, const struct proto_list *q,
		      struct proto_list_reply *p, const char *name)
{
	struct proto_link_info *out = (void *)(p + 1);
	uint64_t now = clock_mono_ns();

	static_assert(BROKER_MAX_LINKS <= 64, "a page holds 64 links");
	p->flags = b->link_listen_fd >= 0 ? PROTO_LR_LISTENING : 0;
	for (uint64_t k = q->cursor ? q->cursor - 1 : 0; k < BROKER_MAX_LINKS; k++) {
		struct link *l = b->links[k];

		/* one still proving who it is is not listed: a stranger's HELLO made it */
		if (!l || l->provisional || (name[0] && strcmp(l->name, name)))
			continue;
		link_info(b, l, &out[p->count++], now);
	}
	if (!p->count && name[0])
		return ctl_reply_err(c, q->h.req_id, -ENOENT, "no link '%s'", name);
	p->next = 0;
	return send_page(c, p, sizeof(*out));
}

static int list_link_events(struct broker *b, struct conn *c, const struct proto_list *q,
			    struct proto_list_reply *p, const char *name)
{
	struct link *l;

	if (!name[0])
		return ctl_reply_err(c, q->h.req_id, -EINVAL, "events are listed for one named link");
	l = link_named(b, name);
	if (!l)
		return ctl_reply_err(c, q->h.req_id, -ENOENT, "no link '%s'", name);
	return send_events(c, p, l->ev, LINK_EVENTS, l->nev);
}

int ctl_admin_list(struct broker *b, struct conn *c, const struct proto_list *q)
{
	static uint64_t page[PROTO_MAX_MSG / sizeof(uint64_t)];
	struct proto_list_reply *p = (void *)page;
	char name[PROTO_NAME_MAX + 1] = "";
	bool all, links;
	uid_t uid;
	int r;

	if (q->flags & ~(PROTO_ADM_UID | PROTO_ADM_NAME))
		return ctl_reply_err(c, q->h.req_id, -EINVAL, "unknown list flags %#x", q->flags);
	links = q->kind == PROTO_LIST_LINKS || q->kind == PROTO_LIST_LINK_EVENTS;
	if (!adm_name(q->flags, q->name_len, q->name, name))
		return ctl_reply_err(c, q->h.req_id, -EINVAL, "bad %s name", links ? "link" : "session");
	memset(p, 0, sizeof(*p));
	p->h.req_id = q->h.req_id;
	p->kind = q->kind;
	/* links are the broker's, not a uid's, and hold no secret (their
	 * key is not listed): any uid may see them all; UID does not apply */
	if (q->kind == PROTO_LIST_LINKS)
		return list_links(b, c, q, p, name);
	if (q->kind == PROTO_LIST_LINK_EVENTS)
		return list_link_events(b, c, q, p, name);
	r = adm_scope(c, q->flags, q->uid, &all, &uid);
	if (r < 0)
		return ctl_reply_err(c, q->h.req_id, r, "uid %u may list only its own sessions",
				 (unsigned)c->uid);
	switch (q->kind) {
	case PROTO_LIST_SESSIONS:
		return list_sessions(b, c, q, p, all, uid, name);
	case PROTO_LIST_TOPICS:
		return list_topics(b, c, q, p);
	case PROTO_LIST_EVENTS:
		return list_events(b, c, q, p, all, uid, name);
	case PROTO_LIST_LANES:
		return list_lanes(b, c, q, p);
	default:
		return ctl_reply_err(c, q->h.req_id, -EINVAL, "unknown list kind %u", q->kind);
	}
}

int ctl_admin_kick(struct broker *b, struct conn *c, const struct proto_kick *q)
{
	char name[PROTO_NAME_MAX + 1] = "";
	struct session *s;
	bool all;
	uid_t uid;
	int r;

	if (q->flags & ~(PROTO_ADM_UID | PROTO_KICK_DELETE))
		return ctl_reply_err(c, q->h.req_id, -EINVAL, "unknown kick flags %#x", q->flags);
	if (!adm_name(PROTO_ADM_NAME, q->name_len, q->name, name))
		return ctl_reply_err(c, q->h.req_id, -EINVAL, "bad session name");
	r = adm_scope(c, q->flags, q->uid, &all, &uid);
	if (r < 0)
		return ctl_reply_err(c, q->h.req_id, r, "uid %u may kick only its own sessions",
				 (unsigned)c->uid);
	s = adm_find(b, c, q->h.req_id, all, uid, name);
	if (!s)
		return 0;
	r = session_kick(b, s, q->flags & PROTO_KICK_DELETE, c->uid);
	switch (r) {
	case 0:
		return ctl_reply_err(c, q->h.req_id, 0, "ok");
	case -EALREADY:
		return ctl_reply_err(c, q->h.req_id, r, "session '%s' has no owner to kick"
				 " (--delete destroys it)", name);
	case -EBADMSG:
		return ctl_reply_err(c, q->h.req_id, r, "session '%s' is quarantined: only --delete"
				 " applies", name);
	case -EAGAIN:
		return ctl_reply_err(c, q->h.req_id, r, "session '%s' is still delivering a previous"
				 " owner's messages: try again", name);
	default:
		return ctl_reply_err(c, q->h.req_id, r, "cannot kick session '%s': %s", name, strerror(-r));
	}
}
