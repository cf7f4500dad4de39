/*
 * buf.c: the growable byte buffer of buf.h.
 */
#include <stdlib.h>

#include "shared/buf.h"

int
buf_reserve(struct buf *b, size_t more)
{
    size_t cap = b->cap ? b->cap : 8192;
    char *n;

    if (b->len + more <= b->cap)
        return 0;
    while (cap < b->len + more)
        cap *= 2;
    n = realloc(b->p, cap);
    if (n == NULL)
        return -1;
    b->p = n;
    b->cap = cap;
    return 0;
}

void
buf_free(struct buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
