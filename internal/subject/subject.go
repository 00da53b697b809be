// Package subject validates the names that become NATS subject tokens in
// mqmesh: IDC names, node names, queue names, worker ids.
//
// A token must be 1..MaxTokenLen bytes of ASCII letters, digits, '-' and '_',
// and must not start with '_' (names beginning with an underscore are kept for
// the system). Anything else — a '.', '*', '>', white space, control bytes,
// non-ASCII — is refused with an error naming the field, never silently fixed:
// a queue called "a.>" must not become a wildcard.
package subject

import (
	"errors"
	"fmt"
)

// MaxTokenLen is the longest name accepted as a subject token.
const MaxTokenLen = 64

// ErrInvalidToken is wrapped by every validation error of this package.
var ErrInvalidToken = errors.New("invalid name")

// ValidToken reports whether s may be used as a subject token.
func ValidToken(s string) bool { return checkToken(s) == "" }

// Validate returns nil when s is a valid token, else an error wrapping
// ErrInvalidToken that names the field (e.g. "queue") and the problem.
func Validate(field, s string) error {
	if why := checkToken(s); why != "" {
		return fmt.Errorf("%w: %s %q %s", ErrInvalidToken, field, s, why)
	}
	return nil
}

func checkToken(s string) string {
	if s == "" {
		return "is empty"
	}
	if len(s) > MaxTokenLen {
		return fmt.Sprintf("is longer than %d bytes", MaxTokenLen)
	}
	if s[0] == '_' {
		return "starts with '_' (reserved)"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		case c == '.' || c == '*' || c == '>':
			return fmt.Sprintf("contains %q (subject separator or wildcard)", c)
		case c <= ' ' || c == 0x7f:
			return "contains white space or a control character"
		default:
			return fmt.Sprintf("contains %q (allowed: letters, digits, '-', '_')", c)
		}
	}
	return ""
}
