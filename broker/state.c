/*
 * broker/state.c - the state file: what a restarted broker needs beyond
 * the segments (docs/design/recovery.md, what lives where): the broker id,
 * the next session id, the topics, and for each session its owner uid, name,
 * policy, ring sizes, the hash of its attach token, its owner's pid and its
 * subscriptions.  Routing positions are not here: they live in the segments.
 *
 * The file, SHMB_DIR/state, is a log of lines, each "CRC32C record\n".
 * A change appends one line before the broker answers the request that
 * made it, and before its memory changes (a new session, whose files
 * come first, is destroyed again): a line that cannot be written, cut off
 * again if part of it was, fails the request and changes nothing.  When
 * the next line would take the log past several times what is live, it
 * is rewritten whole first (temp file, fsync, rename).  The crash model
 * is a process crash (docs/design/recovery.md, crash model): a line
 * written is in the page cache before the reply.  A line torn by a kill,
 * or corrupted, fails its checksum and is skipped, saying so; what it would
 * have said is either not yet promised to anyone (the last line) or found
 * again (a session whose record is lost is quarantined, its files kept
 * for inspection).
 *
 * Records:
 *   H <version> <broker id, hex> <next session id>
 *   T <topic id> <owner uid> <name, %-escaped>
 *   S <id> <uid> <policy> <ephemeral> <rx size> <tx size> <owner pid>
 *     <token hash, hex> <name>                    (a later one replaces)
 *   G <id>                                        (destroyed)
 *   B <id> <topic id> / U <id> <topic id>         (subscribed / not)
 *   R <id>                                        (subscriptions reset)
 *
 * Must never: answer a request whose change is not written yet; trust a
 * line whose checksum fails; let a bad line stop the broker.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "broker/array.h"
#include "broker/broker.h"
#include "broker/log.h"
#include "broker/session.h"
#include "broker/state.h"
#include "broker/topic.h"
#include "shm/crc32c.h"

#define STATE_VERSION 1
#define STATE_LINE_MAX 1024

/* ---- writing ---------------------------------------------------------------- */

static int esc(char *out, size_t cap, const char *in)
{
	size_t o = 0;

	for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
		/* room for "%xx" and the NUL after it: a name of 200 '%' fits
		 * the 601 bytes its callers give */
		if (o + 4 > cap)
			return -ENAMETOOLONG;
		if (*p <= ' ' || *p > '~' || *p == '%')
			o += (size_t)snprintf(out + o, cap - o, "%%%02x", *p);
		else
			out[o++] = (char)*p;
	}
	out[o] = 0;
	return 0;
}

static int unesc(char *out, size_t cap, const char *in)
{
	size_t o = 0;

	for (const char *p = in; *p; p++) {
		unsigned v;

		if (o + 1 >= cap)
			return -ENAMETOOLONG;
		if (*p == '%') {
			if (sscanf(p + 1, "%2x", &v) != 1 || !p[1] || !p[2])
				return -EINVAL;
			out[o++] = (char)v;
			p += 2;
		} else {
			out[o++] = *p;
		}
	}
	out[o] = 0;
	return o ? 0 : -EINVAL;
}

/* Format one record as "crc record\n" into buf; its length, or -ENAMETOOLONG. */
static int line_fmt(char *buf, size_t cap, const char *fmt, va_list ap)
{
	char rec[STATE_LINE_MAX];
	int n = vsnprintf(rec, sizeof(rec), fmt, ap);

	if (n < 0 || (size_t)n >= sizeof(rec))
		return -ENAMETOOLONG;
	n = snprintf(buf, cap, "%08x %s\n", crc32c(0, rec, (size_t)n), rec);
	if (n < 0 || (size_t)n >= cap)
		return -ENAMETOOLONG;
	return n;
}

struct sbuf {
	char *p;
	size_t len, cap;
	int err;
};

static void sb_add(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(struct sbuf *b, const char *fmt, ...)
{
	char line[STATE_LINE_MAX + 16];
	va_list ap;
	int n;

	if (b->err)
		return;
	va_start(ap, fmt);
	n = line_fmt(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->err = n;
		return;
	}
	if (b->len + (size_t)n > b->cap) {
		size_t cap = b->cap ? 2 * b->cap : 65536;
		char *q;

		while (cap < b->len + (size_t)n)
			cap *= 2;
		if (!(q = realloc(b->p, cap))) {
			b->err = -ENOMEM;
			return;
		}
		b->p = q;
		b->cap = cap;
	}
	memcpy(b->p + b->len, line, (size_t)n);
	b->len += (size_t)n;
}

static void hex(char *out, const uint8_t *in, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", in[i]);
}

static int session_body(char *out, size_t cap, const struct session *s)
{
	char th[2 * SESSION_TOKEN_HASH_LEN + 1];
	int n;

	hex(th, s->token_hash, sizeof(s->token_hash));
	n = snprintf(out, cap, "S %" PRIu64 " %u %u %u %" PRIu64 " %" PRIu64 " %d %s %s", s->id,
		     (unsigned)s->uid, s->policy, (unsigned)s->ephemeral, s->rx_ring_size,
		     s->tx_ring_size, session_owner_pid(s), th, s->name);
	return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

static void session_rec(struct sbuf *sb, const struct session *s)
{
	char body[STATE_LINE_MAX];

	if (session_body(body, sizeof(body), s) < 0)
		sb->err = -ENAMETOOLONG;
	else
		sb_add(sb, "%s", body);
}

/* Write at an offset, all of it, or fail. */
static int pwrite_all(int fd, const char *p, size_t len, off_t off)
{
	while (len) {
		ssize_t n = pwrite(fd, p, len, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

static int write_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Does a rewrite of the file keep this session?  Not one quarantined
 * whose files are gone: there is nothing left to re-adopt.  Nor one being
 * destroyed, whatever line sets the rewrite off (its own G line among
 * them): the new file must not record a session whose files are going. */
static bool state_keeps(const struct session *s)
{
	return !s->destroying && !(s->quarantined && !s->rx.base);
}

/* The lines a rewrite would write: the header, each topic, and each
 * session kept with one line per subscription. */
static uint64_t state_live(const struct broker *b)
{
	uint64_t n = 1 + (uint64_t)b->ntopics;

	for (unsigned i = 0; i < b->nsessions; i++)
		if (state_keeps(b->sessions[i]))
			n += 1 + (uint64_t)b->sessions[i]->ntopics;
	return n;
}

/* Rewrite the whole state from memory: temp file, fsync, rename. */
int state_compact(struct broker *b)
{
	struct sbuf sb = { 0 };
	int fd, r;

	sb_add(&sb, "H %d %016" PRIx64 " %" PRIu64, STATE_VERSION, b->broker_id, b->next_session_id);
	for (unsigned i = 0; i < b->ntopics; i++) {
		char name[3 * PROTO_TOPIC_MAX + 1];

		/* a placeholder for a lost line has no name to write: the ids
		 * after it keep it in place when the file is read again */
		if (b->topics[i]->name[0] && esc(name, sizeof(name), b->topics[i]->name) == 0)
			sb_add(&sb, "T %u %u %s", b->topics[i]->id, (unsigned)b->topics[i]->owner, name);
	}
	for (unsigned i = 0; i < b->nsessions; i++) {
		const struct session *s = b->sessions[i];

		if (!state_keeps(s))
			continue;
		session_rec(&sb, s);
		for (unsigned k = 0; k < s->ntopics; k++)
			sb_add(&sb, "B %" PRIu64 " %u", s->id, s->topics[k]);
	}
	if (sb.err) {
		free(sb.p);
		return sb.err;
	}
	fd = openat(b->dirfd, "state.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		free(sb.p);
		return -errno;
	}
	r = write_all(fd, sb.p, sb.len);
	free(sb.p);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && renameat(b->dirfd, "state.tmp", b->dirfd, "state") < 0)
		r = -errno;
	if (r < 0) {
		close(fd);
		unlinkat(b->dirfd, "state.tmp", 0);
		return r;
	}
	if (b->state_fd >= 0)
		close(b->state_fd);
	/* appends go on in the new file: the descriptor is the renamed file */
	b->state_fd = fd;
	b->state_len = (off_t)sb.len;
	b->state_lines = state_live(b);
	return 0;
}

/*
 * Append one record.  0, or a negative errno: the change must then fail,
 * and nothing of the line is left in the file.
 */
static int state_append(struct broker *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int state_append(struct broker *b, const char *fmt, ...)
{
	char line[STATE_LINE_MAX + 16];
	va_list ap;
	int n, r;

	if (b->state_fd < 0)
		return 0; /* not yet loaded: start-up writes it whole */
	va_start(ap, fmt);
	n = line_fmt(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return n;
	/*
	 * Rewrite once this line would take the log past four times what is
	 * live.  Before the line, not after it: the change it records is made
	 * in memory only once it is written, so a rewrite from memory after
	 * the line would leave the change out and take the line away.  Now
	 * the file says what memory says, and the line goes into the new one.
	 * Counting what is live walks every session, so it is done only past
	 * a bound that needs no walk: live is at least the header, the topics
	 * and one line per session.  Below it an append costs nothing more.
	 */
	if (b->state_lines + 1 > 4 * (1 + (uint64_t)b->ntopics + b->nsessions) + 1024 &&
	    b->state_lines + 1 > 4 * state_live(b) + 1024) {
		r = state_compact(b);
		if (r < 0)
			log_msg(LOG_WARNING, "cannot rewrite the state file: %s (appends go on)",
				strerror(-r));
	}
	/* one write: a kill tears at most this line, which its CRC exposes;
	 * at the length we know, so a line cut short below is overwritten by
	 * the next one even if it could not be cut off */
	r = pwrite_all(b->state_fd, line, (size_t)n, b->state_len);
	if (r < 0) {
		log_msg(LOG_ERR, "cannot write the state file: %s", strerror(-r));
		/* part of the line may be there (a full disk, a size limit):
		 * the next line would join it and both would fail their CRC */
		if (ftruncate(b->state_fd, b->state_len) < 0)
			log_msg(LOG_ERR, "cannot cut a failed line off the state file: %s (the next"
				" line overwrites it)", strerror(errno));
		return r;
	}
	b->state_len += n;
	b->state_lines++;
	return 0;
}

int state_session(struct broker *b, const struct session *s)
{
	char body[STATE_LINE_MAX];
	int r = session_body(body, sizeof(body), s);

	if (r < 0)
		return r;
	return state_append(b, "%s", body);
}

int state_gone(struct broker *b, uint64_t id)
{
	return state_append(b, "G %" PRIu64, id);
}

int state_sub(struct broker *b, uint64_t id, uint32_t topic, int how)
{
	if (how == 'R')
		return state_append(b, "R %" PRIu64, id);
	return state_append(b, "%c %" PRIu64 " %u", how, id, topic);
}

int state_topic(struct broker *b, const struct topic *t)
{
	char name[3 * PROTO_TOPIC_MAX + 1];
	int r = esc(name, sizeof(name), t->name);

	if (r < 0)
		return r;
	return state_append(b, "T %u %u %s", t->id, (unsigned)t->owner, name);
}

/* ---- reading ------------------------------------------------------------------ */

static struct state_session *ss_find(struct state_load *l, uint64_t id)
{
	for (unsigned i = 0; i < l->n; i++)
		if (l->s[i].id == id)
			return &l->s[i];
	return NULL;
}

static int unhex(uint8_t *out, size_t n, const char *in)
{
	if (strlen(in) != 2 * n)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		unsigned v;

		if (sscanf(in + 2 * i, "%2x", &v) != 1)
			return -EINVAL;
		out[i] = (uint8_t)v;
	}
	return 0;
}

/* One more topic line, in the order the file has them. */
static int topic_push(struct state_load *l, const struct state_topic *t)
{
	if (ARRAY_ROOM(l->t, l->nt, l->capt, 64) < 0)
		return -ENOMEM;
	l->t[l->nt++] = *t;
	return 0;
}

/*
 * A session id a line may name.  sscanf takes "-1" and numbers past 2^64
 * as huge values, and one taken as the highest id so far would make the
 * next id wrap onto ids in use: a line naming one says nonsense.
 */
static bool session_id_ok(unsigned long long id)
{
	return id != 0 && id < SESSION_ID_LIMIT;
}

/* H <version> <broker id> <next session id> */
static int parse_header(struct state_load *l, const char *rec)
{
	unsigned long long id, next;
	unsigned version;
	int k;

	/* the next id is one past the highest: at most the limit */
	if (sscanf(rec, "H %u %llx %llu%n", &version, &id, &next, &k) != 3 || rec[k] ||
	    version != STATE_VERSION || next > SESSION_ID_LIMIT)
		return -EINVAL;
	l->broker_id = id;
	l->have_header = true;
	if (next > l->next_session_id)
		l->next_session_id = next;
	return 0;
}

/* T <topic id> <owner uid> <name> */
static int parse_topic(struct state_load *l, const char *rec, unsigned lineno)
{
	struct state_topic t = { .line = lineno };
	char name[STATE_LINE_MAX];
	unsigned id, owner;
	int k;

	if (sscanf(rec, "T %u %u %1023s%n", &id, &owner, name, &k) != 3 || rec[k] ||
	    unesc(t.name, sizeof(t.name), name) < 0)
		return -EINVAL;
	t.id = id;
	t.owner = (uid_t)owner;
	return topic_push(l, &t);
}

/* S <id> <uid> <policy> <ephemeral> <rx size> <tx size> <pid> <token hash> <name> */
static int parse_session(struct state_load *l, const char *rec)
{
	char name[STATE_LINE_MAX], th[2 * SESSION_TOKEN_HASH_LEN + 2];
	struct state_session n = { 0 }, *s;
	unsigned long long id, rx, tx;
	unsigned uid, policy, eph;
	int pid, k;

	if (sscanf(rec, "S %llu %u %u %u %llu %llu %d %65s %1023s%n", &id, &uid, &policy, &eph, &rx, &tx,
		   &pid, th, name, &k) != 9 || rec[k] || !session_id_ok(id) ||
	    policy > SHM_POLICY_DROP_OLDEST || strlen(name) > PROTO_NAME_MAX ||
	    unhex(n.token_hash, sizeof(n.token_hash), th) < 0)
		return -EINVAL;
	n.id = id;
	n.uid = (uid_t)uid;
	n.policy = policy;
	n.ephemeral = eph != 0;
	n.rx_size = rx;
	n.tx_size = tx;
	n.pid = pid;
	memcpy(n.name, name, strlen(name) + 1); /* length checked above */
	if (id >= l->next_session_id)
		l->next_session_id = id + 1;
	s = ss_find(l, id);
	if (s) {
		/* a newer owner or token: subscriptions stay */
		n.topics = s->topics;
		n.ntopics = s->ntopics;
		*s = n;
		return 0;
	}
	if (ARRAY_ROOM(l->s, l->n, l->cap, 64) < 0)
		return -ENOMEM;
	l->s[l->n++] = n;
	return 0;
}

/* G <id> (destroyed) or R <id> (its subscriptions reset) */
static int parse_gone_reset(struct state_load *l, const char *rec)
{
	unsigned long long id;
	struct state_session *s;
	int k;

	if (sscanf(rec + 1, " %llu%n", &id, &k) != 1 || rec[1 + k] || !session_id_ok(id))
		return -EINVAL;
	s = ss_find(l, id);
	if (!s)
		return 0;
	if (rec[0] == 'R') {
		s->ntopics = 0;
	} else {
		free(s->topics);
		*s = l->s[--l->n];
	}
	return 0;
}

/* B <id> <topic id> (subscribed) or U <id> <topic id> (not) */
static int parse_sub(struct state_load *l, const char *rec)
{
	unsigned long long id;
	struct state_session *s;
	unsigned topic;
	uint32_t *q;
	int k;

	if (sscanf(rec + 1, " %llu %u%n", &id, &topic, &k) != 2 || rec[1 + k] || !session_id_ok(id) ||
	    topic == 0 || topic > TOPIC_ID_MAX)
		return -EINVAL;
	s = ss_find(l, id);
	if (!s)
		return 0; /* a session destroyed since */
	for (unsigned i = 0; i < s->ntopics; i++)
		if (s->topics[i] == topic) {
			if (rec[0] == 'U')
				s->topics[i] = s->topics[--s->ntopics];
			return 0;
		}
	if (rec[0] == 'U')
		return 0;
	q = realloc(s->topics, (s->ntopics + 1) * sizeof(*q));
	if (!q)
		return -ENOMEM;
	s->topics = q;
	s->topics[s->ntopics++] = topic;
	return 0;
}

static int parse_rec(struct state_load *l, char *rec, unsigned lineno)
{
	switch (rec[0]) {
	case 'H':
		return parse_header(l, rec);
	case 'T':
		return parse_topic(l, rec, lineno);
	case 'S':
		return parse_session(l, rec);
	case 'G':
	case 'R':
		return parse_gone_reset(l, rec);
	case 'B':
	case 'U':
		return parse_sub(l, rec);
	}
	return -EINVAL;
}

/*
 * Parse the state file's text (buf, len bytes; its newlines are
 * overwritten) into l: the broker's id and next session id, the topics in
 * file order, the sessions.  Bad lines are skipped and counted in l->bad;
 * l->torn says the last line was cut short: only bytes after the last
 * newline, at the very end, are that.  Touches nothing but l.
 */
void state_parse(struct state_load *l, char *buf, size_t len)
{
	char *p, *end = buf + len;
	unsigned lineno = 0;

	/* by length, not by C string: a NUL byte must not end the file early */
	for (p = buf; p < end;) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n;
		unsigned crc;
		int k = 0;

		lineno++;
		if (!nl) {
			/* the last line, cut short by a kill mid-write: never promised */
			l->torn = true;
			log_msg(LOG_WARNING, "state: line %u is incomplete (a write cut short); ignored",
				lineno);
			break;
		}
		*nl = 0;
		n = (size_t)(nl - p);
		/* a NUL inside a line is damage, like a checksum that fails */
		if (n < 10 || memchr(p, 0, n) || sscanf(p, "%8x %n", &crc, &k) != 1 || k != 9 ||
		    crc != crc32c(0, p + 9, n - 9) || parse_rec(l, p + 9, lineno) < 0)
			state_bad_line(l, lineno);
		else
			l->lines++;
		p = nl + 1;
	}
}

void state_bad_line(struct state_load *l, unsigned lineno)
{
	l->bad++;
	if (l->bad <= 10)
		log_msg(LOG_ERR, "state: line %u is corrupt (checksum or format); skipped", lineno);
}

/* The whole of a file, NUL-terminated, into *out (its length in *len). */
static int read_whole(int fd, char **out, size_t *len)
{
	struct stat st;
	size_t got = 0;
	char *buf;

	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > (1 << 30))
		return -EINVAL;
	buf = malloc((size_t)st.st_size + 1);
	if (!buf)
		return -ENOMEM;
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	buf[got] = 0;
	*out = buf;
	*len = got;
	return 0;
}

/* Read and parse the state file in dirfd (SHMB_DIR).  A missing file is
 * a first start. */
int state_read(int dirfd, struct state_load *l)
{
	int fd = openat(dirfd, "state", O_RDONLY | O_CLOEXEC);
	size_t len;
	char *buf;
	int r;

	memset(l, 0, sizeof(*l));
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	l->exists = true;
	r = read_whole(fd, &buf, &len);
	close(fd);
	if (r < 0)
		return r;
	state_parse(l, buf, len);
	free(buf);
	return 0;
}

void state_load_free(struct state_load *l)
{
	for (unsigned i = 0; i < l->n; i++)
		free(l->s[i].topics);
	free(l->s);
	free(l->t);
	memset(l, 0, sizeof(*l));
}

/* Keep a copy of a damaged state file for inspection. */
void state_keep_copy(struct broker *b, const char *why)
{
	char name[64];
	int in, out;

	snprintf(name, sizeof(name), "quarantine/state.%lld", (long long)time(NULL));
	in = openat(b->dirfd, "state", O_RDONLY | O_CLOEXEC);
	out = openat(b->dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (in >= 0 && out >= 0) {
		char buf[65536];
		ssize_t n;

		while ((n = read(in, buf, sizeof(buf))) > 0)
			if (write_all(out, buf, (size_t)n) < 0)
				break;
		log_msg(LOG_ERR, "state file %s: a copy is kept as %s/%s", why, b->o.dir, name);
	}
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
}
