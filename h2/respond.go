package h2

import "strconv"

// Answers: the response HEADERS (HPACK without the dynamic table) and the
// DATA the peer's windows let out, the rest kept until they allow it.

// maxPending bounds the part of an answer's body a stream may keep
// waiting for the peer's windows. Answers are small; a larger remainder
// ends the stream with RST_STREAM INTERNAL_ERROR.
const maxPending = 16 << 10

// Respond appends stream id's answer: HEADERS, then DATA with END_STREAM
// as far as the peer's windows allow (the rest is copied, at most
// maxPending bytes, and sent by later Feeds). If the peer has not finished
// its body, RST_STREAM NO_ERROR follows the answer (RFC 9113 §8.1). The
// slot is freed once all of it is out. A stream the handler does not hold
// (unknown, reset, answered) gets nothing.
func (c *Conn) Respond(dst []byte, id uint32, r *Response, body []byte) []byte {
	s := c.stream(id)
	if c.err != nil || s == nil || s.flags&sOwned == 0 {
		return dst
	}
	end := len(body) == 0
	n := len(body)
	if end && r.HeadLength > 0 {
		n = r.HeadLength
	}
	dst = c.appendHead(dst, id, r, n, end)
	s.flags = s.flags&^sOwned | sAnswer | sRefuse
	if s.flags&sRemote == 0 {
		s.flags |= sRstAfter
	} else {
		c.useful()
	}
	if end {
		return c.finish(dst, s)
	}
	s.pend = body
	dst = c.flush(dst, s)
	if s.id != id || len(s.pend) == 0 {
		return dst
	}
	if len(s.pend) > maxPending {
		dst = appendRST(dst, id, ErrInternal)
		c.markQuiet(id)
		c.free(s)
		return dst
	}
	s.pend = append([]byte(nil), s.pend...)
	return dst
}

// flush sends what the windows allow of s's pending answer.
func (c *Conn) flush(dst []byte, s *stream) []byte {
	for len(s.pend) > 0 {
		n := int64(min(len(s.pend), int(c.peerFrame)))
		n = min(n, s.sendWin, c.sendWin)
		if n <= 0 {
			return dst
		}
		var fl uint8
		last := int(n) == len(s.pend)
		if last {
			fl = flagEndStream
		}
		dst = append(appendFrameHeader(dst, int(n), frameData, fl, s.id), s.pend[:n]...)
		s.pend = s.pend[n:]
		s.sendWin -= n
		c.sendWin -= n
		if last {
			return c.finish(dst, s)
		}
	}
	return dst
}

// flushAll sends what the windows allow of every pending answer.
func (c *Conn) flushAll(dst []byte) []byte {
	streams := c.streams // free may drop c.streams
	for i := range streams {
		if s := &streams[i]; s.flags&sAnswer != 0 && len(s.pend) > 0 {
			dst = c.flush(dst, s)
		}
	}
	return dst
}

// finish frees s, whose answer is all out, resetting it first if the
// peer's body was unfinished.
func (c *Conn) finish(dst []byte, s *stream) []byte {
	if s.flags&sRstAfter != 0 {
		dst = appendRST(dst, s.id, ErrNo)
		c.markQuiet(s.id)
	}
	c.free(s)
	return dst
}

// appendHead appends the answer's HEADERS (split into CONTINUATION if
// larger than the peer's frame size).
func (c *Conn) appendHead(dst []byte, id uint32, r *Response, length int, end bool) []byte {
	at := len(dst)
	fl := uint8(flagEndHeaders)
	if end {
		fl |= flagEndStream
	}
	dst = appendFrameHeader(dst, 0, frameHeaders, fl, id)
	dst = appendStatus(dst, r.Status)
	if r.ContentType != "" {
		dst = appendField(dst, 31, "", r.ContentType)
	}
	if r.Status != 204 && r.Status != 304 && r.Status >= 200 {
		dst = append(dst, 0x0f, 28-15, 0) // literal without indexing, content-length, value length patched
		n := len(dst)
		dst = strconv.AppendInt(dst, int64(length), 10)
		dst[n-1] = byte(len(dst) - n)
	}
	for i := range r.Extra {
		dst = appendField(dst, 0, r.Extra[i].Name, r.Extra[i].Value)
	}
	n := len(dst) - at - headerLen
	max := int(c.peerFrame)
	if n <= max {
		putFrameLength(dst, at, n)
		return dst
	}
	// Rare: a head larger than a frame.
	rest := append([]byte(nil), dst[at+headerLen+max:]...)
	dst = dst[:at+headerLen+max]
	putFrameLength(dst, at, max)
	dst[at+4] &^= flagEndHeaders
	for len(rest) > 0 {
		k := min(len(rest), max)
		var f uint8
		if k == len(rest) {
			f = flagEndHeaders
		}
		dst = append(appendFrameHeader(dst, k, frameContinuation, f, id), rest[:k]...)
		rest = rest[k:]
	}
	return dst
}

// appendStatus encodes :status, from the static table when it is there.
func appendStatus(dst []byte, status int) []byte {
	switch status {
	case 200:
		return append(dst, 0x80|8)
	case 204:
		return append(dst, 0x80|9)
	case 206:
		return append(dst, 0x80|10)
	case 304:
		return append(dst, 0x80|11)
	case 400:
		return append(dst, 0x80|12)
	case 404:
		return append(dst, 0x80|13)
	case 500:
		return append(dst, 0x80|14)
	}
	if status < 100 || status > 999 {
		status = 500
	}
	return append(dst, 0x08, 3, byte('0'+status/100), byte('0'+status/10%10), byte('0'+status%10))
}

// appendInt encodes v with an n-bit prefix, the first byte's other bits
// being first (RFC 7541 §5.1).
func appendInt(dst []byte, n uint, first byte, v uint64) []byte {
	max := uint64(1)<<n - 1
	if v < max {
		return append(dst, first|byte(v))
	}
	dst = append(dst, first|byte(max))
	for v -= max; v >= 0x80; v >>= 7 {
		dst = append(dst, byte(v)|0x80)
	}
	return append(dst, byte(v))
}

// appendField encodes a literal field without indexing: the static
// table's name idx, or (idx 0) name in lower case.
func appendField(dst []byte, idx uint64, name, value string) []byte {
	dst = appendInt(dst, 4, 0, idx)
	if idx == 0 {
		dst = appendInt(dst, 7, 0, uint64(len(name)))
		for i := 0; i < len(name); i++ {
			b := name[i]
			if 'A' <= b && b <= 'Z' {
				b += 'a' - 'A'
			}
			dst = append(dst, b)
		}
	}
	dst = appendInt(dst, 7, 0, uint64(len(value)))
	return append(dst, value...)
}
