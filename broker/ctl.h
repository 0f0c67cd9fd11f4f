/*
 * broker/ctl.h - the control socket and its connections (ctl.c): HELLO,
 * sessions, topics, subscriptions, status and the admin verbs.
 */
#ifndef BROKER_CTL_H
#define BROKER_CTL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct broker;

struct conn {
	int slot;
	int fd;
	int pidfd;
	uint32_t slot_gen;
	uid_t uid;
	pid_t pid;
	bool hello;
	bool lanes;            /* it said PROTO_HELLO_LANES: lane messages may be pushed to it */
	bool dead;
	uint64_t accepted_ns;  /* a connection that says no HELLO in time is closed */
};

int ctl_listen(struct broker *b);
void ctl_accepted(struct broker *b, int fd);
void ctl_readable(struct broker *b, struct conn *c);
void ctl_close(struct broker *b, struct conn *c, const char *why);
void ctl_push_event(struct broker *b, struct conn *c, uint32_t kind, uint64_t session_id);
void ctl_expire(struct broker *b, uint64_t now);

#endif
