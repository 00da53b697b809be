//go:build !linux

package mqnode

// backFile is a no-op where fallocate is not available: the reserve alone
// guards Badger's mapped files.
func backFile(string, int64) (int64, error) { return 0, nil }
