package transport

import (
	"fmt"
	"strings"

	"github.com/libp2p/go-libp2p/core/protocol"
)

// ProtocolPrefix starts the stream protocol ID of every MCP server a node
// shares; the server's name follows it.
const ProtocolPrefix = "/mcpmesh/mcp/1.0.0/"

// DefaultServer is the name of the server that holds a node's own,
// Go-registered tools, resources and prompts.
const DefaultServer = "node"

// DefaultMaxMessageSize bounds one JSON-RPC frame on a stream.
const DefaultMaxMessageSize = 4 << 20

// ProtocolID returns the stream protocol on which the server called name is
// served.
func ProtocolID(name string) protocol.ID {
	return protocol.ID(ProtocolPrefix + name)
}

// ServerName returns the server name that a stream protocol ID addresses, or
// false if id is not an MCP server protocol.
func ServerName(id protocol.ID) (string, bool) {
	name, ok := strings.CutPrefix(string(id), ProtocolPrefix)
	if !ok || ValidateServerName(name) != nil {
		return "", false
	}
	return name, true
}

// ValidateServerName reports whether name can name a shared server: 1 to 64
// letters, digits, '.', '_' or '-'. Names appear in protocol IDs, in
// SERVER/TOOL references and on command lines, so '/' and spaces are out.
func ValidateServerName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("server name %q: want 1 to 64 characters", name)
	}
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
		default:
			return fmt.Errorf("server name %q: %q is not allowed (use letters, digits, '.', '_' or '-')", name, r)
		}
	}
	return nil
}
