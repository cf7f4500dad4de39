/*
 * dagcbor.c: the bounded DAG-CBOR reader of dagcbor.h and its JSON writer.
 *
 * The hot paths are the head (one byte, usually nothing more) and text
 * strings (copied with one table lookup a byte while they are plain
 * ASCII). Nesting is followed by recursion, one level per array, map or
 * tag, never deeper than max_depth; output room is reserved once per item
 * from its length, which is already known to be no more than what is left
 * of the input, so the output grows with the input only.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/dagcbor.h"
#include "worker/frame_limits.h"

void
cbor_init(struct cbor *c, const uint8_t *p, size_t len,
          const struct frame_limits *lim)
{
    struct frame_limits def;

    if (lim == NULL) {
        frame_limits_default(&def);
        lim = &def;
    }
    c->p = p;
    c->end = p + len;
    c->max_items = lim->max_items;
    c->max_depth = lim->max_depth < CBOR_DEPTH_CEILING ? lim->max_depth
                                                       : CBOR_DEPTH_CEILING;
    c->why = NULL;
}

static int
fail(struct cbor *c, const char *why)
{
    c->why = why;
    return -1;
}

int
cbor_head(struct cbor *c, struct cbor_head *h)
{
    const uint8_t *p = c->p;
    size_t left = (size_t)(c->end - p);
    uint64_t arg;
    unsigned info, n;

    if (left == 0)
        return fail(c, "CBOR truncated: an item expected");
    h->major = (uint8_t)(p[0] >> 5);
    info = p[0] & 0x1f;
    h->info = (uint8_t)info;
    p++;
    left--;
    if (info < 24) {
        arg = info;
    } else if (info <= 27) {
        n = 1u << (info - 24);
        if (left < n)
            return fail(c, "CBOR truncated inside a head");
        arg = 0;
        for (unsigned i = 0; i < n; i++)
            arg = arg << 8 | p[i];
        p += n;
        left -= n;
    } else if (info == 31) {
        return fail(c, "CBOR indefinite length (DAG-CBOR has none)");
    } else {
        return fail(c, "CBOR reserved additional information 28-30");
    }
    h->arg = arg;
    switch (h->major) {
    case CBOR_BYTES:
    case CBOR_TEXT:
        if (arg > left)
            return fail(c, "CBOR string longer than the bytes left");
        break;
    case CBOR_ARRAY:
        if (arg > c->max_items)
            return fail(c, "CBOR array with more items than max_items");
        if (arg > left)
            return fail(c, "CBOR array longer than the bytes left");
        break;
    case CBOR_MAP:
        if (arg > c->max_items)
            return fail(c, "CBOR map with more entries than max_items");
        if (arg > left / 2)
            return fail(c, "CBOR map longer than the bytes left");
        break;
    case CBOR_TAG:
        if (arg != CBOR_TAG_CID)
            return fail(c, "CBOR tag other than 42 (CID)");
        break;
    case CBOR_SIMPLE:
        if (info < CBOR_FALSE || info == 23 || info == 24)
            return fail(c, "CBOR simple value other than false/true/null");
        break;
    default:
        break;
    }
    c->p = p;
    return 0;
}

/* After a tag 42 head: the byte string of a link, checked; *cid and *len
 * its CID bytes (without the leading 0x00). */
static int
read_link(struct cbor *c, const uint8_t **cid, size_t *len)
{
    struct cbor_head h;

    if (cbor_head(c, &h) < 0)
        return -1;
    if (h.major != CBOR_BYTES)
        return fail(c, "CBOR tag 42 on something other than bytes");
    if (h.arg < 2 || c->p[0] != 0x00)
        return fail(c, "CBOR CID link without its 0x00 prefix and CID");
    *cid = c->p + 1;
    *len = (size_t)h.arg - 1;
    c->p += h.arg;
    return 0;
}

int
cbor_link(struct cbor *c, const uint8_t **cid, size_t *len)
{
    struct cbor_head h;

    if (cbor_head(c, &h) < 0)
        return -1;
    if (h.major != CBOR_TAG)
        return fail(c, "CBOR CID link expected (tag 42)");
    return read_link(c, cid, len);
}

static int
skip_item(struct cbor *c, unsigned depth)
{
    struct cbor_head h;

    if (cbor_head(c, &h) < 0)
        return -1;
    switch (h.major) {
    case CBOR_BYTES:
    case CBOR_TEXT:
        c->p += h.arg;
        return 0;
    case CBOR_ARRAY:
    case CBOR_MAP:
    case CBOR_TAG:
        if (depth >= c->max_depth)
            return fail(c, "CBOR nesting deeper than max_depth");
        break;
    default:
        return 0;
    }
    if (h.major == CBOR_TAG) {
        const uint8_t *cid;
        size_t len;
        return read_link(c, &cid, &len);
    }
    for (uint64_t i = 0; i < h.arg; i++) {
        if (h.major == CBOR_MAP) {
            const uint8_t *k;
            size_t klen;
            if (cbor_text(c, &k, &klen) < 0)
                return -1;
        }
        if (skip_item(c, depth + 1) < 0)
            return -1;
    }
    return 0;
}

int
cbor_skip(struct cbor *c)
{
    return skip_item(c, 0);
}

int
cbor_text(struct cbor *c, const uint8_t **s, size_t *len)
{
    struct cbor_head h;

    if (cbor_head(c, &h) < 0)
        return -1;
    if (h.major != CBOR_TEXT)
        return fail(c, h.major == CBOR_MAP || h.major == CBOR_ARRAY
                           ? "CBOR text expected, found a container"
                           : "CBOR text expected (map keys are text)");
    *s = c->p;
    *len = (size_t)h.arg;
    c->p += h.arg;
    return 0;
}

/* 1 for a byte a JSON string can hold as it is: ASCII from 0x20 other
 * than the quote (0x22) and the backslash (0x5c), one row a 16 bytes. */
/* clang-format off */
static const uint8_t plain[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};
/* clang-format on */

static const char hex[] = "0123456789abcdef";

int
cbor_json_string(struct buf *out, const uint8_t *s, size_t len,
                 const char **why)
{
    const uint8_t *end = s + len;
    char *o;

    /* at most six bytes out per byte in ("\u00XX"), and the quotes */
    if (len > (SIZE_MAX - 2) / 6 || buf_reserve(out, len * 6 + 2) < 0) {
        *why = "out of memory";
        return -1;
    }
    o = out->p + out->len;
    *o++ = '"';
    while (s < end) {
        uint8_t b = *s;
        if (plain[b]) {
            *o++ = (char)b;
            s++;
            continue;
        }
        if (b < 0x80) {
            *o++ = '\\';
            switch (b) {
            case '"':
            case '\\':
                *o++ = (char)b;
                break;
            case '\n':
                *o++ = 'n';
                break;
            case '\r':
                *o++ = 'r';
                break;
            case '\t':
                *o++ = 't';
                break;
            case '\b':
                *o++ = 'b';
                break;
            case '\f':
                *o++ = 'f';
                break;
            default:
                *o++ = 'u';
                *o++ = '0';
                *o++ = '0';
                *o++ = hex[b >> 4];
                *o++ = hex[b & 15];
            }
            s++;
            continue;
        }
        /* a multi-byte sequence: no overlongs, surrogates or values past
         * U+10FFFF (the ranges of RFC 3629's table) */
        size_t n, left = (size_t)(end - s);
        uint8_t lo = 0x80, hi = 0xbf;
        if (b >= 0xc2 && b <= 0xdf) {
            n = 2;
        } else if (b >= 0xe0 && b <= 0xef) {
            n = 3;
            if (b == 0xe0)
                lo = 0xa0;
            else if (b == 0xed)
                hi = 0x9f;
        } else if (b >= 0xf0 && b <= 0xf4) {
            n = 4;
            if (b == 0xf0)
                lo = 0x90;
            else if (b == 0xf4)
                hi = 0x8f;
        } else {
            goto bad;
        }
        if (left < n || s[1] < lo || s[1] > hi)
            goto bad;
        for (size_t i = 2; i < n; i++)
            if ((s[i] & 0xc0) != 0x80)
                goto bad;
        memcpy(o, s, n);
        o += n;
        s += n;
    }
    *o++ = '"';
    out->len = (size_t)(o - out->p);
    return 0;
bad:
    *why = "CBOR text is not valid UTF-8";
    return -1;
}

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Append {"$bytes":"<base64, no padding>"}. */
static int
put_bytes(struct buf *out, const uint8_t *s, size_t len)
{
    char *o;
    size_t i = 0;

    if (buf_reserve(out, len / 3 * 4 + 4 + 14) < 0)
        return -1;
    o = out->p + out->len;
    memcpy(o, "{\"$bytes\":\"", 11);
    o += 11;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        *o++ = b64[v >> 18];
        *o++ = b64[(v >> 12) & 63];
        *o++ = b64[(v >> 6) & 63];
        *o++ = b64[v & 63];
    }
    if (len - i == 1) {
        *o++ = b64[s[i] >> 2];
        *o++ = b64[(s[i] & 3) << 4];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)s[i] << 8 | s[i + 1];
        *o++ = b64[v >> 10];
        *o++ = b64[(v >> 4) & 63];
        *o++ = b64[(v & 15) << 2];
    }
    *o++ = '"';
    *o++ = '}';
    out->len = (size_t)(o - out->p);
    return 0;
}

static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";

int
cbor_cid_string(struct buf *out, const uint8_t *cid, size_t len)
{
    char *o;
    uint64_t acc = 0;
    unsigned bits = 0;

    if (buf_reserve(out, len / 5 * 8 + 8 + 1) < 0)
        return -1;
    o = out->p + out->len;
    *o++ = 'b';
    for (size_t i = 0; i < len; i++) {
        acc = acc << 8 | cid[i];
        bits += 8;
        while (bits >= 5) {
            bits -= 5;
            *o++ = b32[(acc >> bits) & 31];
        }
    }
    if (bits > 0)
        *o++ = b32[(acc << (5 - bits)) & 31];
    out->len = (size_t)(o - out->p);
    return 0;
}

/* Append the decimal digits of v, with a '-' first when neg. */
static int
put_u64(struct buf *out, uint64_t v, int neg)
{
    char tmp[24], *t = tmp + sizeof(tmp);

    do {
        *--t = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    if (neg)
        *--t = '-';
    if (buf_reserve(out, (size_t)(tmp + sizeof(tmp) - t)) < 0)
        return -1;
    memcpy(out->p + out->len, t, (size_t)(tmp + sizeof(tmp) - t));
    out->len += (size_t)(tmp + sizeof(tmp) - t);
    return 0;
}

static int
put_raw(struct buf *out, const char *s, size_t len)
{
    if (buf_reserve(out, len) < 0)
        return -1;
    memcpy(out->p + out->len, s, len);
    out->len += len;
    return 0;
}

/* A float head's value; 0, or -1 when it is NaN or infinite. */
static int
float_value(const struct cbor_head *h, double *v)
{
    if (h->info == CBOR_FLOAT16) {
        unsigned e = (unsigned)(h->arg >> 10) & 31, m = h->arg & 1023;
        if (e == 31)
            return -1;
        *v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, (int)e - 25);
        if (h->arg & 0x8000)
            *v = -*v;
    } else if (h->info == CBOR_FLOAT32) {
        uint32_t bits = (uint32_t)h->arg;
        float f;
        memcpy(&f, &bits, sizeof(f));
        *v = f;
    } else {
        memcpy(v, &h->arg, sizeof(*v));
    }
    return isfinite(*v) ? 0 : -1;
}

/* Append the shortest %g form of v that reads back as v. */
static int
put_double(struct buf *out, double v)
{
    char tmp[40];
    int n = 0;

    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    /* a locale with a decimal comma must not reach the JSON */
    for (int i = 0; i < n; i++)
        if (tmp[i] == ',')
            tmp[i] = '.';
    return put_raw(out, tmp, (size_t)n);
}

static int
json_item(struct cbor *c, struct buf *out, unsigned depth)
{
    struct cbor_head h;
    const uint8_t *s;
    size_t len;
    double d;

    if (cbor_head(c, &h) < 0)
        return -1;
    switch (h.major) {
    case CBOR_UINT:
        if (put_u64(out, h.arg, 0) < 0)
            goto oom;
        return 0;
    case CBOR_NEGINT:
        /* -1 - arg: -2^64 when arg is UINT64_MAX, whose +1 overflows */
        if (h.arg == UINT64_MAX) {
            if (put_raw(out, "-18446744073709551616", 21) < 0)
                goto oom;
        } else if (put_u64(out, h.arg + 1, 1) < 0) {
            goto oom;
        }
        return 0;
    case CBOR_BYTES:
        s = c->p;
        c->p += h.arg;
        if (put_bytes(out, s, (size_t)h.arg) < 0)
            goto oom;
        return 0;
    case CBOR_TEXT:
        s = c->p;
        c->p += h.arg;
        return cbor_json_string(out, s, (size_t)h.arg, &c->why);
    case CBOR_SIMPLE:
        if (h.info == CBOR_FALSE)
            return put_raw(out, "false", 5) < 0 ? fail(c, "out of memory") : 0;
        if (h.info == CBOR_TRUE)
            return put_raw(out, "true", 4) < 0 ? fail(c, "out of memory") : 0;
        if (h.info == CBOR_NULL)
            return put_raw(out, "null", 4) < 0 ? fail(c, "out of memory") : 0;
        if (float_value(&h, &d) < 0)
            return fail(c, "CBOR float is NaN or infinite");
        if (put_double(out, d) < 0)
            goto oom;
        return 0;
    default:
        break;
    }
    if (depth >= c->max_depth)
        return fail(c, "CBOR nesting deeper than max_depth");
    if (h.major == CBOR_TAG) {
        if (read_link(c, &s, &len) < 0)
            return -1;
        if (put_raw(out, "{\"$link\":\"", 10) < 0 ||
            cbor_cid_string(out, s, len) < 0 || put_raw(out, "\"}", 2) < 0)
            goto oom;
        return 0;
    }
    if (put_raw(out, h.major == CBOR_MAP ? "{" : "[", 1) < 0)
        goto oom;
    for (uint64_t i = 0; i < h.arg; i++) {
        if (i > 0 && put_raw(out, ",", 1) < 0)
            goto oom;
        if (h.major == CBOR_MAP) {
            if (cbor_text(c, &s, &len) < 0 ||
                cbor_json_string(out, s, len, &c->why) < 0)
                return -1;
            if (put_raw(out, ":", 1) < 0)
                goto oom;
        }
        if (json_item(c, out, depth + 1) < 0)
            return -1;
    }
    if (put_raw(out, h.major == CBOR_MAP ? "}" : "]", 1) < 0)
        goto oom;
    return 0;
oom:
    return fail(c, "out of memory");
}

int
cbor_json(struct cbor *c, struct buf *out)
{
    size_t mark = out->len;

    c->why = NULL;
    if (json_item(c, out, 0) < 0) {
        out->len = mark;
        return -1;
    }
    return 0;
}
