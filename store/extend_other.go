//go:build !linux

package store

import "github.com/cockroachdb/pebble/v2/vfs"

// extendFile does nothing here: Pebble's own preallocation stands.
func extendFile(vfs.File, int64) error { return nil }
