/*
 * test_pipeline.c: the pipelines of a configuration (shared/pipeline.c):
 * a file without sections is the one pipeline "main"; sections start from
 * the shared lines and the environment; a global key in a section, a
 * malformed or repeated section, two pipelines on one stream and group
 * are refused with where; shards expand with {shard} in braces in keys
 * and bare in the URL; the Redis Cluster hash slots of known keys.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shared/pipeline.h"
#include "tests/unit/tap.h"

static char tmpdir[] = "/tmp/sluice-test-pipeline.XXXXXX";

/* Write text to a fresh file in tmpdir; returns its path (static). */
static const char *
write_file(const char *text)
{
    static char path[256];
    static int n;
    FILE *f;

    snprintf(path, sizeof(path), "%s/p%d.conf", tmpdir, ++n);
    f = fopen(path, "w");
    if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0) {
        perror(path);
        exit(2);
    }
    return path;
}

static void
test_flat(void)
{
    struct pipeline_set set;
    char err[CONFIG_ERR_MAX];
    const char *path = write_file("database_url = postgresql:///x\n"
                                  "stream_key = s\nparallel_consumers = 3\n");

    ok(pipeline_set_load(&set, path, NULL, 0, err, sizeof(err)) == 0,
       "a file without sections loads (%s)", err);
    is_int(set.n, 1, "one pipeline");
    is_str(set.p[0].name, "main", "named main");
    is_int(set.sectioned, 0, "not sectioned");
    is_int(set.labelled, 0, "not labelled");
    is_str(set.p[0].cfg.stream_key, "s", "its settings are the file's");
    is_int(set.p[0].cfg.parallel_consumers, 3, "... all of them");
    pipeline_set_free(&set);
}

static void
test_sections(void)
{
    struct pipeline_set set;
    char err[CONFIG_ERR_MAX];
    const struct pipeline_config *a, *b;
    const char *path = write_file("database_url = postgresql:///x\n"
                                  "batch_size = 100\n"
                                  "[pipeline a]\n"
                                  "stream_key = sa\n"
                                  "batch_size = 7\n"
                                  "\n"
                                  "  [ pipeline  b ]  \n"
                                  "stream_key = sb\n"
                                  "sink = raw\n");

    setenv("SLUICE_BLOCK_MS", "250", 1);
    ok(pipeline_set_load(&set, path, NULL, 0, err, sizeof(err)) == 0,
       "a file of two sections loads (%s)", err);
    unsetenv("SLUICE_BLOCK_MS");
    is_int(set.n, 2, "two pipelines");
    is_int(set.labelled, 1, "labelled");
    a = pipeline_set_find(&set, "a");
    b = pipeline_set_find(&set, "b");
    ok(a != NULL && b != NULL, "found by name");
    if (a == NULL || b == NULL)
        return;
    is_int(a->cfg.batch_size, 7, "a section's own value wins");
    is_int(b->cfg.batch_size, 100, "the shared value otherwise");
    is_str(b->cfg.sink, "raw", "b's sink");
    is_str(a->cfg.sink, "atproto", "a does not get b's settings");
    is_int(a->cfg.block_ms, 250, "the environment applies to every pipeline");
    is_int(b->cfg.block_ms, 250, "... b too");
    is_str(set.base.stream_key, "firehose:events",
           "the shared settings don't get a section's");
    ok(pipeline_set_find(&set, "c") == NULL, "an unknown name: NULL");
    pipeline_set_free(&set);
}

/* Load text expecting a refusal whose message holds want. */
static void
refused(const char *text, const char *want, const char *what)
{
    struct pipeline_set set;
    char err[CONFIG_ERR_MAX] = "";
    const char *path = write_file(text);
    int rc = pipeline_set_load(&set, path, NULL, 0, err, sizeof(err));

    ok(rc < 0 && strstr(err, want) != NULL, "%s: '%s'", what, err);
    if (rc == 0)
        pipeline_set_free(&set);
}

static void
test_refusals(void)
{
    char want[300];

    refused("database_url = x\n[pipeline a]\nstream_key = s\nhttp_listen = "
            "127.0.0.1:1\n",
            ":4: http_listen: a setting of the whole supervisor",
            "a global key in a section names the line");
    refused("database_url = x\n[pipeline a]\n[pipeline a]\n",
            ":3: [pipeline a]: a second section of that name",
            "a section twice");
    refused("database_url = x\n[pipelines a]\n",
            ":2: the only section is [pipeline NAME]", "another section");
    refused("database_url = x\n[pipeline a/b]\n", ":2: a pipeline's name is",
            "a name with a slash");
    refused("database_url = x\n[pipeline a\n", ":2: a section is written",
            "an unterminated section");
    refused("database_url = x\n[pipeline a]\nstream_key = s\n[pipeline b]\n"
            "stream_key = s\n",
            "[pipeline b]: stream_key and consumer_group: the same as "
            "[pipeline a]",
            "two pipelines on one stream and group");
    refused("[pipeline a]\nstream_key = s\n",
            "[pipeline a]: configuration: database_url: required",
            "a pipeline's own check names it");
    refused("database_url = x\n[pipeline a]\nbatch_size = 1\nbatch_size = "
            "2\n",
            ":4: batch_size: set twice (first on line 3)",
            "a key twice in a section");
    snprintf(want, sizeof(want),
             "[pipeline f]: stream_key: 'flat' has no {shard}");
    refused("database_url = x\n[pipeline f]\nshards = 2\nstream_key = flat\n",
            want, "shards without {shard}");
}

static void
test_shards(void)
{
    struct pipeline_set set;
    char err[CONFIG_ERR_MAX];
    const char *path = write_file("database_url = postgresql:///x\n"
                                  "[pipeline fh]\n"
                                  "shards = 3\n"
                                  "stream_key = ev:{shard}\n"
                                  "redis_url = redis://r-{shard}:6379\n"
                                  "dead_letter_stream = ev:{shard}:dead\n");

    ok(pipeline_set_load(&set, path, NULL, 0, err, sizeof(err)) == 0,
       "a sharded pipeline loads (%s)", err);
    is_int(set.n, 3, "three pipelines");
    is_str(set.p[2].name, "fh.2", "named NAME.SHARD");
    is_int(set.p[2].shard, 2, "its shard");
    is_str(set.p[2].cfg.stream_key, "ev:{2}", "the key keeps its braces");
    is_str(set.p[2].cfg.dead_letter_stream, "ev:{2}:dead",
           "the dead-letter stream too");
    is_str(set.p[2].cfg.redis_url, "redis://r-2:6379", "the URL: bare");
    is_int(set.p[2].cfg.shards, 1, "each shard is one pipeline");
    pipeline_set_free(&set);
}

static void
test_hash_slot(void)
{
    /* the values Redis Cluster gives (CLUSTER KEYSLOT) */
    is_int(pipeline_hash_slot("foo"), 12182, "slot of foo");
    is_int(pipeline_hash_slot("bar"), 5061, "slot of bar");
    is_int(pipeline_hash_slot("{foo}:anything"), 12182,
           "a hash tag: the slot of the tag");
    is_int(pipeline_hash_slot("{}foo"), pipeline_hash_slot("{}foo"),
           "an empty tag: the whole key");
    ok(pipeline_hash_slot("{}foo") != pipeline_hash_slot("foo"),
       "... which is not the tag's");
    is_int(pipeline_shard_of("a", 1, 1000), 996,
           "shard: FNV-1a 64 of a (0xaf63dc4c8601ec8c) mod 1000");
    is_int(pipeline_shard_of("did:plc:z72i7hdynmk6r22z27h6tvur", 32, 3), 1,
           "shard: a DID among 3");
}

int
main(void)
{
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    test_flat();
    test_sections();
    test_refusals();
    test_shards();
    test_hash_slot();
    {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
        if (system(cmd) != 0)
            diag("could not remove %s", tmpdir);
    }
    return done_testing();
}
