/*
 * broker/exit.h - crash forensics: why a session's owner went away
 * (docs/design/service.md, docs/forensics.md).
 *
 * One interface, two halves behind it:
 *   exit-bpf.c   (+ exit.bpf.c, the BPF program) - a tp_btf/sched_process_exit
 *                tracer that records the exit status of the processes the
 *                broker tracks; needs CAP_BPF and CAP_PERFMON, and the
 *                broker in the initial pid namespace;
 *   exit-pidfd.c - PIDFD_GET_INFO with PIDFD_INFO_EXIT (kernel 6.15+): the
 *                status of a process once it has been reaped.
 * Without either, deaths are still seen (the pidfd turns readable) but
 * their reason is "unknown".  exit.c holds what the methods share: which
 * one is used, the watch on the pidfds of processes whose connection went
 * away, and writing the result into their sessions.
 *
 * The watch, per process whose connection closed: POLLIN on its pidfd is
 * its death (the loop detaches its sessions on that or on the connection's
 * EOF, whichever comes first), POLLHUP is its reap (measured on 6.18: an
 * io_uring poll on the pidfd completes with POLLHUP when the parent reaps
 * it; a multishot POLLIN poll completes again then, with POLLIN|POLLHUP).
 * A process still alive EXITW_GRACE_MS after its connection closed closed
 * it normally; a dead one nobody reaps within EXITW_ZOMBIE_MS keeps the
 * reason "unknown" under the pidfd method.
 *
 * Must never: hold up the loop (no blocking call after exitw_init), or let
 * a reason land in a session that has had a new owner since.
 */
#ifndef BROKER_EXIT_H
#define BROKER_EXIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct broker;
struct conn;

enum exitw_mode {
	EXITW_AUTO = 0, /* bpf, else pidfd + PIDFD_INFO_EXIT, else death only */
	EXITW_BPF,      /* bpf or refuse to start */
	EXITW_PIDFD,    /* pidfd + PIDFD_INFO_EXIT (death only below kernel 6.15) */
	EXITW_OFF,      /* death only */
};

#define EXITW_GRACE_MS 1000
#define EXITW_ZOMBIE_MS 10000
#define EXITW_REASON_LEN 48

/* "auto", "bpf", "pidfd", "off": 0 or -EINVAL. */
int exitw_parse_mode(const char *s, enum exitw_mode *out);
/* Choose the method b->o.exit_reasons allows and say once in the log which,
 * and why BPF is not used when it is not; -errno when it must be BPF and
 * BPF cannot load. */
int exitw_init(struct broker *b);
/* The method in use, for people: "bpf (tp_btf/sched_process_exit)", ... */
const char *exitw_method(const struct broker *b);
/* A connection was accepted and its peer identified: track its process. */
void exitw_track(struct broker *b, const struct conn *c);
/* c's connection is going away (ctl_close, before its pidfd is closed),
 * having just detached `owned` sessions: resolve why, later. */
void exitw_conn_gone(struct broker *b, const struct conn *c, unsigned owned);
/* The loop's request kind of the watches on gone processes' pidfds
 * (loop.h); their completions go to exitw_event (a: the watch's slot). */
#define EXITW_OP_WATCH 8
void exitw_event(struct broker *b, unsigned kind, unsigned slot, uint32_t gen, int res, bool more);
/* Housekeeping: grace periods and zombies. */
void exitw_tick(struct broker *b, uint64_t now);
/* The broker has nothing to do: the time for auto's deferred tracer load. */
void exitw_idle(struct broker *b);
void exitw_fini(struct broker *b);
/* A wait(2) status as people read it: "exited 3", "killed by SIGKILL",
 * "killed by SIGSEGV (core dumped)". */
void exitw_format(int status, char *buf, size_t len);

/* ---- exit-bpf.c: the tracer ---- */
struct exit_bpf;
/* Load and attach; on failure -errno and why in `why`. */
int exit_bpf_load(struct exit_bpf **out, char *why, size_t n);
/* Record tgid's exit from now on: 0, or -errno (the map is full). */
int exit_bpf_track(struct exit_bpf *e, pid_t tgid);
void exit_bpf_untrack(struct exit_bpf *e, pid_t tgid);
/* tgid's wait status once its last thread exited: 0, or -EAGAIN. */
int exit_bpf_status(struct exit_bpf *e, pid_t tgid, int *status);
void exit_bpf_free(struct exit_bpf *e);

/* ---- exit-pidfd.c: PIDFD_INFO_EXIT ---- */
/* Does this kernel give a reaped process's exit status?  0 or -errno. */
int exit_pidfd_probe(void);
/* The status of the reaped process behind pidfd: 0, or -EAGAIN (not yet
 * reaped), or another -errno. */
int exit_pidfd_status(int pidfd, int *status);

#endif
