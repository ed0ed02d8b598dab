// Package fuzzseed holds the real messages that seed the fuzz targets of
// more than one package.
package fuzzseed

// RelayFrames returns frames a client may send through a relay: tools/call
// requests with and without a task context (the path ending with caller),
// contexts already through relay, spent budgets, bad contexts, a key in the
// arguments, and frames that are not JSON. They seed the relay's fuzz
// targets (mcp/relay, peer/trust).
func RelayFrames(callerStr, relayStr string) []string {
	ctx := "0123456789abcdef0123456789abcdef fedcba9876543210fedcba9876543210 fedcba9876543210fedcba9876543210 8 30000 0 " + callerStr
	return []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"},"_meta":{"io.mcpmesh/task":"` + ctx + `","traceparent":"00-fedcba9876543210fedcba9876543210-0123456789abcdef-01"}}}`,
		`{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"_meta" : { "io.mcpmesh/task" : "` + ctx + `" },"name":"echo"}}`,
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"io.mcpmesh/task":"` + ctx + `"},"_meta":{"io.mcpmesh/task":"` + ctx + `"}}}`,
		`{"jsonrpc":"2.0","method":"tools/call","params":{"name":"echo","_meta":{"io.mcpmesh/task":"` + ctx + `"}}}`,
		`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","_meta":{"io.mcpmesh/task":"0123456789abcdef0123456789abcdef fedcba9876543210fedcba9876543210 - 8 0 0 ` + relayStr + `,` + callerStr + `"}}}`,
		`{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","_meta":{"io.mcpmesh/task":"0123456789abcdef0123456789abcdef fedcba9876543210fedcba9876543210 - 0 0 0 ` + callerStr + `"}}}`,
		`{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","_meta":{"io.mcpmesh/task":"bad"}}}`,
		`{"jsonrpc":"2.0","id":6,"method":"ping","params":{"_meta":{"io.mcpmesh/task":"` + ctx + `"}}}`,
		`{"jsonrpc":"2.0","id":7,"result":{"_meta":{"io.mcpmesh/task":{"task":"t","state":"completed"}}}}`,
		`{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"echo","arguments":{"text":"\"io.mcpmesh/task\""}}}`,
		`not json "io.mcpmesh/task"`,
	}
}
