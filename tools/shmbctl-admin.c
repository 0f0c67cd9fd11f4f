/*
 * tools/shmbctl-admin.c - shmbctl's admin verbs: status, sessions,
 * session NAME, topics, links [NAME] and kick (docs/operations.md).
 * Listings come from the broker in pages (PROTO_LIST); --json prints the
 * fields under the stable names docs/operations.md lists; --watch redraws
 * a listing in place.
 *
 * Must never: rename or drop a --json field or change a column (scripts
 * and tests read them), or show a session the broker did not list for
 * this caller (root sees every uid's, anyone else only their own).
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "libclient/internal.h"
#include "shm/layout.h"
#include "shmb.h"
#include "tools/shmbctl.h"

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
		shmbctl_die(what, r);
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
	if (i->flags & PROTO_SI_SPILLED)
		fprintf(f, ",\"spilled\":true,\"spill_copied\":%llu,\"spill_let_go\":%llu,"
			"\"spill_s\":%llu", (unsigned long long)i->spill_copied,
			(unsigned long long)i->spill_let_go, (unsigned long long)(i->spill_ms / 1000));
	else
		fprintf(f, ",\"spilled\":false,\"spill_copied\":null,\"spill_let_go\":null,"
			"\"spill_s\":null");
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

int admin_session(struct shmb_client *c, const char *name, const struct adm *a)
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
		if (i->flags & PROTO_SI_SPILLED)
			printf("spool           its lanes copied into its RX ring for %s: %llu record(s),"
			       " %llu lane(s) let go when it was full%s\n",
			       human_ms(i->spill_ms, b3, sizeof(b3)), (unsigned long long)i->spill_copied,
			       (unsigned long long)i->spill_let_go,
			       i->spill_let_go ? " (a gap its next owner is told of)" : "");
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

/* ---- lanes (docs/design/data-path.md) ---- */

static const char *lane_state(uint32_t st)
{
	return st == PROTO_LANE_OPEN ? "open" : st == PROTO_LANE_CUT ? "cut" : "bad";
}

static int show_lanes(struct shmb_client *c, const struct adm *a)
{
	struct proto_lane_info *v;
	char text[160] = "";
	struct adm all = *a;
	long n;
	int w = 6;

	all.have_uid = false;
	n = list_all(c, PROTO_LIST_LANES, NULL, &all, (void **)&v, text, NULL);
	if (n < 0)
		return adm_failed("lanes", (int)n, text);
	if (a->json) {
		printf("{\"lanes\":[");
		for (long k = 0; k < n; k++) {
			printf("%s{\"lane\":%u,\"writer\":", k ? "," : "", v[k].number);
			json_str(stdout, v[k].name);
			printf(",\"session_id\":%llu,\"generation\":%u,\"uid\":%u,\"state\":\"%s\","
			       "\"ring_size\":%llu,\"end\":%llu,\"holders\":%u,\"watchers\":%u,"
			       "\"lag\":%llu,\"waiting_ms\":%llu}",
			       (unsigned long long)v[k].publisher, v[k].generation, v[k].uid,
			       lane_state(v[k].state), (unsigned long long)v[k].ring_size,
			       (unsigned long long)v[k].end, v[k].holders, v[k].watchers,
			       (unsigned long long)v[k].lag, (unsigned long long)v[k].short_ms);
		}
		printf("]}\n");
		free(v);
		return 0;
	}
	for (long k = 0; k < n; k++)
		if ((int)strlen(v[k].name) > w)
			w = (int)strlen(v[k].name);
	printf("%5s %-*s %4s %6s %5s %10s %14s %7s %8s %12s %8s\n", "LANE", w, "WRITER", "GEN",
	       "UID", "STATE", "RING", "END", "HOLDERS", "WATCHERS", "LAG", "WAIT_MS");
	for (long k = 0; k < n; k++)
		printf("%5u %-*.*s %4u %6u %5s %10llu %14llu %7u %8u %12llu %8llu\n", v[k].number, w, w,
		       v[k].name, v[k].generation, v[k].uid, lane_state(v[k].state),
		       (unsigned long long)v[k].ring_size, (unsigned long long)v[k].end,
		       v[k].holders, v[k].watchers, (unsigned long long)v[k].lag,
		       (unsigned long long)v[k].short_ms);
	if (!n)
		printf("(no lanes: none written yet, or the broker runs with --no-lanes)\n");
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

int admin_kick(struct shmb_client *c, const char *name, const struct adm *a)
{
	struct proto_kick q = { .flags = a->del ? PROTO_KICK_DELETE : 0 };
	char text[160] = "";
	int r;

	q.name_len = (uint32_t)strlen(name);
	if (q.name_len == 0 || q.name_len > PROTO_NAME_MAX)
		return shmbctl_open_failed(name, -EINVAL);
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

int admin_status(struct shmb_client *c, const char *dir, const struct adm *a)
{
	struct proto_reply rep;
	uint64_t up;
	int r = client_status(c, &rep);

	if (r < 0)
		return shmbctl_die("status", r);
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

int admin_sessions(struct shmb_client *c, const struct adm *a)
{
	return watch(c, a, show_sessions);
}

int admin_topics(struct shmb_client *c, const struct adm *a)
{
	return watch(c, a, show_topics);
}

int admin_lanes(struct shmb_client *c, const struct adm *a)
{
	return watch(c, a, show_lanes);
}

int admin_links(struct shmb_client *c, const struct adm *a)
{
	return watch(c, a, a->name ? show_link : show_links);
}
