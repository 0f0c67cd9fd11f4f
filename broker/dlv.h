/*
 * broker/dlv.h - delivery tables (dlv.c): what each subscriber was given
 * of each source still in flight to it.
 */
#ifndef BROKER_DLV_H
#define BROKER_DLV_H

#include <stdint.h>

struct broker;
struct session;
struct delivered;

/* The entry for (sub, source); NULL when every entry is still needed (the
 * publisher waits) or out of memory. */
struct delivered *dlv_get(struct broker *b, struct session *sub, uint64_t src_broker,
			  uint64_t src_session);
/* Free sub's entry k (its source is gone or done). */
void dlv_free(struct session *sub, unsigned k);
/* After sub's RX commit: mirror the changed entry and the position it is
 * good to into the rx file. */
void dlv_sync(struct session *sub);
/* A source is gone: no subscriber keeps an entry for it. */
void dlv_forget(struct broker *b, uint64_t src_broker, uint64_t src_session);

#endif
