#!/usr/bin/perl
# The runit service directory under runsv: ./run starts sluiced in the
# foreground (through chpst as `nobody` when the test runs as root), ./check
# makes `sv check` succeed once it runs, log/run collects its lines with
# svlogd, `sv hup` reloads (a changed worker count takes effect), `sv down`
# stops it gracefully, and runsv restarts it when it dies.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;
use File::Copy qw(copy);

plan skip_all => 'runit (runsv, sv, chpst, svlogd) not installed'
  unless grep { -x "$_/runsv" } split /:/, $ENV{PATH};

my $rig = SluiceRig->new;
my $dir = $rig->dir;
my $sluiced = $rig->bin('sluiced');
my $stream = 'firehose:events';
# A stats segment of its own: under prove -j another test's supervisor on
# the default stream and group would hold the default one (exit 75).
my $shm = "/sluice-t54-$$";
my %settings = (sink => 'raw', batch_size => 16, batch_timeout_ms => 50,
    block_ms => 200, parallel_consumers => 1, stats_name => $shm);
my $conf = $rig->write_config(%settings);
is($rig->run($sluiced, '-c', $conf, '--init-schema')->[0], 0, 'schema');

my $user = $> == 0 ? 'nobody' : '';
my $sv = "$dir/sv/sluiced";
mkdir "$dir/sv";
mkdir $sv;
mkdir "$sv/log";
for my $f ('run', 'check', 'log/run') {
    copy($rig->root . "/etc/runit/sluiced/$f", "$sv/$f") or die "$f: $!";
    chmod 0755, "$sv/$f";
}
open my $fh, '>', "$sv/conf" or die;
print $fh "DAEMON=$sluiced\nCONFIG=$conf\nSLUICECTL=" . $rig->bin('sluicectl')
  . "\nSLUICE_USER=$user\nLOGDIR=$dir/svlog\nLOG_USER=\n";
close $fh;
chmod 0644, $conf;

my $runsv = $rig->spawn('runsv', 'runsv', $sv);
my $svc = sub { $rig->run('sv', '-w', 60, @_, $sv) };
ok($rig->wait_until(sub { $rig->run('sv', 'check', $sv)->[0] == 0 }, 60),
  'sv check succeeds: ./check finds the running supervisor');
is($rig->run('sh', '-c', "cd $sv && ./check")->[0], 0,
  './check itself: 0 while sluiced runs');
my ($pid) = $rig->run('sv', 'status', $sv)->[1] =~ /^run: \S+ \(pid (\d+)\)/;
ok($pid, "sv status: running (pid " . ($pid // '?') . ")");
$pid //= 0;
my $uid = (stat "/proc/$pid")[4];
if ($user) {
    is($uid, scalar getpwnam('nobody'), 'chpst: it runs as nobody');
} else {
    is($uid, $>, 'it runs as the invoking user (SLUICE_USER empty)');
}

$rig->redis('XADD', $stream, '*', 'type', 'commit', 'data', qq({"n":$_}))
  for 1 .. 20;
ok($rig->wait_until(sub { $rig->psql('select count(*) from events') == 20 }, 60),
  'entries applied');

my $new = $rig->write_config(%settings, parallel_consumers => 2);
rename $new, $conf or die;
chmod 0644, $conf;
is($rig->run('sv', 'hup', $sv)->[0], 0, 'sv hup');
ok($rig->wait_until(sub { children($pid) == 2 }, 60),
  'after sv hup the new worker count (2) is in effect');

ok($rig->wait_until(sub { -s "$dir/svlog/current" }, 30),
  'svlogd writes the log');
like(slurp("$dir/svlog/current"), qr/^\d{4}-\d\d-\d\d_\d\d:\d\d:\d\d\.\d+ .*supervisor/m,
  'the log holds the supervisor lines with svlogd timestamps');

# runsv restarts it when it dies (a pid of 0 would signal our own
# process group: prove and all)
kill 'KILL', $pid if $pid;
ok($rig->wait_until(sub {
    my ($p) = $rig->run('sv', 'status', $sv)->[1] =~ /^run: \S+ \(pid (\d+)\)/;
    $p && $p != $pid && $rig->run('sv', 'check', $sv)->[0] == 0 }, 90),
  'killed with SIGKILL: runsv starts a new one');
($pid) = $rig->run('sv', 'status', $sv)->[1] =~ /\(pid (\d+)\)/;
ok($rig->wait_until(sub { children($pid) == 2 }, 60), 'the new one runs 2 workers');
my @workers = children($pid);

my $r = $svc->('down');
is($r->[0], 0, 'sv down: exit 0') or diag($r->[1]);
like($rig->run('sv', 'status', $sv)->[1], qr/^down: /, 'sv status: down');
ok(!kill(0, $pid), 'the supervisor is gone');
ok($rig->wait_until(sub { !grep { kill 0, $_ } @workers }, 30), 'and its workers');
is($rig->run('sv', 'check', $sv)->[0], 0, 'sv check of a down service: ok');
isnt($rig->run('sh', '-c', "cd $sv && ./check")->[0], 0,
  './check itself fails when no supervisor runs');

$rig->run('sv', 'exit', $sv);
ok(defined $rig->wait_exit($runsv, 30), 'runsv exits on sv exit');

sub children {
    return () unless $_[0];
    my @c = grep { /\S/ } split /\n/, `pgrep -P $_[0]`;
    return @c;
}
sub slurp { open my $f, '<', $_[0] or return ''; local $/; return <$f> }

$rig->finish;
unlink "/dev/shm$shm";
done_testing;
