/*
 * atproto_record.h: the AT Protocol facts the atproto sink checks and
 * normalizes, with no I/O: identifiers (DID, NSID, record key, at:// URI),
 * timestamps, the two key dialects of the old readers, blob references,
 * and what each record type must carry.
 *
 * Every function here is pure and can't fail on memory unless it says so;
 * unit tests cover them (tests/unit/test_atproto_record.c).
 */
#ifndef SLUICE_ATPROTO_RECORD_H
#define SLUICE_ATPROTO_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

/* Column widths of the appview schema (varchar(N)). */
#define ATP_URI_MAX 512
#define ATP_DID_MAX 255
#define ATP_CID_MAX 255

/* "YYYY-MM-DD HH:MM:SS.ffffff" and its NUL. */
#define ATP_TIME_LEN 27

/* 1 if s is a DID (did:method:id, the id's characters as the spec allows)
 * of at most ATP_DID_MAX bytes. */
int atp_did_valid(const char *s);

/* 1 if s[0..len) is an NSID: at least three dot-separated segments of
 * letters, digits and hyphens (the last one letters and digits only). */
int atp_nsid_valid(const char *s, size_t len);

/* 1 if s[0..len) is a record key: 1 to 512 of A-Z a-z 0-9 . - _ : ~,
 * neither "." nor "..". */
int atp_rkey_valid(const char *s, size_t len);

/* 1 if s is at://DID/NSID/RKEY of at most ATP_URI_MAX bytes. */
int atp_record_uri_valid(const char *s);

/*
 * Parse an RFC 3339 / ISO 8601 date-time ("2024-05-01T14:00:00.5+02:00",
 * 'Z' or an offset; a space for 'T'; no zone means UTC) and write it in
 * UTC as "YYYY-MM-DD HH:MM:SS.ffffff" into out (ATP_TIME_LEN bytes).
 * Returns 0, or -1 when s is not such a time or falls outside years
 * 1..9999 once converted (the caller falls back to another time).
 */
int atp_time_to_utc(const char *s, char *out);

/* Write the UTC time of ms milliseconds since the epoch into out
 * (ATP_TIME_LEN bytes). Can't fail. */
void atp_time_from_ms(uint64_t ms, char *out);

/*
 * 1 for the collections whose lexicons are Bluesky's own (app.bsky.*,
 * chat.bsky.*, com.atproto.*, tools.ozone.*): their field names are
 * camelCase by definition, so a snake_case key in them is the Python
 * reader's rendering and can be turned back.
 */
int atp_collection_is_bluesky(const char *collection);

/*
 * Bring a record tree to the form the Node.js reader and the appview use,
 * in place: "py_type" keys become "$type"; when bluesky_keys is set,
 * snake_case keys become camelCase (created_at -> createdAt); blob
 * references become {"$type": "blob", "ref": {"$link": CID}, ...}
 * whether they came as {"ref": {"link": CID}}, {"ref": CID}, or as a bare
 * CID string or {"$link": CID} where a blob belongs (avatar, banner,
 * thumb, image, video). Returns 0, or -1 when out of memory (the tree is then
 * still valid, partly normalized).
 */
int atp_record_normalize(cJSON *record, int bluesky_keys);

/*
 * Check that a normalized record carries what its collection needs
 * (a post its text, a like its subject URI, a follow a subject DID, ...).
 * Returns 0, or -1 with a reason ("app.bsky.feed.like: subject.uri is not
 * an at:// record URI").
 */
int atp_record_check(const char *collection, const cJSON *record, char *reason,
                     size_t reasonlen);

#endif
