/*
 * tap.h: a small Test Anything Protocol emitter for sluice's C unit tests.
 *
 *   plan(3); ok(x == 1, "x is one"); is_int(a, b, "..."); is_str(s, "..",
 *   ".."); return done_testing();
 *
 * Header-only: each test program includes it once. done_testing() returns
 * the exit status prove expects (0 when every test passed).
 */
#ifndef SLUICE_TAP_H
#define SLUICE_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int tap_run, tap_failed, tap_planned = -1;

static inline void
plan(int n)
{
    tap_planned = n;
    printf("1..%d\n", n);
}

static inline int __attribute__((format(printf, 2, 3)))
ok(int cond, const char *fmt, ...)
{
    va_list ap;

    tap_run++;
    if (!cond)
        tap_failed++;
    printf("%sok %d - ", cond ? "" : "not ", tap_run);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    return cond;
}

static inline void __attribute__((format(printf, 1, 2)))
diag(const char *fmt, ...)
{
    va_list ap;

    printf("# ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

#define is_int(got, want, ...)                                                 \
    do {                                                                       \
        long long g_ = (long long)(got), w_ = (long long)(want);               \
        if (!ok(g_ == w_, __VA_ARGS__))                                        \
            diag("  got %lld, want %lld", g_, w_);                             \
    } while (0)

#define is_str(got, want, ...)                                                 \
    do {                                                                       \
        const char *g_ = (got), *w_ = (want);                                  \
        int same_ = (g_ && w_) ? strcmp(g_, w_) == 0 : g_ == w_;               \
        if (!ok(same_, __VA_ARGS__))                                           \
            diag("  got '%s', want '%s'", g_ ? g_ : "(null)",                  \
                 w_ ? w_ : "(null)");                                          \
    } while (0)

static inline int
done_testing(void)
{
    if (tap_planned < 0)
        printf("1..%d\n", tap_run);
    else if (tap_planned != tap_run)
        printf("# planned %d tests but ran %d\n", tap_planned, tap_run);
    fflush(stdout);
    return tap_failed || (tap_planned >= 0 && tap_planned != tap_run);
}

#endif
