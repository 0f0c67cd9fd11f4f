/*
 * broker/topic.h - topics (topic.c): names interned to ids, owned by the
 * uid that used them first, with their subscribers.
 */
#ifndef BROKER_TOPIC_H
#define BROKER_TOPIC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "shm/proto.h"

struct broker;
struct session;

/* Topic ids are at most TOPIC_ID_MAX and never reused
 * (docs/design/owners.md, ids). */
#define TOPIC_ID_MAX (1u << 20)

struct topic {
	uint32_t id;
	uid_t owner;
	char name[PROTO_TOPIC_MAX + 1];
	struct session **subs;
	unsigned nsubs;
	uint64_t routed;
	uint64_t rate;         /* messages/s over the last window */
	uint64_t rate_mark;    /* routed at the window's start */
	uint64_t rate_ns;      /* the window's start */
	uint64_t links;        /* bit i: forwarded over link slot i */
};

struct uid_count {
	uid_t uid;
	unsigned topics;
};

struct topic *topic_by_id(struct broker *b, uint32_t id);
struct topic *topic_find(struct broker *b, const char *name);
int topic_intern(struct broker *b, uid_t uid, const char *name, uint32_t *id);
int topic_restore(struct broker *b, uint32_t id, uid_t owner, const char *name);
/* s subscribes to topic_id (reset: instead of all it had); 0 or -errno,
 * recorded in the state file before memory follows. */
int topic_subscribe(struct broker *b, struct session *s, uint32_t topic_id, bool reset);
int topic_unsubscribe(struct broker *b, struct session *s, uint32_t topic_id);
/* s is gone from t's subscribers (memory only). */
void topic_drop_sub(struct topic *t, struct session *s);
/* Refresh each topic's rate when its window is a second old. */
void topic_rates(struct broker *b, uint64_t now);

#endif
