#!/usr/bin/perl
# Hot keys and many workers, and not one deadlock. A backlog in which a
# few users and a few posts are in almost every entry (likes, reposts and
# unlikes of the same posts, replies in one thread and the root author's
# likes of them, follows among the same users, profile updates, gates) is
# drained by sluiced with five workers and small batches, so that their
# transactions overlap all the time. PostgreSQL must detect no deadlock
# in the database (pg_stat_database), the stats segment must count no
# deadlock retry, every entry must be applied and acked, and every
# counter must equal the rows it counts.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use AtprotoNames qw(did uri $P $L $R $FO $PR $TG);
use AtprotoTables qw($COUNTERS_WRONG wait_counters_folded);
use Test::More;
use JSON::PP qw(decode_json);

my $JSON = JSON::PP->new->canonical;
my $rig = SluiceRig->new;
my $stream = 'firehose:events';
my $group = 'firehose-processors';
my $shm = "/sluice-t38-$$";
my $N = 6000;

# ---- the backlog: a deterministic mix over few users and posts -------------------
my $seed = 38;
sub rnd { $seed = ($seed * 1103515245 + 12345) % 2147483648; return $seed % $_[0] }
my @users = map { did("hot$_") } 1 .. 12;
my $root = uri($users[0], $P, 'root');
my @posts = ($root, map { uri($users[$_], $P, "p$_") } 1 .. 5);
my $T = '2024-05-01T12:00:00Z';
my (@likes, @follows, @cmds);
sub commit {
    my ($repo, @ops) = @_;
    push @cmds, ['XADD', $stream, '*', 'type', 'commit',
        'data', $JSON->encode({ repo => $repo, ops => \@ops }), 'seq', scalar @cmds];
}
sub create { my ($c, $k, $rec) = @_; return { action => 'create', path => "$c/$k", cid => "bafy$k", record => $rec } }
sub remove { my ($c, $k) = @_; return { action => 'delete', path => "$c/$k" } }
sub subject { return { subject => { uri => $_[0], cid => 'bafysubj' }, createdAt => $T } }

commit($users[0], create($P, 'root', { text => 'the thread', createdAt => $T }));
commit($users[$_], create($P, "p$_", { text => "post $_", createdAt => $T })) for 1 .. 5;
for my $i (1 .. $N) {
    my $u = $users[rnd(scalar @users)];
    my $post = $posts[rnd(scalar @posts)];
    my $x = rnd(100);
    if ($x < 45) {
        commit($u, create($L, "l$i", subject($post)));
        push @likes, [$u, "l$i", $post];
    } elsif ($x < 55) {
        commit($u, create($R, "r$i", subject($post)));
    } elsif ($x < 65) {
        commit($u, create($P, "q$i", { text => "reply $i", createdAt => $T,
            reply => { root => { uri => $root, cid => 'bafyroot' }, parent => { uri => $post, cid => 'bafyp' } } }));
        push @posts, uri($u, $P, "q$i");
    } elsif ($x < 72) {
        my $reply = $posts[-1 - rnd(3)];
        commit($users[0], create($L, "rl$i", subject($reply)));
        push @likes, [$users[0], "rl$i", $reply];
    } elsif ($x < 82 && @likes) {
        my $l = splice @likes, rnd(scalar @likes), 1;
        commit($l->[0], remove($L, $l->[1]));
    } elsif ($x < 90) {
        commit($u, create($FO, "f$i", { subject => $users[rnd(scalar @users)], createdAt => $T }));
        push @follows, [$u, "f$i"];
    } elsif ($x < 94 && @follows) {
        my $f = splice @follows, rnd(scalar @follows), 1;
        commit($f->[0], remove($FO, $f->[1]));
    } elsif ($x < 97) {
        commit($u, { action => 'update', path => "$PR/self", cid => "bafypr$i",
            record => { displayName => "user $i", createdAt => $T } });
    } else {
        my ($rkey) = $post =~ m{/([^/]+)$};
        my ($repo) = $post =~ m{^at://([^/]+)/};
        commit($repo, create($TG, $rkey, { post => $post, allow => [], createdAt => $T }));
    }
}
$rig->redis_batch(@cmds);
is($rig->redis('XLEN', $stream), scalar @cmds, scalar(@cmds) . ' entries in the stream');

# ---- five workers, small batches --------------------------------------------------
my $conf = $rig->write_config(parallel_consumers => 5, batch_size => 10, batch_timeout_ms => 20,
    block_ms => 200, stats_interval_ms => 500, stats_name => $shm);
my $r = $rig->run($rig->bin('sluiced'), '-c', $conf, '--init-schema');
is($r->[0], 0, 'schema applied') or diag($r->[1]);
sub deadlocks_detected {
    return $rig->psql(q{SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()});
}
my $before = deadlocks_detected();
my $sup = $rig->spawn('sluiced', $rig->bin('sluiced'), '-c', $conf);
ok($rig->wait_drained($stream, $group, 240), 'five workers drained the backlog');
ok(wait_counters_folded($rig, $rig->psql('SELECT current_database()')), 'the counters are folded');

is(deadlocks_detected() - $before, 0, 'PostgreSQL detected no deadlock');
my $st = $rig->run($rig->bin('sluicectl'), '-c', $conf, 'stats', '--json');
is($st->[0], 0, 'sluicectl stats --json') or diag($st->[1]);
my $stats = eval { decode_json($st->[1]) } // {};
is(scalar @{ $stats->{workers} // [] }, 5, 'five workers in the stats segment');
my $total = $stats->{total} // {};
is($total->{deadlocks}, 0, 'no batch was retried after a deadlock');
cmp_ok($total->{acks} // 0, '>=', scalar @cmds, 'every entry acked') or diag($st->[1]);
# one row per live (user, post) pair, whichever of its likes owns it
my %pairs = map { ("$_->[0] $_->[2]" => 1) } @likes;
is($rig->psql(q{SELECT count(*) FROM likes}), scalar keys %pairs, 'one likes row per live pair');
is($rig->psql($COUNTERS_WRONG), 0, 'every counter equals the rows it counts');

kill 'TERM', $sup;
is($rig->wait_exit($sup, 60), 0, 'sluiced stops cleanly');
$rig->finish;
done_testing;
