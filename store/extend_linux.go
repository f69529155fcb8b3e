package store

import (
	"github.com/cockroachdb/pebble/v2/vfs"
	"golang.org/x/sys/unix"
)

// extendFile allocates f's first size bytes and makes that its size.
func extendFile(f vfs.File, size int64) error {
	return unix.Fallocate(int(f.Fd()), 0, 0, size)
}
