# AtprotoTables.pm: the tables the atproto sink writes and the columns of
# each that tests compare between runs (everything but indexed_at,
# updated_at and serial ids, which differ by when and not by what).
package AtprotoTables;
use strict;
use warnings;
use Exporter 'import';
our @EXPORT_OK = qw(%COMPARED $COUNTERS_WRONG $LIKE_COUNTS_WRONG wait_counters_folded);

our %COMPARED = (
    users => 'did, handle, display_name, avatar_url, banner_url, description, profile_record, pinned_post',
    posts => 'uri, cid, author_did, text, langs, parent_uri, parent_cid, root_uri, root_cid, embed, facets, '
      . 'violates_thread_gate, violates_embedding_rules, has_thread_gate, has_post_gate, tags, created_at, '
      . 'commit_time, commit_seq, commit_rev',
    post_aggregations => 'post_uri, like_count, repost_count, reply_count, bookmark_count, quote_count',
    feed_items => 'uri, post_uri, originator_did, type, sort_at, cid, created_at',
    likes => 'uri, user_did, post_uri, subject_cid, via, created_at, commit_time, commit_seq, commit_rev',
    reposts => 'uri, user_did, post_uri, subject_cid, via, created_at, commit_time, commit_seq, commit_rev',
    follows => 'uri, follower_did, following_did, created_at, commit_time, commit_seq, commit_rev',
    blocks => 'uri, blocker_did, blocked_did, created_at, commit_time, commit_seq, commit_rev',
    quotes => 'uri, cid, post_uri, quoted_uri, quoted_cid, created_at',
    notifications => 'uri, recipient_did, author_did, reason, reason_subject, cid, is_read, created_at',
    lists => 'uri, cid, creator_did, name, purpose, description, avatar_url, created_at',
    list_items => 'uri, cid, list_uri, subject_did, created_at',
    feed_generators => 'uri, cid, creator_did, did, display_name, description, avatar_url, like_count, created_at',
    starter_packs => 'uri, cid, creator_did, name, description, list_uri, feeds, created_at',
    labeler_services => 'uri, cid, creator_did, policies, like_count, created_at',
    thread_gates => 'post_uri, owner_did, allow_mentions, allow_following, allow_list_members, allow_list_uris, created_at',
    post_gates => 'post_uri, created_at, embedding_rules',
    post_viewer_states => 'post_uri, viewer_did, like_uri, repost_uri, bookmarked, thread_muted, reply_disabled, '
      . 'embedding_disabled, pinned',
    thread_contexts => 'post_uri, root_author_like_uri',
    generic_records => 'uri, cid, author_did, record_type, record, created_at',
    sluice_record_state => 'uri, collection, did, ord_ms, ord_seq, op_idx, deleted, cid, pair, record, created_at, '
      . 'commit_time, commit_seq, commit_rev',
    sluice_identity_state => 'did, ord_ms, ord_seq, handle',
    sluice_account_status => 'did, active, status, ord_ms, ord_seq',
);

# The post_aggregations rows whose counters differ from the rows they count,
# or are negative: a count that a correct run leaves at 0.
our $COUNTERS_WRONG = <<'SQL';
SELECT count(*) FROM post_aggregations a
 WHERE like_count <> (SELECT count(*) FROM likes WHERE post_uri = a.post_uri)
    OR repost_count <> (SELECT count(*) FROM reposts WHERE post_uri = a.post_uri)
    OR reply_count <> (SELECT count(*) FROM posts WHERE parent_uri = a.post_uri)
    OR quote_count <> (SELECT count(*) FROM quotes WHERE quoted_uri = a.post_uri)
    OR least(like_count, repost_count, reply_count, quote_count) < 0
SQL

# Feed generators and labelers whose like_count differs from their likes.
our $LIKE_COUNTS_WRONG = <<'SQL';
SELECT (SELECT count(*) FROM feed_generators g
         WHERE like_count <> (SELECT count(*) FROM likes WHERE post_uri = g.uri))
     + (SELECT count(*) FROM labeler_services g
         WHERE like_count <> (SELECT count(*) FROM likes WHERE post_uri = g.uri))
SQL

# Wait (up to $timeout seconds, default 30) until the workers have folded
# every committed counter delta into the counters of database $db (the
# rig's own when undef): the counters lag the rows by up to
# counter_fold_ms. Returns true when nothing is left to fold.
sub wait_counters_folded {
    my ($rig, $db, $timeout) = @_;
    my $sql = 'SELECT count(*) FROM sluice_counter_delta';
    return $rig->wait_until(sub {
        my $n = defined $db ? $rig->psql_db($db, $sql) : $rig->psql($sql);
        defined $n && $n eq '0';
    }, $timeout // 30);
}

1;
