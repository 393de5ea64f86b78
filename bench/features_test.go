package bench

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"upsink/internal/testdb"
)

// The chunked and Content-Length renderings carry the same body: marker
// then filler, for sizes below, at and above the marker and chunk sizes.
func TestReqBuilderBodies(t *testing.T) {
	tg, _ := parseTarget("http://127.0.0.1:9/upload/s")
	filler := makeFiller(5000)
	for _, chunked := range []bool{false, true} {
		rb := newReqBuilder(tg, "text/plain", filler, true, chunked, 100)
		copy(rb.marker[markRun:], "0123456789abcdef")
		for _, n := range []int{1, 41, 42, 43, 99, 100, 101, 250, 5000} {
			putHex(rb.marker[markSeq:markSeq+16], uint64(n))
			req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(rb.build(n))))
			if err != nil {
				t.Fatalf("chunked=%v n=%d: %v", chunked, n, err)
			}
			body, err := io.ReadAll(req.Body)
			if err != nil {
				t.Fatalf("chunked=%v n=%d: %v", chunked, n, err)
			}
			m, f := rb.body(n)
			want := append(append([]byte{}, m...), f...)
			if !bytes.Equal(body, want) || len(body) != n {
				t.Fatalf("chunked=%v n=%d: body %q", chunked, n, trunc(body))
			}
			if (len(req.TransferEncoding) > 0) != chunked {
				t.Fatalf("chunked=%v: TE %v", chunked, req.TransferEncoding)
			}
			if n >= markerLen && !bytes.HasPrefix(body, []byte("ub 0123456789abcdef 0000 ")) {
				t.Fatalf("marker %q", body[:markerLen])
			}
		}
	}
}

func TestParseSizeRange(t *testing.T) {
	for _, tt := range []struct {
		in     string
		lo, hi int64
		bad    bool
	}{{"1KiB", 1024, 1024, false}, {"512-4KiB", 512, 4096, false}, {"4K-1K", 0, 0, true}, {"1-", 0, 0, true}, {"256M", 256 << 20, 256 << 20, false}} {
		lo, hi, err := ParseSizeRange(tt.in)
		if (err != nil) != tt.bad || lo != tt.lo || hi != tt.hi {
			t.Errorf("%q: %d %d %v", tt.in, lo, hi, err)
		}
	}
	var w []WatchSpec
	if err := (watchFlag{&w}).Set("12,db=34"); err != nil || len(w) != 2 || w[0].PID != 12 || w[1].Name != "db" || w[1].PID != 34 {
		t.Fatalf("watch %v %v", w, err)
	}
	if err := (watchFlag{&w}).Set("x"); err == nil {
		t.Fatal("bad pid accepted")
	}
}

// uploadServer is a net/http upload sink that checks what it gets.
type uploadServer struct {
	mu     sync.Mutex
	bodies map[string]bool
	sizes  map[int]int
	dups   int
	te     int
}

func (u *uploadServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	if u.bodies[string(b)] {
		u.dups++
	}
	u.bodies[string(b)] = true
	u.sizes[len(b)]++
	if len(r.TransferEncoding) > 0 {
		u.te++
	}
	n := len(u.bodies)
	u.mu.Unlock()
	if !bytes.HasPrefix(b, []byte("ub ")) {
		w.WriteHeader(400)
		return
	}
	w.WriteHeader(201)
	fmt.Fprintf(w, `{"id":%d,"stream":"t","bytes":%d}`, n, len(b))
}

func newUploadServer() *uploadServer {
	return &uploadServer{bodies: map[string]bool{}, sizes: map[int]int{}}
}

func TestLoadRangeChunkedRate(t *testing.T) {
	u := newUploadServer()
	srv := httptest.NewServer(u)
	defer srv.Close()
	var prog bytes.Buffer
	start := time.Now()
	r, err := Load(LoadConfig{URL: srv.URL + "/upload/t", Conns: 4, Duration: 1500 * time.Millisecond, BodySize: 100, BodyMax: 300,
		Chunked: true, ChunkSize: 64, Rate: 200, Progress: &prog})
	if err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	// 200/s for 1.5 s: 300 requests (the last due at the end may not go).
	if r.Created < 280 || r.Created > 301 || r.Errors != 0 || el > 4*time.Second {
		t.Fatalf("open loop: %d created in %s: %+v", r.Created, el, r)
	}
	if u.dups != 0 || u.te != int(r.Created) || len(u.sizes) < 50 {
		t.Fatalf("dups %d, chunked %d, %d distinct sizes", u.dups, u.te, len(u.sizes))
	}
	for n := range u.sizes {
		if n < 100 || n > 300 {
			t.Fatalf("size %d outside 100-300", n)
		}
	}
	if r.LatencyFrom != "scheduled" || !strings.Contains(prog.String(), "2xx ") {
		t.Fatalf("latency from %q, progress %q", r.LatencyFrom, prog.String())
	}
}

func TestLoadTLS(t *testing.T) {
	u := newUploadServer()
	srv := httptest.NewUnstartedServer(u)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes below
	srv.StartTLS()
	defer srv.Close()
	url := strings.Replace(srv.URL, "127.0.0.1", "127.0.0.1", 1) + "/upload/t"
	// Unverified certificate without --insecure or --cacert: every dial fails.
	r, err := Load(LoadConfig{URL: url, Conns: 1, Count: 1, Timeout: 2 * time.Second, BodySize: 64})
	if err != nil || r.Created != 0 || r.Errors == 0 || !strings.Contains(strings.Join(r.ErrorSamples, " "), "certificate") {
		t.Fatalf("unverified: %v %+v", err, r)
	}
	r, err = Load(LoadConfig{URL: url, Conns: 3, Count: 60, BodySize: 64, Insecure: true})
	if err != nil || r.Created != 60 || !r.TLS || r.Connects > 3 {
		t.Fatalf("insecure: %v %+v", err, r)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	pemb := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(ca, pemb, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err = Load(LoadConfig{URL: url, Conns: 2, Count: 40, BodySize: 64, CACert: ca, Chunked: true})
	if err != nil || r.Created != 40 || r.Errors != 0 {
		t.Fatalf("cacert: %v %+v", err, r)
	}
}

const sockstatSample = `sockets: used 10243
TCP: inuse 10006 orphan 0 tw 1138 alloc 10008 mem 2750
UDP: inuse 0 mem 0
UDPLITE: inuse 0
RAW: inuse 0
FRAG: inuse 0 memory 0
`

func TestParseSockstat(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{sockstatSample, 2750, false},
		{"TCP: inuse 1 orphan 0 tw 0 alloc 1 mem 0\n", 0, false},
		{"sockets: used 3\nUDP: inuse 0 mem 4\n", 0, true}, // no TCP line (UDP mem is not it)
		{"TCP: inuse 1 orphan 0\n", 0, true},
		{"TCP: inuse 1 mem x\n", 0, true},
		{"", 0, true},
	} {
		got, err := parseSockstatTCPMem([]byte(tt.in))
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("%q: %d %v", tt.in, got, err)
		}
	}
	if _, err := ReadTCPMem(); err != nil {
		t.Logf("this machine: %v", err)
	}
}

// smaps_rollup as a 6.x kernel writes it: Pss and its Pss_* breakdown.
const rollupFull = `55619c1be000-7ffd5ae7b000 ---p 00000000 00:00 0                          [rollup]
Rss:               14500 kB
Pss:               10315 kB
Pss_Dirty:          6116 kB
Pss_Anon:           6116 kB
Pss_File:           4199 kB
Pss_Shmem:             0 kB
Shared_Clean:       1628 kB
Shared_Dirty:          0 kB
Private_Clean:        36 kB
Private_Dirty:       116 kB
Referenced:         1780 kB
Anonymous:           116 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
`

func TestParseRollupAndStatus(t *testing.T) {
	got, err := parseKB(strings.NewReader(rollupFull), "Pss:", "Rss:", "SwapPss:")
	if err != nil || got[0] != 10315<<10 || got[1] != 14500<<10 || got[2] != 0 {
		t.Fatalf("rollup: %v %v", got, err)
	}
	got, err = parseKB(strings.NewReader(statusSample), "VmRSS:", "VmHWM:")
	if err != nil || got[0] != 14500<<10 || got[1] != 15264<<10 {
		t.Fatalf("status: %v %v", got, err)
	}
}

// The sampler's TSV and plots from a short watch of this process.
func TestSamplerTSVPlot(t *testing.T) {
	dir := t.TempDir()
	tsv := filepath.Join(dir, "mem.tsv")
	s, err := StartSampler(SamplerConfig{Watch: []WatchSpec{{PID: os.Getpid()}}, Every: 10 * time.Millisecond, TSV: tsv})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(80 * time.Millisecond)
	r := s.Stop()
	if len(r.Procs) != 1 || r.Procs[0].PeakRSS <= 0 || r.Procs[0].Name == "" || r.Err != "" {
		t.Fatalf("%+v", r)
	}
	b, _ := os.ReadFile(tsv)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 3 || !strings.HasPrefix(lines[0], "t_s\t") || strings.Count(lines[1], "\t") != strings.Count(lines[0], "\t") {
		t.Fatalf("tsv:\n%s", b)
	}
	files, err := PlotMemory(s, filepath.Join(dir, "mem"), "test")
	if err != nil || len(files) != 2 {
		t.Fatalf("plot: %v %v", files, err)
	}
	png, _ := os.ReadFile(files[0])
	svg, _ := os.ReadFile(files[1])
	if !bytes.HasPrefix(png, []byte("\x89PNG")) || !bytes.Contains(svg, []byte("<svg")) {
		t.Fatal("not a PNG / SVG")
	}
}

// bodyHash is what the load tool keeps per acknowledged upload.
func bodyHash(b []byte) uint64 {
	s := sha256.Sum256(b)
	return binary.BigEndian.Uint64(s[:8])
}

// The verifier on a real MariaDB: rows planted directly, with one
// acknowledged upload missing, one stored twice, one changed, one stored
// after a 503 and one stored without an answer.
func TestVerifyVerdicts(t *testing.T) {
	dsn := testdb.New(t)
	db := testdb.Open(t, dsn)
	if _, err := db.Exec(`CREATE TABLE uploads (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  stream VARCHAR(64) CHARACTER SET ascii NOT NULL,
  received_at DATETIME(6) NOT NULL,
  remote_addr VARCHAR(64) CHARACTER SET ascii NOT NULL,
  content_type VARBINARY(255) NOT NULL,
  body LONGBLOB NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	const run = "00c0ffee00c0ffee"
	tg, _ := parseTarget("http://127.0.0.1:9/upload/s")
	rb := newReqBuilder(tg, "x", makeFiller(300), true, false, 0)
	copy(rb.marker[markRun:], run)
	var sent Sent
	insert := func(b []byte) uint64 {
		res, err := db.Exec("INSERT INTO uploads (stream, received_at, remote_addr, content_type, body) VALUES ('s', NOW(6), '127.0.0.1', 'x', ?)", b)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := res.LastInsertId()
		return uint64(id)
	}
	body := func(w int, seq uint64, n int) []byte {
		putHex(rb.marker[markWork:markWork+4], uint64(w))
		putHex(rb.marker[markSeq:markSeq+16], seq)
		m, f := rb.body(n)
		return append(append([]byte{}, m...), f...)
	}
	// Another run's row and a foreign row must be ignored.
	insert([]byte("ub ffffffffffffffff 0000 0000000000000001\nxxxx"))
	insert([]byte("hello"))
	for w := range 3 {
		for seq := uint64(1); seq <= 20; seq++ {
			b := body(w, seq, 50+int(seq)*10)
			key := markKey(w, seq)
			switch {
			case w == 1 && seq == 5: // acknowledged, lost
				sent.Acks = append(sent.Acks, ack{id: 999999, key: key, hash: bodyHash(b)})
			case w == 2 && seq == 7: // acknowledged, stored twice
				id := insert(b)
				insert(b)
				sent.Acks = append(sent.Acks, ack{id: id, key: key, hash: bodyHash(b)})
			case w == 0 && seq == 3: // acknowledged, stored with one byte changed
				c := append([]byte{}, b...)
				c[len(c)-1] ^= 1
				id := insert(c)
				sent.Acks = append(sent.Acks, ack{id: id, key: key, hash: bodyHash(b)})
			case w == 0 && seq == 9: // answered 503, stored anyway
				insert(b)
				sent.Nacks = append(sent.Nacks, nack{key: key, status: 503})
			case w == 1 && seq == 11: // no answer, stored
				insert(b)
				sent.NoAnswer = append(sent.NoAnswer, key)
			case w == 1 && seq == 12: // answered 503, not stored
				sent.Nacks = append(sent.Nacks, nack{key: key, status: 503})
			case w == 2 && seq == 13: // acknowledged with a wrong id
				id := insert(b)
				sent.Acks = append(sent.Acks, ack{id: id + 1000, key: key, hash: bodyHash(b)})
			default:
				id := insert(b)
				sent.Acks = append(sent.Acks, ack{id: id, key: key, hash: bodyHash(b)})
			}
		}
	}
	v, err := Verify(dsn, "uploads", run, &sent)
	if err != nil {
		t.Fatal(err)
	}
	want := VerifyResult{Acked: 57, Rows: 59, Found: 54, Lost: 1, Duplicated: 1, DuplicateRows: 1, Mismatched: 1,
		IDMismatch: 1, NotAcked: 3, UnackedPresent: 2}
	if v.Acked != want.Acked || v.Rows != want.Rows || v.Found != want.Found || v.Lost != want.Lost || v.Duplicated != want.Duplicated ||
		v.DuplicateRows != want.DuplicateRows || v.Mismatched != want.Mismatched || v.IDMismatch != want.IDMismatch ||
		v.NotAcked != want.NotAcked || v.UnackedPresent != want.UnackedPresent || v.OK {
		t.Fatalf("got  %+v\nwant %+v", *v, want)
	}
	if v.PresentAfter["503"] != 1 || v.PresentAfter["no answer"] != 1 {
		t.Fatalf("present after: %v", v.PresentAfter)
	}
	var sb strings.Builder
	FormatVerify(&sb, v)
	if !strings.Contains(sb.String(), "FAILED") || !strings.Contains(sb.String(), "lost 1, duplicated 1") {
		t.Fatal(sb.String())
	}

	// The clean case: only what was acknowledged, each once.
	clean := Sent{}
	for _, a := range sent.Acks {
		if a.key != markKey(1, 5) && a.key != markKey(2, 7) && a.key != markKey(0, 3) && a.key != markKey(2, 13) {
			clean.Acks = append(clean.Acks, a)
		}
	}
	clean.Nacks = sent.Nacks
	clean.NoAnswer = sent.NoAnswer
	if _, err := db.Exec("DELETE FROM uploads WHERE LEFT(body, 42) IN (?, ?)", body(2, 7, 120)[:42], body(0, 3, 80)[:42]); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("DELETE FROM uploads WHERE LEFT(body, 42) = ?", body(2, 13, 180)[:42]); err != nil {
		t.Fatal(err)
	}
	v, err = Verify(dsn, "uploads", run, &clean)
	if err != nil || !v.OK || v.Lost != 0 || v.Duplicated != 0 || v.Found != int64(len(clean.Acks)) || v.UnackedPresent != 2 {
		t.Fatalf("clean: %v %+v", err, v)
	}
	if _, err := Verify(dsn, "uploads; DROP", run, &clean); err == nil {
		t.Fatal("bad table name accepted")
	}
}

// Load --verify end to end against the net/http sink: nothing is stored
// there, so every acknowledged upload is lost.
func TestLoadVerifyReportsLoss(t *testing.T) {
	dsn := testdb.New(t)
	db := testdb.Open(t, dsn)
	if _, err := db.Exec("CREATE TABLE uploads (id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, body LONGBLOB NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(newUploadServer())
	defer srv.Close()
	r, err := Load(LoadConfig{URL: srv.URL + "/upload/t", Conns: 2, Count: 10, BodySize: 64, VerifyDSN: dsn})
	if err != nil || r.Verify == nil || r.Verify.Lost != 10 || r.Verify.OK {
		t.Fatalf("%v %+v", err, r.Verify)
	}
	var out, errb bytes.Buffer
	if rc := Main([]string{"load", "--url", srv.URL + "/upload/t", "-c", "2", "-n", "5", "--body", "64", "--verify", dsn}, &out, &errb); rc != 1 {
		t.Fatalf("exit %d, want 1:\n%s%s", rc, out.String(), errb.String())
	}
}

// A memory cgroup: created, a child process moved in and back, counters
// read, removed. Needs root and a memory cgroup hierarchy.
func TestCgroup(t *testing.T) {
	c, err := CreateCgroup(64<<20, "")
	if err != nil {
		t.Skipf("no memory cgroup here: %v", err)
	}
	defer c.Close()
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if err := c.AddPID(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(c.file("cgroup.procs"))
	if !strings.Contains(string(b), fmt.Sprint(cmd.Process.Pid)) {
		t.Fatalf("cgroup.procs %q", b)
	}
	r := c.Result()
	if r.Limit != 64<<20 || r.OOMKill != 0 || len(r.PIDs) != 1 {
		t.Fatalf("%+v", r)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
		t.Fatalf("%s still there: %v", c.Dir, err)
	}
}

func TestSpliceSection(t *testing.T) {
	doc := "# gen\n\ntext\n"
	d1 := spliceSection(doc, "A\n")
	if !strings.Contains(d1, KeptMarker+"\n\n"+vpsBegin+"\nA\n"+vpsEnd) || !strings.HasPrefix(d1, "# gen\n\ntext\n") {
		t.Fatalf("%q", d1)
	}
	d2 := spliceSection(d1+"\ntail\n", "B")
	if strings.Contains(d2, "\nA\n") || !strings.Contains(d2, vpsBegin+"\nB\n"+vpsEnd) || !strings.HasSuffix(d2, "tail\n") || strings.Count(d2, KeptMarker) != 1 {
		t.Fatalf("%q", d2)
	}
}
