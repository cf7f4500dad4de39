/*
 * config.h: sluice's settings, where they come from, and how they are
 * checked.
 *
 * Precedence: built-in defaults < config file (`key = value`, `#` comments)
 * < environment (the old workers' names: REDIS_URL, DATABASE_URL, ...)
 * < command line (`-s key=value`). Every setting, its default and its
 * meaning is documented in etc/sluice.conf; the table in config.c is the
 * single source of names, types, defaults and ranges.
 *
 * Errors are reported as one line naming the file, the line and the key:
 *   "/etc/sluice/sluice.conf:12: batch_size: not a number: '50O'"
 * Durations accept a unit suffix (ms, s, m, h; no suffix = the key's unit
 * given in the table) and are stored in milliseconds.
 */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "shared/log.h"

#define CONFIG_STR_MAX           512
#define CONFIG_ERR_MAX           512
#define CONFIG_PIPELINE_NAME_MAX 48
#define CONFIG_MAP_MAX           64 /* column.NAME or plugin.NAME keys of a kind */
#define CONFIG_KEYS_MAX          96 /* room for the settings table's rows */
#define CONFIG_FROM_DEFAULT      0u
#define CONFIG_FROM_ENV          0xfffffffeu
#define CONFIG_FROM_OPTION       0xffffffffu

/*
 * A key of the form PREFIX.NAME = value (column.order_id = data.$.id,
 * plugin.required = a,b): name is what follows the prefix, line the line
 * of the file it was read from (0: the command line).
 */
struct config_pair {
    char name[64];
    char value[CONFIG_STR_MAX / 2];
    unsigned line;
};

struct config {
    /* Connections */
    char redis_url[CONFIG_STR_MAX];    /* REDIS_URL, redis://localhost:6379 */
    char database_url[CONFIG_STR_MAX]; /* DATABASE_URL, required */

    /* The stream and the group */
    char stream_key[CONFIG_STR_MAX];     /* REDIS_STREAM_KEY */
    char consumer_group[CONFIG_STR_MAX]; /* REDIS_CONSUMER_GROUP */
    char consumer_id[CONFIG_STR_MAX];    /* CONSUMER_ID, default: hostname */
    char group_start_id[64];             /* ID a new group starts at: "0" */
    char dead_letter_stream[CONFIG_STR_MAX]; /* "" = <stream_key>:dead */
    long stream_maxlen; /* producer's MAXLEN, for the trim warning */

    /* Processes */
    int shards;             /* this pipeline is N, on {shard} keys */
    int parallel_consumers; /* PARALLEL_CONSUMERS: worker processes */
    int db_pool_size;       /* DB_POOL_SIZE: cap on PostgreSQL connections */

    /* Batching */
    int batch_size; /* BATCH_SIZE: entries per batch (XREADGROUP COUNT) */
    long batch_timeout_ms; /* a batch closes after this long */
    long block_ms;         /* XREADGROUP BLOCK */

    /* Reclaim and dead letters */
    long claim_idle_ms;     /* XAUTOCLAIM min-idle-time */
    long claim_interval_ms; /* how often to run XAUTOCLAIM */
    int max_deliveries;     /* more deliveries than this: dead letter */

    /* Faults */
    long reconnect_delay_ms;     /* first reconnect delay */
    long reconnect_delay_max_ms; /* cap of the exponential backoff */
    long redis_timeout_ms;       /* socket timeout, on top of block_ms */

    /* Sink */
    char sink[32];            /* "raw" or "atproto" */
    char input_format[32];    /* "stream" or "jetstream" (atproto sink) */
    long counter_fold_ms;     /* atproto: fold counter deltas this often */
    char raw_table[128];      /* raw sink: table name, "events" */
    char raw_type_field[128]; /* raw sink: field holding the event type */
    char function[128];       /* function sink: [schema.]name(jsonb) */
    char table[128];          /* table sink: [schema.]name */
    char table_key[CONFIG_STR_MAX]; /* table sink: conflict key columns */
    char table_on_conflict[16];     /* "nothing" or "update" */
    char table_create[8];           /* "no" or "yes" (--init-schema) */
    struct config_pair columns[CONFIG_MAP_MAX]; /* column.NAME = SOURCE */
    int ncolumns;
    char plugin[CONFIG_STR_MAX]; /* plugin sink: the shared object */
    struct config_pair plugin_options[CONFIG_MAP_MAX]; /* plugin.NAME */
    int nplugin_options;

    /* Firehose reader (relay -> stream) */
    char relay_url[CONFIG_STR_MAX];  /* RELAY_URL; "" = no reader */
    char cursor_key[CONFIG_STR_MAX]; /* REDIS_CURSOR_KEY: the saved seq */
    char stream_trim[16];            /* "acked" or "maxlen" */
    long firehose_max_frame;         /* bytes of one relay message */
    long firehose_max_block;         /* bytes of one CAR block */
    long firehose_max_items;         /* entries of one CBOR array or map */
    int firehose_max_depth;          /* CBOR nesting */
    long relay_idle_timeout_ms;      /* no frame this long: reconnect */

    /* Supervisor */
    long worker_timeout_ms;   /* heartbeat older than this: SIGKILL */
    long shutdown_timeout_ms; /* TERM: SIGKILL of the rest after this */
    long restart_delay_ms;    /* first restart delay after a quick death */
    long restart_delay_max_ms;
    long stats_interval_ms; /* aggregate events/sec log line */
    char pidfile[CONFIG_STR_MAX];
    char stats_name[256]; /* shm segment name; "" = derived */
    char user[64];        /* drop privileges to this user ("" = don't) */
    char http_listen[CONFIG_STR_MAX]; /* host:port or /path; "" = no HTTP */
    long ready_max_lag;               /* /readyz: group lag at most this */
    long ready_max_idle_ms; /* /readyz: a commit this recent when there is
                               anything to read */

    /* Logging */
    enum log_level log_level;        /* LOG_LEVEL */
    char log_target[CONFIG_STR_MAX]; /* stderr | syslog | /path/to/file */

    /* The file the settings came from ("" none), and where each setting
     * was set (by its index in the settings table: a line of the file,
     * or CONFIG_FROM_*), for the file:line of the errors found later (a
     * column the table lacks, a plugin that does not load). */
    char file[CONFIG_STR_MAX];
    unsigned set_at[CONFIG_KEYS_MAX];
};

/* Fill cfg with the built-in defaults. Can't fail. */
void config_defaults(struct config *cfg);

/*
 * Read a config file over cfg. Returns 0, or -1 with a one-line message in
 * err ("FILE:LINE: KEY: what is wrong", or "FILE: strerror" when it can't
 * be read). On error cfg may be partly updated: load into a copy.
 */
int config_load_file(struct config *cfg, const char *path, char *err,
                     size_t errlen);

/*
 * Several pipelines in one file: the lines before the first
 * "[pipeline NAME]" line are shared by every pipeline (and hold the
 * supervisor's own settings); each section's lines apply over them to its
 * pipeline alone. config_load_file() reads the shared lines only;
 * config_load_section() the lines of one section (a global key there is an
 * error); config_sections() lists the sections' names in file order (at
 * most max, *n of them). Same error contract.
 */
int config_load_section(struct config *cfg, const char *path, const char *name,
                        char *err, size_t errlen);
int config_sections(const char *path,
                    char (*names)[CONFIG_PIPELINE_NAME_MAX + 1], int max,
                    int *n, char *err, size_t errlen);

/* 1 when key is a setting of the whole supervisor (pidfile, http_listen,
 * log_target, relay_url, ...), which a pipeline's section can't set. */
int config_key_is_global(const char *key);

/* Apply the environment variables (REDIS_URL, ...). Same error contract;
 * the message names the variable. */
int config_load_env(struct config *cfg, char *err, size_t errlen);

/* Apply one "key=value" (command line -s). Same error contract. */
int config_set_option(struct config *cfg, const char *keyvalue, char *err,
                      size_t errlen);

/* Cross-field checks (database_url set, names non-empty, ...) after all
 * sources are applied. Same error contract. */
int config_validate(const struct config *cfg, char *err, size_t errlen);

/*
 * The whole sequence: defaults, file (when path is not NULL), environment,
 * the n options, validate. Returns 0 or -1 with err set.
 */
int config_load(struct config *cfg, const char *path, char *const *options,
                int noptions, char *err, size_t errlen);

/* The same without the cross-field checks (config_validate()), for a
 * configuration of several pipelines (shared/pipeline.h). */
int config_load_unchecked(struct config *cfg, const char *path,
                          char *const *options, int noptions, char *err,
                          size_t errlen);

/*
 * The same for the firehose reader run alone (sluiced --firehose): it never
 * opens PostgreSQL, so database_url may be empty, and relay_url is
 * required.
 */
int config_load_reader(struct config *cfg, const char *path,
                       char *const *options, int noptions, char *err,
                       size_t errlen);

/* The dead-letter stream: dead_letter_stream, or "<stream_key>:dead".
 * Returns a pointer into cfg or into the static buffer buf. */
const char *config_dead_letter_stream(const struct config *cfg, char *buf,
                                      size_t buflen);

/* The stats segment name: stats_name, or one derived from stream and group
 * ("/sluice.<stream>.<group>" with '/' replaced). Writes into buf. */
const char *config_stats_name(const struct config *cfg, char *buf,
                              size_t buflen);

/*
 * Copy url into buf with any password replaced by "***"
 * (redis://:secret@h -> redis://:***@h; postgresql://u:pw@h/db ->
 * postgresql://u:***@h/db; key=value conninfo: password=***).
 * Use this for every URL that reaches a log line or any output.
 */
const char *config_redact_url(const char *url, char *buf, size_t buflen);

/* The firehose reader's own settings (relay_url, cursor_key,
 * stream_trim, firehose_*, relay_idle_timeout_ms): copy them from src
 * into dst, or compare them (1: equal). A reload that changes only these
 * restarts the reader, not the workers. Can't fail. */
void config_copy_firehose(struct config *dst, const struct config *src);
int config_firehose_equal(const struct config *a, const struct config *b);

/* Where pair p was set, for an error: "FILE:LINE" or "command line".
 * Writes into buf and returns it. Can't fail. */
const char *config_pair_where(const struct config *cfg,
                              const struct config_pair *p, char *buf,
                              size_t buflen);

/* Where setting key got its value, for an error: "FILE:LINE",
 * "environment", "command line" or "default". Writes into buf and returns
 * it. Can't fail. */
const char *config_key_where(const struct config *cfg, const char *key,
                             char *buf, size_t buflen);

/* 1 when a and b hold the same values, wherever they were set (a
 * setting that only moved to another line is no change); 0 when not.
 * Can't fail. */
int config_same(const struct config *a, const struct config *b);

/* Print every setting and its value (passwords redacted) as a config file,
 * for `sluiced --check-config`. */
void config_print(const struct config *cfg, FILE *out);

/* Print the settings table, one setting a line, fields by tabs: key, type
 * (string url int long duration level choice), default as written in a
 * file, range (MIN..MAX, durations in ms; or a|b|c; or empty), the
 * environment names (the old workers' first, then SLUICE_<KEY>). For
 * `sluiced --list-settings`, which the sluice.conf(5) generator reads. */
void config_print_settings(FILE *out);

#endif
