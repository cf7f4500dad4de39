#!/usr/bin/perl
# Servers unreachable from the start: --init-schema fails with the
# temporary-failure exit code (75) and a message without the password; a
# worker whose servers are down does not exit: it backs off, logs the
# outage at a falling rate, and stops cleanly on SIGTERM. When the server
# appears, it connects and works.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;
use Time::HiRes qw(sleep);

my $rig = SluiceRig->new(redis => 1, pg => 1);
my $sluiced = $rig->bin('sluiced');
my $dead_port = SluiceRig::free_port();

my $conf = $rig->write_config(sink => 'raw',
    database_url => "postgresql://sluice:Secret-pw-1\@127.0.0.1:$dead_port/sluice");
my $r = $rig->run($sluiced, '-c', $conf, '--init-schema');
is($r->[0], 75, '--init-schema without PostgreSQL: exit 75');
like($r->[1], qr/postgresql/i, 'it says PostgreSQL is the problem');
unlike($r->[1], qr/Secret-pw-1/, 'without the password');

# PostgreSQL down: the worker waits in backoff
my $wconf = $rig->write_config(sink => 'raw', reconnect_delay_ms => 50,
    reconnect_delay_max_ms => 200,
    database_url => "postgresql://sluice:Secret-pw-1\@127.0.0.1:$dead_port/sluice");
my $pid = $rig->spawn('pgdown', $sluiced, '-c', $wconf, '--worker', 'down-1');
sleep 3;
ok(kill(0, $pid), 'a worker without PostgreSQL keeps running');
my @lines = $rig->log_text('pgdown') =~ /postgresql: .*retry \d+ in \d+ ms/g;
ok(@lines >= 1 && @lines < 10,
  'the outage is logged, not at every retry (' . scalar(@lines) . ' lines)');
unlike($rig->log_text('pgdown'), qr/Secret-pw-1/, 'no password in its log');
kill 'TERM', $pid;
is($rig->wait_exit($pid, 10), 0, 'SIGTERM while backing off: exit 0');

# Redis down at start, then up: the worker connects and works
$rig->stop_redis;
is($rig->run($sluiced, '-c', $rig->write_config(sink => 'raw'),
    '--init-schema')->[0], 0, 'schema');
my $rconf = $rig->write_config(sink => 'raw', reconnect_delay_ms => 50,
    reconnect_delay_max_ms => 300, batch_timeout_ms => 20, block_ms => 200);
$pid = $rig->spawn('redisdown', $sluiced, '-c', $rconf, '--worker', 'down-2');
ok($rig->wait_until(sub { $rig->log_text('redisdown') =~ /redis: .*retry/ },
    30), 'Redis down at start is logged');
ok(kill(0, $pid), 'and the worker waits');
$rig->start_redis;
$rig->redis('XADD', 'firehose:events', '*', 'data', '{"late":1}');
ok($rig->wait_until(sub {
    $rig->psql('select count(*) from events') == 1 }, 60),
  'once Redis is up the entry is written');
like($rig->log_text('redisdown'), qr/redis: connected again/,
  'the connection is logged');
kill 'TERM', $pid;
is($rig->wait_exit($pid, 30), 0, 'clean exit');

$rig->finish;
done_testing;
