/*
 * Checks shared by the C test programs: each failure says what failed and exits 1.
 * A program defines CHECK_PROG (its name, for the messages) before including this; the
 * functions are static inline, so a program need not use them all.
 */
#ifndef XRDMA_TESTS_CHECK_H
#define XRDMA_TESTS_CHECK_H

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline void fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: FAILED: ", CHECK_PROG);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* An `int` verb's result: 0, or an errno value. */
static inline void check_rc(int rc, const char *what)
{
	if (rc != 0)
		fail("%s: %s (%d)", what, strerror(rc), rc);
}

/* A constructor's result: non-NULL, or NULL with errno. */
static inline void *check_ptr(void *p, const char *what)
{
	if (p == NULL)
		fail("%s: %s", what, strerror(errno));
	return p;
}

static inline long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
