package mqnode

import (
	"context"
	"maps"
	"os"
	"sync"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// W3C trace context (traceparent, tracestate) travels in task headers, so
// a producer's OpenTelemetry trace continues into the handler: the worker
// extracts it into the handler's context (package worker).
var traceProp = propagation.TraceContext{}

// InjectTrace adds ctx's span context to headers (a new map when headers
// is nil) and returns them; unchanged when ctx carries no valid span.
func InjectTrace(ctx context.Context, headers map[string]string) map[string]string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return headers
	}
	if headers == nil {
		headers = map[string]string{}
	}
	traceProp.Inject(ctx, propagation.MapCarrier(headers))
	return headers
}

// ExtractTrace returns ctx with the span context in headers as its remote
// parent (ctx unchanged when headers carry none).
func ExtractTrace(ctx context.Context, headers map[string]string) context.Context {
	if headers[HeaderTraceParent] == "" {
		return ctx
	}
	return traceProp.Extract(ctx, propagation.MapCarrier(headers))
}

var hostName = sync.OnceValue(func() string {
	h, _ := os.Hostname()
	return h
})

// stampItems gives each item, unless it has its own, ctx's trace context.
// Items whose headers change get a copy of their map. (The producer goes
// once per request, EnqueueRequest.producer, not as a header per task: a
// header map costs every task about 2 µs of protobuf work at each hop.)
func stampItems(ctx context.Context, items []*EnqueueItem) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	for _, it := range items {
		if it == nil || it.Headers[HeaderTraceParent] != "" {
			continue
		}
		h := maps.Clone(it.Headers)
		if h == nil {
			h = map[string]string{}
		}
		traceProp.Inject(ctx, propagation.MapCarrier(h))
		it.Headers = h
	}
}

// producerName names a client's connection for the trace.
func (c *Client) producerName() string {
	name := c.nc.Opts.Name
	if name == "" {
		name = "client"
	}
	return name + "@" + hostName()
}
