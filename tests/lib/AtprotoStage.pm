# AtprotoStage.pm: apply batches to the atproto schema through psql, the
# way the atproto sink stages them (the session's temp sluice_stage, one
# transaction per batch, sluice_apply_stage(), then the counter fold), for
# the tests of the SQL alone. The database is one of the rig's.
#
#   use AtprotoStage;
#   new_db($rig, 'a');                          # CREATE DATABASE + schema
#   apply_batches($rig, 'a', [cr(1, $did, 'app.bsky.feed.post', 'p1', {...})],
#                            [del(2, $did, 'app.bsky.feed.post', 'p1')]);
#   is(q1($rig, 'a', 'SELECT count(*) FROM posts'), 0);
#
# Ops: cr / upd / del (ms, did, collection, rkey[, record], %extra) and
# op(%fields) for identity and account events; extra fields are seq, idx,
# at (created_at), cid, handle, active, status, cseq, crev, ctime.
package AtprotoStage;
use strict;
use warnings;
use Exporter 'import';
use JSON::PP;
use Encode ();
our @EXPORT = qw(lit op cr upd del stage_sql psql_script apply_batches new_db
                 schema_sql schema_text q1);

my $JSON = JSON::PP->new->canonical;

sub lit {
    my ($v) = @_;
    return 'NULL' unless defined $v;
    $v = $JSON->encode($v) if ref $v;
    $v =~ s/'/''/g;
    return "'$v'";
}

# One op: ms, kind, did; records also coll, rkey, rec; optional seq, idx,
# at (created_at), cid, handle, active, status, cseq, crev, ctime.
sub op {
    my (%o) = @_;
    $o{seq} //= 0;
    $o{idx} //= 0;
    $o{at} //= '2024-05-01 12:00:00';
    if (defined $o{coll}) {
        $o{uri} = "at://$o{did}/$o{coll}/$o{rkey}";
        $o{cid} //= "bafy$o{rkey}$o{ms}" if $o{kind} ne 'delete';
    }
    return \%o;
}
sub cr  { my ($ms, $did, $coll, $rkey, $rec, %x) = @_;
          op(ms => $ms, kind => 'create', did => $did, coll => $coll, rkey => $rkey, rec => $rec, %x) }
sub upd { my ($ms, $did, $coll, $rkey, $rec, %x) = @_;
          op(ms => $ms, kind => 'update', did => $did, coll => $coll, rkey => $rkey, rec => $rec, %x) }
sub del { my ($ms, $did, $coll, $rkey, %x) = @_;
          op(ms => $ms, kind => 'delete', did => $did, coll => $coll, rkey => $rkey, %x) }

sub stage_sql {
    my (@ops) = @_;
    return '' unless @ops;
    my @rows = map {
        my $o = $_;
        '(' . join(', ', $o->{ms}, $o->{seq}, $o->{idx}, lit($o->{kind}), lit($o->{did}),
            lit($o->{coll}), lit($o->{rkey}), lit($o->{uri}), lit($o->{cid}),
            defined $o->{rec} ? lit($o->{rec}) . '::jsonb' : 'NULL', lit($o->{at}),
            lit($o->{handle}), defined $o->{active} ? ($o->{active} ? 'true' : 'false') : 'NULL',
            lit($o->{status}), lit($o->{cseq}), lit($o->{crev}), lit($o->{ctime})) . ')'
    } @ops;
    return "INSERT INTO sluice_stage (ord_ms, ord_seq, op_idx, kind, did, collection, rkey, uri, "
      . "cid, record, created_at, handle, active, status, commit_seq, commit_rev, commit_time) VALUES\n"
      . join(",\n", @rows) . ";\n";
}

my $SCRIPTS = 0;
# Run a psql script file against database $db; returns [exit code, output].
sub psql_script {
    my ($rig, $db, $sql) = @_;
    my $file = $rig->dir . "/script-$$-" . ++$SCRIPTS . '.sql';
    open my $fh, '>:encoding(UTF-8)', $file or die "$file: $!";
    print $fh $sql;
    close $fh;
    (my $url = $rig->database_url) =~ s{/sluice$}{/$db};
    return $rig->run('psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', $url, '-f', $file);
}

# Apply each batch (an array of ops) in its own transaction, in one session.
sub apply_batches {
    my ($rig, $db, @batches) = @_;
    my $sql = "CREATE TEMP TABLE IF NOT EXISTS sluice_stage (LIKE sluice_stage_template INCLUDING DEFAULTS);\n";
    for my $b (@batches) {
        $sql .= "BEGIN;\n" . stage_sql(@$b) . "SELECT sluice_apply_stage();\nCOMMIT;\nSELECT sluice_fold_counters(true);\n";
    }
    my $r = psql_script($rig, $db, $sql);
    diag($r->[1]) if $r->[0] != 0;
    return $r->[0] == 0;
}

# Create database $db and apply the schema to it; dies when it fails.
sub new_db {
    my ($rig, $db) = @_;
    $rig->psql("CREATE DATABASE $db");
    my $r = psql_script($rig, $db, schema_text());
    die "schema: $r->[1]" if $r->[0] != 0;
}

# The atproto schema as the build joined it ($SLUICE_BUILD/sql/atproto.sql).
sub schema_sql {
    my $file = ($ENV{SLUICE_BUILD} // 'build') . '/sql/atproto.sql';
    open my $fh, '<', $file or die "$file: $! (run make first)";
    local $/;
    return <$fh>;
}

# The schema as one transaction, as `sluiced --init-schema` runs it.
sub schema_text { return "BEGIN;\n" . schema_sql() . "COMMIT;\n"; }

# The output of one query in database $db, decoded; dies when it fails.
sub q1 {
    my ($rig, $db, $sql) = @_;
    my $r = psql_script($rig, $db, "$sql;\n");
    die "query failed: $sql\n$r->[1]" if $r->[0] != 0;
    chomp(my $out = Encode::decode('UTF-8', $r->[1]));
    return $out;
}

1;
