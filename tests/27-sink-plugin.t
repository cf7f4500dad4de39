#!/usr/bin/perl
# The plugin sink (sink = plugin): a sink in C, loaded with dlopen.
#
# The example contrib/examples/plugin/required-fields.so, two workers:
# every entry that has the fields plugin.required names is written once
# (stream ID and fields as jsonb, quotes, newlines and non-ASCII text
# intact); an entry without one of them is dead-lettered with a reason
# naming the field, one with bad UTF-8 with a reason naming its field;
# the whole stream delivered again changes no row.
#
# Refusals, each with exit 78 and a message naming the setting `plugin`,
# the file and the cause, both at `sluiced --check-config` and when a
# worker starts: a file that is not there, a shared object without the
# symbol sluice_sink_v1, one built for sink ABI 2, one without apply(),
# and the plugin's own create() refusing its settings (no
# plugin.required); a table that does not exist stops the worker with 78
# at on_connect(). The supervisor leaves a refusing worker stopped.
#
# A plugin that crashes (tests/plugins/crash.c: SIGSEGV, or abort() in the
# sanitized build, when an entry has crash = 1) kills only its worker: the
# supervisor restarts it with growing delays (the log shows them), the
# other worker keeps committing, the crashing entry is never acked while
# it kills its readers (it stays pending, in no table) and, once
# delivered more than max_deliveries times, it is in the dead-letter
# stream with the delivery-count reason; every other entry is in the
# table exactly once.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;
use Time::HiRes qw(sleep time);

my $rig = SluiceRig->new;
my $build = $rig->bin('');
$build =~ s{/$}{};
my $example = "$build/examples/required-fields.so";
my %tp = map { $_ => "$build/tests/plugins/$_.so" } qw(crash no-symbol abi2 no-apply);
for my $so ($example, values %tp) {
    BAIL_OUT("$so is missing: run make first") unless -f $so;
}

my $stream = 'orders:events';
my $group = 'orders';
my %base = (sink => 'plugin', plugin => $example, 'plugin.required' => 'order_id, user_id',
    stream_key => $stream, consumer_group => $group, parallel_consumers => 2,
    batch_size => 50, stats_name => "/sluice-t27p-$$");
my $conf = $rig->write_config(%base);
my $r = $rig->psql_file('contrib/examples/plugin/required-fields.sql');
is($r->[0], 0, 'the example SQL loads') or diag($r->[1]);

# ---- the example: valid entries written once, the others dead -----------
my (@cmds, %valid, %missing);
for my $i (1 .. 500) {
    my @f = (order_id => "o$i", user_id => 'u' . ($i % 9), amount => sprintf('%d.%02d', $i, $i % 100));
    if ($i % 41 == 0) {
        splice @f, 2, 2;    # no user_id
        $missing{"o$i"} = 'user_id';
    } elsif ($i % 53 == 0) {
        splice @f, 0, 2;    # no order_id
        $missing{"u" . ($i % 9) . "/$i"} = 'order_id';
        push @f, seq => $i;
    } else {
        $valid{"o$i"} = 1;
    }
    push @cmds, ['XADD', $stream, '*', @f];
}
my $odd = "quote \" backslash \\ newline \n tab \t caf\x{e9} \x{1F600}";
push @cmds, ['XADD', $stream, '*', order_id => 'o-odd', user_id => 'u-odd', note => $odd];
$valid{'o-odd'} = 1;
push @cmds, ['XADD', $stream, '*', order_id => 'o-bad', user_id => "u\xff\xfe"];

$rig->redis('XGROUP', 'CREATE', $stream, $group, '0', 'MKSTREAM');
my $sup = $rig->spawn('sluiced', $rig->bin('sluiced'), '-c', $conf);
$rig->redis_batch(@cmds);
ok($rig->wait_drained($stream, $group, 60), 'two workers drain 502 entries');
is($rig->psql('SELECT count(*) FROM required_fields_entries'), scalar(keys %valid),
    'every entry with the required fields is written');
is($rig->psql(q{SELECT count(DISTINCT fields->>'order_id') FROM required_fields_entries}),
    scalar(keys %valid), '... each one once');
my $written = join ',', sort split /\n/,
  $rig->psql(q{SELECT fields->>'order_id' FROM required_fields_entries});
is($written, join(',', sort keys %valid), '... and exactly those');
my $ids_match = $rig->psql(q{SELECT count(*) FROM required_fields_entries
    WHERE stream_id ~ '^[0-9]+-[0-9]+$'});
is($ids_match, scalar(keys %valid), 'the rows are keyed by stream ID');
my $got_odd = $rig->psql(q{SELECT fields->>'note' FROM required_fields_entries
    WHERE fields->>'order_id' = 'o-odd'});
utf8::decode($got_odd);
is($got_odd, $odd, 'quotes, backslashes, control characters and non-ASCII text arrive intact');

my @dead = $rig->stream_entries("$stream:dead");
is(scalar @dead, keys(%missing) + 1, 'the entries without a required field, and the bad one, are dead letters');
my $named = 0;
for my $d (@dead) {
    my $f = $d->[1];
    my $key = $f->{'f:order_id'} // (($f->{'f:user_id'} // '') . '/' . ($f->{'f:seq'} // ''));
    next unless exists $missing{$key};
    $named++ if ($f->{reason} // '') eq "missing required field $missing{$key}";
}
is($named, scalar(keys %missing), 'each with the reason naming the missing field');
my ($bad) = grep { ($_->[1]{'f:order_id'} // '') eq 'o-bad' } @dead;
like($bad ? $bad->[1]{reason} : '', qr/^field user_id: its value is not valid UTF-8/,
    'a value that is not UTF-8: dead, the reason names the field');

my $digest_sql = q{SELECT md5(string_agg(stream_id || fields::text || written_at::text, ',' ORDER BY stream_id))
    FROM required_fields_entries};
my $before = $rig->psql($digest_sql);
$rig->redis('XGROUP', 'SETID', $stream, $group, '0');
ok($rig->wait_drained($stream, $group, 60), 'the whole stream delivered again is drained');
is($rig->psql($digest_sql), $before, 'delivered twice, no row changed (idempotent by stream ID)');
kill 'TERM', $sup;
is($rig->wait_exit($sup, 30), 0, 'sluiced stops cleanly');

# ---- refusals -------------------------------------------------------------
my @refusals = (
    ['a file that is not there', "$build/tests/plugins/not-there.so",
        qr/plugin = \Q$build\E\/tests\/plugins\/not-there\.so: cannot load it: .*No such file/],
    ['a shared object without sluice_sink_v1', $tp{'no-symbol'},
        qr/plugin = \Q$tp{'no-symbol'}\E: no symbol sluice_sink_v1 in it/],
    ['a plugin built for sink ABI 2', $tp{abi2},
        qr/plugin = \Q$tp{abi2}\E: built for sink ABI 2, this sluiced speaks 1/],
    ['a plugin without apply()', $tp{'no-apply'},
        qr/plugin = \Q$tp{'no-apply'}\E: sluice_sink_v1\.apply is NULL/],
);
for my $case (@refusals) {
    my ($what, $so, $re) = @$case;
    my $c = $rig->write_config(%base, plugin => $so);
    $re = qr/\Q$c\E:\d+: $re/;
    $r = $rig->run($rig->bin('sluiced'), '-c', $c, '--check-config');
    is($r->[0], 78, "$what: --check-config exits 78");
    like($r->[1], $re, "$what: --check-config names the file:line, plugin, the path and the cause") or diag($r->[1]);
    $r = $rig->run($rig->bin('sluiced'), '-c', $c, '--worker', 'w-refused');
    is($r->[0], 78, "$what: the worker exits 78");
    like($r->[1], $re, "$what: the worker's log names the file:line, plugin, the path and the cause") or diag($r->[1]);
}
my $c = $rig->write_config(%base, 'plugin.required' => undef);
$r = $rig->run($rig->bin('sluiced'), '-c', $c, '--check-config');
is($r->[0], 78, 'the plugin refuses its settings (no plugin.required): --check-config exits 78');
like($r->[1], qr/\Q$c\E:\d+: plugin = \Q$example\E \(required-fields\): plugin\.required: missing/,
    '... with the plugin\'s message, naming the file and the setting');
$r = $rig->run($rig->bin('sluiced'), '-c', $c, '--worker', 'w-refused');
is($r->[0], 78, '... and the worker exits 78');
$c = $rig->write_config(%base, 'plugin.table' => 'no_such_table');
$r = $rig->run($rig->bin('sluiced'), '-c', $c, '--worker', 'w-refused');
is($r->[0], 78, 'a table that does not exist: the worker exits 78 (on_connect)');
like($r->[1], qr/configuration: plugin required-fields: table no_such_table does not exist/,
    '... and the log says so');
$c = $rig->write_config(%base, plugin => $tp{abi2}, stats_name => "/sluice-t27q-$$");
$sup = $rig->spawn('sluiced-refused', $rig->bin('sluiced'), '-c', $c);
ok($rig->wait_until(sub { $rig->log_text('sluiced-refused') =~ /refuses the configuration; not restarting/ }, 30),
    'under the supervisor, a worker that refuses the plugin is left stopped until a reload');
kill 'TERM', $sup;
ok(defined $rig->wait_exit($sup, 30), 'that sluiced stops');

# ---- a plugin that crashes --------------------------------------------------
my $cstream = 'crash:events';
my $cgroup = 'crashers';
$rig->psql('CREATE TABLE plugin_crash_entries (stream_id text PRIMARY KEY)');
$c = $rig->write_config(%base, plugin => $tp{crash}, 'plugin.required' => undef,
    'plugin.how' => ($ENV{SLUICE_SANITIZE} ? 'abort' : 'segv'),
    stream_key => $cstream, consumer_group => $cgroup, batch_size => 20,
    max_deliveries => 3, restart_delay_ms => 500, restart_delay_max_ms => 4000,
    stats_name => "/sluice-t27c-$$");
$rig->redis('XGROUP', 'CREATE', $cstream, $cgroup, '0', 'MKSTREAM');
$sup = $rig->spawn('sluiced-crash', $rig->bin('sluiced'), '-c', $c);
$rig->redis_batch(map { ['XADD', $cstream, '*', n => $_] } 1 .. 200);
ok($rig->wait_drained($cstream, $cgroup, 60), 'the crash plugin writes 200 entries');

# the crashing entry alone in its batch (the stream idle around it)
my $crash_id = $rig->redis('XADD', $cstream, '*', n => 'boom', crash => 1);
my $crashed = qr/worker \S+ killed by signal \S*(SEGV|ABRT)\S* after \d+ ms; restarting in (\d+) ms/;
ok($rig->wait_until(sub { $rig->log_text('sluiced-crash') =~ $crashed }, 30),
    'the plugin kills its worker; the supervisor restarts it')
  or diag($rig->log_text('sluiced-crash'));
my $pending = $rig->redis_resp('XPENDING', $cstream, $cgroup, '-', '+', 10);
ok(ref $pending eq 'ARRAY' && grep({ $_->[0] eq $crash_id } @$pending),
    'the entry that crashed it is not acked: it stays pending');
$rig->redis_batch(map { ['XADD', $cstream, '*', n => $_] } 201 .. 400);
ok($rig->wait_until(sub { $rig->psql('SELECT count(*) FROM plugin_crash_entries') == 400 }, 30),
    'the other worker keeps committing meanwhile');
my @cdead = $rig->stream_entries("$cstream:dead");
is(scalar @cdead, 0, '... while the crashing entry is still being retried');
ok($rig->wait_until(sub { $rig->stream_entries("$cstream:dead") >= 1 }, 60),
    'the crashing entry is dead-lettered in the end');
ok($rig->wait_drained($cstream, $cgroup, 30), 'and the group is drained');
@cdead = $rig->stream_entries("$cstream:dead");
is(scalar @cdead, 1, 'one dead letter');
is($cdead[0][1]{id} // $cdead[0][1]{orig_id} // '', $crash_id, 'it is the crashing entry')
  or diag(explain $cdead[0]);
like($cdead[0][1]{reason} // '', qr/^delivered [4-9] times, more than max_deliveries \(3\)$/,
    'with the delivery-count reason');
is($rig->psql('SELECT count(*) FROM plugin_crash_entries'), 400, 'every other entry is in the table');
is($rig->psql("SELECT count(*) FROM plugin_crash_entries WHERE stream_id = '$crash_id'"), 0,
    'the crashing entry is not');
my @delays = $rig->log_text('sluiced-crash') =~ /$crashed/g;
@delays = @delays[grep { $_ % 2 } 0 .. $#delays];
cmp_ok(scalar @delays, '>=', 3, 'it crashed its worker once per delivery (' . scalar(@delays) . ' times)');
ok(@delays >= 2 && $delays[1] > $delays[0], "the restarts back off (@delays ms)");
like($rig->log_text('sluiced-crash'), qr/dead letter \Q$crash_id\E \(delivered \d+ times\)/,
    'the log names the dead letter');
kill 'TERM', $sup;
is($rig->wait_exit($sup, 30), 0, 'sluiced stops cleanly');

# The entries read in one batch with the crashing one. Each re-read of a
# consumer's pending entries counts as a delivery of all of them, so the
# worker re-reads pending entries that were read again before one at a
# time: the crashing one reaches max_deliveries alone.
my $mstream = 'mates:events';
$c = $rig->write_config(%base, plugin => $tp{crash}, 'plugin.required' => undef,
    'plugin.how' => ($ENV{SLUICE_SANITIZE} ? 'abort' : 'segv'),
    stream_key => $mstream, consumer_group => $cgroup, parallel_consumers => 1,
    batch_size => 20, batch_timeout_ms => 500, max_deliveries => 3,
    restart_delay_ms => 100, restart_delay_max_ms => 400, stats_name => "/sluice-t27m-$$");
$rig->redis('XGROUP', 'CREATE', $mstream, $cgroup, '0', 'MKSTREAM');
$sup = $rig->spawn('sluiced-mates', $rig->bin('sluiced'), '-c', $c);
ok($rig->wait_until(sub { $rig->log_text('sluiced-mates') =~ /postgresql: connected/ }, 30),
    'a single worker runs');
$rig->redis_batch((map { ['XADD', $mstream, '*', mate => $_] } 1 .. 5),
    ['XADD', $mstream, '*', mate => 'boom', crash => 1],
    (map { ['XADD', $mstream, '*', mate => $_] } 6 .. 10));
ok($rig->wait_drained($mstream, $cgroup, 60), 'a batch with a crashing entry in its middle is drained in the end');
my @mdead = $rig->stream_entries("$mstream:dead");
my ($boom) = grep { ($_->[1]{'f:mate'} // '') eq 'boom' } @mdead;
like($boom ? $boom->[1]{reason} : '', qr/^delivered \d+ times, more than max_deliveries \(3\)$/,
    'the crashing entry is dead-lettered with the delivery-count reason');
my @mates = map { $_->[0] } grep { ($_->[1]{mate} // '') =~ /^\d+$/ } $rig->stream_entries($mstream);
my $in_table = $rig->psql('SELECT count(*) FROM plugin_crash_entries WHERE stream_id IN ('
    . join(',', map { "'$_'" } @mates) . ')');
is($in_table, 10, 'its 10 batch mates are committed');
is(scalar @mdead, 1, 'and only the crashing entry is a dead letter');
like($rig->log_text('sluiced-mates'), qr/pending entries were read again before: re-reading them one at a time/,
    'the worker says it re-reads them one at a time');
kill 'TERM', $sup;
is($rig->wait_exit($sup, 30), 0, 'sluiced stops cleanly');

$rig->finish;
done_testing;
