#!/usr/bin/perl
# The atproto schema and sluice_apply_stage() alone, through psql: the
# effects of every record type's create, update and delete (rows, counters,
# feed items, notifications, gates, profile fields, generic records,
# identity handle, account status), timestamps stored as staged, and the
# schema applied twice and over appview tables that have extra columns.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use AtprotoStage;
use Test::More;

my $rig = SluiceRig->new(redis => 0);

# ---- schema: twice, and over existing appview tables ----------------------
new_db($rig, 'a');
my $again = psql_script($rig, 'a', schema_text());
is($again->[0], 0, 'the schema applies a second time') or diag($again->[1]);

$rig->psql('CREATE DATABASE pre');
my $pre = psql_script($rig, 'pre', <<'SQL');
CREATE TABLE users (did varchar(255) PRIMARY KEY, handle varchar(255) NOT NULL,
    display_name varchar(255), avatar_url text, banner_url text, description text,
    profile_record jsonb, pinned_post jsonb, search_vector tsvector,
    created_at timestamp NOT NULL DEFAULT now(), indexed_at timestamp NOT NULL DEFAULT now(),
    follower_count int NOT NULL DEFAULT 0);
CREATE TABLE likes (uri varchar(512) PRIMARY KEY, user_did varchar(255) NOT NULL,
    post_uri varchar(512) NOT NULL, subject_cid varchar(255), via jsonb,
    created_at timestamp NOT NULL, indexed_at timestamp NOT NULL DEFAULT now(),
    commit_time timestamp, commit_seq varchar(32), commit_rev varchar(64),
    source text NOT NULL DEFAULT 'appview', UNIQUE (user_did, post_uri));
INSERT INTO users (did, handle) VALUES ('did:plc:old', 'old.example.com');
SQL
is($pre->[0], 0, 'appview tables with extra columns created') or diag($pre->[1]);
my $over = psql_script($rig, 'pre', schema_text());
is($over->[0], 0, 'the schema applies over existing appview tables') or diag($over->[1]);
ok(apply_batches($rig, 'pre', [
    cr(1, 'did:plc:new', 'app.bsky.feed.like', 'l1',
       { '$type' => 'app.bsky.feed.like', subject => { uri => 'at://did:plc:old/app.bsky.feed.post/p', cid => 'c' } }),
]), 'a batch applies over them');
is(q1($rig, 'pre', "SELECT uri || ' ' || source FROM likes"),
   'at://did:plc:new/app.bsky.feed.like/l1 appview', 'extra column keeps its default');
is(q1($rig, 'pre', "SELECT handle || ' ' || follower_count FROM users WHERE did = 'did:plc:old'"),
   'old.example.com 0', 'existing rows untouched');
is(q1($rig, 'pre', "SELECT handle FROM users WHERE did = 'did:plc:new'"), 'handle.invalid',
   'the liker is ensured with the placeholder handle');
is(q1($rig, 'pre', "SELECT like_count FROM post_aggregations"), '1', 'counter over old tables');

# ---- posts, replies, quotes, mentions -------------------------------------
my ($A, $B, $C, $D) = map { "did:plc:$_" } qw(alice bob carol dave);
my $P = 'app.bsky.feed.post';
my $pa = "at://$A/$P/pa";
my $pb = "at://$B/$P/pb";
my $pc = "at://$C/$P/pc";
my $pd = "at://$D/$P/pd";
my $reply = { parent => { uri => $pa, cid => 'cpa' }, root => { uri => $pa, cid => 'cpa' } };
ok(apply_batches($rig, 'a', [
    cr(100, $A, $P, 'pa', { '$type' => $P, text => "hello \x{e9}", langs => ['en', 'fr'], tags => ['t1'],
        facets => [{ index => { byteStart => 0, byteEnd => 5 },
                     features => [{ '$type' => 'app.bsky.richtext.facet#mention', did => $D }] }] },
       at => '2024-03-10 22:15:00.5', cseq => '12345', crev => '3kabc', ctime => '2024-03-10 22:15:01'),
    cr(101, $B, $P, 'pb', { '$type' => $P, text => 'a reply', reply => $reply }),
    cr(102, $C, $P, 'pc', { '$type' => $P, text => 'a quote',
        embed => { '$type' => 'app.bsky.embed.record', record => { uri => $pa, cid => 'cpa' } } }),
    cr(103, $D, $P, 'pd', { '$type' => $P, text => 'quote with media', reply => $reply,
        embed => { '$type' => 'app.bsky.embed.recordWithMedia',
                   record => { record => { uri => $pb, cid => 'cpb' } },
                   media => { '$type' => 'app.bsky.embed.images', images => [] } } }),
]), 'posts applied');
is(q1($rig, 'a', "SELECT author_did || '|' || text || '|' || langs::text || '|' || tags::text || '|' || created_at || '|' || commit_seq || '|' || commit_rev || '|' || commit_time FROM posts WHERE uri = '$pa'"),
   "$A|hello \x{e9}|[\"en\", \"fr\"]|[\"t1\"]|2024-03-10 22:15:00.5|12345|3kabc|2024-03-10 22:15:01",
   'post row: text, langs, tags, created_at and commit columns as staged');
is(q1($rig, 'a', "SELECT parent_uri || ' ' || parent_cid || ' ' || root_uri || ' ' || root_cid FROM posts WHERE uri = '$pb'"),
   "$pa cpa $pa cpa", 'reply parent and root');
is(q1($rig, 'a', "SELECT reply_count || ' ' || quote_count FROM post_aggregations WHERE post_uri = '$pa'"),
   '2 1', 'parent: two replies, one quote');
is(q1($rig, 'a', "SELECT quote_count FROM post_aggregations WHERE post_uri = '$pb'"), '1',
   'recordWithMedia counts as a quote');
is(q1($rig, 'a', "SELECT string_agg(post_uri || '>' || quoted_uri, ',' ORDER BY uri) FROM quotes"),
   "$pc>$pa,$pd>$pb", 'quotes rows');
is(q1($rig, 'a', "SELECT count(*) FROM post_aggregations"), '4', 'an aggregation row per post');
is(q1($rig, 'a', "SELECT string_agg(uri || ' ' || type || ' ' || originator_did || ' ' || sort_at, ',' ORDER BY uri) FROM feed_items WHERE uri = '$pa'"),
   "$pa post $A 2024-03-10 22:15:00.5", 'feed item of a post');
is(q1($rig, 'a', "SELECT string_agg(uri || ' ' || recipient_did || ' ' || reason || ' ' || coalesce(reason_subject, '-'), ',' ORDER BY uri) FROM notifications"),
   "$pa $D mention -,$pb $A reply $pa,$pc $A quote $pa,$pd $A reply $pa",
   'notifications: mention, reply, quote (a reply that also quotes notifies once, as a reply)');
is(q1($rig, 'a', "SELECT string_agg(did || '=' || handle, ',' ORDER BY did) FROM users"),
   "$A=handle.invalid,$B=handle.invalid,$C=handle.invalid,$D=handle.invalid", 'authors ensured');

# ---- likes, reposts, thread context ----------------------------------------
my $L = 'app.bsky.feed.like';
my $R = 'app.bsky.feed.repost';
sub subj { my ($u) = @_; return { subject => { uri => $u, cid => 'c' }, createdAt => 'x' } }
ok(apply_batches($rig, 'a', [
    cr(200, $B, $L, 'lb', subj($pa), at => '2024-03-11 01:00:00'),
    cr(201, $A, $L, 'la', subj($pb)),     # the root's author likes a reply
    cr(202, $C, $R, 'rc', subj($pa), at => '2024-03-11 02:00:00'),
    cr(203, $A, $L, 'la2', subj($pa)),    # liking one's own post: no notification
]), 'likes and reposts applied');
is(q1($rig, 'a', "SELECT like_count || ' ' || repost_count FROM post_aggregations WHERE post_uri = '$pa'"),
   '2 1', 'like and repost counters');
is(q1($rig, 'a', "SELECT user_did || ' ' || post_uri || ' ' || subject_cid || ' ' || created_at FROM likes WHERE uri = 'at://$B/$L/lb'"),
   "$B $pa c 2024-03-11 01:00:00", 'like row');
is(q1($rig, 'a', "SELECT coalesce(like_uri, '-') || ' ' || coalesce(repost_uri, '-') FROM post_viewer_states WHERE post_uri = '$pa' AND viewer_did = '$C'"),
   "- at://$C/$R/rc", 'viewer state of a repost');
is(q1($rig, 'a', "SELECT like_uri FROM post_viewer_states WHERE post_uri = '$pa' AND viewer_did = '$B'"),
   "at://$B/$L/lb", 'viewer state of a like');
is(q1($rig, 'a', "SELECT type || ' ' || post_uri || ' ' || originator_did || ' ' || sort_at FROM feed_items WHERE uri = 'at://$C/$R/rc'"),
   "repost $pa $C 2024-03-11 02:00:00", 'feed item of a repost');
is(q1($rig, 'a', "SELECT string_agg(uri || ' ' || recipient_did || ' ' || reason, ',' ORDER BY uri) FROM notifications WHERE reason IN ('like', 'repost')"),
   "at://$A/$L/la $B like,at://$B/$L/lb $A like,at://$C/$R/rc $A repost",
   'like and repost notifications (none for a like of one\'s own post)');
is(q1($rig, 'a', "SELECT post_uri || ' ' || root_author_like_uri FROM thread_contexts"),
   "$pb at://$A/$L/la", 'like by the root author on a reply: thread context');

# ---- deletes undo what records produced ------------------------------------
ok(apply_batches($rig, 'a', [
    del(300, $A, $L, 'la'), del(301, $C, $R, 'rc'), del(302, $D, $P, 'pd'), del(303, $C, $P, 'pc'),
]), 'deletes applied');
is(q1($rig, 'a', "SELECT like_count || ' ' || repost_count || ' ' || reply_count || ' ' || quote_count FROM post_aggregations WHERE post_uri = '$pa'"),
   '2 0 1 0', 'counters of the parent after deletes of a repost, a reply and a quote');
is(q1($rig, 'a', "SELECT like_count || ' ' || quote_count FROM post_aggregations WHERE post_uri = '$pb'"),
   '0 0', 'counters of the reply after the unlike and the quote delete');
is(q1($rig, 'a', "SELECT count(*) FROM thread_contexts"), '0', 'thread context gone with the like');
is(q1($rig, 'a', "SELECT count(*) FROM post_viewer_states WHERE viewer_did = '$C'"), '0', 'viewer state gone with the repost');
is(q1($rig, 'a', "SELECT count(*) FROM feed_items WHERE uri IN ('at://$C/$R/rc', '$pd', '$pc')"), '0', 'feed items gone');
is(q1($rig, 'a', "SELECT count(*) FROM quotes"), '0', 'quotes gone');
is(q1($rig, 'a', "SELECT count(*) FROM notifications WHERE uri IN ('at://$A/$L/la', 'at://$C/$R/rc', '$pd', '$pc')"),
   '0', 'their notifications gone');
is(q1($rig, 'a', "SELECT count(*) FROM posts"), '2', 'posts deleted');
ok(apply_batches($rig, 'a', [ del(304, $A, $L, 'la'), del(305, $A, $L, 'never') ]),
   'deleting again and deleting an unknown URI apply');
is(q1($rig, 'a', "SELECT like_count FROM post_aggregations WHERE post_uri = '$pb'"), '0',
   'counters do not go below zero');

# ---- graph, lists, feeds, labelers, gates ----------------------------------
my $lst = "at://$A/app.bsky.graph.list/l1";
ok(apply_batches($rig, 'a', [
    cr(400, $A, 'app.bsky.graph.follow', 'f1', { subject => $B }),
    cr(401, $A, 'app.bsky.graph.block', 'b1', { subject => $C }),
    cr(402, $A, 'app.bsky.graph.list', 'l1', { name => 'friends', purpose => 'app.bsky.graph.defs#curatelist',
        description => 'd', avatar => { '$type' => 'blob', ref => { '$link' => 'bafkav' } } }),
    cr(403, $A, 'app.bsky.graph.listitem', 'i1', { list => $lst, subject => $D }),
    cr(404, $A, 'app.bsky.feed.generator', 'g1', { did => 'did:web:feed.example', displayName => 'Feed', description => 'fd' }),
    cr(405, $A, 'app.bsky.graph.starterpack', 's1', { name => 'pack', list => $lst, feeds => [{ uri => 'x' }] }),
    cr(406, $A, 'app.bsky.labeler.service', 'self', { policies => { labelValues => ['spam'] } }),
    cr(407, $A, 'app.bsky.feed.threadgate', 'pa', { post => $pa, allow => [
        { '$type' => 'app.bsky.feed.threadgate#mentionRule' },
        { '$type' => 'app.bsky.feed.threadgate#listRule', list => $lst } ] }),
    cr(408, $A, 'app.bsky.feed.postgate', 'pa', { post => $pa,
        embeddingRules => [{ '$type' => 'app.bsky.feed.postgate#disableRule' }] }),
    cr(409, $C, $L, 'lg', subj("at://$A/app.bsky.feed.generator/g1")),
]), 'graph and other records applied');
is(q1($rig, 'a', "SELECT follower_did || ' ' || following_did FROM follows"), "$A $B", 'follow row');
# the subjects of follows, blocks and list items get a users row (the
# appview joins them), and one already there keeps its handle
q1($rig, 'a', "INSERT INTO users (did, handle) VALUES ('did:plc:kept', 'kept.example.com')");
ok(apply_batches($rig, 'a', [
    cr(410, $A, 'app.bsky.graph.follow', 'f2', { subject => 'did:plc:fsubject' }),
    cr(411, $A, 'app.bsky.graph.block', 'b2', { subject => 'did:plc:bsubject' }),
    cr(412, $A, 'app.bsky.graph.listitem', 'i2', { list => $lst, subject => 'did:plc:isubject' }),
    cr(413, $A, 'app.bsky.graph.follow', 'f3', { subject => 'did:plc:kept' }),
]), 'follows, a block and a list item of DIDs never seen');
is(q1($rig, 'a', "SELECT string_agg(did || ' ' || handle, ',' ORDER BY did) FROM users WHERE did LIKE 'did:plc:_subject'"),
   'did:plc:bsubject handle.invalid,did:plc:fsubject handle.invalid,did:plc:isubject handle.invalid',
   'each subject has a users row');
is(q1($rig, 'a', "SELECT handle FROM users WHERE did = 'did:plc:kept'"), 'kept.example.com',
   'a subject\'s users row already there is left as it was');
ok(apply_batches($rig, 'a', [
    del(414, $A, 'app.bsky.graph.follow', 'f2'), del(415, $A, 'app.bsky.graph.block', 'b2'),
    del(416, $A, 'app.bsky.graph.listitem', 'i2'), del(417, $A, 'app.bsky.graph.follow', 'f3'),
]), 'and deleted again (their users rows stay)');
is(q1($rig, 'a', "SELECT recipient_did || ' ' || reason FROM notifications WHERE uri = 'at://$A/app.bsky.graph.follow/f1'"),
   "$B follow", 'follow notification');
is(q1($rig, 'a', "SELECT blocker_did || ' ' || blocked_did FROM blocks"), "$A $C", 'block row');
is(q1($rig, 'a', "SELECT name || ' ' || purpose || ' ' || description || ' ' || avatar_url FROM lists"),
   'friends app.bsky.graph.defs#curatelist d bafkav', 'list row (avatar: the blob CID)');
is(q1($rig, 'a', "SELECT list_uri || ' ' || subject_did FROM list_items"), "$lst $D", 'list item row');
is(q1($rig, 'a', "SELECT did || ' ' || display_name || ' ' || description || ' ' || like_count FROM feed_generators"),
   'did:web:feed.example Feed fd 1', 'feed generator row with its like count');
is(q1($rig, 'a', "SELECT name || ' ' || list_uri || ' ' || feeds::text FROM starter_packs"),
   "pack $lst [{\"uri\": \"x\"}]", 'starter pack row');
is(q1($rig, 'a', "SELECT policies::text FROM labeler_services"), '{"labelValues": ["spam"]}', 'labeler row');
is(q1($rig, 'a', "SELECT post_uri || ' ' || owner_did || ' ' || allow_mentions || ' ' || allow_following || ' ' || allow_list_members || ' ' || allow_list_uris::text FROM thread_gates"),
   "$pa $A true false true [\"$lst\"]", 'threadgate row');
is(q1($rig, 'a', "SELECT post_uri || ' ' || embedding_rules::text FROM post_gates"),
   "$pa {\"embeddingRules\": [{\"\$type\": \"app.bsky.feed.postgate#disableRule\"}]}", 'postgate row');
is(q1($rig, 'a', "SELECT has_thread_gate || ' ' || has_post_gate FROM posts WHERE uri = '$pa'"), 'true true',
   'the gated post is flagged');

ok(apply_batches($rig, 'a', [
    upd(500, $A, 'app.bsky.graph.list', 'l1', { name => 'renamed', purpose => 'app.bsky.graph.defs#modlist' }),
    upd(501, $A, 'app.bsky.feed.generator', 'g1', { did => 'did:web:feed.example', displayName => 'Feed 2' }),
    upd(502, $A, 'app.bsky.feed.threadgate', 'pa', { post => $pa, allow => [] }),
    upd(503, $A, 'app.bsky.graph.follow', 'f1', { subject => $D }),
    del(504, $A, 'app.bsky.feed.postgate', 'pa'),
    del(505, $A, 'app.bsky.graph.block', 'b1'),
    del(506, $A, 'app.bsky.graph.listitem', 'i1'),
    del(507, $A, 'app.bsky.graph.starterpack', 's1'),
    del(508, $A, 'app.bsky.labeler.service', 'self'),
]), 'updates and deletes applied');
is(q1($rig, 'a', "SELECT name || ' ' || purpose || ' ' || coalesce(description, '-') FROM lists"),
   'renamed app.bsky.graph.defs#modlist -', 'list update replaces the row');
is(q1($rig, 'a', "SELECT display_name || ' ' || coalesce(description, '-') || ' ' || like_count FROM feed_generators"),
   'Feed 2 - 1', 'generator update replaces the fields, keeps the like count');
is(q1($rig, 'a', "SELECT allow_mentions || ' ' || allow_following || ' ' || allow_list_members FROM thread_gates"),
   'false false false', 'threadgate update: nobody may reply');
is(q1($rig, 'a', "SELECT follower_did || ' ' || following_did FROM follows"), "$A $D", 'follow update moves the subject');
is(q1($rig, 'a', "SELECT recipient_did FROM notifications WHERE reason = 'follow'"), $D, 'and its notification');
is(q1($rig, 'a', "SELECT (SELECT count(*) FROM post_gates) + (SELECT count(*) FROM blocks) + (SELECT count(*) FROM list_items) + (SELECT count(*) FROM starter_packs) + (SELECT count(*) FROM labeler_services)"),
   '0', 'postgate, block, list item, starter pack, labeler deleted');
is(q1($rig, 'a', "SELECT has_thread_gate || ' ' || has_post_gate FROM posts WHERE uri = '$pa'"), 'true false',
   'post flag cleared with the postgate');

# ---- profile, generic records, identity, account ---------------------------
my $prof = 'app.bsky.actor.profile';
ok(apply_batches($rig, 'a', [
    cr(600, $B, $prof, 'self', { displayName => 'Bob', description => 'about',
        avatar => { '$type' => 'blob', ref => { '$link' => 'bafkavatar' }, mimeType => 'image/png' },
        banner => { '$type' => 'blob', ref => { '$link' => 'bafkbanner' } } }),
    cr(601, $C, 'com.example.thing', 'x1', { n => 1 }, at => '2024-01-02 03:04:05'),
    op(ms => 602, kind => 'identity', did => $B, handle => 'bob.example.com'),
    op(ms => 603, kind => 'account', did => $C, active => 0, status => 'takendown'),
]), 'profile, generic record, identity, account applied');
is(q1($rig, 'a', "SELECT display_name || ' ' || description || ' ' || avatar_url || ' ' || banner_url || ' ' || (profile_record->>'displayName') || ' ' || handle FROM users WHERE did = '$B'"),
   'Bob about bafkavatar bafkbanner Bob bob.example.com', 'profile fields and handle');
is(q1($rig, 'a', "SELECT author_did || ' ' || record_type || ' ' || record::text || ' ' || created_at FROM generic_records"),
   "$C com.example.thing {\"n\": 1} 2024-01-02 03:04:05", 'generic record');
is(q1($rig, 'a', "SELECT active || ' ' || status FROM sluice_account_status WHERE did = '$C'"), 'false takendown',
   'account status');
ok(apply_batches($rig, 'a', [
    upd(700, $B, $prof, 'self', { displayName => 'Robert' }),
    upd(701, $C, 'com.example.thing', 'x1', { n => 2 }),
    op(ms => 702, kind => 'identity', did => $B),                 # no handle: no change
    op(ms => 703, kind => 'account', did => $C, active => 1),
    op(ms => 550, kind => 'identity', did => $B, handle => 'older.example.com'),  # older: ignored
]), 'second round applied');
is(q1($rig, 'a', "SELECT display_name || ' ' || coalesce(description, '-') || ' ' || coalesce(avatar_url, '-') || ' ' || handle FROM users WHERE did = '$B'"),
   'Robert - - bob.example.com', 'profile update replaces the fields; older or empty identity keeps the handle');
is(q1($rig, 'a', "SELECT record->>'n' FROM generic_records"), '2', 'generic record update');
is(q1($rig, 'a', "SELECT active || ' ' || coalesce(status, '-') FROM sluice_account_status WHERE did = '$C'"), 'true -',
   'newer account event replaces the status');
ok(apply_batches($rig, 'a', [ del(800, $B, $prof, 'self'), del(801, $C, 'com.example.thing', 'x1') ]),
   'profile and generic deletes applied');
is(q1($rig, 'a', "SELECT coalesce(display_name, '-') || ' ' || coalesce(profile_record::text, '-') || ' ' || handle FROM users WHERE did = '$B'"),
   '- - bob.example.com', 'profile delete clears the fields, keeps the user');
is(q1($rig, 'a', "SELECT count(*) FROM generic_records"), '0', 'generic record deleted');
is(q1($rig, 'a', "SELECT count(*) FROM sluice_stage_template"), '0', 'the stage template stays empty');

# ---- what the state keeps of a pair record, and a duplicate taking over --
# The state of a like keeps its subject's CID and its via (nothing else of
# the record); when the owner of the pair goes, the duplicate's row is
# written from that, and from the whole record an earlier version kept.
{
    my $D = 'did:plc:dupliker';
    my ($P1, $P2) = map { "at://did:plc:dupauthor/app.bsky.feed.post/$_" } qw(dp1 dp2);
    my $via = { uri => 'at://did:plc:v/app.bsky.feed.repost/r1', cid => 'viacid' };
    my $like = 'app.bsky.feed.like';
    my $L = sub { "at://$D/$like/$_[0]" };
    ok(apply_batches($rig, 'a', [
        cr(900, $D, $like, 'l1', { subject => { uri => $P1, cid => 'cid-one' }, via => $via, createdAt => 'x' }),
        cr(901, $D, $like, 'l2', { subject => { uri => $P1, cid => 'cid-two' }, createdAt => 'x' }),
        cr(902, $D, $like, 'l3', { subject => { uri => $P2, cid => 'cid-three' }, createdAt => 'x' }),
        cr(903, $D, $like, 'l4', { subject => { uri => $P2, cid => 'cid-four' }, via => $via, createdAt => 'x' }),
    ]), 'duplicate likes applied');
    is(q1($rig, 'a', "SELECT record::text FROM sluice_record_state WHERE uri = '" . $L->('l1') . "'"),
       '{"via": {"cid": "viacid", "uri": "at://did:plc:v/app.bsky.feed.repost/r1"}, "subject": {"cid": "cid-one"}}',
       'the state of a like keeps its subject CID and via only');
    is(q1($rig, 'a', "SELECT record::text FROM sluice_record_state WHERE uri = '" . $L->('l2') . "'"),
       '{"subject": {"cid": "cid-two"}}', 'no via: none kept');
    # l4's state as an earlier version kept it: the whole record
    q1($rig, 'a', "UPDATE sluice_record_state SET record = '{\"\$type\": \"$like\", \"subject\": "
       . "{\"uri\": \"$P2\", \"cid\": \"cid-four\"}, \"via\": {\"uri\": \"$via->{uri}\", "
       . "\"cid\": \"viacid\"}, \"createdAt\": \"x\"}' WHERE uri = '" . $L->('l4') . "' RETURNING 1");
    ok(apply_batches($rig, 'a', [ del(910, $D, $like, 'l1'), del(911, $D, $like, 'l3') ]),
       'the owners deleted');
    is(q1($rig, 'a', "SELECT uri || ' ' || subject_cid || ' ' || coalesce(via->>'cid', '-') FROM likes "
                   . "WHERE user_did = '$D' ORDER BY post_uri"),
       join("\n", $L->('l2') . ' cid-two -', $L->('l4') . ' cid-four viacid'),
       'each duplicate takes over its pair with its own subject CID and via (whole record too)');
}

$rig->finish;
done_testing;
