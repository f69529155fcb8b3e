package server

import (
	"context"

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
	m, err := sqlbridge.New(sqlbridge.Config{
		URL: s.cfg.SQLMirror, Dialect: d, Store: s.kv, ClusterID: s.clusterID, Member: s.cfg.Name,
		IsLeader: s.node.IsLeader, Log: s.log, Registerer: s.metrics.reg,
	})
	if err != nil {
		s.log.Error("SQL mirror not started", "err", err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-s.stopCh; cancel() }()
	m.Run(ctx)
}
