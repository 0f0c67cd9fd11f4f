/*
 * pubsub.c - a small publisher and subscriber on the shmb client API.
 *
 * It shows how to connect to the broker, open a session, subscribe,
 * publish, receive with a timeout, and acknowledge a message only after it
 * has been handled: a subscriber that crashes and is started again with the
 * same session name sees again only what it had not acknowledged, and
 * recognises it by its (src_session, src_seq).
 *
 *   pubsub sub TOPIC SESSION [IDLE]
 *                              open the named session SESSION, subscribe it
 *                              to TOPIC and print every message; exit after
 *                              IDLE seconds without one (default 2; 0: never)
 *   pubsub pub TOPIC N         publish "hello 1" ... "hello N" on TOPIC
 *
 * Start the subscriber first: a session receives what is published after
 * it has subscribed.  Both find the broker through $SHMB_DIR (default
 * /run/shmb).  Build with
 *
 *   cc -std=c11 pubsub.c $(pkg-config --cflags --libs shmb)
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep(), getpid() under -std=c11 */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <shmb.h>


_Noreturn static void die(const char *what, int err)
{
	fprintf(stderr, "pubsub: %s: %s\n", what, shmb_strerror(err));
	exit(1);
}

_Noreturn static void usage(void)
{
	fprintf(stderr, "usage: pubsub pub TOPIC N\n"
			"       pubsub sub TOPIC SESSION [IDLE_SECONDS]\n");
	exit(2);
}

static int publisher(struct shmb_client *c, const char *topic, long n)
{
	/* a session of its own, destroyed by the broker if this process dies */
	struct shmb_session_opts o = { .policy = SHMB_POLICY_DEFAULT, .flags = SHMB_EPHEMERAL };
	struct shmb_session *s;
	char name[32], msg[32];
	int r;

	snprintf(name, sizeof(name), "pubsub-pub-%d", (int)getpid());
	r = shmb_session_open(c, name, &o, &s);
	if (r < 0)
		die("open session", r);

	for (long i = 1; i <= n; i++) {
		int len = snprintf(msg, sizeof(msg), "hello %ld", i);

		/* wait as long as it takes for room in the TX ring */
		r = shmb_publish(s, topic, msg, (size_t)len, -1);
		if (r < 0)
			die("publish", r);
	}

	/* published is already safe; this waits until the broker routed it all */
	r = shmb_flush(s, 5000);
	if (r < 0)
		die("flush", r);
	r = shmb_session_destroy(s);
	if (r < 0)
		die("destroy session", r);
	return 0;
}

static int subscriber(struct shmb_client *c, const char *topic, const char *session, int idle_ms)
{
	struct timespec pause = { .tv_nsec = 100 * 1000 * 1000 };
	struct shmb_session *s;
	struct shmb_msg m;
	int r;

	/* -EAGAIN: an earlier owner's messages are still being delivered */
	for (int tries = 0; (r = shmb_session_open(c, session, NULL, &s)) == -EAGAIN && tries < 50;
	     tries++)
		nanosleep(&pause, NULL);
	if (r < 0)
		die("open session", r);

	/* subscribing again to a topic the session already has is harmless */
	r = shmb_subscribe(s, topic);
	if (r < 0)
		die("subscribe", r);

	while ((r = shmb_recv(s, &m, idle_ms)) == 0) {
		/* m.data is valid until the next shmb_recv() or shmb_ack() */
		printf("%.*s (src_session %" PRIu64 ", src_seq %" PRIu64 ")\n", (int)m.len,
		       (const char *)m.data, m.src_session, m.src_seq);
		if (fflush(stdout) != 0) {
			perror("pubsub: stdout");
			exit(1);
		}

		/* handled: it will not be delivered again */
		r = shmb_ack(s);
		if (r < 0)
			die("ack", r);
	}
	if (r != -ETIMEDOUT)
		die("receive", r);

	/* detach: the broker keeps the session, and a later run resumes it */
	r = shmb_session_close(s);
	if (r < 0)
		die("close session", r);
	return 0;
}

int main(int argc, char **argv)
{
	struct shmb_client *c;
	int r, rc;

	if (argc < 4 || argc > 5 || (argc == 5 && strcmp(argv[1], "sub")))
		usage();

	r = shmb_connect(NULL, &c);
	if (r < 0)
		die("connect", r);

	if (!strcmp(argv[1], "pub")) {
		char *end;
		long n = strtol(argv[3], &end, 10);

		if (*argv[3] == '\0' || *end != '\0' || n < 0)
			usage();
		rc = publisher(c, argv[2], n);
	} else if (!strcmp(argv[1], "sub")) {
		char *end = "";
		long idle = argc == 5 ? strtol(argv[4], &end, 10) : 2;

		if (*end != '\0' || idle < 0 || idle > 86400)
			usage();
		/* a timeout of -1 waits as long as it takes */
		rc = subscriber(c, argv[2], argv[3], idle ? (int)idle * 1000 : -1);
	} else {
		usage();
	}

	shmb_close(c);
	return rc;
}
