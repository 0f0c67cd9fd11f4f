/*
 * tools/shmbctl.c - the shmb CLI.  Scripting verbs: pub and sub; admin:
 * status.  (The full admin set — sessions, topics, kick, --watch — comes
 * with the operations work; docs/roadmap.md.)
 *
 * sub acknowledges a message only after its line was written to stdout in
 * full (write(2) returned), so a sub killed with SIGKILL never loses a
 * message it printed and prints again only what it had not acknowledged.
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

#include "libclient/internal.h"
#include "shmb.h"

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
		"  -d, --dir DIR           the broker's runtime directory (default $SHMB_DIR,\n"
		"                          else /run/shmb)\n"
		"  -h, --help              this text\n"
		"\n"
		"Exit status: 0 done, 1 error, 2 usage, 3 timed out.\n");
}

static int die(const char *what, int err)
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

static double parse_seconds(const char *s)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v > 0)) {
		fprintf(stderr, "shmbctl: --timeout wants a number of seconds > 0, not '%s'\n", s);
		exit(2);
	}
	return v;
}

/* What went wrong opening a session, in words a user can act on. */
static int open_failed(const char *name, int r)
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
	return r < 0 ? open_failed(session, r), r : 0;
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
		rc = die("flush", r);
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
		return die("subscribe", r);
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
			return die("receive", r);
		if (m.len + 1 > cap) {
			cap = m.len + 1;
			buf = realloc(buf, cap);
			if (!buf)
				return die("receive", -ENOMEM);
		}
		memcpy(buf, m.data, m.len);
		buf[m.len] = nul ? '\0' : '\n';
		if (write_all(STDOUT_FILENO, buf, m.len + 1) < 0)
			return die("write", -errno);
		/* printed in full: now it may be forgotten */
		r = shmb_ack(s);
		if (r < 0)
			return die("ack", r);
		got++;
	}
	free(buf);
	shmb_session_close(s);
	return 0;
}

static int cmd_status(struct shmb_client *c, const char *dir)
{
	struct proto_reply rep;
	uint64_t up;
	int r = client_status(c, &rep);

	if (r < 0)
		return die("status", r);
	up = rep.u.status.uptime_ns / 1000000000ull;
	printf("broker pid      %llu\n"
	       "SHMB_DIR        %s\n"
	       "uptime          %llud %02lluh %02llum %02llus\n"
	       "sessions        %llu (%llu attached, %llu detached)\n"
	       "topics          %llu\n"
	       "routed          %llu messages\n",
	       (unsigned long long)rep.u.status.pid, dir, (unsigned long long)(up / 86400),
	       (unsigned long long)(up / 3600 % 24), (unsigned long long)(up / 60 % 60),
	       (unsigned long long)(up % 60), (unsigned long long)rep.u.status.sessions,
	       (unsigned long long)rep.u.status.attached,
	       (unsigned long long)(rep.u.status.sessions - rep.u.status.attached),
	       (unsigned long long)rep.u.status.topics, (unsigned long long)rep.u.status.routed);
	if (rep.u.status.quarantined)
		printf("quarantined     %llu session(s) (see the broker's log)\n",
		       (unsigned long long)rep.u.status.quarantined);
	if (rep.u.status.adopted || rep.u.status.quarantined_at_start)
		printf("last start      %llu session(s) re-adopted, %llu quarantined (moved to %s/quarantine)\n",
		       (unsigned long long)rep.u.status.adopted,
		       (unsigned long long)rep.u.status.quarantined_at_start, dir);
	/* NUL-terminated by the broker; bounded here all the same */
	printf("crash detection  %.*s\n", (int)sizeof(rep.u.status.exit_method),
	       rep.u.status.exit_method[0] ? rep.u.status.exit_method : "?");
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "session", required_argument, NULL, 's' },
		{ "count", required_argument, NULL, 'n' },
		{ "timeout", required_argument, NULL, 't' },
		{ "null", no_argument, NULL, '0' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct shmb_connect_opts co = { 0 };
	const char *session = NULL, *verb;
	struct shmb_client *c;
	long count = -1;
	double timeout_s = 0;
	bool nul = false;
	int o, r;

	signal(SIGPIPE, SIG_IGN);
	while ((o = getopt_long(argc, argv, "+d:s:n:t:0h", opts, NULL)) != -1) {
		switch (o) {
		case 'd': co.dir = optarg; break;
		case 's': session = optarg; break;
		case 'n': count = parse_count(optarg); break;
		case 't': timeout_s = parse_seconds(optarg); break;
		case '0': nul = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	verb = argv[optind++];
	/* options may also follow the verb and its topics */
	{
		int n = 0;
		char **rest = calloc((size_t)(argc - optind + 1), sizeof(*rest));

		for (int i = optind; i < argc; i++) {
			const char *a = argv[i];
			const char *eq = !strncmp(a, "--", 2) ? strchr(a, '=') : NULL;

			/* --name=value after the verb: split it into two words */
			if (eq) {
				static char name[32];
				size_t n = (size_t)(eq - a);

				if (n >= sizeof(name)) {
					fprintf(stderr, "shmbctl: unknown option '%s'\n", a);
					return 2;
				}
				memcpy(name, a, n);
				name[n] = 0;
				argv[i] = (char *)eq + 1;
				a = name;
				i--;
				argv[i] = name;
			}

			if (!strcmp(a, "--session") && i + 1 < argc)
				session = argv[++i];
			else if (!strcmp(a, "--count") && i + 1 < argc)
				count = parse_count(argv[++i]);
			else if (!strcmp(a, "--timeout") && i + 1 < argc)
				timeout_s = parse_seconds(argv[++i]);
			else if (!strcmp(a, "--null"))
				nul = true;
			else if (!strcmp(a, "--dir") && i + 1 < argc)
				co.dir = argv[++i];
			else if (!strncmp(a, "--", 2) && a[2]) {
				fprintf(stderr, "shmbctl: unknown option '%s' (or it lacks its value)\n", a);
				return 2;
			} else
				rest[n++] = argv[i];
		}
		argc = n;
		argv = rest;
	}
	if (strcmp(verb, "pub") && strcmp(verb, "sub") && strcmp(verb, "status")) {
		fprintf(stderr, "shmbctl: unknown verb '%s'\n", verb);
		usage(stderr);
		return 2;
	}
	r = shmb_connect(&co, &c);
	if (r < 0) {
		const char *d = co.dir ? co.dir : getenv("SHMB_DIR") ? getenv("SHMB_DIR") : "/run/shmb";

		if (r == -ENOENT || r == -ECONNREFUSED)
			fprintf(stderr, "shmbctl: no broker at %s/control: is shmbd running there?"
				" (start one with 'make run' or 'shmbd --dir %s'; SHMB_DIR or --dir"
				" names the directory)\n", d, d);
		else
			fprintf(stderr, "shmbctl: cannot reach the broker at %s/control: %s\n", d,
				shmb_strerror(r));
		return 1;
	}
	if (!strcmp(verb, "status"))
		r = cmd_status(c, co.dir ? co.dir : getenv("SHMB_DIR") ? getenv("SHMB_DIR") : "/run/shmb");
	else if (!strcmp(verb, "pub"))
		r = cmd_pub(c, session, argc, argv);
	else
		r = cmd_sub(c, session, count, timeout_s, nul, argc, argv);
	shmb_close(c);
	return r;
}
