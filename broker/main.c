/*
 * broker/main.c - shmbd: options, the runtime directory and its lock,
 * then the event loop.  Runs in the foreground (service managers expect
 * that) and logs to stderr.  main() is its five steps in order: options,
 * SHMB_DIR, the modules, the run, the teardown.
 *
 * Must never: make anything in SHMB_DIR before the options and the link
 * key have been checked, or serve a directory whose lock another shmbd
 * holds.
 */
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "broker/broker.h"
#include "broker/ctl.h"
#include "broker/ctl-lanes.h"
#include "broker/guard.h"
#include "broker/harden.h"
#include "broker/link.h"
#include "broker/log.h"
#include "broker/session.h"
#include "broker/state.h"
#include "shm/clock.h"
#include "shmb.h"

#define SHMBD_CONFIG "/etc/shmb/shmbd.conf"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: shmbd [options]\n"
		"\n"
		"The shmb broker: owns one shared-memory segment per client session and routes\n"
		"messages between them.  Runs in the foreground; logs to stderr.\n"
		"\n"
		"  -d, --dir DIR              runtime directory (default: $SHMB_DIR, else /run/shmb):\n"
		"                             control socket, sessions/, lock\n"
		"      --rx-ring-size BYTES   default RX ring of a new session (default 1048576)\n"
		"      --tx-ring-size BYTES   default TX ring of a new session (default 1048576)\n"
		"      --session-ttl SECONDS  a detached session expires after this (default 60)\n"
		"      --block-timeout SECONDS  a live subscriber whose RX ring stays full (holding\n"
		"                             publishers back) this long is detached (default 10)\n"
		"      --hello-timeout SECONDS  close a connection that sends no HELLO within\n"
		"                             this (default 5)\n"
		"      --drain-timeout SECONDS  on SIGTERM, route what is in flight for at most\n"
		"                             this long before exiting (default 5)\n"
		"      --poll-us US           busy-poll this long after the last work before\n"
		"                             sleeping (default 50; 0 sleeps at once); work that\n"
		"                             returns soon after a sleep doubles the window, up\n"
		"                             to 250 us; a longer sleep halves it again\n"
		"      --max-sessions-per-uid N  (default 256; root is not limited)\n"
		"      --max-topics-per-uid N    (default 4096; root is not limited)\n"
		"      --max-memory-per-uid BYTES  segment memory of one uid's sessions (default 1 GiB;\n"
		"                                root is not limited)\n"
		"      --no-uring-futex       do not wait in io_uring FUTEX_WAIT; poll every\n"
		"                             --fallback-tick-us when idle instead\n"
		"      --fallback-tick-us US  (default 1000)\n"
		"      --no-landlock          hand clients plain descriptors of their TX files\n"
		"                             (by default they are opened under Landlock, where the\n"
		"                             kernel has ABI 3, so clients cannot truncate them)\n"
		"      --no-lanes             no direct data path: every message goes through the\n"
		"                             broker's relay (by default publishers write into\n"
		"                             lanes their subscribers read; docs/design/data-path.md)\n"
		"      --lanes                the default, accepted for older command lines (it\n"
		"                             undoes an earlier --no-lanes or the config's)\n"
		"      --exit-reasons auto|bpf|pidfd|off  how the broker learns why a session's\n"
		"                             owner went (\"killed by SIGKILL\", \"exited 3\"):\n"
		"                             bpf: an exit tracer (needs CAP_BPF and CAP_PERFMON,\n"
		"                             the initial pid namespace); refuses to start without;\n"
		"                             pidfd: PIDFD_INFO_EXIT once the owner is reaped\n"
		"                             (kernel 6.15+); off: deaths only, reason \"unknown\";\n"
		"                             auto (default): bpf, else pidfd, else off\n"
"\n"
		"Remote links (docs/links.md): brokers on other hosts forward the bridged topics\n"
		"both ways; a cut, a reset or a restart loses nothing.\n"
		"      --listen HOST:PORT     accept links from other brokers (HOST may be empty)\n"
		"      --link NAME=HOST:PORT  dial a link (repeatable)\n"
		"      --bridge TOPIC         forward TOPIC over every link, and ask the peers to\n"
		"                             forward it here (repeatable; a trailing '*' is a prefix)\n"
		"      --link-key FILE        the pre-shared key: 64 hex digits, mode 0600, owned by\n"
		"                             this broker's uid (openssl rand -hex 32)\n"
		"      --link-buffer BYTES    replay ring per link, in links/NAME (default 16 MiB);\n"
		"                             when full of what the peer has not routed, publishers\n"
		"                             of bridged topics wait\n"
		"      --link-heartbeat-ms MS a PING this often (default 1000)\n"
		"      --link-timeout-ms MS   nothing heard from the peer this long: redial (default 5000)\n"
		"\n"
		"      --config FILE          read settings from FILE (default " SHMBD_CONFIG ",\n"
		"                             if it exists): 'key = value' lines whose keys are\n"
		"                             these options' long names; flags given here win\n"
		"  -v, --verbose              log debug lines too\n"
		"  -q, --quiet                log warnings and errors only\n"
		"  -h, --help                 this text\n"
		"  -V, --version              print the version\n"
		"\n"
		"Signals: SIGTERM or SIGINT stop accepting, finish routing what is in flight\n"
		"(at most --drain-timeout), leave every segment consistent and exit 0.\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	/* decimal, or hex after 0x; never octal (a leading 0 is no surprise) */
	v = strtoull(s, &end, s[0] == '0' && (s[1] == 'x' || s[1] == 'X') ? 16 : 10);
	if (errno || end == s || *end || s[0] == '-')
		return -EINVAL;
	*out = v;
	return 0;
}

static int dir_setup(struct broker *b)
{
	char path[4096];
	int r;

	if (mkdir(b->o.dir, 0755) < 0 && errno != EEXIST) {
		log_msg(LOG_ERR, "cannot create %s: %s", b->o.dir, strerror(errno));
		return -errno;
	}
	b->dirfd = open(b->o.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (b->dirfd < 0) {
		log_msg(LOG_ERR, "cannot open %s: %s", b->o.dir, strerror(errno));
		return -errno;
	}
	b->lockfd = openat(b->dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (b->lockfd < 0 || flock(b->lockfd, LOCK_EX | LOCK_NB) < 0) {
		char other[32] = "";

		if (b->lockfd >= 0 && pread(b->lockfd, other, sizeof(other) - 1, 0) > 0)
			other[strcspn(other, "\n")] = 0;
		log_msg(LOG_ERR, "another shmbd (pid %s) already serves %s: refusing to start",
			other[0] ? other : "?", b->o.dir);
		return -EBUSY;
	}
	{
		char pid[32];
		int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());

		if (ftruncate(b->lockfd, 0) < 0 || pwrite(b->lockfd, pid, (size_t)n, 0) != n)
			log_msg(LOG_WARNING, "cannot write the pid into %s/lock", b->o.dir);
	}
	snprintf(path, sizeof(path), "%s/sessions", b->o.dir);
	r = segment_dir_open(path, 0700, &b->sessions_dirfd);
	if (r < 0) {
		log_msg(LOG_ERR, "%s: %s (must be a directory of mode 0700 owned by uid %u)", path,
			strerror(-r), (unsigned)geteuid());
		return r;
	}
	return 0;
}

/*
 * Pick up where the last broker stopped (docs/design/recovery.md): read the
 * state file, re-adopt every session whose files pass their checks,
 * quarantine what does not, then write the state afresh.
 */
static int state_setup(struct broker *b)
{
	struct state_load l;
	char path[4096];
	int qfd, r;

	snprintf(path, sizeof(path), "%s/quarantine", b->o.dir);
	r = segment_dir_open(path, 0700, &qfd);
	if (r < 0) {
		log_msg(LOG_ERR, "%s: %s (must be a directory of mode 0700 owned by uid %u)", path,
			strerror(-r), (unsigned)geteuid());
		return r;
	}
	close(qfd);
	r = state_read(b->dirfd, &l);
	if (r < 0) {
		log_msg(LOG_ERR, "cannot read %s/state: %s; starting without it", b->o.dir,
			strerror(-r));
		state_keep_copy(b, "unreadable");
	}
	adopt_broker(b, &l);
	if (l.bad)
		state_keep_copy(b, "has corrupt lines");
	if (l.exists && !l.have_header)
		log_msg(LOG_ERR, "state: its header is lost: this broker takes a new id");
	r = adopt_all(b, &l);
	if (l.exists || b->adopted || b->quarantined_at_start)
		log_msg(LOG_NOTICE, "restart: %u session(s) re-adopted, %u quarantined, %u topic(s);"
			" %u state line(s) read, %u corrupt%s", b->adopted, b->quarantined_at_start,
			b->ntopics, l.lines, l.bad, l.torn ? ", the last one torn" : "");
	state_load_free(&l);
	if (r < 0)
		return r;
	r = state_compact(b);
	if (r < 0)
		log_msg(LOG_ERR, "cannot write %s/state: %s", b->o.dir, strerror(-r));
	return r;
}

/* Options given in seconds, turned into milliseconds once all are read. */
struct secs {
	uint64_t ttl, block, hello, drain;
};

/* "yes"/"no" and friends; NULL (a flag given bare) is yes. */
static int parse_bool(const char *s, bool *out)
{
	if (!s || !strcmp(s, "yes") || !strcmp(s, "true") || !strcmp(s, "1") || !strcmp(s, "on"))
		*out = true;
	else if (!strcmp(s, "no") || !strcmp(s, "false") || !strcmp(s, "0") || !strcmp(s, "off"))
		*out = false;
	else
		return -EINVAL;
	return 0;
}

/*
 * One setting, from the command line or the config file (the key is the
 * long option's name): 0, -EINVAL for a bad value, 1 for an option that
 * is not a setting.
 */
static int set_opt(struct broker *b, struct secs *t, int o, const char *val)
{
	uint64_t v = 0;
	bool on = false;
	int r = 0;

	switch (o) {
	case 'd': b->o.dir = val; break;
	case 1: r = parse_u64(val, &b->o.rx_ring_size); break;
	case 2: r = parse_u64(val, &b->o.tx_ring_size); break;
	case 3: r = parse_u64(val, &t->ttl); break;
	case 4: r = parse_u64(val, &b->o.poll_us); break;
	case 5: r = parse_u64(val, &v); b->o.max_sessions_per_uid = (unsigned)v; break;
	case 6: r = parse_bool(val, &b->o.no_uring_futex); break;
	case 7: r = parse_u64(val, &b->o.fallback_tick_us); break;
	case 8: r = parse_u64(val, &t->block); break;
	case 9: r = parse_u64(val, &t->hello); break;
	case 10: r = parse_u64(val, &v); b->o.max_topics_per_uid = (unsigned)v; break;
	case 11: r = parse_u64(val, &b->o.max_memory_per_uid); break;
	case 13: r = exitw_parse_mode(val, &b->o.exit_reasons); break;
	case 14: r = parse_u64(val, &t->drain); break;
	case 15: b->o.listen = val; break;
	case 16:
		if (b->o.nlink_spec == sizeof(b->o.link_spec) / sizeof(b->o.link_spec[0]))
			return -EINVAL;
		b->o.link_spec[b->o.nlink_spec++] = (char *)val;
		break;
	case 17:
		if (b->o.nbridge == WIRE_TOPICS_MAX || !*val || strlen(val) > WIRE_TOPIC_MAX)
			return -EINVAL;
		b->o.bridge[b->o.nbridge++] = (char *)val;
		break;
	case 18: b->o.link_key = val; break;
	case 19: r = parse_u64(val, &b->o.link_buffer);
		if (!r && (b->o.link_buffer < 65536 || b->o.link_buffer > (1ull << 36)))
			r = -EINVAL;
		break;
	case 20: r = parse_u64(val, &b->o.link_heartbeat_ms);
		if (!r && !b->o.link_heartbeat_ms)
			r = -EINVAL;
		break;
	case 22: r = parse_bool(val, &b->o.no_landlock); break;
	case 23: r = parse_bool(val, &b->o.lanes); break;
	case 24:
		r = parse_bool(val, &on);
		if (!r)
			b->o.lanes = !on;
		break;
	case 21: r = parse_u64(val, &b->o.link_timeout_ms);
		if (!r && !b->o.link_timeout_ms)
			r = -EINVAL;
		break;
	case 'v':
		r = parse_bool(val, &on);
		if (on)
			log_set_level(LOG_DEBUG);
		break;
	case 'q':
		r = parse_bool(val, &on);
		if (on)
			log_set_level(LOG_WARNING);
		break;
	default: return 1;
	}
	if (r == 0 && v > UINT32_MAX)
		r = -EINVAL;
	return r;
}

/* The settings that keep their value's string (set_opt stores the pointer). */
static bool opt_keeps_string(int o)
{
	return o == 'd' || (o >= 15 && o <= 18);
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		*--e = 0;
	return s;
}

/*
 * The config file: "key = value" lines, keys the long options' names,
 * '#' starts a comment line.  An unknown key or a bad value is an error
 * naming the line.  A missing file is an error only when it was named.
 */
static int config_read(struct broker *b, struct secs *t, const char *path, bool must,
		       const struct option *opts)
{
	FILE *f = fopen(path, "re");
	char *line = NULL;
	size_t cap = 0;
	unsigned n = 0;
	int ret = 0;

	if (!f) {
		if (!must && errno == ENOENT)
			return 0;
		fprintf(stderr, "shmbd: cannot read %s: %s\n", path, strerror(errno));
		return -1;
	}
	while (ret == 0 && getline(&line, &cap, f) > 0) {
		char *k = trim(line), *eq, *val;
		const struct option *o;

		n++;
		if (!*k || *k == '#')
			continue;
		eq = strchr(k, '=');
		if (!eq) {
			fprintf(stderr, "shmbd: %s:%u: expected 'key = value'\n", path, n);
			ret = -1;
			break;
		}
		*eq = 0;
		k = trim(k);
		val = trim(eq + 1);
		for (o = opts; o->name; o++)
			if (!strcmp(o->name, k) && strcmp(k, "help") && strcmp(k, "version") &&
			    strcmp(k, "config"))
				break;
		if (!o->name) {
			fprintf(stderr, "shmbd: %s:%u: unknown key '%s'\n", path, n, k);
			ret = -1;
			break;
		}
		/* a value outlives the line it was read from, where the setting
		 * keeps the string itself (a path, an address, a topic) */
		val = strdup(val);
		if (!val || !*val || set_opt(b, t, o->val, val) != 0) {
			fprintf(stderr, "shmbd: %s:%u: bad value for '%s'\n", path, n, k);
			free(val);
			ret = -1;
		} else if (!opt_keeps_string(o->val)) {
			free(val);
		}
	}
	free(line);
	fclose(f);
	return ret;
}

/* The long options; a setting's index here is its code (set_opt, and the
 * "bad value for --NAME" message looks the name up by it). */
static const struct option main_opts[] = {
	{ "dir", required_argument, NULL, 'd' },
	{ "rx-ring-size", required_argument, NULL, 1 },
	{ "tx-ring-size", required_argument, NULL, 2 },
	{ "session-ttl", required_argument, NULL, 3 },
	{ "poll-us", required_argument, NULL, 4 },
	{ "max-sessions-per-uid", required_argument, NULL, 5 },
	{ "no-uring-futex", no_argument, NULL, 6 },
	{ "fallback-tick-us", required_argument, NULL, 7 },
	{ "block-timeout", required_argument, NULL, 8 },
	{ "hello-timeout", required_argument, NULL, 9 },
	{ "max-topics-per-uid", required_argument, NULL, 10 },
	{ "max-memory-per-uid", required_argument, NULL, 11 },
	{ "config", required_argument, NULL, 12 },
	{ "exit-reasons", required_argument, NULL, 13 },
	{ "drain-timeout", required_argument, NULL, 14 },
	{ "listen", required_argument, NULL, 15 },
	{ "link", required_argument, NULL, 16 },
	{ "bridge", required_argument, NULL, 17 },
	{ "link-key", required_argument, NULL, 18 },
	{ "link-buffer", required_argument, NULL, 19 },
	{ "link-heartbeat-ms", required_argument, NULL, 20 },
	{ "link-timeout-ms", required_argument, NULL, 21 },
	{ "no-landlock", no_argument, NULL, 22 },
	{ "lanes", no_argument, NULL, 23 },
	{ "no-lanes", no_argument, NULL, 24 },
	{ "verbose", no_argument, NULL, 'v' },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

/* What the option steps return to go on; anything else is the exit status. */
#define MAIN_GO (-1)

static void opts_defaults(struct broker *b)
{
	const char *dir = getenv("SHMB_DIR");

	b->o = (struct broker_opts){
		.dir = dir && *dir ? dir : "/run/shmb",
		.rx_ring_size = 1u << 20,
		.tx_ring_size = 1u << 20,
		.poll_us = 50,
		.max_sessions_per_uid = 256,
		.max_topics_per_uid = 4096,
		.max_memory_per_uid = 1ull << 30,
		.fallback_tick_us = 1000,
		.link_buffer = 16u << 20,
		.link_heartbeat_ms = 1000,
		.link_timeout_ms = 5000,
		/* the direct data path; --no-lanes keeps every message on the relay */
		.lanes = true,
	};
}

/* The config file first (default /etc/shmb/shmbd.conf, if there is one):
 * flags given on the command line win over it. */
static int opts_config(struct broker *b, struct secs *t, int argc, char **argv)
{
	const char *cfg = NULL;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--config") && i + 1 < argc)
			cfg = argv[i + 1];
		else if (!strncmp(argv[i], "--config=", 9))
			cfg = argv[i] + 9;
	}
	if (config_read(b, t, cfg ? cfg : SHMBD_CONFIG, cfg != NULL, main_opts) < 0)
		return 2;
	return MAIN_GO;
}

static int opts_argv(struct broker *b, struct secs *t, int argc, char **argv)
{
	int o, r;

	while ((o = getopt_long(argc, argv, "d:vqhV", main_opts, NULL)) != -1) {
		switch (o) {
		case 'h': usage(stdout); return 0;
		case 'V': printf("shmbd %s (layout %u, protocol %u)\n", shmb_version(),
				 shmb_layout_version(), PROTO_VERSION); return 0;
		case 12: continue; /* --config: read by opts_config */
		case '?': usage(stderr); return 2;
		}
		r = set_opt(b, t, o, optarg);
		if (r > 0) {
			usage(stderr);
			return 2;
		}
		if (r < 0) {
			fprintf(stderr, "shmbd: bad value '%s' for --%s\n", optarg,
				main_opts[o == 'd' ? 0 : o].name);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "shmbd: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	return MAIN_GO;
}

/* What no single setting can check alone, then the seconds made milliseconds. */
static int opts_finish(struct broker *b, const struct secs *t)
{
	if (!segment_ring_size_ok(b->o.rx_ring_size) || !segment_ring_size_ok(b->o.tx_ring_size)) {
		fprintf(stderr, "shmbd: ring sizes must be powers of two from %u to %llu bytes\n",
			SHM_RING_MIN, (unsigned long long)SHM_RING_MAX);
		return 2;
	}
	b->o.session_ttl_ms = t->ttl * 1000;
	b->o.block_timeout_ms = t->block * 1000;
	b->o.hello_timeout_ms = t->hello * 1000;
	b->o.drain_timeout_ms = t->drain * 1000;
	return MAIN_GO;
}

/* Step 1: defaults, the config file, the command line.  MAIN_GO, or the
 * exit status (0 after --help or --version, 2 for a usage error). */
static int main_options(struct broker *b, int argc, char **argv)
{
	struct secs t = { .ttl = 60, .block = 10, .hello = 5, .drain = 5 };
	int r;

	opts_defaults(b);
	r = opts_config(b, &t, argc, argv);
	if (r == MAIN_GO)
		r = opts_argv(b, &t, argc, argv);
	if (r == MAIN_GO)
		r = opts_finish(b, &t);
	return r;
}

/* Every connection costs two fds (socket, pidfd), every session a few:
 * take what the hard limit allows. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* Step 2: the broker's identity, then SHMB_DIR checked and locked. */
static int main_prepare(struct broker *b)
{
	b->start_ns = clock_mono_ns();
	b->listen_fd = b->signal_fd = b->lockfd = b->dirfd = b->sessions_dirfd = b->state_fd = -1;
	if (getrandom(&b->broker_id, sizeof(b->broker_id), 0) != sizeof(b->broker_id))
		return -1;
	session_table_init(b);
	/* a bad link key is said before anything is made in the directory */
	if (sodium_init() < 0 || link_check(b) < 0)
		return -1;
	if (dir_setup(b) < 0)
		return -1;
	raise_nofile();
	return 0;
}

/* Step 3: the modules, in the order each needs the last; the loop last. */
static int main_modules(struct broker *b)
{
	int r;

	if (guard_init() < 0) {
		log_msg(LOG_ERR, "cannot install the SIGBUS guard: %s", strerror(errno));
		return -1;
	}
	if (sodium_init() < 0 || state_setup(b) < 0)
		return -1;
	/* before the first connection: every peer is tracked from its accept */
	if (exitw_init(b) < 0 || harden_init(b) < 0)
		return -1;
	r = ctl_listen(b);
	if (r < 0) {
		log_msg(LOG_ERR, "cannot listen on %s/control: %s", b->o.dir, strerror(-r));
		return -1;
	}
	if (link_setup(b) < 0)
		return -1;
	r = loop_init(b);
	if (r < 0) {
		log_msg(LOG_ERR, "io_uring set-up failed: %s", strerror(-r));
		return -1;
	}
	link_start(b);
	r = ctl_lanes_start(b);
	if (r < 0) {
		log_msg(LOG_ERR, "lanes: cannot set up %s/lanes: %s", b->o.dir, strerror(-r));
		return -1;
	}
	return 0;
}

/* Step 4: serve until a signal has drained the loop. */
static int main_run(struct broker *b)
{
	log_msg(LOG_NOTICE, "shmbd %s ready on %s/control (pid %d)", shmb_version(), b->o.dir,
		(int)getpid());
	return loop_run(b) < 0 ? 1 : 0;
}

/*
 * Step 5, the one teardown, after a run only.  A start that fails exits
 * at once and leaves its fds, lock and mappings to the kernel: exitw_fini
 * would join the BPF loader thread and hold a failed start up.
 */
static void main_teardown(struct broker *b)
{
	exitw_fini(b);
	ctl_lanes_stop(b);
}

int main(int argc, char **argv)
{
	static struct broker b;
	int status = main_options(&b, argc, argv);

	if (status != MAIN_GO)
		return status;
	if (main_prepare(&b) < 0 || main_modules(&b) < 0)
		return 1;
	status = main_run(&b);
	main_teardown(&b);
	return status;
}
