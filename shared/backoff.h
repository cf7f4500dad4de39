/*
 * backoff.h: capped exponential backoff with jitter, for reconnecting to
 * Redis and PostgreSQL after a fault.
 *
 * The delay starts at min_ms, doubles after every failed attempt up to
 * max_ms, and each wait is drawn at random from the upper half of the
 * current delay, so that many workers that lost the same server do not
 * reconnect in lock step.
 */
#ifndef SLUICE_BACKOFF_H
#define SLUICE_BACKOFF_H

#include <stdint.h>

struct backoff {
    long min_ms;
    long max_ms;
    long cur_ms;       /* the delay the next wait is drawn from */
    unsigned attempts; /* failed attempts since the last reset */
    uint64_t rng;      /* xorshift state for the jitter */
};

/* Start a backoff between min_ms and max_ms (max below min is raised to
 * min). Can't fail. */
void backoff_init(struct backoff *b, long min_ms, long max_ms);

/* The next wait in milliseconds (in [cur/2, cur]), then doubles the delay
 * up to the cap and counts the attempt. Can't fail. */
long backoff_next(struct backoff *b);

/* After a success: back to min_ms, attempts to 0. Can't fail. */
void backoff_reset(struct backoff *b);

#endif
