#!/usr/bin/perl
# sluice-gen: the same seed writes the same entries (fields and values, in
# order), another seed others; the entries have the stream format (type,
# data, seq in that order) and the mix of the network within tolerance;
# likes, reposts, replies and quotes point at posts written earlier in the
# same run, deletes at records of the run; the summary counts match the
# stream; --format jetstream writes the same events as Jetstream lines.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;
use JSON::PP;

my $rig = SluiceRig->new(pg => 0);
my $gen = $rig->bin('sluice-gen');
my $url = $rig->redis_url;
my $N = 20000;

my $r = $rig->run($gen, '-u', $url, '-k', 'a', '-n', $N, '-s', 5);
is($r->[0], 0, 'sluice-gen exits 0') or diag($r->[1]);
my %summary = $r->[1] =~ /^\s+(\w+)\s+(\d+)$/mg;
is($rig->run($gen, '-u', $url, '-k', 'b', '-n', $N, '-s', 5, '-q')->[0], 0,
   'second run, same seed');
is($rig->run($gen, '-u', $url, '-k', 'c', '-n', 500, '-s', 6, '-q')->[0], 0,
   'third run, another seed');

my @a = $rig->stream_entries('a');
my @b = $rig->stream_entries('b');
my @c = $rig->stream_entries('c');
is(scalar @a, $N, "$N entries written");
my $raw = $rig->redis_resp('XRANGE', 'a', '-', '+', 'COUNT', 1);
is_deeply([map { $raw->[0][1][$_] } 0, 2, 4], [qw(type data seq)],
  'fields in the order type, data, seq');

my $same = @a == @b;
for my $i (0 .. $#a) {
    my ($x, $y) = ($a[$i][1], $b[$i][1]);
    if (join("\0", %$x{qw(type data seq)}) ne join("\0", %$y{qw(type data seq)})) {
        $same = 0;
        diag("entry $i differs");
        last;
    }
}
ok($same, 'same seed: identical entries');
isnt($c[0][1]{data}, $a[0][1]{data}, 'another seed: other entries');

# ---- the mix ------------------------------------------------------------
my (%kind, %posts, %records, $bad_ref, $bad_del, $bad_json, $replies, $quotes);
my ($snake, $offset, $nocreated, $seqs_ok) = (0, 0, 0, 1);
my $prev_seq = 0;
for my $e (@a) {
    my ($type, $data, $seq) = @{ $e->[1] }{qw(type data seq)};
    my $d = eval { decode_json($data) };
    if (!$d) { $bad_json++; next }
    $seqs_ok = 0 unless $seq =~ /^\d+$/ && $seq > $prev_seq;
    $prev_seq = $seq;
    if ($type ne 'commit') { $kind{$type}++; next }
    my $op = $d->{ops}[0];
    my ($coll, $rkey) = split m{/}, $op->{path};
    my $uri = "at://$d->{repo}/$op->{path}";
    if ($op->{action} eq 'delete') {
        $kind{delete}++;
        $bad_del++ unless delete $records{$uri};
        next;
    }
    my $rec = $op->{record};
    $snake++ if exists $rec->{py_type};
    my $ca = $rec->{createdAt} // $rec->{created_at};
    $nocreated++ if !defined $ca && $coll ne 'app.bsky.actor.profile';
    $offset++ if defined $ca && $ca =~ /[+-]\d\d:\d\d$/;
    $records{$uri} = 1;
    my $short = $coll =~ s/^app\.bsky\.(feed|graph|actor)\.//r;
    if ($coll eq 'app.bsky.feed.post') {
        $kind{post}++;
        $posts{$uri} = $op->{cid};
        if (my $p = $rec->{reply}) {
            $replies++;
            $bad_ref++ unless ($posts{ $p->{parent}{uri} } // '') eq $p->{parent}{cid};
        }
        my $emb = $rec->{embed};
        my $q = $emb && ($emb->{record}{record} // $emb->{record});
        if ($q && $q->{uri}) {
            $quotes++;
            $bad_ref++ unless ($posts{ $q->{uri} } // '') eq $q->{cid};
        }
    } elsif ($short eq 'like' || $short eq 'repost') {
        $kind{$short}++;
        my $s = $rec->{subject};
        $bad_ref++ unless ($posts{ $s->{uri} } // '') eq $s->{cid};
    } elsif ($short =~ /^(follow|block|profile)$/) {
        $kind{$short}++;
    } else {
        $kind{other}++;
    }
}
ok(!$bad_json, 'every data field is JSON');
ok($seqs_ok, 'seq: increasing relay sequence numbers');
my %share = (like => [0.70, 0.02], post => [0.11, 0.01],
    repost => [0.10, 0.01], follow => [0.04, 0.008], block => [0.01, 0.004],
    delete => [0.02, 0.006]);
for my $k (sort keys %share) {
    my ($want, $tol) = @{ $share{$k} };
    my $got = ($kind{$k} // 0) / $N;
    ok(abs($got - $want) <= $tol, sprintf('%s: %.3f of the events (%.2f +- %.3f)',
        $k, $got, $want, $tol));
}
ok(($kind{$_} // 0) > 0, "some $_ events") for qw(identity account profile other);
ok(!$bad_ref, 'likes, reposts, replies and quotes point at earlier posts of the run (uri and cid)');
ok(!$bad_del, 'deletes remove records created earlier in the run');
ok($replies > 0.25 * $kind{post} && $replies < 0.45 * $kind{post},
   "replies: $replies of $kind{post} posts");
ok($quotes > 0, "quotes: $quotes");
ok($snake > 0.01 * $N && $snake < 0.06 * $N, "snake_case records: $snake");
ok($offset > 0 && $nocreated > 0,
   "createdAt with offsets ($offset) and missing ($nocreated)");
is($summary{$_}, $kind{$_} // 0, "summary count of $_ matches the stream")
  for qw(like post repost follow block delete identity account);

# ---- Jetstream output ---------------------------------------------------------
$r = $rig->run($gen, '-n', 2000, '-s', 5, '-q', '--format', 'jetstream');
is($r->[0], 0, '--format jetstream exits 0');
my @lines = split /\n/, $r->[1];
is(scalar @lines, 2000, 'one line per event');
my ($ok, %jk) = (1);
for my $l (@lines) {
    my $d = eval { decode_json($l) } or do { $ok = 0; next };
    $ok = 0 unless $d->{did} =~ /^did:plc:[a-z2-7]{24}$/ && $d->{time_us} > 0
      && $d->{kind} =~ /^(commit|identity|account)$/;
    $jk{ $d->{kind} }++;
}
ok($ok, 'every line: did, time_us and kind');
my %sk;
$sk{ $_->[1]{type} }++ for @a[0 .. 1999];
is_deeply(\%jk, \%sk, 'the same seed gives the same kinds as the stream run');

# ---- usage --------------------------------------------------------------------
is($rig->run($gen, '-n', 'abc')->[0], 64, 'a bad count: exit 64');
is($rig->run($gen, '--format', 'xml')->[0], 64, 'a bad format: exit 64');
is($rig->run($gen, '-u', 'redis://127.0.0.1:' . SluiceRig::free_port(), '-n', 1)->[0],
   75, 'Redis unreachable: exit 75');

$rig->finish;
done_testing;
