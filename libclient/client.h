/*
 * libclient/client.h - libshmb's objects, shared by client.c (topics,
 * sessions, messages) and conn*.c (the control connection, its thread
 * and its handshake; what those share only among themselves is in
 * conn-int.h).  Private to the library: nothing here is API.
 *
 * Locks, always taken in this order: c->lock (one request in flight on
 * the connection; the fd; the sessions' tokens and topics) -> c->slock
 * (the sessions array, changed with both held; the epoll sets; pending
 * events) -> c->st (the machine's entry, the action queue, counters, the
 * callback) -> c->tlock (the topic cache) -> the registry's own lock.
 */
#ifndef LIBCLIENT_CLIENT_H
#define LIBCLIENT_CLIENT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/un.h>
#include <time.h>

#include "libclient/registry.h"
#include "shm/clock.h"
#include "shm/proto.h"
#include "shm/ring.h"
#include "shm/segment.h"
#include "shmb.h"

#define SHMB_EXPORT __attribute__((visibility("default")))

#define FOREVER_NS (1ull << 62)

struct topic_entry {
	uint32_t id;
	uint32_t epoch; /* the id is the broker's while this equals c->topic_epoch */
	char name[PROTO_TOPIC_MAX + 1];
};

/* A batch of actions of one machine step, for the connection thread. */
struct conn_batch {
	struct lc_entry *e; /* held until the batch ran */
	unsigned n;
	struct lc_action acts[LC_MAX_ACTS];
};

/* Application threads wait for room when fewer than CONN_QUEUE_SPARE
 * slots are free; the connection thread never has to: it takes a batch
 * out before it runs it, and each batch feeds the machine at most once. */
#define CONN_QUEUE 32
#define CONN_QUEUE_SPARE 4

/* Pending session events, told by the connection thread. */
#define EVP_REATTACHED 0x1u
#define EVP_STALE 0x2u

struct shmb_client {
	pthread_mutex_t lock;     /* the order of the four: at the top */
	pthread_mutex_t slock;
	pthread_mutex_t st;
	pthread_mutex_t tlock;
	pthread_cond_t st_cond;   /* queue room, attempts ended, emitters done */

	/* c->lock; written by the connection thread only */
	int fd;                   /* the live control connection, or -1 */
	uint32_t fd_gen;          /* its attempt generation */
	struct lc_entry *fd_entry;/* its machine (held) */
	uint64_t next_req;
	uint64_t broker_id;

	/* c->slock */
	struct shmb_session **sessions; /* open on this client, freed by shmb_close */
	unsigned nsessions, cap_sessions;
	uint32_t linked;          /* atomic: up, every session reattached, epolls set */
	uint32_t lanes;           /* atomic: the live broker runs lanes with us (HELLO) */

	/* c->tlock */
	struct topic_entry **topics; /* entries never move: shmb_msg.topic points at them */
	unsigned ntopics;
	uint32_t topic_epoch;     /* +1 when the broker changes (atomic for readers) */

	/* c->st */
	struct lc_registry reg;
	struct lc_entry *entry;   /* the machine (held); replaced after a permanent failure */
	uint32_t gen_before;      /* attempt generations of replaced machines */
	struct conn_batch q[CONN_QUEUE];
	unsigned qhead, qlen;
	bool closing;             /* shmb_close() began: no more events */
	bool stop;                /* ... and fed LC_CLOSE: the thread ends when idle */
	unsigned emitting;        /* the connection thread is telling session events */
	shmb_event_fn event_fn;
	void *event_arg;
	uint64_t handshakes, disconnects, attempts_ended;
	int last_error, last_reason;
	uint64_t backoff_ns;
	uint64_t info_broker_id;

	/* fixed after shmb_connect() */
	struct sockaddr_un addr;
	char endpoint[LCR_ENDPOINT_MAX];
	uint64_t ctl_timeout_ns;
	int evfd;                 /* wakes the connection thread */
	pthread_t thread;
	bool thread_started;
	bool reg_ready;
	uint64_t rng;             /* jitter; used under the registry's lock */
	bool no_lanes;            /* SHMB_LANES=0: never ask for lanes */
	struct {                  /* the lane readers' pollable fds (client-lanes.c) */
		pthread_t th;
		bool started, stop;   /* c->slock */
		uint32_t word;        /* its own futex word: a session armed, or stop */
		uint64_t tick_due;    /* every polled fd turns readable once a second */
		uint64_t tick_ns;     /* (SHMB_LANE_POLL_TICK_MS, for tests) */
		uint64_t short_due;   /* armed fds with records unacknowledged: every ms (0: none) */
	} waker;

	/* the connection thread's own */
	struct {
		int poll_fd;              /* the live connection it watches, or -1 */
		uint32_t poll_gen;
		struct lc_entry *poll_e;  /* held */
		struct lc_entry *timer_e; /* held while a timer is armed */
		uint32_t timer_gen;
		uint64_t timer_due;
		bool up;                  /* a connection was up and is not yet told lost */
	} ct;
};

struct shmb_session {
	struct shmb_client *c;
	uint64_t id;
	uint32_t generation;
	int created;
	unsigned flags;
	uint64_t spin_ns;
	struct segment rx, tx;
	const struct shm_rx_ctrl *rxc;
	struct shm_tx_ctrl *txc;
	struct ring_prod tx_prod;
	struct ring_cons rx_cons;
	uint64_t spool_until;       /* lanes: the RX ring is read up to here before any lane (a spool) */
	uint64_t tx_start_seq;
	bool unacked;
	int notify_rd; /* read end of the broker's poll pipe; the number never changes */
	bool drop_oldest;  /* the broker may drop what this reader has not read */
	uint8_t *copy;     /* drop-oldest: messages are copied out, then checked */
	uint64_t gap_from; /* drop-oldest: RX sequence expected before a jump, or 0 */
	int epfd;      /* shmb_session_fd(): an epoll fd holding notify_rd, or -1 (slock) */
	uint32_t stale_told;  /* atomic: SHMB_EV_STALE was told */
	uint32_t notify_eof;  /* atomic: the broker closed our poll pipe: we are detached */
	uint32_t lost;        /* atomic: a redial found the broker no longer has it for us */
	const char *last_topic;   /* the caller's pointer of the last publish, */
	char last_name[PROTO_TOPIC_MAX + 1]; /* its text then, */
	uint32_t last_id;         /* and its id: one strcmp instead of a lookup */
	uint32_t last_epoch;
	struct client_lanes *ln;  /* its lanes, when the broker ran them at the open */
	uint32_t last_rx_id;      /* the last received topic and its name */
	uint32_t last_rx_epoch;
	const char *last_rx_name;

	/* for the reattach (c->lock) */
	char name[PROTO_NAME_MAX + 1];
	uint8_t token[PROTO_TOKEN_LEN];
	struct topic_entry **subs; /* its subscriptions, as this client asked for them */
	unsigned nsubs, cap_subs;

	/* the connection thread's own marks (under c->lock or c->slock) */
	bool hs_ok;        /* reattached by the handshake in progress */
	bool wake_lost;    /* lost: sleepers still to be woken */
	unsigned ev_pending; /* EVP_* (slock) */
};

/* The client whose connection thread this is, in that thread (conn-thread.c). */
extern __thread struct shmb_client *conn_of_thread;

/* ---- conn.c: requests over the control connection ---- */

struct conn_try {
	uint64_t deadline;   /* for the connection to come up; 0: not started */
	bool retried;
	struct lc_entry *e;  /* the machine of the connection in use (held) */
	uint32_t gen;
};

/*
 * One request and its reply on fd (c->lock held); see conn.c.  0 when a
 * reply came (its error in rep->err), -EPIPE, -EPROTO, -ETIMEDOUT,
 * -ECANCELED.  deadline 0: an application's request, unbounded.
 */
int conn_rpc(struct shmb_client *c, int fd, void *req, size_t len, struct proto_reply *rep,
	     int *fds, int nfds_max, uint64_t deadline);

int conn_rpc_buf(struct shmb_client *c, int fd, void *req, size_t len, void *rbuf, size_t rcap,
		 int *fds, int nfds_max, uint64_t deadline);

/* An application's request on the live connection: 0 or an error. */
int conn_rpc_locked(struct shmb_client *c, void *req, size_t len, struct proto_reply *rep,
		    int *fds, int nfds_max);

/* Take c->lock with a live connection, waiting up to the control timeout:
 * 0 (held), -ENOTCONN, or a permanent error. */
int conn_enter(struct shmb_client *c, struct conn_try *t);

/* Let go of c->lock after a request; true: send it once more. */
bool conn_leave(struct shmb_client *c, struct conn_try *t, int *r);

/* An application's request whose reply may come with nfds_max fds or
 * none: 0 and the reply; fds are valid only when the reply says so. */
int conn_rpc_opt_fds(struct shmb_client *c, void *req, size_t len, struct proto_reply *rep,
		     int *fds, int nfds_max);

/* Read what the broker pushed (PROTO_LANE, PROTO_HOLDER) from the live
 * connection without waiting, if no request holds it (c->lock free):
 * false when one did (nothing read). */
bool conn_drain_pushes(struct shmb_client *c);
/* The same with c->lock held, on fd (the handshake's new connection). */
void conn_drain_pushes_locked(struct shmb_client *c, int fd);

/* ---- client-lanes.c: a session's lanes ---- */

struct client_lanes;

int client_lanes_open(struct shmb_session *s, uint64_t start_seq);
void client_lanes_free(struct shmb_session *s);
/* A push read from the connection (c->lock held), queued for its session;
 * its fds are the queue's (closed if it has no session). */
void client_lanes_dispatch(struct shmb_client *c, const void *msg, size_t n, const int *fds,
			   int nfds);
/* Apply the session's queued pushes (the thread using the session). */
void client_lanes_apply(struct shmb_session *s);
int client_lanes_publish(struct shmb_session *s, uint32_t topic, const void *data, size_t len,
			 int timeout_ms, bool more);
int client_lanes_flush(struct shmb_session *s);
uint64_t client_lanes_next_seq(const struct shmb_session *s);
int client_lanes_topic(struct shmb_session *s, uint32_t topic, bool on);
/* An RX record the broker copied from publisher's lane (order): the
 * lanes' records of that publisher up to it are skipped as copies. */
void client_lanes_spooled(struct shmb_session *s, uint64_t publisher, uint64_t order);
/* Whether such a record was returned already (a copy made again). */
bool client_lanes_spool_dup(const struct shmb_session *s, uint64_t publisher, uint64_t order);
/* The next lane message: 0, -EAGAIN (none), or an error. */
int client_lanes_next(struct shmb_session *s, struct shmb_msg *m);
void client_lanes_ack(struct shmb_session *s);
/* Alternates: true when the RX ring goes first this time. */
bool client_lanes_rx_first(struct shmb_session *s);
/* Sleep until a lane, the RX ring, a push or staleness may have news:
 * 0, -ETIMEDOUT. */
int client_lanes_wait(struct shmb_session *s, const struct timespec *deadline);
void client_lanes_wake(struct shmb_session *s);
/* shmb_session_fd() of a lane reader: its eventfd into epfd, and the
 * client's waker thread started.  0 or -errno. */
int client_lanes_poll_fd(struct shmb_session *s, int epfd);
/* Stop the waker (shmb_close(), before the sessions are freed). */
void client_lanes_waker_stop(struct shmb_client *c);
/* Empty the session's eventfd. */
void client_lanes_poll_drain(struct shmb_session *s);
/* A poller found nothing: arm rx_wake for the waker (false: no lanes to
 * arm for yet); the caller looks once more after it. */
bool client_lanes_poll_arm(struct shmb_session *s);
/* Its next recv: no longer armed. */
void client_lanes_poll_disarm(struct shmb_session *s);

/* ---- client.c ---- */

/* Taken over, or lost: every call says -ESTALE. */
bool client_session_stale(const struct shmb_session *s);

/* Tell the event callback; never with a lock held. */
void client_event(struct shmb_client *c, int kind, struct shmb_session *s, uint64_t count);

/* The topic's entry with a valid id, interned over fd if need be
 * (c->lock held). */
int client_topic_get_locked(struct shmb_client *c, int fd, const char *name, uint64_t deadline,
			    struct topic_entry **out);

/* Free a session that is in no array any more. */
void client_session_free(struct shmb_session *s);

#endif
