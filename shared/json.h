/*
 * json.h: the JSON helpers both the sinks use, on top of cJSON.
 *
 * PostgreSQL rejects NUL in text and jsonb, and cJSON's strings are
 * NUL-terminated, so "\u0000" escapes are removed from the JSON text before
 * it is parsed: json_parse() does that, checks the bytes are valid UTF-8
 * and returns the tree, or NULL with a reason that names what is wrong and
 * where ("invalid UTF-8 at byte 17", "not JSON near byte 3", "too large").
 */
#ifndef SLUICE_JSON_H
#define SLUICE_JSON_H

#include <stddef.h>

#include <cjson/cJSON.h>

struct buf;

/* Append s (len bytes of valid UTF-8 without NUL) to b as a JSON string,
 * quoted and escaped. 0, or -1 when memory runs out. */
int json_append_string(struct buf *b, const char *s, size_t len);

/* Largest JSON text json_parse() accepts (bytes). */
#define JSON_MAX_TEXT (4u * 1024 * 1024)

/* 1 if buf[0..len) is well-formed UTF-8 (no overlongs, no surrogates, no
 * code points past U+10FFFF); otherwise 0 and *bad_at = offset of the
 * first bad byte (when bad_at is not NULL). No NUL bytes allowed either. */
int utf8_valid(const char *buf, size_t len, size_t *bad_at);

/*
 * Copy text into out (which must hold len + 1 bytes) without its "\u0000"
 * escapes (a "\\u0000", an escaped backslash before "u0000", is kept).
 * Returns the new length; out is NUL-terminated. Can't fail.
 */
size_t json_strip_nul_escapes(const char *text, size_t len, char *out);

/*
 * Parse len bytes of JSON text (not NUL-terminated). Returns a tree the
 * caller frees with cJSON_Delete(), or NULL with reason filled.
 */
cJSON *json_parse(const char *text, size_t len, char *reason, size_t reasonlen);

/* Object member lookups that check the type; NULL when absent or of
 * another type. Keys are case-sensitive. */
const char *json_get_string(const cJSON *obj, const char *key);
const cJSON *json_get_object(const cJSON *obj, const char *key);
const cJSON *json_get_array(const cJSON *obj, const char *key);
/* 1/0 for a boolean member; -1 when absent or not a boolean. */
int json_get_bool(const cJSON *obj, const char *key);

/* Serialize compactly into a malloc'ed string the caller frees; NULL only
 * when out of memory. */
char *json_print(const cJSON *item);

#endif
