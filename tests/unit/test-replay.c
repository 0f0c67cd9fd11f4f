/*
 * tests/unit/test-replay.c - the reliable pipe's replay buffer: the
 * behaviours of docs/design/lifecycle.md that belong to it (19-22,
 * 24), deterministic, plus a randomized run of cut connections
 * checked byte for byte.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "broker/replay.h"

/* What a resend would carry: [peer_r, W) as a string. */
static int resend(struct replay *r, uint64_t peer_r, char *out, size_t cap)
{
	uint64_t len;
	int e = replay_resume(r, peer_r, &len);

	if (e < 0)
		return e;
	if (len >= cap)
		return -ENOSPC;
	out[replay_copy(r, peer_r, out, (size_t)len)] = 0;
	return 0;
}

/* 19: "hello" + " world" + "!" sent, the peer read 5: it gets " world!" */
static void test_replay_from_peer_position(void)
{
	struct replay r;
	char out[64];

	CU_ASSERT_FATAL(replay_init(&r, 64, false) == 0);
	CU_ASSERT(replay_write(&r, "hello", 5) == 0);
	CU_ASSERT(replay_write(&r, " world", 6) == 0);
	CU_ASSERT(replay_write(&r, "!", 1) == 0);
	CU_ASSERT(resend(&r, 5, out, sizeof(out)) == 0);
	CU_ASSERT_STRING_EQUAL(out, " world!");
	replay_free(&r);
}

/* 20: from beyond W, or from before what is held: permanent errors */
static void test_replay_impossible_positions(void)
{
	struct replay r;
	char out[64];

	CU_ASSERT_FATAL(replay_init(&r, 8, false) == 0);
	CU_ASSERT(replay_write(&r, "12345678", 8) == 0);
	CU_ASSERT(replay_write(&r, "abcd", 4) == 0);
	CU_ASSERT(resend(&r, 13, out, sizeof(out)) == -EPROTO); /* never sent */
	CU_ASSERT(resend(&r, 3, out, sizeof(out)) == -ERANGE);  /* a gap */
	CU_ASSERT(replay_ack(&r, 99) == -EPROTO);
	replay_free(&r);
}

/* 24: capacity 8 holding "12345678", then "abcd": replays "5678abcd" */
static void test_replay_wrapped(void)
{
	struct replay r;
	char out[64];

	CU_ASSERT_FATAL(replay_init(&r, 8, false) == 0);
	CU_ASSERT(replay_write(&r, "12345678", 8) == 0);
	CU_ASSERT(replay_write(&r, "abcd", 4) == 0);
	CU_ASSERT(resend(&r, 4, out, sizeof(out)) == 0);
	CU_ASSERT_STRING_EQUAL(out, "5678abcd");
	CU_ASSERT(resend(&r, 12, out, sizeof(out)) == 0);
	CU_ASSERT_STRING_EQUAL(out, "");
	replay_free(&r);
}

/* 21 and the block policy: writes while disconnected are kept and come
 * after the next handshake, in order; a full buffer refuses rather than
 * overwrite what the peer has not confirmed. */
static void test_replay_writes_while_disconnected(void)
{
	struct replay r;
	char out[64];

	CU_ASSERT_FATAL(replay_init(&r, 8, true) == 0);
	CU_ASSERT(replay_write(&r, "ab", 2) == 0); /* sent, then the link drops */
	CU_ASSERT(replay_write(&r, "cde", 3) == 0); /* while disconnected */
	CU_ASSERT(replay_write(&r, "fgh", 3) == 0);
	CU_ASSERT(replay_write(&r, "i", 1) == -EAGAIN); /* nothing confirmed yet */
	CU_ASSERT(replay_write(&r, "123456789", 9) == -EMSGSIZE);
	CU_ASSERT(resend(&r, 2, out, sizeof(out)) == 0); /* the peer had read "ab" */
	CU_ASSERT_STRING_EQUAL(out, "cdefgh");
	CU_ASSERT(replay_write(&r, "ij", 2) == 0); /* "ab" confirmed: room again */
	CU_ASSERT(replay_write(&r, "k", 1) == -EAGAIN);
	replay_free(&r);
}

/*
 * 22, generalized: a stream written in random chunks over a connection cut
 * at random points (the peer got a random prefix of what was in flight);
 * after every reconnect the sender resends from the peer's count.  The
 * reader must see every byte exactly once, in order.
 */
static void test_replay_random_cuts(void)
{
	uint64_t s = harness_seed("replay cuts");
	const uint64_t total = (uint64_t)(2000000 * harness_scale());
	uint8_t chunk[300], got[300];
	struct replay r;
	uint64_t written = 0, sent = 0, peer = 0, cuts = 0;

	CU_ASSERT_FATAL(replay_init(&r, 4096, true) == 0);
	while (peer < total) {
		uint64_t x = harness_rand(&s);

		if (x % 5 && written < total) {
			size_t n = 1 + (size_t)(x >> 8) % sizeof(chunk);

			for (size_t i = 0; i < n; i++)
				chunk[i] = (uint8_t)((written + i) * 131 + 7);
			if (replay_write(&r, chunk, n) == 0)
				written += n;
		}
		if (x % 7 == 0 && sent > peer) {
			/* cut: the peer got part of what was in flight; reconnect and
			 * resume from what it says it read */
			uint64_t len;

			peer += (x >> 16) % (sent - peer + 1);
			CU_ASSERT_FATAL(replay_resume(&r, peer, &len) == 0);
			CU_ASSERT_FATAL(len == written - peer);
			sent = peer;
			cuts++;
		}
		/* the link moves what is unsent; the peer reads and checks it */
		while (sent < written) {
			size_t n = replay_copy(&r, sent, got, sizeof(got));

			CU_ASSERT_FATAL(n > 0);
			sent += n;
		}
		if (x % 3 == 0) {
			while (peer < sent) {
				size_t n = replay_copy(&r, peer, got, sizeof(got));

				for (size_t i = 0; i < n; i++)
					if (got[i] != (uint8_t)((peer + i) * 131 + 7)) {
						CU_FAIL_FATAL("a byte arrived wrong, twice or out of order");
					}
				peer += n;
			}
			CU_ASSERT_FATAL(replay_ack(&r, peer) == 0);
		}
	}
	printf("\n  %llu bytes through %llu cuts, each byte once and in order\n",
	       (unsigned long long)peer, (unsigned long long)cuts);
	CU_ASSERT(cuts > 1000);
	replay_free(&r);
}

static const struct harness_test replay_tests[] = {
	{ "replay_from_peer_position", test_replay_from_peer_position },
	{ "replay_impossible_positions", test_replay_impossible_positions },
	{ "replay_wrapped", test_replay_wrapped },
	{ "replay_writes_while_disconnected", test_replay_writes_while_disconnected },
	{ "replay_random_cuts", test_replay_random_cuts },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "replay", replay_tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	return harness_main("test-replay", suites, argc, argv);
}
