package mvcc

import (
	"bytes"
	"slices"

	"go.etcd.io/etcd/api/v3/authpb"
)

// keySpan is the half-open key interval [begin, end); a nil end is the end
// of the key space.
type keySpan struct{ begin, end []byte }

// cmpEnd orders interval ends, nil (unbounded) last.
func cmpEnd(a, b []byte) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return 1
	case b == nil:
		return -1
	}
	return bytes.Compare(a, b)
}

// permSpan is the span a permission grants, with etcd's conventions: no
// range end is the single key, "\x00" is every key from key on.
func permSpan(key, rangeEnd []byte) keySpan {
	switch {
	case len(rangeEnd) == 0:
		return keySpan{key, append(slices.Clip(key), 0)}
	case len(rangeEnd) == 1 && rangeEnd[0] == 0:
		return keySpan{key, nil}
	}
	return keySpan{key, rangeEnd}
}

// spanSet is a union of key spans, merged into sorted, disjoint and
// non-adjacent spans, so that an interval is covered by the union exactly
// when one merged span covers it.
type spanSet []keySpan

func newSpanSet(spans []keySpan) spanSet {
	spans = slices.Clone(spans)
	spans = slices.DeleteFunc(spans, func(s keySpan) bool { return s.end != nil && bytes.Compare(s.begin, s.end) >= 0 })
	slices.SortFunc(spans, func(a, b keySpan) int { return bytes.Compare(a.begin, b.begin) })
	var out spanSet
	for _, s := range spans {
		if n := len(out); n > 0 && cmpEnd(s.begin, out[n-1].end) <= 0 {
			if cmpEnd(s.end, out[n-1].end) > 0 {
				out[n-1].end = s.end
			}
			continue
		}
		out = append(out, s)
	}
	return out
}

// covers reports whether every key of [begin, end) is in the set (end nil:
// unbounded). An empty or inverted interval asks for its first key only.
func (ss spanSet) covers(begin, end []byte) bool {
	if end != nil && bytes.Compare(begin, end) >= 0 {
		end = append(slices.Clip(begin), 0)
	}
	// The last span starting at or before begin is the only candidate.
	i, found := slices.BinarySearchFunc(ss, begin, func(s keySpan, k []byte) int { return bytes.Compare(s.begin, k) })
	if !found {
		i--
	}
	if i < 0 {
		return false
	}
	return cmpEnd(ss[i].end, end) >= 0
}

// userPerms are the merged read and write spans of one user's roles.
type userPerms struct{ read, write spanSet }

func mergePerms(roles []*authpb.Role) userPerms {
	var read, write []keySpan
	for _, r := range roles {
		for _, p := range r.KeyPermission {
			s := permSpan(p.Key, p.RangeEnd)
			switch p.PermType {
			case authpb.Permission_READ:
				read = append(read, s)
			case authpb.Permission_WRITE:
				write = append(write, s)
			case authpb.Permission_READWRITE:
				read, write = append(read, s), append(write, s)
			}
		}
	}
	return userPerms{read: newSpanSet(read), write: newSpanSet(write)}
}

// validPermRange is etcd's rule for a granted range: a key, then no end,
// an end after the key, or "\x00".
func validPermRange(key, rangeEnd []byte) bool {
	if len(key) == 0 {
		return false
	}
	if len(rangeEnd) == 0 || (len(rangeEnd) == 1 && rangeEnd[0] == 0) {
		return true
	}
	return bytes.Compare(key, rangeEnd) < 0
}
