package e2e

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ballast-kv/ballast/test/internal/harness"
)

// Seven members over three regions (3/2/2) that find each other by gossip
// end with five voters spread 2/2/1 and two non-voters, with no region
// holding a majority; killing every member of a region that holds two
// voters keeps writes going, and placement restores five voters from the
// survivors and removes the dead.
func TestRegionsPlaceVoters(t *testing.T) {
	bin := harness.BallastBin(t)
	region := map[string]string{"n1": "a", "n2": "a", "n3": "a", "n4": "b", "n5": "b", "n6": "c", "n7": "c"}
	common := []string{"--voters", "5", "--stabilization-window", "3s"}
	seed := freeTCPAddr(t)
	first := harness.StartCluster(t, bin, 1, harness.Options{Name: "n1",
		Args: append(slices.Clone(common), "--gossip-listen-addr", seed, "--region", "a", "--zone", "a1")})[0]
	nodes := []*harness.Node{first}
	for i := 2; i <= 7; i++ {
		name := fmt.Sprintf("n%d", i)
		n := harness.NewMember(t, bin, nodes, name, harness.Options{Args: common})
		n.JoinByGossip("--join", seed, "--region", region[name], "--zone", region[name]+"1")
		nodes = append(nodes, n)
	}
	cl := newClients(t)
	byName := map[string]*harness.Node{}
	for _, n := range nodes {
		byName[n.Name] = n
	}

	// voters returns the voters per region and the names of the non-voters.
	voters := func(ctx context.Context, via *harness.Node) (map[string][]string, []string, error) {
		resp, err := cl.of(via).MemberList(ctx)
		if err != nil {
			return nil, nil, err
		}
		perRegion := map[string][]string{}
		var others []string
		for _, m := range resp.Members {
			if m.IsLearner {
				others = append(others, m.Name)
			} else {
				perRegion[region[m.Name]] = append(perRegion[region[m.Name]], m.Name)
			}
		}
		return perRegion, others, nil
	}
	var spread map[string][]string
	waitUntil(t, 2*time.Minute, "five voters spread 2/2/1 and two non-voters", func(ctx context.Context) error {
		perRegion, others, err := voters(ctx, first)
		if err != nil {
			return err
		}
		var counts []int
		for _, r := range []string{"a", "b", "c"} {
			counts = append(counts, len(perRegion[r]))
		}
		slices.Sort(counts)
		if !slices.Equal(counts, []int{1, 2, 2}) || len(others) != 2 {
			return fmt.Errorf("voters %v, non-voters %v", perRegion, others)
		}
		spread = perRegion
		return nil
	})
	t.Logf("voters by region: %v", spread)
	waitUntil(t, 30*time.Second, "the leader reports it can lose one region", func(ctx context.Context) error {
		for _, n := range nodes {
			text := scrape(t, n)
			if strings.Contains(text, `ballast_placement_failure_tolerance{domain="region"} 1`) {
				return nil
			}
		}
		return fmt.Errorf("no member reports ballast_placement_failure_tolerance{domain=\"region\"} 1")
	})

	lost := "b"
	if len(spread["b"]) != 2 {
		lost = "c"
	}
	var dead, live []*harness.Node
	for _, n := range nodes {
		if region[n.Name] == lost {
			dead = append(dead, n)
		} else {
			live = append(live, n)
		}
	}
	for _, n := range dead {
		n.Kill()
	}
	t.Logf("killed region %s: %s", lost, names(dead))
	waitUntil(t, time.Minute, "a write after losing region "+lost, func(ctx context.Context) error {
		_, err := cl.of(first).Put(ctx, "after-region-loss", "1")
		return err
	})
	waitUntil(t, 2*time.Minute, "five voters among the survivors and the dead removed", func(ctx context.Context) error {
		resp, err := cl.of(first).MemberList(ctx)
		if err != nil {
			return err
		}
		nv := 0
		for _, m := range resp.Members {
			if region[m.Name] == lost {
				return fmt.Errorf("%s of the lost region is still a member", m.Name)
			}
			if !m.IsLearner {
				nv++
			}
		}
		if nv != 5 || len(resp.Members) != 5 {
			return fmt.Errorf("%d voters among %d members", nv, len(resp.Members))
		}
		return nil
	})
	if _, err := cl.of(first).Put(testCtx(t, 30*time.Second), "after-restore", "1"); err != nil {
		t.Fatalf("write after placement restored the voters: %v", err)
	}
	requireSameHashKV(t, live)
}

func freeTCPAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
