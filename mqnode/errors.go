package mqnode

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/mqmesh/mqmesh/internal/subject"
	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// Sentinel errors. Every error a node returns over the wire carries a stable
// code (wirepb.Code); the client maps it back to one of these, so callers can
// branch with errors.Is on either side of the wire.
var (
	ErrBadRequest      = errors.New("mqnode: bad request")
	ErrInvalidName     = errors.New("mqnode: invalid name")
	ErrPayloadTooLarge = errors.New("mqnode: payload too large")
	ErrUnknownQueue    = errors.New("mqnode: unknown queue")
	ErrStaleReceipt    = errors.New("mqnode: stale receipt")
	ErrNotFound        = errors.New("mqnode: not found")
	ErrUnavailable     = errors.New("mqnode: unavailable")
	ErrStorage         = errors.New("mqnode: storage error")
	ErrDiskFull        = errors.New("mqnode: disk full")
	// ErrCorrupted: the store is damaged past what the node repairs by
	// itself; it refuses to start (see `mqmesh node repair`).
	ErrCorrupted = fmt.Errorf("%w: store damaged", ErrStorage)
	ErrInternal  = errors.New("mqnode: internal error")
	ErrUnknownOp = errors.New("mqnode: unknown operation")
	// ErrPermissionDenied: the connection's credentials (its role) do not
	// allow the request; the NATS server refused it (see internal/secrets).
	ErrPermissionDenied = errors.New("mqnode: permission denied")
	// ErrNoSubscribers: an enqueue to topic:T matched no subscription of T.
	ErrNoSubscribers = errors.New("mqnode: no subscribers")
	// ErrFenced: replication refused a write of an epoch that is not
	// current: the node's buddy took its tasks over (replicate.go). The
	// node reconciles before it serves again.
	ErrFenced = errors.New("mqnode: fenced by a newer replication epoch")
	// ErrClosed is returned by a Store or Node used after Stop.
	ErrClosed = fmt.Errorf("%w: closed", ErrUnavailable)
)

var codeToErr = map[wirepb.Code]error{
	wirepb.Code_BAD_REQUEST:       ErrBadRequest,
	wirepb.Code_INVALID_NAME:      ErrInvalidName,
	wirepb.Code_PAYLOAD_TOO_LARGE: ErrPayloadTooLarge,
	wirepb.Code_UNKNOWN_QUEUE:     ErrUnknownQueue,
	wirepb.Code_STALE_RECEIPT:     ErrStaleReceipt,
	wirepb.Code_NOT_FOUND:         ErrNotFound,
	wirepb.Code_UNAVAILABLE:       ErrUnavailable,
	wirepb.Code_STORAGE:           ErrStorage,
	wirepb.Code_DISK_FULL:         ErrDiskFull,
	wirepb.Code_INTERNAL:          ErrInternal,
	wirepb.Code_UNKNOWN_OP:        ErrUnknownOp,
	wirepb.Code_PERMISSION_DENIED: ErrPermissionDenied,
	wirepb.Code_NO_SUBSCRIBERS:    ErrNoSubscribers,
	wirepb.Code_FENCED:            ErrFenced,
}

// RemoteError is an error reply from a node: its stable code and message.
// errors.Is(err, ErrStaleReceipt) and friends work on it.
type RemoteError struct {
	Code    wirepb.Code
	Message string
}

func (e *RemoteError) Error() string { return e.Message }

// Unwrap returns the sentinel for the code.
func (e *RemoteError) Unwrap() error { return codeToErr[e.Code] }

// CodeOf returns the wire code for err (OK for nil).
func CodeOf(err error) wirepb.Code {
	if err == nil {
		return wirepb.Code_OK
	}
	if errors.Is(err, syscall.ENOSPC) {
		return wirepb.Code_DISK_FULL
	}
	if errors.Is(err, subject.ErrInvalidToken) {
		return wirepb.Code_INVALID_NAME
	}
	var re *RemoteError
	if errors.As(err, &re) {
		return re.Code
	}
	for code, sentinel := range codeToErr {
		if errors.Is(err, sentinel) {
			return code
		}
	}
	return wirepb.Code_INTERNAL
}

func toWireError(err error) *wirepb.Error {
	if err == nil {
		return nil
	}
	return &wirepb.Error{Code: CodeOf(err), Message: err.Error()}
}

func fromWireError(e *wirepb.Error) error {
	if e == nil || e.Code == wirepb.Code_OK {
		return nil
	}
	return &RemoteError{Code: e.Code, Message: e.Message}
}

// storageErr classifies a write failure: ENOSPC becomes ErrDiskFull, anything
// else ErrStorage. The cause stays in the chain.
func storageErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: %w", ErrDiskFull, err)
	}
	if errors.Is(err, ErrClosed) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrStorage, err)
}
