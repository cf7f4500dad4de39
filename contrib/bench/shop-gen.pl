#!/usr/bin/perl
# shop-gen.pl: a shop's events as Redis XADD commands in RESP, for
# `redis-cli --pipe` (shop.sh loads its backlogs with it).
#
#   perl shop-gen.pl -n N [-s SEED] -f table [--users KEY] [--orders KEY]
#                    [--payments KEY]
#   perl shop-gen.pl -n N [-s SEED] -f flat [--stream KEY]
#
# N events of one shop, the same ones for the same seed (perl's own
# drand48, whatever the platform): orders placed (42 %), each order's
# payment (36 %), a payment event sent twice (2 %, a producer's retry),
# orders shipped once paid (20 %). A kind that has nothing to act on yet
# (no order waiting for its payment, say) places an order instead. About
# N / 20 users (at least 50), 1 to 4 items an order, amounts of 1.00 to
# 300.00, and times one second apart from 2026-12-01T00:00:00Z.
#
# -f table: what contrib/examples/shop/sluice.conf reads: a user's sign-up
# (user_created, the first time an order would be placed for a user not
# seen yet: it takes that event's place) to --users (default shop:users)
# as flat fields user_id, email, name, signed_up_at (and `type`); order
# events (placed, shipped: the order's whole state) to --orders (default
# shop:orders) with the order as JSON in the field `data`, plus `type` and
# `channel`; payments to --payments (default shop:payments) as flat
# fields payment_id, order_id, user_id, amount, method (and `type`).
#
# -f flat: every event to one stream (--stream, default shop:events) as
# flat fields, as the function sink's example (running-totals.sql:
# type payment_processed, user_id, amount) and the plugin's
# (plugin.required = order_id,user_id) read them: type, order_id,
# user_id, amount, then currency, channel, status, items (JSON text) and
# placed_at for an order, payment_id and method for a payment.
#
# The entries get IDs from Redis (XADD KEY *).
use strict;
use warnings;
use Getopt::Long;
use POSIX qw(strftime);

my ($n, $seed, $format) = (0, 42, '');
my ($users_key, $orders_key, $payments_key, $stream_key) =
    ('shop:users', 'shop:orders', 'shop:payments', 'shop:events');
GetOptions('n=i' => \$n, 's=i' => \$seed, 'f=s' => \$format,
    'users=s' => \$users_key, 'orders=s' => \$orders_key, 'payments=s' => \$payments_key,
    'stream=s' => \$stream_key) && $n > 0 && $format =~ /^(table|flat)$/
    or die "usage: shop-gen.pl -n N [-s SEED] -f table|flat [--users KEY]"
    . " [--orders KEY] [--payments KEY] [--stream KEY]\n";

srand($seed);
my $users = $n / 20 < 50 ? 50 : int($n / 20);
my @currencies = qw(EUR USD GBP);
my @channels = qw(web app store);
my @methods = qw(card paypal sepa);
my $t0 = 1796083200; # 2026-12-01T00:00:00Z

my (%order, @unpaid, @paid, @payments, %signed_up);
my ($next_order, $next_payment) = (100000, 0);
binmode STDOUT;
my $out = '';

sub xadd {
    my @w = ('XADD', shift, '*', @_);
    $out .= '*' . scalar(@w) . "\r\n";
    $out .= '$' . length($_) . "\r\n$_\r\n" for @w;
    if (length $out > 1 << 16) {
        print $out;
        $out = '';
    }
}

sub pick_out { # a random element, removed
    my ($a) = @_;
    my $i = int(rand(@$a));
    @$a[$i, -1] = @$a[-1, $i];
    return pop @$a;
}

sub items_json {
    my ($o) = @_;
    return '[' . join(',', map { sprintf '{"sku":"%s","qty":%d}', @$_ } @{ $o->{items} }) . ']';
}

sub order_event {
    my ($type, $o) = @_;
    if ($format eq 'table') {
        my $data = sprintf '{"order_id":%d,"user":{"id":"%s"},"amount":%s,'
            . '"currency":"%s","status":"%s","items":%s,"placed_at":"%s"}',
            $o->{id}, $o->{user}, $o->{amount}, $o->{currency}, $o->{status},
            items_json($o), $o->{placed_at};
        xadd($orders_key, type => $type, channel => $o->{channel}, data => $data);
    } else {
        xadd($stream_key, type => $type, order_id => $o->{id}, user_id => $o->{user},
            amount => $o->{amount}, currency => $o->{currency},
            channel => $o->{channel}, status => $o->{status},
            items => items_json($o), placed_at => $o->{placed_at});
    }
}

sub payment_event {
    my ($p) = @_;
    xadd($format eq 'table' ? $payments_key : $stream_key,
        type => 'payment_processed', payment_id => $p->{id},
        order_id => $p->{order}, user_id => $p->{user},
        amount => $p->{amount}, method => $p->{method});
}

for my $i (1 .. $n) {
    my $r = rand;
    if ($r >= 0.42 && $r < 0.78 && @unpaid) {
        my $o = $order{ pick_out(\@unpaid) };
        my $p = { id => 'p' . ++$next_payment, order => $o->{id}, user => $o->{user},
            amount => $o->{amount}, method => $methods[rand @methods] };
        push @payments, $p;
        payment_event($p);
        $o->{status} = 'paid';
        push @paid, $o->{id};
    } elsif ($r >= 0.78 && $r < 0.80 && @payments) {
        payment_event($payments[rand @payments]);
    } elsif ($r >= 0.80 && @paid) {
        my $o = delete $order{ pick_out(\@paid) };
        $o->{status} = 'shipped';
        order_event('order_shipped', $o);
    } else {
        my $user = 'u' . (1 + int(rand $users));
        if ($format eq 'table' && !$signed_up{$user}++) {
            xadd($users_key, type => 'user_created', user_id => $user,
                email => "$user\@example.org", name => 'User ' . substr($user, 1),
                signed_up_at => strftime('%Y-%m-%dT%H:%M:%SZ', gmtime($t0 + $i)));
            next;
        }
        my $id = ++$next_order;
        my $o = $order{$id} = {
            id => $id,
            user => $user,
            amount => sprintf('%.2f', 1 + int(rand 29900) / 100),
            currency => $currencies[rand @currencies],
            channel => $channels[rand @channels],
            status => 'placed',
            items => [map { [sprintf('SKU-%04d', int(rand 500)), 1 + int(rand 3)] }
                1 .. 1 + int(rand 4)],
            placed_at => strftime('%Y-%m-%dT%H:%M:%SZ', gmtime($t0 + $i)),
        };
        order_event('order_placed', $o);
        push @unpaid, $id;
    }
}
print $out;
