package ingest

import (
	"errors"
	"unicode/utf8"

	"upsink/schema"
)

// Until schema.Type.AppendValue lands (branch h-config), the default Encode
// is this small stand-in: integers (range-checked), doubles (syntax only),
// bool (to 1/0), varchar (UTF-8, length in characters), text and blob
// (length); the other kinds pass as they are.

var defaultEncode EncodeFunc = standinEncode

// reasonOf is the reason an EncodeFunc's error gives.
func reasonOf(err error) string { return err.Error() }

var (
	errStandinInt    = errors.New("not an integer")
	errStandinRange  = errors.New("out of range")
	errStandinNumber = errors.New("not a number")
	errStandinBool   = errors.New("not a bool (want true, false, 1 or 0)")
	errStandinLong   = errors.New("too long")
	errStandinUTF8   = errors.New("invalid UTF-8")
)

func standinEncode(t schema.Type, dst, v []byte) ([]byte, error) {
	switch t.Kind {
	case schema.TinyInt, schema.SmallInt, schema.Int, schema.BigInt:
		neg, u := false, v
		if len(u) > 0 && (u[0] == '-' || u[0] == '+') {
			neg, u = u[0] == '-', u[1:]
		}
		if len(u) == 0 || len(u) > 19 {
			return dst, errStandinInt
		}
		var n uint64
		for _, c := range u {
			if c < '0' || c > '9' {
				return dst, errStandinInt
			}
			n = n*10 + uint64(c-'0')
		}
		bits := uint(64)
		switch t.Kind {
		case schema.TinyInt:
			bits = 8
		case schema.SmallInt:
			bits = 16
		case schema.Int:
			bits = 32
		}
		if t.Unsigned {
			if neg && n != 0 || bits < 64 && n >= 1<<bits {
				return dst, errStandinRange
			}
		} else if neg && n > 1<<(bits-1) || !neg && n >= 1<<(bits-1) {
			return dst, errStandinRange
		}
	case schema.Double:
		if _, ok := scanNumber(v, 0); !ok {
			return dst, errStandinNumber
		}
		if end, _ := scanNumber(v, 0); end != len(v) {
			return dst, errStandinNumber
		}
	case schema.Bool:
		switch string(v) {
		case "true", "1":
			return append(dst, '1'), nil
		case "false", "0":
			return append(dst, '0'), nil
		}
		return dst, errStandinBool
	case schema.Varchar:
		if !utf8.Valid(v) {
			return dst, errStandinUTF8
		}
		if utf8.RuneCount(v) > t.Len {
			return dst, errStandinLong
		}
	case schema.Text, schema.Blob:
		if len(v) > 65535 {
			return dst, errStandinLong
		}
	}
	return append(dst, v...), nil
}
