/*
 * broker/broker.h - shmbd's root object: the options it runs with and
 * the broker itself, which holds every table (connections, sessions,
 * topics, links).  One thread owns all of it (the io_uring loop in
 * loop.c); nothing here is locked.  Each module declares its own objects
 * and functions in its own header (session.h, topic.h, link.h, ...).
 */
#ifndef BROKER_BROKER_H
#define BROKER_BROKER_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "broker/exit.h"
#include "broker/linkauth.h"
#include "broker/loop.h"
#include "broker/wire.h"

struct conn;
struct session;
struct topic;
struct uid_count;
struct link;
struct link_pending;
struct lanes_reg;
struct lbridge;

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
	bool no_landlock;            /* hand clients plain descriptors (tests, old kernels) */
	bool lanes;                  /* the direct data path (ctl-lanes.c); off: --no-lanes */
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

#define BROKER_MAX_CONNS 4096
#define BROKER_MAX_CONNS_PER_UID 256
#define BROKER_MAX_LINKS 64
#define LINK_PENDING 16        /* link connections still to say their HELLO */

struct broker {
	struct broker_opts o;
	struct io_uring ring;
	bool uring_futex;
	int dirfd, sessions_dirfd, lockfd;
	int listen_fd, signal_fd;
	uint64_t broker_id;
	bool landlock;         /* clients' TX descriptors cannot be truncated (harden.c) */
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
	loop_handler *handler[LOOP_KINDS]; /* other modules' io_uring completions (loop.h) */

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
	struct lanes_reg *lanes; /* the register of lanes (ctl-lanes.c); NULL when off */
	struct lbridge *lanes_bridge; /* the links' reader of lanes (lanes-bridge.c) */
};

#endif
