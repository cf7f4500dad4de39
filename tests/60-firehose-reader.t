#!/usr/bin/perl
# The firehose reader alone (sluiced --firehose, no database) against a test
# relay playing the recorded frames (../shared/data/bluesky/frames.bin.zst,
# third-party data kept outside the repository: skipped when absent):
#
#   - the entries: type, data and seq in that order, one per commit,
#     identity and account frame, in seq order, the ops and records of
#     expected_v1.jsonl; the cursor at the last seq; a restart asks the
#     relay for what follows the cursor and writes nothing twice;
#   - a relay that closes mid-stream: every seq once, in order;
#   - one reader per stream: a second one exits 75 naming the holder;
#   - kill -9 mid-stream, the cursor set back (a crash between XADD and
#     the cursor's save), a restart: no gap, nothing twice, the dead
#     holder's lock taken over;
#   - Redis down and back: no gap, nothing twice;
#   - bad frames (truncated, garbage CBOR, an unknown t, over
#     firehose_max_frame, a block whose bytes do not match its CID): each
#     dead-lettered with its reason or logged, the rest written;
#   - #info OutdatedCursor and a FutureCursor error frame: logged with what
#     they mean; after an error frame the reader reconnects with backoff;
#   - stream_trim = acked with a stopped consumer group: the stream stops
#     at stream_maxlen, nothing unacked is trimmed (every group counts),
#     the reading resumes as the groups ack, every seq once in the end;
#   - stream_trim = maxlen: the old readers' XADD MAXLEN ~.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use TestRelay;
use Test::More;
use JSON::PP;

my $rig = SluiceRig->new(pg => 0);
my @FRAMES = TestRelay::recorded_frames_or_skip($rig);
my $sluiced = $rig->bin('sluiced');
my @SEQS = map { TestRelay::frame_seq($_) } @FRAMES;
my $LAST = $SEQS[-1];
my $JSON = JSON::PP->new->canonical;

# Start a reader on $stream (cursor key "$stream:cursor") from relay $url.
my $nreader = 0;
sub start_reader {
    my ($stream, $url, %kv) = @_;
    my $conf = $rig->write_config(stream_key => $stream, relay_url => $url, cursor_key => "$stream:cursor",
        database_url => undef, reconnect_delay_ms => 50, reconnect_delay_max_ms => 500, %kv);
    my $name = 'reader-' . ++$nreader;
    return ($rig->spawn($name, $sluiced, '-c', $conf, '--firehose'), $name, $conf);
}
sub cursor { my ($stream) = @_; return $rig->redis('GET', "$stream:cursor") // '' }
sub seqs_of { my ($stream) = @_; return map { $_->[1]{seq} } $rig->stream_entries($stream) }
sub stop_reader {
    my ($pid, $what) = @_;
    kill 'TERM', $pid;
    is($rig->wait_exit($pid, 30), 0, "$what: the reader exits 0 on TERM");
}
# "every seq once, in order" as one comparable string
sub seq_report {
    my (@got) = @_;
    my (%n, @dup);
    $n{$_}++ for @got;
    @dup = grep { $n{$_} > 1 } sort keys %n;
    my @missing = grep { !$n{$_} } @SEQS;
    my $sorted = join(',', @got) eq join(',', sort { $a <=> $b } @got) ? 'in order' : 'out of order';
    return sprintf('%d entries, %d missing, %d twice, %s', scalar @got, scalar @missing, scalar @dup, $sorted);
}
my $WHOLE = sprintf('%d entries, 0 missing, 0 twice, in order', scalar @FRAMES);

# ---- the entries of the recorded frames ---------------------------------------------
{
    my ($url) = TestRelay::start($rig, \@FRAMES);
    my ($pid) = start_reader('rec', $url);
    ok($rig->wait_until(sub { $rig->redis('XLEN', 'rec') == 150 }, 30), 'recorded: the reader writes the frames');
    # the relay is quiet now: the last seq is saved alone (within 0.2 s;
    # libwebsockets' own wait once held it back for 30 s)
    ok($rig->wait_until(sub { cursor('rec') eq $LAST }, 5), "recorded: the cursor reaches the last seq ($LAST) while the relay is quiet");
    my $raw = $rig->redis_resp('XRANGE', 'rec', '-', '+');
    is(scalar @$raw, 150, 'recorded: 150 entries');
    is(scalar(grep { join(' ', @{ $_->[1] }[0, 2, 4]) ne 'type data seq' } @$raw), 0,
        'recorded: every entry has the fields type, data, seq in that order');
    my %types;
    $types{ $_->[1][1] }++ for @$raw;
    is_deeply(\%types, { commit => 148, identity => 1, account => 1 }, 'recorded: 148 commits, 1 identity, 1 account');
    is(join(',', map { $_->[1][5] } @$raw), join(',', @SEQS), 'recorded: the seq of every frame, in order');

    # every op and record of expected_v1.jsonl
    my (%op, %other, $nops);
    for my $e (@$raw) {
        my ($type, $data) = @{ $e->[1] }[1, 3];
        my $d = decode_json($data);
        if ($type ne 'commit') { $other{"$type $d->{did}"} = $d; next }
        for my $o (@{ $d->{ops} }) {
            $nops++;
            $op{"$d->{repo} $o->{action} $o->{path}"} = [$o, $d->{rev}];
        }
    }
    is($nops, 150, 'recorded: the commits carry 150 ops');
    my ($lines, @bad) = (0);
    open my $fh, '<', TestRelay::data_dir() . '/expected_v1.jsonl' or die $!;
    while (my $l = <$fh>) {
        next unless $l =~ /\S/;
        $lines++;
        my $j = decode_json($l);
        if ($j->{kind} ne 'commit') {
            my $got = $other{"$j->{kind} $j->{did}"};
            push @bad, "$j->{kind} $j->{did}" unless $got
              && $JSON->encode([@$got{qw(did)}]) eq $JSON->encode([$j->{did}]);
            next;
        }
        my $c = $j->{commit};
        my $got = $op{"$j->{did} $c->{operation} $c->{collection}/$c->{rkey}"};
        push @bad, "$c->{collection}/$c->{rkey}" unless $got
          && ($got->[0]{cid} // '') eq ($c->{cid} // '')
          && $JSON->encode($got->[0]{record} // {}) eq $JSON->encode($c->{record} // {})
          && $got->[1] eq $c->{rev};
    }
    is($lines, 152, 'recorded: expected_v1.jsonl has 152 lines');
    is("@bad", '', 'recorded: each line\'s op, cid, record and rev (or identity, account) is in the stream');
    my ($acct) = grep { $_->[1][1] eq 'account' } @$raw;
    like($acct->[1][3], qr/"active":(true|false)/, 'recorded: the account entry has active');

    # a restart resumes after the cursor: nothing is written twice
    stop_reader($pid, 'recorded');
    ($pid) = start_reader('rec', $url);
    ok($rig->wait_until(sub { $rig->log_text('reader-2') =~ /connecting to \S+, cursor $LAST\b/ }, 20),
        'restart: the reader asks the relay for what follows the cursor');
    sleep 1;
    is(scalar(seqs_of('rec')), 150, 'restart: nothing written twice');
    stop_reader($pid, 'restart');
}

# ---- a relay that closes mid-stream ------------------------------------------------
{
    my ($url) = TestRelay::start($rig, \@FRAMES, close_after => 40);
    my ($pid, $name) = start_reader('cut', $url);
    ok($rig->wait_until(sub { cursor('cut') eq $LAST }, 60), 'closed mid-stream: the cursor reaches the last seq');
    is(seq_report(seqs_of('cut')), $WHOLE, 'closed mid-stream: every seq once, in order');
    my $cuts = () = $rig->log_text('relay') =~ /closed after 40 frames \(close_after\)/g;
    my $resumed = () = $rig->log_text('relay') =~ /closed after 40 frames \(close_after\) \(cursor \d+\)/g;
    is("$cuts $resumed", '3 2', 'closed mid-stream: the relay closed three times, the reader came back with its cursor');
    like($rig->log_text($name), qr/reconnecting in \d+ ms from seq \d+/, 'closed mid-stream: the reader logs its reconnect');

    # ---- one reader per stream
    my ($pid2, $name2) = start_reader('cut', $url);
    is($rig->wait_exit($pid2, 30), 75 << 8, 'a second reader on the stream exits 75');
    like($rig->log_text($name2), qr/another reader \(\S+:$pid:\d+\) holds the lock cut:reader-lock/,
        'a second reader names the holder of the lock');
    ok(kill(0, $pid), 'the first reader keeps running');
    stop_reader($pid, 'lock');
    is($rig->redis('EXISTS', 'cut:reader-lock'), 0, 'a reader that stops gives its lock back');
}

# ---- kill -9 mid-stream, a cursor behind the stream ----------------------------------
{
    my ($url) = TestRelay::start($rig, \@FRAMES, delay => 0.02);
    my ($pid) = start_reader('k9', $url);
    ok($rig->wait_until(sub { scalar(seqs_of('k9')) >= 40 }, 30), 'kill -9: the reader is writing');
    kill 'KILL', $pid;
    $rig->wait_exit($pid, 10);
    my $n = scalar seqs_of('k9');
    cmp_ok($n, '<', 150, "kill -9: killed mid-stream, after $n entries");
    is($rig->redis('EXISTS', 'k9:reader-lock'), 1, 'kill -9: the lock is left behind');
    # a crash between the XADDs and the cursor's save: the cursor is behind
    $rig->redis('SET', 'k9:cursor', $SEQS[5]);
    my ($pid2, $name2) = start_reader('k9', $url);
    ok($rig->wait_until(sub { cursor('k9') eq $LAST }, 60), 'kill -9: the restarted reader reaches the last seq');
    is(seq_report(seqs_of('k9')), $WHOLE, 'kill -9: every seq once, in order (the cursor behind the stream repeats nothing)');
    like($rig->log_text($name2), qr/reader lock k9:reader-lock was held by \S+:$pid:\d+, a process of this host that is gone: taken over/,
        'kill -9: the dead reader\'s lock is taken over');
    like($rig->log_text($name2), qr/newest entry has seq \d+, past the saved cursor $SEQS[5]/,
        'kill -9: the reader starts after the stream\'s newest entry');
    stop_reader($pid2, 'kill -9');
}

# ---- Redis down, then back ------------------------------------------------------------
{
    my ($url) = TestRelay::start($rig, \@FRAMES, delay => 0.02);
    my ($pid, $name) = start_reader('rd', $url);
    ok($rig->wait_until(sub { scalar(seqs_of('rd')) >= 30 }, 30), 'redis down: the reader is writing');
    $rig->redis('SHUTDOWN', 'SAVE');
    $rig->stop_redis('TERM');
    sleep 1;
    $rig->start_redis;
    ok($rig->wait_until(sub { cursor('rd') eq $LAST }, 60), 'redis down: the reader reaches the last seq once Redis is back');
    is(seq_report(seqs_of('rd')), $WHOLE, 'redis down: every seq once, in order');
    like($rig->log_text($name), qr/firehose: redis: /, 'redis down: the reader logs the failure');
    ok(kill(0, $pid), 'redis down: the reader kept running');
    stop_reader($pid, 'redis down');
}

# ---- bad frames -----------------------------------------------------------------------
{
    my @f = @FRAMES;
    my $cid_spoiled = $f[12];
    # a record's key $type becomes $typf: the CBOR stays well formed, but
    # its block no longer matches its CID
    my $at = index($cid_spoiled, '$type', index($cid_spoiled, 'blocks'));
    ok($at > 0, 'bad frames: a record in frame 12 to spoil');
    substr($cid_spoiled, $at + 4, 1) = 'f';
    my $truncated = substr($f[10], 0, length($f[10]) - 40);
    my $garbage = "\xff\x00\x13garbage";
    # {op: 1, t: "#future"} {}
    my $unknown = "\xa2\x62op\x01\x61t\x67#future" . "\xa0";
    my $oversize = "\x00" x (300 * 1024);
    my @play = (@f[0 .. 9], $truncated, $garbage, $unknown, $oversize, $f[11], $cid_spoiled, @f[13 .. $#f]);
    my ($url) = TestRelay::start($rig, \@play);
    my ($pid, $name) = start_reader('bad', $url, firehose_max_frame => 256 * 1024, firehose_max_block => 64 * 1024);
    ok($rig->wait_until(sub { cursor('bad') eq $LAST }, 30), 'bad frames: the reader goes on to the last seq');
    my @got = seqs_of('bad');
    is(join(',', @got), join(',', @SEQS[0 .. 9, 11, 13 .. $#SEQS]), 'bad frames: every good frame written, in order');
    my @dead = $rig->stream_entries('bad:dead');
    is(scalar @dead, 4, 'bad frames: four dead letters');
    my %why = map { ($_->[1]{seq} // '') . ' ' . $_->[1]{reason} => 1 } @dead;
    is(scalar(grep { $_->[1]{source} eq 'firehose' } @dead), 4, 'bad frames: each with source firehose');
    ok((grep { /^$SEQS[10] / } keys %why), "bad frames: the truncated frame, with its seq ($SEQS[10])")
      or diag(join "\n", sort keys %why);
    ok((grep { /^$SEQS[12] .*(CID|cid|hash|SHA)/ } keys %why), "bad frames: the block that does not match its CID, with its seq");
    ok((grep { /over firehose_max_frame/ } keys %why), 'bad frames: the frame over firehose_max_frame');
    my ($big) = grep { $_->[1]{reason} =~ /over firehose_max_frame/ } @dead;
    is(length($big->[1]{frame} // ''), 65536, 'bad frames: the first 64 KiB of the oversized frame are kept');
    my ($tr) = grep { ($_->[1]{seq} // '') eq $SEQS[10] } @dead;
    ok($tr && $tr->[1]{frame} eq $truncated, 'bad frames: a malformed frame is kept whole');
    like($rig->log_text($name), qr/malformed frame seq $SEQS[10] \(\d+ bytes\) skipped: /, 'bad frames: the malformed frame is logged');
    ok(kill(0, $pid), 'bad frames: the reader is still up');
    stop_reader($pid, 'bad frames');
}

# ---- what a relay says: #info OutdatedCursor, an error frame ------------------------------
{
    my $t = sub { chr(0x60 + length $_[0]) . $_[0] };    # CBOR text under 24 bytes
    my $info = "\xa2" . $t->('op') . "\x01" . $t->('t') . $t->('#info')
      . "\xa2" . $t->('name') . $t->('OutdatedCursor') . $t->('message') . $t->('too old here');
    my $future = "\xa1" . $t->('op') . "\x20"    # op: -1
      . "\xa2" . $t->('error') . $t->('FutureCursor') . $t->('message') . $t->('cursor ahead');
    my ($url) = TestRelay::start($rig, [$info, @FRAMES[0 .. 4], $future]);
    my ($pid, $name) = start_reader('say', $url);
    ok($rig->wait_until(sub { $rig->log_text($name) =~ /connecting to \S+, cursor $SEQS[4]\b/ }, 30),
        'an error frame: the reader closes the connection and comes back with its cursor');
    my $log = $rig->log_text($name);
    like($log, qr/relay: OutdatedCursor \(too old here\): the cursor is older than the relay keeps/,
        '#info OutdatedCursor: logged with what it means');
    like($log, qr/relay error FutureCursor \(cursor ahead\): the cursor \d+ is ahead of the relay's newest event.* delete the key say:cursor/,
        'FutureCursor: logged with what the reader does and how to start from the live tail');
    like($log, qr/closed by the reader; reconnecting in \d+ ms from seq $SEQS[4]/, 'the reconnect waits for the backoff');
    is(join(',', seqs_of('say')), join(',', @SEQS[0 .. 4]), 'the frames before the error frame are written once');
    stop_reader($pid, 'relay says');
}

# ---- stream_trim = acked: a stopped consumer group ------------------------------------
{
    $rig->redis('CONFIG', 'SET', 'stream-node-max-entries', '10');
    $rig->redis('XGROUP', 'CREATE', 'bp', 'g1', '0', 'MKSTREAM');
    $rig->redis('XGROUP', 'CREATE', 'bp', 'g2', '0');
    my ($url) = TestRelay::start($rig, \@FRAMES);
    my ($pid, $name) = start_reader('bp', $url, stream_maxlen => 50, stream_trim => 'acked');
    ok($rig->wait_until(sub { $rig->log_text($name) =~ /firehose: paused: the stream holds \d+ entries/ }, 30),
        'acked: the reader pauses at the cap');
    my $len = $rig->redis('XLEN', 'bp');
    ok($len >= 45 && $len <= 50, "acked: the stream stops at the cap ($len entries, stream_maxlen 50)");
    sleep 2;
    is($rig->redis('XLEN', 'bp'), $len, 'acked: paused, nothing more is written');
    is(($rig->stream_entries('bp'))[0][1]{seq}, $SEQS[0], 'acked: nothing unacked is trimmed');

    # Read and ack with a group; returns the seqs read.
    my %read;
    my $ack = sub {
        my ($g, $count) = @_;
        my $r = $rig->redis_resp('XREADGROUP', 'GROUP', $g, 'c', 'COUNT', $count, 'STREAMS', 'bp', '>');
        return 0 unless ref $r eq 'ARRAY';
        my @e = @{ $r->[0][1] };
        push @{ $read{$g} }, map { {@{ $_->[1] }}->{seq} } @e;
        $rig->redis('XACK', 'bp', $g, map { $_->[0] } @e) if @e;
        return scalar @e;
    };
    $ack->('g1', 40);
    sleep 2;
    is($rig->redis('XLEN', 'bp'), $len, 'acked: one group acking is not enough (the other has not)');
    is(($rig->stream_entries('bp'))[0][1]{seq}, $SEQS[0], 'acked: the entries the other group has not acked stay');
    $ack->('g2', 40);
    ok($rig->wait_until(sub { $rig->log_text($name) =~ /firehose: resuming after \d+ s/ }, 20),
        'acked: once both groups acked, the stream is trimmed and the reading resumes');
    my $deadline = time + 60;
    while (cursor('bp') ne $LAST || scalar(@{ $read{g1} // [] }) < 150 || scalar(@{ $read{g2} // [] }) < 150) {
        last if time > $deadline;
        my $n = $ack->('g1', 30) + $ack->('g2', 30);
        select(undef, undef, undef, 0.1) unless $n;
    }
    is(seq_report(@{ $read{g1} // [] }), $WHOLE, 'acked: group g1 read every seq once, in order (nothing trimmed unread)');
    is(seq_report(@{ $read{g2} // [] }), $WHOLE, 'acked: group g2 too');
    like($rig->log_text($name), qr/paused: .* at its cap stream_maxlen 50; not reading the relay until it is under 90%/,
        'acked: the pause is logged with the backlog');
    stop_reader($pid, 'acked');
}

# ---- stream_trim = maxlen ---------------------------------------------------------------
{
    my ($url) = TestRelay::start($rig, \@FRAMES);
    my ($pid) = start_reader('ml', $url, stream_maxlen => 20, stream_trim => 'maxlen');
    ok($rig->wait_until(sub { cursor('ml') eq $LAST }, 30), 'maxlen: the reader reaches the last seq without pausing');
    my $len = $rig->redis('XLEN', 'ml');
    ok($len < 150 && $len >= 20, "maxlen: XADD MAXLEN ~ 20 trimmed the oldest entries, read or not ($len left)");
    stop_reader($pid, 'maxlen');
}

$rig->finish;
done_testing;
