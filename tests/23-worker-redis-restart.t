#!/usr/bin/perl
# Redis faults: Redis restarted with an empty dataset while the worker runs
# (the worker reconnects with backoff, recreates the group and processes
# later entries), and the group destroyed under a running worker (NOGROUP:
# recreated at group_start_id; the replay writes nothing twice).
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;

my $rig = SluiceRig->new;
my $sluiced = $rig->bin('sluiced');
my $stream = 'firehose:events';
my $group = 'firehose-processors';
my $conf = $rig->write_config(sink => 'raw', batch_size => 50,
    batch_timeout_ms => 20, block_ms => 200, claim_idle_ms => 30000,
    claim_interval_ms => 1000, reconnect_delay_ms => 50,
    reconnect_delay_max_ms => 500);
is($rig->run($sluiced, '-c', $conf, '--init-schema')->[0], 0, 'schema');
my $rows = sub { $rig->psql('select count(*) from events') };

my $pid = $rig->spawn('w', $sluiced, '-c', $conf, '--worker', 'rr-1');
$rig->redis_batch(map { ['XADD', $stream, '*', 'data', qq({"i":$_})] } 1 .. 10);
ok($rig->wait_until(sub { $rows->() == 10 }, 60), 'first 10 entries written');

$rig->restart_redis_empty;
ok($rig->wait_until(sub { defined $rig->group_info($stream, $group) }, 60),
  'the worker recreated the group in the empty Redis');
$rig->redis_batch(map { ['XADD', $stream, '*', 'data', qq({"i":$_})] } 11 .. 30);
ok($rig->wait_until(sub { $rows->() == 30 }, 60),
  'entries added after the restart are written');
ok($rig->wait_until(sub {
    my $g = $rig->group_info($stream, $group);
    $g && $g->{pending} == 0 && $g->{lag} == 0 }, 30),
  'and acked');
ok(kill(0, $pid), 'the worker kept running');
my $log = $rig->log_text('w');
like($log, qr/redis: .*reconnecting/, 'the lost connection is logged');
like($log, qr/redis: connected again/, 'the reconnect is logged');
my @created = $log =~ /created consumer group/g;
is(scalar @created, 2, 'group created at start and again after the restart');

# The group disappears under the running worker: NOGROUP -> recreate.
is($rig->redis('XGROUP', 'DESTROY', $stream, $group), '1', 'group destroyed');
$rig->redis_batch(map { ['XADD', $stream, '*', 'data', qq({"i":$_})] } 31 .. 40);
ok($rig->wait_until(sub { $rows->() == 40 }, 60),
  'entries added after NOGROUP are written');
ok($rig->wait_until(sub {
    my $g = $rig->group_info($stream, $group);
    $g && $g->{pending} == 0 && $g->{lag} == 0 }, 30),
  'recreated group fully read and acked');
is($rig->group_info($stream, $group)->{'entries-read'}, 30,
  'recreated at the start: the 30 entries of the stream were read again');
is($rig->psql('select count(distinct stream_id) from events'), 40,
  'the replay wrote nothing twice');
like($rig->log_text('w'),
  qr/consumer group firehose-processors was lost: recreated at 0; the stream holds \d+ entries/,
  'the recreation is logged with the stream length');

kill 'TERM', $pid;
is($rig->wait_exit($pid, 30), 0, 'clean exit');
$rig->finish;
done_testing;
