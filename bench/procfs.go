package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
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

// ReadTCPMem returns the kernel's TCP socket memory (all sockets of this
// network namespace) in bytes, from /proc/net/sockstat.
func ReadTCPMem() (int64, error) {
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return 0, err
	}
	pages, err := parseSockstatTCPMem(b)
	return pages * int64(os.Getpagesize()), err
}

// parseSockstatTCPMem reads N from the line "TCP: inuse 5 orphan 0 tw 2
// alloc 7 mem N" (N is in pages).
func parseSockstatTCPMem(b []byte) (int64, error) {
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		rest, ok := bytes.CutPrefix(line, []byte("TCP:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		for i := 0; i+1 < len(f); i += 2 {
			if string(f[i]) == "mem" {
				n, err := strconv.ParseInt(string(f[i+1]), 10, 64)
				if err != nil || n < 0 {
					return 0, fmt.Errorf("sockstat: bad TCP mem %q", f[i+1])
				}
				return n, nil
			}
		}
		return 0, fmt.Errorf("sockstat: TCP line without mem: %q", trunc(line))
	}
	return 0, fmt.Errorf("sockstat: no TCP line")
}

// procName is /proc/PID/comm, or "pid" if it cannot be read.
func procName(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return "pid"
	}
	return string(bytes.TrimSpace(b))
}

// SamplerConfig says what a Sampler polls.
type SamplerConfig struct {
	Watch  []WatchSpec
	Every  time.Duration // default 100 ms
	TSV    string        // write every sample here as it is taken (optional)
	Cgroup *Cgroup       // also poll its memory usage (optional)
}

// Sampler polls the RSS and PSS of some processes, the kernel's TCP memory
// and optionally a cgroup's memory usage, all in one goroutine, every
// interval; it keeps the series (for the plot) and per-process peaks.
type Sampler struct {
	cfg    SamplerConfig
	stop   chan struct{}
	done   chan struct{}
	t0     time.Time
	procs  []procState
	tcp    bool // sockstat readable
	tsv    *os.File
	tsvErr error
	// Series, one point per sample: T seconds since start, then for each
	// process RSS and PSS, then TCP mem, then cgroup usage (bytes; -1 when
	// not read).
	T       []float64
	Cols    []string
	Vals    [][]int64
	tcpPeak int64
	cgPeak  int64
}

type procState struct {
	WatchResult
	cpu0 float64
	err  error
}

// StartSampler starts polling (no goroutine when there is nothing to poll).
func StartSampler(cfg SamplerConfig) (*Sampler, error) {
	if cfg.Every <= 0 {
		cfg.Every = 100 * time.Millisecond
	}
	s := &Sampler{cfg: cfg, stop: make(chan struct{}), done: make(chan struct{}), t0: time.Now()}
	s.Cols = append(s.Cols, "t_s")
	for _, w := range cfg.Watch {
		if w.Name == "" {
			w.Name = procName(w.PID)
		}
		p := procState{WatchResult: WatchResult{Name: w.Name, PID: w.PID}}
		p.cpu0, _ = ReadCPU(w.PID)
		s.procs = append(s.procs, p)
		s.Cols = append(s.Cols, w.Name+"_rss", w.Name+"_pss")
	}
	if len(cfg.Watch) == 0 && cfg.Cgroup == nil && cfg.TSV == "" {
		close(s.done)
		return s, nil
	}
	if _, err := ReadTCPMem(); err == nil {
		s.tcp = true
		s.Cols = append(s.Cols, "tcp_mem")
	}
	if cfg.Cgroup != nil {
		s.Cols = append(s.Cols, "cgroup")
	}
	if cfg.TSV != "" {
		f, err := os.Create(cfg.TSV)
		if err != nil {
			return nil, err
		}
		s.tsv = f
		fmt.Fprintln(f, strings.Join(s.Cols, "\t"))
	}
	go s.run()
	return s, nil
}

func (s *Sampler) sample() {
	row := make([]int64, 0, len(s.Cols)-1)
	for i := range s.procs {
		p := &s.procs[i]
		m, err := ReadMem(p.PID)
		if err != nil {
			if p.err == nil {
				p.err = err
			}
			row = append(row, -1, -1)
			continue
		}
		p.Samples++
		p.HWM = m.HWM
		p.PeakRSS = max(p.PeakRSS, m.RSS)
		p.PeakPSS = max(p.PeakPSS, m.PSS)
		row = append(row, m.RSS, m.PSS)
	}
	if s.tcp {
		v, err := ReadTCPMem()
		if err != nil {
			v = -1
		}
		s.tcpPeak = max(s.tcpPeak, v)
		row = append(row, v)
	}
	if s.cfg.Cgroup != nil {
		v, err := s.cfg.Cgroup.Usage()
		if err != nil {
			v = -1
		}
		s.cgPeak = max(s.cgPeak, v)
		row = append(row, v)
	}
	t := time.Since(s.t0).Seconds()
	s.T = append(s.T, t)
	s.Vals = append(s.Vals, row)
	if s.tsv != nil && s.tsvErr == nil {
		var b []byte
		b = strconv.AppendFloat(b, t, 'f', 3, 64)
		for _, v := range row {
			b = append(b, '\t')
			b = strconv.AppendInt(b, v, 10)
		}
		b = append(b, '\n')
		_, s.tsvErr = s.tsv.Write(b)
	}
}

func (s *Sampler) run() {
	defer close(s.done)
	t := time.NewTicker(s.cfg.Every)
	defer t.Stop()
	s.sample()
	for {
		select {
		case <-s.stop:
			s.sample()
			return
		case <-t.C:
			if len(s.T) < int(MaxDuration/s.cfg.Every)+1000 {
				s.sample()
			}
		}
	}
}

// SamplerResult is what a Sampler saw.
type SamplerResult struct {
	Procs      []WatchResult
	TCPMemPeak int64
	CgroupPeak int64
	Series     []float64 // the sample times (non-empty when something was sampled)
	Err        string
}

// Stop ends the polling (after one last sample) and reports what it saw.
func (s *Sampler) Stop() SamplerResult {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	r := SamplerResult{TCPMemPeak: s.tcpPeak, CgroupPeak: s.cgPeak, Series: s.T}
	for i := range s.procs {
		p := &s.procs[i]
		if cpu, err := ReadCPU(p.PID); err == nil {
			p.CPU = cpu - p.cpu0
			p.Cores = p.CPU / time.Since(s.t0).Seconds()
		}
		if p.err != nil {
			p.Err = p.err.Error()
		}
		r.Procs = append(r.Procs, p.WatchResult)
	}
	if s.tsv != nil {
		if err := s.tsv.Close(); err != nil && s.tsvErr == nil {
			s.tsvErr = err
		}
		if s.tsvErr != nil {
			r.Err = s.tsvErr.Error()
		}
		s.tsv = nil
	}
	return r
}

// WatchResult is what was seen of one process.
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

// StatCPU is the machine's CPU time by kind, in USER_HZ ticks summed over
// all CPUs (the "cpu" line of /proc/stat).
type StatCPU struct {
	User, Nice, System, Idle, IOWait, IRQ, SoftIRQ, Steal uint64
}

// ReadStatCPU reads the "cpu" line of /proc/stat.
func ReadStatCPU() (StatCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return StatCPU{}, err
	}
	return parseStatLine(b)
}

func parseStatLine(b []byte) (StatCPU, error) {
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		rest, ok := bytes.CutPrefix(line, []byte("cpu "))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) < 8 {
			return StatCPU{}, fmt.Errorf("/proc/stat: %d fields on the cpu line", len(f))
		}
		var v [8]uint64
		for i := range v {
			n, err := strconv.ParseUint(string(f[i]), 10, 64)
			if err != nil {
				return StatCPU{}, fmt.Errorf("/proc/stat: bad field %q", f[i])
			}
			v[i] = n
		}
		return StatCPU{User: v[0], Nice: v[1], System: v[2], Idle: v[3], IOWait: v[4], IRQ: v[5], SoftIRQ: v[6], Steal: v[7]}, nil
	}
	return StatCPU{}, fmt.Errorf("/proc/stat: no cpu line")
}

// MachineCPU is what the whole machine's CPUs did during a run, in cores
// (CPU time over wall time): every process's, not only the watched ones,
// so that another load on the machine shows.
type MachineCPU struct {
	Busy   float64 `json:"busy_cores"`   // user, nice, system, irq, softirq
	IOWait float64 `json:"iowait_cores"` // idle with I/O outstanding
	Steal  float64 `json:"steal_cores"`  // taken by the hypervisor
}

// machineBetween is the machine's CPU between two /proc/stat readings.
func machineBetween(a, b StatCPU, elapsed time.Duration) *MachineCPU {
	s := elapsed.Seconds()
	if s <= 0 {
		return nil
	}
	d := func(x, y uint64) float64 {
		if y < x {
			return 0
		}
		return float64(y-x) / clkTck / s
	}
	return &MachineCPU{
		Busy:   d(a.User+a.Nice+a.System+a.IRQ+a.SoftIRQ, b.User+b.Nice+b.System+b.IRQ+b.SoftIRQ),
		IOWait: d(a.IOWait, b.IOWait),
		Steal:  d(a.Steal, b.Steal),
	}
}
