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
	if (lp->outoff && lp->outlen + n > lp->outcap) {
		/* what was sent goes first: room at the front */
		memmove(lp->out, lp->out + lp->outoff, lp->outlen - lp->outoff);
		lp->outlen -= lp->outoff;
		lp->outoff = 0;
	}
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
	if (!lp->in || (capacity && replay_init(&lp->tx, capacity, true) < 0)) {
		free(lp->in);
		return -ENOMEM;
	}
	return 0;
}

int lp_attach(struct linkproto *lp, void *buf, uint64_t capacity, uint64_t w, uint64_t acked,
	      uint64_t routed)
{
	struct replay r;

	if (replay_init_at(&r, buf, capacity, w, acked, true) < 0)
		return -EINVAL;
	replay_free(&lp->tx);
	lp->tx = r;
	lp->routed = routed;
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
	if (!lp->tx.buf)
		return -EINVAL;
	lp->inlen = 0;
	lp->outlen = lp->outoff = 0; /* what the old connection did not send: data is replayed */
	lp->ack_due = false;
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
	/* the origin of its messages: never nobody, never this broker */
	if (h.broker_id == 0 || h.broker_id == lp->broker_id)
		return refuse(lp, -EINVAL, "the peer claims this broker's id (a link to itself?)");
	memcpy(lp->peer_nonce, h.nonce, WIRE_NONCE_LEN);
	lp->peer_routed = h.routed;
	lp->peer_broker = h.broker_id;
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
	if (lp->topics) {
		static uint8_t tf[WIRE_OVERHEAD + 4 + WIRE_TOPICS_MAX * (4 + WIRE_TOPIC_MAX)];
		int n = wire_put_topics(tf, sizeof(tf), lp->topics);

		if (n < 0)
			return fail(lp, n, "%s", "bad topic list");
		if (queue(lp, tf, (size_t)n) < 0)
			return fail(lp, -ENOMEM, "%s", "out of memory");
	}
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

static int on_ready(struct linkproto *lp, enum wire_type t, const uint8_t *fr, size_t n)
{
	uint8_t f[WIRE_OVERHEAD + 16];

	switch (t) {
	case WIRE_DATA: {
		struct wire_data d;
		int r;

		if (wire_get_data(fr, n, &d) < 0)
			return drop(lp, -EBADMSG, "a malformed DATA frame");
		if (d.offset < lp->routed)
			return 0; /* routed before the last cut: a replay, skipped */
		/* bytes lost in transit (TCP does not; a middlebox might): the
		 * sender still holds them, so a reconnect has them resent.  A gap
		 * the sender cannot fill is found by its replay_resume(). */
		if (d.offset > lp->routed)
			return drop(lp, -EBADMSG, "data missing before a frame (lost in transit): reconnecting");
		r = lp->ops.deliver(lp->ops.arg, &d);
		if (r < 0)
			return r; /* -EAGAIN: this frame again later */
		/* R advances once routing is done (docs/design/links.md);
		 * the ACK goes at the end of this input, after the
		 * owner's commit */
		lp->routed += n;
		lp->ack_due = true;
		return 0;
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
	case WIRE_TOPICS: {
		static struct wire_topics tp;

		if (wire_get_topics(fr, n, &tp) < 0)
			return drop(lp, -EBADMSG, "a malformed TOPICS frame");
		if (lp->ops.topics)
			lp->ops.topics(lp->ops.arg, &tp);
		return 0;
	}
	default:
		return drop(lp, -EPROTO, "a handshake frame after the handshake");
	}
}

static int on_frame(struct linkproto *lp, enum wire_type t, const uint8_t *fr, size_t n)
{
	if (t == WIRE_ERROR) {
		struct wire_error e;

		if (wire_get_error(fr, n, &e) < 0)
			return drop(lp, -EBADMSG, "a malformed ERROR");
		/* its text goes to our log: printable characters only */
		for (char *c = e.text; *c; c++)
			if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e)
				*c = '?';
		/* before the peer proved the key, anyone may have sent it: said,
		 * but not taken for the peer's word (the link redials) */
		if (lp->state != LP_READY) {
			snprintf(lp->why, sizeof(lp->why), "refused before the key was proved: %s",
				 e.text);
			lp->state = LP_IDLE;
			return -ECONNREFUSED;
		}
		return fail(lp, e.code, "the peer refused: %s", e.text);
	}
	switch (lp->state) {
	case LP_HELLO:
		return t == WIRE_HELLO ? on_hello(lp, fr, n) : drop(lp, -EPROTO, "expected HELLO first");
	case LP_AUTH:
		return t == WIRE_AUTH ? on_auth(lp, fr, n)
				      : drop(lp, -EPROTO, "data before authentication");
	case LP_READY:
		return on_ready(lp, t, fr, n);
	default:
		return -EPERM;
	}
}

uint8_t *lp_in_space(struct linkproto *lp, size_t *room)
{
	*room = WIRE_MAX_FRAME - lp->inlen;
	return lp->in + lp->inlen;
}

int lp_process(struct linkproto *lp, size_t added)
{
	size_t used = 0;
	int r = 0;

	if (lp->state == LP_FAILED || lp->state == LP_IDLE)
		return -EPERM;
	lp->inlen += added;
	for (;;) {
		enum wire_type t;
		int f = wire_frame(lp->in + used, lp->inlen - used, &t);

		if (f < 0) {
			r = drop(lp, -EBADMSG, "a corrupt frame (bad length or CRC)");
			break;
		}
		if (f == 0)
			break;
		r = on_frame(lp, t, lp->in + used, (size_t)f);
		if (r < 0)
			break;
		used += (size_t)f;
	}
	if (r == 0 || r == -EAGAIN) {
		memmove(lp->in, lp->in + used, lp->inlen - used);
		lp->inlen -= used;
	}
	if (lp->ack_due && lp->state == LP_READY) {
		uint8_t f[WIRE_OVERHEAD + 16];
		struct wire_ack k = { .routed = lp->routed };
		int q = queue_frame(lp, wire_put_ack(f, sizeof(f), &k), f);

		if (q < 0)
			return q;
		lp->ack_due = false;
	}
	return r;
}

int lp_input(struct linkproto *lp, const void *p, size_t n)
{
	const uint8_t *b = p;
	int r;

	do {
		size_t room, k;
		uint8_t *at = lp_in_space(lp, &room);

		k = n < room ? n : room;
		memcpy(at, b, k);
		b += k;
		n -= k;
		r = lp_process(lp, k);
	} while (n && r == 0);
	if (r == -EAGAIN && n) {
		/* stalled: keep the rest for the next lp_process(), if it fits */
		size_t room;
		uint8_t *at = lp_in_space(lp, &room);

		if (n > room)
			return -ENOBUFS;
		memcpy(at, b, n);
		lp->inlen += n;
	}
	return r;
}

int lp_ping(struct linkproto *lp, uint64_t value)
{
	uint8_t f[WIRE_OVERHEAD + 16];
	struct wire_ping p = { .value = value };

	if (lp->state != LP_READY)
		return -ENOTCONN;
	return queue_frame(lp, wire_put_ping(f, sizeof(f), WIRE_PING, &p), f);
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
	lp->outoff += n < lp->outlen - lp->outoff ? n : lp->outlen - lp->outoff;
	if (lp->outoff == lp->outlen)
		lp->outoff = lp->outlen = 0;
}
