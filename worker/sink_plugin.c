/*
 * sink_plugin.c: the plugin sink, a sink written in C by someone else and
 * loaded at run time (sink = plugin, plugin = /path/to/the.so).
 *
 * The plugin speaks the stable interface of include/sluice/sink.h, not
 * worker/sink.h: sluice's own sink interface can change from one release
 * to the next, the plugin's cannot. This file is the adapter between the
 * two. It is itself an ordinary sink (struct sink_type), whose instance
 * holds the loaded object, the plugin's table of callbacks and the
 * plugin's own instance.
 *
 * Loading (create()): dlopen(RTLD_NOW | RTLD_LOCAL), so that an undefined
 * symbol is found at once rather than at the first batch, and so that two
 * plugins' symbols never mix with each other's or sluiced's; then
 * dlsym("sluice_sink_v1"), and the table is checked before anything of
 * it is called: its abi_version must be the one this sluiced speaks, its
 * struct_size must cover the version's table, and create, destroy and
 * apply must be set. Then the plugin's create() gets the plugin.NAME
 * settings. Every refusal is a configuration error naming the setting and
 * the file (the worker exits 78 and the supervisor waits for a reload);
 * `sluiced --check-config` runs the same create() and destroy(), so that
 * an operator learns it before a start. Nothing here connects anywhere.
 *
 * Entries: each prepared entry gets a struct sluice_entry, allocated by
 * prepare() and freed by release(), whose pointers lead into the worker's
 * stream_entry (the ID, the fields: struct stream_field and struct
 * sluice_field have the same layout, which the assertions below hold
 * to). apply() hands the plugin an array of them, in the order it was
 * given, and maps its result back: SLUICE_DATA_ERROR lets the worker
 * split the batch, SLUICE_RETRY retries it, anything else is treated as
 * transient.
 *
 * The worker acks a batch once apply() returned SINK_OK and COMMIT
 * succeeded. A plugin that returns SLUICE_OK while its transaction has
 * failed would make that COMMIT a silent ROLLBACK; one that ended the
 * transaction itself would commit outside the worker's control. So after
 * a successful apply() the transaction must still be open and healthy,
 * or the batch is retried (and the log says why): nothing the database
 * did not keep is acked.
 *
 * A plugin runs in the worker's process: if it crashes, the worker dies
 * and the supervisor restarts it (with backoff); its uncommitted batch
 * stays pending and, read again, is applied again or, past
 * max_deliveries, dead-lettered. One worker process holds one instance
 * and calls it from one thread.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bsd/string.h>

#include "include/sluice/sink.h"
#include "worker/sink.h"

/* The fields are handed over as they are: same layout. */
_Static_assert(sizeof(struct sluice_field) == sizeof(struct stream_field),
               "field layouts differ");
_Static_assert(offsetof(struct sluice_field, name) ==
                       offsetof(struct stream_field, name) &&
                   offsetof(struct sluice_field, name_len) ==
                       offsetof(struct stream_field, name_len) &&
                   offsetof(struct sluice_field, value) ==
                       offsetof(struct stream_field, value) &&
                   offsetof(struct sluice_field, value_len) ==
                       offsetof(struct stream_field, value_len),
               "field layouts differ");
_Static_assert(SLUICE_OK == (int)SINK_OK && SLUICE_RETRY == (int)SINK_RETRY &&
                   SLUICE_DATA_ERROR == (int)SINK_DATA_ERROR &&
                   SLUICE_CONFIG == (int)SINK_CONFIG,
               "result codes differ");

/* The part of the table version 1 needs: everything up to release. */
#define V1_SIZE                                                                \
    (offsetof(struct sluice_sink_v1, release) +                                \
     sizeof(((struct sluice_sink_v1 *)0)->release))

struct plugin_sink {
    struct sink base;
    void *dl;                        /* dlopen() handle */
    const struct sluice_sink_v1 *fn; /* the plugin's table */
    void *self;                      /* the plugin's instance */
    char path[CONFIG_STR_MAX];
    char name[128]; /* the table's name, or the file's */
    struct sluice_entry **list;
    size_t list_cap;
};

static void plugin_destroy(struct sink *sink);

/* Make a plugin's message safe to print: NUL-terminated, not empty. */
static void
plugin_msg_fix(char *msg, size_t len, const char *what)
{
    if (len == 0)
        return;
    msg[len - 1] = '\0';
    if (msg[0] == '\0')
        snprintf(msg, len, "%s failed without a message", what);
}

/* Put where the plugin setting was set ("FILE:LINE: ") before the
 * message in err. Can't fail. */
static void
prefix_where(const struct config *cfg, char *err, size_t errlen)
{
    char where[CONFIG_STR_MAX + 16], msg[CONFIG_ERR_MAX];

    strlcpy(msg, err, sizeof(msg));
    snprintf(err, errlen, "%s: %s",
             config_key_where(cfg, "plugin", where, sizeof(where)), msg);
}

static struct sink *
plugin_create(const struct config *cfg, char *err, size_t errlen)
{
    struct plugin_sink *ps = calloc(1, sizeof(*ps));
    struct sluice_option opts[CONFIG_MAP_MAX];
    const struct sluice_sink_v1 *fn;
    const char *dlerr, *base;
    char perr[SINK_REASON_MAX * 2];
    size_t nopts = 0;

    if (ps == NULL) {
        snprintf(err, errlen, "plugin sink: out of memory");
        return NULL;
    }
    strlcpy(ps->path, cfg->plugin, sizeof(ps->path));
    if (ps->path[0] != '/') {
        snprintf(err, errlen, "plugin = %s: must be an absolute path",
                 ps->path[0] ? ps->path : "(empty)");
        goto fail;
    }
    (void)dlerror();
    ps->dl = dlopen(ps->path, RTLD_NOW | RTLD_LOCAL);
    if (ps->dl == NULL) {
        dlerr = dlerror();
        snprintf(err, errlen, "plugin = %s: cannot load it: %s", ps->path,
                 dlerr ? dlerr : "dlopen failed");
        goto fail;
    }
    (void)dlerror();
    fn = dlsym(ps->dl, "sluice_sink_v1");
    if (fn == NULL) {
        snprintf(err, errlen,
                 "plugin = %s: no symbol sluice_sink_v1 in it (not a sluice "
                 "sink plugin, or not one built for sink ABI %d: see "
                 "<sluice/sink.h>)",
                 ps->path, SLUICE_SINK_ABI_VERSION);
        goto fail;
    }
    if (fn->abi_version != SLUICE_SINK_ABI_VERSION) {
        snprintf(err, errlen,
                 "plugin = %s: built for sink ABI %u, this sluiced speaks %d "
                 "(rebuild it against this sluiced's <sluice/sink.h>)",
                 ps->path, (unsigned)fn->abi_version, SLUICE_SINK_ABI_VERSION);
        goto fail;
    }
    if (fn->struct_size < V1_SIZE) {
        snprintf(err, errlen,
                 "plugin = %s: its sluice_sink_v1 is %u bytes, sink ABI %d "
                 "needs at least %zu (struct_size must be "
                 "sizeof(struct sluice_sink_v1))",
                 ps->path, (unsigned)fn->struct_size, SLUICE_SINK_ABI_VERSION,
                 (size_t)V1_SIZE);
        goto fail;
    }
    if (fn->create == NULL || fn->destroy == NULL || fn->apply == NULL) {
        snprintf(err, errlen,
                 "plugin = %s: sluice_sink_v1.%s is NULL (create, destroy "
                 "and apply are required)",
                 ps->path,
                 fn->create == NULL    ? "create"
                 : fn->destroy == NULL ? "destroy"
                                       : "apply");
        goto fail;
    }
    ps->fn = fn;
    base = strrchr(ps->path, '/');
    strlcpy(ps->name, fn->name != NULL && fn->name[0] ? fn->name : base + 1,
            sizeof(ps->name));

    for (int i = 0; i < cfg->nplugin_options && i < CONFIG_MAP_MAX; i++) {
        opts[nopts].name = cfg->plugin_options[i].name;
        opts[nopts].value = cfg->plugin_options[i].value;
        nopts++;
    }
    perr[0] = '\0';
    ps->self = fn->create(opts, nopts, perr, sizeof(perr));
    if (ps->self == NULL) {
        plugin_msg_fix(perr, sizeof(perr), "create()");
        snprintf(err, errlen, "plugin = %s (%s): %s", ps->path, ps->name, perr);
        goto fail;
    }
    return &ps->base;
fail:
    prefix_where(cfg, err, errlen);
    plugin_destroy(&ps->base);
    return NULL;
}

static void
plugin_destroy(struct sink *sink)
{
    struct plugin_sink *ps = (struct plugin_sink *)sink;

    if (ps == NULL)
        return;
    if (ps->self != NULL)
        ps->fn->destroy(ps->self);
    if (ps->dl != NULL)
        dlclose(ps->dl);
    free(ps->list);
    free(ps);
}

static enum sink_result
plugin_on_connect(struct sink *sink, PGconn *conn, char *err, size_t errlen)
{
    struct plugin_sink *ps = (struct plugin_sink *)sink;
    char perr[1024];
    int r;

    if (ps->fn->on_connect == NULL)
        return SINK_OK;
    perr[0] = '\0';
    r = ps->fn->on_connect(ps->self, conn, perr, sizeof(perr));
    if (r == SLUICE_OK)
        return SINK_OK;
    plugin_msg_fix(perr, sizeof(perr), "on_connect()");
    snprintf(err, errlen, "plugin %s: %s", ps->name, perr);
    return r == SLUICE_CONFIG ? SINK_CONFIG : SINK_RETRY;
}

static int
plugin_prepare(struct sink *sink, struct stream_entry *e, char *reason,
               size_t reasonlen)
{
    struct plugin_sink *ps = (struct plugin_sink *)sink;
    struct sluice_entry *se = calloc(1, sizeof(*se));

    if (se == NULL) {
        snprintf(reason, reasonlen, "plugin sink: out of memory");
        return -1;
    }
    se->id = e->id;
    se->id_ms = e->id_ms;
    se->id_seq = e->id_seq;
    se->nfields = e->nfields;
    se->fields = (const struct sluice_field *)(const void *)e->fields;
    se->deliveries = e->deliveries;
    if (ps->fn->prepare != NULL) {
        reason[0] = '\0';
        if (ps->fn->prepare(ps->self, se, reason, reasonlen) != 0) {
            plugin_msg_fix(reason, reasonlen, "the plugin's prepare()");
            free(se);
            return -1;
        }
    }
    e->sink_state = se;
    return 0;
}

static enum sink_result
plugin_apply(struct sink *sink, PGconn *conn,
             struct stream_entry *const *entries, size_t n, char *err,
             size_t errlen)
{
    struct plugin_sink *ps = (struct plugin_sink *)sink;
    PGTransactionStatusType ts;
    int r;

    if (n == 0)
        return SINK_OK;
    if (ps->list_cap < n) {
        void *p = realloc(ps->list, n * sizeof(*ps->list));
        if (p == NULL) {
            snprintf(err, errlen, "plugin sink: out of memory");
            return SINK_RETRY;
        }
        ps->list = p;
        ps->list_cap = n;
    }
    for (size_t i = 0; i < n; i++)
        ps->list[i] = entries[i]->sink_state;
    err[0] = '\0';
    r = ps->fn->apply(ps->self, conn, ps->list, n, err, errlen);
    if (r == SLUICE_OK) {
        ts = PQtransactionStatus(conn);
        if (ts == PQTRANS_INTRANS)
            return SINK_OK;
        snprintf(err, errlen,
                 "plugin %s: apply() returned SLUICE_OK but left the "
                 "transaction %s: the batch is not committed, retrying",
                 ps->name,
                 ts == PQTRANS_INERROR ? "failed (a statement's error was "
                                         "not reported)"
                 : ts == PQTRANS_IDLE  ? "ended (a plugin must not COMMIT or "
                                         "ROLLBACK)"
                                       : "busy (a query still running)");
        return SINK_RETRY;
    }
    plugin_msg_fix(err, errlen, "the plugin's apply()");
    if (r == SLUICE_DATA_ERROR)
        return SINK_DATA_ERROR;
    if (r != SLUICE_RETRY) {
        /* SLUICE_CONFIG or a value the interface does not have: the
         * batch is not written; retried, never dead-lettered */
        char msg[512];
        strlcpy(msg, err, sizeof(msg));
        snprintf(err, errlen, "plugin %s: apply() returned %d (%s): %s",
                 ps->name, r,
                 r == SLUICE_CONFIG ? "SLUICE_CONFIG, for on_connect() only"
                                    : "not an enum sluice_result",
                 msg);
    }
    return SINK_RETRY;
}

static void
plugin_release(struct sink *sink, struct stream_entry *e)
{
    struct plugin_sink *ps = (struct plugin_sink *)sink;
    struct sluice_entry *se = e->sink_state;

    if (se == NULL)
        return;
    if (ps->fn->release != NULL)
        ps->fn->release(ps->self, se);
    free(se);
    e->sink_state = NULL;
}

const struct sink_type sink_plugin_type = {
    .name = "plugin",
    .create = plugin_create,
    .destroy = plugin_destroy,
    /* nothing of its own: the plugin's tables are the operator's to
     * create (its documentation says how) */
    .ddl = "SELECT 1",
    .on_connect = plugin_on_connect,
    .prepare = plugin_prepare,
    .apply = plugin_apply,
    .release = plugin_release,
};
