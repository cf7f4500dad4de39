/*
 * car.c: the CAR v1 index of car.h.
 *
 * Every block is hashed as it is indexed (one SHA-256 a block, through a
 * digest context made once per thread and reused, so hashing allocates
 * nothing per frame). A commit's CAR holds a handful of blocks and names
 * one or two of them, so car_find() compares CIDs one after another; a CAR
 * with many blocks is sorted once so that each lookup is a binary search
 * (many ops against many blocks stay cheap).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "worker/car.h"
#include "worker/dagcbor.h"
#include "worker/frame_limits.h"

/* Blocks up to this many are searched one by one; more are sorted. */
#define CAR_LINEAR_MAX 16

int
car_uvarint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    const uint8_t *s = *p;
    uint64_t x = 0;

    for (unsigned i = 0; i < 9; i++) {
        if (s + i >= end)
            return -1;
        x |= (uint64_t)(s[i] & 0x7f) << (7 * i);
        if ((s[i] & 0x80) == 0) {
            *p = s + i + 1;
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* SHA-256 of len bytes into md (32 bytes). 0, or -1 when libcrypto
 * fails. */
static int
sha256(const uint8_t *p, size_t len, uint8_t *md)
{
    static _Thread_local EVP_MD_CTX *ctx;
    static _Thread_local EVP_MD *alg;
    unsigned int n = 0;

    if (alg == NULL && (alg = EVP_MD_fetch(NULL, "SHA256", NULL)) == NULL)
        return -1;
    if (ctx == NULL && (ctx = EVP_MD_CTX_new()) == NULL)
        return -1;
    if (EVP_DigestInit_ex(ctx, alg, NULL) != 1 ||
        EVP_DigestUpdate(ctx, p, len) != 1 ||
        EVP_DigestFinal_ex(ctx, md, &n) != 1 || n != 32)
        return -1;
    return 0;
}

/* The header: a map with version 1 and an array of roots. */
static int
read_header(const uint8_t *p, size_t len, const struct frame_limits *lim,
            const char **why)
{
    struct cbor c;
    struct cbor_head h, v;
    const uint8_t *k, *at;
    size_t klen;
    int version = 0, roots = 0;

    cbor_init(&c, p, len, lim);
    if (cbor_head(&c, &h) < 0)
        goto bad;
    if (h.major != CBOR_MAP) {
        *why = "CAR header is not a map";
        return -1;
    }
    for (uint64_t i = 0; i < h.arg; i++) {
        if (cbor_text(&c, &k, &klen) < 0)
            goto bad;
        at = c.p;
        if (klen == 7 && memcmp(k, "version", 7) == 0) {
            if (cbor_head(&c, &v) < 0)
                goto bad;
            if (v.major != CBOR_UINT || v.arg != 1) {
                *why = "CAR version is not 1";
                return -1;
            }
            version = 1;
            continue;
        }
        if (klen == 5 && memcmp(k, "roots", 5) == 0) {
            if (cbor_head(&c, &v) < 0)
                goto bad;
            if (v.major != CBOR_ARRAY) {
                *why = "CAR roots is not an array";
                return -1;
            }
            c.p = at;
            roots = 1;
        }
        if (cbor_skip(&c) < 0)
            goto bad;
    }
    if (c.p != c.end) {
        *why = "CAR header has bytes after its map";
        return -1;
    }
    if (!version || !roots) {
        *why = "CAR header without version or roots";
        return -1;
    }
    return 0;
bad:
    *why = c.why;
    return -1;
}

static int
cmp_cid(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    int r = memcmp(a, b, alen < blen ? alen : blen);

    if (r != 0)
        return r;
    return alen < blen ? -1 : alen > blen;
}

static int
cmp_block(const void *x, const void *y)
{
    const struct car_block *a = x, *b = y;

    return cmp_cid(a->cid, a->cid_len, b->cid, b->cid_len);
}

int
car_read(struct car *car, const uint8_t *p, size_t len,
         const struct frame_limits *lim, struct buf *scratch, const char **why)
{
    const uint8_t *end = p + len, *sec_end, *cid;
    uint64_t hlen, slen, version, codec, code, dlen;
    uint8_t md[32];
    struct car_block *b;

    car->blocks = NULL;
    car->n = 0;
    car->sorted = 0;
    if (car_uvarint(&p, end, &hlen) < 0) {
        *why = "CAR header length is not a readable uvarint";
        return -1;
    }
    if (hlen == 0 || hlen > (uint64_t)(end - p)) {
        *why = "CAR header length past the end of the CAR";
        return -1;
    }
    if (read_header(p, (size_t)hlen, lim, why) < 0)
        return -1;
    p += hlen;
    scratch->len = 0;
    while (p < end) {
        if (car_uvarint(&p, end, &slen) < 0) {
            *why = "CAR section length is not a readable uvarint";
            return -1;
        }
        if (slen > (uint64_t)(end - p)) {
            *why = "CAR section longer than the bytes left";
            return -1;
        }
        sec_end = p + slen;
        cid = p;
        if (slen > 0 && p[0] == 0x12) {
            *why = "CAR section CID is a CIDv0 (only CIDv1 is read)";
            return -1;
        }
        if (car_uvarint(&p, sec_end, &version) < 0 ||
            car_uvarint(&p, sec_end, &codec) < 0 ||
            car_uvarint(&p, sec_end, &code) < 0 ||
            car_uvarint(&p, sec_end, &dlen) < 0) {
            *why = "CAR section CID is truncated or malformed";
            return -1;
        }
        if (version != 1) {
            *why = "CAR section CID version is not 1";
            return -1;
        }
        if (code != 0x12) {
            *why = "CAR section CID hash is not sha2-256";
            return -1;
        }
        if (dlen != 32 || (uint64_t)(sec_end - p) < 32) {
            *why = "CAR section CID sha2-256 digest is not 32 bytes";
            return -1;
        }
        if ((size_t)(sec_end - p) - 32 > lim->max_block) {
            *why = "CAR block larger than max_block";
            return -1;
        }
        if (car->n >= lim->max_blocks) {
            *why = "CAR with more sections than max_blocks";
            return -1;
        }
        if (sha256(p + 32, (size_t)(sec_end - p) - 32, md) < 0) {
            *why = "SHA-256 failed (libcrypto)";
            return -1;
        }
        if (memcmp(md, p, 32) != 0) {
            *why = "CAR block CID does not match its bytes";
            return -1;
        }
        if (buf_reserve(scratch, sizeof(*b)) < 0) {
            *why = "out of memory";
            return -1;
        }
        b = (struct car_block *)(void *)(scratch->p + scratch->len);
        scratch->len += sizeof(*b);
        b->cid = cid;
        b->cid_len = (size_t)(p + 32 - cid);
        b->data = p + 32;
        b->len = (size_t)(sec_end - b->data);
        car->n++;
        p = sec_end;
    }
    car->blocks = (struct car_block *)(void *)scratch->p;
    if (car->n > CAR_LINEAR_MAX) {
        qsort(car->blocks, car->n, sizeof(*car->blocks), cmp_block);
        car->sorted = 1;
    }
    return 0;
}

const struct car_block *
car_find(const struct car *car, const uint8_t *cid, size_t len)
{
    size_t lo = 0, hi = car->n;

    if (!car->sorted) {
        for (size_t i = 0; i < car->n; i++) {
            const struct car_block *b = &car->blocks[i];
            if (b->cid_len == len && memcmp(b->cid, cid, len) == 0)
                return b;
        }
        return NULL;
    }
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct car_block *b = &car->blocks[mid];
        int r = cmp_cid(b->cid, b->cid_len, cid, len);
        if (r == 0)
            return b;
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}
