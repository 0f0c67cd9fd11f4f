/*
 * broker/session.h - sessions: one per (uid, name), each a broker-written
 * rx file and its owner's tx.<generation> file (session.c: the table,
 * open, detach, kick, expire, destroy; session-tx.c: the TX files and the
 * generation switch; adopt.c: re-adoption after a restart).
 */
#ifndef BROKER_SESSION_H
#define BROKER_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "broker/exit.h"
#include "broker/log.h"
#include "shm/layout.h"
#include "shm/proto.h"
#include "shm/ring.h"
#include "shm/segment.h"

struct broker;
struct conn;
struct state_load;
struct lreader;

/* What one subscriber has received from one source (dedup across a
 * partial fan-out, docs/design/recovery.md).  Entry i mirrors entry i of the
 * subscriber's shm_dlv_table, which lags it until the RX commit. */
struct delivered {
	uint64_t src_broker;  /* the origin: this broker, or a remote one (links) */
	uint64_t src_session; /* 0: free */
	uint64_t seq;         /* highest source sequence delivered, +1 */
};

#define SESSION_TOKEN_HASH_LEN 32

/* Ids (docs/design/owners.md, ids): session ids are below SESSION_ID_LIMIT
 * (topic ids: topic.h).  What names a larger one (a state file line) is
 * refused, so the next session id can never wrap onto a used one. */
#define SESSION_ID_LIMIT (1ull << 62)

/* What happened to a session lately (shmbctl session NAME). */
#define SESSION_EVENTS 16

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
	uint64_t tx_blocks, drain_blocks; /* their allocated blocks when made or adopted (harden.c) */
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

	struct log_event ev[SESSION_EVENTS]; /* a ring: the newest at (nev - 1) % SESSION_EVENTS */
	uint64_t nev;          /* events ever recorded */
	struct lreader *lane_reader; /* lanes: this owner generation as a lane reader */
	struct spill *spill;         /* lanes: the broker copies its lanes into its spool (lanes-spill.c) */
	int reader_watch_pidfd;      /* lanes: its detached owner, watched for its death (ctl-lanes.c) */
	/* lanes: the highest order in the cut lanes of its earlier owner
	 * generations (order = source sequence + 1: the sequence after their
	 * last record; 0: none).  Only rises; kept from a cut (a detached
	 * owner's death, say) to the next generation, whose start sequence
	 * is at least this.  After a broker restart, raised again from the
	 * session's re-adopted lanes (lanes-adopt.c). */
	uint64_t lanes_next_seq;
};

int session_table_init(struct broker *b);
struct session *session_find(struct broker *b, uid_t uid, const char *name);
struct session *session_by_id(struct broker *b, uint64_t id);
int session_open(struct broker *b, struct conn *c, const struct proto_open *req, struct session **out,
		 int *created, int *notify_rd);
bool session_detach(struct broker *b, struct session *s, const char *reason);
void session_destroy(struct broker *b, struct session *s, const char *reason);
void session_expire(struct broker *b, uint64_t now_ns);
void session_quarantine(struct broker *b, struct session *s, const char *why);
void session_reap(struct broker *b);
void session_drain_done(struct session *s);
/* A re-adopted session's last owner is known gone: its pid no longer
 * counts as that owner's (a process that reuses it is someone else). */
void session_adopted_forget(struct session *s);
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
/* Admin: fence the owner off and detach (delete: destroy); by is the caller's uid. */
int session_kick(struct broker *b, struct session *s, bool delete, uid_t by);

/* ---- adopt.c ---- */
/* At start-up, first: apply what the state file said of the broker
 * itself: its id, its next session id and its topics (a topic line that
 * contradicts another is counted bad in l). */
void adopt_broker(struct broker *b, struct state_load *l);
/* Then: re-adopt every recorded session whose files pass their checks,
 * quarantine the rest. */
int adopt_all(struct broker *b, const struct state_load *l);

#endif
