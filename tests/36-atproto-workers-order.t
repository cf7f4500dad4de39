#!/usr/bin/perl
# Out-of-order safety through real workers: one stream (sluice-gen events
# with hand-built tricky cases spread among them) drained by two consumer
# groups into two databases. A: one worker, stream order, batches of 500.
# B: four workers with small, different batch sizes; one is killed with
# SIGKILL mid-run and restarted under its name (it re-reads its pending
# entries), another is killed and left dead (its pending entries are
# reclaimed by the others). When both are drained, every appview table and
# sluice's state tables are identical in A and B (columns that hold the
# time of the write aside), every counter equals the rows it counts, and
# the tricky cases came out as the stream order says. Then three
# interleavings of two workers are forced with a row lock held by a third
# session (worker X's batch held open before its commit while worker Y
# applies the next entry): an owner of a duplicate pair deleted while its
# duplicate is being created, a post created while its gates are written,
# a reply created while the root author likes it, and a reply deleted
# while the root author likes it; each must end as one
# worker applying the same stream in order does.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use AtprotoTables qw(%COMPARED $COUNTERS_WRONG $LIKE_COUNTS_WRONG wait_counters_folded);
use Test::More;
use JSON::PP;
use Time::HiRes qw(sleep);

my $JSON = JSON::PP->new->canonical;
my $rig = SluiceRig->new;
my $sluiced = $rig->bin('sluiced');
my $stream = 'firehose:events';
my $N = 4000;

# ---- the stream: generated events and tricky cases among them ---------------------
my $r = $rig->run($rig->bin('sluice-gen'), '-u', $rig->redis_url, '-k', 'gen:src', '-n', $N, '-s', 36, '-m', 0, '-q');
is($r->[0], 0, "sluice-gen wrote $N events") or diag($r->[1]);
my $src = $rig->redis_resp('XRANGE', 'gen:src', '-', '+');
my @gen = map { $_->[1] } @{ ref $src eq 'ARRAY' ? $src : [] };
is(scalar @gen, $N, 'read them back');

sub did { my ($n) = @_; return 'did:plc:' . $n . ('x' x (24 - length $n)) }
my ($TA, $TB, $TC, $TD) = map { did("trk$_") } qw(a b c d);
my $P = 'app.bsky.feed.post';
my $L = 'app.bsky.feed.like';
my $R = 'app.bsky.feed.repost';
my $FO = 'app.bsky.graph.follow';
my $PR = 'app.bsky.actor.profile';
my $IT = 'app.bsky.graph.listitem';
sub uri { return "at://$_[0]/$_[1]/$_[2]" }
sub commit {
    my ($repo, @ops) = @_;
    return ['type', 'commit', 'data', $JSON->encode({ repo => $repo, ops => \@ops }), 'seq', ''];
}
sub cr { my ($c, $k, $rec) = @_; return { action => 'create', path => "$c/$k", cid => "bafy$k", record => $rec } }
sub up { my ($c, $k, $rec) = @_; return { action => 'update', path => "$c/$k", cid => "bafy${k}u", record => $rec } }
sub dl { my ($c, $k) = @_; return { action => 'delete', path => "$c/$k" } }
sub post { my ($text, %x) = @_; return { '$type' => $P, text => $text, createdAt => '2024-05-01T12:00:00Z', %x } }
sub subj { my ($u) = @_; return { subject => { uri => $u, cid => 'bafysubj' }, createdAt => '2024-05-01T12:00:00+02:00' } }
my %T = (p1 => uri($TA, $P, 'tp1'), p2 => uri($TB, $P, 'tp2'), p3 => uri($TC, $P, 'tp3'),
         p4 => uri($TD, $P, 'tp4'), p5 => uri($TA, $P, 'tp5'), list => uri($TA, 'app.bsky.graph.list', 'tl'));
my $reply = sub { my ($par, $root) = @_; return { parent => { uri => $par, cid => 'c' }, root => { uri => $root, cid => 'c' } } };

# Each tricky case: a list of entries; a number between two entries is the
# gap (in generated entries) to leave there; '=' means adjacent.
my @cases = (
    # a like created and deleted in adjacent entries
    [commit($TB, cr($L, 'adj', subj($T{p1}))), '=', commit($TB, dl($L, 'adj'))],
    # a post whose delete comes before its create (spaced, and adjacent)
    [commit($TB, dl($P, 'tp2')), 40, commit($TB, cr($P, 'tp2', post('after its delete')))],
    [commit($TC, dl($P, 'tp3')), '=', commit($TC, cr($P, 'tp3', post('after its delete, adjacent')))],
    # the post liked in the first case, and its thread: a reply created
    # before its parent, the root author liking the reply, then unliking
    [commit($TD, cr($P, 'tp4', post('reply first', reply => $reply->($T{p1}, $T{p1})))), 25,
     commit($TA, cr($P, 'tp1', post('the root'))), 25,
     commit($TA, cr($L, 'rootlike', subj($T{p4}))), 30,
     commit($TA, cr($L, 'rootlike2', subj($T{p4}))), 30,
     commit($TA, dl($L, 'rootlike'))],
    # a profile created and updated twice
    [commit($TA, cr($PR, 'self', { '$type' => $PR, displayName => 'one', avatar => { '$type' => 'blob', ref => { '$link' => 'bafkone' }, mimeType => 'image/png', size => 1 } })), 15,
     commit($TA, up($PR, 'self', { '$type' => $PR, displayName => 'two', description => 'second' })), 15,
     commit($TA, up($PR, 'self', { '$type' => $PR, displayName => 'three', banner => { '$type' => 'blob', ref => { '$link' => 'bafkthree' }, mimeType => 'image/png', size => 1 } }))],
    # duplicate likes of one post by one user under two rkeys; the owner
    # (smallest URI) deleted later: the other takes over
    [commit($TC, cr($L, 'dupb', subj($T{p1}))), 10, commit($TC, cr($L, 'dupa', subj($T{p1}))), 20,
     commit($TC, dl($L, 'dupa'))],
    # two duplicates both kept: the smaller URI owns the row
    [commit($TD, cr($L, 'keepb', subj($T{p2}))), '=', commit($TD, cr($L, 'keepa', subj($T{p2})))],
    # a like arriving before the post it likes; the post edited, then deleted
    [commit($TB, cr($L, 'early', subj($T{p5}))), 20,
     commit($TA, cr($P, 'tp5', post('liked before it existed'))), 20,
     commit($TA, up($P, 'tp5', post('edited'))), 20,
     commit($TA, dl($P, 'tp5'))],
    # reposts: created and deleted adjacent; a duplicate pair
    [commit($TD, cr($R, 'rp1', subj($T{p1}))), '=', commit($TD, dl($R, 'rp1'))],
    [commit($TB, cr($R, 'rpb', subj($T{p1}))), 12, commit($TB, cr($R, 'rpa', subj($T{p1})))],
    # follow, unfollow, follow again under another rkey; one commit with
    # several ops
    [commit($TA, cr($FO, 'fa', { subject => $TB, createdAt => '2024-05-01T12:00:00Z' })), 9,
     commit($TA, dl($FO, 'fa')), 9,
     commit($TA, cr($FO, 'fb', { subject => $TB, createdAt => '2024-05-01T12:00:00Z' }),
            cr($L, 'multi', subj($T{p3})), cr($R, 'multi', subj($T{p3})))],
    # list items: duplicates, one deleted
    [commit($TA, cr('app.bsky.graph.list', 'tl', { name => 'L', purpose => 'app.bsky.graph.defs#curatelist', createdAt => '2024-05-01T12:00:00Z' })), 5,
     commit($TA, cr($IT, 'ib', { list => $T{list}, subject => $TC, createdAt => '2024-05-01T12:00:00Z' })), 5,
     commit($TA, cr($IT, 'ia', { list => $T{list}, subject => $TC, createdAt => '2024-05-01T12:00:00Z' })), 5,
     commit($TA, dl($IT, 'ib'))],
    # handles and account status, newest wins
    [['type', 'identity', 'data', $JSON->encode({ did => $TB, handle => 'first.example.com' }), 'seq', '1'], 30,
     ['type', 'identity', 'data', $JSON->encode({ did => $TB, handle => 'second.example.com' }), 'seq', '2'], '=',
     ['type', 'identity', 'data', $JSON->encode({ did => $TB, handle => undef }), 'seq', '3'], 30,
     ['type', 'account', 'data', $JSON->encode({ did => $TC, active => JSON::PP::false, status => 'deactivated' }), 'seq', '4'], 20,
     ['type', 'account', 'data', $JSON->encode({ did => $TC, active => JSON::PP::true }), 'seq', '5']],
);

# Ownership of a pair handed over while the other record of the pair is
# written nearby (likely in another worker's batch at the same time): the
# owner deleted just before or after a duplicate appears. Stream order
# says the duplicate ends up owning the row each time.
my @BL = ('app.bsky.graph.block');
my @handover;
my $NH = 40;
for my $k (0 .. $NH - 1) {
    my $coll = ($L, $R, $FO, @BL, $IT)[$k % 5];
    my $tag = ('a' .. 'z')[$k / 26] . ('a' .. 'z')[$k % 26];
    my $u = $coll eq $IT ? $TA : did("trh$tag");
    my $rec = $coll eq $IT ? { list => $T{list}, subject => did("trs$tag"), createdAt => '2024-05-01T12:00:00Z' }
      : $coll =~ /graph/ ? { subject => $TD, createdAt => '2024-05-01T12:00:00Z' } : subj($T{p2});
    my ($g1, $g2) = map { $_ == 0 ? '=' : $_ } ($k % 4, int($k / 4) % 3 + 1);
    my ($a, $b) = ("h${k}a", "h${k}b");
    push @handover, [$coll, $u, $b, $coll eq $IT ? $rec->{subject} : undef];
    push @cases, $k % 2
      ? [commit($u, cr($coll, $a, $rec)), $g1, commit($u, dl($coll, $a)), $g2, commit($u, cr($coll, $b, $rec))]
      : [commit($u, cr($coll, $b, $rec)), $g1, commit($u, cr($coll, $a, $rec)), $g2, commit($u, dl($coll, $a))];
}
# spread them among the others
{
    my @t = splice @cases, 0, @cases - $NH;
    my @h = @cases;
    @cases = ();
    while (@t || @h) {
        push @cases, shift @t if @t;
        push @cases, splice @h, 0, 3;
    }
}

# Lay the cases out among the generated entries: case k starts at about
# k / cases of the way through.
my @slots = map { [$_] } @gen;    # each slot: entries to add at that place
for my $k (0 .. $#cases) {
    my $pos = int(($k + 0.5) * $N / @cases);
    my @c = @{ $cases[$k] };
    while (@c) {
        my $e = shift @c;
        push @{ $slots[$pos] }, $e;
        my $gap = @c ? shift @c : 0;
        $pos += $gap eq '=' ? 0 : $gap;
        $pos = $#slots if $pos > $#slots;
    }
}
my @all = map { @$_ } @slots;
my $total = @all;
like($rig->redis_batch(map { ['XADD', $stream, '*', @$_] } @all), qr/errors: 0\b/,
    "$total entries in the stream ($N generated, " . ($total - $N) . ' hand-built)');

# ---- the two databases -----------------------------------------------------------
my %base = (batch_timeout_ms => 20, block_ms => 200, claim_interval_ms => 500, stream_maxlen => 0);
for my $db (qw(a b)) {
    $rig->create_database($db);
    my $c = $rig->write_config(database_url => $rig->database_url_for($db), %base);
    $r = $rig->run($sluiced, '-c', $c, '--init-schema');
    is($r->[0], 0, "schema in database $db") or diag($r->[1]);
}
my $confa = $rig->write_config(database_url => $rig->database_url_for('a'), consumer_group => 'grp-a',
    dead_letter_stream => "$stream:dead-a", batch_size => 500, claim_idle_ms => 60000, %base);
my %confb = map {
    my ($name, $bs) = @$_;
    ($name => $rig->write_config(database_url => $rig->database_url_for('b'), consumer_group => 'grp-b',
        dead_letter_stream => "$stream:dead-b", batch_size => $bs, claim_idle_ms => 3000, %base))
} [w1 => 7], [w2 => 13], [w3 => 50], [w4 => 3];

my $pa = $rig->spawn('a', $sluiced, '-c', $confa, '--worker', 'a-1');
my %pb = map { ($_ => $rig->spawn("b-$_", $sluiced, '-c', $confb{$_}, '--worker', "b-$_")) } sort keys %confb;

sub read_b { my $g = $rig->group_info($stream, 'grp-b'); return $g ? ($g->{'entries-read'} // 0) : 0 }
sub consumer_pending {
    my ($name) = @_;
    my $c = $rig->redis_resp('XINFO', 'CONSUMERS', $stream, 'grp-b');
    my ($x) = grep { $_->{name} eq $name } map { +{@$_} } @{ ref $c eq 'ARRAY' ? $c : [] };
    return $x ? $x->{pending} : 0;
}

# kill -9 w2 at about a third of the way, restart it at once under its name
ok($rig->wait_until(sub { read_b() >= $total / 3 }, 60), 'B: a third of the stream read');
kill 'KILL', $pb{w2};
$rig->wait_exit($pb{w2}, 10);
my $lag = $rig->group_info($stream, 'grp-b')->{lag};
ok($lag > 0, "B: w2 killed mid-run ($lag entries not yet read)");
my $w2pending = consumer_pending('b-w2');
note("w2 left $w2pending entries pending");
$pb{w2} = $rig->spawn('b-w2-again', $sluiced, '-c', $confb{w2}, '--worker', 'b-w2');

# kill -9 w3 at about two thirds; it stays dead, the others reclaim
ok($rig->wait_until(sub { read_b() >= 2 * $total / 3 }, 60), 'B: two thirds of the stream read');
kill 'KILL', $pb{w3};
$rig->wait_exit($pb{w3}, 10);
delete $pb{w3};
my $w3pending = consumer_pending('b-w3');
note("w3 left $w3pending entries pending");

ok($rig->wait_drained($stream, 'grp-a', 120), 'A: drained (nothing pending, lag 0)');
ok($rig->wait_drained($stream, 'grp-b', 120), 'B: drained, the dead worker\'s entries reclaimed');
ok(wait_counters_folded($rig, 'a') && wait_counters_folded($rig, 'b'), 'A and B: the counters folded');
is(consumer_pending('b-w3'), 0, 'B: the dead worker holds nothing');
like($rig->log_text('b-w2-again'), qr/re-reading \d+ of this consumer's pending entries/,
    'B: the restarted worker re-read its own pending entries') if $w2pending;
my $claims = join '', map { $rig->log_text($_) } qw(b-w1 b-w2-again b-w4);
like($claims, qr/claimed [1-9]\d* entries/, 'B: another worker claimed the dead worker\'s entries') if $w3pending;

my @da = sort map { $_->[1]{id} } $rig->stream_entries("$stream:dead-a");
my @db = sort { $a cmp $b } keys %{ { map { ($_->[1]{id} => 1) } $rig->stream_entries("$stream:dead-b") } };
is_deeply(\@db, \@da, 'the same entries dead-lettered in A and B (' . scalar(@da) . ')');

# ---- A and B identical ---------------------------------------------------------------
my %COLS = %COMPARED;
sub dump_tables {
    my ($db) = @_;
    return { map { $_ => $rig->psql_db($db, "SELECT count(*) || E'\\n' || coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '')
        FROM (SELECT $COLS{$_} FROM $_) x") } keys %COLS };
}
my ($A, $B) = (dump_tables('a'), dump_tables('b'));
my @diff = grep { $A->{$_} ne $B->{$_} } sort keys %COLS;
is("@diff", '', 'every table identical in A (one worker, stream order) and B (four workers, crashes, reclaims)');
for my $t (@diff) {
    my (undef, @a) = split /\n/, $A->{$t};    # the first line is the count
    my (undef, @b) = split /\n/, $B->{$t};
    my %a = map { $_ => 1 } @a;
    my %b = map { $_ => 1 } @b;
    my @onlya = grep { !$b{$_} } sort keys %a;
    my @onlyb = grep { !$a{$_} } sort keys %b;
    fail("$t differs");
    diag("$t: only in A: " . scalar(@onlya) . ', only in B: ' . scalar(@onlyb));
    diag("  A: $_") for @onlya[0 .. ($#onlya < 2 ? $#onlya : 2)];
    diag("  B: $_") for @onlyb[0 .. ($#onlyb < 2 ? $#onlyb : 2)];
}
note(join ', ', map { (split /\n/, $A->{$_})[0] . " $_" } qw(posts likes reposts follows blocks notifications users generic_records));

for my $db (qw(a b)) {
    is($rig->psql_db($db, $COUNTERS_WRONG), 0, "$db: every counter equals the true number of rows");
    is($rig->psql_db($db, $LIKE_COUNTS_WRONG),
       0, "$db: generator and labeler like counts true");
    is($rig->psql_db($db, q{SELECT count(*) FROM (SELECT uri FROM likes UNION ALL SELECT uri FROM reposts UNION ALL
        SELECT uri FROM follows UNION ALL SELECT uri FROM posts) x JOIN sluice_record_state s USING (uri) WHERE s.deleted}), 0,
       "$db: no deleted record has a row");
}
ok((split /\n/, $A->{likes})[0] > 1000, 'A: the generated likes are there');

# ---- the tricky cases, as the stream order says (in A, hence in B) -----------------------
sub qa { return $rig->psql_db('a', $_[0]) }
is(qa(qq{SELECT count(*) FROM likes WHERE uri = '@{[uri($TB, $L, 'adj')]}'}), 0, 'a like created and deleted in adjacent entries: no row');
is(qa(qq{SELECT string_agg(text, ',' ORDER BY uri) FROM posts WHERE uri IN ('$T{p2}', '$T{p3}')}),
   'after its delete,after its delete, adjacent', 'posts whose delete came before their create: live');
is(qa(qq{SELECT coalesce(display_name, '-') || '|' || coalesce(description, '-') || '|' || coalesce(avatar_url, '-') || '|'
        || coalesce(banner_url, '-') FROM users WHERE did = '$TA'}), 'three|-|-|bafkthree', 'a profile updated twice: the last one');
is(qa(qq{SELECT string_agg(uri, ',') FROM likes WHERE user_did = '$TC' AND post_uri = '$T{p1}'}), uri($TC, $L, 'dupb'),
   'duplicate likes, the owner deleted: the other one owns the row');
is(qa(qq{SELECT string_agg(uri, ',') FROM likes WHERE user_did = '$TD' AND post_uri = '$T{p2}'}), uri($TD, $L, 'keepa'),
   'duplicate likes, both live: the smaller URI owns the row');
is(qa(qq{SELECT string_agg(uri, ',') FROM reposts WHERE user_did = '$TB' AND post_uri = '$T{p1}'}), uri($TB, $R, 'rpa'),
   'duplicate reposts: the smaller URI owns the row');
is(qa(qq{SELECT like_count || ' ' || repost_count || ' ' || reply_count FROM post_aggregations WHERE post_uri = '$T{p1}'}),
   '1 1 1', 'the tricky post: one like (dupb), one repost (rpa), one reply');
is(qa(qq{SELECT count(*) FROM feed_items WHERE uri = '@{[uri($TD, $R, 'rp1')]}'}), 0, 'an adjacent repost create+delete: no feed item');
is(qa(qq{SELECT string_agg(post_uri || ' ' || root_author_like_uri, ',') FROM thread_contexts WHERE post_uri = '$T{p4}'}),
   "$T{p4} " . uri($TA, $L, 'rootlike2'), 'a reply created before its parent, liked by the root author: thread context');
is(qa(qq{SELECT count(*) FROM posts WHERE uri = '$T{p5}'}), 0, 'a post created, edited, deleted: gone');
is(qa(qq{SELECT like_count FROM post_aggregations WHERE post_uri = '$T{p5}'}), 1,
   '... its like (which came before it) still counted, as the row is there');
is(qa(qq{SELECT string_agg(split_part(uri, '/', 5), ',') FROM follows WHERE follower_did = '$TA'}), 'fb',
   'follow, unfollow, follow again: the new follow');
is(qa(qq{SELECT like_count || ' ' || repost_count FROM post_aggregations WHERE post_uri = '$T{p3}'}), '1 1',
   'a commit with several ops: all applied');
is(qa(qq{SELECT string_agg(split_part(uri, '/', 5), ',') FROM list_items WHERE list_uri = '$T{list}' AND subject_did = '$TC'}), 'ia',
   'duplicate list items: the live one');
is(qa(qq{SELECT handle FROM users WHERE did = '$TB'}), 'second.example.com', 'handle: the newest identity event with one');
is(qa(qq{SELECT active || ' ' || coalesce(status, '-') FROM sluice_account_status WHERE did = '$TC'}), 'true -',
   'account: the newest event');

my %tab = ($L => 'likes', $R => 'reposts', $FO => 'follows', $BL[0] => 'blocks', $IT => 'list_items');
my %pk = (likes => 'user_did', reposts => 'user_did', follows => 'follower_did', blocks => 'blocker_did');
my @bad_owner;
for my $h (@handover) {
    my ($coll, $u, $b, $subject) = @$h;
    my $t = $tab{$coll};
    my $where = $t eq 'list_items' ? "list_uri = '$T{list}' AND subject_did = '$subject'" : "$pk{$t} = '$u'";
    my $got = qa("SELECT string_agg(uri, ',') FROM $t WHERE $where") // '';
    push @bad_owner, "$t: $got" unless $got eq uri($u, $coll, $b);
}
is("@bad_owner", '', scalar(@handover) . ' ownership handovers of a duplicate pair: the live duplicate owns the row');

kill 'TERM', $_ for $pa, values %pb;
is($rig->wait_exit($_, 30), 0, 'worker exits cleanly') for $pa, sort values %pb;

# ---- interleavings of two workers, made to happen ------------------------------------
# Worker X's batch is held open at its end: a third session holds a SHARE
# lock on sluice_counter_delta, which every batch appends to last of all.
# Meanwhile worker Y applies the next entry (and waits for X's row locks,
# or at the same place as X); then the lock holder lets go. Stream order
# decides the outcome, as always.
my $db = 'c';
my $rs = 'race:events';
$rig->create_database($db);
my $cconf = $rig->write_config(database_url => $rig->database_url_for($db), stream_key => $rs, batch_size => 10,
    batch_timeout_ms => 20, block_ms => 200, claim_idle_ms => 60000, claim_interval_ms => 60000);
is($rig->run($sluiced, '-c', $cconf, '--init-schema')->[0], 0, 'race: schema');
my @cpids = map { $rig->spawn("c-$_", $sluiced, '-c', $cconf, '--worker', "c-$_") } 1, 2;
my ($U, $V) = (did('racea'), did('raceb'));
my $cgroup = 'firehose-processors';
sub qc { return $rig->psql_db($db, $_[0]) }
my $nrace = 0;
sub race {
    my ($name, $held, $x, $y) = @_;
    my $n = ++$nrace;
    my $waiting = sub {
        qc(q{SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'
              AND query LIKE '%sluice_apply_stage%'});
    };
    my $hold_log = $rig->dir . "/hold-$n.out";
    open my $hold, '|-', "psql -X -q -A -t -d '" . $rig->database_url_for($db) . "' > $hold_log 2>&1" or die "psql: $!";
    $hold->autoflush(1);
    print $hold "BEGIN;\nLOCK TABLE sluice_counter_delta IN SHARE MODE;\nSELECT 'held';\n";
    ok($rig->wait_until(sub { -s $hold_log }, 10), "$name: a session holds the end of every batch");
    $rig->redis('XADD', $rs, '*', @$x);
    ok($rig->wait_until(sub { $waiting->() == 1 }, 20), "$name: worker X waits before its commit");
    $rig->redis('XADD', $rs, '*', @$y);
    ok($rig->wait_until(sub {
        my $g = $rig->group_info($rs, $cgroup);
        $waiting->() == 2 || ($g->{lag} == 0 && $g->{pending} == 1);
    }, 20), "$name: worker Y applied its entry or waits for X");
    print $hold "COMMIT;\n";
    close $hold;
    ok($rig->wait_drained($rs, $cgroup, 30) && wait_counters_folded($rig, $db), "$name: drained, counters folded");
}
sub setup {
    $rig->redis('XADD', $rs, '*', @$_) for @_;
    ok($rig->wait_drained($rs, $cgroup, 30), 'race: set up');
}

# (1) the owner of a pair (like ra, follow fa) deleted by Y while X's
# transaction, which created a duplicate of each (rb, fb), is open
my $rp = uri($V, $P, 'rp');
my $like = { subject => { uri => $rp, cid => 'bafyrp' }, createdAt => '2024-05-01T12:00:00Z' };
my $fol = { subject => $V, createdAt => '2024-05-01T12:00:00Z' };
setup(commit($V, cr($P, 'rp', post('liked'))), commit($U, cr($L, 'ra', $like), cr($FO, 'fa', $fol)));
race('pair handover', $rp, commit($U, cr($L, 'rb', $like), cr($FO, 'fb', $fol)), commit($U, dl($L, 'ra'), dl($FO, 'fa')));
is(qc(q{SELECT coalesce(string_agg(uri, ','), 'none') FROM likes}), uri($U, $L, 'rb'),
   'pair handover: the live duplicate like owns the row');
is(qc(q{SELECT coalesce(string_agg(uri, ','), 'none') FROM follows}), uri($U, $FO, 'fb'),
   'pair handover: the live duplicate follow owns the row');
is(qc(qq{SELECT like_count FROM post_aggregations WHERE post_uri = '$rp'}), 1, 'pair handover: the post has one like');

# (2) a post created by X (a reply, so it updates its parent's counters)
# while Y writes its threadgate and postgate
my $rg = uri($U, $P, 'rg');
race('gates', $rp, commit($U, cr($P, 'rg', post('gated', reply => $reply->($rp, $rp)))),
    commit($U, cr('app.bsky.feed.threadgate', 'rg', { post => $rg, allow => [], createdAt => '2024-05-01T12:00:00Z' }),
        cr('app.bsky.feed.postgate', 'rg', { post => $rg, embeddingRules => [], createdAt => '2024-05-01T12:00:00Z' })));
is(qc(qq{SELECT has_thread_gate || ' ' || has_post_gate FROM posts WHERE uri = '$rg'}), 'true true',
   'gates: the post knows its threadgate and postgate');

# (3) a reply created by X while Y writes the like of the root's author
my $rr = uri($U, $P, 'rr');
race('thread context', $rp, commit($U, cr($P, 'rr', post('a reply', reply => $reply->($rp, $rp)))),
    commit($V, cr($L, 'rl', { subject => { uri => $rr, cid => 'bafyrr' }, createdAt => '2024-05-01T12:00:00Z' })));
is(qc(qq{SELECT coalesce(string_agg(root_author_like_uri, ','), 'none') FROM thread_contexts WHERE post_uri = '$rr'}),
   uri($V, $L, 'rl'), 'thread context: the root author\'s like of the reply');

# (4) a reply deleted by X while Y writes the like of the root's author:
# in stream order the reply is gone first, so no thread context
my $rq = uri($U, $P, 'rq');
setup(commit($U, cr($P, 'rq', post('a reply to delete', reply => $reply->($rp, $rp)))));
race('reply deleted', $rp, commit($U, dl($P, 'rq')),
    commit($V, cr($L, 'rl2', { subject => { uri => $rq, cid => 'bafyrq' }, createdAt => '2024-05-01T12:00:00Z' })));
is(qc(qq{SELECT count(*) FROM thread_contexts WHERE post_uri = '$rq'}), 0,
   'reply deleted: no thread context for a reply deleted before the like');

ok(wait_counters_folded($rig, $db), 'race: the counters folded');
is(qc($COUNTERS_WRONG), 0, 'race: every counter equals the true number of rows');
kill 'TERM', $_ for @cpids;
is($rig->wait_exit($_, 30), 0, 'race: worker exits cleanly') for @cpids;

# the same stream through one worker (another group, another database):
# what stream order gives, the reference for the checks above
$rig->create_database('d');
my $dconf = $rig->write_config(database_url => $rig->database_url_for('d'), stream_key => $rs, consumer_group => 'grp-d',
    dead_letter_stream => "$rs:dead-d", batch_size => 1, batch_timeout_ms => 20, block_ms => 200);
is($rig->run($sluiced, '-c', $dconf, '--init-schema')->[0], 0, 'race reference: schema');
my $dpid = $rig->spawn('d-1', $sluiced, '-c', $dconf, '--worker', 'd-1');
ok($rig->wait_drained($rs, 'grp-d', 30) && wait_counters_folded($rig, 'd'),
   'race reference: one worker drained the same stream');
is($rig->psql_db('d', qq{SELECT string_agg(uri, ',') FROM likes WHERE user_did = '$U'}) . ' ' . $rig->psql_db('d', q{SELECT string_agg(uri, ',') FROM follows}),
   uri($U, $L, 'rb') . ' ' . uri($U, $FO, 'fb'), 'race reference: the duplicates own the rows');
is($rig->psql_db('d', qq{SELECT has_thread_gate || ' ' || has_post_gate FROM posts WHERE uri = '$rg'}), 'true true',
   'race reference: the gates are known');
is($rig->psql_db('d', qq{SELECT root_author_like_uri FROM thread_contexts WHERE post_uri = '$rr'}), uri($V, $L, 'rl'),
   'race reference: the thread context');
is($rig->psql_db('d', qq{SELECT count(*) FROM thread_contexts WHERE post_uri = '$rq'}), 0,
   'race reference: no thread context for the deleted reply');
kill 'TERM', $dpid;
is($rig->wait_exit($dpid, 30), 0, 'race reference: worker exits cleanly');

$rig->finish;
done_testing;
