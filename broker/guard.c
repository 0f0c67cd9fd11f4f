/*
 * broker/guard.c - survive a client that truncates its own TX file.
 *
 * A client holds its tx.<gen> file read-write, so it can shrink it under
 * the broker's mapping; the next read there is SIGBUS.  The handler looks
 * the address up among the TX mappings registered here, maps anonymous
 * zero pages over that whole mapping (a zero commit word reads as "no
 * record": the faulting read re-executes harmlessly) and marks it; the
 * loop then quarantines the session
 * (docs/design/segments.md, TX file guards).  A SIGBUS anywhere else is a
 * real crash and is re-raised with the default action.
 *
 * Only the loop's thread maps TX files, reads them and edits this table (the
 * exit tracer's loader thread blocks every signal), and SIGBUS is synchronous, so the table
 * is never changed while the handler reads it.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "broker/array.h"
#include "broker/broker.h"
#include "broker/guard.h"
#include "broker/session.h"

struct guard {
	uint8_t *base;
	size_t len;
	struct session *s;
	volatile sig_atomic_t faulted;
};

static struct guard *guards;
static unsigned nguards, capguards;
static volatile sig_atomic_t any_faulted;

static void guard_sigbus(int sig, siginfo_t *si, void *uc)
{
	uint8_t *a = si->si_addr;

	(void)uc;
	for (unsigned i = 0; i < nguards; i++) {
		struct guard *g = &guards[i];

		if (a >= g->base && a < g->base + g->len &&
		    mmap(g->base, g->len, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS,
			 -1, 0) != MAP_FAILED) {
			g->faulted = 1;
			any_faulted = 1;
			return;
		}
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

int guard_init(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = guard_sigbus;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	return sigaction(SIGBUS, &sa, NULL);
}

int guard_add(void *base, size_t len, struct session *s)
{
	if (ARRAY_ROOM(guards, nguards, capguards, 64) < 0)
		return -1;
	guards[nguards++] = (struct guard){ .base = base, .len = len, .s = s };
	return 0;
}

void guard_remove(void *base)
{
	for (unsigned i = 0; i < nguards; i++)
		if (guards[i].base == base) {
			guards[i] = guards[--nguards];
			return;
		}
}

void guard_check(struct broker *b)
{
	if (!any_faulted)
		return;
	any_faulted = 0;
	for (unsigned i = 0; i < nguards; i++)
		if (guards[i].faulted) {
			guards[i].faulted = 0;
			/* a lane whose session is gone (re-adopted after a restart)
			 * has nobody to blame: its mapping reads zeros now */
			if (guards[i].s)
				session_quarantine(b, guards[i].s,
						   "its TX file was truncated under the broker");
		}
}
