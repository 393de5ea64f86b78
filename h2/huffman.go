package h2

// Huffman decoding (RFC 7541 §5.2) with a binary tree built once from
// huffmanCodes: a bit at a time, which is fast enough for header blocks of
// a few hundred bytes and needs 2 KiB of tables shared by every Conn.

// huffTree[n] are node n's children for bit 0 and 1: a positive value is
// another node, a negative one -1-symbol (a leaf), 0 no code.
var huffTree = buildHuffTree()

const huffEOS = 256

func buildHuffTree() [][2]int16 {
	t := make([][2]int16, 1, 512)
	add := func(sym int, code uint32, n uint8) {
		node := 0
		for i := int(n) - 1; i >= 0; i-- {
			bit := code >> uint(i) & 1
			if i == 0 {
				t[node][bit] = int16(-1 - sym)
				return
			}
			next := int(t[node][bit])
			if next == 0 {
				t = append(t, [2]int16{})
				next = len(t) - 1
				t[node][bit] = int16(next)
			}
			node = next
		}
	}
	for s := 0; s < 256; s++ {
		add(s, huffmanCodes[s], huffmanCodeLen[s])
	}
	add(huffEOS, 0x3fffffff, 30)
	return t
}

// huffDecode appends the decoding of src to dst. It fails if the result
// would pass limit bytes, on the EOS symbol, and on padding longer than 7
// bits or not all ones (RFC 7541 §5.2).
func huffDecode(dst, src []byte, limit int) ([]byte, hpackErr) {
	node, depth, ones := 0, 0, true
	for _, b := range src {
		for i := 7; i >= 0; i-- {
			bit := b >> uint(i) & 1
			next := int(huffTree[node][bit])
			depth++
			ones = ones && bit == 1
			switch {
			case next > 0:
				node = next
			case next < 0:
				sym := -1 - next
				if sym == huffEOS {
					return dst, hpackBad
				}
				if len(dst) >= limit {
					return dst, hpackTooLarge
				}
				dst = append(dst, byte(sym))
				node, depth, ones = 0, 0, true
			default:
				return dst, hpackBad
			}
		}
	}
	if depth > 7 || !ones {
		return dst, hpackBad
	}
	return dst, hpackOK
}

// huffLen is the length of s Huffman-coded.
func huffLen(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		n += int(huffmanCodeLen[s[i]])
	}
	return (n + 7) / 8
}

// appendHuff appends s Huffman-coded, padded with ones.
func appendHuff(dst []byte, s string) []byte {
	var acc uint64
	var n uint
	for i := 0; i < len(s); i++ {
		l := uint(huffmanCodeLen[s[i]])
		acc = acc<<l | uint64(huffmanCodes[s[i]])
		n += l
		for n >= 8 {
			n -= 8
			dst = append(dst, byte(acc>>n))
		}
	}
	if n > 0 {
		dst = append(dst, byte(acc<<(8-n)|0xff>>n))
	}
	return dst
}
