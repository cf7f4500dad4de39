#!/usr/bin/perl
# PostgreSQL stopped under load: the worker keeps its batch, acks nothing
# while PostgreSQL is away (the group's acked count stands still, the
# entries stay pending), backs off and reconnects, and once PostgreSQL is
# back everything is committed exactly once and acked.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;
use Time::HiRes qw(sleep);

my $rig = SluiceRig->new;
my $sluiced = $rig->bin('sluiced');
my $stream = 'firehose:events';
my $group = 'firehose-processors';
my $conf = $rig->write_config(sink => 'raw', batch_size => 100,
    batch_timeout_ms => 20, block_ms => 200, claim_idle_ms => 60000,
    claim_interval_ms => 60000, reconnect_delay_ms => 100,
    reconnect_delay_max_ms => 1000);
is($rig->run($sluiced, '-c', $conf, '--init-schema')->[0], 0, 'schema');
# slow every INSERT statement down a little, so that the test can act in
# the middle of the work however fast the machine is
$rig->psql(q{create function slow_batch() returns trigger language plpgsql
    as $$ begin perform pg_sleep(0.05); return null; end $$});
$rig->psql('create trigger slow_batch after insert on events '
      . 'for each statement execute function slow_batch()');

my $N1 = 5000;
$rig->redis_batch(map {
    ['XADD', $stream, '*', 'type', 't', 'data', qq({"i":$_})] } 1 .. $N1);
my $pid = $rig->spawn('w', $sluiced, '-c', $conf, '--worker', 'pg-1');
ok($rig->wait_until(sub { $rig->psql('select count(*) from events') >= 500 },
    60), 'the worker is writing');
$rig->stop_pg;

# acked = entries read by the group minus those still pending
my $acked = sub {
    my $g = $rig->group_info($stream, $group);
    return $g->{'entries-read'} - $g->{pending};
};
sleep 1;    # whatever was in flight when PostgreSQL went away settles
my $g1 = $rig->group_info($stream, $group);
my $a1 = $acked->();
$rig->redis_batch(map {
    ['XADD', $stream, '*', 'type', 't', 'data', qq({"i":$_})]
} $N1 + 1 .. $N1 + 1000);
sleep 3;
my $g2 = $rig->group_info($stream, $group);
is($acked->(), $a1, 'no ack while PostgreSQL is down');
ok($g2->{pending} > 0, "the batch in hand stays pending ($g2->{pending})");
ok($a1 < $N1, 'and not everything had been acked before the outage');
ok(kill(0, $pid), 'the worker is still running');
like($rig->log_text('w'), qr/postgresql: .*retry \d+ in \d+ ms/,
  'the outage and the backoff are logged');

$rig->start_pg;
my $N = $N1 + 1000;
ok($rig->wait_until(sub { $rig->psql('select count(*) from events') == $N },
    120), "after PostgreSQL returns: all $N entries written");
ok($rig->wait_until(sub {
    my $g = $rig->group_info($stream, $group);
    $g->{pending} == 0 && $g->{lag} == 0 }, 60), 'and acked');
is($rig->psql('select count(distinct stream_id) from events'), $N,
  'nothing twice');
like($rig->log_text('w'), qr/postgresql: connected again/,
  'the reconnect is logged');

kill 'TERM', $pid;
is($rig->wait_exit($pid, 30), 0, 'clean exit');
$rig->finish;
done_testing;
