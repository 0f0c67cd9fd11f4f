/*
 * broker/array.h - how the broker's tables grow: room for one more
 * element, doubling from a first capacity.
 */
#ifndef BROKER_ARRAY_H
#define BROKER_ARRAY_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Room for element n of *arrp (a pointer to the array's pointer), whose
 * capacity is *cap elements of size bytes: 0, or -ENOMEM (the array is
 * then as it was). */
static inline int array_room_(void *arrp, unsigned n, unsigned *cap, size_t size, unsigned first)
{
	unsigned c = *cap ? 2 * *cap : first;
	void *arr, *grown;

	if (n < *cap)
		return 0;
	memcpy(&arr, arrp, sizeof(arr));
	grown = realloc(arr, (size_t)c * size);
	if (!grown)
		return -ENOMEM;
	memcpy(arrp, &grown, sizeof(grown));
	*cap = c;
	return 0;
}

/* ARRAY_ROOM(t->subs, t->nsubs, t->cap, 8): room for t->subs[t->nsubs]. */
#define ARRAY_ROOM(arr, n, cap, first) array_room_(&(arr), (n), &(cap), sizeof(*(arr)), (first))

#endif
