package mvcc

import "sync"

// pageCounts remembers how many keys remain after each page of a paged
// list, so the next page need not count them again.
//
// etcd reports in every Range the number of keys in the whole requested
// range, and Kubernetes pages a list by asking for [after-last-key, end) at
// the first page's revision. Counting the rest of the range on every page
// makes a list of n keys cost O(n²/limit) key visits; with this cache it
// costs O(n). The remembered counts are exact: the keys of a range at a
// fixed revision never change, and a read below the compaction revision is
// refused before the cache is asked.
type pageCounts struct {
	mu    sync.Mutex
	m     map[pageKey]int64
	order []pageKey // insertion order, for eviction
	next  int
}

type pageKey struct {
	key, end string
	rev      int64
}

const maxPageCounts = 4096

func (p *pageCounts) get(key, end []byte, rev int64) (int64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, ok := p.m[pageKey{string(key), string(end), rev}]
	return n, ok
}

func (p *pageCounts) put(key, end []byte, rev, n int64) {
	k := pageKey{string(key), string(end), rev}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = make(map[pageKey]int64)
	}
	if _, ok := p.m[k]; ok {
		return
	}
	if len(p.order) < maxPageCounts {
		p.order = append(p.order, k)
	} else {
		delete(p.m, p.order[p.next])
		p.order[p.next] = k
		p.next = (p.next + 1) % maxPageCounts
	}
	p.m[k] = n
}

// reset forgets every count (the state was replaced).
func (p *pageCounts) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m, p.order, p.next = nil, nil, 0
}
