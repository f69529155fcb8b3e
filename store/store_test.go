package store

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

func TestPrefixEnd(t *testing.T) {
	tests := []struct {
		in, want []byte
	}{
		{[]byte("a"), []byte("b")},
		{[]byte("abc"), []byte("abd")},
		{[]byte("a\xff"), []byte("b")},
		{[]byte("a\xff\xff"), []byte("b")},
		{[]byte{0}, []byte{1}},
		{[]byte{0xff}, nil},
		{[]byte{0xff, 0xff}, nil},
		{[]byte{}, nil},
	}
	for _, tt := range tests {
		t.Run(string(tt.in), func(t *testing.T) {
			got := PrefixEnd(tt.in)
			if !bytes.Equal(got, tt.want) || (got == nil) != (tt.want == nil) {
				t.Fatalf("PrefixEnd(%q) = %q, want %q", tt.in, got, tt.want)
			}
			// Every key with the prefix sorts below the end.
			if got != nil {
				for _, k := range [][]byte{tt.in, append(bytes.Clone(tt.in), 0xff, 0xff)} {
					if bytes.Compare(k, got) >= 0 {
						t.Fatalf("%q is not below PrefixEnd %q", k, got)
					}
				}
			}
		})
	}
	in := []byte("ab")
	PrefixEnd(in)
	if string(in) != "ab" {
		t.Fatalf("PrefixEnd modified its argument to %q", in)
	}
}

func TestUint64Order(t *testing.T) {
	vals := []uint64{0, 1, 255, 256, 1 << 32, 1<<63 - 1, 1 << 63, 1<<64 - 1}
	for i, a := range vals {
		ea := AppendUint64([]byte("x"), a)
		if len(ea) != 9 || Uint64(ea[1:]) != a {
			t.Fatalf("round trip of %d: %x", a, ea)
		}
		for _, b := range vals[i+1:] {
			if bytes.Compare(AppendUint64(nil, a), AppendUint64(nil, b)) >= 0 {
				t.Fatalf("encoding of %d does not sort below %d", a, b)
			}
		}
	}
	if k := Key(PrefixLatest, []byte("a"), nil, []byte("bc")); string(k) != "labc" {
		t.Fatalf("Key = %q", k)
	}
}

func TestOpenAndGetCopy(t *testing.T) {
	fs := vfs.NewMem()
	db, err := Open(Config{Dir: "/db", FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := GetCopy(db, []byte("missing")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetCopy(missing) = %v, want ErrNotFound", err)
	}
	if err := db.Set([]byte("k"), []byte("value"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	v, err := GetCopy(db, []byte("k"))
	if err != nil || string(v) != "value" {
		t.Fatalf("GetCopy = %q, %v", v, err)
	}
	if err := db.Set([]byte("k"), []byte("other"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if string(v) != "value" {
		t.Fatalf("the copy changed with the store: %q", v)
	}
	if sz := db.Size(); sz.InUse <= 0 || sz.InUse > sz.Total {
		t.Fatalf("Size() = %+v; want 0 < in use <= total", sz)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(Config{Dir: "/db", FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if v, err := GetCopy(db, []byte("k")); err != nil || string(v) != "other" {
		t.Fatalf("after reopen GetCopy = %q, %v", v, err)
	}
}

// TestSpreadMemTableSize: each member's state memtable is 4 to 6 MiB, and
// members whose ids differ in their low six bits get different sizes, so
// their flushes drift apart instead of landing together.
func TestSpreadMemTableSize(t *testing.T) {
	seen := map[uint64]bool{}
	for seed := uint64(0); seed < 64; seed++ {
		n := SpreadMemTableSize(seed*0x9e3779b97f4a7c15&^63 | seed)
		if n < 4<<20 || n >= 6<<20 {
			t.Fatalf("seed %d: memtable %d bytes, want within [4 MiB, 6 MiB)", seed, n)
		}
		if seen[n] {
			t.Fatalf("seed %d: memtable %d bytes repeats an earlier seed's", seed, n)
		}
		seen[n] = true
	}
}
