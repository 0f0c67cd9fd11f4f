/*
 * shmb.h - the public API of libshmb, the shmb client library.
 *
 * A client connects to the broker (shmbd) over its control socket, opens
 * named sessions, subscribes them to topics, publishes into them and
 * receives from them.  Messages travel through shared memory; the control
 * socket carries only set-up.  A session outlives its process: a client
 * that crashes and opens the same session name again resumes after the
 * last message it acknowledged.
 *
 * Conventions.  Functions return 0 (or a documented non-negative value)
 * on success and a negative errno on failure; every code a function can
 * return is listed with it; in addition, any call that talks to the
 * broker may return -ENOTCONN (no connection to the broker within the
 * client's control timeout), -EPIPE (the connection was lost twice during
 * the request) or -EPROTO (the broker answered something this library
 * does not understand; the library drops that connection and redials).
 * Only symbols starting with shmb_ are exported.  Thread-safety is stated
 * per function: a shmb_client may be shared by threads; a shmb_session is
 * used by one thread at a time unless a function says otherwise.
 *
 * Redial.  A client keeps its connection to the broker up by itself: a
 * connection thread redials a lost one (with a growing, randomised delay)
 * and reattaches every open session over it, with the same generation,
 * the same files and its subscriptions.  While the broker is away the
 * message calls (shmb_publish, shmb_recv, shmb_ack, shmb_flush) go on in
 * shared memory: publish fills the TX ring, then waits (or -EAGAIN with
 * timeout 0); recv waits for its timeout (or -EAGAIN).  Calls that need
 * the broker wait for the connection up to the control timeout, then
 * return -ENOTCONN.
 *
 * Environment: SHMB_DIR names the broker's runtime directory (default
 * /run/shmb) when shmb_connect() is given none.
 */
#ifndef SHMB_H
#define SHMB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SHMB_VERSION_MAJOR 0
#define SHMB_VERSION_MINOR 4
#define SHMB_VERSION_PATCH 0

/* The library's version as "major.minor.patch".  Thread-safe; never fails. */
const char *shmb_version(void);

/* The segment layout version this library reads and writes.  Thread-safe. */
unsigned shmb_layout_version(void);

/*
 * A short English description of a negative errno returned by a shmb_
 * function (shmb_strerror(-EAGAIN)).  Thread-safe; returns a static string,
 * "unknown error" for values it does not know.
 */
const char *shmb_strerror(int err);

struct shmb_client;
struct shmb_session;

/* ---- connecting ---------------------------------------------------------- */

/*
 * Zero-initialise it (struct shmb_connect_opts o = { .dir = ... }): every
 * field left 0 takes its default, and fields may be added at the end.
 */
struct shmb_connect_opts {
	const char *dir; /* the broker's SHMB_DIR; NULL: $SHMB_DIR, else /run/shmb */
	int wait_ms;     /* how long shmb_connect() waits for a broker to appear:
			    0 one attempt, > 0 up to that long, < 0 as long as it takes */
	int control_timeout_ms; /* how long a call that needs the broker waits for
				   the connection before -ENOTCONN: 0 is 5000,
				   < 0 as long as it takes */
	unsigned redial_base_ms;       /* first redial delay (0: 100); it doubles per
					  failed attempt, randomised by +-30 % */
	unsigned redial_cap_ms;        /* largest redial delay (0: 2000) */
	unsigned connect_timeout_ms;   /* deadline of one connect (0: 2000) */
	unsigned handshake_timeout_ms; /* deadline of HELLO and the reattach of every
					  session (0: 2000) */
};

/*
 * Connect to the broker.  opts may be NULL.  Thread-safe.  Starts the
 * client's connection thread.  With wait_ms > 0 (or < 0) a client started
 * before its broker connects once the broker appears.
 * -ENOENT / -ECONNREFUSED: no broker listens there (with wait_ms: none
 * appeared in time); -ETIMEDOUT: one accepted but did not answer HELLO in
 * time; -EACCES: not allowed to reach its socket; -EPROTONOSUPPORT: the
 * broker speaks another protocol version; -ENAMETOOLONG: the directory's
 * path is too long; -EINVAL: redial_base_ms above redial_cap_ms; -ENOMEM,
 * -EMFILE, -EAGAIN (no thread).
 */
int shmb_connect(const struct shmb_connect_opts *opts, struct shmb_client **out);

/*
 * Close the connection and stop the connection thread.  Every session
 * still open on it is closed first (detached and kept by the broker, or
 * destroyed if ephemeral).  Not to be called while another thread uses
 * the client or its sessions, nor from the event callback.  NULL is a
 * no-op.
 */
void shmb_close(struct shmb_client *c);

/*
 * Drop the connection to the broker now and redial at once; every open
 * session is reattached.  Returns 0 once the new connection is up and
 * reattached, -ENOTCONN if that did not happen within the control timeout
 * (the redial goes on), -EPROTONOSUPPORT or -EACCES if the broker refuses
 * the client for good.  Called from the event callback it returns 0 at
 * once and the redial happens after the callback returns.  Thread-safe.
 */
int shmb_reconnect(struct shmb_client *c);

struct shmb_client_info {
	int connected;          /* 1: the connection to the broker is up and
				   every open session reattached */
	uint32_t attempt_gen;   /* dial attempts so far (the lifecycle machine's
				   generation: +1 before every attempt) */
	uint64_t reconnects;    /* connections completed after the first */
	uint64_t disconnects;   /* connections lost */
	uint32_t failures;      /* failed attempts since the connection was last up */
	uint32_t backoff_ms;    /* while waiting to redial: the current delay, else 0 */
	int last_reason;        /* why the last connection was lost (negative errno;
				   the first reason seen), 0 if none was */
	int last_error;         /* the last failed attempt's error, 0 if none */
	uint64_t broker_id;     /* the broker this client is (or was last) connected to */
};

/* Fill *info.  Thread-safe; returns 0. */
int shmb_client_info(struct shmb_client *c, struct shmb_client_info *info);

/*
 * Events.  The library calls the callback never while it holds a lock, so
 * the callback may call shmb_ functions (except shmb_close() of this
 * client).  SHMB_EV_DISCONNECTED, and SHMB_EV_REATTACHED and SHMB_EV_STALE
 * found by a redial, come from the client's connection thread: while it
 * runs the callback it redials nothing, so a call there that needs the
 * broker does not wait for the connection (-ENOTCONN if it is down).  The
 * other events come in the thread of the call that noticed them.
 *   SHMB_EV_STALE         session taken over, destroyed or expired, or (after
 *                         a redial) the broker no longer has it; its calls
 *                         return -ESTALE from now on (once per session)
 *   SHMB_EV_DISCONNECTED  the connection to the broker is lost (once per
 *                         lost connection; the library redials)
 *   SHMB_EV_GAP           drop-oldest: `count` messages were dropped before
 *                         the one shmb_recv() is returning
 *   SHMB_EV_DETACHED      the broker detached this live session (it held
 *                         publishers back longer than --block-timeout);
 *                         seen through shmb_session_fd() (once per session;
 *                         rarely also when the broker dies, just before
 *                         SHMB_EV_DISCONNECTED)
 *   SHMB_EV_REATTACHED    shmb_session_open() resumed an existing session
 *                         (`count` is its new generation), or a redial
 *                         reattached this session (`count` is its
 *                         generation, unchanged): once per session per redial
 *   SHMB_EV_SOURCE_BAD    (since 0.5; brokers with lanes) a publisher's lane
 *                         was found damaged (a forged record, or its file
 *                         cut under this reader): `count` is that
 *                         publisher's session id (src_session); what it
 *                         published after the last good message is lost to
 *                         this session, and its other publishers go on
 */
enum shmb_event_kind {
	SHMB_EV_STALE = 1,
	SHMB_EV_DISCONNECTED = 2,
	SHMB_EV_GAP = 3,
	SHMB_EV_DETACHED = 4,
	SHMB_EV_REATTACHED = 5,
	SHMB_EV_SOURCE_BAD = 6,
};

struct shmb_event {
	int kind;                     /* enum shmb_event_kind */
	struct shmb_session *session; /* NULL for SHMB_EV_DISCONNECTED */
	uint64_t count;
};

typedef void (*shmb_event_fn)(const struct shmb_event *ev, void *arg);

/* Set (or clear, with NULL) the client's event callback.  Thread-safe. */
void shmb_set_event_cb(struct shmb_client *c, shmb_event_fn fn, void *arg);

/* ---- sessions ------------------------------------------------------------ */

enum shmb_policy {
	SHMB_POLICY_DEFAULT = -1,   /* block for a new session; any for a resumed one */
	SHMB_POLICY_BLOCK = 0,      /* a full RX ring holds publishers back: lossless */
	SHMB_POLICY_DROP_OLDEST = 1 /* a full RX ring drops its oldest unread messages;
				       the reader is told how many it missed */
};

#define SHMB_TAKEOVER 0x1u  /* fence off a live owner (its calls get -ESTALE) */
#define SHMB_EPHEMERAL 0x2u /* the broker destroys the session when its owner goes */
#define SHMB_AUTO_ACK 0x4u  /* shmb_recv() acknowledges the message before it */
#define SHMB_FRESH 0x8u     /* destroy an existing session of that name first */

struct shmb_session_opts {
	size_t rx_ring_size; /* bytes, a power of two (4 KiB-1 GiB); 0: broker default */
	size_t tx_ring_size;
	int policy;          /* enum shmb_policy */
	unsigned flags;      /* SHMB_* flags above */
	unsigned spin_us;    /* shmb_recv() spins this long before sleeping (default 5) */
};

/*
 * Open the session `name` of this uid, creating it if it does not exist.
 * If it exists, the caller becomes its new owner: a new generation starts,
 * reading resumes after the last acknowledged message, and publishing
 * continues the session's sequence.  opts may be NULL.  Names are 1-128
 * characters of [A-Za-z0-9._:@-], not starting with '.'.  Thread-safe.
 * -EBUSY: a live process owns it (pass SHMB_TAKEOVER to take it over);
 * -EINVAL: bad name, or ring sizes / policy differ from the session's;
 * -EAGAIN: the previous owner's messages are still being delivered (retry);
 * -EDQUOT: this uid has too many sessions; -EBADMSG: the session is
 * quarantined; -ENOTCONN: no connection to the broker within the control
 * timeout; -EPIPE: the connection was lost twice during the request;
 * -ENOMEM.  The session is reattached by every redial of the client
 * (SHMB_EV_REATTACHED), or reported lost (SHMB_EV_STALE, -ESTALE).
 */
int shmb_session_open(struct shmb_client *c, const char *name, const struct shmb_session_opts *opts,
		      struct shmb_session **out);

/*
 * Detach from the session; the broker keeps it (and keeps receiving into
 * it) for its --session-ttl, so a later open resumes it.  Frees s.
 * Returns 0, -ENOTCONN (no connection to the broker within the control
 * timeout: the broker detaches it when it notices the connection gone),
 * -EPIPE or -ESTALE (the session was taken over or detached by the broker
 * already, or lost); s is freed anyway.
 */
int shmb_session_close(struct shmb_session *s);

/* Delete the session in the broker and free s (freed anyway).  What it
 * published is delivered first, as far as its subscribers have room at
 * that moment (shmb_flush() before it waits for all of it); what it had
 * received and not read goes with it.  0, -ESTALE, -ENOTCONN (not
 * deleted: it is only detached), -EPIPE. */
int shmb_session_destroy(struct shmb_session *s);

/*
 * Subscribe / unsubscribe the session to a topic (1-200 printable
 * characters, no spaces).  A subscription lasts as long as the session.
 * -EINVAL: bad topic name; -EPERM: the topic belongs to another uid;
 * -EDQUOT: this uid has used --max-topics-per-uid topics already;
 * -ENOENT (unsubscribe): not subscribed; -ESTALE: taken over or lost;
 * -ENOTCONN; -EPIPE.  The library remembers the session's topics and
 * subscribes them again at each redial.
 */
int shmb_subscribe(struct shmb_session *s, const char *topic);
int shmb_unsubscribe(struct shmb_session *s, const char *topic);

/* Replace every subscription of the session by these n topics. */
int shmb_subscribe_only(struct shmb_session *s, const char *const *topics, size_t n);

/* ---- messages ------------------------------------------------------------- */

/*
 * Publish len bytes on topic.  timeout_ms: 0 returns -EAGAIN at once when
 * the session's TX ring is full; > 0 waits up to that long; < 0 waits as
 * long as it takes.  On success the message is committed to the TX ring:
 * the broker will deliver it even if this process dies now.
 * -EAGAIN: full (timeout 0); -ETIMEDOUT; -EMSGSIZE: larger than a quarter
 * of the TX ring; -ESTALE: the session was taken over or lost (nothing
 * of this message was sent); -EINVAL / -EPERM: bad or foreign topic.
 * Only the first publish on a topic talks to the broker (to learn its id):
 * that one may return -ENOTCONN or -EPIPE; every later one works in shared
 * memory alone, also while the broker is away.
 */
int shmb_publish(struct shmb_session *s, const char *topic, const void *data, size_t len,
		 int timeout_ms);

#define SHMB_PUB_MORE 0x1u /* write it, commit it with the next call (a batch) */

/*
 * shmb_publish() with flags (since 0.4).  SHMB_PUB_MORE writes the message
 * into the TX ring without committing it: the next shmb_publish() or
 * shmb_publish_flags() without the flag, or shmb_flush(), or closing the
 * session, commits every message written since, at once (one commit, one
 * wake-up of the broker: a batch moves several times faster than the same
 * messages published one by one).  Until then nothing of the batch is
 * delivered, and it is lost if the process dies: "committed once it
 * returns" holds for a batch once it is committed.  A batch that fills
 * the TX ring commits itself and goes on.  If the session was taken over
 * meanwhile, the call that commits returns -ESTALE and the whole open
 * batch is lost.  Errors as shmb_publish(); -EINVAL for unknown flags.
 */
int shmb_publish_flags(struct shmb_session *s, const char *topic, const void *data, size_t len,
		       int timeout_ms, unsigned flags);

struct shmb_msg {
	const void *data;     /* valid until the next shmb_recv() or shmb_ack() */
	size_t len;
	const char *topic;    /* the topic's name when this client knows it, else "";
				 valid as long as the client */
	uint32_t topic_id;
	uint64_t src_broker;  /* (src_broker, src_session, src_seq) identifies the */
	uint64_t src_session; /* message: a redelivery after a crash carries the  */
	uint64_t src_seq;     /* same triple as the first delivery                */
	uint64_t missed;      /* drop-oldest: messages dropped just before this one */
};

/*
 * Receive the next message.  timeout_ms as for shmb_publish(); the call
 * spins for spin_us, then sleeps on a futex.  A message stays
 * unacknowledged (and is delivered again after a crash) until
 * shmb_ack(), or the next shmb_recv() with SHMB_AUTO_ACK.
 * -EAGAIN: none (timeout 0); -ETIMEDOUT; -ESTALE: the session was taken
 * over; -EBADMSG: the RX ring is corrupt (the session is unusable);
 * -ENOTCONN (with shmb_session_fd() in use, timeout 0): the broker
 * detached this session; open it again.  While the connection to the
 * broker is down it waits (or returns -EAGAIN) as when no message came.
 */
int shmb_recv(struct shmb_session *s, struct shmb_msg *m, int timeout_ms);

/*
 * A file descriptor that becomes readable when messages may be waiting,
 * for the application's own poll/epoll loop.  It is an epoll fd owned by
 * the session (do not close it; shmb_session_close() does), and it also
 * becomes readable when the session is taken over or lost.  It stays the
 * same fd across redials; while the connection to the broker is down it
 * stays quiet, and it becomes readable once after each reattach, so a
 * message delivered meanwhile is not missed.  Use: after this call and
 * after every wake-up, call
 * shmb_recv(s, &m, 0) until it returns -EAGAIN, then wait on the fd
 * again; nothing is missed that way.  Returns the fd, or -EMFILE /
 * -ENOMEM.  Not to be called concurrently with shmb_recv() on s.
 */
int shmb_session_fd(struct shmb_session *s);

/*
 * Acknowledge every message received so far: the broker may reuse their
 * space, and they will not be delivered again.  0 or -ESTALE.
 */
int shmb_ack(struct shmb_session *s);

/*
 * Commit an open batch (SHMB_PUB_MORE), then wait until the broker has
 * taken every message published so far out of the TX ring (delivered it
 * to every subscriber).  0, -ETIMEDOUT, -ESTALE.
 */
int shmb_flush(struct shmb_session *s, int timeout_ms);

struct shmb_session_info {
	uint64_t session_id;
	uint32_t generation;   /* +1 at every new owner */
	int created;           /* 1: this open created the session */
	uint64_t rx_acked;     /* RX bytes acknowledged */
	uint64_t tx_next_seq;  /* source sequence the next publish gets */
	uint64_t tx_start_seq; /* first sequence of this generation: every message
				  before it was committed by an earlier owner */
	uint64_t tx_routed_seq;/* the broker has delivered every message below it */
};

/* Fill *info.  Never fails on a valid session (returns 0). */
int shmb_session_info(struct shmb_session *s, struct shmb_session_info *info);

#ifdef __cplusplus
}
#endif

#endif
