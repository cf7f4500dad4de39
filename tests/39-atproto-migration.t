#!/usr/bin/perl
# The README's staged migration, end to end, beside a stand-in for the old
# worker. The stand-in reads the group as python-worker-0 and writes the
# way the old workers do: a transaction per event, counters incremented
# in place (a like that comes before its post's counter row is never
# counted, a reply count never goes down), notifications and quotes under
# their own names (<uri>#notification, #notification/reply, <uri>#quote),
# an ack after each entry. It fills the database alone, then sluice joins
# (one worker) for a mixed window, then the take-over: the stand-in
# stops, its consumer is removed, sluiced --recount, and a last part of
# the stream deletes and updates records the stand-in wrote. Every one of
# those is applied, every counter equals its rows, and sluiced --check
# finds nothing.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use AtprotoNames qw(did uri $P $L $R $FO);
use AtprotoTables qw($COUNTERS_WRONG wait_counters_folded);
use Test::More;
use JSON::PP;

my $rig = SluiceRig->new;
my $sluiced = $rig->bin('sluiced');
my $stream = 'firehose:events';
my $group = 'firehose-processors';
my $shm = "/sluice-t39m-$$";
my $conf = $rig->write_config(parallel_consumers => 1, consumer_id => 'sluice', batch_size => 25,
                              batch_timeout_ms => 20, block_ms => 200, stats_name => $shm);
my $r = $rig->psql_file('tests/data/appview-tables.sql');
is($r->[0], 0, "the appview's tables") or diag($r->[1]);
$r = $rig->run($sluiced, '-c', $conf, '--init-schema');
is($r->[0], 0, 'the schema over them') or diag($r->[1]);
$rig->redis('XGROUP', 'CREATE', $stream, $group, '0', 'MKSTREAM');

# ---- the events ---------------------------------------------------------------
my $JSON = JSON::PP->new->canonical;
srand(1912);
my @users = map { did("mig$_") } 1 .. 12;
my (@posts, @likes, @follows, @reposts);
my $seq = 0;
my $ts = '2024-05-01T12:00:00Z';
sub entry {
    my ($repo, $op) = @_;
    return ['XADD', $stream, '*', 'type', 'commit', 'seq', ++$seq,
            'data', $JSON->encode({ repo => $repo, ops => [$op] })];
}
sub create {
    my ($coll, $who, $rkey, $rec) = @_;
    return entry($who, { action => 'create', path => "$coll/$rkey", cid => "bafy$rkey", record => $rec });
}
sub remove { my ($u) = @_; my (undef, undef, $who, $coll, $rkey) = split m{/}, $u;
             return entry($who, { action => 'delete', path => "$coll/$rkey" }) }
sub pick { return $_[int rand @_] }
my $n = 0;
# a part of the stream: posts (some replies, some quotes), likes (some of
# posts that come later in the part), follows, reposts
sub part {
    my ($np, $nl) = @_;
    my @e;
    my @fresh = map { uri(pick(@users), $P, 'p' . ++$n) } 1 .. $np;
    for my $i (0 .. $#fresh) {
        my $u = $fresh[$i];
        my (undef, undef, $who, undef, $rkey) = split m{/}, $u;
        my $rec = { '$type' => $P, text => "post $rkey", createdAt => $ts };
        if (@posts && rand() < 0.3) {
            my $parent = pick(@posts);
            $rec->{reply} = { root => { uri => $parent, cid => 'c' }, parent => { uri => $parent, cid => 'c' } };
        } elsif (@posts && rand() < 0.2) {
            $rec->{embed} = { '$type' => 'app.bsky.embed.record', record => { uri => pick(@posts), cid => 'c' } };
        }
        push @e, create($P, $who, $rkey, $rec);
        push @posts, $u;
        # likes of this post and of one that comes later in the part
        for (1 .. $nl) {
            my $subject = rand() < 0.15 && $i < $#fresh ? $fresh[$i + 1] : pick(@posts);
            my $liker = pick(@users);
            my $k = 'l' . ++$n;
            push @e, create($L, $liker, $k, { '$type' => $L, subject => { uri => $subject, cid => 'c' }, createdAt => $ts });
            push @likes, uri($liker, $L, $k);
        }
        if (rand() < 0.3) {
            my ($a, $b) = (pick(@users), pick(@users));
            my $k = 'f' . ++$n;
            push @e, create($FO, $a, $k, { '$type' => $FO, subject => $b, createdAt => $ts });
            push @follows, uri($a, $FO, $k);
        }
        if (rand() < 0.2) {
            my $who2 = pick(@users);
            my $k = 'r' . ++$n;
            push @e, create($R, $who2, $k, { '$type' => $R, subject => { uri => pick(@posts), cid => 'c' }, createdAt => $ts });
            push @reposts, uri($who2, $R, $k);
        }
    }
    return @e;
}

# ---- the stand-in old worker ------------------------------------------------------------
sub lit { my ($v) = @_; return 'NULL' unless defined $v; $v =~ s/'/''/g; return "'$v'" }
sub old_sql {
    my ($data) = @_;
    my $d = decode_json($data);
    my $who = $d->{repo};
    my $sql = "BEGIN;\nINSERT INTO users (did, handle) VALUES (" . lit($who) . ", 'handle.invalid') ON CONFLICT DO NOTHING;\n";
    for my $op (@{ $d->{ops} }) {
        my ($coll) = split m{/}, $op->{path};
        my $u = "at://$who/$op->{path}";
        my $rec = $op->{record} // {};
        if ($op->{action} eq 'create' && $coll eq $P) {
            my $parent = $rec->{reply} ? $rec->{reply}{parent}{uri} : undef;
            $sql .= "INSERT INTO posts (uri, cid, author_did, text, parent_uri, root_uri, created_at) VALUES ("
              . join(', ', lit($u), "'c'", lit($who), lit($rec->{text}), lit($parent), lit($parent), 'now()')
              . ") ON CONFLICT DO NOTHING;\n"
              . "INSERT INTO post_aggregations (post_uri) VALUES (" . lit($u) . ") ON CONFLICT DO NOTHING;\n"
              . "INSERT INTO feed_items (uri, post_uri, originator_did, type, sort_at, cid, created_at) VALUES ("
              . lit($u) . ', ' . lit($u) . ', ' . lit($who) . ", 'post', now(), 'c', now()) ON CONFLICT DO NOTHING;\n";
            if (defined $parent) {
                $sql .= "UPDATE post_aggregations SET reply_count = reply_count + 1 WHERE post_uri = " . lit($parent) . ";\n"
                  . "INSERT INTO notifications (uri, recipient_did, author_did, reason, reason_subject, created_at)"
                  . " SELECT " . lit("$u#notification/reply") . ", p.author_did, " . lit($who) . ", 'reply', " . lit($u)
                  . ", now() FROM posts p WHERE p.uri = " . lit($parent) . " AND p.author_did <> " . lit($who)
                  . " ON CONFLICT DO NOTHING;\n";
            }
            if ($rec->{embed}) {
                my $q = $rec->{embed}{record}{uri};
                $sql .= "INSERT INTO quotes (uri, cid, post_uri, quoted_uri, created_at) VALUES ("
                  . lit("$u#quote") . ", 'c', " . lit($u) . ', ' . lit($q) . ", now()) ON CONFLICT DO NOTHING;\n"
                  . "UPDATE post_aggregations SET quote_count = quote_count + 1 WHERE post_uri = " . lit($q) . ";\n";
            }
        } elsif ($op->{action} eq 'create' && ($coll eq $L || $coll eq $R)) {
            my ($t, $c, $why) = $coll eq $L ? ('likes', 'like_count', 'like') : ('reposts', 'repost_count', 'repost');
            my $s = $rec->{subject}{uri};
            # a duplicate (a unique violation, also against a row sluice is
            # writing at that moment) ends the event, as theirs do
            $sql .= "INSERT INTO $t (uri, user_did, post_uri, created_at) SELECT " . lit($u) . ', ' . lit($who) . ', '
              . lit($s) . ", now() WHERE NOT EXISTS (SELECT 1 FROM $t WHERE user_did = " . lit($who)
              . " AND post_uri = " . lit($s) . ") ON CONFLICT DO NOTHING;\n"
              . "SELECT count(*) = 0 AS dup FROM $t WHERE uri = " . lit($u) . " \\gset\n"
              . "\\if :dup\nCOMMIT;\n\\else\n"
              . "UPDATE post_aggregations SET $c = $c + 1 WHERE post_uri = " . lit($s) . ";\n"
              . "INSERT INTO post_viewer_states (post_uri, viewer_did, " . ($coll eq $L ? 'like_uri' : 'repost_uri')
              . ") VALUES (" . lit($s) . ', ' . lit($who) . ', ' . lit($u) . ") ON CONFLICT (post_uri, viewer_did) DO UPDATE SET "
              . ($coll eq $L ? 'like_uri' : 'repost_uri') . " = excluded." . ($coll eq $L ? 'like_uri' : 'repost_uri') . ";\n"
              . "INSERT INTO notifications (uri, recipient_did, author_did, reason, reason_subject, created_at)"
              . " SELECT " . lit("$u#notification") . ", p.author_did, " . lit($who) . ", '$why', " . lit($s)
              . ", now() FROM posts p WHERE p.uri = " . lit($s) . " AND p.author_did <> " . lit($who)
              . " ON CONFLICT DO NOTHING;\n";
            $sql .= "INSERT INTO feed_items (uri, post_uri, originator_did, type, sort_at, cid, created_at) VALUES ("
              . lit($u) . ', ' . lit($s) . ', ' . lit($who) . ", 'repost', now(), 'c', now()) ON CONFLICT DO NOTHING;\n"
              if $coll eq $R;
            $sql .= "COMMIT;\n\\endif\n";
            return $sql;
        } elsif ($op->{action} eq 'create' && $coll eq $FO) {
            $sql .= "INSERT INTO users (did, handle) VALUES (" . lit($rec->{subject}) . ", 'handle.invalid') ON CONFLICT DO NOTHING;\n"
              . "INSERT INTO follows (uri, follower_did, following_did, created_at) SELECT " . lit($u) . ', ' . lit($who)
              . ', ' . lit($rec->{subject}) . ", now() WHERE NOT EXISTS (SELECT 1 FROM follows WHERE follower_did = "
              . lit($who) . " AND following_did = " . lit($rec->{subject}) . ") ON CONFLICT DO NOTHING;\n"
              . "SELECT count(*) = 0 AS dup FROM follows WHERE uri = " . lit($u) . " \\gset\n"
              . "\\if :dup\nCOMMIT;\n\\else\n"
              . "INSERT INTO notifications (uri, recipient_did, author_did, reason, created_at) SELECT "
              . lit("$u#notification") . ', ' . lit($rec->{subject}) . ', ' . lit($who) . ", 'follow', now()"
              . " WHERE " . lit($rec->{subject}) . " <> " . lit($who) . " ON CONFLICT DO NOTHING;\n"
              . "COMMIT;\n\\endif\n";
            return $sql;
        }
    }
    return $sql . "COMMIT;\n";
}
# Read and apply up to $max entries as python-worker-0; returns how many.
sub old_worker_run {
    my ($max) = @_;
    my $done = 0;
    while ($done < $max) {
        my $reply = $rig->redis_resp('XREADGROUP', 'GROUP', $group, 'python-worker-0', 'COUNT', '10',
                                     'STREAMS', $stream, '>');
        last unless ref $reply eq 'ARRAY' && @$reply;
        my $entries = $reply->[0][1];
        last unless @$entries;
        my ($sql, @ids) = ('');
        for my $e (@$entries) {
            my %f = @{ $e->[1] };
            $sql .= old_sql($f{data});
            push @ids, $e->[0];
        }
        # a statement that fails (a deadlock with a sluice batch, say) fails
        # the rest of the file: the old worker reads it all again, as
        # theirs do after an error (its counters may count twice: the
        # recount is what makes them right)
        my $file = write_sql($sql);
        my $res;
        for (1 .. 5) {
            $res = $rig->psql_file($file);
            last if $res->[0] == 0;
            note("stand-in: $res->[1]; again");
        }
        die "stand-in: $res->[1]" if $res->[0] != 0;
        $rig->redis('XACK', $stream, $group, @ids);
        $done += @ids;
    }
    return $done;
}
my $nsql = 0;
sub write_sql {
    my ($sql) = @_;
    my $f = $rig->dir . '/old-' . ++$nsql . '.sql';
    open my $fh, '>', $f or die "$f: $!";
    print $fh $sql;
    close $fh;
    return $f;
}
sub q1 { return $rig->psql($_[0]) }

# ---- 1. the old worker alone ------------------------------------------------------------
my @a = part(60, 3);
$rig->redis_batch(@a);
is(old_worker_run(scalar @a), scalar @a, 'the old worker applied the first ' . scalar(@a) . ' entries');
my $wrong_before = q1($COUNTERS_WRONG);
ok($wrong_before > 0, "it left $wrong_before counter rows wrong (likes before their post's row)");
my @old_posts = @posts;
my @old_likes = @likes;
my @old_follows = @follows;
my @old_reposts = @reposts;

# ---- 2. the mixed window -----------------------------------------------------------------
my $sup = $rig->spawn('sluiced', $sluiced, '-c', $conf);
my @b = part(60, 3);
$rig->redis_batch(@b);
my $old_share = old_worker_run(scalar @b);
ok($rig->wait_drained($stream, $group, 60), 'the mixed window drained');
my $g = $rig->group_info($stream, $group);
note("the old worker applied $old_share of " . scalar(@b) . ' entries of the mixed window, sluice the rest');
ok(wait_counters_folded($rig), 'counters folded');
my $wrong_mixed = q1($COUNTERS_WRONG);
note("counter rows wrong after the mixed window: $wrong_mixed");

# ---- 3. the take-over ---------------------------------------------------------------------
$r = $rig->run('redis-cli', '-p', $rig->redis_port, 'XGROUP', 'DELCONSUMER', $stream, $group, 'python-worker-0');
is($r->[1], "0\n", 'the old consumer removed, nothing pending');
$r = $rig->run($sluiced, '-c', $conf, '--recount');
is($r->[0], 0, 'sluiced --recount') or diag($r->[1]);
my ($changed) = $r->[1] =~ /(\d+) counter rows changed/;
note("recount: $wrong_mixed wrong counter rows before, " . q1($COUNTERS_WRONG) . " after; it changed $changed");
is(q1($COUNTERS_WRONG), '0', 'after the recount every counter equals its rows');

# deletes and updates of what the old worker wrote
my @gone_likes = @old_likes[0 .. 19];
my @gone_posts = @old_posts[0 .. 9];
my @gone_follows = @old_follows[0 .. ($#old_follows < 4 ? $#old_follows : 4)];
my @gone_reposts = @old_reposts[0 .. ($#old_reposts < 2 ? $#old_reposts : 2)];
my @edited = @old_posts[10 .. 14];
my @c = map { remove($_) } @gone_likes, @gone_posts, @gone_follows, @gone_reposts;
for my $u (@edited) {
    my (undef, undef, $who, $coll, $rkey) = split m{/}, $u;
    push @c, entry($who, { action => 'update', path => "$coll/$rkey", cid => 'bafyedit',
                           record => { '$type' => $P, text => "edited $rkey", createdAt => $ts } });
}
$rig->redis_batch(@c);
ok($rig->wait_drained($stream, $group, 60), 'the take-over part drained');
ok(wait_counters_folded($rig), 'counters folded');
my $in = sub { join ', ', map { "'$_'" } @_ };
is(q1("SELECT count(*) FROM likes WHERE uri IN (" . $in->(@gone_likes) . ")"), 0, '20 deleted likes of the old worker are gone');
is(q1("SELECT count(*) FROM posts WHERE uri IN (" . $in->(@gone_posts) . ")"), 0, '10 deleted posts of the old worker are gone');
is(q1("SELECT count(*) FROM follows WHERE uri IN (" . $in->(@gone_follows) . ")"), 0, 'its deleted follows are gone');
is(q1("SELECT count(*) FROM reposts WHERE uri IN (" . $in->(@gone_reposts) . ")"), 0, 'its deleted reposts are gone');
is(q1("SELECT count(*) FROM notifications WHERE split_part(uri, '#', 1) IN ("
      . $in->(@gone_likes, @gone_posts, @gone_follows, @gone_reposts) . ")"), 0,
   '... and their notifications, under the old names');
is(q1("SELECT count(*) FROM quotes WHERE post_uri IN (" . $in->(@gone_posts) . ")"), 0, '... and their quotes');
is(q1("SELECT count(*) FROM posts WHERE uri IN (" . $in->(@edited) . ") AND text LIKE 'edited %' AND parent_uri IS NULL"),
   5, 'five posts of the old worker updated');
is(q1($COUNTERS_WRONG), '0', 'every counter equals its rows');
$r = $rig->run($sluiced, '-c', $conf, '--check=0');
is($r->[0], 0, 'sluiced --check finds nothing') or diag($r->[1]);
like($r->[1], qr/^consistent$/m, '... and says so');
my $cons = $rig->redis_resp('XINFO', 'CONSUMERS', $stream, $group);
is(join(' ', sort map { my %h = @$_; $h{name} } @$cons), 'sluice-1', 'XINFO CONSUMERS lists only sluice');

kill 'TERM', $sup;
$rig->wait_exit($sup, 60);
$rig->finish;
unlink "/dev/shm$shm";
done_testing;
