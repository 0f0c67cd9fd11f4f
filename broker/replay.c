/*
 * broker/replay.c - the replay buffer (replay.h).  A byte ring indexed
 * by stream position modulo the capacity.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "broker/replay.h"

int replay_init(struct replay *r, uint64_t capacity, bool block)
{
	if (capacity == 0)
		return -EINVAL;
	*r = (struct replay){ .buf = malloc(capacity), .cap = capacity, .block = block };
	return r->buf ? 0 : -ENOMEM;
}

int replay_init_at(struct replay *r, void *buf, uint64_t capacity, uint64_t w, uint64_t acked,
		   bool block)
{
	if (!buf || capacity == 0 || acked > w || (block && w - acked > capacity))
		return -EINVAL;
	*r = (struct replay){ .buf = buf, .cap = capacity, .w = w, .acked = acked, .block = block,
			      .external = true };
	return 0;
}

void replay_free(struct replay *r)
{
	if (!r->external)
		free(r->buf);
	r->buf = NULL;
}

int replay_write(struct replay *r, const void *p, size_t n)
{
	const uint8_t *s = p;
	uint64_t pos = r->w;

	if (n > r->cap)
		return -EMSGSIZE;
	/* block: never push out what the peer has not confirmed */
	if (r->block && r->w + n - r->acked > r->cap)
		return -EAGAIN;
	while (n) {
		uint64_t i = pos % r->cap, k = r->cap - i < n ? r->cap - i : n;

		memcpy(r->buf + i, s, k);
		s += k;
		pos += k;
		n -= k;
	}
	r->w = pos;
	return 0;
}

int replay_ack(struct replay *r, uint64_t peer_r)
{
	if (peer_r > r->w)
		return -EPROTO;
	if (peer_r > r->acked)
		r->acked = peer_r;
	return 0;
}

int replay_resume(struct replay *r, uint64_t peer_r, uint64_t *len)
{
	if (peer_r > r->w)
		return -EPROTO;          /* bytes never sent: permanent */
	if (peer_r < replay_first(r))
		return -ERANGE;          /* a gap: permanent, never silent loss */
	if (peer_r > r->acked)
		r->acked = peer_r;
	*len = r->w - peer_r;
	return 0;
}

size_t replay_copy(const struct replay *r, uint64_t pos, void *dst, size_t n)
{
	uint8_t *d = dst;
	size_t done = 0;

	if (pos < replay_first(r) || pos >= r->w)
		return 0;
	if (n > r->w - pos)
		n = (size_t)(r->w - pos);
	while (done < n) {
		uint64_t i = pos % r->cap, k = r->cap - i < n - done ? r->cap - i : n - done;

		memcpy(d + done, r->buf + i, k);
		done += k;
		pos += k;
	}
	return done;
}
