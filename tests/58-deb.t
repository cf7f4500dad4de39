#!/usr/bin/perl
# The Debian package. `make deb` builds it from contrib/debian/ with
# dpkg-buildpackage; its contents (binaries, the conffile, the unit, the
# init script, logrotate, the man pages, the SQL, the sink plugin header)
# are checked with dpkg-deb
# and lintian reports no error. Then, as root, it is installed with dpkg -i
# on this machine (the maintainer scripts are what is tested: a scratch
# root of dpkg --root would need a whole system inside it to run them, and
# dpkg -x runs none): the sluice user and /var/log/sluice appear, the
# installed init script starts the installed sluiced against the rig's
# servers (workers run as sluice and apply entries), sluicectl sees it, the
# init script stops it cleanly; dpkg --purge then removes the user, the log
# folder and /etc/sluice and leaves the database alone. That part is
# skipped when the machine already has the package, a sluice user,
# /etc/sluice or /var/log/sluice (a purge would take them), or with
# SLUICE_DEB_INSTALL=0.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;
use Time::HiRes qw(sleep);

for my $tool (qw(dpkg-buildpackage dh lintian dpkg-deb)) {
    plan skip_all => "$tool is not installed (sh contrib/install-deps.sh)"
      unless grep { -x "$_/$tool" } split /:/, $ENV{PATH};
}

my $rig = SluiceRig->new(redis => 0, pg => 0);
my $root = $rig->root;

# ---- the build ---------------------------------------------------------------
my $r = $rig->run('make', '--no-print-directory', '-C', $root, 'deb');
is($r->[0], 0, 'make deb: exit 0') or diag(substr($r->[1], -3000));
my ($deb) = grep { !/-dbgsym_/ } glob "$root/build/deb/sluice_*.deb";
ok($deb && -f $deb, 'the .deb is in build/deb/') or BAIL_OUT('no package');
unlike($r->[1], qr/\bwarning:/i, 'no compiler or debhelper warnings')
  or diag(join "\n", grep { /warning:/i } split /\n/, $r->[1]);

$r = $rig->run('dpkg-deb', '-c', $deb);
is($r->[0], 0, 'dpkg-deb -c');
my %in;
for (split /\n/, $r->[1]) {
    my @f = split ' ', $_, 6;
    my ($path) = ($f[5] // '') =~ m{^\.(/\S*?)/?$};
    $in{$path} = $f[0] if defined $path;
}
my %want = (
    '/usr/sbin/sluiced'                    => '-rwxr-xr-x',
    '/usr/bin/sluicectl'                   => '-rwxr-xr-x',
    '/usr/bin/sluice-gen'                  => '-rwxr-xr-x',
    '/usr/bin/sluice-replay'               => '-rwxr-xr-x',
    '/usr/bin/sluice-deadletter'           => '-rwxr-xr-x',
    '/usr/bin/sluice-relay'                => '-rwxr-xr-x',
    '/etc/sluice/sluice.conf'              => '-rw-r--r--',
    '/etc/default/sluiced'                 => '-rw-r--r--',
    '/etc/init.d/sluiced'                  => '-rwxr-xr-x',
    '/etc/logrotate.d/sluice'              => '-rw-r--r--',
    '/lib/systemd/system/sluiced.service'  => '-rw-r--r--',
    '/usr/share/man/man8/sluiced.8.gz'     => '-rw-r--r--',
    '/usr/share/man/man8/sluicectl.8.gz'   => '-rw-r--r--',
    '/usr/share/man/man5/sluice.conf.5.gz' => '-rw-r--r--',
    '/usr/share/sluice/sql/atproto.sql'    => '-rw-r--r--',
    '/usr/share/sluice/sql/raw.sql'        => '-rw-r--r--',
    '/usr/share/doc/sluice/copyright'      => '-rw-r--r--',
    '/usr/include/sluice/sink.h'           => '-rw-r--r--',
);
for my $p (sort keys %want) {
    is($in{$p}, $want{$p}, "$p in the package, $want{$p}");
}
ok(!grep(m{^/usr/local}, keys %in), 'nothing under /usr/local');

$r = $rig->run('dpkg-deb', '-I', $deb, 'conffiles');
my %conf = map { $_ => 1 } split /\n/, $r->[1];
ok($conf{$_}, "$_ is a conffile")
  for qw(/etc/sluice/sluice.conf /etc/default/sluiced /etc/init.d/sluiced
    /etc/logrotate.d/sluice);
$r = $rig->run('dpkg-deb', '-f', $deb, 'Depends');
like($r->[1], qr/\badduser\b/, 'Depends: adduser (the postinst creates the user)');
like($r->[1], qr/\blibhiredis/, 'Depends: the shared libraries (shlibs)');

# the unit and the init script name the installed paths
my $x = $rig->dir . '/x';
is($rig->run('dpkg-deb', '-x', $deb, $x)->[0], 0, 'dpkg-deb -x');
sub slurp { open my $f, '<', $_[0] or return ''; local $/; return <$f> }
like(slurp("$x/lib/systemd/system/sluiced.service"),
  qr{^ExecStart=/usr/sbin/sluiced -c /etc/sluice/sluice\.conf$}m, 'the unit runs /usr/sbin/sluiced');
like(slurp("$x/etc/init.d/sluiced"), qr{^DAEMON=\$\{DAEMON:-/usr/sbin/sluiced\}}m,
  'the init script runs /usr/sbin/sluiced');
is(slurp("$x/etc/sluice/sluice.conf"), slurp("$root/etc/sluice.conf"),
  'the conffile is the sample configuration');

# ---- lintian -----------------------------------------------------------------
$r = $rig->run('lintian', '--no-tag-display-limit', $deb);
my @errors = grep { /^E: / } split /\n/, $r->[1];
is("@errors", '', 'lintian: no errors');
my @warnings = grep { /^W: / } split /\n/, $r->[1];
note("lintian: $_") for @warnings;

# ---- installed on this machine -----------------------------------------------
SKIP: {
    skip 'dpkg -i needs root', 1 if $> != 0;
    skip 'SLUICE_DEB_INSTALL=0', 1 if ($ENV{SLUICE_DEB_INSTALL} // '') eq '0';
    my $st = $rig->run('dpkg-query', '-W', '-f=${db:Status-Status}', 'sluice');
    skip 'a sluice package is installed on this machine: not touching it', 1
      if $st->[0] == 0 && $st->[1] ne 'not-installed' && $st->[1] ne '';
    skip 'a sluice user exists on this machine: a purge would remove it', 1
      if defined getpwnam('sluice') || defined getgrnam('sluice');
    for my $d ('/etc/sluice', '/var/log/sluice') {
        skip "$d exists on this machine: a purge would remove it", 1 if -e $d;
    }
    install_and_run();
}

our $installed;
END { purge() if $installed; }

# dpkg with the lock held by another apt or dpkg: wait and retry.
sub dpkg {
    my @args = @_;
    my $r;
    for (1 .. 120) {
        $r = $rig->run('dpkg', @args);
        last unless $r->[0] != 0 && $r->[1] =~ /lock/i;
        sleep 0.5;
    }
    return $r;
}

sub purge {
    my $r = dpkg('--purge', 'sluice');
    $installed = 0 if $r->[0] == 0;
    return $r;
}

sub install_and_run {
    $r = dpkg('-i', $deb);
    is($r->[0], 0, 'dpkg -i: exit 0') or diag($r->[1]);
    $installed = 1;
    my @pw = getpwnam('sluice');
    ok(@pw, 'postinst: the sluice user exists');
    cmp_ok($pw[2] // 1e9, '<', 1000, '... a system user');
    is($pw[7], '/nonexistent', '... without a home');
    ok(-d '/var/log/sluice', 'postinst: /var/log/sluice');
    is((stat '/var/log/sluice')[4], $pw[2], '... owned by sluice');
    ok(-f '/etc/sluice/sluice.conf', '/etc/sluice/sluice.conf installed');
    ok(glob('/etc/rc2.d/S*sluiced'), 'the init script is registered (update-rc.d)');
    like($rig->run('/usr/sbin/sluiced', '--version')->[1], qr/^sluiced \d/, '/usr/sbin/sluiced runs');
    like($rig->run('man', '-w', 'sluice.conf')->[1], qr{/usr/share/man/man5/sluice\.conf\.5\.gz},
      'man finds sluice.conf(5)');
    my $ps = $rig->run('pgrep', '-u', 'sluice');
    is($ps->[1], '', 'the install started nothing');

    # the installed service against the rig's servers
    my $srv = SluiceRig->new;
    my $dir = $srv->dir;
    my $shm = "/sluice-t58-$$";
    my $conf = $srv->write_config(sink => 'raw', batch_size => 16,
        batch_timeout_ms => 50, block_ms => 200, parallel_consumers => 2,
        stats_name => $shm);
    is($srv->run('/usr/sbin/sluiced', '-c', $conf, '--init-schema')->[0], 0,
        'the installed sluiced: --init-schema');
    local $ENV{CONFIG} = $conf;
    local $ENV{PIDFILE} = "$dir/run/sluiced.pid";
    local $ENV{STOP_TIMEOUT} = 30;
    local $ENV{START_TIMEOUT} = 20;
    push @{ $srv->{logs} }, '/var/log/sluice/sluiced.log';
    $r = $srv->run('/etc/init.d/sluiced', 'start');
    is($r->[0], 0, '/etc/init.d/sluiced start: exit 0') or diag($r->[1]);
    my ($pid) = $r->[1] =~ /started \(pid (\d+)\)/;
    $pid //= 0;
    $srv->_pidfile_note('proc-daemon', $pid) if $pid;
    my @workers;
    ok($srv->wait_until(sub {
        @workers = grep { SluiceRig::proc_title($_) =~ /^sluiced: worker / }
          split ' ', $srv->run('pgrep', '-P', $pid)->[1];
        @workers == 2;
    }, 20), 'two workers run') or diag(slurp('/var/log/sluice/sluiced.log'));
    my @uids = map { (stat "/proc/$_")[4] } @workers;
    is("@uids", join(' ', ($pw[2]) x 2), '... as the sluice user');
    ok(-s '/var/log/sluice/sluiced.log', 'it logs to /var/log/sluice/sluiced.log');
    $srv->redis_batch(map { [ 'XADD', 'firehose:events', '*', 'type', 'commit',
        'data', qq({"n":$_}) ] } 1 .. 40);
    ok($srv->wait_until(sub { $srv->psql('select count(*) from events') == 40 }, 20),
        'the workers apply the entries');
    $r = $srv->run('/usr/bin/sluicectl', '-c', $conf, 'status');
    is($r->[0], 0, 'the installed sluicectl: status') or diag($r->[1]);
    $r = $srv->run('/etc/init.d/sluiced', 'stop');
    is($r->[0], 0, '/etc/init.d/sluiced stop: exit 0') or diag($r->[1]);
    like($r->[1], qr/sluiced stopped/, '... stopped');
    ok(!kill(0, $pid), '... the supervisor is gone');
    ok(!grep({ kill 0, $_ } @workers), '... and its workers');
    $srv->_pidfile_forget('proc-daemon');
    my $log = slurp('/var/log/sluice/sluiced.log');
    like($log, qr/stopping: SIGTERM to 2 workers/, 'the log: a graceful stop');
    unlike($log, qr/still running: SIGKILL|shutdown_timeout .* passed/, '... nothing killed');
    is($srv->redis('XPENDING', 'firehose:events', 'firehose-processors') =~ /^0\b/ ? 1 : 0, 1,
        'nothing left pending');

    # ---- purge: the prerm stops a running service first ----
    my $pid2 = 0;
    SKIP: {
        skip '/run/sluiced.pid exists: another sluiced on this machine', 2
          if -e '/run/sluiced.pid';
        # invoke-rc.d asks the machine's policy-rc.d; a container's says
        # no (101), and then the prerm rightly stops nothing
        skip 'policy-rc.d here forbids invoke-rc.d to stop services', 2
          if -x '/usr/sbin/policy-rc.d'
          && system('/usr/sbin/policy-rc.d', 'sluiced', 'stop') != 0;
        # the init script's own pidfile, the one the prerm knows
        delete local $ENV{PIDFILE};
        $r = $srv->run('/etc/init.d/sluiced', 'start');
        is($r->[0], 0, 'started again, pidfile /run/sluiced.pid') or diag($r->[1]);
        ($pid2) = $r->[1] =~ /started \(pid (\d+)\)/;
        $pid2 //= 0;
        $srv->_pidfile_note('proc-daemon2', $pid2) if $pid2;
        ok($pid2 && kill(0, $pid2), '... running');
    }
    $r = purge();
    is($r->[0], 0, 'dpkg --purge: exit 0') or diag($r->[1]);
    if ($pid2) {
        ok($srv->wait_until(sub { !kill 0, $pid2 }, 5),
            'purge (prerm): the running service was stopped');
        ok(!-e '/run/sluiced.pid', '... its pidfile removed');
        if (kill 0, $pid2) {    # not stopped: don't leave it running
            kill 'TERM', $pid2;
            $srv->wait_until(sub { !kill 0, $pid2 }, 40);
            unlink '/run/sluiced.pid';
        }
        $srv->_pidfile_forget('proc-daemon2');
    }
    ok(!defined getpwnam('sluice'), 'purge: the sluice user is gone');
    ok(!defined getgrnam('sluice'), '... and its group');
    ok(!-e '/var/log/sluice', '... /var/log/sluice is gone');
    ok(!-e '/etc/sluice', '... /etc/sluice is gone');
    ok(!-e '/etc/init.d/sluiced' && !-e '/usr/sbin/sluiced', '... the files are gone');
    ok(!glob('/etc/rc?.d/*sluiced'), '... the init script is unregistered');
    is($srv->psql('select count(*) from events'), 40, 'the database is untouched');
    $srv->finish;
}

$rig->finish;
done_testing;
