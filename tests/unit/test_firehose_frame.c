/*
 * test_firehose_frame.c: the firehose frame decoder (worker/firehose_frame.c
 * over worker/dagcbor.c and worker/car.c).
 *
 * Hand-built frames first: each limit, each malformed head and payload,
 * CAR sections that lie, every kind of frame, the JSON of every CBOR type.
 * Then, when the recorded frames are there (../shared/data/bluesky, or the
 * folder SLUICE_BLUESKY_DATA names), all 150 of them decoded and compared
 * field by field with what Jetstream made of them (expected_v1.jsonl), and
 * a fixed-seed mutation loop over them that only checks every call ends in
 * 0 or -1 with the event in a consistent state (run it under SANITIZE=1).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>

#include "tests/unit/tap.h"
#include "worker/car.h"
#include "worker/dagcbor.h"
#include "worker/firehose_frame.h"

/* ---- a small CBOR writer for hand-built frames ---- */

struct enc {
    uint8_t b[1 << 16];
    size_t n;
};

static void
raw(struct enc *e, const void *p, size_t n)
{
    if (e->n + n > sizeof(e->b))
        abort();
    memcpy(e->b + e->n, p, n);
    e->n += n;
}

static void
byte(struct enc *e, unsigned v)
{
    uint8_t b = (uint8_t)v;

    raw(e, &b, 1);
}

/* The shortest head of major type m with argument v. */
static void
head(struct enc *e, unsigned m, uint64_t v)
{
    unsigned n;

    if (v < 24) {
        byte(e, m << 5 | (unsigned)v);
        return;
    }
    n = v <= 0xff ? 1 : v <= 0xffff ? 2 : v <= 0xffffffffu ? 4 : 8;
    byte(e, m << 5 | (n == 1 ? 24 : n == 2 ? 25 : n == 4 ? 26 : 27));
    for (unsigned i = n; i-- > 0;)
        byte(e, (unsigned)(v >> (8 * i)) & 0xff);
}

static void
text(struct enc *e, const char *s)
{
    head(e, CBOR_TEXT, strlen(s));
    raw(e, s, strlen(s));
}

static void
bytes(struct enc *e, const void *p, size_t n)
{
    head(e, CBOR_BYTES, n);
    raw(e, p, n);
}

static void
uvarint(struct enc *e, uint64_t v)
{
    do {
        byte(e, (unsigned)(v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
}

/* The CIDv1 (dag-cbor, sha2-256) of len bytes into cid (36 bytes). */
static void
cid_of(const uint8_t *p, size_t len, uint8_t *cid)
{
    unsigned int n;

    cid[0] = 0x01;
    cid[1] = 0x71;
    cid[2] = 0x12;
    cid[3] = 0x20;
    EVP_Digest(p, len, cid + 4, &n, EVP_sha256(), NULL);
}

static void
link(struct enc *e, const uint8_t *cid, size_t len)
{
    uint8_t b[64];

    head(e, CBOR_TAG, 42);
    b[0] = 0;
    memcpy(b + 1, cid, len);
    bytes(e, b, len + 1);
}

/* A frame header {t, op: 1}. */
static void
header(struct enc *e, const char *t)
{
    head(e, CBOR_MAP, 2);
    text(e, "t");
    text(e, t);
    text(e, "op");
    head(e, CBOR_UINT, 1);
}

/* How build_commit() spoils its frame. */
enum spoil {
    SPOIL_NONE = 0,
    SPOIL_BLOCK,    /* a byte of the block changed after hashing */
    SPOIL_MISSING,  /* the record's block left out of the CAR */
    SPOIL_VERSION,  /* CAR header version 2 */
    SPOIL_HASH,     /* multihash code 0x13 (sha2-512) */
    SPOIL_CIDV0,    /* the section's CID is a CIDv0 */
    SPOIL_VARINT,   /* a section length of ten varint bytes */
    SPOIL_CID_NULL, /* a create whose cid is null */
    SPOIL_TWO,      /* two sections (max_blocks tests) */
    SPOIL_ACTION,   /* action "patch" */
    SPOIL_TRAILING, /* a byte after the body */
    SPOIL_SECTION,  /* a section length past the end of the CAR */
    SPOIL_OPS_TYPE, /* ops is a map */
};

/*
 * A #commit frame of repo did:plc:test, seq 77, with one op of action on
 * app.bsky.feed.like/3abc whose record block is rec, spoilt as asked.
 */
static void
build_commit(struct enc *e, const char *action, const uint8_t *rec,
             size_t rec_len, enum spoil spoil)
{
    static struct enc car;
    uint8_t cid[36];
    int del = strcmp(action, "delete") == 0;

    cid_of(rec, rec_len, cid);
    car.n = 0;
    {
        struct enc h = {.n = 0};
        head(&h, CBOR_MAP, 2);
        text(&h, "roots");
        head(&h, CBOR_ARRAY, 1);
        link(&h, cid, sizeof(cid));
        text(&h, "version");
        head(&h, CBOR_UINT, spoil == SPOIL_VERSION ? 2 : 1);
        uvarint(&car, h.n);
        raw(&car, h.b, h.n);
    }
    if (spoil == SPOIL_VARINT) {
        raw(&car, "\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", 10);
    } else if (spoil == SPOIL_SECTION) {
        uvarint(&car, sizeof(cid) + rec_len + 1);
        raw(&car, cid, sizeof(cid));
        raw(&car, rec, rec_len);
    } else if (spoil == SPOIL_CIDV0) {
        uvarint(&car, sizeof(cid) - 2 + rec_len);
        raw(&car, cid + 2, sizeof(cid) - 2);
        raw(&car, rec, rec_len);
    } else if (spoil != SPOIL_MISSING) {
        size_t at;
        if (spoil == SPOIL_TWO) {
            static const uint8_t other[] = {0xa0};
            uint8_t ocid[36];
            cid_of(other, 1, ocid);
            uvarint(&car, sizeof(ocid) + 1);
            raw(&car, ocid, sizeof(ocid));
            raw(&car, other, 1);
        }
        uvarint(&car, sizeof(cid) + rec_len);
        at = car.n;
        raw(&car, cid, sizeof(cid));
        if (spoil == SPOIL_HASH)
            car.b[at + 2] = 0x13;
        raw(&car, rec, rec_len);
        if (spoil == SPOIL_BLOCK)
            car.b[car.n - 1] ^= 1;
    }

    header(e, "#commit");
    head(e, CBOR_MAP, 7);
    text(e, "ops");
    if (spoil == SPOIL_OPS_TYPE) {
        head(e, CBOR_MAP, 0);
    } else {
        head(e, CBOR_ARRAY, 1);
        head(e, CBOR_MAP, del ? 2 : 3);
        if (!del) {
            text(e, "cid");
            if (spoil == SPOIL_CID_NULL)
                byte(e, 0xf6);
            else
                link(e, cid, sizeof(cid));
        }
        text(e, "path");
        text(e, "app.bsky.feed.like/3abc");
        text(e, "action");
        text(e, spoil == SPOIL_ACTION ? "patch" : action);
    }
    text(e, "rev");
    text(e, "3mptbypluud2a");
    text(e, "seq");
    head(e, CBOR_UINT, 77);
    text(e, "repo");
    text(e, "did:plc:test");
    text(e, "time");
    text(e, "2026-07-04T14:38:07.877Z");
    text(e, "blocks");
    bytes(e, car.b, car.n);
    text(e, "tooBig");
    byte(e, 0xf4);
    if (spoil == SPOIL_TRAILING)
        byte(e, 0);
}

/* A record {"$type": "x", "v": <the item in raw>}. */
static size_t
record_with(uint8_t *out, const void *item, size_t len)
{
    struct enc *e = calloc(1, sizeof(*e));
    size_t n;

    head(e, CBOR_MAP, 2);
    text(e, "v");
    raw(e, item, len);
    text(e, "$type");
    text(e, "x");
    n = e->n;
    memcpy(out, e->b, n);
    free(e);
    return n;
}

static struct frame_event ev;
static const char *why;

/* frame_decode() of a commit whose record's v is the item; the data. */
static const char *
record_json(const void *item, size_t len)
{
    static struct enc e;
    static char out[8192];
    uint8_t rec[4096];
    size_t n = record_with(rec, item, len);

    e.n = 0;
    build_commit(&e, "create", rec, n, SPOIL_NONE);
    if (frame_decode(e.b, e.n, NULL, &ev, &why) < 0) {
        snprintf(out, sizeof(out), "error: %s", why);
        return out;
    }
    snprintf(out, sizeof(out), "%.*s", (int)ev.data.len, ev.data.p);
    return out;
}

/* 1 when decoding fails with a reason containing want. */
static int
fails_with(const uint8_t *msg, size_t len, const struct frame_limits *lim,
           const char *want)
{
    why = NULL;
    if (frame_decode(msg, len, lim, &ev, &why) == 0) {
        diag("  decoded, wanted '%s'", want);
        return 0;
    }
    if (why == NULL || strstr(why, want) == NULL) {
        diag("  got '%s', wanted '%s'", why ? why : "(null)", want);
        return 0;
    }
    if (ev.data.len != 0 || ev.type != NULL) {
        diag("  an entry left after the failure");
        return 0;
    }
    return 1;
}

static int
record_fails_lim(const void *item, size_t len, const struct frame_limits *lim,
                 const char *want)
{
    static struct enc e;
    uint8_t rec[4096];
    size_t n = record_with(rec, item, len);

    e.n = 0;
    build_commit(&e, "create", rec, n, SPOIL_NONE);
    return fails_with(e.b, e.n, lim, want);
}

static int
record_fails(const void *item, size_t len, const char *want)
{
    return record_fails_lim(item, len, NULL, want);
}

/* 1 when the last entry's data is want. */
static int
data_is(const char *want)
{
    if (ev.data.len == strlen(want) &&
        memcmp(ev.data.p, want, ev.data.len) == 0)
        return 1;
    diag("  got  %.*s", (int)ev.data.len, ev.data.p);
    diag("  want %s", want);
    return 0;
}

static int
spoilt_fails(enum spoil s, const struct frame_limits *lim, const char *want)
{
    static struct enc e;
    static const uint8_t rec[] = {0xa1, 0x61, 'a', 0x01};

    e.n = 0;
    build_commit(&e, "create", rec, sizeof(rec), s);
    return fails_with(e.b, e.n, lim, want);
}

static void
test_cbor_json(void)
{
    struct enc e = {.n = 0};
    struct buf cidstr = {0};
    char want[1024];
    uint8_t rec[64], cid[36];
    size_t n = record_with(rec, "\x01", 1);

    cid_of(rec, n, cid);
    cbor_cid_string(&cidstr, cid, sizeof(cid));
    snprintf(want, sizeof(want),
             "{\"repo\":\"did:plc:test\",\"rev\":\"3mptbypluud2a\","
             "\"time\":\"2026-07-04T14:38:07.877Z\","
             "\"ops\":[{\"action\":\"create\","
             "\"path\":\"app.bsky.feed.like/3abc\",\"cid\":\"%.*s\","
             "\"record\":{\"v\":1,\"$type\":\"x\"}}]}",
             (int)cidstr.len, cidstr.p);
    buf_free(&cidstr);
    is_str(record_json("\x01", 1), want,
           "a whole commit entry, with its rev and time as sent");
    ok(ev.kind == FRAME_COMMIT && ev.seq == 77 && ev.ops == 1 &&
           ev.ops_without_record == 0 && strcmp(ev.type, "commit") == 0 &&
           strcmp(ev.name, "commit") == 0 && ev.too_big == 0,
       "its kind, seq, type, name and counts");
    is_int(ev.time_ms, 1783175887877LL, "time_ms of 2026-07-04T14:38:07.877Z");

    /* integers at each width, the ends of both ranges */
    head(&e, CBOR_ARRAY, 8);
    head(&e, CBOR_UINT, 23);
    head(&e, CBOR_UINT, 24);
    head(&e, CBOR_UINT, 65536);
    head(&e, CBOR_UINT, UINT64_MAX);
    head(&e, CBOR_NEGINT, 0);
    head(&e, CBOR_NEGINT, (uint64_t)INT64_MAX);
    head(&e, CBOR_NEGINT, UINT64_MAX - 1);
    head(&e, CBOR_NEGINT, UINT64_MAX);
    snprintf(want, sizeof(want), "%s", record_json(e.b, e.n));
    ok(strstr(want, "[23,24,65536,18446744073709551615,-1,"
                    "-9223372036854775808,-18446744073709551615,"
                    "-18446744073709551616]") != NULL,
       "integers exact, down to -2^64: %s", want);

    ok(strstr(record_json("\x83\xf4\xf5\xf6", 4), "[false,true,null]") != NULL,
       "false, true, null");
    /* 1.5 as half, 0.1 as single, 1e300 as double, -0.0, a subnormal half */
    snprintf(want, sizeof(want), "%s",
             record_json("\x85\xf9\x3e\x00\xfa\x3d\xcc\xcc\xcd"
                         "\xfb\x7e\x37\xe4\x3c\x88\x00\x75\x9c"
                         "\xf9\x80\x00\xf9\x00\x01",
                         24));
    ok(strstr(want,
              "[1.5,0.10000000149011612,1e+300,-0,5.9604644775390625e-08]") !=
           NULL,
       "floats of 16, 32 and 64 bits, shortest forms: %s", want);
    ok(record_fails("\xf9\x7e\x00", 3, "NaN or infinite"), "a NaN half");
    ok(record_fails("\xfa\x7f\x80\x00\x00", 5, "NaN or infinite"),
       "an infinite single");
    ok(record_fails("\xfb\x7f\xf8\0\0\0\0\0\x01", 9, "NaN or infinite"),
       "a NaN double");

    /* bytes: every tail length of base64 */
    ok(strstr(record_json("\x84\x40\x41\xff\x42\xff\xfe\x43\xfb\xff\x01", 11),
              "[{\"$bytes\":\"\"},{\"$bytes\":\"/w\"},{\"$bytes\":\"//4\"},"
              "{\"$bytes\":\"+/8B\"}]") != NULL,
       "bytes as base64 without padding");
    /* text: escapes, NUL kept as the escape, UTF-8 kept */
    ok(strstr(record_json("\x6c\"\\\n\t\x01\x1f\x00\x7f\xc3\xa9\xe2\x82", 13),
              "\"\\\"\\\\\\n\\t\\u0001\\u001f\\u0000\x7f\xc3\xa9") == NULL,
       "a text with a cut sequence is not valid");
    ok(record_fails("\x6b\"\\\n\t\x01\x1f\x00\x7f\xc3\xa9\xe2", 12,
                    "not valid UTF-8"),
       "a truncated UTF-8 sequence");
    ok(strstr(
           record_json("\x6d\"\\\n\t\x01\x1f\x00\x7f\xc3\xa9\xe2\x82\xac", 14),
           "\"\\\"\\\\\\n\\t\\u0001\\u001f\\u0000\x7f\xc3\xa9\xe2\x82\xac\"") !=
           NULL,
       "escapes, \\u0000 and UTF-8 in a text");
    ok(record_fails("\x62\xc0\xaf", 3, "not valid UTF-8"), "an overlong");
    ok(record_fails("\x63\xed\xa0\x80", 4, "not valid UTF-8"), "a surrogate");
    ok(record_fails("\x64\xf4\x90\x80\x80", 5, "not valid UTF-8"),
       "past U+10FFFF");
    ok(record_fails("\x61\xff", 2, "not valid UTF-8"), "a 0xff byte");
    {
        uint8_t m[] = {0xa1, 0x61, 0xff, 0x01};
        ok(record_fails(m, sizeof(m), "not valid UTF-8"), "a bad map key");
    }
    /* links */
    {
        struct enc l = {.n = 0};
        uint8_t cid[36];
        cid_of((const uint8_t *)"x", 1, cid);
        link(&l, cid, sizeof(cid));
        ok(strstr(record_json(l.b, l.n), "{\"$link\":\"bafyrei") != NULL,
           "a CID link: %s", record_json(l.b, l.n));
    }
    ok(record_fails("\xd8\x2a\x41\x00", 4, "0x00 prefix"), "an empty link");
    ok(record_fails("\xd8\x2a\x42\x01\x01", 5, "0x00 prefix"),
       "a link without its 0x00");
    ok(record_fails("\xd8\x2a\x61\x00", 4, "tag 42 on something other"),
       "tag 42 on text");
    ok(record_fails("\xc1\x01", 2, "tag other than 42"), "tag 1");
    ok(record_fails("\xd9\x01\x02\x01", 4, "tag other than 42"), "tag 258");
    ok(record_fails("\xf7", 1, "simple value"), "undefined");
    ok(record_fails("\xf8\x20", 2, "simple value"), "a one-byte simple value");
    ok(record_fails("\xe0", 1, "simple value"), "simple value 0");
    ok(record_fails("\x1c", 1, "reserved"), "additional information 28");
    ok(record_fails("\x9f\x01\xff", 3, "indefinite"), "an indefinite array");
    ok(record_fails("\x7f\x61\x61\xff", 4, "indefinite"), "an indefinite text");
    ok(record_fails("\xbf\xff", 2, "indefinite"), "an indefinite map");
    ok(record_fails("\xa1\x01\x02", 3, "map keys are text"),
       "an integer map key");
    ok(record_fails("\xa1\x80\x02", 3, "found a container"),
       "an array map key");
}

static void
test_limits_and_truncation(void)
{
    struct frame_limits lim;
    struct enc e = {.n = 0};
    uint8_t deep[64];
    int bad = 0;

    /* nesting: 31 arrays in the record's map (which is 1, its v 2...) */
    memset(deep, 0x81, sizeof(deep));
    deep[31] = 0x01;
    ok(strstr(record_json(deep, 32), "[[[[") != NULL,
       "31 arrays inside a record map: 32 levels");
    deep[31] = 0x81;
    deep[32] = 0x01;
    ok(record_fails(deep, 33, "nesting deeper than max_depth"),
       "33 levels of nesting");
    memset(deep, 0xd8, sizeof(deep));
    for (int i = 0; i < 64; i += 2)
        deep[i + 1] = 0x2a;
    ok(record_fails(deep, 64, "tag 42 on something other"),
       "tags on tags (a tag only holds bytes)");

    /* whatever max_depth says, recursion stops at CBOR_DEPTH_CEILING */
    {
        static uint8_t nest[CBOR_DEPTH_CEILING + 8];
        memset(nest, 0x81, sizeof(nest));
        nest[sizeof(nest) - 1] = 0x01;
        frame_limits_default(&lim);
        lim.max_depth = 1000000;
        ok(record_fails_lim(nest, sizeof(nest), &lim,
                            "nesting deeper than max_depth"),
           "%zu levels under a max_depth of 1,000,000", sizeof(nest));
    }

    /* the commit body has 7 entries: max_items 7 leaves room for it */
    frame_limits_default(&lim);
    lim.max_items = 7;
    ok(record_fails_lim("\x88\1\2\3\4\5\6\7\x08", 9, &lim,
                        "more items than max_items"),
       "an array over max_items");
    ok(strstr(record_json("\x87\1\2\3\4\5\6\7", 8), "[1,2,3,4,5,6,7]") != NULL,
       "an array at max_items");
    ok(record_fails_lim("\xa8\x61\x61\1\x61\x62\1\x61\x63\1\x61\x64\1"
                        "\x61\x65\1\x61\x66\1\x61\x67\1\x61\x68\1",
                        25, &lim, "more entries than max_items"),
       "a map over max_items");
    ok(record_fails("\x9a\x00\x01\x00\x00\x01", 6, "longer than the bytes"),
       "an array declaring more items than bytes");
    ok(record_fails("\xbb\x00\x00\x00\x01\x00\x00\x00\x00", 9,
                    "more entries than max_items"),
       "a map declaring 2^32 entries");
    ok(record_fails("\x7b\xff\xff\xff\xff\xff\xff\xff\xff", 9,
                    "longer than the bytes left"),
       "a text declaring 2^64-1 bytes");
    ok(record_fails("\x5a\x00\x10\x00\x00\x00", 6,
                    "longer than the bytes left"),
       "bytes declaring 1 MiB");
    e.n = 0;
    header(&e, "#commit");
    head(&e, CBOR_MAP, 1);
    text(&e, "seq");
    raw(&e, "\x1b\x00\x00", 3);
    ok(fails_with(e.b, e.n, NULL, "truncated inside a head"),
       "a truncated head");
    e.n = 0;
    header(&e, "#commit");
    head(&e, CBOR_MAP, 1);
    raw(&e, "\x63se", 3);
    ok(fails_with(e.b, e.n, NULL, "string longer than the bytes left"),
       "a truncated text");
    e.n = 0;
    header(&e, "#commit");
    head(&e, CBOR_MAP, 1);
    ok(fails_with(e.b, e.n, NULL, "map longer than the bytes left"),
       "a map without its entries");

    frame_limits_default(&lim);
    lim.max_blocks = 1;
    ok(spoilt_fails(SPOIL_TWO, &lim, "more sections than max_blocks"),
       "a CAR over max_blocks");
    lim.max_blocks = 2;
    ok(frame_decode(e.b, 0, &lim, &ev, &why) < 0, "an empty message");
    {
        static struct enc f;
        static const uint8_t rec[] = {0xa1, 0x61, 'a', 0x01};
        f.n = 0;
        build_commit(&f, "create", rec, sizeof(rec), SPOIL_TWO);
        ok(frame_decode(f.b, f.n, &lim, &ev, &why) == 0 && ev.ops == 1 &&
               ev.ops_without_record == 0,
           "two sections at max_blocks 2");
        lim.max_block = 3;
        ok(fails_with(f.b, f.n, &lim, "larger than max_block"),
           "a block over max_block");
        lim.max_block = 4;
        ok(frame_decode(f.b, f.n, &lim, &ev, &why) == 0,
           "a block at max_block");

        /* every truncation of a good frame fails, keeps the seq it read */
        const uint8_t *at = memmem(f.b, f.n, "\x63seq", 4);
        size_t seq_end = (size_t)(at - f.b) + 6;
        for (size_t n = 0; n < f.n; n++) {
            int64_t want = n >= seq_end ? 77 : -1;
            if (frame_decode(f.b, n, NULL, &ev, &why) == 0 || why == NULL ||
                ev.data.len != 0 || ev.type != NULL ||
                (ev.seq != -1 && ev.seq != 77) ||
                (want == 77 && ev.seq != 77)) {
                if (bad++ < 3)
                    diag("  cut at %zu: seq %lld, %s", n, (long long)ev.seq,
                         why ? why : "(decoded)");
            }
        }
        ok(bad == 0, "each of %zu truncations fails, seq kept once read", f.n);
    }
}

static void
test_car(void)
{
    static struct enc e;
    static const uint8_t rec[] = {0xa1, 0x61, 'a', 0x01};
    const uint8_t *p;
    uint64_t v;

    ok(spoilt_fails(SPOIL_BLOCK, NULL,
                    "CAR block CID does not match its bytes"),
       "a block whose bytes do not match its CID");
    ok(spoilt_fails(SPOIL_VERSION, NULL, "CAR version is not 1"),
       "CAR version 2");
    ok(spoilt_fails(SPOIL_HASH, NULL, "not sha2-256"), "a sha2-512 CID");
    ok(spoilt_fails(SPOIL_CIDV0, NULL, "CIDv0"), "a CIDv0 section");
    ok(spoilt_fails(SPOIL_VARINT, NULL, "not a readable uvarint"),
       "a ten-byte varint");
    ok(spoilt_fails(SPOIL_SECTION, NULL, "longer than the bytes left"),
       "a section past the end");
    ok(spoilt_fails(SPOIL_ACTION, NULL, "not create, update or delete"),
       "an unknown action");
    ok(spoilt_fails(SPOIL_TRAILING, NULL, "bytes after its body"),
       "a byte after the body");
    ok(spoilt_fails(SPOIL_OPS_TYPE, NULL, "ops is not an array"),
       "ops as a map");

    e.n = 0;
    build_commit(&e, "create", rec, sizeof(rec), SPOIL_MISSING);
    ok(frame_decode(e.b, e.n, NULL, &ev, &why) == 0 && ev.ops == 1 &&
           ev.ops_without_record == 1 &&
           memmem(ev.data.p, ev.data.len, "record", 6) == NULL &&
           memmem(ev.data.p, ev.data.len, "\"cid\":\"bafy", 11) != NULL,
       "a missing block: the op kept with its cid, without a record");
    e.n = 0;
    build_commit(&e, "create", rec, sizeof(rec), SPOIL_CID_NULL);
    ok(frame_decode(e.b, e.n, NULL, &ev, &why) == 0 &&
           ev.ops_without_record == 1 &&
           memmem(ev.data.p, ev.data.len, "cid", 3) == NULL,
       "a create with a null cid: no cid, no record");
    e.n = 0;
    build_commit(&e, "delete", rec, sizeof(rec), SPOIL_NONE);
    ok(frame_decode(e.b, e.n, NULL, &ev, &why) == 0 && ev.ops == 1 &&
           ev.ops_without_record == 0 &&
           data_is("{\"repo\":\"did:plc:test\",\"rev\":\"3mptbypluud2a\","
                   "\"time\":\"2026-07-04T14:38:07.877Z\","
                   "\"ops\":[{\"action\":\"delete\","
                   "\"path\":\"app.bsky.feed.like/3abc\"}]}"),
       "a delete: action and path only");
    e.n = 0;
    {
        static const uint8_t notmap[] = {0x82, 0x01, 0x02};
        build_commit(&e, "update", notmap, sizeof(notmap), SPOIL_NONE);
        ok(fails_with(e.b, e.n, NULL, "record block is not a CBOR map"),
           "a record that is an array");
    }
    e.n = 0;
    {
        static const uint8_t extra[] = {0xa0, 0x01};
        build_commit(&e, "update", extra, sizeof(extra), SPOIL_NONE);
        ok(fails_with(e.b, e.n, NULL, "bytes after its map"),
           "a record block with a byte after its map");
    }

    p = (const uint8_t *)"\xff\xff\xff\xff\xff\xff\xff\xff\x7f";
    ok(car_uvarint(&p, p + 9, &v) == 0 && v == (UINT64_MAX >> 1),
       "a nine-byte uvarint: 2^63 - 1");
    p = (const uint8_t *)"\x80";
    ok(car_uvarint(&p, p + 1, &v) < 0, "a truncated uvarint");
}

static void
test_kinds(void)
{
    struct enc e = {.n = 0};

    header(&e, "#identity");
    head(&e, CBOR_MAP, 3);
    text(&e, "did");
    text(&e, "did:plc:a");
    text(&e, "seq");
    head(&e, CBOR_UINT, 5);
    text(&e, "handle");
    text(&e, "a.b\"c");
    ok(frame_decode(e.b, e.n, NULL, &ev, &why) == 0 &&
           ev.kind == FRAME_IDENTITY && ev.seq == 5 &&
           strcmp(ev.type, "identity") == 0 && ev.time_ms == 0 &&
           data_is("{\"did\":\"did:plc:a\",\"handle\":\"a.b\\\"c\"}"),
       "#identity with a handle");

    e.n = 0;
    header(&e, "#identity");
    head(&e, CBOR_MAP, 2);
    text(&e, "did");
    text(&e, "did:plc:a");
    text(&e, "handle");
    byte(&e, 0xf6);
    ok(frame_decode(e.b, e.n, NULL, &ev, &why) == 0 && ev.seq == -1 &&
           data_is("{\"did\":\"did:plc:a\",\"handle\":null}"),
       "#identity with a null handle, no seq");

    e.n = 0;
    header(&e, "#account");
    head(&e, CBOR_MAP, 4);
    text(&e, "did");
    text(&e, "did:plc:a");
    text(&e, "time");
    text(&e, "1970-01-01T00:00:01.5+01:00");
    text(&e, "active");
    byte(&e, 0xf4);
    text(&e, "status");
    text(&e, "takendown");
    ok(frame_decode(e.b, e.n, NULL, &ev, &why) == 0 &&
           ev.kind == FRAME_ACCOUNT && strcmp(ev.type, "account") == 0 &&
           ev.time_ms == 1500 - 3600000 &&
           data_is("{\"did\":\"did:plc:a\",\"active\":false,\"status\":"
                   "\"takendown\"}"),
       "#account with a status and a time with an offset");
    e.n = 0;
    header(&e, "#account");
    head(&e, CBOR_MAP, 1);
    text(&e, "did");
    text(&e, "did:plc:a");
    ok(fails_with(e.b, e.n, NULL, "account without active"),
       "#account without active");

    e.n = 0;
    header(&e, "#labels");
    head(&e, CBOR_MAP, 1);
    text(&e, "seq");
    head(&e, CBOR_UINT, 9);
    ok(frame_decode(e.b, e.n, NULL, &ev, &why) == 0 &&
           ev.kind == FRAME_UNKNOWN && strcmp(ev.name, "labels") == 0 &&
           ev.type == NULL && ev.data.len == 0 && ev.seq == 9,
       "an unknown t: kind unknown, name labels");

    e.n = 0;
    header(&e, "#sync");
    head(&e, CBOR_MAP, 2);
    text(&e, "seq");
    head(&e, CBOR_UINT, 10);
    text(&e, "blocks");
    bytes(&e, "\x01\x02", 2);
    ok(frame_decode(e.b, e.n, NULL, &ev, &why) == 0 && ev.kind == FRAME_SYNC &&
           ev.type == NULL && ev.seq == 10,
       "#sync: counted, no entry");

    e.n = 0;
    header(&e, "#info");
    head(&e, CBOR_MAP, 2);
    text(&e, "name");
    text(&e, "OutdatedCursor");
    text(&e, "message");
    text(&e, "cursor\nis old");
    ok(frame_decode(e.b, e.n, NULL, &ev, &why) == 0 && ev.kind == FRAME_INFO &&
           strcmp(ev.name, "OutdatedCursor") == 0 &&
           strcmp(ev.message, "cursor?is old") == 0 && ev.type == NULL,
       "#info: name and message (a control byte as '?')");

    e.n = 0;
    head(&e, CBOR_MAP, 1);
    text(&e, "op");
    head(&e, CBOR_NEGINT, 0);
    head(&e, CBOR_MAP, 2);
    text(&e, "error");
    text(&e, "FutureCursor");
    text(&e, "message");
    text(&e, "Cursor in the future.");
    ok(frame_decode(e.b, e.n, NULL, &ev, &why) == 0 && ev.kind == FRAME_ERROR &&
           strcmp(ev.name, "FutureCursor") == 0 &&
           strcmp(ev.message, "Cursor in the future.") == 0 &&
           ev.type == NULL && ev.seq == -1,
       "an error frame (op -1): error and message");

    e.n = 0;
    head(&e, CBOR_MAP, 1);
    text(&e, "op");
    head(&e, CBOR_NEGINT, 0);
    head(&e, CBOR_MAP, 0);
    ok(frame_decode(e.b, e.n, NULL, &ev, &why) == 0 && ev.kind == FRAME_ERROR &&
           strcmp(ev.name, "error") == 0 && ev.message[0] == '\0',
       "an error frame without error or message: name 'error'");

    e.n = 0;
    head(&e, CBOR_MAP, 1);
    text(&e, "op");
    head(&e, CBOR_UINT, 2);
    head(&e, CBOR_MAP, 0);
    ok(fails_with(e.b, e.n, NULL, "op is not 1 or -1"), "op 2");
    e.n = 0;
    head(&e, CBOR_MAP, 1);
    text(&e, "op");
    head(&e, CBOR_UINT, 1);
    head(&e, CBOR_MAP, 0);
    ok(fails_with(e.b, e.n, NULL, "without t"), "op 1 without t");
    e.n = 0;
    head(&e, CBOR_ARRAY, 0);
    ok(fails_with(e.b, e.n, NULL, "header is not a map"), "a header array");
    e.n = 0;
    header(&e, "#commit");
    head(&e, CBOR_ARRAY, 0);
    ok(fails_with(e.b, e.n, NULL, "body is not a map"), "a body array");
    e.n = 0;
    header(&e, "#commit");
    head(&e, CBOR_MAP, 1);
    text(&e, "seq");
    head(&e, CBOR_NEGINT, 3);
    ok(fails_with(e.b, e.n, NULL, "seq is not an unsigned"), "a negative seq");
    e.n = 0;
    header(&e, "#commit");
    head(&e, CBOR_MAP, 2);
    text(&e, "seq");
    head(&e, CBOR_UINT, 3);
    text(&e, "ops");
    head(&e, CBOR_ARRAY, 0);
    ok(fails_with(e.b, e.n, NULL, "commit without repo") && ev.seq == 3,
       "a commit without repo, its seq kept");
    e.n = 0;
    header(&e, "#commit");
    head(&e, CBOR_MAP, 1);
    head(&e, CBOR_UINT, 3);
    head(&e, CBOR_UINT, 3);
    ok(fails_with(e.b, e.n, NULL, "map keys are text"), "a body integer key");
    ok(strcmp(frame_kind_name(FRAME_ACCOUNT), "account") == 0 &&
           strcmp(frame_kind_name(FRAME_KIND_COUNT), "?") == 0,
       "frame_kind_name");
}

/* Inputs the fuzz target found (tests/fuzz/fuzz_frame.c). */
static void
test_fuzz_finds(void)
{
    /* a body map of 4 entries cut after its seq (an 8-byte head of 0):
     * frame_seq() reads it, the copy with seq 1 keeps every other byte,
     * and neither decodes (the copy's map no longer fits its bytes) */
    static const uint8_t cut[] = {
        0xa2, 0x61, 0x74, 0x68, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x24, 0x62, 0x6f, 0x70, 0x01, 0xa4, 0x63, 0x73, 0x65, 0x71, 0x1b,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    struct buf out = {0};
    int64_t seq = -5;

    ok(frame_seq(cut, sizeof(cut), &seq) == 0 && seq == 0,
       "a cut frame: its seq read");
    ok(frame_with_seq(cut, sizeof(cut), 1, &out) == 0 &&
           out.len == sizeof(cut) - 8 && memcmp(out.p, cut, 21) == 0 &&
           out.p[21] == 1 && out.p[22] == 0,
       "its copy with seq 1: a one-byte head, the rest as it was");
    ok(fails_with(cut, sizeof(cut), NULL, "map keys are text") && ev.seq == 0,
       "the cut frame does not decode, its seq kept");
    ok(fails_with((uint8_t *)out.p, out.len, NULL, "map longer than the bytes"),
       "nor does its copy");
    buf_free(&out);

    /* frame_seq() takes the first seq: a second is refused */
    {
        struct enc e = {.n = 0};
        header(&e, "#sync");
        head(&e, CBOR_MAP, 2);
        text(&e, "seq");
        head(&e, CBOR_UINT, 1);
        text(&e, "seq");
        head(&e, CBOR_UINT, 2);
        ok(fails_with(e.b, e.n, NULL, "two seq keys") && ev.seq == 1,
           "a body with two seq keys");
    }
}

/* ---- the recorded frames ---- */

struct frames {
    uint8_t *all;     /* the decompressed file */
    size_t len;       /* its bytes */
    size_t n;         /* frames in it */
    size_t *off, *sz; /* each frame's offset and length */
};

/* The data folder: SLUICE_BLUESKY_DATA or ../shared/data/bluesky. */
static const char *
data_dir(void)
{
    const char *d = getenv("SLUICE_BLUESKY_DATA");

    return d && *d ? d : "../shared/data/bluesky";
}

/* Read frames.bin.zst through zstd; 0, or -1 when it is not there. */
static int
load_frames(struct frames *f)
{
    char path[4096], cmd[4200];
    FILE *p;
    size_t cap = 1 << 20, got;

    memset(f, 0, sizeof(*f));
    snprintf(path, sizeof(path), "%s/frames.bin.zst", data_dir());
    if ((p = fopen(path, "rb")) == NULL)
        return -1;
    fclose(p);
    snprintf(cmd, sizeof(cmd), "zstd -dc '%s'", path);
    if ((p = popen(cmd, "r")) == NULL)
        return -1;
    f->all = malloc(cap);
    while (f->all && (got = fread(f->all + f->len, 1, cap - f->len, p)) > 0) {
        f->len += got;
        if (f->len == cap)
            f->all = realloc(f->all, cap *= 2);
    }
    if (pclose(p) != 0 || f->all == NULL)
        return -1;
    f->off = calloc(1024, sizeof(size_t));
    f->sz = calloc(1024, sizeof(size_t));
    for (size_t at = 0; at + 4 <= f->len && f->n < 1024;) {
        uint32_t n = (uint32_t)f->all[at] | (uint32_t)f->all[at + 1] << 8 |
                     (uint32_t)f->all[at + 2] << 16 |
                     (uint32_t)f->all[at + 3] << 24;
        if (n > f->len - at - 4)
            return -1;
        f->off[f->n] = at + 4;
        f->sz[f->n++] = n;
        at += 4 + n;
    }
    return 0;
}

static void
frames_free(struct frames *f)
{
    free(f->all);
    free(f->off);
    free(f->sz);
}

static void
test_seq(const struct frames *f)
{
    struct buf out = {0};
    int64_t seq, prev = -1;
    int bad = 0;

    for (size_t i = 0; i < f->n; i++) {
        const uint8_t *m = f->all + f->off[i];
        if (frame_seq(m, f->sz[i], &seq) < 0 ||
            (prev >= 0 && seq != prev + 1)) {
            diag("frame %zu: seq %lld after %lld", i, (long long)seq,
                 (long long)prev);
            bad++;
        }
        prev = seq;
    }
    ok(bad == 0 && f->n == 150, "frame_seq of %zu recorded frames: rising by 1",
       f->n);
    frame_seq(f->all + f->off[0], f->sz[0], &seq);
    is_int(seq, 31527015322LL, "the first recorded seq");
    frame_seq(f->all + f->off[f->n - 1], f->sz[f->n - 1], &seq);
    is_int(seq, 31527015471LL, "the last recorded seq");

    /* every width of the head, and back */
    const int64_t seqs[] = {
        0,     23,    24,           255,          256,
        65535, 65536, 4294967295LL, 4294967296LL, INT64_MAX};
    bad = 0;
    for (size_t i = 0; i < f->n; i++) {
        const uint8_t *m = f->all + f->off[i];
        for (size_t j = 0; j < sizeof(seqs) / sizeof(seqs[0]); j++) {
            struct buf back = {0};
            int64_t orig;
            frame_seq(m, f->sz[i], &orig);
            if (frame_with_seq(m, f->sz[i], seqs[j], &out) < 0 ||
                frame_seq((uint8_t *)out.p, out.len, &seq) < 0 ||
                seq != seqs[j] ||
                frame_with_seq((uint8_t *)out.p, out.len, orig, &back) < 0 ||
                back.len != f->sz[i] || memcmp(back.p, m, back.len) != 0)
                bad++;
            buf_free(&back);
        }
    }
    ok(bad == 0, "frame_with_seq: every head width, and back byte for byte");
    ok(frame_with_seq(f->all + f->off[0], f->sz[0], -1, &out) < 0 &&
           out.len == 0,
       "frame_with_seq refuses a negative seq");
    {
        /* the first 200 bytes of a commit still name it */
        ok(frame_seq(f->all + f->off[0], 200, &seq) == 0 &&
               seq == 31527015322LL,
           "frame_seq of a frame cut after its seq");
    }
    buf_free(&out);
}

/* One decoded recorded frame. */
struct decoded {
    enum frame_kind kind;
    int64_t seq, time_ms;
    cJSON *data;
    int *used; /* per op: matched by an expected line */
};

/* The entry among d[0..n) of kind whose data's key is did. */
static struct decoded *
find_entry(struct decoded *d, size_t n, enum frame_kind kind, const char *key,
           const char *did, const char *path, const char *action, int *op)
{
    for (size_t i = 0; i < n; i++) {
        const cJSON *v, *ops, *o;
        int j = 0;
        if (d[i].kind != kind || d[i].data == NULL)
            continue;
        v = cJSON_GetObjectItemCaseSensitive(d[i].data, key);
        if (!cJSON_IsString(v) || strcmp(v->valuestring, did) != 0)
            continue;
        if (path == NULL)
            return &d[i];
        ops = cJSON_GetObjectItemCaseSensitive(d[i].data, "ops");
        cJSON_ArrayForEach(o, ops)
        {
            const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "path");
            const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "action");
            if (!d[i].used[j] && cJSON_IsString(p) && cJSON_IsString(a) &&
                strcmp(p->valuestring, path) == 0 &&
                strcmp(a->valuestring, action) == 0) {
                *op = j;
                return &d[i];
            }
            j++;
        }
    }
    return NULL;
}

static const char *
str_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Compare one expected_v1.jsonl line; 0 when it matches, with diag()s. */
static int
compare_line(const cJSON *line, struct decoded *d, size_t n, int lineno)
{
    const char *kind = str_of(line, "kind"), *did = str_of(line, "did");
    const cJSON *c, *rec, *got_rec;
    struct decoded *e;
    char path[1024];
    int op = -1, bad = 0;

    if (kind == NULL || did == NULL) {
        diag("line %d: no kind or did", lineno);
        return 1;
    }
    if (strcmp(kind, "commit") == 0) {
        const char *coll, *rkey, *action, *cid, *got_cid;
        const cJSON *o;
        c = cJSON_GetObjectItemCaseSensitive(line, "commit");
        coll = str_of(c, "collection");
        rkey = str_of(c, "rkey");
        action = str_of(c, "operation");
        cid = str_of(c, "cid");
        snprintf(path, sizeof(path), "%s/%s", coll ? coll : "?",
                 rkey ? rkey : "?");
        e = find_entry(d, n, FRAME_COMMIT, "repo", did, path,
                       action ? action : "?", &op);
        if (e == NULL) {
            diag("line %d: no %s of %s in a commit of %s", lineno,
                 action ? action : "?", path, did);
            return 1;
        }
        e->used[op] = 1;
        o = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(e->data, "ops"),
                               op);
        got_cid = str_of(o, "cid");
        if ((cid == NULL) != (got_cid == NULL) ||
            (cid && strcmp(cid, got_cid) != 0)) {
            diag("line %d (%s): cid %s, expected %s", lineno, path,
                 got_cid ? got_cid : "none", cid ? cid : "none");
            bad = 1;
        }
        {
            const char *rev = str_of(c, "rev");
            const char *got_rev = str_of(e->data, "rev");
            if (rev == NULL || got_rev == NULL || strcmp(rev, got_rev) != 0) {
                diag("line %d (%s): rev %s, expected %s", lineno, path,
                     got_rev ? got_rev : "none", rev ? rev : "none");
                bad = 1;
            }
        }
        rec = cJSON_GetObjectItemCaseSensitive(c, "record");
        got_rec = cJSON_GetObjectItemCaseSensitive(o, "record");
        if ((rec == NULL) != (got_rec == NULL) ||
            (rec && !cJSON_Compare(rec, got_rec, 1))) {
            char *a = got_rec ? cJSON_PrintUnformatted(got_rec) : NULL;
            char *b = rec ? cJSON_PrintUnformatted(rec) : NULL;
            diag("line %d (%s): record\n#   got  %s\n#   want %s", lineno, path,
                 a ? a : "none", b ? b : "none");
            free(a);
            free(b);
            bad = 1;
        }
        return bad;
    }
    if (strcmp(kind, "identity") == 0 || strcmp(kind, "account") == 0) {
        int is_id = kind[0] == 'i';
        const cJSON *want_seq;
        const char *t;
        c = cJSON_GetObjectItemCaseSensitive(line, kind);
        e = find_entry(d, n, is_id ? FRAME_IDENTITY : FRAME_ACCOUNT, "did", did,
                       NULL, NULL, &op);
        if (e == NULL) {
            diag("line %d: no %s entry of %s", lineno, kind, did);
            return 1;
        }
        want_seq = cJSON_GetObjectItemCaseSensitive(c, "seq");
        if (!cJSON_IsNumber(want_seq) ||
            (double)e->seq != want_seq->valuedouble) {
            diag("line %d: %s seq %lld", lineno, kind, (long long)e->seq);
            bad = 1;
        }
        if ((t = str_of(c, "time")) != NULL) {
            struct tm tm = {0};
            int ms = 0;
            sscanf(t, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon,
                   &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms);
            tm.tm_year -= 1900;
            tm.tm_mon -= 1;
            if ((int64_t)timegm(&tm) * 1000 + ms != e->time_ms) {
                diag("line %d: time_ms %lld for %s", lineno,
                     (long long)e->time_ms, t);
                bad = 1;
            }
        }
        if (is_id) {
            const cJSON *h = cJSON_GetObjectItemCaseSensitive(c, "handle");
            const cJSON *g =
                cJSON_GetObjectItemCaseSensitive(e->data, "handle");
            if (g == NULL || (h ? !cJSON_Compare(h, g, 1) : !cJSON_IsNull(g))) {
                diag("line %d: identity handle differs", lineno);
                bad = 1;
            }
        } else {
            const char *keys[] = {"active", "status"};
            for (int k = 0; k < 2; k++) {
                const cJSON *h = cJSON_GetObjectItemCaseSensitive(c, keys[k]);
                const cJSON *g =
                    cJSON_GetObjectItemCaseSensitive(e->data, keys[k]);
                if ((h == NULL) != (g == NULL) ||
                    (h && !cJSON_Compare(h, g, 1))) {
                    diag("line %d: account %s differs", lineno, keys[k]);
                    bad = 1;
                }
            }
        }
        return bad;
    }
    diag("line %d: kind %s", lineno, kind);
    return 1;
}

static void
test_recorded(const struct frames *f)
{
    struct decoded *d = calloc(f->n, sizeof(*d));
    char path[4096], *line = NULL;
    size_t cap = 0, kinds[FRAME_KIND_COUNT] = {0}, ops = 0, without = 0;
    int bad = 0, lines = 0, mismatched = 0, unused = 0;
    FILE *fp;

    for (size_t i = 0; i < f->n; i++) {
        if (frame_decode(f->all + f->off[i], f->sz[i], NULL, &ev, &why) < 0) {
            diag("frame %zu (seq %lld): %s", i, (long long)ev.seq, why);
            bad++;
            continue;
        }
        kinds[ev.kind]++;
        ops += ev.ops;
        without += ev.ops_without_record;
        d[i].kind = ev.kind;
        d[i].seq = ev.seq;
        d[i].time_ms = ev.time_ms;
        d[i].data = cJSON_ParseWithLength(ev.data.p, ev.data.len);
        d[i].used = calloc(ev.ops + 1, sizeof(int));
        if (d[i].data == NULL) {
            diag("frame %zu: its data is not JSON: %.*s", i, (int)ev.data.len,
                 ev.data.p);
            bad++;
        }
        if (ev.kind == FRAME_COMMIT && ev.time_ms < 1783000000000LL)
            bad++;
    }
    ok(bad == 0, "all %zu recorded frames decode", f->n);
    ok(kinds[FRAME_COMMIT] == 148 && kinds[FRAME_IDENTITY] == 1 &&
           kinds[FRAME_ACCOUNT] == 1 && ops == 150 && without == 0,
       "148 commits carrying 150 ops (%zu, %zu, %zu without a record), "
       "1 identity, 1 account",
       kinds[FRAME_COMMIT], ops, without);

    snprintf(path, sizeof(path), "%s/expected_v1.jsonl", data_dir());
    if ((fp = fopen(path, "r")) == NULL) {
        ok(0, "%s opens", path);
        return;
    }
    while (getline(&line, &cap, fp) > 0) {
        cJSON *j = cJSON_Parse(line);
        lines++;
        if (j == NULL || compare_line(j, d, f->n, lines) != 0)
            mismatched++;
        cJSON_Delete(j);
    }
    fclose(fp);
    free(line);
    for (size_t i = 0; i < f->n; i++) {
        const cJSON *o;
        int j = 0;
        if (d[i].kind != FRAME_COMMIT || d[i].data == NULL)
            continue;
        cJSON_ArrayForEach(o,
                           cJSON_GetObjectItemCaseSensitive(d[i].data, "ops"))
        {
            if (!d[i].used[j++]) {
                diag("frame %zu: op %s not in expected_v1.jsonl", i,
                     str_of(o, "path"));
                unused++;
            }
        }
    }
    ok(lines == 152 && mismatched == 0,
       "%d lines of expected_v1.jsonl, %d differ from the decoded frames",
       lines, mismatched);
    ok(unused == 0, "every decoded op is in expected_v1.jsonl (%d not)",
       unused);
    for (size_t i = 0; i < f->n; i++) {
        cJSON_Delete(d[i].data);
        free(d[i].used);
    }
    free(d);
}

/* xorshift64*: the mutation loop's fixed-seed generator. */
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t
next(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545f4914f6cdd1dull;
}

/* Change a CBOR length: a head byte's small argument or a following
 * argument byte, near a random position. */
static void
bump_length(uint8_t *m, size_t len)
{
    for (size_t tries = 0; tries < 64; tries++) {
        size_t at = next() % len;
        unsigned major = m[at] >> 5, info = m[at] & 31;
        if (major < 2 || major > 5)
            continue;
        if (info < 23) {
            m[at] = (uint8_t)(m[at] + (next() & 1 ? 1 : -1 + 0 * info));
            if ((m[at] & 31) == 31)
                m[at]--;
        } else if (info >= 24 && info <= 27 && at + 1 < len) {
            m[at + 1 + next() % ((1u << (info - 24)))] ^=
                (uint8_t)(1u << (next() % 8));
        }
        return;
    }
}

static void
test_mutations(const struct frames *f, int rounds)
{
    static uint8_t m[1 << 20];
    struct buf copy = {0}, first = {0};
    struct frame_limits lim;
    int bad = 0, decoded = 0;
    int64_t seq;

    frame_limits_default(&lim);
    /* the first frame's entry, to compare after failures */
    frame_decode(f->all + f->off[0], f->sz[0], NULL, &ev, &why);
    buf_reserve(&first, ev.data.len);
    memcpy(first.p, ev.data.p, ev.data.len);
    first.len = ev.data.len;

    for (int r = 0; r < rounds; r++) {
        size_t i = next() % f->n, len = f->sz[i];
        int muts = 1 + (int)(next() % 4), rc;
        if (len > sizeof(m))
            continue;
        memcpy(m, f->all + f->off[i], len);
        for (int k = 0; k < muts && len > 0; k++) {
            switch (next() % 5) {
            case 0:
                m[next() % len] ^= (uint8_t)(1u << (next() % 8));
                break;
            case 1:
                m[next() % len] = (uint8_t)next();
                break;
            case 2:
                len = next() % len;
                break;
            case 3:
                bump_length(m, len);
                break;
            default:
                /* the region before blocks: header, ops, rev, seq, repo */
                m[next() % (len < 400 ? len : 400)] ^=
                    (uint8_t)(1u << (next() % 8));
                break;
            }
        }
        why = NULL;
        rc = frame_decode(m, len, r % 3 ? &lim : NULL, &ev, &why);
        if (rc == 0) {
            decoded++;
            if ((ev.type != NULL) !=
                (ev.kind == FRAME_COMMIT || ev.kind == FRAME_IDENTITY ||
                 ev.kind == FRAME_ACCOUNT))
                bad++;
            if (ev.type && r % 16 == 0) {
                cJSON *j = cJSON_ParseWithLength(ev.data.p, ev.data.len);
                if (j == NULL) {
                    if (bad++ < 3)
                        diag("round %d: data not JSON", r);
                }
                cJSON_Delete(j);
            }
        } else if (rc != -1 || why == NULL || *why == '\0' ||
                   ev.data.len != 0 || ev.type != NULL) {
            if (bad++ < 3)
                diag("round %d: rc %d, why %s", r, rc, why ? why : "(null)");
        }
        if (frame_seq(m, len, &seq) == 0 &&
            frame_with_seq(m, len, seq + 1, &copy) < 0)
            bad++;
        if (r % 1000 == 0 &&
            (frame_decode(f->all + f->off[0], f->sz[0], NULL, &ev, &why) < 0 ||
             ev.data.len != first.len ||
             memcmp(ev.data.p, first.p, first.len) != 0)) {
            if (bad++ < 3)
                diag("round %d: frame 0 decodes differently", r);
        }
    }
    ok(bad == 0,
       "%d mutated frames: each 0 or -1, state consistent "
       "(%d decoded)",
       rounds, decoded);
    buf_free(&copy);
    buf_free(&first);
}

int
main(void)
{
    struct frames f;
    int64_t seq;
    static const uint8_t tiny[] = {0xa2, 0x62, 'o', 'p',  0x01, 0x61,
                                   't',  0x62, '#', 'x',  0xa1, 0x63,
                                   's',  'e',  'q', 0x18, 0x2a};
    struct buf out = {0};

    frame_event_init(&ev);
    ok(frame_seq(tiny, sizeof(tiny), &seq) == 0 && seq == 42,
       "frame_seq of a hand-built frame");
    ok(frame_with_seq(tiny, sizeof(tiny), 7, &out) == 0 &&
           out.len == sizeof(tiny) - 1 && (uint8_t)out.p[out.len - 1] == 7,
       "frame_with_seq: a shorter head");
    ok(frame_seq(tiny, sizeof(tiny) - 1, &seq) < 0, "a truncated seq");
    buf_free(&out);

    test_cbor_json();
    test_limits_and_truncation();
    test_car();
    test_kinds();
    test_fuzz_finds();

    if (load_frames(&f) < 0) {
        printf("ok %d # skip %s/frames.bin.zst not there\n", ++tap_run,
               data_dir());
    } else {
        test_seq(&f);
        test_recorded(&f);
        test_mutations(&f, 60000);
    }
    frames_free(&f);
    frame_event_free(&ev);
    return done_testing();
}
