package statexfer

import (
	"encoding/binary"
	"fmt"
)

// checkMsgpack walks a msgpack document without decoding it and rejects
// any array, map, string or binary whose declared length exceeds the bytes
// left (every element takes at least one byte), trailing bytes, and nesting
// deeper than 32, so a hostile handshake payload cannot make the decoder
// allocate gigabytes before failing.
func checkMsgpack(b []byte) error {
	rest, err := skipMsgpack(b, 0)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrMetadata, len(rest))
	}
	return nil
}

func skipMsgpack(b []byte, depth int) ([]byte, error) {
	bad := func(what string) ([]byte, error) {
		return nil, fmt.Errorf("%w: malformed msgpack: %s", ErrMetadata, what)
	}
	if depth > 32 {
		return bad("nested too deeply")
	}
	if len(b) == 0 {
		return bad("truncated")
	}
	c, b := b[0], b[1:]
	// n reads a big-endian length of k bytes.
	n := func(k int) (int, bool) {
		if len(b) < k {
			return 0, false
		}
		var v uint64
		for i := 0; i < k; i++ {
			v = v<<8 | uint64(b[i])
		}
		b = b[k:]
		if v > uint64(len(b)) {
			return 0, false
		}
		return int(v), true
	}
	skip := func(k int) ([]byte, error) {
		if len(b) < k {
			return bad("truncated")
		}
		return b[k:], nil
	}
	items := func(count int) ([]byte, error) {
		var err error
		for i := 0; i < count; i++ {
			if b, err = skipMsgpack(b, depth+1); err != nil {
				return nil, err
			}
		}
		return b, nil
	}
	switch {
	case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
		return b, nil
	case c&0xf0 == 0x80: // fixmap
		return items(2 * int(c&0x0f))
	case c&0xf0 == 0x90: // fixarray
		return items(int(c & 0x0f))
	case c&0xe0 == 0xa0: // fixstr
		return skip(int(c & 0x1f))
	}
	switch c {
	case 0xc4, 0xd9: // bin8, str8
		l, ok := n(1)
		if !ok {
			return bad("length past the end")
		}
		return skip(l)
	case 0xc5, 0xda:
		l, ok := n(2)
		if !ok {
			return bad("length past the end")
		}
		return skip(l)
	case 0xc6, 0xdb:
		l, ok := n(4)
		if !ok {
			return bad("length past the end")
		}
		return skip(l)
	case 0xc7, 0xc8, 0xc9: // ext: length, type, data
		k := map[byte]int{0xc7: 1, 0xc8: 2, 0xc9: 4}[c]
		l, ok := n(k)
		if !ok {
			return bad("length past the end")
		}
		return skip(1 + l)
	case 0xca, 0xce, 0xd2:
		return skip(4)
	case 0xcb, 0xcf, 0xd3:
		return skip(8)
	case 0xcc, 0xd0:
		return skip(1)
	case 0xcd, 0xd1:
		return skip(2)
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16 (+ type)
		return skip(1 + 1<<(c-0xd4))
	case 0xdc, 0xde: // array16, map16
		if len(b) < 2 {
			return bad("truncated")
		}
		cnt := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		if c == 0xde {
			cnt *= 2
		}
		if cnt > len(b) {
			return bad("count past the end")
		}
		return items(cnt)
	case 0xdd, 0xdf: // array32, map32
		if len(b) < 4 {
			return bad("truncated")
		}
		cnt := uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
		if c == 0xdf {
			cnt *= 2
		}
		if cnt > uint64(len(b)) {
			return bad("count past the end")
		}
		return items(int(cnt))
	}
	return bad(fmt.Sprintf("type byte 0x%02x", c))
}
