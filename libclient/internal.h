/*
 * libclient/internal.h - what shmbctl and shmbd use of libclient beyond
 * the public API.  Hidden from libshmb.so; linked from the internal
 * archive only (decisions.md 23).
 */
#ifndef LIBCLIENT_INTERNAL_H
#define LIBCLIENT_INTERNAL_H

#include "shm/proto.h"
#include "shmb.h"

/* Admin: the broker's counters (PROTO_STATUS).  0 or -errno. */
int client_status(struct shmb_client *c, struct proto_reply *rep);

/* Tests: the session's own TX file (mapping and fd), to scribble over it. */
void *client_session_tx_base(struct shmb_session *s, size_t *len, int *fd);

#endif
