#!/usr/bin/perl
# Reclaim: entries left pending by a consumer that died (a fake consumer
# that reads with redis-cli and never acks) are taken over with XAUTOCLAIM
# by a worker with another name once they are idle longer than
# claim_idle_ms. Entries delivered more than max_deliveries times go to the
# dead-letter stream with their delivery count, and are acked.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;

my $rig = SluiceRig->new;
my $sluiced = $rig->bin('sluiced');
my $stream = 'firehose:events';
my $group = 'firehose-processors';
my $conf = $rig->write_config(sink => 'raw', batch_size => 20,
    batch_timeout_ms => 20, block_ms => 100, claim_idle_ms => 1000,
    claim_interval_ms => 300, max_deliveries => 3);
is($rig->run($sluiced, '-c', $conf, '--init-schema')->[0], 0, 'schema');

$rig->redis_batch(map {
    ['XADD', $stream, '*', 'type', 'commit', 'data', qq({"i":$_})]
} 1 .. 50);
is($rig->redis('XGROUP', 'CREATE', $stream, $group, '0'), 'OK', 'group');
# the dead consumer took 35 entries and never acked them
my $r = $rig->redis_resp('XREADGROUP', 'GROUP', $group, 'ghost', 'COUNT', 35,
    'STREAMS', $stream, '>');
my @taken = map { $_->[0] } @{ $r->[0][1] };
is(scalar @taken, 35, 'the ghost consumer holds 35 entries');
# five of them were already delivered ten times
my @poison = @taken[0 .. 4];
$rig->redis_resp('XCLAIM', $stream, $group, 'ghost', 0, @poison,
    'RETRYCOUNT', 10);
my $pel = $rig->redis_resp('XPENDING', $stream, $group, $poison[0],
    $poison[0], 1);
is($pel->[0][3], 10, 'delivery count set to 10');

my $pid = $rig->spawn('w', $sluiced, '-c', $conf, '--worker', 'rescuer-1');
ok($rig->wait_until(sub { $rig->psql('select count(*) from events') == 45 },
    60), 'the 15 free and the 30 reclaimed entries are written');
ok($rig->wait_until(sub {
    my $g = $rig->group_info($stream, $group);
    $g && $g->{pending} == 0;
}, 30), 'nothing pending: reclaimed and dead entries acked');
my $cons = $rig->redis_resp('XINFO', 'CONSUMERS', $stream, $group);
my ($ghost) = grep { $_->{name} eq 'ghost' } map { +{@$_} } @$cons;
is($ghost->{pending}, 0, 'the ghost consumer holds nothing any more');

my @dead = $rig->stream_entries("$stream:dead");
is(scalar @dead, 5, 'five dead letters');
is_deeply([sort map { $_->[1]{id} } @dead], [sort @poison],
  'the dead letters are the entries delivered too often');
is($dead[0][1]{deliveries}, 11, 'dead letter carries the delivery count');
like($dead[0][1]{reason}, qr/delivered 11 times, more than max_deliveries \(3\)/,
  'dead letter says why');
is($dead[0][1]{consumer}, 'rescuer-1', 'dead letter names the consumer');
like($dead[0][1]{time}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/,
  'dead letter has a time');
is($dead[0][1]{'f:type'}, 'commit', 'original fields kept (f:type)');
like($dead[0][1]{'f:data'}, qr/^\{"i":\d+\}$/, 'original fields kept (f:data)');
is($rig->psql(q{select count(*) from events where stream_id in ('}
      . join("','", @poison) . q{')}), 0, 'dead entries were not written');
my $log = $rig->log_text('w');
like($log, qr/claimed \d+ entries idle for more than 1000 ms/, 'claim logged');
like($log, qr/dead letter \Q$poison[0]\E \(delivered 11 times\)/,
  'each dead letter is logged');

kill 'TERM', $pid;
is($rig->wait_exit($pid, 30), 0, 'clean exit');

# Pending entries deleted from the stream meanwhile: nothing to apply, but
# they must not stay pending. (a) held by the dead consumer: XAUTOCLAIM
# reports them deleted; (b) held by the worker itself (read under its name
# while it was stopped): its pending re-read returns them without fields.
$rig->redis_batch(map {
    ['XADD', $stream, '*', 'type', 'late', 'data', qq({"j":$_})] } 1 .. 20);
$r = $rig->redis_resp('XREADGROUP', 'GROUP', $group, 'ghost', 'COUNT', 10,
    'STREAMS', $stream, '>');
my @ghost_ids = map { $_->[0] } @{ $r->[0][1] };
$r = $rig->redis_resp('XREADGROUP', 'GROUP', $group, 'rescuer-1', 'COUNT', 10,
    'STREAMS', $stream, '>');
my @own_ids = map { $_->[0] } @{ $r->[0][1] };
is(scalar(@ghost_ids) + scalar(@own_ids), 20, '20 new entries pending');
is($rig->redis_resp('XDEL', $stream, @ghost_ids[0 .. 3], @own_ids[0 .. 2]), 7,
  'seven of them deleted from the stream');
# (b) first, with a claim idle time too long to reclaim anything
my $noclaim = $rig->write_config(sink => 'raw', batch_size => 20,
    batch_timeout_ms => 20, block_ms => 100, claim_idle_ms => 600000,
    claim_interval_ms => 300, max_deliveries => 3);
$pid = $rig->spawn('w2', $sluiced, '-c', $noclaim, '--worker', 'rescuer-1');
ok($rig->wait_until(sub {
    $rig->psql(q{select count(*) from events where type = 'late'}) == 7 },
    60), 'its 7 own entries still in the stream are written');
ok($rig->wait_until(sub {
    my $g = $rig->group_info($stream, $group);
    $g && $g->{pending} == 6 }, 30),
  'the deleted ones do not stay pending (only the ghost\'s other 6 do)');
like($rig->log_text('w2'),
  qr/re-reading 7 of this consumer's pending entries \(3 no longer in the stream\)/,
  'own pending entries that were deleted are noticed');
# (the worker logs the claim after Redis has dropped the IDs: wait for it)
$rig->wait_until(sub { $rig->log_text('w2') =~ /claimed 0 entries .* \(4 no longer/ }, 10);
like($rig->log_text('w2'), qr/claimed 0 entries .* \(4 no longer in the stream\)/,
  'XAUTOCLAIM\'s deleted IDs are noticed, whatever their idle time');
kill 'TERM', $pid;
is($rig->wait_exit($pid, 30), 0, 'clean exit');
# (a) then reclaim from the ghost
$pid = $rig->spawn('w3', $sluiced, '-c', $conf, '--worker', 'rescuer-1');
ok($rig->wait_until(sub {
    $rig->psql(q{select count(*) from events where type = 'late'}) == 13 },
    60), 'the ghost\'s 6 entries still in the stream are written');
ok($rig->wait_until(sub {
    my $g = $rig->group_info($stream, $group);
    $g && $g->{pending} == 0 }, 30),
  'nothing pending');
like($rig->log_text('w3'), qr/claimed 6 entries idle for more than 1000 ms/,
  'the ghost\'s entries are claimed');
kill 'TERM', $pid;
is($rig->wait_exit($pid, 30), 0, 'clean exit');
$rig->finish;
done_testing;
