/*
 * tests/lane-client.h - a raw client of shmbd's lane messages (shmbd
 * --lanes; docs/protocol.md, "Pushed by the broker for lanes"), for the
 * tests and benchmarks that run the direct data path before libshmb
 * speaks it: requests and replies with descriptors, pushes queued, a
 * writer's lanes through libclient/lanew.c, a reader from its LANE push.
 */
#ifndef TESTS_LANE_CLIENT_H
#define TESTS_LANE_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "libclient/lanew.h"
#include "shm/lane-rw.h"
#include "shm/proto.h"

#define TOPIC_NAME "lane.t"
#define MAXP 64

struct rpush {
	union {
		struct proto_hdr h;
		struct proto_lane lane;
		struct proto_holder holder;
		uint8_t raw[256];
	} m;
	int fds[8];
	unsigned nfds;
};

struct rc {
	int fd;
	uint64_t req;
	uint64_t session;
	uint32_t generation, topic;
	uint8_t token[PROTO_TOKEN_LEN]; /* its session's, for rc_reattach() */
	int data_fd;           /* a copy of its lane's data descriptor (hostile tests), or -1 */
	struct lanew *w;       /* its writer side, for rc_drain() */
	struct rpush q[MAXP];
	unsigned nq;
	struct rpush self;     /* a lane-less PROTO_LANE_SELF push, until a lane takes it */
	bool has_self;
};

/* A reader from its PROTO_LANE push. */
struct rside {
	uint8_t *data, *meta;
	struct shm_cursor_page *page;
	uint32_t *tx_wake;
	uint32_t *rx_wake;     /* its own sleep word and arm page (PROTO_LANE_SELF), or NULL */
	struct shm_arm_page *arm;
	uint32_t arm_slot;
	struct lane_reader r;
};

/* Connect to dir/control (a 5 s receive timeout): the fd or -1. */
int rc_connect(const char *dir);
/* One message with its descriptors; 0, or -1 (closed, timeout, garbage). */
int rc_recv(struct rc *c, void *buf, size_t cap, int *fds, unsigned *nfds);
/* Send a request and wait for its reply, queueing pushes that come first. */
int rc_call(struct rc *c, void *msg, size_t len, struct proto_reply *rep, int *fds,
	    unsigned *nfds);
/* The next push of type (waiting up to 5 s); false if none came. */
bool rc_push(struct rc *c, uint32_t type, struct rpush *out);
/* Connect, HELLO, open session `name` (policy), intern TOPIC_NAME. */
int rc_open(struct rc *c, const char *dir, const char *name, uint32_t policy);
/* The same with PROTO_OPEN_* flags; seg, when not NULL, keeps the
 * session's rx (read-only) and tx descriptors from the reply. */
int rc_open_ex(struct rc *c, const char *dir, const char *name, uint32_t policy, uint32_t flags,
	       int seg[2]);
/* The owner back over a new connection, as libshmb does after losing
 * its own: connect, HELLO with PROTO_HELLO_LANES, reopen `name` with
 * PROTO_OPEN_REATTACH and its token.  The old socket is closed (unless
 * c->fd is -1 already), pushes queued from it kept.  0, -1, or the reply's error; the same session
 * and generation, or -ESTALE. */
int rc_reattach(struct rc *c, const char *dir, const char *name);
int rc_subscribe(struct rc *c);
/* PROTO_LANE_TOPIC; the lane (and, the first time, its descriptors) into w. */
int rc_lane_topic(struct rc *c, struct lanew *w);
/* Every HOLDER push queued or coming within 5 s (at least `want`). */
void rc_holders(struct rc *c, struct lanew *w, unsigned want);
/* Read what the broker pushed, without waiting: HOLDER pushes go to
 * c->w (a lanew's drain callback, ctx = the rc, before it sleeps for
 * space), anything else is dropped. */
void rc_drain(void *ctx);
/* A reader from its PROTO_LANE push (descriptors consumed). */
int rside_open(struct rside *s, const struct rpush *p);
/* Read from s until the lane ends, *next passes stop (when not 0), or
 * nothing comes for 10 s, checking order and payload (8 bytes: the
 * order) and acknowledging each record.  0, or -1 on a wrong record or
 * a bad lane; *end: the lane ended. */
int read_lane(struct rside *s, uint64_t *next, uint64_t stop, bool *end);

#endif
