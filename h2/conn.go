package h2

// Conn: one HTTP/2 connection's state and the frame loop (Feed). The
// stream table, answers and flow control are in stream.go; the flood
// budget in flood.go.

import "unsafe"

// Conn is one HTTP/2 connection. It is touched only by the loop that owns
// the connection (Init, Feed, Respond, Release, Shutdown and the getters
// included); its Handler's methods run inside Feed on that loop.
type Conn struct {
	lim Limits // with defaults applied

	err      *Error // the connection error, once there is one: Feed does nothing more
	preface  bool   // the client preface has been read
	settings bool   // the peer's first SETTINGS has been read
	acked    bool   // the peer acknowledged our SETTINGS: it applies our values
	shut     bool   // we sent GOAWAY: no new streams
	peerGone bool   // the peer sent GOAWAY

	lastID  uint32 // the highest stream id the peer has opened (or tried to)
	opened  uint64 // bit i: stream lastID-2i was opened by HEADERS (not skipped)
	quiet   uint64 // bit i: stream lastID-2i was reset by us: its late frames are dropped
	flood   uint32 // cheap work the peer caused, less its useful requests (flood.go)
	hdrID   uint32 // the stream whose header block awaits CONTINUATION, 0 if none
	hdrFlag uint8  // that block's HEADERS flags (END_STREAM) and hdrBadPri
	hdrN    uint16 // CONTINUATION frames in that block so far
	blk     *[]byte

	peerWindow int64  // the peer's SETTINGS_INITIAL_WINDOW_SIZE: each new stream's send window
	peerFrame  uint32 // the peer's SETTINGS_MAX_FRAME_SIZE
	sendWin    int64  // connection send window
	recvWin    int64  // connection receive window: what the peer may still send
	recvUnack  uint32 // received and delivered, not yet returned by WINDOW_UPDATE

	dec     decoder
	streams []stream // the stream table; grows up to lim.MaxStreams
	used    int      // slots in use
}

// hdrBadPri marks a header block whose HEADERS made the stream depend on
// itself (a stream error reported once the block is decoded).
const hdrBadPri = 0x80

// Init makes c a fresh connection with limits l (zero fields take the
// defaults); the server's SETTINGS are the first output of Feed. The
// stream table and the HPACK table keep their memory for reuse.
func (c *Conn) Init(l Limits) {
	if l.MaxStreams == 0 {
		l.MaxStreams = 100
	}
	if l.MaxFrame < minFrameSize || l.MaxFrame > maxFrameSize {
		l.MaxFrame = minFrameSize
	}
	if l.HeaderTable == 0 {
		l.HeaderTable = defaultTable
	}
	if l.MaxHeaderList == 0 {
		l.MaxHeaderList = 16 << 10
	}
	if l.StreamWindow == 0 || l.StreamWindow > maxWindow {
		l.StreamWindow = defaultWindow
	}
	if l.ConnWindow < defaultWindow || l.ConnWindow > maxWindow {
		l.ConnWindow = defaultWindow
	}
	if l.Flood == 0 {
		l.Flood = 1000
	}
	streams := c.streams[:0]
	dec := c.dec
	*c = Conn{
		lim:        l,
		peerWindow: defaultWindow,
		peerFrame:  minFrameSize,
		sendWin:    defaultWindow,
		recvWin:    int64(l.ConnWindow),
		streams:    streams,
		dec:        dec,
	}
	// Until the peer acknowledges our SETTINGS it may use the protocol's
	// initial table size.
	c.dec.init(max(l.HeaderTable, defaultTable))
}

// connErr is a connection error the peer caused.
func connErr(code ErrCode, reason string) *Error { return &Error{code, reason} }

// Feed consumes the preface (first) and every complete frame at the start
// of in, calling h, and returns dst with the frames to write appended and
// the number of bytes consumed. A non-nil error is a connection error:
// GOAWAY is in the output, every stream the handler held has had h.Reset,
// and nothing more is consumed.
func (c *Conn) Feed(dst, in []byte, h Handler) ([]byte, int, error) {
	if c.err != nil {
		return dst, 0, c.err
	}
	n := 0
	if !c.preface {
		k := min(len(in), len(Preface))
		if string(in[:k]) != Preface[:k] {
			dst = c.fail(dst, connErr(ErrProtocol, "not an HTTP/2 client preface"), h)
			return dst, 0, c.err
		}
		if k < len(Preface) {
			return dst, 0, nil
		}
		dst = appendSettings(dst, &c.lim)
		c.preface = true
		n = len(Preface)
	}
	for {
		if len(in)-n < headerLen {
			break
		}
		f := parseHeader(in[n:])
		if f.length > c.lim.MaxFrame {
			dst = c.fail(dst, connErr(ErrFrameSize, "frame larger than SETTINGS_MAX_FRAME_SIZE"), h)
			return dst, n, c.err
		}
		end := n + headerLen + int(f.length)
		if len(in) < end {
			break
		}
		p := in[n+headerLen : end]
		n = end
		var err *Error
		if dst, err = c.frame(dst, f, p, h); err != nil {
			dst = c.fail(dst, err, h)
			return dst, n, c.err
		}
	}
	return dst, n, nil
}

// frame handles one frame; a non-nil error is a connection error.
func (c *Conn) frame(dst []byte, f frameHeader, p []byte, h Handler) ([]byte, *Error) {
	if !c.settings {
		if f.typ != frameSettings || f.flags&flagAck != 0 {
			return dst, connErr(ErrProtocol, "preface not followed by SETTINGS")
		}
		c.settings = true
	}
	if c.hdrID != 0 && (f.typ != frameContinuation || f.id != c.hdrID) {
		return dst, connErr(ErrProtocol, "header block interrupted by another frame")
	}
	switch f.typ {
	case frameData:
		return c.data(dst, f, p, h)
	case frameHeaders:
		return c.headers(dst, f, p, h)
	case frameContinuation:
		return c.continuation(dst, f, p, h)
	case framePriority:
		if f.id == 0 {
			return dst, connErr(ErrProtocol, "PRIORITY on stream 0")
		}
		if len(p) != 5 {
			return c.streamError(dst, f.id, ErrFrameSize, h)
		}
		if be32(p)&0x7fffffff == f.id {
			return c.streamError(dst, f.id, ErrProtocol, h)
		}
		return c.cheap(dst, 1)
	case frameRSTStream:
		return c.rstStream(dst, f, p, h)
	case frameSettings:
		return c.settingsFrame(dst, f, p)
	case framePing:
		if f.id != 0 {
			return dst, connErr(ErrProtocol, "PING on a stream")
		}
		if len(p) != 8 {
			return dst, connErr(ErrFrameSize, "PING not 8 bytes long")
		}
		if f.flags&flagAck == 0 {
			dst = append(appendFrameHeader(dst, 8, framePing, flagAck, 0), p...)
		}
		return c.cheap(dst, 1)
	case frameGoAway:
		if f.id != 0 {
			return dst, connErr(ErrProtocol, "GOAWAY on a stream")
		}
		if len(p) < 8 {
			return dst, connErr(ErrFrameSize, "GOAWAY shorter than 8 bytes")
		}
		c.peerGone = true
		return c.cheap(dst, 1)
	case frameWindowUpdate:
		return c.windowUpdate(dst, f, p, h)
	case framePushPromise:
		return dst, connErr(ErrProtocol, "PUSH_PROMISE from a client")
	}
	return dst, nil // unknown types are ignored (RFC 9113 §4.1)
}

// settingsFrame applies the peer's SETTINGS and acknowledges them.
func (c *Conn) settingsFrame(dst []byte, f frameHeader, p []byte) ([]byte, *Error) {
	if f.id != 0 {
		return dst, connErr(ErrProtocol, "SETTINGS on a stream")
	}
	if f.flags&flagAck != 0 {
		if len(p) != 0 {
			return dst, connErr(ErrFrameSize, "SETTINGS ACK with a payload")
		}
		if !c.acked { // our values hold from now on
			c.acked = true
			c.dec.limit = c.lim.HeaderTable
		}
		return dst, nil
	}
	if len(p)%6 != 0 {
		return dst, connErr(ErrFrameSize, "SETTINGS length not a multiple of 6")
	}
	for ; len(p) > 0; p = p[6:] {
		v := be32(p[2:])
		switch uint16(p[0])<<8 | uint16(p[1]) {
		case setEnablePush:
			if v > 1 {
				return dst, connErr(ErrProtocol, "SETTINGS_ENABLE_PUSH not 0 or 1")
			}
		case setInitialWindowSize:
			if v > maxWindow {
				return dst, connErr(ErrFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1")
			}
			delta := int64(v) - c.peerWindow
			c.peerWindow = int64(v)
			for i := range c.streams {
				s := &c.streams[i]
				if s.id == 0 {
					continue
				}
				if s.sendWin += delta; s.sendWin > maxWindow {
					return dst, connErr(ErrFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream window")
				}
			}
		case setMaxFrameSize:
			if v < minFrameSize || v > maxFrameSize {
				return dst, connErr(ErrProtocol, "SETTINGS_MAX_FRAME_SIZE out of range")
			}
			c.peerFrame = v
		}
		// SETTINGS_HEADER_TABLE_SIZE: our encoder never indexes, so any
		// size suits it. The others do not concern a server.
	}
	dst = appendFrameHeader(dst, 0, frameSettings, flagAck, 0)
	dst = c.flushAll(dst)
	return c.cheap(dst, 1)
}

// windowUpdate applies the peer's WINDOW_UPDATE and sends what it allows.
func (c *Conn) windowUpdate(dst []byte, f frameHeader, p []byte, h Handler) ([]byte, *Error) {
	if len(p) != 4 {
		return dst, connErr(ErrFrameSize, "WINDOW_UPDATE not 4 bytes long")
	}
	inc := int64(be32(p) & 0x7fffffff)
	if f.id == 0 {
		if inc == 0 {
			return dst, connErr(ErrProtocol, "WINDOW_UPDATE of 0 on the connection")
		}
		if c.sendWin += inc; c.sendWin > maxWindow {
			return dst, connErr(ErrFlowControl, "connection window above 2^31-1")
		}
		dst = c.flushAll(dst)
		return c.cheap(dst, 1)
	}
	if f.id > c.lastID || f.id&1 == 0 {
		return dst, connErr(ErrProtocol, "WINDOW_UPDATE on an idle stream")
	}
	if inc == 0 {
		return c.streamError(dst, f.id, ErrProtocol, h)
	}
	s := c.stream(f.id)
	if s == nil { // closed: ignored
		return c.cheap(dst, 1)
	}
	if s.sendWin += inc; s.sendWin > maxWindow {
		return c.streamError(dst, f.id, ErrFlowControl, h)
	}
	dst = c.flush(dst, s)
	return c.cheap(dst, 1)
}

// rstStream: the peer resets a stream.
func (c *Conn) rstStream(dst []byte, f frameHeader, p []byte, h Handler) ([]byte, *Error) {
	if len(p) != 4 {
		return dst, connErr(ErrFrameSize, "RST_STREAM not 4 bytes long")
	}
	if f.id == 0 || f.id > c.lastID || f.id&1 == 0 {
		return dst, connErr(ErrProtocol, "RST_STREAM on stream 0 or an idle stream")
	}
	if s := c.stream(f.id); s != nil {
		c.drop(s, h)
	}
	return c.cheap(dst, 1)
}

// fail makes err the connection's error: GOAWAY, h.Reset for every stream
// the handler holds, pending answers dropped.
func (c *Conn) fail(dst []byte, err *Error, h Handler) []byte {
	c.err = err
	dst = appendGoAway(dst, c.lastID, err.Code)
	streams := c.streams // free may drop c.streams
	for i := range streams {
		if s := &streams[i]; s.id != 0 {
			c.drop(s, h)
		}
	}
	c.endBlock()
	return dst
}

// Shutdown appends a graceful GOAWAY: streams the peer opens afterwards
// are refused; the open ones finish.
func (c *Conn) Shutdown(dst []byte) []byte {
	if c.shut || c.err != nil {
		return dst
	}
	c.shut = true
	if !c.preface { // not HTTP/2 yet: nothing to tell
		return dst
	}
	return appendGoAway(dst, c.lastID, ErrNo)
}

// Streams is the number of slots in use: streams the handler holds, reset
// streams not yet released, and answers not yet fully written.
func (c *Conn) Streams() int { return c.used }

// Held is the heap memory the Conn holds between events besides its own
// struct: the HPACK table, the stream table with the answers the peer's
// windows hold back, and a header block awaiting CONTINUATION. The server
// charges it to its budget.
func (c *Conn) Held() int {
	n := cap(c.dec.buf) + cap(c.dec.ents)*int(unsafe.Sizeof(c.dec.ents[0])) + cap(c.streams)*int(unsafe.Sizeof(stream{}))
	for i := range c.streams {
		n += cap(c.streams[i].pend)
	}
	if c.blk != nil {
		n += cap(*c.blk)
	}
	return n
}

// Done reports that the connection has nothing left to do: it failed, or
// after Shutdown (ours or the peer's GOAWAY) no stream is left.
func (c *Conn) Done() bool {
	return c.err != nil || (c.shut || c.peerGone) && c.used == 0 && c.hdrID == 0
}

// Err is the connection error, nil if none.
func (c *Conn) Err() error {
	if c.err == nil {
		return nil
	}
	return c.err
}
