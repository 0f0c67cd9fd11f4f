/*
 * shm/proto.h - the control protocol between libshmb (and shmbctl) and
 * shmbd, over AF_UNIX SOCK_SEQPACKET at $SHMB_DIR/control.
 *
 * Plain structs, host byte order (the peers share a host), no policy.
 * Every message starts with struct proto_hdr; `len` is the whole message
 * and must equal the size of the struct its type names (names are carried
 * in fixed-size, length-prefixed fields).  Every request carries a request
 * id that its reply echoes; broker-pushed events have request id 0.  The
 * first message on a connection must be HELLO with PROTO_VERSION.
 * docs/protocol.md describes the exchanges.
 */
#ifndef SHM_PROTO_H
#define SHM_PROTO_H

#include <assert.h>
#include <stdint.h>

#define PROTO_VERSION 1u
#define PROTO_MAX_MSG 65536u
#define PROTO_NAME_MAX 128u  /* session names, NUL not included */
#define PROTO_TOPIC_MAX 200u /* topic names, NUL not included */
#define PROTO_TOKEN_LEN 16u

enum proto_type {
	PROTO_HELLO = 1,
	PROTO_SESSION_OPEN = 2,
	PROTO_SESSION_CLOSE = 3,
	PROTO_TOPIC = 4,       /* intern a topic name, get its id */
	PROTO_SUBSCRIBE = 5,
	PROTO_UNSUBSCRIBE = 6,
	PROTO_STATUS = 20,     /* admin: broker-wide counters */
	PROTO_REPLY = 100,
	PROTO_EVENT = 101,
};

struct proto_hdr {
	uint32_t type;
	uint32_t len;
	uint64_t req_id;
};

struct proto_hello {
	struct proto_hdr h;
	uint32_t version;
	uint32_t flags;
};

/* flags of proto_open */
#define PROTO_OPEN_TAKEOVER 0x1u  /* a live owner is fenced off (-ESTALE for it) */
#define PROTO_OPEN_EPHEMERAL 0x2u /* destroyed when its owner goes away */
#define PROTO_OPEN_TOKEN 0x4u     /* `token` is this owner's attach token */
#define PROTO_OPEN_FRESH 0x8u     /* destroy an existing session of that name first */
#define PROTO_OPEN_REATTACH 0x10u /* with TOKEN: the same owner back over a new connection,
				     nothing else: never creates, never a new generation */

struct proto_open {
	struct proto_hdr h;
	uint32_t flags;
	uint32_t policy;       /* enum shm_policy */
	uint64_t rx_ring_size; /* 0: the broker's default */
	uint64_t tx_ring_size;
	uint8_t token[PROTO_TOKEN_LEN];
	uint32_t name_len;
	uint32_t pad;
	char name[PROTO_NAME_MAX];
};

/* flags of proto_close */
#define PROTO_CLOSE_DESTROY 0x1u

struct proto_close {
	struct proto_hdr h;
	uint64_t session_id;
	uint32_t flags;
	uint32_t pad;
};

struct proto_topic {
	struct proto_hdr h;
	uint32_t name_len;
	uint32_t pad;
	char name[PROTO_TOPIC_MAX];
};

/* flags of proto_sub */
#define PROTO_SUB_RESET 0x1u /* drop every other subscription of the session first */

struct proto_sub {
	struct proto_hdr h;
	uint64_t session_id;
	uint32_t topic_id;
	uint32_t flags;
};

struct proto_status {
	struct proto_hdr h;
};

/* Every reply has this one shape; `err` says which member is meaningful. */
struct proto_reply {
	struct proto_hdr h; /* PROTO_REPLY, the request's id */
	int32_t err;        /* 0 or a negative errno */
	uint32_t pad;
	union {
		struct {
			uint32_t version;
			uint32_t pad;
			uint64_t broker_id;
			uint64_t broker_pid;
		} hello;
		struct {                  /* comes with three fds: rx (read-only), tx,
					     and the poll pipe's read end */
			uint64_t session_id;
			uint32_t generation;
			uint32_t policy;
			uint64_t rx_ring_size;
			uint64_t tx_ring_size;
			uint64_t broker_id;
			uint8_t token[PROTO_TOKEN_LEN];
			uint32_t created;  /* 1: new session; 0: an existing one resumed */
			uint32_t pad;
			uint64_t rx_pos;   /* where the owner starts reading RX */
			uint64_t rx_seq;   /* the RX sequence there (UINT64_MAX: unknown) */
		} open;
		struct {
			uint32_t topic_id;
			uint32_t pad;
		} topic;
		struct {
			uint64_t pid;
			uint64_t uptime_ns;
			uint64_t sessions;
			uint64_t attached;
			uint64_t routed;
			uint64_t topics;
			uint64_t quarantined;  /* sessions quarantined now */
			uint64_t adopted;      /* re-adopted at start-up */
			uint64_t quarantined_at_start; /* moved aside at start-up */
			char exit_method[48];  /* crash detection in use, NUL-terminated */
		} status;
		char text[160];           /* with err < 0: what was wrong */
	} u;
};

enum proto_event_kind {
	PROTO_EV_STALE = 1, /* the session was taken over: this owner is fenced */
};

struct proto_event {
	struct proto_hdr h; /* PROTO_EVENT, request id 0 */
	uint32_t kind;
	uint32_t pad;
	uint64_t session_id;
};

static_assert(sizeof(struct proto_hdr) == 16, "proto header");
static_assert(sizeof(struct proto_open) == 192, "open");
static_assert(sizeof(struct proto_reply) == 184, "reply");
static_assert(sizeof(struct proto_reply) <= PROTO_MAX_MSG, "reply fits");

#endif
