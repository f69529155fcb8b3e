package placement

import "slices"

// Tolerance says how many whole regions, zones and single members the
// cluster can lose, worst case, and keep a quorum: the voters of members
// (voters that are up; the rest are already lost) are taken away largest
// region (zone, member) first while the voters left are still a majority of
// all voters. Unlabelled members count as one region (one zone per region).
// All three are 0 when the voters that are up are not a majority now. It is
// the "worst-case failure tolerance" metric.
func Tolerance(members []Member) (regions, zones, nodes int) {
	n, up := 0, 0
	byRegion := map[string]int{}
	byZone := map[zoneKey]int{}
	seen := map[uint64]bool{}
	for _, m := range members {
		if m.Role != Voter || seen[m.ID] {
			continue
		}
		seen[m.ID] = true
		n++
		if m.Alive {
			up++
			byRegion[m.Region]++
			byZone[zoneKey{m.Region, m.Zone}]++
		}
	}
	quorum := n/2 + 1
	if n == 0 || up < quorum {
		return 0, 0, 0
	}
	return survivable(mapValues(byRegion), up, quorum), survivable(mapValues(byZone), up, quorum), up - quorum
}

// survivable is how many groups can go, largest first, with quorum voters left.
func survivable(groups []int, up, quorum int) int {
	slices.SortFunc(groups, func(a, b int) int { return b - a })
	lost := 0
	for _, g := range groups {
		if up-g < quorum {
			break
		}
		up -= g
		lost++
	}
	return lost
}

func mapValues[K comparable](m map[K]int) []int {
	vs := make([]int, 0, len(m))
	for _, v := range m {
		vs = append(vs, v)
	}
	return vs
}
