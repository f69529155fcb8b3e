package mvcc

import (
	"bytes"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
)

func perm(typ authpb.Permission_Type, key, end string) *authpb.Permission {
	p := &authpb.Permission{PermType: typ, Key: []byte(key)}
	if end != "" {
		p.RangeEnd = []byte(end)
	}
	return p
}

func TestPermCover(t *testing.T) {
	rw, r := authpb.Permission_READWRITE, authpb.Permission_READ
	perms := mergePerms([]*authpb.Role{
		{KeyPermission: []*authpb.Permission{perm(rw, "a/", "a0"), perm(r, "k", ""), perm(r, "m", "n"), perm(r, "n", "o")}},
		{KeyPermission: []*authpb.Permission{perm(rw, "z", "\x00"), perm(r, "b", "c"), perm(r, "bb", "d")}},
	})
	cases := []struct {
		key, end string
		write    bool
		want     bool
	}{
		{"a/x", "", false, true},
		{"a/x", "", true, true},
		{"a/", "a0", false, true},
		{"a/", "b", false, false},  // straddles the end
		{"a", "a/z", false, false}, // straddles the start
		{"a/", "\x00", false, false},
		{"k", "", false, true},
		{"k", "", true, false},
		{"k", "k\x00", false, true}, // the one key as a range
		{"k", "l", false, false},
		{"m", "o", false, true}, // adjacent permissions merge
		{"m", "o\x00", false, false},
		{"b", "d", false, true}, // overlapping permissions merge
		{"b", "d\x00", false, false},
		{"z", "\x00", true, true},
		{"zzz", "\x00", false, true},
		{"y", "\x00", false, false},
		{"\x00", "\x00", false, false},
		{"zz", "a", false, true}, // inverted: its first key only
	}
	for _, c := range cases {
		set := perms.read
		if c.write {
			set = perms.write
		}
		q := permSpan([]byte(c.key), []byte(c.end))
		if got := set.covers(q.begin, q.end); got != c.want {
			t.Errorf("covers(%q, %q, write=%v) = %v, want %v", c.key, c.end, c.write, got, c.want)
		}
	}
}

// coversSlow is an independent check: walk from begin, each step jumping
// to the furthest end of any span containing the current key.
func coversSlow(spans []keySpan, begin, end []byte) bool {
	if end != nil && bytes.Compare(begin, end) >= 0 {
		end = append(append([]byte(nil), begin...), 0)
	}
	cur := begin
	for {
		var best []byte
		found := false
		for _, s := range spans {
			if s.end != nil && bytes.Compare(s.begin, s.end) >= 0 {
				continue
			}
			if bytes.Compare(s.begin, cur) <= 0 && cmpEnd(cur, s.end) < 0 {
				if !found || cmpEnd(s.end, best) > 0 {
					best, found = s.end, true
				}
			}
		}
		if !found {
			return false
		}
		if cmpEnd(best, end) >= 0 {
			return true
		}
		cur = best
	}
}

// FuzzPermCover checks the merged interval set against coversSlow on
// arbitrary permissions and queries over a small alphabet.
func FuzzPermCover(f *testing.F) {
	f.Add([]byte("a/\x01a0\x02k\x01\x01m\x01n\x01n\x01o"), []byte("m"), []byte("o"))
	f.Add([]byte("z\x01\x00"), []byte("y"), []byte("\x00"))
	f.Fuzz(func(t *testing.T, permData, key, end []byte) {
		if len(key) == 0 || len(permData) > 200 {
			return
		}
		// permData: key \x01 end \x02 key \x01 end ...
		var spans []keySpan
		for _, p := range bytes.Split(permData, []byte{2}) {
			k, e, _ := bytes.Cut(p, []byte{1})
			if len(k) == 0 || !validPermRange(k, e) {
				continue
			}
			spans = append(spans, permSpan(k, e))
		}
		q := permSpan(key, end)
		got := newSpanSet(spans).covers(q.begin, q.end)
		if want := coversSlow(spans, q.begin, q.end); got != want {
			t.Fatalf("spans %q query [%q, %q): covers %v, slow %v", spans, q.begin, q.end, got, want)
		}
	})
}
