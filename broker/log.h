/*
 * broker/log.h - shmbd's log (stderr, one line per event, with a level),
 * and the short lists of recent events that sessions and links keep for
 * shmbctl.
 */
#ifndef BROKER_LOG_H
#define BROKER_LOG_H

#include <stdarg.h>
#include <stdint.h>

enum log_level { LOG_ERR = 3, LOG_WARNING = 4, LOG_NOTICE = 5, LOG_INFO = 6, LOG_DEBUG = 7 };
void log_set_level(int level);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One recent event of a session or a link (shmbctl session NAME, links NAME). */
struct log_event {
	uint64_t time_ns;      /* CLOCK_REALTIME */
	char text[120];
};

/* Fill e: now, and the text. */
void log_event_put(struct log_event *e, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

#endif
