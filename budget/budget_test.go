package budget

import (
	"sync"
	"testing"
)

func TestTiers(t *testing.T) {
	b := New(1000)
	if !b.Hold(750) {
		t.Fatal("Hold within the held tier refused")
	}
	if b.Hold(1) {
		t.Fatal("Hold beyond three quarters accepted")
	}
	if !b.Reserve(250) {
		t.Fatal("Reserve into the last quarter refused")
	}
	if b.Reserve(1) {
		t.Fatal("Reserve beyond the budget accepted")
	}
	if got := b.Used(); got != 1000 {
		t.Fatalf("used %d, want 1000", got)
	}
	b.Release(1000)
	if got := b.Used(); got != 0 {
		t.Fatalf("used %d after release, want 0", got)
	}
	if !b.Reserve(0) || b.Used() != 0 {
		t.Fatal("zero charge changed the budget")
	}
}

func TestConcurrentReturnsToZero(t *testing.T) {
	b := New(1 << 20)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10000; i++ {
				if b.Hold(100) {
					b.Release(100)
				}
				if b.Reserve(300) {
					b.Release(300)
				}
			}
		}()
	}
	wg.Wait()
	if got := b.Used(); got != 0 {
		t.Fatalf("used %d, want 0", got)
	}
}
