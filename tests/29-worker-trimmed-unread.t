#!/usr/bin/perl
# Entries trimmed before the group read them are made visible: the workers
# stop, the stream grows past its XADD MAXLEN cap (an old reader's trim),
# the workers start again. Exactly one worker logs the loss, with its
# count; sluicectl status shows it, stats --json and --prometheus count it
# (sluice_entries_trimmed_unread_total); once the group has read past the
# gap nothing more is counted; a second loss counts only itself. (Redis's
# lag stays off by the lost entries, so "drained" here is nothing pending
# and every entry left in PostgreSQL.)
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;
use JSON::PP qw(decode_json);

my $rig = SluiceRig->new;
my $stream = 'firehose:events';
my $group = 'firehose-processors';
my $shm = "/sluice-t29t-$$";
my $conf = $rig->write_config(sink => 'raw', parallel_consumers => 2, stats_name => $shm,
    stats_interval_ms => 1000, batch_size => 50);
my $ctl = $rig->bin('sluicectl');
my $r = $rig->run($rig->bin('sluiced'), '-c', $conf, '--init-schema');
is($r->[0], 0, 'schema applied') or diag($r->[1]);

my $n = 0;
sub add {
    my ($count, @maxlen) = @_;
    $rig->redis_batch(map { ['XADD', $stream, @maxlen, '*', 'type', 'commit', 'data', '{"n":' . ++$n . '}', 'seq', $n] }
        1 .. $count);
}
sub start { return $rig->spawn('sluiced-' . ++$n, $rig->bin('sluiced'), '-c', $conf) }
sub stop { my ($pid) = @_; kill 'TERM', $pid; is($rig->wait_exit($pid, 60), 0, 'sluiced stops cleanly') }
sub rows { return $rig->psql('SELECT count(*) FROM events') }
sub drained {
    my ($want) = @_;
    return $rig->wait_until(sub { rows() == $want && ($rig->group_info($stream, $group) || {})->{pending} == 0 }, 30);
}
sub losses { my ($text) = @_; return () = $text =~ /entries trimmed before group \Q$group\E read them: \Q$stream\E lost them/g }
sub total {
    my $x = $rig->run($ctl, '-c', $conf, 'stats', '--json');
    return $x->[0] == 0 ? decode_json($x->[1])->{total}{entries_trimmed_unread} : undef;
}

# the group reads 10 entries
add(10);
my $sup = start();
ok($rig->wait_drained($stream, $group, 30), 'the group reads the first 10 entries');
my $name = "sluiced-$n";
stop($sup);
is(losses($rig->log_text($name)), 0, 'nothing lost: nothing logged');

# 100 more with an exact cap of 20: 80 of them go unread
add(100, 'MAXLEN', '20');
is($rig->redis('XLEN', $stream), 20, 'the stream holds its last 20 entries');
$sup = start();
$name = "sluiced-$n";
ok(drained(30), 'the workers read what is left: the 10 read before and the 20 left are in PostgreSQL');
is(losses($rig->log_text($name)), 1, 'one worker of the two logs the loss, once');
like($rig->log_text($name), qr/error .*80 entries trimmed before group \Q$group\E read them/,
    'the log line counts the 80 entries lost');
is(total(), 80, 'stats --json: entries_trimmed_unread 80');
$r = $rig->run($ctl, '-c', $conf, 'status');
like($r->[1], qr/^LOST: 80 entries were trimmed from the stream before the group read them/m,
    'sluicectl status shows the loss');
$r = $rig->run($ctl, '-c', $conf, 'stats', '--prometheus');
my $sum = 0;
$sum += $_ for $r->[1] =~ /^sluice_entries_trimmed_unread_total\{worker="[^"]+"\} (\d+)$/mg;
is($sum, 80, 'stats --prometheus: sluice_entries_trimmed_unread_total sums to 80');
sleep 2;
is(losses($rig->log_text($name)), 1, 'read past the gap: nothing more is counted');
stop($sup);

# a second loss: only it counts
add(30, 'MAXLEN', '10');
$sup = start();
$name = "sluiced-$n";
ok($rig->wait_until(sub { ($rig->log_text($name) =~ /(\d+) entries trimmed before group/)[0] }, 30),
    'a second loss is found');
like($rig->log_text($name), qr/\b20 entries trimmed before group/, 'it counts the 20 entries of the second loss, not the 80 before');
is(losses($rig->log_text($name)), 1, 'logged once');
ok(drained(40), 'the workers read the 10 entries left');
is(total(), 20, 'stats --json: this sluiced counted the 20');
stop($sup);

$rig->finish;
done_testing;
