package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// DrainResult is how long the server's spool took to drain before Verify.
type DrainResult struct {
	URL     string  `json:"url"`
	Seconds float64 `json:"seconds"`
	OK      bool    `json:"ok"`             // the spool was empty (or absent) within the timeout
	Records int64   `json:"records"`        // spool records at the last answer (-1: none read)
	Polls   int     `json:"polls"`          // requests made
	Last    string  `json:"last,omitempty"` // when not OK: the last answer or error
}

// readyzSpool is the part of /readyz a drain waits on:
// {"ready":true,"database":"up","spool":{"records":0,"bytes":0,"oldest_age_seconds":0}}.
type readyzSpool struct {
	Spool *struct {
		Records *int64 `json:"records"`
	} `json:"spool"`
}

// spoolEmpty reads a /readyz body: empty is true when it is JSON with no
// spool object (spool disabled) or with "spool":{"records":0,...}; records
// is the count read (-1 if none). A body that is not such JSON is not empty.
func spoolEmpty(body []byte) (empty bool, records int64, err error) {
	var r readyzSpool
	if err := json.Unmarshal(body, &r); err != nil {
		return false, -1, fmt.Errorf("not JSON: %q", trunc(body))
	}
	if r.Spool == nil {
		return true, 0, nil
	}
	if r.Spool.Records == nil {
		return false, -1, fmt.Errorf("spool object without records: %q", trunc(body))
	}
	return *r.Spool.Records == 0, *r.Spool.Records, nil
}

// DrainSpool polls url (a /readyz) every 200 ms until its spool is empty,
// for at most timeout. Any status is read: a 503 while MariaDB is down with
// an empty spool has nothing left to drain.
func DrainSpool(url string, timeout time.Duration, insecure bool, caFile string) DrainResult {
	d := DrainResult{URL: url, Records: -1}
	t0 := time.Now()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	if strings.HasPrefix(url, "https://") {
		tc, err := TLSConfig("", insecure, caFile)
		if err != nil {
			d.Last = err.Error()
			return d
		}
		tr.TLSClientConfig = tc
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cl := &http.Client{Timeout: 2 * time.Second, Transport: tr}
	for {
		d.Polls++
		req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
		if err != nil {
			d.Last = err.Error()
			break
		}
		resp, err := cl.Do(req)
		if err == nil {
			body, rerr := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			err = rerr
			if err == nil {
				var empty bool
				var n int64
				empty, n, err = spoolEmpty(body)
				if n >= 0 {
					d.Records = n
				}
				if empty {
					d.OK, d.Last = true, ""
					break
				}
				if err == nil {
					d.Last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(trunc(body))))
				}
			}
		}
		if err != nil {
			d.Last = err.Error()
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
			continue
		}
		break
	}
	d.Seconds = time.Since(t0).Seconds()
	return d
}

// FormatDrain writes the drain line.
func FormatDrain(w io.Writer, d *DrainResult) {
	if d.OK {
		fmt.Fprintf(w, "  drain       spool empty after %.1f s (%d polls of %s)\n", d.Seconds, d.Polls, d.URL)
		return
	}
	fmt.Fprintf(w, "  drain       FAILED: spool not empty after %.1f s (%d records; %d polls of %s; last: %s)\n",
		d.Seconds, d.Records, d.Polls, d.URL, d.Last)
}
