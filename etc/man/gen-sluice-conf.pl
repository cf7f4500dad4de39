#!/usr/bin/perl
# gen-sluice-conf.pl: write sluice.conf(5) from what sluiced knows and what
# the sample configuration says.
#
#   perl etc/man/gen-sluice-conf.pl SLUICED etc/sluice.conf \
#       etc/man/sluice.conf.5.in > sluice.conf.5
#
# The key names, types, defaults, ranges and environment names come from
# `SLUICED --list-settings` (the settings table of shared/config.c); the
# prose of each key is the comment above its `# key = value` line in the
# sample configuration, and its section the `# ---- Title ----` line above
# that. The result is the template with its @SETTINGS@ line replaced.
#
# It fails (exit 1, naming the keys) when a setting of the table has no
# line in the sample, when a key line of the sample names no setting, or
# when a setting has no prose: the page can't drift from the code.
use strict;
use warnings;

die "usage: $0 SLUICED SAMPLE TEMPLATE\n" unless @ARGV == 3;
my ($sluiced, $sample, $template) = @ARGV;

# ---- the table ------------------------------------------------------------
my (%set, @order);
open my $ls, '-|', $sluiced, '--list-settings'
  or die "$0: $sluiced: $!\n";
while (my $l = <$ls>) {
    chomp $l;
    my ($key, $type, $def, $range, $env) = split /\t/, $l, -1;
    die "$0: $sluiced --list-settings: bad line '$l'\n" unless defined $env;
    $set{$key} = { type => $type, def => $def, range => $range,
        env => [ split ' ', $env ] };
    push @order, $key;
}
close $ls or die "$0: $sluiced --list-settings failed\n";
die "$0: $sluiced --list-settings printed no settings\n" unless @order;

# ---- the sample -------------------------------------------------------------
# Blocks: comment lines up to a blank line; in each, prose lines then the
# key lines they describe.
my (@sections, @errors, %seen);
open my $in, '<', $sample or die "$0: $sample: $!\n";
my (@prose, @keys);
my $flush = sub {
    if (@keys) {
        die "$0: $sample: keys before the first section\n" unless @sections;
        push @{ $sections[-1]{blocks} }, { prose => [@prose], keys => [@keys] };
        push @errors, "no description of " . join(', ', @keys) unless @prose;
    }
    @prose = ();
    @keys = ();
};
while (my $l = <$in>) {
    chomp $l;
    if ($l =~ /^#\s*-{3,}\s*(.*?)\s*-*\s*$/) {
        $flush->();
        push @sections, { title => $1, blocks => [] };
    } elsif ($l =~ /^#\s*([a-z][a-z0-9_]*)\s*=/ && @sections) {
        my $key = $1;
        if (!$set{$key}) {
            push @errors, "$sample:$.: '$key' is no setting of sluiced";
        } else {
            push @keys, $key;
            $seen{$key}++;
        }
    } elsif ($l =~ /^#(?: (.*))?$/) {
        # prose after a key line starts the next block's prose
        $flush->() if @keys;
        push @prose, $1 // '' if @sections;
    } else {
        $flush->();
    }
}
$flush->();
close $in;
push @errors, "setting '$_' is not in $sample" for grep { !$seen{$_} } @order;
if (@errors) {
    print STDERR "$0: $_\n" for @errors;
    exit 1;
}

# ---- roff -------------------------------------------------------------------
sub text {
    my ($s) = @_;
    $s =~ s/\\/\\e/g;
    my @parts = split /(`[^`]*`)/, $s;
    for (@parts) {
        if (s/^`(.*)`$/$1/) {
            s/-/\\-/g;
            $_ = "\\fB$_\\fR";
        }
    }
    $s = join '', @parts;
    $s =~ s/^([.'])/\\&$1/;
    return $s;
}

sub ms {
    my ($v) = @_;
    return "$v ms" if $v == 0;
    for ([3600000, 'h'], [60000, 'min'], [1000, 's']) {
        return $v / $_->[0] . " $_->[1]" if $v % $_->[0] == 0;
    }
    return "$v ms";
}

sub meta {
    my ($key) = @_;
    my $s = $set{$key};
    my $def = length $s->{def} ? $s->{def} : '""';
    my $line = "Default: \\fB$key = " . text($def) . "\\fR";
    $line .= ' (empty)' unless length $s->{def};
    $line .= ' (milliseconds)' if $s->{type} eq 'duration';
    if ($s->{range} =~ /^(-?\d+)\.\.(-?\d+)$/) {
        my ($min, $max) = ($1, $2);
        if ($s->{type} eq 'duration') {
            $line .= '; from ' . ms($min) . ' to ' . ms($max);
        } elsif ($max >= 2**62) {
            $line .= "; $min or more";
        } else {
            $line .= "; from $min to $max";
        }
    } elsif (length $s->{range}) {
        $line .= '; one of ' . join(', ', map { "\\fB$_\\fR" }
            split /\|/, $s->{range});
    }
    $line .= '; environment: ' . join(', ', map { "\\fB\\%$_\\fR" } @{ $s->{env} });
    return "$line.\n";
}

my $out = '';
for my $sec (@sections) {
    $out .= '.SS ' . text($sec->{title}) . "\n";
    for my $b (@{ $sec->{blocks} }) {
        my @k = @{ $b->{keys} };
        $out .= ".TP\n.B $k[0]\n";
        $out .= ".PD 0\n" . join('', map { ".TP\n.B $_\n" } @k[1 .. $#k])
          . ".PD\n" if @k > 1;
        # a comment line that is only "#" separates paragraphs
        my $para = 0;
        for my $p (@{ $b->{prose} }) {
            if ($p eq '') { $para = 1; next; }
            $out .= ".IP\n" if $para;
            $para = 0;
            $out .= text($p) . "\n";
        }
        $out .= ".IP\n";
        $out .= join ".br\n", map { meta($_) } @k;
    }
}

open my $t, '<', $template or die "$0: $template: $!\n";
my $done = 0;
while (my $l = <$t>) {
    if ($l =~ /^\@SETTINGS\@$/) {
        print $out;
        $done = 1;
    } else {
        print $l;
    }
}
die "$0: $template has no \@SETTINGS\@ line\n" unless $done;
