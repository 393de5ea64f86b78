package conn

import "time"

// QueueID names one of a loop's timeout queues.
type QueueID uint8

// Timeout queues. A slot is on at most one.
const (
	QueueNone  QueueID = iota
	QueueHead          // a request head must be complete by the deadline (slowloris); armed once per request
	QueueIdle          // idle keep-alive between requests; its head is the longest-idle connection
	QueueBody          // a body being read: checked every period for its minimum rate and for stalls
	QueueDrain         // lingering close after an error response
	numQueues
)

type queue struct {
	head, tail int32
	timeout    Clock
}

// Timeouts are one event loop's timeout queues. Each queue is a doubly linked
// list threaded through the slab by fd, in deadline order: every slot on a
// queue got the same timeout, so appending at the tail keeps it sorted and
// expiring is popping from the head. There are no per-connection timers.
//
// A Timeouts belongs to one event loop and is not safe for concurrent use.
type Timeouts struct {
	slab *Slab
	q    [numQueues]queue
}

// NewTimeouts returns queues over slab with the given timeouts; body is the
// period at which a body being read is checked.
func NewTimeouts(slab *Slab, head, idle, body, drain time.Duration) *Timeouts {
	t := &Timeouts{slab: slab}
	for i := range t.q {
		t.q[i] = queue{head: -1, tail: -1}
	}
	t.q[QueueHead].timeout = Clock(head / time.Millisecond)
	t.q[QueueIdle].timeout = Clock(idle / time.Millisecond)
	t.q[QueueBody].timeout = Clock(body / time.Millisecond)
	t.q[QueueDrain].timeout = Clock(drain / time.Millisecond)
	return t
}

// Arm moves fd's slot to the tail of queue q with a deadline of now plus q's
// timeout. Arming QueueNone is Disarm.
func (t *Timeouts) Arm(fd int, q QueueID, now Clock) {
	t.Disarm(fd)
	if q == QueueNone {
		return
	}
	s := t.slab.At(fd)
	qq := &t.q[q]
	s.deadline = now + qq.timeout
	s.prev, s.next = qq.tail, -1
	if qq.tail >= 0 {
		t.slab.At(int(qq.tail)).next = int32(fd)
	} else {
		qq.head = int32(fd)
	}
	qq.tail = int32(fd)
	s.Flags = s.Flags.withQueue(q)
}

// Disarm takes fd's slot off whatever queue it is on.
func (t *Timeouts) Disarm(fd int) {
	s := t.slab.At(fd)
	q := s.Flags.Queue()
	if q == QueueNone {
		return
	}
	qq := &t.q[q]
	if s.prev >= 0 {
		t.slab.At(int(s.prev)).next = s.next
	} else {
		qq.head = s.next
	}
	if s.next >= 0 {
		t.slab.At(int(s.next)).prev = s.prev
	} else {
		qq.tail = s.prev
	}
	s.prev, s.next = -1, -1
	s.Flags = s.Flags.withQueue(QueueNone)
}

// Expire takes every slot whose deadline is not after now off its queue and
// calls fn with its fd and the queue it expired on. fn may re-arm the fd.
func (t *Timeouts) Expire(now Clock, fn func(fd int, q QueueID)) int {
	n := 0
	for q := QueueHead; q < numQueues; q++ {
		qq := &t.q[q]
		for qq.head >= 0 {
			fd := int(qq.head)
			if now.Before(t.slab.At(fd).deadline) {
				break
			}
			t.Disarm(fd)
			n++
			fn(fd, q)
		}
	}
	return n
}

// Oldest returns the fd at the head of queue q (the one armed longest ago),
// or -1 when the queue is empty.
func (t *Timeouts) Oldest(q QueueID) int { return int(t.q[q].head) }

// Len counts the slots on queue q (for tests and stats; O(n)).
func (t *Timeouts) Len(q QueueID) int {
	n := 0
	for fd := t.q[q].head; fd >= 0; fd = t.slab.At(int(fd)).next {
		n++
	}
	return n
}

// Next returns the fd after fd on its queue, or -1 at the tail.
func (t *Timeouts) Next(fd int) int { return int(t.slab.At(fd).next) }
