package trust

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/mcpmesh/mcpmesh/audit"
	"github.com/mcpmesh/mcpmesh/internal/fuzzseed"
	"github.com/mcpmesh/mcpmesh/internal/sdkcompat"
	"github.com/mcpmesh/mcpmesh/limits"
	"github.com/mcpmesh/mcpmesh/mcp/relay"
	"github.com/mcpmesh/mcpmesh/peer/delegation"
	"github.com/mcpmesh/mcpmesh/peer/policy"
)

// TestRelayAdmissionEndsOnAnswerCancelOrSessionEnd drives a relayed
// session's frame rewrites by hand: a server that never answers a cancelled
// call must not keep the caller's place, nor a session that ends.
func TestRelayAdmissionEndsOnAnswerCancelOrSessionEnd(t *testing.T) {
	g := newGuard(t, policy.Open(), limits.Config{MaxConcurrentPerPeer: 1, Rate: -1, Strikes: -1})
	caller := lpeer.ID("caller-node-id")
	toServer, toClient, end := g.RelayRewrites(caller, "far", Target{Peer: lpeer.ID("far-node-id"), Server: "node"}, nil,
		func(jsonrpc.Message) error { return nil })

	call := func(id string) (refused bool) {
		t.Helper()
		out, reply, err := relay.Apply(toServer, []byte(`{"jsonrpc":"2.0","id":`+id+`,"method":"tools/call","params":{"name":"echo"}}`))
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
	pass := func(dir relay.FrameRewrite, frame string) {
		t.Helper()
		if dir == nil {
			t.Fatal("no rewrite")
		}
		if _, _, err := relay.Apply(dir, []byte(frame)); err != nil {
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
	end(nil)
	if call("6") {
		t.Fatal("the session's end did not free the call's place")
	}
	end(nil)
}

// FuzzRelayTrust drives a relayed session's trust rewrites (policy,
// delegation, limits, list filtering and remembering, call admission and
// audit) with arbitrary frames both ways: a client's to the server, a
// server's to the client. Nothing may panic; a frame from the client is
// passed on, answered or breaks the session (only if it does not decode);
// a frame from the server is passed on or breaks the session; and when the
// session ends, every admission it held is released.
func FuzzRelayTrust(f *testing.F) {
	for _, s := range fuzzseed.RelayFrames(lpeer.ID("caller-node-id").String(), lpeer.ID("relay-node-id").String()) {
		f.Add([]byte(s), []byte(`{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo","inputSchema":{"type":"object"}}]}}`))
	}
	f.Add([]byte(`{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"cursor":"x"}}`), []byte(`{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"pay"},{"name":"echo"}]}}`))
	f.Add([]byte(`{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"see tools/list"}]}}`), []byte(`{"jsonrpc":"2.0","id":3,"error":{"code":-1,"message":"x"}}`))
	f.Add([]byte(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}`), []byte(`{"jsonrpc":"2.0","id":1,"result":{"isError":true}}`))
	f.Add([]byte(`{"jsonrpc":"2.0","id":2,"method":"prompts/list"}`), []byte(`{"jsonrpc":"2.0","id":2,"result":{"prompts":"nope"}}`))

	pol, err := policy.Parse([]byte(`{"grants":[{"peers":["*"],"server":"far","tools":["echo"]}]}`))
	if err != nil {
		f.Fatal(err)
	}
	g := newGuard(f, pol, limits.Config{MaxConcurrentPerPeer: 4, Rate: -1, Strikes: -1})
	caller := lpeer.ID("caller-node-id")
	target := Target{Peer: lpeer.ID("far-node-id"), Server: "node"}
	f.Fuzz(func(t *testing.T, fromClient, fromServer []byte) {
		toServer, toClient, end := g.RelayRewrites(caller, "far", target, nil, func(jsonrpc.Message) error { return nil })
		for _, frame := range [][]byte{fromClient, fromClient} { // twice: a reused request ID
			fwd, reply, err := relay.Apply(toServer, slices.Clone(frame))
			_, derr := sdkcompat.DecodeMessage(frame)
			if err != nil && derr == nil {
				t.Fatalf("a client frame that decodes broke the session: %v\n%q", err, frame)
			}
			if fwd != nil && reply != nil {
				t.Fatalf("a client frame both passed on and answered: %q", frame)
			}
		}
		if _, _, err := relay.Apply(toClient, slices.Clone(fromServer)); err != nil {
			if _, derr := sdkcompat.DecodeMessage(fromServer); derr == nil && !strings.Contains(err.Error(), "answer from") {
				t.Fatalf("a server frame that decodes broke the session: %v\n%q", err, fromServer)
			}
		}
		end(nil)
		// Every admission the session held is back: the caller can fill its
		// limit again.
		var releases []func()
		for i := range 4 {
			release, r := g.admitCall(caller, "")
			if r != nil {
				t.Fatalf("after the session ended, admission %d refused: %s", i, r.msg)
			}
			releases = append(releases, release)
		}
		for _, release := range releases {
			release()
		}
	})
}

// newGuard returns the trust layer of a node with a fresh key, the policy
// pol and limits lim, auditing in memory.
func newGuard(tb testing.TB, pol *policy.Policy, lim limits.Config) *Guard {
	tb.Helper()
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		tb.Fatal(err)
	}
	self, err := lpeer.IDFromPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	log, err := audit.Open("", audit.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	g := New(Config{Self: self, Key: key, Policy: pol, Audit: log, Limits: limits.New(lim, self)})
	tb.Cleanup(func() {
		g.Close()
		log.Close()
	})
	return g
}

// TestDelegationCacheTellsChainsApart verifies chains of two principals in
// turn, in both forms a call carries them (a served call's []any, a relayed
// call's JSON): each verification names its own principal, whatever the
// cache holds (it is keyed by a hash of the wire form, and an entry is
// taken only for the same wire form).
func TestDelegationCacheTellsChainsApart(t *testing.T) {
	g := newGuard(t, policy.Open(), limits.Config{Rate: -1, Strikes: -1})
	newKey := func() (crypto.PrivKey, lpeer.ID) {
		key, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := lpeer.IDFromPrivateKey(key)
		return key, id
	}
	callerKey, caller := newKey()
	type principal struct {
		id   lpeer.ID
		wire []string
	}
	var ps []principal
	for range 2 {
		key, id := newKey()
		c, err := delegation.Delegate(key, caller, delegation.FullScope(), time.Now().Add(time.Hour))
		if err == nil {
			c, err = c.Extend(callerKey, g.cfg.Self, delegation.Scope{}, time.Time{})
		}
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, principal{id, c.Encode()})
	}
	for round := range 3 {
		for _, p := range ps {
			served := make([]any, len(p.wire))
			for i, s := range p.wire {
				served[i] = s
			}
			raw, _ := json.Marshal(p.wire)
			for form, verify := range map[string]func() (*delegated, error){
				"served":  func() (*delegated, error) { return g.verifyDelegation(served, caller, "far", "echo") },
				"relayed": func() (*delegated, error) { return g.verifyDelegationJSON(raw, caller, "far", "echo") },
			} {
				d, err := verify()
				if err != nil {
					t.Fatalf("round %d, %s: %v", round, form, err)
				}
				if d.principal != p.id {
					t.Fatalf("round %d, %s: principal %s, want %s", round, form, d.principal, p.id)
				}
			}
		}
	}
	// A chain changed by one byte is not the one cached: it fails its
	// signature check.
	bad := slices.Clone(ps[0].wire)
	bad[0] = bad[0][:len(bad[0])-2] + "AA"
	if _, err := g.verifyDelegation(bad, caller, "far", "echo"); err == nil {
		t.Fatal("a changed chain verified (taken from the cache?)")
	}
}

// TestRelayJudgesCallsWhateverTheirMeta sends a relay calls to a tool the
// policy does not grant, with _meta values of the wrong types: each is
// refused all the same. (The trust layer once read the task context as a
// string and passed on, unjudged, a call whose context was a number.)
func TestRelayJudgesCallsWhateverTheirMeta(t *testing.T) {
	pol, err := policy.Parse([]byte(`{"grants":[{"peers":["*"],"server":"far","tools":["echo"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	g := newGuard(t, pol, limits.Config{Rate: -1, Strikes: -1})
	toServer, _, end := g.RelayRewrites(lpeer.ID("caller-node-id"), "far", Target{Peer: lpeer.ID("far-node-id"), Server: "node"}, nil,
		func(jsonrpc.Message) error { return nil })
	defer end(nil)
	for _, meta := range []string{`{}`, `{"io.mcpmesh/task":1}`, `{"io.mcpmesh/task":{"x":1}}`, `{"progressToken":{"a":[1]}}`, `null`} {
		frame := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay","_meta":` + meta + `}}`
		fwd, reply, err := relay.Apply(toServer, []byte(frame))
		if err != nil || fwd != nil || !strings.Contains(string(reply), "not permitted") {
			t.Errorf("%s: passed %q, answered %q (%v)", frame, fwd, reply, err)
		}
	}
}
