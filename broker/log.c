/*
 * broker/log.c - one line per event on stderr, with a syslog-style
 * "<N>" level prefix that journald understands, then a word for people.
 */
#include <stdarg.h>
#include <stdio.h>

#include "broker/broker.h"
#include "broker/log.h"
#include "shm/clock.h"

static int log_level = LOG_INFO;

void log_set_level(int level)
{
	log_level = level;
}

void log_msg(int level, const char *fmt, ...)
{
	static const char *const names[] = { "emerg", "alert", "crit", "error",
					     "warning", "notice", "info", "debug" };
	char line[1024];
	va_list ap;

	if (level > log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "<%d>shmbd: %s: %s\n", level, names[level & 7], line);
}

void log_event_put(struct log_event *e, const char *fmt, va_list ap)
{
	e->time_ns = clock_real_ns();
	vsnprintf(e->text, sizeof(e->text), fmt, ap);
}
