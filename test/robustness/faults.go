package robustness

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// fault is one kind of failure the harness injects while traffic runs. inject
// causes it and undoes it before returning (a killed node is restarted, a
// partition healed), so faults can follow one another.
type fault struct {
	name    string
	minSize int // the smallest cluster the fault makes sense for
	inject  func(c *cluster) error
}

// electionTimeout is the server's default; a pause must outlast it.
const electionTimeout = time.Second

var faults = []fault{
	{"kill-leader", 1, func(c *cluster) error {
		n, err := c.leader()
		if err != nil {
			return err
		}
		c.noteKill()
		n.Kill()
		c.sleep(200*time.Millisecond, time.Second)
		return c.restart(n)
	}},
	{"kill-follower", 3, func(c *cluster) error {
		n, err := c.follower()
		if err != nil {
			return err
		}
		n.Kill()
		c.sleep(200*time.Millisecond, time.Second)
		return c.restart(n)
	}},
	{"kill-all", 1, func(c *cluster) error {
		for _, n := range c.shuffled() {
			n.Kill()
		}
		c.sleep(100*time.Millisecond, 500*time.Millisecond)
		return c.restart(c.nodes...)
	}},
	{"pause-leader", 1, func(c *cluster) error {
		n, err := c.leader()
		if err != nil {
			return err
		}
		if err := n.Signal(syscall.SIGSTOP); err != nil {
			return err
		}
		c.sleep(2*electionTimeout, 3*electionTimeout)
		return n.Signal(syscall.SIGCONT)
	}},
	{"partition-minority", 3, func(c *cluster) error {
		nodes := c.shuffled()
		minority := nodes[:(len(nodes)-1)/2]
		harness.Partition(minority, nodes[len(minority):])
		return c.holdThenHeal()
	}},
	{"partition-leader-minority", 5, func(c *cluster) error {
		// The leader on the minority side: it must step down, and the
		// majority elect another. (On three members this is isolate-leader.)
		l, err := c.leader()
		if err != nil {
			return err
		}
		minority := []*harness.Node{l}
		rest := c.others(l)
		minority = append(minority, rest[:(len(c.nodes)-1)/2-1]...)
		harness.Partition(minority, rest[len(minority)-1:])
		return c.holdThenHeal()
	}},
	{"partition-one-way", 3, func(c *cluster) error {
		l, err := c.leader()
		if err != nil {
			return err
		}
		f := c.others(l)[0]
		if c.rng.IntN(2) == 0 {
			harness.PartitionOneWay(l, f)
		} else {
			harness.PartitionOneWay(f, l)
		}
		return c.holdThenHeal()
	}},
	{"isolate-leader", 3, func(c *cluster) error {
		l, err := c.leader()
		if err != nil {
			return err
		}
		harness.Isolate(l, c.nodes)
		return c.holdThenHeal()
	}},
	{"delay-peers", 3, func(c *cluster) error {
		harness.DelayLinks(c.nodes, time.Duration(20+c.rng.IntN(80))*time.Millisecond)
		c.sleep(2*time.Second, 3*time.Second)
		harness.DelayLinks(c.nodes, 0)
		return c.measureHeal()
	}},
	{"drop-peers", 3, func(c *cluster) error {
		for _, n := range c.nodes {
			n.Proxy.Drop("", 0.05+0.2*c.rng.Float64())
		}
		return c.holdThenHeal()
	}},
	{"replace-member", 3, func(c *cluster) error { return c.replaceFollower() }},
	{"disk-full", 1, func(c *cluster) error { return c.fillDisk() }},
	{"corrupt-file", 3, func(c *cluster) error { return c.corruptFollower() }},
}

func faultByName(name string) (fault, bool) {
	i := slices.IndexFunc(faults, func(f fault) bool { return f.name == name })
	if i < 0 {
		return fault{}, false
	}
	return faults[i], true
}

func (c *cluster) sleep(lo, hi time.Duration) {
	time.Sleep(lo + time.Duration(c.rng.Int64N(int64(hi-lo)+1)))
}

func (c *cluster) holdThenHeal() error {
	c.sleep(2*time.Second, 3*time.Second)
	harness.HealAll(c.nodes)
	return c.measureHeal()
}

// measureHeal times how long after a heal every member answers HashKV, at
// the revision the cluster had when it healed, with one hash: the cut-off
// members have caught up and agree.
func (c *cluster) measureHeal() error {
	healed := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	resp, err := c.admin.Get(ctx, "/rb-heal-probe")
	cancel()
	if err != nil {
		return fmt.Errorf("after healing: %w", err)
	}
	if err := c.converge(resp.Header.Revision); err != nil {
		return err
	}
	c.mu.Lock()
	c.res.HealConverge = append(c.res.HealConverge, time.Since(healed))
	c.mu.Unlock()
	return nil
}

func (c *cluster) shuffled() []*harness.Node {
	nodes := slices.Clone(c.nodes)
	c.rng.Shuffle(len(nodes), func(i, j int) { nodes[i], nodes[j] = nodes[j], nodes[i] })
	return nodes
}

func (c *cluster) others(n *harness.Node) []*harness.Node {
	var rest []*harness.Node
	for _, m := range c.shuffled() {
		if m != n {
			rest = append(rest, m)
		}
	}
	return rest
}

// errNotBack marks a restarted member that never became ready.
var errNotBack = errors.New("did not come back")

// restart starts the given stopped nodes together and waits until each is
// ready.
func (c *cluster) restart(nodes ...*harness.Node) error {
	for _, n := range nodes {
		if !n.Running() {
			n.Launch()
		}
	}
	for _, n := range nodes {
		if err := n.AwaitReady(); err != nil {
			return fmt.Errorf("%s %w: %w: %s", n.Name, errNotBack, err, exitReason(n.Log()))
		}
	}
	return nil
}

// leader returns the member every running member names as leader, waiting
// for an election if there is none.
func (c *cluster) leader() (*harness.Node, error) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ids := map[uint64]*harness.Node{}
		var leader uint64
		agree := true
		for _, n := range c.nodes {
			if !n.Running() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := c.admin.Status(ctx, strings.TrimPrefix(n.ClientURL, "http://"))
			cancel()
			if err != nil {
				agree = false
				break
			}
			ids[st.Header.MemberId] = n
			if leader != 0 && st.Leader != leader {
				agree = false
			}
			leader = st.Leader
		}
		if n := ids[leader]; agree && n != nil {
			return n, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, errors.New("no leader that every member names within 10s")
}

func (c *cluster) follower() (*harness.Node, error) {
	l, err := c.leader()
	if err != nil {
		return nil, err
	}
	return c.others(l)[0], nil
}

// memberID returns n's member ID.
func (c *cluster) memberID(n *harness.Node) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := c.admin.MemberList(ctx)
	if err != nil {
		return 0, err
	}
	for _, m := range resp.Members {
		if m.Name == n.Name {
			return m.ID, nil
		}
	}
	return 0, fmt.Errorf("%s is not in the member list", n.Name)
}

// replaceFollower removes a follower from the cluster during load, then adds
// a fresh member in its place (with a new name and an empty data
// directory), as an operator replacing a machine does.
func (c *cluster) replaceFollower() error {
	old, err := c.follower()
	if err != nil {
		return err
	}
	return c.replace(old)
}

func (c *cluster) replace(old *harness.Node) error {
	id, err := c.memberID(old)
	if err != nil {
		return err
	}
	// Membership changes go through the leader: the member being removed
	// may shut down while it answers, leaving the outcome unknown.
	l, err := c.leader()
	if err != nil {
		return err
	}
	cli, err := l.NewClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.MemberRemove(ctx, id); err != nil {
		if _, still := c.memberID(old); still == nil {
			return fmt.Errorf("remove %s: %w", old.Name, err)
		}
	}
	old.Kill()
	c.nodes = slices.DeleteFunc(c.nodes, func(n *harness.Node) bool { return n == old })
	c.nextName++
	n := harness.NewMember(c.t, c.bin, c.nodes, fmt.Sprintf("m%d", c.nextName), c.opts)
	if _, err := cli.MemberAdd(ctx, []string{n.PeerURL}); err != nil {
		return fmt.Errorf("add %s: %w", n.Name, err)
	}
	n.Join(harness.InitialCluster(append(c.nodes, n)))
	c.nodes = append(c.nodes, n)
	c.setEndpoints()
	return nil
}

// fillDisk fills the data filesystem of one member (a tmpfs of its own) to
// the last byte for a while, then frees it. A member may stop on ENOSPC; it
// is then restarted once there is room again. Either way no acknowledged
// write may be lost.
func (c *cluster) fillDisk() error {
	n := c.shuffled()[0]
	filler := fillerPath(n.DataDir)
	f, err := os.Create(filler)
	if err != nil {
		return err
	}
	// Write until the filesystem refuses (ENOSPC, the point), in large
	// pieces and then in pages, so that not a page is left.
	buf := make([]byte, 1<<20)
	for _, piece := range [][]byte{buf, buf[:4096]} {
		for {
			if _, err := f.Write(piece); err != nil {
				break
			}
		}
	}
	f.Close()
	c.sleep(2*time.Second, 3*time.Second)
	if err := os.Remove(filler); err != nil {
		return err
	}
	c.diskFullOutcome(n)
	if !n.Running() {
		return c.restart(n)
	}
	return nil
}

// corruptFollower stops a follower with kill -9, flips a bit in (or
// truncates) one of its files, and starts it again. The member must either
// refuse to start with a clear message, or start and agree with the others:
// never serve or replicate damaged data, never panic. A member that refuses
// is replaced by a fresh one, as an operator would.
func (c *cluster) corruptFollower() error {
	n, err := c.follower()
	if err != nil {
		return err
	}
	n.Kill()
	file, what, err := corrupt(n.DataDir, c.rng)
	if err != nil {
		return err
	}
	n.Launch()
	readyErr := n.AwaitReady()
	c.noteCorruption(n, file, what, readyErr)
	if readyErr != nil {
		n.Kill()
		return c.replace(n)
	}
	return nil
}

// corrupt damages one file under dir: a flipped bit at a random offset, or
// (one time in four) a truncation to a random length. It returns the file,
// relative to dir, and what it did.
func corrupt(dir string, rng *rand.Rand) (file, what string, err error) {
	var files []string
	err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if info, err := d.Info(); err == nil && info.Mode().IsRegular() && info.Size() > 0 && d.Name() != "LOCK" {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return "", "", err
	}
	if len(files) == 0 {
		return "", "", errors.New("no files to corrupt")
	}
	path := files[rng.IntN(len(files))]
	rel, _ := filepath.Rel(dir, path)
	info, err := os.Stat(path)
	if err != nil {
		return "", "", err
	}
	if rng.IntN(4) == 0 {
		size := rng.Int64N(info.Size())
		return rel, fmt.Sprintf("truncated %s from %d to %d bytes", rel, info.Size(), size), os.Truncate(path, size)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	off := rng.Int64N(info.Size())
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		return "", "", err
	}
	bit := rng.IntN(8)
	b[0] ^= 1 << bit
	if _, err := f.WriteAt(b, off); err != nil {
		return "", "", err
	}
	return rel, fmt.Sprintf("flipped bit %d at offset %d of %s (%d bytes)", bit, off, rel, info.Size()), nil
}

// setEndpoints points every client at the current members.
func (c *cluster) setEndpoints() {
	eps := c.endpoints()
	for _, cli := range c.clients {
		cli.SetEndpoints(rotate(eps, c.rng.IntN(len(eps)))...)
	}
}

func rotate(s []string, k int) []string { return append(slices.Clone(s[k:]), s[:k]...) }
