/*
 * shm/ring.c - the SPSC record ring (see ring.h for the protocol).
 *
 * Must never: read a length from shared memory and use it before checking
 * it; touch a byte outside [data, data + size); publish a record before
 * its payload; store into a commit word other than by the CAS that
 * commits it, the zeroing of the next slot, or the fence.
 */
#include <errno.h>
#include <string.h>

#include "shm/atomics.h"
#include "shm/ring.h"

static inline uint64_t *ring_word(const struct ring *r, uint64_t pos)
{
	return (uint64_t *)(r->data + (pos & r->mask));
}

int ring_init(struct ring *r, void *data, uint64_t size)
{
	if (!data || ((uintptr_t)data % SHM_REC_ALIGN) != 0)
		return -EINVAL;
	if (size < SHM_RING_MIN || size > SHM_RING_MAX || (size & (size - 1)) != 0)
		return -EINVAL;
	r->data = data;
	r->size = size;
	r->mask = size - 1;
	r->max_rec = (uint32_t)(size / RING_MAX_REC_DIV);
	return 0;
}

/* ---- producer ---------------------------------------------------------- */

int ring_prod_init(struct ring_prod *p, const struct ring *r, const uint64_t *cons_pos,
		   uint64_t *prod_pos, uint64_t pos, uint64_t seq, uint32_t gen)
{
	return ring_prod_init_floor(p, r, cons_pos, prod_pos, pos, seq, gen, 0);
}

int ring_prod_init_floor(struct ring_prod *p, const struct ring *r, const uint64_t *cons_pos,
			 uint64_t *prod_pos, uint64_t pos, uint64_t seq, uint32_t gen,
			 uint64_t floor)
{
	uint64_t cons, cache;

	if (pos % SHM_REC_ALIGN)
		return -EINVAL;
	/* pairs with the consumer's ring_release() */
	cons = load_acquire(cons_pos);
	if (cons > pos || cons % SHM_REC_ALIGN || floor > pos || floor % SHM_REC_ALIGN)
		return -EBADMSG;
	/* a reader behind the floor (drop-oldest) lost what lies before it */
	cache = cons > floor ? cons : floor;
	/* a producer never gets closer than 8 bytes to a full lap */
	if (pos - cache > r->size - SHM_REC_ALIGN)
		return -EBADMSG;
	*p = (struct ring_prod){
		.r = *r,
		.cons_pos = cons_pos,
		.prod_pos = prod_pos,
		.pos = pos,
		.seq = seq,
		.rsv = pos,
		.rsv_seq = seq,
		.cons_cache = cache,
		.cons_raw = cons,
		.gen = gen,
	};
	return 0;
}

/*
 * Re-read the consumer's position.  It belongs to the other process, so
 * it is checked: it may only move forward, stay 8-byte aligned and not
 * pass what we committed.
 */
static int prod_refresh(struct ring_prod *p)
{
	/* pairs with the consumer's store_release in ring_release() */
	uint64_t cons = load_acquire(p->cons_pos);

	if (cons < p->cons_raw || cons > p->pos || cons % SHM_REC_ALIGN)
		return -EBADMSG;
	p->cons_raw = cons;
	if (cons > p->cons_cache)
		p->cons_cache = cons;
	return 0;
}

void ring_prod_set_floor(struct ring_prod *p, uint64_t pos)
{
	if (pos > p->cons_cache && pos <= p->pos)
		p->cons_cache = pos;
}

int ring_prod_free(struct ring_prod *p, uint64_t *out)
{
	int r = prod_refresh(p);

	if (r < 0)
		return r;
	*out = p->r.size - (p->rsv - p->cons_cache);
	return 0;
}

int ring_prod_room(struct ring_prod *p, uint32_t *max_payload)
{
	uint64_t used, avail, to_end, a, wrapped;
	int r = prod_refresh(p);

	if (r < 0)
		return r;
	used = p->rsv - p->cons_cache;
	/* ring_reserve's 8 bytes of headroom */
	avail = p->r.size > used + sizeof(uint64_t) ? p->r.size - used - sizeof(uint64_t) : 0;
	to_end = p->r.size - (p->rsv & p->r.mask);
	/* where it is now, or after padding to the end (only for a record
	 * that does not fit before the end) */
	a = to_end < avail ? to_end : avail;
	wrapped = avail > to_end ? avail - to_end : 0;
	if (wrapped > a)
		a = wrapped;
	a &= ~(uint64_t)(SHM_REC_ALIGN - 1);
	if (a < SHM_REC_HDR_SIZE)
		return -EAGAIN;
	a -= SHM_REC_HDR_SIZE;
	*max_payload = a < ring_max_payload(&p->r) ? (uint32_t)a : ring_max_payload(&p->r);
	return 0;
}

/*
 * Write the commit word of the record at pos: held back if it opens the
 * batch (the CAS in ring_commit() publishes it), written directly if an
 * uncommitted record before it keeps it invisible.
 */
static void prod_set_commit(struct ring_prod *p, uint64_t pos, uint64_t word)
{
	if (pos == p->pos)
		p->first_commit = word;
	else
		store_relaxed(ring_word(&p->r, pos), word);
}

int ring_reserve(struct ring_prod *p, uint32_t payload_len, uint16_t type, uint16_t flags,
		 void **payload)
{
	uint64_t len, alen, to_end, pad, need;
	struct shm_rec_hdr *h;
	int r;

	if (payload_len > ring_max_payload(&p->r))
		return -EMSGSIZE;
	len = (uint64_t)payload_len + SHM_REC_HDR_SIZE;
	alen = ring_align(len);
	to_end = p->r.size - (p->rsv & p->r.mask);
	pad = alen > to_end ? to_end : 0;
	/* 8 bytes of headroom: the next record's commit word gets zeroed */
	need = pad + alen + sizeof(uint64_t);
	if (p->rsv + need - p->cons_cache > p->r.size) {
		r = prod_refresh(p);
		if (r < 0)
			return r;
		if (p->rsv + need - p->cons_cache > p->r.size)
			return -EAGAIN;
	}
	if (pad) {
		prod_set_commit(p, p->rsv, shm_commit_word(SHM_COMMIT_PAD | (uint32_t)pad, p->rsv_seq));
		p->rsv += pad;
	}
	h = (struct shm_rec_hdr *)ring_word(&p->r, p->rsv);
	h->type = type;
	h->flags = flags;
	h->gen = p->gen;
	h->seq = p->rsv_seq;
	prod_set_commit(p, p->rsv, shm_commit_word((uint32_t)len, p->rsv_seq));
	*payload = h + 1;
	p->rsv += alen;
	p->rsv_seq++;
	return 0;
}

int ring_commit(struct ring_prod *p)
{
	uint64_t expected = 0;

	if (p->rsv == p->pos)
		return 0;
	/* the slot after the batch reads "empty" before the batch is visible;
	 * the release of the CAS below orders this store before it */
	store_relaxed(ring_word(&p->r, p->rsv), 0);
	/* pairs with load_acquire of the commit word in ring_peek() */
	if (!cas_release(ring_word(&p->r, p->pos), &expected, p->first_commit)) {
		ring_abort(p);
		return expected == SHM_COMMIT_FENCED ? -ESTALE : -EBADMSG;
	}
	p->pos = p->rsv;
	p->seq = p->rsv_seq;
	p->first_commit = 0;
	if (p->prod_pos)
		/* pairs with load_acquire of prod_pos in ring_peek() */
		store_release(p->prod_pos, p->pos);
	return 0;
}

void ring_abort(struct ring_prod *p)
{
	p->rsv = p->pos;
	p->rsv_seq = p->seq;
	p->first_commit = 0;
}

int ring_write(struct ring_prod *p, const void *buf, uint32_t len, uint16_t type)
{
	void *dst;
	int r = ring_reserve(p, len, type, 0, &dst);

	if (r < 0)
		return r;
	if (len)
		memcpy(dst, buf, len);
	return ring_commit(p);
}

/* ---- consumer ---------------------------------------------------------- */

int ring_cons_init(struct ring_cons *c, const struct ring *r, const uint64_t *prod_pos,
		   uint64_t *cons_pos, uint64_t pos, uint64_t seq, uint32_t gen_min,
		   uint32_t gen_max)
{
	if (pos % SHM_REC_ALIGN || gen_min > gen_max)
		return -EINVAL;
	*c = (struct ring_cons){
		.r = *r,
		.prod_pos = prod_pos,
		.cons_pos = cons_pos,
		.pos = pos,
		.seq = seq,
		.prod_cache = pos,
		.gen_min = gen_min,
		.gen_max = gen_max,
	};
	return 0;
}

/*
 * Read and check the record at *pos, expecting sequence seq.  Skips one
 * padding record.  Never reads outside the ring, never reads at or past
 * the producer's published position when there is one.
 */
static int cons_read_at(struct ring_cons *c, uint64_t pos, uint64_t seq, struct ring_msg *m)
{
	const struct ring *r = &c->r;
	uint64_t commit, to_end, alen;
	uint32_t len;
	bool padded = false;

again:
	if (c->prod_pos && pos >= c->prod_cache) {
		/* pairs with store_release of prod_pos in ring_commit() */
		uint64_t prod = load_acquire(c->prod_pos);

		if (prod < pos || prod - pos > r->size - SHM_REC_ALIGN || prod % SHM_REC_ALIGN)
			return -EBADMSG;
		c->prod_cache = prod;
		if (prod == pos)
			/* nothing published; but a fenced ring says so even here */
			return load_acquire(ring_word(r, pos)) == SHM_COMMIT_FENCED ? -ESTALE : -EAGAIN;
	}
	/* pairs with the producer's cas_release in ring_commit() */
	commit = load_acquire(ring_word(r, pos));
	if (commit == 0)
		/* published as written, yet empty: the producer's word lies */
		return c->prod_pos ? -EBADMSG : -EAGAIN;
	if (commit == SHM_COMMIT_FENCED)
		return -ESTALE;
	len = shm_commit_len(commit);
	to_end = r->size - (pos & r->mask);
	if (seq != RING_SEQ_ANY && shm_commit_seq_lo(commit) != (uint32_t)seq)
		return -EBADMSG;
	if (len & SHM_COMMIT_PAD) {
		/* a pad fills exactly the tail of the ring, once */
		if (padded || (pos & r->mask) == 0 || (len & ~SHM_COMMIT_PAD) != to_end)
			return -EBADMSG;
		padded = true;
		pos += to_end;
		goto again;
	}
	if (len < SHM_REC_HDR_SIZE || len > r->max_rec)
		return -EBADMSG;
	alen = ring_align(len);
	if (alen > to_end)
		return -EBADMSG;
	if (c->prod_pos && pos + alen > c->prod_cache)
		return -EBADMSG;
	/* one copy of the header; only the copy is checked and used */
	memcpy(&m->hdr, ring_word(r, pos), sizeof(m->hdr));
	m->hdr.commit = commit;
	if (m->hdr.type == 0 || m->hdr.type > SHM_REC_TYPE_MAX)
		return -EBADMSG;
	if (m->hdr.gen < c->gen_min || m->hdr.gen > c->gen_max)
		return -EBADMSG;
	if ((uint32_t)m->hdr.seq != shm_commit_seq_lo(commit) || m->hdr.seq >= RING_SEQ_ANY - 1)
		return -EBADMSG;
	if (seq != RING_SEQ_ANY && m->hdr.seq != seq)
		return -EBADMSG;
	m->payload = r->data + (pos & r->mask) + SHM_REC_HDR_SIZE;
	m->len = len - SHM_REC_HDR_SIZE;
	m->pos = pos;
	m->end = pos + alen;
	return 0;
}

int ring_peek(struct ring_cons *c, struct ring_msg *m)
{
	return cons_read_at(c, c->pos, c->seq, m);
}

int ring_peek_batch(struct ring_cons *c, struct ring_msg *m, unsigned n)
{
	uint64_t pos = c->pos, seq = c->seq;
	unsigned i;
	int r;

	for (i = 0; i < n; i++) {
		r = cons_read_at(c, pos, seq, &m[i]);
		if (r < 0)
			return i ? (int)i : r;
		pos = m[i].end;
		seq = m[i].hdr.seq + 1;
	}
	return (int)i;
}

void ring_release(struct ring_cons *c)
{
	if (c->cons_pos)
		/* pairs with load_acquire of cons_pos in prod_refresh() */
		store_release(c->cons_pos, c->pos);
}

int ring_read(struct ring_cons *c, void *buf, uint32_t cap, struct ring_msg *m)
{
	int r = ring_peek(c, m);

	if (r < 0)
		return r;
	if (m->len > cap)
		return -EMSGSIZE;
	memcpy(buf, m->payload, m->len);
	ring_consume(c, m);
	ring_release(c);
	return 0;
}

int ring_fence(struct ring_cons *c)
{
	uint64_t expected = 0;

	/* pairs with the producer's cas_release: exactly one of the two wins */
	if (cas_full(ring_word(&c->r, c->pos), &expected, SHM_COMMIT_FENCED))
		return 0;
	if (expected == SHM_COMMIT_FENCED)
		return 0;
	/* a record (or pad) to drain first; anything else is garbage */
	return (shm_commit_len(expected) & SHM_COMMIT_PAD) ||
			       shm_commit_len(expected) >= SHM_REC_HDR_SIZE
		       ? -EAGAIN
		       : -EBADMSG;
}

int ring_unfence(const struct ring *r, uint64_t pos)
{
	uint64_t expected = SHM_COMMIT_FENCED;

	if (pos % SHM_REC_ALIGN)
		return -EINVAL;
	return cas_full(ring_word(r, pos), &expected, 0) ? 0 : -ENOENT;
}

int ring_recover(const struct ring *r, uint64_t cons, uint64_t *pos, uint64_t *seq,
		 uint32_t gen_min, uint32_t gen_max)
{
	struct ring_cons c;
	struct ring_msg m;
	int ret;

	ret = ring_cons_init(&c, r, NULL, NULL, *pos, *seq, gen_min, gen_max);
	if (ret < 0)
		return ret;
	if (*pos < cons || *pos - cons > r->size - SHM_REC_ALIGN)
		return -EBADMSG;
	for (;;) {
		ret = ring_peek(&c, &m);
		if (ret == -EAGAIN || ret == -ESTALE)
			break;
		if (ret < 0)
			return ret;
		/* a whole lap of valid records past the consumer is impossible */
		if (m.end - cons > r->size - SHM_REC_ALIGN)
			return -EBADMSG;
		ring_consume(&c, &m);
	}
	*pos = c.pos;
	*seq = c.seq;
	return 0;
}
