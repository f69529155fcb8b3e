package harness

import (
	"fmt"
	"time"
)

// The helpers below inject faults on the peer links of a proxied cluster
// (Options.Proxied). A link A→B is the set of connections member A opens to
// member B's advertised peer URL; they pass through B's proxy, which knows A
// by its source IP, since a member binds its outgoing peer connections to its
// own IP. Cutting A→B therefore stops A's messages to B and B's replies on
// A's connections, and nothing else. Each helper fails the test when a node
// has no proxy.
//
// The reference etcd does not bind its outgoing peer connections, so they all
// come from 127.0.0.1 and rules keyed by a member's IP never match them: these
// helpers have no effect on an etcd cluster. Only rules for every source
// (Proxy.Cut with no arguments, an empty fromIP) affect etcd.

// Partition cuts every link, in both directions, between members of
// different groups. Links within a group are left as they are.
func Partition(groups ...[]*Node) {
	for gi, g := range groups {
		for _, from := range g {
			for hi, h := range groups {
				if hi == gi {
					continue
				}
				for _, to := range h {
					to.proxy().Cut(from.IP)
				}
			}
		}
	}
}

// PartitionOneWay cuts the link from→to only: from can no longer reach to,
// while to can still reach from.
func PartitionOneWay(from, to *Node) {
	to.proxy().Cut(from.IP)
}

// Isolate cuts n off from every other node of all, in both directions.
func Isolate(n *Node, all []*Node) {
	var rest []*Node
	for _, m := range all {
		if m != n {
			rest = append(rest, m)
		}
	}
	Partition([]*Node{n}, rest)
}

// HealAll removes every rule (cuts, delays, drops) from the proxies of all.
func HealAll(all []*Node) {
	for _, n := range all {
		n.proxy().Heal()
	}
}

// DelayLinks delays every link between two members of all by d in each
// direction: a message and its reply each arrive d later, a round trip 2*d.
// d <= 0 removes the delays.
func DelayLinks(all []*Node, d time.Duration) {
	for _, to := range all {
		for _, from := range all {
			if from != to {
				to.proxy().Delay(from.IP, d)
			}
		}
	}
}

// DelayBetween delays every link between a member of a and a member of b by
// d in each direction (a round trip between them takes 2*d longer), as a
// WAN between two regions would. Links within a and within b are left as
// they are. d <= 0 removes those delays.
func DelayBetween(a, b []*Node, d time.Duration) {
	for _, x := range a {
		for _, y := range b {
			y.proxy().Delay(x.IP, d)
			x.proxy().Delay(y.IP, d)
		}
	}
}

// DelayInto delays every connection to n, from any source, by d in each
// direction: the only delay an etcd member can be given, since its outgoing
// connections all come from 127.0.0.1. etcd carries X's messages to Y on a
// stream Y opened to X, and Y's messages to X on one X opened to Y, so with
// DelayInto(X, x) and DelayInto(Y, y) a round trip between X and Y takes
// x+y longer, whichever side starts it.
func DelayInto(n *Node, d time.Duration) {
	n.proxy().Delay("", d)
}

// proxy returns the node's proxy, failing the test if it has none.
func (n *Node) proxy() *Proxy {
	if n.Proxy == nil {
		msg := fmt.Sprintf("harness: %s has no proxy: start the cluster with Options.Proxied", n.Name)
		if n.t == nil {
			panic(msg)
		}
		n.t.Helper()
		n.t.Fatal(msg)
	}
	return n.Proxy
}
