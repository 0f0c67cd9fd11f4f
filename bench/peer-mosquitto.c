/*
 * bench/peer-mosquitto.c - Mosquitto 2.0 (MQTT) beside shmb: the closest
 * peer on "a crashed subscriber gets its messages later" (persistent
 * sessions).
 *
 * Every run starts its own broker, `mosquitto -c <generated conf>` in a
 * mkdtemp directory (never the system service), listening on a free
 * loopback TCP port and on a Unix socket in that directory, with
 * set_tcp_nodelay on the broker and MOSQ_OPT_TCP_NODELAY on every client.
 * Clients use libmosquitto with their own mosquitto_loop() loop.
 *
 *   oneway 64 B, 1 KiB, 64 KiB   publisher -> broker -> subscriber, QoS 0
 *                                and QoS 1, every message checked (sequence
 *                                number + pattern), loss counted, not hidden
 *   rtt 64 B                     ping -> broker -> echo -> broker -> ping
 *   recovery-sub                 a paced QoS 1 stream to a persistent
 *                                session (fixed client id, clean_session
 *                                false) whose process is SIGKILLed and
 *                                restarted 20 times
 *   recovery-broker              the same stream, the broker SIGKILLed and
 *                                restarted on its persistence file 5 times
 *
 * Results go out as bench/result.h lines; see docs/benchmarks.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>

#include "bench/common.h"
#include "bench/result.h"
#include "shm/futex.h"

#define QOS1_WINDOW 100        /* publisher: QoS 1 messages awaiting PUBACK */
#define REC_RATE 20000         /* recovery stream, messages/s */
#define REC_SUB_KILLS 20
#define REC_BROKER_KILLS 5
#define MAX_CONN 256

/* ---- the broker ------------------------------------------------------------ */

struct broker {
	char dir[64];
	char conf[96];
	char sock[96];
	int port;
	pid_t pid;
	uid_t uid; /* the user it runs as when we are root */
	gid_t gid;
};

static struct broker *cur_broker; /* stopped by the exit and signal paths */

static void die(const char *what)
{
	fprintf(stderr, "peer-mosquitto: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t l = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &l) < 0)
		die("free port");
	close(fd);
	return ntohs(a.sin_port);
}

/* Writes the conf: both listeners, NODELAY, persistence in the directory,
 * and `extra` (one setting a line). */
static void broker_init(struct broker *b, bool persist, const char *extra)
{
	FILE *f;

	strcpy(b->dir, "/tmp/shmb-mosq-XXXXXX");
	if (!mkdtemp(b->dir))
		die("mkdtemp");
	snprintf(b->conf, sizeof(b->conf), "%s/mosquitto.conf", b->dir);
	snprintf(b->sock, sizeof(b->sock), "%s/sock", b->dir);
	b->port = free_port();
	b->pid = 0;
	b->uid = getuid();
	b->gid = getgid();
	if (getuid() == 0) {
		/* started as root mosquitto would drop to its user; we drop
		 * ourselves before exec so PR_SET_PDEATHSIG survives */
		struct passwd *pw = getpwnam("mosquitto");

		if (!pw)
			pw = getpwnam("nobody");
		if (pw) {
			b->uid = pw->pw_uid;
			b->gid = pw->pw_gid;
		}
		if (chown(b->dir, b->uid, b->gid) < 0)
			die("chown");
	}
	f = fopen(b->conf, "w");
	if (!f)
		die("conf");
	fprintf(f, "listener %d 127.0.0.1\nlistener 0 %s\nallow_anonymous true\n"
		   "set_tcp_nodelay true\npersistence %s\npersistence_location %s/\n"
		   "log_dest file %s/log\nlog_type error\nlog_type warning\n%s",
		b->port, b->sock, persist ? "true" : "false", b->dir, b->dir, extra ? extra : "");

	fclose(f);
	cur_broker = b;
}

static bool broker_accepts(struct broker *b)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(b->port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_un u = { .sun_family = AF_UNIX };
	int t = socket(AF_INET, SOCK_STREAM, 0), s = socket(AF_UNIX, SOCK_STREAM, 0);
	bool ok;

	strcpy(u.sun_path, b->sock);
	ok = connect(t, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	     connect(s, (struct sockaddr *)&u, sizeof(u)) == 0;
	close(t);
	close(s);
	return ok;
}

/* Starts mosquitto and waits (5 s at most) until both listeners accept. */
static void broker_start(struct broker *b)
{
	uint64_t deadline = clock_mono_ns() + 5000000000ull;
	pid_t p = fork();

	if (p < 0)
		die("fork");
	if (p == 0) {
		int fd = open("/dev/null", O_RDWR);

		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (getuid() == 0 && (setgroups(0, NULL) < 0 || setgid(b->gid) < 0 || setuid(b->uid) < 0))
			_exit(126);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execlp("mosquitto", "mosquitto", "-c", b->conf, (char *)NULL);
		_exit(127);
	}
	b->pid = p;
	while (!broker_accepts(b)) {
		int st;

		if (waitpid(p, &st, WNOHANG) == p || clock_mono_ns() > deadline) {
			fprintf(stderr, "peer-mosquitto: the broker did not start (see %s/log)\n", b->dir);
			b->pid = 0;
			exit(1);
		}
		usleep(2000);
	}
}

static void broker_kill(struct broker *b)
{
	if (b->pid > 0) {
		kill(b->pid, SIGKILL);
		waitpid(b->pid, NULL, 0);
		b->pid = 0;
	}
}

/* SIGTERM, then SIGKILL after 3 s. */
static void broker_stop(struct broker *b)
{
	uint64_t deadline = clock_mono_ns() + 3000000000ull;

	if (b->pid <= 0)
		return;
	kill(b->pid, SIGTERM);
	while (waitpid(b->pid, NULL, WNOHANG) != b->pid) {
		if (clock_mono_ns() > deadline) {
			broker_kill(b);
			return;
		}
		usleep(2000);
	}
	b->pid = 0;
}

/* Stops the broker and removes what we made in its directory. */
static void broker_fini(struct broker *b)
{
	static const char *files[] = { "mosquitto.conf", "sock", "log", "mosquitto.db",
				       "mosquitto.db.new" };
	char path[160];

	broker_stop(b);
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", b->dir, files[i]);
		unlink(path);
	}
	if (rmdir(b->dir) < 0)
		fprintf(stderr, "peer-mosquitto: %s left behind: %s\n", b->dir, strerror(errno));
	cur_broker = NULL;
}

static void on_exit_stop(void)
{
	if (cur_broker)
		broker_fini(cur_broker);
}

/* SIGINT/SIGTERM: stop the broker and remove its directory (atexit). */
static void on_signal(int sig)
{
	if (cur_broker && cur_broker->pid > 0)
		kill(cur_broker->pid, SIGKILL);
	exit(128 + sig);
}

/* ---- clients --------------------------------------------------------------- */

/* What a client process shares with the callbacks. */
struct cl {
	struct mosquitto *m;
	bool connected, subscribed;
	int inflight;          /* QoS 1 published, not yet acknowledged */
	void (*msg)(struct cl *c, const struct mosquitto_message *m);
	void *arg;
	const char *resub;     /* topic to subscribe on every connect, or NULL */
	int resub_qos;
	unsigned nconn;
};

static void cb_connect(struct mosquitto *m, void *o, int rc)
{
	struct cl *c = o;

	if (rc)
		return;
	c->connected = true;
	c->nconn++;
	if (c->resub)
		mosquitto_subscribe(m, NULL, c->resub, c->resub_qos);
}

static void cb_disconnect(struct mosquitto *m, void *o, int rc)
{
	(void)m;
	(void)rc;
	((struct cl *)o)->connected = false;
}

static void cb_subscribe(struct mosquitto *m, void *o, int mid, int n, const int *q)
{
	(void)m;
	(void)mid;
	(void)n;
	(void)q;
	((struct cl *)o)->subscribed = true;
}

static void cb_publish(struct mosquitto *m, void *o, int mid)
{
	(void)m;
	(void)mid;
	((struct cl *)o)->inflight--;
}

static void cb_message(struct mosquitto *m, void *o, const struct mosquitto_message *msg)
{
	struct cl *c = o;

	(void)m;
	c->msg(c, msg);
}

/* A client process: a libmosquitto client with NODELAY, connected to the
 * broker's TCP or Unix listener.  id NULL: a clean session.  Exits (the
 * process) when it cannot connect within 5 s. */
static void cl_open(struct cl *c, const struct broker *b, bool unix_sock, const char *id)
{
	uint64_t deadline = clock_mono_ns() + 5000000000ull;

	mosquitto_lib_init();
	c->m = mosquitto_new(id, id == NULL, c);
	if (!c->m)
		_exit(2);
	mosquitto_int_option(c->m, MOSQ_OPT_TCP_NODELAY, 1);
	mosquitto_max_inflight_messages_set(c->m, QOS1_WINDOW);
	mosquitto_connect_callback_set(c->m, cb_connect);
	mosquitto_disconnect_callback_set(c->m, cb_disconnect);
	mosquitto_subscribe_callback_set(c->m, cb_subscribe);
	mosquitto_publish_callback_set(c->m, cb_publish);
	mosquitto_message_callback_set(c->m, cb_message);
	while (mosquitto_connect(c->m, unix_sock ? b->sock : "127.0.0.1", unix_sock ? 0 : b->port, 60)) {
		if (clock_mono_ns() > deadline)
			_exit(3);
		usleep(2000);
	}
	while (!c->connected) {
		if (mosquitto_loop(c->m, 100, 1) || clock_mono_ns() > deadline)
			_exit(3);
	}
}

/* Loops until *flag is true (5 s at most). */
static void cl_wait(struct cl *c, volatile bool *flag)
{
	uint64_t deadline = clock_mono_ns() + 5000000000ull;

	while (!*flag)
		if (mosquitto_loop(c->m, 100, 1) || clock_mono_ns() > deadline)
			_exit(4);
}

/* One loop round; on a lost connection, one reconnect attempt. */
static void cl_step(struct cl *c, int timeout_ms)
{
	if (mosquitto_loop(c->m, timeout_ms, 1) == MOSQ_ERR_SUCCESS)
		return;
	c->connected = false;
	usleep(2000);
	mosquitto_reconnect(c->m);
}

static void cl_close(struct cl *c)
{
	mosquitto_disconnect(c->m);
	mosquitto_loop(c->m, 10, 1);
	mosquitto_destroy(c->m);
	mosquitto_lib_cleanup();
}

static pid_t child(int cpu)
{
	pid_t p = bench_spawn();

	if (p == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		bench_pin(cpu);
	}
	return p;
}

static void fill(uint8_t *buf, uint64_t seq, unsigned size)
{
	memset(buf, (int)(seq & 0xff), size);
	memcpy(buf, &seq, 8);
}

static bool check(const struct mosquitto_message *msg, unsigned size, uint64_t n, uint64_t *seq)
{
	const uint8_t *p = msg->payload;

	if ((unsigned)msg->payloadlen != size)
		return false;
	memcpy(seq, p, 8);
	if (*seq >= n)
		return false;
	for (unsigned i = 8; i < size; i++)
		if (p[i] != (uint8_t)(*seq & 0xff))
			return false;
	return true;
}

/* What the processes of one run share (MAP_SHARED, anonymous). */
struct shared {
	volatile bool sub_ready, pub_done;
	uint64_t n;
	unsigned size;
	uint64_t recv, distinct, dup, reord, bad, next;
	uint64_t t_first, t_last;
	/* recovery */
	volatile uint64_t pub_t0, pub_t1; /* the stream's first publish, last PUBACK */
	volatile unsigned inc;           /* subscriber incarnation */
	volatile uint64_t inc_first[64]; /* its first message, mono ns */
	volatile unsigned nconn;         /* subscriber connections */
	volatile uint64_t conn_at[MAX_CONN], conn_first[MAX_CONN];
	uint64_t lat[];                  /* rtt samples, or the seen counts */
};

static struct shared *shared_new(size_t extra)
{
	struct shared *s = mmap(NULL, sizeof(*s) + extra, PROT_READ | PROT_WRITE,
				MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (s == MAP_FAILED)
		die("mmap");
	return s;
}

/* Counts one received message in s: distinct, duplicated, out of order. */
static void count(struct shared *s, const struct mosquitto_message *msg)
{
	uint8_t *seen = (uint8_t *)s->lat;
	uint64_t seq, now = clock_mono_ns();

	if (!s->t_first)
		s->t_first = now;
	s->t_last = now;
	s->recv++;
	if (!check(msg, s->size, s->n, &seq)) {
		s->bad++;
		return;
	}
	if (seen[seq]) {
		s->dup++;
		return;
	}
	seen[seq] = 1;
	s->distinct++;
	if (seq < s->next)
		s->reord++;
	else
		s->next = seq + 1;
}

/* ---- one-way --------------------------------------------------------------- */

static void ow_msg(struct cl *c, const struct mosquitto_message *msg)
{
	count(c->arg, msg);
}

static void ow_sub(struct broker *b, bool ux, int qos, struct shared *s)
{
	struct cl c = { .msg = ow_msg, .arg = s };
	uint64_t idle_since = 0;

	cl_open(&c, b, ux, NULL);
	mosquitto_subscribe(c.m, NULL, "b/ow", qos);
	cl_wait(&c, &c.subscribed);
	s->sub_ready = true;
	while (s->distinct < s->n) {
		uint64_t before = s->recv;

		mosquitto_loop(c.m, 50, 1);
		if (s->recv != before || !s->pub_done)
			idle_since = 0;
		else if (!idle_since)
			idle_since = clock_mono_ns();
		else if (clock_mono_ns() - idle_since > 300000000ull)
			break; /* the publisher is done and nothing came for 300 ms */
	}
	cl_close(&c);
}

static void ow_pub(struct broker *b, bool ux, int qos, struct shared *s)
{
	static uint8_t buf[65536];
	struct cl c = { 0 };

	cl_open(&c, b, ux, NULL);
	while (!s->sub_ready)
		usleep(1000);
	for (uint64_t seq = 0; seq < s->n; seq++) {
		fill(buf, seq, s->size);
		if (qos) {
			while (c.inflight >= QOS1_WINDOW)
				if (mosquitto_loop(c.m, 100, 1))
					_exit(5);
			c.inflight++;
		}
		if (mosquitto_publish(c.m, NULL, "b/ow", (int)s->size, buf, qos, false))
			_exit(5);
		/* QoS 0: wait for the socket rather than queue without bound */
		while (mosquitto_want_write(c.m))
			if (mosquitto_loop(c.m, 100, 1))
				_exit(5);
	}
	while (c.inflight > 0)
		if (mosquitto_loop(c.m, 100, 1))
			_exit(5);
	s->pub_done = true;
	cl_close(&c);
	_exit(0);
}

static void oneway(struct broker *b, const char *name, bool ux, int qos, unsigned size, int rep)
{
	uint64_t n = bench_n(size > 4096 ? 1000 : 10000);
	struct shared *s = shared_new(n);
	struct bres r = bres_new(name, "oneway", size, rep);
	pid_t sub, pub;

	s->n = n;
	s->size = size;
	sub = child(1);
	if (sub == 0) {
		ow_sub(b, ux, qos, s);
		_exit(0);
	}
	pub = child(0);
	if (pub == 0)
		ow_pub(b, ux, qos, s);
	bench_reap(pub);
	bench_reap(sub);
	r.sent = n;
	r.recv = s->recv;
	r.lost = n - s->distinct;
	r.dup = s->dup;
	r.reord = s->reord;
	if (s->distinct > 1 && s->t_last > s->t_first)
		r.msgs_s = (double)s->recv / ((double)(s->t_last - s->t_first) / 1e9);
	if (s->bad)
		fprintf(stderr, "peer-mosquitto: %s %u: %llu malformed messages\n", name, size,
			(unsigned long long)s->bad);
	bres_emit(&r);
	munmap(s, sizeof(*s) + n);
}

/* ---- round trip ------------------------------------------------------------ */

struct echo {
	bool pending, stop;
	uint8_t buf[64];
};

static void echo_msg(struct cl *c, const struct mosquitto_message *msg)
{
	struct echo *e = c->arg;
	uint64_t seq;

	memcpy(e->buf, msg->payload, 64);
	memcpy(&seq, e->buf, 8);
	if (seq == UINT64_MAX)
		e->stop = true;
	else
		e->pending = true;
}

/* Replies outside the callback, so the reply is written at once. */
static void rtt_echo(struct broker *b, bool ux, int qos, struct shared *s)
{
	struct echo e = { 0 };
	struct cl c = { .msg = echo_msg, .arg = &e };

	cl_open(&c, b, ux, NULL);
	mosquitto_subscribe(c.m, NULL, "b/ping", qos);
	cl_wait(&c, &c.subscribed);
	s->sub_ready = true;
	while (!e.stop) {
		if (mosquitto_loop(c.m, 1000, 1))
			_exit(6);
		if (e.pending) {
			e.pending = false;
			mosquitto_publish(c.m, NULL, "b/pong", 64, e.buf, qos, false);
		}
	}
	cl_close(&c);
}

struct ping {
	uint64_t want;
	bool got;
};

static void ping_msg(struct cl *c, const struct mosquitto_message *msg)
{
	struct ping *p = c->arg;
	uint64_t seq;

	memcpy(&seq, msg->payload, 8);
	if (msg->payloadlen == 64 && seq == p->want)
		p->got = true;
}

static void rtt_ping(struct broker *b, bool ux, int qos, struct shared *s)
{
	struct ping p = { 0 };
	struct cl c = { .msg = ping_msg, .arg = &p };
	uint8_t buf[64] = { 0 };

	cl_open(&c, b, ux, NULL);
	mosquitto_subscribe(c.m, NULL, "b/pong", qos);
	cl_wait(&c, &c.subscribed);
	while (!s->sub_ready)
		usleep(1000);
	for (uint64_t i = 0; i < s->n + 100; i++) {
		uint64_t t0 = clock_mono_ns(), deadline = t0 + 2000000000ull;

		p.want = i;
		p.got = false;
		memcpy(buf, &i, 8);
		mosquitto_publish(c.m, NULL, "b/ping", 64, buf, qos, false);
		while (!p.got)
			if (mosquitto_loop(c.m, 100, 1) || clock_mono_ns() > deadline)
				goto out; /* lost: the run is marked below */
		if (i >= 100)
			s->lat[s->recv++] = clock_mono_ns() - t0;
	}
out:
	memset(buf, 0xff, 8);
	mosquitto_publish(c.m, NULL, "b/ping", 64, buf, qos, false);
	while (mosquitto_want_write(c.m) || c.inflight > 0)
		if (mosquitto_loop(c.m, 100, 1))
			break;
	cl_close(&c);
	_exit(0);
}

static void rtt(struct broker *b, const char *name, bool ux, int qos, int rep)
{
	uint64_t n = bench_n(20000);
	struct shared *s = shared_new(n * 8);
	struct bres r = bres_new(name, "rtt", 64, rep);
	pid_t echo, ping;

	s->n = n;
	echo = child(1);
	if (echo == 0) {
		rtt_echo(b, ux, qos, s);
		_exit(0);
	}
	ping = child(0);
	if (ping == 0)
		rtt_ping(b, ux, qos, s);
	bench_reap(ping);
	bench_reap(echo);
	r.sent = n;
	r.recv = s->recv;
	r.lost = n - s->recv;
	if (s->recv > 0)
		r.lat = bench_summarize(s->lat, s->recv);
	if (r.lost)
		r.lat.p50 = -1;
	bres_emit(&r);
	munmap(s, sizeof(*s) + n * 8);
}

/* ---- recovery ---------------------------------------------------------------- */

static void rec_msg(struct cl *c, const struct mosquitto_message *msg)
{
	struct shared *s = c->arg;
	unsigned k = c->nconn - 1;
	uint64_t now = clock_mono_ns();

	if (!s->inc_first[s->inc % 64])
		s->inc_first[s->inc % 64] = now;
	if (k < MAX_CONN && !s->conn_first[k])
		s->conn_first[k] = now;
	count(s, msg);
}

/* The persistent subscriber: fixed id, clean_session false, subscribes on
 * every connect (a broker restarted without its saved session forgot it). */
static void rec_sub(struct broker *b, struct shared *s)
{
	struct cl c = { .msg = rec_msg, .arg = s, .resub = "b/rec", .resub_qos = 1 };
	unsigned seen_conn = 0;

	cl_open(&c, b, false, "bench-rec-sub");
	for (;;) {
		if (c.subscribed)
			s->sub_ready = true;
		if (c.nconn != seen_conn) {
			seen_conn = c.nconn;
			if (seen_conn <= MAX_CONN)
				s->conn_at[seen_conn - 1] = clock_mono_ns();
			s->nconn = seen_conn;
		}
		cl_step(&c, 50);
	}
}

/* Paced QoS 1 publisher, at most QOS1_WINDOW unacknowledged; publishes
 * only while connected; libmosquitto resends the unacknowledged ones on
 * reconnect. */
static void rec_pub(struct broker *b, struct shared *s)
{
	struct cl c = { 0 };
	uint8_t buf[64];
	uint64_t seq = 0, t0, deadline;

	cl_open(&c, b, false, "bench-rec-pub");
	t0 = clock_mono_ns();
	s->pub_t0 = t0;
	while (seq < s->n) {
		uint64_t due = (clock_mono_ns() - t0) * REC_RATE / 1000000000ull;

		while (c.connected && seq < s->n && seq < due && c.inflight < QOS1_WINDOW) {
			fill(buf, seq, 64);
			if (mosquitto_publish(c.m, NULL, "b/rec", 64, buf, 1, false))
				break;
			c.inflight++;
			seq++;
		}
		cl_step(&c, 1);
	}
	deadline = clock_mono_ns() + 10000000000ull;
	while (c.inflight > 0 && clock_mono_ns() < deadline)
		cl_step(&c, 10);
	if (c.inflight > 0)
		fprintf(stderr, "peer-mosquitto: %d messages never acknowledged\n", c.inflight);
	s->pub_t1 = clock_mono_ns();
	s->pub_done = true;
	cl_close(&c);
	_exit(0);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Waits for the end of the stream: every message in, or the publisher
 * done and nothing for 0.5 s (20 s deadline after the publisher). */
static void rec_drain(struct shared *s)
{
	uint64_t last = 0, since = clock_mono_ns(), deadline = clock_mono_ns() + 60000000000ull;

	while (!s->pub_done && clock_mono_ns() < deadline)
		usleep(5000);
	deadline = clock_mono_ns() + 20000000000ull;
	while (s->distinct < s->n && clock_mono_ns() < deadline) {
		if (s->recv != last) {
			last = s->recv;
			since = clock_mono_ns();
		} else if (clock_mono_ns() - since > 500000000ull) {
			break;
		}
		usleep(5000);
	}
}

static void rec_emit(const char *name, const char *workload, struct shared *s, double *ms, int k,
		     const char *more)
{
	struct bres r = bres_new(name, workload, 64, 0);
	char extra[256];

	qsort(ms, (size_t)k, sizeof(double), cmp_double);
	snprintf(extra, sizeof(extra),
		 "kills=%d first_msg_ms_median=%.1f first_msg_ms_max=%.1f stream_msgs_s=%.0f%s%s", k,
		 k ? ms[k / 2] : -1.0, k ? ms[k - 1] : -1.0,
		 (double)s->n * 1e9 / (double)(s->pub_t1 - s->pub_t0 + 1), more ? " " : "",
		 more ? more : "");
	r.sent = s->n;
	r.recv = s->recv;
	r.lost = s->n - s->distinct;
	r.dup = s->dup;
	r.reord = s->reord;
	r.extra = extra;
	if (s->bad)
		fprintf(stderr, "peer-mosquitto: %s: %llu malformed messages\n", name,
			(unsigned long long)s->bad);
	bres_emit(&r);
}

/* Waits until the current subscriber got a message (up to 2 s). */
static void wait_first(volatile uint64_t *t)
{
	uint64_t deadline = clock_mono_ns() + 2000000000ull;

	while (!*t && clock_mono_ns() < deadline)
		usleep(1000);
}

/* Kills in a stream: `full` in a full run, a tenth (at least 1) under
 * QUICK, so the kills stay as far apart as in a full run. */
static int kills(int full)
{
	int k = (int)(full * bench_scale() + 0.5);

	return k < 1 ? 1 : k;
}

/* A broker on conf, the recovery subscriber, then the paced publisher. */
static void rec_start(struct broker *b, const char *conf, struct shared *s, pid_t *sub, pid_t *pub)
{
	s->size = 64;
	broker_init(b, true, conf);
	broker_start(b);
	*sub = child(1);
	if (*sub == 0)
		rec_sub(b, s);
	while (!s->sub_ready)
		usleep(1000);
	*pub = child(0);
	if (*pub == 0)
		rec_pub(b, s);
}

static void recovery_sub(const char *name, const char *conf)
{
	int nk = kills(REC_SUB_KILLS);
	uint64_t n = bench_n(100000), t0, period = n * 1000000000ull / REC_RATE / (uint64_t)(nk + 1);
	struct shared *s = shared_new(n);
	struct broker b;
	double ms[REC_SUB_KILLS];
	int k = 0;
	pid_t sub, pub;

	s->n = n;
	rec_start(&b, conf, s, &sub, &pub);
	t0 = clock_mono_ns();
	while (k < nk && !s->pub_done) {
		uint64_t at = t0 + (uint64_t)(k + 1) * period, tf;

		/* each incarnation lives half a period past its first message */
		wait_first(&s->inc_first[s->inc % 64]);
		if (s->inc_first[s->inc % 64] + period / 2 > at)
			at = s->inc_first[s->inc % 64] + period / 2;
		while (clock_mono_ns() < at)
			usleep(1000);
		kill(sub, SIGKILL);
		waitpid(sub, NULL, 0);
		s->inc++;
		s->inc_first[s->inc % 64] = 0;
		tf = clock_mono_ns();
		sub = child(1);
		if (sub == 0)
			rec_sub(&b, s);
		wait_first(&s->inc_first[s->inc % 64]);
		if (s->inc_first[s->inc % 64])
			ms[k] = (double)(s->inc_first[s->inc % 64] - tf) / 1e6;
		else
			ms[k] = -1; /* nothing within 2 s */
		k++;
	}
	rec_drain(s);
	kill(sub, SIGKILL);
	bench_reap(sub);
	bench_reap(pub);
	broker_fini(&b);
	rec_emit(name, "recovery-sub", s, ms, k, NULL);
	munmap(s, sizeof(*s) + n);
}

static void recovery_broker(const char *name, const char *conf, const char *more)
{
	int nk = kills(REC_BROKER_KILLS);
	uint64_t n = bench_n(100000), t0, period = n * 1000000000ull / REC_RATE / (uint64_t)(nk + 1);
	struct shared *s = shared_new(n);
	struct broker b;
	double ms[REC_BROKER_KILLS];
	int k = 0;
	pid_t sub, pub;

	s->n = n;
	rec_start(&b, conf, s, &sub, &pub);
	t0 = clock_mono_ns();
	while (k < nk && !s->pub_done) {
		uint64_t at = t0 + (uint64_t)(k + 1) * period, tr, deadline;
		unsigned c0;

		while (clock_mono_ns() < at)
			usleep(1000);
		c0 = s->nconn;
		broker_kill(&b);
		tr = clock_mono_ns();
		broker_start(&b);
		/* the first message on the first connection after the restart */
		deadline = clock_mono_ns() + 5000000000ull;
		while ((s->nconn <= c0 || !s->conn_first[s->nconn - 1]) && clock_mono_ns() < deadline)
			usleep(1000);
		ms[k++] = s->nconn > c0 && s->nconn <= MAX_CONN && s->conn_first[c0]
				  ? (double)(s->conn_first[c0] - tr) / 1e6
				  : -1;
	}
	rec_drain(s);
	kill(sub, SIGKILL);
	bench_reap(sub);
	bench_reap(pub);
	broker_fini(&b);
	rec_emit(name, "recovery-broker", s, ms, k, more);
	munmap(s, sizeof(*s) + n);
}

/* ---- main ------------------------------------------------------------------ */

static const struct tr {
	const char *name;
	bool unix_sock;
	int qos;
} trs[] = {
	{ "mosquitto tcp qos0", false, 0 },
	{ "mosquitto tcp qos1", false, 1 },
	{ "mosquitto unix qos0", true, 0 },
	{ "mosquitto unix qos1", true, 1 },
};

static void perf(void)
{
	static const unsigned sizes[] = { 64, 1024, 65536 };
	struct broker b;

	/* unlimited queues: QoS 0 is not dropped for a slow subscriber */
	broker_init(&b, false, "max_queued_messages 0\n");
	broker_start(&b);
	/* QUICK: one repetition, to stay within its 10 s */
	for (int rep = 0; rep < (bench_scale() < 1 ? 1 : bench_reps()); rep++)
		for (size_t t = 0; t < 4; t++) {
			for (size_t i = 0; i < 3; i++)
				oneway(&b, trs[t].name, trs[t].unix_sock, trs[t].qos, sizes[i], rep);
			rtt(&b, trs[t].name, trs[t].unix_sock, trs[t].qos, rep);
		}
	broker_fini(&b);
}

/* No argument: everything; "perf" or "recovery": that part only. */
int main(int argc, char **argv)
{
	bool perf_only = argc > 1 && !strcmp(argv[1], "perf");
	bool rec_only = argc > 1 && !strcmp(argv[1], "recovery");

	atexit(on_exit_stop);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);
	for (int pin = 0; pin <= 1 && !rec_only; pin++) {
		/* QUICK: unpinned only, to stay within its 10 s */
		if (pin && (sysconf(_SC_NPROCESSORS_ONLN) < 2 || bench_scale() < 1))
			break;
		bench_pinned = pin;
		fprintf(stderr, "peer-mosquitto: one-way and round trip (%s)\n", pin ? "pinned" : "unpinned");
		perf();
	}
	bench_pinned = 0;
	if (perf_only)
		return 0;
	/* recovery: one repetition (rep 0), unpinned, to stay within budget */
	fprintf(stderr, "peer-mosquitto: recovery, subscriber killed\n");
	recovery_sub("mosquitto qos1 (max_queued default, autosave default)", NULL);
	recovery_sub("mosquitto qos1 (max_queued unlimited, autosave default)", "max_queued_messages 0\n");
	fprintf(stderr, "peer-mosquitto: recovery, broker killed\n");
	recovery_broker("mosquitto qos1 (persistence, autosave default)", NULL, NULL);
	/* autosave_interval 1 (a save per change) publishes ~800 msgs/s:
	 * 10^5 messages would take two minutes; 100 changes a save keeps
	 * the stream near 7 000 msgs/s */
	recovery_broker("mosquitto qos1 (persistence, autosave_on_changes)",
			"autosave_on_changes true\nautosave_interval 100\n", "autosave_interval=100");
	return 0;
}
