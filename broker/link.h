/*
 * broker/link.h - remote links between brokers over TCP (docs/links.md):
 * link.c (link objects, the lifecycle machine, I/O, the loop's entry
 * points), link-data.c, link-dial.c, link-file.c, link-accept.c; what
 * they share among themselves is in link-int.h.
 */
#ifndef BROKER_LINK_H
#define BROKER_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "broker/linkproto.h"
#include "broker/log.h"
#include "broker/loop.h"
#include "libclient/lifecycle.h"
#include "shm/proto.h"

struct broker;
struct session;
struct topic;
struct delivered;

#define LINK_EVENTS 16

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
	struct log_event ev[LINK_EVENTS];
	uint64_t nev;
};

struct link_pending {
	int fd;
	uint32_t gen;
	uint64_t since;
	size_t len;
	uint8_t buf[WIRE_OVERHEAD + 100 + WIRE_NAME_MAX];
	char addr[80];
};

/* The loop's request kinds of links (loop.h); link_start() makes link_cqe
 * their handler. */
enum {
	LINK_OP_ACCEPT = 16, /* the link port's multishot accept */
	LINK_OP_PENDING,     /* an accepted connection before its HELLO (a: index) */
	LINK_OP_RESOLVE,     /* the resolver threads' pipe */
	LINK_OP_CONNECT,     /* a dial's POLLOUT (a: slot, gen: cgen) */
	LINK_OP_IN,          /* a link's socket readable */
	LINK_OP_OUT,         /* ... writable again */
};
_Static_assert(LINK_OP_ACCEPT >= LOOP_KIND_MODULE && LINK_OP_OUT < LOOP_KINDS, "link kinds");
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
/* The router (or, for a lane publisher, the links' reader of lanes)
 * offers message seq of local session src (named src_name, for the log)
 * to link slot i: 0, or -EAGAIN while its replay buffer is full of what
 * the peer has not routed.  A source's messages come in sequence order. */
int link_offer(struct broker *b, unsigned i, uint64_t src, const char *src_name, uint64_t seq,
	       const struct topic *t, const void *payload, uint32_t len);
void link_stop(struct broker *b);
/* Admin (shmbctl links): the link of that name, unless it is still being
 * authenticated (then it does not exist yet); what is shown of it. */
struct link *link_named(struct broker *b, const char *name);
void link_info(const struct broker *b, const struct link *l, struct proto_link_info *i, uint64_t now);
/* After loop_init: arm the listener and resolver, start dialing. */
void link_start(struct broker *b);

#endif
