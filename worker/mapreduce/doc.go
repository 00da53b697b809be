// Package mapreduce runs batch-parallel business logic inside a handler:
// group the work by destination, run the batches in parallel on a named,
// sized pool, fold the results — and nest, compose and cancel such stages
// without the stages starving each other.
//
// # The group-message example
//
// A handler gets one message for a group chat of N members and must deliver
// it to every member. Each member is connected to one access server; an
// access server takes a batch call of up to 50 members. The job is:
//
//  1. group the members by access server, in batches of at most 50;
//  2. call the servers in parallel, at most 32 calls at once (pool "rpc");
//  3. inside each call, push to each member's devices (pool "push": a
//     nested stage per batch);
//  4. fold the results into delivered and failed counts.
//
// Pools are configured by name and built once per process:
//
//	pools, err := mapreduce.NewPools(mapreduce.PoolsConfig{"rpc": 32, "push": 64})
//	// err names a bad entry: `mapreduce: pools.rpc: size 0, want at least 1`
//	rpc, _ := pools.Get("rpc")
//	push, _ := pools.Get("push")
//
// A Stage says how to cut the items and what to run per batch. Its type
// parameters are the item (Member), the key (string: the server) and the
// batch result (Counts):
//
//	deliver := mapreduce.Stage[Member, string, Counts]{
//	    Name:      "deliver",
//	    Pool:      rpc,
//	    Key:       func(m Member) string { return m.Server },
//	    BatchSize: 50,
//	    Policy:    mapreduce.Collect, // one bad server must not lose the others' counts
//	    Map: func(ctx context.Context, b mapreduce.Batch[string, Member]) (Counts, error) {
//	        // A nested stage: it waits on pool "push" only, never on "rpc".
//	        return mapreduce.MapReduce(ctx, pushStage, b.Items, Counts{}, addCounts)
//	    },
//	}
//	total, err := mapreduce.MapReduce(ctx, deliver, members, Counts{}, addCounts)
//
// where pushStage is a Stage on pool "push" keyed by device kind, and
//
//	func addCounts(acc Counts, _ mapreduce.Batch[string, Member], c Counts) Counts {
//	    return Counts{acc.Delivered + c.Delivered, acc.Failed + c.Failed}
//	}
//
// Batches groups keys in order of first appearance and keeps the input
// order within a key; batch indexes count from 0 in that order. The reduce
// function runs in the caller's goroutine, in batch order, once per
// successful batch, so it needs no locking. Map returns the per-batch
// results instead when there is nothing to fold. The runnable version is
// Example_groupMessage.
//
// # Pools and nesting
//
// A stage takes one slot of its pool per running batch and waits on that
// pool only. While a batch runs it holds its slot, so a nested stage on the
// same pool can deadlock: when every slot is held by an outer batch, each
// waits for an inner batch that waits for a slot. Give every nesting level
// a pool of its own (as "rpc" and "push" above): an outer stage holding
// every slot of its pool can then never block an inner stage. A stall on a
// shared pool still ends at the context's deadline, with an error wrapping
// context.DeadlineExceeded. Pool.Stats and Pools.Stats report busy slots,
// batches waiting, batches completed and the total time spent waiting.
//
// # Errors, cancellation, panics
//
// Each stage has an ErrorPolicy. FailFast (the default) cancels the
// context of the batches still running, starts no more, and returns the
// first error and no results. Collect runs every batch and returns the
// results of those that succeeded with errors.Join of a *BatchError per
// failed batch (stage, key, index). A context that is done stops a stage
// from taking more slots — waiting for a slot returns at once — and the
// batches never started are reported with the context's error. A panic in
// a map, reduce or step function is returned as a *PanicError carrying the
// value and the stack. Every stage returns only after all the batches it
// started have returned: no goroutine outlives the call.
//
// # Composition
//
// A Step is func(ctx, in) (out, error); Stage.Step turns a stage into one.
// Then chains two steps (serial), Both runs two steps on the same input at
// once (parallel), and Parallel and Serial do the same for plain functions.
// The parallel forms are fail-fast and hold no pool slot themselves.
package mapreduce
