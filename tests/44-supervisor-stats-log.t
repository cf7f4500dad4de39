#!/usr/bin/perl
# The supervisor's periodic line and its log file: `processed N events
# (~X events/sec)` with the group's lag and pending count; a warning when
# unread entries approach the stream's MAXLEN; Redis down does not stop
# the supervisor (the line says why the figures are missing); SIGUSR1
# reopens the log file in the supervisor and in every worker.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;
use Time::HiRes qw(sleep time);

my $rig = SluiceRig->new;
my $stream = 'firehose:events';
my $group = 'firehose-processors';
my $shm = "/sluice-t44-$$";
my $logfile = $rig->dir . '/sluiced-file.log';
my $conf = $rig->write_config(
    sink               => 'raw',
    parallel_consumers => 2,
    batch_size         => 100,
    stream_maxlen      => 1000,
    stats_interval_ms     => 500,
    worker_timeout_ms     => 30000,
    stats_name         => $shm,
    log_target         => $logfile,
);
my $r = $rig->run($rig->bin('sluiced'), '-c', $conf, '--init-schema');
is($r->[0], 0, 'schema applied') or diag($r->[1]);

sub slurp {
    my ($f) = @_;
    open my $fh, '<', $f or return '';
    local $/;
    return <$fh> // '';
}

sub rows { $rig->psql('select count(*) from events') }

sub add_entries {
    my ($from, $n) = @_;
    $rig->redis_batch(map {
        ['XADD', $stream, '*', 'type', 'commit',
         'data', qq({"repo":"did:plc:s$_","ops":[]}), 'seq', $_]
    } $from .. $from + $n - 1);
}

my $sup = $rig->spawn('sluiced', $rig->bin('sluiced'), '-c', $conf);
add_entries(1, 500);
ok($rig->wait_until(sub { rows() == 500 }, 60), '500 entries applied');
ok($rig->wait_until(sub {
    slurp($logfile) =~ /processed 500 events \(~\d+ events\/sec\), 2\/2 workers, group lag 0, pending 0/ }, 30),
    'the periodic line: total processed, rate, workers, lag and pending');

# ---- unread entries close to MAXLEN ------------------------------------------

# With PostgreSQL down the workers back off and the lag grows.
$rig->stop_pg('fast');
add_entries(501, 900);
ok($rig->wait_until(sub {
    slurp($logfile) =~ /unacked entries \((\d+): lag \d+, pending \d+\) are close to the stream's MAXLEN \(1000\)/ && $1 == 900 }, 30),
    'a warning when unacked entries (lag + pending) exceed 80% of stream_maxlen');
ok(kill(0, $sup), 'the supervisor runs on while PostgreSQL is down');
$rig->start_pg;
ok($rig->wait_until(sub { rows() == 1400 }, 120), 'all 1400 applied after PostgreSQL is back');

# ---- Redis down --------------------------------------------------------------

my $mark = length slurp($logfile);
$rig->stop_redis('KILL');
ok($rig->wait_until(sub {
    substr(slurp($logfile), $mark) =~ /group lag \?, pending \? \(redis: [^)]+\)/ }, 30),
    'Redis down: the periodic line says why lag and pending are missing');
ok(kill(0, $sup), 'the supervisor runs on while Redis is down');
$rig->start_redis;

# ---- SIGUSR1 -------------------------------------------------------------------

rename $logfile, "$logfile.1" or die "rename: $!";
kill 'USR1', $sup;
ok($rig->wait_until(sub { -e $logfile }, 20), 'SIGUSR1: the log file is opened again');
ok($rig->wait_until(sub { slurp($logfile) =~ /supervisor\S*\[$sup\]/ }, 20),
    'the supervisor writes to the new file');
# The workers write their periodic summary there too once they notice.
kill 'TERM', $sup;
is($rig->wait_exit($sup, 60), 0, 'sluiced exits 0');
my $new = slurp($logfile);
ok($new =~ /worker test-1\b/ && $new =~ /worker test-2\b/,
    'both workers write to the new file after SIGUSR1');

$rig->finish;
unlink "/dev/shm$shm";
done_testing;
