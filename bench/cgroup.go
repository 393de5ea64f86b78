package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CgroupSpec says which memory cgroup a run uses: a new one with memory limit
// Limit (and no swap) into which PIDs are moved for the run and out of which
// they are moved back at the end; or the existing cgroup at Path (created by
// `upsink-bench cgroup create`, processes started inside it), only read.
type CgroupSpec struct {
	Limit int64
	PIDs  []int
	Path  string
}

// Cgroup is one memory cgroup, v2 (unified) or v1 (memory controller).
type Cgroup struct {
	Dir     string
	V2      bool
	Limit   int64
	created bool
	moved   map[int]string // pid -> the cgroup directory it came from
	notes   []string
}

// CgroupResult is what a cgroup saw: its peak and current usage, and whether
// it ran out of memory.
type CgroupResult struct {
	Dir     string   `json:"dir"`
	Version int      `json:"version"`
	Limit   int64    `json:"limit"`
	Peak    int64    `json:"peak"` // memory.peak (v2) / memory.max_usage_in_bytes (v1), or the highest sample
	Current int64    `json:"current"`
	Failcnt int64    `json:"failcnt"`            // v1 memory.failcnt; v2 memory.events "max"
	OOM     int64    `json:"oom"`                // v2 memory.events "oom"; v1 under_oom
	OOMKill int64    `json:"oom_kill"`           // memory.events / memory.oom_control oom_kill
	TCPPeak int64    `json:"tcp_peak,omitempty"` // v1 memory.kmem.tcp.max_usage_in_bytes
	RSS     int64    `json:"anon"`               // memory.stat anon (v2) / total_rss (v1), now
	Cache   int64    `json:"file"`               // memory.stat file (v2) / total_cache (v1), now
	PIDs    []int    `json:"pids,omitempty"`
	Notes   []string `json:"notes,omitempty"`
	Err     string   `json:"err,omitempty"`
}

const (
	cgroupRoot   = "/sys/fs/cgroup"
	cgroupV1Root = "/sys/fs/cgroup/memory"
)

// cgroupBase finds where a new memory cgroup can be made: the cgroup this
// process is in, on v2 if its memory controller is there, else on v1's
// memory hierarchy.
func cgroupBase() (dir string, v2 bool, err error) {
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", false, err
	}
	if c, err := os.ReadFile(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		if !hasWord(c, "memory") {
			return "", false, errors.New("cgroup v2 at " + cgroupRoot + " has no memory controller")
		}
		return filepath.Join(cgroupRoot, ownCgroup(own, "")), true, nil
	}
	if _, err := os.Stat(filepath.Join(cgroupV1Root, "memory.limit_in_bytes")); err == nil {
		return filepath.Join(cgroupV1Root, ownCgroup(own, "memory")), false, nil
	}
	return "", false, errors.New("no cgroup v2 memory controller at " + cgroupRoot + " and no v1 memory hierarchy at " + cgroupV1Root)
}

// ownCgroup reads the path of the controller's line in /proc/PID/cgroup
// ("" = the v2 line "0::/path").
func ownCgroup(b []byte, controller string) string {
	for line := range strings.SplitSeq(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if controller == "" && parts[0] == "0" && parts[1] == "" {
			return parts[2]
		}
		if controller != "" && hasWord([]byte(strings.ReplaceAll(parts[1], ",", " ")), controller) {
			return parts[2]
		}
	}
	return "/"
}

func hasWord(b []byte, w string) bool {
	for _, f := range bytes.Fields(b) {
		if string(f) == w {
			return true
		}
	}
	return false
}

func (c *Cgroup) file(name string) string { return filepath.Join(c.Dir, name) }

func (c *Cgroup) write(name, val string) error {
	return os.WriteFile(c.file(name), []byte(val), 0)
}

func (c *Cgroup) readInt(name string) (int64, error) {
	b, err := os.ReadFile(c.file(name))
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return -1, nil
	}
	return strconv.ParseInt(s, 10, 64)
}

// CreateCgroup makes a new memory cgroup beside this process's own (as its
// child) with memory limit limit and swap 0. It fails with one line when the
// machine has no memory cgroup this process may create.
func CreateCgroup(limit int64, name string) (*Cgroup, error) {
	base, v2, err := cgroupBase()
	if err != nil {
		return nil, fmt.Errorf("cgroup: cannot create a memory cgroup here: %v", err)
	}
	if name == "" {
		name = fmt.Sprintf("upsink-bench-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	}
	c := &Cgroup{V2: v2, Limit: limit, moved: map[int]string{}}
	if v2 {
		// v2 lets a cgroup with processes of its own have no controllers
		// in its children; fall back to the root, which is exempt.
		if !enableMemory(base) {
			base = cgroupRoot
			if !enableMemory(base) {
				return nil, fmt.Errorf("cgroup: cannot enable the memory controller for children of %s", base)
			}
		}
	}
	c.Dir = filepath.Join(base, name)
	if err := os.Mkdir(c.Dir, 0o755); err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("cgroup: cannot create %s: permission denied (creating a cgroup needs root)", c.Dir)
		}
		return nil, fmt.Errorf("cgroup: %v", err)
	}
	c.created = true
	fail := func(err error) (*Cgroup, error) {
		_ = os.Remove(c.Dir)
		return nil, fmt.Errorf("cgroup %s: %v", c.Dir, err)
	}
	lim := strconv.FormatInt(limit, 10)
	if v2 {
		if err := c.write("memory.max", lim); err != nil {
			return fail(err)
		}
		if err := c.write("memory.swap.max", "0"); err != nil {
			c.notes = append(c.notes, "memory.swap.max not set: "+err.Error())
		}
		return c, nil
	}
	if err := c.write("memory.limit_in_bytes", lim); err != nil {
		return fail(err)
	}
	if _, err := os.Stat(c.file("memory.memsw.limit_in_bytes")); err == nil {
		if err := c.write("memory.memsw.limit_in_bytes", lim); err != nil {
			return fail(err)
		}
	} else {
		c.notes = append(c.notes, "no memory.memsw.limit_in_bytes (swap accounting off): swap not limited by the cgroup")
	}
	// v1 charges socket memory to a cgroup only once its kmem.tcp limit is
	// set; set it to the same limit so the kernel's TCP buffers are counted.
	if err := c.write("memory.kmem.tcp.limit_in_bytes", lim); err != nil {
		c.notes = append(c.notes, "TCP buffers not charged to the cgroup (memory.kmem.tcp.limit_in_bytes: "+err.Error()+")")
	}
	// Move the charges of pages a moved process already has (v1 only; some
	// kernels ignore this, then memory allocated before the move stays
	// charged to the old cgroup).
	if err := c.write("memory.move_charge_at_immigrate", "3"); err != nil {
		c.notes = append(c.notes, "move_charge_at_immigrate unavailable: memory allocated before a move stays charged elsewhere")
	}
	return c, nil
}

func enableMemory(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return false
	}
	if hasWord(b, "memory") {
		return true
	}
	return os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+memory"), 0) == nil
}

// OpenCgroupDir takes an existing cgroup directory.
func OpenCgroupDir(dir string) (*Cgroup, error) {
	c := &Cgroup{Dir: dir, moved: map[int]string{}}
	if _, err := os.Stat(c.file("memory.current")); err == nil {
		c.V2 = true
		c.Limit, _ = c.readInt("memory.max")
		return c, nil
	}
	if _, err := os.Stat(c.file("memory.usage_in_bytes")); err == nil {
		c.Limit, _ = c.readInt("memory.limit_in_bytes")
		return c, nil
	}
	return nil, fmt.Errorf("cgroup: %s is not a memory cgroup directory", dir)
}

// OpenCgroup creates or opens the cgroup of spec and moves spec.PIDs into it.
func OpenCgroup(spec CgroupSpec) (*Cgroup, error) {
	var (
		c   *Cgroup
		err error
	)
	if spec.Path != "" {
		c, err = OpenCgroupDir(spec.Path)
	} else {
		c, err = CreateCgroup(spec.Limit, "")
	}
	if err != nil {
		return nil, err
	}
	for _, pid := range spec.PIDs {
		if err := c.AddPID(pid); err != nil {
			_ = c.Close()
			return nil, err
		}
	}
	return c, nil
}

// AddPID moves a process (all its threads) into the cgroup; Close moves it
// back.
func (c *Cgroup) AddPID(pid int) error {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return fmt.Errorf("cgroup: pid %d: %v", pid, err)
	}
	var from string
	if c.V2 {
		from = filepath.Join(cgroupRoot, ownCgroup(b, ""))
	} else {
		from = filepath.Join(cgroupV1Root, ownCgroup(b, "memory"))
	}
	if err := c.write("cgroup.procs", strconv.Itoa(pid)); err != nil {
		return fmt.Errorf("cgroup: move pid %d into %s: %v", pid, c.Dir, err)
	}
	c.moved[pid] = from
	return nil
}

// Usage is the cgroup's memory usage now (memory.current / usage_in_bytes).
func (c *Cgroup) Usage() (int64, error) {
	if c.V2 {
		return c.readInt("memory.current")
	}
	return c.readInt("memory.usage_in_bytes")
}

// Result reads the cgroup's counters.
func (c *Cgroup) Result() CgroupResult {
	r := CgroupResult{Dir: c.Dir, Version: 1, Limit: c.Limit, Notes: c.notes}
	for pid := range c.moved {
		r.PIDs = append(r.PIDs, pid)
	}
	r.Current, _ = c.Usage()
	if b, err := os.ReadFile(c.file("memory.stat")); err == nil {
		st := parseFlatKeyed(bytes.NewReader(b))
		if c.V2 {
			r.RSS, r.Cache = st["anon"], st["file"]
		} else {
			r.RSS, r.Cache = st["total_rss"], st["total_cache"]
		}
	}
	if c.V2 {
		r.Version = 2
		r.Peak, _ = c.readInt("memory.peak")
		if b, err := os.ReadFile(c.file("memory.events")); err == nil {
			ev := parseFlatKeyed(bytes.NewReader(b))
			r.Failcnt, r.OOM, r.OOMKill = ev["max"], ev["oom"], ev["oom_kill"]
		}
		return r
	}
	r.Peak, _ = c.readInt("memory.max_usage_in_bytes")
	r.Failcnt, _ = c.readInt("memory.failcnt")
	r.TCPPeak, _ = c.readInt("memory.kmem.tcp.max_usage_in_bytes")
	if b, err := os.ReadFile(c.file("memory.oom_control")); err == nil {
		ev := parseFlatKeyed(bytes.NewReader(b))
		r.OOM, r.OOMKill = ev["under_oom"], ev["oom_kill"]
	}
	return r
}

// parseFlatKeyed reads "key value" lines (memory.events, memory.oom_control,
// memory.stat).
func parseFlatKeyed(r io.Reader) map[string]int64 {
	m := map[string]int64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		if v, err := strconv.ParseInt(f[1], 10, 64); err == nil {
			m[f[0]] = v
		}
	}
	return m
}

// Close moves the processes it moved in back to where they were and removes
// the cgroup if it created it.
func (c *Cgroup) Close() error {
	var errs []string
	for pid, from := range c.moved {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
			continue // gone
		}
		if err := os.WriteFile(filepath.Join(from, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			errs = append(errs, fmt.Sprintf("move pid %d back to %s: %v", pid, from, err))
		}
	}
	c.moved = map[int]string{}
	if c.created {
		if err := c.Remove(); err != nil {
			errs = append(errs, err.Error())
		}
		c.created = false
	}
	if len(errs) > 0 {
		return errors.New("cgroup: " + strings.Join(errs, "; "))
	}
	return nil
}

// Remove deletes the (empty) cgroup, retrying briefly while exited
// processes are being reaped.
func (c *Cgroup) Remove() error {
	var err error
	for range 50 {
		if err = os.Remove(c.Dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("remove %s: %v (processes still inside: %s)", c.Dir, err, strings.TrimSpace(readFileString(c.file("cgroup.procs"))))
}

func readFileString(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// FormatCgroup writes one line per cgroup result.
func FormatCgroup(w io.Writer, r *CgroupResult) {
	fmt.Fprintf(w, "  cgroup v%d  %s  limit %s  peak %s  now %s  failcnt %d  oom %d  oom_kill %d",
		r.Version, r.Dir, MiB(r.Limit), MiB(r.Peak), MiB(r.Current), r.Failcnt, r.OOM, r.OOMKill)
	if r.TCPPeak > 0 {
		fmt.Fprintf(w, "  tcp peak %s", MiB(r.TCPPeak))
	}
	fmt.Fprintln(w)
	for _, n := range r.Notes {
		fmt.Fprintf(w, "    note: %s\n", n)
	}
	if r.Err != "" {
		fmt.Fprintf(w, "    error: %s\n", r.Err)
	}
}
