package schema

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

func mustType(t testing.TB, s string) Type {
	t.Helper()
	ty, err := ParseType(s)
	if err != nil {
		t.Fatal(err)
	}
	return ty
}

// ok is what a good value appends; a want starting with "!" is a bad value
// whose reason contains the rest.
func TestAppendValue(t *testing.T) {
	long := strings.Repeat("x", MaxTextBytes)
	tests := []struct {
		typ, in, want string
	}{
		// integers: edges of every kind, signed and unsigned
		{"tinyint", "127", "127"}, {"tinyint", "-128", "-128"}, {"tinyint", "128", "!out of range for tinyint (-128..127)"},
		{"tinyint", "-129", "!out of range for tinyint"}, {"tinyint unsigned", "255", "255"}, {"tinyint unsigned", "256", "!out of range for tinyint unsigned (0..255)"},
		{"tinyint unsigned", "-1", "!out of range for tinyint unsigned"}, {"tinyint unsigned", "-0", "0"}, {"tinyint", "-0", "0"},
		{"smallint", "32767", "32767"}, {"smallint", "-32768", "-32768"}, {"smallint", "32768", "!out of range"}, {"smallint unsigned", "65535", "65535"}, {"smallint unsigned", "65536", "!out of range"},
		{"int", "2147483647", "2147483647"}, {"int", "-2147483648", "-2147483648"}, {"int", "2147483648", "!out of range for int"}, {"int", "-2147483649", "!out of range"},
		{"int unsigned", "4294967295", "4294967295"}, {"int unsigned", "4294967296", "!out of range for int unsigned (0..4294967295)"},
		{"bigint", "9223372036854775807", "9223372036854775807"}, {"bigint", "-9223372036854775808", "-9223372036854775808"},
		{"bigint", "9223372036854775808", "!out of range for bigint"}, {"bigint", "-9223372036854775809", "!out of range"},
		{"bigint unsigned", "18446744073709551615", "18446744073709551615"}, {"bigint unsigned", "18446744073709551616", "!out of range for bigint unsigned"},
		{"bigint unsigned", "99999999999999999999999999", "!out of range"}, {"bigint", "99999999999999999999999x", "!not an integer"},
		{"int", "+42", "42"}, {"int", "007", "7"}, {"int", "-007", "-7"}, {"int", "", "!not an integer"}, {"int", "-", "!not an integer"},
		{"int", "1.0", "!not an integer"}, {"int", "1e3", "!not an integer"}, {"int", "0x10", "!not an integer"}, {"int", " 1", "!not an integer"},
		{"int", "1 ", "!not an integer"}, {"int", "--1", "!not an integer"}, {"int", "1_000", "!not an integer"},
		// double
		{"double", "1.5", "1.5"}, {"double", "-0", "-0"}, {"double", "1e21", "1e+21"}, {"double", "0.1", "0.1"}, {"double", "+3", "3"},
		{"double", "1.7976931348623157e308", "1.7976931348623157e+308"}, {"double", "1e309", "!out of range for double"}, {"double", "-1e309", "!out of range"},
		{"double", "5e-324", "5e-324"}, {"double", "1e-400", "0"}, {"double", "NaN", "!not a number"}, {"double", "Inf", "!not a number"}, {"double", "infinity", "!not a number"},
		{"double", "0x1p3", "!not a number"}, {"double", "1_0", "!not a number"}, {"double", "", "!not a number"}, {"double", ".", "!not a number"}, {"double", "1e", "!not a number"},
		{"double", "1..2", "!not a number"}, {"double", " 1", "!not a number"}, {"double", "123456789012345678", "1.2345678901234568e+17"},
		// decimal
		{"decimal(5,2)", "123.45", "123.45"}, {"decimal(5,2)", "-123.45", "-123.45"}, {"decimal(5,2)", "1234.5", "!more than 3 integer digits for decimal(5,2)"},
		{"decimal(5,2)", "1.234", "!more than 2 fraction digits for decimal(5,2)"}, {"decimal(5,2)", "1.500", "1.50"}, {"decimal(5,2)", "000123.4", "123.4"},
		{"decimal(5,2)", ".5", "0.5"}, {"decimal(5,2)", "5.", "5"}, {"decimal(5,2)", "+1", "1"}, {"decimal(5,2)", "-0.00", "0.00"}, {"decimal(5,2)", "-0.01", "-0.01"},
		{"decimal(5,2)", "1e3", "!exponent not allowed"}, {"decimal(5,2)", "", "!not a decimal"}, {"decimal(5,2)", ".", "!not a decimal"}, {"decimal(5,2)", "-", "!not a decimal"},
		{"decimal(5,2)", "1,5", "!not a decimal"}, {"decimal(5,2)", "1.2.3", "!not a decimal"}, {"decimal(3,3)", "0.999", "0.999"}, {"decimal(3,3)", "1.0", "!more than 0 integer digits"},
		{"decimal(65,30)", "99999999999999999999999999999999999.999999999999999999999999999999", "99999999999999999999999999999999999.999999999999999999999999999999"},
		{"decimal(10,0)", "1.0", "1"}, {"decimal(10,0)", "1.5", "!more than 0 fraction digits"},
		// strings
		{"varchar(3)", "abc", "abc"}, {"varchar(3)", "abcd", "!longer than 3 characters"}, {"varchar(3)", "éèê", "éèê"}, {"varchar(3)", "éèêë", "!longer than 3 characters"},
		{"varchar(2)", "😀😀", "😀😀"}, {"varchar(10)", "a\xffb", "!not valid UTF-8"}, {"varchar(1)", "a\xff", "!not valid UTF-8"}, {"varchar(3)", "", ""},
		{"varchar(10)", "\xed\xa0\x80", "!not valid UTF-8"}, // a surrogate
		{"text", long, long}, {"text", long + "x", "!longer than 65535 bytes"}, {"text", "\xc3", "!not valid UTF-8"}, {"text", "tab\there", "tab\there"},
		{"blob", "\x00\xff\xfe", "\x00\xff\xfe"}, {"blob", long + "x", "!longer than 65535 bytes"},
		// bool
		{"bool", "true", "1"}, {"bool", "TRUE", "1"}, {"bool", "False", "0"}, {"bool", "1", "1"}, {"bool", "0", "0"},
		{"bool", "yes", "!not a bool"}, {"bool", "2", "!not a bool"}, {"bool", "", "!not a bool"}, {"bool", "truee", "!not a bool"},
		// date
		{"date", "2025-01-31", "2025-01-31"}, {"date", "2024-02-29", "2024-02-29"}, {"date", "2025-02-29", "!no such day"}, {"date", "2025-02-30", "!no such day"},
		{"date", "2000-02-29", "2000-02-29"}, {"date", "1900-02-29", "!no such day"}, {"date", "2025-04-31", "!no such day"}, {"date", "2025-13-01", "!no such day"},
		{"date", "2025-00-10", "!no such day"}, {"date", "2025-01-00", "!no such day"}, {"date", "1000-01-01", "1000-01-01"}, {"date", "9999-12-31", "9999-12-31"},
		{"date", "0999-12-31", "!year out of range"}, {"date", "2025-1-31", "!not a date (want YYYY-MM-DD)"}, {"date", "2025/01/31", "!not a date"},
		{"date", "2025-01-31T00:00:00Z", "!not a date"}, {"date", "", "!not a date"},
		// datetime and timestamp: forms, zones, fractions, ranges
		{"datetime", "2025-06-01 12:34:56", "2025-06-01 12:34:56"}, {"datetime", "2025-06-01T12:34:56", "2025-06-01 12:34:56"},
		{"datetime", "2025-06-01T12:34:56Z", "2025-06-01 12:34:56"}, {"datetime", "2025-06-01t12:34:56z", "2025-06-01 12:34:56"},
		{"datetime", "2025-06-01T12:34:56+02:00", "2025-06-01 10:34:56"}, {"datetime", "2025-06-01T01:00:00+02:00", "2025-05-31 23:00:00"},
		{"datetime", "2024-12-31T23:30:00-01:00", "2025-01-01 00:30:00"}, {"datetime", "2024-02-28T23:00:00-05:30", "2024-02-29 04:30:00"},
		{"datetime", "2025-06-01 12:34:56+05:45", "2025-06-01 06:49:56"}, {"datetime", "2025-06-01T12:34:56-00:00", "2025-06-01 12:34:56"},
		{"datetime", "2025-06-01T12:34:56.000Z", "2025-06-01 12:34:56"}, {"datetime", "2025-06-01T12:34:56.5Z", "!fractional seconds not allowed for datetime"},
		{"datetime(3)", "2025-06-01T12:34:56.5Z", "2025-06-01 12:34:56.500"}, {"datetime(3)", "2025-06-01T12:34:56.123Z", "2025-06-01 12:34:56.123"},
		{"datetime(3)", "2025-06-01T12:34:56.1234Z", "!more than 3 fractional digits for datetime(3)"}, {"datetime(3)", "2025-06-01T12:34:56.123000000Z", "2025-06-01 12:34:56.123"},
		{"datetime(6)", "2025-06-01 12:34:56.123456", "2025-06-01 12:34:56.123456"}, {"datetime(6)", "2025-06-01 12:34:56.1234567", "!more than 6 fractional digits"},
		{"datetime(6)", "2025-06-01 12:34:56", "2025-06-01 12:34:56.000000"}, {"datetime(6)", "2025-06-01 12:34:56.", "!not a datetime"},
		{"datetime", "2016-12-31T23:59:60Z", "!leap second"}, {"datetime", "2025-06-01 24:00:00", "!not a time of day"}, {"datetime", "2025-06-01 12:60:00", "!not a time of day"},
		{"datetime", "2025-02-30 12:00:00", "!no such day"}, {"datetime", "2025-06-01 12:34", "!not a datetime"}, {"datetime", "2025-06-01", "!not a datetime"},
		{"datetime", "2025-06-01_12:34:56", "!not a datetime"}, {"datetime", "2025-06-01 12:34:56+0200", "!bad time zone offset"}, {"datetime", "2025-06-01 12:34:56+24:00", "!bad time zone offset"},
		{"datetime", "2025-06-01 12:34:56 UTC", "!not a datetime"}, {"datetime", "2025-06-01 12:34:56Zx", "!bad time zone offset"}, {"datetime", "", "!not a datetime"},
		{"datetime", "1000-01-01 00:00:00", "1000-01-01 00:00:00"}, {"datetime", "9999-12-31 23:59:59", "9999-12-31 23:59:59"},
		{"datetime", "0999-12-31 23:59:59", "!out of range for datetime"}, {"datetime", "9999-12-31T23:59:59-00:01", "!out of range for datetime"},
		{"datetime", "0999-12-31T23:59:59-01:00", "1000-01-01 00:59:59"},
		{"datetime", "0", "1970-01-01 00:00:00"}, {"datetime", "1700000000", "2023-11-14 22:13:20"}, {"datetime(2)", "1700000000.25", "2023-11-14 22:13:20.25"},
		{"datetime(6)", "-1.5", "1969-12-31 23:59:58.500000"}, {"datetime", "-1", "1969-12-31 23:59:59"}, {"datetime", "1700000000.5", "!fractional seconds not allowed"},
		{"datetime(6)", "1700000000.1234567", "!more than 6 fractional digits"}, {"datetime", "253402300799", "9999-12-31 23:59:59"}, {"datetime", "253402300800", "!out of range for datetime"},
		{"datetime", "9999999999999999999999", "!out of range for datetime"}, {"datetime", "1e9", "!not a datetime"}, {"datetime", "+5", "!not a datetime"}, {"datetime", "-", "!not a datetime"},
		{"timestamp", "1970-01-01 00:00:01", "1970-01-01 00:00:01"}, {"timestamp", "1970-01-01 00:00:00", "!out of range for timestamp"},
		{"timestamp(6)", "1970-01-01 00:00:00.999999", "!out of range for timestamp"}, {"timestamp", "2038-01-19 03:14:07", "2038-01-19 03:14:07"},
		{"timestamp(6)", "2038-01-19 03:14:07.999999", "2038-01-19 03:14:07.999999"}, {"timestamp", "2038-01-19 03:14:08", "!out of range for timestamp"},
		{"timestamp", "2038-01-19T05:14:07+02:00", "2038-01-19 03:14:07"}, {"timestamp", "2038-01-19T03:14:07-00:01", "!out of range for timestamp"},
		{"timestamp", "1", "1970-01-01 00:00:01"}, {"timestamp", "2147483647", "2038-01-19 03:14:07"}, {"timestamp", "2147483648", "!out of range for timestamp"},
		{"timestamp", "-1", "!out of range for timestamp"}, {"timestamp(3)", "1.5", "1970-01-01 00:00:01.500"}, {"timestamp", "1.5", "!fractional seconds not allowed for timestamp"},
		{"timestamp(1)", "2025-06-01T12:00:00.05Z", "!more than 1 fractional digits for timestamp(1)"},
		// json
		{"json", `{"a":[1,2,{"b":null}]}`, `{"a":[1,2,{"b":null}]}`}, {"json", `"str"`, `"str"`}, {"json", `12.5`, `12.5`}, {"json", `true`, `true`},
		{"json", `{"a":}`, "!not valid JSON"}, {"json", `{"a":1`, "!not valid JSON"}, {"json", ``, "!not valid JSON"}, {"json", `str`, "!not valid JSON"},
		{"json", "\"\xff\"", "!not valid UTF-8"},
	}
	for _, tt := range tests {
		typ := mustType(t, tt.typ)
		dst := []byte("pre|")
		got, err := typ.AppendValue(dst, []byte(tt.in))
		name := tt.typ + " " + strconv.Quote(trunc(tt.in))
		if want, bad := strings.CutPrefix(tt.want, "!"); bad {
			var ve *ValueError
			if !errors.As(err, &ve) || !strings.Contains(ve.Reason, want) || strings.Contains(ve.Reason, "\n") {
				t.Errorf("%s: err %v, want a ValueError containing %q", name, err, want)
			}
			if string(got) != "pre|" {
				t.Errorf("%s: dst changed to %q on error", name, trunc(string(got)))
			}
			continue
		}
		if err != nil || string(got) != "pre|"+tt.want {
			t.Errorf("%s: got %q, %v; want %q", name, trunc(string(got)), err, trunc(tt.want))
		}
	}
}

func trunc(s string) string {
	if len(s) > 80 {
		return s[:40] + "..." + s[len(s)-20:]
	}
	return s
}

// TestTimeAgainstTimePackage checks the calendar arithmetic against package
// time over a wide range of instants and zones.
func TestTimeAgainstTimePackage(t *testing.T) {
	typ := mustType(t, "datetime(6)")
	var buf []byte
	for sec := int64(-30610224000); sec < 253402300799; sec += 7777777 + sec%1000 {
		for _, off := range []int{0, 3600, -19800, 50400, -43200} {
			zone := time.FixedZone("", off)
			tm := time.Unix(sec, 123456000).In(zone)
			in := tm.Format("2006-01-02T15:04:05.000000Z07:00")
			var err error
			buf, err = typ.AppendValue(buf[:0], []byte(in))
			want := tm.UTC().Format("2006-01-02 15:04:05.000000")
			if tm.UTC().Year() < 1000 || tm.Year() < 1000 {
				continue
			}
			if err != nil || string(buf) != want {
				t.Fatalf("%s: got %q, %v; want %q", in, buf, err, want)
			}
			unix := strconv.FormatInt(sec, 10) + ".123456"
			if sec < 0 { // -(|sec|-1).876544 is sec + 0.123456
				unix = "-" + strconv.FormatInt(-sec-1, 10) + ".876544"
			}
			buf, err = typ.AppendValue(buf[:0], []byte(unix))
			if err != nil || string(buf) != want {
				t.Fatalf("unix %d: got %q, %v; want %q", sec, buf, err, want)
			}
		}
	}
}

func TestAppendValueAllocs(t *testing.T) {
	cases := []struct{ typ, in string }{
		{"int", "-2147483648"}, {"bigint unsigned", "18446744073709551615"}, {"double", "-1.2345e-7"}, {"decimal(10,2)", "-12345678.90"},
		{"varchar(64)", "sensor-éèê-01"}, {"varchar(10)", "sensor-12"}, {"text", "hello"}, {"blob", "\x00\x01"}, {"bool", "TRUE"},
		{"date", "2025-02-28"}, {"datetime(6)", "2025-06-01T12:34:56.123456+02:00"}, {"timestamp(3)", "1700000000.125"},
		{"datetime", "2025-02-30 00:00:00"}, {"int", "x"}, {"json", `{"a":[1,2,{"b":"c"}],"d":null}`}, {"tinyint", "300"},
	}
	dst := make([]byte, 0, 256)
	for _, c := range cases {
		typ := mustType(t, c.typ)
		if typ.Kind == JSON && raceEnabled {
			continue
		}
		in := []byte(c.in)
		if n := testing.AllocsPerRun(100, func() { _, _ = typ.AppendValue(dst[:0], in) }); n != 0 {
			t.Errorf("%s %q: %v allocs, want 0", c.typ, c.in, n)
		}
	}
}

var fuzzTypes = []string{"tinyint", "tinyint unsigned", "smallint", "int unsigned", "bigint", "bigint unsigned", "double",
	"decimal(5,2)", "decimal(65,30)", "varchar(5)", "text", "blob", "bool", "date", "datetime", "datetime(6)", "timestamp(3)", "json"}

// FuzzAppendValue: never panics, never changes dst on error, and what it
// appends is accepted again unchanged (the output is canonical).
func FuzzAppendValue(f *testing.F) {
	for _, s := range []string{"0", "-128", "18446744073709551616", "1.5e3", "-0.00", "123.456", "éè", "true", "2024-02-29",
		"2025-06-01T12:34:56.123+02:00", "1700000000.5", "{\"a\":1}", "2038-01-19 03:14:07", "9999-12-31T23:59:59-00:01"} {
		for i := range fuzzTypes {
			f.Add(uint8(i), []byte(s))
		}
	}
	types := make([]Type, len(fuzzTypes))
	for i, s := range fuzzTypes {
		types[i] = mustType(f, s)
	}
	f.Fuzz(func(t *testing.T, k uint8, in []byte) {
		typ := types[int(k)%len(types)]
		dst := []byte("x")
		out, err := typ.AppendValue(dst, in)
		if err != nil {
			if string(out) != "x" {
				t.Fatalf("%v %q: dst changed on error", typ, in)
			}
			return
		}
		val := out[1:]
		again, err := typ.AppendValue(nil, val)
		if err != nil || !bytes.Equal(again, val) {
			t.Fatalf("%v %q -> %q -> %q, %v: not canonical", typ, in, val, again, err)
		}
		if typ.Kind >= TinyInt && typ.Kind <= BigInt {
			if typ.Unsigned {
				if _, err := strconv.ParseUint(string(val), 10, int(intBits(typ.Kind))); err != nil {
					t.Fatalf("%v %q -> %q: %v", typ, in, val, err)
				}
			} else if _, err := strconv.ParseInt(string(val), 10, int(intBits(typ.Kind))); err != nil {
				t.Fatalf("%v %q -> %q: %v", typ, in, val, err)
			}
		}
		if typ.Kind == Date {
			if _, err := time.Parse("2006-01-02", string(val)); err != nil {
				t.Fatalf("%q -> %q: %v", in, val, err)
			}
		}
		if typ.Kind == Datetime || typ.Kind == Timestamp {
			if _, err := time.Parse("2006-01-02 15:04:05.999999", string(val)); err != nil {
				t.Fatalf("%q -> %q: %v", in, val, err)
			}
		}
	})
}

func BenchmarkAppendValue(b *testing.B) {
	for _, c := range []struct{ typ, in string }{
		{"int", "-2147483648"}, {"double", "23.125"}, {"decimal(10,2)", "12345.67"}, {"varchar(64)", "sensor-0042-basement"},
		{"date", "2025-02-28"}, {"datetime(6)", "2025-06-01T12:34:56.123456+02:00"}, {"timestamp", "1700000000"}, {"json", `{"a":[1,2,{"b":"c"}]}`},
	} {
		typ := mustType(b, c.typ)
		in := []byte(c.in)
		dst := make([]byte, 0, 64)
		b.Run(c.typ, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				dst, _ = typ.AppendValue(dst[:0], in)
			}
		})
	}
}
