/*
 * test_json.c: shared/json.c, the UTF-8 check (its eight-byte ASCII path
 * included), the removal of "\u0000" escapes and json_parse()'s reasons.
 */
#include <stdlib.h>
#include <string.h>

#include "shared/json.h"
#include "tests/unit/tap.h"

/* utf8_valid() of a NUL-terminated text; *at = offset of the bad byte. */
static int
valid(const char *s, size_t *at)
{
    return utf8_valid(s, strlen(s), at);
}

int
main(void)
{
    char buf[128], reason[128];
    size_t at = 0;
    cJSON *t;

    ok(valid("plain ascii", &at), "ASCII");
    ok(valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", &at),
       "two-, three- and four-byte sequences");
    ok(!valid("\xc0\xaf", &at) && at == 0, "an overlong '/' at byte 0");
    ok(!valid("ab\xed\xa0\x80", &at) && at == 2, "a surrogate at byte 2");
    ok(!valid("\xf4\x90\x80\x80", &at), "past U+10FFFF");
    ok(!valid("abc\xe2\x82", &at) && at == 3, "a truncated sequence");
    /* the eight-byte path: a bad byte at each position of a long run */
    for (int pos = 0; pos < 40; pos += 7) {
        memset(buf, 'a', 48);
        buf[48] = '\0';
        buf[pos] = (char)0xff;
        at = 99;
        ok(!utf8_valid(buf, 48, &at) && at == (size_t)pos,
           "0xff at byte %d of an ASCII run", pos);
    }
    memset(buf, 'a', 48);
    buf[21] = '\0';
    ok(!utf8_valid(buf, 48, &at) && at == 21, "a NUL byte inside a run");

    is_int(json_strip_nul_escapes("a\\u0000b", 8, buf), 2, "escape removed");
    is_str(buf, "ab", "what is left");
    json_strip_nul_escapes("a\\\\u0000b", 9, buf);
    is_str(buf, "a\\\\u0000b", "an escaped backslash before u0000 is kept");
    json_strip_nul_escapes("\\\\\\u0000", 8, buf);
    is_str(buf, "\\\\", "an escaped backslash, then a real \\u0000");

    t = json_parse("{\"a\":\"x\\u0000y\"}", 16, reason, sizeof(reason));
    ok(t != NULL && strcmp(json_get_string(t, "a"), "xy") == 0,
       "a string keeps its text around the NUL escape");
    cJSON_Delete(t);
    t = json_parse("{\"a\":1} x", 9, reason, sizeof(reason));
    ok(t == NULL && strstr(reason, "trailing") != NULL, "trailing data: %s",
       reason);
    t = json_parse("{\"a\":", 5, reason, sizeof(reason));
    ok(t == NULL && strstr(reason, "not JSON near byte") != NULL,
       "truncated: %s", reason);
    t = json_parse("{\"a\":\"\xff\"}", 8, reason, sizeof(reason));
    ok(t == NULL && strcmp(reason, "invalid UTF-8 at byte 6") == 0,
       "invalid UTF-8 named with its byte: %s", reason);
    t = json_parse("", 0, reason, sizeof(reason));
    ok(t == NULL && strstr(reason, "empty") != NULL, "empty: %s", reason);
    return done_testing();
}
