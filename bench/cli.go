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
)

// ParseSize reads 1024, 1KiB, 1MiB, 1GiB (also KB/MB/GB as powers of 1024, and k/m/g).
func ParseSize(v string) (int64, error) {
	s := strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10},
		{"g", 1 << 30}, {"m", 1 << 20}, {"k", 1 << 10}, {"B", 1}} {
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

type watchFlag struct{ w *[]WatchSpec }

func (f watchFlag) String() string { return "" }
func (f watchFlag) Set(v string) error {
	name, p, ok := strings.Cut(v, "=")
	if !ok {
		name, p = "pid", v
	}
	pid, err := strconv.Atoi(p)
	if err != nil || pid <= 0 {
		return fmt.Errorf("bad --watch %q (want NAME=PID)", v)
	}
	*f.w = append(*f.w, WatchSpec{Name: name, PID: pid})
	return nil
}

// Prog is how results name this program (main sets it from os.Args[0]).
var Prog = "upsink-bench"

// Usage is the command's help text.
const Usage = `usage: upsink-bench COMMAND [flags]

  load  --url http://127.0.0.1:PORT/upload/STREAM -c CONNS (-d DURATION | -n COUNT)
        [--body 1KiB] [--no-keepalive] [--watch NAME=PID ...] [--json]
  idle  --url http://127.0.0.1:PORT/healthz -c N [--hold 5s] [--pid PID] [--json]
  rss   --pid PID [--json]
  wait  --url http://127.0.0.1:PORT/readyz [--timeout 30s]
  report --dir RESULTS [--out BENCHMARKS.md]

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
	case "rss":
		err = mainRSS(args[1:], stdout, stderr)
	case "wait":
		err = mainWait(args[1:], stderr)
	case "report":
		err = mainReport(args[1:], stderr)
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

func mainLoad(args []string, cmdline string, stdout, stderr io.Writer) error {
	fs := newFlags("load", stderr)
	var (
		cfg  LoadConfig
		body int64 = 1 << 10
		js   bool
	)
	fs.StringVar(&cfg.URL, "url", "", "upload URL, http://host:port/upload/STREAM")
	fs.IntVar(&cfg.Conns, "c", 64, "concurrent connections")
	fs.DurationVar(&cfg.Duration, "d", 0, "duration (default 10s unless -n is given)")
	fs.Int64Var(&cfg.Count, "n", 0, "number of requests (bounded by --timeout)")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Minute, "time bound of a -n run")
	fs.Var(sizeFlag{&body}, "body", "body size per upload")
	fs.BoolVar(&cfg.NoKeepAlive, "no-keepalive", false, "one request per connection")
	fs.StringVar(&cfg.ContentType, "content-type", "application/octet-stream", "Content-Type of the uploads")
	fs.Var(watchFlag{&cfg.Watch}, "watch", "NAME=PID of a process whose RSS is polled during the run (repeatable)")
	fs.DurationVar(&cfg.WatchEvery, "watch-every", 100*time.Millisecond, "poll interval of --watch")
	fs.BoolVar(&js, "json", false, "print the result as JSON")
	jsonOut := fs.String("json-out", "", "also write the JSON result to this file")
	if err := parse(fs, args); err != nil {
		return err
	}
	if cfg.URL == "" {
		return errors.New("--url is required")
	}
	if body > 1<<30 {
		return fmt.Errorf("--body %d too large", body)
	}
	cfg.BodySize = int(body)
	cfg.Command = cmdline
	r, err := Load(cfg)
	if err != nil {
		return err
	}
	if err := saveJSON(*jsonOut, r); err != nil {
		return err
	}
	if js {
		return writeJSON(stdout, r)
	}
	FormatLoad(stdout, r)
	return nil
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
	fs.IntVar(&cfg.Parallel, "parallel", 64, "concurrent dials")
	fs.BoolVar(&js, "json", false, "print the result as JSON")
	jsonOut := fs.String("json-out", "", "also write the JSON result to this file")
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
	if err := saveJSON(*jsonOut, r); err != nil {
		return err
	}
	if js {
		return writeJSON(stdout, r)
	}
	FormatIdle(stdout, r)
	return nil
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
	if err := parse(fs, args); err != nil {
		return err
	}
	if *url == "" {
		return errors.New("--url is required")
	}
	if *timeout > 10*time.Minute {
		*timeout = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	cl := &http.Client{Timeout: 2 * time.Second}
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
