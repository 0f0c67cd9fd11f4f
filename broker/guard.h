/*
 * broker/guard.h - the SIGBUS guard over client-writable mappings
 * (guard.c): a mapping that faults is replaced by anonymous memory and
 * its session quarantined.
 */
#ifndef BROKER_GUARD_H
#define BROKER_GUARD_H

#include <stddef.h>

struct broker;
struct session;

int guard_init(void);
int guard_add(void *base, size_t len, struct session *s);
void guard_remove(void *base);
void guard_check(struct broker *b);

#endif
