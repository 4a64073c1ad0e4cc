// Package simkit holds what the hypervisor, storage and BMC simulators
// share: a crash-safe append-only journal with snapshots, and fault switches.
package simkit

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// SyncMode says when the journal fsyncs. Every record is written to the
// kernel (one write(2)) before Commit returns, so a record whose operation
// returned survives kill -9 of the process in every mode; fsync only
// matters for a crash of the machine.
type SyncMode int

// Sync modes.
const (
	// SyncImportant fsyncs (group commit) records marked important: the
	// creation and removal of things. Others are fsynced within SyncInterval.
	SyncImportant SyncMode = iota
	// SyncAlways fsyncs every record (group commit).
	SyncAlways
	// SyncNever leaves fsync to SyncInterval and Close.
	SyncNever
)

// JournalOptions tunes a Journal; the zero value is sensible.
type JournalOptions struct {
	Sync         SyncMode
	SyncInterval time.Duration // background fsync of dirty records; 0 = 1s, <0 = never
	CompactBytes int64         // snapshot once the journal exceeds max(this, 2 x last snapshot); 0 = 64 MiB
}

// Journal is an append-only log of records (opaque bytes, each framed
// with its length and CRC-32C) in a directory it owns (flock), compacted
// into a snapshot of the same framing.
//
// Records must be idempotent "set" or "delete" facts: after compaction a
// record may be replayed over a snapshot that already contains it.
type Journal struct {
	dir  string
	opts JournalOptions
	dump func(emit func(rec []byte) error) error
	lock *os.File

	mu     sync.Mutex // guards f, gen, size, seq, closed, frame
	f      *os.File
	frame  []byte
	gen    uint64
	size   int64
	seq    uint64
	closed bool

	syncMu sync.Mutex // serializes fsync and rotation
	synced atomic.Uint64

	gmu     sync.Mutex // group commit: want, leading, gerr
	gcond   *sync.Cond
	want    uint64
	leading bool
	gerr    error

	snapBytes  atomic.Int64
	compacting atomic.Bool
	wg         sync.WaitGroup
	stop       chan struct{}
	failed     atomic.Pointer[error] // sticky background failure
}

const (
	snapshotName   = "snapshot"
	snapshotMagic  = "simkit-snapshot-1 gen="
	lockName       = "LOCK"
	frameHeader    = 8       // uint32 length, uint32 CRC-32C, little endian
	maxRecordBytes = 1 << 26 // a length beyond this is damage, not a record
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func appendFrame(b, rec []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(rec)))
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(rec, castagnoli))
	return append(b, rec...)
}

// Ways a frame can be unreadable.
var (
	errShort   = errors.New("partial record")  // the file ends inside it
	errBadSize = errors.New("bad record size") // zero or beyond maxRecordBytes
	errCRC     = errors.New("record checksum mismatch")
)

// readFrame reads one frame into buf (grown as needed). At a clean end of
// file it returns io.EOF; size is the frame's declared payload length.
func readFrame(r *bufio.Reader, buf []byte) (rec []byte, size uint32, err error) {
	var hdr [frameHeader]byte
	n, err := io.ReadFull(r, hdr[:])
	if err == io.EOF {
		return nil, 0, io.EOF
	}
	if err != nil || n < frameHeader {
		return nil, 0, errShort
	}
	size = binary.LittleEndian.Uint32(hdr[:4])
	if size == 0 || size > maxRecordBytes {
		return nil, size, errBadSize
	}
	if cap(buf) < int(size) {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, size, errShort
	}
	if crc32.Checksum(buf, castagnoli) != binary.LittleEndian.Uint32(hdr[4:]) {
		return nil, size, errCRC
	}
	return buf, size, nil
}

func journalName(gen uint64) string { return fmt.Sprintf("journal-%016d.log", gen) }

// OpenJournal takes the directory (creating it), replays the snapshot and
// journals through apply in order, and opens the journal for appending.
// dump writes the whole current state as records; compaction calls it. A
// second OpenJournal of the same directory fails while the first is open.
func OpenJournal(dir string, opts JournalOptions, apply func(rec []byte) error, dump func(emit func(rec []byte) error) error) (*Journal, error) {
	if opts.SyncInterval == 0 {
		opts.SyncInterval = time.Second
	}
	if opts.CompactBytes == 0 {
		opts.CompactBytes = 64 << 20
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockName), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("simulator data dir %s is in use by another simulator: %w", dir, err)
	}
	j := &Journal{dir: dir, opts: opts, dump: dump, lock: lock, stop: make(chan struct{})}
	if err := j.recover(apply); err != nil {
		lock.Close()
		return nil, fmt.Errorf("simulator data dir %s: %w", dir, err)
	}
	if opts.SyncInterval > 0 {
		j.wg.Add(1)
		go j.syncLoop()
	}
	return j, nil
}

// recover replays the snapshot and the journals it does not cover.
func (j *Journal) recover(apply func([]byte) error) error {
	_ = os.Remove(filepath.Join(j.dir, snapshotName+".tmp"))
	var base uint64
	if f, err := os.Open(filepath.Join(j.dir, snapshotName)); err == nil {
		st, _ := f.Stat()
		j.snapBytes.Store(st.Size())
		base, err = replaySnapshot(f, apply)
		f.Close()
		if err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	gens, err := j.journals()
	if err != nil {
		return err
	}
	last := base
	for _, g := range gens {
		path := filepath.Join(j.dir, journalName(g))
		if g < base { // covered by the snapshot; left by a compaction cut short
			_ = os.Remove(path)
			continue
		}
		good, err := replayFile(path, apply)
		if err != nil {
			return fmt.Errorf("%s: %w", journalName(g), err)
		}
		if err := os.Truncate(path, good); err != nil { // drop a torn last line
			return err
		}
		last = g
	}
	if last == 0 {
		last = 1
	}
	f, err := os.OpenFile(filepath.Join(j.dir, journalName(last)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	j.f, j.gen, j.size = f, last, st.Size()
	return syncDir(j.dir)
}

func (j *Journal) journals() ([]uint64, error) {
	entries, err := os.ReadDir(j.dir)
	if err != nil {
		return nil, err
	}
	var gens []uint64
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "journal-") || !strings.HasSuffix(name, ".log") {
			continue
		}
		g, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, "journal-"), ".log"), 10, 64)
		if err == nil {
			gens = append(gens, g)
		}
	}
	slices.Sort(gens)
	return gens, nil
}

func replaySnapshot(f *os.File, apply func([]byte) error) (uint64, error) {
	r := bufio.NewReaderSize(f, 1<<20)
	head, _, err := readFrame(r, nil)
	if err != nil || !strings.HasPrefix(string(head), snapshotMagic) {
		return 0, errors.New("bad header")
	}
	gen, err := strconv.ParseUint(strings.TrimPrefix(string(head), snapshotMagic), 10, 64)
	if err != nil {
		return 0, errors.New("bad header")
	}
	var buf []byte
	for n := 2; ; n++ {
		rec, _, err := readFrame(r, buf)
		if err == io.EOF {
			return gen, nil
		}
		if err != nil { // a snapshot is renamed into place only when complete
			return 0, fmt.Errorf("record %d: %w", n, err)
		}
		if err := apply(rec); err != nil {
			return 0, fmt.Errorf("record %d: %w", n, err)
		}
		buf = rec[:0]
	}
}

// replayFile applies every good frame and returns the offset after the
// last one. A crash can only tear the end of the file: a partial last
// frame, a last frame whose checksum fails, or a zero-filled tail (machine
// crash). Damage with good data after it is corruption and an error.
func replayFile(path string, apply func([]byte) error) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	r := bufio.NewReaderSize(f, 1<<20)
	var (
		off int64
		buf []byte
	)
	for n := 1; ; n++ {
		rec, size, err := readFrame(r, buf)
		switch {
		case err == io.EOF:
			return off, nil
		case errors.Is(err, errShort):
			return off, nil
		case errors.Is(err, errCRC) && off+frameHeader+int64(size) == st.Size():
			return off, nil
		case errors.Is(err, errBadSize):
			if zeros, zerr := allZero(r); zerr == nil && zeros {
				return off, nil
			}
		}
		if err != nil {
			return 0, fmt.Errorf("record %d at offset %d: %w", n, off, err)
		}
		if err := apply(rec); err != nil {
			return 0, fmt.Errorf("record %d at offset %d: %w", n, off, err)
		}
		off += int64(frameHeader + len(rec))
		buf = rec[:0]
	}
}

func allZero(r io.Reader) (bool, error) {
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		for _, c := range buf[:n] {
			if c != 0 {
				return false, nil
			}
		}
		if err == io.EOF {
			return true, nil
		}
		if err != nil {
			return false, err
		}
	}
}

// Write appends one record with one write(2), so it survives kill -9 once
// Write returns. Callers write while holding the lock that orders changes
// to the same object, then call Commit after releasing it.
func (j *Journal) Write(rec []byte) (uint64, error) {
	if p := j.failed.Load(); p != nil {
		return 0, *p
	}
	if len(rec) == 0 || len(rec) > maxRecordBytes {
		return 0, fmt.Errorf("simulator journal: record of %d bytes", len(rec))
	}
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return 0, errors.New("simulator journal closed")
	}
	j.frame = appendFrame(j.frame[:0], rec)
	if _, err := j.f.Write(j.frame); err != nil {
		j.mu.Unlock()
		return 0, fmt.Errorf("simulator journal: %w", err)
	}
	if cap(j.frame) > 1<<20 {
		j.frame = nil
	}
	j.seq++
	j.size += int64(frameHeader + len(rec))
	seq, size := j.seq, j.size
	j.mu.Unlock()
	if size > max(j.opts.CompactBytes, 2*j.snapBytes.Load()) && j.compacting.CompareAndSwap(false, true) {
		j.wg.Add(1)
		go func() {
			defer j.wg.Done()
			defer j.compacting.Store(false)
			if err := j.Compact(); err != nil {
				j.failed.Store(&err)
			}
		}()
	}
	return seq, nil
}

// Commit makes record seq as durable as the sync mode asks; important
// marks the creation or removal of something.
func (j *Journal) Commit(seq uint64, important bool) error {
	switch {
	case j.opts.Sync == SyncAlways, j.opts.Sync == SyncImportant && important:
		return j.Sync(seq)
	}
	return nil
}

// Sync fsyncs the journal up to at least record seq. Concurrent callers
// share fsyncs (group commit): the first becomes the leader and fsyncs
// until every waiter's record is covered; the others sleep until then.
func (j *Journal) Sync(seq uint64) error {
	if j.synced.Load() >= seq {
		return nil
	}
	j.gmu.Lock()
	defer j.gmu.Unlock()
	if j.gcond == nil {
		j.gcond = sync.NewCond(&j.gmu)
	}
	j.want = max(j.want, seq)
	for j.synced.Load() < seq {
		if j.gerr != nil {
			return j.gerr
		}
		if j.leading {
			j.gcond.Wait()
			continue
		}
		j.leading = true
		for j.synced.Load() < j.want && j.gerr == nil {
			j.gmu.Unlock()
			err := j.fsync()
			j.gmu.Lock()
			if err != nil {
				j.gerr = err
			}
			j.gcond.Broadcast()
		}
		j.leading = false
		if j.gerr != nil {
			err := j.gerr
			j.gerr = nil // later calls try again
			return err
		}
	}
	return nil
}

// fsync syncs every record written so far.
func (j *Journal) fsync() error {
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	j.mu.Lock()
	f, upto, closed := j.f, j.seq, j.closed
	j.mu.Unlock()
	if closed {
		return errors.New("simulator journal closed")
	}
	if j.synced.Load() >= upto {
		return nil
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("simulator journal: %w", err)
	}
	j.synced.Store(upto)
	return nil
}

func (j *Journal) syncLoop() {
	defer j.wg.Done()
	t := time.NewTicker(j.opts.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-j.stop:
			return
		case <-t.C:
			j.mu.Lock()
			seq := j.seq
			j.mu.Unlock()
			_ = j.Sync(seq)
		}
	}
}

// Compact writes a snapshot of the current state (through dump) and drops
// the journals it covers. It runs by itself when the journal grows; writers
// keep going meanwhile.
func (j *Journal) Compact() error {
	// Rotate: later records go to a new journal that the snapshot's
	// replay starts from.
	j.syncMu.Lock()
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		j.syncMu.Unlock()
		return nil
	}
	if err := j.f.Sync(); err != nil {
		j.mu.Unlock()
		j.syncMu.Unlock()
		return err
	}
	gen := j.gen + 1
	nf, err := os.OpenFile(filepath.Join(j.dir, journalName(gen)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		j.mu.Unlock()
		j.syncMu.Unlock()
		return err
	}
	old := j.f
	j.f, j.gen, j.size = nf, gen, 0
	j.synced.Store(j.seq)
	j.mu.Unlock()
	j.syncMu.Unlock()
	old.Close()
	if err := syncDir(j.dir); err != nil {
		return err
	}

	tmp := filepath.Join(j.dir, snapshotName+".tmp")
	sf, err := os.Create(tmp)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(sf, 1<<20)
	var frame []byte
	put := func(rec []byte) error {
		frame = appendFrame(frame[:0], rec)
		_, err := w.Write(frame)
		return err
	}
	err = put(fmt.Appendf(nil, "%s%d", snapshotMagic, gen))
	if err == nil {
		err = j.dump(put)
	}
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = sf.Sync()
	}
	if cerr := sf.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(j.dir, snapshotName))
	}
	if err == nil {
		err = syncDir(j.dir)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("simulator snapshot: %w", err)
	}
	if st, err := os.Stat(filepath.Join(j.dir, snapshotName)); err == nil {
		j.snapBytes.Store(st.Size())
	}
	gens, err := j.journals()
	if err != nil {
		return err
	}
	for _, g := range gens {
		if g < gen {
			_ = os.Remove(filepath.Join(j.dir, journalName(g)))
		}
	}
	return nil
}

// Close fsyncs and releases the directory.
func (j *Journal) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.mu.Unlock()
	close(j.stop)
	j.wg.Wait() // background sync and compaction
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	j.mu.Lock()
	defer j.mu.Unlock()
	j.closed = true
	err := j.f.Sync()
	if cerr := j.f.Close(); err == nil {
		err = cerr
	}
	j.lock.Close()
	return err
}

// Abandon drops the journal as a killed process would: no fsync, no
// compaction wait; files and lock are released. For crash tests.
func (j *Journal) Abandon() {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return
	}
	j.closed = true
	j.f.Close()
	j.mu.Unlock()
	close(j.stop)
	j.wg.Wait() // a compaction in flight must not write after the next open
	j.lock.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
