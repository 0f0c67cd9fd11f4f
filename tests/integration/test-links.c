/*
 * tests/integration/test-links.c - remote links between two real brokers
 * on loopback (issue 6, docs/links.md).
 *
 * Broker A listens; broker B dials it through the misbehaving proxy
 * (tests/fault-proxy.c).  One publisher on each side, one subscriber on
 * each side, all on topic "t": every subscriber must get every message of
 * both publishers exactly once, in order per publisher, while the proxy
 * closes, resets, stalls and drops bytes one way, and while either broker
 * is SIGKILLed and restarted.  Then the refusals: a wrong key, another
 * protocol version, garbage on the port, a peer claiming bytes this side
 * never sent — each refused with a clear line in the log while the broker
 * keeps serving.
 *
 * SHMB_LINK_N sets the messages per publisher (default 10^6 each way, as
 * the issue asks; the broker-kill test sends half as many).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "broker/linkproto.h"
#include "fault-proxy.h"
#include "harness.h"
#include "shm/futex.h"
#include "shm/atomics.h"
#include "stream.h"

static char keypath[128], badkeypath[128];
static uint8_t key[LINK_KEY_LEN];

/* A fresh key file of mode 0600: 0, or -1. */
static int write_key(char *path, uint8_t *k)
{
	char hex[2 * LINK_KEY_LEN + 2];
	int fd, ok;

	snprintf(path, 128, "/dev/shm/shmb-test-key-XXXXXX");
	fd = mkstemp(path);
	if (fd < 0)
		return -1;
	randombytes_buf(k, LINK_KEY_LEN);
	sodium_bin2hex(hex, sizeof(hex), k, LINK_KEY_LEN);
	strcat(hex, "\n");
	ok = write(fd, hex, strlen(hex)) == (ssize_t)strlen(hex) && fchmod(fd, 0600) == 0;
	close(fd);
	return ok ? 0 : -1;
}

/*
 * A port to listen on that no outgoing connection will take as its source
 * port while a killed broker is away (a dialer redials it meanwhile, and
 * other tests connect too): below the ephemeral range, and free now.
 */
static uint16_t free_port(void)
{
	for (int tries = 0; tries < 1000; tries++) {
		struct sockaddr_in a = { .sin_family = AF_INET,
					 .sin_port = htons((uint16_t)(20000 + randombytes_uniform(12000))),
					 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

		CU_ASSERT_FATAL(fd >= 0);
		ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
		close(fd);
		if (ok)
			return ntohs(a.sin_port);
	}
	CU_FAIL_FATAL("no free port in 20000-31999");
	return 0;
}

static uint64_t link_n(void)
{
	const char *e = getenv("SHMB_LINK_N");

	return e && atoll(e) > 0 ? (uint64_t)atoll(e) : 1000000;
}

struct pair {
	struct tb a, b;
	char listen[32], dial[64];
	uint16_t port;
	struct fproxy *px;
	char adir[256], bdir[256];
};

/* Each link's replay ring: small in a test, so that it fills and holds
 * the publishers back. */
static const char *link_buffer = "16777216";

static int start_a(struct pair *p, bool again)
{
	if (again)
		tb_use_dir(p->adir);
	return tb_start(&p->a, "--listen", p->listen, "--link-key", keypath, "--link-heartbeat-ms", "100",
			"--link-timeout-ms", "500", "--link-buffer", link_buffer, NULL);
}

static int start_b(struct pair *p, bool again, const char *keyfile)
{
	if (again)
		tb_use_dir(p->bdir);
	return tb_start(&p->b, "--link", p->dial, "--link-key", keyfile, "--bridge", "t",
			"--link-heartbeat-ms", "100", "--link-timeout-ms", "500",
			"--link-buffer", link_buffer, NULL);
}

/* A listens; B dials through a proxy (or straight); the link comes up. */
static void pair_start(struct pair *p, bool proxy)
{
	uint16_t via;

	memset(p, 0, sizeof(*p));
	p->port = free_port();
	snprintf(p->listen, sizeof(p->listen), "127.0.0.1:%u", p->port);
	CU_ASSERT_FATAL(start_a(p, false) == 0);
	snprintf(p->adir, sizeof(p->adir), "%s", p->a.dir);
	via = p->port;
	if (proxy) {
		p->px = fproxy_start(p->port, &via);
		CU_ASSERT_FATAL(p->px != NULL);
	}
	snprintf(p->dial, sizeof(p->dial), "east=127.0.0.1:%u", via);
	CU_ASSERT_FATAL(start_b(p, false, keypath) == 0);
	snprintf(p->bdir, sizeof(p->bdir), "%s", p->b.dir);
	WAIT_FOR_FATAL(tb_log_count(&p->a, "link east: up") >= 1, 10000);
	WAIT_FOR_FATAL(tb_log_count(&p->b, "link east: up") >= 1, 10000);
	/* the listener learnt what the dialer bridges */
	WAIT_FOR_FATAL(tb_log_count(&p->a, "asks for 1 topic pattern(s): t") >= 1, 10000);
}

static void pair_stop(struct pair *p)
{
	CU_ASSERT(tb_stop(&p->b) == 0);
	CU_ASSERT(tb_stop(&p->a) == 0);
	if (p->px)
		fproxy_stop(p->px);
	tb_cleanup(&p->a);
	tb_cleanup(&p->b);
}

struct run {
	struct stats *st;
	pid_t sub[2], pub[2];
	uint64_t n;
};

/* sub-0 on A, sub-1 on B, then pub-0 on A and pub-1 on B, n messages each. */
static void run_start(struct run *r, struct pair *p, uint64_t n)
{
	r->st = stats_new();
	r->n = n;
	for (int i = 0; i < 2; i++) {
		r->sub[i] = fork_or_die();
		if (r->sub[i] == 0)
			subscriber(i ? &p->b : &p->a, r->st, i, 2 * n, 2);
	}
	CU_ASSERT_FATAL(wait_ready(r->st, 2));
	for (int i = 0; i < 2; i++) {
		r->pub[i] = fork_or_die();
		if (r->pub[i] == 0)
			publisher(i ? &p->b : &p->a, r->st, i, n);
	}
}

static uint64_t run_received(const struct run *r)
{
	return load_acquire(&r->st->received[0]) + load_acquire(&r->st->received[1]);
}

static void run_finish(struct run *r, const char *what)
{
	int rc[4];

	for (int i = 0; i < 2; i++) {
		rc[i] = tb_wait_child(r->pub[i], 120000);
		rc[2 + i] = tb_wait_child(r->sub[i], 120000);
	}
	printf("\n    %s: %llu + %llu published; A's subscriber got %llu (%llu dup), B's %llu (%llu dup);"
	       " errors %llu + %llu; exits %d %d %d %d\n", what,
	       (unsigned long long)r->st->published[0], (unsigned long long)r->st->published[1],
	       (unsigned long long)r->st->received[0], (unsigned long long)r->st->dups[0],
	       (unsigned long long)r->st->received[1], (unsigned long long)r->st->dups[1],
	       (unsigned long long)r->st->errors[0], (unsigned long long)r->st->errors[1],
	       rc[0], rc[1], rc[2], rc[3]);
	for (int i = 0; i < 4; i++)
		CU_ASSERT(rc[i] == 0);
	for (int s = 0; s < 2; s++) {
		CU_ASSERT(r->st->errors[s] == 0);
		CU_ASSERT(r->st->dups[s] == 0);
		CU_ASSERT(r->st->received[s] == 2 * r->n);
		for (int q = 0; q < 2; q++)
			CU_ASSERT(r->st->next[s][q] == r->n);
	}
	munmap(r->st, sizeof(*r->st));
}

/* The proxy cuts, resets, stalls and drops one way, over and over. */
static void test_faults(void)
{
	static const struct { enum fp_mode m; unsigned ms; const char *name; } plan[] = {
		{ FP_CLOSE, 0, "close" }, { FP_PASS, 250, NULL },
		{ FP_RESET, 0, "reset" }, { FP_PASS, 250, NULL },
		{ FP_STALL, 900, "stall" }, { FP_PASS, 250, NULL },
		{ FP_DROP_UP, 900, "drop up" }, { FP_PASS, 250, NULL },
		{ FP_DROP_DOWN, 900, "drop down" }, { FP_PASS, 250, NULL },
		/* a reset right after a redial: mid-handshake */
		{ FP_CLOSE, 120, "close" }, { FP_RESET, 0, "reset" }, { FP_PASS, 250, NULL },
	};
	struct pair p;
	struct run r;
	struct fp_stats fs;
	unsigned faults = 0, k = 0;
	uint64_t n = link_n(), t0;

	/* the fault plan may run 200 s, then the stream drains */
	harness_alarm(400);

	pair_start(&p, true);
	t0 = clock_mono_ns();
	run_start(&r, &p, n);
	/* the whole plan three times at least, however quick the stream */
	for (unsigned cycles = 0; (run_received(&r) < 4 * n || cycles < 3) && clock_mono_ns() - t0 < 200000000000ull;) {
		fproxy_mode(p.px, plan[k].m);
		faults += plan[k].name != NULL;
		if (plan[k].ms)
			usleep(plan[k].ms * 1000);
		k = (k + 1) % (sizeof(plan) / sizeof(plan[0]));
		cycles += k == 0;
	}
	fproxy_mode(p.px, FP_PASS);
	run_finish(&r, "faults");
	fproxy_stats(p.px, &fs);
	printf("    %u faults in %.1f s; the proxy cut %llu connections, dropped %llu bytes;"
	       " B dialed %d times, A saw the link go down %d times\n", faults,
	       (double)(clock_mono_ns() - t0) / 1e9, (unsigned long long)fs.cut,
	       (unsigned long long)fs.dropped, tb_log_count(&p.b, "link east: connected to"),
	       tb_log_count(&p.a, "link east: down"));
	CU_ASSERT(faults >= 5);
	CU_ASSERT(fs.cut > 0);
	/* the heartbeat noticed the silent and the one-way peers */
	CU_ASSERT(tb_log_count(&p.a, "nothing heard") + tb_log_count(&p.b, "nothing heard") > 0);
	CU_ASSERT(tb_alive(&p.a) && tb_alive(&p.b));
	pair_stop(&p);
}

/*
 * A subscriber on A that stops reading now and then, for less than the
 * link's timeout: the link stalls (its input waits for room) and must
 * stay up.  A stalled link once read its socket after the
 * tick's clock was taken, the silence "now - last_rx" wrapped, and the
 * link was dropped as "nothing heard for 18446744073688 ms".
 */
static void test_stalled(void)
{
	struct pair p;
	struct stats *st;
	pid_t sub, pub;
	uint64_t n = link_n() / 10;

	/* each of its two children may take 120 s */
	harness_alarm(300);

	if (n < 20000)
		n = 20000;
	pair_start(&p, false);
	st = stats_new();
	sub = fork_or_die();
	if (sub == 0) {
		struct shmb_client *c;
		struct shmb_session *s;
		unsigned unacked = 0;
		uint64_t got = 0;

		if (connect_open(&p.a, "sub-0", 0, &c, &s) < 0 || shmb_subscribe(s, "t") < 0)
			_exit(10);
		fetch_add_release(&st->ready, 1);
		while (got < n) {
			struct shmb_msg m;
			int r;

			/* a pause well under the 500 ms timeout, every 5000 messages */
			if (got % 5000 == 0)
				usleep(150000);
			if (shmb_recv(s, &m, 30000) < 0)
				_exit(11);
			r = stream_take(st, 0, &m, 1, s, &unacked);
			if (r)
				_exit(r);
			got++;
		}
		shmb_ack(s);
		shmb_session_close(s);
		shmb_close(c);
		_exit(0);
	}
	CU_ASSERT_FATAL(wait_ready(st, 1));
	pub = fork_or_die();
	if (pub == 0)
		publisher(&p.b, st, 0, n);
	CU_ASSERT(tb_wait_child(pub, 120000) == 0);
	CU_ASSERT(tb_wait_child(sub, 120000) == 0);
	CU_ASSERT(st->next[0][0] == n);
	CU_ASSERT(st->dups[0] == 0);
	printf("\n    %llu messages to a pausing subscriber; the link went down %d + %d times\n",
	       (unsigned long long)n, tb_log_count(&p.a, "link east: down"),
	       tb_log_count(&p.b, "link east: down"));
	CU_ASSERT(tb_log_count(&p.a, "link east: down") == 0);
	CU_ASSERT(tb_log_count(&p.b, "link east: down") == 0);
	munmap(st, sizeof(*st));
	pair_stop(&p);
}

/* SIGKILL either broker mid-stream, restart it on its directory. */
static void test_broker_kills(void)
{
	struct pair p;
	struct run r;
	uint64_t n = link_n() / 2, t0;
	int kills = 0;

	/* four rounds of up to 30 s each, then the stream drains */
	harness_alarm(300);

	/* 64 KiB rings: about 1000 messages in flight, then the publisher waits */
	link_buffer = "65536";
	pair_start(&p, false);
	t0 = clock_mono_ns();
	run_start(&r, &p, n);
	for (int round = 0; round < 4; round++) {
		struct tb *t = round % 2 ? &p.b : &p.a;
		uint64_t mark = (uint64_t)(round + 1) * 4 * n / 5;

		/* 30 s at most: a stream that stalls is run_finish's to report */
		TRY_WAIT_FOR(run_received(&r) >= mark, 30000);
		if (run_received(&r) >= 4 * n)
			break;
		kill(t->pid, SIGKILL);
		CU_ASSERT(tb_wait_child(t->pid, 5000) == 128 + SIGKILL);
		kills++;
		if ((round % 2 ? start_b(&p, true, keypath) : start_a(&p, true)) != 0) {
			char cmd[400];

			/* why: the log's last lines, for the post-mortem */
			snprintf(cmd, sizeof(cmd), "tail -n 5 '%s'", t->log);
			if (system(cmd) != 0)
				printf("    (no log)\n");
			CU_FAIL_FATAL("a killed broker did not start again");
		}
	}
	run_finish(&r, "broker kills");
	printf("    %d broker SIGKILLs in %.1f s\n", kills, (double)(clock_mono_ns() - t0) / 1e9);
	CU_ASSERT(kills >= 2);
	/* the restarted brokers picked their links up from links/ */
	CU_ASSERT(tb_log_count(&p.a, "back from links/") + tb_log_count(&p.b, "back from links/") >= 1);
	pair_stop(&p);
	link_buffer = "16777216";
}

/* Raw TCP to A's link port: bytes in, and what A answers. */
static int raw_dial(uint16_t port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct timeval tv = { .tv_sec = 5 };

	CU_ASSERT_FATAL(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	CU_ASSERT_FATAL(connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
	return fd;
}

/* Read until the peer closes (or 5 s); returns the bytes read. */
static size_t read_all(int fd, uint8_t *buf, size_t cap)
{
	size_t n = 0;
	ssize_t k;

	while (n < cap && (k = recv(fd, buf + n, cap - n, 0)) > 0)
		n += (size_t)k;
	return n;
}

static int take_nothing(void *arg, const struct wire_data *m)
{
	(void)arg;
	(void)m;
	return 0;
}

/* A's answer to a dialer engine: run the engine over fd until it fails or 5 s. */
static int engine_talk(struct linkproto *lp, int fd)
{
	static uint8_t buf[1 << 16];
	uint64_t until = clock_mono_ns() + 5000000000ull;
	int r = 0;

	lp->ops = (struct lp_ops){ .deliver = take_nothing };
	CU_ASSERT_FATAL(lp_connected(lp) == 0);
	while (clock_mono_ns() < until && lp->state != LP_FAILED && lp->state != LP_IDLE) {
		size_t n;
		const uint8_t *o = lp_output(lp, &n);
		ssize_t k;

		if (n) {
			k = send(fd, o, n, MSG_NOSIGNAL);
			if (k > 0)
				lp_sent(lp, (size_t)k);
		}
		k = recv(fd, buf, sizeof(buf), 0);
		if (k <= 0)
			break;
		r = lp_input(lp, buf, (size_t)k);
		if (r < 0)
			break;
	}
	{
		/* our last words (AUTH, ERROR), as a broker sends them */
		size_t n;
		const uint8_t *o = lp_output(lp, &n);

		if (n)
			(void)!send(fd, o, n, MSG_NOSIGNAL);
	}
	return r;
}

/* A publish and a receive on A itself: it still serves. */
static void a_serves(struct tb *a)
{
	struct shmb_client *c;
	struct shmb_session *s;
	struct shmb_msg m;

	CU_ASSERT_FATAL(connect_open(a, "local", 0, &c, &s) == 0);
	CU_ASSERT(shmb_subscribe(s, "local-topic") == 0);
	CU_ASSERT(shmb_publish(s, "local-topic", "still here", 10, 5000) == 0);
	CU_ASSERT(shmb_recv(s, &m, 5000) == 0 && m.len == 10 && !memcmp(m.data, "still here", 10));
	shmb_session_close(s);
	shmb_close(c);
}

static void test_refusals(void)
{
	struct pair p;
	static uint8_t buf[4096];
	struct linkproto lp;
	uint8_t badkey[LINK_KEY_LEN];
	size_t n;
	int fd, downs;

	pair_start(&p, false);
	/* garbage on the listening port: an HTTP request */
	fd = raw_dial(p.port);
	CU_ASSERT(send(fd, "GET / HTTP/1.0\r\n\r\n", 18, MSG_NOSIGNAL) == 18);
	n = read_all(fd, buf, sizeof(buf));
	CU_ASSERT(n == 0); /* closed, nothing said */
	close(fd);
	WAIT_FOR(tb_log_count(&p.a, "not a link protocol frame") >= 1, 5000);

	/* another protocol version: told so, in an ERROR frame, then closed */
	{
		struct wire_hello h = { .version = WIRE_VERSION + 1, .role = WIRE_DIALER,
					.name_len = 4, .name = "east" };
		uint8_t f[256];
		int fl = wire_put_hello(f, sizeof(f), &h), ft;
		enum wire_type t;
		struct wire_error e;

		fd = raw_dial(p.port);
		CU_ASSERT(send(fd, f, (size_t)fl, MSG_NOSIGNAL) == fl);
		n = read_all(fd, buf, sizeof(buf));
		ft = wire_frame(buf, n, &t);
		CU_ASSERT(ft > 0 && t == WIRE_ERROR && wire_get_error(buf, (size_t)ft, &e) == 0 &&
			  e.code == -EPROTONOSUPPORT);
		close(fd);
		WAIT_FOR(tb_log_count(&p.a, "link protocol version") >= 1, 5000);
	}

	/* a newcomer naming the live link "east", proving nothing: refused,
	 * and the link it names stays up */
	downs = tb_log_count(&p.b, "link east: down");
	CU_ASSERT_FATAL(lp_init(&lp, WIRE_DIALER, "east", 77, key, 1 << 16) == 0);
	fd = raw_dial(p.port);
	engine_talk(&lp, fd);
	close(fd);
	/* told why, and not taken as the last word (it may retry) */
	CU_ASSERT(lp.state == LP_IDLE && strstr(lp.why, "waits until it goes quiet"));
	lp_free(&lp);
	WAIT_FOR(tb_log_count(&p.a, "a second connection under its name waits") >= 1, 5000);
	CU_ASSERT(tb_log_count(&p.b, "link east: down") == downs);

	/* a wrong key under a new name: refused, said in A's log; the engine
	 * fails for good; nothing of it is left in A's links/ */
	randombytes_buf(badkey, sizeof(badkey));
	CU_ASSERT_FATAL(lp_init(&lp, WIRE_DIALER, "west", 77, badkey, 1 << 16) == 0);
	fd = raw_dial(p.port);
	engine_talk(&lp, fd);
	close(fd);
	CU_ASSERT(lp.state == LP_FAILED || lp.state == LP_IDLE);
	lp_free(&lp);
	WAIT_FOR(tb_log_count(&p.a, "wrong link key") >= 1, 5000);

	/* the right key, but claiming A sent bytes it never did */
	CU_ASSERT_FATAL(lp_init(&lp, WIRE_DIALER, "west", 77, key, 1 << 16) == 0);
	lp.routed = 1000000000ull;
	fd = raw_dial(p.port);
	engine_talk(&lp, fd);
	close(fd);
	CU_ASSERT(lp.state == LP_FAILED && strstr(lp.why, "never sent"));
	lp_free(&lp);
	WAIT_FOR(tb_log_count(&p.a, "never sent") >= 1, 5000);

	/* a dialer with a wrong key file fails for good, loudly, and A goes on */
	{
		struct tb c;
		char dial[64];

		snprintf(dial, sizeof(dial), "west=127.0.0.1:%u", p.port);
		CU_ASSERT_FATAL(tb_start(&c, "--link", dial, "--link-key", badkeypath, NULL) == 0);
		WAIT_FOR(tb_log_count(&c, "FAILED for good") >= 1, 10000);
		CU_ASSERT(tb_alive(&c));
		CU_ASSERT(tb_stop(&c) == 0);
		tb_cleanup(&c);
	}
	/* strangers racing on a name nobody has proved: a second HELLO for
	 * it, a HELLO and then a reset (both once freed a link still in use) */
	{
		struct wire_hello h = { .version = WIRE_VERSION, .role = WIRE_DIALER, .broker_id = 99,
					.name_len = 5, .name = "ghost" };
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };
		uint8_t f[256];
		int fl = wire_put_hello(f, sizeof(f), &h), f1, f2, f3;

		f1 = raw_dial(p.port);
		CU_ASSERT(send(f1, f, (size_t)fl, MSG_NOSIGNAL) == fl);
		WAIT_FOR(tb_log_count(&p.a, "link ghost: connected from") >= 1, 5000);
		f2 = raw_dial(p.port);
		CU_ASSERT(send(f2, f, (size_t)fl, MSG_NOSIGNAL) == fl);
		WAIT_FOR(tb_log_count(&p.a, "being set up by another connection") >= 1, 5000);
		memcpy(h.name, "ghost2", 7);
		h.name_len = 6;
		fl = wire_put_hello(f, sizeof(f), &h);
		f3 = raw_dial(p.port);
		CU_ASSERT(send(f3, f, (size_t)fl, MSG_NOSIGNAL) == fl);
		setsockopt(f3, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(f3);
		close(f2);
		close(f1);
		/* each is refused in time; nothing is left of them */
		WAIT_FOR(tb_log_count(&p.a, "link ghost: a dial-in from") >= 1, 5000);
		CU_ASSERT(tb_alive(&p.a));
		a_serves(&p.a);
	}
	/* none of the strangers left a file, and the real link never went down */
	{
		char path[400];

		snprintf(path, sizeof(path), "%s/links/west", p.a.dir);
		CU_ASSERT(access(path, F_OK) < 0);
		snprintf(path, sizeof(path), "%s/links/.west.new", p.a.dir);
		CU_ASSERT(access(path, F_OK) < 0);
		snprintf(path, sizeof(path), "%s/links/.ghost.new", p.a.dir);
		CU_ASSERT(access(path, F_OK) < 0);
		snprintf(path, sizeof(path), "%s/links/.ghost2.new", p.a.dir);
		CU_ASSERT(access(path, F_OK) < 0);
	}
	CU_ASSERT(tb_log_count(&p.b, "link east: down") == downs);
	CU_ASSERT(tb_alive(&p.a) && tb_alive(&p.b));
	a_serves(&p.a);
	pair_stop(&p);
}

/* A key file anyone may read is refused at start, naming the problem. */
static void test_key_checks(void)
{
	struct tb t;
	char path[128];
	uint8_t k[LINK_KEY_LEN];

	CU_ASSERT_FATAL(write_key(path, k) == 0);
	chmod(path, 0644);
	CU_ASSERT(tb_start(&t, "--listen", "127.0.0.1:0", "--link-key", path, NULL) < 0);
	CU_ASSERT(tb_log_count(&t, "--link-key") >= 1);
	tb_cleanup(&t);
	unlink(path);
	/* the same settings from a config file: a link dialed, a bridge asked for */
	{
		char conf[160];
		FILE *f;

		snprintf(conf, sizeof(conf), "%s.conf", keypath);
		f = fopen(conf, "w");
		CU_ASSERT_FATAL(f != NULL);
		fprintf(f, "link = cfg=127.0.0.1:1\nbridge = t\nbridge = u.*\nlink-key = %s\n"
			"link-heartbeat-ms = 100\n", keypath);
		fclose(f);
		CU_ASSERT_FATAL(tb_start(&t, "--config", conf, NULL) == 0);
		WAIT_FOR(tb_log_count(&t, "link cfg: dialing 127.0.0.1:1") >= 1, 5000);
		WAIT_FOR(tb_log_count(&t, "link cfg: connect to 127.0.0.1:1 failed") >= 1, 5000);
		CU_ASSERT(tb_stop(&t) == 0);
		tb_cleanup(&t);
		unlink(conf);
	}
	/* and links without a key at all */
	CU_ASSERT(tb_start(&t, "--listen", "127.0.0.1:0", NULL) < 0);
	CU_ASSERT(tb_log_count(&t, "links need a key") == 1);
	{
		/* said before anything was made in the directory */
		char path[400];

		snprintf(path, sizeof(path), "%s/state", t.dir);
		CU_ASSERT(access(path, F_OK) < 0);
	}
	tb_cleanup(&t);
}

/* A message from the other host says where it came from. */
static void test_origin(void)
{
	struct pair p;
	struct shmb_client *ca, *cb;
	struct shmb_session *sa, *sb;
	struct shmb_msg m;
	uint64_t b_id;

	pair_start(&p, false);
	CU_ASSERT_FATAL(connect_open(&p.b, "origin-sub", 0, &cb, &sb) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(sb, "t") == 0);
	CU_ASSERT_FATAL(connect_open(&p.a, "origin-pub", 0, &ca, &sa) == 0);
	/* B's own first: its broker id */
	CU_ASSERT(shmb_publish(sb, "t", "local", 5, 5000) == 0);
	CU_ASSERT_FATAL(shmb_recv(sb, &m, 5000) == 0 && m.len == 5);
	b_id = m.src_broker;
	CU_ASSERT(shmb_ack(sb) == 0);
	CU_ASSERT(shmb_publish(sa, "t", "remote", 6, 5000) == 0);
	CU_ASSERT_FATAL(shmb_recv(sb, &m, 10000) == 0);
	CU_ASSERT(m.len == 6 && !memcmp(m.data, "remote", 6));
	CU_ASSERT(m.src_broker != 0 && m.src_broker != b_id);
	CU_ASSERT(m.src_seq == 0);
	CU_ASSERT(shmb_ack(sb) == 0);
	/* a topic the link does not bridge stays on its host */
	CU_ASSERT(shmb_subscribe(sb, "not-bridged") == 0);
	CU_ASSERT(shmb_publish(sa, "not-bridged", "x", 1, 5000) == 0);
	CU_ASSERT(shmb_publish(sa, "t", "after", 5, 5000) == 0);
	CU_ASSERT_FATAL(shmb_recv(sb, &m, 10000) == 0);
	CU_ASSERT(m.len == 5 && !memcmp(m.data, "after", 5));
	shmb_session_close(sa);
	shmb_session_close(sb);
	shmb_close(ca);
	shmb_close(cb);
	pair_stop(&p);
}

static const struct harness_test tests[] = {
	{ "origin", test_origin },
	{ "key_checks", test_key_checks },
	{ "refusals", test_refusals },
	{ "stalled", test_stalled },
	{ "faults", test_faults },
	{ "broker_kills", test_broker_kills },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "links", tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	int r;

	if (sodium_init() < 0)
		return 1;
	signal(SIGPIPE, SIG_IGN);
	{
		uint8_t other[LINK_KEY_LEN];

		if (write_key(keypath, key) < 0 || write_key(badkeypath, other) < 0) {
			perror("test-links: key files in /dev/shm");
			return 1;
		}
	}
	r = harness_main("test-links", suites, argc, argv);
	unlink(keypath);
	unlink(badkeypath);
	return r;
}
