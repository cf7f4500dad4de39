#!/usr/bin/perl
# SIGHUP and scaling: a reload with more, then fewer workers changes the
# process count without losing entries; a broken file is refused with its
# file:line and the old configuration stays; a reload the workers refuse
# stops the rollout and leaves the others running; other changed settings
# restart the workers one at a time; TTIN/TTOU (and sluicectl scale) add
# and remove one worker.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig qw(proc_title workers_of);
use Test::More;
use Time::HiRes qw(sleep time);

my $rig = SluiceRig->new;
my $stream = 'firehose:events';
my $group = 'firehose-processors';
my $shm = "/sluice-t41-$$";
my %base = (
    sink               => 'raw',
    batch_size         => 50,
    worker_timeout_ms     => 5000,
    restart_delay_ms      => 200,
    restart_delay_max_ms  => 2000,
    shutdown_timeout_ms   => 20000,
    stats_interval_ms     => 1000,
    stats_name         => $shm,
);
my $conf = $rig->write_config(%base, parallel_consumers => 2);
my $r = $rig->run($rig->bin('sluiced'), '-c', $conf, '--init-schema');
is($r->[0], 0, 'schema applied') or diag($r->[1]);


sub names { join ' ', sort keys %{ workers_of($_[0]) } }

sub add_entries { $rig->add_commits($stream, $_[0], 'r') }

sub rows { $rig->psql('select count(*) from events') }
sub pending { my $g = $rig->group_info($stream, $group); $g ? $g->{pending} : -1 }

# Rewrite the config file in place (the path sluiced re-reads).
sub rewrite {
    my (%kv) = @_;
    my $tmp = $rig->write_config(%kv);
    rename $tmp, $conf or die "rename: $!";
}

my $sup = $rig->spawn('sluiced', $rig->bin('sluiced'), '-c', $conf);
ok($rig->wait_until(sub { names($sup) eq 'test-1 test-2' }, 30),
    'two workers at start');

# ---- more workers -----------------------------------------------------------

add_entries(1000);
my %before = %{ workers_of($sup) };
rewrite(%base, parallel_consumers => 4);
kill 'HUP', $sup;
ok($rig->wait_until(sub { names($sup) eq 'test-1 test-2 test-3 test-4' }, 30),
    'HUP with parallel_consumers = 4: four workers');
my $w = workers_of($sup);
is($w->{'test-1'}, $before{'test-1'}, 'test-1 kept running (no restart)');
is($w->{'test-2'}, $before{'test-2'}, 'test-2 kept running (no restart)');
add_entries(1000);

# ---- fewer workers ------------------------------------------------------------

rewrite(%base, parallel_consumers => 1);
kill 'HUP', $sup;
ok($rig->wait_until(sub { names($sup) eq 'test-1' }, 60),
    'HUP with parallel_consumers = 1: the highest-numbered workers stop');
is(workers_of($sup)->{'test-1'}, $before{'test-1'}, 'test-1 still the same');
like($rig->log_text('sluiced'), qr/stopping worker test-4 \(pid \d+\): scaling down/,
    'the supervisor logs why it stops workers');
add_entries(500);
ok($rig->wait_until(sub { rows() == 2500 && pending() == 0 }, 120),
    'nothing lost while scaling: 2500 rows, none pending')
  or diag('rows ' . rows() . ', pending ' . pending());

# ---- a broken file ------------------------------------------------------------

open my $fh, '>>', $conf or die;
print $fh "batch_size = lots\n";
close $fh;
my $lines = () = do { open my $c, '<', $conf; <$c> };
kill 'HUP', $sup;
ok($rig->wait_until(sub {
    $rig->log_text('sluiced') =~ /reload refused.*\Q$conf\E:$lines: batch_size/ }, 20),
    'a broken file is refused with file:line and key');
like($rig->log_text('sluiced'), qr/still running on the previous configuration/,
    'and the supervisor says it keeps the old configuration');
is(names($sup), 'test-1', 'still one worker');
add_entries(100);
ok($rig->wait_until(sub { rows() == 2600 && pending() == 0 }, 60),
    'and it keeps consuming on the old configuration');

# ---- TTIN / TTOU and sluicectl scale ---------------------------------------------

rewrite(%base, parallel_consumers => 1);
kill 'TTIN', $sup;
ok($rig->wait_until(sub { names($sup) eq 'test-1 test-2' }, 30),
    'SIGTTIN: one worker more');
kill 'TTOU', $sup;
ok($rig->wait_until(sub { names($sup) eq 'test-1' }, 30),
    'SIGTTOU: one worker less');
$r = $rig->run($rig->bin('sluicectl'), '-c', $conf, 'scale', '3');
is($r->[0], 0, 'sluicectl scale 3') or diag($r->[1]);
ok($rig->wait_until(sub { names($sup) eq 'test-1 test-2 test-3' }, 30),
    'three workers after scale 3');
$r = $rig->run($rig->bin('sluicectl'), '-c', $conf, 'scale', '2');
is($r->[0], 0, 'sluicectl scale 2') or diag($r->[1]);
ok($rig->wait_until(sub { names($sup) eq 'test-1 test-2' }, 30),
    'two workers after scale 2');
# past the limit (db_pool_size): refused, and nothing changed
$r = $rig->run($rig->bin('sluicectl'), '-c', $conf, 'scale', '40');
is($r->[0], 1, 'sluicectl scale 40 (past db_pool_size): fails') or diag($r->[1]);
like($r->[1], qr/can't run 40 workers: it stops at \d+.*nothing changed: 2 workers/s,
    '... and says that nothing changed');
ok($rig->wait_until(sub { names($sup) eq 'test-1 test-2' }, 30),
    '... still two workers') or diag(names($sup));

# ---- a changed setting: rolling restart ---------------------------------------------

%before = %{ workers_of($sup) };
rewrite(%base, parallel_consumers => 2, batch_size => 20);
$r = $rig->run($rig->bin('sluicectl'), '-c', $conf, 'reload');
is($r->[0], 0, 'sluicectl reload: the supervisor took the new settings')
  or diag($r->[1]);
ok($rig->wait_until(sub {
    my $now = workers_of($sup);
    keys %$now == 2 && $now->{'test-1'} && $now->{'test-2'}
      && $now->{'test-1'} != $before{'test-1'}
      && $now->{'test-2'} != $before{'test-2'} }, 60),
    'a changed batch_size restarts both workers');
my $log = $rig->log_text('sluiced');
my ($tail) = $log =~ /(restarting the workers one at a time.*)/s;
my @order = ($tail // '') =~ /(stopping worker test-\d|started worker test-\d)/g;
is_deeply([@order[0 .. 3]],
    ['stopping worker test-1', 'started worker test-1',
     'stopping worker test-2', 'started worker test-2'],
    'one at a time: each is back before the next stops');
add_entries(400);
ok($rig->wait_until(sub { rows() == 3000 && pending() == 0 }, 120),
    'nothing lost across the rolling restart');

# ---- a reload the workers refuse ------------------------------------------------------

%before = %{ workers_of($sup) };
# TLS URLs are not supported: the worker refuses the setting (EXIT_CONFIG).
rewrite(%base, parallel_consumers => 2,
    redis_url => 'rediss://127.0.0.1:' . $rig->redis_port);
kill 'HUP', $sup;
ok($rig->wait_until(sub {
    $rig->log_text('sluiced') =~ /refuses the reloaded configuration; the rollout stops/ }, 30),
    'a worker that refuses the reloaded settings stops the rollout');
sleep 1;
my $now = workers_of($sup);
is($now->{'test-2'}, $before{'test-2'},
    'the other worker keeps running on the previous settings');
ok(kill(0, $sup), 'the supervisor stays up');
add_entries(200);
ok($rig->wait_until(sub { rows() == 3200 && pending() == 0 }, 120),
    'the remaining worker consumes everything');
rewrite(%base, parallel_consumers => 2);
kill 'HUP', $sup;
ok($rig->wait_until(sub { names($sup) eq 'test-1 test-2' }, 60),
    'a good reload brings the refused worker back');

kill 'TERM', $sup;
is($rig->wait_exit($sup, 60), 0, 'sluiced exits 0 after SIGTERM');
$rig->finish;
unlink "/dev/shm$shm";
done_testing;
