/*
 * tests/fault-proxy.h - a TCP proxy for the remote-link tests (issue 6)
 * that misbehaves on command: it sits between a dialer and a listener on
 * loopback and, per mode, passes bytes, cuts every connection with a FIN
 * or a reset, stalls (accepts, then moves nothing), or drops the bytes of
 * one direction.  One thread; every byte it moves or drops is counted.
 */
#ifndef TESTS_FAULT_PROXY_H
#define TESTS_FAULT_PROXY_H

#include <stdint.h>

enum fp_mode {
	FP_PASS = 0,       /* move bytes both ways */
	FP_CLOSE = 1,      /* close every connection (FIN), accept new ones in PASS */
	FP_RESET = 2,      /* the same with a reset (RST) */
	FP_STALL = 3,      /* keep every connection, move nothing (a silent peer) */
	FP_DROP_UP = 4,    /* drop what the dialer sends; pass the other way */
	FP_DROP_DOWN = 5,  /* drop what the listener sends; pass the other way */
};

struct fp_stats {
	uint64_t accepted;  /* connections from dialers */
	uint64_t up, down;  /* bytes moved dialer -> listener, listener -> dialer */
	uint64_t dropped;   /* bytes read and thrown away */
	uint64_t cut;       /* connections closed or reset by the proxy */
};

struct fproxy;

/* Listen on 127.0.0.1 (a free port, returned in *port) and forward to
 * 127.0.0.1:target.  NULL on failure. */
struct fproxy *fproxy_start(uint16_t target, uint16_t *port);
/* Switch mode, in force when it returns; FP_CLOSE and FP_RESET cut the
 * connections open now, then pass again. */
void fproxy_mode(struct fproxy *p, enum fp_mode m);
void fproxy_stats(struct fproxy *p, struct fp_stats *s);
void fproxy_stop(struct fproxy *p);

#endif
