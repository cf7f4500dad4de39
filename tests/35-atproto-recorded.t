#!/usr/bin/perl
# The atproto sink on recorded network events (../shared/data/bluesky,
# third-party data kept outside the repository: skipped when absent).
# expected_v1.jsonl and golden_v1.jsonl go into the stream with
# sluice-replay, a worker drains them, and every appview table is compared
# with what the file itself implies (computed here from the JSON lines, in
# stream order): live posts with their text, langs, facets, embeds and
# replies; likes, reposts, follows and blocks (one row per pair, the
# smallest URI of duplicates); counters; feed items; notifications; viewer
# states; thread contexts; other collections in generic_records; actors,
# handles, account status (a users row for every actor and every subject
# of a follow, block or list item); profile fields (avatar and banner CIDs);
# createdAt in UTC (or the entry's time when a record has none). The same
# lines fed directly as Jetstream entries (input_format = jetstream) give
# the same tables. The raw relay frames the same events were decoded from
# (frames.bin.zst) go through the firehose reader (sluiced --firehose,
# from a test relay) and give the same tables too.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use AtprotoTables qw($COUNTERS_WRONG wait_counters_folded);
use TestRelay;
use Test::More;
use JSON::PP;
use Encode ();

my $DATA = '../shared/data/bluesky';
plan skip_all => "recorded events absent ($DATA)" unless -r "$DATA/expected_v1.jsonl";

my $JSON = JSON::PP->new->canonical;
binmode(Test::More->builder->$_, ':encoding(UTF-8)') for qw(output failure_output todo_output);

sub read_lines {
    my ($file) = @_;
    open my $fh, '<', $file or die "$file: $!";
    my @l = grep { /\S/ } <$fh>;
    close $fh;
    chomp @l;
    return @l;
}

my $P = 'app.bsky.feed.post';
my %HANDLED = map { $_ => 1 } ($P, qw(app.bsky.feed.like app.bsky.feed.repost app.bsky.graph.follow
    app.bsky.graph.block app.bsky.actor.profile app.bsky.graph.list app.bsky.graph.listitem
    app.bsky.feed.generator app.bsky.graph.starterpack app.bsky.labeler.service
    app.bsky.feed.threadgate app.bsky.feed.postgate));
sub author { my ($u) = @_; return (split m{/}, $u // '')[2] // '' }
sub coll_of { my ($u) = @_; return (split m{/}, $u // '')[3] // '' }

# What a file implies, applying its lines in order.
sub model {
    my (@lines) = @_;
    my (%state, %users, %handle, %account, %aggrow, @order);
    my $k = 0;
    for my $line (@lines) {
        my $j = decode_json($line);
        my $idx = $k++;
        $users{ $j->{did} } = 1;
        if ($j->{kind} eq 'identity') {
            $handle{ $j->{did} } = $j->{identity}{handle} if defined $j->{identity}{handle};
            next;
        }
        if ($j->{kind} eq 'account') {
            $account{ $j->{did} } = [$j->{account}{active} ? 'true' : 'false', $j->{account}{status}];
            next;
        }
        my $c = $j->{commit};
        my $uri = "at://$j->{did}/$c->{collection}/$c->{rkey}";
        my $rec = $c->{record};
        $state{$uri} = $c->{operation} eq 'delete' ? undef
          : { did => $j->{did}, coll => $c->{collection}, rec => $rec, cid => $c->{cid}, rev => $c->{rev}, idx => $idx };
        # aggregation rows: every post URI an op refers to
        if ($c->{collection} eq $P) {
            $aggrow{$uri} = 1;
            if ($rec) {
                $aggrow{ $rec->{reply}{parent}{uri} } = 1 if $rec->{reply};
                my $q = quoted($rec);
                $aggrow{$q} = 1 if defined $q;
            }
        }
        # the subject of a follow, block or list item gets a users row
        if ($c->{collection} =~ /^app\.bsky\.graph\.(follow|block|listitem)$/ && $rec
            && !ref $rec->{subject} && ($rec->{subject} // '') =~ /^did:/) {
            $users{ $rec->{subject} } = 1;
        }
        if ($c->{collection} =~ /^app\.bsky\.feed\.(like|repost)$/ && $rec) {
            $aggrow{ $rec->{subject}{uri} } = 1 if coll_of($rec->{subject}{uri}) eq $P;
        }
    }
    my %m = (users => { map { $_ => $handle{$_} // 'handle.invalid' } keys %users }, account => \%account);
    my @live = grep { defined $state{$_} } sort keys %state;
    my %by;
    push @{ $by{ $state{$_}{coll} } }, $_ for @live;
    # posts
    for my $u (@{ $by{$P} || [] }) {
        my $s = $state{$u};
        my $r = $s->{rec};
        $m{posts}{$u} = { author_did => $s->{did}, cid => $s->{cid}, text => $r->{text}, langs => $r->{langs},
            embed => $r->{embed}, facets => $r->{facets}, parent_uri => $r->{reply} ? $r->{reply}{parent}{uri} : undef,
            root_uri => $r->{reply} ? $r->{reply}{root}{uri} : undef, commit_rev => $s->{rev} };
        $m{created}{posts}{$u} = $r->{createdAt};
        $m{feed_items}{$u} = 'post';
    }
    # records with a pair: the smallest live URI of each pair owns the row
    my %pairkey = ('app.bsky.feed.like' => sub { $_[0]{subject}{uri} }, 'app.bsky.feed.repost' => sub { $_[0]{subject}{uri} },
                   'app.bsky.graph.follow' => sub { $_[0]{subject} }, 'app.bsky.graph.block' => sub { $_[0]{subject} });
    my %table = ('app.bsky.feed.like' => 'likes', 'app.bsky.feed.repost' => 'reposts',
                 'app.bsky.graph.follow' => 'follows', 'app.bsky.graph.block' => 'blocks');
    for my $coll (sort keys %pairkey) {
        my %owner;
        for my $u (@{ $by{$coll} || [] }) {
            my $pk = $state{$u}{did} . ' ' . $pairkey{$coll}->($state{$u}{rec});
            $owner{$pk} = $u if !defined $owner{$pk} || $u lt $owner{$pk};
        }
        for my $u (values %owner) {
            my $s = $state{$u};
            my $subj = $pairkey{$coll}->($s->{rec});
            $m{ $table{$coll} }{$u} = $coll =~ /graph/ ? "$s->{did} $subj"
              : { user_did => $s->{did}, post_uri => $subj, subject_cid => $s->{rec}{subject}{cid}, via => $s->{rec}{via} };
            $m{created}{ $table{$coll} }{$u} = $s->{rec}{createdAt};
        }
    }
    # counters and aggregation rows
    my %agg = map { $_ => [0, 0, 0, 0] } keys %aggrow;
    for my $u (keys %{ $m{likes} || {} }) {
        my $p = $m{likes}{$u}{post_uri};
        $agg{$p}[0]++ if exists $agg{$p};
    }
    for my $u (keys %{ $m{reposts} || {} }) {
        my $p = $m{reposts}{$u}{post_uri};
        $agg{$p}[1]++ if exists $agg{$p};
        $m{feed_items}{$u} = 'repost';
    }
    for my $u (keys %{ $m{posts} || {} }) {
        my $par = $m{posts}{$u}{parent_uri};
        $agg{$par}[2]++ if defined $par;
        my $q = quoted($state{$u}{rec});
        if (defined $q) {
            $agg{$q}[3]++;
            $m{quotes}{$u} = $q;
        }
    }
    $m{agg} = { map { $_ => join(' ', @{ $agg{$_} }) } keys %agg };
    # notifications
    for my $u (keys %{ $m{posts} || {} }) {
        my $r = $state{$u}{rec};
        my $me = $state{$u}{did};
        my @cand;
        push @cand, [author($r->{reply}{parent}{uri}), 'reply'] if $r->{reply};
        my $q = quoted($r);
        push @cand, [author($q), 'quote'] if defined $q;
        for my $f (@{ ref $r->{facets} eq 'ARRAY' ? $r->{facets} : [] }) {
            for my $ft (@{ $f->{features} || [] }) {
                push @cand, [$ft->{did}, 'mention'] if ($ft->{'$type'} // '') eq 'app.bsky.richtext.facet#mention';
            }
        }
        my ($n) = grep { defined $_->[0] && $_->[0] ne $me && $_->[0] =~ /^did:/ } @cand;
        $m{notifications}{$u} = "$n->[0] $n->[1]" if $n;
    }
    for my $t (qw(likes reposts)) {
        for my $u (keys %{ $m{$t} || {} }) {
            my $x = $m{$t}{$u};
            my $to = author($x->{post_uri});
            $m{notifications}{$u} = "$to " . ($t eq 'likes' ? 'like' : 'repost') if $to ne $x->{user_did};
            my $v = $m{viewer}{"$x->{post_uri} $x->{user_did}"} //= ['-', '-'];
            $v->[$t eq 'likes' ? 0 : 1] = $u;
        }
    }
    for my $u (keys %{ $m{follows} || {} }) {
        my ($a, $b) = split / /, $m{follows}{$u};
        $m{notifications}{$u} = "$b follow" if $a ne $b;
    }
    $m{viewer} = { map { $_ => join(' ', @{ $m{viewer}{$_} }) } keys %{ $m{viewer} || {} } };
    # thread contexts: a live reply liked by its root's author
    for my $u (keys %{ $m{likes} || {} }) {
        my $x = $m{likes}{$u};
        my $p = $m{posts}{ $x->{post_uri} } or next;
        next unless defined $p->{parent_uri} && author($p->{root_uri}) eq $x->{user_did};
        $m{thread_contexts}{ $x->{post_uri} } = $u;
    }
    # profiles and other collections
    for my $u (@{ $by{'app.bsky.actor.profile'} || [] }) {
        my $r = $state{$u}{rec};
        $m{profiles}{ $state{$u}{did} } = join '|', map { $_ // '-' } $r->{displayName}, $r->{description},
          $r->{avatar} ? $r->{avatar}{ref}{'$link'} : undef, $r->{banner} ? $r->{banner}{ref}{'$link'} : undef;
    }
    for my $u (grep { !$HANDLED{ $state{$_}{coll} } } @live) {
        my $s = $state{$u};
        $m{generic}{$u} = { record_type => $s->{coll}, cid => $s->{cid}, author_did => $s->{did}, record => $s->{rec} };
        if (defined $s->{rec}{createdAt}) { $m{created}{generic_records}{$u} = $s->{rec}{createdAt} }
        else { $m{fallback}{generic_records}{$u} = $s->{idx} }
    }
    $m{deleted} = [grep { !defined $state{$_} } sort keys %state];
    return \%m;
}

sub quoted {
    my ($r) = @_;
    my $e = $r->{embed} or return undef;
    my $t = $e->{'$type'} // '';
    my $ref = $t eq 'app.bsky.embed.record' ? $e->{record}
      : $t eq 'app.bsky.embed.recordWithMedia' ? $e->{record}{record} : undef;
    return undef unless $ref && coll_of($ref->{uri}) eq $P;
    return $ref->{uri};
}

# ---- comparing a database with a model -----------------------------------------
my $rig = SluiceRig->new;
my $sluiced = $rig->bin('sluiced');
my $group = 'firehose-processors';

sub jrows {    # rows of a query as Perl data, through jsonb_agg
    my ($db, $sql) = @_;
    my $out = $rig->psql_db($db, "SELECT coalesce(jsonb_agg(x), '[]') FROM ($sql) x");
    return JSON::PP->new->decode(Encode::decode('UTF-8', $out));
}
sub kv {       # "key=value" lines of a query as a hash
    my ($db, $sql) = @_;
    return { map { split /=/, $_, 2 } grep { length } split /\n/, Encode::decode('UTF-8', $rig->psql_db($db, $sql)) };
}
sub lit { my ($v) = @_; return 'NULL' unless defined $v; $v =~ s/'/''/g; return "'$v'" }

# The stream ID of the entry that carries each line: the nth entry, or
# for entries the firehose reader wrote (a commit may carry several ops),
# the one holding the line's op.
sub line_ids {
    my ($stream, $lines, $by_op) = @_;
    my @e = $rig->stream_entries($stream);
    return map { $_->[0] } @e unless $by_op;
    my %at;
    for my $e (@e) {
        my $d = decode_json($e->[1]{data});
        if ($e->[1]{type} ne 'commit') { $at{"$e->[1]{type} $d->{did}"} = $e->[0]; next }
        $at{"$d->{repo} $_->{action} $_->{path}"} = $e->[0] for @{ $d->{ops} };
    }
    return map {
        my $j = decode_json($_);
        my $c = $j->{commit};
        $at{ $c ? "$j->{did} $c->{operation} $c->{collection}/$c->{rkey}" : "$j->{kind} $j->{did}" } // '0-0'
    } @$lines;
}

sub check_db {
    my ($db, $m, $name, $stream, $ids) = @_;
    my @ids = @$ids;
    my %posts = map { my $u = delete $_->{uri}; ($u => $_) } @{ jrows($db,
        'SELECT uri, author_did, cid, text, langs, embed, facets, parent_uri, root_uri, commit_rev FROM posts') };
    is_deeply([sort keys %posts], [sort keys %{ $m->{posts} || {} }], "$name: posts, the live ones ("
        . scalar(keys %{ $m->{posts} || {} }) . ')');
    my @pdiff = grep { !$posts{$_} || $JSON->encode($posts{$_}) ne $JSON->encode($m->{posts}{$_}) } sort keys %{ $m->{posts} || {} };
    is("@pdiff", '', "$name: each post's author, cid, text, langs, embed, facets, reply and rev as recorded");
    is_deeply($posts{ $pdiff[0] }, $m->{posts}{ $pdiff[0] }, "$name: $pdiff[0]") if @pdiff;
    for my $t (qw(likes reposts)) {
        my %rows = map { my $u = delete $_->{uri}; ($u => $_) } @{ jrows($db,
            "SELECT uri, user_did, post_uri, subject_cid, via FROM $t") };
        is_deeply(\%rows, $m->{$t} || {}, "$name: $t, one row per pair (" . scalar(keys %{ $m->{$t} || {} }) . ')');
    }
    is_deeply(kv($db, q{SELECT uri || '=' || follower_did || ' ' || following_did FROM follows}), $m->{follows} || {},
        "$name: follows (" . scalar(keys %{ $m->{follows} || {} }) . ')');
    is_deeply(kv($db, q{SELECT uri || '=' || blocker_did || ' ' || blocked_did FROM blocks}), $m->{blocks} || {},
        "$name: blocks (" . scalar(keys %{ $m->{blocks} || {} }) . ')');
    is_deeply(kv($db, q{SELECT post_uri || '=' || like_count || ' ' || repost_count || ' ' || reply_count || ' ' || quote_count
        FROM post_aggregations}), $m->{agg}, "$name: post_aggregations: a row per post referred to, true counts");
    is_deeply(kv($db, q{SELECT uri || '=' || quoted_uri FROM quotes}), $m->{quotes} || {}, "$name: quotes");
    is_deeply(kv($db, q{SELECT uri || '=' || type FROM feed_items}), $m->{feed_items} || {}, "$name: feed items");
    is_deeply(kv($db, q{SELECT uri || '=' || recipient_did || ' ' || reason FROM notifications}), $m->{notifications} || {},
        "$name: notifications (" . scalar(keys %{ $m->{notifications} || {} }) . ')');
    is_deeply(kv($db, q{SELECT post_uri || ' ' || viewer_did || '=' || coalesce(like_uri, '-') || ' ' || coalesce(repost_uri, '-')
        FROM post_viewer_states}), $m->{viewer} || {}, "$name: post_viewer_states");
    is_deeply(kv($db, q{SELECT post_uri || '=' || root_author_like_uri FROM thread_contexts}), $m->{thread_contexts} || {},
        "$name: thread_contexts");
    is_deeply(kv($db, q{SELECT did || '=' || handle FROM users}), $m->{users},
        "$name: users: every actor (" . scalar(keys %{ $m->{users} }) . ') and subject, handles from identity events');
    is_deeply(kv($db, q{SELECT did || '=' || active || ' ' || coalesce(status, '-') FROM sluice_account_status}),
        { map { $_ => $m->{account}{$_}[0] . ' ' . ($m->{account}{$_}[1] // '-') } keys %{ $m->{account} } },
        "$name: account status");
    is_deeply({ map { ($_->{did} => join '|', map { $_ // '-' } @$_{qw(display_name description avatar_url banner_url)}) }
                @{ jrows($db, 'SELECT did, display_name, description, avatar_url, banner_url FROM users WHERE profile_record IS NOT NULL') } },
        $m->{profiles} || {}, "$name: profiles: display name, description, avatar and banner CIDs");
    my %gen = map { my $u = delete $_->{uri}; ($u => $_) } @{ jrows($db,
        'SELECT uri, record_type, cid, author_did, record FROM generic_records') };
    is_deeply(\%gen, $m->{generic} || {}, "$name: generic_records: other collections, records as recorded ("
        . join(', ', sort map { $_->{record_type} } values %{ $m->{generic} || {} }) . ')');
    is($rig->psql_db($db, 'SELECT count(*) FROM sluice_record_state WHERE deleted AND uri IN ('
        . join(', ', map { lit($_) } @{ $m->{deleted} }, '') . ')'), scalar @{ $m->{deleted} },
        "$name: deletes kept as tombstones (" . scalar(@{ $m->{deleted} }) . ')');
    # createdAt in UTC, or the entry's time
    for my $t (sort keys %{ $m->{created} }) {
        my $c = $m->{created}{$t};
        next unless %$c;
        my $vals = join ', ', map { '(' . lit($_) . ', ' . lit($c->{$_}) . ')' } sort keys %$c;
        is($rig->psql_db($db, "SELECT count(*) FROM $t x JOIN (VALUES $vals) v(uri, ca) ON v.uri = x.uri
            WHERE x.created_at = (v.ca::timestamptz AT TIME ZONE 'UTC')"), scalar(keys %$c),
            "$name: $t: created_at is createdAt in UTC");
    }
    for my $t (sort keys %{ $m->{fallback} || {} }) {
        my $f = $m->{fallback}{$t};
        my $vals = join ', ', map { my ($ms) = $ids[ $f->{$_} ] =~ /^(\d+)/; '(' . lit($_) . ", $ms)" } sort keys %$f;
        is($rig->psql_db($db, "SELECT count(*) FROM $t x JOIN (VALUES $vals) v(uri, ms) ON v.uri = x.uri
            WHERE x.created_at = (to_timestamp(v.ms / 1000.0) AT TIME ZONE 'UTC')"), scalar(keys %$f),
            "$name: $t without createdAt: created_at is the entry's time");
    }
    is($rig->psql_db($db, $COUNTERS_WRONG), 0, "$name: every counter equals the true number of rows");
}

# Every appview table as sorted text (for comparing two databases).
my %COLS = (
    users => 'did, handle, display_name, avatar_url, banner_url, description, profile_record',
    posts => 'uri, cid, author_did, text, langs, parent_uri, parent_cid, root_uri, root_cid, embed, facets, '
      . 'violates_thread_gate, violates_embedding_rules, has_thread_gate, has_post_gate, tags, created_at, commit_rev',
    post_aggregations => 'post_uri, like_count, repost_count, reply_count, bookmark_count, quote_count',
    feed_items => 'uri, post_uri, originator_did, type, sort_at, cid, created_at',
    likes => 'uri, user_did, post_uri, subject_cid, via, created_at, commit_rev',
    reposts => 'uri, user_did, post_uri, subject_cid, via, created_at, commit_rev',
    follows => 'uri, follower_did, following_did, created_at, commit_rev',
    blocks => 'uri, blocker_did, blocked_did, created_at, commit_rev',
    quotes => 'uri, cid, post_uri, quoted_uri, quoted_cid, created_at',
    notifications => 'uri, recipient_did, author_did, reason, reason_subject, cid, is_read, created_at',
    post_viewer_states => 'post_uri, viewer_did, like_uri, repost_uri',
    thread_contexts => 'post_uri, root_author_like_uri',
    generic_records => 'uri, cid, author_did, record_type, record',
    sluice_account_status => 'did, active, status',
);
sub dump_tables {
    my ($db) = @_;
    return { map { $_ => $rig->psql_db($db, "SELECT count(*) || E'\\n' || coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '')
        FROM (SELECT $COLS{$_} FROM $_) x") } keys %COLS };
}

# ---- one file, two ways --------------------------------------------------------------
my $nfile = 0;
sub run_file {
    my ($file, $extra, @frames) = @_;
    my @lines = read_lines("$DATA/$file");
    my $m = model(@lines);
    $extra->($m, \@lines) if $extra;
    my $n = ++$nfile;
    my %dbs;
    for my $way ('replay', 'jetstream', @frames ? 'firehose' : ()) {
        my $db = "f${n}_$way";
        my $stream = "$db:events";
        $rig->create_database($db);
        my $conf = $rig->write_config(database_url => $rig->database_url_for($db), stream_key => $stream,
            input_format => ($way eq 'jetstream' ? 'jetstream' : 'stream'), batch_size => 20,
            batch_timeout_ms => 50, block_ms => 200, claim_idle_ms => 60000, claim_interval_ms => 60000);
        my $r = $rig->run($sluiced, '-c', $conf, '--init-schema');
        is($r->[0], 0, "$file, $way: schema") or diag($r->[1]);
        if ($way eq 'replay') {
            $r = $rig->run($rig->bin('sluice-replay'), '-u', $rig->redis_url, '-k', $stream, "$DATA/$file");
            is($r->[0], 0, "$file: sluice-replay loaded it") or diag($r->[1]);
        } elsif ($way eq 'jetstream') {
            like($rig->redis_batch(map { ['XADD', $stream, '*', 'data', $_] } @lines), qr/errors: 0\b/,
                "$file: lines added as Jetstream entries");
        } else {
            # the reader alone (no database), from a relay playing the frames
            my ($url) = TestRelay::start($rig, \@frames);
            my $last = TestRelay::frame_seq($frames[-1]);
            my $fconf = $rig->write_config(stream_key => $stream, relay_url => $url,
                cursor_key => "$db:cursor", database_url => undef);
            my $fpid = $rig->spawn("fh-$db", $sluiced, '-c', $fconf, '--firehose');
            ok($rig->wait_until(sub { ($rig->redis('GET', "$db:cursor") // '') eq $last }, 30),
                "$file: the firehose reader wrote the frames and saved the cursor ($last)");
            kill 'TERM', $fpid;
            is($rig->wait_exit($fpid, 30), 0, "$file: the firehose reader exits cleanly");
        }
        is($rig->redis('XLEN', $stream), $way eq 'firehose' ? scalar @frames : scalar @lines,
            "$file, $way: one entry per " . ($way eq 'firehose' ? 'frame' : 'line'));
        my $pid = $rig->spawn("w-$db", $sluiced, '-c', $conf, '--worker', "rec-$db");
        ok($rig->wait_drained($stream, $group, 60) && wait_counters_folded($rig, $db),
            "$file, $way: drained, nothing pending, lag 0, counters folded");
        is(scalar($rig->stream_entries("$stream:dead")) // 0, 0, "$file, $way: no dead letters");
        check_db($db, $m, "$file, $way", $stream, [line_ids($stream, \@lines, $way eq 'firehose')]);
        kill 'TERM', $pid;
        is($rig->wait_exit($pid, 30), 0, "$file, $way: worker exits cleanly");
        $dbs{$way} = dump_tables($db);
    }
    for my $way (grep { $_ ne 'replay' } sort keys %dbs) {
        my @diff = grep { $dbs{replay}{$_} ne $dbs{$way}{$_} } sort keys %COLS;
        is("@diff", '', "$file: replayed entries and $way entries give the same tables");
        is($dbs{$way}{$_}, $dbs{replay}{$_}, "$file: $_ ($way vs replay)") for @diff[0 .. ($#diff < 2 ? $#diff : 2)];
    }
    return $m;
}

# the model against the data's README, so that a misread file shows
run_file('expected_v1.jsonl', sub {
    my ($m, $lines) = @_;
    my (%n, $replies);
    for (@$lines) {
        my $j = decode_json($_);
        next unless $j->{kind} eq 'commit';
        $n{"$j->{commit}{collection} $j->{commit}{operation}"}++;
        $replies++ if $j->{commit}{record} && $j->{commit}{record}{reply} && $j->{commit}{collection} eq $P;
    }
    is_deeply([@n{"$P create", "$P delete", 'app.bsky.feed.like create', 'app.bsky.feed.repost create',
                  'app.bsky.graph.follow create', 'app.bsky.graph.follow delete', 'app.bsky.graph.block create'}, $replies],
              [17, 1, 105, 15, 6, 3, 1, 8], 'expected_v1.jsonl: the mix the README describes');
    note('expected_v1.jsonl implies ' . join(', ', map { scalar(keys %{ $m->{$_} || {} }) . " $_" }
        qw(posts likes reposts follows blocks generic notifications users)));
    is(scalar(keys %{ $m->{generic} }), 2, 'expected_v1.jsonl: two records of collections without a table');
}, TestRelay::recorded_frames($rig));
note('frames.bin.zst absent: the firehose way of expected_v1.jsonl not run') unless TestRelay::recorded_frames($rig);
run_file('golden_v1.jsonl', sub {
    my ($m) = @_;
    is(scalar(keys %{ $m->{profiles} || {} }), 1, 'golden_v1.jsonl: one profile');
    my ($p) = values %{ $m->{profiles} || {} };
    like($p // '', qr/\|bafk\w+\|bafk\w+$/, 'golden_v1.jsonl: the profile has avatar and banner CIDs');
});

$rig->finish;
done_testing;
