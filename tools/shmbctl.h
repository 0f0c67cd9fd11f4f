/*
 * tools/shmbctl.h - what the two halves of shmbctl share: shmbctl.c (the
 * command line, pub and sub) and shmbctl-admin.c (the admin verbs).
 * Private to the tool; nothing outside tools/ includes it.
 *
 * Must never: declare anything the library offers (shmb.h is the API) or
 * hold state: both halves read the options through struct adm only.
 */
#ifndef TOOLS_SHMBCTL_H
#define TOOLS_SHMBCTL_H

#include <stdbool.h>

struct shmb_client;

/* The admin verbs' options, as the command line set them. */
struct adm {
	bool json, watch, del, have_uid;
	unsigned uid;
	double interval;
	long count;
	const char *name; /* links NAME: the one link shown */
};

/* shmbctl.c: "shmbctl: WHAT: reason" on stderr; both return 1 (exit status). */
int shmbctl_die(const char *what, int err);
int shmbctl_open_failed(const char *name, int r);

/* shmbctl-admin.c: one verb each, the exit status (0 done, 1 error).
 * dir: the broker's directory as status shows it. */
int admin_status(struct shmb_client *c, const char *dir, const struct adm *a);
int admin_sessions(struct shmb_client *c, const struct adm *a);
int admin_session(struct shmb_client *c, const char *name, const struct adm *a);
int admin_topics(struct shmb_client *c, const struct adm *a);
int admin_links(struct shmb_client *c, const struct adm *a);
int admin_lanes(struct shmb_client *c, const struct adm *a);
int admin_kick(struct shmb_client *c, const char *name, const struct adm *a);

#endif
