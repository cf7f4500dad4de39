/*
 * fuzz_frame.c: libFuzzer target of the firehose frame decoder (`make
 * fuzz`; see the GNUmakefile's fuzz block).
 *
 * Each input is one WebSocket message. It is decoded with the default
 * limits and with tight ones (so that small inputs reach every limit), and
 * its seq is read and replaced. Beyond the sanitizers' findings, the
 * target aborts when a call breaks its contract: a result other than 0 or
 * -1, a failure without a reason or with an entry left behind, an entry
 * whose data is not a JSON object, a frame that decodes whose copy with
 * another seq does not decode to the same entry with that seq. (frame_seq()
 * reads only up to the seq, so a malformed frame may have one while its
 * copy, with a shorter head, is refused: a map or array must fit in the
 * bytes left. Only frames that decode are held to the copy's decoding.)
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "worker/firehose_frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct frame_event ev;
static struct buf copy, entry;

/* Decode under lim; 0 when the frame decoded, -1 when it was refused.
 * Aborts on a broken contract. */
static int
decode(const uint8_t *data, size_t size, const struct frame_limits *lim)
{
    const char *why = NULL;
    int r = frame_decode(data, size, lim, &ev, &why);

    if (r != 0 && r != -1)
        abort();
    if (r < 0) {
        if (why == NULL || *why == '\0' || ev.data.len != 0 || ev.type != NULL)
            abort();
        return -1;
    }
    if ((ev.type != NULL) !=
        (ev.kind == FRAME_COMMIT || ev.kind == FRAME_IDENTITY ||
         ev.kind == FRAME_ACCOUNT))
        abort();
    if (ev.type != NULL) {
        cJSON *j = cJSON_ParseWithLength(ev.data.p, ev.data.len);
        if (j == NULL || !cJSON_IsObject(j))
            abort();
        cJSON_Delete(j);
    }
    if (memchr(ev.name, '\0', sizeof(ev.name)) == NULL ||
        memchr(ev.message, '\0', sizeof(ev.message)) == NULL)
        abort();
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct frame_limits lim;
    enum frame_kind kind;
    int64_t seq, again;
    int decoded;

    frame_limits_default(&lim);
    if (size > lim.max_frame)
        return 0;
    decoded = decode(data, size, &lim) == 0;
    kind = ev.kind;
    entry.len = 0;
    if (decoded && ev.data.len > 0) {
        if (buf_reserve(&entry, ev.data.len) < 0)
            abort();
        memcpy(entry.p, ev.data.p, ev.data.len);
        entry.len = ev.data.len;
    }

    if (frame_seq(data, size, &seq) == 0) {
        if (seq < 0 || frame_with_seq(data, size, seq ^ 1, &copy) < 0)
            abort();
        if (decoded &&
            (frame_seq((const uint8_t *)copy.p, copy.len, &again) < 0 ||
             again != (seq ^ 1) ||
             decode((const uint8_t *)copy.p, copy.len, &lim) < 0 ||
             ev.kind != kind || ev.seq != again || ev.data.len != entry.len ||
             (entry.len > 0 && memcmp(ev.data.p, entry.p, entry.len) != 0)))
            abort();
    } else if (frame_with_seq(data, size, 1, &copy) == 0) {
        abort();
    }

    lim.max_block = 256;
    lim.max_blocks = 4;
    lim.max_items = 8;
    lim.max_depth = 4;
    (void)decode(data, size, &lim);
    return 0;
}
