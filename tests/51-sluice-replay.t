#!/usr/bin/perl
# sluice-replay: a recorded Jetstream file becomes one stream entry per
# line, in order, in the stream format (commit -> repo/ops/rev/time, a
# delete without cid and record; identity and account keep their object
# and relay seq); bad lines are reported with their line number, skipped,
# and make the exit status 1; sluice-gen's Jetstream output round-trips.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;
use JSON::PP;

my $rig = SluiceRig->new(pg => 0);
my $replay = $rig->bin('sluice-replay');
my $url = $rig->redis_url;
my $dir = $rig->dir;

# ---- bad lines (built here) ------------------------------------------------
my $good = '{"did":"did:plc:aaaaaaaaaaaaaaaaaaaaaaaa","time_us":1783175888085434,'
  . '"kind":"commit","commit":{"rev":"3mptbypluud2a","operation":"create",'
  . '"collection":"app.bsky.feed.like","rkey":"3mptbyplj5d2a","record":'
  . '{"$type":"app.bsky.feed.like","createdAt":"2026-07-04T14:38:08.999Z",'
  . '"subject":{"cid":"bafyreiftot","uri":"at://did:plc:b/app.bsky.feed.post/3x"}},'
  . '"cid":"bafyreiguce"}}';
my $del = '{"did":"did:plc:aaaaaaaaaaaaaaaaaaaaaaaa","time_us":1783175888112407,'
  . '"kind":"commit","commit":{"rev":"3mptbyp63ih2m","operation":"delete",'
  . '"collection":"app.bsky.graph.follow","rkey":"3m3q3ut7jsm2m"}}';
my $ident = '{"did":"did:plc:c","time_us":1,"kind":"identity","identity":'
  . '{"did":"did:plc:c","seq":31527015470,"time":"2026-07-04T14:38:07.877Z"}}';
open my $fh, '>', "$dir/mixed.jsonl" or die;
print $fh "$good\n", "not json\n", "\n", "$del\n",
  qq({"did":"did:plc:x","kind":"commit","commit":{"operation":"create"}}\n),
  qq({"did":"did:plc:x","time_us":1,"kind":"weird"}\n), "$ident\n";
close $fh;
my $r = $rig->run($replay, '-u', $url, '-k', 'm', "$dir/mixed.jsonl");
is($r->[0], 1, 'bad lines: exit status 1');
like($r->[1], qr/mixed\.jsonl:2: not a JSON object/, 'line 2 reported');
like($r->[1], qr/mixed\.jsonl:5: commit without operation, collection or rkey/,
  'line 5 reported');
like($r->[1], qr/mixed\.jsonl:6: unknown kind "weird"/, 'line 6 reported');
unlike($r->[1], qr/mixed\.jsonl:3:/, 'a blank line is not an error');
like($r->[1], qr/3 entries added to m, 3 lines skipped/, 'summary');
my @m = $rig->stream_entries('m');
is_deeply([map { $_->[1]{type} } @m], [qw(commit commit identity)],
  'the good lines, in order');
my $c = decode_json($m[0][1]{data});
is_deeply($c, {repo => 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa', rev => '3mptbypluud2a',
    time => '2026-07-04T14:38:08.085Z',
    ops => [{action => 'create', path => 'app.bsky.feed.like/3mptbyplj5d2a',
        cid => 'bafyreiguce', record => decode_json($good)->{commit}{record}}]},
  'commit: repo, ops [action, path, cid, record], rev, time');
like($m[0][1]{data}, qr/^\{"repo":.*"ops":\[\{"action":"create","path":.*"cid":.*"record":/,
  'keys in the order repo, ops (action, path, cid, record)');
is($m[0][1]{seq}, '', 'a commit has an empty seq');
is_deeply(decode_json($m[1][1]{data})->{ops},
  [{action => 'delete', path => 'app.bsky.graph.follow/3m3q3ut7jsm2m'}],
  'a delete has no cid and no record');
my $i = decode_json($m[2][1]{data});
is($i->{did}, 'did:plc:c', 'identity: did');
ok(exists $i->{handle} && !defined $i->{handle}, 'identity: handle null when absent');
is($m[2][1]{seq}, '31527015470', 'identity: the relay seq');

is($rig->run($replay, '-u', $url, "$dir/nonexistent.jsonl")->[0], 66,
  'a missing file: exit 66');

# ---- sluice-gen's Jetstream output round-trips ----------------------------------
$r = $rig->run('sh', '-c', $rig->bin('sluice-gen')
    . " -n 3000 -s 9 -q --format jetstream > $dir/gen.jsonl");
is($r->[0], 0, 'generated 3000 Jetstream lines');
$r = $rig->run($replay, '-u', $url, '-k', 'g', '--rate', 20000, "$dir/gen.jsonl");
is($r->[0], 0, 'replayed them (paced at 20,000/s)') or diag($r->[1]);
is($rig->redis('XLEN', 'g'), 3000, 'one entry per line');

# ---- the recorded file ----------------------------------------------------------
my $rec = $rig->root . '/../shared/data/bluesky/expected_v1.jsonl';
SKIP: {
    skip 'recorded events absent', 4 unless -r $rec;
    open my $in, '<', $rec or die;
    my @lines = grep { /\S/ } <$in>;
    close $in;
    $r = $rig->run($replay, '-u', $url, '-k', 'rec', $rec);
    is($r->[0], 0, 'the recorded file replays without a bad line') or diag($r->[1]);
    my @e = $rig->stream_entries('rec');
    is(scalar @e, scalar @lines, scalar(@lines) . ' lines, as many entries');
    my $match = 1;
    for my $k (0 .. $#lines) {
        my $j = decode_json($lines[$k]);
        my $d = decode_json($e[$k][1]{data});
        my $want = $j->{kind};
        if ($e[$k][1]{type} ne $want) { $match = 0; last }
        if ($want eq 'commit') {
            my $op = $d->{ops}[0];
            $match = 0 unless $d->{repo} eq $j->{did}
              && $op->{path} eq "$j->{commit}{collection}/$j->{commit}{rkey}"
              && $op->{action} eq $j->{commit}{operation};
        } else {
            $match = 0 unless $d->{did} eq $j->{$want}{did};
        }
    }
    ok($match, 'each entry is its line: kind, repo, path and action in order');
    my @acct = grep { $_->[1]{type} eq 'account' } @e;
    ok(!@acct || $acct[0][1]{seq} =~ /^\d+$/, 'account entries carry the relay seq');
}

$rig->finish;
done_testing;
