/*
 * firehose_frame.h: one message of com.atproto.sync.subscribeRepos, turned
 * into the stream entry the workers read.
 *
 * A relay sends each event as one binary WebSocket message: a DAG-CBOR
 * header map {op, t} followed by a DAG-CBOR body map. For "#commit" the
 * body's `blocks` is a CAR v1 file holding the records; each op names its
 * record by CID. frame_decode() checks every CID against its block's
 * SHA-256, finds each op's record and writes the entry's data as JSON:
 *
 *   commit    {"repo": did, "rev": rev, "time": time,
 *              "ops": [{"action", "path", "cid", "record"}]}
 *             (a delete has no cid and no record)
 *   identity  {"did": did, "handle": handle or null}
 *   account   {"did": did, "active": bool, "status": s (when present)}
 *
 * Records keep their camelCase keys; CID links become {"$link": "b…"},
 * bytes {"$bytes": base64 without padding}.
 *
 * Everything read is untrusted: sizes, depth and item counts are bounded
 * by struct frame_limits, nothing is allocated beyond the output buffer
 * and the CAR index (both reused from frame to frame; they grow with the
 * frame, never with a declared length), and every malformed input is an
 * error with a reason, never a crash.
 */
#ifndef SLUICE_FIREHOSE_FRAME_H
#define SLUICE_FIREHOSE_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "shared/buf.h"
#include "worker/frame_limits.h"

enum frame_kind {
    FRAME_COMMIT = 0, /* "#commit": data is an entry */
    FRAME_IDENTITY,   /* "#identity": data is an entry */
    FRAME_ACCOUNT,    /* "#account": data is an entry */
    FRAME_SYNC,       /* "#sync": counted and skipped */
    FRAME_INFO,       /* "#info": name and message set, logged */
    FRAME_ERROR,      /* op -1: name (the error) and message set */
    FRAME_UNKNOWN,    /* another t: name set, counted and skipped */
    FRAME_KIND_COUNT
};

struct frame_event {
    enum frame_kind kind;
    int64_t seq;     /* the relay's seq; -1 when the body has none */
    int64_t time_ms; /* the body's `time` (RFC 3339), ms since the
                        epoch; 0 when absent or unreadable */
    int too_big;     /* a commit flagged tooBig */
    unsigned ops;    /* ops in a commit's entry */
    unsigned ops_without_record; /* create/update ops whose block was not
                                    in the CAR (kept, with no record) */
    const char *type;  /* the entry's type field: "commit", "identity",
                          "account"; NULL for kinds that make no entry */
    struct buf data;   /* the entry's data (JSON, not NUL-terminated) */
    char name[64];     /* t without '#', or an error frame's error */
    char message[256]; /* #info or error frame message ("" when none) */
    struct buf index;  /* frame_decode()'s index of a commit's CAR,
                          reused (internal: not for the caller) */
};

/*
 * Decode one message of len bytes into ev, reusing ev->data's memory.
 * Returns 0, or -1 with *why set to a static one-line reason ("frame of N
 * bytes over the limit" is not one of them: the caller checks max_frame
 * before reading a message whole; "CAR block CID does not match its
 * bytes", "CBOR nesting deeper than 32", ...). On -1, ev->seq is still set
 * when the body's seq could be read, so that the caller can name the
 * frame it skips.
 */
int frame_decode(const uint8_t *msg, size_t len, const struct frame_limits *lim,
                 struct frame_event *ev, const char **why);

/* Free ev->data (and the index). Can't fail; ev can be reused after
 * frame_event_init(). */
void frame_event_free(struct frame_event *ev);

/* Zero ev (no allocation). Can't fail. */
void frame_event_init(struct frame_event *ev);

/*
 * The body's seq of one message, without decoding the rest. Returns 0, or
 * -1 when the message has no readable header and body seq.
 */
int frame_seq(const uint8_t *msg, size_t len, int64_t *seq);

/*
 * Write into out (emptied first) a copy of msg with the body's seq
 * replaced by seq, every other byte as it was (the test relay uses it to
 * loop over recorded frames with rising seq). Returns 0, or -1 when msg
 * has no body seq or memory runs out.
 */
int frame_with_seq(const uint8_t *msg, size_t len, int64_t seq,
                   struct buf *out);

/* "commit", "identity", ... for logs and counters. Can't fail. */
const char *frame_kind_name(enum frame_kind k);

#endif
