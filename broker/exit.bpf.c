// SPDX-License-Identifier: GPL-2.0
/*
 * broker/exit.bpf.c - the BPF half of crash forensics: on
 * tp_btf/sched_process_exit, record the wait status of processes the
 * broker tracks (its peers), keyed by their tgid in the `tracked` hash map
 * that only the broker fills.  A tgid not in the map costs one lookup.
 *
 * Built with clang -target bpf into a libbpf skeleton (Makefile).  CO-RE:
 * instead of a vmlinux.h dumped from the build machine's BTF (which ties
 * the build to that machine's kernel and needs /sys/kernel/btf there), the
 * few kernel fields read are declared here with preserve_access_index, and
 * libbpf relocates each access against the running kernel's BTF at load.
 *
 * Threads: the tracepoint fires once per exiting thread.  signal->live
 * counts the group's threads that have not yet passed the decrement at the
 * start of do_exit(), which comes before this tracepoint: live == 0 is the
 * last thread out.  Its status is what wait(2) reports for the group: the
 * group exit code after exit_group() or a fatal signal (with 0x80 once a
 * core was dumped), else the leader's own exit code, kept when the leader
 * went first.
 *
 * Must never: record a process the broker did not ask for (only lookups
 * and updates of existing entries happen here).
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

typedef struct {
	int counter;
} atomic_t;

struct signal_struct {
	atomic_t live;
	int group_exit_code;
	unsigned int flags;
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;
	int tgid;
	int exit_code;
	struct signal_struct *signal;
} __attribute__((preserve_access_index));

#define SIGNAL_GROUP_EXIT 0x00000004 /* include/linux/sched/signal.h */

/* shared with exit-bpf.c */
#define EXIT_TRACKED 0  /* alive, as far as the tracer knows */
#define EXIT_LEADER 1   /* the group leader exited; status is its exit code */
#define EXIT_DONE 2     /* the last thread exited; status is final */

struct exit_rec {
	__u32 state;
	__s32 status;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct exit_rec);
} tracked SEC(".maps");

SEC("tp_btf/sched_process_exit")
int BPF_PROG(shmb_on_exit, struct task_struct *p)
{
	__u32 tgid = BPF_CORE_READ(p, tgid);
	struct exit_rec *r = bpf_map_lookup_elem(&tracked, &tgid);
	struct signal_struct *sig;
	int pid, code;

	if (!r)
		return 0;
	pid = BPF_CORE_READ(p, pid);
	code = BPF_CORE_READ(p, exit_code);
	sig = BPF_CORE_READ(p, signal);
	if (BPF_CORE_READ(sig, live.counter) != 0) {
		/* not the last thread: only the leader's code matters */
		if (pid == (int)tgid) {
			r->status = code;
			r->state = EXIT_LEADER;
		}
		return 0;
	}
	if (BPF_CORE_READ(sig, flags) & SIGNAL_GROUP_EXIT)
		r->status = BPF_CORE_READ(sig, group_exit_code);
	else if (r->state != EXIT_LEADER)
		r->status = code;
	/* BPF has no fences; none is needed: the broker reads the entry only
	 * after the pidfd turned readable, which exit_notify() does later in
	 * this same do_exit() (under locks that order these stores) */
	r->state = EXIT_DONE;
	return 0;
}
