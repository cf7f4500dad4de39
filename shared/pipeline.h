/*
 * pipeline.h: the pipelines of one configuration. A pipeline is one
 * stream, one consumer group, one sink and its worker count; one sluiced
 * runs every pipeline of its configuration file.
 *
 * A file without sections is one pipeline, named "main", exactly as
 * before: the environment variables, the flat keys and CONSUMER_ID apply
 * to it. A file with "[pipeline NAME]" sections has one pipeline per
 * section; the lines before the first section, then the environment, then
 * the command line's -s options make the settings every section starts
 * from, and hold the supervisor's own (pidfile, http_listen, log_target,
 * relay_url, ...: config_key_is_global()). A pipeline with shards = N
 * becomes N pipelines, NAME.0 ... NAME.N-1, each on the keys its
 * stream_key (which must hold "{shard}") and dead_letter_stream give with
 * "{shard}" replaced by "{N}" (the braces stay: N is the key's Redis
 * Cluster hash tag), and on the redis_url with "{shard}" replaced by N.
 */
#ifndef SLUICE_PIPELINE_H
#define SLUICE_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "shared/config.h"

#define PIPELINE_MAX      64 /* pipelines of one sluiced, shards counted */
#define PIPELINE_NAME_MAX (CONFIG_PIPELINE_NAME_MAX + 8) /* NAME.SHARD */

struct pipeline_config {
    char name[PIPELINE_NAME_MAX];
    int shard; /* its shard number, -1 when not sharded */
    struct config cfg;
};

struct pipeline_set {
    struct config base; /* the shared settings: the supervisor's own */
    int sectioned;      /* the file has [pipeline] sections */
    int labelled;       /* more than one pipeline, or sections: stats and
                           metrics name each worker's pipeline */
    int n;
    struct pipeline_config *p; /* n of them, in file order */
};

/*
 * Load the configuration at path (NULL: none; only the environment and
 * the options) with the noptions -s options into set, and check every
 * pipeline (config_validate) and that no two share a stream and group.
 * Returns 0, or -1 with a one-line message in err naming the file, line
 * and key, or the pipeline. On error set is left empty. The caller frees
 * set with pipeline_set_free().
 */
int pipeline_set_load(struct pipeline_set *set, const char *path,
                      char *const *options, int noptions, char *err,
                      size_t errlen);

/* Free what pipeline_set_load() allocated; set is empty after. Can't
 * fail. */
void pipeline_set_free(struct pipeline_set *set);

/*
 * The settings of the pipeline name ("main", a section's name, or
 * NAME.SHARD) of the file at path, as pipeline_set_load() gives them but
 * without checking them (for a tool that needs only the stream and Redis:
 * sluice-deadletter). 0, or -1 with err (a name the file has no
 * section for, a shard beyond its shards).
 */
int pipeline_config_load(struct config *cfg, const char *path, const char *name,
                         char *err, size_t errlen);

/* The pipeline named name, or NULL. */
const struct pipeline_config *pipeline_set_find(const struct pipeline_set *set,
                                                const char *name);

/* The Redis Cluster hash slot of key (CRC16 of its hash tag, the text
 * between the first '{' and the next '}' when not empty, else of the whole
 * key, modulo 16384). Can't fail. */
unsigned pipeline_hash_slot(const char *key);

/*
 * The shard, 0 .. nshards - 1, of an entry whose ordering key (the DID for
 * the firehose: a commit's repo, an identity's or account's did) is the
 * len bytes at key: FNV-1a 64-bit of those bytes (offset basis
 * 0xcbf29ce484222325, prime 0x100000001b3; per byte, XOR then multiply,
 * modulo 2^64), modulo nshards. This is the contract for every producer
 * writing sluice's sharded streams: the entries of one key go to stream_key
 * with "{shard}" replaced by "{N}", N = this function, so that one key is
 * always in one shard and read in order. nshards 0 or 1: 0. Can't fail.
 */
unsigned pipeline_shard_of(const char *key, size_t len, unsigned nshards);

#endif
