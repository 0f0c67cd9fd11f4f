/*
 * broker/linkproto.h - one remote link's protocol, as a pure engine (no
 * I/O, no clock): bytes from the peer in, bytes for the peer out, messages
 * delivered through a callback.  docs/links.md.
 *
 * Per connection: each side sends HELLO (its counters and a fresh nonce),
 * then AUTH (its MAC over both nonces); data flows only once both MACs
 * verified.  Then each side resends what the other has not routed, from
 * its replay buffer, which outlives connections.  A DATA frame carries
 * its offset in the data stream: one already routed is skipped (a
 * replay), one beyond means bytes were lost in transit: the connection
 * goes and the sender resends them.  A gap the sender can no longer fill
 * (its ring moved on) is a permanent error, never silent loss.
 *
 * Errors of lp_input(): -EBADMSG (a corrupt frame) and -EPROTO (frames out
 * of order) are temporary — state LP_IDLE: the connection goes, the link
 * redials and replays; -EACCES (wrong key), -EPROTONOSUPPORT (other
 * version), -EINVAL (another link's name, the same role), -ERANGE (a gap),
 * an impossible count (-EPROTO with state LP_FAILED) and an ERROR from the
 * peer are permanent — state LP_FAILED.  lp->why says what happened, for
 * the log and shmbctl links.
 */
#ifndef BROKER_LINKPROTO_H
#define BROKER_LINKPROTO_H

#include <stdbool.h>
#include <stdint.h>

#include "broker/linkauth.h"
#include "broker/replay.h"
#include "broker/wire.h"

enum lp_state { LP_IDLE, LP_HELLO, LP_AUTH, LP_READY, LP_FAILED };

/* What the owner does with what arrives.  deliver returns 0, or -EAGAIN
 * when the message cannot be taken now (a local subscriber is full): the
 * frame stays, with everything after it, until lp_process() is called
 * again.  topics (may be NULL) gets the peer's TOPICS frame. */
struct lp_ops {
	int (*deliver)(void *arg, const struct wire_data *m);
	void (*topics)(void *arg, const struct wire_topics *t);
	void *arg;
};

struct linkproto {
	enum lp_state state;
	enum wire_role role;
	char name[WIRE_NAME_MAX + 1];
	uint64_t broker_id;
	uint8_t key[LINK_KEY_LEN];
	uint8_t nonce[WIRE_NONCE_LEN], peer_nonce[WIRE_NONCE_LEN];
	struct replay tx;      /* DATA frames sent, kept until the peer routed them */
	uint64_t routed;       /* data bytes of the peer's routed here (offset of the next) */
	uint64_t peer_routed;  /* what the peer's HELLO says it routed of ours */
	uint64_t peer_broker;  /* the peer's broker id, from its HELLO */
	uint64_t replayed;     /* bytes resent after reconnects */
	uint8_t *in;           /* bytes received, not yet a whole frame */
	size_t inlen;
	uint8_t *out;          /* bytes to send: [outoff, outlen) */
	size_t outoff, outlen, outcap;
	bool ack_due;          /* data was routed: an ACK goes at the end of this input */
	const struct wire_topics *topics; /* ours, sent after AUTH; NULL: none */
	struct lp_ops ops;
	char why[WIRE_TEXT_MAX + 40];
};

/* capacity: the replay buffer's bytes (0: none yet, lp_attach() gives
 * it).  0, -EINVAL or -ENOMEM. */
int lp_init(struct linkproto *lp, enum wire_role role, const char *name, uint64_t broker_id,
	    const uint8_t key[LINK_KEY_LEN], uint64_t capacity);
void lp_free(struct linkproto *lp);

/* The replay buffer and counters kept in a file across restarts: buf of
 * capacity bytes holding the stream up to w, the peer confirmed acked;
 * routed of the peer's bytes were routed here.  0 or -EINVAL. */
int lp_attach(struct linkproto *lp, void *buf, uint64_t capacity, uint64_t w, uint64_t acked,
	      uint64_t routed);

/* A new connection: forget its partial input, queue HELLO. */
int lp_connected(struct linkproto *lp);

/* Bytes from the peer; whole messages go to lp->ops.  0, -EAGAIN (a
 * message could not be delivered: n bytes were not all taken; call
 * lp_process() later), or an error above. */
int lp_input(struct linkproto *lp, const void *p, size_t n);

/* Receiving in place: read up to *room bytes into the returned space,
 * then lp_process(lp, bytes read).  Room is 0 while a stalled frame
 * fills the buffer. */
uint8_t *lp_in_space(struct linkproto *lp, size_t *room);

/* Handle the whole frames received (added: new bytes in lp_in_space()).
 * 0, -EAGAIN (stalled on a message that could not be delivered; call
 * again later with added 0), or an error above.  An ACK for what was
 * delivered is queued at the end: commit the deliveries before sending
 * lp_output(). */
int lp_process(struct linkproto *lp, size_t added);

/* A heartbeat (READY only): queue a PING carrying value. */
int lp_ping(struct linkproto *lp, uint64_t value);

/* Send one message (kept for replay); queued for the wire when READY.
 * 0, -EAGAIN (the replay buffer holds only unrouted bytes), -EMSGSIZE,
 * -EINVAL. */
int lp_send(struct linkproto *lp, const struct wire_data *m);

/* The bytes to send; lp_sent() says how many went. */
static inline const uint8_t *lp_output(const struct linkproto *lp, size_t *len)
{
	*len = lp->outlen - lp->outoff;
	return lp->out + lp->outoff;
}
void lp_sent(struct linkproto *lp, size_t n);

#endif
