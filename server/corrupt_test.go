package server

import (
	"slices"
	"testing"
)

func TestCorruptMembers(t *testing.T) {
	h := func(hash uint32, compact int64) memberHash { return memberHash{hash, compact} }
	cases := []struct {
		name   string
		hashes map[uint64]memberHash
		want   []uint64
	}{
		{"all agree", map[uint64]memberHash{1: h(7, 0), 2: h(7, 0), 3: h(7, 0)}, nil},
		{"a follower differs", map[uint64]memberHash{1: h(7, 0), 2: h(8, 0), 3: h(7, 0)}, []uint64{2}},
		{"the leader differs", map[uint64]memberHash{1: h(8, 0), 2: h(7, 0), 3: h(7, 0)}, []uint64{1}},
		{"two of five differ", map[uint64]memberHash{1: h(7, 0), 2: h(8, 0), 3: h(7, 0), 4: h(9, 0), 5: h(7, 0)}, []uint64{2, 4}},
		{"no majority", map[uint64]memberHash{1: h(7, 0), 2: h(8, 0)}, []uint64{0}},
		{"three-way split", map[uint64]memberHash{1: h(7, 0), 2: h(8, 0), 3: h(9, 0)}, []uint64{0}},
		{"a member compacted elsewhere is not compared", map[uint64]memberHash{1: h(7, 5), 2: h(8, 6), 3: h(7, 5)}, nil},
		{"one answer missing, the rest disagree", map[uint64]memberHash{1: h(7, 0), 3: h(8, 0)}, []uint64{0}},
		{"the leader did not hash", map[uint64]memberHash{2: h(7, 0), 3: h(8, 0)}, nil},
	}
	for _, c := range cases {
		if got := corruptMembers(1, c.hashes); !slices.Equal(got, c.want) {
			t.Errorf("%s: corruptMembers = %v, want %v", c.name, got, c.want)
		}
	}
}
