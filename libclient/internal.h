/*
 * libclient/internal.h - what shmbctl and shmbd use of libclient beyond
 * the public API.  Hidden from libshmb.so; linked from the internal
 * archive only (docs/design/build.md, libraries).
 */
#ifndef LIBCLIENT_INTERNAL_H
#define LIBCLIENT_INTERNAL_H

#include "shm/proto.h"
#include "shmb.h"

/* ---- client-admin.c ---- */

/* Admin: the broker's counters (PROTO_STATUS).  0 or -errno. */
int client_status(struct shmb_client *c, struct proto_reply *rep);

/*
 * Admin: one page of a listing (PROTO_LIST) into page, which holds
 * PROTO_MAX_MSG bytes: 0 (page->count entries of the kind's size follow
 * it; page->next is the next cursor) or -errno, with the broker's words
 * in text (when given, 160 bytes) on a refusal.
 */
int client_list(struct shmb_client *c, struct proto_list *q, struct proto_list_reply *page,
		char *text);

/* Admin: PROTO_KICK.  0 or -errno, the broker's words in text. */
int client_kick(struct shmb_client *c, struct proto_kick *q, char *text);

/* ---- client.c ---- */

/* Tests: the session's own TX file (mapping and fd), to scribble over it. */
void *client_session_tx_base(struct shmb_session *s, size_t *len, int *fd);

/* ---- client-lanes.c ---- */

/* Tests: the data file of the session's first lane (its page 0, then the
 * ring), to forge a record in it; NULL when it writes no lane. */
void *client_session_lane_data(struct shmb_session *s, size_t *len);
/* A lane reader's arm page and its word's slot there, or NULL (tests
 * play a writer that skips its wake by clearing the arm bit). */
struct shm_arm_page *client_session_lane_arm(struct shmb_session *s, uint32_t *slot);

#endif
