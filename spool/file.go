package spool

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// file is what the spool needs of a segment file. osFile implements it; tests
// wrap it to inject errors (ENOSPC on write, EIO on fsync, a failing truncate).
// Each open file is used by one goroutine: the writer's active segment by the
// writer (by recovery before it starts), a reader's by that reader.
type file interface {
	WriteAt(p []byte, off int64) (int, error)
	ReadAt(p []byte, off int64) (int, error)
	Sync() error               // data durable (fdatasync)
	Truncate(size int64) error // drop bytes from size on
	DropCache(off, n int64)    // best effort: posix_fadvise(POSIX_FADV_DONTNEED)
	NoReadahead()              // best effort: posix_fadvise(POSIX_FADV_RANDOM)
	Close() error
}

// openFunc opens a segment file; the spool's is a field so tests can replace it.
type openFunc func(name string, flag int) (file, error)

type osFile struct {
	*os.File
	fd int // taken once: File.Fd() on every call would also reset the blocking mode
}

func openOS(name string, flag int) (file, error) {
	f, err := os.OpenFile(name, flag|unix.O_CLOEXEC, 0o640)
	if err != nil {
		return nil, err
	}
	return osFile{f, int(f.Fd())}, nil
}

func (f osFile) Sync() error {
	for {
		err := unix.Fdatasync(f.fd)
		if err != unix.EINTR {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}

// DropCache asks the kernel to drop the cached pages of [off, off+n): they
// are on disk (after a successful fsync) or were just read, and the spool will
// not read them soon, so they should not take page cache from the database
// and the server on a small box. Errors are ignored: the hint is advisory.
func (f osFile) DropCache(off, n int64) {
	if n > 0 {
		_ = unix.Fadvise(f.fd, off, n, unix.FADV_DONTNEED)
	}
}

// NoReadahead turns off the kernel's readahead for f. A Reader reads through
// its own 64 KiB window and drops the pages behind it; readahead would bring
// pages in asynchronously, and those arriving after the drop of their range
// would stay cached.
func (f osFile) NoReadahead() { _ = unix.Fadvise(f.fd, 0, 0, unix.FADV_RANDOM) }

// Segment files are named by the first sequence number written into them,
// zero-padded to 20 digits so that names sort as numbers.
const segSuffix = ".seg"

func segName(base uint64) string { return fmt.Sprintf("%020d%s", base, segSuffix) }

// parseSegName returns the base of a segment file name, or ok=false for any
// other name.
func parseSegName(name string) (base uint64, ok bool) {
	digits, found := strings.CutSuffix(name, segSuffix)
	if !found || len(digits) != 20 {
		return 0, false
	}
	base, err := strconv.ParseUint(digits, 10, 64)
	return base, err == nil
}

// lockDir opens dir and takes an exclusive flock on it, so that two processes
// (or two Opens in one process) never append to the same spool. The returned
// file is also used to fsync the directory after segments are created.
func lockDir(dir string) (*os.File, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: open directory: %w", err)
	}
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		d.Close()
		if err == unix.EWOULDBLOCK {
			return nil, fmt.Errorf("spool: %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("spool: lock %s: %w", dir, err)
	}
	return d, nil
}

// syncDir makes the directory's entries (segments created) durable.
func syncDir(d *os.File) error {
	if err := d.Sync(); err != nil {
		return fmt.Errorf("spool: fsync directory %s: %w", d.Name(), err)
	}
	return nil
}

// DefaultMaxBytes is the default for --spool-max: the smaller of 1 GiB
// and half the space available (to unprivileged users) on dir's filesystem
// now.
func DefaultMaxBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("spool: statfs %s: %w", dir, err)
	}
	half := int64(st.Bavail) * st.Bsize / 2
	return min(half, 1<<30), nil
}

func segPath(dir string, base uint64) string { return filepath.Join(dir, segName(base)) }
