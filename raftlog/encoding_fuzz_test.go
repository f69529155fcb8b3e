package raftlog

import (
	"bytes"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// FuzzDecodeLog: arbitrary bytes never panic; whatever decodes re-encodes to
// bytes that decode to the same entry.
func FuzzDecodeLog(f *testing.F) {
	for _, l := range []*raft.Log{
		testLog(1, 1), testLog(3, 2), testLog(5, 9),
		{Index: 1 << 63, Term: 1<<64 - 1, Type: raft.LogBarrier, Data: []byte{}, Extensions: []byte{0}},
	} {
		f.Add(encodeLog(nil, l))
	}
	f.Add([]byte{})
	f.Add(make([]byte, 25))
	f.Add(append(make([]byte, 25), 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01))
	f.Add(append(make([]byte, 25), 0x05, 'a', 0x00))
	f.Fuzz(func(t *testing.T, b []byte) {
		var l raft.Log
		if err := decodeLog(b, &l); err != nil {
			return
		}
		enc := encodeLog(nil, &l)
		var l2 raft.Log
		if err := decodeLog(enc, &l2); err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
		requireLogEqual(t, &l2, &l)
		if !bytes.Equal(encodeLog(nil, &l2), enc) {
			t.Fatal("encoding is not stable")
		}
	})
}

// FuzzEncodeLog: every entry Raft can hand over survives encode/decode.
func FuzzEncodeLog(f *testing.F) {
	f.Add(uint64(1), uint64(1), int64(1_700_000_000_000_000_000), uint8(raft.LogCommand), []byte("x"), []byte(nil))
	f.Add(uint64(0), uint64(0), int64(0), uint8(0), []byte(nil), []byte{1, 2})
	f.Add(uint64(1<<64-1), uint64(7), int64(-1), uint8(255), bytes.Repeat([]byte{0xff}, 300), []byte{})
	f.Fuzz(func(t *testing.T, index, term uint64, at int64, typ uint8, data, ext []byte) {
		l := &raft.Log{Index: index, Term: term, Type: raft.LogType(typ), Data: data, Extensions: ext}
		if at != 0 { // the Unix epoch itself encodes as "no timestamp"
			l.AppendedAt = time.Unix(0, at)
		}
		var got raft.Log
		if err := decodeLog(encodeLog([]byte("garbage to append to"), l)[len("garbage to append to"):], &got); err != nil {
			t.Fatalf("decode(encode(%+v)): %v", l, err)
		}
		requireLogEqual(t, &got, l)
	})
}
