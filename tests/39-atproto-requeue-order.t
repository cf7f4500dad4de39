#!/usr/bin/perl
# A requeued dead letter keeps its place in the order. A post the worker
# dead-lettered (no text), then deleted in the stream, then fixed and
# requeued with sluice-deadletter: the requeue carries the entry's first
# ID (orig_id), so the late create is older than the delete and the post
# stays deleted. A second dead-lettered post, not deleted, is requeued the
# same way and applied; requeued twice, it still carries the first ID.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use AtprotoNames qw(did uri $P);
use Test::More;
use JSON::PP;

my $JSON = JSON::PP->new->canonical;
my $rig = SluiceRig->new;
my $sluiced = $rig->bin('sluiced');
my $tool = $rig->bin('sluice-deadletter');
my $stream = 'firehose:events';
my $group = 'firehose-processors';
my $conf = $rig->write_config(batch_size => 16, batch_timeout_ms => 50, block_ms => 200);
is($rig->run($sluiced, '-c', $conf, '--init-schema')->[0], 0, 'schema');

my $A = did('requeuer');
my ($gone, $kept) = (uri($A, $P, 'gone'), uri($A, $P, 'kept'));
sub commit { return ('type', 'commit', 'data', $JSON->encode({ repo => $A, ops => [@_] }), 'seq', '') }
my $T = '2024-05-01T12:00:00Z';
my $bad_gone = $rig->redis('XADD', $stream, '*',
    commit({ action => 'create', path => "$P/gone", cid => 'bafyg', record => { createdAt => $T } }));
my $bad_kept = $rig->redis('XADD', $stream, '*',
    commit({ action => 'create', path => "$P/kept", cid => 'bafyk', record => { createdAt => $T } }));
$rig->redis('XADD', $stream, '*', commit({ action => 'delete', path => "$P/gone" }));
my $pid = $rig->spawn('w', $sluiced, '-c', $conf, '--worker', 'rq-1');
ok($rig->wait_drained($stream, $group, 30), 'drained');
my %dead = map { ($_->[1]{id} => $_->[0]) } $rig->stream_entries("$stream:dead");
ok($dead{$bad_gone} && $dead{$bad_kept}, 'both posts without text are dead letters');

for my $orig ($bad_gone, $bad_kept) {
    my $rkey = $orig eq $bad_gone ? 'gone' : 'kept';
    my $fixed = $JSON->encode({ repo => $A, ops => [{ action => 'create', path => "$P/$rkey", cid => "bafy$rkey",
        record => { text => "fixed $rkey", createdAt => $T } }] });
    my $r = $rig->run($tool, '-c', $conf, 'requeue', '--set', "data=$fixed", $dead{$orig});
    is($r->[0], 0, "requeue $rkey: exit 0") or diag($r->[1]);
}
my @main = $rig->stream_entries($stream);
is($main[-1][1]{orig_id}, $bad_kept, 'the requeued entry carries the ID it first had');
ok($rig->wait_drained($stream, $group, 30), 'the requeued entries are applied');
is($rig->psql("SELECT count(*) FROM posts WHERE uri = '$gone'"), 0,
   'the post deleted after it was dead-lettered stays deleted');
is($rig->psql("SELECT text FROM posts WHERE uri = '$kept'"), 'fixed kept', 'the other post is there, fixed');

# dead-lettered again (the fix refused once more) and requeued: still the first ID
my $again = $JSON->encode({ repo => $A, ops => [{ action => 'create', path => "$P/again", cid => 'bafya',
    record => { createdAt => $T } }] });
my $first = $rig->redis('XADD', $stream, '*', 'type', 'commit', 'data', $again, 'seq', '');
ok($rig->wait_drained($stream, $group, 30), 'a third bad post drained');
my ($d1) = grep { $_->[1]{id} eq $first } $rig->stream_entries("$stream:dead");
is($rig->run($tool, '-c', $conf, 'requeue', $d1->[0])->[0], 0, 'requeued unfixed');
ok($rig->wait_drained($stream, $group, 30), 'dead-lettered again');
my ($d2) = grep { ($_->[1]{'f:orig_id'} // '') eq $first } $rig->stream_entries("$stream:dead");
ok($d2, 'the second dead letter holds the first ID as orig_id');
is($rig->run($tool, '-c', $conf, 'requeue', $d2->[0])->[0], 0, 'requeued again');
my $raw = $rig->redis_resp('XREVRANGE', $stream, '+', '-', 'COUNT', '1');
my @fields = @{ $raw->[0][1] };
my %last = @fields;
is($last{orig_id}, $first, 'requeued twice, the entry still carries its first ID');
is(scalar(grep { $_ eq 'orig_id' } @fields), 1, 'and only once');

kill 'TERM', $pid;
is($rig->wait_exit($pid, 30), 0, 'worker exits cleanly');
$rig->finish;
done_testing;
