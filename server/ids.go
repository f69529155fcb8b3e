package server

import (
	"crypto/sha1"
	"encoding/binary"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// memberID derives a member's id from its peer URLs and the cluster token
// exactly as etcd does, so a Ballast member started with an etcd command line
// has the id etcd would give it.
func memberID(peerURLs []string, token string) uint64 {
	urls := slices.Clone(peerURLs)
	slices.Sort(urls)
	b := []byte(strings.Join(urls, ""))
	b = append(b, token...)
	sum := sha1.Sum(b)
	return binary.BigEndian.Uint64(sum[:8])
}

// clusterID derives the cluster id from the member ids, as etcd does.
func clusterID(members []uint64) uint64 {
	ids := slices.Clone(members)
	slices.Sort(ids)
	b := make([]byte, 0, 8*len(ids))
	for _, id := range ids {
		b = binary.BigEndian.AppendUint64(b, id)
	}
	sum := sha1.Sum(b)
	return binary.BigEndian.Uint64(sum[:8])
}

// idGenerator makes request and lease ids unique across members: the low
// 16 bits of the member id, then a time-seeded counter (etcd's scheme).
type idGenerator struct {
	prefix uint64
	next   atomic.Uint64
}

func newIDGenerator(member uint64, now time.Time) *idGenerator {
	g := &idGenerator{prefix: (member & 0xffff) << 48}
	g.next.Store(uint64(now.UnixMilli()) << 8 & (1<<48 - 1))
	return g
}

func (g *idGenerator) Next() uint64 {
	return g.prefix | (g.next.Add(1) & (1<<48 - 1))
}
