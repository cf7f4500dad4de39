#!/usr/bin/perl
# The old workers' names for what a record produced. The TypeScript
# consumer and the Python worker name a notification after its record with
# a suffix (<uri>#notification for a like, repost or follow;
# #notification/reply, /quote and /mention/<did> for a post, the mention
# found by looking the text's @handle up in users) and a quote
# <uri>#quote. Rows written that way (the appview's own tables, no sluice
# state), then through sluice_apply_stage(): deletes remove every one of
# them and move the counters; an update retracts them; a record they
# wrote that reaches sluice again (a redelivery) gets no second
# notification; a duplicate that takes a pair over from their row removes
# that row's notification. Counters equal the rows throughout.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use AtprotoStage;
use AtprotoNames qw(did uri $P $L $R $FO);
use AtprotoTables qw($COUNTERS_WRONG);
use Test::More;

my ($A, $B, $C, $D) = map { did($_) } qw(alice bob carol dave);
my %U = (
    root  => uri($A, $P, 'root'),     # A's post, stays
    q     => uri($C, $P, 'q'),        # C's post, quoted by reply, stays
    reply => uri($B, $P, 'reply'),    # B's reply to root quoting q, mentions @dave.test; deleted
    r3    => uri($D, $P, 'r3'),       # D's reply to root; its create arrives again
    edit  => uri($C, $P, 'edit'),     # C's reply to root; updated to no longer reply
    like  => uri($C, $L, 'like'),     # C likes root; deleted
    like2 => uri($B, $L, 'like2'),    # B likes root; its create arrives again
    likez => uri($B, $L, 'zz'),       # B likes q; a duplicate with a smaller rkey takes over
    likea => uri($B, $L, 'aa'),       # ... that duplicate, sluice's
    rep   => uri($D, $R, 'rep'),      # D reposts root; deleted
    fol   => uri($A, $FO, 'fol'),     # A follows B; deleted
);

my $rig = SluiceRig->new(redis => 0);
my $db = 'names';
$rig->create_database($db);
my $r = $rig->psql_file('tests/data/appview-tables.sql', $db);
is($r->[0], 0, "the appview's tables created") or diag($r->[1]);
$r = psql_script($rig, $db, schema_text());
is($r->[0], 0, 'the schema applied over them') or diag($r->[1]);

# ---- the rows, as the old workers write them --------------------------------
my $T = "'2024-05-01 12:00:00'";
my $n = sub { my ($uri, $sfx, $to, $from, $why, $subj) = @_;
              my $s = defined $subj ? "'$subj'" : 'NULL';
              return "('$uri#notification$sfx', '$to', '$from', '$why', $s, $T)" };
my $sql = join "\n",
  "INSERT INTO users (did, handle) VALUES ('$A', 'alice.test'), ('$B', 'bob.test'), ('$C', 'carol.test'), ('$D', 'dave.test');",
  "INSERT INTO posts (uri, cid, author_did, text, created_at) VALUES ('$U{root}', 'c1', '$A', 'root', $T), ('$U{q}', 'c2', '$C', 'quoted', $T);",
  "INSERT INTO posts (uri, cid, author_did, text, parent_uri, parent_cid, root_uri, root_cid, embed, created_at) VALUES"
  . " ('$U{reply}', 'c3', '$B', 'hi \@dave.test', '$U{root}', 'c1', '$U{root}', 'c1',"
  . " '{\"\$type\": \"app.bsky.embed.record\", \"record\": {\"uri\": \"$U{q}\", \"cid\": \"c2\"}}', $T),"
  . " ('$U{r3}', 'c4', '$D', 'again', '$U{root}', 'c1', '$U{root}', 'c1', NULL, $T),"
  . " ('$U{edit}', 'c5', '$C', 'before the edit', '$U{root}', 'c1', '$U{root}', 'c1', NULL, $T);",
  "INSERT INTO feed_items (uri, post_uri, originator_did, type, sort_at, cid, created_at) VALUES"
  . join(',', map { " ('$U{$_->[0]}', '$U{$_->[0]}', '$_->[1]', 'post', $T, 'c', $T)" }
         [root => $A], [q => $C], [reply => $B], [r3 => $D], [edit => $C])
  . ", ('$U{rep}', '$U{root}', '$D', 'repost', $T, 'c', $T);",
  "INSERT INTO quotes (uri, cid, post_uri, quoted_uri, quoted_cid, created_at) VALUES"
  . " ('$U{reply}#quote', 'c3', '$U{reply}', '$U{q}', 'c2', $T);",
  "INSERT INTO likes (uri, user_did, post_uri, subject_cid, created_at) VALUES"
  . " ('$U{like}', '$C', '$U{root}', 'c1', $T), ('$U{like2}', '$B', '$U{root}', 'c1', $T), ('$U{likez}', '$B', '$U{q}', 'c2', $T);",
  "INSERT INTO reposts (uri, user_did, post_uri, subject_cid, created_at) VALUES ('$U{rep}', '$D', '$U{root}', 'c1', $T);",
  "INSERT INTO follows (uri, follower_did, following_did, created_at) VALUES ('$U{fol}', '$A', '$B', $T);",
  "INSERT INTO post_viewer_states (post_uri, viewer_did, like_uri, repost_uri) VALUES"
  . " ('$U{root}', '$C', '$U{like}', NULL), ('$U{root}', '$B', '$U{like2}', NULL), ('$U{q}', '$B', '$U{likez}', NULL),"
  . " ('$U{root}', '$D', NULL, '$U{rep}');",
  "INSERT INTO post_aggregations (post_uri, like_count, repost_count, reply_count, quote_count) VALUES"
  . " ('$U{root}', 2, 1, 3, 0), ('$U{q}', 1, 0, 0, 1), ('$U{reply}', 0, 0, 0, 0), ('$U{r3}', 0, 0, 0, 0), ('$U{edit}', 0, 0, 0, 0);",
  "INSERT INTO notifications (uri, recipient_did, author_did, reason, reason_subject, created_at) VALUES "
  . join(', ', $n->($U{reply}, '/reply', $A, $B, 'reply', $U{reply}), $n->($U{reply}, '/quote', $C, $B, 'quote', $U{reply}),
         $n->($U{reply}, "/mention/$D", $D, $B, 'mention', $U{reply}), $n->($U{r3}, '/reply', $A, $D, 'reply', $U{r3}),
         $n->($U{edit}, '/reply', $A, $C, 'reply', $U{edit}), $n->($U{like}, '', $A, $C, 'like', $U{root}),
         $n->($U{like2}, '', $A, $B, 'like', $U{root}), $n->($U{likez}, '', $C, $B, 'like', $U{q}),
         $n->($U{rep}, '', $A, $D, 'repost', $U{root}), $n->($U{fol}, '', $B, $A, 'follow', undef)) . ';';
$r = psql_script($rig, $db, $sql);
is($r->[0], 0, "the old workers' rows written") or diag($r->[1]);
is(q1($rig, $db, 'SELECT count(*) FROM notifications'), 10, 'ten notifications, none named by its record URI alone');
is(q1($rig, $db, $COUNTERS_WRONG), '0', 'the counters start true');

# ---- through sluice ------------------------------------------------------------
my $subj = sub { my ($u, $c) = @_; return { subject => { uri => $u, cid => $c }, createdAt => '2024-05-01T12:00:00Z' } };
my $reply_to_root = { text => 'again', createdAt => '2024-05-01T12:00:00Z',
                      reply => { root => { uri => $U{root}, cid => 'c1' }, parent => { uri => $U{root}, cid => 'c1' } } };
ok(apply_batches($rig, $db, [
    del(1000, $B, $P, 'reply'), del(1001, $C, $L, 'like'), del(1002, $D, $R, 'rep'), del(1003, $A, $FO, 'fol'),
    upd(1004, $C, $P, 'edit', { text => 'after the edit', createdAt => '2024-05-02T12:00:00Z' }),
    cr(1005, $B, $L, 'like2', $subj->($U{root}, 'c1'), cid => 'c-like2'),
    cr(1006, $D, $P, 'r3', $reply_to_root, cid => 'c4'),
    cr(1007, $B, $L, 'aa', $subj->($U{q}, 'c2')),
]), 'deletes, an update, two redeliveries and a duplicate applied');

sub names_of { my ($u) = @_; return q1($rig, $db, "SELECT string_agg(uri, ' ' ORDER BY uri) FROM notifications "
                                      . "WHERE uri = '$u' OR uri LIKE '$u#%'") }
is(names_of($U{reply}), '', 'deleted post: its reply, quote and mention notifications are gone')
  or diag(names_of($U{reply}));
is(q1($rig, $db, "SELECT count(*) FROM quotes WHERE post_uri = '$U{reply}'"), 0, '... and its #quote row');
is(q1($rig, $db, "SELECT count(*) FROM feed_items WHERE uri = '$U{reply}'"), 0, '... and its feed item');
is(names_of($U{like}), '', 'deleted like: its #notification is gone');
is(names_of($U{rep}), '', 'deleted repost: its #notification is gone');
is(q1($rig, $db, "SELECT count(*) FROM feed_items WHERE uri = '$U{rep}'"), 0, '... and its feed item');
is(names_of($U{fol}), '', 'deleted follow: its #notification is gone');
is(names_of($U{edit}), '', 'updated post, no longer a reply: its #notification/reply is retracted');
is(names_of($U{like2}), "$U{like2}#notification", 'redelivered like: the old notification, no second one');
is(names_of($U{r3}), "$U{r3}#notification/reply", 'redelivered reply: the old notification, no second one');
is(q1($rig, $db, "SELECT uri FROM likes WHERE user_did = '$B' AND post_uri = '$U{q}'"), $U{likea},
   'a duplicate with a smaller URI takes the pair over from the old row');
is(names_of($U{likez}), '', "... the old row's notification goes");
is(names_of($U{likea}), $U{likea}, '... and the new owner is notified under its own name');
is(q1($rig, $db, "SELECT like_uri FROM post_viewer_states WHERE post_uri = '$U{q}' AND viewer_did = '$B'"), $U{likea},
   '... and owns the viewer state');
is(q1($rig, $db, "SELECT like_count || ' ' || repost_count || ' ' || reply_count || ' ' || quote_count "
                 . "FROM post_aggregations WHERE post_uri = '$U{root}'"), '1 0 1 0',
   'root: one like, no repost, one reply left (r3; edit is no longer one)');
is(q1($rig, $db, "SELECT like_count || ' ' || quote_count FROM post_aggregations WHERE post_uri = '$U{q}'"), '1 0',
   'quoted post: the quote gone, the like counted once');
is(q1($rig, $db, $COUNTERS_WRONG), '0', 'every counter equals its rows');

$rig->finish;
done_testing;
