#!/usr/bin/perl
# The test rig itself: private redis-server and PostgreSQL start on free
# ports, answer, and are gone (processes and directory) after cleanup.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;

my $rig = SluiceRig->new;
my $dir = $rig->dir;
is($rig->redis('PING'), 'PONG', 'private redis-server answers');
is($rig->psql('select 40 + 2'), '42', 'private PostgreSQL answers');
isnt($rig->redis_port, 6379, 'redis is not on the system port');
isnt($rig->pg_port, 5432, 'postgres is not on the system port');
my ($rpid, $ppid) = ($rig->{redis_pid}, $rig->{pg_pid});
$rig->cleanup;
ok(!kill(0, $rpid), 'redis-server stopped after cleanup');
ok(!kill(0, $ppid), 'postgres stopped after cleanup');
ok(!-e $dir, 'temporary directory removed');

# A test killed with SIGKILL still leaves nothing behind: the watchdog
# cleans up.
my $child = fork // die;
if ($child == 0) {
    my $r = SluiceRig->new(pg => 0);
    open my $fh, '>', "/tmp/sluice-rig-probe.$$" or die;
    print $fh join(' ', $r->dir, $r->{redis_pid}), "\n";
    close $fh;
    sleep 60;
    exit 0;
}
my $probe = "/tmp/sluice-rig-probe.$child";
for (1 .. 200) { last if -s $probe; select undef, undef, undef, 0.05 }
open my $fh, '<', $probe or die "no probe: $!";
my ($cdir, $cpid) = split ' ', <$fh>;
close $fh;
unlink $probe;
kill 'KILL', $child;
waitpid $child, 0;
my $gone = 0;
for (1 .. 100) {
    if (!kill(0, $cpid) && !-e $cdir) { $gone = 1; last }
    select undef, undef, undef, 0.1;
}
ok($gone, 'after SIGKILL of a test, its redis-server and directory are gone');
done_testing;
