/*
 * pipeline.c: the pipelines of one configuration (interface and the rules
 * in pipeline.h).
 *
 * The file is read once for its shared lines (config.c's
 * config_load_unchecked: defaults, the lines before the first section,
 * the environment, the -s options) and once more per section over a copy
 * of them (config_load_section). Sharding happens last: a pipeline with
 * shards = N is copied N times with "{shard}" replaced in its keys, so
 * that an operator writes one section for N streams.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bsd/string.h>

#include "shared/pipeline.h"

/* The name of the one pipeline of a file without sections. */
#define PIPELINE_DEFAULT_NAME "main"

#define SHARD_MARK "{shard}"

/*
 * Replace every "{shard}" in s (of size len) by the number: in braces
 * when tag is 1 (a key: "{0}" stays its Redis Cluster hash tag), bare
 * when 0 (a URL: redis-{shard} -> redis-0). 0, or -1 when the result does
 * not fit.
 */
static int
shard_subst(char *s, size_t len, int shard, int tag)
{
    char out[CONFIG_STR_MAX * 2], num[16];
    size_t at = 0, nlen;
    const char *p = s, *hit;

    snprintf(num, sizeof(num), tag ? "{%d}" : "%d", shard);
    nlen = strlen(num);
    while ((hit = strstr(p, SHARD_MARK)) != NULL) {
        size_t head = (size_t)(hit - p);
        if (at + head + nlen >= sizeof(out))
            return -1;
        memcpy(out + at, p, head);
        memcpy(out + at + head, num, nlen);
        at += head + nlen;
        p = hit + strlen(SHARD_MARK);
    }
    if (at + strlen(p) >= len || at + strlen(p) >= sizeof(out))
        return -1;
    strlcpy(out + at, p, sizeof(out) - at);
    strlcpy(s, out, len);
    return 0;
}

/* Make cfg shard i of itself: {shard} replaced in its keys and URL. 0, or
 * -1 when a result does not fit. */
static int
shard_apply(struct config *cfg, int i)
{
    cfg->shards = 1;
    if (shard_subst(cfg->stream_key, sizeof(cfg->stream_key), i, 1) < 0 ||
        shard_subst(cfg->redis_url, sizeof(cfg->redis_url), i, 0) < 0 ||
        shard_subst(cfg->dead_letter_stream, sizeof(cfg->dead_letter_stream), i,
                    1) < 0)
        return -1;
    return 0;
}

/* Append one pipeline (a copy of cfg) to set. 0, or -1 with err. */
static int
set_add(struct pipeline_set *set, const char *name, int shard,
        const struct config *cfg, char *err, size_t errlen)
{
    struct pipeline_config *p;

    if (set->n == PIPELINE_MAX) {
        snprintf(err, errlen, "configuration: more than %d pipelines",
                 PIPELINE_MAX);
        return -1;
    }
    p = &set->p[set->n];
    memset(p, 0, sizeof(*p));
    p->cfg = *cfg;
    p->shard = shard;
    if (shard < 0)
        strlcpy(p->name, name, sizeof(p->name));
    else
        snprintf(p->name, sizeof(p->name), "%s.%d", name, shard);
    set->n++;
    return 0;
}

/*
 * Add the pipeline cfg (from section name, or the file's shared lines):
 * itself, or one per shard. 0, or -1 with err.
 */
static int
add_pipeline(struct pipeline_set *set, const char *name,
             const struct config *cfg, char *err, size_t errlen)
{
    static struct config shard; /* large: not on the stack */
    char where[CONFIG_PIPELINE_NAME_MAX + 32];

    if (set->sectioned)
        snprintf(where, sizeof(where), "[pipeline %s]", name);
    else
        snprintf(where, sizeof(where), "configuration");
    if (config_validate(cfg, err, errlen) < 0) {
        if (set->sectioned) {
            char inner[CONFIG_ERR_MAX];
            strlcpy(inner, err, sizeof(inner));
            snprintf(err, errlen, "%s: %s", where, inner);
        }
        return -1;
    }
    if (cfg->shards == 1)
        return set_add(set, name, -1, cfg, err, errlen);
    if (strstr(cfg->stream_key, SHARD_MARK) == NULL) {
        snprintf(err, errlen,
                 "%s: stream_key: '%s' has no %s for the shard's number "
                 "(shards = %d)",
                 where, cfg->stream_key, SHARD_MARK, cfg->shards);
        return -1;
    }
    for (int i = 0; i < cfg->shards; i++) {
        shard = *cfg;
        if (shard_apply(&shard, i) < 0) {
            snprintf(err, errlen, "%s: shard %d: a key is too long", where, i);
            return -1;
        }
        if (set_add(set, name, i, &shard, err, errlen) < 0)
            return -1;
    }
    return 0;
}

/* Two pipelines on the same stream and group would share its consumers'
 * names and steal each other's entries. 0, or -1 with err. */
static int
check_distinct(const struct pipeline_set *set, char *err, size_t errlen)
{
    for (int i = 0; i < set->n; i++)
        for (int j = 0; j < i; j++) {
            const struct config *a = &set->p[j].cfg, *b = &set->p[i].cfg;
            if (strcmp(a->redis_url, b->redis_url) == 0 &&
                strcmp(a->stream_key, b->stream_key) == 0 &&
                strcmp(a->consumer_group, b->consumer_group) == 0) {
                snprintf(err, errlen,
                         "[pipeline %s]: stream_key and consumer_group: "
                         "the same as [pipeline %s] (%s, %s); two "
                         "pipelines can't share a group",
                         set->p[i].name, set->p[j].name, b->stream_key,
                         b->consumer_group);
                return -1;
            }
        }
    return 0;
}

int
pipeline_set_load(struct pipeline_set *set, const char *path,
                  char *const *options, int noptions, char *err, size_t errlen)
{
    static char names[PIPELINE_MAX][CONFIG_PIPELINE_NAME_MAX + 1];
    static struct config one; /* large: not on the stack */
    int nnames = 0;

    memset(set, 0, sizeof(*set));
    if (config_load_unchecked(&set->base, path, options, noptions, err,
                              errlen) < 0)
        return -1;
    if (path != NULL &&
        config_sections(path, names, PIPELINE_MAX, &nnames, err, errlen) < 0)
        return -1;
    set->p = calloc(PIPELINE_MAX, sizeof(*set->p));
    if (set->p == NULL) {
        snprintf(err, errlen, "configuration: out of memory");
        return -1;
    }
    set->sectioned = nnames > 0;
    if (!set->sectioned) {
        if (add_pipeline(set, PIPELINE_DEFAULT_NAME, &set->base, err, errlen) <
            0)
            goto fail;
    }
    for (int i = 0; i < nnames; i++) {
        one = set->base;
        if (config_load_section(&one, path, names[i], err, errlen) < 0 ||
            add_pipeline(set, names[i], &one, err, errlen) < 0)
            goto fail;
    }
    if (check_distinct(set, err, errlen) < 0)
        goto fail;
    set->labelled = set->sectioned || set->n > 1;
    return 0;
fail:
    pipeline_set_free(set);
    return -1;
}

void
pipeline_set_free(struct pipeline_set *set)
{
    free(set->p);
    set->p = NULL;
    set->n = 0;
}

int
pipeline_config_load(struct config *cfg, const char *path, const char *name,
                     char *err, size_t errlen)
{
    char section[CONFIG_PIPELINE_NAME_MAX + 1];
    const char *dot = strrchr(name, '.');
    int shard = -1;

    if (config_load_unchecked(cfg, path, NULL, 0, err, errlen) < 0)
        return -1;
    strlcpy(section, name, sizeof(section));
    if (dot != NULL && dot[1] != '\0' &&
        strspn(dot + 1, "0123456789") == strlen(dot + 1)) {
        shard = atoi(dot + 1);
        section[dot - name < (long)sizeof(section) ? dot - name : 0] = '\0';
    }
    if (strcmp(section, PIPELINE_DEFAULT_NAME) != 0) {
        static char names[PIPELINE_MAX][CONFIG_PIPELINE_NAME_MAX + 1];
        int n = 0, found = 0;

        if (config_sections(path, names, PIPELINE_MAX, &n, err, errlen) < 0)
            return -1;
        for (int i = 0; i < n; i++)
            found |= strcmp(names[i], section) == 0;
        if (!found) {
            snprintf(err, errlen, "%s: no [pipeline %s] section", path,
                     section);
            return -1;
        }
        if (config_load_section(cfg, path, section, err, errlen) < 0)
            return -1;
    }
    if (shard < 0)
        return 0;
    if (shard >= cfg->shards) {
        snprintf(err, errlen, "pipeline %s: %s has %d shards", name, section,
                 cfg->shards);
        return -1;
    }
    if (shard_apply(cfg, shard) < 0) {
        snprintf(err, errlen, "pipeline %s: a key is too long", name);
        return -1;
    }
    return 0;
}

const struct pipeline_config *
pipeline_set_find(const struct pipeline_set *set, const char *name)
{
    for (int i = 0; i < set->n; i++)
        if (strcmp(set->p[i].name, name) == 0)
            return &set->p[i];
    return NULL;
}

/* CRC-16/XMODEM (polynomial 0x1021, initial 0), the one Redis Cluster
 * hashes keys with. */
static unsigned
crc16(const char *s, size_t len)
{
    unsigned crc = 0;

    for (size_t i = 0; i < len; i++) {
        crc ^= (unsigned)(unsigned char)s[i] << 8;
        for (int b = 0; b < 8; b++)
            crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff
                               : (crc << 1) & 0xffff;
    }
    return crc;
}

unsigned
pipeline_hash_slot(const char *key)
{
    const char *open = strchr(key, '{'), *close;

    if (open != NULL && (close = strchr(open + 1, '}')) != NULL &&
        close > open + 1)
        return crc16(open + 1, (size_t)(close - open - 1)) % 16384;
    return crc16(key, strlen(key)) % 16384;
}

unsigned
pipeline_shard_of(const char *key, size_t len, unsigned nshards)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a 64-bit offset basis */

    if (nshards <= 1)
        return 0;
    for (size_t i = 0; i < len; i++) {
        h ^= (uint64_t)(unsigned char)key[i];
        h *= 0x100000001b3ULL; /* FNV 64-bit prime */
    }
    return (unsigned)(h % nshards);
}
