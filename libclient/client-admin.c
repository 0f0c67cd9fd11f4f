/*
 * libclient/client-admin.c - the requests only shmbctl sends (internal.h):
 * the broker's counters, one page of a listing, a kick.  They go over the
 * control connection like any application's request (conn_enter, conn_rpc,
 * conn_leave) and are kept out of client.c, whose calls are the API.
 *
 * Must never: be exported from libshmb.so or libshmb.a (no SHMB_EXPORT);
 * read a listing's page beyond the length the page itself says.
 */
#include <errno.h>
#include <stdio.h>

#include "libclient/client.h"
#include "libclient/internal.h"

int client_status(struct shmb_client *c, struct proto_reply *rep)
{
	struct proto_status q = { .h.type = PROTO_STATUS };
	struct conn_try t = { 0 };
	int r;

	while ((r = conn_enter(c, &t)) == 0) {
		r = conn_rpc_locked(c, &q, sizeof(q), rep, NULL, 0);
		if (!conn_leave(c, &t, &r))
			break;
	}
	return r;
}

static size_t list_entry_size(uint32_t kind)
{
	switch (kind) {
	case PROTO_LIST_SESSIONS:
		return sizeof(struct proto_session_info);
	case PROTO_LIST_TOPICS:
		return sizeof(struct proto_topic_info);
	case PROTO_LIST_EVENTS:
	case PROTO_LIST_LINK_EVENTS:
		return sizeof(struct proto_event_info);
	case PROTO_LIST_LINKS:
		return sizeof(struct proto_link_info);
	case PROTO_LIST_LANES:
		return sizeof(struct proto_lane_info);
	default:
		return 0;
	}
}

int client_list(struct shmb_client *c, struct proto_list *q, struct proto_list_reply *page,
		char *text)
{
	struct conn_try t = { 0 };
	struct proto_reply *rep = (void *)page;
	int r;

	q->h.type = PROTO_LIST;
	while ((r = conn_enter(c, &t)) == 0) {
		r = conn_rpc_buf(c, c->fd, q, sizeof(*q), page, PROTO_MAX_MSG, NULL, 0, 0);
		if (r == 0 && page->h.type == PROTO_REPLY) {
			r = rep->err < 0 ? rep->err : -EPROTO;
			if (text)
				snprintf(text, sizeof(rep->u.text), "%.*s", (int)sizeof(rep->u.text),
					 rep->u.text);
		}
		if (!conn_leave(c, &t, &r))
			break;
	}
	if (r < 0)
		return r;
	/* a page says what it holds; nothing beyond its length is read */
	if (page->kind != q->kind || page->entry_size != list_entry_size(q->kind) ||
	    page->h.len != sizeof(*page) + (size_t)page->count * page->entry_size)
		return -EPROTO;
	return 0;
}

int client_kick(struct shmb_client *c, struct proto_kick *q, char *text)
{
	struct proto_reply rep = { .err = 0 };
	struct conn_try t = { 0 };
	int r;

	q->h.type = PROTO_KICK;
	while ((r = conn_enter(c, &t)) == 0) {
		r = conn_rpc_locked(c, q, sizeof(*q), &rep, NULL, 0);
		if (r < 0 && text && rep.h.type == PROTO_REPLY && rep.err == r)
			snprintf(text, sizeof(rep.u.text), "%.*s", (int)sizeof(rep.u.text), rep.u.text);
		if (!conn_leave(c, &t, &r))
			break;
	}
	return r;
}
