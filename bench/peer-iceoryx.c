/*
 * bench/peer-iceoryx.c - iceoryx 2.0 (C binding) beside shmb: shared
 * memory with a central daemon (RouDi), zero-copy chunks, the closest
 * peer on speed.
 *
 *   oneway        64 B, 1 KiB, 64 KiB: publisher and subscriber in two
 *                 processes, the subscriber spinning on iox_sub_take_chunk
 *                 ("iceoryx spin") or, at 64 B only, blocked in a wait set
 *                 ("iceoryx waitset"); queue 256 (the 2.0 maximum) with
 *                 QueueFullPolicy_BLOCK_PRODUCER and
 *                 ConsumerTooSlowPolicy_WAIT_FOR_CONSUMER, so nothing may
 *                 be lost; every message checked for order and content
 *   rtt           64 B ping-pong between two processes, both readers
 *                 spinning or both blocked in the wait set (iox_ws_timed_wait,
 *                 whose timeout only notices a peer that is gone)
 *   recovery-sub  a paced stream (20 000 msgs/s, 10^5 or more) while the
 *                 subscriber process is SIGKILLed and restarted; how many
 *                 of the messages published while it was dead the new one
 *                 receives (publisher history 16 = IOX_MAX_PUBLISHER_HISTORY,
 *                 historyRequest 16), and how many are missing in all
 *   fanout        64 B, 1 publisher -> 8 subscriber processes on one
 *                 service, unpinned, the same lossless queue policies;
 *                 the publisher starts once all 8 are SUBSCRIBED
 *   fanin         64 B, 8 publisher processes, each on a service of its
 *                 own -> 1 subscriber process holding 8 subscribers it
 *                 polls round-robin, unpinned
 *                 (fan readers spin but yield when their queue is empty:
 *                 9 processes share 2 CPUs; every message checked per
 *                 publisher as bench-broker's stream() does)
 *
 * Starts its own iox-roudi with a generated config (mempools for 64 B,
 * 1 KiB and 64 KiB payloads) in a fresh temp dir, waits for "RouDi is
 * ready", and stops it by its pid (SIGTERM, SIGKILL after 5 s) on every
 * exit path.  RouDi uses fixed names (/dev/shm/iceoryx_mgmt, /tmp/roudi):
 * if one is running already, everything is reported as skipped.  The
 * parent never initialises an iceoryx runtime: each measured side is a
 * forked child with its own runtime.  Unpinned, then pinned (publisher on
 * CPU 0, subscriber on CPU 1, RouDi where the scheduler puts it);
 * recovery-sub and the fan workloads only unpinned.  An argument (oneway,
 * rtt, recovery-sub, fanout, fanin) runs only that workload, for
 * development.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "iceoryx_binding_c/log.h"
#include "iceoryx_binding_c/publisher.h"
#include "iceoryx_binding_c/runtime.h"
#include "iceoryx_binding_c/subscriber.h"
#include "iceoryx_binding_c/wait_set.h"

#include "bench/common.h"
#include "bench/result.h"
#include "shm/clock.h"

#define SVC "shmb-bench"
#define QUEUE 256   /* MAX_SUBSCRIBER_QUEUE_CAPACITY in 2.0 */
#define HISTORY 16  /* IOX_MAX_PUBLISHER_HISTORY in 2.0 */
#define MAX_KILLS 20
#define RATE 20000  /* recovery stream, msgs/s */
#define FAN 8       /* fanout's subscribers, fanin's publishers */

static pid_t owner;           /* the parent: only it stops RouDi */
static pid_t roudi = -1;
static char tmpdir[80];       /* config and RouDi's log */
static char data_shm[300];    /* RouDi's data segment: /dev/shm/<user> */
static unsigned name_seq;     /* runtime names: shmbiox-<owner>-<k> */
static char instance[32];     /* a fresh service instance per measurement */
static bool trouble;          /* a measurement lost messages: show RouDi's complaints */
static uint64_t last_kill_ns; /* recovery-sub's last SIGKILL of a subscriber */

static void sleep_us(unsigned us)
{
	struct timespec t = { us / 1000000, (long)(us % 1000000) * 1000 };

	nanosleep(&t, NULL);
}

/* ---- RouDi ------------------------------------------------------------------ */

static bool roudi_process_exists(void)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	bool found = false;

	while (d && !found && (e = readdir(d))) {
		char path[300], comm[64] = "";
		FILE *f;

		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		/* "pid (comm) state ...": a zombie runs nothing */
		if (fgets(comm, sizeof(comm), f) && strstr(comm, "(iox-roudi) ") && !strstr(comm, "(iox-roudi) Z"))
			found = true;
		fclose(f);
	}
	if (d)
		closedir(d);
	return found;
}

static void rm_glob(const char *pattern)
{
	glob_t g;

	if (glob(pattern, 0, NULL, &g) == 0)
		for (size_t i = 0; i < g.gl_pathc; i++)
			unlink(g.gl_pathv[i]);
	globfree(&g);
}

/* After a measurement lost messages: RouDi's warnings and errors (e.g. a
 * process it took for dead), a few lines to stderr; all: any lines (it
 * failed to start). */
static void roudi_complaints(bool all)
{
	char path[128], line[400];
	FILE *f;
	int k = 0;

	snprintf(path, sizeof(path), "%s/roudi.log", tmpdir);
	f = fopen(path, "r");
	while (f && k < 8 && fgets(line, sizeof(line), f))
		if ((all || strstr(line, "Warning") || strstr(line, "Error") || strstr(line, "Fatal")) &&
		    !strstr(line, "Log level")) {
			fprintf(stderr, "peer-iceoryx: RouDi: %s", line);
			k++;
		}
	if (f)
		fclose(f);
}

/* Stops our RouDi (SIGTERM, SIGKILL after 5 s) and removes what it and our
 * clients left; a no-op in children and when none was started. */
static void roudi_stop(void)
{
	char path[300];
	int st;

	if (getpid() != owner)
		return;
	if (roudi > 0) {
		uint64_t end = clock_mono_ns() + 5000000000ull;

		kill(roudi, SIGTERM);
		while (waitpid(roudi, &st, WNOHANG) == 0) {
			if (clock_mono_ns() > end) {
				kill(roudi, SIGKILL);
				waitpid(roudi, &st, 0);
				break;
			}
			sleep_us(2000);
		}
		roudi = -1;
		/* gone after a clean SIGTERM; left behind after SIGKILL */
		unlink("/dev/shm/iceoryx_mgmt");
		unlink(data_shm);
		unlink("/tmp/roudi");
		unlink("/tmp/roudi.lock");
		unlink("/tmp/iox-unique-roudi.lock");
	}
	snprintf(path, sizeof(path), "/tmp/shmbiox-%d-*", (int)owner); /* killed clients' sockets */
	rm_glob(path);
	if (tmpdir[0]) {
		if (trouble)
			roudi_complaints(false);
		snprintf(path, sizeof(path), "%s/roudi.toml", tmpdir);
		unlink(path);
		snprintf(path, sizeof(path), "%s/roudi.log", tmpdir);
		unlink(path);
		rmdir(tmpdir);
		tmpdir[0] = 0;
	}
}

static void on_signal(int sig)
{
	roudi_stop();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Mempools: chunk = payload + chunk header (40 B in 2.0), rounded up.  The
 * 64 B pool also serves dead subscribers' queues during recovery-sub until
 * RouDi notices them gone (about 1.5 s). */
static const char roudi_config[] =
	"[general]\nversion = 1\n\n[[segment]]\n\n"
	"[[segment.mempool]]\nsize = 128\ncount = 20000\n\n"
	"[[segment.mempool]]\nsize = 1152\ncount = 2000\n\n"
	"[[segment.mempool]]\nsize = 66560\ncount = 512\n";

static bool log_says_ready(const char *log)
{
	char line[512];
	FILE *f = fopen(log, "r");
	bool ready = false;

	while (f && !ready && fgets(line, sizeof(line), f))
		ready = strstr(line, "RouDi is ready for clients") != NULL;
	if (f)
		fclose(f);
	return ready;
}

/* What an earlier run of ours left when it was SIGKILLed (it could not
 * clean up): its clients' sockets and locks, its config dir. */
static void clean_stale(void)
{
	const char *pat[] = { "/tmp/shmbiox-*", "/tmp/shmb-iox-*" };

	for (int i = 0; i < 2; i++) {
		glob_t g;

		if (glob(pat[i], 0, NULL, &g))
			continue;
		for (size_t k = 0; k < g.gl_pathc; k++) {
			const char *p = g.gl_pathv[k];
			char f[300];
			int pid = atoi(p + strlen(pat[i]) - 1);

			if (pid <= 0 || pid == (int)owner || kill(pid, 0) == 0 || errno != ESRCH)
				continue;
			if (i == 0) {
				unlink(p);
				continue;
			}
			snprintf(f, sizeof(f), "%s/roudi.toml", p);
			unlink(f);
			snprintf(f, sizeof(f), "%s/roudi.log", p);
			unlink(f);
			rmdir(p);
		}
		globfree(&g);
	}
}

/* 0: our RouDi is up; else why not (in why). */
static int roudi_start(char *why, size_t len)
{
	char cfg[128], log[128];
	struct passwd *pw = getpwuid(getuid());
	uint64_t end;
	FILE *f;
	int st;

	if (roudi_process_exists()) {
		snprintf(why, len, "an iox-roudi is already running on this machine (only one can); not touched");
		return -1;
	}
	/* stale /dev/shm/iceoryx_mgmt and /tmp/roudi of a RouDi that was
	 * killed: RouDi replaces them itself */
	snprintf(data_shm, sizeof(data_shm), "/dev/shm/%s", pw ? pw->pw_name : "iceoryx");
	clean_stale();
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/shmb-iox-%d.XXXXXX", (int)owner);
	if (!mkdtemp(tmpdir)) {
		tmpdir[0] = 0;
		snprintf(why, len, "mkdtemp: %s", strerror(errno));
		return -1;
	}
	snprintf(cfg, sizeof(cfg), "%s/roudi.toml", tmpdir);
	snprintf(log, sizeof(log), "%s/roudi.log", tmpdir);
	f = fopen(cfg, "w");
	if (!f || fputs(roudi_config, f) < 0 || fclose(f)) {
		snprintf(why, len, "cannot write %s", cfg);
		return -1;
	}
	roudi = bench_spawn();
	if (roudi == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		struct rlimit none = { 0, 0 };

		prctl(PR_SET_PDEATHSIG, SIGTERM); /* RouDi cleans up on SIGTERM */
		setrlimit(RLIMIT_CORE, &none);    /* it asserts at times: no core in the cwd */
		if (getppid() != owner)
			_exit(1);
		dup2(fd, 1);
		dup2(fd, 2);
		execlp("iox-roudi", "iox-roudi", "-c", cfg, (char *)NULL);
		_exit(127);
	}
	end = clock_mono_ns() + 10000000000ull;
	while (!log_says_ready(log)) {
		if (waitpid(roudi, &st, WNOHANG) == roudi) {
			roudi = -1;
			if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
				snprintf(why, len, "iox-roudi not found: install it with "
					 "sudo tools/install-deps.sh --bench");
			else
				snprintf(why, len, "iox-roudi exited at start (status 0x%x)", (unsigned)st);
			roudi_complaints(true);
			return -1;
		}
		if (clock_mono_ns() > end) {
			snprintf(why, len, "iox-roudi not ready after 10 s");
			roudi_complaints(true);
			return -1;
		}
		sleep_us(5000);
	}
	return 0;
}

/* ---- processes -------------------------------------------------------------- */

/* A child that dies with the parent, with its own iceoryx runtime; its
 * stdout goes to stderr (only the parent prints result lines). */
static pid_t spawn_side(int cpu)
{
	char name[64];
	pid_t p;

	snprintf(name, sizeof(name), "shmbiox-%d-%u", (int)owner, name_seq++);
	p = bench_spawn();
	if (p)
		return p;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != owner)
		_exit(1);
	setrlimit(RLIMIT_CORE, &(struct rlimit){ 0, 0 });
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	dup2(2, 1);
	if (cpu >= 0)
		bench_pin(cpu);
	iox_set_loglevel(Iceoryx_LogLevel_Warn);
	iox_runtime_init(name);
	return 0;
}

/* Ports of an earlier measurement linger in RouDi until its discovery
 * loop removes them (up to ~100 ms after the process exits); a port that
 * connected to one of those would see "connected" too early.  Every
 * measurement therefore uses a service instance of its own. */
static void new_instance(void)
{
	static unsigned k;

	snprintf(instance, sizeof(instance), "m%u", k++);
}

/* Waits for p until deadline; kills it then.  1: exited with status 0. */
static int reap_by(pid_t p, uint64_t deadline)
{
	int st;

	while (waitpid(p, &st, WNOHANG) == 0) {
		if (clock_mono_ns() > deadline) {
			fprintf(stderr, "peer-iceoryx: child %d timed out, killed\n", (int)p);
			kill(p, SIGKILL);
			waitpid(p, &st, 0);
			return 0;
		}
		sleep_us(1000);
	}
	return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* Reaps the n sides of a measurement: until deadline while they
 * measure, then 5 s once all have finished or one has exited (an
 * iceoryx runtime that RouDi took for dead hangs in its exit); kills
 * what is left then.  The results are in shared memory by that time. */
static void reap_all(pid_t *p, int n, volatile uint32_t *finished, uint64_t deadline)
{
	int left = n, st;
	bool grace = false;

	while (left) {
		for (int i = 0; i < n; i++)
			if (p[i] > 0 && waitpid(p[i], &st, WNOHANG) == p[i]) {
				p[i] = -1;
				left--;
			}
		if (!grace && (*finished >= (uint32_t)n || left < n)) {
			grace = true;
			deadline = clock_mono_ns() + 5000000000ull;
		}
		if (left && clock_mono_ns() > deadline)
			for (int i = 0; i < n; i++)
				if (p[i] > 0) {
					fprintf(stderr, "peer-iceoryx: child %d hangs, killed\n", (int)p[i]);
					kill(p[i], SIGKILL);
					waitpid(p[i], &st, 0);
					p[i] = -1;
					left--;
				}
		sleep_us(1000);
	}
}

static void reap_pair(pid_t a, pid_t b, volatile uint32_t *finished, uint64_t deadline)
{
	pid_t p[2] = { a, b };

	reap_all(p, 2, finished, deadline);
}

static void finish(volatile uint32_t *finished)
{
	__atomic_add_fetch(finished, 1, __ATOMIC_SEQ_CST);
}

static void child_exit(int code)
{
	exit(code); /* runs iceoryx's destructors: unregisters from RouDi */
}

static void *shared_map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		perror("peer-iceoryx: mmap");
		exit(1);
	}
	return p;
}

/* ---- ports ------------------------------------------------------------------ */

static iox_pub_t pub_open(iox_pub_storage_t *st, const char *event, uint64_t history, bool lossless)
{
	iox_pub_options_t o;

	iox_pub_options_init(&o);
	o.historyCapacity = history;
	o.subscriberTooSlowPolicy = lossless ? ConsumerTooSlowPolicy_WAIT_FOR_CONSUMER
					     : ConsumerTooSlowPolicy_DISCARD_OLDEST_DATA;
	return iox_pub_init(st, SVC, instance, event, &o);
}

static iox_sub_t sub_open(iox_sub_storage_t *st, const char *event, uint64_t history, bool lossless)
{
	iox_sub_options_t o;

	iox_sub_options_init(&o);
	o.queueCapacity = QUEUE;
	o.historyRequest = history;
	o.queueFullPolicy = lossless ? QueueFullPolicy_BLOCK_PRODUCER : QueueFullPolicy_DISCARD_OLDEST_DATA;
	return iox_sub_init(st, SVC, instance, event, &o);
}

/* Waits (10 s at most) until sub is connected to a publisher and pub (if
 * any) has a subscriber. */
static bool wait_connected(iox_sub_t sub, iox_pub_t pub)
{
	uint64_t end = clock_mono_ns() + 10000000000ull;

	while ((sub && iox_sub_get_subscription_state(sub) != SubscribeState_SUBSCRIBED) ||
	       (pub && !iox_pub_has_subscribers(pub))) {
		if (clock_mono_ns() > end) {
			fprintf(stderr, "peer-iceoryx: no connection after 10 s\n");
			return false;
		}
		sleep_us(500);
	}
	return true;
}

/* Payload: the sequence number, then bytes of (seq & 0xff). */
static void fill(uint8_t *p, unsigned size, uint64_t seq)
{
	memset(p + 8, (int)(seq & 0xff), size - 8);
	memcpy(p, &seq, 8);
}

static bool check(const uint8_t *p, unsigned size, uint64_t *seq)
{
	uint64_t w, v;

	memcpy(seq, p, 8);
	w = 0x0101010101010101ull * (*seq & 0xff);
	for (unsigned i = 8; i < size; i += 8) {
		memcpy(&v, p + i, 8);
		if (v != w)
			return false;
	}
	return true;
}

static bool send_one(iox_pub_t pub, unsigned size, uint64_t seq)
{
	void *chunk;
	enum iox_AllocationResult r;
	uint64_t end = 0;

	while ((r = iox_pub_loan_chunk(pub, &chunk, size)) != AllocationResult_SUCCESS) {
		if (!end)
			end = clock_mono_ns() + 5000000000ull;
		if (r != AllocationResult_RUNNING_OUT_OF_CHUNKS || clock_mono_ns() > end) {
			fprintf(stderr, "peer-iceoryx: loan of %u B failed (%d)\n", size, (int)r);
			return false;
		}
		sleep_us(10);
	}
	fill(chunk, size, seq);
	iox_pub_publish_chunk(pub, chunk);
	return true;
}

/* Blocks in the wait set until data comes or timeout_ms pass.  It may
 * also return at once with nothing: a notification of a message that was
 * already taken wakes it, and the state check then finds the queue
 * empty.  Callers therefore time their own deadlines. */
static void ws_wait(iox_ws_t ws, unsigned timeout_ms)
{
	iox_notification_info_t info[2];
	uint64_t missed;

	iox_ws_timed_wait(ws, (struct timespec){ timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000 }, info, 2,
			  &missed);
}

/* ---- one-way throughput -------------------------------------------------------- */

struct ow_shared {
	volatile uint32_t finished; /* sides done measuring */
	volatile uint32_t pub_done; /* the publisher's line */
	uint64_t sent;
	_Alignas(64) volatile uint32_t sub_done; /* the subscriber's */
	uint64_t t_first, t_last, taken, distinct, dup, reord, corrupt;
};

static void ow_publisher(struct ow_shared *sh, unsigned size, uint64_t n)
{
	iox_pub_storage_t st;
	iox_pub_t pub = pub_open(&st, "oneway", 0, true);
	uint64_t end;

	if (!wait_connected(NULL, pub)) {
		sh->pub_done = 1;
		child_exit(1);
	}
	for (uint64_t seq = 0; seq < n; seq++) {
		if (!send_one(pub, size, seq))
			break;
		sh->sent = seq + 1;
	}
	__atomic_store_n(&sh->pub_done, 1, __ATOMIC_RELEASE);
	/* the subscriber drains its queue before the port goes */
	end = clock_mono_ns() + 30000000000ull;
	while (!__atomic_load_n(&sh->sub_done, __ATOMIC_ACQUIRE) && clock_mono_ns() < end)
		sleep_us(1000);
	finish(&sh->finished);
	iox_pub_deinit(pub);
	child_exit(0);
}

static void ow_subscriber(struct ow_shared *sh, unsigned size, uint64_t n, bool blocking)
{
	iox_sub_storage_t st;
	iox_ws_storage_t wst;
	iox_sub_t sub = sub_open(&st, "oneway", 0, true);
	iox_ws_t ws = NULL;
	uint8_t *seen = calloc(n / 8 + 1, 1);
	uint64_t idle_since = 0, max_seq = 0;

	if (!seen || !wait_connected(sub, NULL))
		child_exit(1);
	if (blocking) {
		ws = iox_ws_init(&wst);
		iox_ws_attach_subscriber_state(ws, sub, SubscriberState_HAS_DATA, 0, NULL);
	}
	while (sh->distinct + sh->corrupt < n) {
		const void *chunk;
		uint64_t seq;

		if (iox_sub_take_chunk(sub, &chunk) != ChunkReceiveResult_SUCCESS) {
			/* give up 200 ms after the publisher is done: loss */
			if (__atomic_load_n(&sh->pub_done, __ATOMIC_ACQUIRE)) {
				if (!idle_since)
					idle_since = clock_mono_ns();
				else if (clock_mono_ns() - idle_since > 200000000)
					break;
			}
			if (ws)
				ws_wait(ws, 50);
			continue;
		}
		idle_since = 0;
		sh->t_last = clock_mono_ns();
		if (!sh->taken++)
			sh->t_first = sh->t_last;
		if (!check(chunk, size, &seq) || seq >= n) {
			sh->corrupt++;
		} else if (seen[seq / 8] & (1u << (seq % 8))) {
			sh->dup++;
		} else {
			seen[seq / 8] |= (uint8_t)(1u << (seq % 8));
			sh->distinct++;
			if (seq < max_seq)
				sh->reord++;
			max_seq = seq > max_seq ? seq : max_seq;
		}
		iox_sub_release_chunk(sub, chunk);
	}
	__atomic_store_n(&sh->sub_done, 1, __ATOMIC_RELEASE);
	finish(&sh->finished);
	if (ws)
		iox_ws_deinit(ws);
	iox_sub_deinit(sub);
	child_exit(0);
}

static void oneway(const char *transport, unsigned size, uint64_t n, bool blocking, int rep)
{
	struct ow_shared *sh = shared_map(sizeof(*sh));
	struct bres r = bres_new(transport, "oneway", size, rep);
	uint64_t deadline = clock_mono_ns() + 60000000000ull;
	pid_t sub, pub;
	char extra[64];

	new_instance();
	memset(sh, 0, sizeof(*sh));
	sub = spawn_side(1);
	if (sub == 0)
		ow_subscriber(sh, size, n, blocking);
	pub = spawn_side(0);
	if (pub == 0)
		ow_publisher(sh, size, n);
	reap_pair(sub, pub, &sh->finished, deadline);
	r.sent = sh->sent;
	r.recv = sh->taken;
	r.lost = sh->sent - sh->distinct;
	r.dup = sh->dup;
	r.reord = sh->reord;
	if (sh->taken > 1 && sh->t_last > sh->t_first)
		r.msgs_s = (double)sh->taken / ((double)(sh->t_last - sh->t_first) / 1e9);
	trouble |= r.lost || sh->corrupt || sh->sent < n;
	if (sh->corrupt || sh->sent < n) {
		snprintf(extra, sizeof(extra), "corrupt=%llu unsent=%llu", (unsigned long long)sh->corrupt,
			 (unsigned long long)(n - sh->sent));
		r.extra = extra;
	}
	bres_emit(&r);
	munmap(sh, sizeof(*sh));
}

/* ---- ping-pong ------------------------------------------------------------------ */

struct pp_shared {
	volatile uint32_t finished; /* sides done measuring */
	volatile uint64_t bad, done;
	uint64_t lat[];
};

/* Takes the next message: spinning, or blocked in the wait set; false
 * after 2 s without one. */
static bool pp_take(iox_sub_t sub, iox_ws_t ws, const void **chunk)
{
	uint64_t end = 0;

	while (iox_sub_take_chunk(sub, chunk) != ChunkReceiveResult_SUCCESS) {
		if (!end)
			end = clock_mono_ns() + 2000000000ull;
		else if (clock_mono_ns() > end)
			return false;
		if (ws)
			ws_wait(ws, 100);
	}
	return true;
}

/* One side: receives on `in`, sends on `out`; the pinger (samples != NULL)
 * starts each round and times it. */
static void pp_side(struct pp_shared *sh, const char *in, const char *out, bool blocking, size_t rounds,
		    bool pinger)
{
	iox_pub_storage_t pst;
	iox_sub_storage_t sst;
	iox_ws_storage_t wst;
	iox_pub_t pub = pub_open(&pst, out, 0, true);
	iox_sub_t sub = sub_open(&sst, in, 0, true);
	iox_ws_t ws = NULL;

	if (!wait_connected(sub, pub))
		child_exit(1);
	if (blocking) {
		ws = iox_ws_init(&wst);
		iox_ws_attach_subscriber_state(ws, sub, SubscriberState_HAS_DATA, 0, NULL);
	}
	for (size_t i = 0; i < rounds; i++) {
		const void *chunk;
		uint64_t t0 = clock_mono_ns(), seq;

		if (pinger && !send_one(pub, 64, i))
			break;
		if (!pp_take(sub, ws, &chunk)) {
			fprintf(stderr, "peer-iceoryx: rtt: nothing for 2 s at round %zu\n", i);
			break;
		}
		if (!check(chunk, 64, &seq) || seq != i)
			sh->bad++;
		iox_sub_release_chunk(sub, chunk);
		if (!pinger && !send_one(pub, 64, seq))
			break;
		if (pinger) {
			if (i >= 100) /* warm-up dropped */
				sh->lat[i - 100] = clock_mono_ns() - t0;
			sh->done = i + 1;
		}
	}
	/* the pinger must have the last reply before the port goes */
	for (uint64_t end = clock_mono_ns() + 2000000000ull; !pinger && sh->done < rounds && clock_mono_ns() < end;)
		sleep_us(200);
	finish(&sh->finished);
	if (ws)
		iox_ws_deinit(ws);
	iox_sub_deinit(sub);
	iox_pub_deinit(pub);
	child_exit(0);
}

static void rtt(const char *transport, size_t n, bool blocking, int rep)
{
	size_t len = sizeof(struct pp_shared) + n * 8;
	struct pp_shared *sh = shared_map(len);
	struct bres r = bres_new(transport, "rtt", 64, rep);
	uint64_t deadline = clock_mono_ns() + 60000000000ull;
	pid_t echo, ping;

	new_instance();
	echo = spawn_side(1);
	if (echo == 0)
		pp_side(sh, "ping", "pong", blocking, n + 100, false);
	ping = spawn_side(0);
	if (ping == 0)
		pp_side(sh, "pong", "ping", blocking, n + 100, true);
	reap_pair(ping, echo, &sh->finished, deadline);
	r.sent = n + 100;
	r.recv = sh->done;
	r.lost = r.sent - sh->done;
	if (sh->done == n + 100 && !sh->bad)
		r.lat = bench_summarize(sh->lat, n);
	if (sh->bad)
		r.extra = "corrupt-or-out-of-order";
	trouble |= r.lost || sh->bad;
	bres_emit(&r);
	munmap(sh, len);
}

/* ---- subscriber restart ---------------------------------------------------------- */

struct rec_shared {
	volatile uint64_t published;         /* messages published so far */
	volatile uint32_t pub_done, stop;
	volatile uint32_t kills_done;        /* the stream may end after n */
	volatile uint64_t sub_at[MAX_KILLS + 1];   /* `published` when life k subscribed */
	volatile uint64_t first_ns[MAX_KILLS + 1]; /* life k's first message */
	uint64_t taken, dup, reord, corrupt;
	uint8_t *who;                        /* 1 + the life that got it first */
	uint8_t cnt[];                       /* copies received of each message */
};

/* At least n messages; on past n (up to cap) until the last restarted
 * subscriber is receiving, so that every kill fits in the stream. */
static void rec_publisher(struct rec_shared *sh, uint64_t n, uint64_t cap)
{
	iox_pub_storage_t st;
	iox_pub_t pub = pub_open(&st, "recovery", HISTORY, false);
	uint64_t t0;

	if (!wait_connected(NULL, pub)) {
		sh->pub_done = 1;
		child_exit(1);
	}
	t0 = clock_mono_ns();
	for (uint64_t seq = 0; seq < cap && (seq < n || !sh->kills_done); seq++) {
		uint64_t due = t0 + seq * (1000000000ull / RATE);
		struct timespec ts = { (time_t)(due / 1000000000u), (long)(due % 1000000000u) };

		if (clock_mono_ns() < due)
			clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
		if (!send_one(pub, 64, seq))
			break;
		__atomic_store_n(&sh->published, seq + 1, __ATOMIC_RELEASE);
	}
	__atomic_store_n(&sh->pub_done, 1, __ATOMIC_RELEASE);
	while (!sh->stop)
		sleep_us(1000);
	iox_pub_deinit(pub);
	child_exit(0);
}

/* Life k of the subscriber, blocked in a wait set; runs until killed or,
 * the last one, until the stream is over and drained. */
static void rec_subscriber(struct rec_shared *sh, uint64_t cap, int k)
{
	iox_sub_storage_t st;
	iox_ws_storage_t wst;
	iox_sub_t sub = sub_open(&st, "recovery", HISTORY, false);
	iox_ws_t ws;
	uint64_t last = 0, idle_since = 0;
	bool any = false;

	if (!wait_connected(sub, NULL))
		child_exit(1);
	sh->sub_at[k] = __atomic_load_n(&sh->published, __ATOMIC_ACQUIRE);
	ws = iox_ws_init(&wst);
	iox_ws_attach_subscriber_state(ws, sub, SubscriberState_HAS_DATA, 0, NULL);
	while (!sh->stop) {
		const void *chunk;
		uint64_t seq;

		if (iox_sub_take_chunk(sub, &chunk) != ChunkReceiveResult_SUCCESS) {
			/* the stream is over once it has been quiet for 200 ms */
			if (sh->pub_done) {
				if (!idle_since)
					idle_since = clock_mono_ns();
				else if (clock_mono_ns() - idle_since > 200000000)
					break;
			}
			ws_wait(ws, 50);
			continue;
		}
		idle_since = 0;
		if (!sh->first_ns[k])
			sh->first_ns[k] = clock_mono_ns();
		sh->taken++;
		if (!check(chunk, 64, &seq) || seq >= cap) {
			sh->corrupt++;
		} else {
			if (sh->cnt[seq]++)
				sh->dup++;
			else
				sh->who[seq] = (uint8_t)(k + 1);
			if (any && seq < last)
				sh->reord++;
			last = seq;
			any = true;
		}
		iox_sub_release_chunk(sub, chunk);
	}
	iox_ws_deinit(ws);
	iox_sub_deinit(sub);
	child_exit(0);
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void recovery_sub(int rep)
{
	uint64_t n = bench_n(100000), cap = 3 * n, dead = 0, got = 0, distinct = 0;
	int kills = (int)(MAX_KILLS * bench_scale() + 0.5), done = 0;
	size_t len = sizeof(struct rec_shared) + 2 * cap;
	struct rec_shared *sh = shared_map(len);
	struct bres r = bres_new("iceoryx", "recovery-sub", 64, rep);
	uint64_t kill_at[MAX_KILLS], kill_ns[MAX_KILLS], deadline = clock_mono_ns() + 120000000000ull;
	double first_ms[MAX_KILLS];
	pid_t pub, sub;
	char extra[200];

	if (kills < 2)
		kills = 2;
	new_instance();
	memset(sh, 0, len);
	sh->who = sh->cnt + cap;
	sub = spawn_side(-1);
	if (sub == 0)
		rec_subscriber(sh, cap, 0);
	pub = spawn_side(-1);
	if (pub == 0)
		rec_publisher(sh, n, cap);
	for (int k = 0; k < kills; k++) {
		uint64_t when = (uint64_t)(k + 1) * n / (uint64_t)(kills + 1);

		/* kill on schedule, but only a subscriber that is receiving */
		while ((sh->published < when || !sh->first_ns[k]) && !sh->pub_done && clock_mono_ns() < deadline)
			sleep_us(200);
		if (sh->pub_done || clock_mono_ns() >= deadline)
			break;
		kill_at[k] = sh->published;
		kill_ns[k] = clock_mono_ns();
		kill(sub, SIGKILL);
		waitpid(sub, NULL, 0);
		last_kill_ns = clock_mono_ns();
		sub = spawn_side(-1);
		if (sub == 0)
			rec_subscriber(sh, cap, k + 1);
		done++;
	}
	while (!sh->first_ns[done] && !sh->pub_done && clock_mono_ns() < deadline)
		sleep_us(200);
	sh->kills_done = 1;
	while (!sh->pub_done && clock_mono_ns() < deadline)
		sleep_us(1000);
	reap_by(sub, clock_mono_ns() + 5000000000ull); /* drains in 200 ms */
	sh->stop = 1;
	reap_by(pub, clock_mono_ns() + 5000000000ull);
	for (int k = 0; k < done; k++) {
		uint64_t end = sh->sub_at[k + 1] ? sh->sub_at[k + 1] : sh->published; /* never back */

		for (uint64_t s = kill_at[k]; s < end; s++)
			got += sh->who[s] == k + 2; /* the new life got it */
		dead += end - kill_at[k];
		first_ms[k] = sh->first_ns[k + 1] ? (double)(sh->first_ns[k + 1] - kill_ns[k]) / 1e6 : -1;
	}
	for (uint64_t s = 0; s < sh->published; s++)
		distinct += sh->cnt[s] > 0;
	qsort(first_ms, (size_t)done, sizeof(double), cmp_dbl);
	r.sent = sh->published;
	r.recv = sh->taken;
	r.lost = sh->published - distinct;
	r.dup = sh->dup;
	r.reord = sh->reord;
	snprintf(extra, sizeof(extra),
		 "kills=%d history=%d published_while_dead=%llu received_of_those=%llu first_msg_ms_median=%.1f%s",
		 done, HISTORY, (unsigned long long)dead, (unsigned long long)got,
		 done ? first_ms[done / 2] : -1.0, sh->corrupt ? " corrupt=yes" : "");
	r.extra = extra;
	bres_emit(&r);
	munmap(sh, len);
}

/* ---- fan-out and fan-in ---------------------------------------------------------- */

struct fan_shared {
	volatile uint32_t finished;     /* sides done measuring */
	volatile uint32_t ready, go;    /* subscribers connected; publishers may start */
	volatile uint32_t pubs_done, subs_done;
	uint64_t t_start;               /* the publishers' start */
	uint64_t t_end[FAN];            /* each subscriber's last message */
	uint64_t got[FAN], lost[FAN], dup[FAN], reord[FAN], sent[FAN];
};

static void fan_event(char *ev, size_t len, int npub, int j)
{
	/* fanout: one service; fanin: one service a publisher */
	if (npub > 1)
		snprintf(ev, len, "fanin%d", j);
	else
		snprintf(ev, len, "fanout");
}

static void fan_publisher(struct fan_shared *sh, int npub, int nsub, int j, uint64_t n)
{
	iox_pub_storage_t st;
	iox_pub_t pub;
	char ev[16];
	uint64_t end;

	fan_event(ev, sizeof(ev), npub, j);
	pub = pub_open(&st, ev, 0, true);
	if (!wait_connected(NULL, pub)) {
		__atomic_add_fetch(&sh->pubs_done, 1, __ATOMIC_SEQ_CST);
		child_exit(1);
	}
	while (!__atomic_load_n(&sh->go, __ATOMIC_ACQUIRE))
		sleep_us(50);
	for (uint64_t seq = 0; seq < n; seq++) {
		uint8_t *chunk;
		enum iox_AllocationResult r;

		/* send_one with the publisher's id over bytes 8-11 */
		while ((r = iox_pub_loan_chunk(pub, (void **)&chunk, 64)) == AllocationResult_RUNNING_OUT_OF_CHUNKS)
			sleep_us(10);
		if (r != AllocationResult_SUCCESS) {
			fprintf(stderr, "peer-iceoryx: loan failed (%d)\n", (int)r);
			break;
		}
		fill(chunk, 64, seq);
		memcpy(chunk + 8, &j, 4);
		iox_pub_publish_chunk(pub, chunk);
		sh->sent[j] = seq + 1;
	}
	__atomic_add_fetch(&sh->pubs_done, 1, __ATOMIC_SEQ_CST);
	/* the subscribers drain their queues before the port goes */
	end = clock_mono_ns() + 30000000000ull;
	while (__atomic_load_n(&sh->subs_done, __ATOMIC_ACQUIRE) < (uint32_t)nsub && clock_mono_ns() < end)
		sleep_us(1000);
	finish(&sh->finished);
	iox_pub_deinit(pub);
	child_exit(0);
}

/* Subscriber process k: one subscriber (fanout) or npub of them polled
 * round-robin (fanin); checks every message as bench-broker's stream(). */
static void fan_subscriber(struct fan_shared *sh, int npub, int k, uint64_t n)
{
	iox_sub_storage_t st[FAN];
	iox_sub_t sub[FAN];
	int nports = npub > 1 ? npub : 1;
	uint64_t next[FAN] = { 0 }, total = 0, idle_since = 0;

	for (int i = 0; i < nports; i++) {
		char ev[16];

		fan_event(ev, sizeof(ev), npub, i);
		sub[i] = sub_open(&st[i], ev, 0, true);
	}
	for (int i = 0; i < nports; i++)
		if (!wait_connected(sub[i], NULL))
			child_exit(1);
	__atomic_add_fetch(&sh->ready, 1, __ATOMIC_SEQ_CST);
	for (int i = 0; total < n * (uint64_t)npub; i = (i + 1) % nports) {
		const void *chunk;
		uint8_t m[64];
		uint64_t v;
		uint32_t p;

		if (iox_sub_take_chunk(sub[i], &chunk) != ChunkReceiveResult_SUCCESS) {
			if (i != nports - 1)
				continue;
			/* all empty: give up 200 ms after the publishers are done */
			if (__atomic_load_n(&sh->pubs_done, __ATOMIC_ACQUIRE) == (uint32_t)npub) {
				if (!idle_since)
					idle_since = clock_mono_ns();
				else if (clock_mono_ns() - idle_since > 200000000)
					break;
			}
			sched_yield();
			continue;
		}
		idle_since = 0;
		memcpy(m, chunk, 64);
		iox_sub_release_chunk(sub[i], chunk);
		memcpy(&p, m + 8, 4);
		memset(m + 8, m[16], 4); /* the id's bytes back to the pattern */
		if (!check(m, 64, &v) || p >= (uint32_t)npub)
			sh->reord[k]++;
		else if (v < next[p])
			sh->dup[k]++;
		else {
			if (v > next[p])
				sh->reord[k]++;
			next[p] = v + 1;
		}
		total++;
	}
	sh->t_end[k] = clock_mono_ns();
	sh->got[k] = total;
	for (int p = 0; p < npub; p++)
		sh->lost[k] += n - (next[p] < n ? next[p] : n);
	__atomic_add_fetch(&sh->subs_done, 1, __ATOMIC_SEQ_CST);
	finish(&sh->finished);
	for (int i = 0; i < nports; i++)
		iox_sub_deinit(sub[i]);
	child_exit(0);
}

static void fan(const char *workload, int npub, int nsub, uint64_t n, int rep)
{
	struct fan_shared *sh = shared_map(sizeof(*sh));
	struct bres r = bres_new("iceoryx spin", workload, 64, rep);
	uint64_t deadline = clock_mono_ns() + 60000000000ull, end = 0;
	pid_t p[2 * FAN];

	new_instance();
	memset(sh, 0, sizeof(*sh));
	for (int k = 0; k < nsub; k++) {
		p[k] = spawn_side(-1);
		if (p[k] == 0)
			fan_subscriber(sh, npub, k, n);
	}
	for (int j = 0; j < npub; j++) {
		p[nsub + j] = spawn_side(-1);
		if (p[nsub + j] == 0)
			fan_publisher(sh, npub, nsub, j, n);
	}
	while (sh->ready < (uint32_t)nsub && clock_mono_ns() < deadline)
		sleep_us(200);
	sh->t_start = clock_mono_ns();
	__atomic_store_n(&sh->go, 1, __ATOMIC_RELEASE);
	reap_all(p, npub + nsub, &sh->finished, deadline);
	for (int j = 0; j < npub; j++)
		r.sent += sh->sent[j];
	for (int k = 0; k < nsub; k++) {
		end = sh->t_end[k] > end ? sh->t_end[k] : end;
		r.recv += sh->got[k];
		r.lost += sh->lost[k];
		r.dup += sh->dup[k];
		r.reord += sh->reord[k];
	}
	r.sent *= (uint64_t)nsub; /* each message is owed to every subscriber */
	r.msgs_s = end > sh->t_start ? (double)r.recv / ((double)(end - sh->t_start) / 1e9) : 0;
	r.extra = npub > 1 ? "8-services-round-robin" : "1-service";
	trouble |= r.lost || r.reord || r.recv < r.sent;
	bres_emit(&r);
	munmap(sh, sizeof(*sh));
}

/* ---- main ------------------------------------------------------------------------ */

static const char *only; /* argv[1]: run only this workload (development) */

static bool want(const char *workload)
{
	return !only || !strcmp(only, workload);
}

static void run(void)
{
	const unsigned sizes[] = { 64, 1024, 65536 };
	const uint64_t counts[] = { 200000, 200000, 20000 };

	for (int rep = 0; rep < bench_reps(); rep++) {
		for (int s = 0; s < 3 && want("oneway"); s++) {
			oneway("iceoryx spin", sizes[s], bench_n(counts[s]), false, rep);
			/* the blocked reader at 64 B only: the time share */
			if (sizes[s] == 64)
				oneway("iceoryx waitset", sizes[s], bench_n(counts[s]), true, rep);
		}
		if (want("rtt")) {
			rtt("iceoryx spin", bench_n(20000), false, rep);
			rtt("iceoryx waitset", bench_n(20000), true, rep);
		}
		/* like shmb's: unpinned only (9 processes on 2 CPUs) */
		if (!bench_pinned && want("fanout"))
			fan("fanout", 1, FAN, bench_n(200000), rep);
		if (!bench_pinned && want("fanin"))
			fan("fanin", FAN, 1, bench_n(25000), rep);
	}
}

int main(int argc, char **argv)
{
	char why[256];

	setvbuf(stdout, NULL, _IOLBF, 0);
	only = argc > 1 ? argv[1] : NULL;
	owner = getpid();
	atexit(roudi_stop);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGHUP, on_signal);
	if (roudi_start(why, sizeof(why)) < 0) {
		bres_skip("iceoryx spin", why);
		bres_skip("iceoryx waitset", why);
		bres_skip("iceoryx", why);
		roudi_stop();
		return 0;
	}
	bench_pinned = 0;
	run();
	for (int rep = 0; rep < bench_reps() && want("recovery-sub"); rep++)
		recovery_sub(rep);
	if (sysconf(_SC_NPROCESSORS_ONLN) >= 2) {
		bench_pinned = 1;
		run();
	}
	/* RouDi 2.0 asserts at its shutdown on a listed process that is gone:
	 * let its monitoring remove the last killed subscriber first (1.5 s) */
	while (last_kill_ns && clock_mono_ns() < last_kill_ns + 2000000000ull)
		sleep_us(10000);
	roudi_stop();
	return 0;
}
