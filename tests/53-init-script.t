#!/usr/bin/perl
# The LSB init script, run against the build tree and private servers (its
# paths overridden in the environment): status before start (3), start
# (sluiced -d, pidfile, entries applied), status (0), reload (HUP: a changed
# worker count takes effect), stop (graceful, pidfile gone, status 3), a
# start that fails, reload of a stopped service (7), and a start refused
# for a service user that does not exist (6).
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;

my $rig = SluiceRig->new;
my $dir = $rig->dir;
my $sluiced = $rig->bin('sluiced');
my $init = $rig->root . '/etc/init.d/sluiced';
my $stream = 'firehose:events';
# A stats segment of its own: under prove -j another test's supervisor on
# the default stream and group would hold the default one (exit 75).
my $shm = "/sluice-t53-$$";
my %settings = (sink => 'raw', batch_size => 16, batch_timeout_ms => 50,
    block_ms => 200, parallel_consumers => 1, stats_name => $shm);
my $conf = $rig->write_config(%settings);
is($rig->run($sluiced, '-c', $conf, '--init-schema')->[0], 0, 'schema');

my $pidfile = "$dir/run/sluiced.pid";
local $ENV{DAEMON} = $sluiced;
local $ENV{CONFIG} = $conf;
local $ENV{PIDFILE} = $pidfile;
local $ENV{LOGFILE} = "$dir/daemon/sluiced.log";
# a defaults file as an admin writes one: the service user, sluice by
# default, need not exist here (empty: the configuration decides)
sub defaults_file {
    my ($name, $text) = @_;
    open my $d, '>', "$dir/$name" or die "$dir/$name: $!";
    print $d $text;
    close $d;
    return "$dir/$name";
}
local $ENV{SLUICED_DEFAULTS} = defaults_file('defaults', "SLUICE_USER=\n");
local $ENV{STOP_TIMEOUT} = 60;
local $ENV{START_TIMEOUT} = 30;
push @{ $rig->{logs} }, $ENV{LOGFILE};

my $r = $rig->run($init, 'status');
is($r->[0], 3, 'status before start: 3 (not running)');
like($r->[1], qr/sluiced is not running/, 'and says so');

$r = $rig->run($init, 'start');
is($r->[0], 0, 'start: exit 0') or diag($r->[1]);
like($r->[1], qr/sluiced started \(pid (\d+)\)/, 'start: says the pid');
my ($pid) = $r->[1] =~ /pid (\d+)/;
$pid //= 0;
$rig->_pidfile_note('proc-daemon', $pid) if $pid;
ok($pid && kill(0, $pid), 'the daemon is alive');
open my $fh, '<', $pidfile;
my $in_file = $fh ? <$fh> : '';
chomp $in_file if defined $in_file;
is($in_file, $pid, 'the pidfile holds its pid');
isnt(getppid_of($pid), $$, 'detached: not a child of the caller');

$rig->redis('XADD', $stream, '*', 'type', 'commit', 'data', qq({"n":$_}))
  for 1 .. 20;
ok($rig->wait_until(sub { $rig->psql('select count(*) from events') == 20 }, 60),
  'the daemon applies entries');
ok(-s $ENV{LOGFILE}, 'it logs to LOGFILE');

$r = $rig->run($init, 'status');
is($r->[0], 0, 'status: 0 (running)');
like($r->[1], qr/sluiced is running \(pid $pid\)/, 'status: the pid');

is(scalar(children($pid)), 1, 'one worker');
my $new = $rig->write_config(%settings, parallel_consumers => 2);
rename $new, $conf or die "rename: $!";
$r = $rig->run($init, 'reload');
is($r->[0], 0, 'reload: exit 0');
ok($rig->wait_until(sub { children($pid) == 2 }, 60),
  'after reload the new worker count (2) is in effect');
is(kill(0, $pid), 1, 'same supervisor after the reload');
$r = $rig->run($init, 'force-reload');
is($r->[0], 0, 'force-reload: exit 0 while running');

$r = $rig->run($init, 'stop');
is($r->[0], 0, 'stop: exit 0');
like($r->[1], qr/sluiced stopped/, 'stop: says so');
ok(!kill(0, $pid), 'the supervisor is gone');
ok(!-e $pidfile, 'the pidfile is removed');
is($rig->run($init, 'status')->[0], 3, 'status after stop: 3');
$rig->_pidfile_forget('proc-daemon');
is($rig->run($init, 'stop')->[0], 0, 'stop when stopped: exit 0');
is($rig->run($init, 'reload')->[0], 7, 'reload when stopped: 7 (not running)');

{
    local $ENV{CONFIG} = "$dir/no-such.conf";
    $r = $rig->run($init, 'start');
    is($r->[0], 1, 'start with a missing config: exit 1');
    like($r->[1], qr/sluiced failed to start/, 'and says so');
}
{
    local $ENV{DAEMON} = "$dir/no-such-sluiced";
    is($rig->run($init, 'start')->[0], 5, 'start without the binary: exit 5');
}
is($rig->run($init, 'bogus')->[0], 2, 'an unknown action: exit 2');

$r = $rig->run($init, 'restart');
is($r->[0], 0, 'restart from stopped: exit 0');
my ($pid2) = $r->[1] =~ /pid (\d+)/;
$rig->_pidfile_note('proc-daemon', $pid2) if $pid2;
$r = $rig->run($init, 'restart');
my ($pid3) = $r->[1] =~ /started \(pid (\d+)\)/;
ok($pid2 && $pid3 && $pid3 != $pid2 && !kill(0, $pid2) && kill(0, $pid3),
  'restart: a new supervisor replaces the old one');
$rig->_pidfile_note('proc-daemon', $pid3) if $pid3;

# a daemon killed with SIGKILL leaves its pidfile: status 1, start works
kill 'KILL', $pid3 if $pid3;
ok($rig->wait_until(sub { !-d "/proc/$pid3" }, 30), 'daemon killed with SIGKILL');
$r = $rig->run($init, 'status');
is($r->[0], 1, 'status with a stale pidfile: 1');
like($r->[1], qr/not running but \Q$pidfile\E exists/, 'and says so');
$r = $rig->run($init, 'start');
is($r->[0], 0, 'start over a stale pidfile: exit 0') or diag($r->[1]);
my ($pid4) = $r->[1] =~ /started \(pid (\d+)\)/;
$rig->_pidfile_note('proc-daemon', $pid4) if $pid4;
ok($pid4 && $pid4 != $pid3 && kill(0, $pid4), 'a new daemon runs');
is($rig->run($init, 'stop')->[0], 0, 'stopped again');
$rig->_pidfile_forget('proc-daemon');

# a service user that does not exist: refused before anything starts
{
    local $ENV{SLUICED_DEFAULTS} = defaults_file('defaults-bad-user', "SLUICE_USER=no-such-sluice-user\n");
    $r = $rig->run($init, 'start');
    is($r->[0], 6, 'start with a missing SLUICE_USER: exit 6 (not configured)');
    like($r->[1], qr/user no-such-sluice-user does not exist: create it/, '... and says what to do');
    is($rig->run($init, 'status')->[0], 3, '... nothing started');
}

sub children {
    my ($p) = @_;
    my @c = grep { /\S/ } split /\n/, `pgrep -P $p`;
    return @c;
}

sub getppid_of {
    my ($p) = @_;
    open my $s, '<', "/proc/$p/stat" or return -1;
    my $l = <$s>;
    return ($l =~ /\) \S (\d+)/)[0];
}

$rig->finish;
unlink "/dev/shm$shm";
done_testing;
