/*
 * broker/replay.h - the sender's side of the reliable pipe that
 * survives reconnects (docs/design/lifecycle.md, "Replay across reconnects").
 *
 * W counts every byte accepted for sending since the pipe was created; it
 * never resets.  The buffer keeps the last `capacity` bytes.  After each
 * (re)connect the peer says how much it has read (R'); the sender then
 * resends [R', W) — or fails for good when that cannot be done:
 *   R' > W                  the peer claims bytes never sent   (-EPROTO)
 *   W - R' > bytes retained a gap: never silent loss           (-ERANGE)
 *
 * Two policies for a full buffer: overwrite (keep the newest bytes; a
 * later replay may then find a gap) or block (a write that would push out
 * bytes the peer has not confirmed fails with -EAGAIN).
 *
 * No I/O, no clock, no lock: the owner (a link's sender) drives it.  It
 * lives in broker/ because only the broker's links use it; libshmb does
 * not carry it.
 */
#ifndef BROKER_REPLAY_H
#define BROKER_REPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct replay {
	uint8_t *buf;
	uint64_t cap;
	uint64_t w;     /* bytes accepted, ever */
	uint64_t acked; /* the peer has read everything before this */
	bool block;     /* full buffer: refuse (true) or overwrite (false) */
	bool external;  /* buf is the owner's (a mapped file): not freed here */
};

#define REPLAY_INIT { .buf = NULL }

/* 0, -EINVAL (capacity 0), -ENOMEM. */
int replay_init(struct replay *r, uint64_t capacity, bool block);
void replay_free(struct replay *r);

/* Over the owner's buffer (capacity bytes, e.g. a mapped file) whose
 * counters were kept: w bytes written, acked confirmed.  0, or -EINVAL
 * when they cannot be (acked > w, or more unconfirmed than it holds
 * under the block policy). */
int replay_init_at(struct replay *r, void *buf, uint64_t capacity, uint64_t w, uint64_t acked,
		   bool block);

/* Accept n bytes.  0, or -EAGAIN (block policy: no room until the peer
 * confirms more), -EMSGSIZE (larger than the whole buffer). */
int replay_write(struct replay *r, const void *p, size_t n);

/* The peer has read everything before peer_r.  0, -EPROTO if peer_r > W. */
int replay_ack(struct replay *r, uint64_t peer_r);

/* Bytes still held: [replay_first(r), r->w). */
static inline uint64_t replay_first(const struct replay *r)
{
	return r->w > r->cap ? r->w - r->cap : 0;
}

/*
 * After a handshake: the peer read peer_r bytes.  On success *len is how
 * many bytes to resend, starting at position peer_r (read them with
 * replay_copy()), and the peer_r counts as acknowledged.
 */
int replay_resume(struct replay *r, uint64_t peer_r, uint64_t *len);

/* Copy up to n bytes starting at stream position pos into dst; returns
 * how many (0 when pos is outside what is held). */
size_t replay_copy(const struct replay *r, uint64_t pos, void *dst, size_t n);

#endif
