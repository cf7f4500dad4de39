# TestRelay.pm: a minimal WebSocket server that plays recorded firehose
# frames as com.atproto.sync.subscribeRepos, for the firehose reader's
# tests. It runs in a forked child of the test, on a loopback port.
#
#   use TestRelay;
#   my @frames = TestRelay::recorded_frames($rig);  # () when the data is absent
#   my @frames = TestRelay::read_frames($file);   # [u32 LE length][frame]...
#   my ($url, $pid) = TestRelay::start($rig, \@frames, close_after => 40,
#                                      delay => 0.02);
#
# Each connection gets the frames whose seq is above the ?cursor= it asked
# for (all of them without one), one binary message each, delay seconds
# apart (none by default); then it stays open and idle, or is closed after
# close_after frames. Frames whose seq can't be read (garbage a test made)
# follow the frame before them. The child writes one line per connection
# to LOGDIR/relay.log, with the cursor asked for.
package TestRelay;
use strict;
use warnings;
use IO::Socket::INET;
use Digest::SHA qw(sha1);
use MIME::Base64 qw(encode_base64);
use POSIX ();
use Test::More ();

# The recorded data's folder: SLUICE_BLUESKY_DATA or ../shared/data/bluesky.
sub data_dir { return $ENV{SLUICE_BLUESKY_DATA} // '../shared/data/bluesky' }

# The 150 recorded relay frames (frames.bin.zst, decompressed into the
# rig's folder once), or () when the file is not there: the caller skips.
sub recorded_frames {
    my ($rig) = @_;
    my $zst = data_dir() . '/frames.bin.zst';
    return () unless -r $zst;
    my $bin = $rig->dir . '/frames.bin';
    system("zstd -qdc '$zst' > '$bin'") == 0 or die "zstd -dc $zst failed"
      unless -s $bin;
    return read_frames($bin);
}

# The recorded frames for a test that needs them: when the file is not
# there, the rig is cleaned up and the whole test is skipped (plan
# skip_all: it never returns).
sub recorded_frames_or_skip {
    my ($rig) = @_;
    my @frames = recorded_frames($rig);
    return @frames if @frames;
    $rig->cleanup;
    Test::More::plan(skip_all => 'recorded frames absent (' . data_dir() . '/frames.bin.zst)');
}

# The frames of a file of [u32 little-endian length][frame] records.
sub read_frames {
    my ($file) = @_;
    open my $fh, '<:raw', $file or die "$file: $!";
    local $/;
    my $all = <$fh>;
    close $fh;
    my @f;
    my $o = 0;
    while ($o + 4 <= length $all) {
        my $n = unpack 'V', substr($all, $o, 4);
        push @f, substr($all, $o + 4, $n);
        $o += 4 + $n;
    }
    return @f;
}

# The body's seq of a frame (header map, then a body map holding "seq"),
# read by scanning for the key: enough for recorded frames; undef if none.
sub frame_seq {
    my ($f) = @_;
    my $i = index($f, "\x63seq");
    return undef if $i < 0;
    my $h = ord substr($f, $i + 4, 1);
    return undef if ($h >> 5) != 0;
    my $ai = $h & 31;
    return $ai if $ai < 24;
    my %w = (24 => 1, 25 => 2, 26 => 4, 27 => 8);
    my $n = $w{$ai} or return undef;
    my $v = 0;
    $v = $v * 256 + ord($_) for split //, substr($f, $i + 5, $n);
    return $v;
}

sub _ws_frame {
    my ($payload) = @_;
    my $n = length $payload;
    my $h = "\x82";
    if ($n < 126) { $h .= chr($n) }
    elsif ($n < 65536) { $h .= chr(126) . pack('n', $n) }
    else { $h .= chr(127) . pack('Q>', $n) }
    return $h . $payload;
}

sub _serve {
    my ($c, $frames, %opt) = @_;
    my $req = '';
    while ($req !~ /\r\n\r\n/) {
        my $got = sysread($c, $req, 4096, length $req);
        return 'no request' unless $got;
    }
    my ($path) = $req =~ m{^GET (\S+)};
    my ($key) = $req =~ /^Sec-WebSocket-Key:\s*(\S+)/mi;
    return 'not a websocket request' unless defined $key;
    my $accept = encode_base64(sha1($key . '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'), '');
    print $c "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
      . "Connection: Upgrade\r\nSec-WebSocket-Accept: $accept\r\n\r\n";
    my ($cursor) = ($path // '') =~ /[?&]cursor=(\d+)/;
    my ($sent, $send) = (0, !defined $cursor);
    for my $f (@$frames) {
        my $seq = frame_seq($f);
        $send = $seq > $cursor if defined $seq && defined $cursor;
        next unless $send;
        print $c _ws_frame($f) or return "write failed after $sent";
        $sent++;
        select(undef, undef, undef, $opt{delay}) if $opt{delay};
        return "closed after $sent frames (close_after)" . (defined $cursor ? " (cursor $cursor)" : '')
          if $opt{close_after} && $sent >= $opt{close_after};
    }
    # idle, as a relay with nothing new, until the reader goes
    my $buf;
    1 while sysread($c, $buf, 4096);
    return "reader went after $sent frames" . (defined $cursor ? " (cursor $cursor)" : '');
}

# Fork the relay on a free port of $rig; returns (ws://URL, pid). The rig
# kills it at cleanup when the test registers it as a spawned process.
sub start {
    my ($rig, $frames, %opt) = @_;
    my $port = $rig->free_port;
    my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
        Listen => 8, ReuseAddr => 1) or die "relay listen: $!";
    my $log = $rig->dir . '/relay.log';
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open my $lf, '>>', $log;
        $lf->autoflush(1);
        $SIG{PIPE} = 'IGNORE';
        while (my $c = $srv->accept) {
            binmode $c;
            $c->autoflush(1);
            my $k = fork;
            if (defined $k && $k == 0) {
                my $why = _serve($c, $frames, %opt);
                print $lf "connection: $why\n";
                POSIX::_exit(0);
            }
            close $c;
        }
        POSIX::_exit(0);
    }
    close $srv;
    $rig->{procs}{"relay-$pid"} = $pid;
    return ("ws://127.0.0.1:$port", $pid);
}

1;
