// Package accesslog is upsink's optional access log (--access-log FILE):
// one line per answered request, appended by the event loops into a bounded
// buffer and written to the file by one goroutine, so a slow or full disk
// never blocks a loop: when the buffer is full, lines are dropped and
// counted. Reopen (on SIGHUP) makes the writer reopen the file by its path,
// for logrotate.
//
// Memory: two buffers of at most Options.Buffer bytes each (the one being
// filled and the one being written), 256 KiB by default.
package accesslog

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Log is an open access log. Append, Reopen, Stats and Close may be called
// from any goroutine; the file is touched only by the writer goroutine.
type Log struct {
	path string
	max  int

	mu     sync.Mutex
	active []byte // lines waiting for the writer (cap max)
	closed bool

	spare   []byte   // the writer's buffer, swapped with active
	f       *os.File // the writer's
	wake    chan struct{}
	reopen  atomic.Bool
	stop    chan struct{}
	done    chan struct{}
	err     error // the writer's last error, returned by Close
	written atomic.Uint64
	dropped atomic.Uint64
}

// Options: zero values take the defaults.
type Options struct {
	Buffer int           // bytes of lines held waiting for the disk; default 256 KiB
	Flush  time.Duration // the writer writes at least this often; default 200 ms
}

// Open opens (creating or appending to) path and starts the writer.
func Open(path string, opt Options) (*Log, error) {
	if opt.Buffer <= 0 {
		opt.Buffer = 256 << 10
	}
	if opt.Flush <= 0 {
		opt.Flush = 200 * time.Millisecond
	}
	f, err := openFile(path)
	if err != nil {
		return nil, err
	}
	l := &Log{path: path, max: opt.Buffer, f: f,
		active: make([]byte, 0, opt.Buffer), spare: make([]byte, 0, opt.Buffer),
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go l.run(opt.Flush)
	return l, nil
}

func openFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("accesslog: open %s: %w", path, err)
	}
	return f, nil
}

// Append adds one line (it should end in '\n'); if the buffer has no room
// for it, the line is dropped and counted. It never blocks on the disk and
// never allocates.
func (l *Log) Append(line []byte) {
	l.mu.Lock()
	if l.closed || len(l.active)+len(line) > l.max {
		l.mu.Unlock()
		l.dropped.Add(1)
		return
	}
	l.active = append(l.active, line...)
	half := len(l.active) > l.max/2
	l.mu.Unlock()
	if half {
		l.signal()
	}
}

func (l *Log) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Reopen asks the writer to close the file and open its path again (after
// logrotate moved it), before its next write.
func (l *Log) Reopen() {
	l.reopen.Store(true)
	l.signal()
}

// Stats are the lines written and dropped since Open.
func (l *Log) Stats() (written, dropped uint64) { return l.written.Load(), l.dropped.Load() }

// Close writes what is buffered and closes the file.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		<-l.done
		return l.err
	}
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	return l.err
}

// run is the writer goroutine.
func (l *Log) run(every time.Duration) {
	defer close(l.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		stopping := false
		select {
		case <-l.stop:
			stopping = true
		case <-l.wake:
		case <-t.C:
		}
		if l.reopen.Swap(false) {
			if f, err := openFile(l.path); err != nil {
				l.err = err // keep writing to the old file
			} else {
				_ = l.f.Close()
				l.f = f
			}
		}
		l.mu.Lock()
		l.active, l.spare = l.spare[:0], l.active
		l.mu.Unlock()
		if len(l.spare) > 0 {
			if _, err := l.f.Write(l.spare); err != nil {
				l.err = err
				l.dropped.Add(uint64(countLines(l.spare)))
			} else {
				l.written.Add(uint64(countLines(l.spare)))
			}
		}
		if stopping {
			l.err = errors.Join(l.err, l.f.Close())
			return
		}
	}
}

func countLines(b []byte) int {
	n := 0
	for _, c := range b {
		if c == '\n' {
			n++
		}
	}
	return n
}
