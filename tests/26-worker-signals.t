#!/usr/bin/perl
# Signals: SIGTERM in the middle of the work finishes the current batch
# (committed and acked: nothing pending afterwards, rows = entries read)
# and exits 0; SIGQUIT stops at once, leaving unacked entries pending for
# the next start, which loses nothing.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;

my $rig = SluiceRig->new;
my $sluiced = $rig->bin('sluiced');
my $stream = 'firehose:events';
my $group = 'firehose-processors';
my $conf = $rig->write_config(sink => 'raw', batch_size => 500,
    batch_timeout_ms => 50, block_ms => 200, claim_idle_ms => 60000,
    claim_interval_ms => 60000);
is($rig->run($sluiced, '-c', $conf, '--init-schema')->[0], 0, 'schema');
# slow every INSERT statement down a little, so that the test can act in
# the middle of the work however fast the machine is
$rig->psql(q{create function slow_batch() returns trigger language plpgsql
    as $$ begin perform pg_sleep(0.02); return null; end $$});
$rig->psql('create trigger slow_batch after insert on events '
      . 'for each statement execute function slow_batch()');

my $N = 30000;
$rig->redis_batch(map {
    ['XADD', $stream, '*', 'type', 't', 'data', '{"i":' . $_ . ',"pad":"' . ('p' x 300) . '"}'] } 1 .. $N);

my $pid = $rig->spawn('w1', $sluiced, '-c', $conf, '--worker', 'sig-1');
ok($rig->wait_until(sub { $rig->psql('select count(*) from events') >= 1000 },
    60), 'the worker is busy');
kill 'TERM', $pid;
is($rig->wait_exit($pid, 60), 0, 'SIGTERM: exit code 0');
my $g = $rig->group_info($stream, $group);
my $rows = $rig->psql('select count(*) from events');
ok($rows < $N, "stopped before the end ($rows of $N)");
is($g->{pending}, 0, 'the batch in hand was acked: nothing pending');
is($rows, $g->{'entries-read'}, 'every entry read was committed');
like($rig->log_text('w1'), qr/worker sig-1 stopped \(stop requested\)/,
  'graceful stop logged');

# SIGQUIT: immediate; what was not committed stays pending
$pid = $rig->spawn('w2', $sluiced, '-c', $conf, '--worker', 'sig-1');
ok($rig->wait_until(sub { $rig->psql('select count(*) from events') >= $rows + 1000 },
    60), 'busy again');
kill 'QUIT', $pid;
is($rig->wait_exit($pid, 30), 0, 'SIGQUIT: exits');
like($rig->log_text('w2'), qr/stopped \(quit\)/, 'quit logged');

$pid = $rig->spawn('w3', $sluiced, '-c', $conf, '--worker', 'sig-1');
ok($rig->wait_until(sub {
    my $g = $rig->group_info($stream, $group);
    $g->{pending} == 0 && $g->{lag} == 0 }, 120), 'a new start finishes the stream');
is($rig->psql('select count(*) from events'), $N, "exactly $N rows");
kill 'TERM', $pid;
is($rig->wait_exit($pid, 30), 0, 'clean exit');
$rig->finish;
done_testing;
