package bench

import (
	"bytes"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"upsink/internal/testdb"
	"upsink/parser"
)

// idemServer is a net/http upload sink that keeps Idempotency-Key as the
// issue 8 contract says (a retry with the same key and body gets the
// original answer, no new row; another body gets 422), and misbehaves on
// purpose on first attempts, by the upload's sequence number (see fault).
// Rows go to a map, or with db set to a MariaDB table.
type idemServer struct {
	t       *testing.T
	reqTO   time.Duration // the client's --request-timeout: "slow" answers later than this
	noDedup bool          // a broken server: every attempt is a new upload
	faults  bool          // apply fault (else every first attempt is stored and answered 201)
	db      *sql.DB

	mu       sync.Mutex
	answers  map[string]idemAnswer // key -> the original answer
	attempts map[string]int        // key -> requests seen
	rows     map[string]int        // key -> rows stored (map mode)
	pending  [][]byte              // spooled bodies not yet "replayed" into the table
	nextID   uint64
	nextSeq  uint64
	badKeys  []string
	polls    int
}

type idemAnswer struct {
	status int
	body   string
	sum    [32]byte
}

func newIdemServer(t *testing.T, reqTO time.Duration) *idemServer {
	return &idemServer{t: t, reqTO: reqTO, faults: true, answers: map[string]idemAnswer{}, attempts: map[string]int{},
		rows: map[string]int{}}
}

// fault is what the server does with attempt n of the upload with sequence
// number seq: "503" (refuse, store nothing), "409" (as if the first were
// still in progress), "drop" (close without storing or answering),
// "store-drop" (store, then close without answering), "slow" (store, answer
// after the client's request timeout), "spool" (answer 202, the row appears
// when /readyz is polled), or "" (store, 201).
func fault(seq uint64, n int) string {
	switch seq % 8 {
	case 1:
		if n == 1 {
			return "503"
		}
	case 2:
		if n == 1 {
			return "store-drop"
		}
	case 3:
		if n == 1 {
			return "slow"
		}
	case 4:
		return "spool"
	case 5:
		if n <= 2 {
			return "409"
		}
	case 6:
		if n == 1 {
			return "drop"
		}
	}
	return ""
}

// faultRetries is how many retries fault makes the upload seq need.
func faultRetries(seq uint64) int64 {
	switch seq % 8 {
	case 1, 2, 3, 6:
		return 1
	case 5:
		return 2
	}
	return 0
}

// store writes one row and returns its id.
func (s *idemServer) store(key string, body []byte) uint64 {
	if s.db == nil {
		s.rows[key]++
		s.nextID++
		return s.nextID
	}
	res, err := s.db.Exec("INSERT INTO uploads (body) VALUES (?)", body)
	if err != nil {
		s.t.Error(err)
		return 0
	}
	id, _ := res.LastInsertId()
	return uint64(id)
}

func (s *idemServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/readyz" {
		s.readyz(w)
		return
	}
	body, _ := io.ReadAll(r.Body)
	raw := r.Header.Values("Idempotency-Key")
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(raw) != 1 {
		s.badKeys = append(s.badKeys, fmt.Sprintf("%q", raw))
		w.WriteHeader(400)
		return
	}
	// The key is a valid sf-string that names the body's marker.
	k, err := parser.IdempotencyKey([]byte(raw[0]), nil)
	if err != nil || len(body) < markerLen ||
		string(k) != string(body[markRun:markRun+16])+"-"+string(body[markWork:markWork+4])+"-"+string(body[markSeq:markSeq+16]) {
		s.badKeys = append(s.badKeys, raw[0])
		w.WriteHeader(400)
		return
	}
	key := string(k)
	seq, _ := strconv.ParseUint(key[len(key)-16:], 16, 64)
	sum := sha256.Sum256(body)
	s.attempts[key]++
	n := s.attempts[key]
	if a, ok := s.answers[key]; ok && !s.noDedup {
		if a.sum != sum {
			w.WriteHeader(422)
			return
		}
		w.WriteHeader(a.status)
		io.WriteString(w, a.body)
		return
	}
	f := ""
	if s.faults {
		f = fault(seq, n)
	}
	var a idemAnswer
	switch f {
	case "503", "409":
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(map[string]int{"503": 503, "409": 409}[f])
		return
	case "drop":
		s.hangUp(w)
		return
	case "spool":
		s.nextSeq++
		s.pending = append(s.pending, body)
		a = idemAnswer{202, fmt.Sprintf(`{"stream":"t","bytes":%d,"durable":"spool","spool_seq":%d}`, len(body), s.nextSeq), sum}
	default:
		id := s.store(key, body)
		a = idemAnswer{201, fmt.Sprintf(`{"id":%d,"stream":"t","bytes":%d,"durable":"mysql"}`, id, len(body)), sum}
	}
	s.answers[key] = a
	switch f {
	case "store-drop":
		s.hangUp(w)
		return
	case "slow":
		s.mu.Unlock()
		time.Sleep(s.reqTO + 200*time.Millisecond)
		s.mu.Lock()
	}
	w.WriteHeader(a.status)
	io.WriteString(w, a.body)
}

func (s *idemServer) hangUp(w http.ResponseWriter) {
	c, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		s.t.Error(err)
		return
	}
	c.Close()
}

// readyz "replays" up to 5 spooled uploads per poll, and reports the rest.
func (s *idemServer) readyz(w http.ResponseWriter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.polls++
	for i := 0; i < 5 && len(s.pending) > 0; i++ {
		b := s.pending[0]
		s.pending = s.pending[1:]
		s.store(string(b[markRun:markRun+16])+"-"+string(b[markWork:markWork+4])+"-"+string(b[markSeq:markSeq+16]), b)
	}
	fmt.Fprintf(w, `{"ready":true,"database":"up","spool":{"records":%d,"bytes":0,"oldest_age_seconds":0}}`, len(s.pending))
}

// Retrying clients against every fault: each upload is acknowledged once it
// got through, stored exactly once, and the retries add up.
func TestLoadIdempotentRetries(t *testing.T) {
	const reqTO = 300 * time.Millisecond
	s := newIdemServer(t, reqTO)
	srv := httptest.NewServer(s)
	defer srv.Close()
	const conns, count = 4, 96
	r, err := Load(LoadConfig{URL: srv.URL + "/upload/t", Conns: conns, Count: count, BodySize: 100, Idempotency: true,
		RetryWait: 10 * time.Millisecond, RequestTimeout: reqTO, DrainURL: srv.URL + "/readyz"})
	if err != nil {
		t.Fatal(err)
	}
	id := r.Idempotency
	if id == nil || id.Uploads != count || id.Acked != count || id.GivenUp != 0 || id.Refused != 0 || id.Status422 != 0 {
		t.Fatalf("%+v", id)
	}
	// Each worker numbers its uploads 1, 2, ...: add up what fault asks for.
	// (How many uploads each worker sent depends on the race for -n.)
	var wantRetries, wantRetried int64
	byFault := map[uint64]int64{}
	s.mu.Lock()
	for key := range s.answers {
		seq, _ := strconv.ParseUint(key[len(key)-16:], 16, 64)
		byFault[seq%8]++
		wantRetries += faultRetries(seq)
		if faultRetries(seq) > 0 {
			wantRetried++
		}
	}
	if len(s.badKeys) > 0 || len(s.answers) != count {
		t.Fatalf("bad keys %q, %d answers", s.badKeys, len(s.answers))
	}
	for key, n := range s.rows {
		if n != 1 {
			t.Errorf("%s stored %d times", key, n)
		}
	}
	if len(s.rows) != count || len(s.pending) != 0 {
		t.Errorf("%d keys stored, %d still spooled", len(s.rows), len(s.pending))
	}
	s.mu.Unlock()
	if id.Retries != wantRetries || id.Retried != wantRetried {
		t.Errorf("retries %d (%d uploads), want %d (%d)", id.Retries, id.Retried, wantRetries, wantRetried)
	}
	// 201 and 202 counted apart, both acknowledged; the dropped and slow
	// first attempts are errors and unanswered, and nothing else.
	if r.Accepted != byFault[4] || r.Created+r.Accepted != r.Acked || r.Acked != count || r.BadAnswers != 0 {
		t.Errorf("created %d accepted %d acked %d bad %d; status %v", r.Created, r.Accepted, r.Acked, r.BadAnswers, r.Status)
	}
	if r.Status["503"] != byFault[1] || r.Status["409"] != 2*byFault[5] || r.Unanswered != byFault[3] || r.Errors != byFault[2]+byFault[6] {
		t.Errorf("status %v unanswered %d errors %d %q", r.Status, r.Unanswered, r.Errors, r.ErrorSamples)
	}
	if r.Drain == nil || !r.Drain.OK {
		t.Errorf("drain %+v", r.Drain)
	}
	var sb strings.Builder
	FormatLoad(&sb, r)
	for _, want := range []string{"x 202 spooled", "idempotent  96 uploads: 96 acknowledged", "retries", "spool empty after"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, sb.String())
		}
	}
}

// A server that never takes anything: every upload is retried until
// --retry-for ends, then given up, and the run stays bounded.
func TestLoadIdempotentGivesUp(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(503)
	}))
	defer srv.Close()
	t0 := time.Now()
	r, err := Load(LoadConfig{URL: srv.URL + "/upload/t", Conns: 3, Duration: 200 * time.Millisecond, BodySize: 64, Idempotency: true,
		RetryWait: 20 * time.Millisecond, RetryFor: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	el := time.Since(t0)
	id := r.Idempotency
	if id.Uploads != 3 || id.GivenUp != 3 || id.Acked != 0 || id.Retries < 3*5 || el > 3*time.Second || el < 500*time.Millisecond {
		t.Fatalf("in %s: %+v", el, id)
	}
	if r.Acked != 0 || r.Status["503"] != id.Retries+3 {
		t.Fatalf("%+v", r)
	}
}

// 422 (and any 4xx but 408 and 409) is final: no retry; 422 is reported.
func TestLoadIdempotent422(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if n.Add(1) <= 2 {
			w.WriteHeader(422)
			return
		}
		w.WriteHeader(413)
	}))
	defer srv.Close()
	r, err := Load(LoadConfig{URL: srv.URL + "/upload/t", Conns: 2, Count: 32, BodySize: 64, Idempotency: true})
	if err != nil {
		t.Fatal(err)
	}
	id := r.Idempotency
	if id.Uploads != 32 || id.Refused != 32 || id.Retries != 0 || id.Status422 != 2 || r.Status["422"] != 2 || r.Status["413"] != 30 {
		t.Fatalf("%+v %v", id, r.Status)
	}
	var sb strings.Builder
	FormatLoad(&sb, r)
	if !strings.Contains(sb.String(), "2 answered 422") {
		t.Fatal(sb.String())
	}
}

// Without --idempotency: 202 counts as acknowledged beside 201, no key is
// sent, and an answer later than --request-timeout is unanswered (not
// retried), without holding the run.
func TestLoad202AndRequestTimeout(t *testing.T) {
	var (
		mu   sync.Mutex
		n    int
		keys int
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		n++
		i := n
		keys += len(r.Header.Values("Idempotency-Key"))
		mu.Unlock()
		switch {
		case i%10 == 0:
			time.Sleep(400 * time.Millisecond)
			w.WriteHeader(201)
			fmt.Fprintf(w, `{"id":%d}`, i)
		case i%2 == 0:
			w.WriteHeader(202)
			fmt.Fprintf(w, `{"stream":"t","bytes":64,"durable":"spool","spool_seq":%d}`, i)
		case i%7 == 0:
			w.WriteHeader(202)
			io.WriteString(w, `{"stream":"t","bytes":64,"durable":"mysql"}`) // a bad answer
		default:
			w.WriteHeader(201)
			fmt.Fprintf(w, `{"id":%d,"stream":"t","bytes":64,"durable":"mysql"}`, i)
		}
	}))
	defer srv.Close()
	r, err := Load(LoadConfig{URL: srv.URL + "/upload/t", Conns: 1, Count: 40, BodySize: 64, RequestTimeout: 150 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	sentKeys := keys
	mu.Unlock()
	if sentKeys != 0 || r.Idempotency != nil {
		t.Fatalf("%d keys sent", sentKeys)
	}
	// 1..40: every 10th late; other even ones 202 (16), and 7, 21, 35 a 202
	// that says mysql (counted, and a bad answer); the rest 201 (17).
	if r.Unanswered != 4 || r.Acked != 36 || r.Created != 17 || r.Accepted != 19 || r.BadAnswers != 3 ||
		!strings.Contains(strings.Join(r.ErrorSamples, " "), `202 not "durable":"spool"`) {
		t.Fatalf("%+v", r)
	}
	if r.UploadsPerSec != float64(r.Acked)/r.Elapsed {
		t.Fatalf("uploads/s %v", r.UploadsPerSec)
	}
}

func TestJudgeSpoolAndGivenUp(t *testing.T) {
	k := func(seq uint64) uint64 { return markKey(1, seq) }
	row := func(seq, hash, id uint64) storedRow { return storedRow{key: k(seq), hash: hash, id: id} }
	tests := []struct {
		name   string
		stored []storedRow
		sent   Sent
		check  func(v *VerifyResult) bool
	}{
		{"202 without id found", []storedRow{row(1, 11, 500)}, Sent{Acks: []ack{{key: k(1), hash: 11, spool: true}}},
			func(v *VerifyResult) bool {
				return v.OK && v.Found == 1 && v.AckedSpool == 1 && v.AckedMySQL == 0 && v.IDMismatch == 0
			}},
		{"202 not replayed is lost", nil, Sent{Acks: []ack{{key: k(1), hash: 11, spool: true}}},
			func(v *VerifyResult) bool { return !v.OK && v.Lost == 1 }},
		{"202 replayed twice", []storedRow{row(1, 11, 5), row(1, 11, 6)}, Sent{Acks: []ack{{key: k(1), hash: 11, spool: true}}},
			func(v *VerifyResult) bool { return !v.OK && v.Duplicated == 1 && v.DuplicateRows == 1 && v.Found == 0 }},
		{"202 changed", []storedRow{row(1, 12, 5)}, Sent{Acks: []ack{{key: k(1), hash: 11, spool: true}}},
			func(v *VerifyResult) bool { return !v.OK && v.Mismatched == 1 }},
		{"201 and 202", []storedRow{row(1, 11, 7), row(2, 22, 9)},
			Sent{Acks: []ack{{id: 7, key: k(1), hash: 11}, {key: k(2), hash: 22, spool: true}}},
			func(v *VerifyResult) bool { return v.OK && v.Found == 2 && v.AckedMySQL == 1 && v.AckedSpool == 1 }},
		{"given up, absent", nil, Sent{GivenUp: []uint64{k(3)}},
			func(v *VerifyResult) bool { return v.OK && v.GivenUp == 1 && v.NotAcked == 1 && v.UnackedPresent == 0 }},
		{"given up, present once", []storedRow{row(3, 33, 1)}, Sent{GivenUp: []uint64{k(3)}},
			func(v *VerifyResult) bool { return v.OK && v.UnackedPresent == 1 && v.PresentAfter["given up"] == 1 }},
		{"given up, present twice", []storedRow{row(3, 33, 1), row(3, 33, 2)}, Sent{GivenUp: []uint64{k(3)}},
			func(v *VerifyResult) bool { return !v.OK && v.Duplicated == 1 }},
		{"422 fails the verdict", []storedRow{row(1, 11, 7)},
			Sent{Acks: []ack{{id: 7, key: k(1), hash: 11}}, Nacks: []nack{{key: k(2), status: 422}}},
			func(v *VerifyResult) bool { return !v.OK && v.Status422 == 1 && v.Found == 1 && v.NotAcked == 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := judge(append([]storedRow(nil), tt.stored...), &tt.sent)
			if !tt.check(v) {
				t.Fatalf("%+v", *v)
			}
		})
	}
	var sb strings.Builder
	FormatVerify(&sb, judge([]storedRow{row(1, 11, 7)}, &Sent{Acks: []ack{{key: k(1), hash: 11, spool: true}}, GivenUp: []uint64{k(2)}}))
	if !strings.Contains(sb.String(), "(0 x 201, 1 x 202)") || !strings.Contains(sb.String(), "given up 1") {
		t.Fatal(sb.String())
	}
}

// End to end on MariaDB: idempotent retrying clients through every fault of
// idemServer, spooled uploads replayed while --verify-drain polls, then
// --verify: all found exactly once. The same run against a server that
// ignores the key stores the retried uploads twice, and --verify says so.
func TestLoadIdempotentVerify(t *testing.T) {
	dsn := testdb.New(t)
	db := testdb.Open(t, dsn)
	if _, err := db.Exec("CREATE TABLE uploads (id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, body LONGBLOB NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	const reqTO = 300 * time.Millisecond
	s := newIdemServer(t, reqTO)
	s.db = db
	srv := httptest.NewServer(s)
	defer srv.Close()
	var out, errb bytes.Buffer
	args := []string{"load", "--url", srv.URL + "/upload/t", "-c", "3", "-n", "48", "--body", "100-300", "--idempotency",
		"--retry-wait", "10ms", "--request-timeout", reqTO.String(), "--verify", dsn, "--verify-drain", srv.URL + "/readyz"}
	if rc := Main(args, &out, &errb); rc != 0 {
		t.Fatalf("exit %d:\n%s%s", rc, out.String(), errb.String())
	}
	for _, want := range []string{"verify      OK: 48 acknowledged (", " x 202), 48 found once", "lost 0, duplicated 0", "spool empty after", "idempotent  48 uploads"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
	}

	// --json carries the same.
	s2 := newIdemServer(t, reqTO)
	s2.db = db
	srv2 := httptest.NewServer(s2)
	defer srv2.Close()
	r, err := Load(LoadConfig{URL: srv2.URL + "/upload/t", Conns: 2, Count: 16, BodySize: 64, Idempotency: true, RetryWait: 10 * time.Millisecond,
		RequestTimeout: reqTO, VerifyDSN: dsn, DrainURL: srv2.URL + "/readyz"})
	if err != nil || r.Verify == nil || !r.Verify.OK || r.Verify.Found != 16 || r.Verify.AckedSpool < 1 || r.Verify.AckedMySQL+r.Verify.AckedSpool != 16 ||
		r.Verify.Lost != 0 || r.Verify.Duplicated != 0 || r.Idempotency.Retries == 0 {
		t.Fatalf("%v %+v %+v", err, r.Verify, r.Idempotency)
	}

	// No deduplication: the first attempts that were stored but not
	// answered are stored again by their retry.
	s3 := newIdemServer(t, reqTO)
	s3.db, s3.noDedup = db, true
	srv3 := httptest.NewServer(s3)
	defer srv3.Close()
	r, err = Load(LoadConfig{URL: srv3.URL + "/upload/t", Conns: 2, Count: 16, BodySize: 64, Idempotency: true, RetryWait: 10 * time.Millisecond,
		RequestTimeout: reqTO, VerifyDSN: dsn, DrainURL: srv3.URL + "/readyz"})
	var twice int64 // "store-drop" and "slow"
	for key := range s3.attempts {
		if seq, _ := strconv.ParseUint(key[len(key)-16:], 16, 64); seq%8 == 2 || seq%8 == 3 {
			twice++
		}
	}
	if err != nil || r.Verify == nil || r.Verify.OK || twice < 2 || r.Verify.Duplicated != twice || r.Verify.Lost != 0 {
		t.Fatalf("no dedup: %v %d %+v", err, twice, r.Verify)
	}

	// A spool that never drains: exit 1, and the spooled uploads are lost.
	s4 := newIdemServer(t, reqTO)
	s4.db = db
	srv4 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			io.WriteString(w, `{"ready":true,"database":"down","spool":{"records":9,"bytes":1,"oldest_age_seconds":1}}`)
			return
		}
		s4.ServeHTTP(w, r)
	}))
	defer srv4.Close()
	out.Reset()
	errb.Reset()
	args = []string{"load", "--url", srv4.URL + "/upload/t", "-c", "1", "-n", "8", "--body", "64", "--idempotency",
		"--retry-wait", "10ms", "--request-timeout", reqTO.String(), "--verify", dsn, "--verify-drain", srv4.URL + "/readyz",
		"--verify-drain-timeout", "500ms", "--json"}
	if rc := Main(args, &out, &errb); rc != 1 {
		t.Fatalf("exit %d, want 1:\n%s%s", rc, out.String(), errb.String())
	}
	for _, want := range []string{`"drain": {`, `"ok": false`, `"records": 9`, `"acked_spool": 1`, `"lost": 1`, `"retries": `} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("json lacks %q:\n%s", want, out.String())
		}
	}
}
