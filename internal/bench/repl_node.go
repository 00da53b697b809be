package bench

import (
	"context"
	"errors"
	"log/slog"
)

// startMQNodePair starts the primary and its buddy (replicas: 1, sync).
func startMQNodePair(ctx context.Context, o serveOptions, log *slog.Logger) (string, func() error, error) {
	return "", nil, errors.New("mqnode-r1: replication is not in this build yet")
}
