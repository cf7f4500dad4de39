#!/usr/bin/perl
# The supervisor times its children on the monotonic clock: a step of the
# wall clock kills no worker and delays no restart. sluiced and its
# children run under libfaketime (LD_PRELOAD, the monotonic clock left
# alone), with the wall-clock offset in a file the test rewrites while
# they run: +0, then +2h (a step forward much larger than
# worker_timeout: NTP, a VM resumed), then -1h (a step back of 3 hours).
#
#   - the forward step: the workers' heartbeats (wall ms, in the stats
#     segment) jump by 2 hours, the supervisor's clock too; no worker is
#     killed for its heartbeat and every pid stays the same;
#   - the back step within a restart delay: a worker killed with -9 just
#     before it is back after restart_delay, not hours later; one killed
#     after the step too;
#   - after the back step a stopped (hung) worker is still found and
#     killed after worker_timeout, and replaced;
#   - everything added meanwhile is applied; TERM stops sluiced with 0.
#
# Skipped when libfaketime (Debian package faketime) is not installed.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig qw(proc_title workers_of);
use Test::More;
use Time::HiRes qw(sleep time);
use Time::Local qw(timegm);
use JSON::PP qw(decode_json);

my ($FAKETIME) = grep { -e $_ } glob('/usr/lib/*/faketime/libfaketime.so.1'),
  '/usr/lib/faketime/libfaketime.so.1';
plan skip_all => 'libfaketime absent (Debian package faketime)'
  unless $FAKETIME;

my $rig = SluiceRig->new;
my $stream = 'firehose:events';
my $group = 'firehose-processors';
my $shm = "/sluice-t46-$$";
my $cid = "t46-$$";
my $TIMEOUT = 3000;    # worker_timeout_ms
my $DELAY = 2000;      # restart_delay_ms
my $conf = $rig->write_config(
    consumer_id          => $cid,
    sink                 => 'raw',
    parallel_consumers   => 3,
    batch_size           => 50,
    worker_timeout_ms    => $TIMEOUT,
    restart_delay_ms     => $DELAY,
    restart_delay_max_ms => 8000,
    shutdown_timeout_ms  => 20000,
    stats_interval_ms    => 500,
    stats_name           => $shm,
);
my $r = $rig->run($rig->bin('sluiced'), '-c', $conf, '--init-schema');
is($r->[0], 0, 'schema applied') or diag($r->[1]);

# ---- helpers -------------------------------------------------------------

# The wall-clock offset the faked processes see, in libfaketime's syntax;
# replaced by a rename, so that no reader finds the file empty.
my $clockfile = $rig->dir . '/faketime.rc';
sub set_clock {
    my ($offset) = @_;
    open my $fh, '>', "$clockfile.tmp" or die "$clockfile.tmp: $!";
    print $fh "$offset\n";
    close $fh;
    rename "$clockfile.tmp", $clockfile or die "rename: $!";
}

# This supervisor's workers as { name => pid }.
sub pids { my $w = workers_of($_[0]); join ' ', map { "$_=$w->{$_}" } sort keys %$w }

# sluicectl (not faked) reads the workers' slots: heartbeat_ms as each
# worker's wall clock gave it, minus the real time now, in ms, as
# { name => offset }.
sub beat_offsets {
    my $x = $rig->run($rig->bin('sluicectl'), '-c', $conf, 'stats', '--json');
    return {} if $x->[0] != 0;
    my $now = time * 1000;
    return { map { $_->{name} => $_->{heartbeat_ms} - $now }
        grep { $_->{state} ne 'dead' && $_->{heartbeat_ms} }
        @{ decode_json($x->[1])->{workers} || [] } };
}
# Every running worker's heartbeat is offset from real time by about
# $hours (within a quarter of an hour).
sub beats_offset_by {
    my ($hours) = @_;
    my $o = beat_offsets();
    return 0 if keys %$o < 3;
    return !grep { abs($_ - $hours * 3600_000) > 900_000 } values %$o;
}

# The time stamp of the supervisor's last periodic line (its own wall
# clock), minus the real time when it was read, in ms.
sub supervisor_offset {
    my @ts = $rig->log_text('sluiced') =~
      /^(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)\.(\d+)Z \S+\s+supervisor\[\d+\]: processed \d+ events/mg;
    return undef unless @ts >= 7;
    my ($y, $mo, $d, $h, $mi, $s, $ms) = @ts[-7 .. -1];
    return (timegm($s, $mi, $h, $d, $mo - 1, $y) * 1000 + $ms) - time * 1000;
}
sub supervisor_offset_by {
    my ($hours) = @_;
    my $o = supervisor_offset();
    return defined $o && abs($o - $hours * 3600_000) < 900_000;
}

sub add_entries { $rig->add_commits($stream, $_[0], 'c') }
sub rows { $rig->psql('select count(*) from events') }
sub pending { my $g = $rig->group_info($stream, $group); $g ? $g->{pending} : -1 }

# Kill worker $name of $sup with $sig; returns how long (in seconds) it
# took a new process of that name to appear, or undef after $limit s.
sub replaced_after {
    my ($sup, $name, $old, $limit) = @_;
    my $t0 = time;
    my $ok = $rig->wait_until(sub {
        my $p = workers_of($sup)->{$name};
        defined $p && $p != $old }, $limit);
    return $ok ? time - $t0 : undef;
}

# ---- start, on the real time ----------------------------------------------

set_clock('+0');
my $sup;
{
    # gcc's ASan wants to come first in the library list
    local $ENV{ASAN_OPTIONS} = join ':', grep { defined $_ && length $_ }
      $ENV{ASAN_OPTIONS}, 'verify_asan_link_order=0';
    $sup = $rig->spawn('sluiced', 'env', "LD_PRELOAD=$FAKETIME",
        "FAKETIME_TIMESTAMP_FILE=$clockfile", 'FAKETIME_NO_CACHE=1',
        'FAKETIME_DONT_FAKE_MONOTONIC=1', $rig->bin('sluiced'), '-c', $conf);
}
ok($rig->wait_until(sub { keys %{ workers_of($sup) } == 3 }, 30),
    'sluiced under libfaketime forks 3 workers');
ok($rig->wait_until(sub { beats_offset_by(0) && supervisor_offset_by(0) }, 20),
    'the clocks start on the real time');
add_entries(300);
ok($rig->wait_until(sub { rows() == 300 }, 60), 'the workers consume');
my $before = pids($sup);

# ---- a step forward, far beyond worker_timeout ------------------------------

set_clock('+2h');
ok($rig->wait_until(sub { beats_offset_by(2) }, 10),
    'the step forward: the workers\' heartbeats are 2 hours ahead')
  or diag(explain(beat_offsets()));
ok($rig->wait_until(sub { supervisor_offset_by(2) }, 10),
    'and the supervisor\'s clock too');
sleep 2 * $TIMEOUT / 1000;
is(pids($sup), $before, 'no worker was killed or restarted after the step');
my @lines = grep { /no heartbeat for/ } split /\n/, $rig->log_text('sluiced');
ok(!@lines, 'no missed heartbeat is logged') or diag(join "\n", @lines);
@lines = grep { /worker \Q$cid\E-\d .*killed by signal/ }
  split /\n/, $rig->log_text('sluiced');
ok(!@lines, 'no worker was killed') or diag(join "\n", @lines);

# ---- a step back within a restart delay --------------------------------------

my $w = workers_of($sup);
my $old = $w->{"$cid-2"};
# the restart delay the supervisor gives it (restart_delay unless an
# earlier death of test-2 doubled it)
my $reaped = qr/worker \Q$cid\E-2 (?:\(heartbeat stale\) )?killed by signal KILL after -?\d+ ms; restarting in (\d+) ms/;
my $seen = () = $rig->log_text('sluiced') =~ /$reaped/g;
kill 'KILL', $old;
my $delay;
ok($rig->wait_until(sub {
    my @d = $rig->log_text('sluiced') =~ /$reaped/g;
    $delay = $d[-1] if @d > $seen;
    defined $delay }, 5),
    'a worker killed with -9 on the forward clock is reaped, its restart scheduled');
is($delay, $DELAY, 'after restart_delay');
set_clock('-1h');    # 3 hours back, before its restart is due
my $took = replaced_after($sup, "$cid-2", $old, 30);
ok(defined $took && $took < ($delay // $DELAY) / 1000 + 1.5,
    "the step back does not delay its restart (back after "
      . (defined $took ? sprintf('%.1f s', $took) : 'more than 30 s')
      . ', restart delay ' . ($delay // '?') . ' ms)');
ok($rig->wait_until(sub { beats_offset_by(-1) }, 10),
    'the step back: the workers\' heartbeats are 1 hour behind')
  or diag(explain(beat_offsets()));
ok($rig->wait_until(sub { supervisor_offset_by(-1) }, 10),
    'and the supervisor\'s clock too');

# a worker killed after the step back
$w = workers_of($sup);
$old = $w->{"$cid-1"};
kill 'KILL', $old;
$took = replaced_after($sup, "$cid-1", $old, 30);
ok(defined $took && $took < $DELAY / 1000 + 1.5,
    "a worker killed after the step back is restarted after the restart "
      . "delay (" . (defined $took ? sprintf('%.1f s', $took) : 'not within 30 s')
      . ')');
is(workers_of($sup)->{"$cid-3"}, $w->{"$cid-3"}, 'the untouched worker runs on');

# ---- a hung worker is still found after the step back ----------------------------

$old = workers_of($sup)->{"$cid-3"};
kill 'STOP', $old;
$took = replaced_after($sup, "$cid-3", $old, 20);
ok(defined $took, 'a stopped worker is killed and replaced after the step back')
  or kill 'KILL', $old;
ok($rig->log_text('sluiced') =~
    /worker \Q$cid\E-3 \(pid $old\): no heartbeat for \d+ ms \(worker_timeout $TIMEOUT ms\); killing it/,
    'the supervisor logs the missed heartbeat');
my ($age) = $rig->log_text('sluiced') =~
  /worker \Q$cid\E-3 \(pid $old\): no heartbeat for (\d+) ms/;
ok(defined $age && $age >= $TIMEOUT && $age < $TIMEOUT + 2000,
    'it counts the time since the heartbeat last changed ('
      . ($age // '?') . ' ms), not the wall clock\'s difference');

# ---- nothing lost --------------------------------------------------------------

ok($rig->wait_until(sub { keys %{ workers_of($sup) } == 3 }, 30), 'three workers again');
add_entries(300);
ok($rig->wait_until(sub { rows() == 600 && pending() == 0 }, 60),
    'everything added is applied, none pending')
  or diag('rows ' . rows() . ', pending ' . pending());

kill 'TERM', $sup;
is($rig->wait_exit($sup, 60), 0, 'sluiced exits 0 after SIGTERM');
$rig->finish;
unlink "/dev/shm$shm";
done_testing;
