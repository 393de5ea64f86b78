package ingest

import (
	"bytes"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"upsink/schema"
)

// The JSON tokenizer: RFC 8259, strict (no comments, no trailing commas, no
// NaN, no raw control characters in strings), over the body in place.
// Strings without escapes are used where they lie; only escaped strings are
// copied (unescaped) into the Decoder's scratch buffer. Nested values are
// validated and kept as their raw text, without recursion (maxDepth levels).

const maxDepth = 1024

var jsonSpace = [256]bool{' ': true, '\t': true, '\n': true, '\r': true}

// strPlain: bytes that stand for themselves inside a JSON string.
var strPlain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func skipWS(b []byte, i int) int {
	for i < len(b) && jsonSpace[b[i]] {
		i++
	}
	return i
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// scanString scans the string that starts at b[i] == '"'. It returns the
// index after its closing quote and whether it holds escapes; ok is false
// (end at the offending byte) when it is not a valid JSON string.
func scanString(b []byte, i int) (end int, esc, ok bool) {
	i++
	for {
		for i < len(b) && strPlain[b[i]] {
			i++
		}
		if i >= len(b) {
			return i, esc, false
		}
		switch b[i] {
		case '"':
			return i + 1, esc, true
		case '\\':
			esc = true
			if i+1 >= len(b) {
				return i, esc, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return i, esc, false
				}
				i += 6
			default:
				return i, esc, false
			}
		default: // a control character
			return i, esc, false
		}
	}
}

func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case c <= '9':
			c -= '0'
		case c >= 'a':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// unescape appends the contents s of a valid JSON string (between its
// quotes) to dst, escapes resolved; a lone surrogate becomes U+FFFD.
func unescape(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		if s[i] != '\\' {
			j := bytes.IndexByte(s[i:], '\\')
			if j < 0 {
				return append(dst, s[i:]...)
			}
			dst = append(dst, s[i:i+j]...)
			i += j
			continue
		}
		c := s[i+1]
		i += 2
		switch c {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hex4(s[i:])
			i += 4
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
					r2 = hex4(s[i+2:])
				}
				if c := utf16.DecodeRune(r, r2); c != utf8.RuneError {
					r = c
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
			dst = utf8.AppendRune(dst, r)
		default: // " \ /
			dst = append(dst, c)
		}
	}
	return dst
}

// scanNumber scans the JSON number at b[i]; ok is false when there is none.
func scanNumber(b []byte, i int) (int, bool) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	if i >= len(b) {
		return i, false
	}
	switch c := b[i]; {
	case c == '0':
		i++
	case '1' <= c && c <= '9':
		i = digits(b, i+1)
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return j, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return j, false
		}
		i = j
	}
	return i, true
}

func digits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}

// skipValue validates the JSON value at b[i] (no leading space) and returns
// the index after it; ok is false (end at the offending byte) when it is not
// one.
func skipValue(b []byte, i int) (end int, ok bool) {
	var stack [maxDepth / 64]uint64 // bit set: an object
	depth := 0
	for {
		// at a value
		if i >= len(b) {
			return i, false
		}
		switch c := b[i]; c {
		case '{', '[':
			if depth == maxDepth {
				return i, false
			}
			if c == '{' {
				stack[depth>>6] |= 1 << (depth & 63)
			} else {
				stack[depth>>6] &^= 1 << (depth & 63)
			}
			depth++
			i = skipWS(b, i+1)
			if i < len(b) && (c == '{' && b[i] == '}' || c == '[' && b[i] == ']') {
				depth--
				i++
				break // to after the value
			}
			if c == '{' {
				if i, ok = objKey(b, i); !ok {
					return i, false
				}
			}
			continue
		case '"':
			if i, _, ok = scanString(b, i); !ok {
				return i, false
			}
		case 't':
			if !bytes.HasPrefix(b[i:], litTrue) {
				return i, false
			}
			i += 4
		case 'f':
			if !bytes.HasPrefix(b[i:], litFalse) {
				return i, false
			}
			i += 5
		case 'n':
			if !bytes.HasPrefix(b[i:], litNull) {
				return i, false
			}
			i += 4
		default:
			if i, ok = scanNumber(b, i); !ok {
				return i, false
			}
		}
		// after a value
		for {
			if depth == 0 {
				return i, true
			}
			i = skipWS(b, i)
			if i >= len(b) {
				return i, false
			}
			obj := stack[(depth-1)>>6]>>((depth-1)&63)&1 == 1
			c := b[i]
			if c == ',' {
				i = skipWS(b, i+1)
				if obj {
					if i, ok = objKey(b, i); !ok {
						return i, false
					}
				}
				break // to the next value
			}
			if obj && c == '}' || !obj && c == ']' {
				depth--
				i++
				continue
			}
			return i, false
		}
	}
}

// objKey scans `"key" :` at b[i] and returns the index of the value after it.
func objKey(b []byte, i int) (int, bool) {
	if i >= len(b) || b[i] != '"' {
		return i, false
	}
	i, _, ok := scanString(b, i)
	if !ok {
		return i, false
	}
	i = skipWS(b, i)
	if i >= len(b) || b[i] != ':' {
		return i, false
	}
	return skipWS(b, i+1), true
}

var (
	litTrue  = []byte("true")
	litFalse = []byte("false")
	litNull  = []byte("null")
)

// syntax records a syntax error at offset i of b (the body for JSON, the line
// for NDJSON) and returns false.
func (d *Decoder) syntax(b []byte, i int, what string) bool {
	if i >= len(b) {
		d.fail("", nil, nil, "invalid JSON: unexpected end of "+d.unit()+": "+what)
	} else {
		d.fail("", nil, nil, "invalid JSON at offset "+strconv.Itoa(i)+" of the "+d.unit()+": "+what)
	}
	return false
}

func (d *Decoder) unit() string {
	if d.index {
		return "body"
	}
	return "line"
}

// jsonObject decodes the object at b[i] == '{' into the current record and
// returns the index after it; false after a syntax error (recorded).
func (d *Decoder) jsonObject(b []byte, i int) (int, bool) {
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, true
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return i, d.syntax(b, i, `expected a key`)
		}
		end, esc, ok := scanString(b, i)
		if !ok {
			return end, d.syntax(b, end, "invalid string")
		}
		key := b[i+1 : end-1]
		if esc {
			d.key = unescape(d.key[:0], key)
			key = d.key
		}
		i = skipWS(b, end)
		if i >= len(b) || b[i] != ':' {
			return i, d.syntax(b, i, `expected ':' after a key`)
		}
		i = skipWS(b, i+1)
		if i, ok = d.jsonValue(b, i, d.column(key)); !ok {
			return i, false
		}
		i = skipWS(b, i)
		if i < len(b) && b[i] == ',' {
			i = skipWS(b, i+1)
			continue
		}
		if i < len(b) && b[i] == '}' {
			return i + 1, true
		}
		return i, d.syntax(b, i, `expected ',' or '}'`)
	}
}

// jsonValue decodes the value at b[i] into column ci (-1: skip it).
func (d *Decoder) jsonValue(b []byte, i, ci int) (int, bool) {
	if i >= len(b) {
		return i, d.syntax(b, i, "expected a value")
	}
	end, ok := 0, false
	c := b[i]
	if c == '"' {
		var esc bool
		if end, esc, ok = scanString(b, i); !ok {
			return end, d.syntax(b, end, "invalid string")
		}
		if ci < 0 {
			return end, true
		}
		kind := d.t.Columns[ci].Type.Kind
		if kind == schema.JSON {
			d.setValue(ci, b[i:end])
			return end, true
		}
		s := b[i+1 : end-1]
		if esc { // PHP writes "\/" for every '/', base64's included
			d.str = unescape(d.str[:0], s)
			s = d.str
		}
		if kind == schema.Blob {
			d.setBase64(ci, s)
		} else {
			d.setValue(ci, s)
		}
		return end, true
	}
	if end, ok = skipValue(b, i); !ok {
		return end, d.syntax(b, end, "invalid value")
	}
	if ci < 0 {
		return end, true
	}
	v := b[i:end]
	kind := d.t.Columns[ci].Type.Kind
	switch {
	case c == 'n':
		d.setNull(ci)
	case kind == schema.JSON:
		d.setValue(ci, v)
	case c == '{' || c == '[':
		d.fail(d.t.Columns[ci].Name, nil, v, reasonNested)
	case kind == schema.Blob:
		d.fail(d.t.Columns[ci].Name, nil, v, reasonBlobString)
	default: // a number, true, false
		d.setValue(ci, v)
	}
	return end, true
}

// decodeJSON decodes one object, or an array of objects (positions are array
// indexes; one object is index 0). A syntax error ends the decoding.
func (d *Decoder) decodeJSON(b []byte) {
	b = stripBOM(b)
	d.beginRow(0, true)
	i := skipWS(b, 0)
	if i >= len(b) {
		d.syntax(b, i, "empty body")
		return
	}
	switch b[i] {
	case '{':
		end, ok := d.jsonObject(b, i)
		if !ok {
			return
		}
		if end = skipWS(b, end); end < len(b) {
			d.syntax(b, end, "data after the object")
			return
		}
		d.endRow()
		return
	case '[':
	default:
		d.syntax(b, i, "the body must be an object or an array of objects")
		return
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		i++
	} else {
		for idx := 0; ; idx++ {
			d.beginRow(idx, true)
			if i < len(b) && b[i] == '{' {
				end, ok := d.jsonObject(b, i)
				if !ok {
					return
				}
				d.endRow()
				i = end
			} else {
				end, ok := skipValue(b, i)
				if !ok {
					d.syntax(b, end, "invalid value")
					return
				}
				d.fail("", nil, b[i:end], "array element is not an object")
				i = end
			}
			i = skipWS(b, i)
			if i < len(b) && b[i] == ',' {
				i = skipWS(b, i+1)
				continue
			}
			if i < len(b) && b[i] == ']' {
				i++
				break
			}
			d.syntax(b, i, `expected ',' or ']'`)
			return
		}
	}
	if i = skipWS(b, i); i < len(b) {
		d.syntax(b, i, "data after the array")
	}
}

// decodeNDJSON decodes one object per line (LF or CRLF); blank lines are
// skipped. A syntax error fails its line; decoding goes on with the next.
func (d *Decoder) decodeNDJSON(b []byte) {
	b = stripBOM(b)
	for line := 1; len(b) > 0; line++ {
		l := b
		if j := bytes.IndexByte(b, '\n'); j >= 0 {
			l, b = b[:j], b[j+1:]
		} else {
			b = nil
		}
		i := skipWS(l, 0)
		if i == len(l) {
			continue
		}
		d.beginRow(line, false)
		if l[i] != '{' {
			d.syntax(l, i, "a line must be a JSON object")
			continue
		}
		end, ok := d.jsonObject(l, i)
		if !ok {
			continue
		}
		if end = skipWS(l, end); end < len(l) {
			d.syntax(l, end, "data after the object")
			continue
		}
		d.endRow()
	}
}
