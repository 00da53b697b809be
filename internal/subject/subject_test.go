package subject

import (
	"errors"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	good := []string{"a", "orders", "idc-1", "Node_7", strings.Repeat("x", MaxTokenLen)}
	for _, s := range good {
		if err := Validate("queue", s); err != nil {
			t.Errorf("Validate(%q) = %v, want nil", s, err)
		}
	}
	bad := []string{"", "a.b", "a.>", "*", ">", "a b", "a\tb", "_sys", "é", strings.Repeat("x", MaxTokenLen+1), "a\x00"}
	for _, s := range bad {
		err := Validate("queue", s)
		if !errors.Is(err, ErrInvalidToken) {
			t.Errorf("Validate(%q) = %v, want ErrInvalidToken", s, err)
		}
		if err != nil && !strings.Contains(err.Error(), "queue") {
			t.Errorf("error %q does not name the field", err)
		}
	}
}

func FuzzValidate(f *testing.F) {
	for _, s := range []string{"a", "a.b", "a.>", "*", "_x", " "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !ValidToken(s) {
			return
		}
		if strings.ContainsAny(s, ".*> \t\r\n") || s == "" || len(s) > MaxTokenLen {
			t.Fatalf("accepted %q", s)
		}
	})
}
