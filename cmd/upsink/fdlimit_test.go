package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"upsink/internal/testdb"
)

// buildUpsink builds the binary into a temp dir.
func buildUpsink(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "upsink")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// logLines collects the process's stderr lines.
type logLines struct {
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func collect(r io.Reader) *logLines {
	l := &logLines{done: make(chan struct{})}
	go func() {
		defer close(l.done)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			l.mu.Lock()
			l.lines = append(l.lines, sc.Text())
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *logLines) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// upload sends one 1 KiB upload on c (keep-alive) and returns the status.
func upload(c net.Conn, br *bufio.Reader) (int, error) {
	body := strings.Repeat("u", 1024)
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := fmt.Fprintf(c, "POST /upload/fd HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestFdFloodKeepsServing runs the real binary with RLIMIT_NOFILE 256 and has
// one client open 500 connections, upload once on each and hold them all
// idle: upsink never reaches EMFILE (the connection cap keeps a reserve),
// closes the longest-idle connections to admit new ones, stays up, and a
// polite client's uploads still get 201. SIGTERM then exits 0.
func TestFdFloodKeepsServing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dsn := testdb.New(t)
	bin := buildUpsink(t)
	addr := freePort(t)
	cmd := exec.Command("prlimit", "--nofile=256:256", bin, "serve", "--listen", addr, "--dsn", dsn, "--loops", "2")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Skipf("prlimit: %v", err)
	}
	logs := collect(stderr)
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	waitHTTP(t, addr)

	const flood = 500
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	ok := 0
	for i := 0; i < flood; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("flood connection %d: %v", i, err)
		}
		held = append(held, c)
		if code, err := upload(c, bufio.NewReader(c)); err == nil && code == 201 {
			ok++
		}
	}
	// Every flood connection past the cap either evicted an idle one or
	// was refused; most uploads went through.
	if ok < flood/2 {
		t.Errorf("only %d of %d flood uploads got 201", ok, flood)
	}
	for i := 0; i < 20; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("polite dial: %v", err)
		}
		code, err := upload(c, bufio.NewReader(c))
		c.Close()
		if err != nil || code != 201 {
			t.Fatalf("polite upload %d during the flood: %d %v\n%s", i, code, err, logs.all())
		}
	}
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("upsink is gone: %v", err)
	}
	if strings.Contains(logs.all(), "Accept() failed") {
		t.Fatalf("accept failed:\n%s", logs.all())
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	<-logs.done
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.all())
	}
}

// waitHTTP waits (bounded) until /healthz answers.
func waitHTTP(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("upsink on %s never became ready: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
