/*
 * broker/exit.c - crash forensics, the part every method shares (see
 * exit.h): choosing the method, watching the pidfd of each process whose
 * connection went away until its reason is known, and writing the reason
 * into the sessions it owned.
 *
 * A process whose connection closed is "pending" until one of:
 *   - its status is known (the tracer's map after its death, or its pidfd
 *     after its reap): "exited N", "killed by SIGx";
 *   - it is dead and no status can come (death only; or a zombie nobody
 *     reaps for EXITW_ZOMBIE_MS under the pidfd method): "unknown";
 *   - it is still alive EXITW_GRACE_MS after its connection closed:
 *     "closed normally".
 * The reason lands in each session it owned that has had no new owner
 * since (s->exit_pending); a new owner clears it.
 *
 * Must never: touch a session that has been given a new owner; block.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/ctl-lanes.h"
#include "broker/ctl.h"
#include "broker/exit.h"
#include "broker/log.h"
#include "broker/session.h"
#include "shm/clock.h"

enum exitw_method { METHOD_DEATH_ONLY, METHOD_PIDFD, METHOD_BPF };

static const char *const method_names[] = {
	[METHOD_DEATH_ONLY] = "pidfd (death only: reasons unknown)",
	[METHOD_PIDFD] = "pidfd + PIDFD_INFO_EXIT",
	[METHOD_BPF] = "bpf (tp_btf/sched_process_exit)",
};

struct pending {
	bool used;
	bool dead;      /* its pidfd turned readable */
	bool armed;     /* a poll on pidfd is in flight */
	pid_t pid;
	uid_t uid;
	int pidfd;
	uint32_t gen;   /* tags the poll: a completion for an older use is stale */
	unsigned owned; /* sessions it owned when its connection went */
	uint64_t gone_ns, dead_ns;
};

/* More pending at once than this is a flood of dying clients: the rest
 * get "unknown" at once rather than an unbounded table. */
#define PENDING_MAX 8192

struct exitw {
	enum exitw_method method;
	bool bpf_later;     /* auto: the tracer is being loaded by `loader` */
	int probe;          /* the PIDFD_INFO_EXIT probe's answer */
	pthread_t loader;
	bool threaded;      /* loader is a thread to join (else it ran inline) */
	uint32_t loaded;    /* the loader is done: its result is in lbpf, lr, lwhy */
	struct exit_bpf *lbpf;
	int lr;
	char lwhy[256];
	struct exit_bpf *bpf;
	struct pending *p;
	unsigned np;
	uint32_t gen;
};

int exitw_parse_mode(const char *s, enum exitw_mode *out)
{
	static const char *const names[] = { "auto", "bpf", "pidfd", "off" };

	for (unsigned i = 0; s && i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(s, names[i])) {
			*out = (enum exitw_mode)i;
			return 0;
		}
	return -EINVAL;
}

void exitw_format(int status, char *buf, size_t len)
{
	if (WIFEXITED(status)) {
		snprintf(buf, len, "exited %d", WEXITSTATUS(status));
	} else if (WIFSIGNALED(status)) {
		const char *abbrev = sigabbrev_np(WTERMSIG(status));

		if (abbrev)
			snprintf(buf, len, "killed by SIG%s%s", abbrev,
				 WCOREDUMP(status) ? " (core dumped)" : "");
		else
			snprintf(buf, len, "killed by signal %d%s", WTERMSIG(status),
				 WCOREDUMP(status) ? " (core dumped)" : "");
	} else {
		snprintf(buf, len, "unknown");
	}
}

/* How the fallback stands, said once: why not BPF, and what instead. */
static void say_fallback(struct exitw *w, enum exitw_mode mode, const char *why)
{
	int pr = w->probe;

	if (mode == EXITW_AUTO)
		log_msg(LOG_NOTICE, "crash detection: BPF exit tracer unavailable (%s); %s%s%s",
			why, pr == 0 ? "falling back to " : "PIDFD_INFO_EXIT unsupported (",
			pr == 0 ? method_names[w->method] : strerror(-pr),
			pr == 0 ? "" : "): deaths are seen, their reasons are not");
	else if (pr < 0)
		log_msg(LOG_WARNING, "crash detection: PIDFD_INFO_EXIT unsupported (%s, kernel"
			" 6.15+ has it): deaths are seen, their reasons are not", strerror(-pr));
}

/* auto's loader thread: the load, off the loop. */
static void *bpf_loader(void *arg)
{
	struct exitw *w = arg;

	w->lr = exit_bpf_load(&w->lbpf, w->lwhy, sizeof(w->lwhy));
	__atomic_store_n(&w->loaded, 1, __ATOMIC_RELEASE);
	return NULL;
}

/*
 * --exit-reasons bpf loads the tracer here, before the broker serves
 * (it refuses to start without it).  auto loads it in a thread of its
 * own: a load takes about 100 ms, which a restarted broker owes its
 * clients' deliveries first; exitw_idle() takes the tracer in once it is
 * ready.  Until then, and for every process it cannot track, the pidfd
 * method answers.
 */
int exitw_init(struct broker *b)
{
	enum exitw_mode mode = b->o.exit_reasons;
	struct exitw *w = calloc(1, sizeof(*w));
	char why[256] = "";
	int r = 0;

	if (!w)
		return -ENOMEM;
	loop_on(b, EXITW_OP_WATCH, exitw_event);
	w->method = METHOD_DEATH_ONLY;
	if (mode == EXITW_BPF) {
		r = exit_bpf_load(&w->bpf, why, sizeof(why));
		if (r < 0) {
			log_msg(LOG_ERR, "--exit-reasons bpf: the exit tracer cannot be used: %s", why);
			free(w);
			return r;
		}
		w->method = METHOD_BPF;
	}
	if (mode == EXITW_AUTO || mode == EXITW_PIDFD) {
		w->probe = exit_pidfd_probe();
		if (w->probe == 0)
			w->method = METHOD_PIDFD;
	}
	if (mode == EXITW_AUTO) {
		sigset_t all, old;

		/* signals are the loop's (signalfd): the thread takes none */
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		w->threaded = pthread_create(&w->loader, NULL, bpf_loader, w) == 0;
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (!w->threaded)
			bpf_loader(w); /* no thread: load it here, as bpf does */
		w->bpf_later = true;
	} else if (mode == EXITW_PIDFD)
		say_fallback(w, mode, "");
	if (mode != EXITW_AUTO)
		log_msg(LOG_NOTICE, "crash detection: %s", method_names[w->method]);
	b->exitw = w;
	return 0;
}

void exitw_idle(struct broker *b)
{
	struct exitw *w = b->exitw;

	if (!w || !w->bpf_later || !__atomic_load_n(&w->loaded, __ATOMIC_ACQUIRE))
		return;
	w->bpf_later = false;
	if (w->threaded)
		pthread_join(w->loader, NULL);
	if (w->lr < 0) {
		say_fallback(w, EXITW_AUTO, w->lwhy);
		return;
	}
	w->bpf = w->lbpf;
	w->method = METHOD_BPF;
	/* the processes already connected: from now on the tracer knows them */
	for (int i = 0; i < BROKER_MAX_CONNS; i++)
		if (b->conns[i] && !b->conns[i]->dead)
			exitw_track(b, b->conns[i]);
	log_msg(LOG_NOTICE, "crash detection: %s", method_names[w->method]);
}

const char *exitw_method(const struct broker *b)
{
	return b->exitw ? method_names[b->exitw->method] : "none";
}

void exitw_track(struct broker *b, const struct conn *c)
{
	struct exitw *w = b->exitw;

	if (w && w->bpf && c->pid > 0 && exit_bpf_track(w->bpf, c->pid) < 0)
		log_msg(LOG_DEBUG, "exit tracer: cannot track pid %d: its reason will come from"
			" its pidfd", (int)c->pid);
}

/* Does a live connection still come from pid? */
static bool pid_connected(struct broker *b, pid_t pid)
{
	for (int i = 0; i < BROKER_MAX_CONNS; i++)
		if (b->conns[i] && !b->conns[i]->dead && b->conns[i]->pid == pid)
			return true;
	return false;
}

static void pending_free(struct broker *b, struct pending *e)
{
	struct exitw *w = b->exitw;

	if (e->armed)
		loop_cancel(b, EXITW_OP_WATCH, (unsigned)(e - w->p), e->gen);
	if (e->pidfd >= 0)
		close(e->pidfd);
	if (w->bpf && !pid_connected(b, e->pid))
		exit_bpf_untrack(w->bpf, e->pid);
	memset(e, 0, sizeof(*e));
	e->pidfd = -1;
}

/* The reason is known: into every session e's process still stands for. */
static void resolve(struct broker *b, struct pending *e, const char *reason, bool death)
{
	unsigned n = 0;

	for (unsigned i = 0; i < b->nsessions; i++) {
		struct session *s = b->sessions[i];

		if (!s->exit_pending || s->owner || s->owner_pid != e->pid || s->uid != e->uid)
			continue;
		snprintf(s->exit_reason, sizeof(s->exit_reason), "%s", reason);
		s->exit_pending = false;
		n++;
		log_msg(death ? LOG_NOTICE : LOG_INFO, "session %s (uid %u): owner pid %d %s%s", s->name,
			(unsigned)s->uid, (int)e->pid, strcmp(reason, "unknown") ? "" : "died, reason ",
			reason);
		session_event(s, "owner pid %d %s%s", (int)e->pid,
			      strcmp(reason, "unknown") ? "" : "died, reason ", reason);
	}
	/* its sessions were destroyed (ephemeral) or have a new owner (it
	 * came back over a new connection): the log is all that is left */
	if (!n && death)
		log_msg(LOG_INFO, "owner pid %d (uid %u) %s%s; none of the %u session(s) it owned"
			" awaits it", (int)e->pid, (unsigned)e->uid,
			strcmp(reason, "unknown") ? "" : "died, reason ", reason, e->owned);
	pending_free(b, e);
}

static void resolve_status(struct broker *b, struct pending *e, int status)
{
	char text[EXITW_REASON_LEN];

	exitw_format(status, text, sizeof(text));
	resolve(b, e, text, true);
}

/* What can be known about e now, given dead / reaped. */
static void look(struct broker *b, struct pending *e, bool dead, bool reaped)
{
	struct exitw *w = b->exitw;
	int st;

	if (dead && !e->dead) {
		e->dead = true;
		e->dead_ns = clock_mono_ns();
		/* a dead owner comes back to no session: its lanes are cut now,
		 * after its last committed record */
		ctl_lanes_deaths(b);
	}
	if (!e->dead && !reaped)
		return;
	if (w->bpf && exit_bpf_status(w->bpf, e->pid, &st) == 0)
		return resolve_status(b, e, st);
	if (w->method == METHOD_DEATH_ONLY)
		return resolve(b, e, "unknown", true);
	/* the tracer may have missed it (its map was full): the pidfd may know */
	if (reaped) {
		if (exit_pidfd_status(e->pidfd, &st) == 0)
			return resolve_status(b, e, st);
		resolve(b, e, "unknown", true);
	}
}

static void arm(struct broker *b, struct pending *e)
{
	struct exitw *w = b->exitw;

	e->gen = ++w->gen;
	e->armed = true;
	loop_poll(b, e->pidfd, POLLIN, true, EXITW_OP_WATCH, (unsigned)(e - w->p), e->gen);
}

void exitw_conn_gone(struct broker *b, const struct conn *c, unsigned owned)
{
	struct exitw *w = b->exitw;
	struct pending *e = NULL;
	struct pollfd pf;

	if (!w)
		return;
	if (!owned) {
		/* nobody to tell; the tracer forgets it unless it has other connections */
		if (w->bpf && !pid_connected(b, c->pid))
			exit_bpf_untrack(w->bpf, c->pid);
		return;
	}
	/* another connection of the same process went before: one watch */
	for (unsigned i = 0; w->p && i < w->np; i++)
		if (w->p[i].used && w->p[i].pid == c->pid && w->p[i].uid == c->uid) {
			w->p[i].owned += owned;
			return;
		}
	if (!w->p) {
		w->p = calloc(PENDING_MAX, sizeof(*w->p));
		if (!w->p)
			goto unknown;
		for (unsigned i = 0; i < PENDING_MAX; i++)
			w->p[i].pidfd = -1;
	}
	for (unsigned i = 0; i < w->np && !e; i++)
		if (!w->p[i].used)
			e = &w->p[i];
	if (!e && w->np < PENDING_MAX)
		e = &w->p[w->np++];
	if (!e || c->pidfd < 0)
		goto unknown;
	/* ctl_close closes the connection's pidfd: the watch keeps a copy */
	e->pidfd = fcntl(c->pidfd, F_DUPFD_CLOEXEC, 0);
	if (e->pidfd < 0)
		goto unknown;
	e->used = true;
	e->pid = c->pid;
	e->uid = c->uid;
	e->owned = owned;
	e->gone_ns = clock_mono_ns();
	arm(b, e);
	pf = (struct pollfd){ .fd = e->pidfd, .events = POLLIN };
	if (poll(&pf, 1, 0) == 1)
		look(b, e, pf.revents & POLLIN, pf.revents & POLLHUP);
	return;
unknown:
	log_msg(LOG_WARNING, "owner pid %d (uid %u): its exit cannot be watched: reason unknown",
		(int)c->pid, (unsigned)c->uid);
	for (unsigned i = 0; i < b->nsessions; i++) {
		struct session *s = b->sessions[i];

		if (s->exit_pending && !s->owner && s->owner_pid == c->pid && s->uid == c->uid) {
			snprintf(s->exit_reason, sizeof(s->exit_reason), "unknown");
			s->exit_pending = false;
		}
	}
}

void exitw_event(struct broker *b, unsigned kind, unsigned slot, uint32_t gen, int res, bool more)
{
	(void)kind;
	struct exitw *w = b->exitw;
	struct pending *e;

	if (!w || !w->p || slot >= w->np)
		return;
	e = &w->p[slot];
	if (!e->used || e->gen != gen)
		return; /* resolved meanwhile: a late completion */
	if (!more)
		e->armed = false;
	/* a poll that ended with the process still pending is re-armed by
	 * the next tick: an error here cannot spin */
	if (res >= 0)
		look(b, e, res & POLLIN, res & POLLHUP);
}

void exitw_tick(struct broker *b, uint64_t now)
{
	struct exitw *w = b->exitw;

	exitw_idle(b);
	if (!w || !w->p)
		return;
	for (unsigned i = 0; i < w->np; i++) {
		struct pending *e = &w->p[i];
		struct pollfd pf = { .fd = e->pidfd, .events = POLLIN };

		if (!e->used)
			continue;
		/* a missed wake-up costs a tick, not the reason */
		if (poll(&pf, 1, 0) == 1)
			look(b, e, pf.revents & POLLIN, pf.revents & POLLHUP);
		if (!e->used)
			continue;
		if (!e->dead && now - e->gone_ns >= EXITW_GRACE_MS * 1000000ull) {
			resolve(b, e, "closed normally", false);
		} else if (e->dead && now - e->dead_ns >= EXITW_ZOMBIE_MS * 1000000ull) {
			log_msg(LOG_INFO, "owner pid %d is dead but nobody reaped it within %u ms",
				(int)e->pid, EXITW_ZOMBIE_MS);
			resolve(b, e, "unknown", true);
		} else if (!e->armed) {
			arm(b, e);
		}
	}
	while (w->np && !w->p[w->np - 1].used)
		w->np--;
}

void exitw_fini(struct broker *b)
{
	struct exitw *w = b->exitw;

	if (!w)
		return;
	if (w->bpf_later) {
		if (w->threaded)
			pthread_join(w->loader, NULL);
		if (w->lr == 0)
			exit_bpf_free(w->lbpf);
	}
	for (unsigned i = 0; w->p && i < w->np; i++)
		if (w->p[i].pidfd >= 0)
			close(w->p[i].pidfd);
	exit_bpf_free(w->bpf);
	free(w->p);
	free(w);
	b->exitw = NULL;
}
