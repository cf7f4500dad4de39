/*
 * batch.c: the entries of one batch, the replies they point into, and
 * their fates (see batch.h).
 */
#include <stdlib.h>
#include <string.h>

#include "worker/batch.h"

/* Grow *arr to hold at least want elements of size sz. 0 or -1. */
static int
grow(void *arr, size_t *cap, size_t want, size_t sz)
{
    void **p = arr;
    size_t ncap = *cap ? *cap : 16;
    void *n;

    if (want <= *cap)
        return 0;
    while (ncap < want)
        ncap *= 2;
    n = realloc(*p, ncap * sz);
    if (n == NULL)
        return -1;
    *p = n;
    *cap = ncap;
    return 0;
}

void
batch_init(struct batch *b)
{
    memset(b, 0, sizeof(*b));
}

void
batch_clear(struct batch *b)
{
    for (size_t i = 0; i < b->nreplies; i++)
        freeReplyObject(b->replies[i]);
    b->nreplies = 0;
    b->n = 0;
    b->nfields = 0;
    b->reasons_len = 0;
    b->ngone = 0;
    b->opened_ms = 0;
    b->nclaimed = 0;
}

void
batch_free(struct batch *b)
{
    batch_clear(b);
    free(b->entries);
    free(b->items);
    free(b->fields);
    free(b->replies);
    free(b->reasons);
    free(b->gone);
    batch_init(b);
}

int
batch_keep_reply(struct batch *b, redisReply *reply)
{
    if (grow(&b->replies, &b->replies_cap, b->nreplies + 1,
             sizeof(*b->replies)) < 0) {
        freeReplyObject(reply);
        return -1;
    }
    b->replies[b->nreplies++] = reply;
    return 0;
}

int
stream_id_parse(const char *id, size_t len, uint64_t *ms, uint64_t *seq)
{
    uint64_t a = 0, c = 0;
    size_t i = 0, start;

    if (len == 0 || len >= STREAM_ID_MAX)
        return -1;
    for (start = i; i < len && id[i] >= '0' && id[i] <= '9'; i++)
        a = a * 10 + (uint64_t)(id[i] - '0');
    if (i == start || i == len || id[i] != '-' || i - start > 20)
        return -1;
    for (start = ++i; i < len && id[i] >= '0' && id[i] <= '9'; i++)
        c = c * 10 + (uint64_t)(id[i] - '0');
    if (i == start || i != len || i - start > 20)
        return -1;
    *ms = a;
    *seq = c;
    return 0;
}

struct stream_entry *
batch_add(struct batch *b, const char *id, size_t idlen,
          const redisReply *fields)
{
    struct stream_entry *e;
    struct batch_item *it;
    size_t npairs = fields->elements / 2;
    uint64_t ms, seq;

    if (stream_id_parse(id, idlen, &ms, &seq) < 0)
        return NULL;
    if (b->n == b->cap) {
        size_t cap = b->cap;
        if (grow(&b->entries, &cap, b->n + 1, sizeof(*b->entries)) < 0)
            return NULL;
        cap = b->cap;
        if (grow(&b->items, &cap, b->n + 1, sizeof(*b->items)) < 0)
            return NULL;
        b->cap = cap;
    }
    if (grow(&b->fields, &b->fields_cap, b->nfields + npairs,
             sizeof(*b->fields)) < 0)
        return NULL;

    e = &b->entries[b->n];
    it = &b->items[b->n];
    memset(e, 0, sizeof(*e));
    memcpy(e->id, id, idlen);
    e->id[idlen] = '\0';
    e->id_ms = ms;
    e->id_seq = seq;
    it->fate = ENTRY_READ;
    it->field_start = b->nfields;
    it->reason_off = 0;
    for (size_t i = 0; i < npairs; i++) {
        const redisReply *k = fields->element[2 * i];
        const redisReply *v = fields->element[2 * i + 1];
        struct stream_field *f = &b->fields[b->nfields];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        f->name = k->str;
        f->name_len = k->len;
        f->value = v->str;
        f->value_len = v->len;
        b->nfields++;
    }
    e->nfields = b->nfields - it->field_start;
    /* the ordering key: a requeued dead letter keeps its original place
     * (orig_id, an entry ID); a field that is not an ID is ignored */
    e->ord_ms = ms;
    e->ord_seq = seq;
    for (size_t i = it->field_start; i < b->nfields; i++) {
        const struct stream_field *f = &b->fields[i];
        uint64_t oms, oseq;
        if (f->name_len == 7 && memcmp(f->name, "orig_id", 7) == 0 &&
            stream_id_parse(f->value, f->value_len, &oms, &oseq) == 0) {
            e->ord_ms = oms;
            e->ord_seq = oseq;
        }
    }
    b->n++;
    return e;
}

int
batch_add_gone(struct batch *b, const char *id, size_t idlen)
{
    if (idlen == 0 || idlen >= STREAM_ID_MAX)
        return 0; /* not an ID: nothing Redis could ack either */
    if (grow(&b->gone, &b->gone_cap, b->ngone + 1, sizeof(*b->gone)) < 0)
        return -1;
    memcpy(b->gone[b->ngone], id, idlen);
    b->gone[b->ngone][idlen] = '\0';
    b->ngone++;
    return 0;
}

void
batch_seal(struct batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        b->entries[i].fields = b->fields + b->items[i].field_start;
}

void
batch_set_dead(struct batch *b, size_t i, const char *reason)
{
    size_t len = strlen(reason) + 1;

    b->items[i].fate = ENTRY_DEAD;
    if (grow(&b->reasons, &b->reasons_cap, b->reasons_len + len + 1, 1) < 0) {
        b->items[i].reason_off = SIZE_MAX;
        return;
    }
    if (b->reasons_len == 0)
        b->reasons[b->reasons_len++] = '\0'; /* offset 0 = no reason */
    memcpy(b->reasons + b->reasons_len, reason, len);
    b->items[i].reason_off = b->reasons_len;
    b->reasons_len += len;
}

const char *
batch_reason(const struct batch *b, size_t i)
{
    size_t off = b->items[i].reason_off;

    if (off == SIZE_MAX || b->reasons == NULL)
        return "out of memory while recording the reason";
    return b->reasons + off;
}

size_t
batch_count(const struct batch *b, enum entry_fate fate)
{
    size_t c = 0;

    for (size_t i = 0; i < b->n; i++)
        c += b->items[i].fate == fate;
    return c;
}
