package transport

import (
	"bytes"
	"fmt"

	"github.com/mcpmesh/mcpmesh/internal/sdkcompat"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// FrameTooLargeError is a frame over a conn's limit that was skipped: the
// session goes on, and whoever waits for the frame can be told why it will
// not come. What the frame was is read from its first and last bytes only.
type FrameTooLargeError struct {
	Size  int    // the frame's length, in bytes
	Limit int    // the limit it is over
	From  string // who sent it
	// ID is the frame's top-level JSON-RPC id, when its first or last bytes
	// show it (most encoders write it first; JavaScript's last).
	ID jsonrpc.ID
	// Request is set when the frame's first bytes show a top-level method:
	// a request (or notification) rather than an answer.
	Request bool
}

func (e *FrameTooLargeError) Error() string {
	return fmt.Sprintf("%v: %d bytes from %s, over the limit of %s", ErrFrameTooLarge, e.Size, e.From, SizeText(e.Limit))
}

// Is makes a FrameTooLargeError an ErrFrameTooLarge.
func (e *FrameTooLargeError) Is(target error) bool { return target == ErrFrameTooLarge }

// Reply is the JSON-RPC error that stands for the frame: for a request,
// the answer to send back to its sender; for an answer, what to give the
// request it answered instead. It is nil when the frame's ID is not known
// (a notification, or an ID the first and last bytes do not show).
func (e *FrameTooLargeError) Reply() *jsonrpc.Response {
	if !e.ID.IsValid() {
		return nil
	}
	what := "the answer"
	if e.Request {
		what = "the request"
	}
	return &jsonrpc.Response{ID: e.ID, Error: &jsonrpc.Error{Code: CodeMessageTooLarge,
		Message: fmt.Sprintf("%s is %d bytes, over the message size limit of %s (%d bytes) on the way from %s", what, e.Size, SizeText(e.Limit), e.Limit, e.From)}}
}

// SizeText shows a byte count as people write limits: "4 MiB", "512 KiB",
// or bytes.
func SizeText(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// How much of a frame over the limit is kept to tell what it was.
const (
	frameHead = 4 << 10
	frameTail = 256
)

// frameID reads the top-level id of a JSON-RPC frame of which only the
// first bytes (head) and the last (tail) are known, and whether the head
// shows a top-level method. The head is walked as JSON, key by key at the
// top level, until it ends; the tail is trusted only in the one shape that
// cannot be nested (..."id":X} or ..."id":X,"jsonrpc":"2.0"} at the very
// end of the frame).
func frameID(head, tail []byte) (jsonrpc.ID, bool) {
	id, method := headID(head)
	if !id.IsValid() {
		id = tailID(tail)
	}
	return id, method
}

// headID walks the top-level members of the object head starts, as far as
// head goes.
func headID(b []byte) (id jsonrpc.ID, method bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return id, false
	}
	i++
	for {
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != '"' {
			return id, method
		}
		end := stringEnd(b, i)
		if end < 0 {
			return id, method
		}
		key := b[i+1 : end-1]
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return id, method
		}
		if string(key) == "method" {
			method = true
		}
		i = skipSpace(b, i+1)
		vend := valueEnd(b, i)
		if vend < 0 {
			return id, method // the head ends inside this value
		}
		if string(key) == "id" {
			id = parseID(b[i:vend])
		}
		i = skipSpace(b, vend)
		if i >= len(b) || b[i] != ',' {
			return id, method
		}
		i++
	}
}

// tailID reads the id of a frame that ends with it (see frameID).
func tailID(b []byte) jsonrpc.ID {
	b = bytes.TrimRight(b, " \t\r\n")
	if len(b) == 0 || b[len(b)-1] != '}' {
		return jsonrpc.ID{}
	}
	b = bytes.TrimRight(b[:len(b)-1], " \t\r\n")
	if v, ok := bytes.CutSuffix(b, []byte(`"2.0"`)); ok {
		// ..."id":X,"jsonrpc":"2.0"}
		v = bytes.TrimRight(v, " \t\r\n")
		if v, ok = bytes.CutSuffix(v, []byte(":")); !ok {
			return jsonrpc.ID{}
		}
		v = bytes.TrimRight(v, " \t\r\n")
		if v, ok = bytes.CutSuffix(v, []byte(`"jsonrpc"`)); !ok {
			return jsonrpc.ID{}
		}
		v = bytes.TrimRight(v, " \t\r\n")
		if v, ok = bytes.CutSuffix(v, []byte(",")); !ok {
			return jsonrpc.ID{}
		}
		b = bytes.TrimRight(v, " \t\r\n")
	}
	// b ends with the id's value: a number, or a string without escapes.
	start := len(b)
	if start > 0 && b[start-1] == '"' {
		start = bytes.LastIndexByte(b[:start-1], '"')
		if start < 0 || bytes.IndexByte(b[start:], '\\') >= 0 {
			return jsonrpc.ID{}
		}
	} else {
		for start > 0 && (b[start-1] >= '0' && b[start-1] <= '9' || b[start-1] == '-') {
			start--
		}
	}
	if start == len(b) {
		return jsonrpc.ID{}
	}
	value := b[start:]
	rest := bytes.TrimRight(b[:start], " \t\r\n")
	rest, ok := bytes.CutSuffix(rest, []byte(":"))
	if !ok {
		return jsonrpc.ID{}
	}
	if !bytes.HasSuffix(bytes.TrimRight(rest, " \t\r\n"), []byte(`"id"`)) {
		return jsonrpc.ID{}
	}
	return parseID(value)
}

// parseID reads an id as the SDK's decoder does (invalid if raw is none).
func parseID(raw []byte) jsonrpc.ID {
	if id, err := sdkcompat.DecodeID(raw); err == nil {
		return id
	}
	return jsonrpc.ID{}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// stringEnd returns the index after the string that starts at b[i] ('"'),
// or -1 if b ends first.
func stringEnd(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// valueEnd returns the index after the JSON value that starts at b[i], or
// -1 if b ends first.
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end := stringEnd(b, j)
				if end < 0 {
					return -1
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	}
	for j := i; j < len(b); j++ {
		switch b[j] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return j
		}
	}
	return -1
}
