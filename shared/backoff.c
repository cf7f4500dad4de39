/*
 * backoff.c: capped exponential backoff with jitter (see backoff.h).
 */
#include <time.h>
#include <unistd.h>

#include "shared/backoff.h"

void
backoff_init(struct backoff *b, long min_ms, long max_ms)
{
    struct timespec ts;

    if (min_ms < 1)
        min_ms = 1;
    if (max_ms < min_ms)
        max_ms = min_ms;
    b->min_ms = min_ms;
    b->max_ms = max_ms;
    b->cur_ms = min_ms;
    b->attempts = 0;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    b->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^
             ((uint64_t)getpid() << 40) ^ 0x9e3779b97f4a7c15ull;
    if (b->rng == 0)
        b->rng = 1;
}

static uint64_t
backoff_random(struct backoff *b)
{
    uint64_t x = b->rng;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b->rng = x;
    return x;
}

long
backoff_next(struct backoff *b)
{
    long half = b->cur_ms / 2;
    long wait = half + (long)(backoff_random(b) % (uint64_t)(half + 1));

    if (wait < 1)
        wait = 1;
    b->attempts++;
    if (b->cur_ms < b->max_ms)
        b->cur_ms = b->cur_ms > b->max_ms / 2 ? b->max_ms : b->cur_ms * 2;
    return wait;
}

void
backoff_reset(struct backoff *b)
{
    b->cur_ms = b->min_ms;
    b->attempts = 0;
}
