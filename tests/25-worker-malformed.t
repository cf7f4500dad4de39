#!/usr/bin/perl
# Malformed input never stops the worker and never blocks other entries:
# each bad entry goes to the dead-letter stream with a reason that says
# what is wrong, every good entry of the same batches is written, the
# worker keeps running. One value passes the JSON check but PostgreSQL
# refuses it (a number beyond numeric's range): the worker splits the
# batch until that entry is alone and commits the rest.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;

my $rig = SluiceRig->new;
my $sluiced = $rig->bin('sluiced');
my $stream = 'firehose:events';
my $group = 'firehose-processors';
my $conf = $rig->write_config(sink => 'raw', batch_size => 64,
    batch_timeout_ms => 50, block_ms => 200, claim_idle_ms => 60000,
    claim_interval_ms => 60000);
is($rig->run($sluiced, '-c', $conf, '--init-schema')->[0], 0, 'schema');

# bad entries, each with the reason we expect, mixed into good ones
my @bad = (
    ['not JSON',            ['data', '{"a": nope}'],         qr/^data: .*JSON/i],
    ['truncated JSON',      ['data', '{"a": [1, 2'],         qr/^data: .*JSON/i],
    ['array, not object',   ['data', '[1,2,3]'],             qr/not a JSON object but an array/],
    ['string, not object',  ['data', '"hello"'],             qr/not a JSON object but a string/],
    ['invalid UTF-8 in data', ['data', qq({"t":"\xff\xfe"})], qr/UTF-8/],
    ['invalid UTF-8 in type', ['type', "\xc3\x28", 'data', '{}'],
        qr/field type: invalid UTF-8 at byte 0/],
    ['NUL byte in a field', ['did', "a\x00b"],               qr/field did: NUL byte at byte 1/],
    ['1 MiB of garbage',    ['data', 'x' x (1 << 20)],       qr/^data: .*JSON/i],
    ['5 MiB of JSON',       ['data', '{"t":"' . ('y' x (5 << 20)) . '"}'],
        qr/^data: .*too large/i],
    ['number beyond numeric', ['data', '{"n":1e1000000}'],  qr/22003: value overflows numeric format/],
    ['raw newline in a string', ['data', qq({"t":"a\nb"})],
        qr/control character 0x0a inside a JSON string/],
);
my @cmds;
my $good = 0;
my %expect;    # data/field marker => [name, reason re]
for my $i (0 .. 219) {
    if ($i % 20 == 10) {
        my $b = $bad[($i - 10) / 20];
        push @cmds, ['XADD', $stream, '*', 'marker', "bad$i", @{ $b->[1] }];
        $expect{"bad$i"} = $b;
    } else {
        push @cmds, ['XADD', $stream, '*', 'type', 'commit',
            'data', qq({"i":$i,"t":"a\\u0000b"})];
        $good++;
    }
}
# a good entry with a 1 MiB (valid) payload, and one without data
push @cmds, ['XADD', $stream, '*', 'type', 'big',
    'data', '{"t":"' . ('z' x (1 << 20)) . '"}'];
push @cmds, ['XADD', $stream, '*', 'type', 'fields', 'a', 'b'];
$good += 2;
$rig->redis_batch(@cmds);

my $pid = $rig->spawn('w', $sluiced, '-c', $conf, '--worker', 'bad-1');
ok($rig->wait_until(sub {
    my $g = $rig->group_info($stream, $group);
    $g && $g->{pending} == 0 && $g->{lag} == 0 }, 90),
  'every entry decided and acked');
is($rig->psql('select count(*) from events'), $good,
  "all $good good entries written");
is($rig->psql(q{select count(*) from events where payload->>'t' = 'ab'}),
  $good - 2, '\u0000 is stripped from text, the entry is kept');
is($rig->psql(q{select length(payload->>'t') from events where type = 'big'}),
  1 << 20, 'a valid 1 MiB payload is written whole');

my @dead = $rig->stream_entries("$stream:dead");
is(scalar @dead, scalar @bad, 'one dead letter per bad entry');
my %dead = map { ($_->[1]{'f:marker'} // '?') => $_->[1] } @dead;
for my $m (sort keys %expect) {
    my ($name, undef, $re) = @{ $expect{$m} };
    ok($dead{$m}, "$name: dead-lettered") or next;
    like($dead{$m}{reason}, $re, "$name: reason '"
          . substr($dead{$m}{reason}, 0, 60) . "'");
}
my ($nul) = grep { ($_->[1]{'f:did'} // '') eq "a\x00b" } @dead;
ok($nul, 'dead letters keep the original bytes of their fields');
my ($huge) = grep { length($_->[1]{'f:data'} // '') == (1 << 20) } @dead;
ok($huge, 'the 1 MiB field is kept whole in its dead letter');

# the split: the batch that held the bad number committed its other rows
my $numeric_id = (grep { $dead{$_}{reason} =~ /numeric/ } keys %dead)[0];
ok($numeric_id, 'the value PostgreSQL refused was isolated');
like($rig->log_text('w'), qr/dead letter \S+ \(delivered \d+ times\): 22003/,
  'its dead letter line carries PostgreSQL\'s message');

ok(kill(0, $pid), 'the worker is still running');
$rig->redis('XADD', $stream, '*', 'type', 'after', 'data', '{"ok":1}');
ok($rig->wait_until(sub {
    $rig->psql(q{select count(*) from events where type = 'after'}) == 1 }, 30),
  'and still processes new entries');

kill 'TERM', $pid;
is($rig->wait_exit($pid, 30), 0, 'clean exit');
$rig->finish;
done_testing;
