package bench

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestSpoolEmpty(t *testing.T) {
	tests := []struct {
		body    string
		empty   bool
		records int64
		err     bool
	}{
		{`{"ready":true,"database":"up","spool":{"records":0,"bytes":0,"oldest_age_seconds":0}}`, true, 0, false},
		{`{"ready":true,"database":"down","spool":{"records":12,"bytes":12288,"oldest_age_seconds":3}}` + "\n", false, 12, false},
		{`{"ready":false,"database":"down","spool":{"records":0,"bytes":0,"oldest_age_seconds":0}}`, true, 0, false},
		{`{"ready":true,"database":"up"}`, true, 0, false}, // spool disabled
		{`{"ready":true,"spool":{}}`, false, -1, true},
		{"ready\n", false, -1, true},
		{"", false, -1, true},
	}
	for _, tt := range tests {
		empty, n, err := spoolEmpty([]byte(tt.body))
		if empty != tt.empty || n != tt.records || (err != nil) != tt.err {
			t.Errorf("%q: %v %d %v; want %v %d err=%v", tt.body, empty, n, err, tt.empty, tt.records, tt.err)
		}
	}
}

// A spool that drains: three polls with records, then empty. And one that
// never does: the timeout bounds the wait.
func TestDrainSpool(t *testing.T) {
	var polls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		left := max(0, 3-polls.Add(1))
		w.WriteHeader(200)
		fmt.Fprintf(w, `{"ready":true,"database":"up","spool":{"records":%d,"bytes":%d,"oldest_age_seconds":1}}`, left, left*100)
	}))
	defer srv.Close()
	d := DrainSpool(srv.URL+"/readyz", 10*time.Second, false, "")
	if !d.OK || d.Polls != 3 || d.Records != 0 || d.Seconds < 0.3 || d.Seconds > 5 {
		t.Fatalf("%+v", d)
	}
	var sb strings.Builder
	FormatDrain(&sb, &d)
	if !strings.Contains(sb.String(), "spool empty after") {
		t.Fatal(sb.String())
	}

	stuck := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(503)
		fmt.Fprint(w, `{"ready":false,"database":"down","spool":{"records":7,"bytes":700,"oldest_age_seconds":9}}`)
	}))
	defer stuck.Close()
	t0 := time.Now()
	d = DrainSpool(stuck.URL+"/readyz", 700*time.Millisecond, false, "")
	if d.OK || d.Records != 7 || time.Since(t0) > 3*time.Second || !strings.Contains(d.Last, "503") {
		t.Fatalf("stuck: %+v", d)
	}
	sb.Reset()
	FormatDrain(&sb, &d)
	if !strings.Contains(sb.String(), "FAILED") {
		t.Fatal(sb.String())
	}

	// Nothing listening: not OK, with the error.
	stuck.Close()
	d = DrainSpool(stuck.URL+"/readyz", 300*time.Millisecond, false, "")
	if d.OK || d.Last == "" {
		t.Fatalf("closed: %+v", d)
	}
}
