#!/usr/bin/perl
# `sluiced --recount`: counters as the old workers leave them (likes never
# counted, reply counts never decremented, likes of a post that has no
# aggregation row, a feed generator's like count behind) become the rows'
# counts; a delta committed and not folded yet is not counted twice; more
# posts than one chunk holds are all reached; a second run changes
# nothing; and a recount while a worker applies likes and unlikes of the
# same posts ends with every counter equal to its rows.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use AtprotoNames qw(did uri $P $L $FG);
use AtprotoTables qw($COUNTERS_WRONG $LIKE_COUNTS_WRONG wait_counters_folded);
use Test::More;
use JSON::PP;

my $rig = SluiceRig->new;
my $sluiced = $rig->bin('sluiced');
my $stream = 'firehose:events';
my $group = 'firehose-processors';
my $conf = $rig->write_config(batch_size => 50, batch_timeout_ms => 20, block_ms => 100,
                              counter_fold_ms => 200);
my $r = $rig->run($sluiced, '-c', $conf, '--init-schema');
is($r->[0], 0, 'schema applied') or diag($r->[1]);
sub q1 { return $rig->psql($_[0]) }

# Posts missing their counter rows, or with counters in both directions
# wrong, more of them than one chunk (2,000 URIs) holds.
my $MISSING = <<'SQL';
SELECT count(*) FROM (SELECT uri FROM posts UNION SELECT post_uri FROM likes
                      UNION SELECT parent_uri FROM posts WHERE parent_uri IS NOT NULL) s
 WHERE split_part(s.uri, '/', 4) = 'app.bsky.feed.post'
   AND NOT EXISTS (SELECT 1 FROM post_aggregations a WHERE a.post_uri = s.uri)
SQL
my ($A, $B) = (did('alice'), did('bob'));
my $pre = "at://$A/$P/p";
my $fg = uri($B, $FG, 'feed');
q1(join "\n",
   "INSERT INTO users (did, handle) VALUES ('$A', 'alice.test'), ('$B', 'bob.test');",
   # 4,500 posts, each liked by A and B; every second one a reply to the one before
   "INSERT INTO posts (uri, cid, author_did, text, parent_uri, root_uri, created_at)"
   . " SELECT '$pre' || i, 'c', '$A', 't', CASE WHEN i % 2 = 0 THEN '$pre' || (i - 1) END,"
   . " CASE WHEN i % 2 = 0 THEN '$pre' || (i - 1) END, now() FROM generate_series(1, 4500) i;",
   "INSERT INTO likes (uri, user_did, post_uri, created_at)"
   . " SELECT 'at://' || d || '/$L/l' || i, d, '$pre' || i, now()"
   . " FROM generate_series(1, 4500) i, unnest(ARRAY['$A', '$B']) d;",
   "INSERT INTO likes (uri, user_did, post_uri, created_at) VALUES"
   . " ('at://$A/$L/fg', '$A', '$fg', now()), ('at://$B/$L/fg', '$B', '$fg', now());",
   "INSERT INTO feed_generators (uri, cid, creator_did, did, display_name, like_count, created_at)"
   . " VALUES ('$fg', 'c', '$B', 'did:web:feed.example', 'Feed', 0, now());",
   # counter rows for the first 3,000 posts only: likes never counted, replies counted twice
   "INSERT INTO post_aggregations (post_uri, like_count, repost_count, reply_count, quote_count)"
   . " SELECT '$pre' || i, 1, 0, 2, 0 FROM generate_series(1, 3000) i;",
   # one like committed by a batch whose delta the fold has not taken yet
   "INSERT INTO likes (uri, user_did, post_uri, created_at) VALUES ('at://$B/$L/late', '$B', '${pre}4501', now());",
   "INSERT INTO posts (uri, cid, author_did, text, created_at) VALUES ('${pre}4501', 'c', '$A', 't', now());",
   "INSERT INTO post_aggregations (post_uri, like_count) VALUES ('${pre}4501', 0);",
   "INSERT INTO sluice_counter_delta (uri, likes) VALUES ('${pre}4501', 1);");
isnt(q1($COUNTERS_WRONG), '0', 'counters start wrong');
is(q1($MISSING), 1500, '1,500 posts start without a counter row');
is(q1($LIKE_COUNTS_WRONG), '1', "the feed generator's like count starts wrong");

$r = $rig->run($sluiced, '-c', $conf, '--recount');
is($r->[0], 0, 'sluiced --recount exits 0') or diag($r->[1]);
like($r->[1], qr/4501 posts recounted, 3000 counter rows changed, 1500 created, 1 generator\/labeler like counts changed/,
     'it reports what it changed') or diag($r->[1]);
like($r->[1], qr{\Q${pre}\E1 likes 1->2 reposts 0->0 replies 2->1 quotes 0->0}, '... with examples');
is(q1("SELECT like_count FROM post_aggregations WHERE post_uri = '${pre}4501'"), '0',
   'a like whose delta is not folded yet: left to the fold');
is(q1('SELECT sluice_fold_counters(true)'), '1', 'the fold takes that delta');
is(q1($COUNTERS_WRONG), '0', 'every counter equals its rows');
is(q1($MISSING), 0, 'every post and counted subject has a counter row');
is(q1($LIKE_COUNTS_WRONG), '0', "the feed generator's like count equals its likes");

$r = $rig->run($sluiced, '-c', $conf, '--recount');
like($r->[1], qr/4501 posts recounted, 0 counter rows changed, 0 created, 0 generator/,
     'a second run changes nothing') or diag($r->[1]);

# ---- beside a worker: likes and unlikes of the same posts while it runs --
q1("UPDATE post_aggregations SET like_count = like_count + 7 WHERE post_uri IN ('${pre}1', '${pre}2')");
my $JSON = JSON::PP->new->canonical;
my @cmds;
my $seq = 0;
for my $i (1 .. 400) {
    my $who = did("fan$i");
    my $post = $pre . (1 + $i % 20);
    my $op = { action => 'create', path => "$L/r$i", cid => "bafy$i",
               record => { '$type' => $L, subject => { uri => $post, cid => 'c' },
                           createdAt => '2024-05-01T12:00:00Z' } };
    push @cmds, ['XADD', $stream, '*', 'type', 'commit', 'seq', ++$seq,
                 'data', $JSON->encode({ repo => $who, ops => [$op] })];
    push @cmds, ['XADD', $stream, '*', 'type', 'commit', 'seq', ++$seq,
                 'data', $JSON->encode({ repo => $who, ops => [{ action => 'delete', path => "$L/r$i" }] })]
      if $i % 3 == 0;
}
my $pid = $rig->spawn('w', $sluiced, '-c', $conf, '--worker', 'recount-1');
like($rig->redis_batch(@cmds), qr/errors: 0\b/, scalar(@cmds) . ' likes and unlikes added');
my @runs;
for (1 .. 3) {
    my $x = $rig->run($sluiced, '-c', $conf, '--recount');
    push @runs, $x->[0];
}
is_deeply(\@runs, [0, 0, 0], 'three recounts while the worker runs, each exits 0');
ok($rig->wait_drained($stream, $group, 60), 'the worker applied every entry');
ok(wait_counters_folded($rig), 'and folded its counters');
is(q1($COUNTERS_WRONG), '0', 'every counter equals its rows after recounts beside the worker');
is(q1("SELECT sum(like_count) FROM post_aggregations WHERE post_uri IN (SELECT '$pre' || i FROM generate_series(1, 20) i)"),
   q1("SELECT count(*) FROM likes WHERE post_uri IN (SELECT '$pre' || i FROM generate_series(1, 20) i)"),
   'the liked posts count their likes, none lost or doubled');

kill 'TERM', $pid;
$rig->wait_exit($pid, 30);
$rig->finish;
done_testing;
