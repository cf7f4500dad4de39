#!/usr/bin/perl
# Configuration through the real binary: --check-config prints what a file
# amounts to with passwords hidden; precedence file < environment < -s; a
# bad file, variable or option is refused with exit 78 and names the place
# and the key; a bad command line exits 64; log lines carry time, level,
# role and consumer name, on stderr or in log_target.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;

my $rig = SluiceRig->new(redis => 0, pg => 0);
my $sluiced = $rig->bin('sluiced');
my $dir = $rig->dir;

sub write_file {
    my ($name, $text) = @_;
    my $path = "$dir/$name";
    open my $fh, '>', $path or die "$path: $!";
    print $fh $text;
    close $fh;
    return $path;
}

my $good = write_file('good.conf', <<'CONF');
# a comment
database_url = postgresql://app:hunter2@db.example/appview
redis_url = redis://:swordfish@cache.example:6380/2
batch_size = 250
claim_idle_ms = 2m
CONF

my $r = $rig->run($sluiced, '-c', $good, '--check-config');
is($r->[0], 0, '--check-config of a good file exits 0');
like($r->[1], qr/^batch_size = 250$/m, 'the file value is shown');
like($r->[1], qr/^claim_idle_ms = 120000$/m, 'durations are shown in ms');
like($r->[1], qr/^stream_key = firehose:events$/m, 'defaults are shown');
like($r->[1], qr{^database_url = postgresql://app:\*\*\*\@db\.example/appview$}m,
    'the PostgreSQL password is hidden');
like($r->[1], qr{^redis_url = redis://:\*\*\*\@cache\.example:6380/2$}m,
    'the Redis password is hidden');
unlike($r->[1], qr/hunter2|swordfish/, 'no password anywhere in the output');

# Precedence: environment over the file, -s over the environment.
$r = $rig->run('env', 'BATCH_SIZE=300', 'REDIS_STREAM_KEY=env:stream',
    'SLUICE_MAX_DELIVERIES=9', $sluiced, '-c', $good, '-s', 'batch_size=7',
    '--check-config');
is($r->[0], 0, 'environment and -s accepted');
like($r->[1], qr/^batch_size = 7$/m, '-s wins over the environment');
like($r->[1], qr/^stream_key = env:stream$/m, 'the environment wins over the file');
like($r->[1], qr/^max_deliveries = 9$/m, 'SLUICE_<KEY> sets any key');

# Refusals: exit 78 (configuration), the place and the key named.
my $bad = write_file('bad.conf', "database_url = x\n\n# fine so far\nbatch_size = 50O\n");
$r = $rig->run($sluiced, '-c', $bad, '--check-config');
is($r->[0], 78, 'a malformed number exits 78');
like($r->[1], qr/\Q$bad\E:4: batch_size: not a number: '50O'/,
    'the error names file, line and key');

my $unknown = write_file('unknown.conf', "database_url = x\nbatchsize = 5\n");
$r = $rig->run($sluiced, '-c', $unknown, '--check-config');
is($r->[0], 78, 'an unknown key exits 78');
like($r->[1], qr/\Q$unknown\E:2: batchsize: unknown setting/, 'the unknown key is named');

my $range = write_file('range.conf', "database_url = x\nparallel_consumers = 65\n");
$r = $rig->run($sluiced, '-c', $range, '--check-config');
is($r->[0], 78, 'an out-of-range value exits 78');
like($r->[1], qr/:2: parallel_consumers: 65 is out of range \(1\.\.64\)/,
    'the range is given');

$r = $rig->run('env', 'BATCH_SIZE=many', $sluiced, '-c', $good, '--check-config');
is($r->[0], 78, 'a bad environment value exits 78');
like($r->[1], qr/environment: BATCH_SIZE: not a number: 'many'/, 'the variable is named');

$r = $rig->run($sluiced, '-c', $good, '-s', 'block_ms=soon', '--check-config');
is($r->[0], 78, 'a bad -s value exits 78');
like($r->[1], qr/command line: block_ms: not a duration: 'soon'/, 'the option is named');

$r = $rig->run($sluiced, '--check-config');
is($r->[0], 78, 'no database_url at all exits 78');
like($r->[1], qr/database_url: required/, 'and says database_url is required');

$r = $rig->run($sluiced, '-c', "$dir/missing.conf", '--check-config');
is($r->[0], 78, 'a missing file exits 78');
like($r->[1], qr/\Q$dir\E\/missing\.conf: No such file or directory/, 'the file is named');

$r = $rig->run($sluiced, '--no-such-option');
is($r->[0], 64, 'an unknown command-line option exits 64');

$r = $rig->run($sluiced, '-c', 'etc/sluice.conf', '-s', 'database_url=postgresql:///x',
    '--check-config');
is($r->[0], 0, 'the sample configuration loads');

# Log lines: stderr by default; a file with log_target. A worker whose
# servers are unreachable logs its state and stops on TERM.
my $port = SluiceRig::free_port();
my $conf = write_file('worker.conf', <<"CONF");
database_url = postgresql://app:hunter2\@127.0.0.1:$port/none
redis_url = redis://:swordfish\@127.0.0.1:$port
sink = raw
consumer_id = cfgtest
reconnect_delay_ms = 100
reconnect_delay_max_ms = 200
CONF
my $w = $rig->spawn('w', $sluiced, '-c', $conf, '--worker', 'cfgtest-1');
ok($rig->wait_until(sub { $rig->log_text('w') =~ /redis: / }, 20),
    'the worker logs its connection state');
kill 'TERM', $w;
is($rig->wait_exit($w, 20), 0, 'the worker stops on TERM with exit 0');
my $log = $rig->log_text('w');
like($log,
    qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (?:info|notice|warn|error)\s+worker cfgtest-1\[\d+\]: /m,
    'lines carry UTC time, level, role, consumer name and pid');
unlike($log, qr/hunter2|swordfish/, 'no password in the log');

my $logfile = "$dir/sluice.log";
my $w2 = $rig->spawn('w2', $sluiced, '-c', $conf, '-s', "log_target=$logfile", '-s',
    'log_level=debug', '--worker', 'cfgtest-2');
ok($rig->wait_until(sub { -s $logfile && do { open my $f, '<', $logfile; local $/; <$f> =~ /redis: / } }, 20),
    'log_target: the worker writes its log file');
kill 'TERM', $w2;
$rig->wait_exit($w2, 20);
is($rig->log_text('w2'), '', 'nothing on stderr with a log file');

$rig->finish;
done_testing;
