package server

import (
	"bytes"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"upsink/metrics"
)

// What the server counts for /metrics, and how it is written. On the
// request path only atomics are bumped (TestRequestPathAllocs covers it);
// everything else is read at scrape time from the counters the packages
// keep anyway.

// Routes of upsink_requests_total.
const (
	routeOther uint8 = iota
	routeUpload
	routeIngest
	routeHealthz
	routeReadyz
	numRoutes
)

var routeNames = [numRoutes]string{"other", "upload", "ingest", "healthz", "readyz"}

// The statuses upsink answers with; any other is counted as "other".
var statusCodes = [...]int{200, 201, 202, 400, 401, 404, 405, 408, 409, 413, 414, 415, 417, 422, 431, 500, 501, 503, 505}

const numStatuses = len(statusCodes) + 1 // + other

var statusIndex = func() (t [600]uint8) {
	for i, c := range statusCodes {
		t[c] = uint8(i + 1)
	}
	return t
}()

// reqCounts counts answers by route and status.
type reqCounts [numRoutes][numStatuses]atomic.Uint64

func (c *reqCounts) add(route uint8, status int) {
	i := uint8(0)
	if status >= 0 && status < len(statusIndex) {
		i = statusIndex[status]
	}
	c[route][i].Add(1)
}

// routeOf is a request path's route.
func routeOf(path []byte) uint8 {
	switch {
	case bytes.HasPrefix(path, prefixUpload):
		return routeUpload
	case bytes.HasPrefix(path, prefixIngest):
		return routeIngest
	case bytes.Equal(path, pathHealthz):
		return routeHealthz
	case bytes.Equal(path, pathReadyz):
		return routeReadyz
	}
	return routeOther
}

// refuseBudget answers 503 for a body the in-flight budget cannot take.
func (h *handler) refuseBudget(e *ev) gnet.Action {
	h.budgetRefused.Add(1)
	return h.failWith(e, 503, "server busy: in-flight body budget exhausted", hdrRetry)
}

// Bounds of the batch histograms.
var (
	batchRowsBounds  = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000}
	batchBytesBounds = []float64{1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 8 << 20, 16 << 20}
	commitBounds     = []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5, 10}
)

// observeBatches returns the store's per-batch callback feeding m's batch
// histograms (created here), or nil without m.
func observeBatches(m *metrics.Set) func(rows, bytes int, d time.Duration) {
	if m == nil {
		return nil
	}
	rows := m.Histogram("upsink_batch_rows", "Rows per committed batch.", batchRowsBounds)
	size := m.Histogram("upsink_batch_bytes", "Body and row bytes per committed batch.", batchBytesBounds)
	lat := m.Histogram("upsink_commit_duration_seconds", "Time to write and commit one batch, retries and unknown-outcome resolution included.", commitBounds)
	return func(r, b int, d time.Duration) {
		rows.Update(float64(r))
		size.Update(float64(b))
		lat.Update(d.Seconds())
	}
}

// registerMetrics adds the server's scrape-time metrics to m.
func (s *Server) registerMetrics(m *metrics.Set) {
	for _, h := range [][2]string{
		{"upsink_requests_total", "Requests answered, by route and status."},
		{"upsink_body_bytes_received_total", "Request body bytes received (decoded from chunked)."},
		{"upsink_rows_committed_total", "Rows committed in MariaDB: one per upload, one per ingested row."},
		{"upsink_batches_committed_total", "Batches committed."},
		{"upsink_batches_recovered_total", "Batches whose outcome was unknown and was resolved through the ledger."},
		{"upsink_batches_split_total", "Batches split because the database refused one of their rows."},
		{"upsink_jobs_failed_total", "Jobs the store handed back not committed (then spooled, or answered 503 or 422)."},
		{"upsink_commit_queue_length", "Jobs waiting for the writer."},
		{"upsink_inflight_bytes", "Bytes held for clients, charged to the in-flight budget."},
		{"upsink_inflight_limit_bytes", "The in-flight budget (--max-inflight)."},
		{"upsink_connections", "Open connections, by kind."},
		{"upsink_connections_limit", "The connection cap (--max-conns)."},
		{"upsink_http2_connections", "Of the open connections, those speaking HTTP/2."},
		{"upsink_tls_handshakes_total", "TLS handshakes by result."},
		{"upsink_tls_handshakes_in_flight", "TLS handshakes waiting for or on a worker."},
		{"upsink_tls_handshakes_newest_first_total", "TLS handshakes taken from the wait list newest first, its oldest having waited past a tenth of --tls-handshake-timeout (a backlog)."},
		{"upsink_timeouts_total", "Connections timed out, by kind: head (--header-timeout), idle (--idle-timeout), body_rate (--min-body-rate or a stalled body)."},
		{"upsink_refused_total", "Requests and connections refused to bound memory, by reason."},
		{"upsink_database_up", "1 while the store's connection to MariaDB is ready."},
		{"upsink_spool_backlog_records", "Spooled uploads not yet replayed into MariaDB."},
		{"upsink_spool_backlog_bytes", "Bytes of the spool's backlog."},
		{"upsink_spool_oldest_age_seconds", "Age of the oldest spooled upload not yet replayed (0 when none)."},
		{"upsink_spool_appended_total", "Uploads appended to the spool (answered 202)."},
		{"upsink_spool_fsyncs_total", "fsyncs of the spool's data (group fsync: many records each)."},
	} {
		m.Help(h[0], h[1])
	}
	h := s.h
	m.Func(func(w io.Writer) {
		for r := range numRoutes {
			for i := range numStatuses {
				st := "other"
				if i > 0 {
					st = strconv.Itoa(statusCodes[i-1])
				}
				metrics.Counter(w, `upsink_requests_total{route="`+routeNames[r]+`",status="`+st+`"}`, h.counts[r][i].Load())
			}
		}
		metrics.Counter(w, "upsink_body_bytes_received_total", h.bodyBytes.Load())
		st := s.st.Store().Stats()
		metrics.Counter(w, "upsink_rows_committed_total", st.Rows)
		metrics.Counter(w, "upsink_batches_committed_total", st.Batches)
		metrics.Counter(w, "upsink_batches_recovered_total", st.Recovered)
		metrics.Counter(w, "upsink_batches_split_total", st.Split)
		metrics.Counter(w, "upsink_jobs_failed_total", st.Failed)
		metrics.Gauge(w, "upsink_commit_queue_length", float64(st.QueueLen))
		metrics.Gauge(w, "upsink_inflight_bytes", float64(h.budget.Used()))
		metrics.Gauge(w, "upsink_inflight_limit_bytes", float64(h.budget.Max()))
		n, tls := h.nconns.Load(), h.ntls.Load()
		metrics.Gauge(w, `upsink_connections{kind="plain"}`, float64(n-tls))
		metrics.Gauge(w, `upsink_connections{kind="tls"}`, float64(tls))
		metrics.Gauge(w, "upsink_connections_limit", float64(h.cfg.MaxConns))
		metrics.Gauge(w, "upsink_http2_connections", float64(h.nh2.Load()))
		ts := s.TLSStats()
		metrics.Counter(w, `upsink_tls_handshakes_total{result="full"}`, uint64(ts.Handshakes-ts.Resumed))
		metrics.Counter(w, `upsink_tls_handshakes_total{result="resumed"}`, uint64(ts.Resumed))
		metrics.Counter(w, `upsink_tls_handshakes_total{result="failed"}`, uint64(ts.Failed))
		metrics.Counter(w, `upsink_tls_handshakes_total{result="timeout"}`, uint64(ts.TimedOut))
		metrics.Counter(w, `upsink_tls_handshakes_total{result="plain_http"}`, uint64(ts.PlainHTTP))
		metrics.Gauge(w, "upsink_tls_handshakes_in_flight", float64(ts.InFlight))
		metrics.Counter(w, "upsink_tls_handshakes_newest_first_total", uint64(ts.NewestFirst))
		metrics.Counter(w, `upsink_timeouts_total{kind="head"}`, h.headTimeouts.Load())
		metrics.Counter(w, `upsink_timeouts_total{kind="idle"}`, h.idleTimeouts.Load())
		metrics.Counter(w, `upsink_timeouts_total{kind="body_rate"}`, uint64(h.slowBodies.Load()))
		metrics.Counter(w, `upsink_refused_total{reason="budget"}`, h.budgetRefused.Load())
		metrics.Counter(w, `upsink_refused_total{reason="connection_cap"}`, uint64(h.refused.Load()))
		metrics.Counter(w, `upsink_refused_total{reason="idle_evicted"}`, uint64(h.evicted.Load()))
		metrics.Counter(w, `upsink_refused_total{reason="tls_over_cap"}`, uint64(ts.OverCap))
		metrics.Counter(w, `upsink_refused_total{reason="tls_over_budget"}`, uint64(ts.OverBudget))
		ks := s.st.Status()
		up := 0.0
		if ks.Database {
			up = 1
		}
		metrics.Gauge(w, "upsink_database_up", up)
		if ks.Spool {
			b := ks.Backlog
			metrics.Gauge(w, "upsink_spool_backlog_records", float64(b.Records))
			metrics.Gauge(w, "upsink_spool_backlog_bytes", float64(b.Bytes))
			metrics.Gauge(w, "upsink_spool_oldest_age_seconds", ks.BacklogAge())
			metrics.Counter(w, "upsink_spool_appended_total", b.Appended)
			metrics.Counter(w, "upsink_spool_fsyncs_total", b.Fsyncs)
		}
	})
}
