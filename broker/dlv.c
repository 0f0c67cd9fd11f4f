/*
 * broker/dlv.c - delivery tables: for each subscriber, what it has been
 * given of each source (broker id, session id) still in flight to it, so
 * that a fan-out cut short by a full subscriber, or by a broker crash,
 * never delivers a record twice (docs/recovery.md).  The broker keeps the
 * table in memory (struct delivered) and mirrors it into the subscriber's
 * rx file (struct shm_dlv_table) once the RX records it covers are
 * committed.
 *
 * Must never: let the rx file's table run ahead of the committed RX
 * records; reuse an entry whose source may still route a record it covers.
 */
#include <stdlib.h>

#include "broker/broker.h"
#include "broker/dlv.h"
#include "broker/link.h"
#include "broker/session.h"
#include "shm/atomics.h"

/* Where a publisher's routing stands: the next source sequence it will route. */
static uint64_t routing_seq(const struct session *pub)
{
	return pub->drain_gen ? pub->drain_cons.seq : pub->tx_cons.seq;
}

void dlv_free(struct session *sub, unsigned k)
{
	sub->dlv[k] = (struct delivered){ 0 };
	/* free first: a slot never says one source with another's sequence */
	if (sub->dlv_shm) {
		store_release(&sub->dlv_shm->ent[k].src_session, 0);
		store_release(&sub->dlv_shm->ent[k].next_seq, 0);
	}
	if (sub->dlv_touched == (int)k)
		sub->dlv_touched = -1;
}

/*
 * The entry for (sub, src).  A new one takes a free slot, or one no longer
 * needed: its source is gone or has routed past it, so no record it
 * covers can be routed again.  NULL when all SHM_DLV_MAX are needed (the
 * publisher waits) or on ENOMEM.
 */
struct delivered *dlv_get(struct broker *b, struct session *sub, uint64_t broker, uint64_t src)
{
	int free_k = -1;

	if (!sub->dlv && !(sub->dlv = calloc(SHM_DLV_MAX, sizeof(*sub->dlv))))
		return NULL;
	for (unsigned i = 0; i < sub->ndlv; i++) {
		if (sub->dlv[i].src_session == src && sub->dlv[i].src_broker == broker)
			return &sub->dlv[i];
		if (free_k < 0 && sub->dlv[i].src_session == 0)
			free_k = (int)i;
	}
	if (free_k < 0 && sub->ndlv < SHM_DLV_MAX)
		free_k = (int)sub->ndlv++;
	for (unsigned i = 0; free_k < 0 && i < sub->ndlv; i++) {
		struct session *o;

		if (sub->dlv[i].src_broker != b->broker_id)
			continue; /* a remote source: never known to be done */
		o = session_by_id(b, sub->dlv[i].src_session);
		if (!o || routing_seq(o) >= sub->dlv[i].seq) {
			dlv_free(sub, i);
			free_k = (int)i;
		}
	}
	/* all needed: a remote source's entry goes, unless a message of it
	 * is half delivered (its replays after a broker crash may then be
	 * delivered twice: docs/links.md) */
	for (unsigned i = 0; free_k < 0 && i < sub->ndlv; i++)
		if (sub->dlv[i].src_broker != b->broker_id && i != (unsigned)sub->dlv_touched &&
		    !link_in_flight(b, sub->dlv[i].src_broker, sub->dlv[i].src_session)) {
			dlv_free(sub, i);
			free_k = (int)i;
		}
	if (free_k < 0)
		return NULL;
	sub->dlv[free_k] = (struct delivered){ .src_broker = broker, .src_session = src, .seq = 0 };
	return &sub->dlv[free_k];
}

/* After sub's RX commit: the changed entry, then the position it is good to. */
void dlv_sync(struct session *sub)
{
	struct shm_dlv_table *t = sub->dlv_shm;

	if (!t)
		return;
	if (sub->dlv_touched >= 0) {
		struct shm_dlv *e = &t->ent[sub->dlv_touched];
		const struct delivered *d = &sub->dlv[sub->dlv_touched];

		/* a free slot ({0, 0}) being taken gets its sequence before its name */
		store_release(&e->next_seq, d->seq);
		if (e->src_session != d->src_session || e->src_broker != d->src_broker) {
			e->src_broker = d->src_broker;
			store_release(&e->src_session, d->src_session);
		}
		if (t->n < sub->ndlv)
			store_release(&t->n, sub->ndlv);
		sub->dlv_touched = -1;
	}
	/* the sequence first: a restart walks from pos and believes the record
	 * it finds there over this word (recovery.md) */
	store_release(&t->seq, sub->rx_prod.seq);
	store_release(&t->pos, sub->rx_prod.pos);
	store_release(&sub->rxc->rx_write_seq, sub->rx_prod.seq);
}

void dlv_forget(struct broker *b, uint64_t src_broker, uint64_t src_session)
{
	for (unsigned i = 0; i < b->nsessions; i++) {
		struct session *o = b->sessions[i];

		for (unsigned k = 0; k < o->ndlv; k++)
			if (o->dlv[k].src_session == src_session && o->dlv[k].src_broker == src_broker)
				dlv_free(o, k);
	}
}
