/*
 * tests/unit/test-wire.c - the link's frames (broker/wire.h): every message
 * survives a round trip; a flipped bit, a cut frame, a lying length or a
 * field that does not add up is refused; random bytes and random bodies
 * under a valid CRC never make a decoder read past its frame (run under
 * ASan by make asan).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "shm/crc32c.h"
#include "broker/wire.h"

static uint8_t buf[WIRE_MAX_FRAME];

static void test_round_trips(void)
{
	struct wire_hello h = { .version = WIRE_VERSION, .role = WIRE_LISTENER, .broker_id = 42,
				.sent = 1234567890123ull, .routed = 77, .name_len = 5, .name = "east1" };
	struct wire_hello h2;
	struct wire_data d = { .offset = 1ull << 40, .src_session = 9, .src_seq = 10,
			       .topic_len = 4, .topic = "news", .payload = "hello", .len = 5 }, d2;
	struct wire_auth a, a2;
	struct wire_ack k = { .routed = 99 }, k2;
	struct wire_ping p = { .value = 5 }, p2;
	struct wire_error e = { .code = -EACCES, .text_len = 9, .text = "wrong key" }, e2;
	enum wire_type t;
	int n;

	for (unsigned i = 0; i < WIRE_NONCE_LEN; i++)
		h.nonce[i] = (uint8_t)(i * 7);
	n = wire_put_hello(buf, sizeof(buf), &h);
	CU_ASSERT_FATAL(n > 0);
	CU_ASSERT(wire_frame(buf, (size_t)n, &t) == n && t == WIRE_HELLO);
	CU_ASSERT(wire_get_hello(buf, (size_t)n, &h2) == 0);
	CU_ASSERT(h2.version == WIRE_VERSION && h2.role == WIRE_LISTENER && h2.broker_id == 42 &&
		  h2.sent == h.sent && h2.routed == 77 && !memcmp(h2.nonce, h.nonce, WIRE_NONCE_LEN) &&
		  h2.name_len == 5 && !strcmp(h2.name, "east1"));
	/* little endian, whatever this host is: the length's low byte first */
	CU_ASSERT(buf[0] == (uint8_t)n && buf[4] == WIRE_HELLO && buf[5] == 0);

	n = wire_put_data(buf, sizeof(buf), &d);
	CU_ASSERT_FATAL(n > 0);
	CU_ASSERT(wire_get_data(buf, (size_t)n, &d2) == 0);
	CU_ASSERT(d2.offset == d.offset && d2.src_session == 9 && d2.src_seq == 10 &&
		  !strcmp(d2.topic, "news") && d2.len == 5 && !memcmp(d2.payload, "hello", 5));
	CU_ASSERT((const uint8_t *)d2.payload > buf && (const uint8_t *)d2.payload + 5 <= buf + n);

	memset(a.mac, 0xab, sizeof(a.mac));
	n = wire_put_auth(buf, sizeof(buf), &a);
	CU_ASSERT(n > 0 && wire_get_auth(buf, (size_t)n, &a2) == 0 && !memcmp(a.mac, a2.mac, WIRE_MAC_LEN));
	n = wire_put_ack(buf, sizeof(buf), &k);
	CU_ASSERT(n > 0 && wire_get_ack(buf, (size_t)n, &k2) == 0 && k2.routed == 99);
	n = wire_put_ping(buf, sizeof(buf), WIRE_PONG, &p);
	CU_ASSERT(n > 0 && wire_frame(buf, (size_t)n, &t) == n && t == WIRE_PONG);
	CU_ASSERT(wire_get_ping(buf, (size_t)n, &p2) == 0 && p2.value == 5);
	n = wire_put_error(buf, sizeof(buf), &e);
	CU_ASSERT(n > 0 && wire_get_error(buf, (size_t)n, &e2) == 0 && e2.code == -EACCES &&
		  !strcmp(e2.text, "wrong key"));
	/* a frame is not taken for another type's */
	CU_ASSERT(wire_get_hello(buf, (size_t)n, &h2) == -EBADMSG);
}

static void test_refused_on_encode(void)
{
	struct wire_hello h = { .role = WIRE_DIALER, .name_len = WIRE_NAME_MAX + 1 };
	struct wire_data d = { .topic_len = 0, .payload = "", .len = 0 };
	struct wire_ping p = { 0 };
	static uint8_t big[WIRE_MAX_FRAME];

	CU_ASSERT(wire_put_hello(buf, sizeof(buf), &h) == -EINVAL);
	h.name_len = 1;
	h.role = 7;
	CU_ASSERT(wire_put_hello(buf, sizeof(buf), &h) == -EINVAL);
	CU_ASSERT(wire_put_data(buf, sizeof(buf), &d) == -EINVAL);
	CU_ASSERT(wire_put_ping(buf, sizeof(buf), WIRE_ACK, &p) == -EINVAL);
	/* too small a buffer, and more than a frame may hold */
	d.topic_len = 1;
	memcpy(d.topic, "t", 2);
	d.payload = big;
	d.len = 100;
	CU_ASSERT(wire_put_data(buf, 50, &d) == -EMSGSIZE);
	d.len = WIRE_MAX_FRAME;
	CU_ASSERT(wire_put_data(buf, sizeof(buf), &d) == -EMSGSIZE);
}

/* Every single-bit flip of a frame is caught; every cut is "not yet". */
static void test_flips_and_cuts(void)
{
	struct wire_data d = { .offset = 5, .src_session = 1, .src_seq = 2, .topic_len = 3,
			       .topic = "abc", .payload = "0123456789", .len = 10 };
	enum wire_type t;
	int n = wire_put_data(buf, sizeof(buf), &d);
	unsigned caught = 0, flips = 0;

	CU_ASSERT_FATAL(n > 0);
	for (int cut = 0; cut < n; cut++)
		CU_ASSERT(wire_frame(buf, (size_t)cut, &t) <= 0);
	for (int i = 0; i < n; i++)
		for (int bit = 0; bit < 8; bit++) {
			int r;

			buf[i] ^= (uint8_t)(1u << bit);
			r = wire_frame(buf, (size_t)n, &t);
			/* a flip in the length may make it ask for more: never accepted */
			caught += r <= 0;
			flips++;
			CU_ASSERT(r <= 0);
			buf[i] ^= (uint8_t)(1u << bit);
		}
	CU_ASSERT(caught == flips);
	CU_ASSERT(wire_frame(buf, (size_t)n, &t) == n);
	/* two frames back to back: the first is taken alone */
	memcpy(buf + n, buf, (size_t)n);
	CU_ASSERT(wire_frame(buf, 2 * (size_t)n, &t) == n);
}

/* A frame with a valid CRC around a body that lies. */
static int forge(enum wire_type type, const uint8_t *body, size_t len)
{
	uint32_t flen = (uint32_t)(len + WIRE_OVERHEAD), crc;

	for (int i = 0; i < 4; i++)
		buf[i] = (uint8_t)(flen >> (8 * i));
	buf[4] = (uint8_t)type;
	buf[5] = buf[6] = buf[7] = 0;
	memcpy(buf + WIRE_HDR, body, len);
	crc = crc32c(0, buf, flen - 4);
	for (int i = 0; i < 4; i++)
		buf[flen - 4 + i] = (uint8_t)(crc >> (8 * i));
	return (int)flen;
}

static void test_lying_bodies(void)
{
	uint8_t body[256] = { 0 };
	struct wire_hello h;
	struct wire_data d;
	struct wire_error e;
	int n;

	/* a HELLO (version 4, role 4, id 8, sent 8, routed 8, nonce 32: its
	 * name_len at 64) whose name claims more bytes than there are */
	body[64] = 10;           /* name_len = 10, but only 3 bytes follow */
	n = forge(WIRE_HELLO, body, 64 + 4 + 3);
	CU_ASSERT(wire_get_hello(buf, (size_t)n, &h) == -EBADMSG);
	/* ... and exactly 10: accepted; with a NUL inside: refused */
	memcpy(body + 68, "abcdefghij", 10);
	n = forge(WIRE_HELLO, body, 64 + 4 + 10);
	CU_ASSERT(wire_get_hello(buf, (size_t)n, &h) == 0 && !strcmp(h.name, "abcdefghij"));
	body[70] = 0;
	n = forge(WIRE_HELLO, body, 64 + 4 + 10);
	CU_ASSERT(wire_get_hello(buf, (size_t)n, &h) == -EBADMSG);
	/* a name longer than a name may be */
	memset(body, 0, sizeof(body));
	body[64] = WIRE_NAME_MAX + 1;
	n = forge(WIRE_HELLO, body, 64 + 4 + WIRE_NAME_MAX + 1);
	CU_ASSERT(wire_get_hello(buf, (size_t)n, &h) == -EBADMSG);
	/* a bad role; trailing bytes */
	memset(body, 0, sizeof(body));
	body[4] = 9;
	n = forge(WIRE_HELLO, body, 68);
	CU_ASSERT(wire_get_hello(buf, (size_t)n, &h) == -EBADMSG);
	body[4] = 0;
	n = forge(WIRE_HELLO, body, 69);
	CU_ASSERT(wire_get_hello(buf, (size_t)n, &h) == -EBADMSG);
	n = forge(WIRE_HELLO, body, 68);
	CU_ASSERT(wire_get_hello(buf, (size_t)n, &h) == 0 && h.name_len == 0);
	/* DATA: an empty topic; a payload length past the frame */
	memset(body, 0, sizeof(body));
	n = forge(WIRE_DATA, body, 24 + 4 + 4);
	CU_ASSERT(wire_get_data(buf, (size_t)n, &d) == -EBADMSG);
	body[24] = 1;
	body[28] = 't';
	body[29] = 0xff;         /* payload length 255, none present */
	n = forge(WIRE_DATA, body, 24 + 4 + 1 + 4);
	CU_ASSERT(wire_get_data(buf, (size_t)n, &d) == -EBADMSG);
	/* ERROR with a non-negative code */
	memset(body, 0, sizeof(body));
	n = forge(WIRE_ERROR, body, 8);
	CU_ASSERT(wire_get_error(buf, (size_t)n, &e) == -EBADMSG);
	/* reserved flags, unknown types, lengths below the minimum */
	n = forge(WIRE_ACK, body, 8);
	buf[6] = 1;
	{
		enum wire_type t;
		uint32_t crc = crc32c(0, buf, (size_t)n - 4);

		for (int i = 0; i < 4; i++)
			buf[n - 4 + i] = (uint8_t)(crc >> (8 * i));
		CU_ASSERT(wire_frame(buf, (size_t)n, &t) == -EBADMSG);
		n = forge((enum wire_type)9, body, 8);
		CU_ASSERT(wire_frame(buf, (size_t)n, &t) == -EBADMSG);
		n = forge((enum wire_type)0, body, 8);
		CU_ASSERT(wire_frame(buf, (size_t)n, &t) == -EBADMSG);
		memset(buf, 0, 16);
		buf[0] = 11;     /* shorter than a header and a CRC */
		CU_ASSERT(wire_frame(buf, 16, &t) == -EBADMSG);
		buf[0] = 0;
		buf[3] = 0x80;   /* 2 GiB */
		CU_ASSERT(wire_frame(buf, 16, &t) == -EBADMSG);
	}
}

/* Random bytes, and random bodies under valid CRCs: no crash, no overread. */
static void test_fuzz(void)
{
	uint64_t s = harness_seed("wire fuzz");
	unsigned accepted = 0, decoded = 0;

	for (int round = 0; round < 20000; round++) {
		uint8_t body[300];
		size_t len = harness_rand(&s) % sizeof(body);
		enum wire_type t = (enum wire_type)(1 + harness_rand(&s) % WIRE_TYPE_MAX);
		union {
			struct wire_hello h;
			struct wire_auth a;
			struct wire_data d;
			struct wire_ack k;
			struct wire_ping p;
			struct wire_error e;
			struct wire_topics tp;
		} u;
		int n, r = -1;

		for (size_t i = 0; i < len; i++)
			body[i] = (uint8_t)harness_rand(&s);
		/* small length fields, so that some bodies add up */
		if (len > 70 && round % 2)
			body[64] = (uint8_t)(harness_rand(&s) % 8), body[65] = body[66] = body[67] = 0;
		n = forge(t, body, len);
		if (wire_frame(buf, (size_t)n, &t) != n)
			continue;
		accepted++;
		switch (t) {
		case WIRE_HELLO: r = wire_get_hello(buf, (size_t)n, &u.h); break;
		case WIRE_AUTH: r = wire_get_auth(buf, (size_t)n, &u.a); break;
		case WIRE_DATA: r = wire_get_data(buf, (size_t)n, &u.d); break;
		case WIRE_ACK: r = wire_get_ack(buf, (size_t)n, &u.k); break;
		case WIRE_PING:
		case WIRE_PONG: r = wire_get_ping(buf, (size_t)n, &u.p); break;
		case WIRE_ERROR: r = wire_get_error(buf, (size_t)n, &u.e); break;
		case WIRE_TOPICS: r = wire_get_topics(buf, (size_t)n, &u.tp); break;
		}
		CU_ASSERT(r == 0 || r == -EBADMSG);
		decoded += r == 0;
		if (r == 0 && t == WIRE_DATA)
			CU_ASSERT((const uint8_t *)u.d.payload + u.d.len <= buf + n - 4);
	}
	/* and plain random bytes as a stream */
	for (int round = 0; round < 20000; round++) {
		size_t len = harness_rand(&s) % 64;
		enum wire_type t;

		for (size_t i = 0; i < len; i++)
			buf[i] = (uint8_t)harness_rand(&s);
		CU_ASSERT(wire_frame(buf, len, &t) <= 0); /* 2^-32 per try to pass a CRC */
	}
	printf("\n    %u forged frames framed, %u of them decoded as valid\n", accepted, decoded);
	CU_ASSERT(accepted == 20000);
	CU_ASSERT(decoded > 0);
}

/* TOPICS: names round-trip; an empty name, too many, or a NUL inside are refused. */
static void test_topics(void)
{
	static struct wire_topics tp, tp2;
	int n;

	tp.n = 3;
	strcpy(tp.name[0], "prices");
	strcpy(tp.name[1], "orders.*");
	memset(tp.name[2], 'x', WIRE_TOPIC_MAX);
	n = wire_put_topics(buf, sizeof(buf), &tp);
	CU_ASSERT_FATAL(n > 0);
	CU_ASSERT(wire_get_topics(buf, (size_t)n, &tp2) == 0 && tp2.n == 3 &&
		  !strcmp(tp2.name[0], "prices") && !strcmp(tp2.name[1], "orders.*") &&
		  strlen(tp2.name[2]) == WIRE_TOPIC_MAX);
	tp.n = 0;
	n = wire_put_topics(buf, sizeof(buf), &tp);
	CU_ASSERT(n > 0 && wire_get_topics(buf, (size_t)n, &tp2) == 0 && tp2.n == 0);
	tp.n = WIRE_TOPICS_MAX + 1;
	CU_ASSERT(wire_put_topics(buf, sizeof(buf), &tp) == -EINVAL);
	tp.n = 1;
	tp.name[0][0] = 0;
	CU_ASSERT(wire_put_topics(buf, sizeof(buf), &tp) == -EINVAL);
	{
		/* count 1, a name of length 0, under a valid CRC */
		uint8_t body[8] = { 1, 0, 0, 0, 0, 0, 0, 0 };
		enum wire_type t;

		n = forge(WIRE_TOPICS, body, 8);
		CU_ASSERT(wire_frame(buf, (size_t)n, &t) == n);
		CU_ASSERT(wire_get_topics(buf, (size_t)n, &tp2) == -EBADMSG);
		/* a count above the limit */
		body[0] = WIRE_TOPICS_MAX + 1;
		n = forge(WIRE_TOPICS, body, 4);
		CU_ASSERT(wire_get_topics(buf, (size_t)n, &tp2) == -EBADMSG);
	}
}

static void test_auth_input(void)
{
	uint8_t a[WIRE_NONCE_LEN], b[WIRE_NONCE_LEN], x[WIRE_AUTH_INPUT_MAX], y[WIRE_AUTH_INPUT_MAX];
	int nx, ny;

	memset(a, 1, sizeof(a));
	memset(b, 2, sizeof(b));
	nx = wire_auth_input(x, sizeof(x), WIRE_DIALER, a, b, "l1");
	ny = wire_auth_input(y, sizeof(y), WIRE_LISTENER, a, b, "l1");
	CU_ASSERT(nx > 0 && nx == ny && memcmp(x, y, (size_t)nx) != 0); /* the role counts */
	ny = wire_auth_input(y, sizeof(y), WIRE_DIALER, b, a, "l1");
	CU_ASSERT(nx == ny && memcmp(x, y, (size_t)nx) != 0);        /* so does the order */
	ny = wire_auth_input(y, sizeof(y), WIRE_DIALER, a, b, "l2");
	CU_ASSERT(nx == ny && memcmp(x, y, (size_t)nx) != 0);        /* and the name */
	CU_ASSERT(wire_auth_input(y, 10, WIRE_DIALER, a, b, "l1") == -EINVAL);
}

static const struct harness_test tests[] = {
	{ "round_trips", test_round_trips },
	{ "refused_on_encode", test_refused_on_encode },
	{ "flips_and_cuts", test_flips_and_cuts },
	{ "lying_bodies", test_lying_bodies },
	{ "fuzz", test_fuzz },
	{ "auth_input", test_auth_input },
	{ "topics", test_topics },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "wire", tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	return harness_main("test-wire", suites, argc, argv);
}
