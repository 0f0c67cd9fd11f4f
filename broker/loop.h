/*
 * broker/loop.h - shmbd's event loop (loop.c): io_uring for the control
 * socket, connections, pidfds, the sessions' futex words and signals;
 * other modules' requests go through loop_poll/loop_accept/loop_cancel,
 * tagged with a kind of their own whose completions go to the handler
 * they registered with loop_on.
 */
#ifndef BROKER_LOOP_H
#define BROKER_LOOP_H

#include <stdbool.h>
#include <stdint.h>

struct io_uring_sqe;

struct broker;
struct conn;
struct session;

int loop_init(struct broker *b);
int loop_run(struct broker *b);
void loop_watch_conn(struct broker *b, struct conn *c, int slot);
/* cancel the watches of loop_watch_conn (c is about to be freed) */
void loop_unwatch_conn(struct broker *b, struct conn *c);
void loop_cancel_session(struct broker *b, struct session *s);

/* Request kinds: below LOOP_KIND_MODULE the loop's own; from there on
 * other modules' (exit.h, link.h), each with its handler. */
#define LOOP_KIND_MODULE 8
#define LOOP_KINDS 64
/* A completion of a module's request: its kind, the tag it gave (a: 24
 * bits, gen), and io_uring's result and IORING_CQE_F_MORE. */
typedef void loop_handler(struct broker *b, unsigned kind, unsigned a, uint32_t gen, int res,
			  bool more);
/* From now on completions of kind go to fn (set up before the first request). */
void loop_on(struct broker *b, unsigned kind, loop_handler *fn);
/* A free submission entry of the ring (submitting what is queued when it
 * is full); NULL when even that frees none. */
struct io_uring_sqe *loop_sqe(struct broker *b);
/* Poll fd for events (once, or multishot until cancelled). */
void loop_poll(struct broker *b, int fd, unsigned events, bool multishot, unsigned kind, unsigned a,
	       uint32_t gen);
/* A multishot accept on the listening socket fd. */
void loop_accept(struct broker *b, int fd, unsigned kind, unsigned a, uint32_t gen);
/* Cancel the request tagged (kind, a, gen); its completion still comes, -ECANCELED. */
void loop_cancel(struct broker *b, unsigned kind, unsigned a, uint32_t gen);

#endif
