/*
 * libclient/sigbus.h - the SIGBUS guard over mappings another process can
 * shrink (docs/design/data-path.md, "The guard in libshmb").
 *
 * A file another process may write can be truncated or punched under our
 * mapping; the next load there is SIGBUS, which by default kills us.  A
 * mapping registered here is instead covered with anonymous zero pages
 * (a zero commit word reads as "nothing yet") and marked bad; the load
 * runs again and the library reports the mapping's source.  A SIGBUS at
 * any other address goes to the action that was there before.
 *
 * Not installed until the library maps the first file of another
 * process's (the lanes of the direct data path); until then nothing here
 * runs in a client.
 */
#ifndef LIBCLIENT_SIGBUS_H
#define LIBCLIENT_SIGBUS_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "shm/atomics.h"

/* Mappings the guard can cover at once. */
#define SIGBUS_SLOTS 4096

/* Install the handler, keeping the previous action (once per process;
 * later calls do nothing): 0 or -errno. */
int sigbus_install(void);

/*
 * Cover [base, base + len) (page-aligned, protection prot as mapped):
 * its slot (>= 0), or -ENOSPC when every slot is taken.  Remove it with
 * sigbus_remove() before unmapping it.
 */
int sigbus_add(void *base, size_t len, int prot);
void sigbus_remove(int slot);

/* Did the mapping in slot fault (it now reads as zeroes)? */
bool sigbus_bad(int slot);

/* How many faults the guard has covered in this process, ever: a caller
 * that remembers the last value looks at its slots only when it moved. */
extern uint64_t sigbus_faults_n; /* the guard's count; read it through: */
static inline uint64_t sigbus_faults(void)
{
	return load_relaxed(&sigbus_faults_n);
}

/*
 * The handler itself: 1 when the fault lay in a guarded mapping (covered
 * and marked), 0 otherwise.  For an application that owns SIGBUS and
 * calls it first (it becomes the public shmb_sigbus() with the lanes).
 */
int sigbus_handle(int sig, siginfo_t *info, void *ucontext);

#endif
