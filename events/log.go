package events

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	logging "github.com/ipfs/go-log/v2"
)

var log = logging.Logger("mcpmesh/events")

// LogConfig bounds a node's event log. A zero field takes its default.
type LogConfig struct {
	// MaxEvents, MaxBytes and MaxAge bound what the log keeps: the oldest
	// events go first once any is passed. Defaults: 10,000 events, 16 MiB
	// (data, names and IDs), an hour.
	MaxEvents int
	MaxBytes  int
	MaxAge    time.Duration
	// Dir, if set, keeps the log in a file there (LogFile), so that it
	// and its cursors outlive a restart of the node; else the log lives in
	// memory and a restart starts a new one (cursors of the old one then
	// resume from the start of the new, with truncated set).
	Dir string
}

// LogFile is the name of the event log's file in LogConfig.Dir.
const LogFile = "events.log"

func (c *LogConfig) setDefaults() {
	if c.MaxEvents <= 0 {
		c.MaxEvents = 10_000
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = 16 << 20
	}
	if c.MaxAge <= 0 {
		c.MaxAge = time.Hour
	}
}

// Log is a node's bounded log of the events it emitted, which subscribers
// read from a cursor. Positions are sequence numbers within one epoch (a
// random ID the log gets when it is created, kept in its file); a cursor
// names both, so a cursor of another log, or of a log lost in a restart,
// is recognised as such. Its methods are safe for concurrent use.
type Log struct {
	cfg   LogConfig
	epoch string
	now   func() time.Time

	mu     sync.Mutex
	ents   []entry // oldest first, from start on
	start  int
	head   uint64 // sequence number of the newest event; 0 before the first
	bytes  int
	wake   chan struct{} // closed at the next append; made when asked for
	file   *os.File
	w      *bufio.Writer
	fsize  int64  // bytes written to the file since it was compacted
	flines int    // events written to the file since then
	dirty  bool   // written to the buffer, not yet to the file
	line   []byte // reused to encode a line
	err    error  // the file's first write error: the log goes on in memory

	stop chan struct{} // ends the flusher
	done chan struct{} // closed when it has ended
}

// flushEvery is how often the log's buffer goes to its file: appending
// does not wait for the disk (an event costs a call microseconds, not a
// system call), and a crash loses at most this much of the log; Close
// writes the rest.
const flushEvery = 100 * time.Millisecond

type entry struct {
	ev   Event
	seq  uint64
	size int
}

func (e *entry) cost() int { return len(e.ev.Data) + len(e.ev.Name) + len(e.ev.ID) + 64 }

// OpenLog opens the log cfg describes: in cfg.Dir's file if set (read back,
// within the bounds), else in memory.
func OpenLog(cfg LogConfig) (*Log, error) {
	cfg.setDefaults()
	l := &Log{cfg: cfg, now: time.Now}
	if cfg.Dir == "" {
		l.epoch = newEpoch()
		return l, nil
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("event log: %w", err)
	}
	if err := l.load(); err != nil {
		return nil, err
	}
	if err := l.compact(); err != nil {
		return nil, err
	}
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	go l.flusher()
	return l, nil
}

// flusher writes the buffer to the file every flushEvery, until Close.
func (l *Log) flusher() {
	defer close(l.done)
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			l.mu.Lock()
			l.flushLocked()
			l.mu.Unlock()
		case <-l.stop:
			return
		}
	}
}

func (l *Log) flushLocked() {
	if !l.dirty || l.file == nil || l.err != nil {
		return
	}
	l.dirty = false
	if err := l.w.Flush(); err != nil {
		l.err = err
		log.Errorf("event log %s: %v; events are kept in memory only from now on", l.cfg.Dir, err)
	}
}

func newEpoch() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("events: crypto/rand: %v", err)) // never fails on supported platforms
	}
	return hex.EncodeToString(b[:])
}

// fileHeader is the first line of the log's file.
type fileHeader struct {
	Epoch string `json:"epoch"`
	V     int    `json:"v"`
}

// fileEntry is one event line of the log's file.
type fileEntry struct {
	Seq uint64 `json:"seq"`
	Event
}

// load reads the log's file back: the epoch, and the events within the
// bounds. A line that does not parse (a crash in the middle of a write)
// ends the reading.
func (l *Log) load() error {
	path := filepath.Join(l.cfg.Dir, LogFile)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		l.epoch = newEpoch()
		return nil
	}
	if err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	line, err := r.ReadBytes('\n')
	var h fileHeader
	if err != nil || json.Unmarshal(line, &h) != nil || h.V != 1 || len(h.Epoch) != 16 {
		log.Warnf("event log %s: no valid header; starting a new log", path)
		l.epoch = newEpoch()
		return nil
	}
	l.epoch = h.Epoch
	limit := DefaultMaxData + 4<<10
	clean := false
	for {
		line, err := r.ReadBytes('\n')
		if len(line) == 0 && err != nil {
			break
		}
		if len(line) > limit {
			log.Warnf("event log %s: line over %d bytes; reading stops there", path, limit)
			break
		}
		if string(bytes.TrimSpace(line)) == closedLine {
			clean = true
			continue
		}
		clean = false
		var fe fileEntry
		if json.Unmarshal(line, &fe) != nil || fe.Seq <= l.head || fe.Name == "" {
			if err == nil {
				log.Warnf("event log %s: unreadable line after event %d; reading stops there", path, l.head)
			}
			break
		}
		l.head = fe.Seq
		e := entry{ev: fe.Event, seq: fe.Seq}
		e.size = e.cost()
		l.ents = append(l.ents, e)
		l.bytes += e.size
		l.trimLocked()
		if err != nil {
			break
		}
	}
	if !clean {
		// The node stopped without closing the log (a crash): the last
		// events before it may be missing from the file, though delivered.
		// Numbering on from the file would give new events their positions
		// and IDs; a new epoch keeps them apart, and a cursor of the old one
		// resumes from the oldest kept event, told of a possible gap.
		log.Warnf("event log %s was not closed (the node stopped abruptly): its last events may be lost; subscribers resume from what it kept", path)
		l.epoch = newEpoch()
	}
	return nil
}

// closedLine is the last line of a log's file closed cleanly.
const closedLine = `{"closed":true}`

// compact rewrites the file with the events kept, and opens it for
// appending.
func (l *Log) compact() error {
	path := filepath.Join(l.cfg.Dir, LogFile)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	w := bufio.NewWriterSize(f, 64<<10)
	hdr, _ := json.Marshal(fileHeader{Epoch: l.epoch, V: 1})
	w.Write(append(hdr, '\n'))
	for i := l.start; i < len(l.ents); i++ {
		line, err := json.Marshal(fileEntry{Seq: l.ents[i].seq, Event: l.ents[i].ev})
		if err != nil {
			continue
		}
		w.Write(append(line, '\n'))
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("event log: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	if l.file != nil {
		l.file.Close()
	}
	f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	l.file, l.w = f, bufio.NewWriterSize(f, 16<<10)
	l.fsize, l.flines = 0, 0
	return nil
}

// Close writes what is buffered and closes the log's file.
func (l *Log) Close() error {
	if l.stop != nil {
		select {
		case <-l.stop:
		default:
			close(l.stop)
		}
		<-l.done
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file == nil {
		return nil
	}
	if l.err == nil {
		l.w.WriteString(closedLine + "\n")
	}
	err := l.w.Flush()
	if cerr := l.file.Close(); err == nil {
		err = cerr
	}
	l.file = nil
	return err
}

// abandon stops the log as a crash would: what was written stays, without
// the closing line. For tests.
func (l *Log) abandon() {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.Flush()
	l.file.Close()
	l.file = nil
}

// Epoch returns the log's epoch.
func (l *Log) Epoch() string { return l.epoch }

// Persistent reports whether the log is kept in a file.
func (l *Log) Persistent() bool { return l.cfg.Dir != "" }

// Config returns the log's bounds.
func (l *Log) Config() LogConfig { return l.cfg }

// Append adds e to the log, giving it an ID if it has none ("EPOCH-SEQ")
// and a time if it has none, and returns it as stored, with its cursor. It
// does not block on readers.
func (l *Log) Append(e Event) Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.head++
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	if e.ID == "" {
		e.ID = l.epoch + "-" + strconv.FormatUint(l.head, 10)
	}
	e.Cursor, e.Source = "", ""
	ent := entry{ev: e, seq: l.head}
	ent.size = ent.cost()
	l.ents = append(l.ents, ent)
	l.bytes += ent.size
	l.persistLocked(&ent)
	l.trimLocked()
	if l.wake != nil {
		close(l.wake)
		l.wake = nil
	}
	e.Cursor = l.Cursor(l.head)
	return e
}

// persistLocked appends ent to the file, compacting it once it holds twice
// what the log keeps. A write error is logged once; the log goes on in
// memory.
func (l *Log) persistLocked(ent *entry) {
	if l.file == nil || l.err != nil {
		return
	}
	line, err := appendLine(l.line[:0], ent)
	if err == nil {
		l.line = line
		_, err = l.w.Write(line)
		l.dirty = true
	}
	if err != nil {
		l.err = err
		log.Errorf("event log %s: %v; events are kept in memory only from now on", l.cfg.Dir, err)
		return
	}
	l.fsize += int64(len(line))
	l.flines++
	if l.fsize > int64(2*l.cfg.MaxBytes) || l.flines > 2*l.cfg.MaxEvents {
		if err := l.compact(); err != nil {
			l.err = err
			log.Errorf("compact %v; events are kept in memory only from now on", err)
		}
	}
}

// appendLine appends ent's line of the file (a fileEntry and a newline) to
// b. It writes the JSON itself: the data is JSON already (encoding/json
// would scan it again), the name is plain, the ID printable ASCII.
func appendLine(b []byte, ent *entry) ([]byte, error) {
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, ent.seq, 10)
	b = append(b, `,"eventId":`...)
	b = appendString(b, ent.ev.ID)
	b = append(b, `,"name":`...)
	b = appendString(b, ent.ev.Name)
	b = append(b, `,"timestamp":"`...)
	b = ent.ev.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","data":`...)
	b = append(b, ent.ev.Data...)
	if ent.ev.Meta != nil {
		meta, err := json.Marshal(ent.ev.Meta)
		if err != nil {
			return nil, err
		}
		b = append(b, `,"_meta":`...)
		b = append(b, meta...)
	}
	return append(b, '}', '\n'), nil
}

// appendString appends s as a JSON string; s is printable ASCII.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			b = append(b, '\\', c)
		} else {
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// trimLocked drops the oldest events past the count, size or age bounds.
func (l *Log) trimLocked() {
	floor := l.now().Add(-l.cfg.MaxAge)
	for l.start < len(l.ents) {
		e := &l.ents[l.start]
		if len(l.ents)-l.start <= l.cfg.MaxEvents && l.bytes <= l.cfg.MaxBytes && !e.ev.Time.Before(floor) {
			break
		}
		l.bytes -= e.size
		l.ents[l.start] = entry{}
		l.start++
	}
	if l.start > 64 && l.start > len(l.ents)/2 {
		l.ents = append(l.ents[:0], l.ents[l.start:]...)
		l.start = 0
	}
}

// first returns the sequence number of the oldest event kept (head+1 when
// the log is empty).
func (l *Log) firstLocked() uint64 { return l.head + 1 - uint64(len(l.ents)-l.start) }

// Cursor returns the cursor of the position after event seq.
func (l *Log) Cursor(seq uint64) string { return l.epoch + "." + strconv.FormatUint(seq, 10) }

// Head returns the position after the newest event.
func (l *Log) Head() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.head
}

// Wait returns a channel closed when the next event is appended.
func (l *Log) Wait() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.wake == nil {
		l.wake = make(chan struct{})
	}
	return l.wake
}

// ErrCursor is a cursor that names a position the log cannot have reached:
// a forged or mangled one.
var ErrCursor = errors.New("bad cursor")

// Position returns where a subscriber with cursor resumes: the last
// position it has seen. An empty cursor is "now". A cursor of this log
// that is older than what it keeps, one of another log (this one's before
// a restart without a file, or another node's), and a maxAge floor past
// the cursor all resume from the oldest position the log can serve, with
// truncated set: events may have been missed.
func (l *Log) Position(cursor string, maxAge time.Duration) (pos uint64, truncated bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.trimLocked()
	if cursor == "" {
		return l.head, false, nil
	}
	epoch, seqText, ok := strings.Cut(cursor, ".")
	seq, perr := strconv.ParseUint(seqText, 10, 64)
	if !ok || perr != nil || len(cursor) > 64 {
		return 0, false, fmt.Errorf("%w %q: not a cursor of an mcpmesh event log", ErrCursor, clip(cursor, 40))
	}
	first := l.firstLocked()
	switch {
	case epoch != l.epoch:
		pos, truncated = first-1, true
	case seq > l.head:
		return 0, false, fmt.Errorf("%w %q: ahead of the log (at %d)", ErrCursor, clip(cursor, 40), l.head)
	case seq+1 < first:
		pos, truncated = first-1, true
	default:
		pos = seq
	}
	if maxAge > 0 {
		floor := l.now().Add(-maxAge)
		for i := l.start + int(pos+1-first); i < len(l.ents) && l.ents[i].ev.Time.Before(floor); i++ {
			pos, truncated = l.ents[i].seq, true
		}
	}
	return pos, truncated, nil
}

// Read returns up to max events after position pos, each with its cursor;
// next is the position after the last one. If the log has dropped events
// after pos, reading starts at the oldest kept and gap is set. The events
// share their data with the log: read it, do not change it.
func (l *Log) Read(pos uint64, max int) (out []Event, next uint64, gap bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.trimLocked()
	first := l.firstLocked()
	if pos+1 < first {
		pos, gap = first-1, true
	}
	next = pos
	for i := l.start + int(pos+1-first); i < len(l.ents) && len(out) < max; i++ {
		e := &l.ents[i]
		next = e.seq
		ev := e.ev
		ev.Cursor = l.Cursor(e.seq)
		out = append(out, ev)
	}
	return out, next, gap
}

// Len returns how many events the log keeps, and their size in bytes.
func (l *Log) Len() (events, size int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ents) - l.start, l.bytes
}
