/*
 * clock.h: the two clocks sluice reads, each for what it is good for.
 *
 * Intervals (timeouts, backoff, heartbeats' ages within one process, rate
 * windows) use the monotonic clock: a step of the wall clock (NTP, a VM
 * resumed) moves none of them. Wall time is for what people read and for
 * what other processes compare (stream IDs, the stats segment), through
 * stats_now_ms() in stats.h.
 */
#ifndef SLUICE_CLOCK_H
#define SLUICE_CLOCK_H

#include <stdint.h>

/* Milliseconds and microseconds of CLOCK_MONOTONIC. Can't fail. */
int64_t clock_mono_ms(void);
int64_t clock_mono_us(void);

#endif
