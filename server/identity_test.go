package server

import (
	"strings"
	"testing"
)

// A member file reads back as written, and any single flipped bit reads as
// corruption, never as another member's ids.
func TestMemberFileDetectsEveryBitFlip(t *testing.T) {
	const id, cid = 0xbdae9bbc15dd390d, 0xd1cfaf999eb97a2a
	good := memberFile(id, cid)
	gotID, gotCID, err := parseMemberFile(good)
	if err != nil || gotID != id || gotCID != cid {
		t.Fatalf("parse(%q) = %x, %x, %v", good, gotID, gotCID, err)
	}
	for i := range good {
		for bit := range 8 {
			bad := []byte(string(good))
			bad[i] ^= 1 << bit
			if gotID, gotCID, err := parseMemberFile(bad); err == nil || !strings.Contains(err.Error(), "corrupted member file") {
				t.Fatalf("byte %d bit %d flipped: parse = %x, %x, %v; want a corruption error", i, bit, gotID, gotCID, err)
			}
		}
	}
	for n := range len(good) {
		if _, _, err := parseMemberFile(good[:n]); err == nil {
			t.Fatalf("truncated to %d bytes: no error", n)
		}
	}
}
