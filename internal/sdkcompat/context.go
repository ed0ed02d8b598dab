package sdkcompat

import (
	"context"
	"reflect"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// RejectedCode is the error code of the SDK's Streamable HTTP server
// transport for a message it could not deliver (no stream to carry it: the
// client has no GET stream open, or the request the message related to has
// ended). The session goes on.
const RejectedCode = -32005

// sdkPackage is where the SDK's unexported context keys are declared.
const sdkPackage = "github.com/modelcontextprotocol/go-sdk/mcp"

// The type names of the SDK's context keys that RequestContext answers.
const (
	protocolVersionKey = "protocolVersionContextKey"
	relatedRequestKey  = "idContextKey"
)

// RequestContext returns a context that answers, for the SDK's Streamable
// HTTP server transport, the values its own HTTP handler and server
// sessions would put there: the protocol version of the HTTP request ("" for
// none), and the client request a message from the server relates to
// (invalid for none), which picks the HTTP response stream the message goes
// out on. The SDK keys them with unexported types, recognized here by name
// (go-sdk v1.8.0); TestRequestContextKeysAreTheSDKs fails if a new SDK
// version renames them.
func RequestContext(ctx context.Context, protocolVersion string, related jsonrpc.ID) context.Context {
	return requestContext{Context: ctx, protocolVersion: protocolVersion, related: related}
}

type requestContext struct {
	context.Context
	protocolVersion string
	related         jsonrpc.ID
}

func (c requestContext) Value(key any) any {
	if t := reflect.TypeOf(key); t != nil && t.PkgPath() == sdkPackage {
		switch t.Name() {
		case protocolVersionKey:
			if c.protocolVersion != "" {
				return c.protocolVersion
			}
		case relatedRequestKey:
			if c.related.IsValid() {
				return c.related
			}
		}
	}
	return c.Context.Value(key)
}
