package mqnode

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// openBadger opens the store, turning a panic inside Badger's open (a
// damaged table, a manifest that does not parse) into a refusal with a
// repair path instead of a crash.
func openBadger(opts badger.Options) (db *badger.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: the store in %s is damaged (badger panicked while opening it: %v); "+
				"salvage what can be read into a fresh store with `mqmesh node repair --data %s`", ErrCorrupted, opts.Dir, r, opts.Dir)
		}
	}()
	if err := precheckStore(opts); err != nil {
		return nil, err
	}
	db, err = badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("%w: open badger in %s: %w; if the store is damaged, `mqmesh node repair --data %s` salvages what can be read",
			ErrStorage, opts.Dir, err, opts.Dir)
	}
	return db, nil
}
