// Package gossip finds the nodes of a cluster and tells which are alive, with
// hashicorp/memberlist. Every node advertises its identity and placement
// labels (Meta); the Raft leader reads them to admit joining nodes and to
// place voters, and treats a node gone from gossip as down. Gossip carries
// no data and decides nothing by itself: membership changes still go
// through Raft.
package gossip

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Meta is what a node advertises. It must stay under memberlist's 512
// bytes of node metadata.
type Meta struct {
	ID         uint64   `json:"id,omitempty"` // 0 until the node is a member
	Name       string   `json:"name"`
	Cluster    string   `json:"cluster"` // the cluster token: nodes of another cluster are ignored
	Region     string   `json:"region,omitempty"`
	Zone       string   `json:"zone,omitempty"`
	PeerURLs   []string `json:"peer,omitempty"`
	ClientURLs []string `json:"client,omitempty"`
	Version    string   `json:"version,omitempty"`
}

// Node is a node gossip knows of.
type Node struct {
	Meta
	Addr  string // gossip address
	Alive bool
}

// Config starts gossip.
type Config struct {
	ListenAddr string   // host:port for gossip (TCP and UDP)
	Join       []string // seed gossip addresses; empty for the first node
	Key        []byte   // 16, 24 or 32 bytes: gossip is encrypted with it; nil: not encrypted
	Meta       Meta
	// WAN tunes failure detection for links of tens of milliseconds.
	WAN    bool
	Logger *slog.Logger
}

// Gossip is this node's view of the cluster.
type Gossip struct {
	ml    *memberlist.Memberlist
	del   *delegate
	close sync.Once
}

// Start joins (or starts) the gossip pool. Joining fails only when no seed
// answers.
func Start(cfg Config) (*Gossip, error) {
	host, portStr, err := net.SplitHostPort(cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("--gossip-listen-addr %q: %w", cfg.ListenAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("--gossip-listen-addr %q: bad port", cfg.ListenAddr)
	}
	mc := memberlist.DefaultLANConfig()
	if cfg.WAN {
		mc = memberlist.DefaultWANConfig()
	}
	mc.Name = cfg.Meta.Name
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, mc.AdvertisePort = host, port
	mc.SecretKey = cfg.Key
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	mc.Logger = log.New(&logWriter{log: cfg.Logger.With("component", "gossip")}, "", 0)
	d := &delegate{meta: cfg.Meta}
	mc.Delegate = d
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}
	g := &Gossip{ml: ml, del: d}
	if len(cfg.Join) > 0 {
		if _, err := ml.Join(cfg.Join); err != nil {
			ml.Shutdown()
			return nil, fmt.Errorf("gossip: join %s: %w", strings.Join(cfg.Join, ","), err)
		}
	}
	return g, nil
}

// Nodes returns every node of this cluster that gossip knows, alive or
// not, ordered by name.
func (g *Gossip) Nodes() []Node {
	own := g.del.current().Cluster
	var out []Node
	for _, m := range g.ml.Members() {
		var meta Meta
		if json.Unmarshal(m.Meta, &meta) != nil || meta.Cluster != own {
			continue
		}
		out = append(out, Node{Meta: meta, Addr: m.Address(), Alive: m.State == memberlist.StateAlive})
	}
	slices.SortFunc(out, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// SetMeta changes what this node advertises (its ID once it is a member).
func (g *Gossip) SetMeta(m Meta) error {
	g.del.set(m)
	return g.ml.UpdateNode(0)
}

// Addr is the gossip address this node listens on.
func (g *Gossip) Addr() string { return g.ml.LocalNode().Address() }

// Close leaves the pool, telling the others at once, and stops; it is
// idempotent.
func (g *Gossip) Close() error {
	var err error
	g.close.Do(func() { err = errors.Join(g.ml.Leave(time.Second), g.ml.Shutdown()) })
	return err
}

// LoadKey reads --gossip-key-file: a key of 16, 24 or 32 bytes, in base64
// (as `openssl rand -base64 32` writes) or raw.
func LoadKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--gossip-key-file: %w", err)
	}
	key := b
	if dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b))); err == nil {
		key = dec
	}
	if n := len(key); n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("--gossip-key-file %s: the key must be 16, 24 or 32 bytes (raw or base64), not %d", path, n)
	}
	return key, nil
}

// delegate serves this node's metadata to memberlist.
type delegate struct {
	mu   sync.Mutex
	meta Meta
}

func (d *delegate) current() Meta {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.meta
}

func (d *delegate) set(m Meta) {
	d.mu.Lock()
	d.meta = m
	d.mu.Unlock()
}

func (d *delegate) NodeMeta(limit int) []byte {
	b, _ := json.Marshal(d.current())
	if len(b) > limit {
		return nil
	}
	return b
}

func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// logWriter turns memberlist's "[LEVEL] memberlist: ..." lines into slog
// records: debug and info stay at debug, since memberlist is chatty.
type logWriter struct{ log *slog.Logger }

func (w *logWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	level := slog.LevelDebug
	switch {
	case strings.HasPrefix(line, "[ERR]"):
		level = slog.LevelError
	case strings.HasPrefix(line, "[WARN]"):
		level = slog.LevelWarn
	}
	if i := strings.Index(line, "] "); i >= 0 {
		line = line[i+2:]
	}
	w.log.Log(nil, level, strings.TrimPrefix(line, "memberlist: "))
	return len(p), nil
}
