#!/usr/bin/perl
# Redis unreachable at ack time: the batch is committed but XACK fails.
# The worker keeps the committed IDs and acks them once Redis answers
# again (before it re-reads anything), so nothing is applied twice and
# nothing stays pending. Redis is made unreachable with CLIENT PAUSE WRITE
# while a trigger holds the worker's INSERT in PostgreSQL.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;

my $rig = SluiceRig->new;
my $sluiced = $rig->bin('sluiced');
my $stream = 'firehose:events';
my $group = 'firehose-processors';
my $conf = $rig->write_config(sink => 'raw', batch_size => 10,
    batch_timeout_ms => 20, block_ms => 100, redis_timeout_ms => 300,
    claim_idle_ms => 600000, claim_interval_ms => 600000,
    reconnect_delay_ms => 100, reconnect_delay_max_ms => 400);
is($rig->run($sluiced, '-c', $conf, '--init-schema')->[0], 0, 'schema');
$rig->psql(q{create function slow() returns trigger language plpgsql as $$
    begin if new.type = 'slow' then perform pg_sleep(2); end if;
    return new; end $$});
$rig->psql('create trigger slow before insert on events '
      . 'for each row execute function slow()');

my $pid = $rig->spawn('w', $sluiced, '-c', $conf, '--worker', 'ack-1');
$rig->redis('XADD', $stream, '*', 'type', 'fast', 'data', '{"n":1}');
ok($rig->wait_until(sub { $rig->psql('select count(*) from events') == 1 }, 60),
  'the worker runs');
$rig->redis('XADD', $stream, '*', 'type', 'slow', 'data', '{"n":2}');
ok($rig->wait_until(sub {
    $rig->psql(q{select count(*) from pg_stat_activity
        where wait_event = 'PgSleep'}) == 1 }, 30),
  'the worker is inside the slow INSERT');
is($rig->redis('CLIENT', 'PAUSE', 4000, 'WRITE'), 'OK',
  'Redis stops taking writes (XACK) for 4 s');
ok($rig->wait_until(sub {
    $rig->log_text('w') =~ /could not ack 1 committed entries/ }, 30),
  'the failed ack is logged');
is($rig->psql(q{select count(*) from events where type = 'slow'}), 1,
  'the entry is committed');
ok($rig->wait_until(sub {
    $rig->log_text('w') =~ /acked 1 of 1 entries committed while Redis was unreachable/ },
    30), 'and acked once Redis answers again');
ok($rig->wait_until(sub {
    my $g = $rig->group_info($stream, $group);
    $g && $g->{pending} == 0 && $g->{lag} == 0 }, 30), 'nothing pending');
unlike($rig->log_text('w'), qr/re-reading [1-9]/,
  'the acked entry was not read again');
$rig->redis('XADD', $stream, '*', 'type', 'fast', 'data', '{"n":3}');
ok($rig->wait_until(sub { $rig->psql('select count(*) from events') == 3 }, 30),
  'the worker goes on');
kill 'TERM', $pid;
is($rig->wait_exit($pid, 30), 0, 'clean exit');
$rig->finish;
done_testing;
