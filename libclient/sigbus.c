/*
 * libclient/sigbus.c - the SIGBUS guard over mappings another process can
 * shrink (sigbus.h; docs/design/data-path.md, "The guard in libshmb").
 *
 * The handler reads the slot table without a lock: a slot's length and
 * protection are written before its base is published with a release
 * store, and the handler loads the base with an acquire load.  Slots are
 * added and removed under a mutex, never while their mapping is gone: a
 * caller removes a slot before it unmaps, so the handler never covers an
 * address range that something else has been mapped into since.
 *
 * Must never: call anything in the handler but mmap and atomics; cover a
 * fault outside a registered mapping (that is a real crash, and goes to
 * the previous action); take a lock the handler could wait for.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>

#include "libclient/sigbus.h"
#include "shm/atomics.h"

struct slot {
	uint8_t *base;           /* NULL: free; published last (release) */
	size_t len;
	int prot;
	volatile sig_atomic_t bad;
};

static struct slot slots[SIGBUS_SLOTS];
static unsigned high;            /* slots in use are below it (release) */
uint64_t sigbus_faults_n;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct sigaction prev;
static int install_err;

int sigbus_handle(int sig, siginfo_t *info, void *ucontext)
{
	uint8_t *a = info ? info->si_addr : NULL;
	unsigned n = load_acquire(&high);

	(void)sig;
	(void)ucontext;
	for (unsigned i = 0; i < n; i++) {
		/* pairs with the release store of base in sigbus_add() */
		uint8_t *b = load_acquire(&slots[i].base);

		if (!b || a < b || a >= b + slots[i].len)
			continue;
		if (mmap(b, slots[i].len, slots[i].prot, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1,
			 0) == MAP_FAILED)
			return 0;
		slots[i].bad = 1;
		fetch_add_relaxed(&sigbus_faults_n, 1);
		return 1;
	}
	return 0;
}

static void on_sigbus(int sig, siginfo_t *info, void *ucontext)
{
	if (sigbus_handle(sig, info, ucontext))
		return;
	if (prev.sa_flags & SA_SIGINFO) {
		prev.sa_sigaction(sig, info, ucontext);
		return;
	}
	if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
		prev.sa_handler(sig);
		return;
	}
	/* a real fault: the load runs again and the default action ends us */
	signal(sig, SIG_DFL);
}

static void install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, &prev) < 0)
		install_err = -errno;
}

int sigbus_install(void)
{
	pthread_once(&once, install);
	return install_err;
}

int sigbus_add(void *base, size_t len, int prot)
{
	int slot = -ENOSPC;

	pthread_mutex_lock(&lock);
	for (unsigned i = 0; i < SIGBUS_SLOTS; i++) {
		if (slots[i].base)
			continue;
		slots[i].len = len;
		slots[i].prot = prot;
		slots[i].bad = 0;
		/* pairs with the acquire load in sigbus_handle(): len first */
		store_release(&slots[i].base, (uint8_t *)base);
		if (i >= high)
			store_release(&high, i + 1);
		slot = (int)i;
		break;
	}
	pthread_mutex_unlock(&lock);
	return slot;
}

void sigbus_remove(int slot)
{
	if (slot < 0 || slot >= SIGBUS_SLOTS)
		return;
	pthread_mutex_lock(&lock);
	store_release(&slots[slot].base, NULL);
	pthread_mutex_unlock(&lock);
}

bool sigbus_bad(int slot)
{
	return slot >= 0 && slot < SIGBUS_SLOTS && slots[slot].bad;
}

