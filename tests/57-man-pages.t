#!/usr/bin/perl
# The man pages. sluice.conf(5), made by the build from the settings table
# (sluiced --list-settings) and the comments of etc/sluice.conf, has every
# setting sluiced knows with its default and its environment names; the
# generator refuses a sample that leaves a setting undescribed or names one
# sluiced does not know. sluiced(8) and sluicectl(8) name every option
# (and sluicectl(8) every command) of their --help. All three render
# without a warning from groff or man, and lexgrog reads their NAME lines.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;

my $rig = SluiceRig->new(redis => 0, pg => 0);
my $root = $rig->root;
my $sluiced = $rig->bin('sluiced');
my $conf5 = $rig->bin('man/sluice.conf.5');
my %page = (
    'sluice.conf.5' => $conf5,
    'sluiced.8'     => "$root/etc/man/sluiced.8",
    'sluicectl.8'   => "$root/etc/man/sluicectl.8",
);
ok(-s $conf5, 'the build made sluice.conf.5') or BAIL_OUT("no $conf5: make all");

# The page as text, one long line a paragraph line, no bold or underline.
sub render {
    my ($file) = @_;
    my $r = $rig->run('groff', '-man', '-Tascii', '-P-c', '-P-b', '-P-u',
        '-P-o', '-rLL=300n', $file);
    is($r->[0], 0, "$file renders") or diag($r->[1]);
    return $r->[1];
}

# ---- every setting, its default and its environment names ----------------
my $r = $rig->run($sluiced, '--list-settings');
is($r->[0], 0, 'sluiced --list-settings: exit 0');
my @settings;
for my $l (split /\n/, $r->[1]) {
    my ($key, $type, $def, $range, $env) = split /\t/, $l, -1;
    push @settings, { key => $key, type => $type, def => $def,
        env => [ split ' ', $env // '' ] };
}
cmp_ok(scalar @settings, '>=', 40, 'it lists the settings (' . @settings . ')');
my @cc = grep { $_->{key} eq 'batch_size' } @settings;
is_deeply(\@cc, [ { key => 'batch_size', type => 'int', def => '500',
    env => [ 'BATCH_SIZE', 'SLUICE_BATCH_SIZE' ] } ],
  'batch_size: int, 500, BATCH_SIZE and SLUICE_BATCH_SIZE');

my $text = render($conf5);
my @missing;
for my $s (@settings) {
    my $def = length $s->{def} ? quotemeta $s->{def} : '""';
    my $env = join ',\s+', map { quotemeta } @{ $s->{env} };
    push @missing, $s->{key}
      # its tag: alone on its line, or before its text when it is shorter
      # than the indent
      unless $text =~ /^ {7}\Q$s->{key}\E(?:\s*$| +\S)/m
      && $text =~ /^\s+Default:\s+\Q$s->{key}\E\s+=\s+$def[;. (]/m
      && $text =~ /^\s+Default:\s+\Q$s->{key}\E\s+=.*environment:\s+$env\.$/m;
}
is("@missing", '', 'sluice.conf(5): every setting with its default and environment names');
# each tag is followed by prose, not only by the default line
my @bare;
for my $s (@settings) {
    push @bare, $s->{key} if $text =~ /^\s+\Q$s->{key}\E\s*\n\s+Default:/m;
}
is("@bare", '', 'every setting has a description above its default');
like($text, qr/^\s+Default:\s+relay_idle_timeout_ms = 60000 \(milliseconds\); from 1 s to 24 h;/m,
  'durations: the default in ms, the range with units');
like($text, qr/^\s+Default:\s+log_level = info; one of debug, info, notice, warn, error;/m,
  'log_level: its choices');
like($text, qr/^\s+Default:\s+stream_maxlen = 500000; 0 or more;/m, 'an unbounded maximum');
like($text, qr/^\s+Default:\s+firehose_max_depth = 32; from 4 to 1000;/m,
  'a key of a group of keys has its own line');

# ---- the generator refuses what would make the page drift -----------------
my $dir = $rig->dir;
sub slurp { open my $f, '<', $_[0] or die "$_[0]: $!"; local $/; return <$f> }
sub spew { open my $f, '>', $_[0] or die "$_[0]: $!"; print $f $_[1]; close $f }
my $sample = slurp("$root/etc/sluice.conf");
my @gen = ('perl', "$root/etc/man/gen-sluice-conf.pl", $sluiced);
my $tmpl = "$root/etc/man/sluice.conf.5.in";

(my $undescribed = $sample) =~ s/^# XREADGROUP BLOCK when.*\n(?:#(?! block_ms).*\n)*//m;
isnt($undescribed, $sample, 'a sample without the prose of block_ms');
spew("$dir/undescribed.conf", $undescribed);
$r = $rig->run(@gen, "$dir/undescribed.conf", $tmpl);
isnt($r->[0], 0, '... is refused');
like($r->[1], qr/no description of block_ms/, '... naming the key');

(my $without = $sample) =~ s/^# claim_interval_ms = .*\n//m;
spew("$dir/without.conf", $without);
$r = $rig->run(@gen, "$dir/without.conf", $tmpl);
isnt($r->[0], 0, 'a sample without a setting is refused');
like($r->[1], qr/setting 'claim_interval_ms' is not in/, '... naming it');

spew("$dir/unknown.conf", "$sample\n# ---- More\n\n# Prose.\n# no_such_key = 1\n");
$r = $rig->run(@gen, "$dir/unknown.conf", $tmpl);
isnt($r->[0], 0, 'a sample naming a key sluiced does not know is refused');
like($r->[1], qr/'no_such_key' is no setting of sluiced/, '... naming it');

$r = $rig->run(@gen, "$root/etc/sluice.conf", $tmpl);
is($r->[0], 0, 'the generator on the real sample: exit 0');
is($r->[1], slurp($conf5), '... the page the build made');

# ---- sluiced(8), sluicectl(8): every option of --help ---------------------
for my $prog ('sluiced', 'sluicectl') {
    my $help = $rig->run($rig->bin($prog), '--help');
    is($help->[0], 0, "$prog --help: exit 0");
    my %opts;
    $opts{$1} = 1 while $help->[1] =~ /(?<![\w-])(--[a-z][a-z-]*|-[a-zA-Z])\b/g;
    delete $opts{'--json'};
    delete $opts{'--prometheus'};
    my $man = render($page{"$prog.8"});
    my @absent = grep { $man !~ /(?<![\w-])\Q$_\E(?![\w-])/ } sort keys %opts;
    cmp_ok(scalar keys %opts, '>=', $prog eq 'sluiced' ? 12 : 3,
        "$prog --help: its options (" . join(' ', sort keys %opts) . ')');
    is("@absent", '', "$prog.8 names every option of $prog --help");
    # and the section of each long option describes it
    if ($prog eq 'sluicectl') {
        my ($cmds) = $help->[1] =~ /^Commands:\n(.*?)\n\n/ms;
        my @cmds = $cmds =~ /^  (\w+)/mg;
        cmp_ok(scalar @cmds, '>=', 7, "sluicectl --help: its commands (@cmds)");
        my @nocmd = grep { $man !~ /^\s+\Q$_\E\b/m } @cmds;
        is("@nocmd", '', 'sluicectl.8 describes every command');
        like($man, qr/^\s+stats --json$/m, '... stats --json');
        like($man, qr/^\s+stats --prometheus$/m, '... stats --prometheus');
    }
    # exit codes of --help are in EXIT STATUS
    my ($codes) = $help->[1] =~ /Exit status:(.*)/s;
    my @codes = ($codes // '') =~ /\b(\d+)\b/g;
    my ($status) = $man =~ /^EXIT STATUS\n(.*?)^\S/ms;
    my @nocode = grep { ($status // '') !~ /^ {7}$_(?:\s*$| {2,}\S)/m } @codes;
    ok(@codes >= 5, "$prog --help: exit codes @codes");
    is("@nocode", '', "$prog.8: every exit code in EXIT STATUS");
}

# ---- no warnings; lexgrog reads them ---------------------------------------
for my $name (sort keys %page) {
    my $f = $page{$name};
    $r = $rig->run('groff', '-man', '-ww', '-z', $f);
    is($r->[0], 0, "$name: groff -man -ww -z exit 0");
    is($r->[1], '', "$name: no groff warnings");
    {
        local $ENV{MANWIDTH} = 80;
        local $ENV{LC_ALL} = 'C.UTF-8';
        $r = $rig->run('sh', '-c', 'man --warnings -l "$1" 2>&1 >/dev/null', 'sh', $f);
    }
    is($r->[0], 0, "$name: man --warnings -l exit 0");
    is($r->[1], '', "$name: no man warnings");
    $r = $rig->run('lexgrog', $f);
    is($r->[0], 0, "$name: lexgrog finds its NAME") or diag($r->[1]);
    my ($base) = $name =~ /^(.*)\.\d$/;
    like($r->[1], qr/: "\Q$base\E - \S/, "$name: NAME is '$base - ...'");
}

$rig->finish;
done_testing;
