package schema

import (
	"encoding/json"
	"math"
	"strconv"
	"unicode/utf8"
	"unsafe"
)

// Values: checking one field's text against its column's type and
// rendering the text LOAD DATA reads for it. This is the hot path of
// ingest: no fmt, no allocation unless the value is bad.

// ValueError is why a field's text is not a value of its column's type:
// one line, without the value itself (the caller shows that).
type ValueError struct{ Reason string }

func (e *ValueError) Error() string { return e.Reason }

// MaxTextBytes is the most bytes of a text or blob value (MariaDB's TEXT
// and BLOB hold 65,535).
const MaxTextBytes = 65535

var (
	errNotInt      = &ValueError{"not an integer (want [-+]digits)"}
	errNotNumber   = &ValueError{"not a number (want decimal notation, e.g. -1.5e3)"}
	errNotFinite   = &ValueError{"out of range for double"}
	errNotDecimal  = &ValueError{"not a decimal number (want [-+]digits[.digits])"}
	errExponent    = &ValueError{"exponent not allowed for decimal (want [-+]digits[.digits])"}
	errUTF8        = &ValueError{"not valid UTF-8"}
	errTooLongText = &ValueError{"longer than 65535 bytes"}
	errNotBool     = &ValueError{"not a bool (want true, false, 1 or 0)"}
	errNotDate     = &ValueError{"not a date (want YYYY-MM-DD)"}
	errNoSuchDay   = &ValueError{"no such day in that month"}
	errDateYear    = &ValueError{"year out of range for date (1000..9999)"}
	errNotDatetime = &ValueError{"not a datetime (want RFC 3339, YYYY-MM-DD HH:MM:SS[.ffffff] or Unix seconds)"}
	errClock       = &ValueError{"not a time of day (want hour 00-23, minute and second 00-59)"}
	errLeapSecond  = &ValueError{"leap second (:60): MariaDB has none"}
	errZone        = &ValueError{"bad time zone offset (want Z or +hh:mm/-hh:mm)"}
	errDatetimeRng = &ValueError{"out of range for datetime (years 1000..9999 UTC)"}
	errTimestamp   = &ValueError{"out of range for timestamp (1970-01-01 00:00:01 .. 2038-01-19 03:14:07 UTC)"}
	errJSON        = &ValueError{"not valid JSON"}
	errBadType     = &ValueError{"column type invalid"}

	// errIntRange[kind-TinyInt][unsigned]
	errIntRange [4][2]*ValueError
	// errFrac[kind==Timestamp][p]: more fractional digits than p.
	errFrac [2][7]*ValueError
)

func init() {
	for k := TinyInt; k <= BigInt; k++ {
		bits := intBits(k)
		lo := strconv.FormatInt(-1<<(bits-1), 10)
		hi := strconv.FormatUint(1<<(bits-1)-1, 10)
		errIntRange[k-TinyInt][0] = &ValueError{"out of range for " + k.String() + " (" + lo + ".." + hi + ")"}
		errIntRange[k-TinyInt][1] = &ValueError{"out of range for " + k.String() + " unsigned (0.." + strconv.FormatUint(maxUint(bits), 10) + ")"}
	}
	for i, k := range []Kind{Datetime, Timestamp} {
		errFrac[i][0] = &ValueError{"fractional seconds not allowed for " + k.String() + " (declare " + k.String() + "(p) for them)"}
		for p := 1; p <= 6; p++ {
			errFrac[i][p] = &ValueError{"more than " + strconv.Itoa(p) + " fractional digits for " + k.String() + "(" + strconv.Itoa(p) + ")"}
		}
	}
}

func intBits(k Kind) uint {
	return [...]uint{8, 16, 32, 64}[k-TinyInt]
}

func maxUint(bits uint) uint64 {
	if bits == 64 {
		return math.MaxUint64
	}
	return 1<<bits - 1
}

// AppendValue validates v, one field's text, as a value of type t and
// appends the text LOAD DATA reads for it (NOT yet TSV-escaped: the caller
// escapes) to dst.
//
// v is: a CSV field after unquoting, a form value after percent-decoding, a
// JSON string's content after unescaping, or the literal text of a JSON
// number/true/false; for Blob the bytes as given (JSON input is
// base64-decoded by the caller first); for JSON the raw JSON text of the
// value (object, array, string with quotes, ...).
//
// It never allocates when dst has room. On a bad value it returns dst
// unchanged and a *ValueError (preallocated, except the reasons that name a
// length or digit count of varchar(n) and decimal(p,s): one allocation on
// that error path). Nothing is ever truncated or rounded: a value
// that does not fit is refused. The rules, by kind:
//
//   - tinyint, smallint, int, bigint: an optional sign and decimal digits
//     only (no spaces, "1.0", exponent or hex); leading zeros are fine;
//     range per kind and unsigned ("-0" is 0). Output: canonical decimal.
//   - double: decimal notation with optional sign, point and exponent
//     (no NaN, Inf, hex or underscores); finite (a value beyond ±1.8e308 is
//     refused; one below the smallest subnormal is 0, as in MariaDB).
//     Output: the shortest text that reads back to the same double.
//   - decimal(p,s): [-+]digits[.digits] (".5" and "5." too), no exponent;
//     at most p-s integer digits after leading zeros and at most s fraction
//     digits after trailing zeros (1.500 fits decimal(5,2); 1.505 does not).
//   - varchar(n): valid UTF-8 of at most n characters (code points).
//   - text: valid UTF-8 of at most 65,535 bytes; blob: any bytes, at most 65,535.
//   - bool: true or false (any case), 1 or 0. Output: 1 or 0.
//   - date: YYYY-MM-DD, a real calendar day, years 1000..9999.
//   - datetime(p), timestamp(p): see the time zone rule below.
//   - json: valid UTF-8 and valid JSON (any value; encoding/json.Valid,
//     whose scanner is pooled: no allocation once warm).
//
// The time zone rule: datetime and timestamp values are stored in UTC. The
// input is one of
//
//   - RFC 3339, YYYY-MM-DDTHH:MM:SS[.f...] with Z or ±hh:mm: converted to
//     UTC (2025-06-01T12:00:00+02:00 is stored as 2025-06-01 10:00:00);
//   - YYYY-MM-DD HH:MM:SS[.f...] or YYYY-MM-DDTHH:MM:SS[.f...] without a
//     zone: taken as UTC already (never as the server's local time);
//   - Unix seconds, [-]digits[.f...] (1700000000 or 1700000000.25).
//
// A space, T or t separates date and time, with or without a zone.
// Fractional digits beyond p must be zeros (JavaScript's ".000" fits
// datetime(0)); a nonzero one is refused, never rounded. Second 60 (a leap
// second) is refused: MariaDB has none. The output is
// "YYYY-MM-DD HH:MM:SS" in UTC with exactly p fractional digits, which
// MariaDB reads unchanged only in a session with time_zone = '+00:00' (it
// converts TIMESTAMP input from the session's zone). Ranges after
// conversion: datetime years 1000..9999; timestamp 1970-01-01 00:00:01 ..
// 2038-01-19 03:14:07.999999 UTC.
func (t Type) AppendValue(dst, v []byte) ([]byte, error) {
	switch t.Kind {
	case TinyInt, SmallInt, Int, BigInt:
		return t.appendInt(dst, v)
	case Double:
		return appendDouble(dst, v)
	case Decimal:
		return t.appendDecimal(dst, v)
	case Varchar:
		return t.appendVarchar(dst, v)
	case Text:
		if len(v) > MaxTextBytes {
			return dst, errTooLongText
		}
		if !utf8.Valid(v) {
			return dst, errUTF8
		}
		return append(dst, v...), nil
	case Blob:
		if len(v) > MaxTextBytes {
			return dst, errTooLongText
		}
		return append(dst, v...), nil
	case Bool:
		return appendBool(dst, v)
	case Date:
		return appendDate(dst, v)
	case Datetime, Timestamp:
		return t.appendTime(dst, v)
	case JSON:
		if !utf8.Valid(v) {
			return dst, errUTF8
		}
		if !json.Valid(v) {
			return dst, errJSON
		}
		return append(dst, v...), nil
	}
	return dst, errBadType
}

// unsafeString views b as a string for calls that do not keep it.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

func (t Type) appendInt(dst, v []byte) ([]byte, error) {
	i, neg := 0, false
	if len(v) > 0 && (v[0] == '-' || v[0] == '+') {
		neg, i = v[0] == '-', 1
	}
	if i == len(v) {
		return dst, errNotInt
	}
	var n uint64
	over := false
	for ; i < len(v); i++ {
		c := uint64(v[i] - '0')
		if c > 9 {
			return dst, errNotInt
		}
		if n > (math.MaxUint64-c)/10 {
			over = true // keep checking the syntax
			continue
		}
		n = n*10 + c
	}
	bits := intBits(t.Kind)
	rangeErr := errIntRange[t.Kind-TinyInt][b2i(t.Unsigned)]
	switch {
	case over:
		return dst, rangeErr
	case t.Unsigned:
		if (neg && n != 0) || n > maxUint(bits) {
			return dst, rangeErr
		}
	case neg:
		if n > 1<<(bits-1) {
			return dst, rangeErr
		}
	default:
		if n > 1<<(bits-1)-1 {
			return dst, rangeErr
		}
	}
	if neg && n != 0 {
		dst = append(dst, '-')
	}
	return strconv.AppendUint(dst, n, 10), nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func appendDouble(dst, v []byte) ([]byte, error) {
	if len(v) == 0 {
		return dst, errNotNumber
	}
	digits := false
	for _, c := range v {
		switch {
		case c >= '0' && c <= '9':
			digits = true
		case c == '+' || c == '-' || c == '.' || c == 'e' || c == 'E':
		default:
			return dst, errNotNumber
		}
	}
	if !digits {
		return dst, errNotNumber
	}
	f, err := strconv.ParseFloat(unsafeString(v), 64)
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return dst, errNotFinite
	}
	if err != nil {
		return dst, errNotNumber
	}
	return strconv.AppendFloat(dst, f, 'g', -1, 64), nil
}

func (t Type) appendDecimal(dst, v []byte) ([]byte, error) {
	i, neg := 0, false
	if len(v) > 0 && (v[0] == '-' || v[0] == '+') {
		neg, i = v[0] == '-', 1
	}
	intStart := i
	for i < len(v) && v[i] >= '0' && v[i] <= '9' {
		i++
	}
	intPart := v[intStart:i]
	var frac []byte
	if i < len(v) && v[i] == '.' {
		i++
		fs := i
		for i < len(v) && v[i] >= '0' && v[i] <= '9' {
			i++
		}
		frac = v[fs:i]
	}
	if i < len(v) {
		if v[i] == 'e' || v[i] == 'E' {
			return dst, errExponent
		}
		return dst, errNotDecimal
	}
	if len(intPart) == 0 && len(frac) == 0 {
		return dst, errNotDecimal
	}
	for len(intPart) > 0 && intPart[0] == '0' {
		intPart = intPart[1:]
	}
	for len(frac) > t.Scale && frac[len(frac)-1] == '0' {
		frac = frac[:len(frac)-1]
	}
	if len(frac) > t.Scale {
		return dst, decimalErr(t, "fraction")
	}
	if len(intPart) > t.Prec-t.Scale {
		return dst, decimalErr(t, "integer")
	}
	if neg && (len(intPart) > 0 || !allZeros(frac)) {
		dst = append(dst, '-')
	}
	if len(intPart) == 0 {
		dst = append(dst, '0')
	} else {
		dst = append(dst, intPart...)
	}
	if len(frac) > 0 {
		dst = append(dst, '.')
		dst = append(dst, frac...)
	}
	return dst, nil
}

// decimalErr builds the reason for too many digits (the error path only).
func decimalErr(t Type, part string) *ValueError {
	n := t.Scale
	if part == "integer" {
		n = t.Prec - t.Scale
	}
	return &ValueError{"more than " + strconv.Itoa(n) + " " + part + " digits for " + t.SQL()}
}

func allZeros(b []byte) bool {
	for _, c := range b {
		if c != '0' {
			return false
		}
	}
	return true
}

func (t Type) appendVarchar(dst, v []byte) ([]byte, error) {
	if len(v) <= t.Len { // at most as many characters as bytes
		if !utf8.Valid(v) {
			return dst, errUTF8
		}
		return append(dst, v...), nil
	}
	n := 0
	for i := 0; i < len(v); n++ {
		if v[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, size := utf8.DecodeRune(v[i:])
		if r == utf8.RuneError && size == 1 {
			return dst, errUTF8
		}
		i += size
	}
	if n > t.Len {
		return dst, &ValueError{"longer than " + strconv.Itoa(t.Len) + " characters"}
	}
	return append(dst, v...), nil
}

func appendBool(dst, v []byte) ([]byte, error) {
	switch len(v) {
	case 1:
		if v[0] == '1' || v[0] == '0' {
			return append(dst, v[0]), nil
		}
	case 4:
		if v[0]|0x20 == 't' && v[1]|0x20 == 'r' && v[2]|0x20 == 'u' && v[3]|0x20 == 'e' {
			return append(dst, '1'), nil
		}
	case 5:
		if v[0]|0x20 == 'f' && v[1]|0x20 == 'a' && v[2]|0x20 == 'l' && v[3]|0x20 == 's' && v[4]|0x20 == 'e' {
			return append(dst, '0'), nil
		}
	}
	return dst, errNotBool
}

// digits parses v[i:i+n] as decimal digits; -1 if any is not one.
func digits(v []byte, i, n int) int {
	x := 0
	for _, c := range v[i : i+n] {
		if c < '0' || c > '9' {
			return -1
		}
		x = x*10 + int(c-'0')
	}
	return x
}

// parseDate reads YYYY-MM-DD at the start of v (len(v) >= 10).
func parseDate(v []byte) (y, m, d int, err *ValueError) {
	y, m, d = digits(v, 0, 4), digits(v, 5, 2), digits(v, 8, 2)
	if y < 0 || m < 0 || d < 0 || v[4] != '-' || v[7] != '-' {
		return 0, 0, 0, errNotDate
	}
	if m < 1 || m > 12 || d < 1 || d > daysIn(y, m) {
		return 0, 0, 0, errNoSuchDay
	}
	return y, m, d, nil
}

func daysIn(y, m int) int {
	switch m {
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

func appendDate(dst, v []byte) ([]byte, error) {
	if len(v) != 10 {
		return dst, errNotDate
	}
	y, _, _, err := parseDate(v)
	if err != nil {
		return dst, err
	}
	if y < 1000 {
		return dst, errDateYear
	}
	return append(dst, v...), nil
}

// daysFromCivil is the number of days from 1970-01-01 to y-m-d in the
// proleptic Gregorian calendar (Howard Hinnant's algorithm).
func daysFromCivil(y, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400
	if y < 0 {
		era = (y - 399) / 400
	}
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return int64(era)*146097 + int64(doe) - 719468
}

// civilFromDays is the inverse of daysFromCivil.
func civilFromDays(z int64) (y, m, d int) {
	z += 719468
	era := z / 146097
	if z < 0 && z%146097 != 0 {
		era--
	}
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d = int(doy - (153*mp+2)/5 + 1)
	m = int(mp + 3)
	if m > 12 {
		m -= 12
	}
	y = int(yoe + era*400)
	if m <= 2 {
		y++
	}
	return y, m, d
}

// fraction reads the fractional digits of a second in v[i:], after the
// point: the microseconds, and where they end. Digits beyond prec must be
// zeros.
func fraction(v []byte, i, prec int, fracErr *ValueError) (micros int64, end int, err *ValueError) {
	start := i
	for ; i < len(v) && v[i] >= '0' && v[i] <= '9'; i++ {
		n := i - start
		if n >= prec && v[i] != '0' {
			return 0, 0, fracErr
		}
		if n < 6 {
			micros = micros*10 + int64(v[i]-'0')
		}
	}
	if i == start {
		return 0, 0, errNotDatetime
	}
	for n := i - start; n < 6; n++ {
		micros *= 10
	}
	return micros, i, nil
}

func (t Type) appendTime(dst, v []byte) ([]byte, error) {
	fracErr := errFrac[b2i(t.Kind == Timestamp)][t.Prec]
	var sec, micros int64
	if len(v) >= 10 && v[4] == '-' {
		if len(v) < 19 {
			return dst, errNotDatetime
		}
		y, m, d, derr := parseDate(v)
		if derr == errNotDate {
			return dst, errNotDatetime
		}
		if derr != nil {
			return dst, derr
		}
		if c := v[10]; c != ' ' && c != 'T' && c != 't' {
			return dst, errNotDatetime
		}
		hh, mm, ss := digits(v, 11, 2), digits(v, 14, 2), digits(v, 17, 2)
		if hh < 0 || mm < 0 || ss < 0 || v[13] != ':' || v[16] != ':' {
			return dst, errNotDatetime
		}
		if ss == 60 {
			return dst, errLeapSecond
		}
		if hh > 23 || mm > 59 || ss > 59 {
			return dst, errClock
		}
		i := 19
		if i < len(v) && v[i] == '.' {
			var err *ValueError
			if micros, i, err = fraction(v, i+1, t.Prec, fracErr); err != nil {
				return dst, err
			}
		}
		sec = daysFromCivil(y, m, d)*86400 + int64(hh*3600+mm*60+ss)
		switch {
		case i == len(v):
		case len(v)-i == 1 && (v[i] == 'Z' || v[i] == 'z'):
		case len(v)-i == 6 && (v[i] == '+' || v[i] == '-') && v[i+3] == ':':
			oh, om := digits(v, i+1, 2), digits(v, i+4, 2)
			if oh < 0 || om < 0 || oh > 23 || om > 59 {
				return dst, errZone
			}
			off := int64(oh*3600 + om*60)
			if v[i] == '+' {
				off = -off
			}
			sec += off
		default:
			if v[i] == '+' || v[i] == '-' || v[i] == 'Z' || v[i] == 'z' {
				return dst, errZone
			}
			return dst, errNotDatetime
		}
	} else {
		i, neg := 0, false
		if len(v) > 0 && v[0] == '-' {
			neg, i = true, 1
		}
		start := i
		for ; i < len(v) && v[i] >= '0' && v[i] <= '9'; i++ {
			if i-start >= 15 {
				return dst, t.timeRangeErr()
			}
			sec = sec*10 + int64(v[i]-'0')
		}
		if i == start {
			return dst, errNotDatetime
		}
		if i < len(v) && v[i] == '.' {
			var err *ValueError
			if micros, i, err = fraction(v, i+1, t.Prec, fracErr); err != nil {
				return dst, err
			}
		}
		if i != len(v) {
			return dst, errNotDatetime
		}
		if neg {
			sec, micros = -sec, -micros
			if micros < 0 {
				sec, micros = sec-1, micros+1e6
			}
		}
	}
	if t.Kind == Timestamp {
		if sec < 1 || sec > math.MaxInt32 {
			return dst, errTimestamp
		}
	} else if sec < minDatetime || sec > maxDatetime {
		return dst, errDatetimeRng
	}
	days, rem := sec/86400, sec%86400
	if rem < 0 {
		days, rem = days-1, rem+86400
	}
	y, m, d := civilFromDays(days)
	dst = append4(dst, y)
	dst = append(dst, '-')
	dst = append2(dst, m)
	dst = append(dst, '-')
	dst = append2(dst, d)
	dst = append(dst, ' ')
	dst = append2(dst, int(rem/3600))
	dst = append(dst, ':')
	dst = append2(dst, int(rem/60%60))
	dst = append(dst, ':')
	dst = append2(dst, int(rem%60))
	if t.Prec > 0 {
		dst = append(dst, '.')
		div := int64(100000)
		for range t.Prec {
			dst = append(dst, byte('0'+micros/div%10))
			div /= 10
		}
	}
	return dst, nil
}

func (t Type) timeRangeErr() *ValueError {
	if t.Kind == Timestamp {
		return errTimestamp
	}
	return errDatetimeRng
}

// The datetime range in Unix seconds: 1000-01-01 00:00:00 .. 9999-12-31 23:59:59.
var (
	minDatetime = daysFromCivil(1000, 1, 1) * 86400
	maxDatetime = daysFromCivil(10000, 1, 1)*86400 - 1
)

func append2(dst []byte, n int) []byte {
	return append(dst, byte('0'+n/10), byte('0'+n%10))
}

func append4(dst []byte, n int) []byte {
	return append(dst, byte('0'+n/1000), byte('0'+n/100%10), byte('0'+n/10%10), byte('0'+n%10))
}
