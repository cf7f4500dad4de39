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
$rig->finish;
done_testing;
