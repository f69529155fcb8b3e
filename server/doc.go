// Package server is the one place that wires Ballast together: it opens the
// stores, starts Raft, and serves etcd's v3 gRPC services and HTTP endpoints
// on the client URLs. Handlers are thin: validate, call, translate the error
// (errors.go is the only translation point), fill the header.
package server
