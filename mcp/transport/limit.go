package transport

import (
	"fmt"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/mcpmesh/mcpmesh/internal/sdkcompat"
)

// LimitError is a message not sent because it is over the message size
// limit of the session that would carry it. It says which message, its size
// and the limit, in words a user can act on.
//
// Its cause (errors.Unwrap) is the SDK's "rejected by transport" error: the
// SDK then fails that one call and keeps the session, as it should, since
// nothing was written.
type LimitError struct {
	Message string // what was not sent: "a tools/call request", "the result of request 3"
	Size    int    // its encoded size, in bytes; 0 if unknown (read only up to the limit)
	Limit   int    // the limit, in bytes
	Request bool   // a request or notification, not an answer to one
}

func (e *LimitError) Error() string {
	what := e.Message
	if e.Size > 0 {
		what += " of " + Size(e.Size)
	}
	return fmt.Sprintf("%s is over the message size limit of %s (a node's --max-message-size sets it)", what, Size(e.Limit))
}

// Unwrap returns the SDK's rejection, so that the SDK keeps the session.
func (e *LimitError) Unwrap() error {
	return &jsonrpc.Error{Code: sdkcompat.RejectedCode, Message: e.Error()}
}

// JSONRPC returns the error as the answer to a request: -32600 (invalid
// request) for a request over the limit, -32603 (internal error) for a
// result over it.
func (e *LimitError) JSONRPC() *jsonrpc.Error {
	if e.Request {
		return &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: e.Error()}
	}
	return &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: e.Error()}
}

// Size writes a byte count as people read limits: "4 MiB (4194304 bytes)"
// for whole mebibytes, "5.0 MiB (5242939 bytes)" above one, else bytes.
func Size(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB (%d bytes)", n>>20, n)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB (%d bytes)", float64(n)/(1<<20), n)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB (%d bytes)", n>>10, n)
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}

// describe names a message for a LimitError.
func describe(msg jsonrpc.Message) string {
	switch m := msg.(type) {
	case *jsonrpc.Request:
		if m.IsCall() {
			return "a " + m.Method + " request"
		}
		return "a " + m.Method + " notification"
	case *jsonrpc.Response:
		if m.Error != nil {
			return fmt.Sprintf("the error answering request %v", m.ID.Raw())
		}
		return fmt.Sprintf("the result of request %v", m.ID.Raw())
	}
	return "a message"
}
