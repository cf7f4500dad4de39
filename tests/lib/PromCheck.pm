package PromCheck;
# The strict checker of the Prometheus text exposition format that the
# tests share (43-sluicectl.t: sluicectl stats --prometheus;
# 48-supervisor-http.t: sluiced's GET /metrics).
use strict;
use warnings;
use Exporter 'import';
our @EXPORT_OK = qw(strict_prometheus);

# A strict reader of the Prometheus text format (0.0.4): every line is a
# HELP or TYPE comment or a sample; names and label names are valid; label
# values are quoted with \\, \" and \n escapes only; values are floats;
# TYPE comes once, before its samples; counters end in _total; histogram
# samples are _bucket (with le), _sum or _count. Returns the errors.
sub strict_prometheus {
    my ($text) = @_;
    my (@err, %type, %seen_sample);
    my $name_re = qr/[a-zA-Z_:][a-zA-Z0-9_:]*/;
    my $label_re = qr/[a-zA-Z_][a-zA-Z0-9_]*/;
    my $value_re = qr/(?:[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|[+-]Inf|NaN)/;
    my $n = 0;
    push @err, 'does not end with a newline' unless $text =~ /\n\z/;
    for my $line (split /\n/, $text) {
        $n++;
        if ($line =~ /^# HELP ($name_re) (.*)$/) {
            next;
        }
        if ($line =~ /^# TYPE ($name_re) (counter|gauge|histogram|summary|untyped)$/) {
            my ($m, $t) = ($1, $2);
            push @err, "$n: second TYPE for $m" if $type{$m};
            push @err, "$n: TYPE for $m after its samples" if $seen_sample{$m};
            push @err, "$n: counter $m does not end in _total"
              if $t eq 'counter' && $m !~ /_total$/;
            $type{$m} = $t;
            next;
        }
        if ($line =~ /^#/) {
            push @err, "$n: stray comment: $line";
            next;
        }
        my ($m, $labels, $v) = $line =~ /^($name_re)(?:\{(.*)\})? ($value_re)$/;
        if (!defined $m) {
            push @err, "$n: not a sample: $line";
            next;
        }
        my %l;
        if (defined $labels && length $labels) {
            my $rest = $labels;
            while (length $rest) {
                if ($rest =~ s/^($label_re)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)//) {
                    push @err, "$n: duplicate label $1" if exists $l{$1};
                    $l{$1} = $2;
                    last if $3 eq '';
                } else {
                    push @err, "$n: bad labels: {$labels}";
                    last;
                }
            }
            push @err, "$n: bad labels: {$labels}" if length $rest;
        }
        my $base = $m;
        my $t = $type{$m};
        if (!$t && $m =~ /^(.*)_(bucket|sum|count)$/ && ($type{$1} // '') eq 'histogram') {
            $base = $1;
            $t = 'histogram';
            push @err, "$n: bucket without le" if $2 eq 'bucket' && !exists $l{le};
        }
        push @err, "$n: sample of $m before (or without) its TYPE" unless $t;
        push @err, "$n: histogram $m sample must be _bucket, _sum or _count"
          if $t && $t eq 'histogram' && $base eq $m;
        $seen_sample{$base} = 1;
    }
    return @err;
}

1;
