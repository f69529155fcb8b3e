package status

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/ballast-kv/ballast/cluster/placement"
)

// Ballast serves its placement state at /placement on every client URL:
// the leader what its last round saw and planned, another member the
// labels it holds. etcd has no such page (404), and the report then has no
// placement part.

// askPlacement asks the leader for its placement state, then, if it does not
// answer, the other reachable members in the report's order for their
// labels. It returns nil when none answers (etcd, or a Ballast that cannot
// be reached).
func askPlacement(ctx context.Context, c *config, r *Report) *placement.Status {
	var urls []string
	for _, m := range r.Members {
		if m.Reachable && len(m.ClientURLs) > 0 {
			if m.ID == r.Leader {
				urls = append([]string{m.ClientURLs[0]}, urls...)
			} else {
				urls = append(urls, m.ClientURLs[0])
			}
		}
	}
	hc := &http.Client{Timeout: c.commandTimeout, Transport: &http.Transport{TLSClientConfig: c.tlsConfig}}
	defer hc.CloseIdleConnections()
	for _, u := range urls {
		if st, err := getPlacement(ctx, hc, u); err == nil {
			return st
		}
	}
	return nil
}

func getPlacement(ctx context.Context, hc *http.Client, clientURL string) (*placement.Status, error) {
	u := strings.TrimSuffix(clientURL, "/") + "/placement"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", u, resp.Status)
	}
	var st placement.Status
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		return nil, fmt.Errorf("%s: %v", u, err)
	}
	return &st, nil
}

// addPlacement puts st into r: every member's region and zone, and the plan.
func (r *Report) addPlacement(st *placement.Status) {
	if st == nil {
		return
	}
	r.Placement = st
	byID := map[string]placement.StatusMember{}
	for _, m := range st.Members {
		byID[m.ID] = m
	}
	for i := range r.Members {
		m := byID[hexID(r.Members[i].ID)]
		r.Members[i].Region, r.Members[i].Zone = m.Region, m.Zone
	}
}

// labelled reports whether any member has a region or zone.
func (r *Report) labelled() bool {
	for _, m := range r.Members {
		if m.Region != "" || m.Zone != "" {
			return true
		}
	}
	return false
}

// placementLines are the lines under the summary: the policy, how many
// regions and zones the cluster can lose, and the planned changes.
func (r *Report) placementLines() []string {
	st := r.Placement
	if st == nil {
		return nil
	}
	if !st.Enabled {
		if r.labelled() {
			return []string{"placement: off (the cluster does not gossip); voters are changed with member add/promote/remove"}
		}
		return nil
	}
	if !st.Planner {
		return []string{"placement: the leader did not tell its plan; regions and zones are the members' replicated labels"}
	}
	p := st.Policy
	where := "anywhere"
	if p.LeaderRegion != "" {
		where = "in region " + p.LeaderRegion
	}
	lines := []string{fmt.Sprintf("placement: %d voters wanted, leader %s, stabilisation window %s; can lose %s, %s, %s and keep a quorum",
		p.Voters, where, p.StabilizationWindow,
		plural(st.Tolerance.Regions, "region"), plural(st.Tolerance.Zones, "zone"), plural(st.Tolerance.Members, "member"))}
	if len(st.Next) == 0 {
		return append(lines, "placement: nothing to change")
	}
	for i, c := range st.Next {
		label := "next"
		if i > 0 {
			label = "then"
		}
		who := c.Name
		if who == "" {
			who = c.ID
		} else {
			who += " (" + c.ID + ")"
		}
		lines = append(lines, fmt.Sprintf("placement %s: %s %s: %s", label, c.Kind, who, c.Reason))
	}
	return lines
}
