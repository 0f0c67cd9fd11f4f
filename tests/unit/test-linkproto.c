/*
 * tests/unit/test-linkproto.c - two link engines (broker/linkproto.h)
 * wired back to back through byte pipes that the test cuts at random
 * points: every message arrives once, in order, across dozens of
 * reconnects with their replays; a wrong key, another version, another
 * link's name and a peer claiming bytes never sent are refused for good;
 * a corrupt byte costs a reconnect, not a message.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "broker/linkproto.h"
#include "harness.h"

struct sink {
	uint64_t next, dups, bad;
	uint64_t stalls;   /* times a message was refused once (-EAGAIN) first */
	uint64_t stalled;  /* the value refused last, +1 */
};

/* Every 7th new message is refused once, as a full local subscriber
 * would: the engine must offer it again, and nothing after it first. */
static int take(void *arg, const struct wire_data *m)
{
	struct sink *k = arg;
	uint64_t v;

	if (m->len != sizeof(v) || strcmp(m->topic, "t")) {
		k->bad++;
		return 0;
	}
	memcpy(&v, m->payload, sizeof(v));
	if (v == k->next && v % 7 == 3 && k->stalled != v + 1) {
		k->stalled = v + 1;
		k->stalls++;
		return -EAGAIN;
	}
	if (v < k->next)
		k->dups++;
	else if (v > k->next)
		k->bad++;
	else
		k->next++;
	return 0;
}

/* Bytes in, and a stalled message offered again until taken. */
static int feed(struct linkproto *x, struct sink *k, const uint8_t *p, size_t n)
{
	int r;

	x->ops = (struct lp_ops){ .deliver = take, .arg = k };
	r = lp_input(x, p, n);
	while (r == -EAGAIN)
		r = lp_process(x, 0);
	return r;
}

/* Move up to `budget` bytes each way (all when budget is 0); errors out. */
static int pump(struct linkproto *a, struct linkproto *b, struct sink *sa, struct sink *sb,
		size_t budget, int *ea, int *eb)
{
	for (int round = 0; round < 1000; round++) {
		size_t la, lb;
		const uint8_t *pa = lp_output(a, &la), *pb = lp_output(b, &lb);

		if (!la && !lb)
			return 0;
		if (budget) {
			la = la < budget ? la : budget;
			lb = lb < budget ? lb : budget;
		}
		if (la) {
			*eb = feed(b, sb, pa, la);
			lp_sent(a, la);
			if (*eb)
				return -1;
		}
		if (lb) {
			*ea = feed(a, sa, pb, lb);
			lp_sent(b, lb);
			if (*ea)
				return -1;
		}
		if (budget)
			return 1; /* the connection is cut here */
	}
	return 0;
}

static void pair(struct linkproto *a, struct linkproto *b, const uint8_t *ka, const uint8_t *kb,
		 uint64_t cap)
{
	CU_ASSERT_FATAL(lp_init(a, WIRE_DIALER, "east", 1, ka, cap) == 0);
	CU_ASSERT_FATAL(lp_init(b, WIRE_LISTENER, "east", 2, kb, cap) == 0);
}

static int connect_both(struct linkproto *a, struct linkproto *b, struct sink *sa, struct sink *sb,
			int *ea, int *eb)
{
	*ea = *eb = 0;
	if (lp_connected(a) < 0 || lp_connected(b) < 0)
		return -1;
	return pump(a, b, sa, sb, 0, ea, eb);
}

static void test_stream_across_cuts(void)
{
	uint64_t s = harness_seed("link cuts");
	uint8_t key[LINK_KEY_LEN];
	struct linkproto a, b;
	struct sink sa = { 0 }, sb = { 0 };
	unsigned cuts = 0;
	const uint64_t n = 20000;
	uint64_t sent = 0, sent_b = 0;
	int ea, eb;

	memset(key, 9, sizeof(key));
	pair(&a, &b, key, key, 1u << 20);
	CU_ASSERT_FATAL(connect_both(&a, &b, &sa, &sb, &ea, &eb) == 0);
	CU_ASSERT(a.state == LP_READY && b.state == LP_READY);
	while (sb.next < n) {
		/* publish a burst (both ways: b answers with its own stream) */
		for (int k = 0; k < 200 && sent < n; k++) {
			struct wire_data m = { .src_session = 1, .src_seq = sent, .topic_len = 1,
					       .topic = "t", .payload = &sent, .len = sizeof(sent) };

			struct wire_data mb = m;

			if (lp_send(&a, &m) == -EAGAIN)
				break; /* unrouted bytes fill the buffer: wait for acks */
			sent++;
			mb.payload = &sent_b;
			if (lp_send(&b, &mb) == 0)
				sent_b++;
		}
		if (harness_rand(&s) % 3 == 0) {
			/* a cut in the middle of whatever is in flight */
			int r = pump(&a, &b, &sa, &sb, 1 + harness_rand(&s) % 3000, &ea, &eb);

			CU_ASSERT(r >= 0);
			cuts++;
			CU_ASSERT_FATAL(connect_both(&a, &b, &sa, &sb, &ea, &eb) == 0);
		} else {
			CU_ASSERT_FATAL(pump(&a, &b, &sa, &sb, 0, &ea, &eb) == 0);
		}
	}
	printf("\n    %llu messages each way across %u cuts; %llu + %llu bytes replayed\n",
	       (unsigned long long)n, cuts, (unsigned long long)a.replayed,
	       (unsigned long long)b.replayed);
	CU_ASSERT(sb.next == n && sb.dups == 0 && sb.bad == 0);
	/* the other way: everything b sent before the last pump, in order */
	CU_ASSERT(sa.dups == 0 && sa.bad == 0 && sa.next == sent_b);
	CU_ASSERT(cuts >= 15);
	CU_ASSERT(a.replayed > 0);
	/* a message refused once (a full subscriber) was offered again, in place */
	printf("    %llu + %llu deliveries refused once and taken on the retry\n",
	       (unsigned long long)sb.stalls, (unsigned long long)sa.stalls);
	CU_ASSERT(sb.stalls > 1000 && sa.stalls > 0);
	lp_free(&a);
	lp_free(&b);
}

static void test_refusals(void)
{
	uint8_t k1[LINK_KEY_LEN], k2[LINK_KEY_LEN];
	struct sink sa = { 0 }, sb = { 0 };
	struct linkproto a, b;
	int ea, eb;

	memset(k1, 1, sizeof(k1));
	memset(k2, 2, sizeof(k2));
	/* a wrong key: refused for good, and said so */
	pair(&a, &b, k1, k2, 4096);
	CU_ASSERT(connect_both(&a, &b, &sa, &sb, &ea, &eb) < 0);
	CU_ASSERT(ea == -EACCES || eb == -EACCES);
	CU_ASSERT(a.state == LP_FAILED || b.state == LP_FAILED);
	CU_ASSERT(strstr(a.why, "key") || strstr(b.why, "key"));
	CU_ASSERT(lp_connected(a.state == LP_FAILED ? &a : &b) == -EPERM);
	lp_free(&a);
	lp_free(&b);
	/* another link's name */
	CU_ASSERT_FATAL(lp_init(&a, WIRE_DIALER, "east", 1, k1, 4096) == 0);
	CU_ASSERT_FATAL(lp_init(&b, WIRE_LISTENER, "west", 2, k1, 4096) == 0);
	CU_ASSERT(connect_both(&a, &b, &sa, &sb, &ea, &eb) < 0);
	CU_ASSERT(ea == -EINVAL || eb == -EINVAL);
	lp_free(&a);
	lp_free(&b);
	/* a peer that claims this broker's own id (a link to itself) */
	CU_ASSERT_FATAL(lp_init(&a, WIRE_DIALER, "east", 5, k1, 4096) == 0);
	CU_ASSERT_FATAL(lp_init(&b, WIRE_LISTENER, "east", 5, k1, 4096) == 0);
	CU_ASSERT(connect_both(&a, &b, &sa, &sb, &ea, &eb) < 0);
	CU_ASSERT((ea == -EINVAL && strstr(a.why, "id")) || (eb == -EINVAL && strstr(b.why, "id")));
	lp_free(&a);
	lp_free(&b);
	/* a peer that claims to have routed bytes this side never sent */
	pair(&a, &b, k1, k1, 4096);
	b.routed = 12345;
	CU_ASSERT(connect_both(&a, &b, &sa, &sb, &ea, &eb) < 0);
	CU_ASSERT(ea == -EPROTO && a.state == LP_FAILED && strstr(a.why, "never sent"));
	lp_free(&a);
	lp_free(&b);
	/* a corrupt byte: this connection goes, the link comes back, nothing lost */
	pair(&a, &b, k1, k1, 1u << 16);
	CU_ASSERT_FATAL(connect_both(&a, &b, &sa, &sb, &ea, &eb) == 0);
	{
		uint64_t v = 0;
		struct wire_data m = { .topic_len = 1, .topic = "t", .payload = &v, .len = sizeof(v) };
		size_t len;
		uint8_t *out;

		memset(&sb, 0, sizeof(sb));
		CU_ASSERT(lp_send(&a, &m) == 0);
		out = (uint8_t *)lp_output(&a, &len);
		out[len - 1] ^= 1; /* the CRC */
		CU_ASSERT(pump(&a, &b, &sa, &sb, 0, &ea, &eb) < 0 && eb == -EBADMSG);
		CU_ASSERT(b.state == LP_IDLE && sb.next == 0);
		CU_ASSERT(connect_both(&a, &b, &sa, &sb, &ea, &eb) == 0);
		CU_ASSERT(sb.next == 1 && sb.dups == 0);

		/* whole frames lost in transit (a middlebox): the next one is
		 * beyond what b routed; the connection goes, the sender resends,
		 * nothing is lost and the link does not fail for good */
		v = 1;
		CU_ASSERT(lp_send(&a, &m) == 0);
		v = 2;
		CU_ASSERT(lp_send(&a, &m) == 0);
		out = (uint8_t *)lp_output(&a, &len);
		{
			enum wire_type t;
			int f1 = wire_frame(out, len, &t);

			CU_ASSERT_FATAL(f1 > 0 && (size_t)f1 < len);
			lp_sent(&a, (size_t)f1); /* the first frame: gone */
		}
		CU_ASSERT(pump(&a, &b, &sa, &sb, 0, &ea, &eb) < 0 && eb == -EBADMSG);
		CU_ASSERT(b.state == LP_IDLE && strstr(b.why, "lost in transit") && sb.next == 1);
		CU_ASSERT(connect_both(&a, &b, &sa, &sb, &ea, &eb) == 0);
		CU_ASSERT(sb.next == 3 && sb.dups == 0 && sb.bad == 0);
	}
	lp_free(&a);
	lp_free(&b);
	/* a gap the sender cannot fill: the peer lost what it had routed
	 * (say, its file) and asks for bytes the ring no longer holds */
	pair(&a, &b, k1, k1, 4096);
	CU_ASSERT_FATAL(connect_both(&a, &b, &sa, &sb, &ea, &eb) == 0);
	memset(&sb, 0, sizeof(sb));
	for (uint64_t v = 0; v < 200; v++) {
		struct wire_data m = { .topic_len = 1, .topic = "t", .payload = &v, .len = sizeof(v) };

		CU_ASSERT_FATAL(lp_send(&a, &m) == 0);
		CU_ASSERT_FATAL(pump(&a, &b, &sa, &sb, 0, &ea, &eb) == 0);
	}
	CU_ASSERT(a.tx.w > a.tx.cap);
	b.routed = 0;
	memset(&sb, 0, sizeof(sb));
	CU_ASSERT(connect_both(&a, &b, &sa, &sb, &ea, &eb) < 0);
	CU_ASSERT(ea == -ERANGE && a.state == LP_FAILED && strstr(a.why, "gap"));
	lp_free(&a);
	lp_free(&b);
}

static const struct harness_test tests[] = {
	{ "stream_across_cuts", test_stream_across_cuts },
	{ "refusals", test_refusals },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "linkproto", tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	return harness_main("test-linkproto", suites, argc, argv);
}
