#!/usr/bin/perl
# A drop-in adds nothing twice. `sluiced --init-schema` on a database the
# appview created (its tables and indexes under its own names: the facts in
# tests/data/appview-tables.sql, and the appview's own DDL from
# ../shared/data/appview when that folder is there) adds sluice's own
# tables and indexes and no index an appview table already has under
# another name: no table ends with two indexes of the same columns, order,
# method and predicate. On an empty database it creates every index of
# etc/sql/atproto/. A second run changes nothing either way. A table in
# use gets a missing index CONCURRENTLY after the commit, and an invalid
# index an interrupted build left is built again.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use AtprotoStage qw(schema_sql);
use Test::More;

my $FACTS = 'tests/data/appview-tables.sql';
my $APPVIEW = '../shared/data/appview/schema.sql';

my $rig = SluiceRig->new(redis => 0);
my $sluiced = $rig->bin('sluiced');

# Every index of the public schema as "table index".
sub indexes {
    my ($db) = @_;
    return [ split /\n/, $rig->psql_db($db,
        "SELECT tablename || ' ' || indexname FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1") ];
}

# The indexes that duplicate another of their table (same key columns in
# the same order, same access method, expressions and predicate).
my $TWINS = <<'SQL';
SELECT string_agg(c.relname, ' = ' ORDER BY c.relname)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_class t ON t.oid = i.indrelid
 WHERE t.relnamespace = 'public'::regnamespace
 GROUP BY i.indrelid, c.relam, i.indkey::text, pg_get_expr(i.indexprs, i.indrelid),
          pg_get_expr(i.indpred, i.indrelid)
HAVING count(*) > 1
SQL

sub init_schema {
    my ($db, %kv) = @_;
    my $conf = $rig->write_config(database_url => $rig->database_url_for($db), %kv);
    return $rig->run($sluiced, '-c', $conf, '--init-schema');
}

sub load_file {
    my ($db, $file) = @_;
    my $r = $rig->psql_file($file, $db);
    is($r->[0], 0, "$db: $file loaded") or diag($r->[1]);
}

# A database the appview made: sluice adds only its own tables' indexes.
sub check_drop_in {
    my ($db, $file) = @_;
    $rig->create_database($db);
    load_file($db, $file);
    my $before = indexes($db);
    # (the appview's own DDL has twins of its own, on tables sluice doesn't write)
    my $twins = $rig->psql_db($db, $TWINS);
    my $r = init_schema($db);
    is($r->[0], 0, "$db: --init-schema succeeds") or diag($r->[1]);
    my %had = map { $_ => 1 } @$before;
    my @added = grep { !$had{$_} } @{ indexes($db) };
    my @foreign = grep { !/^sluice_/ } @added;
    is_deeply(\@foreign, [], "$db: no index added to an appview table") or diag(join "\n", @foreign);
    ok(scalar(grep { /^sluice_record_state / } @added) >= 1, "$db: sluice's own indexes are there");
    is($rig->psql_db($db, $TWINS), $twins, "$db: sluice made no two indexes of the same columns");
    my $after = indexes($db);
    $r = init_schema($db);
    is($r->[0], 0, "$db: a second --init-schema succeeds");
    is_deeply(indexes($db), $after, "$db: ... and changes no index");
}

check_drop_in('facts', $FACTS);

# A skipped index is named in the log (debug), with the index that covers it.
like(init_schema('facts', log_level => 'debug')->[1],
     qr/index idx_feed_items_post_uri not created: idx_feed_items_post on feed_items has the same columns/,
     'a skipped index is logged with the one that covers it');
SKIP: {
    skip "the appview's DDL is absent ($APPVIEW)", 6 unless -r $APPVIEW;
    check_drop_in('appview', $APPVIEW);
}

# An empty database: every index the DDL declares is created.
$rig->create_database('empty');
my $r = init_schema('empty');
is($r->[0], 0, 'empty: --init-schema succeeds') or diag($r->[1]);
my @declared = map { /sluice_create_index\('(\w+)', '(\w+)'/ ? "$2 $1" : () }
  split /\n/, schema_sql();
ok(@declared > 40, scalar(@declared) . ' appview indexes declared');
my %have = map { $_ => 1 } @{ indexes('empty') };
is_deeply([ grep { !$have{$_} } @declared ], [], 'empty: every declared index is created');
is($rig->psql_db('empty', $TWINS), '', 'empty: no twins');
my $after = indexes('empty');
init_schema('empty');
is_deeply(indexes('empty'), $after, 'empty: a second run changes nothing');

# An index of the same columns but with a predicate, or of another method,
# does not count.
$rig->create_database('partial');
$rig->psql_db('partial', 'CREATE TABLE likes (uri varchar(512) PRIMARY KEY, user_did varchar(255) NOT NULL,'
    . ' post_uri varchar(512) NOT NULL, subject_cid varchar(255), via jsonb, created_at timestamp NOT NULL,'
    . ' indexed_at timestamp NOT NULL DEFAULT now(), commit_time timestamp, commit_seq varchar(32),'
    . ' commit_rev varchar(64), UNIQUE (user_did, post_uri));'
    . " CREATE INDEX likes_recent ON likes (post_uri) WHERE created_at > '2024-01-01';"
    . ' CREATE INDEX likes_by_user_hash ON likes USING hash (user_did)');
$r = init_schema('partial');
is($r->[0], 0, 'partial: --init-schema succeeds') or diag($r->[1]);
my %p = map { $_ => 1 } @{ indexes('partial') };
ok($p{'likes idx_likes_post_uri'}, 'a partial index of the same column does not stand in for a full one');
ok($p{'likes idx_likes_user_did'}, 'nor does a hash index for a btree one');

# A table in use (it has rows) gets its missing index CONCURRENTLY, after
# the schema's transaction, so the appview's writes are not blocked; an
# invalid index an interrupted build left is dropped and built again.
$rig->create_database('inuse');
load_file('inuse', $FACTS);
$rig->psql_db('inuse', 'DROP INDEX idx_likes_user_did; DROP INDEX idx_likes_post_uri');
$rig->psql_db('inuse', "INSERT INTO likes (uri, user_did, post_uri, created_at) VALUES"
    . " ('at://a/app.bsky.feed.like/1', 'did:plc:a', 'at://b/app.bsky.feed.post/1', now()),"
    . " ('at://c/app.bsky.feed.like/2', 'did:plc:c', 'at://b/app.bsky.feed.post/1', now())");
# a unique build over two likes of one post fails and leaves an invalid index
ok(!defined eval { $rig->psql_db('inuse', 'CREATE UNIQUE INDEX CONCURRENTLY idx_likes_post_uri ON likes (post_uri)'); 1 },
   'inuse: an interrupted build left an invalid index');
is($rig->psql_db('inuse', "SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_likes_post_uri'::regclass"), 'f',
   '... idx_likes_post_uri, invalid');
$r = init_schema('inuse');
is($r->[0], 0, 'inuse: --init-schema succeeds') or diag($r->[1]);
like($r->[1], qr/index idx_likes_user_did: CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_likes_user_did ON likes/,
     'inuse: the missing index is built CONCURRENTLY');
like($r->[1], qr/index idx_likes_post_uri: DROP INDEX CONCURRENTLY IF EXISTS idx_likes_post_uri.*index idx_likes_post_uri built in \d+ ms/s,
     'inuse: the invalid one is dropped and built again');
is($rig->psql_db('inuse', "SELECT string_agg(c.relname || ' ' || i.indisvalid || ' ' || i.indisunique, ', ' ORDER BY c.relname)"
      . " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname IN ('idx_likes_post_uri', 'idx_likes_user_did')"),
   'idx_likes_post_uri true false, idx_likes_user_did true false', 'inuse: both valid, as sluice declares them');
my $inuse = indexes('inuse');
$r = init_schema('inuse');
unlike($r->[1], qr/CONCURRENTLY/, 'inuse: a second run builds nothing');
is_deeply(indexes('inuse'), $inuse, '... and changes no index');

$rig->finish;
done_testing;
