/*
 * broker/session-tx.c - a session's TX files and the generation switch:
 * create and adopt tx.<generation>, cut the old owner off (the fence),
 * drain what it committed before anything of the new owner's, and where
 * a new owner starts reading RX.
 *
 * Must never: read past the recorded cut of a draining file, whatever its
 * old owner writes there; switch to a new TX file before the old one is
 * cut; have more than one generation draining (a further new owner waits
 * with -EAGAIN).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/ctl-lanes.h"
#include "broker/guard.h"
#include "broker/harden.h"
#include "broker/log.h"
#include "broker/router.h"
#include "broker/session-int.h"
#include "broker/session.h"
#include "shm/atomics.h"
#include "shm/futex.h"

/* Create tx.<gen> for a new owner; rx_acked and the first sequence carry on. */
int session_tx_create(struct session *s, uint32_t gen, uint64_t start_seq, uint64_t rx_acked,
		      struct segment *out)
{
	char name[32];
	uint64_t tx_size = s->rx.len ? ((struct shm_seg_hdr *)s->rx.base)->tx_ring_size : 0;
	int r;

	snprintf(name, sizeof(name), "tx.%u", gen);
	unlinkat(s->dirfd, name, 0);
	r = segment_create(s->dirfd, name, segment_file_size(tx_size), out);
	if (r < 0)
		return r;
	r = segment_tx_format(out, s->id, gen, tx_size, start_seq);
	if (r < 0) {
		segment_unmap(out);
		unlinkat(s->dirfd, name, 0);
		return r;
	}
	/* the new owner reads on from what the last one acknowledged */
	segment_tx_ctrl(out)->rx_acked = rx_acked;
	return 0;
}

/* Switch the broker's TX reading to a freshly created file. */
int session_tx_adopt(struct session *s, struct segment *tx, uint32_t gen, uint64_t start_seq)
{
	struct ring r;
	int ret;

	ret = ring_init(&r, segment_ring_data(tx), tx->len - SHM_RING_OFFSET);
	if (ret < 0)
		return ret;
	s->tx = *tx;
	s->txc = segment_tx_ctrl(&s->tx);
	if (guard_add(s->tx.base, s->tx.len, s) < 0)
		return -ENOMEM;
	/* every block was reserved at creation: a later loss is a client's doing */
	ret = harden_note(s->tx.fd, &s->tx_blocks);
	if (ret < 0)
		return ret;
	/* commit words only: the client's published position is a hint */
	ret = ring_cons_init(&s->tx_cons, &r, NULL, &s->rxc->tx_read, 0, start_seq, gen, gen);
	if (ret < 0)
		return ret;
	/* (after the generation is out) the new file is read from its start;
	 * tx_read_gen last: until it names this generation, a restart reads
	 * the file from its start whatever the two words say */
	store_release(&s->rxc->tx_read_seq, start_seq);
	store_release(&s->rxc->tx_read, 0);
	store_release(&s->rxc->tx_read_gen, gen);
	s->rx_prod.cons_pos = &s->txc->rx_acked;
	s->tx_open = true;
	s->futex_armed = false;
	return 0;
}

void session_tx_drop(struct session *s)
{
	char name[32];

	if (!s->tx_open && !s->tx.base)
		return;
	snprintf(name, sizeof(name), "tx.%u", s->generation);
	guard_remove(s->tx.base);
	segment_unmap(&s->tx);
	unlinkat(s->dirfd, name, 0);
	s->txc = NULL;
	s->tx_open = false;
	s->futex_armed = false;
}

/*
 * Cut the current owner off: walk over every record it committed, and
 * swap the fence marker into the slot after the last one.  A commit that
 * races with the swap either lands first (then the walk goes on) or fails
 * with -ESTALE in the client: nothing it was told "sent" is lost.
 */
static int tx_cut(struct session *s, uint64_t *end_pos, uint64_t *end_seq)
{
	/* each retry walks on from where the last walk ended, not from the start */
	uint64_t pos = s->tx_cons.pos, seq = s->tx_cons.seq;

	for (int tries = 0; tries < 1000; tries++) {
		struct ring_cons c;
		int r;

		r = ring_recover(&s->tx_cons.r, s->tx_cons.pos, &pos, &seq, s->generation, s->generation);
		if (r < 0)
			return r;
		r = ring_cons_init(&c, &s->tx_cons.r, NULL, NULL, pos, seq, s->generation, s->generation);
		if (r < 0)
			return r;
		if (ring_fence(&c) == 0) {
			*end_pos = pos;
			*end_seq = seq;
			return 0;
		}
	}
	return -EAGAIN;
}

void session_rx_start(struct session *s, uint64_t *pos, uint64_t *seq)
{
	struct ring_prod *p = &s->rx_prod;
	struct ring_cons c;
	struct ring_msg m;
	uint64_t free_bytes;

	/* past what was acknowledged, and past what drop-oldest dropped */
	(void)ring_prod_free(p, &free_bytes);
	*pos = p->cons_cache;
	*seq = RING_SEQ_ANY;
	if (*pos >= p->pos)
		*seq = p->seq;
	else if (ring_cons_init(&c, &p->r, NULL, NULL, *pos, RING_SEQ_ANY, 1, UINT32_MAX) == 0 &&
		 ring_peek(&c, &m) == 0)
		*seq = m.hdr.seq; /* our own ring: readable, nothing overwrites it now */
}

void session_drain_done(struct session *s)
{
	char name[32];

	if (!s->drain_gen)
		return;
	/* the record first, then the file: a crash between leaves a stray
	 * file that a restart removes, never a drain without its file */
	store_release(&s->rxc->drain_generation, 0);
	snprintf(name, sizeof(name), "tx.%u", s->drain_gen);
	guard_remove(s->drain_tx.base);
	segment_unmap(&s->drain_tx);
	unlinkat(s->dirfd, name, 0);
	s->drain_gen = 0;
}

/* The current TX file, cut at end_pos (end_seq: the sequence there),
 * becomes the draining one: delivered up to its cut before anything new. */
static void drain_start(struct session *s, uint64_t end_pos, uint64_t end_seq)
{
	s->drain_tx = s->tx;
	s->drain_blocks = s->tx_blocks;
	s->drain_cons = s->tx_cons;
	s->drain_cons.cons_pos = &s->rxc->drain_read;
	/* never read past the cut, whatever the old owner writes there;
	 * the cut is recorded where the old owner cannot write */
	s->drain_end = end_pos;
	s->drain_cons.prod_pos = &s->drain_end;
	s->drain_cons.prod_cache = s->drain_cons.pos;
	s->drain_gen = s->generation;
	store_release(&s->rxc->drain_read_seq, s->drain_cons.seq);
	store_release(&s->rxc->drain_read, s->drain_cons.pos);
	store_release(&s->rxc->drain_end_seq, end_seq);
	store_release(&s->rxc->drain_end, end_pos);
	store_release(&s->rxc->drain_generation, s->drain_gen);
	s->tx = (struct segment)SEGMENT_INIT;
	s->txc = NULL;
	s->tx_open = false;
}

/*
 * A new owner: cut the old TX file off, give the session a new generation
 * and a new TX file whose sequence continues where the old one ended, or
 * where the old generation's lanes ended if they went further (a lane
 * publisher commits nothing to its TX file).  What the old owner committed
 * and the router has not delivered yet is delivered from the old file
 * first (docs/design/owners.md, draining); one such drain at a time, so a
 * further new owner meanwhile gets -EAGAIN.
 */
int session_new_generation(struct broker *b, struct session *s)
{
	struct segment tx = SEGMENT_INIT;
	uint32_t gen = s->generation + 1, old_gen;
	uint64_t end_seq = s->tx_cons.seq, end_pos = s->tx_cons.pos, start_seq, acked;
	bool unlink_old = false;
	int r;

	if (s->drain_gen) {
		router_session(b, s);
		if (s->drain_gen)
			return -EAGAIN;
	}
	if (s->tx_open) {
		router_session(b, s);
		r = tx_cut(s, &end_pos, &end_seq);
		if (r < 0)
			return r;
	}
	/* the old generation's lanes fenced too, before the sequence is
	 * chosen: fenced, they take no more commits, so their last orders
	 * are final (data-path.md, section 7, "Owner switches"); CUT is
	 * stored after the commit point.  A detached owner that died had its
	 * lanes cut then: s->lanes_next_seq kept their orders */
	ctl_lanes_fence(b, s, s->generation);
	start_seq = end_seq > s->lanes_next_seq ? end_seq : s->lanes_next_seq;
	/* what the last owner acknowledged, read now (and checked) from its file */
	{
		uint64_t free_bytes;

		if (ring_prod_free(&s->rx_prod, &free_bytes) < 0)
			log_msg(LOG_WARNING, "session %s: impossible rx_acked left by its last owner;"
				" resuming from the last valid one", s->name);
	}
	acked = s->rx_prod.cons_cache;
	r = session_tx_create(s, gen, start_seq, acked, &tx);
	if (r < 0)
		return r;
	loop_cancel_session(b, s);
	old_gen = s->generation;
	if (s->tx_open && s->tx_cons.pos != end_pos) {
		drain_start(s, end_pos, end_seq);
	} else if (s->tx_open || s->tx.base) {
		/* unmapped now, unlinked once the new generation is out: a crash
		 * before that finds the old file whole (recovery.md) */
		guard_remove(s->tx.base);
		segment_unmap(&s->tx);
		s->txc = NULL;
		s->tx_open = false;
		s->futex_armed = false;
		unlink_old = true;
	}
	/* the commit point of the switch; wake every reader: a fenced owner
	 * learns -ESTALE, others re-check */
	s->generation = gen;
	store_release(&s->rxc->generation, gen);
	/* after it: the old generation's fenced lanes CUT, their readers and
	 * its tx_wake woken (a fenced writer asleep learns -ESTALE) */
	ctl_lanes_session_end(b, s, old_gen, CTL_LANES_ENDED);
	r = session_tx_adopt(s, &tx, gen, start_seq);
	if (r < 0) {
		segment_unmap(&tx);
		return r;
	}
	if (unlink_old) {
		char name[32];

		snprintf(name, sizeof(name), "tx.%u", old_gen);
		unlinkat(s->dirfd, name, 0);
	}
	fetch_add_release(&s->rxc->rx_signal, 1);
	fetch_add_release(&s->rxc->tx_space_signal, 1);
	futex_wake(&s->rxc->rx_signal, 0x7fffffff);
	futex_wake(&s->rxc->tx_space_signal, 0x7fffffff);
	/* the old generation's lane reader sleeps on its rx_wake alone (the
	 * new owner's takes its holds over only once it is answered) */
	ctl_lanes_wake_reader(s);
	return 0;
}

/* Has the router taken every committed record out of its TX file(s)? */
bool session_tx_drained(struct session *s)
{
	struct ring_msg m;

	if (s->drain_gen)
		return false;
	return !s->tx_open || s->quarantined || ring_peek(&s->tx_cons, &m) < 0;
}

