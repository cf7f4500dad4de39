#!/usr/bin/perl
# The raw sink end to end: --init-schema (twice, and concurrently), then N
# entries in -> exactly N rows with the right type and payload, the group's
# lag 0 and its pending list empty; a non-default raw_table; a clean stop.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;

my $rig = SluiceRig->new;
my $sluiced = $rig->bin('sluiced');
my %common = (
    sink              => 'raw',
    batch_size        => 100,
    batch_timeout_ms  => 50,
    block_ms          => 200,
    claim_interval_ms => 1000,
    claim_idle_ms     => 30000,
);
my $conf = $rig->write_config(%common);

# --init-schema: twice in a row, and four at once on a fresh table.
my $r = $rig->run($sluiced, '-c', $conf, '--init-schema');
is($r->[0], 0, '--init-schema succeeds') or diag($r->[1]);
$r = $rig->run($sluiced, '-c', $conf, '--init-schema');
is($r->[0], 0, '--init-schema succeeds again (idempotent)') or diag($r->[1]);
is($rig->psql("select count(*) from information_schema.columns "
      . "where table_name = 'events'"), 5, 'events has its five columns');

my $cconf = $rig->write_config(%common, raw_table => 'parallel_events');
my @pids = map { $rig->spawn("init$_", $sluiced, '-c', $cconf, '--init-schema') }
  1 .. 4;
my @st = map { $rig->wait_exit($_, 60) } @pids;
is_deeply(\@st, [0, 0, 0, 0], 'four concurrent --init-schema runs all succeed')
  or diag(join "\n", map { $rig->log_text("init$_") } 1 .. 4);
is($rig->psql("select count(*) from pg_indexes where tablename = "
      . "'parallel_events'"), 2,
  'the concurrent runs created the table with its indexes once');
ok($rig->psql("select count(*) from pg_indexes where indexname = "
      . "'parallel_events_stream_id_key'") == 1,
  'constraint names follow raw_table');

# N entries: some before the worker starts, the rest while it runs.
my $N = 1000;
my $stream = 'firehose:events';
my @cmds;
for my $i (1 .. 600) {
    push @cmds, ['XADD', $stream, '*', 'type', ($i % 2 ? 'commit' : 'identity'),
        'data', qq({"i":$i,"text":"entry $i","nested":{"ok":true}}), 'seq', $i];
}
$rig->redis_batch(@cmds);
my $pid = $rig->spawn('w1', $sluiced, '-c', $conf, '--worker', 'test-1');
ok($rig->wait_until(sub { $rig->psql('select count(*) from events') >= 600 }, 60),
  'the pre-loaded entries arrive');
@cmds = ();
for my $i (601 .. $N - 1) {
    push @cmds, ['XADD', $stream, '*', 'type', 'commit',
        'data', qq({"i":$i,"text":"entry $i","nested":{"ok":true}}), 'seq', $i];
}
# the last one has no data field: its payload is an object of its fields
push @cmds, ['XADD', $stream, '*', 'type', 'account', 'did', 'did:plc:x',
    'active', 'true'];
$rig->redis_batch(@cmds);

ok($rig->wait_until(sub { $rig->psql('select count(*) from events') == $N }, 60),
  "all $N entries arrive");
ok($rig->wait_until(sub {
    my $g = $rig->group_info($stream, 'firehose-processors');
    $g && $g->{pending} == 0 && ($g->{lag} // -1) == 0;
}, 30), 'group lag 0 and pending list empty');
my $g = $rig->group_info($stream, 'firehose-processors');
is($g->{'entries-read'}, $N, "the group read exactly $N entries");
is($rig->psql('select count(distinct stream_id) from events'), $N,
  'one row per stream ID');
is($rig->psql(q{select count(*) from events where type = 'identity'}), 300,
  'type comes from the type field');
is($rig->psql(q{select payload->>'text' || '|' || (payload->'nested'->>'ok')
    from events where payload->>'i' = '7'}), 'entry 7|true',
  'payload is the data field as jsonb');
is($rig->psql(q{select payload::text from events where type = 'account'}),
  '{"did": "did:plc:x", "type": "account", "active": "true"}',
  'without data, payload is an object of all fields');
my @ids = map { $_->[0] } $rig->stream_entries($stream);
is($rig->psql("select stream_id from events order by id desc limit 1"),
  $ids[-1], 'stream_id holds the entry ID');
is($rig->psql(q{select count(*) from events
    where created_at > (now() at time zone 'utc') - interval '10 minutes'
      and created_at < (now() at time zone 'utc') + interval '1 minute'}), $N,
  'created_at is now, in UTC');

# A non-default table, on another stream, with its own DDL.
my $oconf = $rig->write_config(%common, raw_table => 'other_events',
    stream_key => 'other:stream', raw_type_field => 'kind');
$r = $rig->run($sluiced, '-c', $oconf, '--init-schema');
is($r->[0], 0, '--init-schema for raw_table other_events') or diag($r->[1]);
$rig->redis('XADD', 'other:stream', '*', 'kind', 'k1', 'data', '{"a":1}');
my $opid = $rig->spawn('w2', $sluiced, '-c', $oconf, '--worker', 'test-2');
ok($rig->wait_until(sub {
    ($rig->psql_try(q{select type || payload::text from other_events}) // '')
      eq 'k1{"a": 1}' }, 60),
  'raw_table and raw_type_field are honoured');

kill 'TERM', $pid, $opid;
is($rig->wait_exit($pid, 30), 0, 'worker exits 0 on SIGTERM');
is($rig->wait_exit($opid, 30), 0, 'second worker exits 0 on SIGTERM');
my $log = $rig->log_text('w1');
like($log, qr/worker test-1 starting: stream firehose:events, group firehose-processors, sink raw/,
  'start-up line names stream, group and sink');
like($log, qr/entries applied/, 'a periodic summary was logged');
like($log, qr/worker test-1 stopped/, 'stop is logged');
is($rig->psql('select count(*) from events'), $N, 'still exactly N rows');

$rig->finish;
done_testing;
