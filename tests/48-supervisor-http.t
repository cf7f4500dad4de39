#!/usr/bin/perl
# The supervisor's HTTP listener (http_listen): /healthz, /readyz,
# /metrics (strict Prometheus text, the same writer as sluicectl), 404 and
# 405; loopback as in the sample configuration; /readyz 503 with a JSON
# reason while PostgreSQL is down (the workers back off) and 200 again
# after, and while a worker does not beat (SIGSTOP); and the bounds: a client sending a byte a second is closed at the
# 5 s deadline, a 1 MiB header gets 431, 200 connections at once are
# taken; meanwhile /healthz on a new connection answers within a second
# and a SIGHUP reload is logged at once.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use PromCheck qw(strict_prometheus);
use Test::More;
use IO::Socket::INET;
use IO::Select;
use JSON::PP qw(decode_json);
use POSIX qw(_exit);
use Time::HiRes qw(time sleep);

$SIG{PIPE} = 'IGNORE';

# The sample's value: loopback.
open my $sf, '<', 'etc/sluice.conf' or die "etc/sluice.conf: $!";
my ($sample) = grep { /^#\s*http_listen\s*=/ } <$sf>;
close $sf;
my ($host) = ($sample // '') =~ /=\s*(\S+):\d+\s*$/;
is($host, '127.0.0.1', 'the sample configuration listens on loopback');

my $rig = SluiceRig->new;
my $shm = "/sluice-t48-$$";
my $port = SluiceRig::free_port();
my $stream = 'firehose:events';
my $conf = $rig->write_config(
    sink                   => 'raw',
    parallel_consumers     => 2,
    stats_name             => $shm,
    stats_interval_ms      => 1000,
    reconnect_delay_ms     => 100,
    reconnect_delay_max_ms => 300,
    http_listen            => "$host:$port",
);
my $r = $rig->run($rig->bin('sluiced'), '-c', $conf, '--init-schema');
is($r->[0], 0, 'schema applied') or diag($r->[1]);

# GET path (or another request text): (status, body, seconds taken).
sub http {
    my ($path, %o) = @_;
    my $t0 = time;
    my $s = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port, Proto => 'tcp', Timeout => 5)
      or return (0, "connect: $!", time - $t0);
    my $req = $o{raw} // "GET $path HTTP/1.0\r\nHost: test\r\n\r\n";
    print $s $req;
    my $sel = IO::Select->new($s);
    my $buf = '';
    while (time - $t0 < ($o{timeout} // 5)) {
        next unless $sel->can_read(0.2);
        my $n = sysread($s, my $chunk, 65536);
        last if !defined $n || $n == 0;
        $buf .= $chunk;
    }
    close $s;
    my ($status) = $buf =~ m{^HTTP/1\.[01] (\d{3}) };
    my ($body) = $buf =~ /\r\n\r\n(.*)\z/s;
    return ($status // 0, $body // '', time - $t0);
}

my $sup = $rig->spawn('sluiced', $rig->bin('sluiced'), '-c', $conf);
ok($rig->wait_until(sub { (http('/healthz'))[0] == 200 }, 20), '/healthz answers 200');
my ($st, $body) = http('/healthz');
is($body, "ok\n", '/healthz says ok');

# Bound to loopback: /proc/net/tcp lists the listener as 127.0.0.1:port.
my $hexport = sprintf '%04X', $port;
my $listen = 0;
if (open my $pt, '<', '/proc/net/tcp') {
    while (<$pt>) {
        my (undef, $local, undef, $state) = split ' ', $_;
        $listen = $local if $state eq '0A' && $local =~ /:$hexport$/;
    }
}
is($listen, "0100007F:$hexport", 'the listener is bound to 127.0.0.1 only');
like($rig->log_text('sluiced'), qr/http: listening on 127\.0\.0\.1:$port/, 'and says so in the log');

($st) = http('/nope');
is($st, 404, 'an unknown path: 404');
($st) = http('', raw => "POST /healthz HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
is($st, 405, 'POST: 405');

# ---- consuming: ready, metrics --------------------------------------------------

$rig->redis_batch(map { ['XADD', $stream, '*', 'type', 'commit', 'data', qq({"n":$_}), 'seq', $_] } 1 .. 500);
sub rows { $rig->psql('select count(*) from events') }
ok($rig->wait_until(sub { rows() == 500 }, 60), '500 rows applied');
my $ready;
ok($rig->wait_until(sub { ($ready) = http('/readyz'); $ready == 200 }, 20), '/readyz 200 while the workers consume');
($st, $body) = http('/readyz');
is_deeply(eval { decode_json($body) }, { ready => JSON::PP::true }, '/readyz body {"ready":true}');

my $m;
ok($rig->wait_until(sub { ($st, $m) = http('/metrics'); $st == 200 && $m =~ /^sluice_group_pending 0$/m }, 20),
    '/metrics 200 with the group figures the workers published');
my @errors = strict_prometheus($m);
is_deeply(\@errors, [], '/metrics passes the strict Prometheus checker') or diag(join "\n", @errors);
my $sum = 0;
$sum += $_ for $m =~ /^sluice_events_applied_total\{worker="test-\d"\} (\d+)$/mg;
is($sum, 500, '/metrics: sluice_events_applied_total sums to the rows');
like($m, qr/^sluice_group_up 1$/m, '/metrics: sluice_group_up 1');
like($m, qr/^sluice_group_lag 0$/m, '/metrics: the group lag');
my $ctl = $rig->run($rig->bin('sluicectl'), '-c', $conf, 'stats', '--prometheus');
my @names = sort keys %{ { map { $_ => 1 } $m =~ /^# TYPE (\S+)/mg } };
my @ctl_names = sort keys %{ { map { $_ => 1 } $ctl->[1] =~ /^# TYPE (\S+)/mg } };
is_deeply(\@names, \@ctl_names, '/metrics has the metrics of sluicectl stats --prometheus');

# ---- PostgreSQL down: not ready -----------------------------------------------------

$rig->stop_pg('fast');
$rig->redis_batch(map { ['XADD', $stream, '*', 'type', 'commit', 'data', qq({"n":$_}), 'seq', $_] } 501 .. 600);
my $reason;
ok($rig->wait_until(sub {
    ($st, $body) = http('/readyz');
    return 0 unless $st == 503;
    my $j = eval { decode_json($body) } or return 0;
    $reason = $j->{reason};
    return !$j->{ready} && ($reason // '') =~ /^worker test-\d is backoff$/ }, 60),
    '/readyz 503 with a JSON reason while PostgreSQL is down') or diag("$st $body");
($st) = http('/healthz');
is($st, 200, '/healthz still 200 meanwhile');
$rig->start_pg;
ok($rig->wait_until(sub { rows() == 600 && (http('/readyz'))[0] == 200 }, 90), '/readyz 200 again once PostgreSQL is back');

# a worker that stops beating (SIGSTOP, well within worker_timeout) is not
# ready, long before the supervisor kills it
my ($stopped) = map { $_->{pid} } grep { $_->{name} eq 'test-2' }
  @{ (decode_json($rig->run($rig->bin('sluicectl'), '-c', $conf, 'stats', '--json')->[1]))->{workers} };
kill 'STOP', $stopped;
ok($rig->wait_until(sub { ($st, $body) = http('/readyz'); $st == 503 }, 15), '/readyz 503 once a worker stopped beating');
like($body, qr/^\{"ready":false,"reason":"worker test-2: no heartbeat for \d+\.\d s"\}$/, 'the reason names the worker');
kill 'CONT', $stopped;
ok($rig->wait_until(sub { (http('/readyz'))[0] == 200 }, 15), '/readyz 200 again once it beats');
ok(kill(0, $stopped), 'the worker was not killed (worker_timeout is longer)');

# ---- abuse -------------------------------------------------------------------------

# 200 connections at once, held open and silent.
my @flood;
for (1 .. 200) {
    my $s = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port, Proto => 'tcp', Timeout => 3);
    push @flood, $s if $s;
}
is(scalar(@flood), 200, '200 connections at once are taken');

# A client sending one byte a second: closed at the 5 s deadline.
my $slow = fork // die "fork: $!";
if ($slow == 0) {
    my $s = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port, Proto => 'tcp') or _exit(2);
    my $t0 = time;
    for my $c (split //, "GET /healthz HTTP/1.0\r\nX-Slow: " . ('a' x 20)) {
        last unless defined syswrite($s, $c);
        my $sel = IO::Select->new($s);
        if ($sel->can_read(1)) {
            my $n = sysread($s, my $b, 100);
            if (defined $n && $n == 0 || !defined $n) {
                my $took = time - $t0;
                _exit($took >= 4 && $took < 7.5 ? 0 : 3);
            }
        }
    }
    _exit(4);
}

# A 1 MiB header: 431 and the connection closes.
my $big = fork // die "fork: $!";
if ($big == 0) {
    $SIG{PIPE} = 'IGNORE';
    my $s = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port, Proto => 'tcp') or _exit(2);
    my $data = "GET /healthz HTTP/1.0\r\nX-Big: " . ('b' x (1024 * 1024)) . "\r\n\r\n";
    my $off = 0;
    while ($off < length $data) {
        my $n = syswrite($s, $data, 65536, $off);
        last unless $n;
        $off += $n;
    }
    shutdown($s, 1);
    my $buf = '';
    while (sysread($s, my $chunk, 65536)) { $buf .= $chunk }
    _exit($buf =~ m{^HTTP/1\.0 431 } ? 0 : 3);
}

sleep 1;
my @took;
for (1 .. 3) {
    my ($s, $b, $t) = http('/healthz', timeout => 2);
    push @took, $s == 200 ? $t : 99;
    sleep 0.5;
}
cmp_ok((sort { $b <=> $a } @took)[0], '<', 1, '/healthz on a new connection answers within a second meanwhile');

my $mark = length $rig->log_text('sluiced');
my $t0 = time;
kill 'HUP', $sup;
my $logged = $rig->wait_until(sub { substr($rig->log_text('sluiced'), $mark) =~ /configuration reloaded/ }, 5);
my $hup_took = time - $t0;
ok($logged && $hup_took < 1, sprintf('a SIGHUP reload is logged at once meanwhile (%.2f s)', $hup_took));

waitpid($slow, 0);
is($? >> 8, 0, 'the client sending a byte a second is closed at the 5 s deadline');
waitpid($big, 0);
is($? >> 8, 0, 'a 1 MiB header gets 431');

# The flood's connections are closed by the deadline too.
sleep 1;
my $closed = 0;
for my $s (@flood[-10 .. -1]) {
    my $sel = IO::Select->new($s);
    $closed++ if $sel->can_read(2) && !sysread($s, my $b, 10);
}
is($closed, 10, 'the silent connections are closed after the deadline');
close $_ for @flood;
($st) = http('/healthz');
is($st, 200, '/healthz after the abuse');

kill 'TERM', $sup;
is($rig->wait_exit($sup, 60), 0, 'sluiced exits 0');
$rig->finish;
unlink "/dev/shm$shm";
done_testing;
