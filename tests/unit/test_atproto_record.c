/*
 * test_atproto_record.c: identifiers, timestamps, key dialects, blob
 * references and per-type checks of worker/atproto_record.c.
 */
#include <stdlib.h>
#include <string.h>

#include "shared/json.h"
#include "tests/unit/tap.h"
#include "worker/atproto_record.h"

/* Normalize a JSON text and print it back (the caller frees). */
static char *
normalized(const char *text, int bluesky)
{
    char why[128];
    cJSON *t = json_parse(text, strlen(text), why, sizeof(why));
    char *out;

    if (t == NULL)
        return strdup(why);
    atp_record_normalize(t, bluesky);
    out = json_print(t);
    cJSON_Delete(t);
    return out;
}

static void
is_normalized(const char *in, int bluesky, const char *want, const char *name)
{
    char *got = normalized(in, bluesky);

    is_str(got, want, "%s", name);
    free(got);
}

/* The reason of atp_record_check() for a record text, or "ok". */
static int
check_says(const char *coll, const char *text, const char *want)
{
    static char reason[256];
    char why[128];
    cJSON *t = json_parse(text, strlen(text), why, sizeof(why));
    int r;

    if (t == NULL)
        return 0;
    atp_record_normalize(t, 1);
    r = atp_record_check(coll, t, reason, sizeof(reason));
    cJSON_Delete(t);
    if (r == 0)
        strcpy(reason, "ok");
    if (strstr(reason, want) == NULL) {
        diag("got '%s', wanted '%s'", reason, want);
        return 0;
    }
    return 1;
}

static int
utc_is(const char *in, const char *want)
{
    char out[ATP_TIME_LEN];

    if (atp_time_to_utc(in, out) < 0)
        return want == NULL;
    if (want == NULL || strcmp(out, want) != 0) {
        diag("%s -> %s", in, out);
        return 0;
    }
    return 1;
}

int
main(void)
{
    char out[ATP_TIME_LEN];
    char longdid[300];

    /* DIDs */
    ok(atp_did_valid("did:plc:ewvi7nxzyoun6zhxrhs64oiz"), "did:plc");
    ok(atp_did_valid("did:web:example.com"), "did:web");
    ok(atp_did_valid("did:web:localhost%3A8080"), "did:web with a port");
    ok(!atp_did_valid("did:PLC:abc"), "upper-case method refused");
    ok(!atp_did_valid("did:plc:"), "empty identifier refused");
    ok(!atp_did_valid("did:plc:abc:"), "trailing colon refused");
    ok(!atp_did_valid("plc:abc"), "no did: prefix refused");
    ok(!atp_did_valid("did:plc:a b"), "a space refused");
    ok(!atp_did_valid(NULL), "NULL refused");
    memset(longdid, 'a', sizeof(longdid));
    memcpy(longdid, "did:plc:", 8);
    longdid[sizeof(longdid) - 1] = '\0';
    ok(!atp_did_valid(longdid), "a DID longer than the column refused");

    /* NSIDs and record keys */
    ok(atp_nsid_valid("app.bsky.feed.post", 18), "app.bsky.feed.post");
    ok(atp_nsid_valid("fm.teal.alpha.actor.status", 26), "a foreign NSID");
    ok(atp_nsid_valid("app.bsky.feed.like/3k", 18),
       "an NSID measured inside a path");
    ok(!atp_nsid_valid("app.bsky", 8), "two segments refused");
    ok(!atp_nsid_valid("app..feed", 9), "an empty segment refused");
    ok(!atp_nsid_valid("app.bsky.feed-x", 15), "a hyphen in the name refused");
    ok(!atp_nsid_valid("app.bsky.1feed", 14), "a name starting with a digit");
    ok(atp_rkey_valid("3kq2xyzabc22", 12), "a TID record key");
    ok(atp_rkey_valid("self", 4), "self");
    ok(!atp_rkey_valid("..", 2), ".. refused");
    ok(!atp_rkey_valid("a/b", 3), "a slash refused");
    ok(!atp_rkey_valid("", 0), "empty refused");

    /* at:// URIs */
    ok(atp_record_uri_valid("at://did:plc:abc/app.bsky.feed.post/3kq"),
       "a post URI");
    ok(!atp_record_uri_valid("at://alice.test/app.bsky.feed.post/3kq"),
       "a handle authority refused");
    ok(!atp_record_uri_valid("at://did:plc:abc/app.bsky.feed.post"),
       "no record key refused");
    ok(!atp_record_uri_valid("https://did:plc:abc/app.bsky.feed.post/3"),
       "another scheme refused");
    ok(!atp_record_uri_valid("at://did:plc:abc/app.bsky.feed.post/3/x"),
       "an extra segment refused");

    /* timestamps */
    ok(utc_is("2024-05-01T12:00:00Z", "2024-05-01 12:00:00.000000"), "Z");
    ok(utc_is("2024-05-01T14:00:00+02:00", "2024-05-01 12:00:00.000000"),
       "+02:00 converted to UTC");
    ok(utc_is("2024-05-01T07:30:00.123-0430", "2024-05-01 12:00:00.123000"),
       "-0430 and milliseconds");
    ok(utc_is("2024-12-31T23:30:00-01:00", "2025-01-01 00:30:00.000000"),
       "an offset across the new year");
    ok(utc_is("2024-03-01T00:30:00+01:00", "2024-02-29 23:30:00.000000"),
       "an offset back into a leap day");
    ok(utc_is("2024-05-01 12:00:00.1234567", "2024-05-01 12:00:00.123456"),
       "a space separator, no zone (UTC), digits past microseconds");
    ok(utc_is("2023-02-29T00:00:00Z", NULL), "29 February of 2023 refused");
    ok(utc_is("2024-13-01T00:00:00Z", NULL), "month 13 refused");
    ok(utc_is("2024-05-01T25:00:00Z", NULL), "hour 25 refused");
    ok(utc_is("2024-05-01", NULL), "a date alone refused");
    ok(utc_is("yesterday", NULL), "prose refused");
    ok(utc_is("2024-05-01T12:00:00Zjunk", NULL), "trailing text refused");
    ok(utc_is("0001-01-01T00:30:00+01:00", NULL),
       "a time before year 1 once converted refused");
    atp_time_from_ms(1714564800123ULL, out);
    is_str(out, "2024-05-01 12:00:00.123000", "time of a stream ID");

    /* dialects */
    is_normalized("{\"py_type\":\"app.bsky.feed.post\",\"created_at\":\"x\","
                  "\"reply\":{\"parent\":{\"uri\":\"u\"}}}",
                  1,
                  "{\"$type\":\"app.bsky.feed.post\",\"createdAt\":\"x\","
                  "\"reply\":{\"parent\":{\"uri\":\"u\"}}}",
                  "py_type and snake_case keys of a Bluesky record");
    is_normalized("{\"display_name\":\"A\",\"some_key\":{\"py_type\":\"t\"}}",
                  0, "{\"display_name\":\"A\",\"some_key\":{\"$type\":\"t\"}}",
                  "a foreign record keeps its keys, py_type aside");
    is_normalized("{\"createdAt\":\"x\",\"$type\":\"t\"}", 1,
                  "{\"createdAt\":\"x\",\"$type\":\"t\"}",
                  "camelCase stays as it is");

    /* blob references */
    is_normalized(
        "{\"avatar\":{\"$type\":\"blob\",\"ref\":{\"$link\":\"bafA\"},"
        "\"mimeType\":\"image/png\"}}",
        1,
        "{\"avatar\":{\"$type\":\"blob\",\"ref\":{\"$link\":\"bafA\"},"
        "\"mimeType\":\"image/png\"}}",
        "a canonical blob stays");
    is_normalized(
        "{\"avatar\":{\"py_type\":\"blob\",\"ref\":{\"link\":\"bafB\"},"
        "\"mime_type\":\"image/png\"}}",
        1,
        "{\"avatar\":{\"$type\":\"blob\",\"ref\":{\"$link\":\"bafB\"},"
        "\"mimeType\":\"image/png\"}}",
        "the Python reader's blob");
    is_normalized(
        "{\"banner\":{\"$type\":\"blob\",\"ref\":\"bafC\"}}", 1,
        "{\"banner\":{\"$type\":\"blob\",\"ref\":{\"$link\":\"bafC\"}}}",
        "a ref given as a bare CID string");
    is_normalized("{\"avatar\":{\"ref\":{\"link\":\"bafF\"}}}", 1,
                  "{\"avatar\":{\"ref\":{\"$link\":\"bafF\"}}}",
                  "a ref link where a blob belongs, without $type or mimeType");
    is_normalized(
        "{\"avatar\":\"bafD\"}", 1,
        "{\"avatar\":{\"$type\":\"blob\",\"ref\":{\"$link\":\"bafD\"}}}",
        "a blob given as a bare CID");
    is_normalized("{\"embed\":{\"images\":[{\"image\":{\"$link\":\"bafE\"}}]}}",
                  1,
                  "{\"embed\":{\"images\":[{\"image\":{\"$type\":\"blob\","
                  "\"ref\":{\"$link\":\"bafE\"}}}]}}",
                  "a bare link where an image blob belongs");

    /* per-type checks */
    ok(check_says("app.bsky.feed.post", "{\"text\":\"hi\"}", "ok"),
       "a post with text passes");
    ok(check_says("app.bsky.feed.post", "{\"langs\":[\"en\"]}",
                  "text is missing"),
       "a post without text is refused");
    ok(check_says("app.bsky.feed.post",
                  "{\"text\":\"\",\"reply\":{\"parent\":{\"uri\":\"x\"},"
                  "\"root\":{\"uri\":\"x\"}}}",
                  "reply.parent.uri"),
       "a reply to a malformed URI is refused");
    ok(check_says("app.bsky.feed.like",
                  "{\"subject\":{\"uri\":\"at://did:plc:a/app.bsky.feed.post/"
                  "1\",\"cid\":\"b\"}}",
                  "ok"),
       "a like passes");
    ok(check_says("app.bsky.feed.like", "{\"createdAt\":\"x\"}",
                  "subject.uri is missing"),
       "a like without subject is refused");
    ok(check_says("app.bsky.graph.follow", "{\"subject\":\"alice\"}",
                  "not a DID"),
       "a follow of a non-DID is refused");
    ok(check_says("app.bsky.graph.listitem",
                  "{\"subject\":\"did:plc:a\",\"list\":\"nope\"}", "list is"),
       "a list item without a list URI is refused");
    ok(check_says("app.bsky.feed.generator", "{\"display_name\":\"F\"}",
                  "did is missing"),
       "a feed generator without its DID is refused");
    ok(check_says("com.example.thing", "{}", "ok"),
       "an unknown collection needs nothing");

    return done_testing();
}
