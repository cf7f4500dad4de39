#!/usr/bin/perl
# The function sink (sink = function) with the example of
# contrib/examples/function/running-totals.sql: two workers give every
# batch to shop_apply(entries jsonb); the per-user totals equal the
# payments of the stream, counted once; the one payment the function
# refuses (an exception) is dead-lettered alone with the message, the rest
# of its batch applied; the whole stream delivered again changes nothing
# (the function is idempotent by stream ID). A function that is missing,
# or has another signature, stops the worker with exit 78 and a line
# naming it; sink = function without a function is refused at
# --check-config.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;

my $rig = SluiceRig->new;
my $stream = 'shop:events';
my $group = 'shop';
my %base = (sink => 'function', function => 'shop_apply', stream_key => $stream, consumer_group => $group,
    parallel_consumers => 2, batch_size => 50, stats_name => "/sluice-t27f-$$");
my $conf = $rig->write_config(%base);
my $r = $rig->psql_file('contrib/examples/function/running-totals.sql');
is($r->[0], 0, 'the example SQL loads') or diag($r->[1]);

# 600 entries: payments of 7 users, orders (not counted), one bad payment
my (%want, @cmds);
srand(27);
my $bad_at = 300;
for my $i (1 .. 600) {
    my $user = 'u' . ($i % 7);
    if ($i == $bad_at) {
        push @cmds, ['XADD', $stream, '*', 'type', 'payment_processed', 'user_id', $user, 'amount', 'a lot'];
    } elsif ($i % 3) {
        my $amount = sprintf '%d.%02d', int(rand(100)), int(rand(100));
        push @cmds, ['XADD', $stream, '*', 'type', 'payment_processed', 'user_id', $user, 'amount', $amount];
        $want{$user}[0]++;
        $want{$user}[1] += $amount * 100;
    } else {
        push @cmds, ['XADD', $stream, '*', 'type', 'order_placed', 'user_id', $user, 'order_id', "o$i"];
    }
}
my $want = join ' ', map { sprintf '%s=%d/%.2f', $_, $want{$_}[0], $want{$_}[1] / 100 } sort keys %want;
sub totals { join ' ', split /\n/, $rig->psql(q{SELECT user_id || '=' || payments || '/' || amount FROM shop_totals ORDER BY 1}) }
sub drained {
    return $rig->wait_until(sub {
        my $g = $rig->group_info($stream, $group);
        $g && ($g->{lag} // 1) == 0 && $g->{pending} == 0;
    }, 60);
}

$rig->redis('XGROUP', 'CREATE', $stream, $group, '0', 'MKSTREAM');
my $sup = $rig->spawn('sluiced', $rig->bin('sluiced'), '-c', $conf);
$rig->redis_batch(@cmds);
ok(drained(), 'two workers drain 600 entries');
is(totals(), $want, 'every user\'s payments counted once: the totals of the stream');
is($rig->psql('SELECT count(*) FROM shop_applied'), 599, 'every entry but the refused one recorded');
my @dead = $rig->stream_entries("$stream:dead");
is(scalar @dead, 1, 'one dead letter');
like($dead[0][1]{reason} // '', qr/P0001.*payment \S+ has no user_id or no valid amount/,
    'the refused payment, with the exception\'s SQLSTATE and message');
is($dead[0][1]{'f:amount'}, 'a lot', 'the dead letter is that entry, with its fields');

# everything delivered again: nothing changes
$rig->redis('XGROUP', 'SETID', $stream, $group, '0');
ok(drained(), 'the whole stream delivered again is drained');
is(totals(), $want, 'delivered twice, the totals are the same (idempotent by stream ID)');
is($rig->psql('SELECT count(*) FROM shop_applied'), 599, 'and no entry is recorded twice');
kill 'TERM', $sup;
is($rig->wait_exit($sup, 30), 0, 'sluiced stops cleanly');

# a missing function, a function of another signature
$rig->psql('CREATE FUNCTION other_sig(t text) RETURNS void LANGUAGE plpgsql AS $$ BEGIN END $$');
for my $fn (qw(no_such_function other_sig)) {
    my $c = $rig->write_config(%base, function => $fn);
    $r = $rig->run($rig->bin('sluiced'), '-c', $c, '--worker', "w-$fn");
    is($r->[0], 78, "function $fn: the worker exits 78 (a configuration error)");
    like($r->[1], qr/configuration: \Q$c\E:\d+: function: \Q$fn\E\(entries jsonb\) does not exist in this database/,
        "function $fn: the log names the file, line, function and its signature");
}

# refused before anything runs
my $c = $rig->write_config(%base, function => undef);
$r = $rig->run($rig->bin('sluiced'), '-c', $c, '--check-config');
is($r->[0], 78, 'sink = function without a function: --check-config exits 78');
like($r->[1], qr/function: required by sink = function/, 'and names the key');
$c = $rig->write_config(%base, function => 'bad-name');
$r = $rig->run($rig->bin('sluiced'), '-c', $c, '--check-config');
like($r->[1], qr/function: 'bad-name' is not a function name/, 'a function name that is not one is refused');

$rig->finish;
done_testing;
