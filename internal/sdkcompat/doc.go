// Package sdkcompat holds every place where mcpmesh depends on how the
// official MCP Go SDK (github.com/modelcontextprotocol/go-sdk, the version
// in go.mod) behaves beyond its documented API, or works around it:
//
//   - [DecodeMessage] reads a JSON-RPC frame exactly as the SDK's
//     jsonrpc.DecodeMessage does, without its 32 KiB decoder buffer per
//     call; [DecodeFrame] also gives the id as sent, which the SDK's
//     jsonrpc.ID (an int64 or a string) cannot always hold, and
//     [EncodeResponse] puts it back on the answer, relying on the SDK
//     writing the id right after "jsonrpc";
//   - [RequestContext] answers the SDK's unexported context keys, which its
//     Streamable HTTP server transport reads to pick a message's HTTP
//     stream, and [RejectedCode] is the error that transport returns for a
//     message it had no stream for;
//   - [OnConnect] captures the connection the SDK makes, to write
//     notifications the SDK has no call for (a list_changed to one session);
//   - [WatchReads] sees every message a connection reads before the SDK
//     does, because the SDK's client hands notifications to handlers on
//     goroutines of their own while it gives a result straight to the
//     waiting call (so a progress notification read before a result can be
//     handled after it);
//   - [InputRequiredResult] builds a result that asks for input (multi
//     round-trip), whose resultType is private to the SDK's result types.
//
// The tests of this package pin each of these behaviours: an SDK upgrade
// that changes one fails here, with a message that says which workaround to
// revisit, rather than somewhere down the data path.
package sdkcompat
