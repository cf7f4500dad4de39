#!/usr/bin/perl
# The atproto sink through a real worker (sluiced --worker, the default
# sink): hand-built stream entries for every record type's create, update
# and delete, identity and account events, records of other collections,
# the camelCase and snake_case key dialects, every blob form, createdAt
# with offsets (stored in UTC), missing or unparsable createdAt (the time
# of the entry ID), "\u0000" stripped. Malformed entries mixed in go to
# the dead-letter stream with a reason that names the problem, write
# nothing at all, and don't hold up the rest of their batch. Then the
# whole stream delivered again (the group rewound) leaves every table as
# it was, and the same entries added again change no counter. Finally
# input_format = jetstream: entries holding a Jetstream v1 line.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use AtprotoNames qw(did uri $P $L $R $FO $BL $PR $LI $IT $FG $SP $LB $TG $PG);
use AtprotoTables qw(%COMPARED $COUNTERS_WRONG $LIKE_COUNTS_WRONG wait_counters_folded);
use Test::More;
use JSON::PP;
use POSIX qw(strftime);

my $JSON = JSON::PP->new->canonical->ascii;
sub enc { return $JSON->encode($_[0]) }

# ---- names -----------------------------------------------------------------
my ($A, $B, $C, $D, $E, $F, $H, $I) = map { did($_) } qw(alice bob carol dave erin frank hank ivy);
my $G = 'did:web:gina.example.com';
my %U = (
    pa => uri($A, $P, 'pa'), pb => uri($B, $P, 'pb'), pc => uri($C, $P, 'pc'),
    pf => uri($F, $P, 'pf'), pd => uri($D, $P, 'pd'), pe => uri($E, $P, 'pe'),
    pz => uri($C, $P, 'pz'), pnul => uri($A, $P, 'pnul'), pdate => uri($A, $P, 'pdate'),
    pm1 => uri($A, $P, 'pm1'), pgone => uri($A, $P, 'pgone'),
    fg => uri($G, $FG, 'fg'), fg2 => uri($G, $FG, 'fg2'),
    labd => uri($D, $LB, 'self'), list1 => uri($A, $LI, 'l1'),
);

# ---- the stream ------------------------------------------------------------
# Entries get explicit IDs one second apart from 2024-05-01T12:00:00Z (plus
# 7 ms), so the fallback time of an entry is known: ts_of($id).
my $T0 = 1714564800000;
my $nid = 0;
my @entries;    # { id, fields => [...], bad => [name, reason re] }
my %ID;         # tag => entry ID

sub ts_of {
    my ($id) = @_;
    my ($ms) = $id =~ /^(\d+)-/;
    my $s = strftime('%Y-%m-%d %H:%M:%S', gmtime(int($ms / 1000)));
    my $frac = sprintf('%03d', $ms % 1000) =~ s/0+$//r;
    return $frac eq '' ? $s : "$s.$frac";
}

sub add_fields {
    my ($tag, @fields) = @_;
    my $id = ($T0 + ++$nid * 1000 + 7) . '-0';
    push @entries, { id => $id, fields => \@fields };
    $ID{$tag} = $id if defined $tag;
    return $entries[-1];
}
sub add {
    my ($tag, $type, $data, $seq) = @_;
    return add_fields($tag, type => $type, data => (ref $data ? enc($data) : $data),
        seq => $seq // '');
}
sub bad {
    my ($name, $re, @fields) = @_;
    my $e = add_fields(undef, @fields);
    $e->{bad} = [$name, $re];
}
sub commit {
    my ($tag, $repo, @ops) = @_;
    my %extra = ref $ops[-1] eq 'HASH' && $ops[-1]{_extra} ? %{ pop @ops } : ();
    delete $extra{_extra};
    my $seq = delete $extra{seq};
    return add($tag, 'commit', { repo => $repo, ops => \@ops, %extra }, $seq);
}
sub cr {
    my ($coll, $rkey, $rec, $cid) = @_;
    return { action => 'create', path => "$coll/$rkey", cid => $cid // "bafy$rkey", record => $rec };
}
sub up {
    my ($coll, $rkey, $rec, $cid) = @_;
    return { action => 'update', path => "$coll/$rkey", cid => $cid // "bafy${rkey}u", record => $rec };
}
sub dl { my ($coll, $rkey) = @_; return { action => 'delete', path => "$coll/$rkey" } }
sub strong { my ($u, $cid) = @_; return { uri => $u, cid => $cid // 'bafysubject' } }

# ---- good entries (bad ones are interleaved below) --------------------------
my @good_specs = (
    # posts: facets, langs, tags, offsets, reply, quote, snake dialect, NUL,
    # missing and unparsable createdAt, an edit, a delete, delete before create
    sub { commit('pa', $A, cr($P, 'pa', { '$type' => $P, text => 'hello world', langs => ['en'], tags => ['t1'],
            createdAt => '2024-05-01T14:00:00+02:00',
            facets => [{ index => { byteStart => 0, byteEnd => 5 },
                         features => [{ '$type' => 'app.bsky.richtext.facet#mention', did => $D }] }] }, 'bafypa'),
          { _extra => 1, rev => '3kreva', time => '2024-05-01T12:00:01.500Z', seq => '1001' }) },
    sub { commit('pb', $B, cr($P, 'pb', { '$type' => $P, text => 'a reply', createdAt => '2024-05-01T08:00:00-04:00',
            reply => { parent => strong($U{pa}, 'bafypa'), root => strong($U{pa}, 'bafypa') } })) },
    sub { commit('pc', $C, cr($P, 'pc', { '$type' => $P, text => 'a quote', createdAt => '2024-05-01T12:30:00.250Z',
            embed => { '$type' => 'app.bsky.embed.record', record => strong($U{pa}, 'bafypa') } })) },
    sub { commit('pf', $F, cr($P, 'pf', { py_type => $P, text => 'snake reply', created_at => '2024-05-01T12:00:00Z',
            reply => { parent => strong($U{pb}), root => strong($U{pa}) },
            embed => { py_type => 'app.bsky.embed.recordWithMedia',
                       record => { record => strong($U{pc}, 'bafypc') },
                       media => { py_type => 'app.bsky.embed.images', images => [] } },
            facets => [{ index => { byte_start => 0, byte_end => 5 },
                         features => [{ py_type => 'app.bsky.richtext.facet#tag', tag => 'snake' }] }] })) },
    sub { commit('pnul', $A, cr($P, 'pnul', { '$type' => $P, text => "a\x{0}b" })) },
    sub { commit('pdate', $A, cr($P, 'pdate', { '$type' => $P, text => 'bad date', createdAt => 'yesterday' })) },
    sub { commit('pd', $D, cr($P, 'pd', { '$type' => $P, text => 'first', createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('pd2', $D, up($P, 'pd', { '$type' => $P, text => 'edited', createdAt => '2024-05-01T12:05:00Z' }, 'bafypd2')) },
    sub { commit('pe', $E, cr($P, 'pe', { '$type' => $P, text => 'gone soon', createdAt => '2024-05-01T12:00:00Z',
            reply => { parent => strong($U{pa}), root => strong($U{pa}) } })) },
    sub { commit('pe-del', $E, dl($P, 'pe')) },
    sub { commit('pz-del', $C, dl($P, 'pz')) },
    sub { commit('pz', $C, cr($P, 'pz', { '$type' => $P, text => 'after its delete', createdAt => '2024-05-01T12:00:00Z' })) },
    # likes and reposts: offset, snake, a duplicate, adjacent create+delete,
    # likes of a feed generator and a labeler, missing createdAt, via
    sub { commit('l1', $B, cr($L, 'l1', { '$type' => $L, subject => strong($U{pa}, 'bafypa'),
            createdAt => '2024-05-01T20:00:00+08:00', via => strong(uri(did('viax'), $R, 'v'), 'bafyvia') })) },
    sub { commit('l2', $C, cr($L, 'l2', { py_type => $L, subject => strong($U{pa}, 'bafypa'),
            created_at => '2024-05-01T12:00:02Z' })) },
    sub { commit('l3', $B, cr($L, 'l3', { '$type' => $L, subject => strong($U{pa}, 'bafypa'),
            createdAt => '2024-05-01T12:00:03Z' })) },
    sub { commit('l4', $A, cr($L, 'l4', { '$type' => $L, subject => strong($U{pb}), createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('l5', $D, cr($L, 'l5', { '$type' => $L, subject => strong($U{pd}), createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('l5-del', $D, dl($L, 'l5')) },
    sub { commit('l6', $E, cr($L, 'l6', { '$type' => $L, subject => strong($U{fg}) })) },
    sub { commit('l7', $E, cr($L, 'l7', { '$type' => $L, subject => strong($U{labd}), createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('r1', $D, cr($R, 'r1', { '$type' => $R, subject => strong($U{pa}), createdAt => '2024-05-01T12:10:00Z' })) },
    sub { commit('r2', $E, cr($R, 'r2', { '$type' => $R, subject => strong($U{pb}), createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('r2-del', $E, dl($R, 'r2')) },
    # follows and blocks
    sub { commit('f1', $A, cr($FO, 'f1', { '$type' => $FO, subject => $B, createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('f2', $F, cr($FO, 'f2', { py_type => $FO, subject => $A, created_at => '2024-05-01T12:00:00Z' })) },
    sub { commit('f3', $A, cr($FO, 'f3', { '$type' => $FO, subject => $C, createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('f3-del', $A, dl($FO, 'f3')) },
    sub { commit('f4', $A, cr($FO, 'f4', { '$type' => $FO, subject => $B, createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('b1', $E, cr($BL, 'b1', { '$type' => $BL, subject => $F, createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('b2', $E, cr($BL, 'b2', { '$type' => $BL, subject => $A, createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('b2-del', $E, dl($BL, 'b2')) },
    # profiles: the four blob forms, snake keys, two updates, a delete
    sub { commit('profA', $A, cr($PR, 'self', { '$type' => $PR, displayName => 'Alice', description => 'hi',
            avatar => { '$type' => 'blob', ref => { '$link' => 'bafkavatara' }, mimeType => 'image/jpeg', size => 1 },
            banner => { '$type' => 'blob', ref => { link => 'bafkbannera' }, mimeType => 'image/jpeg', size => 2 } })) },
    sub { commit('profF', $F, cr($PR, 'self', { py_type => $PR, display_name => 'Frank', description => 'snake',
            avatar => { py_type => 'blob', ref => 'bafkavatarf', mime_type => 'image/png', size => 3 },
            banner => 'bafkbannerf' })) },
    sub { commit('profD1', $D, cr($PR, 'self', { '$type' => $PR, displayName => 'D1', avatar => 'bafkd1' })) },
    sub { commit('profD2', $D, up($PR, 'self', { '$type' => $PR, displayName => 'D2', description => 'two' })) },
    sub { commit('profD3', $D, up($PR, 'self', { '$type' => $PR, displayName => 'D3', description => 'three',
            banner => { ref => { '$link' => 'bafkd3' } } })) },
    sub { commit('profC', $C, cr($PR, 'self', { '$type' => $PR, displayName => 'C' })) },
    sub { commit('profC-del', $C, dl($PR, 'self')) },
    # lists and list items
    sub { commit('list1', $A, cr($LI, 'l1', { '$type' => $LI, name => 'My list', purpose => 'app.bsky.graph.defs#curatelist',
            description => 'people', avatar => { ref => { '$link' => 'bafklist' } }, createdAt => '2024-05-01T12:00:04Z' })) },
    sub { commit('list1u', $A, up($LI, 'l1', { '$type' => $LI, name => 'Renamed', purpose => 'app.bsky.graph.defs#curatelist',
            avatar => { ref => { link => 'bafklist2' } }, createdAt => '2024-05-01T12:00:04Z' })) },
    sub { commit('list2', $A, cr($LI, 'l2', { '$type' => $LI, name => 'gone', purpose => 'app.bsky.graph.defs#modlist',
            createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('list2-del', $A, dl($LI, 'l2')) },
    sub { commit('i1', $A, cr($IT, 'i1', { '$type' => $IT, list => $U{list1}, subject => $B, createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('i2', $A, cr($IT, 'i2', { '$type' => $IT, list => $U{list1}, subject => $B, createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('i3', $A, cr($IT, 'i3', { '$type' => $IT, list => $U{list1}, subject => $C, createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('i3-del', $A, dl($IT, 'i3')) },
    sub { commit('i4', $A, cr($IT, 'i4', { py_type => $IT, list => $U{list1}, subject => $D, created_at => '2024-05-01T12:00:00Z' })) },
    # feed generators, starter packs, labelers
    sub { commit('fg', $G, cr($FG, 'fg', { '$type' => $FG, did => 'did:web:feed.example.com', displayName => 'Feed',
            description => 'a feed', avatar => 'bafkfeed', createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('fgu', $G, up($FG, 'fg', { '$type' => $FG, did => 'did:web:feed.example.com', displayName => 'Feed 2',
            avatar => { ref => 'bafkfeed2' }, createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('fg2', $G, cr($FG, 'fg2', { '$type' => $FG, did => 'did:web:feed.example.com', displayName => 'Gone',
            createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('fg2-del', $G, dl($FG, 'fg2')) },
    sub { commit('sp', $A, cr($SP, 'sp', { '$type' => $SP, name => 'Pack', list => $U{list1}, feeds => [{ uri => $U{fg} }],
            createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('spu', $A, up($SP, 'sp', { '$type' => $SP, name => 'Pack 2', list => $U{list1},
            feeds => [{ uri => $U{fg} }, { uri => $U{fg2} }], createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('sp2', $A, cr($SP, 'sp2', { '$type' => $SP, name => 'gone', list => $U{list1}, createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('sp2-del', $A, dl($SP, 'sp2')) },
    sub { commit('labD', $D, cr($LB, 'self', { '$type' => $LB, policies => { labelValues => ['spam'] },
            createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('labDu', $D, up($LB, 'self', { '$type' => $LB, policies => { labelValues => ['spam', 'rude'] },
            createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('labE', $E, cr($LB, 'self', { '$type' => $LB, policies => { labelValues => [] },
            createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('labE-del', $E, dl($LB, 'self')) },
    # thread gates and post gates (snake keys included)
    sub { commit('tga', $A, cr($TG, 'pa', { '$type' => $TG, post => $U{pa},
            allow => [{ '$type' => 'app.bsky.feed.threadgate#mentionRule' },
                      { '$type' => 'app.bsky.feed.threadgate#listRule', list => $U{list1} }],
            createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('tgb', $B, cr($TG, 'pb', { py_type => $TG, post => $U{pb},
            allow => [{ py_type => 'app.bsky.feed.threadgate#followingRule' }], created_at => '2024-05-01T12:00:00Z' })) },
    sub { commit('tgd', $D, cr($TG, 'pd', { '$type' => $TG, post => $U{pd}, createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('tgd-del', $D, dl($TG, 'pd')) },
    sub { commit('pgc', $C, cr($PG, 'pc', { '$type' => $PG, post => $U{pc},
            embeddingRules => [{ '$type' => 'app.bsky.feed.postgate#disableRule' }],
            detachedEmbeddingUris => [$U{pf}], createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('pgf', $F, cr($PG, 'pf', { py_type => $PG, post => $U{pf},
            embedding_rules => [{ py_type => 'app.bsky.feed.postgate#disableRule' }], created_at => '2024-05-01T12:00:00Z' })) },
    sub { commit('pgb', $B, cr($PG, 'pb', { '$type' => $PG, post => $U{pb}, createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('pgb-del', $B, dl($PG, 'pb')) },
    # other collections
    sub { commit('teal', $B, cr('fm.teal.alpha.actor.status', 'self', { py_type => 'fm.teal.alpha.actor.status',
            track_name => 'Song', item => { artist_name => 'X' } })) },
    sub { commit('status', $A, cr('app.bsky.actor.status', 'self', { '$type' => 'app.bsky.actor.status',
            status => 'app.bsky.actor.status#live', duration_minutes => 240, created_at => '2024-05-01T13:00:00+01:00' })) },
    sub { commit('chat', $E, cr('chat.bsky.actor.declaration', 'self', { py_type => 'chat.bsky.actor.declaration',
            allow_incoming => 'following' })) },
    sub { commit('lex', $A, cr('com.atproto.lexicon.schema', 'x', { py_type => 'com.atproto.lexicon.schema',
            lexicon => 1, some_def => 'x' })) },
    sub { commit('t1', $B, cr('org.example.thing', 't1', { '$type' => 'org.example.thing', v => 1, some_key => 'a',
            createdAt => '2024-05-01T12:00:00Z' })) },
    sub { commit('t1u', $B, up('org.example.thing', 't1', { '$type' => 'org.example.thing', v => 2, some_key => 'b',
            createdAt => '2024-05-01T12:00:00Z' }, 'bafyt1b')) },
    sub { commit('t2', $B, cr('org.example.thing', 't2', { '$type' => 'org.example.thing', v => 3 })) },
    sub { commit('t2-del', $B, dl('org.example.thing', 't2')) },
    # one commit with several ops (one a delete of something never seen),
    # and one with none
    sub { commit('multi', $A, cr($P, 'pm1', { '$type' => $P, text => 'multi', createdAt => '2024-05-01T12:00:00Z' }),
            cr($L, 'lm1', { '$type' => $L, subject => strong($U{pc}), createdAt => '2024-05-01T12:00:00Z' }),
            dl($P, 'pgone')) },
    sub { commit('empty', $B) },
    # identity and account
    sub { add('idA', 'identity', { did => $A, handle => 'alice.example.com' }, '2001') },
    sub { add('idB', 'identity', { did => $B, handle => undef }, '2002') },
    sub { add('idC1', 'identity', { did => $C, handle => 'c1.example.com' }, '2003') },
    sub { add('idC2', 'identity', { did => $C, handle => 'c2.example.com' }, '2004') },
    sub { add('idC3', 'identity', { did => $C, handle => undef }, '2005') },
    sub { add('idH', 'identity', { did => $H, handle => 'hank.example.com' }, '2006') },
    sub { add('acE', 'account', { did => $E, active => JSON::PP::false, status => 'takendown' }, '2007') },
    sub { add('acF1', 'account', { did => $F, active => JSON::PP::true }, '2008') },
    sub { add('acF2', 'account', { did => $F, active => JSON::PP::false, status => 'deactivated' }, '2009') },
    sub { add('acI', 'account', { did => $I, active => JSON::PP::true }, '') },
);

# Malformed entries: each one's DID (when it has a valid one) is used
# nowhere else, so "wrote nothing" can be checked.
my $nbad = 0;
sub baddid { my $n = $nbad++; return did('bad' . ('a' .. 'z')[$n / 26] . ('a' .. 'z')[$n % 26]) }
sub badc {    # a commit entry of a fresh bad DID with these ops
    my ($name, $re, @ops) = @_;
    my $d = baddid();
    bad($name, $re, type => 'commit', data => enc({ repo => $d, ops => \@ops }), seq => '');
}
my $goodrec = { '$type' => $P, text => 'never written', createdAt => '2024-05-01T12:00:00Z' };
my $bu = uri(did('bad'), $P, 'x');    # a valid subject
my @bad_specs = (
    sub { bad('data not JSON', qr/json/i, type => 'commit', data => '{"repo": nope', seq => '') },
    sub { bad('data an array', qr/object/i, type => 'commit', data => '[1,2]', seq => '') },
    sub { bad('data a string', qr/object/i, type => 'commit', data => '"commit"', seq => '') },
    sub { bad('no data field', qr/data/i, type => 'commit', seq => '') },
    sub { bad('unknown type', qr/type/i, type => 'bogus',
            data => enc({ repo => baddid(), ops => [cr($P, 'x', $goodrec)] }), seq => '') },
    sub { bad('commit without repo', qr/repo/i, type => 'commit', data => enc({ ops => [cr($P, 'x', $goodrec)] }), seq => '') },
    sub { bad('repo not a DID', qr/repo/i, type => 'commit',
            data => enc({ repo => 'alice.example.com', ops => [cr($P, 'x', $goodrec)] }), seq => '') },
    sub { bad('repo a number', qr/repo/i, type => 'commit', data => enc({ repo => 42, ops => [] }), seq => '') },
    sub { my $d = baddid(); bad('ops an object', qr/ops/i, type => 'commit',
            data => enc({ repo => $d, ops => { 0 => cr($P, 'x', $goodrec) } }), seq => '') },
    sub { my $d = baddid(); bad('ops a string', qr/ops/i, type => 'commit', data => enc({ repo => $d, ops => 'none' }), seq => '') },
    sub { badc('unknown action', qr/action/i, { %{ cr($P, 'x', $goodrec) }, action => 'upsert' }) },
    sub { badc('action missing', qr/action/i, { path => "$P/x", cid => 'bafyx', record => $goodrec }) },
    sub { badc('path without rkey', qr/path/i, { %{ cr($P, 'x', $goodrec) }, path => $P }) },
    sub { badc('path with two slashes', qr/path/i, { %{ cr($P, 'x', $goodrec) }, path => "$P/x/y" }) },
    sub { badc('path without collection', qr/path|collection/i, { %{ cr($P, 'x', $goodrec) }, path => '/x' }) },
    sub { badc('path with empty rkey', qr/path|record key|rkey/i, { %{ cr($P, 'x', $goodrec) }, path => "$P/" }) },
    sub { badc('delete with bad path', qr/path/i, { action => 'delete', path => 'nopath' }) },
    sub { badc('create without record', qr/record/i, { action => 'create', path => "$P/x", cid => 'bafyx' }) },
    sub { badc('create with a string record', qr/record/i, { action => 'create', path => "$P/x", cid => 'bafyx', record => 'text' }) },
    sub { badc('update without record', qr/record/i, { action => 'update', path => "$P/x", cid => 'bafyx' }) },
    sub { badc('create without cid', qr/cid/i, { action => 'create', path => "$P/x", record => $goodrec }) },
    sub { badc('update without cid', qr/cid/i, { action => 'update', path => "$P/x", record => $goodrec }) },
    sub { badc('post without text', qr/text/i, cr($P, 'x', { '$type' => $P, createdAt => '2024-05-01T12:00:00Z' })) },
    sub { badc('post with a number as text', qr/text/i, cr($P, 'x', { '$type' => $P, text => 42 })) },
    sub { badc('like without subject', qr/subject/i, cr($L, 'x', { '$type' => $L, createdAt => '2024-05-01T12:00:00Z' })) },
    sub { badc('like of a web URL', qr/subject|uri/i, cr($L, 'x', { '$type' => $L, subject => strong('https://bad.example.com/p') })) },
    sub { badc('like with subject.uri missing', qr/subject|uri/i, cr($L, 'x', { '$type' => $L, subject => { cid => 'bafyx' } })) },
    sub { badc('repost with a string subject', qr/subject/i, cr($R, 'x', { '$type' => $R, subject => $bu })) },
    sub { badc('repost of a non-URI', qr/subject|uri/i, cr($R, 'x', { '$type' => $R, subject => strong('not a uri') })) },
    sub { badc('follow of a handle', qr/subject/i, cr($FO, 'x', { '$type' => $FO, subject => 'bob.example.com' })) },
    sub { badc('follow without subject', qr/subject/i, cr($FO, 'x', { '$type' => $FO })) },
    sub { badc('block of an object', qr/subject/i, cr($BL, 'x', { '$type' => $BL, subject => { did => $B } })) },
    sub { badc('listitem without list', qr/list/i, cr($IT, 'x', { '$type' => $IT, subject => $B })) },
    sub { badc('listitem of a web URL list', qr/list/i, cr($IT, 'x', { '$type' => $IT, list => 'https://bad.example.com/l', subject => $B })) },
    sub { badc('listitem subject not a DID', qr/subject/i, cr($IT, 'x', { '$type' => $IT, list => $U{list1}, subject => 'bob' })) },
    sub { badc('a good op and a bad one', qr/action/i, cr($P, 'x', $goodrec), { %{ cr($L, 'y', { subject => strong($bu) }) }, action => 'zap' }) },
    sub { badc('a good op and a like without subject', qr/subject/i, cr($P, 'x', $goodrec), cr($L, 'y', { '$type' => $L })) },
    sub { bad('identity without did', qr/did/i, type => 'identity', data => enc({ handle => 'x.example.com' }), seq => '1') },
    sub { bad('identity did not a DID', qr/did/i, type => 'identity', data => enc({ did => 'alice', handle => 'x.example.com' }), seq => '1') },
    sub { bad('account without did', qr/did/i, type => 'account', data => enc({ active => JSON::PP::true }), seq => '1') },
    sub { bad('account did a number', qr/did/i, type => 'account', data => enc({ did => 42, active => JSON::PP::false }), seq => '1') },
);

# interleave: a bad entry after every two good ones
{
    my @g = @good_specs;
    my @b = @bad_specs;
    while (@g || @b) {
        for (1 .. 2) { shift(@g)->() if @g }
        shift(@b)->() if @b;
    }
}
my @bad_entries = grep { $_->{bad} } @entries;
my $ngood = @entries - @bad_entries;
note(scalar(@entries) . " entries, $ngood good, " . scalar(@bad_entries) . ' malformed');

# ---- the rig ---------------------------------------------------------------
my $rig = SluiceRig->new;
my $sluiced = $rig->bin('sluiced');
my $stream = 'firehose:events';
my $group = 'firehose-processors';
my $dead = "$stream:dead";
my $conf = $rig->write_config(batch_size => 16, batch_timeout_ms => 50,
    block_ms => 200, claim_idle_ms => 60000, claim_interval_ms => 60000);
my $r = $rig->run($sluiced, '-c', $conf, '--init-schema');
is($r->[0], 0, 'schema of the default sink (atproto)') or diag($r->[1]);
if ($r->[0] != 0) {
    $rig->finish;
    done_testing;
    exit;
}

sub xadd_all {
    my ($star) = @_;
    my $out = $rig->redis_batch(map { ['XADD', $stream, $star ? '*' : $_->{id}, @{ $_->{fields} }] } @entries);
    like($out, qr/errors: 0\b/, 'entries added' . ($star ? ' again' : ''));
}
xadd_all(0);
my $pid = $rig->spawn('w', $sluiced, '-c', $conf, '--worker', 'atp-1');
ok($rig->wait_drained($stream, $group, 90), 'every entry decided and acked: nothing pending, lag 0');
ok(wait_counters_folded($rig), 'the counters folded');

sub sq { return $rig->psql($_[0]) }

# ---- dead letters ----------------------------------------------------------
my @dl = $rig->stream_entries($dead);
is(scalar @dl, scalar @bad_entries, 'one dead letter per malformed entry, none for the good ones');
my %dl = map { $_->[1]{id} => $_->[1] } @dl;
for my $e (@bad_entries) {
    my ($name, $re) = @{ $e->{bad} };
    my $d = $dl{ $e->{id} };
    ok($d, "$name: dead-lettered") or next;
    like($d->{reason} // '', $re, "$name: reason names the problem ('" . ($d->{reason} // '') . "')");
    my %f = @{ $e->{fields} };
    is_deeply({ map { ("f:$_" => $d->{"f:$_"}) } keys %f }, { map { ("f:$_" => $f{$_}) } keys %f },
        "$name: original fields kept");
}
is(sq(q{select count(*) from users where did like 'did:plc:bad%' or did not like 'did:%'}), 0,
   'malformed entries ensured no users');
is(sq(q{select count(*) from sluice_record_state where did like 'did:plc:bad%'}), 0,
   'malformed entries left no record state');
is(sq(q{select count(*) from posts where text = 'never written'}), 0,
   'the good op of a commit with a bad op was not applied (nothing half-applied)');
is(sq(q{select count(*) from post_aggregations where post_uri like '%bad%'}), 0,
   'no aggregation row for subjects of malformed entries');
my %goodid = map { $_->{id} => 1 } grep { !$_->{bad} } @entries;
is(scalar(grep { $goodid{ $_->[1]{id} } } @dl), 0, 'no good entry dead-lettered');

# ---- posts -----------------------------------------------------------------
is(sq(q{select string_agg(split_part(uri, '/', 5), ' ' order by uri) from posts}),
   join(' ', map { (split m{/}, $U{$_})[4] } sort { $U{$a} cmp $U{$b} } qw(pa pb pc pf pnul pdate pd pz pm1)),
   'posts: the live ones (edited, deleted, delete-before-create, multi-op)');
is(sq(qq{select author_did || '|' || text || '|' || langs::text || '|' || tags::text || '|' || created_at || '|'
        || coalesce(commit_rev, '-') || '|' || coalesce(commit_seq, '-') || '|' || coalesce(commit_time::text, '-')
        from posts where uri = '$U{pa}'}),
   "$A|hello world|[\"en\"]|[\"t1\"]|2024-05-01 12:00:00|3kreva|1001|2024-05-01 12:00:01.5",
   'post: text, langs, tags, createdAt +02:00 in UTC, commit rev/seq/time');
is(sq(qq{select created_at from posts where uri = '$U{pb}'}), '2024-05-01 12:00:00', 'createdAt -04:00 in UTC');
is(sq(qq{select created_at from posts where uri = '$U{pc}'}), '2024-05-01 12:30:00.25', 'createdAt with milliseconds, Z');
is(sq(qq{select parent_uri || ' ' || root_uri || ' ' || parent_cid || ' ' || root_cid from posts where uri = '$U{pb}'}),
   "$U{pa} $U{pa} bafypa bafypa", 'reply: parent and root');
is(sq(qq{select parent_uri || ' ' || root_uri || ' ' || created_at from posts where uri = '$U{pf}'}),
   "$U{pb} $U{pa} 2024-05-01 12:00:00", 'snake_case post: reply and created_at');
is(sq(qq{select (embed->>'\$type') || ' ' || (embed->'record'->'record'->>'uri') from posts where uri = '$U{pf}'}),
   "app.bsky.embed.recordWithMedia $U{pc}", 'snake_case post: embed with py_type as $type');
is(sq(qq{select (facets->0->'index'->>'byteStart') || ' ' || (facets->0->'index'->>'byteEnd') || ' '
        || (facets->0->'features'->0->>'\$type') from posts where uri = '$U{pf}'}),
   '0 5 app.bsky.richtext.facet#tag', 'snake_case post: nested keys in camelCase');
is(sq(qq{select count(*) from posts where uri = '$U{pf}' and (embed::text || facets::text) ~ '(py_type|byte_start|byte_end)'}),
   0, 'snake_case post: no snake_case keys left');
is(sq(qq{select text || ' ' || created_at from posts where uri = '$U{pnul}'}), 'ab ' . ts_of($ID{pnul}),
   '\u0000 stripped; no createdAt: the time of the entry ID');
is(sq(qq{select created_at from posts where uri = '$U{pdate}'}), ts_of($ID{pdate}), 'unparsable createdAt: the time of the entry ID');
is(sq(qq{select text || ' ' || cid || ' ' || created_at from posts where uri = '$U{pd}'}),
   'edited bafypd2 2024-05-01 12:05:00', 'an update replaces the post');
is(sq(q{select string_agg(split_part(uri, '/', 5) || '>' || split_part(quoted_uri, '/', 5) || ' ' || coalesce(quoted_cid, '-'), ',' order by uri) from quotes}),
   'pc>pa bafypa,pf>pc bafypc',
   'quotes: embed record and recordWithMedia (snake_case)');
is(sq(qq{select string_agg(has_thread_gate::text || has_post_gate::text, ' ' order by uri) from posts
        where uri in ('$U{pa}', '$U{pb}', '$U{pc}', '$U{pd}', '$U{pf}')}),
   join(' ', map { { pa => 'truefalse', pb => 'truefalse', pc => 'falsetrue', pd => 'falsefalse', pf => 'falsetrue' }->{$_} }
        sort { $U{$a} cmp $U{$b} } qw(pa pb pc pd pf)),
   'has_thread_gate / has_post_gate (a deleted gate clears it)');

# ---- counters --------------------------------------------------------------
my %agg = (pa => '2 1 1 1', pb => '1 0 1 0', pc => '1 0 0 1', pd => '0 0 0 0', pe => '0 0 0 0',
           pf => '0 0 0 0', pz => '0 0 0 0', pnul => '0 0 0 0', pdate => '0 0 0 0', pm1 => '0 0 0 0',
           pgone => '0 0 0 0');
my %aggrows = map { split /=/ } split /\n/, sq(q{select post_uri || '=' || like_count || ' ' || repost_count || ' '
        || reply_count || ' ' || quote_count from post_aggregations});
is_deeply(\%aggrows, { map { ($U{$_} => $agg{$_}) } keys %agg },
   'post_aggregations: likes, reposts, replies, quotes of every post referred to');
sub counters_true {
    my ($db, $name) = @_;
    my $qq = $db ? sub { $rig->psql_db($db, $_[0]) } : \&sq;
    is($qq->($COUNTERS_WRONG), 0, "$name: every counter equals the true number of rows");
    is($qq->($LIKE_COUNTS_WRONG),
       0, "$name: feed generator and labeler like counts true");
}
counters_true(undef, 'first pass');

# ---- likes, reposts, feed items, notifications, viewer states ----------------
is(sq(q{select string_agg(split_part(uri, '/', 5), ' ' order by split_part(uri, '/', 5)) from likes}),
   'l1 l2 l4 l6 l7 lm1', 'likes: a duplicate (l3) and a deleted like (l5) have no row');
is(sq(qq{select user_did || ' ' || post_uri || ' ' || subject_cid || ' ' || created_at || ' ' || (via->>'cid')
        from likes where uri = '@{[uri($B, $L, 'l1')]}'}),
   "$B $U{pa} bafypa 2024-05-01 12:00:00 bafyvia", 'like: subject, cid, createdAt +08:00 in UTC, via');
is(sq(qq{select created_at from likes where uri = '@{[uri($C, $L, 'l2')]}'}), '2024-05-01 12:00:02', 'snake_case like');
is(sq(qq{select created_at from likes where uri = '@{[uri($E, $L, 'l6')]}'}), ts_of($ID{l6}),
   'like without createdAt: the time of the entry ID');
is(sq(q{select string_agg(uri || ' ' || created_at, ',') from reposts}), uri($D, $R, 'r1') . ' 2024-05-01 12:10:00',
   'reposts: the live one');
is(sq(q{select string_agg(split_part(uri, '/', 5) || ':' || type, ' ' order by split_part(uri, '/', 5)) from feed_items}),
   join(' ', sort(map({ "$_:post" } qw(pa pb pc pf pnul pdate pd pz pm1)), 'r1:repost')),
   'feed items: live posts and reposts');
is(sq(qq{select sort_at || ' ' || originator_did from feed_items where uri = '@{[uri($D, $R, 'r1')]}'}),
   "2024-05-01 12:10:00 $D", 'repost feed item');
my %notif = (
    pa => "$D mention", pb => "$A reply", pc => "$A quote", pf => "$B reply",
    l1 => "$A like", l2 => "$A like", l4 => "$B like", l6 => "$G like", l7 => "$D like", lm1 => "$C like",
    r1 => "$A repost", f1 => "$B follow", f2 => "$A follow",
);
my %nrows = map { split /=/ } split /\n/,
  sq(q{select split_part(uri, '/', 5) || '=' || recipient_did || ' ' || reason from notifications});
is_deeply(\%nrows, \%notif, 'notifications: mention, reply, quote, likes, repost, follows; none for deleted or duplicate records');
is(sq(qq{select reason_subject from notifications where uri = '@{[uri($B, $L, 'l1')]}'}), $U{pa}, 'like notification: subject');
is(sq(q{select string_agg(post_uri || ' ' || root_author_like_uri, ',') from thread_contexts}),
   "$U{pb} " . uri($A, $L, 'l4'), 'thread context: the root author liked a reply');
my %pvs = map { split /=/ } split /\n/, sq(q{select post_uri || ' ' || viewer_did || '=' || coalesce(like_uri, '-')
        || ' ' || coalesce(repost_uri, '-') from post_viewer_states});
is_deeply(\%pvs, {
    "$U{pa} $B" => uri($B, $L, 'l1') . ' -', "$U{pa} $C" => uri($C, $L, 'l2') . ' -',
    "$U{pb} $A" => uri($A, $L, 'l4') . ' -', "$U{fg} $E" => uri($E, $L, 'l6') . ' -',
    "$U{labd} $E" => uri($E, $L, 'l7') . ' -', "$U{pc} $A" => uri($A, $L, 'lm1') . ' -',
    "$U{pa} $D" => '- ' . uri($D, $R, 'r1'),
}, 'post_viewer_states: one per live like or repost');

# ---- follows, blocks ---------------------------------------------------------
is(sq(q{select string_agg(split_part(uri, '/', 5) || ' ' || follower_did || ' ' || following_did, ',' order by uri) from follows}),
   "f1 $A $B,f2 $F $A",
   'follows: camelCase and snake_case; the duplicate and the deleted one have no row');
is(sq(q{select string_agg(uri || ' ' || blocked_did, ',') from blocks}), uri($E, $BL, 'b1') . " $F", 'blocks');

# ---- users, profiles, identity, account ----------------------------------------
is(sq(q{select string_agg(did || '=' || handle, ' ' order by did) from users}),
   join(' ', map { "$_->[0]=$_->[1]" } sort { $a->[0] cmp $b->[0] }
        [$A, 'alice.example.com'], [$B, 'handle.invalid'], [$C, 'c2.example.com'], [$D, 'handle.invalid'],
        [$E, 'handle.invalid'], [$F, 'handle.invalid'], [$G, 'handle.invalid'], [$H, 'hank.example.com'],
        [$I, 'handle.invalid']),
   'users: every actor; handles from identity events (a later null handle keeps the newest)');
my $prof = sub {
    my ($d) = @_;
    return sq(qq{select coalesce(display_name, '-') || '|' || coalesce(description, '-') || '|' || coalesce(avatar_url, '-')
                || '|' || coalesce(banner_url, '-') from users where did = '$d'});
};
is($prof->($A), 'Alice|hi|bafkavatara|bafkbannera', 'profile: blob refs {"$link"} and {"link"}');
is($prof->($F), 'Frank|snake|bafkavatarf|bafkbannerf', 'snake_case profile: blob "ref": cid and a bare CID');
is($prof->($D), 'D3|three|-|bafkd3', 'profile updated twice: the last one, whole');
is($prof->($C), '-|-|-|-', 'deleted profile: fields cleared');
is(sq(qq{select (profile_record->>'displayName') || ' ' || (profile_record->>'\$type') || ' '
        || (profile_record ? 'display_name')::text || ' ' || (profile_record ? 'py_type')::text from users where did = '$F'}),
   "Frank $PR false false", 'snake_case profile record stored with camelCase keys and $type');
is(sq(qq{select (profile_record->>'displayName') from users where did = '$A'}), 'Alice', 'profile record kept');
is(sq(q{select string_agg(did || ' ' || active || ' ' || coalesce(status, '-'), ',' order by did) from sluice_account_status}),
   join(',', sort "$E false takendown", "$F false deactivated", "$I true -"),
   'account status: the newest event per DID');

# ---- lists, list items, generators, starter packs, labelers, gates ---------------
is(sq(q{select string_agg(uri || '|' || cid || '|' || name || '|' || purpose || '|' || coalesce(description, '-') || '|'
        || coalesce(avatar_url, '-') || '|' || created_at, ',') from lists}),
   "$U{list1}|bafyl1u|Renamed|app.bsky.graph.defs#curatelist|-|bafklist2|2024-05-01 12:00:04",
   'lists: the update replaced the list; the deleted list is gone');
is(sq(q{select string_agg(split_part(uri, '/', 5) || ' ' || subject_did, ',' order by uri) from list_items}),
   "i1 $B,i4 $D", 'list items: the duplicate i2 and the deleted i3 have no row; snake_case i4');
is(sq(q{select string_agg(uri || '|' || did || '|' || display_name || '|' || coalesce(description, '-') || '|'
        || coalesce(avatar_url, '-') || '|' || like_count, ',') from feed_generators}),
   "$U{fg}|did:web:feed.example.com|Feed 2|-|bafkfeed2|1", 'feed generators: updated, like counted, the deleted one gone');
is(sq(q{select string_agg(name || '|' || list_uri || '|' || jsonb_array_length(feeds), ',') from starter_packs}),
   "Pack 2|$U{list1}|2", 'starter packs');
is(sq(q{select string_agg(uri || '|' || (policies->'labelValues')::text || '|' || like_count, ',') from labeler_services}),
   "$U{labd}|[\"spam\", \"rude\"]|1", 'labeler services: updated, like counted, the deleted one gone');
is(sq(q{select string_agg(post_uri || '|' || owner_did || '|' || allow_mentions || '|' || allow_following || '|'
        || allow_list_members || '|' || allow_list_uris::text, ',' order by post_uri) from thread_gates}),
   join(',', sort "$U{pa}|$A|true|false|true|[\"$U{list1}\"]", "$U{pb}|$B|false|true|false|[]"),
   'thread gates: rules (snake_case py_type too); the deleted gate is gone');
is(sq(qq{select (embedding_rules->'embeddingRules'->0->>'\$type') || ' ' || (embedding_rules->'detachedEmbeddingUris'->>0)
        from post_gates where post_uri = '$U{pc}'}),
   "app.bsky.feed.postgate#disableRule $U{pf}", 'post gate: embedding rules and detached URIs');
is(sq(qq{select embedding_rules->'embeddingRules'->0->>'\$type' from post_gates where post_uri = '$U{pf}'}),
   'app.bsky.feed.postgate#disableRule', 'snake_case post gate');
is(sq(q{select count(*) from post_gates}), 2, 'the deleted post gate is gone');

# ---- other collections ---------------------------------------------------------
my %gen = map { split /=/, $_, 2 } split /\n/, sq(q{select record_type || '=' || cid || '|' || author_did || '|'
        || created_at || '|' || record::text from generic_records});
is_deeply([sort keys %gen],
   [sort qw(fm.teal.alpha.actor.status app.bsky.actor.status chat.bsky.actor.declaration com.atproto.lexicon.schema org.example.thing)],
   'generic records: one per live record of a collection without a table');
is_deeply(decode_json((split /\|/, $gen{'fm.teal.alpha.actor.status'} // '|||{}', 4)[3]),
   { '$type' => 'fm.teal.alpha.actor.status', track_name => 'Song', item => { artist_name => 'X' } },
   'other namespace: keys kept as they are, py_type as $type');
is((split /\|/, $gen{'fm.teal.alpha.actor.status'} // '', 4)[2], ts_of($ID{teal}),
   'generic record without createdAt: the time of the entry ID');
is_deeply(decode_json((split /\|/, $gen{'app.bsky.actor.status'} // '|||{}', 4)[3]),
   { '$type' => 'app.bsky.actor.status', status => 'app.bsky.actor.status#live', durationMinutes => 240,
     createdAt => '2024-05-01T13:00:00+01:00' },
   'app.bsky.* record without a table: snake_case keys in camelCase');
is((split /\|/, $gen{'app.bsky.actor.status'} // '', 4)[2], '2024-05-01 12:00:00', '... and its createdAt in UTC');
is_deeply(decode_json((split /\|/, $gen{'chat.bsky.actor.declaration'} // '|||{}', 4)[3]),
   { '$type' => 'chat.bsky.actor.declaration', allowIncoming => 'following' }, 'chat.bsky.* record: camelCase');
is_deeply(decode_json((split /\|/, $gen{'com.atproto.lexicon.schema'} // '|||{}', 4)[3]),
   { '$type' => 'com.atproto.lexicon.schema', lexicon => 1, someDef => 'x' }, 'com.atproto.* record: camelCase');
is((split /\|/, $gen{'org.example.thing'} // '', 2)[0], 'bafyt1b', 'generic record updated (cid)');
is_deeply(decode_json((split /\|/, $gen{'org.example.thing'} // '|||{}', 4)[3]),
   { '$type' => 'org.example.thing', v => 2, some_key => 'b', createdAt => '2024-05-01T12:00:00Z' },
   'generic record updated (record), the deleted one gone');

# ---- delivered again: the group rewound to the start ------------------------------
my %COLS = %COMPARED;
sub dump_tables {
    my ($db, $drop) = @_;
    my %d;
    for my $t (sort keys %COLS) {
        my $cols = join ', ', grep { !$drop || !/^($drop)$/ } split /,\s*/, $COLS{$t};
        my $sql = "SELECT count(*) || E'\\n' || coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '') FROM (SELECT $cols FROM $t) x";
        $d{$t} = $db ? $rig->psql_db($db, $sql) : sq($sql);
    }
    return \%d;
}
sub same_dump {
    my ($got, $want, $name) = @_;
    my @diff = grep { $got->{$_} ne $want->{$_} } sort keys %$want;
    is("@diff", '', "$name: every table as before");
    is($got->{$_}, $want->{$_}, "$name: $_") for @diff[0 .. ($#diff < 2 ? $#diff : 2)];
}
my $first = dump_tables();
my $first_notime = dump_tables(undef, 'created_at|sort_at|ord_ms|ord_seq');

is($rig->redis('XGROUP', 'SETID', $stream, $group, '0', 'ENTRIESREAD', '0'), 'OK', 'group rewound to the start');
ok($rig->wait_until(sub { scalar($rig->stream_entries($dead)) == 2 * @bad_entries }, 60)
   && $rig->wait_drained($stream, $group, 60) && wait_counters_folded($rig), 'the whole stream delivered again and acked');
same_dump(dump_tables(), $first, 'redelivery');
counters_true(undef, 'redelivery');

# ---- the same entries added again (new IDs) ------------------------------------
xadd_all(1);
ok($rig->wait_drained($stream, $group, 90) && wait_counters_folded($rig), 'the replayed entries decided and acked');
is(scalar($rig->stream_entries($dead)), 3 * @bad_entries, 'the malformed ones dead-lettered again');
same_dump(dump_tables(undef, 'created_at|sort_at|ord_ms|ord_seq'), $first_notime,
    'replay with new IDs (timestamps aside)');
is(sq(q{select string_agg(like_count || ' ' || repost_count || ' ' || reply_count || ' ' || quote_count, ',' order by post_uri)
       from post_aggregations}),
   join(',', map { $agg{$_} } sort { $U{$a} cmp $U{$b} } keys %agg), 'replay: no counter moved');
is(sq(qq{select like_count from feed_generators}), 1, 'replay: generator like count unchanged');
counters_true(undef, 'replay');
is(sq(qq{select created_at from posts where uri = '$U{pa}'}), '2024-05-01 12:00:00', 'replay: createdAt kept');

kill 'TERM', $pid;
is($rig->wait_exit($pid, 30), 0, 'worker: clean exit');

# ---- input_format = jetstream ------------------------------------------------------
$rig->create_database('js');
my $js = 'js:events';
my $jconf = $rig->write_config(database_url => $rig->database_url_for('js'), stream_key => $js,
    input_format => 'jetstream', sink => 'atproto', batch_size => 4, batch_timeout_ms => 50, block_ms => 200,
    claim_idle_ms => 60000, claim_interval_ms => 60000);
$r = $rig->run($sluiced, '-c', $jconf, '--init-schema');
is($r->[0], 0, 'jetstream: schema') or diag($r->[1]);
my ($J1, $J2) = (did('jay'), did('jen'));
my $jp = uri($J1, $P, 'jp');
my $jt = 1714564800000000;
sub jc {
    my ($did, $op, $coll, $rkey, $rec, $cid) = @_;
    my %c = (rev => "rev$rkey", operation => $op, collection => $coll, rkey => $rkey);
    $c{record} = $rec if $rec;
    $c{cid} = $cid // "bafy$rkey" if $op ne 'delete';
    return enc({ did => $did, time_us => $jt += 1111, kind => 'commit', commit => \%c });
}
my @jl = (
    [jp => jc($J1, 'create', $P, 'jp', { '$type' => $P, text => "from jetstream \x{e9}", langs => ['en'],
        createdAt => '2024-05-01T14:00:00+02:00' })],
    [jr => jc($J2, 'create', $P, 'jr', { '$type' => $P, text => "re\x{0}ply", createdAt => '2024-05-01T12:00:00.5Z',
        reply => { parent => strong($jp), root => strong($jp) } })],
    [jl => jc($J2, 'create', $L, 'jl', { '$type' => $L, subject => strong($jp) })],
    [jf => jc($J2, 'create', $FO, 'jf', { '$type' => $FO, subject => $J1, createdAt => '2024-05-01T12:00:00Z' })],
    [jfd => jc($J2, 'delete', $FO, 'jf')],
    [jb => jc($J1, 'create', $BL, 'jb', { '$type' => $BL, subject => $J2, createdAt => '2024-05-01T12:00:00Z' })],
    [jprof => jc($J1, 'update', $PR, 'self', { '$type' => $PR, displayName => 'Jay',
        avatar => { '$type' => 'blob', ref => { '$link' => 'bafkjay' }, mimeType => 'image/png', size => 9 } })],
    [jg => jc($J1, 'update', 'org.example.js', 'x', { '$type' => 'org.example.js', v => 1 })],
    [jid => enc({ did => $J1, time_us => $jt += 1111, kind => 'identity',
        identity => { did => $J1, handle => 'jay.example.com', seq => 5, time => '2024-05-01T12:00:00Z' } })],
    [jac => enc({ did => $J2, time_us => $jt += 1111, kind => 'account',
        account => { did => $J2, active => JSON::PP::false, status => 'deactivated', seq => 6, time => '2024-05-01T12:00:00Z' } })],
);
my @jbad = (
    ['unknown kind', qr/kind/i, enc({ did => $J1, time_us => 1, kind => 'weird' })],
    ['commit without commit', qr/commit/i, enc({ did => did('jbadaa'), time_us => 1, kind => 'commit' })],
    ['not JSON', qr/json/i, '{"did": '],
    ['unknown operation', qr/operation|action/i,
        enc({ did => did('jbadab'), time_us => 1, kind => 'commit',
              commit => { rev => 'r', operation => 'upsert', collection => $P, rkey => 'z', cid => 'c', record => $goodrec } })],
    ['post without text', qr/text/i, jc(did('jbadac'), 'create', $P, 'z', { '$type' => $P })],
    ['commit without did', qr/did|repo/i, enc({ time_us => 1, kind => 'commit',
        commit => { rev => 'r', operation => 'create', collection => $P, rkey => 'z', cid => 'c', record => $goodrec } })],
    ['identity without did', qr/did/i, enc({ time_us => 1, kind => 'identity', identity => { handle => 'x.example.com' } })],
);
my (%JID, %jbad);
my $jn = 0;
my @jcmds;
for my $k (0 .. $#jl) {
    my $id = ($T0 + ++$jn * 1000 + 7) . '-0';
    $JID{ $jl[$k][0] } = $id;
    push @jcmds, ['XADD', $js, $id, 'data', $jl[$k][1]];
    if ($k < @jbad) {
        my $bid = ($T0 + ++$jn * 1000 + 7) . '-0';
        $jbad{$bid} = $jbad[$k];
        push @jcmds, ['XADD', $js, $bid, 'data', $jbad[$k][2]];
    }
}
like($rig->redis_batch(@jcmds), qr/errors: 0\b/, 'jetstream: entries added');
my $jpid = $rig->spawn('wj', $sluiced, '-c', $jconf, '--worker', 'atp-js-1');
ok($rig->wait_drained($js, $group, 60) && wait_counters_folded($rig, 'js'), 'jetstream: every entry decided and acked');
sub jq { return $rig->psql_db('js', $_[0]) }
my @jdl = $rig->stream_entries("$js:dead");
is(scalar @jdl, scalar @jbad, 'jetstream: one dead letter per bad line');
my %jdl = map { $_->[1]{id} => $_->[1] } @jdl;
for my $id (sort keys %jbad) {
    my ($name, $re, $data) = @{ $jbad{$id} };
    my $d = $jdl{$id};
    ok($d, "jetstream $name: dead-lettered") or next;
    like($d->{reason} // '', $re, "jetstream $name: reason names the problem ('" . ($d->{reason} // '') . "')");
    is($d->{'f:data'}, $data, "jetstream $name: original line kept");
}
is(jq(q{select count(*) from users where did like 'did:plc:jbad%' or did not like 'did:%'}), 0,
   'jetstream: bad lines wrote nothing');
is(jq(qq{select text || '|' || created_at || '|' || langs::text || '|' || coalesce(commit_rev, '-') from posts where uri = '$jp'}),
   "from jetstream \xc3\xa9|2024-05-01 12:00:00|[\"en\"]|revjp", 'jetstream: post (createdAt in UTC, commit rev)');
is(jq(qq{select text || '|' || created_at || '|' || parent_uri from posts where uri = '@{[uri($J2, $P, 'jr')]}'}),
   "reply|2024-05-01 12:00:00.5|$jp", 'jetstream: reply, \u0000 stripped');
is(jq(qq{select like_count || ' ' || reply_count from post_aggregations where post_uri = '$jp'}), '1 1',
   'jetstream: like and reply counted');
is(jq(q{select created_at from likes}), ts_of($JID{jl}), 'jetstream: like without createdAt: the time of the entry ID');
is(jq(q{select count(*) from follows}), 0, 'jetstream: follow created and deleted');
is(jq(q{select string_agg(blocker_did || ' ' || blocked_did, ',') from blocks}), "$J1 $J2", 'jetstream: block');
is(jq(qq{select handle || '|' || display_name || '|' || avatar_url from users where did = '$J1'}),
   'jay.example.com|Jay|bafkjay', 'jetstream: identity handle and profile');
is(jq(q{select string_agg(did || ' ' || active || ' ' || status, ',') from sluice_account_status}),
   "$J2 false deactivated", 'jetstream: account status');
is(jq(q{select string_agg(record_type || ' ' || (record->>'v') || ' ' || cid, ',') from generic_records}),
   'org.example.js 1 bafyx', 'jetstream: generic record');
is(jq(q{select string_agg(recipient_did || ' ' || reason, ',' order by reason) from notifications}),
   "$J1 like,$J1 reply", 'jetstream: notifications');
counters_true('js', 'jetstream');
kill 'TERM', $jpid;
is($rig->wait_exit($jpid, 30), 0, 'jetstream worker: clean exit');

$rig->finish;
done_testing;
