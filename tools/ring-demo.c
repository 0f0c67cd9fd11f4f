/*
 * tools/ring-demo.c - a demo to watch: one producer and one consumer
 * process over a shared segment; the consumer is killed with SIGKILL
 * mid-stream several times and restarted from its acknowledged position
 * (rx_acked).  At the end it shows that nothing was lost, torn or
 * reordered, and how many messages were seen twice because they had been
 * read but not yet acknowledged at a kill.
 *
 * This is the shm layer alone; `make demo` moves to the broker once the
 * broker exists (docs/roadmap.md).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shm/atomics.h"
#include "shm/crc32c.h"
#include "shm/futex.h"
#include "shm/ring.h"
#include "shm/segment.h"

#define MESSAGES 1000000ull
#define ACK_EVERY 256
#define KILLS 6

struct demo_ctl {
	uint64_t prod_word;
	uint8_t pad0[56];
	uint64_t rx_acked;
	uint8_t pad1[56];
	uint32_t data_word, data_waiters, space_word, space_waiters;
	uint64_t next;       /* every message below this was received */
	uint64_t twice;      /* received again after a kill */
	uint64_t bad;        /* torn, reordered or missing */
};

static struct ring ring;
static struct demo_ctl *ctl;
static uint64_t t0;

static double now_s(void)
{
	return (double)(clock_mono_ns() - t0) / 1e9;
}

struct msg {
	uint64_t seq;
	uint32_t crc;
	char text[20];
};

static bool moved(void *arg)
{
	uint64_t *w = arg;

	return load_acquire((uint64_t *)w[0]) != w[1];
}

static void producer(void)
{
	struct ring_prod p;
	struct msg m;

	if (ring_prod_init(&p, &ring, &ctl->rx_acked, &ctl->prod_word, 0, 0, 1) < 0)
		_exit(1);
	for (uint64_t seq = 0; seq < MESSAGES; seq++) {
		int r;

		m.seq = seq;
		snprintf(m.text, sizeof(m.text), "message %llu", (unsigned long long)seq);
		m.crc = crc32c(0, m.text, sizeof(m.text));
		while ((r = ring_write(&p, &m, sizeof(m), SHM_REC_DATA)) == -EAGAIN) {
			uint64_t w[2] = { (uint64_t)(uintptr_t)&ctl->rx_acked, load_acquire(&ctl->rx_acked) };
			struct timespec d = deadline_in_ns(100 * 1000000ull);

			wake_wait(&ctl->space_word, &ctl->space_waiters, moved, w, 10000, &d);
		}
		if (r < 0)
			_exit(2);
		wake_signal(&ctl->data_word, &ctl->data_waiters);
		if (seq % 1000 == 999)
			usleep(1000); /* a paced stream, so the kills land mid-way */
	}
	_exit(0);
}

static void consumer(void)
{
	struct ring_cons c;
	struct ring_msg rm;
	unsigned unacked = 0;

	if (ring_cons_init(&c, &ring, &ctl->prod_word, &ctl->rx_acked, load_acquire(&ctl->rx_acked),
			   RING_SEQ_ANY, 1, 1) < 0)
		_exit(1);
	while (load_relaxed(&ctl->next) < MESSAGES) {
		struct msg m;
		int r = ring_peek(&c, &rm);

		if (r == -EAGAIN) {
			uint64_t w[2] = { (uint64_t)(uintptr_t)&ctl->prod_word, c.pos };
			struct timespec d = deadline_in_ns(100 * 1000000ull);

			wake_wait(&ctl->data_word, &ctl->data_waiters, moved, w, 20000, &d);
			continue;
		}
		if (r < 0 || rm.len != sizeof(m))
			_exit(3);
		memcpy(&m, rm.payload, sizeof(m));
		if (m.crc != crc32c(0, m.text, sizeof(m.text)) || m.seq > ctl->next)
			store_relaxed(&ctl->bad, ctl->bad + 1);
		else if (m.seq < ctl->next)
			store_relaxed(&ctl->twice, ctl->twice + 1);
		else
			store_release(&ctl->next, m.seq + 1);
		ring_consume(&c, &rm);
		/* acknowledge in batches: a kill re-shows what was not acknowledged */
		if (++unacked == ACK_EVERY) {
			ring_release(&c);
			wake_signal(&ctl->space_word, &ctl->space_waiters);
			unacked = 0;
		}
	}
	ring_release(&c);
	_exit(0);
}

static pid_t spawn(void (*fn)(void))
{
	pid_t pid = fork();

	if (pid == 0)
		fn();
	if (pid < 0) {
		perror("fork");
		exit(1);
	}
	return pid;
}

int main(void)
{
	struct segment seg = SEGMENT_INIT;
	pid_t prod, cons;
	int st;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (segment_create(-1, "ring-demo", segment_file_size(1u << 20), &seg) < 0 ||
	    ring_init(&ring, segment_ring_data(&seg), 1u << 20) < 0) {
		fprintf(stderr, "ring-demo: cannot create the segment\n");
		return 1;
	}
	ctl = (struct demo_ctl *)seg.base;
	t0 = clock_mono_ns();
	printf("shmb ring demo: two processes share one segment (a 1 MiB SPSC ring).\n"
	       "The consumer acknowledges every %d messages and is killed with SIGKILL %d times.\n\n",
	       ACK_EVERY, KILLS);
	prod = spawn(producer);
	printf("[%5.2fs] producer pid %d publishes %llu checksummed messages\n", now_s(), (int)prod,
	       MESSAGES);
	cons = spawn(consumer);
	printf("[%5.2fs] consumer pid %d starts at rx_acked=0\n", now_s(), (int)cons);
	for (int k = 0; k < KILLS; k++) {
		uint64_t at;

		usleep(250000 + (unsigned)(rand() % 200000));
		kill(cons, SIGKILL);
		waitpid(cons, &st, 0);
		at = load_acquire(&ctl->next);
		printf("[%5.2fs] SIGKILL consumer pid %d after message %llu\n", now_s(), (int)cons,
		       (unsigned long long)at);
		cons = spawn(consumer);
		printf("[%5.2fs] consumer pid %d restarts at rx_acked=%llu\n", now_s(), (int)cons,
		       (unsigned long long)load_acquire(&ctl->rx_acked));
	}
	waitpid(cons, &st, 0);
	waitpid(prod, &st, 0);
	printf("[%5.2fs] done\n\n", now_s());
	printf("sent      %llu\nreceived  %llu (in order, checksums good)\n"
	       "lost      %llu\ncorrupt or out of order  %llu\n"
	       "seen twice (read but not yet acknowledged at a kill)  %llu\n",
	       MESSAGES, (unsigned long long)ctl->next, (unsigned long long)(MESSAGES - ctl->next),
	       (unsigned long long)ctl->bad, (unsigned long long)ctl->twice);
	printf("\n%s\n", ctl->next == MESSAGES && ctl->bad == 0 ? "OK: nothing lost." : "FAILED");
	return ctl->next == MESSAGES && ctl->bad == 0 ? 0 : 1;
}
