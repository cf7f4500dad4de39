#!/usr/bin/perl
# The firehose reader writing a sharded stream (shards = 3, stream_key
# with {shard}) from a test relay playing the recorded frames
# (../shared/data/bluesky/frames.bin.zst, third-party data kept outside the
# repository: skipped when absent):
#
#   - each entry in the shard its DID hashes to (FNV-1a 64-bit of the DID,
#     modulo 3, computed here independently of pipeline_shard_of()), every
#     seq once across the shards, rising within each, the one cursor saved
#     at the last seq; a bad frame dead-lettered to shard 0's dead-letter
#     stream (dead_letter_stream's, or <stream_key>:dead, with {shard} as
#     {0}); a restart with the cursor set back starts after the highest
#     newest seq of the shards and repeats nothing;
#   - shards > 1 and a stream_key without {shard}: the reader refuses to
#     start (exit 78);
#   - stream_trim = acked: the reading pauses when one shard is at
#     stream_maxlen, resumes once every group on every shard acked,
#     every seq read once, in order within each shard, each shard trimmed;
#   - under the supervisor with the atproto sink: a flat configuration
#     with shards = 3 runs three pipelines that drain the three shards,
#     and gives the same tables as the same frames unsharded.
use strict;
use warnings;
no warnings 'portable';    # the 64-bit FNV constants
use lib 'tests/lib';
use SluiceRig;
use TestRelay;
use AtprotoTables qw(%COMPARED $COUNTERS_WRONG wait_counters_folded);
use Test::More;
use JSON::PP qw(decode_json);

my $rig = SluiceRig->new;
my @FRAMES = TestRelay::recorded_frames_or_skip($rig);
my $sluiced = $rig->bin('sluiced');
my @SEQS = map { TestRelay::frame_seq($_) } @FRAMES;
my $LAST = $SEQS[-1];
my $N = 3;

# FNV-1a 64-bit of a byte string, modulo $n, in 32-bit halves (Perl's
# integers are 64-bit, but a 64-bit product would turn into a double):
# h * 0x100000001b3 = (h << 40) + h * 0x1b3, modulo 2^64.
sub fnv_mod {
    my ($s, $n) = @_;
    my ($hi, $lo) = (0xcbf29ce4, 0x84222325);
    for my $b (unpack 'C*', $s) {
        $lo ^= $b;
        my $l = $lo * 0x1b3;
        my $h = $hi * 0x1b3 + ($l >> 32) + (($lo & 0xffffff) << 8);
        ($hi, $lo) = ($h & 0xffffffff, $l & 0xffffffff);
    }
    return (($hi % $n) * (4294967296 % $n) + $lo) % $n;
}
is(fnv_mod('a', 1000), 0xaf63dc4c8601ec8c % 1000, 'FNV-1a 64 here: a is 0xaf63dc4c8601ec8c');
is(fnv_mod('a', 2147483647), 0xaf63dc4c8601ec8c % 2147483647, 'FNV-1a 64 here: ... modulo a large prime too');
is(fnv_mod('did:plc:z72i7hdynmk6r22z27h6tvur', 3), 1, 'FNV-1a 64 here: a DID among 3 (as test_pipeline)');

sub shard_key { my ($key, $i) = @_; (my $k = $key) =~ s/\{shard\}/{$i}/g; return $k }
sub did_of { my ($data) = @_; my $d = decode_json($data); return $d->{repo} // $d->{did} }

# Start a reader alone on the shards of $key from relay $url.
my $nreader = 0;
sub start_reader {
    my ($key, $url, %kv) = @_;
    (my $base = $key) =~ s/:?\{shard\}//;
    my $conf = $rig->write_config(stream_key => $key, relay_url => $url, cursor_key => "$base:cursor",
        shards => $N, database_url => undef, reconnect_delay_ms => 50, reconnect_delay_max_ms => 500, %kv);
    my $name = 'reader-' . ++$nreader;
    return ($rig->spawn($name, $sluiced, '-c', $conf, '--firehose'), $name, $conf);
}
sub stop_reader {
    my ($pid, $what) = @_;
    kill 'TERM', $pid;
    is($rig->wait_exit($pid, 30), 0, "$what: the reader exits 0 on TERM");
}
# every seq once (over all the shards) as one comparable string
sub seq_report {
    my (@got) = @_;
    my %n;
    $n{$_}++ for @got;
    my @dup = grep { $n{$_} > 1 } keys %n;
    my @missing = grep { !$n{$_} } @SEQS;
    return sprintf('%d entries, %d missing, %d twice', scalar @got, scalar @missing, scalar @dup);
}
my $WHOLE = sprintf('%d entries, 0 missing, 0 twice', scalar @FRAMES);
sub rising { my @s = @_; return join(',', @s) eq join(',', sort { $a <=> $b } @s) }

# Where each shard's entries should go, and the shard of the last seq.
my %SHARD_OF_SEQ;

# ---- the reader alone ---------------------------------------------------------------
{
    my $key = 'fs:{shard}';
    my @play = (@FRAMES[0 .. 19], "\xff\x00garbage", @FRAMES[20 .. $#FRAMES]);
    my ($url) = TestRelay::start($rig, \@play);
    my ($pid, $name) = start_reader($key, $url);
    ok($rig->wait_until(sub { ($rig->redis('GET', 'fs:cursor') // '') eq $LAST }, 30),
        "sharded: the reader saves the one cursor at the last seq ($LAST)");
    like($rig->log_text($name), qr/relay \S+ into fs:\{0\.\.2\} \(3 shards by DID\)/,
        'sharded: the start line names the shards');
    my (@all, @wrong, @order, @len);
    for my $i (0 .. $N - 1) {
        my @e = $rig->stream_entries(shard_key($key, $i));
        push @len, scalar @e;
        my @s = map { $_->{seq} } map { $_->[1] } @e;
        push @all, @s;
        push @order, $i unless rising(@s);
        for my $x (map { $_->[1] } @e) {
            my $want = fnv_mod(did_of($x->{data}), $N);
            push @wrong, "$x->{seq} in $i, not $want" if $want != $i;
            $SHARD_OF_SEQ{ $x->{seq} } = $i;
        }
    }
    note("entries per shard: @len");
    is(scalar(grep { $_ > 0 } @len), $N, 'sharded: every shard holds entries');
    is(seq_report(@all), $WHOLE, 'sharded: every seq once across the shards');
    is("@wrong", '', 'sharded: every entry is in the shard its DID hashes to (FNV-1a 64 mod 3)');
    is("@order", '', 'sharded: within each shard the seqs rise');
    is($rig->redis('EXISTS', $key), 0, 'sharded: nothing is written to the key with {shard} itself');
    is($rig->redis('EXISTS', "$key:reader-lock"), 1, 'sharded: one lock, on the stream_key as written');
    my @dead = $rig->stream_entries('fs:{0}:dead');
    is(scalar @dead, 1, 'sharded: the bad frame is dead-lettered to shard 0\'s dead-letter stream');
    is(($dead[0][1]{source} // ''), 'firehose', 'sharded: ... with source firehose');
    is($rig->redis('EXISTS', 'fs:{1}:dead') + $rig->redis('EXISTS', 'fs:{2}:dead'), 0,
        'sharded: the other shards have no dead letters');
    stop_reader($pid, 'sharded');
    is($rig->redis('EXISTS', "$key:reader-lock"), 0, 'sharded: the lock is given back');

    # a crash between the XADDs and the cursor's save: the cursor behind
    $rig->redis('SET', 'fs:cursor', $SEQS[5]);
    ($pid, $name) = start_reader($key, $url);
    my $in = shard_key($key, $SHARD_OF_SEQ{$LAST});
    ok($rig->wait_until(sub { $rig->log_text($name) =~ /connecting to \S+, cursor $LAST\b/ }, 20),
        'restart: the reader starts after the highest newest seq of the shards');
    like($rig->log_text($name), qr/the shards' newest entry has seq $LAST \(in \Q$in\E\), past the saved cursor $SEQS[5]/,
        'restart: it logs which shard holds it');
    sleep 1;
    my $total = 0;
    $total += $rig->redis('XLEN', shard_key($key, $_)) for 0 .. $N - 1;
    is($total, 150, 'restart: nothing written twice');
    stop_reader($pid, 'restart');
}

# ---- dead_letter_stream set: shard 0's ------------------------------------------------
{
    my ($url) = TestRelay::start($rig, [@FRAMES[0 .. 2], "\xff\x00garbage", @FRAMES[3 .. 5]]);
    my ($pid) = start_reader('dl:{shard}', $url, dead_letter_stream => 'dl:{shard}:bad');
    ok($rig->wait_until(sub { ($rig->redis('GET', 'dl:cursor') // '') eq $SEQS[5] }, 30), 'dead_letter_stream: the reader goes on');
    is(scalar($rig->stream_entries('dl:{0}:bad')), 1, 'dead_letter_stream: the bad frame is in dl:{0}:bad');
    stop_reader($pid, 'dead_letter_stream');
}

# ---- a stream_key without {shard} ---------------------------------------------------
{
    my ($pid, $name) = start_reader('fsx', 'ws://127.0.0.1:1/');
    is($rig->wait_exit($pid, 30), 78 << 8, 'no {shard} in stream_key with shards = 3: the reader exits 78');
    like($rig->log_text($name), qr/stream_key: 'fsx' has no \{shard\} for the shard's number \(shards = 3\)/,
        'it says why');
}

# ---- stream_trim = acked: one shard at the cap --------------------------------------
{
    my $key = 'bp:{shard}';
    $rig->redis('CONFIG', 'SET', 'stream-node-max-entries', '10');
    $rig->redis('XGROUP', 'CREATE', shard_key($key, $_), 'g', '0', 'MKSTREAM') for 0 .. $N - 1;
    my ($url) = TestRelay::start($rig, \@FRAMES);
    my ($pid, $name) = start_reader($key, $url, stream_maxlen => 20, stream_trim => 'acked');
    ok($rig->wait_until(sub { $rig->log_text($name) =~ /firehose: paused: the shard bp:\{\d\} holds 20 entries/ }, 30),
        'acked: the reader pauses when a shard is at the cap');
    like($rig->log_text($name), qr/at its cap stream_maxlen 20 \(\d+ in the 3 shards\); not reading the relay until every shard is under 90%/,
        'acked: the pause is logged with the backlog');
    my @len = map { $rig->redis('XLEN', shard_key($key, $_)) } 0 .. $N - 1;
    my ($max) = sort { $b <=> $a } @len;
    is($max, 20, "acked: no shard holds more than stream_maxlen (@len)");
    sleep 2;
    is(join(' ', map { $rig->redis('XLEN', shard_key($key, $_)) } 0 .. $N - 1), "@len", 'acked: paused, nothing more is written');
    is(($rig->stream_entries(shard_key($key, 0)))[0][1]{seq}, (grep { $SHARD_OF_SEQ{$_} == 0 } @SEQS)[0],
        'acked: nothing unacked is trimmed');

    my %read;
    my $ack = sub {
        my ($i, $count) = @_;
        my $s = shard_key($key, $i);
        my $r = $rig->redis_resp('XREADGROUP', 'GROUP', 'g', 'c', 'COUNT', $count, 'STREAMS', $s, '>');
        return 0 unless ref $r eq 'ARRAY';
        my @e = @{ $r->[0][1] };
        push @{ $read{$i} }, map { {@{ $_->[1] }}->{seq} } @e;
        $rig->redis('XACK', $s, 'g', map { $_->[0] } @e) if @e;
        return scalar @e;
    };
    my $deadline = time + 60;
    while (($rig->redis('GET', 'bp:cursor') // '') ne $LAST || scalar(map { @{ $read{$_} // [] } } 0 .. $N - 1) < 150) {
        last if time > $deadline;
        my $n = 0;
        $n += $ack->($_, 7) for 0 .. $N - 1;
        select(undef, undef, undef, 0.1) unless $n;
    }
    ok($rig->log_text($name) =~ /firehose: resuming after \d+ s: the 3 shards hold \d+ entries, the fullest \d+ \(cap 20\)/,
        'acked: the reading resumes as the groups ack');
    is(seq_report(map { @{ $read{$_} // [] } } 0 .. $N - 1), $WHOLE, 'acked: the groups read every seq once');
    is(join(' ', grep { !rising(@{ $read{$_} // [] }) } 0 .. $N - 1), '', 'acked: in order within each shard');
    ok($rig->wait_until(sub { !grep { $rig->redis('XLEN', shard_key($key, $_)) != 0 } 0 .. $N - 1 }, 10),
        'acked: every shard is trimmed once its group acked');
    stop_reader($pid, 'acked');
}

# ---- under the supervisor: three pipelines, the same tables as one ------------------------
{
    my ($url) = TestRelay::start($rig, \@FRAMES);
    # the columns that name the stream entry (ord_ms, ord_seq: its ID) or
    # take its time (a generic record without createdAt) differ by when
    my %cols = %COMPARED;
    s/, ord_ms, ord_seq//, s/^ord_ms, ord_seq, // for values %cols;
    $cols{generic_records} =~ s/, created_at//;
    $cols{sluice_record_state} =~ s/record, created_at/record, CASE WHEN collection LIKE 'app.bsky.%' THEN created_at END/;
    my %dump;
    for my $shards (3, 1) {
        my $db = "t63_s$shards";
        my $key = $shards > 1 ? "$db:events:{shard}" : "$db:events";
        $rig->create_database($db);
        my $conf = $rig->write_config(database_url => $rig->database_url_for($db), stream_key => $key,
            shards => $shards, relay_url => $url, cursor_key => "$db:cursor", parallel_consumers => 1,
            stats_name => "/sluice-t63-$$-$shards", batch_size => 20, batch_timeout_ms => 50, block_ms => 200,
            reconnect_delay_ms => 50);
        my $r = $rig->run($sluiced, '-c', $conf, '--init-schema');
        is($r->[0], 0, "supervisor, shards = $shards: schema applied") or diag($r->[1]);
        my $sup = $rig->spawn("sup-$shards", $sluiced, '-c', $conf);
        ok($rig->wait_until(sub { ($rig->redis('GET', "$db:cursor") // '') eq $LAST }, 30),
            "supervisor, shards = $shards: the reader writes the frames");
        my @keys = map { shard_key($key, $_) } 0 .. $shards - 1;
        ok(!(grep { !$rig->wait_drained($_, 'firehose-processors', 60) } @keys) && wait_counters_folded($rig, $db),
            "supervisor, shards = $shards: every shard drained by its pipeline, counters folded");
        if ($shards > 1) {
            my %added = map { my %i = @{ $rig->redis_resp('XINFO', 'STREAM', $_) }; ($_ => $i{'entries-added'}) } @keys;
            is(scalar(grep { $added{$_} > 0 } @keys), 3, 'supervisor: each of the three shards got entries');
            my $sum = 0;
            $sum += $_ for values %added;
            is($sum, 150, 'supervisor: 150 entries over the shards');
            ok($rig->wait_until(sub { !grep { $rig->redis('XLEN', $_) != 0 } @keys }, 10),
                'supervisor: what each shard\'s group acked is trimmed');
            my $x = $rig->run($rig->bin('sluicectl'), '-c', $conf, 'stats', '--json');
            my $j = $x->[0] == 0 ? decode_json($x->[1]) : {};
            is(scalar(grep { ($_->{pipeline} // '') =~ /^main\.[0-2]$/ } @{ $j->{workers} || [] }), 3,
                'supervisor: three pipelines, main.0 .. main.2, a worker each');
            is($j->{firehose}{entries}, 150, 'supervisor: the reader\'s stats count 150 entries');
        }
        is($rig->psql_db($db, $COUNTERS_WRONG), 0, "supervisor, shards = $shards: every counter right");
        kill 'TERM', $sup;
        is($rig->wait_exit($sup, 30), 0, "supervisor, shards = $shards: sluiced stops cleanly");
        $dump{$shards} = { map { $_ => $rig->psql_db($db, "SELECT count(*) || E'\\n' || coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '')
            FROM (SELECT $cols{$_} FROM $_) x") } keys %cols };
    }
    my @diff = grep { $dump{3}{$_} ne $dump{1}{$_} } sort keys %cols;
    is("@diff", '', 'supervisor: three shards give the same tables as one stream');
    for my $t (@diff[0 .. ($#diff < 2 ? $#diff : 2)]) {
        my %one = map { $_ => 1 } split /\n/, $dump{1}{$t};
        my @only = grep { !$one{$_} } split /\n/, $dump{3}{$t};
        fail("supervisor: $t (3 shards vs 1)");
        diag("only with 3 shards: $_") for @only[0 .. ($#only < 2 ? $#only : 2)];
    }
    my ($posts) = split /\n/, $dump{1}{posts};
    cmp_ok($posts, '>', 0, "supervisor: the tables hold something ($posts posts)");
}

$rig->finish;
done_testing;
