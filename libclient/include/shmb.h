/*
 * shmb.h - the public API of libshmb, the shmb client library.
 *
 * Functions return 0 (or a documented non-negative value) on success and
 * a negative errno on failure.  Only symbols starting with shmb_ are
 * exported; everything else in the library is hidden.
 *
 * This first version carries the library's identity only; sessions,
 * publishing and receiving arrive with the broker (docs/api.md).
 */
#ifndef SHMB_H
#define SHMB_H

#ifdef __cplusplus
extern "C" {
#endif

#define SHMB_VERSION_MAJOR 0
#define SHMB_VERSION_MINOR 1
#define SHMB_VERSION_PATCH 0

/* The library's version as "major.minor.patch".  Thread-safe; never fails. */
const char *shmb_version(void);

/* The segment layout version this library reads and writes.  Thread-safe. */
unsigned shmb_layout_version(void);

/*
 * A short English description of a negative errno returned by a shmb_
 * function (shmb_strerror(-EAGAIN)).  Thread-safe; returns a static string,
 * "unknown error" for values it does not know.
 */
const char *shmb_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif
