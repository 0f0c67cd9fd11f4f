/*
 * tools/shmbctl.c - the shmb CLI: the command line (options before and
 * after the verb, the table of verbs), dialing the broker, and the
 * scripting verbs pub and sub.  The admin verbs (status, sessions,
 * session NAME, topics, links [NAME], kick) are in shmbctl-admin.c
 * (docs/operations.md).
 *
 * sub acknowledges a message only after its line was written to stdout in
 * full (write(2) returned), so a sub killed with SIGKILL never loses a
 * message it printed and prints again only what it had not acknowledged.
 *
 * Must never: acknowledge a message before its line is written, or change
 * a message, an exit status (0 done, 1 error, 2 usage, 3 timed out) or an
 * option's meaning: scripts read them.
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shmb.h"
#include "tools/shmbctl.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: shmbctl [--dir DIR] VERB ...\n"
		"\n"
		"  pub TOPIC [MSG...]      publish each MSG, or one message per line of stdin;\n"
		"                          returns once the broker has delivered them all\n"
		"      --session NAME      publish from this (kept) session instead of a\n"
		"                          throw-away one\n"
		"  sub TOPIC... [--session NAME] [--count N] [--timeout S] [--null]\n"
		"                          print each message on its own line (--null: ended by\n"
		"                          NUL), acknowledging it once printed; with --session, a\n"
		"                          sub started again resumes where the last one stopped,\n"
		"                          even if it was killed; --count: exit after N messages;\n"
		"                          --timeout: exit 3 after S seconds without a message\n"
		"  status                  broker pid, uptime, sessions, messages routed\n"
		"\n"
		"admin (root sees and manages every uid's sessions; anyone else only their own):\n"
		"  sessions                every session: owner, generation, state, RX depth,\n"
		"                          TX sequence, why it was last detached, why its\n"
		"                          owner went away, age\n"
		"  session NAME [--uid U]  one session in full, with its recent events\n"
		"  topics                  every topic: owner, subscribers, messages, rate\n"
		"  links                   every remote link (any user sees them all): role,\n"
		"                          state, peer, attempt generation, back-off, bytes sent,\n"
		"                          routed by the peer, replayed, received, last reason\n"
		"  links NAME              one link in full, with its recent events\n"
		"  lanes                   the direct data path (unless shmbd --no-lanes): each\n"
		"                          lane's writer, state, ring, readers that hold it\n"
		"                          back and how far the slowest is behind, how long\n"
		"                          its writer has waited for room\n"
		"  kick NAME [--uid U] [--delete]\n"
		"                          fence the session's owner off and detach it (the\n"
		"                          session waits for its next owner); --delete destroys it\n"
		"      --json              status, sessions, session, topics, links, lanes: one\n"
		"                          JSON\n"
		"                          object\n"
		"      --watch             sessions, topics, links, lanes: redraw every\n"
		"                          --interval S\n"
		"                          (default 1) until interrupted (--count N: N times)\n"
		"\n"
		"  -d, --dir DIR           the broker's runtime directory (default $SHMB_DIR,\n"
		"                          else /run/shmb)\n"
		"  -h, --help              this text\n"
		"\n"
		"Exit status: 0 done, 1 error, 2 usage, 3 timed out.\n");
}

int shmbctl_die(const char *what, int err)
{
	fprintf(stderr, "shmbctl: %s: %s\n", what, shmb_strerror(err));
	return 1;
}

static long parse_count(const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 0) {
		fprintf(stderr, "shmbctl: --count wants a whole number >= 0, not '%s'\n", s);
		exit(2);
	}
	return v;
}

static double parse_seconds(const char *s);

static unsigned parse_uid(const char *s)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v > 0xfffffffeul) {
		fprintf(stderr, "shmbctl: --uid wants a numeric uid, not '%s'\n", s);
		exit(2);
	}
	return (unsigned)v;
}

static double parse_seconds(const char *s)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v > 0)) {
		fprintf(stderr, "shmbctl: --timeout and --interval want a number of seconds > 0,"
			" not '%s'\n", s);
		exit(2);
	}
	return v;
}

/* What went wrong opening a session, in words a user can act on. */
int shmbctl_open_failed(const char *name, int r)
{
	if (r == -EBUSY)
		fprintf(stderr, "shmbctl: session '%s' is attached to another live process;"
			" stop that one first\n", name);
	else if (r == -EINVAL)
		fprintf(stderr, "shmbctl: cannot open session '%s': a name is 1-128 characters of"
			" A-Z a-z 0-9 . _ : @ -, not starting with '.'\n", name);
	else
		fprintf(stderr, "shmbctl: cannot open session '%s': %s\n", name, shmb_strerror(r));
	return 1;
}

/* The named session, or a throw-away one destroyed with its process. */
static int open_session(struct shmb_client *c, const char *session, const char *verb,
			struct shmb_session **s)
{
	struct shmb_session_opts o = { .policy = SHMB_POLICY_DEFAULT,
				       .flags = session ? 0 : SHMB_EPHEMERAL };
	char name[64];
	int r;

	if (!session) {
		snprintf(name, sizeof(name), "%s-%d-%ld", verb, (int)getpid(), (long)time(NULL));
		session = name;
	}
	r = shmb_session_open(c, session, &o, s);
	return r < 0 ? shmbctl_open_failed(session, r), r : 0;
}

static int topic_failed(const char *what, const char *topic, int r)
{
	if (r == -EINVAL)
		fprintf(stderr, "shmbctl: %s: bad topic '%s': a topic is 1-200 printable characters"
			" without spaces\n", what, topic);
	else if (r == -EPERM)
		fprintf(stderr, "shmbctl: %s: topic '%s' belongs to another user\n", what, topic);
	else
		fprintf(stderr, "shmbctl: %s '%s': %s\n", what, topic, shmb_strerror(r));
	return 1;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int cmd_pub(struct shmb_client *c, const char *session, int argc, char **argv)
{
	struct shmb_session *s;
	int r, rc = 0;

	if (argc < 1) {
		usage(stderr);
		return 2;
	}
	if (open_session(c, session, "pub", &s) < 0)
		return 1;
	if (argc > 1) {
		for (int i = 1; i < argc && !rc; i++) {
			r = shmb_publish(s, argv[0], argv[i], strlen(argv[i]), -1);
			if (r < 0)
				rc = topic_failed("publish", argv[0], r);
		}
	} else {
		char *line = NULL;
		size_t cap = 0;
		ssize_t n;

		while (!rc && (n = getline(&line, &cap, stdin)) >= 0) {
			if (n && line[n - 1] == '\n')
				n--;
			r = shmb_publish(s, argv[0], line, (size_t)n, -1);
			if (r < 0)
				rc = topic_failed("publish", argv[0], r);
		}
		free(line);
	}
	/* wait until the broker has delivered everything before going */
	r = shmb_flush(s, -1);
	if (r < 0 && !rc)
		rc = shmbctl_die("flush", r);
	if (session)
		shmb_session_close(s);
	else
		shmb_session_destroy(s);
	return rc;
}

static int cmd_sub(struct shmb_client *c, const char *session, long count, double timeout_s,
		   bool nul, int argc, char **argv)
{
	struct shmb_session *s;
	long got = 0;
	int r, timeout_ms = timeout_s > 0 ? (int)(timeout_s * 1000) : -1;
	char *buf = NULL;
	size_t cap = 0;

	if (argc < 1) {
		usage(stderr);
		return 2;
	}
	if (open_session(c, session, "sub", &s) < 0)
		return 1;
	if (session) {
		struct shmb_session_info i;

		shmb_session_info(s, &i);
		if (i.created)
			/* say so: a user restarting a sub expects to resume */
			fprintf(stderr, "shmbctl: session '%s' is new: nothing by that name existed"
				" (a detached session expires after shmbd's --session-ttl)\n", session);
	}
	/* its topics replace the session's subscriptions */
	r = shmb_subscribe_only(s, (const char *const *)argv, (size_t)argc);
	if (r < 0) {
		/* find the topic it refused, to name it */
		for (int k = 0; k < argc; k++)
			if (shmb_subscribe(s, argv[k]) < 0)
				return topic_failed("subscribe", argv[k], r);
		return shmbctl_die("subscribe", r);
	}
	while (count < 0 || got < count) {
		struct shmb_msg m;

		r = shmb_recv(s, &m, timeout_ms);
		if (r == -ETIMEDOUT) {
			fprintf(stderr, "shmbctl: no message for %g s\n", timeout_s);
			shmb_session_close(s);
			return 3;
		}
		if (r < 0)
			return shmbctl_die("receive", r);
		if (m.len + 1 > cap) {
			cap = m.len + 1;
			buf = realloc(buf, cap);
			if (!buf)
				return shmbctl_die("receive", -ENOMEM);
		}
		memcpy(buf, m.data, m.len);
		buf[m.len] = nul ? '\0' : '\n';
		if (write_all(STDOUT_FILENO, buf, m.len + 1) < 0)
			return shmbctl_die("write", -errno);
		/* printed in full: now it may be forgotten */
		r = shmb_ack(s);
		if (r < 0)
			return shmbctl_die("ack", r);
		got++;
	}
	free(buf);
	shmb_session_close(s);
	return 0;
}

/* Everything the command line says, before and after the verb. */
struct cli {
	struct shmb_connect_opts co;
	const char *session, *verb;
	long count;
	double timeout_s;
	bool nul;
	struct adm adm;
	int argc;      /* the words after the verb that are not options */
	char **argv;
};

/* What the parsing steps return to go on; anything else is the exit status. */
#define CLI_GO (-1)

static const struct option cli_opts[] = {
	{ "dir", required_argument, NULL, 'd' },
	{ "session", required_argument, NULL, 's' },
	{ "count", required_argument, NULL, 'n' },
	{ "timeout", required_argument, NULL, 't' },
	{ "null", no_argument, NULL, '0' },
	{ "json", no_argument, NULL, 'j' },
	{ "watch", no_argument, NULL, 'w' },
	{ "interval", required_argument, NULL, 'i' },
	{ "uid", required_argument, NULL, 'u' },
	{ "delete", no_argument, NULL, 'D' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* The options before the verb, then the verb itself. */
static int cli_head(struct cli *k, int argc, char **argv)
{
	int o;

	while ((o = getopt_long(argc, argv, "+d:s:n:t:0h", cli_opts, NULL)) != -1) {
		switch (o) {
		case 'd': k->co.dir = optarg; break;
		case 's': k->session = optarg; break;
		case 'n': k->count = parse_count(optarg); break;
		case 't': k->timeout_s = parse_seconds(optarg); break;
		case '0': k->nul = true; break;
		case 'j': k->adm.json = true; break;
		case 'w': k->adm.watch = true; break;
		case 'i': k->adm.interval = parse_seconds(optarg); break;
		case 'u': k->adm.uid = parse_uid(optarg); k->adm.have_uid = true; break;
		case 'D': k->adm.del = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	k->verb = argv[optind++];
	return CLI_GO;
}

/* One option after the verb, at argv[*i]: 1 if it was one (*i moved past
 * its value), 0 if it is a word, or the exit status 2. */
static int cli_tail_opt(struct cli *k, const char *a, int *i, int argc, char **argv)
{
	if (!strcmp(a, "--session") && *i + 1 < argc)
		k->session = argv[++*i];
	else if (!strcmp(a, "--count") && *i + 1 < argc)
		k->count = parse_count(argv[++*i]);
	else if (!strcmp(a, "--timeout") && *i + 1 < argc)
		k->timeout_s = parse_seconds(argv[++*i]);
	else if (!strcmp(a, "--null"))
		k->nul = true;
	else if (!strcmp(a, "--json"))
		k->adm.json = true;
	else if (!strcmp(a, "--watch"))
		k->adm.watch = true;
	else if (!strcmp(a, "--delete"))
		k->adm.del = true;
	else if (!strcmp(a, "--interval") && *i + 1 < argc)
		k->adm.interval = parse_seconds(argv[++*i]);
	else if (!strcmp(a, "--uid") && *i + 1 < argc) {
		k->adm.uid = parse_uid(argv[++*i]);
		k->adm.have_uid = true;
	} else if (!strcmp(a, "--dir") && *i + 1 < argc)
		k->co.dir = argv[++*i];
	else if (!strncmp(a, "--", 2) && a[2]) {
		fprintf(stderr, "shmbctl: unknown option '%s' (or it lacks its value)\n", a);
		return 2;
	} else
		return 0;
	return 1;
}

/* Options may also follow the verb and its topics: what is left are the
 * verb's words, in k->argc and k->argv. */
static int cli_tail(struct cli *k, int argc, char **argv)
{
	/* the words left: argv from here to the end (static: it is) */
	static char **rest;
	int n = 0, r;

	rest = calloc((size_t)(argc - optind + 1), sizeof(*rest));
	if (!rest)
		return 1;
	for (int i = optind; i < argc; i++) {
		const char *a = argv[i];
		const char *eq = !strncmp(a, "--", 2) ? strchr(a, '=') : NULL;

		/* --name=value after the verb: split it into two words */
		if (eq) {
			static char name[32];
			size_t len = (size_t)(eq - a);

			if (len >= sizeof(name)) {
				fprintf(stderr, "shmbctl: unknown option '%s'\n", a);
				return 2;
			}
			memcpy(name, a, len);
			name[len] = 0;
			argv[i] = (char *)eq + 1;
			a = name;
			i--;
			argv[i] = name;
		}
		r = cli_tail_opt(k, a, &i, argc, argv);
		if (r > 1)
			return r;
		if (r == 0)
			rest[n++] = argv[i];
	}
	k->argc = n;
	k->argv = rest;
	return CLI_GO;
}

/* The directory the library dials: --dir, else a non-empty $SHMB_DIR, else /run/shmb. */
static const char *broker_dir(const struct shmb_connect_opts *co)
{
	const char *e = getenv("SHMB_DIR");

	return co->dir ? co->dir : e && *e ? e : "/run/shmb";
}

static int verb_pub(struct shmb_client *c, struct cli *k)
{
	return cmd_pub(c, k->session, k->argc, k->argv);
}

static int verb_sub(struct shmb_client *c, struct cli *k)
{
	return cmd_sub(c, k->session, k->count, k->timeout_s, k->nul, k->argc, k->argv);
}

static int verb_status(struct shmb_client *c, struct cli *k)
{
	return admin_status(c, broker_dir(&k->co), &k->adm);
}

static int verb_sessions(struct shmb_client *c, struct cli *k)
{
	return admin_sessions(c, &k->adm);
}

static int verb_session(struct shmb_client *c, struct cli *k)
{
	return admin_session(c, k->argv[0], &k->adm);
}

static int verb_topics(struct shmb_client *c, struct cli *k)
{
	return admin_topics(c, &k->adm);
}

static int verb_lanes(struct shmb_client *c, struct cli *k)
{
	return admin_lanes(c, &k->adm);
}

static int verb_links(struct shmb_client *c, struct cli *k)
{
	k->adm.name = k->argc ? k->argv[0] : NULL;
	return admin_links(c, &k->adm);
}

static int verb_kick(struct shmb_client *c, struct cli *k)
{
	return admin_kick(c, k->argv[0], &k->adm);
}

/* How many words a verb takes, checked before the broker is dialed
 * (pub and sub check theirs themselves, after). */
enum verb_args { ARGS_ANY, ARGS_NONE, ARGS_SESSION, ARGS_LINK };

static const struct verb {
	const char *name;
	enum verb_args args;
	int (*run)(struct shmb_client *c, struct cli *k);
} verbs[] = {
	{ "pub", ARGS_ANY, verb_pub },
	{ "sub", ARGS_ANY, verb_sub },
	{ "status", ARGS_NONE, verb_status },
	{ "sessions", ARGS_NONE, verb_sessions },
	{ "session", ARGS_SESSION, verb_session },
	{ "topics", ARGS_NONE, verb_topics },
	{ "links", ARGS_LINK, verb_links },
	{ "lanes", ARGS_NONE, verb_lanes },
	{ "kick", ARGS_SESSION, verb_kick },
};

/* The verb's row, or NULL after saying why (exit status 2). */
static const struct verb *cli_verb(const struct cli *k)
{
	const struct verb *v = NULL;

	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]) && !v; i++)
		if (!strcmp(k->verb, verbs[i].name))
			v = &verbs[i];
	if (!v) {
		fprintf(stderr, "shmbctl: unknown verb '%s'\n", k->verb);
		usage(stderr);
	} else if (v->args == ARGS_SESSION && k->argc != 1) {
		fprintf(stderr, "shmbctl: %s wants one session name\n", k->verb);
		v = NULL;
	} else if (v->args == ARGS_NONE && k->argc) {
		fprintf(stderr, "shmbctl: %s takes no argument ('%s')\n", k->verb, k->argv[0]);
		v = NULL;
	} else if (v->args == ARGS_LINK && k->argc > 1) {
		fprintf(stderr, "shmbctl: links takes at most one link name\n");
		v = NULL;
	}
	return v;
}

static int cli_connect(const struct cli *k, struct shmb_client **c)
{
	int r = shmb_connect(&k->co, c);
	const char *d = broker_dir(&k->co);

	if (r == -ENOENT || r == -ECONNREFUSED)
		fprintf(stderr, "shmbctl: no broker at %s/control: is shmbd running there?"
			" (start one with 'shmbd --dir %s', or 'make run' in the source tree;"
			" SHMB_DIR or --dir names the directory)\n", d, d);
	else if (r < 0)
		fprintf(stderr, "shmbctl: cannot reach the broker at %s/control: %s\n", d,
			shmb_strerror(r));
	return r;
}

int main(int argc, char **argv)
{
	struct cli k = { .count = -1, .adm = { .interval = 1.0, .count = -1 } };
	const struct verb *v;
	struct shmb_client *c;
	int r;

	signal(SIGPIPE, SIG_IGN);
	r = cli_head(&k, argc, argv);
	if (r == CLI_GO)
		r = cli_tail(&k, argc, argv);
	if (r != CLI_GO)
		return r;
	v = cli_verb(&k);
	if (!v)
		return 2;
	k.adm.count = k.count;
	if (cli_connect(&k, &c) < 0)
		return 1;
	r = v->run(c, &k);
	shmb_close(c);
	return r;
}
