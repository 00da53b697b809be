//go:build !unix

package bench

import "io/fs"

// allocated is the disk space a file takes; here, its size.
func allocated(info fs.FileInfo) int64 { return info.Size() }
