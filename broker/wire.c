/*
 * broker/wire.c - see wire.h.  Every read of a received frame is checked
 * against its length first; encoding and decoding go byte by byte, so
 * the two hosts need share nothing but this file's rules.
 */
#include <errno.h>
#include <string.h>

#include "shm/crc32c.h"
#include "broker/wire.h"

/* ---- little-endian cursors ------------------------------------------------- */

struct out {
	uint8_t *p;
	size_t n, cap;
	int err;
};

static void put(struct out *o, const void *src, size_t n)
{
	if (o->err || n > o->cap - o->n) {
		o->err = -EMSGSIZE;
		return;
	}
	memcpy(o->p + o->n, src, n);
	o->n += n;
}

static void put_u16(struct out *o, uint16_t v)
{
	uint8_t b[2] = { (uint8_t)v, (uint8_t)(v >> 8) };

	put(o, b, 2);
}

static void put_u32(struct out *o, uint32_t v)
{
	uint8_t b[4];

	for (int i = 0; i < 4; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	put(o, b, 4);
}

static void put_u64(struct out *o, uint64_t v)
{
	uint8_t b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	put(o, b, 8);
}

struct in {
	const uint8_t *p;
	size_t n, len;
	int err;
};

static const uint8_t *get(struct in *i, size_t n)
{
	const uint8_t *at;

	if (i->err || n > i->len - i->n) {
		i->err = -EBADMSG;
		return NULL;
	}
	at = i->p + i->n;
	i->n += n;
	return at;
}

static uint32_t le32(const uint8_t *b)
{
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static uint32_t get_u32(struct in *i)
{
	const uint8_t *b = get(i, 4);

	return b ? le32(b) : 0;
}

static uint64_t get_u64(struct in *i)
{
	const uint8_t *b = get(i, 8);
	uint64_t v = 0;

	for (int k = 7; b && k >= 0; k--)
		v = v << 8 | b[k];
	return v;
}

/* A name-like field: its length, then that many bytes, none of them NUL. */
static void get_text(struct in *i, uint32_t max, uint32_t *len, char *dst)
{
	uint32_t n = get_u32(i);
	const uint8_t *b;

	if (n > max) {
		i->err = -EBADMSG;
		return;
	}
	b = get(i, n);
	if (!b)
		return;
	if (memchr(b, 0, n)) {
		i->err = -EBADMSG;
		return;
	}
	memcpy(dst, b, n);
	dst[n] = 0;
	*len = n;
}

/* ---- frames ------------------------------------------------------------------ */

static struct out frame_begin(void *buf, size_t cap, enum wire_type type)
{
	struct out o = { .p = buf, .cap = cap > WIRE_MAX_FRAME ? WIRE_MAX_FRAME : cap };

	put_u32(&o, 0); /* the length, once known */
	put_u16(&o, (uint16_t)type);
	put_u16(&o, 0);
	return o;
}

static int frame_end(struct out *o)
{
	uint32_t crc;

	if (o->err)
		return o->err;
	if (o->cap - o->n < 4)
		return -EMSGSIZE;
	for (int i = 0; i < 4; i++)
		o->p[i] = (uint8_t)((o->n + 4) >> (8 * i));
	crc = crc32c(0, o->p, o->n);
	put_u32(o, crc);
	return o->err ? o->err : (int)o->n;
}

int wire_frame(const void *buf, size_t len, enum wire_type *type)
{
	const uint8_t *b = buf;
	uint32_t flen, t;

	if (len < 4)
		return 0;
	flen = le32(b);
	if (flen < WIRE_OVERHEAD || flen > WIRE_MAX_FRAME)
		return -EBADMSG;
	if (len < flen)
		return 0;
	t = (uint32_t)b[4] | (uint32_t)b[5] << 8;
	if (t == 0 || t > WIRE_TYPE_MAX || b[6] || b[7])
		return -EBADMSG;
	if (crc32c(0, b, flen - 4) != le32(b + flen - 4))
		return -EBADMSG;
	*type = (enum wire_type)t;
	return (int)flen;
}

/* The message of a checked frame, as a cursor; the caller must end at its end. */
static struct in msg_begin(const void *frame, size_t flen)
{
	return (struct in){ .p = (const uint8_t *)frame + WIRE_HDR, .len = flen - WIRE_OVERHEAD };
}

static int msg_end(const struct in *i)
{
	return i->err ? i->err : i->n == i->len ? 0 : -EBADMSG;
}

static int check(const void *frame, size_t flen, enum wire_type want)
{
	enum wire_type t;

	return wire_frame(frame, flen, &t) == (int)flen && t == want ? 0 : -EBADMSG;
}

/* ---- messages ------------------------------------------------------------------ */

int wire_put_hello(void *buf, size_t cap, const struct wire_hello *m)
{
	struct out o = frame_begin(buf, cap, WIRE_HELLO);

	if (m->name_len > WIRE_NAME_MAX || m->role > WIRE_LISTENER)
		return -EINVAL;
	put_u32(&o, m->version);
	put_u32(&o, m->role);
	put_u64(&o, m->broker_id);
	put_u64(&o, m->sent);
	put_u64(&o, m->routed);
	put(&o, m->nonce, WIRE_NONCE_LEN);
	put_u32(&o, m->name_len);
	put(&o, m->name, m->name_len);
	return frame_end(&o);
}

int wire_get_hello(const void *frame, size_t flen, struct wire_hello *m)
{
	struct in i;
	const uint8_t *n;

	if (check(frame, flen, WIRE_HELLO) < 0)
		return -EBADMSG;
	i = msg_begin(frame, flen);
	memset(m, 0, sizeof(*m));
	m->version = get_u32(&i);
	m->role = get_u32(&i);
	m->broker_id = get_u64(&i);
	m->sent = get_u64(&i);
	m->routed = get_u64(&i);
	n = get(&i, WIRE_NONCE_LEN);
	if (n)
		memcpy(m->nonce, n, WIRE_NONCE_LEN);
	get_text(&i, WIRE_NAME_MAX, &m->name_len, m->name);
	if (!i.err && m->role > WIRE_LISTENER)
		return -EBADMSG;
	return msg_end(&i);
}

int wire_put_auth(void *buf, size_t cap, const struct wire_auth *m)
{
	struct out o = frame_begin(buf, cap, WIRE_AUTH);

	put(&o, m->mac, WIRE_MAC_LEN);
	return frame_end(&o);
}

int wire_get_auth(const void *frame, size_t flen, struct wire_auth *m)
{
	struct in i;
	const uint8_t *b;

	if (check(frame, flen, WIRE_AUTH) < 0)
		return -EBADMSG;
	i = msg_begin(frame, flen);
	b = get(&i, WIRE_MAC_LEN);
	if (b)
		memcpy(m->mac, b, WIRE_MAC_LEN);
	return msg_end(&i);
}

int wire_put_data(void *buf, size_t cap, const struct wire_data *m)
{
	struct out o = frame_begin(buf, cap, WIRE_DATA);

	if (m->topic_len == 0 || m->topic_len > WIRE_TOPIC_MAX)
		return -EINVAL;
	put_u64(&o, m->offset);
	put_u64(&o, m->src_session);
	put_u64(&o, m->src_seq);
	put_u32(&o, m->topic_len);
	put(&o, m->topic, m->topic_len);
	put_u32(&o, m->len);
	put(&o, m->payload, m->len);
	return frame_end(&o);
}

int wire_get_data(const void *frame, size_t flen, struct wire_data *m)
{
	struct in i;

	if (check(frame, flen, WIRE_DATA) < 0)
		return -EBADMSG;
	i = msg_begin(frame, flen);
	m->offset = get_u64(&i);
	m->src_session = get_u64(&i);
	m->src_seq = get_u64(&i);
	get_text(&i, WIRE_TOPIC_MAX, &m->topic_len, m->topic);
	if (!i.err && m->topic_len == 0)
		return -EBADMSG;
	m->len = get_u32(&i);
	m->payload = get(&i, m->len);
	return msg_end(&i);
}

int wire_put_ack(void *buf, size_t cap, const struct wire_ack *m)
{
	struct out o = frame_begin(buf, cap, WIRE_ACK);

	put_u64(&o, m->routed);
	return frame_end(&o);
}

int wire_get_ack(const void *frame, size_t flen, struct wire_ack *m)
{
	struct in i;

	if (check(frame, flen, WIRE_ACK) < 0)
		return -EBADMSG;
	i = msg_begin(frame, flen);
	m->routed = get_u64(&i);
	return msg_end(&i);
}

int wire_put_ping(void *buf, size_t cap, enum wire_type type, const struct wire_ping *m)
{
	struct out o;

	if (type != WIRE_PING && type != WIRE_PONG)
		return -EINVAL;
	o = frame_begin(buf, cap, type);
	put_u64(&o, m->value);
	return frame_end(&o);
}

int wire_get_ping(const void *frame, size_t flen, struct wire_ping *m)
{
	enum wire_type t;
	struct in i;

	if (wire_frame(frame, flen, &t) != (int)flen || (t != WIRE_PING && t != WIRE_PONG))
		return -EBADMSG;
	i = msg_begin(frame, flen);
	m->value = get_u64(&i);
	return msg_end(&i);
}

int wire_put_error(void *buf, size_t cap, const struct wire_error *m)
{
	struct out o = frame_begin(buf, cap, WIRE_ERROR);

	if (m->text_len > WIRE_TEXT_MAX)
		return -EINVAL;
	put_u32(&o, (uint32_t)m->code);
	put_u32(&o, m->text_len);
	put(&o, m->text, m->text_len);
	return frame_end(&o);
}

int wire_get_error(const void *frame, size_t flen, struct wire_error *m)
{
	struct in i;

	if (check(frame, flen, WIRE_ERROR) < 0)
		return -EBADMSG;
	i = msg_begin(frame, flen);
	m->code = (int32_t)get_u32(&i);
	get_text(&i, WIRE_TEXT_MAX, &m->text_len, m->text);
	if (!i.err && m->code >= 0)
		return -EBADMSG;
	return msg_end(&i);
}

int wire_put_topics(void *buf, size_t cap, const struct wire_topics *m)
{
	struct out o = frame_begin(buf, cap, WIRE_TOPICS);

	if (m->n > WIRE_TOPICS_MAX)
		return -EINVAL;
	put_u32(&o, m->n);
	for (uint32_t k = 0; k < m->n; k++) {
		size_t len = strnlen(m->name[k], WIRE_TOPIC_MAX + 1);

		if (len == 0 || len > WIRE_TOPIC_MAX)
			return -EINVAL;
		put_u32(&o, (uint32_t)len);
		put(&o, m->name[k], len);
	}
	return frame_end(&o);
}

int wire_get_topics(const void *frame, size_t flen, struct wire_topics *m)
{
	struct in i;

	if (check(frame, flen, WIRE_TOPICS) < 0)
		return -EBADMSG;
	i = msg_begin(frame, flen);
	m->n = get_u32(&i);
	if (m->n > WIRE_TOPICS_MAX)
		return -EBADMSG;
	for (uint32_t k = 0; k < m->n && !i.err; k++) {
		uint32_t len = 0;

		get_text(&i, WIRE_TOPIC_MAX, &len, m->name[k]);
		if (!i.err && len == 0)
			return -EBADMSG;
	}
	return msg_end(&i);
}

int wire_auth_input(void *buf, size_t cap, enum wire_role prover, const uint8_t *prover_nonce,
		    const uint8_t *verifier_nonce, const char *name)
{
	static const char label[16] = "shmb-link-auth1";
	size_t nl = strnlen(name, WIRE_NAME_MAX + 1);
	struct out o = { .p = buf, .cap = cap };

	if (nl > WIRE_NAME_MAX || prover > WIRE_LISTENER)
		return -EINVAL;
	put(&o, label, sizeof(label));
	put_u32(&o, prover);
	put(&o, prover_nonce, WIRE_NONCE_LEN);
	put(&o, verifier_nonce, WIRE_NONCE_LEN);
	put(&o, name, nl);
	return o.err ? -EINVAL : (int)o.n;
}
