package mqnode

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// A stored record is a frame: format version (1 byte), CRC32C of the body
// (4 bytes, little endian), body (protobuf). The checksum is verified before
// a task is delivered; a mismatch sends the raw frame to the dead letter queue.
const frameVersion = 1

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is returned by decodeFrame for a record that fails its checksum
// or cannot be parsed.
var ErrCorrupt = fmt.Errorf("%w: corrupt record", ErrStorage)

func encodeFrame(m proto.Message) ([]byte, error) {
	out, err := proto.MarshalOptions{}.MarshalAppend(make([]byte, 5), m) // one allocation: header and body
	if err != nil {
		return nil, fmt.Errorf("%w: encode record: %w", ErrInternal, err)
	}
	out[0] = frameVersion
	binary.LittleEndian.PutUint32(out[1:], crc32.Checksum(out[5:], castagnoli))
	return out, nil
}

func decodeFrame(b []byte, m proto.Message) error {
	if len(b) < 5 {
		return fmt.Errorf("%w: frame of %d bytes", ErrCorrupt, len(b))
	}
	if b[0] != frameVersion {
		return fmt.Errorf("%w: unknown frame version %d", ErrCorrupt, b[0])
	}
	body := b[5:]
	want := binary.LittleEndian.Uint32(b[1:])
	if got := crc32.Checksum(body, castagnoli); got != want {
		return fmt.Errorf("%w: checksum mismatch (stored %08x, computed %08x)", ErrCorrupt, want, got)
	}
	if err := proto.Unmarshal(body, m); err != nil {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return nil
}

func encodeTask(t *wirepb.Task) ([]byte, error) {
	return encodeFrame(&wirepb.StoredTask{Task: t})
}

func decodeTask(b []byte) (*wirepb.Task, error) {
	var st wirepb.StoredTask
	if err := decodeFrame(b, &st); err != nil {
		return nil, err
	}
	if st.Task == nil || st.Task.Id == "" {
		return nil, fmt.Errorf("%w: record has no task", ErrCorrupt)
	}
	return st.Task, nil
}
