// Package passthrough holds the tests that define what "faithful" means for a
// server shared through the mesh (issue 12): a host, and the program it talks
// to, must see through the mesh exactly what they see directly, but for the
// mesh's own _meta keys (io.mcpmesh/…) and the differences MCP allows a
// transport.
//
// The tests use only the stable outside of mcpmesh: the built binaries
// (daemons in separate processes, `mcpmesh stdio --to`, the HTTP gateway's
// /mcp and /mcp/PEER/SERVER), real MCP programs and clients nobody here wrote
// (npm packages under interop/, installed by .ci/run; the mark3labs mcp-go
// client) and raw JSON-RPC written by a scripted client.
//
//	go test ./interop/passthrough -count=1 -v
//
// Without the npm packages the tests skip on a developer's machine; with
// CI=true they fail instead.
package passthrough
