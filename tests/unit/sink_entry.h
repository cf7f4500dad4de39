/*
 * sink_entry.h: a unit test's run of one entry through a sink's
 * prepare() and release(), for the tests of the sinks (header-only, like
 * tap.h). The entry is "1-0" with the n fields given; an accepted entry
 * must carry sink state (one TAP check), and is released at once.
 */
#ifndef SLUICE_TEST_SINK_ENTRY_H
#define SLUICE_TEST_SINK_ENTRY_H

#include <string.h>

#include "tests/unit/tap.h"
#include "worker/sink.h"

/* prepare() of the entry of fields[0..n); 0, or -1 with reason set. */
static inline int
sink_try_fields(const struct sink_type *type, struct sink *sink,
                struct stream_field *fields, size_t n, char *reason,
                size_t reasonlen)
{
    struct stream_entry e;
    int r;

    memset(&e, 0, sizeof(e));
    strcpy(e.id, "1-0");
    e.id_ms = e.ord_ms = 1;
    e.fields = fields;
    e.nfields = n;
    reason[0] = '\0';
    r = type->prepare(sink, &e, reason, reasonlen);
    if (r == 0) {
        ok(e.sink_state != NULL, "an accepted entry carries sink state");
        type->release(sink, &e);
    }
    return r;
}

#endif
