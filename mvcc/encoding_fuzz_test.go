package mvcc

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

func addKeyPairSeeds(f *testing.F) {
	for _, s := range [][2]string{
		{"", ""}, {"", "\x00"}, {"a", "a\x00"}, {"a\x00", "a\x01"}, {"a", "ab"},
		{"\x00\xff", "\x00"}, {"\x00\x01", "\x00"}, {"\xff", "\xff\x00"}, {"foo/bar", "foo0"},
		{"a\x00\x00", "a\x00\xff"}, {"\x00\x00\x01", "\x00\x01"},
	} {
		f.Add([]byte(s[0]), []byte(s[1]), int64(1), int64(0))
	}
	f.Add([]byte("k"), []byte("k"), int64(1<<62), int64(-1))
}

// FuzzEscapeKey: escaping round-trips, is self-delimiting, and preserves
// byte order, which the version index relies on for range scans.
func FuzzEscapeKey(f *testing.F) {
	addKeyPairSeeds(f)
	f.Fuzz(func(t *testing.T, a, b []byte, _, _ int64) {
		ea, eb := escapeKey(nil, a), escapeKey(nil, b)
		for _, c := range []struct{ key, esc []byte }{{a, ea}, {b, eb}} {
			// Anything may follow an escaped key.
			got, n, err := unescapeKey(append(bytes.Clone(c.esc), 0, 1, 0xff, 0))
			if err != nil || n != len(c.esc) || !bytes.Equal(got, c.key) {
				t.Fatalf("unescape(escape(%q)) = %q, %d, %v; want %q, %d", c.key, got, n, err, c.key, len(c.esc))
			}
		}
		if got, want := sign(bytes.Compare(ea, eb)), sign(bytes.Compare(a, b)); got != want {
			t.Fatalf("order of %q vs %q is %d, escaped %d", a, b, want, got)
		}
		// Escaped forms are prefix-free: all versions of a key sort
		// together, apart from every other key's.
		if !bytes.Equal(a, b) && (bytes.HasPrefix(ea, eb) || bytes.HasPrefix(eb, ea)) {
			t.Fatalf("escaped %q and %q prefix each other", a, b)
		}
	})
}

// FuzzVersionKey: version keys decode to what was encoded, sort by key
// first and newest revision first within a key.
func FuzzVersionKey(f *testing.F) {
	addKeyPairSeeds(f)
	f.Fuzz(func(t *testing.T, a, b []byte, main, sub int64) {
		r1 := Rev{Main: main, Sub: sub}
		k := versionKey(a, r1)
		key, r, err := decodeVersionKey(k)
		if err != nil || !bytes.Equal(key, a) || r != r1 {
			t.Fatalf("decodeVersionKey(versionKey(%q, %v)) = %q, %v, %v", a, r1, key, r, err)
		}
		if !bytes.HasPrefix(k, versionPrefix(a)) {
			t.Fatalf("version key %q lacks prefix %q", k, versionPrefix(a))
		}
		if main < 0 || sub < 0 {
			return // revisions are never negative; order is only defined for those
		}
		r2 := Rev{Main: main/2 + 1, Sub: sub / 3}
		k2 := versionKey(b, r2)
		want := sign(bytes.Compare(a, b))
		if want == 0 {
			switch {
			case r1 == r2:
				want = 0
			case r1.less(r2):
				want = 1 // newer sorts first
			default:
				want = -1
			}
		}
		if got := sign(bytes.Compare(k, k2)); got != want {
			t.Fatalf("versionKey(%q,%v) vs versionKey(%q,%v): order %d, want %d", a, r1, b, r2, got, want)
		}
	})
}

// FuzzDecodeRecord: arbitrary bytes never panic; what decodes re-encodes to
// bytes that decode to the same record.
func FuzzDecodeRecord(f *testing.F) {
	for _, r := range []record{
		{Kind: kindPut, Key: []byte("k"), Create: 2, Version: 3, Lease: 4, Value: []byte("v")},
		{Kind: kindPut, Key: []byte{}, Value: nil},
		{Kind: kindDelete, Key: []byte("k\x00")},
		{Kind: kindPut, Key: bytes.Repeat([]byte("x"), 200), Create: -1, Version: 1 << 40, Value: bytes.Repeat([]byte{0}, 300)},
	} {
		f.Add(r.encode())
	}
	f.Add([]byte{})
	f.Add([]byte{kindPut})
	f.Add([]byte{kindDelete, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01})
	f.Add([]byte{kindPut, 0x05, 'a'})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			return
		}
		if r.Kind != kindPut && r.Kind != kindDelete {
			t.Fatalf("decoded unknown kind %q", r.Kind)
		}
		enc := r.encode()
		r2, err := decodeRecord(enc)
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if r2.Kind != r.Kind || !bytes.Equal(r2.Key, r.Key) || !bytes.Equal(r2.Value, r.Value) ||
			r2.Create != r.Create || r2.Version != r.Version || r2.Lease != r.Lease {
			t.Fatalf("round trip changed the record: %+v -> %+v", r, r2)
		}
		if !bytes.Equal(r2.encode(), enc) {
			t.Fatal("encoding is not stable")
		}
		// A canonical encoding is reproduced byte for byte.
		if _, n := binary.Uvarint(b[1:]); n > 0 && n == len(binary.AppendUvarint(nil, uint64(len(r.Key)))) && !bytes.Equal(enc, b) {
			t.Fatalf("canonical input %x re-encodes to %x", b, enc)
		}
	})
}

// FuzzDecodeMeta: arbitrary bytes never panic; meta round-trips exactly.
func FuzzDecodeMeta(f *testing.F) {
	f.Add(meta{Create: 2, Mod: Rev{3, 1}, Version: 2, Lease: 7}.encode())
	f.Add(meta{Create: -1, Mod: Rev{-1, -1}, Version: -1, Lease: -1}.encode())
	f.Add([]byte{})
	f.Add(make([]byte, 39))
	f.Add(make([]byte, 41))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			if len(b) == 40 {
				t.Fatalf("40 bytes rejected: %v", err)
			}
			return
		}
		if !bytes.Equal(m.encode(), b) {
			t.Fatalf("decodeMeta(%x) = %+v re-encodes to %x", b, m, m.encode())
		}
	})
}
