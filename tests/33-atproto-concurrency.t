#!/usr/bin/perl
# Many sessions applying batches at once, as several workers do: likes and
# reposts of one hot post (and of a few others) from shared users, in
# overlapping batches (every like is also applied by a second session, as a
# redelivery would), in different orders. No session fails (no deadlock),
# no increment is lost or doubled: each counter equals its rows.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use AtprotoStage;
use Test::More;

my $rig = SluiceRig->new(redis => 0);
new_db($rig, 'c');

my $hot = 'at://did:plc:star/app.bsky.feed.post/hot';
my @warm = map { "at://did:plc:warm$_/app.bsky.feed.post/w$_" } 1 .. 5;
my $W = 4;          # sessions
my $PER = 300;      # likes of the hot post per session
srand(33);
my @own;            # ops per session
my $ms = 1000;
for my $w (0 .. $W - 1) {
    for my $i (1 .. $PER) {
        my $u = "did:plc:u" . int(rand 400);    # users shared by all sessions
        my $rk = "w${w}i$i";
        push @{ $own[$w] }, cr(++$ms, $u, 'app.bsky.feed.like', $rk, { subject => { uri => $hot, cid => 'c' } });
        push @{ $own[$w] }, cr(++$ms, $u, 'app.bsky.feed.repost', $rk, { subject => { uri => $hot, cid => 'c' } })
          if $i % 3 == 0;
        push @{ $own[$w] }, cr(++$ms, $u, 'app.bsky.feed.like', "x$rk", { subject => { uri => $warm[$i % 5], cid => 'c' } })
          if $i % 2 == 0;
    }
}
# Users are shared, so one user often likes the hot post under several
# rkeys in several sessions at once: the pair's row goes to the smallest
# URI, counted once.
my @scripts;
for my $w (0 .. $W - 1) {
    my @mine = @{ $own[$w] };
    my @theirs = @{ $own[($w + 1) % $W] }[0 .. 199];   # a redelivery of another session's entries
    my @all = $w % 2 ? reverse(@mine, @theirs) : (@theirs, @mine);
    my @batches;
    while (@all) { push @batches, [splice @all, 0, 20 + int rand 60] }
    my $sql = "CREATE TEMP TABLE IF NOT EXISTS sluice_stage (LIKE sluice_stage_template INCLUDING DEFAULTS);\n";
    $sql .= "BEGIN;\n" . stage_sql(@$_) . "SELECT sluice_apply_stage();\nCOMMIT;\nSELECT sluice_fold_counters(true);\n" for @batches;
    push @scripts, $sql;
}

my %pid;
for my $w (0 .. $W - 1) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        my $r = psql_script($rig, 'c', $scripts[$w]);
        open my $fh, '>', $rig->dir . "/session$w.out" or POSIX::_exit(2);
        print $fh $r->[1];
        close $fh;
        POSIX::_exit($r->[0]);
    }
    $pid{$w} = $pid;
}
for my $w (0 .. $W - 1) {
    my $st = $rig->wait_exit($pid{$w}, 600);
    my $out = do { local $/; open my $fh, '<', $rig->dir . "/session$w.out"; <$fh> // '' };
    is($st, 0, "session $w applied all its batches") or diag($out);
    unlike($out, qr/deadlock|ERROR/i, "session $w: no deadlock, no error");
}

# Expected: one like row per distinct (user, post) pair among all likes.
my (%likes, %reposts);
for my $o (map { @$_ } @own) {
    my $k = "$o->{did} $o->{rec}{subject}{uri}";
    ($o->{coll} =~ /like/ ? \%likes : \%reposts)->{$k} = 1;
}
my $want_hot = grep { / \Q$hot\E$/ } keys %likes;
my $want_rep = grep { / \Q$hot\E$/ } keys %reposts;
is(q1($rig, 'c', "SELECT like_count || ' ' || repost_count FROM post_aggregations WHERE post_uri = '$hot'"),
   "$want_hot $want_rep", 'hot post: like and repost counts equal the distinct likers and reposters');
is(q1($rig, 'c', "SELECT count(*) FROM likes WHERE post_uri = '$hot'"), $want_hot, 'hot post: like rows');
is(q1($rig, 'c', <<'SQL'), '0', 'every counter equals its rows');
SELECT count(*) FROM post_aggregations a
 WHERE like_count <> (SELECT count(*) FROM likes WHERE post_uri = a.post_uri)
    OR repost_count <> (SELECT count(*) FROM reposts WHERE post_uri = a.post_uri)
SQL
is(q1($rig, 'c', "SELECT count(*) FROM likes"), scalar(keys %likes), 'all like pairs present');
is(q1($rig, 'c', <<'SQL'), '0', 'each like row is owned by the smallest live URI of its pair');
SELECT count(*) FROM likes l
 WHERE l.uri <> (SELECT min(uri) FROM sluice_record_state s
                  WHERE s.collection = 'app.bsky.feed.like' AND s.pair = l.user_did || ' ' || l.post_uri)
SQL
is(q1($rig, 'c', "SELECT count(*) FROM notifications WHERE reason = 'like'"), scalar(keys %likes),
   'one notification per like row');


$rig->finish;
done_testing;
