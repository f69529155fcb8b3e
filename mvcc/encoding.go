package mvcc

import (
	"encoding/binary"
	"errors"

	"github.com/ballast-kv/ballast/store"
)

// Rev is a revision: the main revision of a write request and the position
// (sub) of one change within it.
type Rev struct {
	Main int64
	Sub  int64
}

func (r Rev) less(o Rev) bool { return r.Main < o.Main || (r.Main == o.Main && r.Sub < o.Sub) }

var errCorrupt = errors.New("mvcc: corrupt record")

// revKey is r<main><sub>: the event log, in revision order.
func revKey(r Rev) []byte {
	k := make([]byte, 1, 17)
	k[0] = store.PrefixRevision
	k = binary.BigEndian.AppendUint64(k, uint64(r.Main))
	return binary.BigEndian.AppendUint64(k, uint64(r.Sub))
}

func decodeRevKey(k []byte) Rev {
	return Rev{Main: int64(binary.BigEndian.Uint64(k[1:])), Sub: int64(binary.BigEndian.Uint64(k[9:]))}
}

func latestKey(key []byte) []byte { return store.Key(store.PrefixLatest, key) }

// escapeKey makes key safe to follow by more bytes while keeping order:
// 0x00 becomes 0x00 0xff and the key ends with 0x00 0x01.
func escapeKey(dst, key []byte) []byte {
	for _, c := range key {
		if c == 0 {
			dst = append(dst, 0, 0xff)
		} else {
			dst = append(dst, c)
		}
	}
	return append(dst, 0, 1)
}

// unescapeKey reverses escapeKey on b (which starts with an escaped key) and
// returns the key and the length of its escaped form.
func unescapeKey(b []byte) (key []byte, n int, err error) {
	for i := 0; i < len(b); i++ {
		if b[i] != 0 {
			key = append(key, b[i])
			continue
		}
		if i+1 >= len(b) {
			return nil, 0, errCorrupt
		}
		switch b[i+1] {
		case 0xff:
			key = append(key, 0)
			i++
		case 1:
			return key, i + 2, nil
		default:
			return nil, 0, errCorrupt
		}
	}
	return nil, 0, errCorrupt
}

// versionPrefix is v<escaped key>: every version of key sorts under it,
// newest first.
func versionPrefix(key []byte) []byte {
	return escapeKey([]byte{store.PrefixVersion}, key)
}

// versionKey is v<escaped key><^main><^sub>. Inverting the revision puts the
// newest version first, so "latest version at or below rev" is one seek.
func versionKey(key []byte, r Rev) []byte {
	k := versionPrefix(key)
	k = binary.BigEndian.AppendUint64(k, ^uint64(r.Main))
	return binary.BigEndian.AppendUint64(k, ^uint64(r.Sub))
}

// versionSeek appends to dst where, under a key's versionPrefix p, its
// newest version at or below rev sorts first.
func versionSeek(dst, p []byte, rev int64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, p...), ^uint64(rev))
}

func decodeVersionKey(k []byte) (key []byte, r Rev, err error) {
	key, n, err := unescapeKey(k[1:])
	if err != nil || len(k) != 1+n+16 {
		return nil, Rev{}, errCorrupt
	}
	return key, versionRev(k), nil
}

// isVersionKey reports whether k has a version key's shape: the prefix, an
// escaped key (its terminator 0x00 0x01) and a 16-byte revision.
func isVersionKey(k []byte) bool {
	n := len(k)
	return n >= 1+2+16 && k[0] == store.PrefixVersion && k[n-18] == 0 && k[n-17] == 1
}

// versionRev is the revision of a version key.
func versionRev(k []byte) Rev {
	tail := k[len(k)-16:]
	return Rev{Main: int64(^binary.BigEndian.Uint64(tail)), Sub: int64(^binary.BigEndian.Uint64(tail[8:]))}
}

// Version-index values: one byte.
const (
	versionPut       byte = 'p'
	versionTombstone byte = 't'
)

// meta is a key's latest live version, stored at l<key>. The value lives in
// the event log at Mod, so it is written once.
type meta struct {
	Create  int64
	Mod     Rev
	Version int64
	Lease   int64
}

func (m meta) encode() []byte {
	b := make([]byte, 0, 40)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Create))
	b = binary.BigEndian.AppendUint64(b, uint64(m.Mod.Main))
	b = binary.BigEndian.AppendUint64(b, uint64(m.Mod.Sub))
	b = binary.BigEndian.AppendUint64(b, uint64(m.Version))
	return binary.BigEndian.AppendUint64(b, uint64(m.Lease))
}

func decodeMeta(b []byte) (meta, error) {
	if len(b) != 40 {
		return meta{}, errCorrupt
	}
	u := func(i int) int64 { return int64(binary.BigEndian.Uint64(b[i*8:])) }
	return meta{Create: u(0), Mod: Rev{u(1), u(2)}, Version: u(3), Lease: u(4)}, nil
}

// Event kinds in the event log.
const (
	kindPut    byte = 'P'
	kindDelete byte = 'D'
)

// record is one entry of the event log at r<rev>: a put with the key's full
// state after it, or a delete.
type record struct {
	Kind    byte
	Key     []byte
	Create  int64
	Version int64
	Lease   int64
	Value   []byte
}

func (r *record) encode() []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(r.Key)+24+len(r.Value))
	b = append(b, r.Kind)
	b = binary.AppendUvarint(b, uint64(len(r.Key)))
	b = append(b, r.Key...)
	if r.Kind == kindPut {
		b = binary.BigEndian.AppendUint64(b, uint64(r.Create))
		b = binary.BigEndian.AppendUint64(b, uint64(r.Version))
		b = binary.BigEndian.AppendUint64(b, uint64(r.Lease))
		b = append(b, r.Value...)
	}
	return b
}

// decodeRecord decodes b; the result aliases b.
func decodeRecord(b []byte) (record, error) {
	var r record
	if len(b) < 2 {
		return r, errCorrupt
	}
	r.Kind = b[0]
	n, k := binary.Uvarint(b[1:])
	if k <= 0 || uint64(len(b)-1-k) < n {
		return r, errCorrupt
	}
	r.Key = b[1+k : 1+k+int(n)]
	rest := b[1+k+int(n):]
	switch r.Kind {
	case kindDelete:
		if len(rest) != 0 {
			return r, errCorrupt
		}
	case kindPut:
		if len(rest) < 24 {
			return r, errCorrupt
		}
		r.Create = int64(binary.BigEndian.Uint64(rest))
		r.Version = int64(binary.BigEndian.Uint64(rest[8:]))
		r.Lease = int64(binary.BigEndian.Uint64(rest[16:]))
		r.Value = rest[24:]
	default:
		return r, errCorrupt
	}
	return r, nil
}

func leaseKey(id int64) []byte {
	return binary.BigEndian.AppendUint64([]byte{store.PrefixLease}, uint64(id))
}

func attachedPrefix(id int64) []byte {
	return binary.BigEndian.AppendUint64([]byte{store.PrefixAttached}, uint64(id))
}

func attachedKey(id int64, key []byte) []byte { return append(attachedPrefix(id), key...) }

func metaKey(name string) []byte { return store.Key(store.PrefixMeta, []byte(name)) }
