package main

import (
	"os"
	"runtime/metrics"
	"time"

	"upsink/admin"
	"upsink/server"
)

// newSampler feeds the admin listener's status page: one sample a second
// from the server's counters, this process's RSS and Go heap, mariadbd's
// RSS when it runs on this host (looked up by name at most once a minute),
// and the kernel's TCP memory.
func newSampler(srv *server.Server, budgetMax int64) *admin.Sampler {
	heap := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var mdb int
	var lookedUp time.Time
	return admin.NewSampler(func(x *admin.Sample) {
		st := srv.Stats()
		ss := srv.Store().Stats()
		ks := srv.Sink().Status()
		x.Requests, x.Rows = uint64(st.Requests), ss.Rows
		x.Queue, x.Budget, x.BudgetMax, x.Conns = int64(ss.QueueLen), st.InflightBytes, budgetMax, st.Conns
		if ks.Spool {
			x.SpoolRecords = int64(ks.Backlog.Records)
		}
		x.RSS = admin.ProcRSS(os.Getpid())
		metrics.Read(heap)
		if heap[0].Value.Kind() == metrics.KindUint64 {
			x.Heap = int64(heap[0].Value.Uint64())
		}
		if mdb != 0 {
			x.MariaDBRSS = admin.ProcRSS(mdb)
		}
		if x.MariaDBRSS == 0 && time.Since(lookedUp) > time.Minute {
			lookedUp = time.Now()
			if mdb = admin.FindProcess("mariadbd"); mdb != 0 {
				x.MariaDBRSS = admin.ProcRSS(mdb)
			}
		}
		x.TCPMem = admin.TCPMem()
	})
}
