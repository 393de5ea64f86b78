package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

// Mem is one sample of a process's memory, in bytes, from /proc/PID/status
// (VmRSS, VmHWM) and /proc/PID/smaps_rollup (Pss). A field the kernel did not
// report is 0.
type Mem struct {
	RSS int64 `json:"rss"`
	HWM int64 `json:"hwm"`
	PSS int64 `json:"pss"`
}

// ReadMem samples /proc/PID/status and /proc/PID/smaps_rollup.
func ReadMem(pid int) (Mem, error) {
	var m Mem
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return m, err
	}
	st, err := parseKB(f, "VmRSS:", "VmHWM:")
	f.Close()
	if err != nil {
		return m, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	m.RSS, m.HWM = st[0], st[1]
	if m.RSS < 0 {
		return m, fmt.Errorf("/proc/%d/status: no VmRSS (a zombie or kernel thread?)", pid)
	}
	if f, err = os.Open("/proc/" + strconv.Itoa(pid) + "/smaps_rollup"); err == nil {
		r, err := parseKB(f, "Pss:")
		f.Close()
		if err == nil && r[0] >= 0 {
			m.PSS = r[0]
		}
	}
	if m.HWM < 0 {
		m.HWM = 0
	}
	return m, nil
}

// parseKB scans "Key:   123 kB" lines and returns the value of each key in
// bytes, -1 for a key that does not occur. The first occurrence wins.
func parseKB(r io.Reader, keys ...string) ([]int64, error) {
	out := make([]int64, len(keys))
	for i := range out {
		out[i] = -1
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Bytes()
		for i, k := range keys {
			if out[i] >= 0 || !bytes.HasPrefix(line, []byte(k)) {
				continue
			}
			f := bytes.Fields(line[len(k):])
			if len(f) == 0 {
				return nil, fmt.Errorf("%s has no value", k)
			}
			n, err := strconv.ParseInt(string(f[0]), 10, 64)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("%s: bad value %q", k, f[0])
			}
			mult := int64(1)
			if len(f) > 1 {
				switch string(bytes.ToLower(f[1])) {
				case "kb":
					mult = 1024
				case "mb":
					mult = 1 << 20
				case "b":
				default:
					return nil, fmt.Errorf("%s: unknown unit %q", k, f[1])
				}
			}
			out[i] = n * mult
		}
	}
	return out, sc.Err()
}

// clkTck is USER_HZ, the unit of /proc/PID/stat times: 100 on every Linux
// architecture Go supports (sysconf(_SC_CLK_TCK) would need cgo).
const clkTck = 100

// ReadCPU returns the user+system CPU time the process has used, from
// /proc/PID/stat.
func ReadCPU(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime and stime (fields 14 and 15) of a /proc/PID/stat
// line. The command name (field 2) may hold spaces and parentheses, so fields
// are counted after its last ')'.
func parseStatCPU(b []byte) (float64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat: no command name")
	}
	f := bytes.Fields(b[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the name", len(f))
	}
	ut, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	st, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("stat: bad utime/stime %q %q", f[11], f[12])
	}
	return float64(ut+st) / clkTck, nil
}

// MemWatch polls a process's memory every interval and keeps the peak RSS and
// PSS it saw. Stop returns the peaks and the last sample.
type MemWatch struct {
	Name    string
	PID     int
	stop    chan struct{}
	done    chan struct{}
	peakRSS int64
	peakPSS int64
	last    Mem
	samples int
	err     error
	cpu0    float64
	t0      time.Time
}

// WatchMem starts polling pid.
func WatchMem(name string, pid int, every time.Duration) *MemWatch {
	w := &MemWatch{Name: name, PID: pid, stop: make(chan struct{}), done: make(chan struct{}), t0: time.Now()}
	w.cpu0, _ = ReadCPU(pid)
	go w.run(every)
	return w
}

func (w *MemWatch) sample() {
	m, err := ReadMem(w.PID)
	if err != nil {
		if w.err == nil {
			w.err = err
		}
		return
	}
	w.samples++
	w.last = m
	w.peakRSS = max(w.peakRSS, m.RSS)
	w.peakPSS = max(w.peakPSS, m.PSS)
}

func (w *MemWatch) run(every time.Duration) {
	defer close(w.done)
	t := time.NewTicker(every)
	defer t.Stop()
	w.sample()
	for {
		select {
		case <-w.stop:
			w.sample()
			return
		case <-t.C:
			w.sample()
		}
	}
}

// Stop ends the polling (after one last sample) and reports what it saw.
func (w *MemWatch) Stop() WatchResult {
	close(w.stop)
	<-w.done
	r := WatchResult{Name: w.Name, PID: w.PID, PeakRSS: w.peakRSS, PeakPSS: w.peakPSS, HWM: w.last.HWM, Samples: w.samples}
	if cpu, err := ReadCPU(w.PID); err == nil {
		r.CPU = cpu - w.cpu0
		r.Cores = r.CPU / time.Since(w.t0).Seconds()
	}
	if w.err != nil {
		r.Err = w.err.Error()
	}
	return r
}

// WatchResult is what a MemWatch saw.
type WatchResult struct {
	Name    string  `json:"name"`
	PID     int     `json:"pid"`
	PeakRSS int64   `json:"peak_rss"` // highest VmRSS polled
	PeakPSS int64   `json:"peak_pss"` // highest Pss polled
	HWM     int64   `json:"vm_hwm"`   // VmHWM at the end (peak since the process started)
	Samples int     `json:"samples"`
	CPU     float64 `json:"cpu_s"` // user+system CPU time used during the watch
	Cores   float64 `json:"cores"` // CPU / wall time of the watch
	Err     string  `json:"err,omitempty"`
}
