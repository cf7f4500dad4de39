#!/usr/bin/perl
# The supervisor keeps its workers alive: a worker killed with SIGKILL
# comes back under the same consumer name after the restart delay and
# nothing is lost; repeated quick deaths make the delay grow; a stopped
# (hung) worker is killed after worker_timeout and replaced; the process
# titles name the roles.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig qw(proc_title workers_of);
use Test::More;
use Time::HiRes qw(sleep time);
use JSON::PP qw(decode_json);

my $rig = SluiceRig->new;
my $stream = 'firehose:events';
my $group = 'firehose-processors';
my $shm = "/sluice-t40-$$";
my $conf = $rig->write_config(
    sink               => 'raw',
    parallel_consumers => 3,
    batch_size         => 50,
    worker_timeout_ms     => 3000,
    restart_delay_ms      => 300,
    restart_delay_max_ms  => 5000,
    shutdown_timeout_ms   => 20000,
    stats_interval_ms     => 1000,
    stats_name         => $shm,
);
my $r = $rig->run($rig->bin('sluiced'), '-c', $conf, '--init-schema');
is($r->[0], 0, 'schema applied') or diag($r->[1]);

# ---- helpers -------------------------------------------------------------


sub add_entries { $rig->add_commits($stream, $_[0], 't') }

sub rows { $rig->psql('select count(*) from events') }
sub pending { my $g = $rig->group_info($stream, $group); $g ? $g->{pending} : -1 }

# ---- start ---------------------------------------------------------------

my $sup = $rig->spawn('sluiced', $rig->bin('sluiced'), '-c', $conf);
ok($rig->wait_until(sub { keys %{ workers_of($sup) } == 3 }, 30),
    'sluiced forks 3 workers');
my $w = workers_of($sup);
is_deeply([sort keys %$w], [qw(test-1 test-2 test-3)],
    'workers are named CONSUMER_ID-n in their process titles');
is(proc_title($sup), "sluiced: supervisor $stream/$group",
    'the supervisor names stream and group in its title');

# ---- kill -9 under load --------------------------------------------------

add_entries(1500);
ok($rig->wait_until(sub { rows() > 100 }, 60), 'workers consume');
my $old = $w->{'test-2'};
kill 'KILL', $old;
add_entries(1500);
my $new;
ok($rig->wait_until(sub {
    $new = workers_of($sup)->{'test-2'};
    defined $new && $new != $old }, 30),
    'a new process named test-2 replaces the killed one');
like($rig->log_text('sluiced'),
    qr/worker test-2 killed by signal KILL after \d+ ms; restarting in 300 ms/,
    'the supervisor logs how the worker ended and the restart delay');
ok($rig->wait_until(sub { rows() == 3000 && pending() == 0 }, 120),
    'all 3000 entries applied once each, none pending')
  or diag('rows ' . rows() . ', pending ' . pending());
is($rig->psql('select count(distinct stream_id) from events'), 3000,
    'every stream entry has exactly one row');

# ---- quick deaths make the delay grow --------------------------------------

my $pid = workers_of($sup)->{'test-3'};
for my $round (1 .. 4) {
    kill 'KILL', $pid;
    my $prev = $pid;
    ok($rig->wait_until(sub {
        $pid = workers_of($sup)->{'test-3'};
        defined $pid && $pid != $prev }, 30),
        "test-3 restarted after quick death $round");
}
my @delays = $rig->log_text('sluiced') =~
  /worker test-3 killed by signal KILL after \d+ ms; restarting in (\d+) ms/g;
is_deeply(\@delays, [300, 600, 1200, 2400],
    'the restart delay doubles on repeated quick deaths');

# A healthy run (at least max(restart_delay_max, 10 s)) resets the delay.
sub started_ms {
    my ($name) = @_;
    my $x = $rig->run($rig->bin('sluicectl'), '-c', $conf, 'stats', '--json');
    return undef if $x->[0] != 0;
    my ($w) = grep { $_->{name} eq $name } @{ decode_json($x->[1])->{workers} };
    return $w ? $w->{started_ms} : undef;
}
ok($rig->wait_until(sub {
    my $s = started_ms('test-3');
    defined $s && time * 1000 - $s > 11000 }, 60),
    'test-3 has run for more than 10 s');
kill 'KILL', $pid;
ok($rig->wait_until(sub {
    my @d = $rig->log_text('sluiced') =~
      /worker test-3 killed by signal KILL after \d+ ms; restarting in (\d+) ms/g;
    @d == 5 && $d[4] == 300 }, 30),
    'after a healthy run the restart delay is back to restart_delay');

# ---- a hung worker ---------------------------------------------------------

my $hung = workers_of($sup)->{'test-1'};
kill 'STOP', $hung;
add_entries(300);
my $repl;
ok($rig->wait_until(sub {
    $repl = workers_of($sup)->{'test-1'};
    defined $repl && $repl != $hung }, 40),
    'a stopped worker is replaced');
ok(!kill(0, $hung) || (proc_title($hung) eq ''), 'the stopped worker is gone');
like($rig->log_text('sluiced'),
    qr/worker test-1 \(pid $hung\): no heartbeat for \d+ ms \(worker_timeout 3000 ms\); killing it/,
    'the supervisor says it killed the hung worker and why');
ok($rig->wait_until(sub { rows() == 3300 && pending() == 0 }, 120),
    'entries pending on the hung worker are applied by its replacement')
  or diag('rows ' . rows() . ', pending ' . pending());

# ---- the counters of the restarts ------------------------------------------

$r = $rig->run($rig->bin('sluicectl'), '-c', $conf, 'stats', '--json');
is($r->[0], 0, 'sluicectl stats --json');
my %restarts = map { $_->{name} => $_->{restarts} }
  @{ decode_json($r->[1])->{workers} };
is($restarts{'test-3'}, 5, 'test-3 was restarted 5 times');
is($restarts{'test-2'}, 1, 'test-2 was restarted once');
is($restarts{'test-1'}, 1, 'test-1 was restarted once');

# ---- graceful stop ----------------------------------------------------------

kill 'TERM', $sup;
my $st = $rig->wait_exit($sup, 60);
is($st, 0, 'sluiced exits 0 after SIGTERM');
ok(!-e "/dev/shm$shm", 'the stats segment is removed on a clean exit');

$rig->finish;
unlink "/dev/shm$shm";
done_testing;
