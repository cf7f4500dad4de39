/*
 * dagcbor.h: a small, bounded reader of DAG-CBOR, the encoding of the
 * firehose's frames and of the records inside them.
 *
 * It reads from memory the caller owns and never allocates: a reader is a
 * cursor over [p, end) plus the limits of struct frame_limits (nesting and
 * entries of one array or map). What it accepts is the DAG-CBOR the AT
 * Protocol data model uses:
 *
 *   - definite lengths only (an indefinite length is an error), heads with
 *     an argument in the head itself or in 1, 2, 4 or 8 bytes after it;
 *   - integers (major types 0 and 1, the whole 64-bit range of both),
 *     byte and text strings, arrays, maps whose keys are text strings;
 *   - tag 42 only: a CID link, a byte string whose first byte is 0x00;
 *   - the simple values false, true and null, and floats of 16, 32 and 64
 *     bits (finite ones: NaN and infinities are errors).
 *
 * Every declared length is checked against the bytes left before it is
 * used, so a length never sizes anything; an array or map may not declare
 * more entries than max_items (nor more than the bytes left could hold).
 * Key order and minimal heads are not checked: those only matter to a
 * writer that must reproduce a block's bytes, and nothing here does.
 *
 * cbor_json() writes an item as the JSON the stream entry carries: text
 * JSON-escaped (it must be valid UTF-8; U+0000 stays "\u0000", the workers
 * strip it), bytes {"$bytes": base64 without padding}, links {"$link":
 * "b" + base32 of the CID bytes, lower case, no padding}.
 */
#ifndef SLUICE_DAGCBOR_H
#define SLUICE_DAGCBOR_H

#include <stddef.h>
#include <stdint.h>

#include "shared/buf.h"

struct frame_limits;

enum cbor_major {
    CBOR_UINT = 0, /* arg is the value */
    CBOR_NEGINT,   /* the value is -1 - arg */
    CBOR_BYTES,    /* arg bytes follow the head */
    CBOR_TEXT,     /* arg bytes of UTF-8 follow the head */
    CBOR_ARRAY,    /* arg items follow */
    CBOR_MAP,      /* arg key/value pairs follow */
    CBOR_TAG,      /* arg is the tag (always 42 here); one item follows */
    CBOR_SIMPLE    /* false, true, null or a float: see info */
};

/* The simple values and float widths, as the head's additional info. */
#define CBOR_FALSE   20
#define CBOR_TRUE    21
#define CBOR_NULL    22
#define CBOR_FLOAT16 25
#define CBOR_FLOAT32 26
#define CBOR_FLOAT64 27

/* The tag of a CID link. */
#define CBOR_TAG_CID 42

/* Nesting is followed by recursion: whatever max_depth says, never deeper
 * than this (a few hundred bytes of stack a level). */
#define CBOR_DEPTH_CEILING 256

struct cbor_head {
    uint8_t major; /* enum cbor_major */
    uint8_t info;  /* the low five bits of the first byte */
    uint64_t arg;  /* value, length, count or tag; a float's bits */
};

struct cbor {
    const uint8_t *p;   /* the next byte to read */
    const uint8_t *end; /* one past the last byte */
    size_t max_items;   /* entries of one array or map */
    unsigned max_depth; /* nesting of arrays, maps and tags */
    const char *why;    /* the reason of the last failure (static text) */
};

/*
 * Start reading len bytes at p, with lim's max_items and max_depth (NULL:
 * the defaults of frame_limits_default(); max_depth at most
 * CBOR_DEPTH_CEILING). The reader keeps pointers into
 * p, which the caller owns. Can't fail.
 */
void cbor_init(struct cbor *c, const uint8_t *p, size_t len,
               const struct frame_limits *lim);

/*
 * Read one head and move past it (for a string, c->p is then at its
 * bytes, which are known to be there; the caller moves past them). A head
 * is refused when it is truncated, indefinite or reserved, a string longer
 * than what is left, an array or map with more entries than max_items or
 * than the bytes left could hold, a tag other than 42, a simple value
 * other than false, true and null. Returns 0, or -1 with c->why set
 * (c->p is then unspecified).
 */
int cbor_head(struct cbor *c, struct cbor_head *h);

/*
 * Move past one whole item (nested ones included, at most max_depth
 * deep), checking its structure but not its text's UTF-8. Returns 0, or -1
 * with c->why set.
 */
int cbor_skip(struct cbor *c);

/*
 * Append one whole item to out as JSON (see above); out grows as needed
 * and is never shrunk. Returns 0, or -1 with c->why set (out->len is then
 * where it was before the call, its bytes past that unspecified).
 */
int cbor_json(struct cbor *c, struct buf *out);

/*
 * Read a text string item: *s points into the input (not NUL-terminated,
 * UTF-8 not checked), *len its length. Returns 0, or -1 with c->why set
 * (also when the item is of another type).
 */
int cbor_text(struct cbor *c, const uint8_t **s, size_t *len);

/*
 * Read a CID link item (tag 42 on bytes starting 0x00): *cid points at the
 * CID's bytes in the input (after the 0x00), *len their count. Returns 0,
 * or -1 with c->why set (also when the item is of another type).
 */
int cbor_link(struct cbor *c, const uint8_t **cid, size_t *len);

/*
 * Append the JSON string of len bytes of UTF-8 at s (quotes included) to
 * out. Returns 0, or -1 with *why set: invalid UTF-8 or out of memory.
 */
int cbor_json_string(struct buf *out, const uint8_t *s, size_t len,
                     const char **why);

/*
 * Append "b" and the base32 (RFC 4648 alphabet in lower case, no padding)
 * of len bytes at cid to out: the string form of a binary CIDv1. Returns
 * 0, or -1 when out of memory.
 */
int cbor_cid_string(struct buf *out, const uint8_t *cid, size_t len);

#endif
