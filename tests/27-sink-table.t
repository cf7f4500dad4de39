#!/usr/bin/perl
# The table sink (sink = table) with the example of contrib/examples/shop,
# whose file runs three pipelines under one sluiced. Users (flat fields,
# user_created then user_updated) keep their newest profile. Orders (JSON in the
# field `data`) become typed rows (bigint, numeric(12,2), char(3), jsonb,
# timestamptz, text) through JSON paths (one with an array index), a
# plain field, $id and $time, written by two workers. The rows equal what
# the stream implies: in update mode the newest entry of an order in
# stream order, also when an older entry (a requeued one, orig_id)
# arrives last; values with tab, newline, backslash and "\N" arrive
# intact (COPY escaping); an absent value takes the column's DEFAULT. A
# value a column refuses, a NULL for a NOT NULL column and a field that
# is not JSON are each dead-lettered alone, the reason naming the entry,
# the column and the value; the rest of the batch commits. The whole
# stream delivered again changes nothing. In nothing mode (payments,
# plain fields) the first entry in stream order stays, and a value too
# long for a varchar(12) is refused. Settings the database does not match
# (a column the table lacks, a table_key no unique index has, a NOT NULL
# column nothing fills, a missing table) and bad sources stop the worker
# with exit 78 naming FILE:LINE or the key. table_create = yes lets
# --init-schema create the table.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;
use JSON::PP;
use Digest::MD5 qw(md5_hex);

my $rig = SluiceRig->new;
my $json = JSON::PP->new->canonical;
my $r = $rig->psql_file('contrib/examples/shop/shop.sql');
is($r->[0], 0, 'the example SQL loads') or diag($r->[1]);

# the example's settings: the lines before the first section, and each
# section's (a pipeline each: users, orders, payments)
my (%shared, %sec, $cur);
open my $fh, '<', 'contrib/examples/shop/sluice.conf' or die $!;
while (<$fh>) {
    next if /^\s*(#|$)/;
    if (/^\[pipeline (\S+)\]/) { $cur = $sec{$1} = {}; next }
    ($cur // \%shared)->{$1} = $2 if /^\s*(\S+)\s*=\s*(.*?)\s*$/;
}
close $fh;
delete @shared{qw(redis_url database_url)};
is(join(',', map { $sec{$_}{sink} // '' } sort keys %sec), 'table,table,table',
    'the example has three table-sink pipelines');
# the orders pipeline as a file of its own, for the settings it can't take
my %base = (%shared, %{ $sec{orders} }, stats_name => "/sluice-t27t-$$");
my ($stream, $group) = ($sec{orders}{stream_key}, $sec{orders}{consumer_group});
my $ms0 = 1764583200000; # 2025-12-01 10:00:00 UTC
sub sid { my ($i) = @_; return ($ms0 + $i) . '-0' }

# ---- orders: update mode -------------------------------------------------
my (%want, @cmds, %bad);
srand(27);
sub order_entry {
    my ($i, $id, %o) = @_;
    my @items = map { { sku => "SKU-$_", qty => 1 + $_ % 3 } } 1 .. ($id % 4);
    my $amount = sprintf '%.2f', (($id * 37) % 10000) / 100 + 1;
    my %data = (order_id => $id + 0, user => { id => 'u' . ($id % 7) }, amount => $amount + 0,
        currency => 'USD', status => 'placed', items => \@items,
        placed_at => sprintf('2026-12-01T%02d:%02d:00Z', 10 + int($id / 60) % 10, $id % 60), %o);
    delete $data{$_} for grep { !defined $data{$_} } keys %data;
    return \%data;
}
sub want_row {
    my ($i, $d, $channel) = @_;
    my $items = $d->{items};
    return join '|', $d->{order_id}, $d->{user}{id}, sprintf('%.2f', $d->{amount}),
        $d->{currency} // 'EUR', md5_hex($d->{status}), @$items ? $items->[0]{sku} : '-',
        '[' . join(', ', map { sprintf '{"qty": %d, "sku": "%s"}', $_->{qty}, $_->{sku} } @$items) . ']',
        $channel // '-', $d->{placed_at} =~ s/T/ /r =~ s/Z//r, $ms0 + $i, sid($i);
}
for my $i (1 .. 200) {
    my $id = 1000 + $i;
    my $d = order_entry($i, $id);
    my $channel = $i % 2 ? 'web' : 'app';
    my @fields = ('type', 'order_placed', 'data', $json->encode($d), 'channel', $channel);
    if ($i == 50) { # a value the numeric column refuses
        $d->{amount} = 'a lot';
        $bad{amount} = sid($i);
        @fields = ('type', 'order_placed', 'data', $json->encode($d), 'channel', $channel);
    } elsif ($i == 60) { # not JSON
        $bad{json} = sid($i);
        @fields = ('type', 'order_placed', 'data', '{"order_id": 1060, oops', 'channel', $channel);
    } elsif ($i == 70) { # no user: user_id is NOT NULL
        delete $d->{user};
        $bad{user} = sid($i);
        @fields = ('type', 'order_placed', 'data', $json->encode($d), 'channel', $channel);
    } elsif ($i == 83) { # what COPY must escape
        $d->{status} = "tab\there\nnewline back\\slash \\N \\\\N";
        @fields = ('type', 'order_placed', 'data', $json->encode($d), 'channel', $channel);
    } elsif ($i == 93) { # no currency (the DEFAULT), no channel, no items
        delete $d->{currency};
        $d->{items} = [];
        @fields = ('type', 'order_placed', 'data', $json->encode($d));
        $channel = undef;
    }
    push @cmds, ['XADD', $stream, sid($i), @fields];
    $want{$id} = want_row($i, $d, $channel) unless $i == 50 || $i == 60 || $i == 70;
}
# later states of every tenth order: the newest in stream order wins
for my $k (1 .. 20) {
    my $i = 200 + $k;
    my $id = 1000 + 10 * $k;
    my $d = order_entry($i, $id, status => 'shipped', amount => 99.5);
    push @cmds, ['XADD', $stream, sid($i), 'type', 'order_shipped', 'data', $json->encode($d), 'channel', 'app'];
    $want{$id} = want_row($i, $d, 'app'); # also for the refused ones: it is valid
}
sub orders {
    return $rig->psql(q{SELECT string_agg(concat_ws('|', order_id, user_id, amount, currency, md5(status),
        coalesce(first_sku, '-'), coalesce(items::text, '-'), coalesce(channel, '-'),
        to_char(placed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
        (extract(epoch FROM received_at) * 1000)::bigint, stream_id), E'\n' ORDER BY order_id) FROM orders});
}
sub want_orders { join "\n", map { $want{$_} } sort { $a <=> $b } keys %want }

$rig->redis('XGROUP', 'CREATE', $stream, $group, '0', 'MKSTREAM');
$rig->redis_batch(@cmds);
$rig->redis('XGROUP', 'CREATE', 'shop:payments', 'shop-payments', '0', 'MKSTREAM');
$rig->redis('XGROUP', 'CREATE', 'shop:users', 'shop-users', '0', 'MKSTREAM');
$rig->psql('ALTER TABLE payments ALTER method TYPE varchar(12)');
# the example file itself, its three pipelines under one sluiced
my $sup = $rig->spawn('sluiced', $rig->bin('sluiced'), '-c', 'contrib/examples/shop/sluice.conf',
    '-s', 'redis_url=' . $rig->redis_url, '-s', 'database_url=' . $rig->database_url,
    '-s', "stats_name=/sluice-t27t-$$", '-s', 'batch_size=40');
ok($rig->wait_drained($stream, $group, 60), 'two workers drain 220 order entries');
is($rig->psql('SELECT count(*) FROM orders'), scalar(keys %want), 'one row per order, the refused entries left out');
is(orders(), want_orders(), 'every row is what the stream implies: typed values, JSON paths, $id, $time, newest state');
is($rig->psql(q{SELECT md5(status) FROM orders WHERE order_id = 1083}), md5_hex("tab\there\nnewline back\\slash \\N \\\\N"),
    'tab, newline, backslash and a literal \N arrive intact');
is($rig->psql(q{SELECT concat_ws(',', currency, coalesce(channel, 'NULL'), coalesce(first_sku, 'NULL'), items::text) FROM orders WHERE order_id = 1093}),
    'EUR,NULL,NULL,[]', 'an absent value takes the DEFAULT (currency) or is NULL (channel, items[0].sku)');
is($rig->psql(q{SELECT pg_typeof(amount) || ' ' || amount FROM orders WHERE order_id = 1020}), 'numeric 99.50', 'numeric(12,2): 99.5 is stored as 99.50');

my @dead = $rig->stream_entries("$stream:dead");
is(scalar @dead, 3, 'three dead letters');
my ($amount_reason) = grep { /a lot/ } map { $_->[1]{reason} // '' } @dead;
like($amount_reason // '', qr/^entry \Q$bad{amount}\E: column amount \(numeric\(12,2\), from data\.\$\.amount\) value 'a lot': 22P02: invalid input syntax for type numeric/,
    'the refused value: the reason names the entry, the column, its type, the value and PostgreSQL\'s message');
my ($user_reason) = grep { /user_id/ } map { $_->[1]{reason} // '' } @dead;
like($user_reason // '', qr/^entry \Q$bad{user}\E: column user_id \(text, from data\.\$\.user\.id\) value NULL: 23502: null value in column "user_id"/,
    'a NULL for a NOT NULL column: entry, column, value NULL');
my ($json_reason) = grep { /^field data/ } map { $_->[1]{reason} // '' } @dead;
like($json_reason // '', qr/^field data: .*not JSON/, 'a field that is not JSON: the reason names the field');

# an older entry arriving last (a requeued dead letter keeps its place,
# orig_id): it never overwrites a newer state; one newer than the stored
# row does, and its $id and $time are those of its place in the stream
my $late_old = order_entry(15, 1010, status => 'stale', amount => 1);
my $late_new = order_entry(100, 1011, status => 'paid', amount => 12.25);
$rig->redis('XADD', $stream, sid(1000), 'type', 'order_placed', 'data', $json->encode($late_old), 'channel', 'web', 'orig_id', sid(15));
$rig->redis('XADD', $stream, sid(1001), 'type', 'order_paid', 'data', $json->encode($late_new), 'channel', 'web', 'orig_id', sid(100));
$want{1011} = want_row(100, $late_new, 'web');
ok($rig->wait_drained($stream, $group, 60), 'the late entries are drained');
is(orders(), want_orders(), 'update mode: the newest in stream order wins whatever the order of arrival');

# everything delivered again: nothing changes
$rig->redis('XGROUP', 'SETID', $stream, $group, '0');
ok($rig->wait_drained($stream, $group, 60), 'the whole stream delivered again is drained');
is(orders(), want_orders(), 'delivered twice, the rows are the same');

# ---- users: update mode, plain fields --------------------------------------
# u1..u30 created; u1..u10 updated later (a new e-mail); u5's update comes
# again with an older place (orig_id): the newest profile stays
my (%wantu, @ucmds);
for my $i (1 .. 40) {
    my $u = 'u' . (($i - 1) % 30 + 1);
    my $type = $i > 30 ? 'user_updated' : 'user_created';
    my $email = $i > 30 ? "$u\@new.example" : "$u\@example.org";
    my $at = sprintf '2026-12-01T10:%02d:00Z', $i;
    push @ucmds, ['XADD', 'shop:users', sid(3000 + $i), 'type', $type, 'user_id', $u, 'email', $email,
        'name', "User $u", 'signed_up_at', $at];
    $wantu{$u} = join '|', $u, $email, "User $u", sid(3000 + $i);
}
push @ucmds, ['XADD', 'shop:users', sid(3100), 'type', 'user_updated', 'user_id', 'u5', 'email', 'u5@stale.example',
    'name', 'User u5', 'signed_up_at', '2026-12-01T10:05:00Z', 'orig_id', sid(3001)];
sub users {
    return $rig->psql(q{SELECT string_agg(concat_ws('|', user_id, email, name, stream_id), E'\n' ORDER BY user_id) FROM users});
}
$rig->redis_batch(@ucmds);
ok($rig->wait_drained('shop:users', 'shop-users', 60), 'users drained');
is(users(), join("\n", map { $wantu{$_} } sort keys %wantu),
    'one row per user, its newest profile in stream order (an older update arriving last changes nothing)');
is($rig->psql(q{SELECT count(*) FROM users WHERE signed_up_at IS NULL}), 0, 'signed_up_at typed from a plain field');

# ---- payments: nothing mode, plain fields ----------------------------------
my (%wantp, @pcmds);
for my $i (1 .. 60) {
    my $p = 'p' . (($i - 1) % 40 + 1); # p1..p20 come twice: the first stays
    my $amount = sprintf '%d.%02d', $i, $i % 100;
    my $method = $i % 3 ? 'card' : 'transfer';
    $method = 'bank-transfer-sepa-instant' if $i == 7; # too long for varchar(12)
    push @pcmds, ['XADD', 'shop:payments', sid($i), 'payment_id', $p, 'order_id', 1000 + $i, 'amount', $amount, 'method', $method];
    $wantp{$p} //= join '|', $p, 1000 + $i, $amount, $method, $ms0 + $i, sid($i) unless $i == 7;
}
sub payments {
    return $rig->psql(q{SELECT string_agg(concat_ws('|', payment_id, order_id, amount, method,
        (extract(epoch FROM paid_at) * 1000)::bigint, stream_id), E'\n' ORDER BY payment_id) FROM payments});
}
sub want_payments { join "\n", map { $wantp{$_} } sort keys %wantp }
$rig->redis_batch(@pcmds);
ok($rig->wait_drained('shop:payments', 'shop-payments', 60), 'payments drained');
is(payments(), want_payments(), 'nothing mode: one row per payment, the first entry in stream order');
@dead = $rig->stream_entries('shop:payments:dead');
is(scalar @dead, 1, 'one dead letter');
like($dead[0][1]{reason} // '', qr/^entry \Q${\ sid(7)}\E: column method \(character varying\(12\), from method\) value 'bank-transfer-sepa-instant': 22001: value too long/,
    'a value too long for varchar(12): the reason names the entry, the column and the value');
# an older entry of p30 arriving last replaces the row: the oldest stays
$rig->redis('XADD', 'shop:payments', sid(2000), 'payment_id', 'p30', 'order_id', 999, 'amount', '0.01', 'method', 'cash', 'orig_id', sid(0));
$wantp{p30} = join '|', 'p30', 999, '0.01', 'cash', $ms0, sid(0);
ok($rig->wait_drained('shop:payments', 'shop-payments', 60), 'the late payment is drained');
is(payments(), want_payments(), 'nothing mode with $id: the oldest in stream order stays, whatever the order of arrival');
$rig->redis('XGROUP', 'SETID', 'shop:payments', 'shop-payments', '0');
ok($rig->wait_drained('shop:payments', 'shop-payments', 60), 'payments delivered again');
is(payments(), want_payments(), 'delivered twice, nothing changes');
kill 'TERM', $sup;
is($rig->wait_exit($sup, 30), 0, 'sluiced stops cleanly');

# ---- what stops the workers ------------------------------------------------
# line of key $key in config file $c
sub line_of {
    my ($c, $key) = @_;
    open my $f, '<', $c or die $!;
    while (<$f>) { return $. if /^\Q$key\E\s*=/ }
    return 0;
}
my @stops = (
    ['a column the table lacks', { 'column.no_such' => 'data.$.x' },
        sub { my $c = shift; qr/configuration: \Q$c\E:${\ line_of($c, 'column.no_such')}: column\.no_such: table orders has no column no_such/ }],
    ['a table_key no unique index has', { table_key => 'user_id' },
        sub { qr/configuration: table_key: no primary key or unique index of table orders has exactly the columns user_id/ }],
    ['a table_key that is a superset of the primary key', { table_key => 'order_id, user_id' },
        sub { qr/configuration: table_key: no primary key or unique index of table orders has exactly the columns order_id, user_id/ }],
    ['a NOT NULL column without a DEFAULT that nothing fills', { 'column.user_id' => undef },
        sub { qr/configuration: table: column user_id of table orders is NOT NULL without a DEFAULT, and no column\.user_id = SOURCE fills it/ }],
    ['a missing table', { table => 'no_such_table' },
        sub { qr/configuration: table: table no_such_table does not exist in this database/ }],
    ['a bad JSON path', { 'column.first_sku' => 'data.$.items[x].sku' },
        sub { my $c = shift; qr/sink table: \Q$c\E:${\ line_of($c, 'column.first_sku')}: column\.first_sku: '\[' must hold an array index/ }],
    ['an unknown $ source', { 'column.stream_id' => '$idx' },
        sub { my $c = shift; qr/sink table: \Q$c\E:${\ line_of($c, 'column.stream_id')}: column\.stream_id: unknown source '\$idx'/ }],
    ['a table_key column without a source', { table_key => 'nope' },
        sub { qr/sink table: table_key: nope is not a mapped column/ }],
);
for my $s (@stops) {
    my ($what, $set, $re) = @$s;
    my $c = $rig->write_config(%base, %$set);
    $r = $rig->run($rig->bin('sluiced'), '-c', $c, '--worker', 'w-stop');
    is($r->[0], 78, "$what: the worker exits 78 (a configuration error)");
    like($r->[1], $re->($c), "$what: the log names it") or diag($r->[1]);
}

# in a section of a file of several pipelines, the line is the section's
{
    my $c = $rig->dir . '/shop-typo.conf';
    open my $in, '<', 'contrib/examples/shop/sluice.conf' or die $!;
    open my $out, '>', $c or die $!;
    my $line;
    while (<$in>) {
        $line = $. if s/^column\.status = /column.statuss = /;
        print $out $_;
    }
    close $out;
    $r = $rig->run($rig->bin('sluiced'), '-c', $c, '-s', 'redis_url=' . $rig->redis_url,
        '-s', 'database_url=' . $rig->database_url, '--pipeline', 'orders', '--worker', 'w-typo');
    is($r->[0], 78, 'a column the table lacks, in a section: exit 78');
    like($r->[1], qr/configuration: \Q$c\E:$line: column\.statuss: table orders has no column statuss/,
        'the log names the file and the line in the section') or diag($r->[1]);
}

# ---- table_create = yes: --init-schema creates the table --------------------
my %audit = (sink => 'table', stream_key => 'audit:orders', consumer_group => 'audit', table => 'audit.order_log',
    table_key => 'order_id,stream_id', table_create => 'yes', stats_name => "/sluice-t27u-$$",
    'column.order_id' => 'data.$.order_id', 'column.stream_id' => '$id', 'column.at' => '$time',
    'column.status' => 'data.$.status');
my $conf = $rig->write_config(%audit);
$r = $rig->run($rig->bin('sluiced'), '-c', $conf, '--init-schema');
is($r->[0], 0, 'table_create = yes: --init-schema succeeds') or diag($r->[1]);
is($rig->psql(q{SELECT string_agg(column_name || ':' || data_type, ',' ORDER BY column_name)
    FROM information_schema.columns WHERE table_schema = 'audit' AND table_name = 'order_log'}),
    'at:timestamp with time zone,order_id:text,status:text,stream_id:text', 'it creates the table: text columns, $time timestamptz');
is($rig->psql(q{SELECT string_agg(a.attname, ',' ORDER BY a.attname) FROM pg_index i
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
    WHERE i.indrelid = 'audit.order_log'::regclass AND i.indisprimary}), 'order_id,stream_id', 'table_key is its primary key');
$r = $rig->run($rig->bin('sluiced'), '-c', $conf, '--init-schema');
is($r->[0], 0, 'a second --init-schema changes nothing');
$rig->redis('XADD', 'audit:orders', sid(1), 'data', '{"order_id": 1, "status": "placed"}');
$rig->redis('XADD', 'audit:orders', sid(2), 'data', '{"order_id": 1, "status": "paid"}');
$rig->redis('XGROUP', 'CREATE', 'audit:orders', 'audit', '0');
$sup = $rig->spawn('sluiced-audit', $rig->bin('sluiced'), '-c', $conf);
ok($rig->wait_drained('audit:orders', 'audit', 60), 'the audit stream is drained');
is($rig->psql(q{SELECT string_agg(order_id || ' ' || status || ' ' || stream_id || ' ' || (extract(epoch FROM at) * 1000)::bigint, ',' ORDER BY stream_id) FROM audit.order_log}),
    join(',', '1 placed ' . sid(1) . ' ' . ($ms0 + 1), '1 paid ' . sid(2) . ' ' . ($ms0 + 2)), 'and the sink writes into it');
kill 'TERM', $sup;
is($rig->wait_exit($sup, 30), 0, 'sluiced stops cleanly');
$conf = $rig->write_config(%audit, table => 'audit.not_created', table_create => 'no');
$r = $rig->run($rig->bin('sluiced'), '-c', $conf, '--init-schema');
is($r->[0], 0, 'table_create = no: --init-schema succeeds');
is($rig->psql(q{SELECT to_regclass('audit.not_created') IS NULL}), 't', 'and creates nothing');

$rig->finish;
done_testing;
