/*
 * tests/unit/test-state.c - the state file (broker/state.c) on its own:
 * its parser over lines built here with their CRC32C, its reader over a
 * directory, and its writer (state_compact and the appends) read back.
 * Linked with state.o, log.o and the shm/ objects only: the parser
 * touches nothing but the struct state_load it fills, and the writer only
 * reads the broker's tables, which the test builds by hand.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/ctl.h"
#include "broker/state.h"
#include "broker/session.h"
#include "broker/topic.h"
#include "harness.h"
#include "shm/crc32c.h"

/* ---- building a file's text ------------------------------------------------ */

struct text {
	char p[16384];
	size_t len;
};

/* One line as the broker writes it: "%08x record\n", the CRC32C taken
 * over the record (the bytes after the 9-character prefix), n bytes of
 * it (a record may hold a NUL). */
static void add_raw(struct text *t, const char *rec, size_t n, uint32_t crc_xor)
{
	int k = snprintf(t->p + t->len, sizeof(t->p) - t->len, "%08x ", crc32c(0, rec, n) ^ crc_xor);

	CU_ASSERT_FATAL(k == 9 && t->len + 9 + n + 1 < sizeof(t->p));
	t->len += 9;
	memcpy(t->p + t->len, rec, n);
	t->len += n;
	t->p[t->len++] = '\n';
}

static void add(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(struct text *t, const char *fmt, ...)
{
	char rec[2048];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(rec, sizeof(rec), fmt, ap);
	va_end(ap);
	CU_ASSERT_FATAL(n > 0 && (size_t)n < sizeof(rec));
	add_raw(t, rec, (size_t)n, 0);
}

/* Bytes as they are, no checksum, no newline added. */
static void add_bytes(struct text *t, const char *p, size_t n)
{
	CU_ASSERT_FATAL(t->len + n < sizeof(t->p));
	memcpy(t->p + t->len, p, n);
	t->len += n;
}

/* Parse a copy (state_parse writes over the newlines). */
static void parse(struct state_load *l, const struct text *t)
{
	char *buf = malloc(t->len + 1);

	CU_ASSERT_FATAL(buf != NULL);
	memcpy(buf, t->p, t->len);
	buf[t->len] = 0;
	memset(l, 0, sizeof(*l));
	state_parse(l, buf, t->len);
	free(buf);
}

static const struct state_session *find(const struct state_load *l, uint64_t id)
{
	for (unsigned i = 0; i < l->n; i++)
		if (l->s[i].id == id)
			return &l->s[i];
	return NULL;
}

static bool has_topic(const struct state_session *s, uint32_t id)
{
	for (unsigned i = 0; i < s->ntopics; i++)
		if (s->topics[i] == id)
			return true;
	return false;
}

/* A token hash of 32 bytes, each `v` plus its index, and its hex text. */
static void hash_of(uint8_t v, uint8_t h[SESSION_TOKEN_HASH_LEN], char hex[2 * SESSION_TOKEN_HASH_LEN + 1])
{
	for (unsigned i = 0; i < SESSION_TOKEN_HASH_LEN; i++) {
		h[i] = (uint8_t)(v + i);
		sprintf(hex + 2 * i, "%02x", h[i]);
	}
}

/* ---- the parser -------------------------------------------------------------- */

static void test_valid_file(void)
{
	struct text t = { .len = 0 };
	struct state_load l;
	const struct state_session *s;
	uint8_t h1[SESSION_TOKEN_HASH_LEN], h2[SESSION_TOKEN_HASH_LEN], h3[SESSION_TOKEN_HASH_LEN];
	char x1[65], x2[65], x3[65];

	hash_of(0x10, h1, x1);
	hash_of(0x80, h2, x2);
	hash_of(0xc0, h3, x3);
	add(&t, "H 1 00000000deadbeef 5");                             /* 1 */
	add(&t, "T 1 1000 a");                                         /* 2 */
	add(&t, "T 3 1000 b%%20c%%25d");                               /* 3: "b c%d" */
	add(&t, "T 2 0 x");                                            /* 4 */
	add(&t, "S 2 1000 0 0 65536 16384 1234 %s alpha", x1);         /* 5 */
	add(&t, "S 7 1001 1 1 131072 8192 0 %s beta", x2);             /* 6 */
	add(&t, "B 2 1");
	add(&t, "B 2 3");
	add(&t, "B 2 1");                                              /* twice: one */
	add(&t, "U 2 9");                                              /* not subscribed: harmless */
	add(&t, "B 99 1");                                             /* no such session */
	add(&t, "U 99 1");
	add(&t, "R 99");
	add(&t, "G 99");
	/* a newer owner and token: the record is replaced, subscriptions stay */
	add(&t, "S 2 1000 0 0 65536 16384 4321 %s alpha", x3);
	add(&t, "S 4 1000 0 0 65536 16384 0 %s gamma", x1);
	add(&t, "B 4 1");
	add(&t, "G 4");
	add(&t, "B 7 2");
	add(&t, "B 7 1");
	add(&t, "R 7");
	add(&t, "B 7 3");
	add(&t, "B 7 2");
	add(&t, "U 7 2");
	parse(&l, &t);

	CU_ASSERT(l.lines == 24);
	CU_ASSERT(l.bad == 0);
	CU_ASSERT(!l.torn);
	CU_ASSERT(!l.exists); /* the parser says nothing of a file */
	CU_ASSERT(l.have_header);
	CU_ASSERT(l.broker_id == 0xdeadbeefull);
	CU_ASSERT(l.next_session_id == 8); /* past S 7, above H's 5 */

	/* topics in file order, with the lines they stood on */
	CU_ASSERT_FATAL(l.nt == 3);
	CU_ASSERT(l.t[0].id == 1 && l.t[0].owner == 1000 && l.t[0].line == 2 && !strcmp(l.t[0].name, "a"));
	CU_ASSERT(l.t[1].id == 3 && l.t[1].owner == 1000 && l.t[1].line == 3 &&
		  !strcmp(l.t[1].name, "b c%d"));
	CU_ASSERT(l.t[2].id == 2 && l.t[2].owner == 0 && l.t[2].line == 4 && !strcmp(l.t[2].name, "x"));

	CU_ASSERT(l.n == 2);
	CU_ASSERT(find(&l, 4) == NULL);
	CU_ASSERT(find(&l, 99) == NULL);
	s = find(&l, 2);
	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT(s->uid == 1000 && s->policy == SHM_POLICY_BLOCK && !s->ephemeral);
	CU_ASSERT(s->rx_size == 65536 && s->tx_size == 16384);
	CU_ASSERT(s->pid == 4321);
	CU_ASSERT(memcmp(s->token_hash, h3, sizeof(h3)) == 0);
	CU_ASSERT(!strcmp(s->name, "alpha"));
	CU_ASSERT(s->ntopics == 2 && has_topic(s, 1) && has_topic(s, 3));
	s = find(&l, 7);
	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT(s->uid == 1001 && s->policy == SHM_POLICY_DROP_OLDEST && s->ephemeral);
	CU_ASSERT(s->rx_size == 131072 && s->tx_size == 8192 && s->pid == 0);
	CU_ASSERT(memcmp(s->token_hash, h2, sizeof(h2)) == 0);
	CU_ASSERT(!strcmp(s->name, "beta"));
	CU_ASSERT(s->ntopics == 1 && has_topic(s, 3)); /* R, then B 3, B 2, U 2 */
	state_load_free(&l);
	CU_ASSERT(l.n == 0 && l.s == NULL && l.t == NULL);
}

/* The next session id is past every id a line names: the header's if it
 * is larger, else the highest S id + 1, a destroyed session's too. */
static void test_next_session_id(void)
{
	struct text t = { .len = 0 };
	struct state_load l;
	char x[65];
	uint8_t h[SESSION_TOKEN_HASH_LEN];

	hash_of(1, h, x);
	add(&t, "H 1 0000000000000001 100");
	add(&t, "S 7 0 0 0 65536 16384 0 %s a", x);
	parse(&l, &t);
	CU_ASSERT(l.next_session_id == 100 && l.bad == 0);
	state_load_free(&l);

	t.len = 0;
	add(&t, "H 1 0000000000000001 3");
	add(&t, "S 7 0 0 0 65536 16384 0 %s a", x);
	add(&t, "S 40 0 0 0 65536 16384 0 %s b", x);
	add(&t, "G 40");
	parse(&l, &t);
	CU_ASSERT(l.next_session_id == 41 && l.n == 1 && l.bad == 0);
	state_load_free(&l);

	/* no header: the sessions alone say it; a header after them cannot lower it */
	t.len = 0;
	add(&t, "S 12 0 0 0 65536 16384 0 %s a", x);
	parse(&l, &t);
	CU_ASSERT(!l.have_header && l.next_session_id == 13);
	state_load_free(&l);
	add(&t, "H 1 0000000000000001 2");
	parse(&l, &t);
	CU_ASSERT(l.have_header && l.next_session_id == 13);
	state_load_free(&l);

	/* the largest id there may be, and a header at the limit */
	t.len = 0;
	add(&t, "S %llu 0 0 0 65536 16384 0 %s a", (unsigned long long)(SESSION_ID_LIMIT - 1), x);
	parse(&l, &t);
	CU_ASSERT(l.bad == 0 && l.next_session_id == SESSION_ID_LIMIT);
	state_load_free(&l);
	t.len = 0;
	add(&t, "H 1 0000000000000001 %llu", (unsigned long long)SESSION_ID_LIMIT);
	parse(&l, &t);
	CU_ASSERT(l.bad == 0 && l.next_session_id == SESSION_ID_LIMIT);
	state_load_free(&l);

	/* an empty file names nothing */
	t.len = 0;
	parse(&l, &t);
	CU_ASSERT(l.lines == 0 && l.bad == 0 && !l.torn && !l.have_header && l.next_session_id == 0);
	state_load_free(&l);
}

/*
 * Each bad line in turn between good ones: counted once, skipped, the
 * lines around it read as if it were not there.
 */
enum bad_kind { BAD_REC, BAD_CRC, BAD_RAW };

struct bad_case {
	const char *what;
	enum bad_kind kind;
	const char *text; /* the record (BAD_REC, BAD_CRC), or the raw line (BAD_RAW) */
	size_t len;       /* BAD_REC / BAD_RAW: bytes, when the text holds a NUL */
};

static void check_bad(const struct bad_case *c)
{
	struct text t = { .len = 0 };
	struct state_load l;
	const struct state_session *s;
	char x[65];
	uint8_t h[SESSION_TOKEN_HASH_LEN];
	size_t n = c->len ? c->len : strlen(c->text);

	hash_of(7, h, x);
	add(&t, "H 1 00000000000000aa 3");
	add(&t, "T 1 1000 news");
	add(&t, "S 2 1000 0 0 65536 16384 0 %s alpha", x);
	add(&t, "B 2 1");
	switch (c->kind) {
	case BAD_REC:
		add_raw(&t, c->text, n, 0);
		break;
	case BAD_CRC:
		add_raw(&t, c->text, n, 1);
		break;
	case BAD_RAW:
		add_bytes(&t, c->text, n);
		add_bytes(&t, "\n", 1);
		break;
	}
	add(&t, "T 2 1000 more");
	add(&t, "B 2 2");
	parse(&l, &t);

	if (l.bad != 1 || l.lines != 6)
		printf("\n  case %s: bad %u, lines %u\n", c->what, l.bad, l.lines);
	CU_ASSERT(l.bad == 1);
	CU_ASSERT(l.lines == 6);
	CU_ASSERT(!l.torn);
	CU_ASSERT(l.have_header && l.broker_id == 0xaa && l.next_session_id == 3);
	CU_ASSERT(l.nt == 2 && l.t[0].line == 2 && l.t[1].id == 2 && l.t[1].line == 6);
	s = find(&l, 2);
	CU_ASSERT(l.n == 1 && s && s->ntopics == 2 && has_topic(s, 1) && has_topic(s, 2) &&
		  !strcmp(s->name, "alpha") && s->pid == 0);
	state_load_free(&l);
}

static void test_corrupt_lines(void)
{
	char x[65], longname[PROTO_NAME_MAX + 2], rec[512], lim[64], limb[64];
	char s0[256], sneg[256], slim[256], slong[512], shash[256], spol[256];
	uint8_t h[SESSION_TOKEN_HASH_LEN];

	hash_of(9, h, x);
	memset(longname, 'n', PROTO_NAME_MAX + 1);
	longname[PROTO_NAME_MAX + 1] = 0;
	snprintf(lim, sizeof(lim), "G %llu", (unsigned long long)SESSION_ID_LIMIT);
	snprintf(limb, sizeof(limb), "B %llu 1", (unsigned long long)SESSION_ID_LIMIT);
	/* the S lines: each, if it were read, would add a session or change
	 * session 2's pid, which check_bad() would see */
	snprintf(s0, sizeof(s0), "S 0 1000 0 0 65536 16384 5 %s zero", x);
	snprintf(sneg, sizeof(sneg), "S -1 1000 0 0 65536 16384 5 %s neg", x);
	snprintf(slim, sizeof(slim), "S %llu 1000 0 0 65536 16384 5 %s lim",
		 (unsigned long long)SESSION_ID_LIMIT, x);
	snprintf(slong, sizeof(slong), "S 2 1000 0 0 65536 16384 5 %s %s", x, longname);
	snprintf(shash, sizeof(shash), "S 2 1000 0 0 65536 16384 5 %.62s alpha", x);
	snprintf(spol, sizeof(spol), "S 2 1000 2 0 65536 16384 5 %s alpha", x);
	snprintf(rec, sizeof(rec), "S 2 1000 0 0 65536 16384 5 %s alpha", x);

	const struct bad_case cases[] = {
		{ "checksum", BAD_CRC, rec, 0 },
		{ "checksum of a short record", BAD_CRC, "G 2", 0 },
		/* read as a C string it would say "G 2": the NUL alone makes it bad */
		{ "NUL inside", BAD_REC, "G 2\0", 4 },
		{ "NUL in the prefix", BAD_RAW, "0000\0" "000 G 2", 12 },
		{ "too short", BAD_RAW, "01234567 ", 0 },
		{ "empty", BAD_RAW, "", 0 },
		{ "no prefix", BAD_RAW, "G 2 and something longer", 0 },
		{ "unknown type", BAD_REC, "X 2 1", 0 },
		{ "empty record", BAD_REC, "", 0 },
		{ "session id 0", BAD_REC, s0, 0 },
		{ "session id -1", BAD_REC, sneg, 0 },
		{ "session id at the limit", BAD_REC, slim, 0 },
		{ "G id 0", BAD_REC, "G 0", 0 },
		{ "G id -1", BAD_REC, "G -1", 0 },
		{ "G id at the limit", BAD_REC, lim, 0 },
		{ "R id 0", BAD_REC, "R 0", 0 },
		{ "B session id at the limit", BAD_REC, limb, 0 },
		{ "B session id 0", BAD_REC, "B 0 1", 0 },
		{ "B topic 0", BAD_REC, "B 2 0", 0 },
		{ "B topic past the max", BAD_REC, "B 2 1048577", 0 },
		{ "U topic 0", BAD_REC, "U 2 0", 0 },
		{ "U topic past the max", BAD_REC, "U 2 1048577", 0 },
		{ "U topic -1", BAD_REC, "U 2 -1", 0 },
		{ "H version 2", BAD_REC, "H 2 00000000000000bb 50", 0 },
		{ "H version 0", BAD_REC, "H 0 00000000000000bb 50", 0 },
		{ "H next id past the limit", BAD_REC, "H 1 00000000000000bb 4611686018427387905", 0 },
		{ "name too long", BAD_REC, slong, 0 },
		{ "token hash short", BAD_REC, shash, 0 },
		{ "policy unknown", BAD_REC, spol, 0 },
		{ "S fields missing", BAD_REC, "S 2 1000 0 0 65536", 0 },
		{ "trailing bytes", BAD_REC, "G 2 x", 0 },
		{ "T name escape cut", BAD_REC, "T 5 1000 ab%2", 0 },
		{ "T name escape not hex", BAD_REC, "T 5 1000 ab%zz", 0 },
		{ "T no name", BAD_REC, "T 5 1000", 0 },
	};

	CU_ASSERT(TOPIC_ID_MAX == 1048576u); /* the "past the max" cases above */
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_bad(&cases[i]);

	/* the same record with its checksum right is read: the cases above
	 * fail for what they say, not for how the test builds lines */
	{
		struct text t = { .len = 0 };
		struct state_load l;

		add(&t, "S 2 1000 0 0 65536 16384 5 %s alpha", x);
		add(&t, "B 2 1048576");
		parse(&l, &t);
		CU_ASSERT(l.bad == 0 && l.n == 1 && l.s[0].pid == 5 && l.s[0].ntopics == 1);
		state_load_free(&l);
	}
}

/* Many bad lines: every one is counted (the log says only the first ten). */
static void test_many_bad_lines(void)
{
	struct text t = { .len = 0 };
	struct state_load l;

	for (int i = 0; i < 25; i++) {
		add(&t, "G %d", i + 1);
		add_raw(&t, "G 1", 3, 0xff);
	}
	parse(&l, &t);
	CU_ASSERT(l.bad == 25 && l.lines == 25);
	state_load_free(&l);
}

/* A last line without its newline is a write cut short: torn, not bad,
 * and not read even if what is there would pass. */
static void test_torn_last_line(void)
{
	struct text t = { .len = 0 }, u;
	struct state_load l;
	char x[65];
	uint8_t h[SESSION_TOKEN_HASH_LEN];

	hash_of(3, h, x);
	add(&t, "H 1 0000000000000001 2");
	add(&t, "S 2 0 0 0 65536 16384 0 %s a", x);
	u = t;
	add(&u, "S 3 0 0 0 65536 16384 0 %s b", x);
	u.len--; /* the whole line but its newline */
	parse(&l, &u);
	CU_ASSERT(l.torn && l.bad == 0 && l.lines == 2);
	CU_ASSERT(l.n == 1 && find(&l, 3) == NULL && l.next_session_id == 3);
	state_load_free(&l);

	/* cut anywhere in the line: the same */
	u = t;
	add_bytes(&u, "1234", 4);
	parse(&l, &u);
	CU_ASSERT(l.torn && l.bad == 0 && l.lines == 2 && l.n == 1);
	state_load_free(&l);

	/* a bad line before a torn one is still bad */
	u = t;
	add_raw(&u, "G 2", 3, 1);
	add_bytes(&u, "abcd", 4);
	parse(&l, &u);
	CU_ASSERT(l.torn && l.bad == 1 && l.lines == 2 && l.n == 1);
	state_load_free(&l);

	/* a file ending in its newline is not torn */
	parse(&l, &t);
	CU_ASSERT(!l.torn && l.bad == 0 && l.lines == 2);
	state_load_free(&l);
}

/* ---- the reader -------------------------------------------------------------- */

static char tmpdir[256];

static int mk_tmp(void)
{
	int fd;

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/shmb-test-state.XXXXXX");
	CU_ASSERT_FATAL(mkdtemp(tmpdir) != NULL);
	fd = open(tmpdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	CU_ASSERT_FATAL(fd >= 0);
	return fd;
}

static void rm_tmp(int dirfd)
{
	char cmd[300];

	close(dirfd);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	CU_ASSERT(system(cmd) == 0);
}

static void put_file(int dirfd, const char *name, const char *p, size_t n)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_FATAL(write(fd, p, n) == (ssize_t)n);
	close(fd);
}

static void same_load(const struct state_load *a, const struct state_load *b)
{
	CU_ASSERT(a->have_header == b->have_header && a->torn == b->torn);
	CU_ASSERT(a->lines == b->lines && a->bad == b->bad);
	CU_ASSERT(a->broker_id == b->broker_id && a->next_session_id == b->next_session_id);
	CU_ASSERT_FATAL(a->nt == b->nt && a->n == b->n);
	for (unsigned i = 0; i < a->nt; i++)
		CU_ASSERT(a->t[i].id == b->t[i].id && a->t[i].owner == b->t[i].owner &&
			  a->t[i].line == b->t[i].line && !strcmp(a->t[i].name, b->t[i].name));
	for (unsigned i = 0; i < a->n; i++) {
		const struct state_session *x = &a->s[i], *y = &b->s[i];

		CU_ASSERT(x->id == y->id && x->uid == y->uid && x->policy == y->policy &&
			  x->ephemeral == y->ephemeral && x->rx_size == y->rx_size &&
			  x->tx_size == y->tx_size && x->pid == y->pid && !strcmp(x->name, y->name) &&
			  !memcmp(x->token_hash, y->token_hash, sizeof(x->token_hash)));
		CU_ASSERT_FATAL(x->ntopics == y->ntopics);
		for (unsigned k = 0; k < x->ntopics; k++)
			CU_ASSERT(x->topics[k] == y->topics[k]);
	}
}

static void test_read(void)
{
	int dirfd = mk_tmp();
	struct text t = { .len = 0 };
	struct state_load l, p;
	char x[65];
	uint8_t h[SESSION_TOKEN_HASH_LEN];

	/* no file: a first start; whatever l held before is cleared */
	memset(&l, 0xa5, sizeof(l));
	CU_ASSERT(state_read(dirfd, &l) == 0);
	CU_ASSERT(!l.exists && l.lines == 0 && l.bad == 0 && l.n == 0 && l.nt == 0 && !l.torn);
	state_load_free(&l);

	/* a file: what parsing its text gives, with a bad line and a torn end */
	hash_of(5, h, x);
	add(&t, "H 1 0123456789abcdef 4");
	add(&t, "T 1 0 a");
	add(&t, "S 3 0 1 0 65536 16384 77 %s s", x);
	add_raw(&t, "B 3 1", 5, 2);
	add(&t, "B 3 1");
	add_bytes(&t, "0000", 4);
	put_file(dirfd, "state", t.p, t.len);
	CU_ASSERT(state_read(dirfd, &l) == 0);
	CU_ASSERT(l.exists && l.bad == 1 && l.torn && l.lines == 4);
	parse(&p, &t);
	same_load(&l, &p);
	state_load_free(&l);
	state_load_free(&p);

	/* an empty file exists and says nothing */
	put_file(dirfd, "state", "", 0);
	CU_ASSERT(state_read(dirfd, &l) == 0);
	CU_ASSERT(l.exists && l.lines == 0 && !l.have_header);
	state_load_free(&l);

	/* a directory where the file should be */
	CU_ASSERT_FATAL(unlinkat(dirfd, "state", 0) == 0);
	CU_ASSERT_FATAL(mkdirat(dirfd, "state", 0700) == 0);
	CU_ASSERT(state_read(dirfd, &l) < 0);
	state_load_free(&l);
	CU_ASSERT_FATAL(unlinkat(dirfd, "state", AT_REMOVEDIR) == 0);

	/* not a regular file (a character device, through a symlink) */
	CU_ASSERT_FATAL(symlinkat("/dev/null", dirfd, "state") == 0);
	CU_ASSERT(state_read(dirfd, &l) < 0);
	state_load_free(&l);
	rm_tmp(dirfd);
}

/* ---- the writer, read back --------------------------------------------------- */

static struct topic *mk_topic(uint32_t id, uid_t owner, const char *name)
{
	struct topic *t = calloc(1, sizeof(*t));

	CU_ASSERT_FATAL(t != NULL);
	t->id = id;
	t->owner = owner;
	snprintf(t->name, sizeof(t->name), "%s", name);
	return t;
}

static struct session *mk_session(uint64_t id, uid_t uid, const char *name, uint32_t policy)
{
	struct session *s = calloc(1, sizeof(*s));

	CU_ASSERT_FATAL(s != NULL);
	s->id = id;
	s->uid = uid;
	s->policy = policy;
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->rx_ring_size = 65536;
	s->tx_ring_size = 16384;
	s->adopted_pidfd = -1;
	s->owner_pidfd = -1;
	s->dirfd = -1;
	for (unsigned i = 0; i < SESSION_TOKEN_HASH_LEN; i++)
		s->token_hash[i] = (uint8_t)(id * 31 + i);
	return s;
}

static void set_topics(struct session *s, unsigned n, const uint32_t *ids)
{
	s->topics = calloc(n ? n : 1, sizeof(*s->topics));
	CU_ASSERT_FATAL(s->topics != NULL);
	memcpy(s->topics, ids, n * sizeof(*ids));
	s->ntopics = n;
}

static off_t file_size(int dirfd, const char *name)
{
	struct stat st;

	return fstatat(dirfd, name, &st, 0) == 0 ? st.st_size : -1;
}

static void test_compact_round_trip(void)
{
	int dirfd = mk_tmp();
	struct broker *b = calloc(1, sizeof(*b));
	struct topic *topics[4];
	struct session *ss[5];
	struct conn owner = { .pid = 555 };
	struct state_load l;
	const struct state_session *r;
	static uint8_t rx_bytes[8];
	const uint32_t t_alpha[] = { 1, 2 }, t_beta[] = { 4 };

	CU_ASSERT_FATAL(b != NULL);
	b->dirfd = dirfd;
	b->state_fd = -1;
	b->broker_id = 0x1122334455667788ull;
	b->next_session_id = 20;

	topics[0] = mk_topic(1, 1000, "plain");
	topics[1] = mk_topic(2, 0, "with space%and\x7f\xc3\xa9"); /* escaped on the way */
	topics[2] = mk_topic(3, 1000, "");                        /* a lost line's placeholder */
	topics[3] = mk_topic(4, 1001, "t4");
	b->topics = topics;
	b->ntopics = 4;

	ss[0] = mk_session(3, 1000, "alpha", SHM_POLICY_BLOCK);
	set_topics(ss[0], 2, t_alpha);
	ss[0]->owner = &owner; /* attached: its owner's pid is written */
	ss[0]->owner_pid = 555;
	ss[1] = mk_session(7, 1001, "beta", SHM_POLICY_DROP_OLDEST);
	ss[1]->ephemeral = true;
	ss[1]->rx_ring_size = 1u << 20;
	set_topics(ss[1], 1, t_beta);
	ss[1]->adopted_pidfd = 99; /* re-adopted, its last owner alive: its pid too */
	ss[1]->owner_pid = 4242;
	ss[2] = mk_session(9, 1000, "going", SHM_POLICY_BLOCK);
	ss[2]->destroying = true; /* left out */
	ss[3] = mk_session(11, 1000, "husk", SHM_POLICY_BLOCK);
	ss[3]->quarantined = true; /* its files gone: left out */
	ss[4] = mk_session(12, 1000, "kept", SHM_POLICY_BLOCK);
	ss[4]->quarantined = true; /* its files still there: kept */
	ss[4]->rx.base = rx_bytes;
	ss[4]->owner_pid = 31337; /* detached: no pid written */
	b->sessions = ss;
	b->nsessions = 5;

	CU_ASSERT_FATAL(state_compact(b) == 0);
	CU_ASSERT(b->state_fd >= 0);
	CU_ASSERT(b->state_len == file_size(dirfd, "state"));
	CU_ASSERT(file_size(dirfd, "state.tmp") < 0);
	/* header, 4 topics, 3 sessions kept and their 3 subscriptions */
	CU_ASSERT(b->state_lines == 1 + 4 + 3 + 3);

	CU_ASSERT_FATAL(state_read(dirfd, &l) == 0);
	CU_ASSERT(l.exists && l.bad == 0 && !l.torn && l.have_header);
	CU_ASSERT(l.lines == 1 + 3 + 3 + 3); /* the placeholder is not written */
	CU_ASSERT(l.broker_id == b->broker_id && l.next_session_id == 20);
	CU_ASSERT_FATAL(l.nt == 3);
	CU_ASSERT(l.t[0].id == 1 && l.t[0].owner == 1000 && !strcmp(l.t[0].name, "plain"));
	CU_ASSERT(l.t[1].id == 2 && l.t[1].owner == 0 && !strcmp(l.t[1].name, topics[1]->name));
	CU_ASSERT(l.t[2].id == 4 && l.t[2].owner == 1001 && !strcmp(l.t[2].name, "t4"));
	CU_ASSERT(l.n == 3 && !find(&l, 9) && !find(&l, 11));
	r = find(&l, 3);
	CU_ASSERT_FATAL(r != NULL);
	CU_ASSERT(r->uid == 1000 && r->policy == SHM_POLICY_BLOCK && !r->ephemeral && r->pid == 555);
	CU_ASSERT(r->rx_size == 65536 && r->tx_size == 16384 && !strcmp(r->name, "alpha"));
	CU_ASSERT(!memcmp(r->token_hash, ss[0]->token_hash, SESSION_TOKEN_HASH_LEN));
	CU_ASSERT(r->ntopics == 2 && r->topics[0] == 1 && r->topics[1] == 2);
	r = find(&l, 7);
	CU_ASSERT_FATAL(r != NULL);
	CU_ASSERT(r->uid == 1001 && r->policy == SHM_POLICY_DROP_OLDEST && r->ephemeral && r->pid == 4242);
	CU_ASSERT(r->rx_size == 1u << 20 && !strcmp(r->name, "beta"));
	CU_ASSERT(!memcmp(r->token_hash, ss[1]->token_hash, SESSION_TOKEN_HASH_LEN));
	CU_ASSERT(r->ntopics == 1 && r->topics[0] == 4);
	r = find(&l, 12);
	CU_ASSERT(r && r->pid == 0 && r->ntopics == 0 && !strcmp(r->name, "kept"));
	state_load_free(&l);

	/* appends go on in the file the rewrite left open */
	{
		struct session *n = mk_session(20, 1000, "gamma", SHM_POLICY_BLOCK);
		struct topic *t5 = mk_topic(5, 1000, "fresh");
		off_t before = b->state_len;
		uint64_t lines = b->state_lines;

		CU_ASSERT(state_session(b, n) == 0);
		CU_ASSERT(state_topic(b, t5) == 0);
		CU_ASSERT(state_sub(b, 20, 5, 'B') == 0);
		CU_ASSERT(state_sub(b, 3, 1, 'U') == 0);
		CU_ASSERT(state_sub(b, 7, 0, 'R') == 0);
		CU_ASSERT(state_gone(b, 12) == 0);
		CU_ASSERT(b->state_lines == lines + 6);
		CU_ASSERT(b->state_len > before && b->state_len == file_size(dirfd, "state"));

		CU_ASSERT_FATAL(state_read(dirfd, &l) == 0);
		CU_ASSERT(l.bad == 0 && !l.torn && l.lines == 10 + 6);
		CU_ASSERT(l.next_session_id == 21);
		CU_ASSERT(l.nt == 4 && l.t[3].id == 5 && !strcmp(l.t[3].name, "fresh"));
		CU_ASSERT(l.n == 3 && !find(&l, 12));
		r = find(&l, 20);
		CU_ASSERT(r && r->ntopics == 1 && r->topics[0] == 5 && !strcmp(r->name, "gamma"));
		r = find(&l, 3);
		CU_ASSERT(r && r->ntopics == 1 && r->topics[0] == 2);
		r = find(&l, 7);
		CU_ASSERT(r && r->ntopics == 0);
		state_load_free(&l);
		free(n);
		free(t5);
	}

	/* the longest topic name, every byte of it escaped, still fits a line */
	{
		struct topic *big = mk_topic(6, 0, "");
		off_t before = b->state_len;

		memset(big->name, '%', PROTO_TOPIC_MAX);
		big->name[PROTO_TOPIC_MAX] = 0;
		CU_ASSERT(state_topic(b, big) == 0); /* 600 bytes escaped: fits a line */
		CU_ASSERT(state_read(dirfd, &l) == 0);
		CU_ASSERT(l.bad == 0 && l.nt == 5 && !strcmp(l.t[4].name, big->name));
		state_load_free(&l);
		CU_ASSERT(b->state_len > before);
		free(big);
	}

	close(b->state_fd);
	for (unsigned i = 0; i < 5; i++) {
		free(ss[i]->topics);
		free(ss[i]);
	}
	for (unsigned i = 0; i < 4; i++)
		free(topics[i]);
	free(b);
	rm_tmp(dirfd);
}

static const struct harness_test tests[] = {
	{ "valid_file", test_valid_file },
	{ "next_session_id", test_next_session_id },
	{ "corrupt_lines", test_corrupt_lines },
	{ "many_bad_lines", test_many_bad_lines },
	{ "torn_last_line", test_torn_last_line },
	{ "read", test_read },
	{ "compact_round_trip", test_compact_round_trip },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "state", tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	return harness_main("test-state", suites, argc, argv);
}
