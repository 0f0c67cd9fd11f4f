/*
 * broker/breader.c - the broker as a reader of lanes (breader.h).
 *
 * Must never: sleep without arming first and looking after the fence (a
 * writer's commit between the look and the wait would not wake it).
 */
#include <errno.h>

#include "broker/breader.h"

#include "broker/broker.h"
#include "broker/lanes.h"
#include "broker/log.h"
#include "broker/loop.h"
#include "broker/uring-futex.h"
#include "libclient/laneset.h"
#include "shm/atomics.h"
#include "shm/clock.h"
#include "shm/lane-rw.h"

/* A writer can bump the reader's rx_wake at will (it maps it to wake it):
 * this many wake-ups in a window that brought records for fewer than
 * half of them, and the reader sleeps unarmed for a while, looked at
 * every ms instead. */
#define NOISY_WAKES 100u
#define NOISY_WINDOW_NS 200000000ull
#define NOISY_BACKOFF_NS 200000000ull
#define NOISY_POLL_NS 1000000ull

int breader_push(struct laneset *set, const struct lpush *p, const char *who)
{
	const struct proto_lane *m = &p->msg.lane;
	int page_fd = -1, wake_fd = -1, ret;
	struct laneset_desc d;

	if (p->msg.h.type != PROTO_LANE || m->lane == 0)
		return 0;
	if (laneset_push_desc(m, p->fds, p->nfds, &d, &page_fd, &wake_fd) < 0) {
		log_msg(LOG_ERR, "%s: lane %u came with %u descriptors, not what its flags say:"
			" not read", who, m->lane, p->nfds);
		return -EINVAL;
	}
	/* let go at an unsubscribe: it reads on without holding */
	if (m->flags & PROTO_LANE_RELEASED)
		return laneset_released(set, m->lane);
	/* copied out before anyone takes it: never read in place */
	d.in_place = d.drop_oldest = false;
	/* a page or lane it has already (a resend) is refused: nothing to do */
	if (page_fd >= 0)
		(void)laneset_cursor_page(set, m->publisher, m->page, page_fd);
	if ((m->flags & PROTO_LANE_REHOLD) && laneset_rehold(set, &d) != -ENOENT)
		return 0;
	ret = laneset_add(set, &d, p->fds[0], p->fds[1], wake_fd);
	if (ret == -EEXIST && wake_fd >= 0)
		(void)laneset_set_tx_wake(set, m->lane, wake_fd);
	else if (ret < 0 && ret != -EEXIST) {
		log_msg(LOG_WARNING, "%s: lane %u not read: %s", who, m->lane, set->why);
		return ret;
	}
	return 0;
}

void lwait_init(struct lwait *w)
{
	*w = (struct lwait){ .arm_seq = clock_mono_ns() };
}

bool lwait_backed_off(struct lwait *w, uint64_t now, const char *who)
{
	if (now - w->win_start >= NOISY_WINDOW_NS) {
		if (w->win_wakes > NOISY_WAKES && w->win_moved < w->win_wakes / 2) {
			if (now >= w->backoff_until && who)
				log_msg(LOG_WARNING, "%s: a lane writer wakes the broker's reader of"
					" lanes with no records (%u wake-ups, %llu records in %llu"
					" ms): backed off, looked at every ms", who, w->win_wakes,
					(unsigned long long)w->win_moved,
					(unsigned long long)(NOISY_WINDOW_NS / 1000000));
			w->backoff_until = now + NOISY_BACKOFF_NS;
			w->backoffs++;
		}
		w->win_start = now;
		w->win_wakes = 0;
		w->win_moved = 0;
	}
	return now < w->backoff_until;
}

bool lwait_arm(struct lwait *w, struct lreader *r)
{
	if (!r || !r->arm)
		return false;
	w->armed_value = load_acquire(r->rx_wake);
	w->arm_seq += 1 + !(w->arm_seq + 1); /* fresh, never 0 */
	lane_arm(r->arm->map, r->arm_slot, w->arm_seq);
	/* pairs with the writer's fence between its commit and its look at
	 * the bits: it sees the arm, or the caller's look sees the record */
	fence_full();
	return true;
}

void lwait_sleep(struct broker *b, struct lwait *w, struct lreader *r, uint64_t user_data)
{
	struct io_uring_sqe *sqe;

	if (!b->uring_futex || w->futex_armed || !r)
		return;
	sqe = loop_sqe(b);
	if (!sqe)
		return;
	uring_prep_futex_wait(sqe, r->rx_wake, w->armed_value);
	io_uring_sqe_set_data64(sqe, user_data);
	w->futex_armed = true;
}

void lwait_done(struct lwait *w)
{
	w->futex_armed = false;
	w->win_wakes++;
}

void lwait_woke(struct lreader *r)
{
	if (r && r->arm)
		lane_disarm(r->arm->map, r->arm_slot);
}

uint64_t lwait_poll_ns(const struct lwait *w, uint64_t now)
{
	return now < w->backoff_until ? NOISY_POLL_NS : 0;
}
