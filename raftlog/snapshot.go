package raftlog

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"

	"github.com/hashicorp/raft"

	"github.com/ballast-kv/ballast/store"
)

// markerMagic begins a local snapshot: a marker that the state up to its
// index is durable in the state machine's own files.
const markerMagic = "ballast-state-marker "

// snapshotStore keeps Raft's snapshots in a FileSnapshotStore, where local
// snapshots are small markers (the state machine's data directory is the
// real snapshot). When Raft opens a marker to send it to a member that is
// too far behind, the store streams the live state instead: a consistent
// copy taken now, at an applied index at or above the marker's. The member
// restores it and skips the log entries it already covers, since Apply
// ignores entries at or below the applied index stored with the state.
//
// The copy is written to an unlinked temporary file first, because Raft
// sends a snapshot's size before its data; memory stays bounded and the
// space is freed when the send ends, even after a crash.
type snapshotStore struct {
	*raft.FileSnapshotStore
	sm  StateMachine
	dir string
	log *slog.Logger
	// onCreate is told the index of every snapshot begun here: taken by
	// count, by Raft's periodic check, or installed from a leader.
	onCreate func(index uint64)
}

func (s *snapshotStore) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.FileSnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err == nil && s.onCreate != nil {
		s.onCreate(index)
	}
	return sink, err
}

func (s *snapshotStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.FileSnapshotStore.Open(id)
	if err != nil {
		return nil, nil, err
	}
	br := bufio.NewReader(rc)
	head, _ := br.Peek(len(markerMagic))
	if !bytes.Equal(head, []byte(markerMagic)) {
		return meta, readCloser{br, rc}, nil // a snapshot received from a leader
	}
	rc.Close()
	var applied uint64
	f, size, err := store.Spool(s.dir, func(w io.Writer) (err error) {
		applied, err = s.sm.WriteSnapshot(w)
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("raftlog: write state snapshot: %w", err)
	}
	s.log.Info("streaming state snapshot", "snapshot-index", meta.Index, "applied-index", applied, "bytes", size)
	m := *meta
	m.Size = size
	return &m, f, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}
