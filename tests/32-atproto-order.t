#!/usr/bin/perl
# Order independence of sluice_apply_stage(): one list of events applied in
# stream order in one batch, in single-op batches, in reverse order, in
# random permutations split into random batches (several seeds), and
# replayed, ends in identical contents of every table the sink writes.
# The list holds the hard cases: a like created and deleted in adjacent
# entries, a post deleted before its create is applied, a profile updated
# twice, duplicate likes/reposts/follows/list items under two rkeys (the
# row owner deleted), records deleted while others point at them. After
# every variant each counter equals the true number of rows, none negative.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use AtprotoStage;
use AtprotoTables qw(%COMPARED $COUNTERS_WRONG $LIKE_COUNTS_WRONG);
use Test::More;

# ---- the event list (stream order), reproducible ---------------------------
sub events {
    srand(20240501);
    my @users = map { "did:plc:user$_" } 1 .. 10;
    my (@ev, @posts, @likes, @reposts, @follows);
    my $ms = 1000;
    my $P = 'app.bsky.feed.post';
    my $L = 'app.bsky.feed.like';
    my $R = 'app.bsky.feed.repost';
    my $F = 'app.bsky.graph.follow';
    my $pick = sub { $_[0][int rand @{ $_[0] }] };
    my $at = sub { sprintf '2024-05-01 %02d:%02d:%02d', int($ms / 3600) % 24, int($ms / 60) % 60, $ms % 60 };
    my $entry = sub {    # one stream entry with one or more ops
        my @ops = @_;
        $ms++;
        my $i = 0;
        for my $o (@ops) { $o->{ms} = $ms; $o->{idx} = $i++; $o->{at} = $at->(); push @ev, $o }
    };
    for my $n (1 .. 30) {
        my $u = $pick->(\@users);
        my $rec = { '$type' => $P, text => "post $n", createdAt => 'x', langs => ['en'] };
        if (@posts && rand() < 0.4) {
            my $par = $pick->(\@posts);
            $rec->{reply} = { parent => { uri => $par->{uri}, cid => 'c' }, root => { uri => $par->{root}, cid => 'c' } };
        }
        if (@posts && rand() < 0.25) {
            $rec->{embed} = { '$type' => 'app.bsky.embed.record', record => { uri => $pick->(\@posts)->{uri}, cid => 'c' } };
        }
        if (rand() < 0.3) {
            $rec->{facets} = [{ features => [{ '$type' => 'app.bsky.richtext.facet#mention', did => $pick->(\@users) }] }];
        }
        my $o = cr(0, $u, $P, "p$n", $rec);
        $entry->($o);
        push @posts, { uri => $o->{uri}, root => $rec->{reply} ? $rec->{reply}{root}{uri} : $o->{uri} };
        # a few likes and reposts in the same entry as other ops
        for my $k (1 .. 3) {
            my $lu = $pick->(\@users);
            my $lo = cr(0, $lu, $L, "l$n.$k", { subject => { uri => $pick->(\@posts)->{uri}, cid => 'c' } });
            push @likes, $lo;
            my @ops = ($lo);
            if (rand() < 0.4) {
                my $ro = cr(0, $pick->(\@users), $R, "r$n.$k", { subject => { uri => $pick->(\@posts)->{uri}, cid => 'c' } });
                push @reposts, $ro;
                push @ops, $ro;
            }
            $entry->(@ops);
        }
        if (rand() < 0.3) {
            my $fo = cr(0, $pick->(\@users), $F, "f$n", { subject => $pick->(\@users) });
            push @follows, $fo;
            $entry->($fo);
        }
    }
    my $dup = sub {    # the same subject again under another rkey
        my ($o, $rkey) = @_;
        my $d = cr(0, $o->{did}, $o->{coll}, $rkey, $o->{rec});
        $entry->($d);
        return $d;
    };
    # duplicates; then the owner (smallest URI) of some of them deleted
    my @dl = map { $dup->($likes[$_], "zl$_") } 3, 7, 11;
    $entry->(del(0, $likes[3]{did}, $L, $likes[3]{rkey}));
    $entry->(del(0, $dl[1]{did}, $L, $dl[1]{rkey}));
    my @dr = map { $dup->($reposts[$_], "ar$_") } 0, 1;    # 'ar' sorts first: takes over
    $entry->(del(0, $reposts[1]{did}, $R, $reposts[1]{rkey}));
    $dup->($follows[0], "af0") if @follows;
    # a like created and deleted in adjacent entries
    my $adj = cr(0, $users[0], $L, 'adjacent', { subject => { uri => $posts[2]{uri}, cid => 'c' } });
    $entry->($adj);
    $entry->(del(0, $users[0], $L, 'adjacent'));
    # likes deleted, reposts deleted, a post edited, posts deleted (replied,
    # quoted and liked ones among them)
    $entry->(del(0, $likes[$_]{did}, $L, $likes[$_]{rkey})) for 20, 21, 40;
    $entry->(del(0, $reposts[$_]{did}, $R, $reposts[$_]{rkey})) for 2;
    $entry->(upd(0, $posts[5]{uri} =~ m{at://([^/]+)} ? $1 : die, $P, 'p6',
        { '$type' => $P, text => 'edited', reply => { parent => { uri => $posts[0]{uri}, cid => 'c' }, root => { uri => $posts[0]{uri}, cid => 'c' } } }));
    for my $n (1, 4, 9) {
        my ($d) = $posts[$n - 1]{uri} =~ m{at://([^/]+)};
        $entry->(del(0, $d, $P, "p$n"));
    }
    # the root author likes a reply (thread context)
    for my $p (@posts[10 .. 29]) {
        next if $p->{root} eq $p->{uri};
        my ($ra) = $p->{root} =~ m{at://([^/]+)};
        $entry->(cr(0, $ra, $L, "root$p->{uri}" =~ s{[^a-z0-9]}{}gr, { subject => { uri => $p->{uri}, cid => 'c' } }));
        last;
    }
    # profile updated twice, created and deleted; identity and account
    my $prof = 'app.bsky.actor.profile';
    $entry->(cr(0, $users[1], $prof, 'self', { displayName => 'One', avatar => { ref => { '$link' => 'bafk1' } } }));
    $entry->(upd(0, $users[1], $prof, 'self', { displayName => 'Two', description => 'second' }));
    $entry->(upd(0, $users[1], $prof, 'self', { displayName => 'Three', banner => { ref => { '$link' => 'bafk3' } } }));
    $entry->(cr(0, $users[2], $prof, 'self', { displayName => 'Gone' }));
    $entry->(del(0, $users[2], $prof, 'self'));
    $entry->(op(kind => 'identity', did => $users[3], handle => 'first.example.com'));
    $entry->(op(kind => 'identity', did => $users[3], handle => 'second.example.com'));
    $entry->(op(kind => 'identity', did => $users[3]));
    $entry->(op(kind => 'account', did => $users[4], active => 0, status => 'deactivated'));
    $entry->(op(kind => 'account', did => $users[4], active => 1));
    $entry->(op(kind => 'account', did => $users[5], active => 0, status => 'takendown'));
    # lists, duplicate list items, feeds, gates, generic records
    my $lst = "at://$users[0]/app.bsky.graph.list/l1";
    $entry->(cr(0, $users[0], 'app.bsky.graph.list', 'l1', { name => 'L', purpose => 'app.bsky.graph.defs#curatelist' }));
    $entry->(cr(0, $users[0], 'app.bsky.graph.listitem', 'i2', { list => $lst, subject => $users[6] }));
    $entry->(cr(0, $users[0], 'app.bsky.graph.listitem', 'i1', { list => $lst, subject => $users[6] }));
    $entry->(upd(0, $users[0], 'app.bsky.graph.list', 'l1', { name => 'L2', purpose => 'app.bsky.graph.defs#modlist' }));
    $entry->(cr(0, $users[0], 'app.bsky.feed.generator', 'g', { did => 'did:web:f.example', displayName => 'G' }));
    $entry->(cr(0, $users[7], $L, 'lg', { subject => { uri => "at://$users[0]/app.bsky.feed.generator/g", cid => 'c' } }));
    $entry->(cr(0, $users[8], $L, 'lg', { subject => { uri => "at://$users[0]/app.bsky.feed.generator/g", cid => 'c' } }));
    $entry->(del(0, $users[8], $L, 'lg'));
    my ($pd) = $posts[11]{uri} =~ m{at://([^/]+)};
    $entry->(cr(0, $pd, 'app.bsky.feed.threadgate', 'p12', { post => $posts[11]{uri}, allow => [] }));
    $entry->(cr(0, $pd, 'app.bsky.feed.postgate', 'p12', { post => $posts[11]{uri}, embeddingRules => [] }));
    $entry->(del(0, $pd, 'app.bsky.feed.postgate', 'p12'));
    $entry->(cr(0, $users[9], 'xyz.example.thing', 't1', { v => 1 }));
    $entry->(upd(0, $users[9], 'xyz.example.thing', 't1', { v => 2 }));
    $entry->(cr(0, $users[9], 'xyz.example.thing', 't2', { v => 3 }));
    $entry->(del(0, $users[9], 'xyz.example.thing', 't2'));
    $entry->(cr(0, $users[2], 'app.bsky.graph.block', 'b1', { subject => $users[3] }));
    return @ev;
}

# Every table the sink writes, without columns that legitimately differ
# (indexed_at, updated_at, serial ids, created_at columns defaulting to now()).
my %COLS = %COMPARED;

sub dump_tables {
    my ($rig, $db) = @_;
    my %d;
    for my $t (sort keys %COLS) {
        $d{$t} = q1($rig, $db, "SELECT count(*) || E'\\n' || coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '') FROM (SELECT $COLS{$t} FROM $t) x");
    }
    return \%d;
}

# Counters equal the rows they count; none negative.
sub counters_true {
    my ($rig, $db, $name) = @_;
    is(q1($rig, $db, $COUNTERS_WRONG), '0', "$name: every counter equals the true number of rows");
    is(q1($rig, $db, $LIKE_COUNTS_WRONG),
       '0', "$name: feed generator and labeler like counts true");
}

my $rig = SluiceRig->new(redis => 0);
my @ev = events();
note(scalar(@ev) . ' ops');
my $nvar = 0;
my $ref;

sub variant {
    my ($name, @batches) = @_;
    my $db = 'v' . ++$nvar;
    new_db($rig, $db);
    ok(apply_batches($rig, $db, @batches), "$name: applied");
    counters_true($rig, $db, $name);
    my $d = dump_tables($rig, $db);
    if (!$ref) {
        $ref = $d;
        return $db;
    }
    my @diff = grep { $d->{$_} ne $ref->{$_} } sort keys %COLS;
    is("@diff", '', "$name: every table identical to stream order in one batch");
    for my $t (@diff[0 .. ($#diff < 2 ? $#diff : 2)]) {
        is($d->{$t}, $ref->{$t}, "$name: $t");
    }
    return $db;
}

sub shuffle_seeded {
    my ($seed, @a) = @_;
    srand($seed);
    for (my $i = $#a; $i > 0; $i--) {
        my $j = int rand($i + 1);
        @a[$i, $j] = @a[$j, $i];
    }
    return @a;
}

sub split_random {
    my ($seed, @a) = @_;
    srand($seed * 7 + 1);
    my @b;
    while (@a) { push @b, [splice @a, 0, 1 + int rand 12] }
    return @b;
}

my $db1 = variant('stream order, one batch', [@ev]);

# what the reference itself must hold
my $L = 'app.bsky.feed.like';
is(q1($rig, $db1, "SELECT count(*) FROM likes WHERE uri LIKE '%/adjacent'"), '0', 'adjacent create+delete: no like');
is(q1($rig, $db1, "SELECT count(*) FROM posts WHERE uri LIKE '%/app.bsky.feed.post/p1' OR uri LIKE '%/app.bsky.feed.post/p4'"),
   '0', 'deleted posts absent');
is(q1($rig, $db1, "SELECT text FROM posts WHERE uri LIKE '%/app.bsky.feed.post/p6'"), 'edited', 'edited post');
is(q1($rig, $db1, "SELECT display_name || ' ' || coalesce(description, '-') || ' ' || coalesce(banner_url, '-') || ' ' || coalesce(avatar_url, '-') FROM users WHERE did = 'did:plc:user2'"),
   'Three - bafk3 -', 'profile: the last of two updates');
is(q1($rig, $db1, "SELECT handle FROM users WHERE did = 'did:plc:user4'"), 'second.example.com', 'the newest handle');
is(q1($rig, $db1, "SELECT string_agg(uri, ' ') FROM list_items"), 'at://did:plc:user1/app.bsky.graph.listitem/i1',
   'duplicate list items: the smallest URI owns the row');
is(q1($rig, $db1, "SELECT count(*) FROM likes WHERE uri LIKE '%/zl3'"), '1', 'a duplicate takes over when the owner is deleted');
is(q1($rig, $db1, "SELECT count(*) FROM likes l JOIN sluice_record_state s ON s.uri = l.uri WHERE s.deleted"), '0',
   'no deleted record has a row');
ok(q1($rig, $db1, "SELECT count(*) FROM thread_contexts") > 0, 'thread contexts written');
is(q1($rig, $db1, <<'SQL'), '0', 'thread contexts: exactly the live replies liked by their root author');
SELECT count(*) FROM (
    (SELECT p.uri, l.uri FROM posts p
       JOIN likes l ON l.post_uri = p.uri AND l.user_did = split_part(p.root_uri, '/', 3)
      WHERE p.parent_uri IS NOT NULL
     EXCEPT SELECT post_uri, root_author_like_uri FROM thread_contexts)
    UNION ALL
    (SELECT post_uri, root_author_like_uri FROM thread_contexts
     EXCEPT SELECT p.uri, l.uri FROM posts p
       JOIN likes l ON l.post_uri = p.uri AND l.user_did = split_part(p.root_uri, '/', 3)
      WHERE p.parent_uri IS NOT NULL)) x
SQL
is(q1($rig, $db1, "SELECT like_count FROM feed_generators"), '1', 'generator like count');

variant('stream order, one op per batch', map { [$_] } @ev);
variant('reverse order, one batch', [reverse @ev]);
variant('reverse order, one op per batch', map { [$_] } reverse @ev);
for my $seed (1 .. 4) {
    variant("random permutation $seed, random batches", split_random($seed, shuffle_seeded($seed, @ev)));
}
variant('replay: stream order twice', [@ev], [@ev]);
variant('replay: permutation, then stream order in batches, then reverse',
    split_random(9, shuffle_seeded(9, @ev)), split_random(10, @ev), [reverse @ev]);
variant('each entry twice in a row', map { [$_, $_] } @ev);

$rig->finish;
done_testing;
