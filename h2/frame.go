package h2

// Frame layout (RFC 9113 §4.1) and the frames the server writes. Pure
// functions: they append to dst and touch no state.

// Frame types (RFC 9113 §6).
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	framePriority     = 0x2
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePushPromise  = 0x5
	framePing         = 0x6
	frameGoAway       = 0x7
	frameWindowUpdate = 0x8
	frameContinuation = 0x9
)

// Frame flags.
const (
	flagEndStream  = 0x1 // DATA, HEADERS
	flagAck        = 0x1 // SETTINGS, PING
	flagEndHeaders = 0x4 // HEADERS, CONTINUATION
	flagPadded     = 0x8 // DATA, HEADERS
	flagPriority   = 0x20
)

// Settings identifiers (RFC 9113 §6.5.2).
const (
	setHeaderTableSize      = 0x1
	setEnablePush           = 0x2
	setMaxConcurrentStreams = 0x3
	setInitialWindowSize    = 0x4
	setMaxFrameSize         = 0x5
	setMaxHeaderListSize    = 0x6
)

const (
	headerLen     = 9         // a frame header's size
	minFrameSize  = 1 << 14   // SETTINGS_MAX_FRAME_SIZE's initial and least value
	maxFrameSize  = 1<<24 - 1 // its greatest value
	maxWindow     = 1<<31 - 1 // a flow-control window's greatest value
	defaultWindow = 65535     // a window's initial value
	defaultTable  = 4096      // SETTINGS_HEADER_TABLE_SIZE's initial value
)

// frameHeader is a parsed frame header.
type frameHeader struct {
	length uint32 // payload length
	typ    uint8
	flags  uint8
	id     uint32 // stream identifier, reserved bit cleared
}

// parseHeader reads the 9-byte frame header at the start of p (len(p) >= 9).
func parseHeader(p []byte) frameHeader {
	return frameHeader{
		length: uint32(p[0])<<16 | uint32(p[1])<<8 | uint32(p[2]),
		typ:    p[3],
		flags:  p[4],
		id:     be32(p[5:]) & 0x7fffffff,
	}
}

func be32(p []byte) uint32 {
	return uint32(p[0])<<24 | uint32(p[1])<<16 | uint32(p[2])<<8 | uint32(p[3])
}

func append32(dst []byte, v uint32) []byte {
	return append(dst, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// appendFrameHeader appends a frame header for a payload of n bytes.
func appendFrameHeader(dst []byte, n int, typ, flags uint8, id uint32) []byte {
	return append32(append(dst, byte(n>>16), byte(n>>8), byte(n), typ, flags), id)
}

// putFrameLength rewrites the length of the frame header at dst[at:].
func putFrameLength(dst []byte, at, n int) {
	dst[at], dst[at+1], dst[at+2] = byte(n>>16), byte(n>>8), byte(n)
}

func appendRST(dst []byte, id uint32, code ErrCode) []byte {
	return append32(appendFrameHeader(dst, 4, frameRSTStream, 0, id), uint32(code))
}

func appendGoAway(dst []byte, last uint32, code ErrCode) []byte {
	return append32(append32(appendFrameHeader(dst, 8, frameGoAway, 0, 0), last), uint32(code))
}

func appendWindowUpdate(dst []byte, id, inc uint32) []byte {
	return append32(appendFrameHeader(dst, 4, frameWindowUpdate, 0, id), inc)
}

func appendSetting(dst []byte, id uint16, v uint32) []byte {
	return append32(append(dst, byte(id>>8), byte(id)), v)
}

// appendSettings appends the server's SETTINGS (only the values that
// differ from the protocol's initial ones, and the two that have none)
// and, when the connection window is larger than the initial one, the
// WINDOW_UPDATE that grants the difference.
func appendSettings(dst []byte, l *Limits) []byte {
	at := len(dst)
	dst = appendFrameHeader(dst, 0, frameSettings, 0, 0)
	dst = appendSetting(dst, setMaxConcurrentStreams, l.MaxStreams)
	dst = appendSetting(dst, setMaxHeaderListSize, l.MaxHeaderList)
	if l.MaxFrame != minFrameSize {
		dst = appendSetting(dst, setMaxFrameSize, l.MaxFrame)
	}
	if l.HeaderTable != defaultTable {
		dst = appendSetting(dst, setHeaderTableSize, l.HeaderTable)
	}
	if l.StreamWindow != defaultWindow {
		dst = appendSetting(dst, setInitialWindowSize, l.StreamWindow)
	}
	putFrameLength(dst, at, len(dst)-at-headerLen)
	if l.ConnWindow > defaultWindow {
		dst = appendWindowUpdate(dst, 0, l.ConnWindow-defaultWindow)
	}
	return dst
}

// String names the code as RFC 9113 §7 does.
func (e ErrCode) String() string {
	names := [...]string{"NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
		"SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL",
		"COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY",
		"HTTP_1_1_REQUIRED"}
	if int(e) < len(names) {
		return names[e]
	}
	return "unknown error code"
}

// Error is a connection error: Feed returns it after writing GOAWAY with
// Code.
type Error struct {
	Code   ErrCode
	Reason string // what the peer did
}

func (e *Error) Error() string { return "h2: " + e.Reason + " (" + e.Code.String() + ")" }
