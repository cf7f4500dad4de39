# AtprotoNames.pm: the names the atproto tests build their records from:
# the collection NSIDs as short scalars, a DID of the right shape for a
# nickname, and the at:// URI of a record.
#
#   use AtprotoNames qw(did uri $P $L $FO);
#   my $u = uri(did('alice'), $P, 'p1');
package AtprotoNames;
use strict;
use warnings;
use Exporter 'import';
our @EXPORT_OK = qw(did uri $P $L $R $FO $BL $PR $LI $IT $FG $SP $LB $TG $PG);

our $P  = 'app.bsky.feed.post';
our $L  = 'app.bsky.feed.like';
our $R  = 'app.bsky.feed.repost';
our $FO = 'app.bsky.graph.follow';
our $BL = 'app.bsky.graph.block';
our $PR = 'app.bsky.actor.profile';
our $LI = 'app.bsky.graph.list';
our $IT = 'app.bsky.graph.listitem';
our $FG = 'app.bsky.feed.generator';
our $SP = 'app.bsky.graph.starterpack';
our $LB = 'app.bsky.labeler.service';
our $TG = 'app.bsky.feed.threadgate';
our $PG = 'app.bsky.feed.postgate';

# did:plc: and the nickname padded with x to the method's 24 characters.
sub did { my ($n) = @_; return 'did:plc:' . $n . ('x' x (24 - length $n)) }

# The URI of record $rkey of collection $coll in repository $did.
sub uri { my ($did, $coll, $rkey) = @_; return "at://$did/$coll/$rkey" }

1;
