/*
 * frame_limits.h: the bounds a relay frame is decoded under, shared by
 * every layer of the decoder: the frame (firehose_frame.c), its CAR file
 * (car.c) and the DAG-CBOR inside both (dagcbor.c). The reader sets them
 * from its firehose_max_* settings; whatever a frame declares, nothing
 * past them is read or allocated.
 */
#ifndef SLUICE_FRAME_LIMITS_H
#define SLUICE_FRAME_LIMITS_H

#include <stddef.h>

struct frame_limits {
    size_t max_frame;   /* bytes of a whole message (5 MiB) */
    size_t max_block;   /* bytes of one CAR block (1 MiB) */
    size_t max_blocks;  /* CAR sections in one commit (10,000) */
    size_t max_items;   /* entries of one CBOR array or map (100,000) */
    unsigned max_depth; /* nesting of CBOR arrays, maps and tags (32) */
};

/* The limits above, in parentheses. Can't fail. */
static inline void
frame_limits_default(struct frame_limits *lim)
{
    lim->max_frame = 5u * 1024 * 1024;
    lim->max_block = 1024u * 1024;
    lim->max_blocks = 10000;
    lim->max_items = 100000;
    lim->max_depth = 32;
}

#endif
