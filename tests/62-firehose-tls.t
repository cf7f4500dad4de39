#!/usr/bin/perl
# The firehose reader over wss://: the test relay behind a TLS front
# (socat, with certificates of a CA made here). The relay's certificate is
# checked against the system's trust store (OpenSSL's default paths, which
# SSL_CERT_FILE replaces here): a certificate of an unknown CA and one for
# another host name are refused, logged, and nothing is written; a trusted
# one gives the 150 entries. Skipped without the recorded frames
# (../shared/data/bluesky).
use strict;
use warnings;
use lib 'tests/lib';
use SluiceRig;
use TestRelay;
use Test::More;

my $rig = SluiceRig->new(pg => 0);
my @FRAMES = TestRelay::recorded_frames_or_skip($rig);
my $LAST = TestRelay::frame_seq($FRAMES[-1]);
my $d = $rig->dir;

# A CA, and a server certificate of it for each name.
sub openssl { my $r = $rig->run('openssl', @_); die "openssl @_: $r->[1]" if $r->[0]; }
openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', "$d/ca.key", '-out', "$d/ca.pem",
    '-days', '2', '-subj', '/CN=sluice test CA');
sub server_cert {
    my ($name) = @_;
    open my $fh, '>', "$d/$name.ext" or die $!;
    print $fh "subjectAltName=DNS:$name\n";
    close $fh;
    openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', "$d/$name.key", '-out', "$d/$name.csr",
        '-subj', "/CN=$name");
    openssl('x509', '-req', '-in', "$d/$name.csr", '-CA', "$d/ca.pem", '-CAkey', "$d/ca.key",
        '-CAcreateserial', '-out', "$d/$name.crt", '-days', '2', '-extfile', "$d/$name.ext");
    open my $out, '>', "$d/$name.pem" or die $!;
    for my $f ("$d/$name.crt", "$d/$name.key") {
        open my $in, '<', $f or die $!;
        local $/;
        my $text = <$in>;
        print $out $text;
    }
    close $out;
    return "$d/$name.pem";
}

my ($url) = TestRelay::start($rig, \@FRAMES);
my ($relay_port) = $url =~ /:(\d+)$/;
# a TLS front for the relay with the certificate $pem; returns its port
my $nfront = 0;
sub tls_front {
    my ($pem) = @_;
    my $port = $rig->free_port;
    $rig->spawn('tls-' . ++$nfront, 'socat',
        "OPENSSL-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork,cert=$pem,verify=0",
        "TCP:127.0.0.1:$relay_port");
    $rig->wait_until(sub { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port") }, 10)
      or die "socat did not listen on $port";
    return $port;
}
my $nreader = 0;
sub reader {
    my ($stream, $port, $ca) = @_;
    my $conf = $rig->write_config(stream_key => $stream, relay_url => "wss://localhost:$port",
        cursor_key => "$stream:cursor", database_url => undef, reconnect_delay_ms => 100);
    local $ENV{SSL_CERT_FILE} = $ca // "$d/none.pem";
    local $ENV{SSL_CERT_DIR} = "$d/no-such-dir";
    my $name = 'reader-' . ++$nreader;
    return ($rig->spawn($name, $rig->bin('sluiced'), '-c', $conf, '--firehose'), $name);
}
sub stop { my ($pid) = @_; kill 'TERM', $pid; return $rig->wait_exit($pid, 30) }

my $good = tls_front(server_cert('localhost'));

# ---- a CA the reader does not trust
my ($pid, $name) = reader('untrusted', $good);
ok($rig->wait_until(sub { $rig->log_text($name) =~ /SSL error: unable to get local issuer certificate/ }, 20),
    'an unknown CA: the certificate is refused, and the reason logged');
like($rig->log_text($name), qr/connection failed: .*; reconnecting in \d+ ms/, 'an unknown CA: the reader tries again with backoff');
is($rig->redis('EXISTS', 'untrusted'), 0, 'an unknown CA: nothing is written');
is(stop($pid), 0, 'an unknown CA: the reader stays up and stops cleanly');

# ---- a trusted CA
($pid, $name) = reader('trusted', $good, "$d/ca.pem");
ok($rig->wait_until(sub { ($rig->redis('GET', 'trusted:cursor') // '') eq $LAST }, 30),
    'a trusted certificate: the frames arrive over wss:// and the cursor reaches the last seq');
is($rig->redis('XLEN', 'trusted'), 150, 'a trusted certificate: 150 entries');
is(stop($pid), 0, 'a trusted certificate: the reader stops cleanly');

# ---- a certificate for another name
my $other = tls_front(server_cert('elsewhere.invalid'));
($pid, $name) = reader('wrongname', $other, "$d/ca.pem");
ok($rig->wait_until(sub { $rig->log_text($name) =~ /SSL error: hostname mismatch/ }, 20),
    'a certificate for another host name is refused');
is($rig->redis('EXISTS', 'wrongname'), 0, 'another host name: nothing is written');
is(stop($pid), 0, 'another host name: the reader stops cleanly');

$rig->finish;
done_testing;
