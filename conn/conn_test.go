package conn

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"
	"unsafe"
)

func TestSlotSize(t *testing.T) {
	if got := unsafe.Sizeof(Slot{}); got != 32 {
		t.Fatalf("Slot is %d bytes; the memory budget in ARCHITECTURE.md assumes 32", got)
	}
	if got := unsafe.Sizeof([PageSlots]Slot{}); got != 32<<10 {
		t.Fatalf("slab page is %d bytes, want 32 KiB", got)
	}
}

func TestFlagsPacking(t *testing.T) {
	tests := []struct {
		state State
		queue QueueID
		loop  int
		bits  Flags
	}{
		{StateHead, QueueNone, 0, 0},
		{StateBody, QueueIdle, 1, FlagOpen | FlagChunked},
		{StateCommit, QueueHead, 255, FlagOpen | FlagKeepAlive | FlagSubmitted},
		{StateDrain, QueueDrain, 7, FlagCloseAfter | FlagHTTP10},
		{StateBody, QueueBody, 3, FlagOpen | FlagTLS | FlagChunked},
	}
	for _, tt := range tests {
		f := tt.bits.WithState(tt.state).withQueue(tt.queue).WithLoop(tt.loop)
		if f.State() != tt.state || f.Queue() != tt.queue || f.Loop() != tt.loop {
			t.Errorf("%+v: got state %d queue %d loop %d", tt, f.State(), f.Queue(), f.Loop())
		}
		if f&(FlagOpen|FlagKeepAlive|FlagChunked|FlagCloseAfter|FlagHTTP10|FlagSubmitted|FlagTLS) != tt.bits {
			t.Errorf("%+v: behaviour bits clobbered: %b", tt, f)
		}
	}
}

func TestPagesGrowLazily(t *testing.T) {
	s := NewSlab(20000)
	if s.Allocated() != 0 {
		t.Fatalf("fresh slab allocated %d pages", s.Allocated())
	}
	s.At(5).Gen = 7
	s.At(PageSlots*3 + 1).Gen = 9
	if s.Allocated() != 2 {
		t.Fatalf("allocated %d pages, want 2", s.Allocated())
	}
	if s.At(5).Gen != 7 || s.At(PageSlots*3+1).Gen != 9 {
		t.Fatal("slots lost their values")
	}
	if s.At(PageSlots*3+2).prev != -1 || s.At(PageSlots*3+2).next != -1 {
		t.Fatal("new page slots must start unlinked")
	}
	if s.Len() < 20000 {
		t.Fatalf("Len %d < 20000", s.Len())
	}
}

func TestPagesConcurrentGrowth(t *testing.T) {
	s := NewSlab(64 * PageSlots)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := g; i < s.Len(); i += 8 {
				s.At(i).Scan = uint32(i)
			}
		}(g)
	}
	wg.Wait()
	for i := 0; i < s.Len(); i++ {
		if s.At(i).Scan != uint32(i) {
			t.Fatalf("slot %d = %d", i, s.At(i).Scan)
		}
	}
}

func TestResetBumpsGen(t *testing.T) {
	s := NewSlab(10)
	sl := s.At(3)
	sl.Req, sl.Scan, sl.Gen = 4, 100, 41
	sl.Reset(FlagOpen.WithLoop(1))
	if sl.Gen != 42 || sl.Req != 0 || sl.Scan != 0 || sl.Flags != FlagOpen.WithLoop(1) || sl.prev != -1 {
		t.Fatalf("after Reset: %+v", *sl)
	}
}

func TestTimeoutsOrderAndExpiry(t *testing.T) {
	s := NewSlab(100)
	tq := NewTimeouts(s, 10*time.Second, 30*time.Second, 5*time.Second, 2*time.Second)
	tq.Arm(5, QueueHead, 0)
	tq.Arm(6, QueueIdle, 0)
	tq.Arm(7, QueueHead, 1000)
	tq.Arm(8, QueueDrain, 500)
	tq.Arm(9, QueueHead, 2000)
	tq.Arm(6, QueueIdle, 5000) // re-arm moves to tail with a new deadline
	if tq.Len(QueueHead) != 3 || tq.Len(QueueIdle) != 1 || tq.Len(QueueDrain) != 1 {
		t.Fatalf("lens %d %d %d", tq.Len(QueueHead), tq.Len(QueueIdle), tq.Len(QueueDrain))
	}
	tq.Disarm(7)
	if s.At(7).Flags.Queue() != QueueNone || tq.Len(QueueHead) != 2 {
		t.Fatal("disarm failed")
	}
	type exp struct {
		fd int
		q  QueueID
	}
	steps := []struct {
		now  Clock
		want []exp
	}{
		{2499, nil},
		{2500, []exp{{8, QueueDrain}}},
		{10000, []exp{{5, QueueHead}}},
		{12000, []exp{{9, QueueHead}}},
		{34999, nil},
		{35000, []exp{{6, QueueIdle}}},
	}
	for _, st := range steps {
		var got []exp
		tq.Expire(st.now, func(fd int, q QueueID) { got = append(got, exp{fd, q}) })
		if len(got) != len(st.want) {
			t.Fatalf("now=%d: expired %v, want %v", st.now, got, st.want)
		}
		for i := range got {
			if got[i] != st.want[i] {
				t.Fatalf("now=%d: expired %v, want %v", st.now, got, st.want)
			}
		}
	}
	for q := QueueHead; q < numQueues; q++ {
		if tq.Len(q) != 0 {
			t.Fatalf("queue %d not empty", q)
		}
	}
}

// TestTimeoutsRandom checks the threaded lists against a simple model under
// random arm/disarm/expire operations.
func TestTimeoutsRandom(t *testing.T) {
	const fds = 200
	s := NewSlab(fds)
	tq := NewTimeouts(s, 100*time.Millisecond, 300*time.Millisecond, 200*time.Millisecond, 50*time.Millisecond)
	model := map[int]struct {
		q  QueueID
		dl Clock
	}{}
	r := rand.New(rand.NewPCG(1, 2))
	var now Clock
	for i := 0; i < 20000; i++ {
		fd := r.IntN(fds)
		switch r.IntN(4) {
		case 0, 1:
			q := QueueID(1 + r.IntN(int(numQueues)-1))
			tq.Arm(fd, q, now)
			model[fd] = struct {
				q  QueueID
				dl Clock
			}{q, now + tq.q[q].timeout}
		case 2:
			tq.Disarm(fd)
			delete(model, fd)
		case 3:
			now += Clock(r.IntN(40))
			tq.Expire(now, func(fd int, q QueueID) {
				m, ok := model[fd]
				if !ok || m.q != q || now.Before(m.dl) {
					t.Fatalf("expired fd %d on %d at %d, model %+v %v", fd, q, now, m, ok)
				}
				delete(model, fd)
			})
			for fd, m := range model {
				if !now.Before(m.dl) {
					t.Fatalf("fd %d due at %d still armed at %d", fd, m.dl, now)
				}
			}
		}
		total := 0
		for q := QueueHead; q < numQueues; q++ {
			total += tq.Len(q)
		}
		if total != len(model) {
			t.Fatalf("step %d: %d queued, model %d", i, total, len(model))
		}
	}
}

func TestClockWrap(t *testing.T) {
	var c Clock = 0xFFFFFFF0
	if !c.Before(c+0x20) || (c + 0x20).Before(c) {
		t.Fatal("wrap-safe comparison broken")
	}
}

func TestArmDoesNotAllocate(t *testing.T) {
	s := NewSlab(PageSlots)
	tq := NewTimeouts(s, time.Second, time.Second, time.Second, time.Second)
	s.At(0)
	allocs := testing.AllocsPerRun(1000, func() {
		tq.Arm(1, QueueIdle, 1)
		tq.Arm(2, QueueHead, 1)
		tq.Expire(5000, func(int, QueueID) {})
	})
	if allocs != 0 {
		t.Fatalf("timeouts allocate %.1f per run", allocs)
	}
}
