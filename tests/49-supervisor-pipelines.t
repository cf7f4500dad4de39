#!/usr/bin/perl
# Several pipelines under one sluiced: a file of [pipeline NAME] sections
# (two raw pipelines and a sharded one, shards = 2 on {shard} keys) runs
# each pipeline's workers on its own stream, group and table; one stats
# segment names each worker's pipeline (sluicectl status groups by it,
# stats --json lists the pipelines, the metrics carry a pipeline label);
# a reload that removes one pipeline, changes another and adds a third
# stops, restarts and starts those alone while the sharded one's workers
# keep running; a global key in a section, two pipelines on one stream and
# group, and a sharded stream_key without {shard} are refused with where.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig qw(proc_title workers_of);
use Test::More;
use Time::HiRes qw(sleep);
use JSON::PP;

my $rig = SluiceRig->new;
my $shm = "/sluice-t49-$$";
my $port = SluiceRig::free_port();
my %shared = (
    sink                 => 'raw',
    batch_size           => 50,
    restart_delay_ms     => 200,
    restart_delay_max_ms => 2000,
    stats_interval_ms    => 1000,
    stats_name           => $shm,
    http_listen          => "127.0.0.1:$port",
);
my %a = (stream_key => 'p:a', consumer_group => 'ga', raw_table => 'rows_a', parallel_consumers => 1);
my %b = (stream_key => 'p:b', consumer_group => 'gb', raw_table => 'rows_b', parallel_consumers => 2);
my %sh = (stream_key => 'p:sh:{shard}', consumer_group => 'gs', raw_table => 'rows_sh', shards => 2,
    parallel_consumers => 1);
my $conf = $rig->write_pipelines(\%shared, a => \%a, b => \%b, sh => \%sh);

# ---- --check-config -----------------------------------------------------------
my $r = $rig->run($rig->bin('sluiced'), '-c', $conf, '--check-config');
is($r->[0], 0, '--check-config accepts the pipelines') or diag($r->[1]);
like($r->[1], qr/^\[pipeline a\]\nstream_key = p:a\n/m, 'it prints section a with its own settings');
like($r->[1], qr/^# \[pipeline sh\.1\]\n# shard 1: stream p:sh:\{1\}, Redis Cluster hash slot (\d+)/m,
    'a shard\'s section is commented, with its hash slot');
my ($slot1) = $r->[1] =~ /stream p:sh:\{1\}, Redis Cluster hash slot (\d+)/;
# CRC16/XMODEM of the hash tag "1" modulo 16384, computed here on its own
sub crc16 {
    my $crc = 0;
    for my $c (unpack 'C*', $_[0]) {
        $crc ^= $c << 8;
        $crc = ($crc & 0x8000 ? ($crc << 1) ^ 0x1021 : $crc << 1) & 0xffff for 1 .. 8;
    }
    return $crc;
}
is($slot1, crc16('1') % 16384, 'the slot is the one of the key\'s hash tag');
unlike($r->[1], qr/^\[pipeline b\]\n(?:.*\n)*?raw_table = rows_a/m, 'b does not inherit a\'s settings');

$r = $rig->run($rig->bin('sluiced'), '-c', $conf, '--init-schema');
is($r->[0], 0, '--init-schema applies every pipeline\'s schema') or diag($r->[1]);
is($rig->psql(q{SELECT count(*) FROM pg_tables WHERE tablename IN ('rows_a','rows_b','rows_sh')}), 3,
    'the three tables exist');

# ---- running ----------------------------------------------------------------
sub workers { join ' ', sort keys %{ workers_of($_[0]) } }
sub rows { $rig->psql("SELECT count(*) FROM $_[0]") }

my $sup = $rig->spawn('sluiced', $rig->bin('sluiced'), '-c', $conf);
ok($rig->wait_until(sub { workers($sup) eq 'a/test-1 b/test-1 b/test-2 sh.0/test-1 sh.1/test-1' }, 30),
    'five workers, each titled with its pipeline')
  or diag(workers($sup));
like(proc_title($sup), qr/supervisor of 4 pipelines/, 'the supervisor\'s title');

$rig->add_commits('p:a', 100, 'a');
$rig->add_commits('p:b', 200, 'b');
$rig->add_commits('p:sh:{0}', 30, 's0');
$rig->add_commits('p:sh:{1}', 40, 's1');
ok($rig->wait_drained('p:a', 'ga') && $rig->wait_drained('p:b', 'gb') && $rig->wait_drained('p:sh:{0}', 'gs')
      && $rig->wait_drained('p:sh:{1}', 'gs'), 'every stream drained by its own group');
is(rows('rows_a') . ' ' . rows('rows_b') . ' ' . rows('rows_sh'), '100 200 70',
    'each pipeline wrote its own stream to its own table');

my $st = $rig->run($rig->bin('sluicectl'), '-c', $conf, 'status');
is($st->[0], 0, 'sluicectl status') or diag($st->[1]);
like($st->[1], qr/^pipeline a: p:a\/ga, 1 workers wanted.*\n\S*test-1 +running/m, 'status: pipeline a and its worker');
like($st->[1], qr/^pipeline b: p:b\/gb, 2 workers wanted.*\n.*test-1.*\n.*test-2/m, 'status: pipeline b and its two');
like($st->[1], qr/^pipeline sh\.1: p:sh:\{1\}\/gs/m, 'status: a shard');

my $js = $rig->run($rig->bin('sluicectl'), '-c', $conf, 'stats', '--json');
my $j = JSON::PP->new->decode($js->[1]);
is(join(' ', sort map { "$_->{name}:$_->{workers_wanted}" } @{ $j->{pipelines} }), 'a:1 b:2 sh.0:1 sh.1:1',
    'stats --json: the pipelines and their workers');
is(join(' ', sort map { "$_->{pipeline}/$_->{name}" } grep { $_->{state} eq 'running' } @{ $j->{workers} }),
    'a/test-1 b/test-1 b/test-2 sh.0/test-1 sh.1/test-1', 'stats --json: each worker names its pipeline');

my $m = $rig->run('perl', '-MIO::Socket::INET', '-e',
    'my $s = IO::Socket::INET->new("127.0.0.1:' . $port . '") or die; print $s "GET /metrics HTTP/1.0\r\n\r\n"; print while <$s>');
like($m->[1], qr/^sluice_events_applied_total\{pipeline="b",worker="test-2"\} \d+/m, 'metrics: a pipeline label');
like($m->[1], qr/^sluice_workers_wanted\{pipeline="b"\} 2$/m, 'metrics: wanted workers per pipeline');
ok($rig->wait_until(sub {
    my $t = $rig->run('perl', '-MIO::Socket::INET', '-e',
        'my $s = IO::Socket::INET->new("127.0.0.1:' . $port . '") or die; print $s "GET /metrics HTTP/1.0\r\n\r\n"; print while <$s>');
    $t->[1] =~ /^sluice_group_lag\{pipeline="sh\.1"\} 0$/m }, 10), 'metrics: a shard\'s group lag');
my $dup = () = $m->[1] =~ /^# TYPE sluice_group_up /mg;
is($dup, 1, 'each family is declared once');

# ---- a reload: b removed, a changed, c added, sh unchanged --------------------
my %before = %{ workers_of($sup) };
my %c = (stream_key => 'p:c', consumer_group => 'gc', raw_table => 'rows_c', parallel_consumers => 1);
my $next = $rig->write_pipelines(\%shared, a => { %a, batch_size => 20 }, sh => \%sh, c => \%c);
rename $next, $conf or die "rename: $!";
$r = $rig->run($rig->bin('sluiced'), '-c', $conf, '--pipeline', 'c', '--init-schema');
is($r->[0], 0, '--init-schema --pipeline c') or diag($r->[1]);
kill 'HUP', $sup;
ok($rig->wait_until(sub {
    my $w = workers_of($sup);
    join(' ', sort keys %$w) eq 'a/test-1 c/test-1 sh.0/test-1 sh.1/test-1'
      && $w->{'a/test-1'} != $before{'a/test-1'} }, 30),
    'after the reload: b is gone, a restarted, c started')
  or diag(workers($sup));
my $after = workers_of($sup);
is("$after->{'sh.0/test-1'} $after->{'sh.1/test-1'}", "$before{'sh.0/test-1'} $before{'sh.1/test-1'}",
    'the unchanged pipeline\'s workers kept running');
my $log = $rig->log_text('sluiced');
like($log, qr/pipeline b is not in the configuration any more: stopping its 2 workers/, 'the removal is logged');
like($log, qr/pipeline b removed: its workers have stopped/, '... and its end');
like($log, qr/pipeline a: configuration reloaded: settings changed/, 'the change of a is logged');
like($log, qr/pipeline c added: p:c\/gc, raw sink/, 'the addition is logged');
$rig->add_commits('p:c', 60, 'c');
$rig->add_commits('p:a', 10, 'a');
ok($rig->wait_drained('p:c', 'gc') && $rig->wait_drained('p:a', 'ga'), 'the new pipeline consumes');
is(rows('rows_c') . ' ' . rows('rows_a'), '60 110', 'c\'s rows, and a\'s on its new settings');
$rig->add_commits('p:b', 5, 'b');
sleep 1.5;
is($rig->group_info('p:b', 'gb')->{lag}, 5, 'nothing reads the removed pipeline\'s stream');

kill 'TERM', $sup;
is($rig->wait_exit($sup, 30), 0, 'sluiced stops cleanly');

# ---- refusals -----------------------------------------------------------------
my $bad = $rig->write_pipelines(\%shared, a => { %a, pidfile => '/tmp/x.pid' });
$r = $rig->run($rig->bin('sluiced'), '-c', $bad, '--check-config');
is($r->[0], 78, 'a global key in a section is refused');
like($r->[1], qr/\Q$bad\E:\d+: pidfile: a setting of the whole supervisor/, '... with the file, line and key');
$bad = $rig->write_pipelines(\%shared, a => \%a, a2 => { %a, raw_table => 'other' });
$r = $rig->run($rig->bin('sluiced'), '-c', $bad, '--check-config');
is($r->[0], 78, 'two pipelines on one stream and group are refused');
like($r->[1], qr/\[pipeline a2\]: stream_key and consumer_group: the same as \[pipeline a\]/, '... naming both');
$bad = $rig->write_pipelines(\%shared, sh => { %sh, stream_key => 'p:flat' });
$r = $rig->run($rig->bin('sluiced'), '-c', $bad, '--check-config');
like($r->[1], qr/\[pipeline sh\]: stream_key: 'p:flat' has no \{shard\}/, 'shards without {shard} are refused');
$bad = $rig->write_pipelines(\%shared, a => \%a, a => \%b);
$r = $rig->run($rig->bin('sluiced'), '-c', $bad, '--check-config');
like($r->[1], qr/:\d+: \[pipeline a\]: a second section of that name/, 'a section name twice is refused');
$r = $rig->run($rig->bin('sluiced'), '-c', $conf, '--pipeline', 'nope', '--recount');
is($r->[0], 64, '--pipeline with an unknown name is a usage error');

# ---- sluice-deadletter -p: a pipeline's (and a shard's) streams ---------------
$rig->redis('XADD', 'p:sh:{1}:dead', '*', 'id', '1-1', 'reason', 'shard one reason', 'deliveries', 1,
    'consumer', 'test-1', 'time', '2026-12-06T00:00:00Z', 'f:x', 'y');
$r = $rig->run($rig->bin('sluice-deadletter'), '-c', $conf, '-p', 'sh.1', 'list');
is($r->[0], 0, 'sluice-deadletter -p sh.1 list') or diag($r->[1]);
like($r->[1], qr/shard one reason/, '... reads the shard\'s dead-letter stream');
$r = $rig->run($rig->bin('sluice-deadletter'), '-c', $conf, '-p', 'a', 'list');
unlike($r->[1], qr/shard one reason/, '... and -p a another one');
$r = $rig->run($rig->bin('sluice-deadletter'), '-c', $conf, '-p', 'nope', 'list');
is($r->[0], 78, 'an unknown pipeline is refused');
like($r->[1], qr/no \[pipeline nope\] section/, '... naming it');
$r = $rig->run($rig->bin('sluice-deadletter'), '-c', $conf, '-p', 'sh.7', 'list');
like($r->[1], qr/pipeline sh\.7: sh has 2 shards/, 'a shard beyond the count is refused');

$rig->finish;
done_testing;
