#!/usr/bin/perl
# redis_url with a password, an ACL user and a database number: the worker
# authenticates, selects the database, and no password ever reaches its
# log. A wrong password is a fault the worker backs off from (and logs
# without the password), not a crash.
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use Test::More;

my $rig = SluiceRig->new;
my $sluiced = $rig->bin('sluiced');
my $port = $rig->redis_port;
my $stream = 'firehose:events';
my @cli = ('--no-auth-warning', '--user', 'ingest', '--pass', 'Pw-secret-42');

is($rig->redis('ACL', 'SETUSER', 'ingest', 'on', '>Pw-secret-42', '~*', '&*',
    '+@all'), 'OK', 'an ACL user');
is($rig->redis('CONFIG', 'SET', 'requirepass', 'Default-secret-7'), 'OK',
  'the default user needs a password now');

my %common = (sink => 'raw', batch_size => 10, batch_timeout_ms => 20,
    block_ms => 200, reconnect_delay_ms => 100, reconnect_delay_max_ms => 400);
my $conf = $rig->write_config(%common,
    redis_url => "redis://ingest:Pw-secret-42\@127.0.0.1:$port/3");
is($rig->run($sluiced, '-c', $conf, '--init-schema')->[0], 0, 'schema');
my $pid = $rig->spawn('w', $sluiced, '-c', $conf, '--worker', 'auth-1');
for my $i (1 .. 5) {
    $rig->redis(@cli, '-n', 3, 'XADD', $stream, '*', 'data', qq({"i":$i}));
}
$rig->redis(@cli, '-n', 0, 'XADD', $stream, '*', 'data', '{"db":0}');
ok($rig->wait_until(sub { $rig->psql('select count(*) from events') == 5 }, 60),
  'the entries of database 3 are written');
is($rig->psql(q{select count(*) from events where payload ? 'db'}), 0,
  'database 0 is not read');

# the default user with its password, in the password-only form
my $conf2 = $rig->write_config(%common, stream_key => 'other',
    redis_url => "redis://:Default-secret-7\@127.0.0.1:$port");
my $pid2 = $rig->spawn('w2', $sluiced, '-c', $conf2, '--worker', 'auth-2');
$rig->redis('--no-auth-warning', '-a', 'Default-secret-7', 'XADD', 'other',
    '*', 'data', '{"other":1}');
ok($rig->wait_until(sub {
    $rig->psql(q{select count(*) from events where payload ? 'other'}) == 1 },
    60), 'password-only URL authenticates as the default user');

# a wrong password: refused, retried with backoff, logged without it
my $conf3 = $rig->write_config(%common,
    redis_url => "redis://ingest:Wrong-pass-99\@127.0.0.1:$port");
my $pid3 = $rig->spawn('w3', $sluiced, '-c', $conf3, '--worker', 'auth-3');
ok($rig->wait_until(sub {
    my @l = $rig->log_text('w3') =~ /AUTH refused/g; @l >= 2 }, 30),
  'a refused AUTH is retried and logged');
ok(kill(0, $pid3), 'the worker with the wrong password keeps running');

kill 'TERM', $pid, $pid2, $pid3;
is($rig->wait_exit($pid, 30), 0, 'clean exit');
is($rig->wait_exit($pid2, 30), 0, 'clean exit (2)');
is($rig->wait_exit($pid3, 30), 0, 'a worker backing off stops on TERM too');
for my $name (qw(w w2 w3)) {
    my $log = $rig->log_text($name);
    unlike($log, qr/Pw-secret-42|Default-secret-7|Wrong-pass-99/,
      "no password in the log of $name");
}
like($rig->log_text('w'), qr/redis: connected to redis:\/\/ingest:\*\*\*\@/,
  'the URL is logged redacted');

$rig->redis('--no-auth-warning', '-a', 'Default-secret-7', 'CONFIG', 'SET',
    'requirepass', '');    # so that the rig's cleanup can talk to it
$rig->finish;
done_testing;
