package h2

// The flood budget (Limits.Flood): no clock, only a count of the cheap
// work the peer made us do (frames answered or changing nothing, resets,
// refused streams, tiny CONTINUATIONs), less one for each request
// answered whole. Past the budget the connection ends with GOAWAY
// ENHANCE_YOUR_CALM. Touched only by the connection's loop.

var errFlood = &Error{ErrEnhanceYourCalm, "flood of frames that cost more than they bring"}

// cheap counts n units of cheap work.
func (c *Conn) cheap(dst []byte, n uint32) ([]byte, *Error) {
	if c.flood += n; c.flood > c.lim.Flood {
		return dst, errFlood
	}
	return dst, nil
}

// useful credits a request answered whole.
func (c *Conn) useful() {
	if c.flood > 0 {
		c.flood--
	}
}
