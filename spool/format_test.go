package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
	"time"
)

func TestRecordRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Record
	}{
		{"empty", Record{ReceivedAt: time.Unix(0, 1)}},
		{"typical", Record{Stream: []byte("logs"), ContentType: []byte("text/plain"), RemoteAddr: []byte("[::1]:5000"),
			IdempotencyKey: []byte(`"abc"`), ReceivedAt: time.Unix(1_700_000_000, 123), Body: []byte("hello")}},
		{"rows", Record{Stream: []byte("readings"), Flags: FlagRows, ReceivedAt: time.Unix(7, 0), Body: []byte("a\t1\nb\t2\n")}},
		{"no key", Record{Stream: []byte("s"), RemoteAddr: []byte("1.2.3.4:5"), ReceivedAt: time.Unix(5, 0), Body: bytes.Repeat([]byte{0}, 1000)}},
		{"long fields", Record{Stream: bytes.Repeat([]byte("s"), maxMeta), ContentType: bytes.Repeat([]byte("c"), 300),
			IdempotencyKey: bytes.Repeat([]byte("k"), 255), ReceivedAt: time.Unix(-5, 0), Body: bytes.Repeat([]byte{0xff}, 70000)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := appendRecord([]byte("prefix"), &tc.r, 42)[len("prefix"):]
			size, err := recordSize(&tc.r)
			if err != nil || size != int64(len(b)) {
				t.Fatalf("recordSize = %d, %v; encoded %d bytes", size, err, len(b))
			}
			var got Record
			n, err := decode(append(b, "trailing"...), &got)
			if err != nil || n != len(b) {
				t.Fatalf("decode = %d, %v", n, err)
			}
			if got.Seq != 42 {
				t.Fatalf("seq %d", got.Seq)
			}
			want := tc.r
			want.Tag = 0
			sameRecord(t, got, &want)
		})
	}
}

func TestRecordLayout(t *testing.T) {
	r := Record{Stream: []byte("ab"), ContentType: []byte("c"), RemoteAddr: []byte("d"), IdempotencyKey: []byte("ef"),
		ReceivedAt: time.Unix(0, 0x0102030405060708), Body: []byte("xyz")}
	b := appendRecord(nil, &r, 0x1112131415161718)
	le := binary.LittleEndian
	if string(b[:4]) != "UPSP" || b[8] != 1 || b[9] != 0 || le.Uint16(b[10:]) != 2 || le.Uint16(b[12:]) != 1 ||
		le.Uint16(b[14:]) != 1 || le.Uint16(b[16:]) != 2 || le.Uint16(b[18:]) != 0 || le.Uint32(b[20:]) != 3 ||
		le.Uint64(b[24:]) != 0x1112131415161718 || le.Uint64(b[32:]) != 0x0102030405060708 ||
		string(b[40:]) != "abcdefxyz" || len(b) != 49 {
		t.Fatalf("layout differs from the package documentation: % x", b)
	}
	if le.Uint32(b[4:]) != crc32.Checksum(b[8:], crc32.MakeTable(crc32.Castagnoli)) {
		t.Fatal("CRC is not CRC32C of bytes 8..end")
	}
}

// Changing any one byte of a record makes the decoder refuse it (CRC32C
// detects every error burst of up to 32 bits; a changed length makes the
// record short or moves the CRC's span).
func TestEveryFlippedByteRejected(t *testing.T) {
	r := rec(3, 200)
	b := appendRecord(nil, r, 9)
	for i := range b {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			c := bytes.Clone(b)
			c[i] ^= x
			var got Record
			if _, err := decode(c, &got); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("byte %d ^ %#x accepted (err %v)", i, x, err)
			}
		}
	}
}

func TestRecordTooLarge(t *testing.T) {
	for _, r := range []Record{
		{Stream: make([]byte, maxMeta+1)},
		{ContentType: make([]byte, maxMeta+1)},
		{RemoteAddr: make([]byte, maxMeta+1)},
		{IdempotencyKey: make([]byte, maxMeta+1)},
	} {
		if _, err := recordSize(&r); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("recordSize = %v, want ErrTooLarge", err)
		}
	}
}

// FuzzDecode: the decoder never panics, and whatever it accepts has a CRC
// that matches its bytes and encodes back to exactly those bytes.
func FuzzDecode(f *testing.F) {
	good := appendRecord(nil, rec(1, 50), 7)
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add(good[:headerSize])
	f.Add(appendRecord(nil, &Record{}, 1))
	f.Add(append(bytes.Clone(good), good...))
	f.Add([]byte("UPSP"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Record
		n, err := decode(b, &r)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) || n != 0 {
				t.Fatalf("decode error %v with n=%d", err, n)
			}
			return
		}
		if n < headerSize || n > len(b) {
			t.Fatalf("accepted length %d of %d", n, len(b))
		}
		stored := binary.LittleEndian.Uint32(b[offCRC:])
		if crc32.Checksum(b[crcFrom:n], castagnoli) != stored {
			t.Fatal("accepted a record whose CRC does not match")
		}
		if again := appendRecord(nil, &r, r.Seq); !bytes.Equal(again, b[:n]) {
			t.Fatalf("re-encoding differs:\n% x\n% x", again, b[:n])
		}
	})
}

// FuzzFlippedRecord: a valid record with one byte changed is never accepted.
func FuzzFlippedRecord(f *testing.F) {
	f.Add([]byte("body"), []byte("key"), uint16(0), byte(1))
	f.Add([]byte{}, []byte{}, uint16(45), byte(0x80))
	f.Fuzz(func(t *testing.T, body, key []byte, pos uint16, x byte) {
		if x == 0 {
			return
		}
		r := Record{Stream: []byte("s"), RemoteAddr: []byte("a:1"), IdempotencyKey: key, Body: body, ReceivedAt: time.Unix(1, 2)}
		if _, err := recordSize(&r); err != nil {
			return
		}
		b := appendRecord(nil, &r, 5)
		b[int(pos)%len(b)] ^= x
		var got Record
		if _, err := decode(b, &got); err == nil {
			t.Fatalf("record with byte %d ^ %#x accepted", int(pos)%len(b), x)
		}
	})
}

func TestUnknownFlagsAreCorrupt(t *testing.T) {
	b := appendRecord(nil, &Record{Stream: []byte("s"), Flags: FlagRows}, 1)
	if b[9] != FlagRows {
		t.Fatalf("flags byte %d, want FlagRows", b[9])
	}
	b[9] = 2
	var r Record
	if _, err := decode(b, &r); !errors.Is(err, errCorrupt) {
		t.Fatalf("decode with an unknown flag: %v, want corrupt", err)
	}
}
