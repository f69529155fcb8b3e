package placement

import (
	"testing"
	"time"
)

func TestTolerance(t *testing.T) {
	tests := []struct {
		name                  string
		members               []Member
		regions, zones, nodes int
	}{
		{
			name: "five voters 2/2/1 over three regions survive a region, or two zones or members",
			members: []Member{
				mem("a1", "A", "a", Voter), mem("a2", "A", "b", Voter),
				mem("b1", "B", "a", Voter), mem("b2", "B", "b", Voter),
				mem("c1", "C", "a", Voter)},
			regions: 1, zones: 2, nodes: 2,
		},
		{
			name: "three voters 1/1/1 survive one region",
			members: []Member{
				mem("a1", "A", "a", Voter), mem("b1", "B", "a", Voter), mem("c1", "C", "a", Voter)},
			regions: 1, zones: 1, nodes: 1,
		},
		{
			name: "two regions: 2/1 does not survive the loss of the larger",
			members: []Member{
				mem("a1", "A", "a", Voter), mem("a2", "A", "b", Voter), mem("b1", "B", "a", Voter)},
			regions: 0, zones: 1, nodes: 1,
		},
		{
			name: "two regions: 3/2 does not either",
			members: []Member{
				mem("a1", "A", "a", Voter), mem("a2", "A", "b", Voter), mem("a3", "A", "c", Voter),
				mem("b1", "B", "a", Voter), mem("b2", "B", "b", Voter)},
			regions: 0, zones: 2, nodes: 2,
		},
		{
			name: "seven voters 3/2/2 survive one region, not two",
			members: []Member{
				mem("a1", "A", "a", Voter), mem("a2", "A", "b", Voter), mem("a3", "A", "c", Voter),
				mem("b1", "B", "a", Voter), mem("b2", "B", "b", Voter),
				mem("c1", "C", "a", Voter), mem("c2", "C", "b", Voter)},
			regions: 1, zones: 3, nodes: 3,
		},
		{
			name: "zones are zones of a region: zone a of A and zone a of B are two",
			members: []Member{
				mem("a1", "A", "a", Voter), mem("b1", "B", "a", Voter), mem("c1", "C", "a", Voter)},
			regions: 1, zones: 1, nodes: 1,
		},
		{
			name: "voters in one zone survive no zone",
			members: []Member{
				mem("a1", "A", "a", Voter), mem("a2", "A", "a", Voter), mem("a3", "A", "a", Voter)},
			regions: 0, zones: 0, nodes: 1,
		},
		{
			name: "unlabelled voters are one region and one zone",
			members: []Member{
				mem("x1", "", "", Voter), mem("x2", "", "", Voter), mem("x3", "", "", Voter)},
			regions: 0, zones: 0, nodes: 1,
		},
		{
			name: "non-voters and absent members do not count",
			members: []Member{
				mem("a1", "A", "a", Voter), mem("a2", "A", "b", NonVoter), mem("a3", "A", "c", NonVoter),
				mem("b1", "B", "a", Voter), mem("c1", "C", "a", Voter), mem("c2", "C", "b", Absent)},
			regions: 1, zones: 1, nodes: 1,
		},
		{
			name: "a voter already down is already lost",
			members: []Member{
				mem("a1", "A", "a", Voter), mem("b1", "B", "a", Voter), down(mem("c1", "C", "a", Voter), time.Second),
				mem("d1", "D", "a", Voter), mem("e1", "E", "a", Voter)},
			regions: 1, zones: 1, nodes: 1,
		},
		{
			name: "a voter down leaves three of three needed",
			members: []Member{
				mem("a1", "A", "a", Voter), mem("b1", "B", "a", Voter), down(mem("c1", "C", "a", Voter), time.Hour)},
			regions: 0, zones: 0, nodes: 0,
		},
		{
			name: "no quorum: nothing more can be lost",
			members: []Member{
				mem("a1", "A", "a", Voter), down(mem("b1", "B", "a", Voter), time.Hour), down(mem("c1", "C", "a", Voter), time.Hour)},
			regions: 0, zones: 0, nodes: 0,
		},
		{
			name:    "a single voter survives nothing",
			members: []Member{mem("a1", "A", "a", Voter)},
			regions: 0, zones: 0, nodes: 0,
		},
		{
			name:    "no voters",
			members: []Member{mem("a1", "A", "a", NonVoter)},
			regions: 0, zones: 0, nodes: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, z, n := Tolerance(tt.members)
			if r != tt.regions || z != tt.zones || n != tt.nodes {
				t.Errorf("Tolerance = %d regions, %d zones, %d nodes; want %d, %d, %d", r, z, n, tt.regions, tt.zones, tt.nodes)
			}
		})
	}
}
