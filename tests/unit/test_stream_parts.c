/*
 * test_stream_parts.c: the worker's pure parts: stream IDs, Redis URLs,
 * the SQLSTATE classes that decide retry versus dead letter, the backoff's
 * bounds, and the batch bookkeeping (fates, reasons, gone IDs).
 */
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "shared/backoff.h"
#include "shared/pg_conn.h"
#include "shared/redis_conn.h"
#include "tests/unit/tap.h"
#include "worker/batch.h"

static void
test_stream_ids(void)
{
    uint64_t ms = 0, seq = 0;

    ok(stream_id_parse("1700000000000-7", 15, &ms, &seq) == 0 &&
           ms == 1700000000000ull && seq == 7,
       "a stream ID parses into its two halves");
    ok(stream_id_parse("0-0", 3, &ms, &seq) == 0 && ms == 0 && seq == 0,
       "0-0 parses");
    ok(stream_id_parse("17000", 5, &ms, &seq) < 0, "an ID without seq fails");
    ok(stream_id_parse("1-", 2, &ms, &seq) < 0, "an empty seq fails");
    ok(stream_id_parse("a-1", 3, &ms, &seq) < 0, "letters fail");
    ok(stream_id_parse("1-2x", 4, &ms, &seq) < 0, "trailing junk fails");
}

static void
test_redis_urls(void)
{
    struct redis_target t;
    char err[256];

    ok(redis_url_parse("redis://localhost:6379", &t, err, sizeof(err)) == 0 &&
           strcmp(t.host, "localhost") == 0 && t.port == 6379 && t.db == 0 &&
           t.password[0] == '\0' && !t.is_unix,
       "plain host and port");
    ok(redis_url_parse("redis://:s3cr%40t@10.0.0.5:7000/3", &t, err,
                       sizeof(err)) == 0 &&
           strcmp(t.host, "10.0.0.5") == 0 && t.port == 7000 && t.db == 3 &&
           strcmp(t.password, "s3cr@t") == 0 && t.user[0] == '\0',
       "password only, %%-escape decoded, db");
    ok(redis_url_parse("redis://app:pw@h/1", &t, err, sizeof(err)) == 0 &&
           strcmp(t.user, "app") == 0 && strcmp(t.password, "pw") == 0 &&
           t.port == 6379 && t.db == 1,
       "ACL user and password, default port");
    ok(redis_url_parse("redis://[::1]:6380", &t, err, sizeof(err)) == 0 &&
           strcmp(t.host, "::1") == 0 && t.port == 6380,
       "IPv6 host in brackets");
    ok(redis_url_parse("unix://:pw@/run/redis.sock?db=2", &t, err,
                       sizeof(err)) == 0 &&
           t.is_unix && strcmp(t.path, "/run/redis.sock") == 0 && t.db == 2 &&
           strcmp(t.password, "pw") == 0,
       "unix socket with password and db");
    ok(redis_url_parse("rediss://h", &t, err, sizeof(err)) < 0 &&
           strstr(err, "scheme") != NULL,
       "TLS scheme refused with a message");
    ok(redis_url_parse("redis://h:99999", &t, err, sizeof(err)) < 0 &&
           strstr(err, "port") != NULL,
       "port out of range refused");
    ok(redis_url_parse("redis://:topsecret@h:x", &t, err, sizeof(err)) < 0 &&
           strstr(err, "topsecret") == NULL,
       "a refusal never shows the password");
    ok(redis_url_parse("redis://h/zero", &t, err, sizeof(err)) < 0,
       "non-numeric db refused");
}

static void
test_sqlstates(void)
{
    is_int(pg_fault_of_sqlstate("40P01"), PG_FAULT_TRANSIENT,
           "deadlock is retried");
    is_int(pg_fault_of_sqlstate("40001"), PG_FAULT_TRANSIENT,
           "serialization failure is retried");
    is_int(pg_fault_of_sqlstate("57P01"), PG_FAULT_TRANSIENT,
           "admin shutdown is retried");
    is_int(pg_fault_of_sqlstate("08006"), PG_FAULT_TRANSIENT,
           "connection failure is retried");
    is_int(pg_fault_of_sqlstate(NULL), PG_FAULT_TRANSIENT,
           "no SQLSTATE (connection gone) is retried");
    is_int(pg_fault_of_sqlstate("42P01"), PG_FAULT_TRANSIENT,
           "a missing table is retried, not dead-lettered");
    is_int(pg_fault_of_sqlstate("22003"), PG_FAULT_DATA,
           "numeric out of range is a data error");
    is_int(pg_fault_of_sqlstate("22P02"), PG_FAULT_DATA,
           "invalid text representation is a data error");
    is_int(pg_fault_of_sqlstate("23502"), PG_FAULT_DATA,
           "not-null violation is a data error");
    is_int(pg_fault_of_sqlstate("54000"), PG_FAULT_DATA,
           "a program limit hit by a value is a data error");
}

static void
test_backoff(void)
{
    struct backoff b;
    long last = 0;
    int within = 1;

    backoff_init(&b, 100, 1000);
    for (int i = 0; i < 20; i++) {
        long cap = 100L << (i < 4 ? i : 4);
        long d = backoff_next(&b);
        if (cap > 1000)
            cap = 1000;
        if (d < cap / 2 || d > cap)
            within = 0;
        last = d;
    }
    ok(within, "every wait lies in the upper half of the doubled, capped "
               "delay");
    ok(last >= 500 && last <= 1000, "the delay is capped (%ld)", last);
    is_int(b.attempts, 20, "attempts are counted");
    backoff_reset(&b);
    long d = backoff_next(&b);
    ok(d >= 50 && d <= 100, "after a reset the delay starts over (%ld)", d);
}

/* A fake XREADGROUP entry reply: [id, [k, v, ...]]. */
static redisReply *
mk_string(const char *s)
{
    redisReply *r = calloc(1, sizeof(*r));
    r->type = REDIS_REPLY_STRING;
    r->len = strlen(s);
    r->str = strdup(s);
    return r;
}

static redisReply *
mk_fields(int n, const char **kv)
{
    redisReply *r = calloc(1, sizeof(*r));
    r->type = REDIS_REPLY_ARRAY;
    r->elements = (size_t)n;
    r->element = calloc((size_t)n, sizeof(*r->element));
    for (int i = 0; i < n; i++)
        r->element[i] = mk_string(kv[i]);
    return r;
}

static void
test_batch(void)
{
    struct batch b;
    const char *kv1[] = {"type", "commit", "data", "{}"};
    const char *kv2[] = {"type", "identity"};
    redisReply *f1 = mk_fields(4, kv1), *f2 = mk_fields(2, kv2);

    batch_init(&b);
    ok(batch_add(&b, "5-1", 3, f1) != NULL, "first entry added");
    /* grow past the initial capacities so that pointers move */
    for (int i = 0; i < 100; i++)
        batch_add(&b, "6-0", 3, f2);
    ok(batch_add(&b, "not-an-id", 9, f2) == NULL, "a bad ID is refused");
    batch_keep_reply(&b, f1);
    batch_keep_reply(&b, f2);
    batch_seal(&b);
    is_int(b.n, 101, "101 entries");
    ok(b.entries[0].nfields == 2 && b.entries[0].fields[1].value_len == 2 &&
           memcmp(b.entries[0].fields[1].value, "{}", 2) == 0,
       "fields point into the reply after sealing");
    ok(stream_entry_field(&b.entries[100], "type") != NULL &&
           stream_entry_field(&b.entries[100], "data") == NULL,
       "field lookup by name");
    batch_set_dead(&b, 3, "not JSON near byte 1");
    batch_set_dead(&b, 7, "too large");
    is_str(batch_reason(&b, 3), "not JSON near byte 1", "reason kept");
    is_str(batch_reason(&b, 7), "too large", "second reason kept");
    is_int(batch_count(&b, ENTRY_DEAD), 2, "two dead entries counted");
    batch_add_gone(&b, "4-0", 3);
    is_str(b.gone[0], "4-0", "a gone ID is kept for the ack");
    batch_clear(&b);
    is_int(b.n + b.ngone + b.nreplies, 0, "clear empties the batch");
    ok(b.cap >= 101, "clear keeps the arrays for the next batch");
    batch_free(&b);
}

int
main(void)
{
    test_stream_ids();
    test_redis_urls();
    test_sqlstates();
    test_backoff();
    test_batch();
    return done_testing();
}
