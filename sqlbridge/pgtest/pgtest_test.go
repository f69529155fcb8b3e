package pgtest

import (
	"context"
	"testing"
)

// The harness is what every SQL bridge test stands on: a real server that
// takes writes, survives SIGKILL with its committed data, and restarts.
func TestServerSurvivesKill(t *testing.T) {
	s := Start(t)
	s.CreateDB("t")
	s.Exec("t", "CREATE TABLE x (v int); INSERT INTO x VALUES (42)")
	s.Kill()
	s.Restart()
	var v int
	if err := s.Connect("t").QueryRow(context.Background(), "SELECT v FROM x").Scan(&v); err != nil || v != 42 {
		t.Fatalf("after kill and restart: v=%d err=%v, want 42", v, err)
	}
}
