/*
 * tests/exit-client.c - a session owner that goes away in a chosen way,
 * for the crash-forensics tests (test-shmbctl.sh).  Built like a user's
 * program: public header and libshmb.so only.
 *
 *   exit-client SESSION exit N         open SESSION, then exit(N) from main
 *   exit-client SESSION thread-exit N  ... then exit(N) from a second thread
 *   exit-client SESSION signal SIG     ... then raise(SIG) (a number)
 *   exit-client SESSION wait           ... then wait to be killed
 *   exit-client SESSION close          ... then close the session and stay
 *                                      alive until killed
 *   exit-client SESSION hold           fork a child that opens SESSION and
 *                                      waits to be killed; reap it only when
 *                                      a line (or EOF) comes on stdin, then
 *                                      print "reaped"
 *
 * Prints "ready" once the session is open (and, for close, closed); hold
 * prints "ready PID" with the child's pid.
 * Exits 1 if it cannot open the session.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <shmb.h>

static int code;

static void *exiter(void *arg)
{
	(void)arg;
	exit(code);
}

int main(int argc, char **argv)
{
	struct shmb_session *s;
	struct shmb_client *c;
	pthread_t t;
	int r;

	if (argc < 3)
		return 2;
	if (!strcmp(argv[2], "hold")) {
		/* the child says it is ready through a pipe; nothing here reaps
		 * it before stdin says so (a shell would, at its next command) */
		int p[2];
		char line[64];
		pid_t child;

		if (pipe(p) < 0)
			return 1;
		child = fork();
		if (child < 0)
			return 1;
		if (child == 0) {
			close(p[0]);
			dup2(p[1], 1);
			argv[2] = "wait";
			return main(argc, argv);
		}
		close(p[1]);
		if (read(p[0], line, sizeof(line)) < 5)
			return 1;
		printf("ready %d\n", (int)child);
		fflush(stdout);
		(void)!fgets(line, sizeof(line), stdin);
		waitpid(child, NULL, 0);
		printf("reaped\n");
		return 0;
	}
	r = shmb_connect(NULL, &c);
	if (r == 0)
		r = shmb_session_open(c, argv[1], NULL, &s);
	if (r < 0) {
		fprintf(stderr, "exit-client: %s\n", shmb_strerror(r));
		return 1;
	}
	if (!strcmp(argv[2], "close") && shmb_session_close(s) < 0)
		return 1;
	printf("ready\n");
	fflush(stdout);
	code = argc > 3 ? atoi(argv[3]) : 0;
	if (!strcmp(argv[2], "exit"))
		exit(code);
	if (!strcmp(argv[2], "thread-exit")) {
		if (pthread_create(&t, NULL, exiter, NULL) != 0)
			return 1;
		for (;;)
			pause();
	}
	if (!strcmp(argv[2], "signal")) {
		signal(code, SIG_DFL);
		raise(code);
		return 1;
	}
	for (;;)
		pause();
}
