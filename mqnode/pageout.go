package mqnode

import "time"

// Badger v4 maps every value-log file, table and memtable log into memory
// (its FileIO modes are gone since v3), and every page it writes or reads
// through a mapping stays resident in this process — counted in its RSS —
// until the kernel needs the memory back. With a deep backlog that is the
// size of the data on disk (a 10M-task backlog showed 3.9 GiB of mapped
// files). Every Config.PageOutInterval the node asks the kernel to reclaim
// those pages now (opt-in; madvise MADV_PAGEOUT on its shared mappings of value-log
// and table files; pageout_linux.go): RSS stays near the heap, and a read
// of a reclaimed page comes from the disk (or what is left of the page
// cache) again. Memtable logs are left alone: they are small (a few
// memtables) and deleted once flushed, so writing their pages back early
// would be wasted I/O. MADV_PAGEOUT never changes memory contents, so a
// mapping Badger replaces between the scan and the advice is harmless.

func (s *store) runPageOut() {
	if s.cfg.PageOutInterval <= 0 {
		return
	}
	s.every(s.cfg.PageOutInterval, func() {
		if err := pageOutMapped(s.cfg.DataDir); err != nil {
			s.log.Debug("page-out of mapped store files", "err", err)
		}
	})
}

// every runs f every d until the store stops.
func (s *store) every(d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-s.stopBg:
			return
		case <-t.C:
			f()
		}
	}
}
