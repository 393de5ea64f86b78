package h2

// The stream table and the frames that open, feed and end streams:
// HEADERS and CONTINUATION (header blocks), DATA (request bodies and the
// receive windows) and the handler's side (Release; Respond is in
// respond.go).

// stream is a slot of the stream table. Touched only by the connection's
// loop.
type stream struct {
	id      uint32 // 0: a free slot
	flags   uint8  // sOwned etc.
	recvWin int32  // body bytes the peer may still send on it
	unack   uint32 // body bytes delivered, not yet returned by WINDOW_UPDATE
	sendWin int64  // answer bytes we may still send on it (negative after a SETTINGS decrease)
	want    int64  // the request's content-length, -1 if none
	got     int64  // body bytes received
	pend    []byte // the answer's body not yet sent (sAnswer)
}

// Stream flags.
const (
	sOwned    = 1 << iota // the handler holds it: Request delivered, neither Respond nor Reset since
	sReset                // h.Reset delivered: the slot waits for Release
	sAnswer               // Respond done: pend waits for the peer's windows
	sRemote               // the peer's END_STREAM arrived (half-closed (remote))
	sRefuse               // DATA is no longer delivered (the handler refused it or answered)
	sRstAfter             // the request's body was unfinished at Respond: RST_STREAM NO_ERROR after the answer
)

// stream is id's slot, nil if it holds none.
func (c *Conn) stream(id uint32) *stream {
	for i := range c.streams {
		if c.streams[i].id == id {
			return &c.streams[i]
		}
	}
	return nil
}

// alloc takes a free slot for id (the caller checked c.used < MaxStreams).
func (c *Conn) alloc(id uint32) *stream {
	c.used++
	for i := range c.streams {
		if c.streams[i].id == 0 {
			c.streams[i].id = id
			return &c.streams[i]
		}
	}
	if len(c.streams) == cap(c.streams) { // grow by doubling, never past MaxStreams
		t := make([]stream, len(c.streams), min(max(2*cap(c.streams), 4), int(c.lim.MaxStreams)))
		copy(t, c.streams)
		c.streams = t
	}
	c.streams = append(c.streams, stream{id: id})
	return &c.streams[len(c.streams)-1]
}

func (c *Conn) free(s *stream) {
	*s = stream{}
	if c.used--; c.used == 0 && cap(c.streams) > 8 {
		c.streams = nil // a burst is over: an idle connection holds no table
	}
}

// Release frees the slot of stream id after Handler.Reset.
func (c *Conn) Release(id uint32) {
	if s := c.stream(id); s != nil && s.flags&sReset != 0 {
		c.free(s)
	}
}

// drop ends stream s early: the handler is told (h.Reset) if it held it,
// a pending answer is discarded.
func (c *Conn) drop(s *stream, h Handler) {
	switch {
	case s.flags&sOwned != 0:
		s.flags = s.flags&^sOwned | sReset | sRefuse
		h.Reset(s.id)
	case s.flags&sReset != 0:
	default:
		c.free(s)
	}
}

// bit is stream id's bit in c.opened and c.quiet (ok false if the 64
// streams those remember do not include it).
func (c *Conn) bit(id uint32) (mask uint64, ok bool) {
	if id > c.lastID || id&1 == 0 || (c.lastID-id)/2 >= 64 {
		return 0, false
	}
	return 1 << ((c.lastID - id) / 2), true
}

// open makes id (> lastID) the last stream opened.
func (c *Conn) open(id uint32) {
	if shift := (id - c.lastID) / 2; shift >= 64 {
		c.opened, c.quiet = 0, 0
	} else {
		c.opened <<= shift
		c.quiet <<= shift
	}
	c.lastID = id
	c.opened |= 1
}

// markQuiet records that we reset stream id: frames the peer sent before
// it learnt are dropped without an answer.
func (c *Conn) markQuiet(id uint32) {
	if m, ok := c.bit(id); ok {
		c.quiet |= m
	}
}

func (c *Conn) isQuiet(id uint32) bool {
	m, ok := c.bit(id)
	return ok && c.quiet&m != 0
}

// streamError resets stream id with code (RST_STREAM) and tells the
// handler if it held the stream. Each one counts as flood (MadeYouReset).
func (c *Conn) streamError(dst []byte, id uint32, code ErrCode, h Handler) ([]byte, *Error) {
	dst = appendRST(dst, id, code)
	c.markQuiet(id)
	if s := c.stream(id); s != nil {
		c.drop(s, h)
	}
	return c.cheap(dst, 1)
}

// unpad strips a DATA or HEADERS payload's padding.
func unpad(flags uint8, p []byte) ([]byte, bool) {
	if flags&flagPadded == 0 {
		return p, true
	}
	if len(p) == 0 || int(p[0]) >= len(p) {
		return p, false
	}
	return p[1 : len(p)-int(p[0])], true
}

// consumed returns n bytes to the connection's receive window, with a
// WINDOW_UPDATE once half the window is used.
func (c *Conn) consumed(dst []byte, n int) []byte {
	c.recvUnack += uint32(n)
	if c.recvUnack >= c.lim.ConnWindow/2 {
		dst = appendWindowUpdate(dst, 0, c.recvUnack)
		c.recvWin += int64(c.recvUnack)
		c.recvUnack = 0
	}
	return dst
}

// data handles a DATA frame.
func (c *Conn) data(dst []byte, f frameHeader, p []byte, h Handler) ([]byte, *Error) {
	if f.id == 0 || f.id > c.lastID || f.id&1 == 0 {
		return dst, connErr(ErrProtocol, "DATA on stream 0 or an idle stream")
	}
	n := len(p)
	if int64(n) > c.recvWin {
		return dst, connErr(ErrFlowControl, "DATA beyond the connection window")
	}
	c.recvWin -= int64(n)
	body, ok := unpad(f.flags, p)
	if !ok {
		return dst, connErr(ErrProtocol, "DATA padding longer than the frame")
	}
	end := f.flags&flagEndStream != 0
	var err *Error
	if len(body) == 0 && !end { // carries nothing, whatever the stream
		if dst, err = c.cheap(dst, 1); err != nil {
			return dst, err
		}
	}
	s := c.stream(f.id)
	quiet := c.isQuiet(f.id)
	switch {
	case s == nil && quiet, s != nil && s.flags&sReset != 0 && quiet:
		return c.consumed(dst, n), nil // in flight when we reset it
	case s == nil:
		return dst, connErr(ErrStreamClosed, "DATA on a closed stream")
	case s.flags&(sRemote|sReset) != 0:
		return c.streamError(c.consumed(dst, n), f.id, ErrStreamClosed, h)
	case int64(n) > int64(s.recvWin):
		return c.streamError(c.consumed(dst, n), f.id, ErrFlowControl, h)
	case s.want >= 0 && (s.got+int64(len(body)) > s.want || end && s.got+int64(len(body)) != s.want):
		return c.streamError(c.consumed(dst, n), f.id, ErrProtocol, h)
	}
	s.recvWin -= int32(n)
	s.got += int64(len(body))
	if end {
		s.flags = s.flags&^sRstAfter | sRemote
	}
	if s.flags&(sOwned|sRefuse) == sOwned {
		if !h.Data(f.id, body, end) && s.id == f.id {
			s.flags |= sRefuse
		}
	}
	dst = c.consumed(dst, n)
	if s.id == f.id && s.flags&(sRemote|sRefuse) == 0 {
		s.unack += uint32(n)
		if s.unack >= c.lim.StreamWindow/2 {
			dst = appendWindowUpdate(dst, f.id, s.unack)
			s.recvWin += int32(s.unack)
			s.unack = 0
		}
	}
	return dst, nil
}

// headers handles a HEADERS frame.
func (c *Conn) headers(dst []byte, f frameHeader, p []byte, h Handler) ([]byte, *Error) {
	if f.id == 0 || f.id&1 == 0 {
		return dst, connErr(ErrProtocol, "HEADERS on stream 0 or an even stream")
	}
	frag, ok := unpad(f.flags, p)
	if !ok {
		return dst, connErr(ErrProtocol, "HEADERS padding longer than the frame")
	}
	flags := f.flags & flagEndStream
	if f.flags&flagPriority != 0 {
		if len(frag) < 5 {
			return dst, connErr(ErrFrameSize, "HEADERS too short for its priority")
		}
		if be32(frag)&0x7fffffff == f.id {
			flags |= hdrBadPri
		}
		frag = frag[5:]
	}
	if len(frag) > int(c.lim.MaxHeaderList) {
		return dst, errHeaderList
	}
	if f.flags&flagEndHeaders != 0 {
		return c.block(dst, f.id, flags, frag, h)
	}
	c.hdrID, c.hdrFlag, c.hdrN = f.id, flags, 0
	c.blk = blockPool.Get().(*[]byte)
	*c.blk = append((*c.blk)[:0], frag...)
	return dst, nil
}

// continuation handles a CONTINUATION frame.
func (c *Conn) continuation(dst []byte, f frameHeader, p []byte, h Handler) ([]byte, *Error) {
	if c.hdrID == 0 {
		return dst, connErr(ErrProtocol, "CONTINUATION without HEADERS")
	}
	if len(*c.blk)+len(p) > int(c.lim.MaxHeaderList) {
		return dst, errHeaderList
	}
	*c.blk = append(*c.blk, p...)
	var err *Error
	if c.hdrN++; c.hdrN > 4 || len(p) == 0 {
		if dst, err = c.cheap(dst, 1); err != nil {
			return dst, err
		}
	}
	if f.flags&flagEndHeaders == 0 {
		return dst, nil
	}
	blk := c.blk
	c.blk, c.hdrID = nil, 0
	dst, err = c.block(dst, f.id, c.hdrFlag, *blk, h)
	blockPool.Put(blk)
	return dst, err
}

// endBlock forgets a header block in progress.
func (c *Conn) endBlock() {
	if c.blk != nil {
		blockPool.Put(c.blk)
		c.blk = nil
	}
	c.hdrID = 0
}

// block handles stream id's complete header block: a new request, or
// trailers.
func (c *Conn) block(dst []byte, id uint32, flags uint8, frag []byte, h Handler) ([]byte, *Error) {
	s := c.stream(id)
	isNew := id > c.lastID
	if !isNew && s == nil && !c.isQuiet(id) {
		if m, ok := c.bit(id); ok && c.opened&m == 0 {
			return dst, connErr(ErrProtocol, "HEADERS opening a stream below the last one")
		}
		return dst, connErr(ErrStreamClosed, "HEADERS on a closed stream")
	}
	sc := scratchPool.Get().(*scratch)
	malformed, err := c.decodeBlock(sc, frag, !isNew)
	end := flags&flagEndStream != 0
	switch {
	case err != nil:
	case !isNew && (s == nil || s.flags&sReset != 0 && c.isQuiet(id)):
		// In flight when we reset the stream: ignored, but counted (the
		// block was decoded for nothing).
		dst, err = c.cheap(dst, 1)
	case !isNew && s.flags&(sRemote|sReset) != 0:
		dst, err = c.streamError(dst, id, ErrStreamClosed, h)
	case !isNew: // trailers
		if malformed || !end || flags&hdrBadPri != 0 || s.want >= 0 && s.got != s.want {
			dst, err = c.streamError(dst, id, ErrProtocol, h)
			break
		}
		s.flags = s.flags&^sRstAfter | sRemote
		if s.flags&(sOwned|sRefuse) == sOwned {
			h.Data(id, nil, true)
		}
	default:
		c.open(id)
		switch {
		case malformed || flags&hdrBadPri != 0 || end && sc.req.ContentLength > 0:
			dst, err = c.streamError(dst, id, ErrProtocol, h)
		case c.shut || c.used >= int(c.lim.MaxStreams):
			dst, err = c.streamError(dst, id, ErrRefusedStream, h)
		default:
			s = c.alloc(id)
			s.flags = sOwned
			if end {
				s.flags |= sRemote
			}
			s.recvWin = int32(c.lim.StreamWindow)
			if !c.acked { // the peer may still count on the initial window
				s.recvWin = max(s.recvWin, defaultWindow)
			}
			s.sendWin = c.peerWindow
			s.want = sc.req.ContentLength
			h.Request(id, &sc.req, end)
		}
	}
	scratchPool.Put(sc)
	return dst, err
}
