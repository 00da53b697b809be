//go:build !linux

package mqnode

import "io/fs"

// backFile is a no-op where fallocate is not available: the reserve alone
// guards Badger's mapped files.
func backFile(string, int64) (int64, error) { return 0, nil }

// sparseBytes is unknown here: 0.
func sparseBytes(fs.FileInfo) int64 { return 0 }
