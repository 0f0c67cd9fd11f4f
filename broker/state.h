/*
 * broker/state.h - the state file SHMB_DIR/state (state.c): its writing,
 * and its reading into a struct state_load that adopt.c applies.
 */
#ifndef BROKER_STATE_H
#define BROKER_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "broker/session.h"

struct broker;
struct topic;

struct state_session {
	uint64_t id;
	uid_t uid;
	uint32_t policy;
	bool ephemeral;
	uint64_t rx_size, tx_size;
	int pid;
	uint8_t token_hash[SESSION_TOKEN_HASH_LEN];
	char name[PROTO_NAME_MAX + 1];
	uint32_t *topics;
	unsigned ntopics;
};

/* A topic line: the topic with its id, and where it stood. */
struct state_topic {
	uint32_t id;
	uid_t owner;
	unsigned line;
	char name[PROTO_TOPIC_MAX + 1];
};

/* What the state file says, as read; nothing is applied (adopt.c does). */
struct state_load {
	bool exists, have_header, torn;
	unsigned lines, bad;
	uint64_t broker_id;       /* the header's, when have_header */
	uint64_t next_session_id; /* past every id a line names (0: none named) */
	struct state_topic *t;    /* in file order */
	unsigned nt, capt;
	struct state_session *s;
	unsigned n, cap;
};

/* Read SHMB_DIR/state (dirfd) into l: 0 (a missing file too), or -errno. */
int state_read(int dirfd, struct state_load *l);
/* Parse the file's text; bad lines are counted and skipped. */
void state_parse(struct state_load *l, char *buf, size_t len);
/* Count line lineno as corrupt, saying so (the first ten times). */
void state_bad_line(struct state_load *l, unsigned lineno);
void state_load_free(struct state_load *l);
void state_keep_copy(struct broker *b, const char *why);
int state_compact(struct broker *b);
int state_session(struct broker *b, const struct session *s);
int state_gone(struct broker *b, uint64_t id);
int state_sub(struct broker *b, uint64_t id, uint32_t topic, int how);
int state_topic(struct broker *b, const struct topic *t);

#endif
