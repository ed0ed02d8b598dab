package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	logging "github.com/ipfs/go-log/v2"
)

var log = logging.Logger("mcpmesh/audit")

// Defaults for Options.
const (
	DefaultMaxBytes = 16 << 20
	DefaultKeep     = 1000
)

// flushEvery is how often buffered records reach the file.
const flushEvery = 200 * time.Millisecond

// maxPending bounds the records waiting for the disk: past it, new records
// stay in memory only (and the log says so once).
const maxPending = 8 << 20

// Options tune a Log. Zero values take the defaults.
type Options struct {
	// MaxBytes is the size at which the file rotates: it is renamed to
	// path+".1" (replacing the previous one) and a new file begins. Default
	// DefaultMaxBytes, so the trail takes at most twice that on disk.
	MaxBytes int64
	// Keep is how many records Recent can return: the newest are kept in
	// memory. Default DefaultKeep.
	Keep int
}

// Log is a node's audit trail: records kept in memory and appended to a file
// as JSON Lines. Its methods are safe for concurrent use.
type Log struct {
	path string
	opts Options

	mu      sync.Mutex
	ring    []Record // the newest records, oldest at index start once full
	start   int
	added   uint64 // records ever added: the cursor of the newest (see Since)
	pending []byte // encoded lines the flusher has not written yet
	dropped int    // records not written because pending was full
	closed  bool

	// Owned by the flusher goroutine (and by Close once it has stopped).
	file      *os.File
	size      int64
	spare     []byte
	failing   bool // the last disk write failed; logged once until one succeeds
	writeErrs int

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// Open opens the audit trail at path, appending to it, and starts the
// goroutine that writes records to it (every 200 ms and on Close). The file
// is created with mode 0600, its folder with 0700. An empty path keeps
// records in memory only.
func Open(path string, opts Options) (*Log, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.Keep <= 0 {
		opts.Keep = DefaultKeep
	}
	l := &Log{path: path, opts: opts, ring: make([]Record, 0, min(opts.Keep, 1024))}
	if path == "" {
		return l, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create audit folder: %w", err)
	}
	if err := l.openFile(); err != nil {
		return nil, err
	}
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	go l.flusher()
	return l, nil
}

// Path returns the file the log writes to ("" for a memory-only log).
func (l *Log) Path() string { return l.path }

func (l *Log) openFile() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open audit file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open audit file: %w", err)
	}
	l.file, l.size = f, st.Size()
	return nil
}

// Add records r. It does not wait for the disk: the record is kept in
// memory and written by the log's goroutine within about 200 ms. A zero
// r.Time is set to now; a long r.Reason is cut to 200 bytes.
func (l *Log) Add(r Record) {
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	r.Reason = truncate(r.Reason, maxReason)
	var line []byte
	if l.path != "" {
		var err error
		line, err = json.Marshal(recordJSON{record: record(r), DurationMs: float64(r.Duration) / float64(time.Millisecond)})
		if err != nil { // strings and times only: cannot happen
			log.Errorw("encode audit record", "error", err)
			line = nil
		}
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	l.added++
	if len(l.ring) < l.opts.Keep {
		l.ring = append(l.ring, r)
	} else {
		l.ring[l.start] = r
		l.start = (l.start + 1) % len(l.ring)
	}
	if line == nil || l.closed {
		return
	}
	if len(l.pending)+len(line) >= maxPending {
		if l.dropped == 0 {
			log.Warnw("audit file falls behind; records stay in memory only until it catches up", "file", l.path)
		}
		l.dropped++
		return
	}
	l.pending = append(l.pending, line...)
	l.pending = append(l.pending, '\n')
}

// Recent returns the records in memory that pass f, oldest first (newest
// last); at most f.Limit of them, the newest, if f.Limit > 0.
func (l *Log) Recent(f Filter) []Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Record
	n := len(l.ring)
	for i := n - 1; i >= 0; i-- { // newest first, to stop at the limit
		r := &l.ring[(l.start+i)%n]
		if !f.Match(r) {
			continue
		}
		out = append(out, *r)
		if f.Limit > 0 && len(out) == f.Limit {
			break
		}
	}
	reverse(out)
	return out
}

// Since returns the records added after cursor that are still in memory,
// oldest first, and the cursor to pass next time: a live view follows the
// trail with it, cursor 0 being the start. At most max records are returned
// (the newest of them) if max > 0. A cursor from another Log, past this
// one's end, counts as 0.
func (l *Log) Since(cursor uint64, max int) ([]Record, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cursor > l.added {
		cursor = 0
	}
	k := min(l.added-cursor, uint64(len(l.ring)))
	if max > 0 {
		k = min(k, uint64(max))
	}
	out := make([]Record, 0, k)
	n := len(l.ring)
	for i := n - int(k); i < n; i++ {
		out = append(out, l.ring[(l.start+i)%n])
	}
	return out, l.added
}

func reverse(rs []Record) {
	for i, j := 0, len(rs)-1; i < j; i, j = i+1, j-1 {
		rs[i], rs[j] = rs[j], rs[i]
	}
}

// Close writes the records not yet written, stops the log's goroutine and
// closes the file. Records added after Close stay in memory only.
func (l *Log) Close() error {
	l.closeOnce.Do(func() {
		if l.path == "" {
			return
		}
		close(l.stop)
		<-l.done
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		l.flush()
		if l.file != nil {
			if err := l.file.Close(); err != nil {
				l.closeErr = fmt.Errorf("close audit file: %w", err)
			}
			l.file = nil
		}
		if l.writeErrs > 0 && l.closeErr == nil {
			l.closeErr = fmt.Errorf("audit file %s: %d writes failed (records kept in memory only)", l.path, l.writeErrs)
		}
	})
	return l.closeErr
}

func (l *Log) flusher() {
	defer close(l.done)
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			l.flush()
		case <-l.stop:
			return
		}
	}
}

// flush writes the pending records, rotating the file at whole lines.
func (l *Log) flush() {
	l.mu.Lock()
	buf := l.pending
	l.pending = l.spare[:0]
	dropped := l.dropped
	l.dropped = 0
	l.mu.Unlock()
	defer func(all []byte) { l.spare = all[:0] }(buf)
	if dropped > 0 {
		log.Warnw("audit records not written to the file (kept in memory only)", "file", l.path, "records", dropped)
	}

	for len(buf) > 0 {
		if l.file == nil { // a rotation failed: try again
			if err := l.openFile(); err != nil {
				l.failed(err)
				return
			}
		}
		n := len(buf)
		if room := l.opts.MaxBytes - l.size; int64(n) > room {
			n = 0
			if room > 0 {
				n = bytes.LastIndexByte(buf[:int(room)], '\n') + 1
			}
			if n == 0 {
				if l.size > 0 {
					if err := l.rotate(); err != nil {
						l.failed(err)
						return
					}
					continue
				}
				n = bytes.IndexByte(buf, '\n') + 1 // one line larger than MaxBytes: a file of its own
			}
		}
		w, err := l.file.Write(buf[:n])
		l.size += int64(w)
		if err != nil {
			l.failed(fmt.Errorf("write audit file: %w", err))
			return
		}
		buf = buf[n:]
		if l.failing {
			l.failing = false
			log.Infow("audit file writable again", "file", l.path)
		}
	}
}

// rotate moves the full file to path.1 and starts a new one.
func (l *Log) rotate() error {
	err := l.file.Close()
	l.file = nil
	if err != nil {
		return fmt.Errorf("close audit file for rotation: %w", err)
	}
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		return fmt.Errorf("rotate audit file: %w", err)
	}
	return l.openFile()
}

// failed reports a disk error once, until a write succeeds again; the
// records it concerns stay in memory.
func (l *Log) failed(err error) {
	l.writeErrs++
	if !l.failing {
		l.failing = true
		log.Errorw("audit records not written to the file (kept in memory only)", "file", l.path, "error", err)
	}
}

// ReadFile reads the records of an audit file written by a Log — path.1
// (the older, rotated part) then path — and returns those that pass f,
// oldest first. It reads files without a running daemon. A last line cut
// short by a crash is skipped.
func ReadFile(path string, f Filter) ([]Record, error) {
	var out []Record
	found := false
	var missing error
	for _, p := range []string{path + ".1", path} {
		file, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			missing = err
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read audit file: %w", err)
		}
		found = true
		out, err = readRecords(file, p, f, out)
		file.Close()
		if err != nil {
			return nil, err
		}
	}
	if !found {
		return nil, fmt.Errorf("read audit file: %w", missing)
	}
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[len(out)-f.Limit:]
	}
	return out, nil
}

func readRecords(file io.Reader, name string, f Filter, out []Record) ([]Record, error) {
	br := bufio.NewReader(file)
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadBytes('\n')
		if err == io.EOF && len(line) == 0 {
			return out, nil
		}
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("read audit file %s: %w", name, err)
		}
		last := err == io.EOF
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var r Record
		if jerr := json.Unmarshal(line, &r); jerr != nil {
			if last {
				return out, nil // cut short by a crash
			}
			return nil, fmt.Errorf("read audit file %s, line %d: %w", name, lineNo, jerr)
		}
		if f.Match(&r) {
			out = append(out, r)
		}
		if last {
			return out, nil
		}
	}
}
