/*
 * shm/hold.h - a lane's hold table (docs/design/data-path.md, section 3):
 * the broker's side (entries added, floors raised, entries freed, the
 * floor protocol and the take-over of a held position) and the writer's
 * side (an entry read between two equal tags).
 *
 * The broker is the only writer of the table; the lane's writer maps it
 * read-only.  Pure functions over mapped memory: files, descriptors and
 * the choice of who holds what belong to the callers.
 */
#ifndef SHM_HOLD_H
#define SHM_HOLD_H

#include <stdbool.h>
#include <stdint.h>

#include "shm/lane.h"
#include "shm/ring.h"

/* Every lane record carries this generation: a lane is one writer
 * generation's, so the ring's generation check has nothing to tell
 * apart (the lane's meta names the owner generation). */
#define LANE_REC_GEN 1u

/* A mapped hold file. */
struct hold_table {
	struct shm_hold_hdr *hdr;
	struct shm_hold_ent *ent; /* SHM_HOLD_MAX of them */
};

void hold_table_init(struct hold_table *t, void *base);

/* What an entry says, as the writer read it between equal tags. */
struct hold_view {
	uint64_t tag;
	uint32_t kind;
	uint32_t page, slot;
	uint32_t arm_page, arm_slot;
	uint64_t reader;
};

/* ---- the broker's side ---------------------------------------------------- */

/* Add an entry with its floor: fields while the slot is free, the tag
 * live (release), n raised, version + 1 (release).  Returns its index or
 * -ENOSPC.  The caller then runs hold_start() (a new holder) or
 * hold_takeover() (a moved one) before it relies on the floor. */
int hold_add(struct hold_table *t, const struct hold_view *v, uint64_t floor);

/* Raise an entry's floor (one 8-byte store; a lower value is ignored). */
void hold_raise(struct hold_table *t, unsigned idx, uint64_t floor);

/* Free an entry: its tag without the live bit, version + 1. */
void hold_free(struct hold_table *t, unsigned idx);

/* The floor an entry has now (the broker's own copy is authoritative). */
uint64_t hold_floor(const struct hold_table *t, unsigned idx);

/*
 * The committed end of a lane as the broker finds it: walk valid commit
 * words (acquire) from `from` (a record boundary the broker trusts, or
 * the writer's checked `committed` hint) for at most a lap.  Fills *end
 * and *seq (the lane sequence there, or RING_SEQ_ANY when nothing was
 * walked and `seq` was unknown).  -EBADMSG: a bad record; the lane is bad.
 */
int lane_walk_end(const struct ring *r, uint64_t from, uint64_t seq, uint64_t *end,
		  uint64_t *seq_out);

/*
 * The committed end of a lane its writer may be lapping (no holder stops
 * it): the walk of lane_walk_end() from max(known, the writer's checked
 * `reclaim`, its `committed` hint when within a lap of that), tried again
 * when `reclaim` passed the walk (it read records being overwritten).
 * `known` is a boundary the broker found before (0 for a new lane).
 * -EBADMSG: a bad record that no reclaim explains.
 */
int lane_find_end(const struct ring *r, const struct shm_lane_wpage *wp, uint64_t known,
		  uint64_t *end);

/*
 * The order of the last record before `end`, where the broker fenced the
 * lane (nothing is committed at or after it any more): committed records
 * walked from the writer's checked `reclaim` up to exactly `end`, the
 * last one remembered (the writer writes only from its committed end to
 * a lap past `reclaim`, so an honest writer never wrote over them), tried
 * again when `reclaim` moved under the walk (a fenced writer still
 * reserving).  With `reclaim` at the end itself (a writer stopped after
 * it reclaimed everything it committed) the walk starts at `known`, a
 * boundary the broker found before.  0 and *order (0 for a lane with no
 * record) and *lane_seq (the lane sequence at `end`, 0 when not known);
 * -ENOENT: no start below the end to walk from (*order 0);
 * -EBADMSG: a record fails its checks (its type, its lane header, an
 * order not above the one before, a walk that misses `end`), *order the
 * highest one walked before it.  Every byte is the writer's: a lie gives
 * a wrong order, never a read outside the ring.
 */
int lane_last_order(const struct ring *r, const struct shm_lane_wpage *wp, uint64_t known,
		    uint64_t end, uint64_t *order, uint64_t *lane_seq);

/*
 * The floor protocol's second half, for entry idx just added at floor P
 * (the committed end): fence, load the writer's `reclaim` (checked:
 * aligned; above P it is believed, however far: a writer nobody held
 * may have lapped P since), raise the floor to S = max(P, reclaim) and
 * return S, where the new holder starts.
 */
uint64_t hold_start(struct hold_table *t, unsigned idx, const struct shm_lane_wpage *wp,
		    uint64_t P);

/*
 * Move a hold from entry `old` to entry `new` (added with old's floor):
 * fence, load `reclaim` and old's cursor slot `slot` (NULL: none, as for
 * a SPILL or LINK entry), walk commit words from max(floor, reclaim) to
 * the last record boundary at or below the slot, raise new's floor to
 * that and return it.  The caller frees `old` after its own commit point.
 * -EBADMSG: a bad record at or above max(floor, reclaim) (the lane's
 * fault).
 */
int hold_takeover(struct hold_table *t, unsigned old, unsigned new, const struct shm_lane_wpage *wp,
		  const struct ring *r, const uint64_t *slot, uint64_t *start);

/* ---- the writer's side ---------------------------------------------------- */

/* Read entry idx between equal live tags: true and *v filled, false when
 * free or changing under the read. */
bool hold_read(const struct hold_table *t, unsigned idx, struct hold_view *v);

#endif
