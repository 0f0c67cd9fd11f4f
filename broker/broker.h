/*
 * broker/broker.h - shmbd's objects: the broker, its control connections,
 * sessions and topics.  One thread owns all of them (the io_uring loop in
 * loop.c); nothing here is locked.
 */
#ifndef BROKER_BROKER_H
#define BROKER_BROKER_H

#include <liburing.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "broker/exit.h"
#include "broker/linkproto.h"
#include "libclient/lifecycle.h"
#include "shm/layout.h"
#include "shm/proto.h"
#include "shm/ring.h"
#include "shm/segment.h"

struct broker_opts {
	const char *dir;             /* SHMB_DIR */
	uint64_t rx_ring_size;       /* default ring sizes for new sessions */
	uint64_t tx_ring_size;
	uint64_t session_ttl_ms;     /* detached sessions expire after this */
	uint64_t block_timeout_ms;   /* a live subscriber full this long is detached */
	uint64_t hello_timeout_ms;   /* a connection must say HELLO within this */
	uint64_t drain_timeout_ms;   /* SIGTERM: route what is in flight for at most this */
	uint64_t poll_us;            /* busy-poll window after the last work */
	unsigned max_sessions_per_uid;
	unsigned max_topics_per_uid;
	uint64_t max_memory_per_uid; /* bytes of segments (rx + two tx files per session) */
	bool no_uring_futex;         /* force the timer fallback (tests) */
	uint64_t fallback_tick_us;   /* the fallback's polling period */
	enum exitw_mode exit_reasons;/* --exit-reasons */
	/* remote links (docs/links.md) */
	const char *listen;          /* --listen HOST:PORT, or NULL */
	const char *link_key;        /* --link-key FILE */
	char *link_spec[16];         /* --link NAME=HOST:PORT */
	unsigned nlink_spec;
	char *bridge[WIRE_TOPICS_MAX];/* --bridge TOPIC (a trailing '*': a prefix) */
	unsigned nbridge;
	uint64_t link_buffer;        /* replay ring bytes per link */
	uint64_t link_heartbeat_ms;  /* a PING this often */
	uint64_t link_timeout_ms;    /* nothing heard this long: redial */
};

struct conn {
	int slot;
	int fd;
	int pidfd;
	uint32_t slot_gen;
	uid_t uid;
	pid_t pid;
	bool hello;
	bool dead;
	uint64_t accepted_ns;  /* a connection that says no HELLO in time is closed */
};

/* What one subscriber has received from one source (dedup across a
 * partial fan-out, decisions.md 12).  Entry i mirrors entry i of the
 * subscriber's shm_dlv_table, which lags it until the RX commit. */
struct delivered {
	uint64_t src_broker;  /* the origin: this broker, or a remote one (links) */
	uint64_t src_session; /* 0: free */
	uint64_t seq;         /* highest source sequence delivered, +1 */
};

#define SESSION_TOKEN_HASH_LEN 32

/* Ids (decisions.md 13): session ids are below SESSION_ID_LIMIT and topic
 * ids at most TOPIC_ID_MAX.  What names a larger one (a state file line)
 * is refused, so the next session id can never wrap onto a used one. */
#define SESSION_ID_LIMIT (1ull << 62)
#define TOPIC_ID_MAX (1u << 20)

/* What happened to a session lately (shmbctl session NAME). */
#define SESSION_EVENTS 16
struct session_event {
	uint64_t time_ns;      /* CLOCK_REALTIME */
	char text[120];
};

struct session {
	uint64_t id;
	char name[PROTO_NAME_MAX + 1];
	uid_t uid;
	uint32_t policy;
	uint32_t generation;
	bool ephemeral;
	bool quarantined;
	bool destroying;       /* being destroyed: a rewrite of the state file leaves it out */
	uint32_t slot_gen;     /* tags this session's io_uring requests */
	struct conn *owner;    /* NULL: detached */
	int owner_conn_slot;
	pid_t owner_pid;
	int owner_pidfd;       /* -1 when detached */
	int notify_wr;         /* the owner's poll pipe (write end), -1 if none */
	uint8_t token[PROTO_TOKEN_LEN];   /* known only until a restart */
	uint8_t token_hash[SESSION_TOKEN_HASH_LEN]; /* what the state file keeps */
	uint64_t rx_ring_size, tx_ring_size;
	int adopted_pidfd;     /* re-adopted after a restart: its last owner, or -1 */
	uint64_t detached_ns;  /* when it lost its owner (CLOCK_MONOTONIC) */
	const char *detach_reason;
	/* why its last owner went (exit.h): "killed by SIGKILL", "exited 3",
	 * "closed normally", "unknown"; "" while not known; kept until a new
	 * owner attaches */
	char exit_reason[EXITW_REASON_LEN];
	bool exit_pending;     /* its owner's connection went; the reason is awaited */

	int dirfd;             /* sessions/<id>/ */
	struct segment rx;     /* broker-written file */
	struct segment tx;     /* the current owner's tx.<generation> */
	struct shm_rx_ctrl *rxc;
	struct shm_tx_ctrl *txc;
	struct ring_prod rx_prod; /* broker produces RX */
	struct ring_cons tx_cons; /* broker consumes TX */
	struct segment drain_tx;  /* a previous owner's TX file, still being delivered */
	struct ring_cons drain_cons;
	uint32_t drain_gen;       /* its generation; 0: nothing draining */
	uint64_t drain_end;       /* where the old owner was cut off: the drain stops there */
	bool rx_dirty;         /* RX records reserved, not yet committed */
	bool tx_open;          /* a TX file is mapped and read */
	bool futex_armed;
	bool blocked;          /* a subscriber of its records is full */
	uint64_t full_since;   /* its RX ring has held a publisher back since (0: not) */
	uint32_t wakes;        /* its futex wait fired, this housekeeping window */
	uint64_t routed_mark;  /* routed_in at the window's start */
	uint64_t backoff_until;/* its wait is not armed before this (wake spam) */
	unsigned backoff_level;/* consecutive spam windows: the back-off doubles */

	uint32_t *topics;      /* subscribed topic ids */
	unsigned ntopics;
	struct delivered *dlv;  /* SHM_DLV_MAX entries, or NULL before the first */
	unsigned ndlv;         /* entries in use are among the first ndlv */
	int dlv_touched;       /* the entry this routing pass changed, or -1 */
	struct shm_dlv_table *dlv_shm;

	uint64_t routed_in;    /* records taken from its TX ring */
	uint64_t delivered_out;/* records written to its RX ring */
	uint64_t dropped_topic;/* records naming a topic it may not use */
	uint64_t dropped_oldest; /* drop-oldest: records dropped before they were read */

	struct session_event ev[SESSION_EVENTS]; /* a ring: the newest at (nev - 1) % SESSION_EVENTS */
	uint64_t nev;          /* events ever recorded */
};

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

/* ---- remote links (link*.c, docs/links.md) ---- */
#define BROKER_MAX_LINKS 64
#define LINK_EVENTS 16
#define LINK_PENDING 16

/* links/NAME: a link's counters and replay ring, kept across restarts */
#define LINK_FILE_MAGIC 0x314b4e4c424d4853ull /* "SHMBLNK1" */
#define LINK_HDR_SIZE 16384u
struct link_file {
	uint64_t magic;
	uint32_t version;
	uint32_t role;         /* enum wire_role */
	uint64_t capacity;     /* replay ring bytes, after the header */
	uint64_t peer_broker;  /* the peer's broker id, once known */
	uint64_t w;            /* data bytes ever sent (the ring holds the last capacity) */
	uint64_t acked;        /* ... of them routed by the peer */
	uint64_t routed;       /* the peer's data bytes routed here */
	uint64_t created_ns;   /* CLOCK_REALTIME */
	struct wire_topics peer_topics; /* what the peer asked this side to forward */
};

struct link {
	struct broker *b;
	unsigned slot;
	uint32_t cgen;         /* tags the io_uring requests of its current fd */
	char name[WIRE_NAME_MAX + 1];
	enum wire_role role;
	char host[256], port[32];  /* a dialer's peer */
	char peer_addr[80];    /* who is (or was last) connected */
	bool provisional;      /* created by an unauthenticated HELLO: gone if it fails */
	bool dead;             /* to be freed once no caller holds it (links_reap) */
	bool more_in;          /* stopped reading at the per-pass cap: read on next pass */
	char fname[WIRE_NAME_MAX + 8]; /* its file in links/: NAME, or .NAME.new while provisional */
	int dial_err;          /* the last dial error as the system said it */
	bool stalled;          /* a local subscriber is full: not reading */
	bool out_armed;        /* POLLOUT armed */
	bool in_armed;
	struct lc lc;
	struct linkproto lp;
	int fd;
	uint64_t deadline;     /* connect or handshake must finish by (0: none) */
	uint64_t timer_at;     /* back-off ends (0: none) */
	uint64_t last_rx, last_ping;
	struct sockaddr_storage addr;
	unsigned addrlen;
	int filefd;
	void *map;
	size_t maplen;
	struct link_file *f;
	struct delivered *sent;/* per local source: the next sequence to forward */
	unsigned nsent, capsent;
	uint64_t batch_broker, batch_src; /* the remote source of this input batch's deliveries */
	uint64_t stall_broker, stall_src; /* ... of the message it is stalled on */
	/* figures */
	uint64_t wire_out, wire_in, msgs_out, msgs_in, no_topic, not_bridged, too_big;
	uint64_t connects, backoff_ns;
	char reason[WIRE_TEXT_MAX + 40]; /* the first reason of the last disconnect */
	struct session_event ev[LINK_EVENTS];
	uint64_t nev;
};

/* An accepted TCP connection that has not said which link it is yet. */
struct link_pending {
	int fd;
	uint32_t gen;
	uint64_t since;
	size_t len;
	uint8_t buf[WIRE_OVERHEAD + 100 + WIRE_NAME_MAX];
	char addr[80];
};

#define BROKER_MAX_CONNS 4096
#define BROKER_MAX_CONNS_PER_UID 256

struct broker {
	struct broker_opts o;
	struct io_uring ring;
	bool uring_futex;
	int dirfd, sessions_dirfd, lockfd;
	int listen_fd, signal_fd;
	uint64_t broker_id;
	uint64_t start_ns;
	uint64_t next_session_id;
	bool stopping;
	bool accept_paused;    /* out of fds: accept is re-armed at the next tick */

	struct conn *conns[BROKER_MAX_CONNS];
	uint32_t conn_gen[BROKER_MAX_CONNS];
	struct session **sessions;
	unsigned nsessions, cap_sessions;
	struct topic **topics; /* by id - 1 */
	unsigned ntopics;
	uint32_t *topic_hash;  /* open addressing: name -> id, 0 = empty */
	struct uid_count *uids;/* topics owned per uid */
	unsigned nuids;
	unsigned topic_hash_cap;
	uint64_t routed;
	int state_fd;          /* the state file, appended to; -1 before start-up ends */
	off_t state_len;       /* its length: where the next line goes */
	uint64_t state_lines;   /* lines in it, live or replaced */
	unsigned adopted;      /* sessions re-adopted at start-up */
	unsigned quarantined_at_start; /* sessions moved aside at start-up */
	uint64_t sleeps;       /* times the loop went to sleep */
	uint64_t wakes_sent;   /* FUTEX_WAKEs of readers */
	struct exitw *exitw;   /* crash forensics (exit.c) */

	/* remote links */
	uint8_t link_key[LINK_KEY_LEN];
	int links_dirfd;
	int link_listen_fd;
	int resolve_rd, resolve_wr; /* resolver threads hand results back here */
	struct link *links[BROKER_MAX_LINKS];
	struct link_pending *pending[LINK_PENDING];
	uint32_t pending_gen;
	uint32_t link_cgen;    /* tags of link connections: never reused, across slots */
	uint64_t link_accept_paused; /* out of fds: the link port's accept waits (since) */
};

/* ---- log.c ---- */
enum log_level { LOG_ERR = 3, LOG_WARNING = 4, LOG_NOTICE = 5, LOG_INFO = 6, LOG_DEBUG = 7 };
void log_set_level(int level);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- session.c, session-tx.c (session-int.h: what they share with adopt.c) ---- */
int session_table_init(struct broker *b);
struct session *session_find(struct broker *b, uid_t uid, const char *name);
struct session *session_by_id(struct broker *b, uint64_t id);
int session_open(struct broker *b, struct conn *c, const struct proto_open *req, struct session **out,
		 int *created, int *notify_rd);
void session_detach(struct broker *b, struct session *s, const char *reason);
void session_destroy(struct broker *b, struct session *s, const char *reason);
void session_expire(struct broker *b, uint64_t now_ns);
void session_quarantine(struct broker *b, struct session *s, const char *why);
void session_reap(struct broker *b);
void session_drain_done(struct session *s);
bool session_tx_drained(struct session *s);
/* Where a new owner starts reading RX, and the sequence found there. */
void session_rx_start(struct session *s, uint64_t *pos, uint64_t *seq);
/* Detach every session c owns; returns how many it owned. */
unsigned session_conn_gone(struct broker *b, struct conn *c, const char *reason);

void session_token_hash(const uint8_t *token, uint8_t *out);
/* The owner the state file names: one attached now, or a re-adopted
 * session's last owner that still lives; 0 for none. */
static inline int session_owner_pid(const struct session *s)
{
	return s->owner || s->adopted_pidfd >= 0 ? (int)s->owner_pid : 0;
}
void session_event(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Fill one event (a session's or a link's): now, and the text. */
void event_put(struct session_event *e, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Admin: fence the owner off and detach (delete: destroy); by is the caller's uid. */
int session_kick(struct broker *b, struct session *s, bool delete, uid_t by);

/* ---- topic.c ---- */
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

/* ---- state.c ---- */
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

/* ---- adopt.c ---- */
/* At start-up, apply what the state file said: the broker's id, its next
 * session id and its topics (a topic line that contradicts another is
 * counted bad in l), then re-adopt every recorded session whose files
 * pass their checks and quarantine the rest. */
int adopt_all(struct broker *b, struct state_load *l);

/* ---- router.c ---- */
/* Move what every TX ring holds to its subscribers; returns records moved. */
uint64_t router_run(struct broker *b);
/* Drain one session's TX ring as far as subscribers allow. */
uint64_t router_session(struct broker *b, struct session *s);
/* A message from a remote link to topic t's subscribers, as the router
 * delivers a local one; (src_broker, src_session) is its source in the
 * subscribers' delivery tables, src_broker another broker's id.
 * 0, or -EAGAIN when a subscriber is full (call again: those that got it
 * are remembered).  router_commit() makes the deliveries visible. */
int router_deliver_remote(struct broker *b, struct topic *t, uint64_t src_broker, uint64_t src_session,
			  uint64_t seq, const void *payload, uint32_t len);
void router_commit(struct broker *b);

/* ---- link.c (with link-data.c, link-dial.c, link-file.c, link-accept.c) ---- */
/* io_uring request kinds of links (loop.c tags them, link_cqe takes them) */
enum {
	LINK_OP_ACCEPT = 16, /* the link port's multishot accept */
	LINK_OP_PENDING,     /* an accepted connection before its HELLO (a: index) */
	LINK_OP_RESOLVE,     /* the resolver threads' pipe */
	LINK_OP_CONNECT,     /* a dial's POLLOUT (a: slot, gen: cgen) */
	LINK_OP_IN,          /* a link's socket readable */
	LINK_OP_OUT,         /* ... writable again */
};
/* The options' key, before anything is made in the directory: 0 or -errno. */
int link_check(struct broker *b);
/* Set up from the options (before the loop): links/, files, listener. */
int link_setup(struct broker *b);
/* io_uring completions of kind OP_LINK_* */
void link_cqe(struct broker *b, unsigned kind, unsigned a, uint32_t gen, int res, bool more);
/* Every pass of the loop: timers, stalled input, output.  Returns work done. */
unsigned link_run(struct broker *b, uint64_t now);
/* ns until a link needs the loop (UINT64_MAX: none) */
uint64_t link_next_due(struct broker *b, uint64_t now);
/* Is a message of this remote source stalled part-way in a link (its
 * delivery-table entries must stay)? */
bool link_in_flight(struct broker *b, uint64_t src_broker, uint64_t src_session);
/* Which links forward a topic of this name (bit per link slot). */
uint64_t link_topic_mask(struct broker *b, const char *name);
/* The router offers a locally published message to link slot i: 0, or
 * -EAGAIN while its replay buffer is full of what the peer has not routed. */
int link_offer(struct broker *b, unsigned i, struct session *pub, uint64_t seq,
	       const struct topic *t, const void *payload, uint32_t len);
void link_stop(struct broker *b);
/* Admin (shmbctl links): the link of that name, unless it is still being
 * authenticated (then it does not exist yet); what is shown of it. */
struct link *link_named(struct broker *b, const char *name);
void link_info(const struct broker *b, const struct link *l, struct proto_link_info *i, uint64_t now);
/* After loop_init: arm the listener and resolver, start dialing. */
void link_start(struct broker *b);

/* ---- ctl.c ---- */
int ctl_listen(struct broker *b);
void ctl_accepted(struct broker *b, int fd);
void ctl_readable(struct broker *b, struct conn *c);
void ctl_close(struct broker *b, struct conn *c, const char *why);
void ctl_push_event(struct broker *b, struct conn *c, uint32_t kind, uint64_t session_id);
void ctl_expire(struct broker *b, uint64_t now);

/* ---- guard.c ---- */
int guard_init(void);
int guard_add(void *base, size_t len, struct session *s);
void guard_remove(void *base);
void guard_check(struct broker *b);

/* ---- loop.c ---- */
int loop_init(struct broker *b);
int loop_run(struct broker *b);
void loop_watch_conn(struct broker *b, struct conn *c, int slot);
/* cancel the watches of loop_watch_conn (c is about to be freed) */
void loop_unwatch_conn(struct broker *b, struct conn *c);
void loop_cancel_session(struct broker *b, struct session *s);
/* exit.c's watch on a gone process's pidfd: completions go to exitw_event */
void loop_watch_exit(struct broker *b, int pidfd, unsigned slot, uint32_t gen);
void loop_unwatch_exit(struct broker *b, unsigned slot, uint32_t gen);

void loop_link_poll(struct broker *b, int fd, unsigned kind, unsigned a, uint32_t gen,
		    unsigned events, bool multishot);
/* cancel every request of link slot a's connection gen */
void loop_link_cancel(struct broker *b, unsigned a, uint32_t gen);
void loop_link_accept(struct broker *b, int fd);
void loop_link_poll_pending(struct broker *b, int fd, unsigned i, uint32_t gen);
void loop_link_cancel_pending(struct broker *b, unsigned i, uint32_t gen);

uint64_t now_ns(void);

#endif
