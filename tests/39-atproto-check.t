#!/usr/bin/perl
# `sluiced --check`: one row of each kind of inconsistency a mix of old
# workers and sluice leaves (a counter off its rows, a liked post without
# a counter row, a feed item, a quote and a notification of a deleted
# record, an empty and a dangling viewer state, a follow subject without a
# users row) is reported with its count and an example, and the exit
# status is 1; a delta not folded yet is no inconsistency; once the rows
# agree the report says so and the status is 0; --check=SCAN bounds the
# rows read; a bad SCAN is a usage error.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use AtprotoNames qw(did uri $P $L $R $FO);
use Test::More;

my $rig = SluiceRig->new(redis => 0);
my $sluiced = $rig->bin('sluiced');
my $conf = $rig->write_config();
my $r = $rig->run($sluiced, '-c', $conf, '--init-schema');
is($r->[0], 0, 'schema applied') or diag($r->[1]);
sub q1 { return $rig->psql($_[0]) }

my ($A, $B, $C) = (did('alice'), did('bob'), did('carol'));
my %U = (p1 => uri($A, $P, 'p1'), p2 => uri($A, $P, 'p2'), gone => uri($B, $P, 'gone'),
         l1 => uri($B, $L, 'l1'), l2 => uri($C, $L, 'l2'), lgone => uri($C, $L, 'lgone'),
         rgone => uri($B, $R, 'rgone'), f1 => uri($A, $FO, 'f1'));
my $T = 'now()';
q1(join "\n",
   "INSERT INTO users (did, handle) VALUES ('$A', 'a.test'), ('$B', 'b.test'), ('$C', 'c.test');",
   "INSERT INTO posts (uri, cid, author_did, text, created_at) VALUES ('$U{p1}', 'c', '$A', 't', $T), ('$U{p2}', 'c', '$A', 't', $T);",
   "INSERT INTO likes (uri, user_did, post_uri, created_at) VALUES ('$U{l1}', '$B', '$U{p1}', $T), ('$U{l2}', '$C', '$U{p2}', $T);",
   # p1 counts 3 likes for its one; p2 has no counter row
   "INSERT INTO post_aggregations (post_uri, like_count) VALUES ('$U{p1}', 3);",
   # what deleted records produced
   "INSERT INTO feed_items (uri, post_uri, originator_did, type, sort_at, cid, created_at) VALUES"
   . " ('$U{p1}', '$U{p1}', '$A', 'post', $T, 'c', $T), ('$U{gone}', '$U{gone}', '$B', 'post', $T, 'c', $T);",
   "INSERT INTO quotes (uri, cid, post_uri, quoted_uri, created_at) VALUES ('$U{gone}#quote', 'c', '$U{gone}', '$U{p1}', $T);",
   "INSERT INTO post_aggregations (post_uri, quote_count) VALUES ('$U{gone}', 0);",
   "INSERT INTO notifications (uri, recipient_did, author_did, reason, reason_subject, created_at) VALUES"
   . " ('$U{l1}#notification', '$A', '$B', 'like', '$U{p1}', $T), ('$U{lgone}#notification', '$A', '$C', 'like', '$U{p1}', $T);",
   "INSERT INTO post_viewer_states (post_uri, viewer_did, like_uri, repost_uri) VALUES"
   . " ('$U{p1}', '$B', '$U{l1}', NULL), ('$U{p2}', '$C', '$U{l2}', NULL), ('$U{p1}', '$C', NULL, NULL), ('$U{p2}', '$B', NULL, '$U{rgone}');",
   "INSERT INTO post_aggregations (post_uri) VALUES ('$U{p2}') ON CONFLICT DO NOTHING;",
   "DELETE FROM post_aggregations WHERE post_uri = '$U{p2}';",
   # a follow of a DID with no users row
   "INSERT INTO follows (uri, follower_did, following_did, created_at) VALUES ('$U{f1}', '$A', 'did:plc:nobody', $T);");

$r = $rig->run($sluiced, '-c', $conf, '--check');
is($r->[0], 1, 'inconsistent rows: exit 1') or diag($r->[1]);
my $out = $r->[1];
for my $c (['counters that differ from their rows', 1, qr{\Q$U{p1}\E likes 3/1}],
           ['posts and counted subjects without a counter row', 1, qr{\Q$U{p2}\E}],
           ['feed items whose record is gone', 1, qr{\Q$U{gone}\E \(post\)}],
           ['quotes whose post is gone', 1, qr{\Q$U{gone}\E#quote}],
           ['notifications whose record is gone', 1, qr{\Q$U{lgone}\E#notification}],
           ['viewer states without a live like, repost or flag', 2, qr{\Q$U{p2}\E viewer \Q$B\E}],
           ['actors and subjects without a users row', 1, qr{did:plc:nobody}]) {
    like($out, qr/^\Q$c->[0]\E +$c->[1]$/m, "$c->[0]: $c->[1]") or diag($out);
    like($out, $c->[2], '... with an example');
}
like($out, qr/^inconsistent/m, 'the report ends inconsistent');

$r = $rig->run($sluiced, '-c', $conf, '--check=1');
like($r->[1], qr/at most 1 rows of each table/, '--check=1 reads at most one row a table');
is($rig->run($sluiced, '-c', $conf, '--check=x')->[0], 64, '--check=x: usage error');

# a delta committed and not folded yet is no inconsistency
q1(join "\n",
   "UPDATE post_aggregations SET like_count = 0 WHERE post_uri = '$U{p1}';",
   "INSERT INTO sluice_counter_delta (uri, likes) VALUES ('$U{p1}', 1);",
   "INSERT INTO sluice_counter_delta (uri) VALUES ('$U{p2}');",
   "DELETE FROM feed_items WHERE uri = '$U{gone}';",
   "DELETE FROM quotes WHERE post_uri = '$U{gone}';",
   "DELETE FROM notifications WHERE uri = '$U{lgone}#notification';",
   "DELETE FROM post_viewer_states WHERE like_uri IS NULL;",
   "INSERT INTO users (did, handle) VALUES ('did:plc:nobody', 'handle.invalid');");
$r = $rig->run($sluiced, '-c', $conf, '--check=0');
is($r->[0], 0, 'consistent rows (a delta pending): exit 0') or diag($r->[1]);
like($r->[1], qr/^consistent$/m, '... and the report says so');
like($r->[1], qr/\(every row\)/, '--check=0 reads every row');

$rig->finish;
done_testing;
