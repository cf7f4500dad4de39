/*
 * json.c: the JSON helpers the sinks share, on top of cJSON.
 *
 * cJSON keeps strings NUL-terminated, so a "\u0000" escape would silently
 * cut a string short; PostgreSQL refuses NUL in text and jsonb anyway. The
 * escapes are therefore removed from the text before it is parsed. The
 * UTF-8 check runs first so that a reason can name the byte that is wrong
 * (cJSON itself copies invalid sequences through).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/buf.h"
#include "shared/json.h"

int
utf8_valid(const char *buf, size_t len, size_t *bad_at)
{
    const unsigned char *s = (const unsigned char *)buf;
    size_t i = 0;

    while (i < len) {
        unsigned char c = s[i];
        size_t need;
        uint32_t cp;

        if (c < 0x80) {
            uint64_t w;
            if (c == 0)
                goto bad;
            i++;
            /* ASCII runs eight bytes at a time: no high bit, no NUL */
            while (len - i >= 8) {
                memcpy(&w, s + i, 8);
                if ((w & 0x8080808080808080ULL) != 0 ||
                    ((w - 0x0101010101010101ULL) & ~w & 0x8080808080808080ULL))
                    break;
                i += 8;
            }
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            cp = c & 0x07;
        } else {
            goto bad; /* continuation byte, overlong lead, or past 0xf4 */
        }
        if (len - i <= need)
            goto bad;
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                goto bad;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            goto bad;
        i += need + 1;
    }
    return 1;
bad:
    if (bad_at != NULL)
        *bad_at = i;
    return 0;
}

size_t
json_strip_nul_escapes(const char *text, size_t len, char *out)
{
    size_t o = 0;
    size_t i = 0;

    while (i < len) {
        const char *bs = memchr(text + i, '\\', len - i);
        size_t run = bs != NULL ? (size_t)(bs - text) - i : len - i;

        memcpy(out + o, text + i, run);
        o += run;
        i += run;
        if (i == len)
            break;
        /* An escape: two bytes at least. Only \u0000 is dropped; any
         * other escape (an escaped backslash included) is copied whole so
         * that the byte after it is never mistaken for a new escape. */
        if (i + 6 <= len && memcmp(text + i + 1, "u0000", 5) == 0) {
            i += 6;
            continue;
        }
        out[o++] = text[i++];
        if (i < len)
            out[o++] = text[i++];
    }
    out[o] = '\0';
    return o;
}

cJSON *
json_parse(const char *text, size_t len, char *reason, size_t reasonlen)
{
    size_t bad = 0;
    char *clean;
    size_t clean_len;
    const char *end = NULL;
    cJSON *tree;

    if (len > JSON_MAX_TEXT) {
        snprintf(reason, reasonlen, "too large (%zu bytes, limit %u)", len,
                 JSON_MAX_TEXT);
        return NULL;
    }
    if (!utf8_valid(text, len, &bad)) {
        snprintf(reason, reasonlen, "%s at byte %zu",
                 text[bad] == '\0' ? "NUL byte" : "invalid UTF-8", bad);
        return NULL;
    }
    clean = malloc(len + 1);
    if (clean == NULL) {
        snprintf(reason, reasonlen, "out of memory");
        return NULL;
    }
    clean_len = json_strip_nul_escapes(text, len, clean);
    tree = cJSON_ParseWithLengthOpts(clean, clean_len, &end, 0);
    if (tree == NULL) {
        size_t at =
            end != NULL && end >= clean ? (size_t)(end - clean) : clean_len;
        if (clean_len == 0)
            snprintf(reason, reasonlen, "not JSON (empty)");
        else
            snprintf(reason, reasonlen, "not JSON near byte %zu", at);
        free(clean);
        return NULL;
    }
    /* Anything but white space after the value is an error too. */
    if (end != NULL) {
        size_t at = (size_t)(end - clean);
        while (at < clean_len && (clean[at] == ' ' || clean[at] == '\t' ||
                                  clean[at] == '\n' || clean[at] == '\r'))
            at++;
        if (at < clean_len) {
            snprintf(reason, reasonlen,
                     "not JSON near byte %zu (trailing "
                     "data)",
                     at);
            cJSON_Delete(tree);
            free(clean);
            return NULL;
        }
    }
    free(clean);
    return tree;
}

const char *
json_get_string(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

const cJSON *
json_get_object(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

    return cJSON_IsObject(v) ? v : NULL;
}

const cJSON *
json_get_array(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

    return cJSON_IsArray(v) ? v : NULL;
}

int
json_get_bool(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

    if (!cJSON_IsBool(v))
        return -1;
    return cJSON_IsTrue(v) ? 1 : 0;
}

char *
json_print(const cJSON *item)
{
    return cJSON_PrintUnformatted(item);
}

int
json_append_string(struct buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    char *w;

    if (buf_reserve(b, 6 * len + 2) < 0)
        return -1;
    w = b->p + b->len;
    *w++ = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *w++ = '\\';
            *w++ = (char)c;
        } else if (c < 0x20) {
            *w++ = '\\';
            *w++ = 'u';
            *w++ = '0';
            *w++ = '0';
            *w++ = hex[c >> 4];
            *w++ = hex[c & 15];
        } else {
            *w++ = (char)c;
        }
    }
    *w++ = '"';
    b->len = (size_t)(w - b->p);
    return 0;
}
