/*
 * firehose_frame.c: one subscribeRepos message into a stream entry (see
 * firehose_frame.h).
 *
 * A message is read in one pass over its header and body maps, except a
 * commit's: its ops come before its blocks (DAG-CBOR sorts keys by length
 * first), so the first pass notes where ops and blocks are, the CAR is
 * then indexed (every block checked against its CID), and the ops are
 * read a second time to write the entry, each with its record.
 */
#include <string.h>

#include "worker/car.h"
#include "worker/dagcbor.h"
#include "worker/firehose_frame.h"

void
frame_event_init(struct frame_event *ev)
{
    memset(ev, 0, sizeof(*ev));
}

void
frame_event_free(struct frame_event *ev)
{
    buf_free(&ev->data);
    buf_free(&ev->index);
}

const char *
frame_kind_name(enum frame_kind k)
{
    static const char *const names[FRAME_KIND_COUNT] = {
        "commit", "identity", "account", "sync", "info", "error", "unknown",
    };

    return (unsigned)k < FRAME_KIND_COUNT ? names[k] : "?";
}

/* 1 when the text item [s, s + len) is the NUL-terminated key. */
static int
key_is(const uint8_t *s, size_t len, const char *key)
{
    return strlen(key) == len && memcmp(s, key, len) == 0;
}

/*
 * Find the body's seq in msg: *at is the offset of its value's head, *hlen
 * that head's length, *seq the value. Only the header and the body's
 * entries before seq are read, so that a message cut short after its seq
 * (an oversize one) still names itself. Returns 0, or -1 when there is no
 * readable header, body map or body seq (an unsigned integer that fits in
 * int64_t).
 */
static int
find_seq(const uint8_t *msg, size_t len, size_t *at, size_t *hlen, int64_t *seq)
{
    struct cbor c;
    struct cbor_head h, v;
    const uint8_t *k, *start;
    size_t klen;

    cbor_init(&c, msg, len, NULL);
    if (cbor_head(&c, &h) < 0 || h.major != CBOR_MAP)
        return -1;
    for (uint64_t i = 0; i < h.arg; i++)
        if (cbor_text(&c, &k, &klen) < 0 || cbor_skip(&c) < 0)
            return -1;
    if (cbor_head(&c, &h) < 0 || h.major != CBOR_MAP)
        return -1;
    for (uint64_t i = 0; i < h.arg; i++) {
        if (cbor_text(&c, &k, &klen) < 0)
            return -1;
        if (!key_is(k, klen, "seq")) {
            if (cbor_skip(&c) < 0)
                return -1;
            continue;
        }
        start = c.p;
        if (cbor_head(&c, &v) < 0 || v.major != CBOR_UINT ||
            v.arg > (uint64_t)INT64_MAX)
            return -1;
        *at = (size_t)(start - msg);
        *hlen = (size_t)(c.p - start);
        *seq = (int64_t)v.arg;
        return 0;
    }
    return -1;
}

int
frame_seq(const uint8_t *msg, size_t len, int64_t *seq)
{
    size_t at, hlen;

    return find_seq(msg, len, &at, &hlen, seq);
}

/* The shortest head of an unsigned integer v into p; returns its length. */
static size_t
uint_head(uint8_t *p, uint64_t v)
{
    size_t n;

    if (v < 24) {
        p[0] = (uint8_t)v;
        return 1;
    }
    if (v <= 0xff) {
        p[0] = 24;
        n = 1;
    } else if (v <= 0xffff) {
        p[0] = 25;
        n = 2;
    } else if (v <= 0xffffffff) {
        p[0] = 26;
        n = 4;
    } else {
        p[0] = 27;
        n = 8;
    }
    for (size_t i = 0; i < n; i++)
        p[n - i] = (uint8_t)(v >> (8 * i));
    return n + 1;
}

int
frame_with_seq(const uint8_t *msg, size_t len, int64_t seq, struct buf *out)
{
    size_t at, hlen, n;
    int64_t old;
    uint8_t head[9];

    out->len = 0;
    if (seq < 0 || find_seq(msg, len, &at, &hlen, &old) < 0)
        return -1;
    n = uint_head(head, (uint64_t)seq);
    if (buf_reserve(out, len - hlen + n) < 0)
        return -1;
    memcpy(out->p, msg, at);
    memcpy(out->p + at, head, n);
    memcpy(out->p + at + n, msg + at + hlen, len - at - hlen);
    out->len = len - hlen + n;
    return 0;
}

/* Copy a text into a fixed field, cut to fit, every byte that is not
 * printable ASCII as '?' (names and messages go to logs). */
static void
copy_field(char *dst, size_t cap, const uint8_t *s, size_t len)
{
    size_t n = len < cap - 1 ? len : cap - 1;

    for (size_t i = 0; i < n; i++)
        dst[i] = s[i] >= 0x20 && s[i] < 0x7f ? (char)s[i] : '?';
    dst[n] = '\0';
}

/* Days from 1970-01-01 to y-m-d of the proleptic Gregorian calendar. */
static int64_t
days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t era;
    unsigned yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* n decimal digits at s as a number, or -1 when one is not a digit. */
static int
digits(const uint8_t *s, unsigned n)
{
    int v = 0;

    for (unsigned i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/*
 * An RFC 3339 time ("2026-07-04T14:38:07.877Z", or with an offset such as
 * "+02:00") in milliseconds since the epoch, or 0 when it is not one.
 */
static int64_t
parse_time(const uint8_t *s, size_t len)
{
    int y, mo, d, h, mi, sec, ms = 0, off = 0;
    size_t i = 19;

    if (len < 20 || s[4] != '-' || s[7] != '-' ||
        (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || s[13] != ':' ||
        s[16] != ':')
        return 0;
    y = digits(s, 4);
    mo = digits(s + 5, 2);
    d = digits(s + 8, 2);
    h = digits(s + 11, 2);
    mi = digits(s + 14, 2);
    sec = digits(s + 17, 2);
    if (y < 0 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 ||
        mi < 0 || mi > 59 || sec < 0 || sec > 60)
        return 0;
    if (s[i] == '.') {
        unsigned n = 0;
        for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++, n++)
            if (n < 3)
                ms = ms * 10 + (s[i] - '0');
        if (n == 0)
            return 0;
        for (; n < 3; n++)
            ms *= 10;
    }
    if (i + 1 == len && (s[i] == 'Z' || s[i] == 'z')) {
        off = 0;
    } else if (i + 6 == len && (s[i] == '+' || s[i] == '-') &&
               s[i + 3] == ':') {
        int oh = digits(s + i + 1, 2), om = digits(s + i + 4, 2);
        if (oh < 0 || oh > 23 || om < 0 || om > 59)
            return 0;
        off = (oh * 60 + om) * (s[i] == '-' ? -1 : 1);
    } else {
        return 0;
    }
    return ((days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 +
             mi * 60 + sec - off * 60) *
            1000) +
           ms;
}

static int
put(struct buf *out, const char *s, size_t len)
{
    if (buf_reserve(out, len) < 0)
        return -1;
    memcpy(out->p + out->len, s, len);
    out->len += len;
    return 0;
}

#define PUT(out, lit) put(out, lit, sizeof(lit) - 1)

/* Where a commit's ops and blocks are, from the first pass. */
struct commit_parts {
    const uint8_t *ops; /* the ops array item */
    size_t ops_len;     /* its bytes */
    const uint8_t *car; /* the blocks bytes */
    size_t car_len;
    const uint8_t *repo; /* the repo DID (text) */
    size_t repo_len;
    const uint8_t *rev; /* the commit's rev (text), NULL when absent */
    size_t rev_len;
};

/* What frame_decode() carries from one step to the next. */
struct decoder {
    struct cbor c;                  /* over the whole message */
    const struct frame_limits *lim; /* never NULL */
    struct frame_event *ev;
    const uint8_t *time; /* the body's time text as sent, NULL when absent */
    size_t time_len;
    const char *why;
};

static int
dfail(struct decoder *d, const char *why)
{
    d->why = why;
    return -1;
}

/* The reader failed: its reason. */
static int
cfail(struct decoder *d)
{
    d->why = d->c.why;
    return -1;
}

/*
 * A body key every kind may have: seq (an unsigned integer that fits in
 * int64_t) and time. 1 when key is one of them and its value was read, 0
 * when it is another key (nothing read), -1 on error.
 */
static int
common_key(struct decoder *d, const uint8_t *k, size_t klen)
{
    struct cbor_head h;
    const uint8_t *s;
    size_t len;

    if (klen == 3 && memcmp(k, "seq", 3) == 0) {
        if (cbor_head(&d->c, &h) < 0)
            return cfail(d);
        if (h.major != CBOR_UINT || h.arg > (uint64_t)INT64_MAX)
            return dfail(d, "body seq is not an unsigned 63-bit integer");
        /* frame_seq() takes the first: a second one is not the same */
        if (d->ev->seq >= 0)
            return dfail(d, "body has two seq keys");
        d->ev->seq = (int64_t)h.arg;
        return 1;
    }
    if (klen == 4 && memcmp(k, "time", 4) == 0) {
        if (cbor_text(&d->c, &s, &len) < 0)
            return cfail(d);
        d->ev->time_ms = parse_time(s, len);
        d->time = s;
        d->time_len = len;
        return 1;
    }
    return 0;
}

/* A text value, or null (*s = NULL); anything else is an error. */
static int
text_or_null(struct decoder *d, const uint8_t **s, size_t *len, const char *why)
{
    if (d->c.p < d->c.end && *d->c.p == 0xf6) {
        d->c.p++;
        *s = NULL;
        *len = 0;
        return 0;
    }
    if (d->c.p < d->c.end && (*d->c.p >> 5) != CBOR_TEXT)
        return dfail(d, why);
    return cbor_text(&d->c, s, len) < 0 ? cfail(d) : 0;
}

/* A boolean value into *v; anything else is an error. */
static int
boolean(struct decoder *d, int *v, const char *why)
{
    struct cbor_head h;

    if (cbor_head(&d->c, &h) < 0)
        return cfail(d);
    if (h.major != CBOR_SIMPLE || (h.info != CBOR_TRUE && h.info != CBOR_FALSE))
        return dfail(d, why);
    *v = h.info == CBOR_TRUE;
    return 0;
}

/* Read the body's map head; *n its entries. */
static int
body_map(struct decoder *d, uint64_t *n)
{
    struct cbor_head h;

    if (cbor_head(&d->c, &h) < 0)
        return cfail(d);
    if (h.major != CBOR_MAP)
        return dfail(d, "frame body is not a map");
    *n = h.arg;
    return 0;
}

/* A body of which only seq, time and (for #info and errors) the name and
 * message are kept: #sync, #info, another t, an error frame. */
static int
decode_other(struct decoder *d, const char *name_key)
{
    uint64_t n;
    const uint8_t *k, *s;
    size_t klen, len;
    int r;

    if (body_map(d, &n) < 0)
        return -1;
    for (uint64_t i = 0; i < n; i++) {
        if (cbor_text(&d->c, &k, &klen) < 0)
            return cfail(d);
        if ((r = common_key(d, k, klen)) < 0)
            return -1;
        if (r)
            continue;
        if (name_key && key_is(k, klen, name_key)) {
            if (text_or_null(d, &s, &len, "frame name is not text") < 0)
                return -1;
            if (s)
                copy_field(d->ev->name, sizeof(d->ev->name), s, len);
        } else if (name_key && key_is(k, klen, "message")) {
            if (text_or_null(d, &s, &len, "frame message is not text") < 0)
                return -1;
            if (s)
                copy_field(d->ev->message, sizeof(d->ev->message), s, len);
        } else if (cbor_skip(&d->c) < 0) {
            return cfail(d);
        }
    }
    return 0;
}

/* #identity: {"did": did, "handle": handle or null}. */
static int
decode_identity(struct decoder *d)
{
    struct buf *out = &d->ev->data;
    uint64_t n;
    const uint8_t *k, *did = NULL, *handle = NULL;
    size_t klen, did_len = 0, handle_len = 0;
    int r;

    if (body_map(d, &n) < 0)
        return -1;
    for (uint64_t i = 0; i < n; i++) {
        if (cbor_text(&d->c, &k, &klen) < 0)
            return cfail(d);
        if ((r = common_key(d, k, klen)) < 0)
            return -1;
        if (r)
            continue;
        if (key_is(k, klen, "did")) {
            if (text_or_null(d, &did, &did_len, "identity did is not text") < 0)
                return -1;
        } else if (key_is(k, klen, "handle")) {
            if (text_or_null(d, &handle, &handle_len,
                             "identity handle is not text") < 0)
                return -1;
        } else if (cbor_skip(&d->c) < 0) {
            return cfail(d);
        }
    }
    if (did == NULL)
        return dfail(d, "identity without did");
    if (PUT(out, "{\"did\":") < 0 ||
        cbor_json_string(out, did, did_len, &d->why) < 0 ||
        PUT(out, ",\"handle\":") < 0)
        return d->why ? -1 : dfail(d, "out of memory");
    if (handle == NULL) {
        if (PUT(out, "null") < 0)
            return dfail(d, "out of memory");
    } else if (cbor_json_string(out, handle, handle_len, &d->why) < 0) {
        return -1;
    }
    if (PUT(out, "}") < 0)
        return dfail(d, "out of memory");
    d->ev->type = "identity";
    return 0;
}

/* #account: {"did": did, "active": bool, "status": s when present}. */
static int
decode_account(struct decoder *d)
{
    struct buf *out = &d->ev->data;
    uint64_t n;
    const uint8_t *k, *did = NULL, *status = NULL;
    size_t klen, did_len = 0, status_len = 0;
    int r, active = -1;

    if (body_map(d, &n) < 0)
        return -1;
    for (uint64_t i = 0; i < n; i++) {
        if (cbor_text(&d->c, &k, &klen) < 0)
            return cfail(d);
        if ((r = common_key(d, k, klen)) < 0)
            return -1;
        if (r)
            continue;
        if (key_is(k, klen, "did")) {
            if (text_or_null(d, &did, &did_len, "account did is not text") < 0)
                return -1;
        } else if (key_is(k, klen, "active")) {
            if (boolean(d, &active, "account active is not a boolean") < 0)
                return -1;
        } else if (key_is(k, klen, "status")) {
            if (text_or_null(d, &status, &status_len,
                             "account status is not text") < 0)
                return -1;
        } else if (cbor_skip(&d->c) < 0) {
            return cfail(d);
        }
    }
    if (did == NULL)
        return dfail(d, "account without did");
    if (active < 0)
        return dfail(d, "account without active");
    if (PUT(out, "{\"did\":") < 0 ||
        cbor_json_string(out, did, did_len, &d->why) < 0)
        return d->why ? -1 : dfail(d, "out of memory");
    if (active ? PUT(out, ",\"active\":true") : PUT(out, ",\"active\":false"))
        return dfail(d, "out of memory");
    if (status) {
        if (PUT(out, ",\"status\":") < 0 ||
            cbor_json_string(out, status, status_len, &d->why) < 0)
            return d->why ? -1 : dfail(d, "out of memory");
    }
    if (PUT(out, "}") < 0)
        return dfail(d, "out of memory");
    d->ev->type = "account";
    return 0;
}

/* The record of a block: one DAG-CBOR map, the whole block. */
static int
put_record(struct decoder *d, const struct car_block *b)
{
    struct cbor r;

    if (b->len == 0 || (b->data[0] >> 5) != CBOR_MAP)
        return dfail(d, "record block is not a CBOR map");
    cbor_init(&r, b->data, b->len, d->lim);
    if (PUT(&d->ev->data, ",\"record\":") < 0)
        return dfail(d, "out of memory");
    if (cbor_json(&r, &d->ev->data) < 0)
        return dfail(d, r.why);
    if (r.p != r.end)
        return dfail(d, "record block has bytes after its map");
    return 0;
}

/* One op of the second pass, written with its record. */
static int
put_op(struct decoder *d, struct cbor *c, const struct car *car)
{
    struct buf *out = &d->ev->data;
    struct cbor_head h;
    const uint8_t *k, *action = NULL, *path = NULL, *cid = NULL;
    size_t klen, action_len = 0, path_len = 0, cid_len = 0;
    const struct car_block *b;
    int del;

    if (cbor_head(c, &h) < 0)
        return dfail(d, c->why);
    if (h.major != CBOR_MAP)
        return dfail(d, "commit op is not a map");
    for (uint64_t i = 0; i < h.arg; i++) {
        if (cbor_text(c, &k, &klen) < 0)
            return dfail(d, c->why);
        if (key_is(k, klen, "action")) {
            if (cbor_text(c, &action, &action_len) < 0)
                return dfail(d, "commit op action is not text");
        } else if (key_is(k, klen, "path")) {
            if (cbor_text(c, &path, &path_len) < 0)
                return dfail(d, "commit op path is not text");
        } else if (key_is(k, klen, "cid")) {
            if (c->p < c->end && *c->p == 0xf6) {
                c->p++;
                cid = NULL;
            } else if (cbor_link(c, &cid, &cid_len) < 0) {
                return dfail(d, "commit op cid is not a CID link or null");
            }
        } else if (cbor_skip(c) < 0) {
            return dfail(d, c->why);
        }
    }
    if (action == NULL || path == NULL)
        return dfail(d, "commit op without action or path");
    if (key_is(action, action_len, "delete"))
        del = 1;
    else if (key_is(action, action_len, "create") ||
             key_is(action, action_len, "update"))
        del = 0;
    else
        return dfail(d, "commit op action is not create, update or delete");
    if (PUT(out, "{\"action\":\"") < 0 ||
        put(out, (const char *)action, action_len) < 0 ||
        PUT(out, "\",\"path\":") < 0)
        return dfail(d, "out of memory");
    if (cbor_json_string(out, path, path_len, &d->why) < 0)
        return -1;
    if (!del && cid) {
        if (PUT(out, ",\"cid\":\"") < 0 ||
            cbor_cid_string(out, cid, cid_len) < 0 || PUT(out, "\"") < 0)
            return dfail(d, "out of memory");
    }
    if (!del) {
        b = cid ? car_find(car, cid, cid_len) : NULL;
        if (b == NULL)
            d->ev->ops_without_record++;
        else if (put_record(d, b) < 0)
            return -1;
    }
    if (PUT(out, "}") < 0)
        return dfail(d, "out of memory");
    d->ev->ops++;
    return 0;
}

/* #commit: {"repo": did, "ops": [...]}. */
static int
decode_commit(struct decoder *d)
{
    struct frame_event *ev = d->ev;
    struct commit_parts cp = {0};
    struct car car = {0};
    struct cbor c;
    struct cbor_head h;
    uint64_t n;
    const uint8_t *k, *at;
    size_t klen;
    int r, have_blocks = 0;

    if (body_map(d, &n) < 0)
        return -1;
    for (uint64_t i = 0; i < n; i++) {
        if (cbor_text(&d->c, &k, &klen) < 0)
            return cfail(d);
        if ((r = common_key(d, k, klen)) < 0)
            return -1;
        if (r)
            continue;
        at = d->c.p;
        if (key_is(k, klen, "repo")) {
            if (text_or_null(d, &cp.repo, &cp.repo_len,
                             "commit repo is not text") < 0)
                return -1;
        } else if (key_is(k, klen, "rev")) {
            if (text_or_null(d, &cp.rev, &cp.rev_len,
                             "commit rev is not text") < 0)
                return -1;
        } else if (key_is(k, klen, "ops")) {
            if (d->c.p < d->c.end && (*d->c.p >> 5) != CBOR_ARRAY)
                return dfail(d, "commit ops is not an array");
            if (cbor_skip(&d->c) < 0)
                return cfail(d);
            cp.ops = at;
            cp.ops_len = (size_t)(d->c.p - at);
        } else if (key_is(k, klen, "blocks")) {
            if (cbor_head(&d->c, &h) < 0)
                return cfail(d);
            if (h.major != CBOR_BYTES)
                return dfail(d, "commit blocks is not bytes");
            cp.car = d->c.p;
            cp.car_len = (size_t)h.arg;
            d->c.p += h.arg;
            have_blocks = 1;
        } else if (key_is(k, klen, "tooBig")) {
            if (boolean(d, &ev->too_big, "commit tooBig is not a boolean") < 0)
                return -1;
        } else if (cbor_skip(&d->c) < 0) {
            return cfail(d);
        }
    }
    if (cp.repo == NULL)
        return dfail(d, "commit without repo");
    if (cp.ops == NULL)
        return dfail(d, "commit without ops");
    /* a tooBig commit may come with no blocks: its ops have no record */
    if (have_blocks && cp.car_len > 0 &&
        car_read(&car, cp.car, cp.car_len, d->lim, &ev->index, &d->why) < 0)
        return -1;

    if (PUT(&ev->data, "{\"repo\":") < 0)
        return dfail(d, "out of memory");
    if (cbor_json_string(&ev->data, cp.repo, cp.repo_len, &d->why) < 0)
        return -1;
    /* rev and time as the relay sent them: the sink reads both */
    if (cp.rev &&
        (PUT(&ev->data, ",\"rev\":") < 0 ||
         cbor_json_string(&ev->data, cp.rev, cp.rev_len, &d->why) < 0))
        return d->why ? -1 : dfail(d, "out of memory");
    if (d->time &&
        (PUT(&ev->data, ",\"time\":") < 0 ||
         cbor_json_string(&ev->data, d->time, d->time_len, &d->why) < 0))
        return d->why ? -1 : dfail(d, "out of memory");
    if (PUT(&ev->data, ",\"ops\":[") < 0)
        return dfail(d, "out of memory");
    cbor_init(&c, cp.ops, cp.ops_len, d->lim);
    if (cbor_head(&c, &h) < 0)
        return dfail(d, c.why);
    for (uint64_t i = 0; i < h.arg; i++) {
        if (i > 0 && PUT(&ev->data, ",") < 0)
            return dfail(d, "out of memory");
        if (put_op(d, &c, &car) < 0)
            return -1;
    }
    if (PUT(&ev->data, "]}") < 0)
        return dfail(d, "out of memory");
    ev->type = "commit";
    return 0;
}

/* The header {op, t}: *op and t (NULL when absent). */
static int
decode_header(struct decoder *d, int64_t *op, const uint8_t **t, size_t *tlen)
{
    struct cbor_head h, v;
    const uint8_t *k;
    size_t klen;
    int have_op = 0;

    if (cbor_head(&d->c, &h) < 0)
        return cfail(d);
    if (h.major != CBOR_MAP)
        return dfail(d, "frame header is not a map");
    *t = NULL;
    *tlen = 0;
    for (uint64_t i = 0; i < h.arg; i++) {
        if (cbor_text(&d->c, &k, &klen) < 0)
            return cfail(d);
        if (key_is(k, klen, "op")) {
            if (cbor_head(&d->c, &v) < 0)
                return cfail(d);
            if (v.major == CBOR_UINT && v.arg <= 1)
                *op = (int64_t)v.arg;
            else if (v.major == CBOR_NEGINT && v.arg == 0)
                *op = -1;
            else
                return dfail(d, "frame header op is not 1 or -1");
            have_op = 1;
        } else if (key_is(k, klen, "t")) {
            if (cbor_text(&d->c, t, tlen) < 0)
                return dfail(d, "frame header t is not text");
        } else if (cbor_skip(&d->c) < 0) {
            return cfail(d);
        }
    }
    if (!have_op)
        return dfail(d, "frame header without op");
    if (*op != 1 && *op != -1)
        return dfail(d, "frame header op is not 1 or -1");
    return 0;
}

/* The kind a header's t names; name set to t without its '#'. */
static enum frame_kind
kind_of(const uint8_t *t, size_t len, char *name, size_t cap)
{
    static const struct {
        const char *t;
        enum frame_kind kind;
    } kinds[] = {
        {"#commit", FRAME_COMMIT},   {"#identity", FRAME_IDENTITY},
        {"#account", FRAME_ACCOUNT}, {"#sync", FRAME_SYNC},
        {"#info", FRAME_INFO},
    };

    copy_field(name, cap, len > 0 && t[0] == '#' ? t + 1 : t,
               len > 0 && t[0] == '#' ? len - 1 : len);
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (key_is(t, len, kinds[i].t))
            return kinds[i].kind;
    return FRAME_UNKNOWN;
}

int
frame_decode(const uint8_t *msg, size_t len, const struct frame_limits *lim,
             struct frame_event *ev, const char **why)
{
    struct frame_limits def;
    struct decoder d;
    const uint8_t *t;
    size_t tlen;
    int64_t op = 0, seq;
    int r;

    if (lim == NULL) {
        frame_limits_default(&def);
        lim = &def;
    }
    ev->kind = FRAME_UNKNOWN;
    ev->seq = -1;
    ev->time_ms = 0;
    ev->too_big = 0;
    ev->ops = ev->ops_without_record = 0;
    ev->type = NULL;
    ev->data.len = 0;
    ev->name[0] = ev->message[0] = '\0';
    cbor_init(&d.c, msg, len, lim);
    d.lim = lim;
    d.ev = ev;
    d.time = NULL;
    d.time_len = 0;
    d.why = NULL;

    if (decode_header(&d, &op, &t, &tlen) < 0) {
        r = -1;
    } else if (op == -1) {
        ev->kind = FRAME_ERROR;
        r = decode_other(&d, "error");
        if (r == 0 && ev->name[0] == '\0')
            strcpy(ev->name, "error");
    } else if (t == NULL) {
        r = dfail(&d, "frame header without t");
    } else {
        ev->kind = kind_of(t, tlen, ev->name, sizeof(ev->name));
        switch (ev->kind) {
        case FRAME_COMMIT:
            r = decode_commit(&d);
            break;
        case FRAME_IDENTITY:
            r = decode_identity(&d);
            break;
        case FRAME_ACCOUNT:
            r = decode_account(&d);
            break;
        case FRAME_INFO:
            ev->name[0] = '\0';
            r = decode_other(&d, "name");
            if (r == 0 && ev->name[0] == '\0')
                strcpy(ev->name, "info");
            break;
        default:
            r = decode_other(&d, NULL);
            break;
        }
    }
    if (r == 0 && d.c.p != d.c.end)
        r = dfail(&d, "frame has bytes after its body");
    if (r < 0) {
        ev->type = NULL;
        ev->data.len = 0;
        if (ev->seq < 0 && frame_seq(msg, len, &seq) == 0)
            ev->seq = seq;
        *why = d.why ? d.why : "frame is malformed";
        return -1;
    }
    return 0;
}
