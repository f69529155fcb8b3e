package sqlbridge

import (
	"bytes"
	"testing"
	"unicode/utf8"
)

func TestKeyName(t *testing.T) {
	for _, c := range []struct {
		key  string
		name string
	}{
		{"/registry/pods/default/web-1", "/registry/pods/default/web-1"},
		{"", ""},
		{"héllo", "héllo"},
		{"a\x00b", "a\uffff00b"},
		{"/k/\xff\xfe", "/k/\uffffff\ufffffe"},
		{"x\uffffy", "x\uffffef\uffffbf\uffffbfy"},
		{"\xe2\x82", "\uffffe2\uffff82"}, // a truncated three-byte sequence
	} {
		if got := KeyName([]byte(c.key)); got != c.name {
			t.Errorf("KeyName(%q) = %q, want %q", c.key, got, c.name)
		}
		if back, err := NameKey(c.name); err != nil || string(back) != c.key {
			t.Errorf("NameKey(%q) = %q, %v; want %q", c.name, back, err, c.key)
		}
	}
	for _, bad := range []string{"a\uffff", "a\uffff0", "a\uffffzz", "\uffffAB"} {
		if _, err := NameKey(bad); err == nil {
			t.Errorf("NameKey(%q) accepted a malformed escape", bad)
		}
	}
}

// FuzzKeyName checks that every key has a name PostgreSQL text can hold,
// that the name gives the key back, and that distinct keys get distinct
// names.
func FuzzKeyName(f *testing.F) {
	for _, s := range []string{"/registry/a", "a\x00", "\xff", "\uffff", "é", "\xe2\x82\xac"} {
		f.Add([]byte(s), []byte("/registry/b"))
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		na, nb := KeyName(a), KeyName(b)
		if !utf8.ValidString(na) || bytes.IndexByte([]byte(na), 0) >= 0 {
			t.Fatalf("KeyName(%q) = %q: not storable as text", a, na)
		}
		back, err := NameKey(na)
		if err != nil || !bytes.Equal(back, a) {
			t.Fatalf("NameKey(KeyName(%q)) = %q, %v", a, back, err)
		}
		if (na == nb) != bytes.Equal(a, b) {
			t.Fatalf("KeyName(%q) = %q and KeyName(%q) = %q", a, na, b, nb)
		}
	})
}
