package server

import (
	"context"
	"encoding/json"

	"fmt"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// httpHandler serves etcd's HTTP endpoints on the client port.
func (s *Server) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/version", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"etcdserver":%q,"etcdcluster":%q,"storage":%q}`, Version, ClusterVersion, ClusterVersion)
	})
	mux.HandleFunc("/health", s.serveHealth)
	mux.HandleFunc("/placement", s.servePlacement)
	livez := s.checks(map[string]func(context.Context) error{"serializable_read": s.readCheck(true)})
	readyz := s.checks(map[string]func(context.Context) error{
		"serializable_read": s.readCheck(true),
		"linearizable_read": s.readCheck(false),
		"data_corruption":   s.corruptCheck,
		"non_learner":       func(context.Context) error { return nil },
	})
	if s.cfg.EnablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("/livez", livez)
	mux.HandleFunc("/livez/", livez)
	mux.HandleFunc("/readyz", readyz)
	mux.HandleFunc("/readyz/", readyz)
	return getOnly(mux)
}

// servePlacement answers placementStatus as JSON, for `ballast status`.
func (s *Server) servePlacement(w http.ResponseWriter, _ *http.Request) {
	st, err := s.placementStatus()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(st)
}

func getOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// corruptCheck fails while a CORRUPT alarm is active, as etcd's readyz does.
func (s *Server) corruptCheck(context.Context) error {
	for _, a := range s.kv.Alarms() {
		if a.Alarm == pb.AlarmType_CORRUPT {
			return fmt.Errorf("alarm activated: %s", a.Alarm)
		}
	}
	return nil
}

func (s *Server) readCheck(serializable bool) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := s.rangeLocal(ctx, &pb.RangeRequest{Key: []byte{0}, KeysOnly: true, Limit: 1, Serializable: serializable})
		return err
	}
}

// serveHealth answers like etcd: alarms first, then leadership, then a read.
func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	excluded := map[string]bool{}
	for _, e := range r.URL.Query()["exclude"] {
		excluded[e] = true
	}
	serializable := r.URL.Query().Get("serializable") == "true"
	reason := ""
	for _, a := range s.kv.Alarms() {
		if !excluded[a.Alarm.String()] {
			reason = "ALARM " + a.Alarm.String()
			break
		}
	}
	if reason == "" && !serializable && s.node.Leader() == "" {
		reason = "RAFT NO LEADER"
	}
	if reason == "" {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second+2*s.cfg.ElectionTimeout)
		defer cancel()
		if err := s.readCheck(serializable)(ctx); err != nil {
			reason = "RANGE ERROR:" + err.Error()
		}
	}
	body := []byte(fmt.Sprintf(`{"health":"%v","reason":%q}`, reason == "", reason))
	if reason != "" {
		s.metrics.healthFailures.Inc()
		http.Error(w, string(body), http.StatusServiceUnavailable)
		return
	}
	s.metrics.healthSuccess.Inc()
	w.Write(body)
}

// checks serves Kubernetes-style /livez and /readyz with ?exclude= and
// ?verbose, and /<path>/<check> for one check.
func (s *Server) checks(all map[string]func(context.Context) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		names := map[string]bool{}
		if _, one, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/"); ok {
			if all[one] == nil {
				http.NotFound(w, r)
				return
			}
			names[one] = true
		} else {
			for n := range all {
				names[n] = true
			}
			for _, e := range r.URL.Query()["exclude"] {
				delete(names, e)
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second+2*s.cfg.ElectionTimeout)
		defer cancel()
		var out strings.Builder
		failed := false
		for n := range names {
			if err := all[n](ctx); err != nil {
				failed = true
				fmt.Fprintf(&out, "[-]%s failed: %v\n", n, err)
			} else {
				fmt.Fprintf(&out, "[+]%s ok\n", n)
			}
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if failed {
			http.Error(w, out.String(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if _, verbose := r.URL.Query()["verbose"]; verbose {
			fmt.Fprint(w, out.String())
		}
		fmt.Fprint(w, "ok\n")
	}
}
