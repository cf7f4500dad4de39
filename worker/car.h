/*
 * car.h: the CAR v1 file a #commit carries in its `blocks`, read in place
 * into an index of its sections, each block checked against its CID.
 *
 *   uvarint header length, header (DAG-CBOR {version: 1, roots: [...]})
 *   then, to the end: uvarint section length, CID, block bytes
 *
 * Only CIDv1 is accepted (uvarint version 1, codec, then the multihash:
 * uvarint code, uvarint digest length, digest), and only sha2-256 (code
 * 0x12, 32 bytes): every block's SHA-256 must equal its digest. uvarints
 * are at most 9 bytes (63 bits).
 *
 * The index points into the CAR bytes, which the caller owns and keeps
 * while it uses the index; its array lives in a buffer the caller passes
 * and reuses from one CAR to the next, so reading a CAR allocates only
 * when that buffer has to grow (at most max_blocks entries).
 */
#ifndef SLUICE_CAR_H
#define SLUICE_CAR_H

#include <stddef.h>
#include <stdint.h>

#include "shared/buf.h"

struct frame_limits;

struct car_block {
    const uint8_t *cid;  /* the section's CID bytes */
    const uint8_t *data; /* the block */
    size_t cid_len, len;
};

struct car {
    struct car_block *blocks; /* n sections, in the scratch buffer */
    size_t n;
    int sorted; /* blocks sorted by CID (done when there are many) */
};

/*
 * Read an unsigned LEB128 varint of at most 9 bytes at *p (before end)
 * and move *p past it. Returns 0, or -1 when it is truncated or longer.
 */
int car_uvarint(const uint8_t **p, const uint8_t *end, uint64_t *v);

/*
 * Index the CAR of len bytes at p into car, its array in scratch (grown
 * as needed, never shrunk, owned by the caller). Checks the header
 * (version 1, a roots array), every section's CID and every block's
 * SHA-256; a block longer than lim->max_block or more than lim->max_blocks
 * sections are errors, and the header's CBOR is bounded by lim's
 * max_items and max_depth. Returns 0, or -1 with *why set (a static
 * reason: "CAR block CID does not match its bytes", ...).
 */
int car_read(struct car *car, const uint8_t *p, size_t len,
             const struct frame_limits *lim, struct buf *scratch,
             const char **why);

/* The block whose CID is the len bytes at cid, or NULL. Can't fail. */
const struct car_block *car_find(const struct car *car, const uint8_t *cid,
                                 size_t len);

#endif
