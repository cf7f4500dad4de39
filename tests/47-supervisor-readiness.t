#!/usr/bin/perl
# Readiness that init systems see. systemd: a fake NOTIFY_SOCKET (a Unix
# datagram socket of the test) gets READY=1 only once every worker
# consumes (not while PostgreSQL is down), with a STATUS= line; a reload
# sends RELOADING=1 then READY=1; WATCHDOG=1 comes at half WATCHDOG_USEC;
# a stop sends STOPPING=1. s6: the service directory etc/s6/sluiced under
# a real s6-supervise, where s6-svwait -U returns once sluiced wrote its
# newline to the notification fd, and not before its workers consume.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;
use IO::Socket::UNIX;
use Socket qw(SOCK_DGRAM);
use Time::HiRes qw(time sleep);
use File::Copy qw(copy);

my $rig = SluiceRig->new;
my $shm = "/sluice-t47-$$";
my %base = (sink => 'raw', parallel_consumers => 2, stats_name => $shm, reconnect_delay_ms => 100,
    reconnect_delay_max_ms => 300);
my $conf = $rig->write_config(%base);
my $r = $rig->run($rig->bin('sluiced'), '-c', $conf, '--init-schema');
is($r->[0], 0, 'schema applied') or diag($r->[1]);

# ---- systemd ---------------------------------------------------------------------
my $path = $rig->dir . '/notify.sock';
my $sock = IO::Socket::UNIX->new(Type => SOCK_DGRAM, Local => $path) or die "notify socket: $!";
chmod 0777, $path;
$sock->blocking(0);
my @got;    # [time, message]
sub drain { while (defined(my $from = $sock->recv(my $m, 4096))) { last unless length $m; push @got, [time, $m] } }
sub got_line { my ($re) = @_; drain(); return grep { $_->[1] =~ $re } @got }

$rig->stop_pg;
my $sup;
{
    local $ENV{NOTIFY_SOCKET} = $path;
    local $ENV{WATCHDOG_USEC} = 1_000_000;
    $sup = $rig->spawn('sluiced', $rig->bin('sluiced'), '-c', $conf);
}
sleep 3;
is(scalar(got_line(qr/^READY=1/m)), 0, 'PostgreSQL down: the workers do not consume, no READY=1');
ok(scalar(got_line(qr/^WATCHDOG=1$/m)) >= 4, 'WATCHDOG=1 every half of WATCHDOG_USEC meanwhile (the loop is alive)');
my $pg_up = time;
$rig->start_pg;
ok($rig->wait_until(sub { got_line(qr/^READY=1/m) }, 30), 'PostgreSQL back: READY=1');
my ($ready) = got_line(qr/^READY=1/m);
cmp_ok($ready->[0], '>', $pg_up, 'READY=1 came after PostgreSQL was back');
like($ready->[1], qr/^STATUS=.*2 workers/m, 'with a STATUS= line naming the workers');
is(scalar(got_line(qr/^READY=1/m)), 1, 'READY=1 once');

@got = ();
kill 'HUP', $sup;
ok($rig->wait_until(sub { got_line(qr/^READY=1/m) }, 20), 'a reload ends with READY=1');
my @seq = map { $_->[1] =~ /^(RELOADING|READY)=1/m ? $1 : () } @got;
is("@seq", 'RELOADING READY', 'a reload: RELOADING=1, then READY=1');

@got = ();
kill 'TERM', $sup;
is($rig->wait_exit($sup, 30), 0, 'sluiced stops');
ok(scalar(got_line(qr/^STOPPING=1/m)), 'a stop: STOPPING=1');

# ---- s6 ---------------------------------------------------------------------------
SKIP: {
    skip 's6 is not installed', 4 unless -x '/usr/bin/s6-supervise';
    my $svc = $rig->dir . '/s6/sluiced';
    mkdir $rig->dir . '/s6';
    mkdir $svc;
    copy("etc/s6/sluiced/$_", "$svc/$_") or die "$_: $!" for qw(run notification-fd);
    chmod 0755, "$svc/run";
    open my $fh, '>', "$svc/conf" or die $!;
    print $fh "DAEMON=" . $rig->bin('sluiced') . "\nCONFIG=$conf\nSLUICE_USER=\n";
    close $fh;
    # down at first: started by s6-svc -u once PostgreSQL is stopped
    open $fh, '>', "$svc/down" or die $!;
    close $fh;
    my $s6 = $rig->spawn('s6-supervise', 's6-supervise', $svc);
    ok($rig->wait_until(sub { -p "$svc/supervise/control" || -e "$svc/supervise/control" }, 10), 's6-supervise runs');
    $rig->stop_pg;
    $rig->run('s6-svc', '-u', $svc);
    my $t = $rig->run('s6-svwait', '-U', '-t', '3000', $svc);
    isnt($t->[0], 0, 's6-svwait -U: not ready while PostgreSQL is down');
    $rig->start_pg;
    $t = $rig->run('s6-svwait', '-U', '-t', '30000', $svc);
    is($t->[0], 0, 's6-svwait -U returns once the workers consume') or diag($t->[1]);
    like($rig->run('s6-svstat', $svc)->[1], qr/^up \(pid \d+\) .*ready/, 's6-svstat says up and ready');
    $rig->run('s6-svc', '-d', '-wD', '-T', '30000', $svc);
    $rig->run('s6-svc', '-x', $svc);
    $rig->wait_exit($s6, 30);
}

$rig->finish;
done_testing;
