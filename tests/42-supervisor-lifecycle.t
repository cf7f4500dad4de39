#!/usr/bin/perl
# The supervisor's life: TERM under load commits and acks everything that
# was read and exits 0 within shutdown_timeout; the pidfile keeps a second
# sluiced out; kill -9 of the supervisor makes the workers finish and exit,
# and a new supervisor starts over the stale segment and pidfile; -d
# detaches; workers that all refuse the configuration make sluiced exit
# 78; `user` drops privileges; QUIT stops at once.
#
# prove -j runs other supervisor tests beside this one, with workers of
# their own: every check here looks only at this test's processes (the
# children of its supervisors, or titles with its own consumer_id).
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig qw(proc_title);
use Test::More;
use Time::HiRes qw(sleep time);

my $rig = SluiceRig->new;
my $stream = 'firehose:events';
my $group = 'firehose-processors';
my $shm = "/sluice-t42-$$";
my $pidfile = $rig->dir . '/sluiced.pid';
# Workers are titled "sluiced: worker CONSUMER_ID-n": unique to this test.
my $cid = "t42-$$";
my %base = (
    consumer_id        => $cid,
    sink               => 'raw',
    parallel_consumers => 3,
    batch_size         => 200,
    worker_timeout_ms     => 10000,
    restart_delay_ms      => 200,
    restart_delay_max_ms  => 2000,
    shutdown_timeout_ms   => 15000,
    stats_interval_ms     => 1000,
    stats_name         => $shm,
    pidfile            => $pidfile,
);
my $conf = $rig->write_config(%base);
my $r = $rig->run($rig->bin('sluiced'), '-c', $conf, '--init-schema');
is($r->[0], 0, 'schema applied') or diag($r->[1]);

# Live (non-zombie) processes whose title starts with $prefix, as
# { pid => [ppid, uid] }.
sub procs_titled {
    my ($prefix) = @_;
    my %p;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $s = <$fh> // next;
        my ($pid, $rest) = $s =~ /^(\d+) \(.*\) (.*)$/ or next;
        my ($state, $pp) = split ' ', $rest;
        next if $state eq 'Z';
        next unless index(proc_title($pid), $prefix) == 0;
        my $uid = (stat "/proc/$pid")[4];
        $p{$pid} = [$pp, $uid];
    }
    return \%p;
}

sub workers_of {
    my ($ppid) = @_;
    my $p = procs_titled('sluiced: worker ');
    return grep { $p->{$_}[0] == $ppid } keys %$p;
}

# This test's workers, whoever their parent is now.
sub our_workers { scalar(keys %{ procs_titled("sluiced: worker $cid-") }) }

# Of @pids, those that still exist, zombies included: a supervisor that
# reaped its workers before exiting leaves none of them behind.
sub still_there { grep { kill 0, $_ } @_ }

sub add_entries { $rig->add_commits($stream, $_[0], 'l') }

sub rows { $rig->psql('select count(*) from events') }
sub group { $rig->group_info($stream, $group) }

sub read_pidfile {
    open my $fh, '<', $pidfile or return 0;
    my $p = <$fh> // 0;
    chomp $p;
    return $p;
}

# ---- TERM under load ------------------------------------------------------------

my $sup = $rig->spawn('sluiced', $rig->bin('sluiced'), '-c', $conf);
ok($rig->wait_until(sub { workers_of($sup) == 3 }, 30), 'three workers');
is(read_pidfile(), $sup, 'the pidfile holds the supervisor pid');

# A second supervisor on the same pidfile refuses to start.
$r = $rig->run($rig->bin('sluiced'), '-c', $conf);
is($r->[0], 75, 'a second sluiced on the same pidfile exits 75');
like($r->[1], qr/another sluiced \(pid $sup\) is running with pidfile \Q$pidfile\E/,
    'and says which one holds it');
# Another pidfile, same stream and group: the segment keeps it out.
$r = $rig->run($rig->bin('sluiced'), '-c', $conf, '-s',
    'pidfile=' . $rig->dir . '/other.pid');
is($r->[0], 75, 'a second sluiced for the same segment exits 75');
like($r->[1], qr/stats segment \Q$shm\E belongs to a running sluiced/,
    'and says why');

add_entries(20000);
ok($rig->wait_until(sub { rows() > 500 }, 60), 'consuming');
my @workers = workers_of($sup);
kill 'TERM', $sup;
my $st = $rig->wait_exit($sup, 60);
is($st, 0, 'exit status 0 after SIGTERM under load');
unlike($rig->log_text('sluiced'), qr/shutdown_timeout .* passed|still running: SIGKILL/,
    'every worker stopped by itself within shutdown_timeout (none killed)');
like($rig->log_text('sluiced'), qr/stopping: SIGTERM to 3 workers/,
    'the supervisor passed SIGTERM to its workers');
my $g = group();
is($g->{pending}, 0, 'nothing left pending: every entry read was acked');
is(rows(), $g->{'entries-read'},
    'every entry the group delivered is committed (rows == entries-read)');
ok(!-e $pidfile, 'the pidfile is removed');
ok(!-e "/dev/shm$shm", 'the stats segment is removed');
is(scalar(still_there(@workers)), 0,
    'no worker left: the supervisor reaped every one before exiting');
is(our_workers(), 0, 'and none was started behind its back');

# ---- kill -9 of the supervisor -----------------------------------------------------

$sup = $rig->spawn('sluiced2', $rig->bin('sluiced'), '-c', $conf);
ok($rig->wait_until(sub { workers_of($sup) == 3 }, 30), 'restarted: three workers');
my @orphans = workers_of($sup);
kill 'KILL', $sup;
$rig->wait_exit($sup, 10);
ok($rig->wait_until(sub { !grep { kill 0, $_ } @orphans }, 30),
    'the workers of a killed supervisor exit');
like($rig->log_text('sluiced2'), qr/worker \Q$cid\E-\d stopped/,
    'they stop gracefully');
ok(-e "/dev/shm$shm", 'the killed supervisor left its segment');
ok(-e $pidfile, 'and its pidfile');

$sup = $rig->spawn('sluiced3', $rig->bin('sluiced'), '-c', $conf);
ok($rig->wait_until(sub { workers_of($sup) == 3 }, 30),
    'a new supervisor starts over the stale segment and pidfile');
is(read_pidfile(), $sup, 'the pidfile names the new supervisor');
ok($rig->wait_until(sub { rows() == 20000 && group()->{pending} == 0 }, 180),
    'all 20000 entries applied once, none pending')
  or diag('rows ' . rows() . ', pending ' . group()->{pending});

# ---- QUIT -----------------------------------------------------------------------------

@workers = workers_of($sup);
kill 'QUIT', $sup;
$st = $rig->wait_exit($sup, 30);
is($st, 0, 'SIGQUIT: sluiced exits at once with 0');
is(scalar(still_there(@workers)), 0,
    'no worker left after QUIT: the supervisor reaped every one before exiting');
is(our_workers(), 0, 'and none was started behind its back');

# ---- -d -------------------------------------------------------------------------------

my $logfile = $rig->dir . '/daemon.log';
$r = $rig->run($rig->bin('sluiced'), '-d', '-c', $conf, '-s', "log_target=$logfile");
is($r->[0], 0, 'sluiced -d returns 0 in the foreground') or diag($r->[1]);
my $dpid;
ok($rig->wait_until(sub { $dpid = read_pidfile(); $dpid && kill 0, $dpid }, 20),
    'the daemon wrote its pidfile');
# Let the rig's watchdog kill the daemon too if this test dies.
$rig->_pidfile_note('daemon', $dpid) if $dpid && $rig->can('_pidfile_note');
ok($rig->wait_until(sub { workers_of($dpid) == 3 }, 30), 'the daemon runs three workers');
isnt(getppid(), $dpid, 'the daemon is not our child');
# Without a pid, kill would signal our own process group.
kill 'TERM', $dpid if $dpid;
ok($dpid && $rig->wait_until(sub { !kill(0, $dpid) }, 30),
    'the daemon stops on SIGTERM');
like(do { local $/; open my $l, '<', $logfile; <$l> // '' },
    qr/supervisor exiting/, 'the daemon logged to log_target');

# ---- every worker refuses the configuration ---------------------------------------------

# TLS URLs are not supported: every worker refuses them (EXIT_CONFIG).
my $bad = $rig->write_config(%base,
    redis_url => 'rediss://127.0.0.1:' . $rig->redis_port);
$r = $rig->run($rig->bin('sluiced'), '-c', $bad);
is($r->[0], 78, 'workers that all refuse the configuration: sluiced exits 78');
like($r->[1], qr/refuses the configuration; not restarting it/,
    'the supervisor says the worker refused the configuration');
like($r->[1], qr/no worker can run with this configuration/,
    'and why it exits');
my @starts = $r->[1] =~ /started worker \Q$cid\E-1 /g;
is(scalar(@starts), 1, 'the refusing worker was not restarted in a loop');

# ---- user = nobody ---------------------------------------------------------------------------

SKIP: {
    skip 'privilege drop needs root', 5 if $> != 0;
    my $uconf = $rig->write_config(%base, user => 'nobody',
        pidfile => $rig->dir . '/pids-nobody.pid');
    $sup = $rig->spawn('sluiced-nobody', $rig->bin('sluiced'), '-c', $uconf);
    ok($rig->wait_until(sub { workers_of($sup) == 3 }, 30), 'user = nobody: three workers');
    my $p = procs_titled('sluiced: ');
    my $nobody = getpwnam('nobody');
    is($p->{$sup}[1], $nobody, 'the supervisor runs as nobody');
    is(scalar(grep { $p->{$_}[0] == $sup && $p->{$_}[1] == $nobody } keys %$p), 3,
        'the workers run as nobody');
    add_entries(100);
    ok($rig->wait_until(sub { rows() == 20100 }, 60), 'and they write');
    kill 'TERM', $sup;
    $rig->wait_exit($sup, 60);
    ok(!-e "/dev/shm$shm", 'the unprivileged supervisor removed its segment');
}

$rig->finish;
unlink "/dev/shm$shm";
done_testing;
