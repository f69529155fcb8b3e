package store

import "encoding/binary"

// AppendUint64 appends v big-endian, so that byte order is numeric order.
func AppendUint64(dst []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(dst, v) }

// Uint64 decodes a big-endian uint64 from the first 8 bytes of b.
func Uint64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

// PrefixEnd returns the smallest key greater than every key with prefix p,
// or nil when p is all 0xff (no upper bound).
func PrefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// Key returns prefix followed by the given parts, in a new slice.
func Key(prefix byte, parts ...[]byte) []byte {
	n := 1
	for _, p := range parts {
		n += len(p)
	}
	k := make([]byte, 1, n)
	k[0] = prefix
	for _, p := range parts {
		k = append(k, p...)
	}
	return k
}
