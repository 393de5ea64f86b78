package baseline

import (
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"upsink/internal/testdb"
)

func TestUploadRow(t *testing.T) {
	dsn := testdb.New(t)
	s, err := New(Config{DSN: dsn, MaxBody: 64})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.db.Close()
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()

	for _, tt := range []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/healthz", "", 200},
		{"GET", "/readyz", "", 200},
		{"POST", "/upload/bad%20name", "x", 400},
		{"POST", "/upload/s", strings.Repeat("x", 65), 413},
		{"GET", "/upload/s", "", 405},
	} {
		req, _ := http.NewRequest(tt.method, ts.URL+tt.path, strings.NewReader(tt.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s %s: %d, want %d", tt.method, tt.path, resp.StatusCode, tt.want)
		}
	}

	resp, err := http.Post(ts.URL+"/upload/s.1", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		ID     uint64 `json:"id"`
		Stream string `json:"stream"`
		Bytes  int    `json:"bytes"`
	}
	if resp.StatusCode != 201 || json.NewDecoder(resp.Body).Decode(&got) != nil || got.Stream != "s.1" || got.Bytes != 5 || got.ID == 0 {
		t.Fatalf("status %d, %+v", resp.StatusCode, got)
	}
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var stream, ctype, body string
	if err := db.QueryRow("SELECT stream, content_type, body FROM uploads WHERE id = ?", got.ID).Scan(&stream, &ctype, &body); err != nil {
		t.Fatal(err)
	}
	if stream != "s.1" || ctype != "text/plain" || body != "hello" {
		t.Fatalf("row %q %q %q", stream, ctype, body)
	}
}
