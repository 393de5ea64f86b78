package parser

// Decoder states. They fit in 3 bits.
const (
	stSize    uint8 = iota // at a chunk-size line
	stData                 // inside chunk data; left bytes remain
	stDataEnd              // at the CRLF after chunk data
	stTrailer              // inside the trailer section; left bytes of it consumed
	stDone                 // last-chunk and trailer section consumed
)

// Chunked decodes a chunked request body (RFC 9112 §7.1) incrementally. Its
// zero value is ready at the start of a body. Its whole state is a (uint8,
// uint32) pair, so a connection can keep it between reads in a few bytes
// (Save, RestoreChunked).
//
// Chunk extensions are checked for stray control bytes and otherwise
// ignored; trailer fields are checked for syntax and ignored. Every line of
// the framing must end in CRLF.
type Chunked struct {
	state uint8
	left  uint32
}

// RestoreChunked returns the decoder whose state Save returned.
func RestoreChunked(state uint8, left uint32) Chunked {
	return Chunked{state: state, left: left}
}

// Save returns the decoder's state: state fits in 3 bits (0..7).
func (d Chunked) Save() (state uint8, left uint32) {
	return d.state, d.left
}

// Done reports whether the last chunk and the trailer section, up to its
// final CRLF, were consumed. Bytes after that belong to the next request.
func (d *Chunked) Done() bool { return d.state == stDone }

// Decode consumes framing and data from in. It returns the body data found,
// a slice of in (possibly empty), and how many bytes of in it consumed,
// framing and data. The caller keeps the bytes not consumed, and calls
// Decode on in[consumed:] until consumed is 0 or Done reports true; each
// call returns the data of at most one chunk.
//
// An incomplete chunk-size line or trailer field line is not consumed: the
// call returns consumed == 0 (or the bytes before it) and a nil error, and
// the caller calls again when more bytes arrived. If the incomplete line
// already exceeds its limit (MaxChunkLine, MaxHeaderBytes for the trailer
// section), or any byte proves the framing malformed, Decode returns the
// error (ErrBadChunk, ErrBadHeader, ErrObsFold or ErrTrailerTooLarge); the
// connection must then be closed.
//
// A call that consumed nothing of a non-empty in was waiting for the end of
// a line: the next call can only make progress once a '\n' has arrived or
// the unconsumed bytes have reached MaxHeaderBytes (to detect a line over
// its limit), so a caller may skip calls until then.
func (d *Chunked) Decode(in []byte) (data []byte, consumed int, err error) {
	i := 0
	for {
		rest := in[i:]
		switch d.state {
		case stData:
			if len(rest) == 0 {
				return nil, i, nil
			}
			k := len(rest)
			if uint64(k) >= uint64(d.left) {
				k = int(d.left)
				d.state = stDataEnd
			}
			d.left -= uint32(k)
			return rest[:k], i + k, nil

		case stDataEnd:
			if len(rest) < 2 {
				if len(rest) == 1 && rest[0] != '\r' {
					return nil, i, ErrBadChunk
				}
				return nil, i, nil
			}
			if rest[0] != '\r' || rest[1] != '\n' {
				return nil, i, ErrBadChunk
			}
			i += 2
			d.state = stSize

		case stSize:
			m, size, e := chunkLine(rest)
			if e != nil {
				return nil, i, e
			}
			if m == 0 {
				return nil, i, nil
			}
			i += m
			if size == 0 {
				d.state, d.left = stTrailer, 0
			} else {
				d.state, d.left = stData, size
			}

		case stTrailer:
			m, e := d.trailerLine(rest)
			if e != nil {
				return nil, i, e
			}
			if m == 0 {
				return nil, i, nil
			}
			i += m

		case stDone:
			return nil, i, nil

		default:
			return nil, i, ErrBadChunk
		}
	}
}

// chunkLine parses the chunk-size line at the start of p:
//
//	chunk-size [ chunk-ext ] CRLF
//	chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//
// It returns the line's length with its CRLF and the chunk size; m == 0 if
// the line is incomplete. Extensions are only checked for bytes that may
// not appear in a field value.
func chunkLine(p []byte) (m int, size uint32, err *Error) {
	b := p
	if len(b) > MaxChunkLine {
		b = b[:MaxChunkLine]
	}
	var v uint64
	i := 0
	for ; i < len(b); i++ {
		c := b[i]
		var h byte
		switch {
		case '0' <= c && c <= '9':
			h = c - '0'
		case 'a' <= lower(c) && lower(c) <= 'f':
			h = lower(c) - 'a' + 10
		default:
			goto sizeDone
		}
		v = v<<4 | uint64(h)
		if v > 0xFFFFFFFF {
			return 0, 0, ErrBadChunk
		}
	}
sizeDone:
	if i == 0 && len(b) > 0 {
		return 0, 0, ErrBadChunk
	}
	// BWS is allowed only before ";".
	ws := i
	for i < len(b) && isOWS(b[i]) {
		i++
	}
	if i < len(b) && b[i] == ';' {
		for i < len(b) && class[b[i]]&cValue != 0 {
			i++
		}
	} else if i < len(b) && i > ws {
		return 0, 0, ErrBadChunk
	}
	if i+1 >= len(b) {
		if i < len(b) && b[i] != '\r' {
			return 0, 0, ErrBadChunk
		}
		if len(p) >= MaxChunkLine {
			return 0, 0, ErrBadChunk
		}
		return 0, 0, nil
	}
	if b[i] != '\r' || b[i+1] != '\n' {
		return 0, 0, ErrBadChunk
	}
	return i + 2, uint32(v), nil
}

// trailerLine consumes one line of the trailer section at the start of p:
// a field line or the final CRLF. d.left counts the trailer bytes consumed
// so far. It returns m == 0 if the line is incomplete.
func (d *Chunked) trailerLine(p []byte) (m int, err *Error) {
	budget := MaxHeaderBytes - int(d.left)
	b := p
	if len(b) > budget {
		b = b[:budget]
	}
	if len(b) == 0 {
		if len(p) > 0 {
			return 0, ErrTrailerTooLarge
		}
		return 0, nil
	}
	switch b[0] {
	case '\r':
		if len(b) == 1 {
			break
		}
		if b[1] != '\n' {
			return 0, ErrBadChunk
		}
		d.state, d.left = stDone, 0
		return 2, nil
	case '\n':
		return 0, ErrBadChunk
	case ' ', '\t':
		if d.left > 0 {
			return 0, ErrObsFold
		}
		return 0, ErrBadHeader
	default:
		_, _, m, err := scanField(b, false)
		if err != nil {
			return 0, err
		}
		if m > 0 {
			d.left += uint32(m)
			return m, nil
		}
	}
	// Incomplete line.
	if len(p) >= budget {
		return 0, ErrTrailerTooLarge
	}
	return 0, nil
}
