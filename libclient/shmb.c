/*
 * libclient/shmb.c - library identity and error strings.
 */
#include <errno.h>
#include <string.h>

#include "shm/layout.h"
#include "shmb.h"

#define SHMB_EXPORT __attribute__((visibility("default")))
#define STR_(x) #x
#define STR(x) STR_(x)

SHMB_EXPORT const char *shmb_version(void)
{
	return STR(SHMB_VERSION_MAJOR) "." STR(SHMB_VERSION_MINOR) "." STR(SHMB_VERSION_PATCH);
}

SHMB_EXPORT unsigned shmb_layout_version(void)
{
	return SHM_LAYOUT_VERSION;
}

SHMB_EXPORT const char *shmb_strerror(int err)
{
	switch (-err) {
	case 0: return "success";
	case EAGAIN: return "would block: try again";
	case EBADMSG: return "corrupt record or segment";
	case ESTALE: return "session fenced off: a newer owner took it over, an admin kicked it, or it was deleted";
	case EMSGSIZE: return "message larger than the ring allows";
	case EINVAL: return "invalid argument";
	case ETIMEDOUT: return "timed out";
	case EPERM: return "not permitted";
	case EBUSY: return "session is attached to a live owner";
	case EPROTONOSUPPORT: return "unsupported layout or protocol version";
	case ENOMEM: return "out of memory";
	case EPIPE: return "the broker went away";
	case ENOENT: return "no such session, topic or broker";
	case ECONNREFUSED: return "no broker listens there";
	case EACCES: return "permission denied";
	case EDQUOT: return "a per-uid limit is reached (sessions, topics or segment memory)";
	case EPROTO: return "protocol error";
	case EOPNOTSUPP: return "not supported by this broker";
	case ENAMETOOLONG: return "path or name too long";
	case ENOTCONN: return "not connected: the broker is away, or detached this session";
	case ENOSPC: return "the broker is out of room for sessions";
	default: return "unknown error";
	}
}
