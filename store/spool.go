package store

import (
	"bufio"
	"fmt"
	"io"
	"os"
)

// Spool writes a stream to an unnamed file in dir, so that its size is
// known before it is sent and nothing holds the data open while a slow
// reader takes it. The file is unlinked as soon as it is created: nothing is
// left behind, even by a crash. It returns the file positioned at its start
// and its size; the caller closes it.
func Spool(dir string, write func(io.Writer) error) (*os.File, int64, error) {
	f, err := os.CreateTemp(dir, "spool-*.tmp")
	if err != nil {
		return nil, 0, err
	}
	os.Remove(f.Name())
	w := bufio.NewWriterSize(f, 1<<20)
	err = write(w)
	if err == nil {
		err = w.Flush()
	}
	var size int64
	if err == nil {
		size, err = f.Seek(0, io.SeekCurrent)
	}
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("store: spool: %w", err)
	}
	return f, size, nil
}
