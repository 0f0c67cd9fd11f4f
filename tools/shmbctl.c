/*
 * tools/shmbctl.c - the shmb CLI.  Scripting verbs: pub and sub; admin:
 * status, sessions, session NAME, topics, links [NAME], kick
 * (docs/operations.md).
 * Listings come from the broker in pages (PROTO_LIST); --json prints the
 * fields under the stable names docs/operations.md lists.
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
#include "shm/layout.h"
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
		"  kick NAME [--uid U] [--delete]\n"
		"                          fence the session's owner off and detach it (the\n"
		"                          session waits for its next owner); --delete destroys it\n"
		"      --json              status, sessions, session, topics, links: one JSON\n"
		"                          object\n"
		"      --watch             sessions, topics, links: redraw every --interval S\n"
		"                          (default 1) until interrupted (--count N: N times)\n"
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

/* ---- admin ----------------------------------------------------------------- */

struct adm {
	bool json, watch, del, have_uid;
	unsigned uid;
	double interval;
	long count;
	const char *name; /* links NAME: the one link shown */
};

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20 || ch >= 0x7f) /* bytes, not text: valid JSON whatever they are */
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

static const char *human_bytes(uint64_t v, char *buf, size_t n)
{
	static const char unit[] = "BKMGT";
	int u = 0;
	double d = (double)v;

	while (d >= 1024 && u < 4) {
		d /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, n, "%lluB", (unsigned long long)v);
	else
		snprintf(buf, n, "%.*f%c", d < 10 ? 1 : 0, d, unit[u]);
	return buf;
}

static const char *human_ms(uint64_t ms, char *buf, size_t n)
{
	uint64_t s = ms / 1000;

	if (ms < 1000)
		snprintf(buf, n, "%llums", (unsigned long long)ms);
	else if (s < 120)
		snprintf(buf, n, "%llus", (unsigned long long)s);
	else if (s < 7200)
		snprintf(buf, n, "%llum", (unsigned long long)(s / 60));
	else if (s < 172800)
		snprintf(buf, n, "%lluh", (unsigned long long)(s / 3600));
	else
		snprintf(buf, n, "%llud", (unsigned long long)(s / 86400));
	return buf;
}

static const char *state_name(uint32_t st)
{
	return st == PROTO_SESSION_ATTACHED ? "attached"
	     : st == PROTO_SESSION_DETACHED ? "detached"
	     : st == PROTO_SESSION_QUARANTINED ? "quarantined" : "unknown";
}

static const char *policy_name(uint32_t p)
{
	return p == SHM_POLICY_DROP_OLDEST ? "drop-oldest" : "block";
}

/* Every page of a listing, its entries in one array: count, or -errno.
 * flags (may be NULL): the last page's PROTO_LR_*. */
static long list_all(struct shmb_client *c, uint32_t kind, const char *name, const struct adm *a,
		     void **out, char *text, uint32_t *flags)
{
	static uint64_t buf[PROTO_MAX_MSG / sizeof(uint64_t)];
	struct proto_list_reply *page = (void *)buf;
	struct proto_list q = { .kind = kind };
	size_t have = 0, size = 0;
	char *all = NULL;

	if (name) {
		q.flags |= PROTO_ADM_NAME;
		q.name_len = (uint32_t)strlen(name);
		if (q.name_len == 0 || q.name_len > PROTO_NAME_MAX)
			return -EINVAL;
		memcpy(q.name, name, q.name_len);
	}
	if (a->have_uid) {
		q.flags |= PROTO_ADM_UID;
		q.uid = a->uid;
	}
	do {
		int r = client_list(c, &q, page, text);
		char *grown;

		if (r < 0) {
			free(all);
			return r;
		}
		size = page->entry_size;
		grown = realloc(all, (have + page->count) * size + 1);
		if (!grown) {
			free(all);
			return -ENOMEM;
		}
		all = grown;
		memcpy(all + have * size, page + 1, (size_t)page->count * size);
		have += page->count;
		if (flags)
			*flags = page->flags;
		/* a cursor that does not move on would loop for ever */
		if (page->next && page->next <= q.cursor) {
			free(all);
			return -EPROTO;
		}
		q.cursor = page->next;
	} while (q.cursor);
	*out = all;
	return (long)have;
}

static int adm_failed(const char *what, int r, const char *text)
{
	if (text[0])
		fprintf(stderr, "shmbctl: %s: %s\n", what, text);
	else
		die(what, r);
	return 1;
}

/* A wall-clock time in ns as the events show it: local, to the millisecond. */
static const char *when_text(uint64_t time_ns, char *buf, size_t n)
{
	time_t t = (time_t)(time_ns / 1000000000ull);
	struct tm tm;
	size_t k;

	localtime_r(&t, &tm);
	k = strftime(buf, n, "%Y-%m-%d %H:%M:%S", &tm);
	snprintf(buf + k, n - k, ".%03llu", (unsigned long long)(time_ns / 1000000 % 1000));
	return buf;
}

/* A session's or a link's recent events: a JSON array, or lines. */
static void events_json(const struct proto_event_info *ev, long n)
{
	putchar('[');
	for (long k = 0; k < n; k++) {
		printf("%s{\"time_ns\":%llu,\"text\":", k ? "," : "", (unsigned long long)ev[k].time_ns);
		json_str(stdout, ev[k].text);
		putchar('}');
	}
	putchar(']');
}

static void events_text(const struct proto_event_info *ev, long n)
{
	for (long k = 0; k < n; k++) {
		char when[48];

		printf("  %s  %s\n", when_text(ev[k].time_ns, when, sizeof(when)), ev[k].text);
	}
}

static void session_json(FILE *f, const struct proto_session_info *i)
{
	fprintf(f, "{\"name\":");
	json_str(f, i->name);
	fprintf(f, ",\"id\":%llu,\"uid\":%u,\"pid\":%d,\"generation\":%u,\"state\":\"%s\","
		"\"policy\":\"%s\",\"ephemeral\":%s,\"full\":%s,\"draining\":%s,"
		"\"rx_ring_size\":%llu,\"rx_depth_msgs\":%llu,\"rx_depth_bytes\":%llu,"
		"\"tx_seq\":%llu,\"published\":%llu,\"delivered\":%llu,\"dropped\":%llu,"
		"\"full_ms\":%llu,\"topics\":%u,\"age_s\":%llu,\"detached_s\":",
		(unsigned long long)i->id, i->uid, i->pid, i->generation, state_name(i->state),
		policy_name(i->policy), i->flags & PROTO_SI_EPHEMERAL ? "true" : "false",
		i->flags & PROTO_SI_FULL ? "true" : "false", i->flags & PROTO_SI_DRAINING ? "true" : "false",
		(unsigned long long)i->rx_ring_size, (unsigned long long)i->rx_depth_msgs,
		(unsigned long long)i->rx_depth_bytes, (unsigned long long)i->tx_seq,
		(unsigned long long)i->published, (unsigned long long)i->delivered,
		(unsigned long long)i->dropped, (unsigned long long)i->full_ms, i->ntopics,
		(unsigned long long)(i->age_ms / 1000));
	if (i->state == PROTO_SESSION_ATTACHED)
		fprintf(f, "null");
	else
		fprintf(f, "%llu", (unsigned long long)(i->detached_ms / 1000));
	fprintf(f, ",\"detach_reason\":");
	json_str(f, i->detach_reason);
	fprintf(f, ",\"exit_reason\":");
	json_str(f, i->exit_reason);
	fputc('}', f);
}

static int show_sessions(struct shmb_client *c, const struct adm *a)
{
	struct proto_session_info *v;
	char text[160] = "";
	long n = list_all(c, PROTO_LIST_SESSIONS, NULL, a, (void **)&v, text, NULL);
	int w = 4;

	if (n < 0)
		return adm_failed("sessions", (int)n, text);
	if (a->json) {
		printf("{\"sessions\":[");
		for (long k = 0; k < n; k++) {
			if (k)
				putchar(',');
			session_json(stdout, &v[k]);
		}
		printf("]}\n");
		free(v);
		return 0;
	}
	for (long k = 0; k < n; k++)
		if ((int)strlen(v[k].name) > w)
			w = (int)strlen(v[k].name); /* whole: a name is what kick and session take */
	printf("%-*s %6s %7s %4s %-11s %-11s %15s %10s  %-22s %-18s %5s\n", w, "NAME", "UID", "PID",
	       "GEN", "STATE", "POLICY", "RX DEPTH", "TX SEQ", "LAST DETACH", "EXIT", "AGE");
	for (long k = 0; k < n; k++) {
		const struct proto_session_info *i = &v[k];
		char depth[40], b1[16], age[16];

		snprintf(depth, sizeof(depth), "%llu/%s%s", (unsigned long long)i->rx_depth_msgs,
			 human_bytes(i->rx_depth_bytes, b1, sizeof(b1)), i->flags & PROTO_SI_FULL ? "!" : "");
		printf("%-*.*s %6u %7d %4u %-11s %-11s %15s %10llu  %-22.22s %-18.18s %5s\n", w, w,
		       i->name, i->uid, i->pid, i->generation, state_name(i->state),
		       policy_name(i->policy), depth, (unsigned long long)i->tx_seq,
		       i->detach_reason[0] ? i->detach_reason : "-",
		       i->exit_reason[0] ? i->exit_reason : "-", human_ms(i->age_ms, age, sizeof(age)));
	}
	if (!n)
		printf("(no sessions)\n");
	free(v);
	return 0;
}

static int show_session(struct shmb_client *c, const char *name, const struct adm *a)
{
	struct proto_session_info *v;
	struct proto_event_info *ev;
	char text[160] = "", b1[16], b2[16], b3[16];
	long n = list_all(c, PROTO_LIST_SESSIONS, name, a, (void **)&v, text, NULL), ne;
	const struct proto_session_info *i;

	if (n < 0)
		return adm_failed(name, (int)n, text);
	if (n > 1) {
		fprintf(stderr, "shmbctl: sessions named '%s' exist for %ld uids: name one with --uid\n",
			name, n);
		free(v);
		return 1;
	}
	i = &v[0];
	{
		struct adm one = *a;

		/* the events of exactly this one */
		one.have_uid = true;
		one.uid = i->uid;
		ne = list_all(c, PROTO_LIST_EVENTS, name, &one, (void **)&ev, text, NULL);
	}
	if (ne < 0) {
		free(v);
		return adm_failed(name, (int)ne, text);
	}
	if (a->json) {
		printf("{\"session\":");
		session_json(stdout, i);
		printf(",\"events\":");
		events_json(ev, ne);
		printf("}\n");
	} else {
		printf("name            %s\n"
		       "id              %llu\n"
		       "uid             %u\n"
		       "state           %s%s%s\n"
		       "owner pid       %d%s\n"
		       "generation      %u\n"
		       "policy          %s%s\n"
		       "rx ring         %s, %llu message(s) / %s not yet acknowledged%s\n"
		       "tx sequence     %llu (published since the broker started: %llu)\n"
		       "delivered       %llu message(s) since the broker started\n",
		       i->name, (unsigned long long)i->id, i->uid, state_name(i->state),
		       i->state != PROTO_SESSION_ATTACHED && i->detached_ms ? " for " : "",
		       i->state != PROTO_SESSION_ATTACHED && i->detached_ms
			       ? human_ms(i->detached_ms, b3, sizeof(b3)) : "",
		       i->pid, i->state == PROTO_SESSION_ATTACHED ? "" : " (its last owner)", i->generation,
		       policy_name(i->policy), i->flags & PROTO_SI_EPHEMERAL ? ", ephemeral" : "",
		       human_bytes(i->rx_ring_size, b1, sizeof(b1)), (unsigned long long)i->rx_depth_msgs,
		       human_bytes(i->rx_depth_bytes, b2, sizeof(b2)),
		       i->flags & PROTO_SI_FULL ? " (full: holding publishers back)" : "",
		       (unsigned long long)i->tx_seq, (unsigned long long)i->published,
		       (unsigned long long)i->delivered);
		if (i->policy == SHM_POLICY_DROP_OLDEST)
			printf("dropped         %llu message(s) before they were read\n",
			       (unsigned long long)i->dropped);
		printf("subscriptions   %u topic(s)\n"
		       "last detach     %s\n"
		       "owner's end     %s\n"
		       "age             %s\n"
		       "events (oldest first):\n",
		       i->ntopics, i->detach_reason[0] ? i->detach_reason : "-",
		       i->exit_reason[0] ? i->exit_reason : "-", human_ms(i->age_ms, b1, sizeof(b1)));
		events_text(ev, ne);
	}
	free(ev);
	free(v);
	return 0;
}

static int show_topics(struct shmb_client *c, const struct adm *a)
{
	struct proto_topic_info *v;
	char text[160] = "";
	struct adm all = *a;
	long n;
	int w = 5;

	all.have_uid = false;
	n = list_all(c, PROTO_LIST_TOPICS, NULL, &all, (void **)&v, text, NULL);
	if (n < 0)
		return adm_failed("topics", (int)n, text);
	if (a->json) {
		printf("{\"topics\":[");
		for (long k = 0; k < n; k++) {
			printf("%s{\"name\":", k ? "," : "");
			json_str(stdout, v[k].name);
			printf(",\"id\":%u,\"owner_uid\":%u,\"subscribers\":%u,\"routed\":%llu,"
			       "\"rate\":%llu}", v[k].id, v[k].owner_uid, v[k].subscribers,
			       (unsigned long long)v[k].routed, (unsigned long long)v[k].rate);
		}
		printf("]}\n");
		free(v);
		return 0;
	}
	for (long k = 0; k < n; k++)
		if ((int)strlen(v[k].name) > w)
			w = (int)strlen(v[k].name);
	printf("%-*s %6s %6s %11s %12s %10s\n", w, "TOPIC", "ID", "OWNER", "SUBSCRIBERS", "ROUTED",
	       "RATE/S");
	for (long k = 0; k < n; k++)
		printf("%-*.*s %6u %6u %11u %12llu %10llu\n", w, w, v[k].name, v[k].id, v[k].owner_uid,
		       v[k].subscribers, (unsigned long long)v[k].routed, (unsigned long long)v[k].rate);
	if (!n)
		printf("(no topics)\n");
	free(v);
	return 0;
}

/* ---- links (docs/links.md) ---- */

static void link_json(FILE *f, const struct proto_link_info *i)
{
	const char *t = i->peer_topics;

	fprintf(f, "{\"name\":");
	json_str(f, i->name);
	fprintf(f, ",\"role\":");
	json_str(f, i->role);
	fprintf(f, ",\"state\":");
	json_str(f, i->state);
	fprintf(f, ",\"address\":");
	json_str(f, i->address);
	fprintf(f, ",\"peer\":");
	json_str(f, i->peer);
	/* a 64-bit id: as text, so that no JSON reader rounds it */
	if (i->peer_broker)
		fprintf(f, ",\"peer_broker\":\"%016llx\"", (unsigned long long)i->peer_broker);
	else
		fprintf(f, ",\"peer_broker\":null");
	fprintf(f, ",\"generation\":%u,\"failures\":%u,\"backoff_ms\":%llu,\"retry_ms\":",
		i->generation, i->failures, (unsigned long long)i->backoff_ms);
	if (!strcmp(i->state, "backoff"))
		fprintf(f, "%llu", (unsigned long long)i->retry_ms);
	else
		fprintf(f, "null");
	fprintf(f, ",\"idle_ms\":");
	if (!strcmp(i->state, "ready"))
		fprintf(f, "%llu", (unsigned long long)i->idle_ms);
	else
		fprintf(f, "null");
	fprintf(f, ",\"sent\":%llu,\"acked\":%llu,\"replayed\":%llu,\"received\":%llu,"
		"\"msgs_out\":%llu,\"msgs_in\":%llu,\"no_topic\":%llu,\"wire_out\":%llu,"
		"\"wire_in\":%llu,\"connects\":%llu,\"events_recorded\":%llu,\"created_ns\":%llu,"
		"\"last_reason\":",
		(unsigned long long)i->sent, (unsigned long long)i->acked,
		(unsigned long long)i->replayed, (unsigned long long)i->received,
		(unsigned long long)i->msgs_out, (unsigned long long)i->msgs_in,
		(unsigned long long)i->no_topic, (unsigned long long)i->wire_out,
		(unsigned long long)i->wire_in, (unsigned long long)i->connects,
		(unsigned long long)i->events, (unsigned long long)i->created_ns);
	json_str(f, i->reason);
	fprintf(f, ",\"peer_topics_count\":%u,\"peer_topics\":[", i->npeer_topics);
	/* space-separated names (a topic name has no space) */
	for (bool first = true; *t; first = false) {
		char one[sizeof(i->peer_topics)];
		size_t n = strcspn(t, " ");

		memcpy(one, t, n);
		one[n] = 0;
		if (!first)
			fputc(',', f);
		json_str(f, one);
		t += n;
		t += *t == ' ';
	}
	fprintf(f, "]}");
}

/* Who is (or was last) at the other end, else where a dialer dials. */
static const char *link_peer(const struct proto_link_info *i)
{
	return i->peer[0] ? i->peer : i->role[0] == 'd' && i->address[0] ? i->address : "-";
}

static int show_links(struct shmb_client *c, const struct adm *a)
{
	struct proto_link_info *v;
	char text[160] = "";
	struct adm all = *a;
	uint32_t flags = 0;
	int w = 4, pw = 4;
	long n;

	/* links are the broker's: no uid applies */
	all.have_uid = false;
	n = list_all(c, PROTO_LIST_LINKS, NULL, &all, (void **)&v, text, &flags);
	if (n < 0)
		return adm_failed("links", (int)n, text);
	if (a->json) {
		printf("{\"listening\":%s,\"links\":[", flags & PROTO_LR_LISTENING ? "true" : "false");
		for (long k = 0; k < n; k++) {
			if (k)
				putchar(',');
			link_json(stdout, &v[k]);
		}
		printf("]}\n");
		free(v);
		return 0;
	}
	if (!n) {
		printf(flags & PROTO_LR_LISTENING
			       ? "no links yet: this broker listens for them, and no peer has dialed in\n"
			       : "no links: this broker neither dials nor listens (shmbd --link, --listen)\n");
		free(v);
		return 0;
	}
	for (long k = 0; k < n; k++) {
		if ((int)strlen(v[k].name) > w)
			w = (int)strlen(v[k].name);
		if ((int)strlen(link_peer(&v[k])) > pw)
			pw = (int)strlen(link_peer(&v[k]));
	}
	printf("%-*s %-8s %-11s %-*s %5s %7s %7s %7s %8s %8s  %s\n", w, "NAME", "ROLE", "STATE", pw,
	       "PEER", "GEN", "BACKOFF", "SENT", "ACKED", "REPLAYED", "RECEIVED", "LAST REASON");
	for (long k = 0; k < n; k++) {
		const struct proto_link_info *i = &v[k];
		char b1[16], b2[16], b3[16], b4[16], b5[16];

		printf("%-*s %-8s %-11s %-*s %5u %7s %7s %7s %8s %8s  %s\n", w, i->name, i->role,
		       i->state, pw, link_peer(i), i->generation,
		       i->backoff_ms ? human_ms(i->backoff_ms, b1, sizeof(b1)) : "-",
		       human_bytes(i->sent, b2, sizeof(b2)), human_bytes(i->acked, b3, sizeof(b3)),
		       human_bytes(i->replayed, b4, sizeof(b4)), human_bytes(i->received, b5, sizeof(b5)),
		       i->reason[0] ? i->reason : "-");
	}
	free(v);
	return 0;
}

/* links NAME, text: who and where, then its state. */
static void link_text_head(const struct proto_link_info *i)
{
	char b1[16];

	printf("name            %s\n"
	       "role            %s, %s %s\n"
	       "state           %s, generation %u",
	       i->name, i->role, i->role[0] == 'd' ? "dials" : "listens on", i->address[0] ? i->address : "?",
	       i->state, i->generation);
	if (!strcmp(i->state, "backoff"))
		printf(": next attempt in %s", human_ms(i->retry_ms, b1, sizeof(b1)));
	if (i->failures)
		printf(" (%u failed attempt(s) since it was last ready)", i->failures);
	printf("\npeer            %s", i->peer[0] ? i->peer : "none yet");
	if (i->peer_broker)
		printf(", broker %016llx", (unsigned long long)i->peer_broker);
	if (!strcmp(i->state, "ready"))
		printf(", last heard %s ago", human_ms(i->idle_ms, b1, sizeof(b1)));
	putchar('\n');
}

/* links NAME, text: what went over it, either way. */
static void link_text_traffic(const struct proto_link_info *i)
{
	char b1[16], b2[16], b3[16];

	printf("sent            %s ever (%llu bytes); routed by the peer: %s; waiting for it: %s\n",
	       human_bytes(i->sent, b1, sizeof(b1)), (unsigned long long)i->sent,
	       human_bytes(i->acked, b2, sizeof(b2)), human_bytes(i->sent - i->acked, b3, sizeof(b3)));
	printf("received        %s of the peer's, routed here (%llu bytes)\n",
	       human_bytes(i->received, b1, sizeof(b1)), (unsigned long long)i->received);
	/* the rest of the figures count since this broker started */
	printf("messages        %llu out, %llu in (%llu for topics nobody here uses), since the"
	       " broker started\n"
	       "replayed        %s after reconnects, since the broker started\n"
	       "on the wire     %s out, %s in over %llu connection(s), since the broker started\n",
	       (unsigned long long)i->msgs_out, (unsigned long long)i->msgs_in,
	       (unsigned long long)i->no_topic, human_bytes(i->replayed, b1, sizeof(b1)),
	       human_bytes(i->wire_out, b2, sizeof(b2)), human_bytes(i->wire_in, b3, sizeof(b3)),
	       (unsigned long long)i->connects);
}

/* links NAME, text: the patterns the peer asked for (the broker sends
 * as many names as fit, and their count). */
static void link_text_peer_topics(const struct proto_link_info *i)
{
	unsigned listed = 0;

	for (const char *t = i->peer_topics; *t; t++)
		listed += t == i->peer_topics || t[-1] == ' ';
	printf("peer asks for   %u topic pattern(s)%s%s", i->npeer_topics,
	       i->npeer_topics ? ": " : "", i->peer_topics);
	if (listed < i->npeer_topics)
		printf(" (and %u more)", i->npeer_topics - listed);
	putchar('\n');
}

/* links NAME, text: its last trouble, its age and its recent events. */
static void link_text_tail(const struct proto_link_info *i, const struct proto_event_info *ev,
			   long ne)
{
	char b1[16], when[48];

	printf("last back-off   %s\n"
	       "last reason     %s\n"
	       "created         %s\n",
	       i->backoff_ms ? human_ms(i->backoff_ms, b1, sizeof(b1)) : "-",
	       i->reason[0] ? i->reason : "-",
	       i->created_ns ? when_text(i->created_ns, when, sizeof(when)) : "-");
	if (i->events > (uint64_t)ne)
		printf("events (oldest first; the last %ld of %llu):\n", ne, (unsigned long long)i->events);
	else
		printf("events (oldest first):\n");
	events_text(ev, ne);
}

static int show_link(struct shmb_client *c, const struct adm *a)
{
	struct proto_link_info *v;
	struct proto_event_info *ev = NULL;
	char text[160] = "";
	struct adm all = *a;
	const struct proto_link_info *i;
	long n, ne;

	all.have_uid = false;
	if (strlen(a->name) > PROTO_LINK_NAME_MAX) {
		fprintf(stderr, "shmbctl: links: no link '%s': a link name is 1-64 characters of"
			" A-Z a-z 0-9 . _ -\n", a->name);
		return 1;
	}
	n = list_all(c, PROTO_LIST_LINKS, a->name, &all, (void **)&v, text, NULL);
	if (n < 0)
		return adm_failed("links", (int)n, text);
	if (n != 1) {
		/* names are unique: the broker answers -ENOENT for none */
		free(v);
		return adm_failed("links", -EPROTO, "");
	}
	i = &v[0];
	ne = list_all(c, PROTO_LIST_LINK_EVENTS, a->name, &all, (void **)&ev, text, NULL);
	if (ne < 0) {
		free(v);
		return adm_failed("links", (int)ne, text);
	}
	if (a->json) {
		printf("{\"link\":");
		link_json(stdout, i);
		printf(",\"events\":");
		events_json(ev, ne);
		printf("}\n");
	} else {
		link_text_head(i);
		link_text_traffic(i);
		link_text_peer_topics(i);
		link_text_tail(i, ev, ne);
	}
	free(ev);
	free(v);
	return 0;
}

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
	(void)sig;
	interrupted = 1;
}

/* A listing once, or redrawn in place like top. */
static int watch(struct shmb_client *c, const struct adm *a, int (*show)(struct shmb_client *,
									 const struct adm *))
{
	struct sigaction sa = { .sa_handler = on_interrupt };
	long frames = 0;

	if (!a->watch)
		return show(c, a);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	while (!interrupted && (a->count < 0 || frames < a->count)) {
		struct timespec ts = { .tv_sec = (time_t)a->interval,
				       .tv_nsec = (long)((a->interval - (double)(time_t)a->interval) * 1e9) };
		time_t now = time(NULL);
		char when[16];
		int r;

		strftime(when, sizeof(when), "%H:%M:%S", localtime(&now));
		/* home, clear: one frame replaces the last */
		printf("\033[H\033[2J%s  (every %gs; Ctrl-C ends)\n\n", when, a->interval);
		r = show(c, a);
		fflush(stdout);
		if (r)
			return r;
		if (++frames == a->count)
			break;
		nanosleep(&ts, NULL);
	}
	return 0;
}

static int cmd_kick(struct shmb_client *c, const char *name, const struct adm *a)
{
	struct proto_kick q = { .flags = a->del ? PROTO_KICK_DELETE : 0 };
	char text[160] = "";
	int r;

	q.name_len = (uint32_t)strlen(name);
	if (q.name_len == 0 || q.name_len > PROTO_NAME_MAX)
		return open_failed(name, -EINVAL);
	memcpy(q.name, name, q.name_len);
	if (a->have_uid) {
		q.flags |= PROTO_ADM_UID;
		q.uid = a->uid;
	}
	r = client_kick(c, &q, text);
	if (r < 0)
		return adm_failed("kick", r, text);
	printf("session '%s' %s\n", name, a->del ? "deleted" : "kicked: its owner is fenced off and"
	       " the session waits for its next owner");
	return 0;
}

static int cmd_status(struct shmb_client *c, const char *dir, const struct adm *a)
{
	struct proto_reply rep;
	uint64_t up;
	int r = client_status(c, &rep);

	if (r < 0)
		return die("status", r);
	if (a->json) {
		printf("{\"pid\":%llu,\"dir\":", (unsigned long long)rep.u.status.pid);
		json_str(stdout, dir);
		printf(",\"uptime_s\":%llu,\"sessions\":%llu,\"attached\":%llu,\"detached\":%llu,"
		       "\"topics\":%llu,\"routed\":%llu,\"quarantined\":%llu,\"adopted_at_start\":%llu,"
		       "\"quarantined_at_start\":%llu}\n",
		       (unsigned long long)(rep.u.status.uptime_ns / 1000000000ull),
		       (unsigned long long)rep.u.status.sessions, (unsigned long long)rep.u.status.attached,
		       (unsigned long long)(rep.u.status.sessions - rep.u.status.attached),
		       (unsigned long long)rep.u.status.topics, (unsigned long long)rep.u.status.routed,
		       (unsigned long long)rep.u.status.quarantined,
		       (unsigned long long)rep.u.status.adopted,
		       (unsigned long long)rep.u.status.quarantined_at_start);
		return 0;
	}
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
	return cmd_status(c, broker_dir(&k->co), &k->adm);
}

static int verb_sessions(struct shmb_client *c, struct cli *k)
{
	return watch(c, &k->adm, show_sessions);
}

static int verb_session(struct shmb_client *c, struct cli *k)
{
	return show_session(c, k->argv[0], &k->adm);
}

static int verb_topics(struct shmb_client *c, struct cli *k)
{
	return watch(c, &k->adm, show_topics);
}

static int verb_links(struct shmb_client *c, struct cli *k)
{
	k->adm.name = k->argc ? k->argv[0] : NULL;
	return watch(c, &k->adm, k->adm.name ? show_link : show_links);
}

static int verb_kick(struct shmb_client *c, struct cli *k)
{
	return cmd_kick(c, k->argv[0], &k->adm);
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
