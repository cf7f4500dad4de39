/*
 * test_firehose_frame.c: worker/firehose_frame.c, worker/dagcbor.c and
 * worker/car.c: the seq of a frame and its copy with another seq, and
 * (when ../shared/data/bluesky is there) the recorded frames.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/firehose_frame.h"
#include "tests/unit/tap.h"

struct frames {
    uint8_t *all;     /* the decompressed file */
    size_t len;       /* its bytes */
    size_t n;         /* frames in it */
    size_t *off, *sz; /* each frame's offset and length */
};

/* The data folder: SLUICE_BLUESKY_DATA or ../shared/data/bluesky. */
static const char *
data_dir(void)
{
    const char *d = getenv("SLUICE_BLUESKY_DATA");

    return d && *d ? d : "../shared/data/bluesky";
}

/* Read frames.bin.zst through zstd; 0, or -1 when it is not there. */
static int
load_frames(struct frames *f)
{
    char path[4096], cmd[4200];
    FILE *p;
    size_t cap = 1 << 20, got;

    memset(f, 0, sizeof(*f));
    snprintf(path, sizeof(path), "%s/frames.bin.zst", data_dir());
    if ((p = fopen(path, "rb")) == NULL)
        return -1;
    fclose(p);
    snprintf(cmd, sizeof(cmd), "zstd -dc '%s'", path);
    if ((p = popen(cmd, "r")) == NULL)
        return -1;
    f->all = malloc(cap);
    while (f->all && (got = fread(f->all + f->len, 1, cap - f->len, p)) > 0) {
        f->len += got;
        if (f->len == cap)
            f->all = realloc(f->all, cap *= 2);
    }
    if (pclose(p) != 0 || f->all == NULL)
        return -1;
    f->off = calloc(1024, sizeof(size_t));
    f->sz = calloc(1024, sizeof(size_t));
    for (size_t at = 0; at + 4 <= f->len && f->n < 1024;) {
        uint32_t n = (uint32_t)f->all[at] | (uint32_t)f->all[at + 1] << 8 |
                     (uint32_t)f->all[at + 2] << 16 |
                     (uint32_t)f->all[at + 3] << 24;
        if (n > f->len - at - 4)
            return -1;
        f->off[f->n] = at + 4;
        f->sz[f->n++] = n;
        at += 4 + n;
    }
    return 0;
}

static void
test_seq(const struct frames *f)
{
    struct buf out = {0};
    int64_t seq, prev = -1;
    int bad = 0;

    for (size_t i = 0; i < f->n; i++) {
        const uint8_t *m = f->all + f->off[i];
        if (frame_seq(m, f->sz[i], &seq) < 0 ||
            (prev >= 0 && seq != prev + 1)) {
            diag("frame %zu: seq %lld after %lld", i, (long long)seq,
                 (long long)prev);
            bad++;
        }
        prev = seq;
    }
    ok(bad == 0 && f->n == 150, "frame_seq of %zu recorded frames: rising by 1",
       f->n);
    frame_seq(f->all + f->off[0], f->sz[0], &seq);
    is_int(seq, 31527015322LL, "the first recorded seq");
    frame_seq(f->all + f->off[f->n - 1], f->sz[f->n - 1], &seq);
    is_int(seq, 31527015471LL, "the last recorded seq");

    /* every width of the head, and back */
    const int64_t seqs[] = {
        0,     23,    24,           255,          256,
        65535, 65536, 4294967295LL, 4294967296LL, INT64_MAX};
    bad = 0;
    for (size_t i = 0; i < f->n; i++) {
        const uint8_t *m = f->all + f->off[i];
        for (size_t j = 0; j < sizeof(seqs) / sizeof(seqs[0]); j++) {
            struct buf back = {0};
            int64_t orig;
            frame_seq(m, f->sz[i], &orig);
            if (frame_with_seq(m, f->sz[i], seqs[j], &out) < 0 ||
                frame_seq((uint8_t *)out.p, out.len, &seq) < 0 ||
                seq != seqs[j] ||
                frame_with_seq((uint8_t *)out.p, out.len, orig, &back) < 0 ||
                back.len != f->sz[i] || memcmp(back.p, m, back.len) != 0)
                bad++;
            buf_free(&back);
        }
    }
    ok(bad == 0, "frame_with_seq: every head width, and back byte for byte");
    ok(frame_with_seq(f->all + f->off[0], f->sz[0], -1, &out) < 0 &&
           out.len == 0,
       "frame_with_seq refuses a negative seq");
    buf_free(&out);
}

int
main(void)
{
    struct frames f;
    int64_t seq;
    static const uint8_t tiny[] = {0xa2, 0x62, 'o', 'p',  0x01, 0x61,
                                   't',  0x62, '#', 'x',  0xa1, 0x63,
                                   's',  'e',  'q', 0x18, 0x2a};
    struct buf out = {0};

    ok(frame_seq(tiny, sizeof(tiny), &seq) == 0 && seq == 42,
       "frame_seq of a hand-built frame");
    ok(frame_with_seq(tiny, sizeof(tiny), 7, &out) == 0 &&
           out.len == sizeof(tiny) - 1 && (uint8_t)out.p[out.len - 1] == 7,
       "frame_with_seq: a shorter head");
    ok(frame_seq(tiny, sizeof(tiny) - 1, &seq) < 0, "a truncated seq");
    buf_free(&out);

    if (load_frames(&f) < 0) {
        printf("ok %d # skip %s/frames.bin.zst not there\n", ++tap_run,
               data_dir());
    } else {
        test_seq(&f);
    }
    return done_testing();
}
