/*
 * broker/link-int.h - what the files of the links module share among
 * themselves: link.c (link objects, the lifecycle machine and its actions,
 * I/O, the loop's entry points, set-up), link-data.c (bridged topics, the
 * messages each way), link-dial.c (resolving and connecting, --link),
 * link-file.c (the link file links/NAME) and link-accept.c (the link port
 * and the connections still to say their HELLO).
 *
 * Only link*.c include this header.  The rest of the broker sees links
 * through the link_* functions of broker/link.h and nothing else.
 *
 * Must never: be included outside link*.c; declare anything another
 * module calls (that belongs in broker/link.h).
 */
#ifndef SHMB_BROKER_LINK_INT_H
#define SHMB_BROKER_LINK_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "broker/broker.h"
#include "broker/link.h"
#include "shm/clock.h"


/* ---- link.c ---- */
/* One event of the link, for the log and shmbctl links. */
void link_event(struct link *l, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* "host:port" or "[host]:port" of an address, for the log. */
void link_addr_text(const struct sockaddr_storage *a, char *out, size_t n);
/* A new link in the first free slot (NULL: none free, or no memory). */
struct link *link_new(struct broker *b, const char *name, enum wire_role role);
/* Free it, its connection and its file (remove: unlink the file too). */
void link_free(struct broker *b, struct link *l, bool remove);
/* The live link of that name, provisional or not. */
struct link *link_find(struct broker *b, const char *name);
/* Free the links that died (a stranger's, refused): callers are done with them. */
void links_reap(struct broker *b);
/* Feed the link's lifecycle machine one event and carry out its actions. */
void link_step(struct broker *b, struct link *l, const struct lc_event *ev);
/* This connection is over (err: why); see link.c. */
void link_lost(struct broker *b, struct link *l, int err);
/* Read what the link's socket holds and handle it. */
void link_input(struct broker *b, struct link *l);
/* After input: commit deliveries, then count them routed in the file. */
void link_input_done(struct broker *b, struct link *l);
/* Before a connection goes for an error of the protocol's: send what is queued. */
void link_flush_last(struct link *l);
/* The engine refused the peer's input (r): commit, tell the peer, lose the connection. */
void link_proto_error(struct broker *b, struct link *l, int r);
/* Close the link's connection; its io_uring requests are cancelled by tag. */
void link_fd_close(struct broker *b, struct link *l);

/* ---- link-data.c ---- */
/* The engine's callbacks: a DATA frame from the peer; the peer's topic list. */
int link_deliver(void *arg, const struct wire_data *d);
void link_topics(void *arg, const struct wire_topics *t);
/* A link came, went, failed or learnt the peer's topics: every topic's mask again. */
void link_topics_recompute(struct broker *b);

/* ---- link-dial.c ---- */
/* The machine's RESOLVE and CONNECT actions for attempt gen. */
void link_dial_resolve(struct broker *b, struct link *l, uint32_t gen);
void link_dial_connect(struct broker *b, struct link *l, uint32_t gen, uint64_t deadline);
/* The resolver threads' pipe is readable (LINK_OP_RESOLVE). */
void link_dial_resolver_cqe(struct broker *b, bool more);
/* A dial's socket is writable (LINK_OP_CONNECT, l's current connection). */
void link_dial_connect_cqe(struct broker *b, struct link *l, int res);
/* HOST:PORT or [HOST]:PORT into its parts: 0 or -EINVAL. */
int link_split_hostport(const char *s, char *host, size_t hl, char *port, size_t pl);
/* The dialers' links from --link, and the resolver pipe: 0 or -errno (logged). */
int link_dial_setup(struct broker *b);

/* ---- link-file.c ---- */
/* A link name may be a file name in links/: [A-Za-z0-9._-]{1,64}, no leading dot. */
bool link_name_ok(const char *n);
/* Open (or create) its file and give the engine its replay ring: 0 or
 * -errno, why says what went wrong. */
int link_file_load(struct broker *b, struct link *l, bool create, char *why, size_t wl);
/* Unmap and close its file (remove: unlink it too). */
void link_file_close(struct broker *b, struct link *l, bool remove);
/* A stranger's link proved the key: its file takes the link's name. */
void link_file_proved(struct broker *b, struct link *l);
/* Bring back the listeners' links that links/ holds from the last run. */
void link_file_reload(struct broker *b);

/* ---- link-accept.c ---- */
/* Bind and listen on --listen: 0 or -errno (logged). */
int link_accept_setup(struct broker *b);
/* A completion of the link port's accept (LINK_OP_ACCEPT). */
void link_accept_cqe(struct broker *b, int res, bool more);
/* A completion of pending connection i's poll (LINK_OP_PENDING). */
void link_accept_pending_cqe(struct broker *b, unsigned i, uint32_t gen, int res, bool more);
/* Re-arm the accept paused for want of fds, once it has waited. */
void link_accept_resume(struct broker *b, uint64_t now);
/* Close the connections that said no HELLO in time. */
void link_accept_expire(struct broker *b, uint64_t now);
/* When the first pending connection times out (UINT64_MAX: none pending). */
uint64_t link_accept_next_due(const struct broker *b);
/* Close the pending connections and the link port. */
void link_accept_stop(struct broker *b);

#endif
