//go:build !linux

package mqnode

// pageOutMapped does nothing off Linux (no MADV_PAGEOUT).
func pageOutMapped(string) error { return nil }
