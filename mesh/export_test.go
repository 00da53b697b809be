package mesh

// For the tests of package mesh_test (the in-process cluster tests, which
// use internal/meshtest and so cannot be in package mesh).

// MemberID is the gossip member id of m (role:idc:name).
func MemberID(m Meta) string { return m.memberID() }

// KnownInFile is how many members the members file at path remembers.
func KnownInFile(path string) (int, error) {
	f, err := loadKnown(path)
	if err != nil {
		return 0, err
	}
	return len(f.Members), nil
}
