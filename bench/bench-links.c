/*
 * bench/bench-links.c - one remote link (docs/links.md) on loopback,
 * beside a plain TCP connection on 127.0.0.1 measured in the same run
 * (issue 6).
 *
 * Two brokers, each started by the benchmark in a fresh directory: A
 * listens on 127.0.0.1:PORT, B dials it as link "l" and bridges tp, ping
 * and pong, both with a key file the benchmark writes (64 hex digits,
 * mode 0600) in a temporary directory of its own.  Before measuring, one
 * round trip across the link shows it is up both ways.
 *
 *   link-oneway  64 B and 1 KiB: a publisher on B, a subscriber on A
 *                (topic tp); every message checked (sequence, length,
 *                content); messages/s at the subscriber, first to last
 *   link-rtt     64 B: a pinger on B publishes on ping, an echo on A
 *                answers on pong: client -> B -> TCP -> A -> echo and
 *                back; blocking readers (spin_us 1) and spinning ones
 *
 * The baseline: one TCP connection on 127.0.0.1, TCP_NODELAY at both
 * ends, each message a 4-byte length and the payload, written with one
 * write() each; the reader reads what is there (up to 256 KiB at once)
 * and cuts it into messages.  One-way: a writer and a reader process,
 * every message checked as above.  Round trip: a pinger and an echo, with
 * blocking reads ("tcp") and with reads that spin on MSG_DONTWAIT
 * ("tcp spin").
 *
 * Unpinned, then pinned (publisher / pinger / writer on CPU 0, the other
 * side on CPU 1, the brokers placed by the scheduler).  The spinning
 * round trips run unpinned only, as in bench-broker: two spinning
 * clients pinned on both vCPUs leave the brokers none.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench/common.h"
#include "bench/result.h"
#include "bench/shmbd.h"
#include "shm/atomics.h"
#include "shm/futex.h"
#include "shmb.h"

#define MSG_MAX   65536
#define READ_BUF  (256u << 10)

/* The two brokers, A (listens) and B (dials), and the key's directory. */
static char dirs[2][64], keydir[64], keypath[96];
static pid_t brokers[2] = { -1, -1 };
static pid_t main_pid;

/* ---- the two brokers --------------------------------------------------------- */

static void links_cleanup(void)
{
	char cmd[256];

	if (getpid() != main_pid)
		return;
	for (int i = 1; i >= 0; i--)
		if (brokers[i] > 0) {
			kill(brokers[i], SIGTERM);
			bench_reap(brokers[i]);
			brokers[i] = -1;
		}
	for (int i = 0; i < 2; i++)
		if (dirs[i][0]) {
			snprintf(cmd, sizeof(cmd), "rm -rf %s", dirs[i]);
			if (system(cmd) != 0)
				fprintf(stderr, "bench-links: cannot remove %s\n", dirs[i]);
			dirs[i][0] = 0;
		}
	if (keydir[0]) {
		unlink(keypath);
		rmdir(keydir);
		keydir[0] = 0;
	}
}

/* SIGINT/SIGTERM/SIGHUP: the brokers and the directories go (atexit). */
static void links_on_signal(int sig)
{
	for (int i = 0; i < 2; i++)
		if (brokers[i] > 0)
			kill(brokers[i], SIGKILL);
	exit(128 + sig);
}

static void die(const char *what)
{
	fprintf(stderr, "bench-links: %s\n", what);
	exit(1);
}

/* A key file of 64 random hex digits, mode 0600, in a directory of its own. */
static void links_write_key(void)
{
	uint8_t key[32];
	char hex[66];
	FILE *f;

	snprintf(keydir, sizeof(keydir), "/tmp/shmb-bench-links.XXXXXX");
	if (!mkdtemp(keydir))
		die("cannot make the key's directory");
	snprintf(keypath, sizeof(keypath), "%s/link.key", keydir);
	if (getrandom(key, sizeof(key), 0) != (ssize_t)sizeof(key))
		die("getrandom failed");
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", key[i]);
	f = fopen(keypath, "w");
	if (!f || fchmod(fileno(f), 0600) < 0 || fprintf(f, "%s\n", hex) != 65 || fclose(f) != 0)
		die("cannot write the key file");
}

/* A loopback port free a moment ago (the kernel's pick). */
static uint16_t free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &al) < 0)
		die("no free loopback port");
	close(fd);
	return ntohs(a.sin_port);
}

/*
 * One round trip B -> A -> B on ping and pong, waiting up to 10 s a way:
 * what B publishes before the link is up waits in its replay ring, so one
 * message each way is enough to know both directions carry.
 */
static void links_wait_up(void)
{
	struct shmb_client *ca, *cb;
	struct shmb_session *a, *b;
	uint64_t t0 = clock_mono_ns();
	uint8_t buf[64] = { 0 };
	struct shmb_msg m;

	a = open_session_in(dirs[0], &ca, "bench-probe-a", 1);
	b = open_session_in(dirs[1], &cb, "bench-probe-b", 1);
	if (shmb_subscribe(a, "ping") < 0 || shmb_subscribe(b, "pong") < 0)
		die("cannot subscribe the probe");
	if (shmb_publish(b, "ping", buf, sizeof(buf), -1) < 0 || shmb_recv(a, &m, 10000) < 0)
		die("the link did not carry B -> A within 10 s");
	shmb_ack(a);
	if (shmb_publish(a, "pong", buf, sizeof(buf), -1) < 0 || shmb_recv(b, &m, 10000) < 0)
		die("the link did not carry A -> B within 10 s");
	shmb_ack(b);
	shmb_session_destroy(a);
	shmb_session_destroy(b);
	shmb_close(ca);
	shmb_close(cb);
	fprintf(stderr, "bench-links: link up after %.0f ms\n", (double)(clock_mono_ns() - t0) / 1e6);
}

static void links_start(void)
{
	char listen[32], dial[48];
	uint16_t port = free_port();

	links_write_key();
	for (int i = 0; i < 2; i++) {
		snprintf(dirs[i], sizeof(dirs[i]), "/dev/shm/shmb-bench-link%c.XXXXXX", 'A' + i);
		if (!mkdtemp(dirs[i]))
			die("cannot make a broker directory");
	}
	snprintf(listen, sizeof(listen), "127.0.0.1:%u", port);
	snprintf(dial, sizeof(dial), "l=127.0.0.1:%u", port);
	{
		const char *a[] = { "--listen", listen, "--link-key", keypath, NULL };
		const char *b[] = { "--link", dial, "--link-key", keypath, "--bridge", "tp",
				    "--bridge", "ping", "--bridge", "pong", NULL };

		brokers[0] = bench_broker_spawn(dirs[0], a);
		brokers[1] = bench_broker_spawn(dirs[1], b);
	}
	links_wait_up();
}

/* ---- shmb across the link ------------------------------------------------------ */

struct ow_shared {
	uint32_t ready;
	uint32_t pad;
	uint64_t sent;
	struct oneway o;
};

/* n messages of `size` bytes from a publisher on B to a subscriber on A. */
static struct oneway link_oneway(uint32_t size, uint64_t n)
{
	struct ow_shared *sh = bench_shalloc(sizeof(*sh));
	struct oneway o;
	pid_t sub, pub;

	sub = bench_spawn();
	if (sub == 0) {
		/* often enough that unacknowledged messages never fill the 4 MiB ring */
		uint64_t ack_every = (4u << 20) / (size + 64) / 4 + 1;
		struct shmb_client *c;
		struct shmb_session *s;
		struct msg_check chk;
		struct shmb_msg m;

		bench_pin(1);
		s = open_session_in(dirs[0], &c, "bench-link-sub", 50);
		shmb_subscribe(s, "tp");
		msg_check_init(&chk, n, size);
		store_release(&sh->ready, 1); /* pairs with the parent's load_acquire */
		while (chk.recv < n) {
			int r = shmb_recv(s, &m, 10000);

			if (r < 0) {
				fprintf(stderr, "bench-links: subscriber: %llu of %llu, then %s\n",
					(unsigned long long)chk.recv, (unsigned long long)n, shmb_strerror(r));
				break;
			}
			msg_check(&chk, m.data, m.len);
			if (chk.recv % ack_every == 0)
				shmb_ack(s);
		}
		shmb_ack(s);
		msg_check_done(&chk, n, &sh->o);
		shmb_session_destroy(s);
		shmb_close(c);
		_exit(0);
	}
	while (!load_acquire(&sh->ready))
		usleep(100);
	pub = bench_spawn();
	if (pub == 0) {
		static uint8_t buf[MSG_MAX];
		struct shmb_client *c;
		struct shmb_session *s;

		bench_pin(0);
		s = open_session_in(dirs[1], &c, "bench-link-pub", 50);
		for (uint64_t i = 0; i < n; i++) {
			msg_fill(buf, i, size);
			if (shmb_publish(s, "tp", buf, size, -1) < 0)
				break;
			sh->sent = i + 1;
		}
		shmb_flush(s, 10000);
		shmb_session_destroy(s);
		shmb_close(c);
		_exit(0);
	}
	bench_reap(pub);
	bench_reap(sub);
	o = sh->o;
	o.sent = sh->sent; /* lost counts from the n asked: a publisher's failure shows */
	bench_shfree(sh, sizeof(*sh));
	return o;
}

/* ---- the baseline: one TCP connection ------------------------------------------- */

/* A connected pair on 127.0.0.1 with TCP_NODELAY at both ends. */
static void tcp_pair(int fd[2])
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	int one = 1, l = socket(AF_INET, SOCK_STREAM, 0);

	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 1) < 0 ||
	    getsockname(l, (struct sockaddr *)&a, &al) < 0)
		die("cannot listen on 127.0.0.1");
	fd[0] = socket(AF_INET, SOCK_STREAM, 0);
	if (fd[0] < 0 || connect(fd[0], (struct sockaddr *)&a, sizeof(a)) < 0)
		die("cannot connect to 127.0.0.1");
	fd[1] = accept(l, NULL, NULL);
	if (fd[1] < 0)
		die("cannot accept on 127.0.0.1");
	close(l);
	for (int i = 0; i < 2; i++)
		if (setsockopt(fd[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
			die("cannot set TCP_NODELAY");
}

static int tcp_write_all(int fd, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t w = write(fd, p, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

/* A reader that cuts a byte stream into length-prefixed messages. */
struct frames {
	int fd;
	bool spin;     /* recv(MSG_DONTWAIT) in a loop instead of sleeping */
	size_t off, have;
	uint8_t *buf;  /* READ_BUF bytes */
};

/* The next message's payload (valid until the next call), its length in
 * *len; NULL at the end of the stream or on a length beyond MSG_MAX. */
static const uint8_t *frames_next(struct frames *f, uint32_t *len)
{
	for (;;) {
		size_t avail = f->have - f->off;
		ssize_t r;

		if (avail >= 4) {
			memcpy(len, f->buf + f->off, 4);
			if (*len > MSG_MAX)
				return NULL;
			if (avail >= 4 + (size_t)*len) {
				const uint8_t *p = f->buf + f->off + 4;

				f->off += 4 + *len;
				return p;
			}
		}
		if (f->off) {
			memmove(f->buf, f->buf + f->off, avail);
			f->have = avail;
			f->off = 0;
		}
		r = recv(f->fd, f->buf + f->have, READ_BUF - f->have, f->spin ? MSG_DONTWAIT : 0);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r <= 0)
			return NULL;
		f->have += (size_t)r;
	}
}

static struct oneway tcp_oneway(uint32_t size, uint64_t n)
{
	struct ow_shared *sh = bench_shalloc(sizeof(*sh));
	struct oneway o;
	pid_t rx, tx;
	int fd[2];

	tcp_pair(fd);
	rx = bench_spawn();
	if (rx == 0) {
		struct frames f = { .fd = fd[1], .buf = malloc(READ_BUF) };
		struct msg_check chk;
		const uint8_t *p;
		uint32_t len;

		bench_pin(1);
		close(fd[0]);
		msg_check_init(&chk, n, size);
		/* until the writer closes: anything extra shows too */
		while (f.buf && (p = frames_next(&f, &len)))
			msg_check(&chk, p, len);
		msg_check_done(&chk, n, &sh->o);
		_exit(0);
	}
	tx = bench_spawn();
	if (tx == 0) {
		static uint8_t buf[4 + MSG_MAX];

		bench_pin(0);
		close(fd[1]);
		memcpy(buf, &size, 4);
		for (uint64_t i = 0; i < n; i++) {
			msg_fill(buf + 4, i, size);
			if (tcp_write_all(fd[0], buf, 4 + size) < 0)
				break;
			sh->sent = i + 1;
		}
		close(fd[0]);
		_exit(0);
	}
	close(fd[0]);
	close(fd[1]);
	bench_reap(tx);
	bench_reap(rx);
	o = sh->o;
	o.sent = sh->sent;
	bench_shfree(sh, sizeof(*sh));
	return o;
}

struct rtt_shared {
	uint64_t bad;
	uint64_t lat[];
};

/* n 64-byte round trips (after 100 warm-up ones); *bad: replies wrong or missing. */
static struct lat tcp_rtt(bool spin, size_t n, uint64_t *bad)
{
	size_t bytes = sizeof(struct rtt_shared) + n * 8;
	struct rtt_shared *sh = bench_shalloc(bytes);
	struct lat l = { -1, -1, -1, -1 };
	pid_t echo, ping;
	int fd[2];

	tcp_pair(fd);
	echo = bench_spawn();
	if (echo == 0) {
		struct frames f = { .fd = fd[1], .spin = spin, .buf = malloc(READ_BUF) };
		uint8_t out[4 + 64];
		const uint8_t *p;
		uint32_t len;

		bench_pin(1);
		close(fd[0]);
		while (f.buf && (p = frames_next(&f, &len)) && len <= 64) {
			memcpy(out, &len, 4);
			memcpy(out + 4, p, len);
			if (tcp_write_all(fd[1], out, 4 + len) < 0)
				break;
		}
		_exit(0);
	}
	ping = bench_spawn();
	if (ping == 0) {
		struct frames f = { .fd = fd[0], .spin = spin, .buf = malloc(READ_BUF) };
		uint8_t out[4 + 64];
		uint32_t size = 64, len;

		bench_pin(0);
		close(fd[1]);
		memcpy(out, &size, 4);
		sh->bad = n;
		for (uint64_t i = 0; f.buf && i < n + 100; i++) {
			uint64_t t0 = clock_mono_ns();
			const uint8_t *p;

			msg_fill(out + 4, i, size);
			if (tcp_write_all(fd[0], out, sizeof(out)) < 0 || !(p = frames_next(&f, &len)))
				break;
			if (i < 100) /* warm-up dropped */
				continue;
			sh->lat[i - 100] = clock_mono_ns() - t0;
			if (msg_intact(p, len, i, size))
				sh->bad--;
		}
		close(fd[0]);
		_exit(0);
	}
	close(fd[0]);
	close(fd[1]);
	bench_reap(ping);
	bench_reap(echo);
	*bad = sh->bad;
	if (!*bad)
		l = bench_summarize(sh->lat, n);
	bench_shfree(sh, bytes);
	return l;
}

/* ---- the runs ------------------------------------------------------------------ */

static void emit_rtt(const char *transport, int rep, struct lat l, size_t n, uint64_t bad)
{
	struct bres r = bres_new(transport, "link-rtt", 64, rep);

	r.lat = l;
	r.sent = n;
	r.recv = l.p50 < 0 ? 0 : n - bad;
	r.lost = r.sent - r.recv;
	bres_emit(&r);
}

static void run(int pin_mode)
{
	const uint32_t sizes[] = { 64, 1024 };
	/* a link's round trip costs ~0.2-1 ms here: fewer than bench-broker's */
	const size_t lat_n = bench_n(5000);

	bench_pinned = pin_mode;
	for (int rep = 0; rep < bench_reps(); rep++) {
		uint64_t bad;
		struct lat l;

		/* each shmb figure beside its TCP baseline, so a busy moment hits both */
		for (int k = 0; k < 2; k++) {
			uint64_t n = bench_n(sizes[k] == 64 ? 300000 : 100000);

			struct oneway lo = link_oneway(sizes[k], n), to = tcp_oneway(sizes[k], n);

			bres_emit_oneway("shmb link", "link-oneway", sizes[k], rep, &lo);
			bres_emit_oneway("tcp", "link-oneway", sizes[k], rep, &to);
		}
		l = broker_pingpong_between(dirs[1], dirs[0], 1, lat_n);
		emit_rtt("shmb link block", rep, l, lat_n, 0);
		l = tcp_rtt(false, lat_n, &bad);
		emit_rtt("tcp", rep, l, lat_n, bad);
		if (!bench_pinned) {
			/* four processes spinning or polling on two vCPUs: ~1 ms a trip */
			l = broker_pingpong_between(dirs[1], dirs[0], 1000000, lat_n / 2);
			emit_rtt("shmb link spin", rep, l, lat_n / 2, 0);
			l = tcp_rtt(true, lat_n / 2, &bad);
			emit_rtt("tcp spin", rep, l, lat_n / 2, bad);
		}
	}
	if (bench_pinned)
		bres_skip("shmb link spin / tcp spin rtt, pinned",
			  "two spinning clients pinned on the two CPUs leave the polling brokers no CPU;"
			  " measured unpinned");
}

int main(int argc, char **argv)
{
	(void)argv;
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	main_pid = getpid();
	atexit(links_cleanup);
	signal(SIGINT, links_on_signal);
	signal(SIGTERM, links_on_signal);
	signal(SIGHUP, links_on_signal);
	if (argc > 1)
		die("usage: bench-links (SHMB_BENCH_QUICK=1, SHMB_BENCH_REPS=N)");
	links_start();
	run(0);
	if (sysconf(_SC_NPROCESSORS_ONLN) >= 2)
		run(1);
	else
		bres_skip("shmb link, pinned", "fewer than 2 CPUs online");
	return 0;
}
