package sqlbridge

import (
	"errors"
	"unicode/utf8"
)

// kine's name column is PostgreSQL text, which cannot hold a NUL byte or
// bytes that are not UTF-8; etcd keys are any bytes. A key that text can
// hold is its own name. In any other key, each NUL, each byte of an invalid
// UTF-8 sequence and each byte of U+FFFF (the escape itself, a noncharacter
// no real key uses) is written as U+FFFF followed by the byte in two
// lower-case hex digits. The mapping is one-to-one and keeps the part of a
// key before its first escaped byte, so prefix lists of ordinary keys still
// find it.
const nameEscape = '\uffff'

// KeyName is the kine name column value for key.
func KeyName(key []byte) string {
	if !needsEscape(key) {
		return string(key)
	}
	out := make([]byte, 0, len(key)+16)
	for i := 0; i < len(key); {
		r, size := utf8.DecodeRune(key[i:])
		if r == 0 || r == nameEscape || (r == utf8.RuneError && size == 1) {
			for _, b := range key[i : i+size] {
				out = utf8.AppendRune(out, nameEscape)
				out = append(out, hexDigits[b>>4], hexDigits[b&15])
			}
		} else {
			out = append(out, key[i:i+size]...)
		}
		i += size
	}
	return string(out)
}

func needsEscape(key []byte) bool {
	for i := 0; i < len(key); {
		r, size := utf8.DecodeRune(key[i:])
		if r == 0 || r == nameEscape || (r == utf8.RuneError && size == 1) {
			return true
		}
		i += size
	}
	return false
}

const hexDigits = "0123456789abcdef"

var errBadName = errors.New("sqlbridge: malformed escape in kine name")

// NameKey reverses KeyName. A name kine itself wrote (no escapes) is its
// own key.
func NameKey(name string) ([]byte, error) {
	key := make([]byte, 0, len(name))
	for i := 0; i < len(name); {
		r, size := utf8.DecodeRuneInString(name[i:])
		if r != nameEscape {
			key = append(key, name[i:i+size]...)
			i += size
			continue
		}
		if i+size+2 > len(name) {
			return nil, errBadName
		}
		hi, lo := unhex(name[i+size]), unhex(name[i+size+1])
		if hi < 0 || lo < 0 {
			return nil, errBadName
		}
		key = append(key, byte(hi<<4|lo))
		i += size + 2
	}
	return key, nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	}
	return -1
}
