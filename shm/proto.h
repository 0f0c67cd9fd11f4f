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
#define PROTO_LINK_NAME_MAX 64u /* remote link names (as WIRE_NAME_MAX), NUL not included */

enum proto_type {
	PROTO_HELLO = 1,
	PROTO_SESSION_OPEN = 2,
	PROTO_SESSION_CLOSE = 3,
	PROTO_TOPIC = 4,       /* intern a topic name, get its id */
	PROTO_SUBSCRIBE = 5,
	PROTO_UNSUBSCRIBE = 6,
	PROTO_LANE_TOPIC = 7,  /* lanes: a publisher's first use of a topic */
	PROTO_LANE_BAD = 8,    /* lanes: a reader found a bad record in a lane it reads */
	PROTO_STATUS = 20,     /* admin: broker-wide counters */
	PROTO_LIST = 21,       /* admin: a page of sessions, topics, links or events */
	PROTO_KICK = 22,       /* admin: detach a session's owner, or destroy it */
	PROTO_REPLY = 100,
	PROTO_EVENT = 101,
	PROTO_LIST_REPLY = 102,
	PROTO_LANE = 103,      /* lanes: pushed to a reader, a lane to read (not yet sent) */
	PROTO_HOLDER = 104,    /* lanes: pushed to a writer, a holder's pages */
	PROTO_READER_TOPICS = 105, /* lanes: pushed to a reader, the topics its session reads */
};

struct proto_hdr {
	uint32_t type;
	uint32_t len;
	uint64_t req_id;
};

/* flags of proto_hello */
#define PROTO_HELLO_LANES 0x1u /* the client speaks the lane messages (LANE, HOLDER) */

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

/*
 * The direct data path's messages (docs/design/data-path.md, section 1,
 * "Descriptors").  Defined ahead of the broker and library code that
 * sends them; PROTO_VERSION changes when they are.
 *
 * PROTO_LANE_TOPIC (writer -> broker): the session's owner will publish
 * on topic_id; the reply (u.lane) names its lane and, when the lane is
 * new to this owner, brings its descriptors in this order: data
 * (read-write), meta and hold (read-only), the generation's tx_wake page.
 */
struct proto_lane_topic {
	struct proto_hdr h;
	uint64_t session_id;
	uint32_t topic_id;
	uint32_t flags;        /* PROTO_LANE_TOPIC_* */
};

/* flags of proto_lane_topic */
#define PROTO_LANE_TOPIC_FDS 0x1u /* the lane's descriptors, though the broker thinks it
				     sent them: a reply that made the lane was lost (the
				     broker died, or the connection, before it was read) */

/*
 * PROTO_LANE_BAD (reader -> broker): the session's owner found a record
 * of lane `lane` that fails its checks.  The broker believes nothing of
 * it: it walks the lane itself and, if it finds the bad record, makes the
 * lane BAD and quarantines its writer's session (as the relay does for a
 * scribbled TX ring).  0, or -EINVAL (the broker finds the lane good),
 * -ENOENT (no such lane, or this session does not read it).
 */
struct proto_lane_bad {
	struct proto_hdr h;
	uint64_t session_id;
	uint32_t lane;
	uint32_t pad;
};

/* flags of proto_lane */
#define PROTO_LANE_DROP_OLDEST 0x1u /* read it as a drop-oldest reader (a WATCH entry) */
#define PROTO_LANE_IN_PLACE 0x2u    /* its writer has the reader's uid: read in place */
#define PROTO_LANE_PAGE 0x4u        /* a new cursor page comes with it (after meta) */
#define PROTO_LANE_WAKE 0x8u        /* the writer's tx_wake comes with it (after the page) */
#define PROTO_LANE_SELF 0x10u       /* the reader's own rx_wake and arm page come with it
				       (last, in that order; `arm_slot` is its word there) */
#define PROTO_LANE_REHOLD 0x20u     /* a lane the reader reads already, let go at an
				       unsubscribe, is held again on this page and slot:
				       it reads on from `start` or where it stands,
				       whichever is higher */
#define PROTO_LANE_RELEASED 0x40u   /* alone, no descriptors: the broker let the lane go at
				       an unsubscribe (the reader reads on as a drop-oldest
				       reader; what it skips there is no gap) */

/* PROTO_LANE (broker -> reader, request id 0): a lane to read, with data
 * and meta (read-only), then the descriptors its flags name. */
struct proto_lane {
	struct proto_hdr h;
	uint64_t session_id;   /* the reader session */
	uint32_t generation;   /* its owner generation the lane is for */
	uint32_t lane;         /* the broker's number for the lane */
	uint64_t publisher;    /* its publisher session (for events and the merge) */
	uint64_t start;        /* the position the reader starts at */
	uint64_t order;        /* the order delivered before start; 0: none */
	uint64_t ring_size;
	uint32_t kind;         /* enum shm_lane_kind */
	uint32_t flags;        /* PROTO_LANE_* */
	uint32_t page;         /* its cursor page (a number per broker) ... */
	uint32_t slot;         /* ... and its slot there */
	uint32_t arm_slot;     /* PROTO_LANE_SELF: the reader's word in its arm page */
	uint32_t pad;
};

/* flags of proto_holder: the descriptors that come with it, in this order */
#define PROTO_HOLDER_PAGE 0x1u /* the cursor page (read-only) */
#define PROTO_HOLDER_WAKE 0x2u /* the reader's rx_wake page */
#define PROTO_HOLDER_ARM 0x4u  /* the reader's arm page (read-only) */
#define PROTO_HOLDER_TX_WAKE 0x8u /* alone (no reader): the lane's tx_wake page, which the
				     writer sleeps on from now on (a restarted broker's
				     new page; its readers get it in PROTO_LANE) */

/* PROTO_HOLDER (broker -> writer, request id 0): the pages of a reader a
 * hold entry of one of its lanes names, as far as the writer lacks them. */
struct proto_holder {
	struct proto_hdr h;
	uint64_t session_id;   /* the writer session */
	uint32_t generation;
	uint32_t lane;
	uint64_t reader;       /* the reader number hold entries carry */
	uint32_t page;         /* the numbers hold entries carry */
	uint32_t arm_page;
	uint32_t flags;        /* PROTO_HOLDER_* */
	uint32_t pad;
};

/* flags of proto_reader_topics */
#define PROTO_TOPICS_FIRST 0x1u /* the list starts here: forget the one before */

#define PROTO_READER_TOPICS_MAX 36

/* PROTO_READER_TOPICS (broker -> reader, request id 0): the topics the
 * session is subscribed to, as the broker has them, in pushes of up to
 * PROTO_READER_TOPICS_MAX ids; sent before each PROTO_LANE_SELF push, so
 * a new owner generation (which subscribed nothing itself) filters its
 * lanes by the session's subscriptions. */
struct proto_reader_topics {
	struct proto_hdr h;
	uint64_t session_id;
	uint32_t generation;
	uint32_t flags;        /* PROTO_TOPICS_* */
	uint32_t count;        /* ids used */
	uint32_t pad;
	uint32_t ids[PROTO_READER_TOPICS_MAX];
};

/*
 * Admin listings (docs/design/owners.md).  A LIST is answered by one
 * LIST_REPLY page of at most PROTO_MAX_MSG bytes, or by a proto_reply
 * with an error.  A page lists entries in id order from `cursor`; its
 * `next` is the cursor of the following page, 0 after the last.  root
 * sees every uid; any other uid only its own, and naming another uid is
 * -EPERM.  Remote links are the broker's, not a uid's, and carry no
 * secret: every uid sees all of them, and UID is ignored for them.
 */
enum proto_list_kind {
	PROTO_LIST_SESSIONS = 1, /* struct proto_session_info */
	PROTO_LIST_TOPICS = 2,   /* struct proto_topic_info */
	PROTO_LIST_EVENTS = 3,   /* struct proto_event_info: one session's, oldest first */
	PROTO_LIST_LINKS = 4,    /* struct proto_link_info, in slot order (NAME: only that one) */
	PROTO_LIST_LINK_EVENTS = 5, /* struct proto_event_info: the link NAME's, oldest first */
	PROTO_LIST_LANES = 6,    /* struct proto_lane_info, by lane number (unless shmbd --no-lanes) */
};

/* flags of proto_list and proto_kick */
#define PROTO_ADM_UID 0x1u    /* only sessions of `uid` (else: the caller's; root: all) */
#define PROTO_ADM_NAME 0x2u   /* only the session called `name` */
#define PROTO_KICK_DELETE 0x4u /* kick: destroy the session, not only detach it */

struct proto_list {
	struct proto_hdr h;
	uint32_t kind;
	uint32_t flags;
	uint64_t cursor;
	uint32_t uid;
	uint32_t name_len;
	char name[PROTO_NAME_MAX];
};

struct proto_kick {
	struct proto_hdr h;
	uint32_t flags;
	uint32_t uid;
	uint32_t name_len;
	uint32_t pad;
	char name[PROTO_NAME_MAX];
};

struct proto_list_reply {
	struct proto_hdr h;  /* PROTO_LIST_REPLY, the request's id; len covers the entries */
	uint32_t kind;
	uint32_t count;      /* entries that follow */
	uint32_t entry_size; /* sizeof the kind's entry */
	uint32_t flags;      /* PROTO_LR_*, by kind; 0 otherwise (padding before links) */
	uint64_t next;       /* the next page's cursor; 0: no more */
};

/* flags of proto_list_reply, kind LINKS: so that an empty list can say
 * whether peers may still dial in */
#define PROTO_LR_LISTENING 0x1u /* the broker accepts links (--listen) */

/* states of proto_session_info */
enum proto_session_state {
	PROTO_SESSION_ATTACHED = 1,
	PROTO_SESSION_DETACHED = 2,
	PROTO_SESSION_QUARANTINED = 3,
};

/* flags of proto_session_info */
#define PROTO_SI_EPHEMERAL 0x1u
#define PROTO_SI_FULL 0x2u     /* its full RX ring holds publishers back */
#define PROTO_SI_DRAINING 0x4u /* a previous owner's TX file is still delivered */
#define PROTO_SI_SPILLED 0x8u  /* its lanes are copied into its RX ring (spill_*) */

struct proto_session_info {
	uint64_t id;
	uint32_t uid;
	int32_t pid;            /* the (last) owner; 0: none known */
	uint32_t generation;
	uint32_t state;         /* enum proto_session_state */
	uint32_t policy;        /* enum shm_policy */
	uint32_t flags;         /* PROTO_SI_* */
	uint64_t rx_ring_size;
	uint64_t rx_depth_msgs; /* in its RX ring, not yet acknowledged */
	uint64_t rx_depth_bytes;
	uint64_t tx_seq;        /* messages of its owners the broker has taken */
	uint64_t published;     /* of those, taken since the broker started */
	uint64_t delivered;     /* messages written to its RX ring since the broker started */
	uint64_t dropped;       /* drop-oldest: dropped before they were read */
	uint64_t full_ms;       /* how long its full ring has held publishers back */
	uint64_t age_ms;        /* since it was created (or re-adopted) */
	uint64_t detached_ms;   /* since it lost its owner; 0: attached */
	uint32_t ntopics;
	uint32_t pad;
	char name[PROTO_NAME_MAX + 8];  /* NUL-terminated, as are the texts below */
	char detach_reason[64];
	char exit_reason[48];
	/* PROTO_SI_SPILLED: the copying's figures (data-path.md, section 9, step 5) */
	uint64_t spill_copied;  /* records copied into its RX ring by this spill */
	uint64_t spill_let_go;  /* lanes let go when its RX ring was full: a gap for it */
	uint64_t spill_ms;      /* since the spill started */
};

struct proto_topic_info {
	uint32_t id;
	uint32_t owner_uid;
	uint32_t subscribers;
	uint32_t pad;
	uint64_t routed;        /* messages published to it since the broker started */
	uint64_t rate;          /* messages/s over the last second or so */
	char name[PROTO_TOPIC_MAX + 8];
};

/* states of proto_lane_info */
#define PROTO_LANE_OPEN 0u
#define PROTO_LANE_CUT 1u      /* its writer's generation ended: read to its cut, then gone */
#define PROTO_LANE_BAD_STATE 2u /* dropped by its readers (changed or forged by its writer) */

struct proto_lane_info {
	uint32_t number;
	uint32_t generation;   /* its writer's owner generation */
	uint64_t publisher;    /* its writer's session id */
	uint32_t uid;          /* its writer's */
	uint32_t state;        /* PROTO_LANE_OPEN, _CUT, _BAD_STATE */
	uint64_t ring_size;
	uint64_t end;          /* the committed end the broker last found (bytes written) */
	uint32_t holders;      /* HOLD entries: readers that stop its writer */
	uint32_t watchers;     /* WATCH entries: drop-oldest readers */
	uint64_t lag;          /* bytes between `end` and its slowest holder's cursor */
	uint64_t short_ms;     /* its writer has been short of room this long (0: has room) */
	char name[PROTO_NAME_MAX + 8]; /* its writer's session */
};

struct proto_event_info {
	uint64_t time_ns;       /* CLOCK_REALTIME */
	char text[120];
};

/*
 * One remote link (docs/links.md).  Byte counts are of the data stream
 * (DATA frames) and never reset, across reconnects and restarts, except
 * where "since the broker started" says otherwise.  The texts are
 * NUL-terminated; address and reason are cut to fit.
 */
struct proto_link_info {
	uint32_t slot;
	uint32_t generation;    /* the lifecycle machine's attempt counter */
	uint32_t failures;      /* failed attempts since it was last ready */
	uint32_t npeer_topics;  /* patterns the peer asked for (peer_topics: those that fit) */
	uint64_t backoff_ms;    /* the last back-off delay chosen; 0: none yet */
	uint64_t retry_ms;      /* in back-off: until the next attempt; else 0 */
	uint64_t idle_ms;       /* ready: since the last byte from the peer; else 0 */
	uint64_t sent;          /* data bytes ever sent (W) */
	uint64_t acked;         /* ... of them the peer has routed */
	uint64_t replayed;      /* bytes sent again after reconnects, since the broker started */
	uint64_t received;      /* the peer's data bytes routed here (R) */
	uint64_t msgs_out;      /* messages forwarded, since the broker started */
	uint64_t msgs_in;       /* messages received, since the broker started */
	uint64_t no_topic;      /* ... of them for a topic nobody here has used */
	uint64_t wire_out;      /* bytes written to / read from the socket, frames and */
	uint64_t wire_in;       /*   replays included, since the broker started */
	uint64_t connects;      /* connections that reached the handshake, since the broker started */
	uint64_t peer_broker;   /* the peer's broker id; 0: not known yet */
	uint64_t events;        /* events ever recorded (LINK_EVENTS lists the last 16) */
	uint64_t created_ns;    /* when its links/NAME file was made, CLOCK_REALTIME */
	char name[PROTO_LINK_NAME_MAX + 8];
	char role[16];          /* "dialer" or "listener" */
	char state[16];         /* the machine's state; a listener's idle or connecting: "waiting" */
	char address[272];      /* a dialer's HOST:PORT; a listener's --listen */
	char peer[80];          /* who is (or was last) connected; "" if nobody yet */
	char reason[240];       /* the first reason of the last disconnect; "" if none */
	char peer_topics[176];  /* the patterns the peer asked for, space-separated */
};

/* Every reply has this one shape; `err` says which member is meaningful. */
struct proto_reply {
	struct proto_hdr h; /* PROTO_REPLY, the request's id */
	int32_t err;        /* 0 or a negative errno */
	uint32_t pad;
	union {
		struct {
			uint32_t version;
			uint32_t flags;   /* PROTO_HELLO_LANES: the broker runs lanes
					     (unless shmbd --no-lanes) and this client asked */
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
		struct {                  /* PROTO_LANE_TOPIC */
			uint32_t lane;     /* the broker's number for the lane */
			uint32_t fds;      /* 4 when the descriptors come, else 0 */
			uint64_t ring_size;
		} lane;
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
static_assert(sizeof(struct proto_lane_topic) == 32, "lane topic");
static_assert(sizeof(struct proto_lane) == 88, "lane");
static_assert(sizeof(struct proto_holder) == 56, "holder");
static_assert(sizeof(struct proto_reader_topics) == 184, "reader topics");
static_assert(sizeof(struct proto_lane_bad) == 32, "lane bad");
static_assert(sizeof(struct proto_lane_info) % 8 == 0, "lane info");
static_assert(sizeof(struct proto_open) == 192, "open");
static_assert(sizeof(struct proto_reply) == 184, "reply");
static_assert(sizeof(struct proto_reply) <= PROTO_MAX_MSG, "reply fits");
static_assert(sizeof(struct proto_list) == 168, "list");
static_assert(sizeof(struct proto_kick) == 160, "kick");
static_assert(sizeof(struct proto_list_reply) == 40, "list reply");
static_assert(sizeof(struct proto_session_info) == 392, "session info");
static_assert(sizeof(struct proto_topic_info) == 240, "topic info");
static_assert(sizeof(struct proto_event_info) == 128, "event info");
static_assert(sizeof(struct proto_link_info) == 1016, "link info");
/* every link fits one page (the broker has at most 64) */
static_assert(sizeof(struct proto_list_reply) + 64 * sizeof(struct proto_link_info) <= PROTO_MAX_MSG,
	      "links page");

#endif
