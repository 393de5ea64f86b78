// Package testnet holds the tests' loopback helpers.
package testnet

import (
	"net"
	"testing"
)

// FreeAddr returns a 127.0.0.1 address whose port was free a moment ago. The
// caller binds it later, so another process may take it first: callers retry
// on "address already in use".
func FreeAddr(t testing.TB) string {
	t.Helper()
	return FreeAddrs(t, 1)[0]
}

// FreeAddrs returns n distinct 127.0.0.1 addresses whose ports were free a
// moment ago: all n are held open until the last is chosen, so the kernel
// cannot hand the same port out twice (FreeAddr twice can). As with
// FreeAddr, another process may take one before the caller binds it.
func FreeAddrs(t testing.TB, n int) []string {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		addrs[i] = ln.Addr().String()
	}
	return addrs
}
