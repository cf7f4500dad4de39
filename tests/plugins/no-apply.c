/*
 * no-apply.c: a test plugin (tests/27-sink-plugin.t) of the right version
 * whose table lacks a required callback (apply).
 */
#include <stddef.h>

#include <sluice/sink.h>

static void *
noapply_create(const struct sluice_option *opts, size_t nopts, char *err,
               size_t errlen)
{
    (void)opts, (void)nopts, (void)err, (void)errlen;
    return NULL;
}

static void
noapply_destroy(void *self)
{
    (void)self;
}

const struct sluice_sink_v1 sluice_sink_v1 = {
    .abi_version = SLUICE_SINK_ABI_VERSION,
    .struct_size = sizeof(struct sluice_sink_v1),
    .name = "no-apply",
    .create = noapply_create,
    .destroy = noapply_destroy,
};
