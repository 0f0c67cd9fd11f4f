/*
 * tests/unit/test-fault-proxy.c - the remote-link tests' misbehaving
 * proxy (tests/fault-proxy.h) against a TCP echo server on loopback: it
 * passes a megabyte both ways intact; stalls (holding bytes, not losing
 * them); drops one direction; cuts with a FIN and with a reset.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fault-proxy.h"
#include "harness.h"

static int echo_lfd;

static void *echo_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[65536];
	ssize_t n;

	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
		if (send(fd, buf, (size_t)n, MSG_NOSIGNAL) != n)
			break;
	close(fd);
	return NULL;
}

static void *echo_main(void *arg)
{
	int fd;

	(void)arg;
	while ((fd = accept(echo_lfd, NULL, NULL)) >= 0) {
		pthread_t t;

		if (pthread_create(&t, NULL, echo_conn, (void *)(intptr_t)fd) == 0)
			pthread_detach(t);
		else
			close(fd);
	}
	return NULL;
}

static uint16_t echo_start(pthread_t *t)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);

	echo_lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (bind(echo_lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(echo_lfd, 16) < 0 ||
	    getsockname(echo_lfd, (struct sockaddr *)&a, &len) < 0)
		return 0;
	pthread_create(t, NULL, echo_main, NULL);
	return ntohs(a.sin_port);
}

static int dial(uint16_t port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Bytes that arrive on fd within ms (up to want). */
static ssize_t read_for(int fd, char *buf, size_t want, int ms, int *err)
{
	size_t got = 0;

	*err = 0;
	while (got < want) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&pf, 1, ms) <= 0)
			break;
		n = recv(fd, buf + got, want - got, 0);
		if (n < 0)
			*err = errno;
		if (n <= 0)
			return n < 0 ? -1 : (ssize_t)got;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

static void test_modes(void)
{
	static char out[1 << 20], in[1 << 20];
	struct fp_stats st;
	pthread_t echo;
	uint16_t eport = echo_start(&echo), pport = 0;
	struct fproxy *p = fproxy_start(eport, &pport);
	int fd, err;

	CU_ASSERT_FATAL(eport && p);
	for (size_t i = 0; i < sizeof(out); i++)
		out[i] = (char)(i * 31 + 7);
	/* pass: a megabyte there and back, intact */
	fd = dial(pport);
	CU_ASSERT_FATAL(fd >= 0);
	{
		for (size_t off = 0; off < sizeof(out);) {
			ssize_t n = send(fd, out + off, sizeof(out) - off < 65536 ? sizeof(out) - off : 65536, 0);
			ssize_t r;

			CU_ASSERT_FATAL(n > 0);
			r = read_for(fd, in + off, (size_t)n, 5000, &err);
			CU_ASSERT_FATAL(r == n);
			off += (size_t)n;
		}
	}
	CU_ASSERT(memcmp(in, out, sizeof(out)) == 0);
	fproxy_stats(p, &st);
	CU_ASSERT(st.accepted == 1 && st.up == sizeof(out) && st.down == sizeof(out) && st.dropped == 0);

	/* stall: nothing comes back; then pass: what was held arrives */
	fproxy_mode(p, FP_STALL);
	CU_ASSERT(send(fd, "stalled", 7, 0) == 7);
	CU_ASSERT(read_for(fd, in, 7, 200, &err) == 0);
	fproxy_mode(p, FP_PASS);
	CU_ASSERT(read_for(fd, in, 7, 5000, &err) == 7 && !memcmp(in, "stalled", 7));

	/* drop what the dialer sends: no echo; the bytes are counted as dropped */
	fproxy_mode(p, FP_DROP_UP);
	CU_ASSERT(send(fd, "lost-up", 7, 0) == 7);
	CU_ASSERT(read_for(fd, in, 7, 200, &err) == 0);
	fproxy_stats(p, &st);
	CU_ASSERT(st.dropped == 7);
	/* drop the answers: the echo server gets it, the dialer does not */
	fproxy_mode(p, FP_DROP_DOWN);
	CU_ASSERT(send(fd, "lost-down", 9, 0) == 9);
	CU_ASSERT(read_for(fd, in, 9, 200, &err) == 0);
	fproxy_stats(p, &st);
	CU_ASSERT(st.dropped == 16 && st.up == sizeof(out) + 7 + 9);
	fproxy_mode(p, FP_PASS);
	CU_ASSERT(send(fd, "again", 5, 0) == 5);
	CU_ASSERT(read_for(fd, in, 5, 5000, &err) == 5 && !memcmp(in, "again", 5));

	/* close: the dialer sees EOF; a new connection passes */
	fproxy_mode(p, FP_CLOSE);
	CU_ASSERT(read_for(fd, in, 1, 5000, &err) == 0 && err == 0);
	close(fd);
	fd = dial(pport);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT(send(fd, "new", 3, 0) == 3);
	CU_ASSERT(read_for(fd, in, 3, 5000, &err) == 3);
	/* reset: the dialer sees ECONNRESET */
	fproxy_mode(p, FP_RESET);
	CU_ASSERT(read_for(fd, in, 1, 5000, &err) == -1 && err == ECONNRESET);
	close(fd);
	fproxy_stats(p, &st);
	CU_ASSERT(st.accepted == 2 && st.cut == 2);
	fproxy_stop(p);
	shutdown(echo_lfd, SHUT_RDWR);
	close(echo_lfd);
	pthread_join(echo, NULL);
}

static const struct harness_test tests[] = {
	{ "modes", test_modes },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "fault-proxy", tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	return harness_main("test-fault-proxy", suites, argc, argv);
}
