/*
 * broker/wire.h - the bytes two brokers exchange over a remote link
 * (issue 6, docs/design/links.md): frames, and the messages inside them.
 *
 * A link is a TCP byte stream cut into frames:
 *
 *   u32 len     the whole frame, header and CRC included (little endian)
 *   u16 type    enum wire_type
 *   u16 flags   0 (reserved)
 *   ...         the message, len - WIRE_HDR - 4 bytes
 *   u32 crc     CRC32C of every byte before it
 *
 * Everything is little endian and fixed width, encoded and decoded byte
 * by byte (the peer is another host: no struct is sent as it is).  A
 * frame that is too short or too long, has a bad CRC, an unknown type, or
 * a message whose fields do not add up is refused with an error; the
 * link treats that as a temporary failure (reconnect and replay) and
 * never reads past the bytes it was given.  Nothing here does I/O, keeps
 * state or knows keys: the HMAC is the caller's (libsodium).
 *
 * It lives in broker/ beside link, linkproto and linkauth: it is the TCP
 * format between brokers, not shared memory, and no client uses it.
 */
#ifndef BROKER_WIRE_H
#define BROKER_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define WIRE_VERSION 1u
#define WIRE_HDR 8u                  /* len, type, flags */
#define WIRE_OVERHEAD (WIRE_HDR + 4u) /* ... and the CRC */
#define WIRE_MAX_FRAME (1u << 20)    /* no frame is larger */
#define WIRE_NONCE_LEN 32u
#define WIRE_MAC_LEN 32u             /* HMAC-SHA256 */
#define WIRE_NAME_MAX 64u            /* a link's name */
#define WIRE_TOPIC_MAX 200u          /* as PROTO_TOPIC_MAX */
#define WIRE_TEXT_MAX 200u

enum wire_type {
	WIRE_HELLO = 1, /* first frame each way: version, role, name, nonce, counters */
	WIRE_AUTH = 2,  /* second: the HMAC proving the key, over both nonces */
	WIRE_DATA = 3,  /* one message, at a stream offset */
	WIRE_ACK = 4,   /* how many bytes of data the sender has routed */
	WIRE_PING = 5,  /* heartbeat; answered by PONG with the same value */
	WIRE_PONG = 6,
	WIRE_ERROR = 7, /* a permanent refusal, with its reason, before closing */
	WIRE_TOPICS = 8,/* after AUTH: the topics this side asks the peer to forward */
	WIRE_TYPE_MAX = 8,
};

enum wire_role { WIRE_DIALER = 0, WIRE_LISTENER = 1 };

struct wire_hello {
	uint32_t version;
	uint32_t role;                 /* enum wire_role */
	uint64_t broker_id;
	uint64_t sent;                 /* data bytes this side ever wrote on this link */
	uint64_t routed;               /* data bytes of the peer's this side has routed */
	uint8_t nonce[WIRE_NONCE_LEN];
	uint32_t name_len;
	char name[WIRE_NAME_MAX + 1];  /* NUL-terminated after decoding */
};

struct wire_auth {
	uint8_t mac[WIRE_MAC_LEN];
};

/* A message on the link: where it starts in the data stream, what it is. */
struct wire_data {
	uint64_t offset;               /* stream offset of this frame's data */
	uint64_t src_session;          /* the publisher on the sending broker */
	uint64_t src_seq;
	uint32_t topic_len;
	char topic[WIRE_TOPIC_MAX + 1];
	const void *payload;           /* decoding: points into the frame */
	uint32_t len;
};

struct wire_ack {
	uint64_t routed;
};

struct wire_ping {
	uint64_t value;
};

#define WIRE_TOPICS_MAX 64u          /* names in one TOPICS frame */

/* The --bridge names of one side: the peer forwards what is published
 * locally on them (a name ending in '*' is a prefix). */
struct wire_topics {
	uint32_t n;
	char name[WIRE_TOPICS_MAX][WIRE_TOPIC_MAX + 1];
};

struct wire_error {
	int32_t code;                  /* a negative errno */
	uint32_t text_len;
	char text[WIRE_TEXT_MAX + 1];
};

/*
 * Encoding: each writes one whole frame into buf (cap bytes) and returns
 * its length, or -EMSGSIZE when it does not fit (or would pass
 * WIRE_MAX_FRAME), -EINVAL for a field out of range (a name or topic too
 * long, a bad role).
 */
int wire_put_hello(void *buf, size_t cap, const struct wire_hello *m);
int wire_put_auth(void *buf, size_t cap, const struct wire_auth *m);
int wire_put_data(void *buf, size_t cap, const struct wire_data *m);
int wire_put_ack(void *buf, size_t cap, const struct wire_ack *m);
int wire_put_ping(void *buf, size_t cap, enum wire_type type, const struct wire_ping *m);
int wire_put_error(void *buf, size_t cap, const struct wire_error *m);
int wire_put_topics(void *buf, size_t cap, const struct wire_topics *m);

/*
 * Framing: how much of buf (len bytes received so far) is the next frame.
 * > 0: a whole, checked frame of that many bytes, its type in *type;
 * 0: not all of it has arrived yet; -EBADMSG: a bad length, CRC, type or
 * reserved flag (the stream cannot be trusted past here).
 */
int wire_frame(const void *buf, size_t len, enum wire_type *type);

/*
 * Decoding a frame wire_frame() accepted (frame, flen): 0, or -EBADMSG
 * when its message does not have the shape its type says (lengths that
 * do not add up, a name or topic too long or with a NUL in it).  A
 * decoded wire_data's payload points into frame.
 */
int wire_get_hello(const void *frame, size_t flen, struct wire_hello *m);
int wire_get_auth(const void *frame, size_t flen, struct wire_auth *m);
int wire_get_data(const void *frame, size_t flen, struct wire_data *m);
int wire_get_ack(const void *frame, size_t flen, struct wire_ack *m);
int wire_get_ping(const void *frame, size_t flen, struct wire_ping *m);
int wire_get_error(const void *frame, size_t flen, struct wire_error *m);
int wire_get_topics(const void *frame, size_t flen, struct wire_topics *m);

/*
 * What the HMAC of an AUTH frame covers, so both sides compute it over
 * the same bytes: a label, the prover's role, the prover's nonce, then the
 * verifier's nonce, and the link's name.  Returns its length in out
 * (cap >= WIRE_AUTH_INPUT_MAX), or -EINVAL.
 */
#define WIRE_AUTH_INPUT_MAX (16u + 4u + 2u * WIRE_NONCE_LEN + WIRE_NAME_MAX)
int wire_auth_input(void *out, size_t cap, enum wire_role prover, const uint8_t *prover_nonce,
		    const uint8_t *verifier_nonce, const char *name);

#endif
