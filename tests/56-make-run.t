#!/usr/bin/perl
# contrib/run.sh (`make run`): with REDIS_URL and DATABASE_URL set it uses
# those servers and starts none; without them it starts a private Redis and
# PostgreSQL under the state folder. Either way generated events flow into
# the database through sluiced, and an interrupt stops the generator,
# sluiced and the private servers, says where the data is, and leaves the
# data there for the next run.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;

my $rig = SluiceRig->new;
my $dir = $rig->dir;
my $root = $rig->root;
my $build = $rig->bin('');
$build =~ s{/$}{};
# run.sh's sluiced gets a stats segment of its own: under prove -j another
# test's supervisor on the default stream and group would hold the default
# one.
my $shm = "/sluice-t56-$$";

# alive and not a zombie waiting for a slow reaper
sub alive {
    my ($p) = @_;
    return 0 unless $p && kill 0, $p;
    open my $f, '<', "/proc/$p/stat" or return 0;
    return (<$f> // '') !~ /\) Z /;
}
sub kids { my @c = grep { /\S/ } split /\n/, `pgrep -P $_[0]`; return @c }

# ---- servers given ----------------------------------------------------------
my $pid = $rig->spawn('run-given', 'env', 'REDIS_URL=' . $rig->redis_url,
    'DATABASE_URL=' . $rig->database_url, 'SINK=raw', 'RATE=500',
    "SLUICE_STATS_NAME=$shm",
    "SLUICE_BUILD=$build", "SLUICE_STATE=$dir/state-given",
    'sh', "$root/contrib/run.sh");
ok($rig->wait_until(sub { $rig->log_text('run-given') =~ /Ctrl-C stops everything/ }, 60),
  'given servers: run.sh is up') or diag($rig->log_text('run-given'));
unlike($rig->log_text('run-given'), qr/private (Redis|PostgreSQL)/,
  'it starts no server of its own');
ok($rig->wait_until(sub { $rig->psql('select count(*) from events') >= 200 }, 60),
  'generated events reach the database through sluiced');
my @kids = kids($pid);
ok(@kids >= 2, 'sluiced and sluice-gen run under it');
kill 'INT', $pid;
my $st = $rig->wait_exit($pid, 60);
is($st, 0, 'after an interrupt run.sh exits 0');
ok($rig->wait_until(sub { !grep { alive($_) } @kids }, 30), 'sluiced and sluice-gen are gone');
like($rig->log_text('run-given'), qr/supervisor exiting/, 'sluiced stopped gracefully');
is($rig->redis('PING'), 'PONG', 'the given Redis still runs');
my $n = $rig->psql('select count(*) from events');
my $g = $rig->group_info('firehose:events', 'firehose-processors');
is($g->{pending}, 0, 'nothing left pending in the group');

# ---- private servers --------------------------------------------------------
my $state = "$dir/state";
$pid = $rig->spawn('run-private', 'env', 'SINK=raw', 'RATE=500',
    "SLUICE_STATS_NAME=$shm",
    "SLUICE_BUILD=$build", "SLUICE_STATE=$state", 'sh', "$root/contrib/run.sh");
ok($rig->wait_until(sub { $rig->log_text('run-private') =~ /Ctrl-C stops everything/ }, 120),
  'private servers: run.sh is up') or diag($rig->log_text('run-private'));
my ($rurl) = $rig->log_text('run-private') =~ /private Redis: (\S+)/;
my ($durl) = $rig->log_text('run-private') =~ /private PostgreSQL: (\S+)/;
ok($rurl && $durl, 'it says where its servers are');
$durl //= '';
my ($pgpid) = `head -1 $state/pg/data/postmaster.pid 2>/dev/null` =~ /(\d+)/;
$rig->_pidfile_note('proc-run-postgres', $pgpid) if $pgpid;
my $count = sub {
    my $r = $rig->run('psql', '-X', '-A', '-t', '-q', '-d', $durl,
        '-c', 'select count(*) from events');
    return $r->[0] == 0 ? $r->[1] + 0 : -1;
};
ok($rig->wait_until(sub { $count->() >= 200 }, 60),
  'generated events reach the private database');
kill 'INT', $pid;
$st = $rig->wait_exit($pid, 90);
is($st, 0, 'after an interrupt run.sh exits 0');
like($rig->log_text('run-private'), qr/The data is in \Q$state\E/, 'it says where the data is');
ok($pgpid && $rig->wait_until(sub { !alive($pgpid) }, 30), 'the private PostgreSQL stopped');
ok(!-e "$state/redis/redis.sock", 'the private Redis stopped');
ok(-e "$state/pg/data/PG_VERSION" && -e "$state/redis/dump.rdb", 'the data stays');

# a second run goes on with the same data
$pid = $rig->spawn('run-again', 'env', 'SINK=raw', 'RATE=500',
    "SLUICE_STATS_NAME=$shm",
    "SLUICE_BUILD=$build", "SLUICE_STATE=$state", 'sh', "$root/contrib/run.sh");
ok($rig->wait_until(sub { $rig->log_text('run-again') =~ /Ctrl-C stops everything/ }, 120),
  'a second run starts on the kept state');
unlike($rig->log_text('run-again'), qr/creating a PostgreSQL cluster/, 'no new cluster');
($pgpid) = `head -1 $state/pg/data/postmaster.pid 2>/dev/null` =~ /(\d+)/;
$rig->_pidfile_note('proc-run-postgres', $pgpid) if $pgpid;
my $before = $count->();
ok($before >= 200, "the rows of the first run are there ($before)");
ok($rig->wait_until(sub { $count->() > $before }, 60), 'and new ones arrive');
kill 'INT', $pid;
is($rig->wait_exit($pid, 90), 0, 'stopped again');
ok($pgpid && $rig->wait_until(sub { !alive($pgpid) }, 30), 'its PostgreSQL stopped');
$rig->_pidfile_forget('proc-run-postgres');

$rig->finish;
unlink "/dev/shm$shm";
done_testing;
