#!/usr/bin/perl
# Rows sluice did not write, in tables sluice did not create. The appview's
# tables (tests/data/appview-tables.sql: the facts of its DDL, with its own
# index names) are filled the way the old workers fill them -- records with
# their feed items, quotes, notifications, viewer states, thread contexts
# and counters, and no sluice state at all -- then a real worker applies, through the stream, a delete of one record of
# every collection and an update of another. Every delete removes the row
# and what it produced and moves the counters; every update replaces the
# record it never saw; nothing is dead-lettered; records the stream does not
# touch stay as they were; every counter equals the rows it counts.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use AtprotoNames qw(did uri $P $L $R $FO $BL $PR $LI $IT $FG $SP $LB $TG $PG);
use AtprotoTables qw($COUNTERS_WRONG $LIKE_COUNTS_WRONG wait_counters_folded);
use Test::More;
use JSON::PP;

my $JSON = JSON::PP->new->canonical->ascii;
my ($A, $B, $C, $D) = map { did($_) } qw(alice bob carol dave);
my $GX = 'xyz.example.thing';
my %U = (
    root  => uri($A, $P, 'root'),     # A's post, stays
    reply => uri($B, $P, 'reply'),    # B's reply to root, quoting q; deleted
    q     => uri($C, $P, 'q'),        # C's post, quoted by reply; stays
    edit  => uri($C, $P, 'edit'),     # C's reply to root; updated (no longer a reply)
    r2    => uri($D, $P, 'r2'),       # D's reply to root, liked by A (thread context)
    like  => uri($C, $L, 'like'),     # C likes root; deleted
    like2 => uri($B, $L, 'like2'),    # B likes root; stays
    likeu => uri($D, $L, 'likeu'),    # D likes q; updated to like root
    ra    => uri($A, $L, 'ra'),       # A (root author) likes r2; deleted
    lfg   => uri($B, $L, 'lfg'),      # B likes the feed generator; deleted
    rep   => uri($D, $R, 'rep'),      # D reposts root; deleted
    fol   => uri($A, $FO, 'fol'),     # A follows B; deleted
    folu  => uri($A, $FO, 'folu'),    # A follows C; updated to follow D
    blk   => uri($B, $BL, 'blk'),     # B blocks C; deleted
    list  => uri($A, $LI, 'list'),    # A's list; updated
    list2 => uri($A, $LI, 'list2'),   # another list; deleted
    item  => uri($A, $IT, 'item'),    # an item of list; deleted
    fg    => uri($B, $FG, 'fg'),      # B's feed generator; deleted
    fgu   => uri($B, $FG, 'fgu'),     # another; updated
    sp    => uri($A, $SP, 'sp'),      # starter pack; deleted
    spu   => uri($A, $SP, 'spu'),     # starter pack; updated
    lab   => uri($D, $LB, 'self'),    # labeler; updated
    labc  => uri($C, $LB, 'self'),    # labeler; deleted
    tg    => uri($A, $TG, 'root'),    # threadgate on root; deleted
    tgq   => uri($C, $TG, 'q'),       # threadgate on q; updated
    pg    => uri($A, $PG, 'root'),    # postgate on root; updated
    pgq   => uri($C, $PG, 'q'),       # postgate on q; deleted
    gen   => uri($D, $GX, 'g1'),      # generic record; deleted
    genu  => uri($D, $GX, 'g2'),      # generic record; updated
);

my $rig = SluiceRig->new;
my $sluiced = $rig->bin('sluiced');
my $stream = 'firehose:events';
my $group = 'firehose-processors';
my $conf = $rig->write_config(batch_size => 8, batch_timeout_ms => 50, block_ms => 200);
# the database as the appview created it (its tables, under its index
# names), then sluice's schema over it
my $r = $rig->psql_file('tests/data/appview-tables.sql');
is($r->[0], 0, "the appview's tables created") or diag($r->[1]);
$r = $rig->run($sluiced, '-c', $conf, '--init-schema');
is($r->[0], 0, 'schema applied') or diag($r->[1]);

# ---- the appview's rows, as the old workers write them (no sluice state) ----
sub q1 { return $rig->psql($_[0]) }
my $T = "'2024-05-01 12:00:00'";
my $sql = join "\n", (map { "INSERT INTO users (did, handle) VALUES ('$_', '" . substr($_, 8, 5) . ".test');" } $A, $B, $C, $D),
  "UPDATE users SET display_name = 'Dave', description = 'old', avatar_url = 'bafkold', profile_record = '{}' WHERE did = '$D';",
  "UPDATE users SET display_name = 'Carol', description = 'bye', profile_record = '{}' WHERE did = '$C';",
  # posts
  "INSERT INTO posts (uri, cid, author_did, text, created_at, has_thread_gate, has_post_gate) VALUES"
  . " ('$U{root}', 'c1', '$A', 'root', $T, true, true), ('$U{q}', 'c2', '$C', 'quoted', $T, true, true);",
  "INSERT INTO posts (uri, cid, author_did, text, parent_uri, parent_cid, root_uri, root_cid, embed, created_at) VALUES"
  . " ('$U{reply}', 'c3', '$B', 'a reply', '$U{root}', 'c1', '$U{root}', 'c1',"
  . " '{\"\$type\": \"app.bsky.embed.record\", \"record\": {\"uri\": \"$U{q}\", \"cid\": \"c2\"}}', $T),"
  . " ('$U{edit}', 'c4', '$C', 'before the edit', '$U{root}', 'c1', '$U{root}', 'c1', NULL, $T),"
  . " ('$U{r2}', 'c5', '$D', 'liked by root author', '$U{root}', 'c1', '$U{root}', 'c1', NULL, $T);",
  "INSERT INTO feed_items (uri, post_uri, originator_did, type, sort_at, cid, created_at) VALUES"
  . join(',', map { " ('$U{$_->[0]}', '$U{$_->[0]}', '$_->[1]', 'post', $T, 'c', $T)" } [root => $A], [q => $C], [reply => $B], [edit => $C], [r2 => $D])
  . ", ('$U{rep}', '$U{root}', '$D', 'repost', $T, 'c', $T);",
  "INSERT INTO quotes (uri, cid, post_uri, quoted_uri, quoted_cid, created_at) VALUES ('$U{reply}', 'c3', '$U{reply}', '$U{q}', 'c2', $T);",
  # likes, reposts and their effects
  "INSERT INTO likes (uri, user_did, post_uri, subject_cid, created_at) VALUES"
  . " ('$U{like}', '$C', '$U{root}', 'c1', $T), ('$U{like2}', '$B', '$U{root}', 'c1', $T),"
  . " ('$U{likeu}', '$D', '$U{q}', 'c2', $T), ('$U{ra}', '$A', '$U{r2}', 'c5', $T), ('$U{lfg}', '$B', '$U{fg}', 'cf', $T);",
  "INSERT INTO reposts (uri, user_did, post_uri, subject_cid, created_at) VALUES ('$U{rep}', '$D', '$U{root}', 'c1', $T);",
  "INSERT INTO post_viewer_states (post_uri, viewer_did, like_uri, repost_uri) VALUES"
  . " ('$U{root}', '$C', '$U{like}', NULL), ('$U{root}', '$B', '$U{like2}', NULL), ('$U{q}', '$D', '$U{likeu}', NULL),"
  . " ('$U{r2}', '$A', '$U{ra}', NULL), ('$U{root}', '$D', NULL, '$U{rep}');",
  "INSERT INTO thread_contexts (post_uri, root_author_like_uri) VALUES ('$U{r2}', '$U{ra}');",
  "INSERT INTO post_aggregations (post_uri, like_count, repost_count, reply_count, quote_count) VALUES"
  . " ('$U{root}', 2, 1, 3, 0), ('$U{q}', 1, 0, 0, 1), ('$U{r2}', 1, 0, 0, 0), ('$U{reply}', 0, 0, 0, 0), ('$U{edit}', 0, 0, 0, 0);",
  # follows, blocks, lists
  "INSERT INTO follows (uri, follower_did, following_did, created_at) VALUES ('$U{fol}', '$A', '$B', $T), ('$U{folu}', '$A', '$C', $T);",
  "INSERT INTO blocks (uri, blocker_did, blocked_did, created_at) VALUES ('$U{blk}', '$B', '$C', $T);",
  "INSERT INTO lists (uri, cid, creator_did, name, purpose, created_at) VALUES"
  . " ('$U{list}', 'cl', '$A', 'old name', 'app.bsky.graph.defs#curatelist', $T), ('$U{list2}', 'cl2', '$A', 'gone', 'app.bsky.graph.defs#modlist', $T);",
  "INSERT INTO list_items (uri, cid, list_uri, subject_did, created_at) VALUES ('$U{item}', 'ci', '$U{list}', '$B', $T);",
  "INSERT INTO feed_generators (uri, cid, creator_did, did, display_name, like_count, created_at) VALUES"
  . " ('$U{fg}', 'cf', '$B', 'did:web:f.example', 'Feed', 1, $T), ('$U{fgu}', 'cf2', '$B', 'did:web:g.example', 'Old feed', 0, $T);",
  "INSERT INTO starter_packs (uri, cid, creator_did, name, list_uri, created_at) VALUES"
  . " ('$U{sp}', 'cs', '$A', 'Pack', '$U{list}', $T), ('$U{spu}', 'cs2', '$A', 'Old pack', '$U{list}', $T);",
  "INSERT INTO labeler_services (uri, cid, creator_did, policies, created_at) VALUES"
  . " ('$U{lab}', 'cb', '$D', '{\"labelValues\": [\"old\"]}', $T), ('$U{labc}', 'cb2', '$C', '{}', $T);",
  "INSERT INTO thread_gates (post_uri, owner_did, allow_mentions, allow_following) VALUES ('$U{root}', '$A', false, false), ('$U{q}', '$C', true, true);",
  "INSERT INTO post_gates (post_uri, embedding_rules) VALUES ('$U{root}', '{\"embeddingRules\": []}'), ('$U{q}', '{\"embeddingRules\": []}');",
  "INSERT INTO generic_records (uri, cid, author_did, record_type, record, created_at) VALUES"
  . " ('$U{gen}', 'cg', '$D', '$GX', '{\"v\": 1}', $T), ('$U{genu}', 'cg2', '$D', '$GX', '{\"v\": 2}', $T);",
  # notifications: reply, quote, like, repost, follow
  "INSERT INTO notifications (uri, recipient_did, author_did, reason, reason_subject, created_at) VALUES"
  . " ('$U{reply}', '$A', '$B', 'reply', '$U{root}', $T), ('$U{edit}', '$A', '$C', 'reply', '$U{root}', $T),"
  . " ('$U{r2}', '$A', '$D', 'reply', '$U{root}', $T), ('$U{like}', '$A', '$C', 'like', '$U{root}', $T),"
  . " ('$U{like2}', '$A', '$B', 'like', '$U{root}', $T), ('$U{likeu}', '$C', '$D', 'like', '$U{q}', $T),"
  . " ('$U{ra}', '$D', '$A', 'like', '$U{r2}', $T), ('$U{rep}', '$A', '$D', 'repost', '$U{root}', $T),"
  . " ('$U{fol}', '$B', '$A', 'follow', NULL, $T), ('$U{folu}', '$C', '$A', 'follow', NULL, $T);";
q1($sql);
is(q1('SELECT count(*) FROM sluice_record_state'), '0', 'the old rows have no sluice state');
is(q1($COUNTERS_WRONG), '0', 'the old rows start with true counters');

# ---- the stream: a delete of one record of every collection, an update of another
my $n = 0;
my @cmds;
sub commit_entry {
    my ($repo, @ops) = @_;
    push @cmds, ['XADD', $stream, '*', 'type', 'commit',
        'data', $JSON->encode({ repo => $repo, ops => \@ops }), 'seq', 5000 + ++$n];
}
sub path_of { my ($u) = @_; my (undef, undef, undef, $c, $k) = split m{/}, $u; return "$c/$k" }
sub repo_of { return (split m{/}, $_[0])[2] }
sub dl { my ($u) = @_; commit_entry(repo_of($u), { action => 'delete', path => path_of($u) }) }
sub up {
    my ($u, $rec) = @_;
    commit_entry(repo_of($u), { action => 'update', path => path_of($u), cid => 'bafyupdated', record => $rec });
}
my $at = '2024-06-01T00:00:00Z';
dl($U{$_}) for qw(reply like ra lfg rep fol blk list2 item fg sp labc tg pgq gen);
commit_entry($C, { action => 'delete', path => "$PR/self" });
up($U{edit}, { '$type' => $P, text => 'after the edit', createdAt => $at });
up($U{likeu}, { '$type' => $L, subject => { uri => $U{root}, cid => 'c1' }, createdAt => $at });
up($U{folu}, { '$type' => $FO, subject => $D, createdAt => $at });
up($U{list}, { '$type' => $LI, name => 'new name', purpose => 'app.bsky.graph.defs#modlist', createdAt => $at });
up($U{fgu}, { '$type' => $FG, did => 'did:web:g.example', displayName => 'New feed', createdAt => $at });
up($U{spu}, { '$type' => $SP, name => 'New pack', list => $U{list}, createdAt => $at });
up($U{lab}, { '$type' => $LB, policies => { labelValues => ['new'] }, createdAt => $at });
up($U{tgq}, { '$type' => $TG, post => $U{q}, allow => [], createdAt => $at });
up($U{pg}, { '$type' => $PG, post => $U{root}, embeddingRules => [{ '$type' => 'app.bsky.feed.postgate#disableRule' }], createdAt => $at });
up($U{genu}, { '$type' => $GX, v => 3 });
commit_entry($D, { action => 'update', path => "$PR/self", cid => 'bafyprof',
    record => { '$type' => $PR, displayName => 'Dave 2', description => 'new' } });
like($rig->redis_batch(@cmds), qr/errors: 0\b/, scalar(@cmds) . ' entries added');

my $pid = $rig->spawn('w', $sluiced, '-c', $conf, '--worker', 'foreign-1');
ok($rig->wait_drained($stream, $group, 60), 'every entry decided and acked');
ok(wait_counters_folded($rig), 'the counters folded');
is(scalar($rig->stream_entries("$stream:dead")), 0, 'nothing dead-lettered');

# ---- deletes: the row and what it produced, counters moved ------------------
sub count_uri { my ($t, $col, $u) = @_; return q1("SELECT count(*) FROM $t WHERE $col = '$u'") }
for my $c ([reply => 'posts'], [like => 'likes'], [ra => 'likes'], [lfg => 'likes'], [rep => 'reposts'],
           [fol => 'follows'], [blk => 'blocks'], [list2 => 'lists'], [item => 'list_items'],
           [fg => 'feed_generators'], [sp => 'starter_packs'], [labc => 'labeler_services'], [gen => 'generic_records']) {
    is(count_uri($c->[1], 'uri', $U{ $c->[0] }), 0, "delete of $c->[0]: its $c->[1] row is gone");
}
is(count_uri('thread_gates', 'post_uri', $U{root}), 0, 'delete of a threadgate: its row is gone');
is(q1("SELECT has_thread_gate FROM posts WHERE uri = '$U{root}'"), 'f', '... and its post is no longer gated');
is(count_uri('post_gates', 'post_uri', $U{q}), 0, 'delete of a postgate: its row is gone');
is(q1("SELECT has_post_gate FROM posts WHERE uri = '$U{q}'"), 'f', '... and its post no longer has a postgate');
is(q1("SELECT coalesce(display_name, '-') || ' ' || coalesce(description, '-') FROM users WHERE did = '$C'"), '- -',
   'delete of a profile: its fields are cleared');
for my $x (qw(reply like ra rep fol)) {
    is(count_uri('notifications', 'uri', $U{$x}), 0, "delete of $x: its notification is gone");
}
is(count_uri('feed_items', 'uri', $U{reply}), 0, 'delete of a post: its feed item is gone');
is(count_uri('feed_items', 'uri', $U{rep}), 0, 'delete of a repost: its feed item is gone');
is(count_uri('quotes', 'uri', $U{reply}), 0, 'delete of a quoting post: the quote is gone');
is(q1("SELECT count(*) FROM post_viewer_states WHERE like_uri IN ('$U{like}', '$U{ra}') OR repost_uri = '$U{rep}'"), 0,
   'deleted likes and reposts left no viewer state');
is(count_uri('thread_contexts', 'post_uri', $U{r2}), 0, "delete of the root author's like: the thread context is gone");
is(q1("SELECT like_count || ' ' || repost_count || ' ' || reply_count FROM post_aggregations WHERE post_uri = '$U{root}'"),
   '2 0 1', 'root: like_count 2 -> 2 (one like deleted, one moved here), repost_count 1 -> 0, reply_count 3 -> 1');
is(q1("SELECT like_count || ' ' || quote_count FROM post_aggregations WHERE post_uri = '$U{q}'"), '0 0',
   'quoted post: quote_count 1 -> 0, like_count 1 -> 0 (the like moved away)');
is(q1("SELECT like_count FROM post_aggregations WHERE post_uri = '$U{r2}'"), '0', "r2: the root author's like removed");

# ---- updates: the record replaced, its effects with it ----------------------
is(q1("SELECT text || ' ' || coalesce(parent_uri, '-') FROM posts WHERE uri = '$U{edit}'"), 'after the edit -',
   'update of a post: text and reply replaced');
is(count_uri('notifications', 'uri', $U{edit}), 0, '... its reply notification retracted');
is(q1("SELECT post_uri FROM likes WHERE uri = '$U{likeu}'"), $U{root}, 'update of a like: the new subject');
is(q1("SELECT reason_subject FROM notifications WHERE uri = '$U{likeu}'"), $U{root}, '... notified to the new subject');
is(q1("SELECT count(*) FROM post_viewer_states WHERE like_uri = '$U{likeu}' AND post_uri = '$U{q}'"), 0,
   '... no viewer state left on the old subject');
is(q1("SELECT following_did FROM follows WHERE uri = '$U{folu}'"), $D, 'update of a follow: the new subject');
is(q1("SELECT recipient_did FROM notifications WHERE uri = '$U{folu}'"), $D, '... notified to the new subject');
is(q1("SELECT name || ' ' || purpose FROM lists WHERE uri = '$U{list}'"), 'new name app.bsky.graph.defs#modlist', 'update of a list');
is(q1("SELECT display_name FROM feed_generators WHERE uri = '$U{fgu}'"), 'New feed', 'update of a feed generator');
is(q1("SELECT name FROM starter_packs WHERE uri = '$U{spu}'"), 'New pack', 'update of a starter pack');
is(q1("SELECT policies->'labelValues'->>0 FROM labeler_services WHERE uri = '$U{lab}'"), 'new', 'update of a labeler');
is(q1("SELECT allow_mentions || ' ' || allow_following FROM thread_gates WHERE post_uri = '$U{q}'"), 'false false',
   'update of a threadgate (nobody may reply)');
is(q1("SELECT embedding_rules->'embeddingRules'->0->>'\$type' FROM post_gates WHERE post_uri = '$U{root}'"),
   'app.bsky.feed.postgate#disableRule', 'update of a postgate');
is(q1("SELECT record->>'v' FROM generic_records WHERE uri = '$U{genu}'"), '3', 'update of a record of another collection');
is(q1("SELECT display_name || ' ' || description FROM users WHERE did = '$D'"), 'Dave 2 new', 'update of a profile');

# ---- what the stream did not touch stays -----------------------------------
is(q1("SELECT count(*) FROM posts WHERE uri IN ('$U{root}', '$U{q}', '$U{r2}')"), 3, 'untouched posts stay');
is(q1("SELECT count(*) FROM likes WHERE uri = '$U{like2}'"), 1, 'an untouched like of the same post stays');
is(count_uri('notifications', 'uri', $U{like2}), 1, '... with its notification');
is(q1("SELECT count(*) FROM feed_items WHERE uri IN ('$U{root}', '$U{q}', '$U{r2}', '$U{edit}')"), 4, 'untouched feed items stay');
is(q1($COUNTERS_WRONG), '0', 'every counter equals the true number of rows');
is(q1($LIKE_COUNTS_WRONG), '0', 'feed generator and labeler like counts true');

kill 'TERM', $pid;
$rig->wait_exit($pid, 30);
$rig->finish;
done_testing;
