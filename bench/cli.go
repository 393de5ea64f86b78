package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ParseSize reads 1024, 1KiB, 1MiB, 1GiB (also KB/MB/GB, K/M/G and k/m/g, all
// powers of 1024).
func ParseSize(v string) (int64, error) {
	s := strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10},
		{"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"g", 1 << 30}, {"m", 1 << 20}, {"k", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(s, u.suf) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suf)), u.m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("bad size %q (want bytes, or a number with KiB, MiB or GiB)", v)
	}
	return n * mult, nil
}

type sizeFlag struct{ n *int64 }

func (s sizeFlag) String() string {
	if s.n == nil {
		return ""
	}
	return strconv.FormatInt(*s.n, 10)
}
func (s sizeFlag) Set(v string) error {
	n, err := ParseSize(v)
	if err == nil {
		*s.n = n
	}
	return err
}

// ParseSizeRange reads SIZE or MIN-MAX (e.g. 512-4KiB).
func ParseSizeRange(v string) (lo, hi int64, err error) {
	a, b, ok := strings.Cut(v, "-")
	if lo, err = ParseSize(a); err != nil {
		return 0, 0, err
	}
	if !ok {
		return lo, lo, nil
	}
	if hi, err = ParseSize(b); err != nil {
		return 0, 0, err
	}
	if hi < lo {
		return 0, 0, fmt.Errorf("bad size range %q (MIN > MAX)", v)
	}
	return lo, hi, nil
}

type rangeFlag struct{ lo, hi *int64 }

func (r rangeFlag) String() string {
	if r.lo == nil {
		return ""
	}
	if *r.lo == *r.hi {
		return strconv.FormatInt(*r.lo, 10)
	}
	return fmt.Sprintf("%d-%d", *r.lo, *r.hi)
}
func (r rangeFlag) Set(v string) error {
	lo, hi, err := ParseSizeRange(v)
	if err == nil {
		*r.lo, *r.hi = lo, hi
	}
	return err
}

// watchFlag takes NAME=PID, PID, or comma-separated lists of them
// (--watch 123,456 or --watch server=123,mariadbd=456); repeatable. A bare
// PID is named after /proc/PID/comm.
type watchFlag struct{ w *[]WatchSpec }

func (f watchFlag) String() string { return "" }
func (f watchFlag) Set(v string) error {
	for item := range strings.SplitSeq(v, ",") {
		name, p, ok := strings.Cut(item, "=")
		if !ok {
			name, p = "", item
		}
		pid, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || pid <= 0 {
			return fmt.Errorf("bad --watch %q (want PID, NAME=PID, or a comma-separated list)", v)
		}
		*f.w = append(*f.w, WatchSpec{Name: name, PID: pid})
	}
	return nil
}

type pidsFlag struct{ p *[]int }

func (f pidsFlag) String() string { return "" }
func (f pidsFlag) Set(v string) error {
	for item := range strings.SplitSeq(v, ",") {
		pid, err := strconv.Atoi(strings.TrimSpace(item))
		if err != nil || pid <= 0 {
			return fmt.Errorf("bad pid list %q", v)
		}
		*f.p = append(*f.p, pid)
	}
	return nil
}

// Prog is how results name this program (main sets it from os.Args[0]).
var Prog = "upsink-bench"

// Usage is the command's help text.
const Usage = `usage: upsink-bench COMMAND [flags]

  load  --url http(s)://127.0.0.1:PORT/upload/STREAM -c CONNS (-d DURATION | -n COUNT)
        [--body 1KiB | --body 512-4KiB] [--rate N] [--chunked] [--no-keepalive] [--retry-wait 1s]
        [--idempotency [--retry-for 30s]] [--request-timeout 10s]
        [--insecure | --cacert FILE] [--verify DSN [--verify-drain READYZ_URL [--verify-drain-timeout 60s]]]
        [--progress] [--json]
        [--watch PID,PID|NAME=PID ...] [--watch-tsv FILE] [--plot PREFIX]
        [--cgroup 256M --cgroup-pids PID,PID | --cgroup-path DIR]
  idle  --url http(s)://127.0.0.1:PORT/healthz -c N [--hold 5s] [--pid PID] [--parallel 64]
        [--insecure | --cacert FILE] [--watch PID,PID] [--watch-tsv FILE] [--plot PREFIX] [--json]
  handshakes --addr 127.0.0.1:TLSPORT [-n 5000] [--parallel 64] [--resume] [--cacert F|--insecure]
  stall --url https://127.0.0.1:TLSPORT/ -c N [--hold 12s] [--pid PID] [--parallel 64]
        [--probe http(s)://.../healthz ...] [--insecure | --cacert FILE] [--json]
        (N connections that each send a ClientHello and then stall)
  rss   --pid PID [--json]
  wait  --url http(s)://127.0.0.1:PORT/readyz [--timeout 30s] [--insecure | --cacert FILE]
  cgroup create --limit 256M [--name NAME]   (prints the new cgroup's directory)
  cgroup add --path DIR --pids PID,PID | stats --path DIR [--json] | remove --path DIR
  attack KIND --url http(s)://127.0.0.1:PORT/upload/STREAM [-c N] [-d 20s] [--pid PID]
        [--polite-url URL] [--polite-rate 20] [--polite-keepalive] [--json] [kind flags]
        KIND: slowloris slowbody slowread fdflood tlsearly storm headerflood trailerflood
        fuzz push external ("upsink-bench attack KIND -h" lists every flag)
  attack-report --dir RESULTS [--into BENCHMARKS.md]   (the ## Attacks section)
  ceiling --dsn DSN [-d 10s] [--rows 1000] [--body 1KiB] [--table upsink_ceiling]
        [--watch mariadbd=PID] [--json] [--json-out FILE]
        (the database's own ceiling for upsink's row shape: one connection streaming
        LOAD DATA LOCAL of ROWS-row transactions back to back; rows/s, CPU per row)
  report --dir RESULTS [--out BENCHMARKS.md]
  report-vps --dir RESULTS   (the summary of bench/vps.sh)

"upsink-bench COMMAND -h" lists a command's flags.
`

// Main runs the command line and returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, Usage)
		return 2
	}
	cmdline := Prog + " " + shellJoin(args)
	var err error
	switch args[0] {
	case "load":
		err = mainLoad(args[1:], cmdline, stdout, stderr)
	case "idle":
		err = mainIdle(args[1:], cmdline, stdout, stderr)
	case "stall":
		err = mainStall(args[1:], cmdline, stdout, stderr)
	case "handshakes":
		err = mainHandshakes(args[1:], cmdline, stdout, stderr)
	case "rss":
		err = mainRSS(args[1:], stdout, stderr)
	case "wait":
		err = mainWait(args[1:], stderr)
	case "ceiling":
		err = mainCeiling(args[1:], cmdline, stdout, stderr)
	case "report":
		err = mainReport(args[1:], stderr)
	case "cgroup":
		err = mainCgroup(args[1:], stdout, stderr)
	case "report-vps":
		err = mainReportVPS(args[1:], stdout, stderr)
	case "attack":
		err = mainAttack(args[1:], cmdline, stdout, stderr)
	case "attack-report":
		err = mainAttackReport(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, Usage)
		return 0
	default:
		fmt.Fprintf(stderr, "upsink-bench: unknown command %q\n%s", args[0], Usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ve verifyFailed
	if errors.As(err, &ve) {
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "upsink-bench %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("upsink-bench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(v)
}

// verifyFailed is returned when --verify found lost, duplicated or changed
// uploads (or a 422), or --verify-drain timed out: the result has been
// printed; exit 1 without another message.
type verifyFailed struct{}

func (verifyFailed) Error() string { return "verify failed" }

func mainLoad(args []string, cmdline string, stdout, stderr io.Writer) error {
	fs := newFlags("load", stderr)
	var (
		cfg            LoadConfig
		bodyLo, bodyHi int64 = 1 << 10, 1 << 10
		js, progress   bool
		cgLimit        int64
		cgPIDs         []int
		cgPath         string
	)
	fs.StringVar(&cfg.URL, "url", "", "upload URL, http(s)://host:port/upload/STREAM")
	fs.IntVar(&cfg.Conns, "c", 64, "concurrent connections")
	fs.DurationVar(&cfg.Duration, "d", 0, "duration (default 10s unless -n is given)")
	fs.Int64Var(&cfg.Count, "n", 0, "number of requests (bounded by --timeout)")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Minute, "time bound of a -n run")
	fs.Var(rangeFlag{&bodyLo, &bodyHi}, "body", "body size per upload, or MIN-MAX for sizes drawn uniformly (e.g. 512-4KiB)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "open loop: this many uploads/s in total, spread over the connections (0: closed loop, as fast as answered)")
	fs.BoolVar(&cfg.Chunked, "chunked", false, "send bodies with Transfer-Encoding: chunked")
	fs.IntVar(&cfg.ChunkSize, "chunk-size", 512, "bytes per chunk with --chunked")
	fs.BoolVar(&cfg.NoKeepAlive, "no-keepalive", false, "one request per connection")
	fs.DurationVar(&cfg.RetryWait, "retry-wait", 0, "after a 503 a connection pauses this long before its next upload (a client honouring Retry-After; 0: at once); with --idempotency the pause before every retry (0: 100ms)")
	fs.BoolVar(&cfg.Idempotency, "idempotency", false, `every upload carries Idempotency-Key: "RUN-WORKER-SEQ"; one that fails (no answer within --request-timeout, a connection error or reset, 408, 409 or 5xx) is sent again, same key and body, after --retry-wait until it is answered 2xx or --retry-for runs out (other 4xx are final; 422 is reported as an error)`)
	fs.DurationVar(&cfg.RetryFor, "retry-for", 30*time.Second, "with --idempotency: no retry starts later than this after the run's duration ended (uploads still failing then are given up)")
	fs.DurationVar(&cfg.RequestTimeout, "request-timeout", 10*time.Second, "an upload not answered within this counts as not answered (and with --idempotency is retried)")
	fs.StringVar(&cfg.ContentType, "content-type", "application/octet-stream", "Content-Type of the uploads")
	tlsFlags(fs, &cfg.Insecure, &cfg.CACert, "https")
	fs.StringVar(&cfg.VerifyDSN, "verify", "", "after the run, check in this database (go-sql-driver DSN) that every acknowledged upload is stored exactly once with the same bytes; exit 1 if not")
	fs.StringVar(&cfg.VerifyTable, "verify-table", "uploads", "table --verify reads")
	fs.StringVar(&cfg.DrainURL, "verify-drain", "", `before verifying, poll this URL (the server's /readyz) until its spool is empty ("spool":{"records":0,...} or no spool object); exit 1 if it is not within --verify-drain-timeout`)
	fs.DurationVar(&cfg.DrainTimeout, "verify-drain-timeout", 60*time.Second, "bound of --verify-drain")
	fs.Var(watchFlag{&cfg.Watch}, "watch", "processes whose RSS/PSS is sampled during the run: PID,PID or NAME=PID (repeatable)")
	fs.DurationVar(&cfg.WatchEvery, "watch-every", 100*time.Millisecond, "sampling interval of --watch")
	fs.StringVar(&cfg.WatchTSV, "watch-tsv", "", "write every memory sample (processes, kernel TCP memory, cgroup) to this TSV file")
	fs.StringVar(&cfg.Plot, "plot", "", "draw memory over time to PREFIX.png and PREFIX.svg")
	fs.Var(sizeFlag{&cgLimit}, "cgroup", "create a memory cgroup with this limit and no swap for the run (root; see --cgroup-pids)")
	fs.Var(pidsFlag{&cgPIDs}, "cgroup-pids", "with --cgroup: move these processes into it for the run (moved back afterwards)")
	fs.StringVar(&cgPath, "cgroup-path", "", "an existing memory cgroup directory whose usage is sampled and reported")
	fs.BoolVar(&progress, "progress", false, "print a progress line on stderr once a second (default: only when stderr is a terminal)")
	jsonOut := jsonFlags(fs, &js)
	if err := parse(fs, args); err != nil {
		return err
	}
	if cfg.URL == "" {
		return errors.New("--url is required")
	}
	if bodyHi > 1<<30 {
		return fmt.Errorf("--body %d too large", bodyHi)
	}
	switch {
	case cgPath != "" && cgLimit > 0:
		return errors.New("--cgroup and --cgroup-path exclude each other")
	case len(cgPIDs) > 0 && cgLimit == 0 && cgPath == "":
		return errors.New("--cgroup-pids needs --cgroup LIMIT or --cgroup-path DIR")
	case cgLimit > 0 && cgLimit < 4<<20:
		return fmt.Errorf("--cgroup %d: too small a limit", cgLimit)
	case cgLimit > 0 || cgPath != "":
		cfg.Cgroup = &CgroupSpec{Limit: cgLimit, PIDs: cgPIDs, Path: cgPath}
	}
	cfg.BodySize, cfg.BodyMax = int(bodyLo), int(bodyHi)
	cfg.Command = cmdline
	if f, ok := stderr.(*os.File); ok && (progress || isTerminal(f)) {
		cfg.Progress, cfg.ProgressTTY = stderr, isTerminal(f)
	} else if progress {
		cfg.Progress = stderr
	}
	r, err := Load(cfg)
	if r == nil {
		return err
	}
	if err2 := saveJSON(*jsonOut, r); err2 != nil && err == nil {
		err = err2
	}
	if js {
		if err2 := writeJSON(stdout, r); err2 != nil && err == nil {
			err = err2
		}
	} else {
		FormatLoad(stdout, r)
	}
	if err == nil && (r.Verify != nil && !r.Verify.OK || r.Drain != nil && !r.Drain.OK) {
		return verifyFailed{}
	}
	return err
}

func mainCeiling(args []string, cmdline string, stdout, stderr io.Writer) error {
	fs := newFlags("ceiling", stderr)
	var (
		cfg  CeilingConfig
		body int64 = 1 << 10
		js   bool
	)
	fs.StringVar(&cfg.DSN, "dsn", "", "go-sql-driver DSN naming the database, e.g. 'root@unix(/tmp/m/mysqld.sock)/upsink'")
	fs.StringVar(&cfg.Table, "table", "upsink_ceiling", "table to load into, created if missing with upsink's uploads columns")
	fs.DurationVar(&cfg.Duration, "d", 10*time.Second, "start no transaction after this")
	fs.IntVar(&cfg.Rows, "rows", 1000, "rows per transaction (one LOAD DATA LOCAL statement each)")
	fs.Var(sizeFlag{&body}, "body", "bytes of each row's body")
	fs.Var(watchFlag{&cfg.Watch}, "watch", "processes whose CPU (and RSS) is sampled during the run: PID,PID or NAME=PID (repeatable), e.g. mariadbd=PID")
	fs.DurationVar(&cfg.WatchEvery, "watch-every", 100*time.Millisecond, "sampling interval of --watch")
	jsonOut := jsonFlags(fs, &js)
	if err := parse(fs, args); err != nil {
		return err
	}
	if body > 16<<20 {
		return fmt.Errorf("--body %d too large", body)
	}
	cfg.BodySize = int(body)
	cfg.Command = cmdline
	r, err := Ceiling(cfg)
	if r == nil {
		return err
	}
	if err2 := emit(r, *jsonOut, js, stdout, FormatCeiling); err2 != nil && err == nil {
		err = err2
	}
	return err
}

func mainIdle(args []string, cmdline string, stdout, stderr io.Writer) error {
	fs := newFlags("idle", stderr)
	var (
		cfg IdleConfig
		js  bool
	)
	fs.StringVar(&cfg.URL, "url", "", "GET URL, e.g. http://127.0.0.1:8080/healthz")
	fs.IntVar(&cfg.Conns, "c", 1000, "connections to open and hold idle")
	fs.DurationVar(&cfg.Hold, "hold", 5*time.Second, "how long to hold them (server idle timeout must be longer)")
	fs.IntVar(&cfg.PID, "pid", 0, "server pid whose memory is sampled")
	fs.IntVar(&cfg.Parallel, "parallel", 64, "concurrent dials (and TLS handshakes)")
	tlsFlags(fs, &cfg.Insecure, &cfg.CACert, "https")
	fs.Var(watchFlag{&cfg.Watch}, "watch", "more processes whose RSS/PSS is sampled every 100 ms: PID,PID or NAME=PID (repeatable)")
	fs.StringVar(&cfg.WatchTSV, "watch-tsv", "", "write every memory sample to this TSV file")
	fs.StringVar(&cfg.Plot, "plot", "", "draw memory over time to PREFIX.png and PREFIX.svg")
	jsonOut := jsonFlags(fs, &js)
	if err := parse(fs, args); err != nil {
		return err
	}
	if cfg.URL == "" {
		return errors.New("--url is required")
	}
	cfg.Command = cmdline
	r, err := Idle(cfg)
	if err != nil {
		return err
	}
	return emit(r, *jsonOut, js, stdout, FormatIdle)
}

func mainHandshakes(args []string, cmdline string, stdout, stderr io.Writer) error {
	fs := newFlags("handshakes", stderr)
	var (
		cfg HandshakeConfig
		js  bool
	)
	fs.StringVar(&cfg.Addr, "addr", "", "host:port of the TLS listener, e.g. 127.0.0.1:8443")
	fs.StringVar(&cfg.ServerName, "servername", "localhost", "SNI and the name the certificate must carry")
	fs.IntVar(&cfg.N, "n", 5000, "handshakes")
	fs.IntVar(&cfg.Parallel, "parallel", 64, "concurrent handshakes")
	fs.BoolVar(&cfg.Resume, "resume", false, "resume every handshake from a session ticket obtained first")
	fs.DurationVar(&cfg.Timeout, "timeout", 2*time.Minute, "bound on the whole run")
	tlsFlags(fs, &cfg.Insecure, &cfg.CACert, "TLS")
	jsonOut := jsonFlags(fs, &js)
	if err := parse(fs, args); err != nil {
		return err
	}
	if cfg.Addr == "" {
		return errors.New("--addr is required")
	}
	cfg.Command = cmdline
	r, err := Handshakes(cfg)
	if err != nil {
		return err
	}
	return emit(r, *jsonOut, js, stdout, FormatHandshakes)
}

// tlsFlags declares --insecure and --cacert for what's TLS client.
func tlsFlags(fs *flag.FlagSet, insecure *bool, cacert *string, what string) {
	fs.BoolVar(insecure, "insecure", false, what+": do not verify the server's certificate")
	fs.StringVar(cacert, "cacert", "", what+": trust this PEM certificate (CA or self-signed)")
}

// jsonFlags declares --json (into js) and --json-out, whose value it returns.
func jsonFlags(fs *flag.FlagSet, js *bool) *string {
	fs.BoolVar(js, "json", false, "print the result as JSON")
	return fs.String("json-out", "", "also write the JSON result to this file")
}

// emit saves a result to jsonOut (if set), then prints it as JSON or with format.
func emit[R any](r R, jsonOut string, asJSON bool, stdout io.Writer, format func(io.Writer, R)) error {
	if err := saveJSON(jsonOut, r); err != nil {
		return err
	}
	if asJSON {
		return writeJSON(stdout, r)
	}
	format(stdout, r)
	return nil
}

type stringsFlag struct{ s *[]string }

func (f stringsFlag) String() string     { return "" }
func (f stringsFlag) Set(v string) error { *f.s = append(*f.s, v); return nil }

func mainStall(args []string, cmdline string, stdout, stderr io.Writer) error {
	fs := newFlags("stall", stderr)
	var (
		cfg StallConfig
		js  bool
	)
	fs.StringVar(&cfg.URL, "url", "", "the TLS port, https://127.0.0.1:PORT/")
	fs.IntVar(&cfg.Conns, "c", 1000, "connections that each send a ClientHello and then stall")
	fs.DurationVar(&cfg.Hold, "hold", 12*time.Second, "how long from the first dial (exceed the server's handshake timeout to see it)")
	fs.IntVar(&cfg.PID, "pid", 0, "server pid whose memory is sampled every 100 ms")
	fs.IntVar(&cfg.Parallel, "parallel", 64, "concurrent dials")
	fs.Var(stringsFlag{&cfg.Probe}, "probe", "GET this URL every 100 ms meanwhile on a fresh connection, wanting 200 within 2 s (repeatable)")
	tlsFlags(fs, &cfg.Insecure, &cfg.CACert, "https probes")
	fs.Var(watchFlag{&cfg.Watch}, "watch", "more processes sampled: PID,PID or NAME=PID (repeatable)")
	fs.StringVar(&cfg.WatchTSV, "watch-tsv", "", "write every memory sample to this TSV file")
	jsonOut := jsonFlags(fs, &js)
	if err := parse(fs, args); err != nil {
		return err
	}
	if cfg.URL == "" {
		return errors.New("--url is required")
	}
	cfg.Command = cmdline
	r, err := Stall(cfg)
	if err != nil {
		return err
	}
	return emit(r, *jsonOut, js, stdout, FormatStall)
}

func saveJSON(path string, v any) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := writeJSON(f, v); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func mainRSS(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("rss", stderr)
	pid := fs.Int("pid", 0, "process id")
	js := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *pid <= 0 {
		return errors.New("--pid is required")
	}
	m, err := ReadMem(*pid)
	if err != nil {
		return err
	}
	if *js {
		return writeJSON(stdout, m)
	}
	fmt.Fprintf(stdout, "VmRSS %d kB  VmHWM %d kB  Pss %d kB\n", m.RSS>>10, m.HWM>>10, m.PSS>>10)
	return nil
}

func mainWait(args []string, stderr io.Writer) error {
	fs := newFlags("wait", stderr)
	url := fs.String("url", "", "URL that must answer 200")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this")
	insecure := fs.Bool("insecure", false, "https: do not verify the server's certificate")
	cacert := fs.String("cacert", "", "https: trust this PEM certificate")
	if err := parse(fs, args); err != nil {
		return err
	}
	tr := &http.Transport{}
	if strings.HasPrefix(*url, "https://") {
		tc, err := TLSConfig("", *insecure, *cacert)
		if err != nil {
			return err
		}
		tr.TLSClientConfig = tc
	}
	if *url == "" {
		return errors.New("--url is required")
	}
	if *timeout > 10*time.Minute {
		*timeout = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	cl := &http.Client{Timeout: 2 * time.Second, Transport: tr}
	last := "no answer"
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", *url, nil)
		resp, err := cl.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %s", *url, *timeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// shellJoin quotes args for a POSIX shell where needed.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=./:,@%+") == "" {
			out[i] = a
		} else {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(out, " ")
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func mainCgroup(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("want create, add, stats or remove")
	}
	fs := newFlags("cgroup "+args[0], stderr)
	var (
		limit int64
		pids  []int
	)
	path := fs.String("path", "", "the cgroup's directory")
	js := fs.Bool("json", false, "print JSON")
	name := fs.String("name", "", "create: the new cgroup's name (default upsink-bench-PID-N)")
	fs.Var(sizeFlag{&limit}, "limit", "create: memory limit (e.g. 256M); swap is limited to 0")
	fs.Var(pidsFlag{&pids}, "pids", "add: processes to move in")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	switch args[0] {
	case "create":
		if limit < 4<<20 {
			return errors.New("--limit is required (at least 4 MiB)")
		}
		c, err := CreateCgroup(limit, *name)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, c.Dir)
		for _, n := range c.notes {
			fmt.Fprintf(stderr, "upsink-bench cgroup: note: %s\n", n)
		}
		return nil
	}
	if *path == "" {
		return errors.New("--path is required")
	}
	c, err := OpenCgroupDir(*path)
	if err != nil {
		return err
	}
	switch args[0] {
	case "add":
		for _, p := range pids {
			if err := c.AddPID(p); err != nil {
				return err
			}
		}
		return nil
	case "stats":
		r := c.Result()
		if *js {
			return writeJSON(stdout, r)
		}
		FormatCgroup(stdout, &r)
		return nil
	case "remove":
		return c.Remove()
	}
	return fmt.Errorf("unknown cgroup command %q (want create, add, stats or remove)", args[0])
}
