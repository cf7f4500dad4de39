#!/usr/bin/perl
# A worker whose batch waits on another session's lock for longer than
# worker_timeout is alive, not hung: it keeps beating its heartbeat while
# PostgreSQL works (the wait is sliced, see pg_conn.h), the supervisor
# leaves it alone, and the batch commits once the lock goes. (A worker
# that really stopped, SIGSTOP, is still killed: test 40.)
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;
use JSON::PP qw(decode_json);

my $rig = SluiceRig->new;
my $stream = 'firehose:events';
my $shm = "/sluice-t24l-$$";
my $conf = $rig->write_config(sink => 'raw', parallel_consumers => 1, stats_name => $shm,
    worker_timeout_ms => 2000, restart_delay_ms => 100, batch_size => 10, batch_timeout_ms => 50);
my $r = $rig->run($rig->bin('sluiced'), '-c', $conf, '--init-schema');
is($r->[0], 0, 'schema applied') or diag($r->[1]);

my $n = 0;
sub add { $rig->redis('XADD', $stream, '*', 'type', 'commit', 'data', '{"n":' . ++$n . '}', 'seq', $n) for 1 .. $_[0] }
sub rows { return $rig->psql('SELECT count(*) FROM events') }
sub worker {
    my $x = $rig->run($rig->bin('sluicectl'), '-c', $conf, 'stats', '--json');
    return $x->[0] == 0 ? (decode_json($x->[1])->{workers} || [])->[0] : undef;
}

my $sup = $rig->spawn('sluiced', $rig->bin('sluiced'), '-c', $conf);
add(1);
ok($rig->wait_until(sub { rows() == 1 }, 30), 'the worker is connected and writing');
my $pid = worker()->{pid};

# another session holds the table for 7 s, over three worker_timeouts
my $locker = $rig->spawn('locker', 'psql', '-X', '-q', '-d', $rig->database_url, '-c',
    'BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(7); COMMIT;');
ok($rig->wait_until(sub {
    $rig->psql(q{SELECT count(*) FROM pg_locks WHERE relation = 'events'::regclass
                 AND mode = 'AccessExclusiveLock' AND granted}) == 1 }, 20),
    'another session holds an exclusive lock on the table');
add(5);
ok($rig->wait_until(sub {
    $rig->psql(q{SELECT count(*) FROM pg_locks WHERE relation = 'events'::regclass AND NOT granted}) >= 1 }, 20),
    'the worker\'s batch waits on the lock');
sleep 4;
is(worker()->{pid}, $pid, 'twice worker_timeout into the wait, the worker still runs (same pid)');
is($rig->wait_exit($locker, 30), 0, 'the lock is released');
ok($rig->wait_until(sub { rows() == 6 }, 30), 'the batch that waited commits');
is(worker()->{pid}, $pid, 'the same worker wrote it');
is(worker()->{restarts}, 0, 'no restart');
unlike($rig->log_text('sluiced'), qr/no heartbeat/, 'the supervisor saw no missed heartbeat');

kill 'TERM', $sup;
is($rig->wait_exit($sup, 30), 0, 'sluiced stops cleanly');
$rig->finish;
done_testing;
