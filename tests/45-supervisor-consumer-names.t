#!/usr/bin/perl
# Consumer names that cannot collide. A worker the supervisor starts under
# a name another live client of the group reads under (an old worker whose
# CONSUMER_ID sluice inherited) refuses to start: it logs the name and the
# fix and exits with the configuration-error status, and the supervisor
# does not restart it in a loop. A name whose last reader is gone is taken
# after the quiet time. A graceful stop and a scale-down remove the
# consumers that hold nothing from the group, so that XINFO CONSUMERS
# lists only live ones.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;
use Time::HiRes qw(sleep time);
use POSIX ();

my $rig = SluiceRig->new;
my $stream = 'firehose:events';
my $group = 'firehose-processors';
my $shm = "/sluice-t45-$$";
my %base = (sink => 'raw', batch_size => 20, batch_timeout_ms => 20, block_ms => 200,
            stats_name => $shm, consumer_id => 'python-worker');
my $conf = $rig->write_config(%base, parallel_consumers => 2);
my $r = $rig->run($rig->bin('sluiced'), '-c', $conf, '--init-schema');
is($r->[0], 0, 'schema applied') or diag($r->[1]);

sub consumers {
    my $c = $rig->redis_resp('XINFO', 'CONSUMERS', $stream, $group);
    return join ' ', sort map { my %h = @$_; $h{name} } @{ ref $c eq 'ARRAY' ? $c : [] };
}
sub rows { $rig->psql('select count(*) from events') }

sub pending_of {
    my ($name) = @_;
    my $c = $rig->redis_resp('XINFO', 'CONSUMERS', $stream, $group);
    my ($x) = grep { $_->{name} eq $name } map { +{@$_} } @{ ref $c eq 'ARRAY' ? $c : [] };
    return $x ? $x->{pending} : undef;
}

# an old worker reads as python-worker-2: it took an entry and reads it
# again every 200 ms without acking it (Redis 7.0 counts a consumer's idle
# time from its last delivery, so only a reader that is given entries
# shows as active: on a live stream, every reader is)
$rig->redis('XGROUP', 'CREATE', $stream, $group, '$', 'MKSTREAM');
$rig->redis('XADD', $stream, '*', 'type', 'commit', 'data', '{"old":1}');
$rig->redis('XREADGROUP', 'GROUP', $group, 'python-worker-2', 'COUNT', '1', 'STREAMS', $stream, '>');
my $old = fork // die "fork: $!";
if ($old == 0) {
    for (;;) {
        $rig->redis('XREADGROUP', 'GROUP', $group, 'python-worker-2', 'COUNT', '1',
                    'STREAMS', $stream, '0');
        sleep 0.2;
    }
    POSIX::_exit(0);    # not exit: the rig's cleanup belongs to the test
}
$rig->redis('XADD', $stream, '*', 'type', 'commit', 'data', qq({"n":$_})) for 1 .. 10;
ok($rig->wait_until(sub { defined pending_of('python-worker-2') }, 10), 'the old worker reads');

my $sup = $rig->spawn('sluiced', $rig->bin('sluiced'), '-c', $conf);
ok($rig->wait_until(sub { $rig->log_text('sluiced') =~ /consumer name python-worker-2 is in use/ }, 30),
   'the worker under the old worker\'s name refuses to start')
  or diag($rig->log_text('sluiced'));
like($rig->log_text('sluiced'), qr/give this sluiced a consumer_id of its own/, '... and says what to do');
like($rig->log_text('sluiced'), qr/worker python-worker-2 .*(?:exit|exited).*78|configuration/i,
     '... exiting with the configuration status');
ok($rig->wait_until(sub { rows() > 0 }, 30), 'python-worker-1, a name nobody else reads under, consumes');
my $refusals = () = $rig->log_text('sluiced') =~ /consumer name python-worker-2 is in use/g;
sleep 2;
my $later = () = $rig->log_text('sluiced') =~ /consumer name python-worker-2 is in use/g;
is($later, $refusals, 'the refused worker is not restarted in a loop');

# the old worker is gone (SIGKILL: its entries stay pending under its
# name): after the quiet time the name is free again
kill 'KILL', $old;
waitpid $old, 0;
my $held = pending_of('python-worker-2');
ok($held > 0, "the old worker left $held entries pending");
my $watched = () = $rig->log_text('sluiced') =~ /consumer python-worker-2 was active \d+ ms ago/g;
kill 'HUP', $sup;    # a reload starts the refused worker again
ok($rig->wait_until(sub {
       my $n = () = $rig->log_text('sluiced') =~ /consumer python-worker-2 was active \d+ ms ago/g;
       $n > $watched }, 30),
   'a name read from moments ago is watched first') or diag($rig->log_text('sluiced'));
ok($rig->wait_until(sub { (pending_of('python-worker-2') // 1) == 0 }, 60),
   'once its last reader stays quiet, the name is taken: its pending entries applied')
  or diag($rig->log_text('sluiced'));

# scale down, then a graceful stop: the consumers that hold nothing go
$r = $rig->run($rig->bin('sluicectl'), '-c', $conf, 'scale', '1');
is($r->[0], 0, 'scale 1') or diag($r->[1]);
ok($rig->wait_until(sub { consumers() eq 'python-worker-1' }, 30),
   'scaled down: python-worker-2 removed from the group') or diag(consumers());
kill 'TERM', $sup;
is($rig->wait_exit($sup, 60) >> 8, 0, 'graceful stop');
is(consumers(), '', 'stopped: no consumer of this sluiced left in the group');
like($rig->log_text('sluiced'), qr/consumer python-worker-1 removed from group \Q$group\E \(nothing pending\)/,
     'the worker says it removed its consumer');

$rig->finish;
unlink "/dev/shm$shm";
done_testing;
