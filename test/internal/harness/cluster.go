package harness

import (
	"slices"
	"strings"
	"testing"
)

// InitialCluster returns the --initial-cluster value for nodes:
// name=PeerURL,... with each member's advertised peer URL (its proxy's in a
// proxied cluster).
func InitialCluster(nodes []*Node) string {
	members := make([]string, len(nodes))
	for i, n := range nodes {
		members[i] = n.Name + "=" + n.PeerURL
	}
	return strings.Join(members, ",")
}

// NewMember prepares a member to be added to the running cluster whose nodes
// are given: it allocates the member's IP, ports, proxy (with opts.Proxied,
// as StartCluster does), data directory and log, but does not start it. The
// member's number, and so its IP in a proxied cluster, is one more than the
// highest among cluster. Pass the Options the cluster was started with; the
// name is the caller's (opts.Name is ignored).
//
// The usual sequence: NewMember, then MemberAdd (or MemberAddAsLearner)
// with the new node's PeerURL through a client of the cluster, then Join with
// the --initial-cluster string the member list now implies, e.g.
// InitialCluster(append(cluster, n)). Like every node, it is killed, and its
// proxy closed, when the test ends.
func NewMember(t testing.TB, bin string, cluster []*Node, name string, opts Options) *Node {
	t.Helper()
	opts = opts.withDefaults()
	index := 0
	for _, n := range cluster {
		index = max(index, n.index)
	}
	return newNode(t, bin, name, index+1, opts)
}

// Join starts a node prepared by NewMember with --initial-cluster-state
// existing and the given --initial-cluster, and waits until it is ready (for
// an etcd learner, which refuses linearizable reads: until it answers as a
// learner). Later restarts reuse the same flags; the server then ignores the
// initial-cluster ones since its data directory exists.
func (n *Node) Join(initialCluster string) {
	n.t.Helper()
	if n.runs > 0 {
		n.t.Fatalf("harness: Join: %s has already been started", n.Name)
	}
	n.args = n.flags(initialCluster, "existing")
	n.spawn()
	n.WaitReady()
}

// GossipAddr is an address for the node's --gossip-listen-addr, picked on
// first use (on the node's IP).
func (n *Node) GossipAddr() string {
	if n.gossipAddr == "" {
		n.gossipAddr = FreeAddr(n.t, n.IP)
	}
	return n.gossipAddr
}

// JoinByGossip starts a node prepared by NewMember the way a node joins a
// gossiping Ballast cluster: no --initial-cluster, its --gossip-listen-addr
// and the given flags (--join and labels, say), and waits until it is
// ready. Later restarts reuse the same flags.
func (n *Node) JoinByGossip(args ...string) {
	n.t.Helper()
	if n.runs > 0 {
		n.t.Fatalf("harness: JoinByGossip: %s has already been started", n.Name)
	}
	n.args = append(n.identityFlags("--gossip-listen-addr", n.GossipAddr()), append(slices.Clone(n.extra), args...)...)
	n.spawn()
	n.WaitReady()
}
