#!/usr/bin/perl
# sluicectl: status and stats --json agree with the rows in PostgreSQL and
# the group in Redis after a run; stats --prometheus passes a strict
# parser of the text exposition format; clear messages and exit codes
# for no segment (3), a segment of another layout version (4) and no
# permission (5); the segment is 0640, readable by its group only; top
# leaves on q.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use PromCheck qw(strict_prometheus);
use Test::More;
use JSON::PP qw(decode_json);
use Time::HiRes qw(sleep time);

my $rig = SluiceRig->new;
my $stream = 'firehose:events';
my $group = 'firehose-processors';
my $shm = "/sluice-t43-$$";
my $conf = $rig->write_config(
    sink               => 'raw',
    parallel_consumers => 2,
    batch_size         => 100,
    stats_interval_ms     => 1000,
    stats_name         => $shm,
);
my $ctl = $rig->bin('sluicectl');
my $r = $rig->run($rig->bin('sluiced'), '-c', $conf, '--init-schema');
is($r->[0], 0, 'schema applied') or diag($r->[1]);

# ---- not running -------------------------------------------------------------

$r = $rig->run($ctl, '-c', $conf, 'status');
is($r->[0], 3, 'no segment: exit 3');
like($r->[1], qr/sluiced is not running \(no stats segment \Q$shm\E\)/,
    'no segment: the message names the segment');

$r = $rig->run($ctl, '-c', $conf, 'frobnicate');
is($r->[0], 64, 'unknown command: exit 64');

# sluicectl needs no database_url (operators' shells don't have it).
my $nodb = $rig->write_config(database_url => undef, stats_name => $shm);
$r = $rig->run($ctl, '-c', $nodb, 'status');
is($r->[0], 3, 'without database_url sluicectl still runs (exit 3: not running)')
  or diag($r->[1]);

# ---- a run ---------------------------------------------------------------------

my $sup = $rig->spawn('sluiced', $rig->bin('sluiced'), '-c', $conf);
my @cmds;
for my $i (1 .. 3000) {
    push @cmds, ['XADD', $stream, '*', 'type', 'commit',
        'data', qq({"repo":"did:plc:c$i","ops":[]}), 'seq', $i];
}
# Two entries the raw sink refuses (data not a JSON object): dead letters.
push @cmds, ['XADD', $stream, '*', 'type', 'commit', 'data', '[1,2]', 'seq', 'x1'];
push @cmds, ['XADD', $stream, '*', 'type', 'commit', 'data', 'not json', 'seq', 'x2'];
$rig->redis_batch(@cmds);

sub rows { $rig->psql('select count(*) from events') }
ok($rig->wait_until(sub {
    my $g = $rig->group_info($stream, $group);
    rows() == 3000 && $g && $g->{pending} == 0 && $g->{lag} == 0 }, 120),
    '3000 rows, nothing pending');

my $j;
ok($rig->wait_until(sub {
    my $x = $rig->run($ctl, '-c', $conf, 'stats', '--json');
    return 0 if $x->[0] != 0;
    $j = decode_json($x->[1]);
    $j->{total}{events_applied} + $j->{total}{dead_lettered} >= 3002 }, 30),
    'stats --json: the counters reach the entries written');
is($j->{total}{events_applied}, rows(),
    'stats --json: events_applied equals the rows in PostgreSQL');
is($j->{total}{dead_lettered}, 2, 'stats --json: two dead letters');
is($rig->redis('XLEN', "$stream:dead"), 2, 'and two entries in the dead-letter stream');
is($j->{supervisor}{pid}, $sup, 'stats --json: the supervisor pid');
is($j->{supervisor}{stream}, $stream, 'stats --json: the stream');
is($j->{group}{pending}, 0, 'stats --json: pending from Redis');
is($j->{group}{lag}, 0, 'stats --json: lag from Redis');
is(scalar(@{ $j->{workers} }), 2, 'stats --json: two workers');
is_deeply([sort map { $_->{name} } @{ $j->{workers} }], ['test-1', 'test-2'],
    'stats --json: worker names');
my $hist = 0;
$hist += $_ for map { @{ $_->{latency_ms}{histogram} } } @{ $j->{workers} };
ok($hist >= 1, 'stats --json: the latency histogram has samples');

$r = $rig->run($ctl, '-c', $conf, 'status');
is($r->[0], 0, 'status: exit 0');
# total: EVENTS/S APPLIED DEAD ERRORS DEADLOCKS RESTARTS
my @t = $r->[1] =~ /^total\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$/m;
is($t[1], rows(), 'status: the total applied equals the rows in PostgreSQL');
is($t[2], 2, 'status: the total dead-lettered');
is($t[4], 0, 'status: no deadlocks');
like($r->[1], qr/^test-1\s+running\s+\d+/m, 'status: test-1 running');
like($r->[1], qr/^test-2\s+running\s+\d+/m, 'status: test-2 running');
like($r->[1], qr/group $group: lag 0, pending 0/, 'status: lag and pending from Redis');

# ---- Prometheus ------------------------------------------------------------------

$r = $rig->run($ctl, '-c', $conf, 'stats', '--prometheus');
is($r->[0], 0, 'stats --prometheus: exit 0');
my @errors = strict_prometheus($r->[1]);
is_deeply(\@errors, [], 'the exposition passes the strict parser')
  or diag(join "\n", @errors);
my %samples = $r->[1] =~ /^(sluice_events_applied_total\{worker="test-\d"\}) (\d+)$/mg;
my $sum = 0;
$sum += $_ for values %samples;
is($sum, rows(), 'prometheus: sluice_events_applied_total sums to the rows');
like($r->[1], qr/^sluice_commit_latency_seconds_bucket\{worker="test-1",le="\+Inf"\} \d+$/m,
    'prometheus: a latency histogram with +Inf');
like($r->[1], qr/^sluice_group_pending 0$/m, 'prometheus: the group pending');

# The strict checker must itself refuse bad input.
ok(scalar(strict_prometheus("# TYPE x counter\nx 1\n")) > 0,
    'the checker refuses a counter without _total');
ok(scalar(strict_prometheus("x_total{a=\"b\"} 1\n")) > 0,
    'the checker refuses samples without TYPE');
ok(scalar(strict_prometheus("# TYPE a_total counter\na_total{1a=\"b\"} 1\n")) > 0,
    'the checker refuses a bad label name');
ok(scalar(strict_prometheus("# TYPE a gauge\na 1.2.3\n")) > 0,
    'the checker refuses a bad value');

# ---- top --------------------------------------------------------------------------

SKIP: {
    skip 'top needs script(1) for a terminal', 2 unless -x '/usr/bin/script';
    my $out = $rig->dir . '/top.out';
    my $cmd = "sleep 2; printf q";
    my $t = $rig->run('/bin/sh', '-c',
        "($cmd) | script -qec '$ctl -c $conf top' /dev/null > $out 2>&1; echo rc=\$?");
    like($t->[1], qr/rc=0/, 'top leaves with exit 0 on q');
    my $screen = do { local $/; open my $fh, '<', $out; <$fh> // '' };
    like($screen, qr/test-1\s+running/, 'top shows the workers');
}

# ---- who may read the segment ------------------------------------------------------

is(sprintf('%04o', (stat "/dev/shm$shm")[2] & 07777), '0640',
    'the stats segment is mode 0640: its owner and its group');
SKIP: {
    skip 'the group check needs root (to run as nobody)', 3 if $> != 0;
    my $gid = (stat "/dev/shm$shm")[5];
    $r = $rig->run('setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups',
        $ctl, '-c', $conf, 'status');
    is($r->[0], 5, 'a user outside the segment\'s group can\'t read it: exit 5');
    like($r->[1], qr/permission denied on stats segment \Q$shm\E/, 'and is told so');
    $r = $rig->run('setpriv', '--reuid=nobody', '--regid=nogroup', "--groups=$gid",
        $ctl, '-c', $conf, 'status');
    is($r->[0], 0, 'a user in the segment\'s group (an operator) runs sluicectl status');
}

# ---- layout version and permission ----------------------------------------------------

my $size = -s "/dev/shm$shm";
kill 'TERM', $sup;
is($rig->wait_exit($sup, 60), 0, 'sluiced stopped');

my $fake = "/sluice-t43-fake-$$";
my $fconf = $rig->write_config(stats_name => $fake);
open my $fh, '>', "/dev/shm$fake" or die "/dev/shm$fake: $!";
# header: magic "SLCU", layout version 99, then zeros to the right size
print $fh pack('V V', 0x534c4355, 99), "\0" x ($size - 8);
close $fh;
$r = $rig->run($ctl, '-c', $fconf, 'status');
is($r->[0], 4, 'layout version mismatch: exit 4');
like($r->[1], qr/has layout version 99, this sluicectl reads version \d+/,
    'layout version mismatch: the message names both versions');

SKIP: {
    skip 'the permission check needs root (to run as nobody)', 2 if $> != 0;
    chmod 0600, "/dev/shm$fake";
    $r = $rig->run('setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups',
        $ctl, '-c', $fconf, 'status');
    is($r->[0], 5, 'no permission on the segment: exit 5');
    like($r->[1], qr/permission denied on stats segment \Q$fake\E/,
        'no permission: the message says so');
}
unlink "/dev/shm$fake";

$rig->finish;
unlink "/dev/shm$shm";
done_testing;
