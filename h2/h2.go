// Package h2 is HTTP/2 (RFC 9113, HPACK RFC 7541) for a server that runs on
// event loops: the framing and connection state of one connection, fed the
// bytes the loop holds and returning the bytes to write. It owns no
// goroutine, socket, clock or timer, and never blocks; the caller (package
// server) owns the request records, the budget and the answers.
//
// One Conn per connection, touched only by the loop that owns the
// connection. A Conn holds, between events, the HPACK decoder's dynamic
// table (at most Limits.HeaderTable bytes), a bounded stream table and the
// small answers that the peer's flow-control window has not let out yet.
// The table grows as the peer indexes (by doubling, never past
// Limits.HeaderTable); the stream table grows with concurrent streams
// (never past Limits.MaxStreams slots of 64 bytes) and is dropped when a
// burst is over; header blocks are decoded into pooled buffers taken and
// returned within Feed. An idle Conn is about 240 bytes plus its HPACK
// table (TestMemory), and a request with a body and its answer allocate
// nothing (TestNoAllocs).
//
// Streams and the handler: every stream for which Handler.Request was
// called occupies a slot of the stream table until the handler has
// answered it (Respond) or released it (Release, after Handler.Reset). A
// stream the peer resets (or that the server resets because of a stream
// error) stays in the table, counted against Limits.MaxStreams, until the
// handler releases it: the work the handler started for it (an upload
// submitted to the database) still costs, so a peer that opens and resets
// streams (rapid reset, CVE-2023-44487; MadeYouReset, CVE-2025-8671)
// cannot have more than MaxStreams of them in flight. New streams beyond
// that are refused (RST_STREAM REFUSED_STREAM), and a peer that keeps
// causing refusals, resets or other cheap work is told GOAWAY
// ENHANCE_YOUR_CALM (see Limits.Flood).
package h2

import "upsink/parser"

// Preface is the client connection preface (RFC 9113 §3.4). A plain-text
// connection whose first bytes are these speaks HTTP/2 with prior knowledge.
const Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Limits are a connection's settings and bounds. Zero fields take the
// defaults in parentheses.
type Limits struct {
	MaxStreams    uint32 // SETTINGS_MAX_CONCURRENT_STREAMS and the stream table's size (100)
	MaxFrame      uint32 // SETTINGS_MAX_FRAME_SIZE we accept (16384, the minimum)
	HeaderTable   uint32 // SETTINGS_HEADER_TABLE_SIZE: the HPACK decoder's dynamic table (4096)
	MaxHeaderList uint32 // SETTINGS_MAX_HEADER_LIST_SIZE, and the bound on a decoded header block and on its encoded frames together (parser.MaxHeaderBytes, 16 KiB)
	StreamWindow  uint32 // SETTINGS_INITIAL_WINDOW_SIZE: body bytes a stream may send unasked (65535)
	ConnWindow    uint32 // body bytes the whole connection may send unasked (65535, the protocol's initial value; more is granted by WINDOW_UPDATE)
	// Flood is how much cheap work (frames that ask for an answer or change
	// nothing: PING, SETTINGS, empty DATA, PRIORITY, WINDOW_UPDATE, resets
	// and refused streams, header blocks split into tiny CONTINUATIONs) the
	// peer may cause beyond its useful requests before GOAWAY
	// ENHANCE_YOUR_CALM (1000).
	Flood uint32
}

// Handler receives a connection's requests. Its methods run inside Feed (on
// the connection's loop); the slices they get are valid only during the call.
type Handler interface {
	// Request: stream id's header block is complete and valid. req is filled
	// as package parser fills it for HTTP/1.1: Method (:method), Target
	// (:path), Host (:authority, or a host field), Minor 1, KeepAlive true,
	// Chunked false, ContentLength (content-length, -1 when absent),
	// ContentType, IdempotencyKey and Authorization as sent, Fields.
	// endStream: the request has no body.
	Request(id uint32, req *parser.Request, endStream bool)
	// Data: body bytes of stream id, in order; end marks the last. The
	// handler copies what it keeps. It returns false if it refuses the rest
	// (it has answered, or reset the stream, and further DATA is discarded
	// but still counted against the connection's window).
	Data(id uint32, p []byte, end bool) bool
	// Reset: the stream ended before the handler answered it (the peer's
	// RST_STREAM, a stream error, or the connection failing). The handler
	// drops what it holds for the stream and calls Release once its work
	// for it is over; it must not Respond to it.
	Reset(id uint32)
}

// Response is an answer's head. Header fields are sent in lower case.
type Response struct {
	Status      int
	ContentType string
	Extra       []Field // further fields (retry-after, allow, idempotent-replayed, ...)
	// HeadLength is the content-length of an answer sent without its body
	// (to a HEAD: the GET's length); 0: the body's length.
	HeadLength int
}

// Field is one header field.
type Field struct{ Name, Value string }

// ErrCode is an HTTP/2 error code (RFC 9113 §7).
type ErrCode uint32

const (
	ErrNo                 ErrCode = 0x0
	ErrProtocol           ErrCode = 0x1
	ErrInternal           ErrCode = 0x2
	ErrFlowControl        ErrCode = 0x3
	ErrSettingsTimeout    ErrCode = 0x4
	ErrStreamClosed       ErrCode = 0x5
	ErrFrameSize          ErrCode = 0x6
	ErrRefusedStream      ErrCode = 0x7
	ErrCancel             ErrCode = 0x8
	ErrCompression        ErrCode = 0x9
	ErrConnect            ErrCode = 0xa
	ErrEnhanceYourCalm    ErrCode = 0xb
	ErrInadequateSecurity ErrCode = 0xc
	ErrHTTP11Required     ErrCode = 0xd
)

// The Conn's methods (conn.go, stream.go, respond.go):
//
//	func (c *Conn) Init(l Limits)
//	    makes c a fresh connection (the server's SETTINGS are the first
//	    output, once the whole preface is in); a Conn may be reused after
//	    Init.
//	func (c *Conn) Feed(dst, in []byte, h Handler) (out []byte, n int, err error)
//	    consumes the preface (first call; a partial preface is left
//	    unconsumed) and every complete frame at the start of in, calling h;
//	    returns dst with the frames to write appended and the number of
//	    bytes of in consumed (a partial frame is left for the next call, and
//	    is never larger than 9+MaxFrame bytes: a longer frame is a
//	    connection error). A non-nil err (an *Error, with the ErrCode) is a
//	    connection error: GOAWAY is in out, every stream the handler held
//	    has had h.Reset, and the caller writes out and closes.
//	func (c *Conn) Respond(dst []byte, id uint32, r *Response, body []byte) []byte
//	    appends stream id's answer (HEADERS, then DATA with END_STREAM as
//	    the peer's windows allow; what they do not allow yet is copied, at
//	    most 16 KiB, and sent by a later Feed; a larger remainder ends the
//	    stream with RST_STREAM INTERNAL_ERROR). If the peer has not finished
//	    sending its body, RST_STREAM NO_ERROR follows the answer. Frees the
//	    stream's slot once all of it is out. content-length is always sent
//	    (len(body)) except for 1xx, 204 and 304. Respond may be called from
//	    inside a Handler method, but then its output must be written after
//	    that Feed's output (which may hold the first SETTINGS).
//	func (c *Conn) Release(id uint32)
//	    frees the slot of a stream that was Reset (also from inside Reset).
//	func (c *Conn) Shutdown(dst []byte) []byte
//	    graceful GOAWAY: new streams refused; the open ones finish.
//	func (c *Conn) Streams() int  // slots in use (held, reset not released, answers not all out)
//	func (c *Conn) Done() bool    // failed, or after Shutdown or the peer's GOAWAY no slot is in use
//	func (c *Conn) Err() error    // the connection error, nil if none
