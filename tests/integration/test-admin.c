/*
 * tests/integration/test-admin.c - the admin verbs against a real shmbd:
 * paged listings, what a listing says about a session (depth, sequence,
 * state, events), kick and kick --delete, who may see and kick what, and
 * malformed admin requests.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "broker-helper.h"
#include "harness.h"
#include "libclient/client.h"
#include "libclient/internal.h"
#include "shm/proto.h"
#include "stream.h"
#include "shmb.h"

static uint64_t page_buf[PROTO_MAX_MSG / sizeof(uint64_t)];

/* Every entry of a listing, page by page: count, or -errno; *pages. */
static long list(struct shmb_client *c, uint32_t kind, const char *name, int uid, void **out,
		 unsigned *pages)
{
	struct proto_list_reply *p = (void *)page_buf;
	struct proto_list q = { .kind = kind };
	size_t have = 0;
	char *all = NULL;

	if (name) {
		q.flags |= PROTO_ADM_NAME;
		q.name_len = (uint32_t)strlen(name);
		memcpy(q.name, name, q.name_len);
	}
	if (uid >= 0) {
		q.flags |= PROTO_ADM_UID;
		q.uid = (uint32_t)uid;
	}
	if (pages)
		*pages = 0;
	do {
		int r = client_list(c, &q, p, NULL);

		if (r < 0) {
			free(all);
			return r;
		}
		if (pages)
			(*pages)++;
		if (p->h.len > PROTO_MAX_MSG || (p->next && p->next <= q.cursor)) {
			free(all);
			return -EPROTO;
		}
		all = realloc(all, (have + p->count + 1) * p->entry_size);
		memcpy(all + have * p->entry_size, p + 1, (size_t)p->count * p->entry_size);
		have += p->count;
		q.cursor = p->next;
	} while (q.cursor);
	*out = all;
	return (long)have;
}

/* One session's entry, by name (of the caller's uid): 0 or -errno. */
static int info(struct shmb_client *c, const char *name, struct proto_session_info *out)
{
	struct proto_session_info *v;
	long n = list(c, PROTO_LIST_SESSIONS, name, -1, (void **)&v, NULL);

	if (n < 0)
		return (int)n;
	if (n != 1) {
		free(v);
		return -ENOTUNIQ;
	}
	*out = v[0];
	free(v);
	return 0;
}

static int kick(struct shmb_client *c, const char *name, int uid, bool del)
{
	struct proto_kick q = { .flags = del ? PROTO_KICK_DELETE : 0 };

	q.name_len = (uint32_t)strlen(name);
	memcpy(q.name, name, q.name_len);
	if (uid >= 0) {
		q.flags |= PROTO_ADM_UID;
		q.uid = (uint32_t)uid;
	}
	return client_kick(c, &q, NULL);
}

/* Has the session's event list a line containing each needle, in order? */
static bool events_say(struct shmb_client *c, const char *name, int uid, const char *const *needles)
{
	struct proto_event_info *ev;
	long n = list(c, PROTO_LIST_EVENTS, name, uid, (void **)&ev, NULL), k = 0;

	if (n < 0)
		return false;
	for (long i = 0; i < n && needles[k]; i++)
		if (strstr(ev[i].text, needles[k]))
			k++;
	free(ev);
	return needles[k] == NULL;
}

/* Many sessions come back across pages, each once, in id order. */
static void test_listing_pages(void)
{
	enum { N = 420 };
	struct shmb_connect_opts co = { 0 };
	struct shmb_session_opts so = { .rx_ring_size = 4096, .tx_ring_size = 4096 };
	struct proto_session_info *v;
	struct shmb_client *c;
	static bool seen[N];
	unsigned pages = 0;
	struct tb t;
	long n;

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	co.dir = t.dir;
	CU_ASSERT_FATAL(shmb_connect(&co, &c) == 0);
	for (int i = 0; i < N; i++) {
		struct shmb_session *s;
		char name[32];

		snprintf(name, sizeof(name), "many-%d", i);
		CU_ASSERT_FATAL(shmb_session_open(c, name, &so, &s) == 0);
		if (i % 2)
			shmb_session_close(s); /* half detached, half attached */
	}
	n = list(c, PROTO_LIST_SESSIONS, NULL, -1, (void **)&v, &pages);
	CU_ASSERT_FATAL(n == N);
	CU_ASSERT(pages >= 3);
	printf("\n    %d sessions listed in %u pages of at most %u bytes\n", N, pages, PROTO_MAX_MSG);
	memset(seen, 0, sizeof(seen));
	for (long k = 0; k < n; k++) {
		int i = -1;

		CU_ASSERT(sscanf(v[k].name, "many-%d", &i) == 1 && i >= 0 && i < N);
		if (i < 0 || i >= N)
			continue;
		CU_ASSERT(!seen[i]);
		seen[i] = true;
		CU_ASSERT(k == 0 || v[k].id > v[k - 1].id);
		CU_ASSERT(v[k].state == (i % 2 ? PROTO_SESSION_DETACHED : PROTO_SESSION_ATTACHED));
		CU_ASSERT(v[k].rx_ring_size == 4096);
	}
	free(v);
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* Whether the broker runs lanes (the default; test-lib-lanes.sh runs the
 * cases again with --no-lanes, on the relay). */
static bool on_lanes(void)
{
	return tb_on_lanes();
}

/* Depth, sequence, topic counts and events say what happened.  On lanes
 * the depth and sequence come from the lanes (the broker reads them);
 * the counts of messages the broker delivered and routed stay the
 * relay's: on lanes it sees no message. */
static void test_session_figures(void)
{
	struct shmb_client *pc, *sc;
	struct shmb_session *ps, *ss;
	struct proto_session_info i;
	struct proto_topic_info *tv;
	struct shmb_msg m;
	struct tb t;
	long n;

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "fig-sub", 0, &sc, &ss) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(ss, "fig") == 0);
	shmb_session_close(ss);
	CU_ASSERT_FATAL(connect_open(&t, "fig-pub", 0, &pc, &ps) == 0);
	for (int k = 0; k < 10; k++)
		CU_ASSERT(shmb_publish(ps, "fig", "0123456789", 10, 1000) == 0);
	CU_ASSERT(shmb_flush(ps, 5000) == 0);

	CU_ASSERT_FATAL(info(pc, "fig-pub", &i) == 0);
	CU_ASSERT(i.tx_seq == 10 && i.published == 10);
	CU_ASSERT(i.state == PROTO_SESSION_ATTACHED && i.pid == getpid() && i.generation == 1);
	CU_ASSERT_FATAL(info(pc, "fig-sub", &i) == 0);
	CU_ASSERT(i.state == PROTO_SESSION_DETACHED);
	CU_ASSERT(i.rx_depth_msgs == 10);
	CU_ASSERT(i.rx_depth_bytes >= 10 * 10 && i.rx_depth_bytes < 10 * 100);
	CU_ASSERT(i.ntopics == 1);
	CU_ASSERT(on_lanes() || i.delivered == 10);
	CU_ASSERT(!strcmp(i.detach_reason, "closed by its owner"));
	/* on lanes, closed, it is spilled: its lanes copied into its RX ring */
	if (on_lanes()) {
		WAIT_FOR(info(pc, "fig-sub", &i) == 0 && i.spill_copied == 10, 5000);
		CU_ASSERT(i.flags & PROTO_SI_SPILLED);
		CU_ASSERT(i.spill_copied == 10 && i.spill_let_go == 0 && i.spill_ms < 60000);
	} else {
		CU_ASSERT(!(i.flags & PROTO_SI_SPILLED) && i.spill_copied == 0);
	}

	n = list(pc, PROTO_LIST_TOPICS, NULL, -1, (void **)&tv, NULL);
	CU_ASSERT_FATAL(n == 1);
	CU_ASSERT(!strcmp(tv[0].name, "fig") && tv[0].subscribers == 1);
	CU_ASSERT(on_lanes() || tv[0].routed == 10);
	free(tv);

	/* resumed, 4 read and acknowledged: 6 left */
	shmb_close(sc);
	CU_ASSERT_FATAL(connect_open(&t, "fig-sub", 0, &sc, &ss) == 0);
	for (int k = 0; k < 4; k++)
		CU_ASSERT(shmb_recv(ss, &m, 5000) == 0);
	CU_ASSERT(shmb_ack(ss) == 0);
	CU_ASSERT_FATAL(info(pc, "fig-sub", &i) == 0);
	CU_ASSERT(i.rx_depth_msgs == 6 && i.generation == 2 && i.state == PROTO_SESSION_ATTACHED);
	CU_ASSERT(!(i.flags & PROTO_SI_SPILLED)); /* its owner's open ended the spill */
	{
		const char *const want[] = { "created by pid", "detached: closed by its owner",
					     "attached by pid", NULL };

		CU_ASSERT(events_say(pc, "fig-sub", -1, want));
	}
	CU_ASSERT(info(pc, "no-such", &i) == -ENOENT);
	shmb_close(sc);
	shmb_close(pc);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/*
 * A kicked owner is fenced off (-ESTALE, no way back with its token); the
 * session keeps every message: its next owner reads on after the last
 * acknowledgement, nothing lost, nothing twice.
 */
static void test_kick(void)
{
	struct shmb_client *pc, *kc, *nc, *p2c;
	struct shmb_session *ps, *ks, *ns, *p2s;
	struct proto_session_info i;
	struct shmb_msg m;
	uint64_t next = 0, next2 = 1000;
	struct tb t;
	int r;

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "kicked", 0, &kc, &ks) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(ks, "k") == 0);
	CU_ASSERT_FATAL(connect_open(&t, "kpub", 0, &pc, &ps) == 0);
	for (uint64_t k = 0; k < 100; k++)
		CU_ASSERT(shmb_publish(ps, "k", &k, sizeof(k), 1000) == 0);
	CU_ASSERT(shmb_flush(ps, 5000) == 0);
	for (int k = 0; k < 30; k++) {
		uint64_t v;

		CU_ASSERT_FATAL(shmb_recv(ks, &m, 5000) == 0);
		memcpy(&v, m.data, sizeof(v));
		CU_ASSERT(v == next);
		next++;
	}
	CU_ASSERT(shmb_ack(ks) == 0);

	CU_ASSERT(kick(pc, "kicked", -1, false) == 0);
	CU_ASSERT_FATAL(info(pc, "kicked", &i) == 0);
	CU_ASSERT(i.state == PROTO_SESSION_DETACHED && i.generation == 2);
	CU_ASSERT(!strcmp(i.detach_reason, "kicked by an admin"));
	/* the kicked owner: stale, and its token no longer opens the door */
	CU_ASSERT(shmb_publish(ks, "k", "x", 1, 0) == -ESTALE);
	CU_ASSERT(shmb_reconnect(kc) == 0);
	r = shmb_recv(ks, &m, 0);
	CU_ASSERT(r == -ESTALE);
	CU_ASSERT(kick(pc, "kicked", -1, false) == -EALREADY);

	/* more while nobody owns it, from kpub and from a publisher that
	 * starts only now (on lanes its lane is made while the session waits
	 * for an owner: held for it, as its RX ring receives on the relay),
	 * then the next owner reads all 70 + 20 and those 10, each
	 * publisher's in order */
	for (uint64_t k = 100; k < 120; k++)
		CU_ASSERT(shmb_publish(ps, "k", &k, sizeof(k), 1000) == 0);
	CU_ASSERT(shmb_flush(ps, 5000) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "kpub2", 0, &p2c, &p2s) == 0);
	for (uint64_t k = 1000; k < 1010; k++)
		CU_ASSERT(shmb_publish(p2s, "k", &k, sizeof(k), 1000) == 0);
	CU_ASSERT(shmb_flush(p2s, 5000) == 0);
	shmb_close(p2c);
	CU_ASSERT_FATAL(connect_open(&t, "kicked", 0, &nc, &ns) == 0);
	while (next < 120 || next2 < 1010) {
		uint64_t v, *want;

		if (shmb_recv(ns, &m, 5000) != 0)
			break;
		memcpy(&v, m.data, sizeof(v));
		want = v >= 1000 ? &next2 : &next;
		CU_ASSERT(v == *want);
		if (v != *want)
			break;
		(*want)++;
	}
	CU_ASSERT(next == 120);
	CU_ASSERT(next2 == 1010);
	CU_ASSERT(shmb_recv(ns, &m, 0) == -EAGAIN);
	{
		const char *const want[] = { "created", "kicked by uid", "detached: kicked", "attached by pid",
					     NULL };

		CU_ASSERT(events_say(pc, "kicked", -1, want));
	}

	/* --delete: gone, files and all */
	CU_ASSERT(kick(pc, "kicked", -1, true) == 0);
	CU_ASSERT(info(pc, "kicked", &i) == -ENOENT);
	CU_ASSERT(shmb_recv(ns, &m, 0) == -ESTALE);
	CU_ASSERT(kick(pc, "kicked", -1, true) == -ENOENT);
	shmb_close(nc);
	shmb_close(kc);
	shmb_close(pc);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* root sees and kicks everything; any other uid only its own
 * (docs/design/owners.md, access). */
static void test_other_uid(void)
{
	struct proto_session_info *v;
	struct shmb_client *c;
	struct shmb_session *s;
	struct tb t;
	pid_t p;
	long n;

	if (geteuid() != 0) {
		HARNESS_SKIP("needs root to run a client as another uid (nobody)");
		return;
	}
	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	CU_ASSERT(chmod(t.dir, 0755) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "x", 0, &c, &s) == 0);
	CU_ASSERT(shmb_subscribe(s, "root-topic") == 0);
	if ((p = fork_or_die()) == 0) {
		struct shmb_client *oc;
		struct shmb_session *os, *os2;
		struct proto_topic_info *tv;
		struct proto_session_info *ov;
		int fail = 0;
		long k;

		if (setgid(65534) || setuid(65534))
			_exit(50);
		if (connect_open(&t, "x", 0, &oc, &os) < 0)
			_exit(51);
		if (shmb_session_open(oc, "y", NULL, &os2) < 0 || shmb_subscribe(os2, "mine") < 0)
			_exit(52);
		k = list(oc, PROTO_LIST_SESSIONS, NULL, -1, (void **)&ov, NULL);
		fail |= (k != 2) << 0;
		for (long j = 0; j < k; j++)
			fail |= (ov[j].uid != 65534) << 1;
		fail |= (list(oc, PROTO_LIST_SESSIONS, NULL, 0, (void **)&ov, NULL) != -EPERM) << 2;
		fail |= (list(oc, PROTO_LIST_EVENTS, "x", 0, (void **)&ov, NULL) != -EPERM) << 3;
		k = list(oc, PROTO_LIST_TOPICS, NULL, -1, (void **)&tv, NULL);
		fail |= (k != 1 || strcmp(tv[0].name, "mine")) << 4;
		/* root's "y" does not exist for it; root's "x" may not be kicked */
		fail |= (kick(oc, "nope", -1, false) != -ENOENT) << 5;
		fail |= (kick(oc, "x", 0, false) != -EPERM) << 6;
		fail |= (kick(oc, "x", 0, true) != -EPERM) << 7;
		/* its own: yes */
		fail |= (kick(oc, "y", -1, true) != 0) << 8;
		shmb_session_close(os);
		_exit(fail ? 60 + fail : 0);
	}
	CU_ASSERT(tb_wait_child(p, 10000) == 0);
	/* root: both uids' sessions; "x" is ambiguous without a uid */
	n = list(c, PROTO_LIST_SESSIONS, NULL, -1, (void **)&v, NULL);
	CU_ASSERT(n == 2);
	if (n == 2) {
		CU_ASSERT(v[0].uid == 0 && v[1].uid == 65534);
		CU_ASSERT(v[1].state == PROTO_SESSION_DETACHED);
		free(v);
	}
	CU_ASSERT(kick(c, "x", -1, false) == -ENOTUNIQ);
	{
		const char *const want[] = { "created by pid", "detached", NULL };

		CU_ASSERT(events_say(c, "x", 65534, want));
	}
	CU_ASSERT(kick(c, "x", 65534, true) == 0);
	n = list(c, PROTO_LIST_SESSIONS, NULL, -1, (void **)&v, NULL);
	CU_ASSERT(n == 1);
	if (n == 1) {
		CU_ASSERT(v[0].uid == 0);
		free(v);
	}
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* ---- hostile ------------------------------------------------------------- */

/* The reply's err, or the count of a page (>= 0 as 1000 + count). */
static int raw_exchange(int fd, const void *buf, size_t len)
{
	struct proto_reply *rep = (void *)page_buf;
	ssize_t n;

	if (send(fd, buf, len, MSG_NOSIGNAL) != (ssize_t)len)
		return -1000;
	n = recv(fd, page_buf, sizeof(page_buf), 0);
	if (n == (ssize_t)sizeof(*rep) && rep->h.type == PROTO_REPLY)
		return rep->err;
	if (n >= (ssize_t)sizeof(struct proto_list_reply) && rep->h.type == PROTO_LIST_REPLY)
		return 1000 + (int)((struct proto_list_reply *)page_buf)->count;
	return -1001;
}

static void test_malformed_admin(void)
{
	struct proto_hello hello = { .h = { PROTO_HELLO, sizeof(hello), 1 }, .version = PROTO_VERSION };
	struct proto_list l = { .h = { PROTO_LIST, sizeof(l), 2 } };
	struct proto_kick k = { .h = { PROTO_KICK, sizeof(k), 3 } };
	struct proto_status st = { .h = { PROTO_STATUS, sizeof(st), 4 } };
	struct shmb_client *c;
	struct shmb_session *s;
	struct tb t;
	int fd;

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "victim", 0, &c, &s) == 0);
	fd = tb_raw_connect(&t);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT(raw_exchange(fd, &hello, sizeof(hello)) == 0);
	l.kind = 99;
	CU_ASSERT(raw_exchange(fd, &l, sizeof(l)) == -EINVAL);
	l.kind = PROTO_LIST_SESSIONS;
	l.flags = 0x80;
	CU_ASSERT(raw_exchange(fd, &l, sizeof(l)) == -EINVAL);
	l.flags = PROTO_ADM_NAME;
	l.name_len = 500;
	CU_ASSERT(raw_exchange(fd, &l, sizeof(l)) == -EINVAL);
	l.name_len = 3;
	memcpy(l.name, "v\0x", 3);
	CU_ASSERT(raw_exchange(fd, &l, sizeof(l)) == -EINVAL);
	l.name_len = 0;
	CU_ASSERT(raw_exchange(fd, &l, sizeof(l)) == -EINVAL);
	l.flags = 0;
	l.cursor = UINT64_MAX;
	CU_ASSERT(raw_exchange(fd, &l, sizeof(l)) == 1000); /* past the end: an empty page */
	l.kind = PROTO_LIST_TOPICS;
	CU_ASSERT(raw_exchange(fd, &l, sizeof(l)) == 1000);
	l.kind = PROTO_LIST_EVENTS;
	l.cursor = 0;
	CU_ASSERT(raw_exchange(fd, &l, sizeof(l)) == -EINVAL); /* events need a name */
	k.flags = 0x100;
	CU_ASSERT(raw_exchange(fd, &k, sizeof(k)) == -EINVAL);
	k.flags = 0;
	k.name_len = 0;
	CU_ASSERT(raw_exchange(fd, &k, sizeof(k)) == -EINVAL);
	k.name_len = 200;
	CU_ASSERT(raw_exchange(fd, &k, sizeof(k)) == -EINVAL);
	/* the connection and the broker go on */
	CU_ASSERT(raw_exchange(fd, &st, sizeof(st)) == 0);
	/* a short LIST is a protocol violation: answered, then closed */
	CU_ASSERT(raw_exchange(fd, &l, sizeof(l) - 8) == -EBADMSG);
	close(fd);
	CU_ASSERT(shmb_publish(s, "t", "x", 1, 1000) == 0);
	CU_ASSERT(shmb_flush(s, 5000) == 0);
	CU_ASSERT(tb_alive(&t));
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}


/* ---- review probes ------------------------------------------------------- */

/* drop-oldest: depth never exceeds the ring, msgs agree with bytes.
 * On the relay (--no-lanes): the figures are the broker's RX ring's
 * delivery and drop accounting; on lanes a drop-oldest reader counts its
 * own gaps (SHMB_EV_GAP) and the broker routes nothing to count. */
static void test_drop_oldest_depth(void)
{
	struct shmb_connect_opts co = { 0 };
	struct shmb_session_opts so = { .rx_ring_size = 4096, .tx_ring_size = 65536,
					.policy = SHMB_POLICY_DROP_OLDEST };
	struct shmb_client *c, *pc;
	struct shmb_session *s, *ps;
	struct proto_session_info i;
	char pay[100];
	struct tb t;

	memset(pay, 'x', sizeof(pay));
	CU_ASSERT_FATAL(tb_start(&t, "--no-lanes", NULL) == 0);
	co.dir = t.dir;
	CU_ASSERT_FATAL(shmb_connect(&co, &c) == 0);
	CU_ASSERT_FATAL(shmb_session_open(c, "dropper", &so, &s) == 0);
	CU_ASSERT_FATAL(shmb_subscribe(s, "d") == 0);
	shmb_session_close(s);
	CU_ASSERT_FATAL(connect_open(&t, "dpub", 0, &pc, &ps) == 0);
	for (int k = 0; k < 200; k++)
		CU_ASSERT(shmb_publish(ps, "d", pay, sizeof(pay), 1000) == 0);
	CU_ASSERT(shmb_flush(ps, 5000) == 0);
	/* flushed is only taken from the TX ring: wait until the broker has
	 * routed all 200 (each delivered, some then dropped) */
	WAIT_FOR(info(pc, "dropper", &i) == 0 && i.delivered >= 200, 5000);
	CU_ASSERT_FATAL(info(pc, "dropper", &i) == 0);
	printf("\n    drop-oldest: depth %llu msgs / %llu bytes, ring %llu, delivered %llu, dropped %llu\n",
	       (unsigned long long)i.rx_depth_msgs, (unsigned long long)i.rx_depth_bytes,
	       (unsigned long long)i.rx_ring_size, (unsigned long long)i.delivered,
	       (unsigned long long)i.dropped);
	CU_ASSERT(i.rx_depth_bytes <= i.rx_ring_size);
	CU_ASSERT(i.rx_depth_msgs > 0 && i.rx_depth_msgs <= 4096 / 100);
	CU_ASSERT(i.delivered == 200 && i.dropped > 0);
	CU_ASSERT(i.rx_depth_msgs + i.dropped == 200);
	shmb_close(pc);
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

static int raw_open(int fd, const char *name, const uint8_t *token, uint32_t flags)
{
	struct proto_hello hello = { .h = { PROTO_HELLO, sizeof(hello), 1 }, .version = PROTO_VERSION };
	struct proto_open o = { .h = { PROTO_SESSION_OPEN, sizeof(o), 2 }, .flags = flags,
				.policy = UINT32_MAX };
	int r;

	r = raw_exchange(fd, &hello, sizeof(hello));
	if (r != 0)
		return -2000 + r;
	memcpy(o.token, token, PROTO_TOKEN_LEN);
	o.name_len = (uint32_t)strlen(name);
	memcpy(o.name, name, o.name_len);
	return raw_exchange(fd, &o, sizeof(o));
}

/* After a kick (and after a broker restart) the kicked owner's old token is
 * refused: the state file holds the new token's hash. */
static void test_kick_token_restart(void)
{
	struct shmb_client *kc, *ac;
	struct shmb_session *ks, *as;
	uint8_t tok[PROTO_TOKEN_LEN];
	struct tb t;
	int fd;

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "victim", 0, &kc, &ks) == 0);
	memcpy(tok, ks->token, sizeof(tok));
	CU_ASSERT_FATAL(connect_open(&t, "admin", 0, &ac, &as) == 0);
	CU_ASSERT(kick(ac, "victim", -1, false) == 0);
	fd = tb_raw_connect(&t);
	CU_ASSERT(raw_open(fd, "victim", tok, PROTO_OPEN_TOKEN | PROTO_OPEN_REATTACH) == -ESTALE);
	close(fd);
	shmb_close(ac);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_use_dir(t.dir);
	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	fd = tb_raw_connect(&t);
	CU_ASSERT(raw_open(fd, "victim", tok, PROTO_OPEN_TOKEN | PROTO_OPEN_REATTACH) == -ESTALE);
	close(fd);
	shmb_close(kc);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* Kick an ephemeral session: reply ok, no crash, session gone or detached */
static void test_kick_ephemeral(void)
{
	struct shmb_client *ec, *ac;
	struct shmb_session *es, *as;
	struct proto_session_info i;
	struct tb t;
	int r;

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "eph", SHMB_EPHEMERAL, &ec, &es) == 0);
	CU_ASSERT(shmb_publish(es, "e", "x", 1, 1000) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "admin", 0, &ac, &as) == 0);
	r = kick(ac, "eph", -1, false);
	printf("\n    kick ephemeral: %d\n", r);
	CU_ASSERT(r == 0);
	r = info(ac, "eph", &i);
	printf("    info after: %d\n", r);
	/* nothing left to deliver: it goes with its owner */
	CU_ASSERT(r == -ENOENT);
	CU_ASSERT(tb_alive(&t));
	CU_ASSERT(shmb_publish(es, "e", "x", 1, 0) == -ESTALE);
	shmb_close(ec);
	shmb_close(ac);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* Bytes this end sent that the peer has not read yet (SIOCOUTQ); -1 if unknown. */
static int unread_by_peer(int fd)
{
	int n;

	return ioctl(fd, SIOCOUTQ, &n) == 0 ? n : -1;
}

/* Pipelined LISTs that the client does not read: the broker must not die */
static void test_list_flood(void)
{
	struct proto_hello hello = { .h = { PROTO_HELLO, sizeof(hello), 1 }, .version = PROTO_VERSION };
	struct shmb_connect_opts co = { 0 };
	struct shmb_session_opts so = { .rx_ring_size = 4096, .tx_ring_size = 4096 };
	struct shmb_client *c;
	struct proto_reply rep;
	struct tb t;
	int fd, sent = 0;

	CU_ASSERT_FATAL(tb_start(&t, NULL) == 0);
	co.dir = t.dir;
	CU_ASSERT_FATAL(shmb_connect(&co, &c) == 0);
	for (int i = 0; i < 200; i++) {
		struct shmb_session *s;
		char name[32];

		snprintf(name, sizeof(name), "f-%d", i);
		CU_ASSERT_FATAL(shmb_session_open(c, name, &so, &s) == 0);
	}
	fd = tb_raw_connect(&t);
	CU_ASSERT(raw_exchange(fd, &hello, sizeof(hello)) == 0);
	for (int i = 0; i < 64; i++) {
		struct proto_list l = { .h = { PROTO_LIST, sizeof(l), 10 + i }, .kind = PROTO_LIST_SESSIONS };

		if (send(fd, &l, sizeof(l), MSG_NOSIGNAL | MSG_DONTWAIT) == sizeof(l))
			sent++;
	}
	/* the broker has read every LIST; one request of our own then makes
	 * sure it has also done with the last (it serves one at a time) */
	WAIT_FOR(unread_by_peer(fd) == 0, 5000);
	(void)client_status(c, &rep);
	printf("\n    sent %d LISTs unread; broker alive %d; log 'malformed' lines %d\n", sent,
	       tb_alive(&t), tb_log_count(&t, "malformed control message"));
	CU_ASSERT(tb_alive(&t));
	/* said for what it is, not as a malformed message */
	CU_ASSERT(tb_log_count(&t, "malformed control message") == 0);
	close(fd);
	shmb_close(c);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

/* A client truncates its own TX file; an admin listing reads its rx_acked.
 * Under Landlock a client's descriptor cannot truncate at all (test-broker
 * truncating_client), so this runs the broker without it. */
static void test_list_truncated_tx(void)
{
	struct shmb_client *c, *ac;
	struct shmb_session *s, *as;
	struct proto_session_info i;
	size_t len;
	int fd, r;
	struct tb t;

	CU_ASSERT_FATAL(tb_start(&t, "--no-landlock", NULL) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "trunc", 0, &c, &s) == 0);
	CU_ASSERT_FATAL(connect_open(&t, "admin", 0, &ac, &as) == 0);
	(void)client_session_tx_base(s, &len, &fd);
	CU_ASSERT(ftruncate(fd, 0) == 0);
	r = info(ac, "trunc", &i);
	printf("\n    info after truncate: %d state %u; broker alive %d\n", r, i.state, tb_alive(&t));
	CU_ASSERT(tb_alive(&t));
	r = info(ac, "trunc", &i);
	printf("    again: %d state %u\n", r, i.state);
	CU_ASSERT(r == 0 && i.state == PROTO_SESSION_QUARANTINED);
	shmb_close(c);
	shmb_close(ac);
	CU_ASSERT(tb_stop(&t) == 0);
	tb_cleanup(&t);
}

static const struct harness_test review_tests[] = {
	{ "list_truncated_tx", test_list_truncated_tx },
	{ "drop_oldest_depth", test_drop_oldest_depth },
	{ "kick_token_restart", test_kick_token_restart },
	{ "kick_ephemeral", test_kick_ephemeral },
	{ "list_flood", test_list_flood },
	{ NULL, NULL },
};

static const struct harness_test admin_tests[] = {
	{ "listing_pages", test_listing_pages },
	{ "session_figures", test_session_figures },
	{ "kick", test_kick },
	{ "other_uid", test_other_uid },
	{ NULL, NULL },
};

static const struct harness_test hostile_tests[] = {
	{ "malformed_admin", test_malformed_admin },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "admin", admin_tests },
	{ "broker-hostile", hostile_tests },
	{ "review", review_tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	return harness_main("test-admin", suites, argc, argv);
}
