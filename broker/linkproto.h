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
 * replay), one beyond is a gap — a permanent error, never silent loss.
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
#include "libclient/replay.h"
#include "shm/wire.h"

enum lp_state { LP_IDLE, LP_HELLO, LP_AUTH, LP_READY, LP_FAILED };

typedef void (*lp_deliver_fn)(void *arg, const struct wire_data *m);

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
	uint64_t replayed;     /* bytes resent after reconnects */
	uint8_t *in;           /* bytes received, not yet a whole frame */
	size_t inlen;
	uint8_t *out;          /* bytes to send */
	size_t outlen, outcap;
	char why[WIRE_TEXT_MAX + 40];
};

/* capacity: the replay buffer's bytes.  0 or -ENOMEM. */
int lp_init(struct linkproto *lp, enum wire_role role, const char *name, uint64_t broker_id,
	    const uint8_t key[LINK_KEY_LEN], uint64_t capacity);
void lp_free(struct linkproto *lp);

/* A new connection: forget its partial input, queue HELLO. */
int lp_connected(struct linkproto *lp);

/* Bytes from the peer; whole messages go to deliver.  0 or an error above. */
int lp_input(struct linkproto *lp, const void *p, size_t n, lp_deliver_fn deliver, void *arg);

/* Send one message (kept for replay); queued for the wire when READY.
 * 0, -EAGAIN (the replay buffer holds only unrouted bytes), -EMSGSIZE,
 * -EINVAL. */
int lp_send(struct linkproto *lp, const struct wire_data *m);

/* The bytes to send; lp_sent() says how many went. */
static inline const uint8_t *lp_output(const struct linkproto *lp, size_t *len)
{
	*len = lp->outlen;
	return lp->out;
}
void lp_sent(struct linkproto *lp, size_t n);

#endif
