/*
 * broker/topic.c - topics: interning names to ids, ownership by the uid
 * that used a name first, rates, and which sessions subscribe to each.
 *
 * Must never: reuse a topic id, or hand one out before the state file
 * records it; let a uid use a topic that another uid owns (root aside);
 * change a subscription in memory that the state file does not say.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "broker/link.h"
#include "broker/session.h"
#include "broker/state.h"
#include "broker/topic.h"

void topic_drop_sub(struct topic *t, struct session *s)
{
	for (unsigned i = 0; i < t->nsubs; i++)
		if (t->subs[i] == s) {
			t->subs[i] = t->subs[--t->nsubs];
			return;
		}
}

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
	/* one uid cannot use up the topic space of all
	 * (docs/design/owners.md, access) */
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

int topic_unsubscribe(struct broker *b, struct session *s, uint32_t topic_id)
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

int topic_subscribe(struct broker *b, struct session *s, uint32_t topic_id, bool reset)
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
