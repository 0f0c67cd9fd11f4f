/*
 * broker/session-int.h - what the files of the session module share
 * (session.c, session-tx.c, adopt.c) and nothing else includes: the
 * table, a blank session, and a session's TX files.
 */
#ifndef BROKER_SESSION_INT_H
#define BROKER_SESSION_INT_H

#include "broker/broker.h"
#include "broker/session.h"

/* RX records are stamped with the broker's writer generation. */
#define RX_WRITER_GEN 1u

/* A session with nothing mapped or open yet: every fd -1, every segment
 * empty, so that undoing it part-way is always safe. */
void session_blank(struct session *s);
/* Put s in the broker's table: 0 or -ENOMEM. */
int session_table_add(struct broker *b, struct session *s);

/* Create tx.<gen> for a new owner; rx_acked and the first sequence carry on. */
int session_tx_create(struct session *s, uint32_t gen, uint64_t start_seq, uint64_t rx_acked,
		      struct segment *out);
/* Switch the broker's TX reading to a freshly created file. */
int session_tx_adopt(struct session *s, struct segment *tx, uint32_t gen, uint64_t start_seq);
/* Unmap and unlink the current TX file, if there is one. */
void session_tx_drop(struct session *s);
/* A new owner: a new generation and a new TX file (-EAGAIN while a drain
 * of an older one goes on). */
int session_new_generation(struct broker *b, struct session *s);

#endif
