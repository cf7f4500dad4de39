/*
 * gen.c: sluice-gen, a reproducible generator of firehose-like events.
 *
 * It writes N stream entries in the format the old readers produced
 *
 *   XADD key MAXLEN ~ 500000 * type <commit|identity|account> data <json>
 *        seq <relay seq>
 *
 * with the mix of the real network (about 70 % likes, 11 % posts, 10 %
 * reposts, then follows, blocks, deletes, profile updates, identity and
 * account events, and a few records of other collections). Likes, reposts,
 * replies and quotes point at posts written earlier in the same run;
 * deletes remove likes, posts and follows of the run. A small share of the
 * records has the snake_case keys of the Python reader (created_at,
 * py_type, {"link": cid}), some createdAt values carry offsets, a few none.
 *
 * Everything is drawn from a private PRNG (splitmix64) seeded by -s, and
 * the clock of the events is simulated, so the same seed gives the same
 * entries byte for byte (except with --rate, where the clock starts at the
 * wall-clock time so that latency figures mean something).
 *
 * XADDs are pipelined (up to 1,000 in flight). With --format jetstream the
 * events are written as Jetstream v1 JSON lines to stdout instead.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shared/exitcode.h"
#include "shared/redis_conn.h"

#define ACTORS      5000
#define POST_RING   65536
#define DEL_POOL    65536
#define LIST_POOL   1024
#define PIPELINE    1000
#define BASE_TIME_S 1783175880LL /* 2026-07-04T14:38:00Z */

enum kind {
    K_LIKE,
    K_POST,
    K_REPOST,
    K_FOLLOW,
    K_BLOCK,
    K_DELETE,
    K_PROFILE,
    K_IDENTITY,
    K_ACCOUNT,
    K_OTHER,
    K_NKINDS
};

static const char *const kind_names[K_NKINDS] = {
    "like",   "post",    "repost",   "follow",  "block",
    "delete", "profile", "identity", "account", "other"};

/* Shares in 1/10000 of the events, in the order of enum kind. */
static const unsigned kind_share[K_NKINDS] = {7000, 1100, 1000, 400, 100,
                                              200,  60,   50,   30,  60};

/* A growable byte buffer; out of memory is fatal for this tool. */
struct buf {
    char *p;
    size_t len, cap;
};

struct post_ref {
    uint32_t actor;
    char rkey[14];
    char cid[60];
    uint32_t root_actor; /* == actor and same rkey for a thread root */
    char root_rkey[14];
    char root_cid[60];
};

struct rec_ref {
    uint32_t actor;
    uint8_t coll; /* 0 like, 1 post, 2 follow */
    char rkey[14];
};

struct counts {
    uint64_t kind[K_NKINDS];
    uint64_t replies, quotes, images, external, facets, snake, no_created,
        offset_created, del_like, del_post, del_follow;
};

struct gen {
    uint64_t rng;
    int64_t clock_us; /* simulated time of the current event */
    uint64_t seq;     /* relay sequence number */
    char dids[ACTORS][33];
    char handles[ACTORS][40];
    uint8_t has_profile[ACTORS];
    struct post_ref *posts;
    size_t nposts; /* total written; the ring keeps the last POST_RING */
    struct rec_ref *dels;
    size_t ndels;
    struct rec_ref lists[LIST_POOL];
    size_t nlists;
    int snake; /* the current record uses the Python reader's keys */
    struct counts c;
};

static volatile sig_atomic_t stop_requested;

static void
on_stop(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void
die(int code, const char *fmt, ...)
{
    va_list ap;

    fputs("sluice-gen: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(code);
}

/* ---- PRNG ---------------------------------------------------------- */

static uint64_t
rnd(struct gen *g)
{
    uint64_t z = (g->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, n); n > 0. */
static uint32_t
rnd_below(struct gen *g, uint32_t n)
{
    return (uint32_t)(((rnd(g) >> 32) * (uint64_t)n) >> 32);
}

static double
rnd_unit(struct gen *g)
{
    return (double)(rnd(g) >> 11) * (1.0 / 9007199254740992.0);
}

/* 1 with probability per10000 / 10000. */
static int
chance(struct gen *g, unsigned per10000)
{
    return rnd_below(g, 10000) < per10000;
}

/* A skewed index in [0, n): small values (popular actors) come first. */
static uint32_t
rnd_skewed(struct gen *g, uint32_t n)
{
    double u = rnd_unit(g);
    uint32_t i = (uint32_t)(u * u * u * n);
    return i < n ? i : n - 1;
}

/* ---- buffer -------------------------------------------------------- */

static void
buf_reserve(struct buf *b, size_t more)
{
    if (b->len + more + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL)
        die(EXIT_SOFTWARE, "out of memory");
    b->p = p;
    b->cap = cap;
}

static void
buf_add(struct buf *b, const char *s, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void
buf_puts(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static void __attribute__((format(printf, 2, 3)))
buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        die(EXIT_SOFTWARE, "vsnprintf failed");
    buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Append s as a JSON string (quotes included), escaping what JSON needs. */
static void
buf_json_str(struct buf *b, const char *s)
{
    buf_add(b, "\"", 1);
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            buf_add(b, e, 2);
        } else if (ch == '\n') {
            buf_add(b, "\\n", 2);
        } else if (ch < 0x20) {
            buf_printf(b, "\\u%04x", ch);
        } else {
            buf_add(b, (const char *)&ch, 1);
        }
    }
    buf_add(b, "\"", 1);
}

/* Append "key": with the key spelled as the current reader would. */
static void
buf_key(struct gen *g, struct buf *b, const char *camel, const char *snake)
{
    buf_json_str(b, g->snake && snake != NULL ? snake : camel);
    buf_add(b, ":", 1);
}

/* ---- identifiers ------------------------------------------------------ */

static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";
static const char b32sort[] = "234567abcdefghijklmnopqrstuvwxyz";

static void
rnd_b32(struct gen *g, char *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = b32[rnd(g) & 31];
    out[n] = '\0';
}

/* A CID of a dag-cbor record ("bafyrei" + 52) or of a blob ("bafkrei"). */
static void
make_cid(struct gen *g, char out[60], int blob)
{
    memcpy(out, blob ? "bafkrei" : "bafyrei", 7);
    rnd_b32(g, out + 7, 52);
}

/* A record key: a TID from a time in microseconds and a clock id. */
static void
make_tid(struct gen *g, char out[14], int64_t us)
{
    uint64_t v = ((uint64_t)us << 10) | rnd_below(g, 1024);
    v &= 0x7fffffffffffffffULL;
    for (int i = 0; i < 13; i++)
        out[i] = b32sort[(v >> (60 - 5 * i)) & 31];
    out[13] = '\0';
}

static void
format_iso(char *out, size_t len, int64_t us, int offset_min)
{
    time_t secs;
    struct tm tm;
    int64_t local = us + (int64_t)offset_min * 60000000LL;
    char base[24];

    secs = (time_t)(local / 1000000);
    gmtime_r(&secs, &tm);
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    offset_min %= 24 * 60;
    if (offset_min == 0)
        snprintf(out, len, "%s.%03dZ", base, (int)((local / 1000) % 1000));
    else
        snprintf(out, len, "%s.%03d%c%02d:%02d", base,
                 (int)((local / 1000) % 1000), offset_min < 0 ? '-' : '+',
                 abs(offset_min) / 60, abs(offset_min) % 60);
}

/* ---- words ------------------------------------------------------------ */

static const char *const words[] = {
    "the",      "a",       "today",  "really", "new",     "just",    "love",
    "this",     "morning", "coffee", "people", "think",   "why",     "weekend",
    "finally",  "read",    "great",  "thread", "music",   "art",     "photo",
    "city",     "rain",    "summer", "work",   "code",    "release", "bug",
    "election", "game",    "team",   "won",    "lost",    "cat",     "dog",
    "garden",   "book",    "movie",  "sky",    "friends", "walk",    "train",
    "late",     "again",   "maybe",  "never",  "always",  "here",    "there",
    "what",     "about",   "feels",  "like",   "so",      "good",    "bad",
    "news",     "check",   "out",    "my"};

static const char *const foreign[] = {
    "待って天幕のジャードゥーガル観ようと思ってたのに",
    "今日はいい天気ですね",
    "Heute ist ein schöner Tag für einen Spaziergang",
    "Bom dia a todos, café pronto ☕",
    "오늘 날씨 정말 좋네요",
    "Ça fait plaisir de vous lire 😊",
    "¿Alguien más viendo el partido?",
    "Ik heb zin in het weekend 🎉"};

static const char *const foreign_lang[] = {"ja", "ja", "de", "pt",
                                           "ko", "fr", "es", "nl"};

static const char *const tags[] = {"art",      "photography", "news",
                                   "music",    "bookSky",     "gaming",
                                   "caturday", "indieDev"};

/* ---- record pieces ------------------------------------------------------ */

static void
uri_of(struct gen *g, struct buf *b, uint32_t actor, const char *coll,
       const char *rkey)
{
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "at://%s/%s/%s", g->dids[actor], coll, rkey);
    buf_json_str(b, tmp);
}

/* {"cid": ..., "uri": ...} of a post. */
static void
strong_ref(struct gen *g, struct buf *b, uint32_t actor, const char *rkey,
           const char *cid)
{
    buf_puts(b, "{\"cid\":");
    buf_json_str(b, cid);
    buf_puts(b, ",\"uri\":");
    uri_of(g, b, actor, "app.bsky.feed.post", rkey);
    buf_puts(b, "}");
}

static void
type_field(struct gen *g, struct buf *b, const char *nsid)
{
    buf_key(g, b, "$type", "py_type");
    buf_json_str(b, nsid);
}

/* A blob: {"$type":"blob","ref":{"$link":cid},...}, or one of the other
 * two forms of the ref for the Python reader. */
static void
blob(struct gen *g, struct buf *b, const char *mime, unsigned size)
{
    char cid[60];

    make_cid(g, cid, 1);
    buf_puts(b, "{");
    type_field(g, b, "blob");
    buf_puts(b, ",");
    buf_key(g, b, "mimeType", "mime_type");
    buf_json_str(b, mime);
    buf_puts(b, ",\"ref\":");
    if (!g->snake) {
        buf_puts(b, "{\"$link\":");
        buf_json_str(b, cid);
        buf_puts(b, "}");
    } else if (chance(g, 5000)) {
        buf_puts(b, "{\"link\":");
        buf_json_str(b, cid);
        buf_puts(b, "}");
    } else {
        buf_json_str(b, cid);
    }
    buf_printf(b, ",\"size\":%u}", size);
}

/* "createdAt": usually near the event time in UTC, sometimes with an
 * offset, rarely absent. Appends a trailing comma when present. */
static void
created_at(struct gen *g, struct buf *b, int64_t us)
{
    char iso[64];
    int off = 0;

    if (chance(g, 100)) {
        g->c.no_created++;
        return;
    }
    if (chance(g, 400)) {
        static const int offs[] = {120, 60, -300, -420, 330, 540, -180};
        off = offs[rnd_below(g, 7)];
        g->c.offset_created++;
    }
    format_iso(iso, sizeof(iso), us, off);
    buf_key(g, b, "createdAt", "created_at");
    buf_json_str(b, iso);
    buf_puts(b, ",");
}

/* A post from the run, popular and recent ones more often; NULL when the
 * run has none yet. */
static const struct post_ref *
pick_post(struct gen *g)
{
    size_t have = g->nposts < POST_RING ? g->nposts : POST_RING;
    if (have == 0)
        return NULL;
    uint32_t back = chance(g, 6000)
                        ? rnd_skewed(g, have < 2000 ? (uint32_t)have : 2000)
                        : rnd_skewed(g, (uint32_t)have);
    return &g->posts[(g->nposts - 1 - back) % POST_RING];
}

static void
remember_delete(struct gen *g, uint32_t actor, int coll, const char *rkey)
{
    struct rec_ref *r;

    if (g->ndels < DEL_POOL)
        r = &g->dels[g->ndels++];
    else
        r = &g->dels[rnd_below(g, DEL_POOL)];
    r->actor = actor;
    r->coll = (uint8_t)coll;
    memcpy(r->rkey, rkey, 14);
}

/* ---- events ------------------------------------------------------------ */

struct event {
    enum kind kind;
    const char *type; /* commit, identity, account */
    uint32_t actor;
    const char *action; /* create, update, delete */
    const char *coll;
    char rkey[16];
    char cid[60];
    struct buf rec; /* the record (commit create/update) */
    /* identity/account */
    int handle_null;
    int active;
    const char *status;
};

/* The text of a post into text, its facets and langs into rec (with a
 * trailing comma each). */
static void
text_and_facets(struct gen *g, struct buf *rec, struct buf *text_out)
{
    struct buf text = {0}, facets = {0};
    int nwords = 3 + (int)rnd_below(g, 25), nfacets = 0, lang = -1;

    if (chance(g, 2000)) {
        lang = (int)rnd_below(g, 8);
        buf_puts(&text, foreign[lang]);
    }
    for (int i = 0; i < nwords; i++) {
        if (text.len > 0)
            buf_puts(&text, " ");
        unsigned r = rnd_below(g, 1000);
        size_t start = text.len;
        if (r < 12) {
            uint32_t who = rnd_skewed(g, ACTORS);
            buf_printf(&text, "@%s", g->handles[who]);
            buf_printf(&facets,
                       "%s{\"features\":[{\"%s\":\"app.bsky.richtext.facet#"
                       "mention\",\"did\":\"%s\"}],\"index\":{\"%s\":%zu,"
                       "\"%s\":%zu}}",
                       nfacets++ ? "," : "", g->snake ? "py_type" : "$type",
                       g->dids[who], g->snake ? "byte_end" : "byteEnd",
                       text.len, g->snake ? "byte_start" : "byteStart", start);
        } else if (r < 20) {
            char path[16];
            rnd_b32(g, path, 8);
            buf_printf(&text, "https://example.com/%s", path);
            buf_printf(&facets,
                       "%s{\"features\":[{\"%s\":\"app.bsky.richtext.facet#"
                       "link\",\"uri\":\"https://example.com/%s\"}],"
                       "\"index\":{\"%s\":%zu,\"%s\":%zu}}",
                       nfacets++ ? "," : "", g->snake ? "py_type" : "$type",
                       path, g->snake ? "byte_end" : "byteEnd", text.len,
                       g->snake ? "byte_start" : "byteStart", start);
        } else if (r < 30) {
            const char *t = tags[rnd_below(g, 8)];
            buf_printf(&text, "#%s", t);
            buf_printf(&facets,
                       "%s{\"features\":[{\"%s\":\"app.bsky.richtext.facet#"
                       "tag\",\"tag\":\"%s\"}],\"index\":{\"%s\":%zu,"
                       "\"%s\":%zu}}",
                       nfacets++ ? "," : "", g->snake ? "py_type" : "$type", t,
                       g->snake ? "byte_end" : "byteEnd", text.len,
                       g->snake ? "byte_start" : "byteStart", start);
        } else {
            buf_puts(&text, words[rnd_below(g, 60)]);
        }
    }
    if (nfacets > 0) {
        g->c.facets++;
        buf_puts(rec, "\"facets\":[");
        buf_add(rec, facets.p, facets.len);
        buf_puts(rec, "],");
    }
    /* langs, then the text last (the key order of the recordings) */
    if (!chance(g, 800)) {
        buf_puts(rec, "\"langs\":[");
        buf_json_str(rec, lang >= 0 ? foreign_lang[lang] : "en");
        if (chance(g, 500))
            buf_puts(rec, ",\"en\"");
        buf_puts(rec, "],");
    }
    *text_out = text;
    free(facets.p);
}

static void
embed_images(struct gen *g, struct buf *b, int nimg)
{
    buf_puts(b, "{");
    type_field(g, b, "app.bsky.embed.images");
    buf_puts(b, ",\"images\":[");
    for (int i = 0; i < nimg; i++) {
        unsigned w = 600 + rnd_below(g, 1400), h = 400 + rnd_below(g, 1400);
        buf_printf(b, "%s{\"alt\":", i ? "," : "");
        buf_json_str(b, chance(g, 5000) ? "" : "a photo of the sky");
        buf_puts(b, ",");
        buf_key(g, b, "aspectRatio", "aspect_ratio");
        buf_printf(b, "{\"height\":%u,\"width\":%u},\"image\":", h, w);
        blob(g, b, "image/jpeg", 50000 + rnd_below(g, 900000));
        buf_puts(b, "}");
    }
    buf_puts(b, "]}");
}

static void
embed_record(struct gen *g, struct buf *b, const struct post_ref *q)
{
    buf_puts(b, "{");
    type_field(g, b, "app.bsky.embed.record");
    buf_puts(b, ",\"record\":");
    strong_ref(g, b, q->actor, q->rkey, q->cid);
    buf_puts(b, "}");
}

static void
gen_post(struct gen *g, struct event *ev, int64_t created)
{
    struct buf *r = &ev->rec;
    const struct post_ref *parent = NULL, *quoted = NULL;
    struct buf text = {0};
    struct post_ref pr;

    ev->coll = "app.bsky.feed.post";
    buf_puts(r, "{");
    type_field(g, r, "app.bsky.feed.post");
    buf_puts(r, ",");
    created_at(g, r, created);
    unsigned e = rnd_below(g, 1000);
    if (e < 300) {
        /* no embed */
    } else if (e < 420) {
        buf_puts(r, "\"embed\":");
        embed_images(g, r, 1 + (int)rnd_below(g, 4));
        buf_puts(r, ",");
        g->c.images++;
    } else if (e < 500) {
        buf_puts(r, "\"embed\":{");
        type_field(g, r, "app.bsky.embed.external");
        buf_puts(r, ",\"external\":{\"description\":\"A video about the "
                    "weekend\",");
        if (chance(g, 7000)) {
            buf_puts(r, "\"thumb\":");
            blob(g, r, "image/jpeg", 20000 + rnd_below(g, 200000));
            buf_puts(r, ",");
        }
        buf_puts(r, "\"title\":\"Weekend news\",\"uri\":\"https://"
                    "news.example.org/article/");
        buf_printf(r, "%u\"}},", rnd_below(g, 1000000));
        g->c.external++;
    } else if (e < 560 && (quoted = pick_post(g)) != NULL) {
        buf_puts(r, "\"embed\":");
        embed_record(g, r, quoted);
        buf_puts(r, ",");
    } else if (e < 580 && (quoted = pick_post(g)) != NULL) {
        buf_puts(r, "\"embed\":{");
        type_field(g, r, "app.bsky.embed.recordWithMedia");
        buf_puts(r, ",\"media\":");
        embed_images(g, r, 1);
        buf_puts(r, ",\"record\":");
        embed_record(g, r, quoted);
        buf_puts(r, "},");
    }
    if (quoted != NULL)
        g->c.quotes++;

    text_and_facets(g, r, &text);

    if (chance(g, 3500) && (parent = pick_post(g)) != NULL) {
        buf_puts(r, "\"reply\":{\"parent\":");
        strong_ref(g, r, parent->actor, parent->rkey, parent->cid);
        buf_puts(r, ",\"root\":");
        strong_ref(g, r, parent->root_actor, parent->root_rkey,
                   parent->root_cid);
        buf_puts(r, "},");
        g->c.replies++;
    }
    if (chance(g, 300))
        buf_puts(r, "\"tags\":[\"sluice\"],");
    buf_puts(r, "\"text\":");
    buf_json_str(r, text.p);
    buf_puts(r, "}");
    free(text.p);

    pr.actor = ev->actor;
    memcpy(pr.rkey, ev->rkey, 14);
    memcpy(pr.cid, ev->cid, 60);
    if (parent != NULL) {
        pr.root_actor = parent->root_actor;
        memcpy(pr.root_rkey, parent->root_rkey, 14);
        memcpy(pr.root_cid, parent->root_cid, 60);
    } else {
        pr.root_actor = ev->actor;
        memcpy(pr.root_rkey, ev->rkey, 14);
        memcpy(pr.root_cid, ev->cid, 60);
    }
    g->posts[g->nposts % POST_RING] = pr;
    g->nposts++;
    remember_delete(g, ev->actor, 1, ev->rkey);
}

static void
gen_subject_record(struct gen *g, struct event *ev, int64_t created,
                   const char *nsid, const struct post_ref *p)
{
    struct buf *r = &ev->rec;

    ev->coll = nsid;
    buf_puts(r, "{");
    type_field(g, r, nsid);
    buf_puts(r, ",");
    created_at(g, r, created);
    buf_puts(r, "\"subject\":");
    strong_ref(g, r, p->actor, p->rkey, p->cid);
    if (chance(g, 1500)) {
        const struct post_ref *v = pick_post(g);
        char rk[14];
        make_tid(g, rk, created - 600000000LL);
        buf_puts(r, ",\"via\":{\"cid\":");
        buf_json_str(r, v->cid);
        buf_puts(r, ",\"uri\":");
        uri_of(g, r, v->actor, "app.bsky.feed.repost", rk);
        buf_puts(r, "}");
    }
    buf_puts(r, "}");
}

static void
gen_did_subject(struct gen *g, struct event *ev, int64_t created,
                const char *nsid)
{
    struct buf *r = &ev->rec;
    uint32_t who = rnd_skewed(g, ACTORS);

    if (who == ev->actor)
        who = (who + 1) % ACTORS;
    ev->coll = nsid;
    buf_puts(r, "{");
    type_field(g, r, nsid);
    buf_puts(r, ",");
    created_at(g, r, created);
    buf_puts(r, "\"subject\":");
    buf_json_str(r, g->dids[who]);
    buf_puts(r, "}");
}

static void
gen_profile(struct gen *g, struct event *ev, int64_t created)
{
    struct buf *r = &ev->rec;
    char name[64];

    ev->coll = "app.bsky.actor.profile";
    strcpy(ev->rkey, "self");
    ev->action = g->has_profile[ev->actor] ? "update" : "create";
    g->has_profile[ev->actor] = 1;
    buf_puts(r, "{");
    type_field(g, r, "app.bsky.actor.profile");
    buf_puts(r, ",\"avatar\":");
    blob(g, r, "image/jpeg", 30000 + rnd_below(g, 300000));
    if (chance(g, 6000)) {
        buf_puts(r, ",\"banner\":");
        blob(g, r, "image/jpeg", 100000 + rnd_below(g, 900000));
    }
    buf_puts(r, ",");
    if (chance(g, 5000))
        created_at(g, r, created);
    buf_puts(r, "\"description\":");
    buf_json_str(r, chance(g, 2000) ? ""
                                    : "posting about art, code and "
                                      "cats \xe2\x9c\xa8\nhe/him");
    buf_puts(r, ",");
    buf_key(g, r, "displayName", "display_name");
    snprintf(name, sizeof(name), "%s %u", words[rnd_below(g, 60)],
             rnd_below(g, 1000));
    buf_json_str(r, name);
    buf_puts(r, "}");
}

/* Records of the other collections: threadgate, postgate, list, listitem
 * and a collection outside app.bsky. */
static void
gen_other(struct gen *g, struct event *ev, int64_t created)
{
    struct buf *r = &ev->rec;
    const struct post_ref *p = pick_post(g);
    unsigned which = rnd_below(g, 5);

    if ((which == 0 || which == 1) && p == NULL)
        which = 2;
    if (which == 3 && g->nlists == 0)
        which = 2;
    buf_puts(r, "{");
    switch (which) {
    case 0:
    case 1:
        ev->actor = p->actor;
        memcpy(ev->rkey, p->rkey, 14);
        ev->coll =
            which == 0 ? "app.bsky.feed.threadgate" : "app.bsky.feed.postgate";
        type_field(g, r, ev->coll);
        buf_puts(r, ",");
        if (which == 0)
            buf_puts(r, "\"allow\":[{\"$type\":\"app.bsky.feed.threadgate#"
                        "mentionRule\"},{\"$type\":\"app.bsky.feed."
                        "threadgate#followingRule\"}],");
        created_at(g, r, created);
        if (which == 1)
            buf_puts(r, "\"embeddingRules\":[{\"$type\":\"app.bsky.feed."
                        "postgate#disableRule\"}],");
        buf_puts(r, "\"post\":");
        uri_of(g, r, p->actor, "app.bsky.feed.post", p->rkey);
        break;
    case 2:
        ev->coll = "app.bsky.graph.list";
        type_field(g, r, ev->coll);
        buf_puts(r, ",");
        created_at(g, r, created);
        buf_puts(r, "\"description\":\"people I read\",\"name\":\"friends\","
                    "\"purpose\":\"app.bsky.graph.defs#curatelist\"");
        if (g->nlists < LIST_POOL) {
            struct rec_ref *l = &g->lists[g->nlists++];
            l->actor = ev->actor;
            memcpy(l->rkey, ev->rkey, 14);
        }
        break;
    case 3: {
        const struct rec_ref *l = &g->lists[rnd_below(g, (uint32_t)g->nlists)];
        ev->actor = l->actor;
        ev->coll = "app.bsky.graph.listitem";
        type_field(g, r, ev->coll);
        buf_puts(r, ",");
        created_at(g, r, created);
        buf_puts(r, "\"list\":");
        uri_of(g, r, l->actor, "app.bsky.graph.list", l->rkey);
        buf_puts(r, ",\"subject\":");
        buf_json_str(r, g->dids[rnd_skewed(g, ACTORS)]);
        break;
    }
    default:
        ev->coll = "fm.teal.alpha.feed.play";
        type_field(g, r, ev->coll);
        buf_puts(r, ",\"artists\":[{\"artistName\":\"Dianna Lopez\"}],");
        created_at(g, r, created);
        buf_puts(r, "\"trackName\":\"Sacred Sands\"");
        break;
    }
    buf_puts(r, "}");
}

/* Draw the next event into ev (its buffer is reset first). */
static void
next_event(struct gen *g, struct event *ev)
{
    unsigned r = rnd_below(g, 10000), acc = 0;
    enum kind k = K_LIKE;
    int64_t created;

    for (int i = 0; i < K_NKINDS; i++) {
        acc += kind_share[i];
        if (r < acc) {
            k = (enum kind)i;
            break;
        }
    }
    /* likes and reposts need a post of the run: the very first event is
     * a post */
    if (g->nposts == 0 && (k == K_LIKE || k == K_REPOST))
        k = K_POST;
    if (k == K_DELETE && g->ndels == 0)
        k = K_POST;

    g->clock_us += 200 + rnd_below(g, 600);
    g->seq += 1 + rnd_below(g, 3);
    created = g->clock_us - (int64_t)rnd_below(g, 3000000);

    ev->rec.len = 0;
    if (ev->rec.p != NULL)
        ev->rec.p[0] = '\0';
    ev->kind = k;
    ev->type = "commit";
    ev->action = "create";
    ev->actor = rnd_skewed(g, ACTORS);
    make_tid(g, ev->rkey, created);
    make_cid(g, ev->cid, 0);
    g->snake = chance(g, 300);
    if (k == K_IDENTITY || k == K_ACCOUNT || k == K_DELETE)
        g->snake = 0;
    if (g->snake)
        g->c.snake++;

    switch (k) {
    case K_LIKE:
        gen_subject_record(g, ev, created, "app.bsky.feed.like", pick_post(g));
        remember_delete(g, ev->actor, 0, ev->rkey);
        break;
    case K_REPOST:
        gen_subject_record(g, ev, created, "app.bsky.feed.repost",
                           pick_post(g));
        break;
    case K_POST:
        gen_post(g, ev, created);
        break;
    case K_FOLLOW:
        gen_did_subject(g, ev, created, "app.bsky.graph.follow");
        remember_delete(g, ev->actor, 2, ev->rkey);
        break;
    case K_BLOCK:
        gen_did_subject(g, ev, created, "app.bsky.graph.block");
        break;
    case K_PROFILE:
        gen_profile(g, ev, created);
        break;
    case K_OTHER:
        gen_other(g, ev, created);
        break;
    case K_DELETE: {
        size_t i = rnd_below(g, (uint32_t)g->ndels);
        struct rec_ref d = g->dels[i];
        static const char *const colls[] = {"app.bsky.feed.like",
                                            "app.bsky.feed.post",
                                            "app.bsky.graph.follow"};
        g->dels[i] = g->dels[--g->ndels];
        ev->action = "delete";
        ev->actor = d.actor;
        ev->coll = colls[d.coll];
        memcpy(ev->rkey, d.rkey, 14);
        if (d.coll == 0)
            g->c.del_like++;
        else if (d.coll == 1)
            g->c.del_post++;
        else
            g->c.del_follow++;
        break;
    }
    case K_IDENTITY:
        ev->type = "identity";
        ev->handle_null = chance(g, 1000);
        break;
    case K_ACCOUNT: {
        static const char *const st[] = {"deactivated", "takendown", "deleted",
                                         "suspended"};
        ev->type = "account";
        ev->active = chance(g, 5000);
        ev->status = ev->active ? NULL : st[rnd_below(g, 4)];
        break;
    }
    default:
        break;
    }
    g->c.kind[k]++;
}

/* The stream entry's data field. */
static void
stream_data(struct gen *g, const struct event *ev, struct buf *out)
{
    char iso[64], rev[14];

    out->len = 0;
    format_iso(iso, sizeof(iso), g->clock_us, 0);
    if (strcmp(ev->type, "identity") == 0) {
        buf_puts(out, "{\"did\":");
        buf_json_str(out, g->dids[ev->actor]);
        buf_puts(out, ",\"handle\":");
        if (ev->handle_null)
            buf_puts(out, "null");
        else
            buf_json_str(out, g->handles[ev->actor]);
        buf_printf(out, ",\"seq\":%" PRIu64 ",\"time\":\"%s\"}", g->seq, iso);
        return;
    }
    if (strcmp(ev->type, "account") == 0) {
        buf_puts(out, "{\"did\":");
        buf_json_str(out, g->dids[ev->actor]);
        buf_printf(out, ",\"active\":%s", ev->active ? "true" : "false");
        if (ev->status != NULL)
            buf_printf(out, ",\"status\":\"%s\"", ev->status);
        buf_printf(out, ",\"seq\":%" PRIu64 ",\"time\":\"%s\"}", g->seq, iso);
        return;
    }
    make_tid(g, rev, g->clock_us);
    buf_puts(out, "{\"repo\":");
    buf_json_str(out, g->dids[ev->actor]);
    buf_printf(out, ",\"ops\":[{\"action\":\"%s\",\"path\":\"%s/%s\"",
               ev->action, ev->coll, ev->rkey);
    if (strcmp(ev->action, "delete") != 0) {
        buf_puts(out, ",\"cid\":");
        buf_json_str(out, ev->cid);
        buf_puts(out, ",\"record\":");
        buf_add(out, ev->rec.p, ev->rec.len);
    }
    buf_printf(out, "}],\"rev\":\"%s\",\"time\":\"%s\"}", rev, iso);
}

/* The event as one Jetstream v1 line (newline included). */
static void
jetstream_line(struct gen *g, const struct event *ev, struct buf *out)
{
    char iso[64], rev[14];

    out->len = 0;
    format_iso(iso, sizeof(iso), g->clock_us, 0);
    buf_puts(out, "{\"did\":");
    buf_json_str(out, g->dids[ev->actor]);
    buf_printf(out, ",\"time_us\":%" PRId64 ",\"kind\":\"%s\",", g->clock_us,
               ev->type);
    if (strcmp(ev->type, "identity") == 0) {
        buf_puts(out, "\"identity\":{\"did\":");
        buf_json_str(out, g->dids[ev->actor]);
        if (!ev->handle_null) {
            buf_puts(out, ",\"handle\":");
            buf_json_str(out, g->handles[ev->actor]);
        }
        buf_printf(out, ",\"seq\":%" PRIu64 ",\"time\":\"%s\"}}\n", g->seq,
                   iso);
        return;
    }
    if (strcmp(ev->type, "account") == 0) {
        buf_printf(out, "\"account\":{\"active\":%s,\"did\":",
                   ev->active ? "true" : "false");
        buf_json_str(out, g->dids[ev->actor]);
        buf_printf(out, ",\"seq\":%" PRIu64, g->seq);
        if (ev->status != NULL)
            buf_printf(out, ",\"status\":\"%s\"", ev->status);
        buf_printf(out, ",\"time\":\"%s\"}}\n", iso);
        return;
    }
    make_tid(g, rev, g->clock_us);
    buf_printf(out,
               "\"commit\":{\"rev\":\"%s\",\"operation\":\"%s\","
               "\"collection\":\"%s\",\"rkey\":\"%s\"",
               rev, ev->action, ev->coll, ev->rkey);
    if (strcmp(ev->action, "delete") != 0) {
        buf_puts(out, ",\"record\":");
        buf_add(out, ev->rec.p, ev->rec.len);
        buf_puts(out, ",\"cid\":");
        buf_json_str(out, ev->cid);
    }
    buf_puts(out, "}}\n");
}

static void
init_actors(struct gen *g)
{
    static const char *const hosts[] = {"bsky.social", "bsky.social",
                                        "bsky.social", "example.com"};
    for (int i = 0; i < ACTORS; i++) {
        memcpy(g->dids[i], "did:plc:", 8);
        rnd_b32(g, g->dids[i] + 8, 24);
        snprintf(g->handles[i], sizeof(g->handles[i]), "%s%s%u.%s",
                 words[rnd_below(g, 60)], words[rnd_below(g, 60)],
                 rnd_below(g, 10000), hosts[rnd_below(g, 4)]);
    }
}

/* ---- output ------------------------------------------------------------ */

struct sender {
    struct redis_conn rc;
    const char *key;
    char maxlen[24];
    size_t inflight;
    uint64_t added;
};

/* Read the replies of everything queued. Exits on a fault. */
static void
sender_drain(struct sender *s)
{
    while (s->inflight > 0) {
        redisReply *r = redis_conn_reply(&s->rc);
        if (r == NULL)
            die(EXIT_TEMPFAIL, "redis: %s", s->rc.err);
        if (r->type == REDIS_REPLY_ERROR)
            die(EXIT_SOFTWARE, "XADD refused: %s", r->str);
        freeReplyObject(r);
        s->inflight--;
        s->added++;
    }
}

static void
sender_add(struct sender *s, const char *type, const struct buf *data,
           const char *seq)
{
    const char *argv[12];
    size_t argvlen[12];
    int argc = 0;

#define ARG(str, len)                                                          \
    do {                                                                       \
        argv[argc] = (str);                                                    \
        argvlen[argc++] = (len);                                               \
    } while (0)
    ARG("XADD", 4);
    ARG(s->key, strlen(s->key));
    if (s->maxlen[0] != '\0') {
        ARG("MAXLEN", 6);
        ARG("~", 1);
        ARG(s->maxlen, strlen(s->maxlen));
    }
    ARG("*", 1);
    ARG("type", 4);
    ARG(type, strlen(type));
    ARG("data", 4);
    ARG(data->p, data->len);
    ARG("seq", 3);
#undef ARG
    argv[argc] = seq;
    argvlen[argc++] = strlen(seq);
    if (redis_conn_append(&s->rc, argc, argv, argvlen) < 0)
        die(EXIT_TEMPFAIL, "redis: %s", s->rc.err);
    if (++s->inflight >= PIPELINE)
        sender_drain(s);
}

static int64_t
mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
usage(FILE *f)
{
    fputs(
        "usage: sluice-gen [-u REDIS_URL] [-k STREAM] [-n N] [-s SEED]\n"
        "                  [--rate EV_PER_S] [--maxlen N] [--format "
        "stream|jetstream] [-q]\n"
        "\n"
        "Write N firehose-like events with the mix of the real network\n"
        "(about 70% likes, 11% posts, 10% reposts, then follows, blocks,\n"
        "deletes, profiles, identity, account and other records) to a\n"
        "Redis stream, as XADD key MAXLEN ~ 500000 * type T data JSON seq S.\n"
        "The same seed gives the same entries.\n"
        "\n"
        "  -u, --url URL      Redis (default $REDIS_URL or\n"
        "                     redis://localhost:6379); unix:///path works\n"
        "  -k, --key STREAM   stream key (default $REDIS_STREAM_KEY or\n"
        "                     firehose:events)\n"
        "  -n, --count N      events to write (default 10000; 0 = until\n"
        "                     INT/TERM)\n"
        "  -s, --seed SEED    PRNG seed (default 1)\n"
        "  -r, --rate N       pace at N events/s (default: as fast as\n"
        "                     possible); the event clock then starts now\n"
        "  -m, --maxlen N     MAXLEN ~ N on each XADD (default 500000; 0 =\n"
        "                     no trimming)\n"
        "  -f, --format F     stream (default) or jetstream: Jetstream v1\n"
        "                     JSON lines on stdout, no Redis\n"
        "  -q, --quiet        no summary\n"
        "  -h, --help         this text\n"
        "\n"
        "At the end (or on INT/TERM) a summary of the counts per kind goes\n"
        "to stdout (stderr with --format jetstream).\n"
        "Exit: 0 done, 64 usage, 75 Redis unreachable or lost, 70 XADD\n"
        "refused.\n",
        f);
}

static void
print_summary(FILE *f, const struct gen *g, uint64_t n, double secs)
{
    fprintf(f, "sluice-gen: %" PRIu64 " events in %.2f s (%.0f/s)\n", n, secs,
            secs > 0 ? (double)n / secs : 0.0);
    for (int k = 0; k < K_NKINDS; k++)
        fprintf(f, "  %-9s %" PRIu64 "\n", kind_names[k], g->c.kind[k]);
    fprintf(f,
            "  posts: %" PRIu64 " replies, %" PRIu64 " quotes, %" PRIu64
            " with images, %" PRIu64 " external, %" PRIu64 " with facets\n",
            g->c.replies, g->c.quotes, g->c.images, g->c.external, g->c.facets);
    fprintf(f,
            "  deletes: %" PRIu64 " likes, %" PRIu64 " posts, %" PRIu64
            " follows\n",
            g->c.del_like, g->c.del_post, g->c.del_follow);
    fprintf(f,
            "  records: %" PRIu64 " snake_case, %" PRIu64
            " createdAt with offset, %" PRIu64 " without createdAt\n",
            g->c.snake, g->c.offset_created, g->c.no_created);
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"url", required_argument, NULL, 'u'},
        {"key", required_argument, NULL, 'k'},
        {"count", required_argument, NULL, 'n'},
        {"seed", required_argument, NULL, 's'},
        {"rate", required_argument, NULL, 'r'},
        {"maxlen", required_argument, NULL, 'm'},
        {"format", required_argument, NULL, 'f'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *url = getenv("REDIS_URL");
    const char *key = getenv("REDIS_STREAM_KEY");
    uint64_t count = 10000, seed = 1, maxlen = 500000, n;
    double rate = 0;
    int jetstream = 0, quiet = 0, ch;
    struct gen *g;
    struct event ev = {0};
    struct buf data = {0};
    struct sender s = {0};
    char *end;
    int64_t t0;

    if (url == NULL || *url == '\0')
        url = "redis://localhost:6379";
    if (key == NULL || *key == '\0')
        key = "firehose:events";
    while ((ch = getopt_long(argc, argv, "u:k:n:s:r:m:f:qh", opts, NULL)) !=
           -1) {
        switch (ch) {
        case 'u':
            url = optarg;
            break;
        case 'k':
            key = optarg;
            break;
        case 'n':
        case 's':
        case 'm': {
            unsigned long long v;
            errno = 0;
            v = strtoull(optarg, &end, 10);
            if (errno != 0 || *end != '\0' || *optarg == '\0' || *optarg == '-')
                die(EXIT_USAGE, "-%c: not a number: %s", ch, optarg);
            if (ch == 'n')
                count = v;
            else if (ch == 's')
                seed = v;
            else
                maxlen = v;
            break;
        }
        case 'r':
            rate = strtod(optarg, &end);
            if (*end != '\0' || !(rate > 0))
                die(EXIT_USAGE, "--rate: not a positive number: %s", optarg);
            break;
        case 'f':
            if (strcmp(optarg, "jetstream") == 0)
                jetstream = 1;
            else if (strcmp(optarg, "stream") != 0)
                die(EXIT_USAGE, "--format: stream or jetstream, not %s",
                    optarg);
            break;
        case 'q':
            quiet = 1;
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return EXIT_USAGE;
    }

    g = calloc(1, sizeof(*g));
    if (g == NULL ||
        (g->posts = calloc(POST_RING, sizeof(*g->posts))) == NULL ||
        (g->dels = calloc(DEL_POOL, sizeof(*g->dels))) == NULL)
        die(EXIT_SOFTWARE, "out of memory");
    g->rng = seed;
    init_actors(g);
    g->seq = 24000000000ULL + rnd_below(g, 1000000000);
    if (rate > 0) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        g->clock_us = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
    } else {
        g->clock_us = BASE_TIME_S * 1000000LL;
    }

    if (!jetstream) {
        struct redis_target t;
        char err[256];
        if (redis_url_parse(url, &t, err, sizeof(err)) < 0)
            die(EXIT_USAGE, "-u: %s", err);
        redis_conn_init(&s.rc, &t, 5000, 30000);
        if (redis_conn_connect(&s.rc) < 0)
            die(EXIT_TEMPFAIL, "redis: %s", s.rc.err);
        s.key = key;
        if (maxlen > 0)
            snprintf(s.maxlen, sizeof(s.maxlen), "%llu",
                     (unsigned long long)maxlen);
    }

    signal(SIGINT, on_stop);
    signal(SIGTERM, on_stop);
    signal(SIGPIPE, SIG_IGN);
    t0 = mono_us();
    for (n = 0; (count == 0 || n < count) && !stop_requested; n++) {
        char seq[24];
        if (rate > 0) {
            /* the pace: event n is due at t0 + n / rate */
            int64_t due = t0 + (int64_t)((double)n * 1e6 / rate);
            int64_t now = mono_us();
            if (due > now + 2000) {
                if (!jetstream)
                    sender_drain(&s);
                else
                    fflush(stdout);
                struct timespec ts = {0, (long)(due - now) * 1000};
                if (ts.tv_nsec >= 1000000000L) {
                    ts.tv_sec = ts.tv_nsec / 1000000000L;
                    ts.tv_nsec %= 1000000000L;
                }
                nanosleep(&ts, NULL);
                if (stop_requested)
                    break;
            }
        }
        next_event(g, &ev);
        if (jetstream) {
            jetstream_line(g, &ev, &data);
            if (fwrite(data.p, 1, data.len, stdout) != data.len)
                die(EXIT_SOFTWARE, "stdout: %s", strerror(errno));
        } else {
            stream_data(g, &ev, &data);
            snprintf(seq, sizeof(seq), "%" PRIu64, g->seq);
            sender_add(&s, ev.type, &data, seq);
        }
    }
    if (!jetstream) {
        sender_drain(&s);
        redis_conn_close(&s.rc);
    } else if (fflush(stdout) != 0) {
        die(EXIT_SOFTWARE, "stdout: %s", strerror(errno));
    }
    if (!quiet)
        print_summary(jetstream ? stderr : stdout, g, n,
                      (double)(mono_us() - t0) / 1e6);
    free(ev.rec.p);
    free(data.p);
    free(g->posts);
    free(g->dels);
    free(g);
    return EXIT_OK;
}
