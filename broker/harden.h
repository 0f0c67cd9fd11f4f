/*
 * broker/harden.h - files a client may write cannot be cut under anyone's
 * mapping (harden.c): Landlock for the descriptors clients get, a sweep
 * of sizes and blocks, quarantine.
 */
#ifndef BROKER_HARDEN_H
#define BROKER_HARDEN_H

#include <stdint.h>

struct broker;

/* Whether Landlock can deny truncation here (b->landlock), said once. */
int harden_init(struct broker *b);
/* The descriptor of dirfd/name a client gets (read-write, close-on-exec):
 * opened under Landlock without the right to truncate, or a copy of
 * own_fd where that is not possible.  -errno on failure. */
int harden_client_fd(struct broker *b, int dirfd, const char *name, int own_fd);
/* The allocated blocks of a file the broker just made or adopted. */
int harden_note(int fd, uint64_t *blocks);
/* Every second: quarantine sessions whose TX file changed size or lost blocks. */
void harden_sweep(struct broker *b);

#endif
