package tlsbridge

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// BenchmarkHandshake: TLS handshakes per second against the bridge on gnet
// and against a minimal net/http + crypto/tls server, full and resumed, with
// Go's default client (TLS 1.3, X25519MLKEM768). Clients run in this process
// too (b.RunParallel), so both servers share the CPU with the same clients.
func BenchmarkHandshake(b *testing.B) {
	s := startServer(b, Config{}, nil)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	hs := &http.Server{
		Handler:   http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{*mustCert(b)}, NextProtos: []string{"http/1.1"}},
	}
	go func() { _ = hs.ServeTLS(ln, "", "") }()
	b.Cleanup(func() { _ = hs.Close() })

	for _, srv := range []struct{ name, addr string }{{"bridge", s.addr}, {"nethttp", ln.Addr().String()}} {
		for _, resumed := range []bool{false, true} {
			name := srv.name + "/full"
			if resumed {
				name = srv.name + "/resumed"
			}
			b.Run(name, func(b *testing.B) {
				cfg := clientConfig(0)
				if resumed {
					cfg.ClientSessionCache = tls.NewLRUClientSessionCache(64)
					// Get a ticket: TLS 1.3 tickets arrive after the handshake.
					c, err := dialTLS(srv.addr, cfg)
					if err != nil {
						b.Fatal(err)
					}
					_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
					_, _ = c.Read(make([]byte, 1))
					c.Close()
				}
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						c, err := dialTLS(srv.addr, cfg)
						if err != nil {
							b.Error(err)
							return
						}
						if resumed && !c.ConnectionState().DidResume {
							b.Error("not resumed")
						}
						c.Close()
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
			})
		}
	}
}
