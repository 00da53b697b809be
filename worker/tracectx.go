package worker

import (
	"context"

	"go.opentelemetry.io/otel/trace"

	"github.com/mqmesh/mqmesh/mqnode"
)

// SpanContext is the producer's OpenTelemetry span context, carried in the
// task's W3C traceparent header (invalid when the producer had none). The
// handler's ctx already carries it as the remote parent, so a span started
// from ctx continues the producer's trace.
func (t *Task) SpanContext() trace.SpanContext {
	return trace.SpanContextFromContext(mqnode.ExtractTrace(context.Background(), t.Headers))
}

// TraceHeaders returns headers carrying ctx's trace context, for a
// subtask (Subtask.Headers) so it continues the same trace.
func TraceHeaders(ctx context.Context, headers map[string]string) map[string]string {
	return mqnode.InjectTrace(ctx, headers)
}
