#!/usr/bin/perl
# kill -9 of a worker in the middle of its work, then the same worker (same
# consumer name) started again: it re-reads its own pending entries first,
# and in the end there is exactly one row per entry and nothing pending.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;

my $rig = SluiceRig->new;
my $sluiced = $rig->bin('sluiced');
my $conf = $rig->write_config(sink => 'raw', batch_size => 200,
    batch_timeout_ms => 50, block_ms => 200, claim_idle_ms => 60000,
    claim_interval_ms => 60000);
is($rig->run($sluiced, '-c', $conf, '--init-schema')->[0], 0, 'schema');
# slow every INSERT statement down a little, so that the test can act in
# the middle of the work however fast the machine is
$rig->psql(q{create function slow_batch() returns trigger language plpgsql
    as $$ begin perform pg_sleep(0.02); return null; end $$});
$rig->psql('create trigger slow_batch after insert on events '
      . 'for each statement execute function slow_batch()');

my $N = 20000;
my $stream = 'firehose:events';
$rig->redis_batch(map {
    ['XADD', $stream, '*', 'type', 'commit', 'data', '{"i":' . $_ . ',"pad":"' . ('x' x 200) . '"}', 'seq', $_]
} 1 .. $N);

my $pid = $rig->spawn('w1', $sluiced, '-c', $conf, '--worker', 'crash-1');
ok($rig->wait_until(sub { $rig->psql('select count(*) from events') >= 2000 },
    60), 'the worker is busy');
# kill it while it holds entries: stopped (SIGSTOP) at a moment when its
# pending list is not empty (between an ack and its next read it is)
ok($rig->wait_until(sub {
    kill 'STOP', $pid;
    my $g = $rig->group_info($stream, 'firehose-processors');
    return 1 if $g && $g->{pending} > 0;
    kill 'CONT', $pid;
    return 0;
}, 30), 'stopped while it holds entries');
kill 'KILL', $pid;
$rig->wait_exit($pid, 10);
my $rows = $rig->psql('select count(*) from events');
my $g = $rig->group_info($stream, 'firehose-processors');
ok($rows < $N, "killed before the end ($rows rows)");
ok($g->{pending} > 0, "the killed worker left $g->{pending} entries pending");

$pid = $rig->spawn('w2', $sluiced, '-c', $conf, '--worker', 'crash-1');
ok($rig->wait_until(sub {
    my $g = $rig->group_info($stream, 'firehose-processors');
    $g && $g->{pending} == 0 && $g->{lag} == 0;
}, 120), 'after the restart: lag 0, nothing pending');
is($rig->psql('select count(*) from events'), $N, "exactly $N rows");
is($rig->psql('select count(distinct stream_id) from events'), $N,
  'nothing twice');
is($rig->psql(q{select count(distinct (payload->>'i')) from events}), $N,
  'every entry once');
like($rig->log_text('w2'), qr/re-reading \d+ of this consumer's pending entries/,
  'the restarted worker re-read its own pending entries first');
kill 'TERM', $pid;
is($rig->wait_exit($pid, 30), 0, 'clean exit');

$rig->finish;
done_testing;
