#!/usr/bin/perl
# sluice-deadletter: an entry the worker dead-lettered (malformed data) is
# listed and shown with its reason and original fields; fixed with --set
# and requeued, it lands in the main stream with its fields in their
# original order, leaves the dead stream, and the worker applies it. Unknown
# IDs give exit 1; purge removes dead letters.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;

my $rig = SluiceRig->new;
my $sluiced = $rig->bin('sluiced');
my $tool = $rig->bin('sluice-deadletter');
my $stream = 'firehose:events';
my $group = 'firehose-processors';
my $conf = $rig->write_config(sink => 'raw', batch_size => 16,
    batch_timeout_ms => 50, block_ms => 200, claim_idle_ms => 60000,
    claim_interval_ms => 60000);
is($rig->run($sluiced, '-c', $conf, '--init-schema')->[0], 0, 'schema');

$rig->redis('XADD', $stream, '*', 'type', 'commit', 'data', qq({"n":$_}))
  for 1 .. 3;
my $bad_id = $rig->redis('XADD', $stream, '*', 'type', 'commit',
    'data', '{"n": 4, "broken": nope}', 'marker', 'm4');
$rig->spawn('w', $sluiced, '-c', $conf, '--worker', 'dl-1');
ok($rig->wait_until(sub {
    my $g = $rig->group_info($stream, $group);
    $g && $g->{pending} == 0 && $g->{lag} == 0 }, 60), 'every entry decided');
is($rig->psql('select count(*) from events'), 3, 'the 3 good entries applied');
my @dead = $rig->stream_entries("$stream:dead");
is(scalar @dead, 1, 'the bad entry is dead-lettered');
my $dead_id = $dead[0][0];

my $r = $rig->run($tool, '-c', $conf, 'list');
is($r->[0], 0, 'list: exit 0');
like($r->[1], qr/^\Q$dead_id\E\s+\Q$bad_id\E\s+\d+\s+dl-1\s+\S+\s+data: .*JSON/mi,
  'list: dead ID, original ID, deliveries, consumer, time, reason');
like($r->[1], qr/1 dead letter\(s\) shown from \Q$stream\E:dead/, 'list: count');

$r = $rig->run($tool, '-c', $conf, 'show', $dead_id);
is($r->[0], 0, 'show: exit 0');
like($r->[1], qr/original-id: \Q$bad_id\E/, 'show: original ID');
like($r->[1], qr/reason:\s+data: .*JSON/i, 'show: the reason');
like($r->[1], qr/fields:\n  type: commit\n  data: \{"n": 4, "broken": nope\}\n  marker: m4\n/,
  'show: the original fields in order');

$r = $rig->run($tool, '-c', $conf, 'requeue', '--set', 'data={"n": 4, "fixed": true}',
    $dead_id);
is($r->[0], 0, 'requeue with a fixed data field: exit 0') or diag($r->[1]);
like($r->[1], qr/requeued \Q$dead_id\E \(originally \Q$bad_id\E\) to \Q$stream\E as \d+-\d+/,
  'requeue: says where it went');
is($rig->redis('XLEN', "$stream:dead"), 0, 'the dead letter is gone');
my $raw = $rig->redis_resp('XREVRANGE', $stream, '+', '-', 'COUNT', 1);
is_deeply($raw->[0][1], ['type', 'commit', 'data', '{"n": 4, "fixed": true}',
    'marker', 'm4', 'orig_id', $bad_id],
    'the requeued entry: original fields, original order, fixed value, and the ID it first had');
ok($rig->wait_until(sub {
    $rig->psql(q{select count(*) from events where (payload->>'fixed')::bool}) == 1 }, 60),
  'the worker applies the requeued entry');
is($rig->psql('select count(*) from events'), 4, 'now 4 rows');

# requeue without --set, and the error cases
$rig->redis('XADD', "$stream:dead", '*', 'id', '1-1', 'reason', 'test',
    'deliveries', 6, 'consumer', 'x-1', 'time', '2026-11-22T10:00:00.000Z',
    'f:type', 'commit', 'f:data', '{"n":5}');
$r = $rig->run($tool, '-c', $conf, 'requeue', '--all');
is($r->[0], 0, 'requeue --all: exit 0');
like($r->[1], qr/^1 entry requeued/m, 'requeue --all: one entry');
ok($rig->wait_until(sub {
    $rig->psql(q{select count(*) from events where payload->>'n' = '5'}) == 1 }, 60),
  'applied too');
$r = $rig->run($tool, '-c', $conf, 'requeue', '9-9');
is($r->[0], 1, 'requeue of an unknown ID: exit 1');
like($r->[1], qr/9-9: no such entry/, 'and says so');
is($rig->run($tool, '-c', $conf, 'requeue')->[0], 64, 'requeue without IDs: exit 64');

$rig->redis('XADD', "$stream:dead", '*', 'id', "1-$_", 'reason', 'r',
    'f:data', '{}') for 2 .. 4;
my @ids = map { $_->[0] } $rig->stream_entries("$stream:dead");
$r = $rig->run($tool, '-c', $conf, 'purge', $ids[0]);
is($r->[0], 0, 'purge ID: exit 0');
is($rig->redis('XLEN', "$stream:dead"), 2, 'one dead letter purged');
$r = $rig->run($tool, '-u', $rig->redis_url, '-k', "$stream:dead", 'purge', '--all');
like($r->[1], qr/2 entries purged/, 'purge --all (with -u and -k)');
is($rig->redis('XLEN', "$stream:dead"), 0, 'the dead stream is empty');

$rig->finish;
done_testing;
