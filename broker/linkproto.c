/*
 * broker/linkproto.c - see linkproto.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/linkproto.h"

/* A permanent failure: this link stops until an operator acts. */
static int fail(struct linkproto *lp, int err, const char *fmt, const char *arg)
{
	lp->state = LP_FAILED;
	snprintf(lp->why, sizeof(lp->why), fmt, arg);
	return err;
}

/* A temporary one: this connection goes; the link redials and replays. */
static int drop(struct linkproto *lp, int err, const char *why)
{
	lp->state = LP_IDLE;
	snprintf(lp->why, sizeof(lp->why), "%s", why);
	return err;
}

static int queue(struct linkproto *lp, const void *p, size_t n)
{
	if (lp->outlen + n > lp->outcap) {
		size_t cap = lp->outcap ? lp->outcap : 65536;
		uint8_t *o;

		while (cap < lp->outlen + n)
			cap *= 2;
		o = realloc(lp->out, cap);
		if (!o)
			return -ENOMEM;
		lp->out = o;
		lp->outcap = cap;
	}
	memcpy(lp->out + lp->outlen, p, n);
	lp->outlen += n;
	return 0;
}

/* A control frame (not data: never replayed, made again per connection). */
static int queue_frame(struct linkproto *lp, int n, const uint8_t *frame)
{
	return n < 0 ? n : queue(lp, frame, (size_t)n);
}

static int refuse(struct linkproto *lp, int err, const char *text)
{
	struct wire_error e = { .code = err, .text_len = (uint32_t)strlen(text) };
	uint8_t f[WIRE_OVERHEAD + 8 + WIRE_TEXT_MAX];

	memcpy(e.text, text, e.text_len);
	queue_frame(lp, wire_put_error(f, sizeof(f), &e), f);
	return fail(lp, err, "%s", text);
}

int lp_init(struct linkproto *lp, enum wire_role role, const char *name, uint64_t broker_id,
	    const uint8_t key[LINK_KEY_LEN], uint64_t capacity)
{
	memset(lp, 0, sizeof(*lp));
	if (strlen(name) > WIRE_NAME_MAX || role > WIRE_LISTENER)
		return -EINVAL;
	lp->role = role;
	snprintf(lp->name, sizeof(lp->name), "%s", name);
	lp->broker_id = broker_id;
	memcpy(lp->key, key, LINK_KEY_LEN);
	lp->in = malloc(WIRE_MAX_FRAME);
	if (!lp->in || replay_init(&lp->tx, capacity, true) < 0) {
		free(lp->in);
		return -ENOMEM;
	}
	return 0;
}

void lp_free(struct linkproto *lp)
{
	replay_free(&lp->tx);
	free(lp->in);
	free(lp->out);
	memset(lp, 0, sizeof(*lp));
}

int lp_connected(struct linkproto *lp)
{
	struct wire_hello h = { .version = WIRE_VERSION, .role = lp->role, .broker_id = lp->broker_id,
				.sent = lp->tx.w, .routed = lp->routed,
				.name_len = (uint32_t)strlen(lp->name) };
	uint8_t f[WIRE_OVERHEAD + 100 + WIRE_NAME_MAX];

	if (lp->state == LP_FAILED)
		return -EPERM;
	lp->inlen = 0;
	lp->outlen = 0; /* what the old connection did not send: data is replayed */
	linkauth_nonce(lp->nonce);
	memcpy(h.nonce, lp->nonce, WIRE_NONCE_LEN);
	memcpy(h.name, lp->name, h.name_len);
	lp->state = LP_HELLO;
	return queue_frame(lp, wire_put_hello(f, sizeof(f), &h), f);
}

static int on_hello(struct linkproto *lp, const uint8_t *fr, size_t n)
{
	uint8_t f[WIRE_OVERHEAD + WIRE_MAC_LEN];
	struct wire_auth a;
	struct wire_hello h;

	if (wire_get_hello(fr, n, &h) < 0)
		return drop(lp, -EBADMSG, "a malformed HELLO");
	if (h.version != WIRE_VERSION)
		return refuse(lp, -EPROTONOSUPPORT, "link protocol versions differ");
	if (strcmp(h.name, lp->name))
		return refuse(lp, -EINVAL, "the peer names another link");
	if (h.role == lp->role)
		return refuse(lp, -EINVAL, "both ends claim the same role");
	memcpy(lp->peer_nonce, h.nonce, WIRE_NONCE_LEN);
	lp->peer_routed = h.routed;
	lp->state = LP_AUTH;
	if (linkauth_mac(lp->key, lp->role, lp->nonce, lp->peer_nonce, lp->name, a.mac) < 0)
		return fail(lp, -EINVAL, "%s", "bad link name");
	return queue_frame(lp, wire_put_auth(f, sizeof(f), &a), f);
}

static int on_auth(struct linkproto *lp, const uint8_t *fr, size_t n)
{
	enum wire_role peer = lp->role == WIRE_DIALER ? WIRE_LISTENER : WIRE_DIALER;
	uint64_t len = 0;
	struct wire_auth a;
	int r;

	if (wire_get_auth(fr, n, &a) < 0)
		return drop(lp, -EBADMSG, "a malformed AUTH");
	if (!linkauth_verify(lp->key, peer, lp->peer_nonce, lp->nonce, lp->name, a.mac))
		return refuse(lp, -EACCES, "wrong link key");
	r = replay_resume(&lp->tx, lp->peer_routed, &len);
	if (r == -EPROTO)
		return refuse(lp, -EPROTO, "the peer claims data this side never sent");
	if (r == -ERANGE)
		return refuse(lp, -ERANGE, "the data the peer misses is no longer held: a gap");
	if (r < 0)
		return fail(lp, r, "%s", "replay failed");
	/* resend what the peer has not routed: whole DATA frames */
	for (uint64_t pos = lp->peer_routed; pos < lp->peer_routed + len;) {
		uint8_t chunk[65536];
		size_t k = replay_copy(&lp->tx, pos, chunk, sizeof(chunk));

		if (!k || queue(lp, chunk, k) < 0)
			return fail(lp, -ENOMEM, "%s", "out of memory");
		pos += k;
	}
	lp->replayed += len;
	lp->state = LP_READY;
	return 0;
}

static int on_ready(struct linkproto *lp, enum wire_type t, const uint8_t *fr, size_t n,
		    lp_deliver_fn deliver, void *arg)
{
	uint8_t f[WIRE_OVERHEAD + 16];

	switch (t) {
	case WIRE_DATA: {
		struct wire_data d;
		struct wire_ack k;

		if (wire_get_data(fr, n, &d) < 0)
			return drop(lp, -EBADMSG, "a malformed DATA frame");
		if (d.offset < lp->routed)
			return 0; /* routed before the last cut: a replay, skipped */
		if (d.offset > lp->routed)
			return refuse(lp, -ERANGE, "data is missing before this frame: a gap");
		deliver(arg, &d);
		/* R advances once routing is done (decisions.md 26) */
		lp->routed += n;
		k.routed = lp->routed;
		return queue_frame(lp, wire_put_ack(f, sizeof(f), &k), f);
	}
	case WIRE_ACK: {
		struct wire_ack k;

		if (wire_get_ack(fr, n, &k) < 0)
			return drop(lp, -EBADMSG, "a malformed ACK");
		if (replay_ack(&lp->tx, k.routed) < 0)
			return refuse(lp, -EPROTO, "the peer acknowledges data this side never sent");
		return 0;
	}
	case WIRE_PING: {
		struct wire_ping p;

		if (wire_get_ping(fr, n, &p) < 0)
			return drop(lp, -EBADMSG, "a malformed PING");
		return queue_frame(lp, wire_put_ping(f, sizeof(f), WIRE_PONG, &p), f);
	}
	case WIRE_PONG:
		return 0;
	default:
		return drop(lp, -EPROTO, "a handshake frame after the handshake");
	}
}

static int on_frame(struct linkproto *lp, enum wire_type t, const uint8_t *fr, size_t n,
		    lp_deliver_fn deliver, void *arg)
{
	if (t == WIRE_ERROR) {
		struct wire_error e;

		if (wire_get_error(fr, n, &e) < 0)
			return drop(lp, -EBADMSG, "a malformed ERROR");
		return fail(lp, e.code, "the peer refused: %s", e.text);
	}
	switch (lp->state) {
	case LP_HELLO:
		return t == WIRE_HELLO ? on_hello(lp, fr, n) : drop(lp, -EPROTO, "expected HELLO first");
	case LP_AUTH:
		return t == WIRE_AUTH ? on_auth(lp, fr, n)
				      : drop(lp, -EPROTO, "data before authentication");
	case LP_READY:
		return on_ready(lp, t, fr, n, deliver, arg);
	default:
		return -EPERM;
	}
}

int lp_input(struct linkproto *lp, const void *p, size_t n, lp_deliver_fn deliver, void *arg)
{
	const uint8_t *b = p;

	if (lp->state == LP_FAILED || lp->state == LP_IDLE)
		return -EPERM;
	while (n) {
		size_t k = n < WIRE_MAX_FRAME - lp->inlen ? n : WIRE_MAX_FRAME - lp->inlen;
		size_t used = 0;

		memcpy(lp->in + lp->inlen, b, k);
		lp->inlen += k;
		b += k;
		n -= k;
		for (;;) {
			enum wire_type t;
			int f = wire_frame(lp->in + used, lp->inlen - used, &t), r;

			if (f < 0)
				return drop(lp, -EBADMSG, "a corrupt frame (bad length or CRC)");
			if (f == 0)
				break;
			r = on_frame(lp, t, lp->in + used, (size_t)f, deliver, arg);
			if (r < 0)
				return r;
			used += (size_t)f;
		}
		memmove(lp->in, lp->in + used, lp->inlen - used);
		lp->inlen -= used;
	}
	return 0;
}

int lp_send(struct linkproto *lp, const struct wire_data *m)
{
	static uint8_t f[WIRE_MAX_FRAME];
	struct wire_data d = *m;
	int n, r;

	d.offset = lp->tx.w;
	n = wire_put_data(f, sizeof(f), &d);
	if (n < 0)
		return n;
	r = replay_write(&lp->tx, f, (size_t)n);
	if (r < 0)
		return r;
	return lp->state == LP_READY ? queue(lp, f, (size_t)n) : 0;
}

void lp_sent(struct linkproto *lp, size_t n)
{
	if (n > lp->outlen)
		n = lp->outlen;
	memmove(lp->out, lp->out + n, lp->outlen - n);
	lp->outlen -= n;
}
