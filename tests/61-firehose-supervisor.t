#!/usr/bin/perl
# The firehose reader under sluiced (relay_url set): forked beside the
# workers with the title "sluiced: firehose <relay>", its counters in the
# stats segment (sluicectl status, stats --json, stats --prometheus), the
# frames it writes drained by the workers; a quiet relay is no hang; a reload that changes only the
# reader's settings restarts the reader alone, an empty relay_url stops it
# and a relay_url brings it back, the workers untouched each time; a reader
# killed with -9 is restarted and repeats nothing. Skipped without the
# recorded frames (../shared/data/bluesky).
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig qw(proc_title);
use TestRelay;
use Test::More;
use JSON::PP qw(decode_json);
use File::Copy qw(move);

my $rig = SluiceRig->new;
my @FRAMES = TestRelay::recorded_frames_or_skip($rig);
my $LAST = TestRelay::frame_seq($FRAMES[-1]);
my $stream = 'firehose:events';
my $group = 'firehose-processors';
my $shm = "/sluice-t61-$$";
my $ctl = $rig->bin('sluicectl');

# a garbage frame and one of an unknown type ({op: 1, t: "#future"} {})
# among the recorded ones
my @play = (@FRAMES[0 .. 19], "\xff\x00garbage", "\xa2\x62op\x01\x61t\x67#future\xa0", @FRAMES[20 .. $#FRAMES]);
my ($url) = TestRelay::start($rig, \@play);
my %base = (
    sink                 => 'raw',
    parallel_consumers   => 1,
    relay_url            => $url,
    stats_name           => $shm,
    stats_interval_ms    => 1000,
    restart_delay_ms     => 200,
    restart_delay_max_ms => 1000,
    reconnect_delay_ms   => 50,
    worker_timeout_ms    => 3000,
);
my $conf = $rig->write_config(%base);
my $r = $rig->run($rig->bin('sluiced'), '-c', $conf, '--init-schema');
is($r->[0], 0, 'schema applied') or diag($r->[1]);

# Rewrite the supervisor's file with other settings, and reload.
sub reload {
    my ($sup, %kv) = @_;
    move($rig->write_config(%base, %kv), $conf) or die "move: $!";
    kill 'HUP', $sup;
}
sub stats {
    my $x = $rig->run($ctl, '-c', $conf, 'stats', '--json');
    return $x->[0] == 0 ? decode_json($x->[1]) : {};
}
sub reader_pid { my $f = stats()->{firehose}; return $f && $f->{state} ne 'dead' ? $f->{pid} : 0 }
sub worker_pids { return join ' ', map { $_->{pid} } @{ stats()->{workers} || [] } }
# entries ever added to the stream (acked trimming removes the ones read)
sub entries_added { my %i = @{ $rig->redis_resp('XINFO', 'STREAM', $stream) }; return $i{'entries-added'} }

my $sup = $rig->spawn('sluiced', $rig->bin('sluiced'), '-c', $conf);
ok($rig->wait_until(sub { ($rig->redis('GET', 'firehose:python_cursor') // '') eq $LAST }, 30),
    'the supervisor\'s reader writes the frames and saves the cursor in firehose:python_cursor');
ok($rig->wait_drained($stream, $group, 30), 'the workers drain what the reader wrote');
is($rig->psql('SELECT count(*) FROM events'), 150, 'the workers wrote the 150 entries');

my $reader = reader_pid();
ok($reader > 0, "the reader runs (pid $reader)");
is(proc_title($reader), "sluiced: firehose $url", 'the reader\'s process title names the relay');
my $j = stats()->{firehose};
is_deeply({ map { $_ => $j->{$_} } qw(state frames entries malformed unknown dead_lettered last_seq cursor_saved connects) },
    { state => 'connected', frames => 152, entries => 150, malformed => 1, unknown => 1, dead_lettered => 1,
      last_seq => $LAST, cursor_saved => $LAST, connects => 1 },
    'stats --json: the reader\'s state and counters');
cmp_ok($j->{bytes}, '>', 100_000, "stats --json: bytes in ($j->{bytes})");
$r = $rig->run($ctl, '-c', $conf, 'status');
like($r->[1], qr/firehose reader: connected, pid $reader, .* seq $LAST/, 'sluicectl status: the reader\'s line');
$r = $rig->run($ctl, '-c', $conf, 'stats', '--prometheus');
like($r->[1], qr/^sluice_firehose_entries_total 150$/m, 'stats --prometheus: sluice_firehose_entries_total');
like($r->[1], qr/^sluice_firehose_state\{state="connected"\} 1$/m, 'stats --prometheus: the state');
like($r->[1], qr/^sluice_firehose_last_seq $LAST$/m, 'stats --prometheus: the last seq');

# ---- a quiet relay ---------------------------------------------------------------
# the reader beats while it waits for frames (libwebsockets' own wait is
# not bounded: it once held the reader for 30 s)
sleep 5;
is(reader_pid(), $reader, 'a reader whose relay is quiet for longer than worker_timeout is not killed');
unlike($rig->log_text('sluiced'), qr/firehose reader \(pid \d+\): no heartbeat/, 'no missed heartbeat is logged');

# ---- reloads --------------------------------------------------------------------
my $workers = worker_pids();
reload($sup, firehose_max_depth => 31);
ok($rig->wait_until(sub { my $p = reader_pid(); $p && $p != $reader }, 20),
    'a reload of the reader\'s settings restarts the reader');
like($rig->log_text('sluiced'), qr/the firehose reader's settings changed, restarting it/, 'it is logged');
is(worker_pids(), $workers, 'the workers keep running');
$reader = reader_pid();

reload($sup, relay_url => '');
ok($rig->wait_until(sub { !kill(0, $reader) || proc_title($reader) eq '' }, 20), 'an empty relay_url stops the reader');
is(worker_pids(), $workers, 'the workers keep running');

reload($sup);
ok($rig->wait_until(sub { reader_pid() > 0 }, 20), 'relay_url set again: the reader starts');
$reader = reader_pid();
is(worker_pids(), $workers, 'the workers keep running');

# ---- a reader killed -9 ---------------------------------------------------------
kill 'KILL', $reader;
ok($rig->wait_until(sub { my $p = reader_pid(); $p && $p != $reader && stats()->{firehose}{state} eq 'connected' }, 30),
    'a reader killed with -9 is restarted');
sleep 1;
is(entries_added(), 150, 'after the restarts nothing was written twice (150 entries ever added)');
ok($rig->wait_until(sub { $rig->redis('XLEN', $stream) == 0 }, 10), 'what every group acked is trimmed');
is(worker_pids(), $workers, 'the workers keep running');

kill 'TERM', $sup;
is($rig->wait_exit($sup, 30), 0, 'sluiced stops cleanly');
is($rig->redis('GET', 'firehose:python_cursor'), $LAST, 'the cursor is kept');
is($rig->redis('EXISTS', "$stream:reader-lock"), 0, 'the lock is given back');

$rig->finish;
done_testing;
