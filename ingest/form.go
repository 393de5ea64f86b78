package ingest

// decodeForm decodes an application/x-www-form-urlencoded body as one row
// (line 1): name=value pairs separated by '&', percent-encoded with '+' for
// a space. A name without '=' or with an empty value is NULL (an HTML form's
// empty input); a name given twice is an error.
func (d *Decoder) decodeForm(b []byte) {
	d.beginRow(1, false)
	for len(b) > 0 {
		pair := b
		if k := indexByte(b, '&'); k >= 0 {
			pair, b = b[:k], b[k+1:]
		} else {
			b = nil
		}
		if len(pair) == 0 {
			continue
		}
		name, val := pair, []byte(nil)
		if k := indexByte(pair, '='); k >= 0 {
			name, val = pair[:k], pair[k+1:]
		}
		var ok bool
		if d.key, ok = unescapeQuery(d.key[:0], name); !ok {
			d.fail("", nil, name, "invalid percent-encoding in a name")
			continue
		}
		ci := d.column(d.key)
		if ci < 0 {
			continue
		}
		if len(val) == 0 {
			d.setNull(ci)
			continue
		}
		if d.str, ok = unescapeQuery(d.str[:0], val); !ok {
			d.fail(d.t.Columns[ci].Name, nil, val, "invalid percent-encoding")
			continue
		}
		d.setValue(ci, d.str)
	}
	d.endRow()
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// unescapeQuery appends s to dst with %XX and '+' (a space) decoded; ok is
// false for a malformed %.
func unescapeQuery(dst, s []byte) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '+':
			dst = append(dst, ' ')
		case '%':
			if i+2 >= len(s) {
				return dst, false
			}
			h, ok1 := unhex(s[i+1])
			l, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return dst, false
			}
			dst = append(dst, h<<4|l)
			i += 2
		default:
			dst = append(dst, c)
		}
	}
	return dst, true
}
