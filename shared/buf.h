/*
 * buf.h: a growable byte buffer, for the text the sinks build per batch
 * (COPY rows, array literals, JSON) and reuse from one batch to the next.
 *
 *   struct buf b = {0};
 *   if (buf_reserve(&b, n) < 0) ...   room for n more bytes at b.p + b.len
 *   buf_free(&b);
 *
 * The buffer owns p; len is what is used, cap what is allocated. Nothing
 * here NUL-terminates: callers that need it reserve the byte themselves.
 */
#ifndef SLUICE_BUF_H
#define SLUICE_BUF_H

#include <stddef.h>

struct buf {
    char *p;
    size_t len, cap;
};

/* Make room for more bytes after len (the capacity grows by doubling, from
 * 8 KiB). 0, or -1 when out of memory (the buffer is unchanged). */
int buf_reserve(struct buf *b, size_t more);

/* Free the memory and empty the buffer; it can be used again. */
void buf_free(struct buf *b);

#endif
