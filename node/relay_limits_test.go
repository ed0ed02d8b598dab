package node

import (
	"strings"
	"testing"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/mcpmesh/mcpmesh/limits"
)

// TestRelayAdmissionEndsOnAnswerCancelOrSessionEnd drives a relayed
// session's frame rewrites by hand: a server that never answers a cancelled
// call must not keep the caller's place, nor a session that ends.
func TestRelayAdmissionEndsOnAnswerCancelOrSessionEnd(t *testing.T) {
	n, err := New(WithListenAddrs("/ip4/127.0.0.1/tcp/0"), WithOpen(), WithLimits(limits.Config{MaxConcurrentPerPeer: 1, Rate: -1, Strikes: -1}))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	caller := lpeer.ID("caller-node-id")
	toServer, toClient, end := n.relayTrust(caller, "far", &relayTarget{peer: lpeer.ID("far-node-id"), server: "node"}, nil,
		func(jsonrpc.Message) error { return nil })

	call := func(id string) (refused bool) {
		t.Helper()
		out, reply, err := toServer([]byte(`{"jsonrpc":"2.0","id":` + id + `,"method":"tools/call","params":{"name":"echo"}}`))
		if err != nil {
			t.Fatal(err)
		}
		if reply != nil {
			if out != nil || !strings.Contains(string(reply), "too many concurrent calls") {
				t.Fatalf("call %s: passed %q, answered %q", id, out, reply)
			}
			return true
		}
		return false
	}
	pass := func(dir func([]byte) ([]byte, []byte, error), frame string) {
		t.Helper()
		if dir == nil {
			t.Fatal("no rewrite")
		}
		if _, _, err := dir([]byte(frame)); err != nil {
			t.Fatal(err)
		}
	}

	if call("1") {
		t.Fatal("first call refused")
	}
	if !call("2") {
		t.Fatal("second call admitted over a limit of 1")
	}
	pass(toClient, `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}`)
	if !call("3") {
		t.Fatal("a notification freed the call's place")
	}
	pass(toClient, `{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`)
	if call(`"s"`) {
		t.Fatal("the answer did not free the call's place")
	}
	pass(toServer, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"s","reason":"user"}}`)
	if call("4") {
		t.Fatal("cancelling did not free the call's place")
	}
	pass(toClient, `{"jsonrpc":"2.0","id":4,"error":{"code":-1,"message":"failed"}}`)
	if call("5") {
		t.Fatal("an error answer did not free the call's place")
	}
	end()
	if call("6") {
		t.Fatal("the session's end did not free the call's place")
	}
	end()
}
