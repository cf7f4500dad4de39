/*
 * atproto_record.c: identifiers, timestamps, key dialects, blob references
 * and per-type checks of AT Protocol records (see atproto_record.h).
 *
 * The checks are deliberately those that keep a row from being wrong or
 * refused by PostgreSQL: an identifier that goes into a key column must
 * have its shape and fit its column; a field a NOT NULL column needs must
 * be there. Everything else in a record is kept as it came, in jsonb.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/json.h"
#include "worker/atproto_record.h"

static int
is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int
is_alnum(char c)
{
    return is_alpha(c) || is_digit(c);
}

/* The DID up to len bytes of s (not NUL-terminated). */
static int
did_valid_n(const char *s, size_t len)
{
    size_t i = 4, method_start;

    if (len < 7 || len > ATP_DID_MAX || memcmp(s, "did:", 4) != 0)
        return 0;
    method_start = i;
    while (i < len && s[i] >= 'a' && s[i] <= 'z')
        i++;
    if (i == method_start || i >= len || s[i] != ':')
        return 0;
    if (++i >= len)
        return 0;
    for (; i < len; i++) {
        char c = s[i];
        if (!is_alnum(c) && c != '.' && c != '_' && c != ':' && c != '%' &&
            c != '-')
            return 0;
    }
    /* the identifier may not end in ':' or '%' */
    return s[len - 1] != ':' && s[len - 1] != '%';
}

int
atp_did_valid(const char *s)
{
    return s != NULL && did_valid_n(s, strlen(s));
}

int
atp_nsid_valid(const char *s, size_t len)
{
    size_t segs = 0, seglen = 0;
    size_t last_start = 0;

    if (len == 0 || len > 317)
        return 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == '.') {
            if (seglen == 0 || seglen > 63)
                return 0;
            segs++;
            seglen = 0;
            if (i < len)
                last_start = i + 1;
            continue;
        }
        if (!is_alnum(s[i]) && s[i] != '-')
            return 0;
        seglen++;
    }
    if (segs < 3)
        return 0;
    /* the name segment: letters and digits, not starting with a digit */
    if (is_digit(s[last_start]))
        return 0;
    for (size_t i = last_start; i < len; i++)
        if (!is_alnum(s[i]))
            return 0;
    return 1;
}

int
atp_rkey_valid(const char *s, size_t len)
{
    if (len == 0 || len > 512)
        return 0;
    if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!is_alnum(c) && c != '.' && c != '-' && c != '_' && c != ':' &&
            c != '~')
            return 0;
    }
    return 1;
}

int
atp_record_uri_valid(const char *s)
{
    const char *did, *coll, *rkey;
    size_t len;

    if (s == NULL || strncmp(s, "at://", 5) != 0)
        return 0;
    len = strlen(s);
    if (len > ATP_URI_MAX)
        return 0;
    did = s + 5;
    coll = strchr(did, '/');
    if (coll == NULL || !did_valid_n(did, (size_t)(coll - did)))
        return 0;
    coll++;
    rkey = strchr(coll, '/');
    if (rkey == NULL || !atp_nsid_valid(coll, (size_t)(rkey - coll)))
        return 0;
    rkey++;
    return atp_rkey_valid(rkey, strlen(rkey));
}

/* ---- time ---------------------------------------------------------------- */

/* Days from 1970-01-01 to y-m-d of the proleptic Gregorian calendar. */
static int64_t
days_of_date(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* The inverse of days_of_date(). */
static void
date_of_days(int64_t z, int64_t *y, int *m, int *d)
{
    int64_t era, doe, yoe, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int
days_in_month(int64_t y, int m)
{
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

    return m == 2 && leap ? 29 : dm[m - 1];
}

/* n digits at *p into *out; advances *p. 0 or -1. */
static int
digits(const char **p, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (!is_digit((*p)[i]))
            return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

/* n decimal digits of v, zero-padded, at out. */
static void
put_digits(char *out, unsigned v, int n)
{
    while (n-- > 0) {
        out[n] = (char)('0' + v % 10);
        v /= 10;
    }
}

/* Write seconds-since-epoch + microseconds as UTC text. -1 outside years
 * 1..9999. */
static int
format_utc(int64_t secs, int usec, char *out)
{
    int64_t days = secs / 86400, rem = secs % 86400, y;
    int m, d;

    if (rem < 0) {
        rem += 86400;
        days--;
    }
    date_of_days(days, &y, &m, &d);
    if (y < 1 || y > 9999)
        return -1;
    put_digits(out, (unsigned)y, 4);
    out[4] = '-';
    put_digits(out + 5, (unsigned)m, 2);
    out[7] = '-';
    put_digits(out + 8, (unsigned)d, 2);
    out[10] = ' ';
    put_digits(out + 11, (unsigned)(rem / 3600), 2);
    out[13] = ':';
    put_digits(out + 14, (unsigned)(rem / 60 % 60), 2);
    out[16] = ':';
    put_digits(out + 17, (unsigned)(rem % 60), 2);
    out[19] = '.';
    put_digits(out + 20, (unsigned)usec, 6);
    out[26] = '\0';
    return 0;
}

int
atp_time_to_utc(const char *s, char *out)
{
    const char *p = s;
    int y, mo, d, h, mi, se, usec = 0, off = 0;
    int64_t secs;

    if (s == NULL)
        return -1;
    if (digits(&p, 4, &y) < 0 || *p++ != '-' || digits(&p, 2, &mo) < 0 ||
        *p++ != '-' || digits(&p, 2, &d) < 0)
        return -1;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return -1;
    p++;
    if (digits(&p, 2, &h) < 0 || *p++ != ':' || digits(&p, 2, &mi) < 0 ||
        *p++ != ':' || digits(&p, 2, &se) < 0)
        return -1;
    if (*p == '.' || *p == ',') {
        int scale = 100000, nd = 0;
        p++;
        while (is_digit(*p)) {
            usec += (*p - '0') * scale;
            scale /= 10;
            p++;
            nd++;
        }
        if (nd == 0)
            return -1;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om;
        if (digits(&p, 2, &oh) < 0)
            return -1;
        if (*p == ':')
            p++;
        if (digits(&p, 2, &om) < 0 || oh > 23 || om > 59)
            return -1;
        off = sign * (oh * 60 + om);
    }
    if (*p != '\0')
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 ||
        mi > 59 || se > 60)
        return -1;
    secs = days_of_date(y, mo, d) * 86400 + h * 3600 + mi * 60 + se -
           (int64_t)off * 60;
    return format_utc(secs, usec, out);
}

void
atp_time_from_ms(uint64_t ms, char *out)
{
    if (format_utc((int64_t)(ms / 1000), (int)(ms % 1000) * 1000, out) < 0)
        strcpy(out, "9999-12-31 23:59:59.999999");
}

/* ---- normalization ------------------------------------------------------- */

int
atp_collection_is_bluesky(const char *c)
{
    return strncmp(c, "app.bsky.", 9) == 0 ||
           strncmp(c, "chat.bsky.", 10) == 0 ||
           strncmp(c, "com.atproto.", 12) == 0 ||
           strncmp(c, "tools.ozone.", 12) == 0;
}

/* Rewrite a key in place: py_type -> $type; snake_case -> camelCase when
 * camel is set. Both are shorter than the original, so no allocation. */
static void
key_normalize(char *k, int camel)
{
    char *r, *w;

    if (strcmp(k, "py_type") == 0) {
        memcpy(k, "$type", 6);
        return;
    }
    if (!camel || strchr(k, '_') == NULL || k[0] == '_' || k[0] == '$')
        return;
    for (r = w = k; *r != '\0'; r++) {
        if (*r == '_' && r[1] >= 'a' && r[1] <= 'z' && w != k) {
            *w++ = (char)(r[1] - 'a' + 'A');
            r++;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

/* A new {"$link": cid} object, or NULL (memory). */
static cJSON *
link_object(const char *cid)
{
    cJSON *o = cJSON_CreateObject();

    if (o == NULL || cJSON_AddStringToObject(o, "$link", cid) == NULL) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* Put replacement in item's place under item's key (cJSON's replace by
 * pointer keeps no key). 0, or -1 (memory: replacement is freed). */
static int
replace_member(cJSON *parent, cJSON *item, cJSON *replacement)
{
    replacement->string = strdup(item->string);
    if (replacement->string == NULL) {
        cJSON_Delete(replacement);
        return -1;
    }
    replacement->type &= ~cJSON_StringIsConst;
    cJSON_ReplaceItemViaPointer(parent, item, replacement);
    return 0;
}

/* The keys whose value is a blob (a bare CID or a bare link there is a
 * blob's reference). */
static int
is_blob_key(const char *k)
{
    return strcmp(k, "avatar") == 0 || strcmp(k, "banner") == 0 ||
           strcmp(k, "thumb") == 0 || strcmp(k, "image") == 0 ||
           strcmp(k, "video") == 0;
}

/* Make obj's "ref" member, if any, the {"$link": cid} form. */
static int
ref_normalize(cJSON *obj)
{
    cJSON *ref = cJSON_GetObjectItemCaseSensitive(obj, "ref");

    if (cJSON_IsString(ref)) {
        cJSON *l = link_object(ref->valuestring);
        if (l == NULL || replace_member(obj, ref, l) < 0)
            return -1;
    } else if (cJSON_IsObject(ref)) {
        cJSON *link = cJSON_GetObjectItemCaseSensitive(ref, "link");
        if (cJSON_IsString(link) &&
            cJSON_GetObjectItemCaseSensitive(ref, "$link") == NULL) {
            cJSON *l = link_object(link->valuestring);
            if (l == NULL || replace_member(obj, ref, l) < 0)
                return -1;
        }
    }
    return 0;
}

/* A blob-valued member given as a bare CID string or a bare link object:
 * replace it by {"$type": "blob", "ref": {"$link": cid}}. Returns 1 when
 * it did (item is freed), 0 when item is something else, -1 (memory). */
static int
bare_blob_normalize(cJSON *parent, cJSON *item)
{
    const char *cid = NULL;
    cJSON *blob, *l;

    if (cJSON_IsString(item))
        cid = item->valuestring;
    else if (cJSON_IsObject(item) &&
             cJSON_GetObjectItemCaseSensitive(item, "ref") == NULL &&
             cJSON_GetObjectItemCaseSensitive(item, "cid") == NULL) {
        cid = json_get_string(item, "$link");
        if (cid == NULL)
            cid = json_get_string(item, "link");
    }
    if (cid == NULL || cid[0] == '\0')
        return 0;
    blob = cJSON_CreateObject();
    l = link_object(cid);
    if (blob == NULL || l == NULL ||
        cJSON_AddStringToObject(blob, "$type", "blob") == NULL) {
        cJSON_Delete(blob);
        cJSON_Delete(l);
        return -1;
    }
    cJSON_AddItemToObject(blob, "ref", l);
    return replace_member(parent, item, blob) < 0 ? -1 : 1;
}

static int
normalize(cJSON *node, int camel, int depth)
{
    cJSON *c, *next;

    if (depth > 200)
        return 0; /* cJSON's own nesting limit stops far deeper trees */
    if (cJSON_IsArray(node)) {
        for (c = node->child; c != NULL; c = c->next)
            if (normalize(c, camel, depth + 1) < 0)
                return -1;
        return 0;
    }
    if (!cJSON_IsObject(node))
        return 0;
    for (c = node->child; c != NULL; c = next) {
        next = c->next;
        if (c->string != NULL && !(c->type & cJSON_StringIsConst))
            key_normalize(c->string, camel);
        if (c->string != NULL && is_blob_key(c->string)) {
            int r = bare_blob_normalize(node, c);
            if (r < 0)
                return -1;
            if (r > 0)
                continue; /* c is freed; its replacement is canonical */
            /* a blob's place: {"ref": ...} is a blob even without its
             * "$type" or mimeType */
            if (normalize(c, camel, depth + 1) < 0 ||
                (cJSON_IsObject(c) && ref_normalize(c) < 0))
                return -1;
            continue;
        }
        if (normalize(c, camel, depth + 1) < 0)
            return -1;
    }
    if (cJSON_GetObjectItemCaseSensitive(node, "ref") != NULL) {
        const char *t = json_get_string(node, "$type");
        if ((t != NULL && strcmp(t, "blob") == 0) ||
            cJSON_GetObjectItemCaseSensitive(node, "mimeType") != NULL ||
            cJSON_GetObjectItemCaseSensitive(node, "mime_type") != NULL)
            return ref_normalize(node);
    }
    return 0;
}

int
atp_record_normalize(cJSON *record, int bluesky_keys)
{
    return normalize(record, bluesky_keys, 0);
}

/* ---- per-type checks ------------------------------------------------------
 */

static int
fail(char *reason, size_t len, const char *coll, const char *what)
{
    snprintf(reason, len, "%s: %s", coll, what);
    return -1;
}

/* subject.uri (like, repost) or a plain string member that must be a
 * record URI. */
static const char *
strong_ref_uri(const cJSON *rec, const char *key)
{
    const cJSON *o = json_get_object(rec, key);

    return o != NULL ? json_get_string(o, "uri") : NULL;
}

int
atp_record_check(const char *coll, const cJSON *rec, char *reason,
                 size_t reasonlen)
{
    if (strcmp(coll, "app.bsky.feed.post") == 0) {
        const cJSON *reply = cJSON_GetObjectItemCaseSensitive(rec, "reply");
        if (json_get_string(rec, "text") == NULL)
            return fail(reason, reasonlen, coll,
                        "text is missing or not a "
                        "string");
        if (reply != NULL && !cJSON_IsNull(reply)) {
            if (!cJSON_IsObject(reply) ||
                !atp_record_uri_valid(strong_ref_uri(reply, "parent")) ||
                !atp_record_uri_valid(strong_ref_uri(reply, "root")))
                return fail(reason, reasonlen, coll,
                            "reply.parent.uri or reply.root.uri is not an "
                            "at:// record URI");
        }
        return 0;
    }
    if (strcmp(coll, "app.bsky.feed.like") == 0 ||
        strcmp(coll, "app.bsky.feed.repost") == 0) {
        const cJSON *subj = json_get_object(rec, "subject");
        const char *cid = subj ? json_get_string(subj, "cid") : NULL;
        if (!atp_record_uri_valid(strong_ref_uri(rec, "subject")))
            return fail(reason, reasonlen, coll,
                        "subject.uri is missing or not an at:// record URI");
        if (cid != NULL && strlen(cid) > ATP_CID_MAX)
            return fail(reason, reasonlen, coll, "subject.cid is too long");
        return 0;
    }
    if (strcmp(coll, "app.bsky.graph.follow") == 0 ||
        strcmp(coll, "app.bsky.graph.block") == 0) {
        if (!atp_did_valid(json_get_string(rec, "subject")))
            return fail(reason, reasonlen, coll,
                        "subject is missing or not a DID");
        return 0;
    }
    if (strcmp(coll, "app.bsky.graph.listitem") == 0) {
        if (!atp_record_uri_valid(json_get_string(rec, "list")))
            return fail(reason, reasonlen, coll,
                        "list is missing or not an at:// record URI");
        if (!atp_did_valid(json_get_string(rec, "subject")))
            return fail(reason, reasonlen, coll,
                        "subject is missing or not a DID");
        return 0;
    }
    if (strcmp(coll, "app.bsky.graph.list") == 0) {
        if (json_get_string(rec, "name") == NULL ||
            json_get_string(rec, "purpose") == NULL)
            return fail(reason, reasonlen, coll,
                        "name or purpose is missing or not a string");
        return 0;
    }
    if (strcmp(coll, "app.bsky.feed.generator") == 0) {
        if (!atp_did_valid(json_get_string(rec, "did")))
            return fail(reason, reasonlen, coll, "did is missing or not a DID");
        if (json_get_string(rec, "displayName") == NULL)
            return fail(reason, reasonlen, coll,
                        "displayName is missing or not a string");
        return 0;
    }
    if (strcmp(coll, "app.bsky.graph.starterpack") == 0) {
        const char *list = json_get_string(rec, "list");
        if (json_get_string(rec, "name") == NULL)
            return fail(reason, reasonlen, coll,
                        "name is missing or not a string");
        if (list != NULL && strlen(list) > ATP_URI_MAX)
            return fail(reason, reasonlen, coll, "list is too long");
        return 0;
    }
    if (strcmp(coll, "app.bsky.labeler.service") == 0) {
        if (json_get_object(rec, "policies") == NULL)
            return fail(reason, reasonlen, coll,
                        "policies is missing or not an object");
        return 0;
    }
    return 0;
}
