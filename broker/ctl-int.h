/*
 * broker/ctl-int.h - what ctl.c and ctl-admin.c share, and nothing else
 * includes: replies, and the admin verbs ctl.c dispatches to.
 */
#ifndef BROKER_CTL_INT_H
#define BROKER_CTL_INT_H

#include <stddef.h>
#include <stdint.h>

#include "shm/proto.h"

struct broker;
struct conn;

#define CTL_MAX_FDS 6

/* Send a message of len bytes (with up to CTL_MAX_FDS fds) on c: 0, or
 * <0 when c must be closed. */
int ctl_send_msg(struct conn *c, const void *msg, size_t len, const int *fds, int nfds);
/* Send r (with up to nfds fds) on c: 0, or <0 when c must be closed. */
int ctl_send_reply(struct conn *c, const struct proto_reply *r, const int *fds, int nfds);
/* A reply to req_id with err (0 or -errno), nothing else set. */
void ctl_reply_init(struct proto_reply *r, uint64_t req_id, int err);
/* An error (or "ok") reply with a text. */
int ctl_reply_err(struct conn *c, uint64_t req_id, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* PROTO_LIST and PROTO_KICK (ctl-admin.c). */
int ctl_admin_list(struct broker *b, struct conn *c, const struct proto_list *q);
int ctl_admin_kick(struct broker *b, struct conn *c, const struct proto_kick *q);

#endif
