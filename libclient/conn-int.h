/*
 * libclient/conn-int.h - what the files of the control connection share
 * among themselves: conn.c (connect, close, the machine's entry, the
 * requests), conn-thread.c (the connection thread and the machine's
 * actions) and conn-handshake.c (HELLO and the reattach of the sessions).
 *
 * Only conn*.c include this header.  client.c sees the connection through
 * the conn_* functions of client.h and nothing else.
 *
 * Must never: be included outside conn*.c; declare anything client.c
 * calls (that belongs in client.h).
 */
#ifndef LIBCLIENT_CONN_INT_H
#define LIBCLIENT_CONN_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "libclient/client.h"

/* A relative time in ns as ppoll() takes it. */
static inline struct timespec conn_timespec(uint64_t ns)
{
	return (struct timespec){ .tv_sec = (time_t)(ns / 1000000000ull),
				  .tv_nsec = (long)(ns % 1000000000ull) };
}

/* ---- conn-thread.c ---- */

/* The connection thread of client arg, started by shmb_connect(); it
 * ends when shmb_close() set c->stop and the queue is empty. */
void *conn_main(void *arg);

/* An attempt to connect ended, up or with err: counted, and the waiters
 * of shmb_connect() woken. */
void conn_attempt_ended(struct shmb_client *c, int err, bool up);

/* ---- conn-handshake.c ---- */

/* The machine's HANDSHAKE action on fd (attempt gen of entry e), to be
 * done by deadline; its outcome is fed to the machine. */
void conn_handshake(struct shmb_client *c, struct lc_entry *e, int fd, uint32_t gen,
		    uint64_t deadline);

#endif
