#!/usr/bin/perl
# `make install DESTDIR=... PREFIX=/usr` installs the binaries, the sample
# configuration, the SQL, the man pages, the init script (with its defaults
# file), the runit service directory, the systemd unit and the logrotate
# snippet, with the right modes and with the installed paths written into
# the scripts, and the sink plugin interface <sluice/sink.h> in
# PREFIX/include/sluice.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;

my $rig = SluiceRig->new(redis => 0, pg => 0);
my $dest = $rig->dir . '/root';
my $r = $rig->run('make', '--no-print-directory', '-s', '-C', $rig->root,
    'install', "DESTDIR=$dest", 'PREFIX=/usr', 'SYSCONFDIR=/etc',
    'BUILD=' . ($ENV{SLUICE_BUILD} // 'build'),
    'SANITIZE=' . ($ENV{SLUICE_SANITIZE} // 0));
is($r->[0], 0, 'make install: exit 0') or diag($r->[1]);

my %want = (
    'usr/sbin/sluiced'            => 0755,
    'usr/bin/sluicectl'           => 0755,
    'usr/bin/sluice-gen'          => 0755,
    'usr/bin/sluice-replay'       => 0755,
    'usr/bin/sluice-deadletter'   => 0755,
    'usr/bin/sluice-relay'        => 0755,
    'etc/sluice/sluice.conf'      => 0644,
    'usr/share/sluice/sql/raw.sql' => 0644,
    'usr/share/sluice/sql/atproto.sql' => 0644,
    'etc/init.d/sluiced'          => 0755,
    'etc/default/sluiced'         => 0644,
    'etc/sv/sluiced/run'          => 0755,
    'etc/sv/sluiced/check'        => 0755,
    'etc/sv/sluiced/log/run'      => 0755,
    'etc/s6/sluiced/run'          => 0755,
    'etc/s6/sluiced/notification-fd' => 0644,
    'usr/lib/systemd/system/sluiced.service' => 0644,
    'etc/logrotate.d/sluice'      => 0644,
    'usr/share/man/man8/sluiced.8'   => 0644,
    'usr/share/man/man8/sluicectl.8' => 0644,
    'usr/share/man/man5/sluice.conf.5' => 0644,
    'usr/include/sluice/sink.h'   => 0644,
);
for my $f (sort keys %want) {
    my @st = stat "$dest/$f";
    ok(@st, "$f installed") or next;
    is(sprintf('%04o', $st[2] & 07777), sprintf('%04o', $want{$f}), "$f mode");
}

sub slurp { open my $f, '<', $_[0] or return ''; local $/; return <$f> }
like(slurp("$dest/usr/share/sluice/sql/atproto.sql"),
  qr{^CREATE OR REPLACE FUNCTION sluice_apply_stage\(\).*^CREATE OR REPLACE FUNCTION sluice_fold_counters\(}ms,
  'atproto.sql: the folder joined in order, its entry point and the fold');
like(slurp("$dest/etc/init.d/sluiced"), qr{^DAEMON=\$\{DAEMON:-/usr/sbin/sluiced\}}m,
  'init script: the installed sluiced');
like(slurp("$dest/etc/sv/sluiced/run"), qr{^DAEMON=/usr/sbin/sluiced$}m,
  'runit run: the installed sluiced');
like(slurp("$dest/etc/s6/sluiced/run"), qr{^DAEMON=/usr/sbin/sluiced$}m,
    'the s6 run script points at the installed sluiced');
like(slurp("$dest/etc/sv/sluiced/check"), qr{^SLUICECTL=/usr/bin/sluicectl$}m,
  'runit check: the installed sluicectl');
like(slurp("$dest/usr/lib/systemd/system/sluiced.service"),
  qr{^ExecStart=/usr/sbin/sluiced -c /etc/sluice/sluice\.conf$}m,
  'systemd unit: the installed sluiced and config');
unlike(join('', map { slurp("$dest/$_") } grep { !/^usr\/(s?bin)/ } keys %want),
  qr{/usr/local}, 'no /usr/local left in the installed text files');
is($rig->run('sh', '-n', "$dest/etc/init.d/sluiced")->[0], 0, 'init script: valid sh');
like(slurp("$dest/usr/include/sluice/sink.h"),
  qr/^#define SLUICE_SINK_ABI_VERSION 1\n.*^extern const struct sluice_sink_v1 sluice_sink_v1;$/ms,
  'the plugin interface <sluice/sink.h>: version 1 and the symbol a plugin exports');
is($rig->run("$dest/usr/sbin/sluiced", '--help')->[0], 0, 'installed sluiced runs');
like(slurp("$dest/usr/share/man/man5/sluice.conf.5"), qr/^\.TH SLUICE\.CONF 5 .*^\.B batch_size$/ms,
  'sluice.conf(5): the page made from the settings table');

# the defaults file and the configuration are the admin's: a second
# install keeps them (the sample configuration goes beside it)
open my $fh, '>>', "$dest/etc/default/sluiced" or die;
print $fh "ENABLED=no\n";
close $fh;
ok(!-e "$dest/etc/sluice/sluice.conf.dist", 'a first install: no sluice.conf.dist');
open $fh, '>>', "$dest/etc/sluice/sluice.conf" or die;
print $fh "database_url = postgresql://edited.example/appview\n";
close $fh;
$r = $rig->run('make', '--no-print-directory', '-s', '-C', $rig->root,
    'install', "DESTDIR=$dest", 'PREFIX=/usr', 'SYSCONFDIR=/etc',
    'BUILD=' . ($ENV{SLUICE_BUILD} // 'build'),
    'SANITIZE=' . ($ENV{SLUICE_SANITIZE} // 0));
is($r->[0], 0, 'a second make install');
like(slurp("$dest/etc/default/sluiced"), qr/^ENABLED=no$/m,
  'keeps an edited /etc/default/sluiced');
like(slurp("$dest/etc/sluice/sluice.conf"), qr{^database_url = postgresql://edited\.example/appview$}m,
  'keeps an edited /etc/sluice/sluice.conf');
is(slurp("$dest/etc/sluice/sluice.conf.dist"), slurp($rig->root . '/etc/sluice.conf'),
  '... and puts the sample beside it as sluice.conf.dist');

# other install paths reach the scripts: the defaults file and the pidfile
my $alt = $rig->dir . '/alt';
$r = $rig->run('make', '--no-print-directory', '-s', '-C', $rig->root,
    'install', "DESTDIR=$alt", 'PREFIX=/opt/sluice', 'SYSCONFDIR=/opt/sluice/etc',
    'RUNSTATEDIR=/var/run/sluice',
    'BUILD=' . ($ENV{SLUICE_BUILD} // 'build'),
    'SANITIZE=' . ($ENV{SLUICE_SANITIZE} // 0));
is($r->[0], 0, 'make install with SYSCONFDIR and RUNSTATEDIR') or diag($r->[1]);
my $init = slurp("$alt/opt/sluice/etc/init.d/sluiced");
like($init, qr{SLUICED_DEFAULTS:-/opt/sluice/etc/default/sluiced\}}, 'init script: the defaults file of SYSCONFDIR');
like($init, qr{PIDFILE:-/var/run/sluice/sluiced\.pid\}}, 'init script: the pidfile of RUNSTATEDIR');
like(slurp("$alt/opt/sluice/etc/logrotate.d/sluice"), qr{kill -USR1 "\$\(cat /var/run/sluice/sluiced\.pid\)"},
  'logrotate: the pidfile of RUNSTATEDIR');
unlike(slurp("$alt/opt/sluice/etc/logrotate.d/sluice") . $init,
  qr{(?<![\w.-])(?:/run/sluiced\.pid|/etc/default/sluiced)},
  'no default path left in them');

$rig->finish;
done_testing;
