package tlsbridge

// connLink is a Conn's place on one of the bridge's lists.
type connLink struct{ prev, next *Conn }

// connList is a FIFO of Conns threaded through one connLink of each (link
// selects which), with O(1) removal from anywhere. Whether a Conn is on the
// list is kept by the caller; the owner's mutex guards the list and the links.
type connList struct {
	head, tail *Conn
	link       func(*Conn) *connLink
}

// push appends c, which must not be on the list.
func (l *connList) push(c *Conn) {
	k := l.link(c)
	k.prev, k.next = l.tail, nil
	if l.tail != nil {
		l.link(l.tail).next = c
	} else {
		l.head = c
	}
	l.tail = c
}

// remove unlinks c, which must be on the list.
func (l *connList) remove(c *Conn) {
	k := l.link(c)
	if k.prev != nil {
		l.link(k.prev).next = k.next
	} else {
		l.head = k.next
	}
	if k.next != nil {
		l.link(k.next).prev = k.prev
	} else {
		l.tail = k.prev
	}
	*k = connLink{}
}
