package server

import (
	"context"
	"sync"

	"github.com/ballast-kv/ballast/mvcc"
	"github.com/ballast-kv/ballast/sqlbridge"
)

// sqlMirrorLoop runs the SQL mirror (--sql-mirror) until the server stops:
// the leader copies every revision into the database; the others wait.
func (s *Server) sqlMirrorLoop() {
	defer s.wg.Done()
	if s.cfg.SQLMirror == "" {
		return
	}
	d, _ := sqlbridge.ParseDialect(s.cfg.SQLMirrorDialect) // checked by Validate
	m := sqlbridge.New(sqlbridge.Config{
		URL: s.cfg.SQLMirror, Dialect: d, Store: mirrorSource{s.kv}, ClusterID: s.clusterID, Member: s.cfg.Name,
		IsLeader: s.node.IsLeader, Log: s.log, Registerer: s.metrics.reg,
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-s.stopCh; cancel() }()
	m.Run(ctx)
}

// mirrorSource gives the mirror the store's revision log.
type mirrorSource struct{ *mvcc.Store }

func (m mirrorSource) LeaseTTL(id int64) int64 {
	r, err := m.LeaseTimeToLive(id, false)
	if err != nil || r.TTL < 0 {
		return 0
	}
	return r.GrantedTTL
}

// Follow is a watcher of every key from revision from.
func (m mirrorSource) Follow(from int64) (<-chan sqlbridge.Changes, func(), error) {
	ws := m.NewWatchStream()
	if _, _, err := ws.Watch(0, []byte{}, []byte{}, from, mvcc.WatchOptions{}); err != nil {
		ws.Close()
		return nil, nil, err
	}
	out := make(chan sqlbridge.Changes)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case r := <-ws.Chan():
				select {
				case out <- sqlbridge.Changes{Events: r.Events, Compacted: r.CompactRevision != 0}:
				case <-done:
					return
				}
			}
		}
	}()
	var once sync.Once
	return out, func() { once.Do(func() { close(done); ws.Close() }) }, nil
}
