package gossip

import (
	"net"
	"testing"
	"time"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func start(t *testing.T, name, cluster string, key []byte, join ...string) *Gossip {
	t.Helper()
	g, err := Start(Config{ListenAddr: freeAddr(t), Join: join, Key: key,
		Meta: Meta{Name: name, Cluster: cluster, Region: "r-" + name, PeerURLs: []string{"http://" + name}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func waitNodes(t *testing.T, g *Gossip, want func([]Node) bool) []Node {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ns := g.Nodes()
		if want(ns) {
			return ns
		}
		if time.Now().After(deadline) {
			t.Fatalf("gossip view never reached the expected state: %+v", ns)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Nodes find each other through one seed, see each other's labels and
// metadata updates, ignore nodes of another cluster, and see a node that
// leaves as not alive.
func TestGossipMembership(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	a := start(t, "a", "tok", key)
	b := start(t, "b", "tok", key, a.Addr())
	c := start(t, "c", "tok", key, b.Addr())
	start(t, "x", "another", key, a.Addr())
	ns := waitNodes(t, c, func(ns []Node) bool { return len(ns) == 3 })
	for i, name := range []string{"a", "b", "c"} {
		if ns[i].Name != name || ns[i].Region != "r-"+name || !ns[i].Alive || ns[i].PeerURLs[0] != "http://"+name {
			t.Fatalf("node %d = %+v, want %s alive with its labels", i, ns[i], name)
		}
	}
	if err := b.SetMeta(Meta{ID: 42, Name: "b", Cluster: "tok", Region: "r-b"}); err != nil {
		t.Fatal(err)
	}
	waitNodes(t, a, func(ns []Node) bool { return len(ns) == 3 && ns[1].ID == 42 })
	b.Close()
	waitNodes(t, a, func(ns []Node) bool {
		for _, n := range ns {
			if n.Name == "b" {
				return !n.Alive
			}
		}
		return true
	})
}

// A node without the cluster's gossip key cannot join it.
func TestGossipKeyRequired(t *testing.T) {
	a := start(t, "a", "tok", []byte("0123456789abcdef"))
	if g, err := Start(Config{ListenAddr: freeAddr(t), Join: []string{a.Addr()}, Meta: Meta{Name: "intruder", Cluster: "tok"}}); err == nil {
		g.Close()
		t.Fatal("a node without the key joined an encrypted pool")
	}
}
