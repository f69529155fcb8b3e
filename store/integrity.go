package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Pebble opens over some damage without a word:
//
//   - It stops reading a MANIFEST at the first record that fails its
//     checksum, so a flipped bit in the middle of one silently opens an
//     older version of the database: tables flushed or compacted after it
//     are forgotten (and deleted as obsolete).
//   - In a WAL it looks for proof of corruption (a later chunk that says it
//     was synced past the bad one) only from the next 32 KiB block on, so a
//     flip in a log's last block reads as a torn write and drops records
//     that had been synced.
//   - It checks only the comparer and merger names of an OPTIONS file, and
//     never reads a WAL kept for reuse or a superseded MANIFEST again.
//
// checkFiles runs before Pebble opens dir and finds all of these: every
// chunk of every WAL and MANIFEST must pass its checksum up to the log's
// end, and a chunk that fails is a torn write only if no valid chunk after
// it proves that it had been written whole. The one case no checker can
// tell from a torn write is damage in the last record written before a
// crash; the member then has a shorter log, as after a crash before its
// sync, and Raft re-sends what it lacks.
//
// A stop that no later chunk proves is damage all the same if the record
// of synced files (record.go) says that more of the log had been synced:
// that finds a flip in a MANIFEST's last record, or a log cut short. A stop
// past what was synced is a torn write: it is logged, and the member
// starts (a state store re-applies what it lost from the Raft log; a Raft
// log gets the entries it lacks from the leader).
//
// It reports whether dir holds no store yet (no MANIFEST marker, which
// Pebble writes last when it creates one), and returns the record read.
func checkFiles(fs vfs.FS, dir string, log *slog.Logger) (fresh bool, rec *fileRecord, err error) {
	names, err := fs.List(dir)
	if errors.Is(err, os.ErrNotExist) {
		names, err = nil, nil // a new store: nothing to check
	}
	if err != nil {
		return false, nil, err
	}
	rec, err = readRecord(fs, dir, log)
	if err != nil {
		return false, nil, err
	}
	synced := rec.synced
	slices.Sort(names)
	current, currentNum := currentManifest(names)
	for _, name := range names {
		path := filepath.Join(dir, name)
		var logNum uint32
		switch {
		case strings.HasPrefix(name, "MANIFEST-"):
			// One the marker does not name yet is being started (a crash
			// may leave it empty or cut); Pebble never reads it. One it
			// named before may have been current at a crash, so it gets
			// the same torn-write allowance as the current one.
			if num, ok := fileNum(name, "MANIFEST-", ""); current == "" || !ok || num > currentNum {
				continue
			}
			logNum = legacyLog
		case strings.HasSuffix(name, ".log"):
			num, perr := strconv.ParseUint(strings.TrimSuffix(name, ".log"), 10, 32)
			if perr != nil {
				continue
			}
			logNum = uint32(num)
		default:
			continue
		}
		c, err := checkLogFile(fs, path, logNum, synced[name])
		if err != nil {
			return false, nil, err
		}
		switch {
		case c.proven:
			return false, nil, fmt.Errorf("%w: %s: a record at offset %d fails its checksum, and records written after it are intact", pebble.ErrCorruption, path, c.stop)
		case c.stop < synced[name]:
			return false, nil, fmt.Errorf("%w: %s: its records end at offset %d, but %d bytes of it had been synced", pebble.ErrCorruption, path, c.stop, synced[name])
		case c.torn:
			log.Warn("a log ends in a record that fails its checksum, past what had been synced; taken as a torn write and dropped",
				"file", path, "offset", c.stop, "synced", synced[name], "size", c.size)
		}
	}
	if err := checkOptionsSum(fs, dir, rec.optName, rec.optSum); err != nil {
		return false, nil, err
	}
	return current == "", rec, nil
}

// The chunk format of Pebble's record logs (pebble/record): a 32 KiB block
// holds chunks of checksum (4), length (2), type (1), then for the
// recyclable and WAL-sync types the log number (4), and for WAL-sync the
// offset up to which the log was synced when it was written (8); then the
// payload. The checksum covers everything from the type byte on.
const (
	logBlockSize     = 32 << 10
	legacyHeader     = 7
	recyclableHeader = legacyHeader + 4
	walSyncHeader    = recyclableHeader + 8
	fullChunk        = 1
	firstChunk       = 2
	firstWALSyncType = 9
	lastChunkType    = 12
	firstRecyclable  = 5
	legacyLog        = ^uint32(0) // a MANIFEST: legacy chunks, no log number
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// maskedCRC is the checksum Pebble stores (LevelDB's masked CRC-32C).
func maskedCRC(b []byte) uint32 {
	c := crc32.Checksum(b, castagnoli)
	return (c>>15 | c<<17) + 0xa282ead8
}

// chunk is what a valid chunk header at some offset says.
type chunk struct {
	end       int    // offset just past the payload
	typ       byte   // the chunk encoding
	logNum    uint32 // for recyclable and WAL-sync chunks
	syncedOff uint64 // for WAL-sync chunks
}

// headerSize is the header length of a chunk type.
func headerSize(typ byte) int {
	switch {
	case typ >= firstWALSyncType:
		return walSyncHeader
	case typ >= firstRecyclable:
		return recyclableHeader
	}
	return legacyHeader
}

// chunkAt parses the chunk at off in one block, or says there is no valid
// one there. Chunks never cross a block's end.
func chunkAt(block []byte, off int) (chunk, bool) {
	if off+legacyHeader > len(block) {
		return chunk{}, false
	}
	typ := block[off+6]
	if typ == 0 || typ > lastChunkType {
		return chunk{}, false
	}
	header := headerSize(typ)
	end := off + header + int(binary.LittleEndian.Uint16(block[off+4:]))
	if end > len(block) {
		return chunk{}, false
	}
	if binary.LittleEndian.Uint32(block[off:]) != maskedCRC(block[off+6:end]) {
		return chunk{}, false
	}
	c := chunk{end: end, typ: typ}
	if header >= recyclableHeader {
		c.logNum = binary.LittleEndian.Uint32(block[off+7:])
	}
	if header == walSyncHeader {
		c.syncedOff = binary.LittleEndian.Uint64(block[off+11:])
	}
	return c, true
}

// logCheck is what checking one log found.
type logCheck struct {
	stop   int64 // where its valid records end
	torn   bool  // they end in a chunk that fails its checksum
	proven bool  // ... and a later chunk proves the log went on: damage
	size   int64
}

// checkLogFile checks a WAL (logNum, from its name) or a MANIFEST
// (legacyLog) of which synced bytes are known durable.
func checkLogFile(fs vfs.FS, path string, logNum uint32, synced int64) (logCheck, error) {
	f, err := fs.Open(path)
	if err != nil {
		return logCheck{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return logCheck{}, err
	}
	c, err := checkLog(f, st.Size(), logNum)
	if err != nil {
		return logCheck{}, fmt.Errorf("store: read %s: %w", path, err)
	}
	return c, nil
}

// checkLog walks a log's chunks and, where they stop short of a clean
// end, looks for the proof that the stop is damage.
func checkLog(f io.ReaderAt, size int64, logNum uint32) (logCheck, error) {
	w, err := walkChunks(io.NewSectionReader(f, 0, size), logNum)
	if err != nil {
		return logCheck{}, err
	}
	c := logCheck{stop: w.end, torn: !w.clean, size: size}
	if w.clean {
		return c, nil
	}
	from := w.end / logBlockSize * logBlockSize // the stop's block: nothing before it is read again
	var zeroTail bool
	c.proven, zeroTail, err = proveDamage(io.NewSectionReader(f, from, size-from), from, w, logNum)
	// Nothing but zeroes after the stop: the unwritten rest of a log
	// created at its full size (Config.FullSizeWALs), its clean end.
	c.torn = c.proven || !zeroTail
	return c, err
}

// currentManifest is the MANIFEST Pebble's marker names, as Pebble picks
// it: the marker file "marker.manifest.<iteration>.<name>" with the highest
// iteration. It returns "" if there is none (a store whose first open did
// not finish).
func currentManifest(names []string) (name string, num uint64) {
	best := -1
	for _, n := range names {
		rest, ok := strings.CutPrefix(n, "marker.manifest.")
		if !ok {
			continue
		}
		iter, target, ok := strings.Cut(rest, ".")
		i, err := strconv.Atoi(iter)
		if !ok || err != nil || i <= best {
			continue
		}
		if n, ok := fileNum(target, "MANIFEST-", ""); ok {
			name, num, best = target, n, i
		}
	}
	return name, num
}

// fileNum parses the number in a file name prefix+digits+suffix.
func fileNum(name, prefix, suffix string) (uint64, bool) {
	digits, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	digits, ok = strings.CutSuffix(digits, suffix)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	return n, err == nil
}

// forEachBlock calls fn with each 32 KiB block of a log (the last may be
// shorter) and its offset, until fn says stop. r starts at offset from.
func forEachBlock(r io.Reader, from int64, fn func(base int64, block []byte) (stop bool)) error {
	block := make([]byte, logBlockSize)
	for base := from; ; base += logBlockSize {
		n, err := io.ReadFull(r, block)
		if err == io.EOF {
			return nil
		}
		if err != nil && err != io.ErrUnexpectedEOF {
			return err
		}
		if fn(base, block[:n]) || n < logBlockSize {
			return nil
		}
	}
}

// walk is where a log's valid chunks, read from its start, end.
type walk struct {
	end   int64 // offset of the first chunk that is not valid
	clean bool  // they end at the file's end, an EOF trailer, or an earlier life of a reused file
	// resume is where the chunk after the invalid one starts, if the
	// invalid chunk's header is whole (only its payload fails the
	// checksum) and it ends in its block; -1 otherwise.
	resume int64
}

// padding says whether b, the rest of a block, is the zeroes a writer puts
// where no chunk header fits: under 7 bytes in a MANIFEST; in a WAL, under
// 19 bytes (Pebble's reader skips those).
func padding(b []byte, logNum uint32) bool {
	limit := walSyncHeader
	if logNum == legacyLog {
		limit = legacyHeader
	}
	return len(b) < limit && allZero(b)
}

// walkChunks walks the chunks of a log from its start, a block at a time.
func walkChunks(r io.Reader, logNum uint32) (walk, error) {
	w := walk{clean: true, resume: -1}
	err := forEachBlock(r, 0, func(base int64, b []byte) bool {
		off := 0
		for off < len(b) {
			if padding(b[off:], logNum) {
				off = len(b)
				break
			}
			if logNum != legacyLog && eofTrailer(b[off:], logNum) {
				w.end = base + int64(off+headerSize(b[off+6])) // the trailer was synced too
				return true
			}
			c, ok := chunkAt(b, off)
			if !ok {
				w.end, w.clean = base+int64(off), false
				if end, ok := headerEnd(b, off); ok {
					w.resume = base + int64(end)
				}
				return true
			}
			if logNum != legacyLog && c.typ >= firstRecyclable && c.logNum != logNum {
				w.end = base + int64(off) // an earlier life of a reused file
				return true
			}
			off = c.end
		}
		w.end = base + int64(off)
		return false
	})
	return w, err
}

// eofTrailer says whether b starts with the trailer a cleanly closed WAL
// ends with: an empty chunk of the next log number, its checksum zero.
func eofTrailer(b []byte, logNum uint32) bool {
	return len(b) >= recyclableHeader && b[6] >= firstRecyclable && b[6] <= lastChunkType &&
		binary.LittleEndian.Uint16(b[4:]) == 0 && binary.LittleEndian.Uint32(b[7:]) == logNum+1
}

// headerEnd returns where the chunk at off ends by its header, if the
// header is of a known type and ends in the block.
func headerEnd(b []byte, off int) (int, bool) {
	if off+legacyHeader > len(b) || b[off+6] == 0 || b[off+6] > lastChunkType {
		return 0, false
	}
	end := off + headerSize(b[off+6]) + int(binary.LittleEndian.Uint16(b[off+4:]))
	return end, end <= len(b)
}

// proveDamage looks, after a log's valid chunks stop at w.end, for a chunk
// of the same log that proves the log went on past it: in a MANIFEST a
// whole record after it (it is never reused, and each record is synced
// before the next is begun); in a WAL a WAL-sync chunk that says the log
// was synced past it. Like Pebble's reader it reads only chunk boundaries:
// from the end of the damaged chunk if its header is whole, and from the
// start of each later block. It says whether it finds one; if not, the
// stop may be a torn write, the log's true end. As it reads every block
// after the stop, it also says whether they hold nothing but zeroes from
// the stop on (meaningful only when nothing was found).
// r reads the log from offset from, the start of the stop's block.
func proveDamage(r io.Reader, from int64, w walk, logNum uint32) (found, zeroTail bool, err error) {
	zeroTail = true
	err = forEachBlock(r, from, func(base int64, b []byte) bool {
		if zeroTail {
			zeroTail = allZero(b[max(w.end-base, 0):])
		}
		off := 0
		if base == from {
			if w.resume < 0 {
				return false
			}
			off = int(w.resume - base)
		}
		for off < len(b) && !padding(b[off:], logNum) {
			c, ok := chunkAt(b, off)
			if !ok {
				break
			}
			if proves(c, off, w.end, logNum) {
				found = true
				return true
			}
			off = c.end
		}
		return false
	})
	return found, zeroTail, err
}

// proves says whether a valid chunk at off shows that the log had been
// written whole past stop.
func proves(c chunk, off int, stop int64, logNum uint32) bool {
	if logNum == legacyLog {
		return (c.typ == fullChunk || c.typ == firstChunk) && c.end > off+legacyHeader
	}
	return c.typ >= firstWALSyncType && c.logNum == logNum && c.syncedOff > uint64(stop)
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// checkOptionsSum compares the OPTIONS file optName with the checksum
// recorded when it was written. No record is no damage (a crash between
// Pebble's write and ours), and neither is a missing file (Pebble wrote a
// newer one and the member stopped before recording it).
func checkOptionsSum(fs vfs.FS, dir, optName string, optSum uint32) error {
	if optName == "" {
		return nil
	}
	path := filepath.Join(dir, optName)
	opts, err := readFile(fs, path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if maskedCRC(opts) != optSum {
		return fmt.Errorf("%w: %s: its checksum differs from the one recorded when it was written", pebble.ErrCorruption, path)
	}
	return nil
}

// legacyOptionsSum is where Ballast kept the OPTIONS checksum before the
// record of files held it.
const legacyOptionsSum = "ballast-options.sum"

// tidyAfterOpen runs once Pebble has opened dir: it removes the superseded
// MANIFESTs and records the checksum of the OPTIONS file Pebble just wrote.
func tidyAfterOpen(fs vfs.FS, dir string, rec *fileRecord) error {
	names, err := fs.List(dir)
	if err != nil {
		return err
	}
	if err := removeSupersededManifests(fs, dir, names); err != nil {
		return err
	}
	if err := fs.Remove(filepath.Join(dir, legacyOptionsSum)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	newest, newestNum := "", uint64(0)
	for _, n := range names {
		if num, ok := fileNum(n, "OPTIONS-", ""); ok && (newest == "" || num > newestNum) {
			newest, newestNum = n, num
		}
	}
	if newest == "" {
		return nil
	}
	opts, err := readFile(fs, filepath.Join(dir, newest))
	if err != nil {
		return err
	}
	rec.setOptions(newest, maskedCRC(opts))
	return nil
}

func readFile(fs vfs.FS, path string) ([]byte, error) {
	f, err := fs.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// removeSupersededManifests deletes the MANIFESTs before the current one.
// Pebble keeps the last one for debugging and never reads it again; damage
// in it could not be told from the torn tail a crash leaves, so Ballast
// keeps no file whose damage it cannot judge.
func removeSupersededManifests(fs vfs.FS, dir string, names []string) error {
	_, currentNum := currentManifest(names)
	if currentNum == 0 {
		return nil
	}
	for _, n := range names {
		if num, ok := fileNum(n, "MANIFEST-", ""); ok && num < currentNum {
			// Pebble may be deleting it too, in the background.
			if err := fs.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}
