/*
 * abi2.c: a test plugin (tests/27-sink-plugin.t) that claims to be built
 * for a version of the sink interface this sluiced does not speak.
 */
#include <stddef.h>

#include <sluice/sink.h>

static void *
abi2_create(const struct sluice_option *opts, size_t nopts, char *err,
            size_t errlen)
{
    (void)opts, (void)nopts, (void)err, (void)errlen;
    return NULL;
}

static void
abi2_destroy(void *self)
{
    (void)self;
}

static int
abi2_apply(void *self, PGconn *conn, struct sluice_entry *const *entries,
           size_t n, char *err, size_t errlen)
{
    (void)self, (void)conn, (void)entries, (void)n, (void)err, (void)errlen;
    return SLUICE_RETRY;
}

const struct sluice_sink_v1 sluice_sink_v1 = {
    .abi_version = 2,
    .struct_size = sizeof(struct sluice_sink_v1),
    .name = "abi2",
    .create = abi2_create,
    .destroy = abi2_destroy,
    .apply = abi2_apply,
};
