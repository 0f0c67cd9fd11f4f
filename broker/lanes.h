/*
 * broker/lanes.h - the broker's register of lanes (docs/design/data-path.md,
 * sections 1, 3 and 7): which lanes each publisher generation has, who
 * holds each, the readers' cursor pages, arm pages and wake pages, and
 * what each change must tell the writer (PROTO_HOLDER) and the readers
 * (PROTO_LANE).
 *
 * It knows sessions only by id, uid and generation: the caller (the
 * control layer) says who publishes and who subscribes, sends the pushes
 * this module queues, and owns every policy decision (who may read what).
 * Files come from lanefile.c; the hold table and the walks from
 * shm/hold.c.
 */
#ifndef BROKER_LANES_H
#define BROKER_LANES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "broker/lanefile.h"
#include "shm/hold.h"
#include "shm/proto.h"

#define LANES_MAX_PUSH_FDS 6
#define LANES_READER_LANES 256 /* lanes one reader generation holds at once */

struct lreader;

/* One holder of a lane, as the broker keeps it. */
struct lhold {
	struct lreader *r;
	int idx;               /* its hold-table entry */
	uint32_t kind;         /* SHM_HOLD_HOLD or SHM_HOLD_WATCH */
	uint64_t start;        /* where it started (the floor protocol's S) */
	/* the block timeout (lanes_stuck): where the broker last believed
	 * its slot, and when that last crossed into a new slice, as far as
	 * the broker saw (from where and when it started) */
	uint64_t seen, seen_ns;
	/* let go because its reader reads none of the lane's topics any more
	 * (an unsubscribe): held again when it reads one of them */
	bool released;
	/* let go by a spill whose spool was full: the order of the last
	 * record before its slot (0: not known), told to the reader that
	 * takes it over, which counts what it finds overwritten from it */
	uint64_t order;
};

struct blane {
	struct lanefile f;
	uint32_t number;       /* the broker's number for it (PROTO_LANE) */
	uint64_t publisher;
	uint32_t generation;
	uid_t uid;             /* its writer's */
	struct ring ring;      /* over f.data (read-only) */
	struct hold_table hold;
	uint64_t known_end;    /* a record boundary found before */
	int tx_wake_fd;        /* the writer generation's tx_wake page */
	struct lhold *holders; /* SHM_HOLD_MAX */
	unsigned nholders;
	uint64_t *sent;        /* descriptors its writer was sent (kind << 62 | number) */
	unsigned nsent;
	/* the control layer's: a pidfd of the process of its detached
	 * writer, whose death cuts it; -1 (closed with the lane) */
	int watch_pidfd;
	/* fenced after its last record, the cut fields written (an owner
	 * switch's step 2, before its commit point); CUT not yet stored */
	bool fenced;
	uint64_t cut_pos, cut_lane_seq;
	uint64_t last_order;   /* of its last record, read at the fence (0: none, or not known) */
	bool cut;
	struct blane *next;    /* in the register: by number, the oldest first */
};

/* A cursor page of one reader generation for one publisher. */
struct lpage {
	uint64_t publisher;
	uint32_t number;       /* per broker, never reused */
	uint32_t used;         /* slots handed out (never reused within a page) */
	bool told;             /* its descriptor is in a push to the reader */
	int fd;                /* read-write, the broker's own */
	int ro;                /* read-only, for the writers */
	struct shm_cursor_page *map;
	char name[96];         /* in the session's directory */
	struct lpage *next;
};

/* An arm page: 504 slots of one uid's reader generations. */
struct larm {
	uid_t uid;
	uint32_t number;
	int fd;
	struct shm_arm_page *map;
	uint64_t used[SHM_LINE / 8]; /* slots taken */
	struct larm *next;
};

struct lreader {
	uint64_t session;
	uint32_t generation;
	uid_t uid;
	bool drop_oldest;
	uint64_t number;       /* what hold entries say of it (not its session id) */
	int rx_wake_fd;
	uint32_t *rx_wake;     /* the broker's mapping of it, for its wakes */
	struct larm *arm;
	uint32_t arm_slot;
	bool told_self;        /* its own rx_wake and arm page went out in a push */
	struct lpage *pages;
	uint32_t *topics;      /* subscribed topic ids */
	unsigned ntopics, topics_cap;
	struct lreader *next;
};

/* A message for one session's owner, with descriptors (owned by the
 * register: they stay open until lanes_push_done()). */
struct lpush {
	uint64_t session;
	uint32_t generation;
	uint32_t reader;       /* the lreader it is for (its number); 0: the writer's */
	union {
		struct proto_hdr h;
		struct proto_lane lane;
		struct proto_holder holder;
	} msg;
	int fds[LANES_MAX_PUSH_FDS];
	unsigned nfds;
};

struct lanes_reg {
	int lanes_dirfd;       /* SHMB_DIR/lanes */
	/* the directory of a session (sessions/<id>), for its cursor pages */
	int (*session_dir)(void *ctx, uint64_t session);
	/* cover (add) or uncover a mapping of a file a client can write, on
	 * behalf of the session a fault there blames (the broker's SIGBUS
	 * guard, guard.h); NULL in tests */
	void (*guard)(void *ctx, void *base, size_t len, uint64_t session, bool add);
	/* a read-write descriptor of dirfd/name for a client, that cannot
	 * truncate where the kernel allows (harden.c); NULL: a duplicate of
	 * own_fd (tests) */
	int (*client_fd)(void *ctx, int dirfd, const char *name, int own_fd);
	/* a lane, page, arm page or reader number was taken (next_*): keep
	 * the counters for a restarted broker; NULL in tests */
	void (*numbers_taken)(void *ctx);
	void *ctx;
	uint64_t broker_id;
	uint64_t ring_size;    /* of new lanes, unless the publisher says */
	struct blane *lanes;
	struct lreader *readers;
	struct larm *arms;
	uint32_t next_lane, next_page, next_arm;
	uint64_t next_reader;
	struct lpush *push;    /* queued pushes */
	unsigned npush, push_cap;
	char why[200];         /* after a failure: what, for the log */
};

void lanes_init(struct lanes_reg *g, int lanes_dirfd, uint64_t broker_id);
/* The broker stops: the register's memory and descriptors go; hold
 * entries, cursor pages and lanes stay for the next broker (re-adoption). */
void lanes_free(struct lanes_reg *g);

/* A reader session generation: its rx_wake page and arm slot.  NULL with
 * g->why on failure. */
struct lreader *lanes_reader_new(struct lanes_reg *g, uint64_t session, uint32_t generation,
				 uid_t uid, bool drop_oldest);

/* r's own sleep word and arm page, in a push with no lane (lane 0, only
 * PROTO_LANE_SELF), unless they went out already.  0 or -errno. */
int lanes_reader_self(struct lanes_reg *g, struct lreader *r);

/*
 * A new owner generation of old's session: every hold of old moves to a
 * new reader (new wake and arm slot, new cursor pages) by the take-over
 * of data-path.md section 3, starting where old acknowledged, and the
 * new owner is told each lane (PROTO_LANE); old ends.  NULL with g->why
 * when the new reader cannot be made (old is left as it was).
 */
struct lreader *lanes_reader_switch(struct lanes_reg *g, struct lreader *old, uint32_t generation);

/* Move h (a hold of l by another reader of r's session) to r by the
 * take-over of data-path.md section 3, on a cursor slot of r's, and tell
 * both sides; the old entry is freed.  -errno with g->why (h unchanged). */
int lanes_holder_move(struct lanes_reg *g, struct blane *l, struct lhold *h, struct lreader *r);

/* The reader is gone (its generation ended): its entries freed (the
 * writers no longer wait for it), its arm word and bit cleared, its
 * pages removed, its rx_wake bumped and woken (a sleeper looks and
 * learns that its generation is over). */
void lanes_reader_end(struct lanes_reg *g, struct lreader *r);

/* Bump r's rx_wake and wake whoever sleeps on it. */
void lanes_reader_wake(struct lreader *r);

/*
 * The owner of (session, generation) is back over a new connection after
 * pushes to it were dropped: queue again every push it would need.  As a
 * reader (r, may be NULL), a PROTO_LANE for each lane r holds or watches
 * (its cursor page with the first on each page, its own rx_wake and arm
 * page with the first); as a writer, a PROTO_HOLDER with all three
 * descriptors for each holder of each of its open lanes, and one with the
 * lane's tx_wake page.  The owner ignores what it has already.  -errno with g->why.
 */
int lanes_resend(struct lanes_reg *g, uint64_t session, uint32_t generation, struct lreader *r);

/*
 * The publisher (session, generation, uid) will publish on topic: its
 * lane (made when it has none), the topic's bit, and a holder for each of
 * `readers` (the topic's subscribers the caller allows) that does not
 * hold the lane yet, each started by the floor protocol and told by a
 * PROTO_LANE push; the writer is told of each new holder by a
 * PROTO_HOLDER push.  *out the lane.  -errno with g->why.
 */
int lanes_topic_use(struct lanes_reg *g, uint64_t session, uint32_t generation, uid_t uid,
		    uint64_t ring_size, uint32_t topic, struct lreader **readers, unsigned nreaders,
		    struct blane **out);

/* Whether the reader reads topic (the register's list of it). */
bool lanes_reader_reads(const struct lreader *r, uint32_t topic);

/* The reader subscribed to topic: a holder on every open lane that
 * carries it and that it does not hold yet. */
int lanes_subscribe(struct lanes_reg *g, struct lreader *r, uint32_t topic);

/*
 * The reader no longer reads topic: each open lane it holds that carries
 * none of the topics it still reads is let go as lanes_let_go() does (it
 * reads on without holding, and its writer goes on past it), marked
 * released: a later subscribe to one of the lane's topics, or the lane's
 * first record of another topic it reads, holds it again (a new entry by
 * the floor protocol, told with PROTO_LANE_REHOLD).  Returns how many
 * lanes were let go.
 */
unsigned lanes_unsubscribe(struct lanes_reg *g, struct lreader *r, uint32_t topic);

/*
 * An owner switch's steps 1 and 2 (data-path.md, section 7) for the
 * publisher generation's open lanes: each fenced after its last record
 * (a writer still committing loses the race: -ESTALE for it) and its cut
 * fields written, state still OPEN; nobody woken.  Once fenced, nothing
 * more can be committed into it, so the order of its last record is
 * final: *next_seq is raised to the highest (order = source sequence + 1,
 * so that is the sequence a successor starts at).  A lane with no end to
 * fence at is BAD and cut.  -errno with g->why (the others are fenced).
 */
int lanes_publisher_fence(struct lanes_reg *g, uint64_t session, uint32_t generation,
			  uint64_t *next_seq);

/* The publisher generation ended: its lanes are fenced (unless they are)
 * and cut after their last record, CUT stored; readers read to the cut.
 * Each cut lane's readers and its writer's tx_wake are woken.  *next_seq
 * as lanes_publisher_fence() says. */
int lanes_publisher_end(struct lanes_reg *g, uint64_t session, uint32_t generation,
			uint64_t *next_seq);

/* Lanes cut and passed by every holder (or held by none) are removed. */
void lanes_tick(struct lanes_reg *g);

/*
 * The block timeout on lanes, until spools (data-path.md, section 9,
 * step 3).  For an open lane whose writer says it has been short of room
 * (`short_since`) for at least timeout_ns: the readers of the HOLD
 * entries at its limit (their slots in the lowest slice among its HOLD
 * entries), with records unread, whose slots did not cross into a new
 * slice for timeout_ns either.  Each call follows the slots of l's HOLD
 * entries while its writer is short (a slot counts forward, aligned and
 * within the committed end only).  At most cap readers into out; their
 * count.  Policy (whether a reader may be let go) is the caller's.
 */
unsigned lanes_stuck(struct blane *l, uint64_t now, uint64_t timeout_ns, struct lreader **out,
		     unsigned cap);

/* r's hold of l is let go: its slot's bit in line 0 of its cursor page
 * set (its reader reads on without holding, copying and counting what it
 * loses), then its HOLD entry a WATCH entry (the writer goes on past it
 * and still wakes it), and the writer's tx_wake woken.  -ENOENT (nothing
 * done) when r holds no HOLD entry of l whose page is known. */
int lanes_let_go(struct blane *l, struct lreader *r);
/* The same, the order of the last record before r's slot kept with the
 * entry for the reader that takes it over (lanes_reader_switch()). */
int lanes_let_go_order(struct blane *l, struct lreader *r, uint64_t order);

struct blane *lanes_find(struct lanes_reg *g, uint64_t session, uint32_t generation);
/* The lane numbered `number`, or NULL. */
struct blane *lanes_by_number(struct lanes_reg *g, uint32_t number);
/* Whether l's writer says it is short of room now (its `short_since`:
 * the writer's word, acted on only against its own lane). */
bool lanes_writer_short(const struct blane *l);

/* Put l in the register's list by its number, the oldest first: whoever
 * walks it (a resend, a reader's switch) tells a reader of a publisher's
 * lanes in the order they were made, and a reader merges by order only
 * the lanes it knows (it must learn an older one first). */
void lanes_link(struct lanes_reg *g, struct blane *l);

/* What shmbctl lanes shows of a lane (read from files its writer and its
 * readers write: shown, never acted on). */
struct lane_stats {
	uint64_t end, lag, short_ms;
	uint32_t holders, watchers;
};

void lanes_lane_stats(struct blane *l, uint64_t now_ns, struct lane_stats *st);

/* What the admin views show of a session on lanes (read from files its
 * writers and readers write: shown, never acted on). */
struct lanes_session_stats {
	uint64_t next_seq;     /* the highest order in its generation's lanes (= next sequence) */
	uint64_t published;    /* records in its lanes still in the register */
	uint64_t depth_msgs;   /* records after its reader's slots, in the lanes it holds */
	uint64_t depth_bytes;
};

/* For session's publisher generation `generation` and its reader r (NULL:
 * none).  Walks each lane it writes or r holds, at most a lap. */
void lanes_session_stats(struct lanes_reg *g, uint64_t session, uint32_t generation,
			 const struct lreader *r, struct lanes_session_stats *st);

/*
 * A reader r says lane `number` has a bad record: 1 when the broker's own
 * walk finds one (or the lane is BAD already), 0 when it finds the lane
 * good, -ENOENT when r does not read it; *out is the lane.
 */
int lanes_walk_check(struct lanes_reg *g, uint32_t number, const struct lreader *r,
		     struct blane **out);

/* The queued pushes were sent (or their receivers are gone): close their
 * descriptors and forget them. */
void lanes_push_done(struct lanes_reg *g);

#endif
