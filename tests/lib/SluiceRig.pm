# SluiceRig.pm: the integration-test rig. It starts a private redis-server
# and a private PostgreSQL cluster in a temporary directory, on free loopback
# ports, runs sluice's programs against them, and removes everything when
# the test ends: at exit, on INT/TERM/HUP, and, through a watchdog process,
# even when the test itself is killed with SIGKILL.
#
#   use lib 'tests/lib';
#   use SluiceRig;
#   my $rig = SluiceRig->new;                  # redis + postgres
#   my $conf = $rig->write_config(batch_size => 100);
#   $rig->run_ok([$rig->bin('sluiced'), '-c', $conf, '--init-schema']);
#   my $pid = $rig->spawn('w1', $rig->bin('sluiced'), '-c', $conf,
#                         '--worker', 't-1');
#   $rig->redis('XADD', 'firehose:events', '*', 'type', 'commit', ...);
#   ok($rig->wait_until(sub { $rig->psql('select count(*) from events') == 5 }));
#   $rig->finish;                              # sanitizer check, cleanup
#   done_testing;
#
# PostgreSQL refuses to run as root: when the test runs as root the cluster
# is created and run as the user `nobody`. No system instance is touched.
package SluiceRig;

use strict;
use warnings;
use Carp qw(croak);
use Cwd qw(abs_path);
use File::Path qw(remove_tree);
use File::Temp qw(tempdir);
use IO::Socket::INET;
use POSIX qw(:sys_wait_h setsid);
use Test::More;
use Exporter 'import';
our @EXPORT_OK = qw(proc_title workers_of);
use Time::HiRes qw(sleep time);

my $PGBIN = '/usr/lib/postgresql/15/bin';
# The first line of an ASan, LeakSanitizer or UBSan report (or of a
# sanitizer that could not run its check).
my $SAN_REPORT = join '|', 'ERROR: (?:Address|Leak)Sanitizer',
  'runtime error:', 'Sanitizer has encountered a fatal error';
$SAN_REPORT = qr/$SAN_REPORT/;
my @RIGS;    # live rigs, for the signal handlers and END

sub new {
    my ($class, %opt) = @_;
    my $self = bless {
        redis      => $opt{redis} // 1,
        pg         => $opt{pg} // 1,
        procs      => {},    # name => pid of processes started by spawn()
        logs       => [],
        root       => abs_path('.'),
    }, $class;
    $self->{build} = $ENV{SLUICE_BUILD} // 'build';
    $self->{build} = "$self->{root}/$self->{build}"
      unless $self->{build} =~ m{^/};
    $self->{dir} = tempdir('sluice-test-XXXXXX', TMPDIR => 1, CLEANUP => 0);
    chmod 0755, $self->{dir};
    mkdir "$self->{dir}/pids";
    # Sanitizer reports of every process the rig starts (finish() reads
    # them): writable by all, as sluiced may run as `nobody`.
    mkdir "$self->{dir}/san";
    chmod 01777, "$self->{dir}/san";
    push @RIGS, $self;
    $self->_install_signal_handlers;
    $self->_start_watchdog;
    $self->start_redis if $self->{redis};
    $self->start_pg if $self->{pg};
    return $self;
}

sub dir { $_[0]{dir} }
sub bin { my ($self, $name) = @_; return "$self->{build}/$name"; }
sub root { $_[0]{root} }

# A TCP port on 127.0.0.1 that nothing listens on right now.
sub free_port {
    my $s = IO::Socket::INET->new(
        LocalAddr => '127.0.0.1',
        LocalPort => 0,
        Proto     => 'tcp',
        Listen    => 1,
        ReuseAddr => 1
    ) or croak "free_port: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}

sub _pidfile_note {
    my ($self, $tag, $pid) = @_;
    open my $fh, '>', "$self->{dir}/pids/$tag" or return;
    print $fh "$pid\n";
    close $fh;
}

sub _pidfile_forget { my ($self, $tag) = @_; unlink "$self->{dir}/pids/$tag"; }

# The process title of $pid (its /proc cmdline, words joined by blanks;
# '' when it is gone): "sluiced: worker test-1", "sluiced: firehose URL".
sub proc_title {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/cmdline" or return '';
    local $/;
    my $t = <$fh> // '';
    $t =~ s/\0+$//;
    $t =~ s/\0/ /g;
    return $t;
}

# The live workers whose parent is $ppid (a supervisor), from their
# process titles: { consumer name => pid }, zombies left out.
sub workers_of {
    my ($ppid) = @_;
    my %w;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $s = <$fh> // next;
        my ($pid, $rest) = $s =~ /^(\d+) \(.*\) (.*)$/ or next;
        my ($state, $pp) = split ' ', $rest;
        next if $pp != $ppid || $state eq 'Z';
        $w{$1} = $pid if proc_title($pid) =~ /^sluiced: worker (\S+)/;
    }
    return \%w;
}

# ---- redis -------------------------------------------------------------

sub start_redis {
    my ($self) = @_;
    $self->{redis_port} //= free_port();
    my $d = "$self->{dir}/redis";
    mkdir $d;
    my $pid = $self->_fork_exec(
        "$self->{dir}/redis.log",
        'redis-server', '--port', $self->{redis_port},
        '--bind', '127.0.0.1', '--dir', $d, '--save', '',
        '--appendonly', 'no', '--protected-mode', 'no',
        '--daemonize', 'no');
    $self->{redis_pid} = $pid;
    $self->_pidfile_note('redis', $pid);
    $self->wait_until(sub { ($self->redis('PING') // '') eq 'PONG' }, 20)
      or croak "redis-server did not start: see $self->{dir}/redis.log";
    return $pid;
}

sub stop_redis {
    my ($self, $sig) = @_;
    my $pid = delete $self->{redis_pid} or return;
    kill $sig // 'KILL', $pid;
    waitpid $pid, 0;
    $self->_pidfile_forget('redis');
}

# Kill redis and start an empty one on the same port (a restart that lost
# its dataset).
sub restart_redis_empty {
    my ($self) = @_;
    $self->stop_redis('KILL');
    $self->start_redis;
}

sub redis_url { my ($self) = @_; return "redis://127.0.0.1:$self->{redis_port}"; }
sub redis_port { $_[0]{redis_port} }

# Run one redis-cli command; returns its output with the trailing newline
# removed (undef when redis-cli failed to connect).
sub redis {
    my ($self, @args) = @_;
    my $out = $self->_capture('redis-cli', '-p', $self->{redis_port}, @args);
    return undef unless defined $out;
    chomp $out;
    return $out;
}

# Feed many commands through one redis-cli --pipe-less connection: each
# element of @cmds is an array ref of words. Returns redis-cli's output.
sub redis_batch {
    my ($self, @cmds) = @_;
    my $file = "$self->{dir}/redis-batch.$$." . int(rand(1e9));
    open my $fh, '>', $file or croak "$file: $!";
    for my $c (@cmds) {
        print $fh '*' . scalar(@$c) . "\r\n";
        for my $w (@$c) {
            my $b = $w;
            utf8::encode($b) if utf8::is_utf8($b);
            print $fh '$' . length($b) . "\r\n$b\r\n";
        }
    }
    close $fh;
    my $out = `redis-cli -p $self->{redis_port} --pipe < $file 2>&1`;
    unlink $file;
    croak "redis --pipe failed: $out" if $? != 0;
    return $out;
}

# ---- postgres ----------------------------------------------------------

sub _as_pg_user {
    my ($self, @cmd) = @_;
    return @cmd if $> != 0;
    return ('runuser', '-u', 'nobody', '--', @cmd);
}

sub start_pg {
    my ($self) = @_;
    my $pgdir = "$self->{dir}/pg";
    my $sock = "$self->{dir}/pgsock";
    if (!-d $pgdir) {
        mkdir $pgdir;
        mkdir $sock;
        if ($> == 0) {
            my ($uid, $gid) = (getpwnam('nobody'))[2, 3];
            chown $uid, $gid, $pgdir, $sock;
        }
        chmod 0700, $pgdir;
        my $out = $self->_capture(
            $self->_as_pg_user("$PGBIN/initdb", '-D', $pgdir, '-U', 'sluice',
                '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync'));
        croak "initdb failed" unless defined $out;
        $self->{pg_port} //= free_port();
    }
    my $log = "$self->{dir}/postgres.log";
    if ($> == 0 && !-e $log) {
        open my $fh, '>', $log; close $fh;
        chown((getpwnam('nobody'))[2, 3], $log);
    }
    my $pid = $self->_fork_exec($log,
        $self->_as_pg_user("$PGBIN/postgres", '-D', $pgdir,
            '-p', $self->{pg_port}, '-k', $sock,
            '-c', 'listen_addresses=127.0.0.1',
            '-c', 'fsync=off', '-c', 'max_connections=60',
            '-c', 'log_min_messages=warning'));
    $self->{pg_pid} = $pid;
    $self->_pidfile_note('postgres', $pid);
    $self->wait_until(
        sub {
            system("$PGBIN/pg_isready -q -h 127.0.0.1 -p $self->{pg_port}") == 0;
        },
        60
    ) or croak "postgres did not start: see $log";
    if (!$self->{pg_db_created}) {
        $self->_capture("$PGBIN/createdb", '-h', '127.0.0.1', '-p',
            $self->{pg_port}, '-U', 'sluice', 'sluice')
          // croak "createdb failed";
        $self->{pg_db_created} = 1;
    }
    return $pid;
}

# Stop PostgreSQL (fast shutdown: open sessions are terminated).
sub stop_pg {
    my ($self, $mode) = @_;
    my $pid = delete $self->{pg_pid} or return;
    $self->_capture($self->_as_pg_user("$PGBIN/pg_ctl", '-D',
        "$self->{dir}/pg", '-m', $mode // 'fast', '-w', 'stop'));
    waitpid $pid, 0;
    $self->_pidfile_forget('postgres');
}

sub database_url {
    my ($self) = @_;
    return "postgresql://sluice\@127.0.0.1:$self->{pg_port}/sluice";
}
sub pg_port { $_[0]{pg_port} }

# Run SQL; returns unaligned, tuples-only output (rows by "\n", columns by
# "|"), with the trailing newline removed. Dies on an SQL error.
sub psql {
    my ($self, $sql) = @_;
    my $out = $self->_capture('psql', '-X', '-A', '-t', '-q', '-v',
        'ON_ERROR_STOP=1', '-d', $self->database_url, '-c', $sql);
    croak "psql failed: $sql" unless defined $out;
    chomp $out;
    return $out;
}

# Like psql, but returns undef instead of dying (table may not exist yet).
sub psql_try {
    my ($self, $sql) = @_;
    my $out = $self->_capture('psql', '-X', '-A', '-t', '-q', '-v',
        'ON_ERROR_STOP=1', '-d', $self->database_url, '-c', $sql);
    chomp $out if defined $out;
    return $out;
}

# ---- sluice's programs -------------------------------------------------

# Write a config file with the rig's servers and the given settings;
# returns its path.
sub write_config {
    my ($self, %kv) = @_;
    my $n = ++$self->{nconf};
    my $path = "$self->{dir}/sluice-$n.conf";
    my %all = (
        redis_url    => $self->{redis_port} ? $self->redis_url : undef,
        database_url => $self->{pg_port} ? $self->database_url : undef,
        consumer_id  => 'test',
        log_level    => 'info',
        %kv
    );
    open my $fh, '>', $path or croak "$path: $!";
    print $fh "# written by the test rig\n";
    for my $k (sort keys %all) {
        next unless defined $all{$k};
        print $fh "$k = $all{$k}\n";
    }
    close $fh;
    return $path;
}

# Write a config file of several pipelines: the rig's servers and the
# settings of %$shared before the first section, then one
# "[pipeline NAME]" section per pair of @sections (NAME => {settings}), in
# that order. Returns its path.
sub write_pipelines {
    my ($self, $shared, @sections) = @_;
    my $path = $self->write_config(%$shared);
    open my $fh, '>>', $path or croak "$path: $!";
    while (my ($name, $kv) = splice @sections, 0, 2) {
        print $fh "\n[pipeline $name]\n";
        print $fh "$_ = $kv->{$_}\n" for sort keys %$kv;
    }
    close $fh;
    return $path;
}

# Start a program in the background with stdout+stderr to LOGDIR/NAME.log.
# Returns its pid. The environment is the test's, without the old workers'
# variables, so that the config file is what counts.
sub spawn {
    my ($self, $name, @cmd) = @_;
    my $log = "$self->{dir}/$name.log";
    push @{ $self->{logs} }, $log;
    my $pid = $self->_fork_exec($log, @cmd);
    $self->{procs}{$name} = $pid;
    $self->_pidfile_note("proc-$name", $pid);
    return $pid;
}

sub log_path { my ($self, $name) = @_; return "$self->{dir}/$name.log"; }

sub log_text {
    my ($self, $name) = @_;
    open my $fh, '<', $self->log_path($name) or return '';
    local $/;
    my $t = <$fh>;
    return $t // '';
}

# Wait for a spawned process to exit; returns its wait status ($?-style),
# or undef on timeout.
sub wait_exit {
    my ($self, $pid, $timeout) = @_;
    my $deadline = time + ($timeout // 30);
    while (time < $deadline) {
        my $r = waitpid $pid, WNOHANG;
        if ($r == $pid) {
            my $st = $?;
            for my $n (keys %{ $self->{procs} }) {
                if ($self->{procs}{$n} == $pid) {
                    delete $self->{procs}{$n};
                    $self->_pidfile_forget("proc-$n");
                }
            }
            return $st;
        }
        return undef if $r < 0;
        sleep 0.05;
    }
    return undef;
}

# Run a command to completion; returns [exit code, output].
sub run {
    my ($self, @cmd) = @_;
    my $out = '';
    my $pid = open(my $fh, '-|') // croak "fork: $!";
    if ($pid == 0) {
        open STDERR, '>&', \*STDOUT;
        _clean_env();
        $self->_sanitizer_env;
        exec @cmd or POSIX::_exit(127);
    }
    local $/;
    $out = <$fh> // '';
    close $fh;
    my $st = $?;
    # UBSan writes to stderr whatever log_path says: keep what it reported
    # in the output for finish().
    if ($out =~ /^(.*$SAN_REPORT.*)$/m) {
        my @lines = split /\n/, substr($out, $-[0]);
        $#lines = 19 if @lines > 20;
        push @{ $self->{run_reports} },
          "run: @cmd:\n" . join('', map { "$_\n" } @lines);
    }
    return [$st >> 8, $out, $st];
}

sub _clean_env {
    delete @ENV{qw(REDIS_URL DATABASE_URL REDIS_STREAM_KEY REDIS_CONSUMER_GROUP
      CONSUMER_ID PARALLEL_CONSUMERS BATCH_SIZE DB_POOL_SIZE LOG_LEVEL)};
    delete $ENV{$_} for grep { /^SLUICE_/ && $_ ne 'SLUICE_BUILD' } keys %ENV;
}

# In a child about to exec: ASan and LeakSanitizer write their reports
# to DIR/san/asan.PID instead of stderr, so that a report reaches finish()
# whatever became of the process's stderr (/dev/null in a daemon that
# detached: -d, the init script). UBSan, linked beside ASan, ignores
# log_path and keeps writing to stderr; its reports are found in the logs
# and run() outputs, with a stack. Options already set are kept.
sub _sanitizer_env {
    my ($self) = @_;
    $ENV{ASAN_OPTIONS} = join ':', grep { defined $_ && length $_ }
      $ENV{ASAN_OPTIONS}, "log_path=$self->{dir}/san/asan";
    $ENV{UBSAN_OPTIONS} = join ':', grep { defined $_ && length $_ }
      $ENV{UBSAN_OPTIONS}, 'print_stacktrace=1';
}

# Poll $cond every 50 ms until true or $timeout seconds pass.
sub wait_until {
    my ($self, $cond, $timeout) = @_;
    my $deadline = time + ($timeout // 30);
    while (time < $deadline) {
        my $r = eval { $cond->() };
        return 1 if $r;
        sleep 0.05;
    }
    return 0;
}

# The sanitizer check and cleanup: one TAP test that no process the rig
# started left an ASan/UBSan report (in DIR/san, in a spawn() log or in
# the output of run(): UBSan ignores log_path), then everything is
# stopped and removed. A report is shown with its first lines.
sub finish {
    my ($self) = @_;
    my @bad = @{ $self->{run_reports} // [] };
    my @files = (@{ $self->{logs} }, sort glob "$self->{dir}/san/*");
    for my $log (@files) {
        open my $fh, '<', $log or next;
        my ($at, @report);
        while (my $l = <$fh>) {
            $at //= $l if $l =~ $SAN_REPORT;
            push @report, $l if defined $at && @report < 20;
        }
        push @bad, "$log:\n" . join('', @report) if defined $at;
    }
    ok(!@bad, 'no sanitizer reports from the processes the rig started')
      or diag(join '', @bad);
    $self->cleanup;
}

sub cleanup {
    my ($self) = @_;
    return if $self->{cleaned}++;
    for my $pid (values %{ $self->{procs} }) {
        kill 'TERM', $pid;
    }
    my $deadline = time + 5;
    for my $pid (values %{ $self->{procs} }) {
        while (time < $deadline && waitpid($pid, WNOHANG) == 0) { sleep 0.05 }
        kill 'KILL', $pid;
        waitpid $pid, 0;
    }
    $self->stop_redis('KILL');
    $self->stop_pg('immediate') if $self->{pg_pid};
    if ($self->{watchdog}) {
        kill 'KILL', $self->{watchdog};
        waitpid $self->{watchdog}, 0;
    }
    if ($ENV{SLUICE_KEEP_TMP}) {
        diag("kept $self->{dir}");
    } else {
        remove_tree($self->{dir});
    }
}

# ---- internals ---------------------------------------------------------

sub _fork_exec {
    my ($self, $log, @cmd) = @_;
    my $pid = fork // croak "fork: $!";
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log or POSIX::_exit(127);
        open STDERR, '>&', \*STDOUT;
        _clean_env();
        $self->_sanitizer_env;
        exec @cmd or POSIX::_exit(127);
    }
    return $pid;
}

sub _capture {
    my ($self, @cmd) = @_;
    my $r = $self->run(@cmd);
    return undef if $r->[0] != 0;
    return $r->[1];
}

sub _install_signal_handlers {
    return if $SluiceRig::handlers_installed++;
    for my $sig (qw(INT TERM HUP)) {
        $SIG{$sig} = sub {
            $_->cleanup for @RIGS;
            exit 1;
        };
    }
}

# The watchdog outlives a SIGKILLed test: it notices its parent is gone,
# kills every process the rig noted in DIR/pids and removes DIR.
sub _start_watchdog {
    my ($self) = @_;
    my $parent = $$;
    my $dir = $self->{dir};
    my $pgdir = "$dir/pg";
    my $pid = fork // croak "fork: $!";
    if ($pid == 0) {
        setsid();
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', '/dev/null';
        $0 = "sluice-test-watchdog $dir";
        while (kill(0, $parent) && getppid() == $parent) { sleep 0.5 }
        if (opendir my $dh, "$dir/pids") {
            for my $f (grep { !/^\./ } readdir $dh) {
                open my $fh, '<', "$dir/pids/$f" or next;
                my $p = <$fh>;
                chomp $p if defined $p;
                kill 'KILL', $p if $p && $f ne 'postgres';
                kill 'QUIT', $p if $p && $f eq 'postgres';
            }
        }
        sleep 1;
        remove_tree($dir);
        POSIX::_exit(0);
    }
    $self->{watchdog} = $pid;
}

END {
    my $st = $?;
    $_->cleanup for @RIGS;
    $? = $st;
}

1;

# ---- Redis replies as Perl data (worker tests) --------------------------

# Send one command over a fresh connection and return the reply as Perl
# data: strings as byte strings (binary-safe), integers as numbers, arrays
# as array refs, nil as undef, an error reply as { error => text }.
sub redis_resp {
    my ($self, @args) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $self->{redis_port}, Proto => 'tcp')
      or croak "redis_resp: $!";
    binmode $s;
    my $cmd = '*' . scalar(@args) . "\r\n";
    for my $w (@args) {
        my $b = $w;
        utf8::encode($b) if utf8::is_utf8($b);
        $cmd .= '$' . length($b) . "\r\n$b\r\n";
    }
    print $s $cmd;
    my $r = _resp_read($s);
    close $s;
    return $r;
}

sub _resp_read {
    my ($s) = @_;
    my $line = <$s>;
    croak 'redis_resp: connection closed' unless defined $line;
    $line =~ s/\r\n\z//;
    my ($t, $v) = (substr($line, 0, 1), substr($line, 1));
    return $v if $t eq '+';
    return { error => $v } if $t eq '-';
    return 0 + $v if $t eq ':';
    if ($t eq '$') {
        return undef if $v < 0;
        my $buf = '';
        while (length($buf) < $v + 2) {
            read($s, $buf, $v + 2 - length($buf), length($buf))
              or croak 'redis_resp: short read';
        }
        return substr($buf, 0, $v);
    }
    if ($t eq '*') {
        return undef if $v < 0;
        return [map { _resp_read($s) } 1 .. $v];
    }
    croak "redis_resp: unexpected reply '$line'";
}

# XADD $n commit entries without ops to $stream (repo did:plc:<tag><i>,
# seq i), i counting on from the last call for that stream: traffic for
# the supervisor tests, whose raw sink writes a row for each. Returns
# redis-cli's output.
sub add_commits {
    my ($self, $stream, $n, $tag) = @_;
    $tag //= 'c';
    my $next = \$self->{next_seq}{$stream};
    $$next //= 1;
    return $self->redis_batch(map {
        my $i = $$next++;
        ['XADD', $stream, '*', 'type', 'commit',
         'data', qq({"repo":"did:plc:$tag$i","ops":[]}), 'seq', $i]
    } 1 .. $n);
}

# The XINFO GROUPS figures of one group as a hash ref (name, consumers,
# pending, last-delivered-id, entries-read, lag), or undef.
sub group_info {
    my ($self, $stream, $group) = @_;
    my $r = $self->redis_resp('XINFO', 'GROUPS', $stream);
    return undef unless ref $r eq 'ARRAY';
    for my $g (@$r) {
        my %h = @$g;
        return \%h if $h{name} eq $group;
    }
    return undef;
}

# The entries of a stream (XRANGE - +) as a list of [id, {field => value}].
sub stream_entries {
    my ($self, $stream) = @_;
    my $r = $self->redis_resp('XRANGE', $stream, '-', '+');
    return () unless ref $r eq 'ARRAY';
    return map { [$_->[0], {@{ $_->[1] }}] } @$r;
}

# ---- more than one database; waiting for a group to drain ---------------

# The URL of database $db in the rig's PostgreSQL cluster.
sub database_url_for {
    my ($self, $db) = @_;
    return "postgresql://sluice\@127.0.0.1:$self->{pg_port}/$db";
}

# CREATE DATABASE $db (dies on failure).
sub create_database {
    my ($self, $db) = @_;
    $self->psql(qq{CREATE DATABASE "$db"});
}

# Like psql, against database $db. Output as psql returns it (bytes).
sub psql_db {
    my ($self, $db, $sql) = @_;
    my $out = $self->_capture('psql', '-X', '-A', '-t', '-q', '-v',
        'ON_ERROR_STOP=1', '-d', $self->database_url_for($db), '-c', $sql);
    croak "psql ($db) failed: $sql" unless defined $out;
    chomp $out;
    return $out;
}

# Run the SQL file $file with psql (stopping at the first error) against
# database $db, or the rig's database when $db is undef; returns what
# run() returns: [exit code, output].
sub psql_file {
    my ($self, $file, $db) = @_;
    my $url = defined $db ? $self->database_url_for($db) : $self->database_url;
    return $self->run('psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $url, '-f', $file);
}

# Wait until group $group of $stream exists, has nothing pending and no
# lag (every entry delivered and acked). Returns 1, or 0 on timeout.
sub wait_drained {
    my ($self, $stream, $group, $timeout) = @_;
    return $self->wait_until(sub {
        my $g = $self->group_info($stream, $group);
        $g && defined $g->{lag} && $g->{lag} == 0 && $g->{pending} == 0;
    }, $timeout // 60);
}
