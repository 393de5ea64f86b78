package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"upsink/internal/testdb"
	"upsink/internal/testnet"
	"upsink/metrics"
	"upsink/server"
	"upsink/store"
)

// startUpsink runs a server with metrics on an admin listener.
func startUpsink(t *testing.T, dsn string) (addr, adminAddr string) {
	t.Helper()
	m := metrics.New()
	addr = testnet.FreeAddr(t)
	srv, err := server.New(server.Config{Listen: addr, Loops: 2, Store: store.Config{DSN: dsn}, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	select {
	case <-srv.Booted():
	case err := <-errc:
		t.Fatalf("Serve: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-errc
	})
	a, err := Start("127.0.0.1:0", m, nil, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	deadline := time.Now().Add(20 * time.Second)
	for !srv.Store().Ready() {
		if time.Now().After(deadline) {
			t.Fatal("store never ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return addr, a.Addr()
}

func scrape(t *testing.T, adminAddr string) string {
	t.Helper()
	resp, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return string(b)
}

func upload(t *testing.T, addr string, n int) {
	t.Helper()
	for i := range n {
		resp, err := http.Post("http://"+addr+"/upload/metrics", "text/plain", strings.NewReader(fmt.Sprint("row ", i)))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 201 {
			t.Fatalf("upload %d: %d", i, resp.StatusCode)
		}
	}
}

// TestMetricsPage: /metrics counts what happened, and promtool's linter
// accepts the page.
func TestMetricsPage(t *testing.T) {
	addr, adminAddr := startUpsink(t, testdb.New(t))
	upload(t, addr, 5)
	if resp, err := http.Get("http://" + addr + "/nope"); err == nil {
		resp.Body.Close()
	}
	page := scrape(t, adminAddr)
	for _, want := range []string{
		"upsink_rows_committed_total 5\n",
		`upsink_requests_total{route="upload",status="201"} 5` + "\n",
		`upsink_requests_total{route="other",status="404"} 1` + "\n",
		"# HELP upsink_rows_committed_total Rows committed in MariaDB",
		"# TYPE upsink_commit_duration_seconds histogram\n",
		"upsink_batch_rows_count ",
		`upsink_connections{kind="plain"} `,
		"upsink_inflight_limit_bytes 3.3554432e+07\n",
		"go_goroutines ",
		"process_resident_memory_bytes ",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	resp, err := http.Get("http://" + adminAddr + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	heap, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch {
	case pprofBuilt && (resp.StatusCode != 200 || !strings.Contains(string(heap), "heap profile:")):
		t.Errorf("/debug/pprof/heap (-tags pprof): %d %.80q", resp.StatusCode, heap)
	case !pprofBuilt && resp.StatusCode != 404:
		t.Errorf("/debug/pprof/heap without -tags pprof: %d, want 404", resp.StatusCode)
	}
	if strings.Count(page, "# HELP upsink_requests_total ") != 1 || strings.Count(page, "# TYPE upsink_requests_total ") != 1 {
		t.Error("one HELP and one TYPE line per family")
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("UPSINK_REQUIRE_DB") == "1" {
			t.Fatal("promtool not installed (make test installs Debian's prometheus)")
		}
		t.Skip("promtool not installed")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(page)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestPrometheusScrapes: a real Prometheus scrapes the admin listener, and
// the rows-committed counter it stored equals the rows uploaded.
func TestPrometheusScrapes(t *testing.T) {
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("UPSINK_REQUIRE_DB") == "1" {
			t.Fatal("prometheus not installed (make test installs Debian's prometheus)")
		}
		t.Skip("prometheus not installed")
	}
	addr, adminAddr := startUpsink(t, testdb.New(t))
	const rows = 37
	upload(t, addr, rows)

	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: upsink
    static_configs:
      - targets: ["`+adminAddr+`"]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	promAddr := testnet.FreeAddr(t)
	cmd := exec.Command(prom, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr, "--log.level=warn")
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	q := "http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(`upsink_rows_committed_total{job="upsink"}`)
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Fatalf("Prometheus never reported %d rows (last answer %s); its log:\n%s", rows, last, log)
		}
		if v, ok := query(q); ok {
			last = v
			if v == fmt.Sprint(rows) {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// query asks Prometheus's HTTP API for an instant vector of one sample and
// returns its value.
func query(u string) (string, bool) {
	resp, err := http.Get(u)
	if err != nil {
		return "", false
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if json.NewDecoder(resp.Body).Decode(&r) != nil || r.Status != "success" || len(r.Data.Result) != 1 {
		return "", false
	}
	v, ok := r.Data.Result[0].Value[1].(string)
	return v, ok
}
