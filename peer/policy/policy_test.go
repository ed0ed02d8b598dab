package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	lpeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/mcpmesh/mcpmesh/peer/identity"
	"github.com/mcpmesh/mcpmesh/peer/internal/peertest"
)

func mustParsePolicy(t *testing.T, src string) *Policy {
	t.Helper()
	p, err := Parse([]byte(src))
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, src)
	}
	return p
}

// TestPolicyExample checks the policy of the documentation, call by call.
func TestPolicyExample(t *testing.T) {
	t1, t2, a, b, o, stranger := peertest.ID(t, 1), peertest.ID(t, 2), peertest.ID(t, 3), peertest.ID(t, 4), peertest.ID(t, 5), peertest.ID(t, 6)
	p := mustParsePolicy(t, fmt.Sprintf(`{
	  "groups": {"team": [%q, %q], "ops": ["team", %q]},
	  "grants": [
	    {"peers": ["team"], "server": "node", "tools": ["*"]},
	    {"peers": [%q], "for": [%q], "server": "files", "tools": ["read_*"], "resources": ["file:///pub/*"], "prompts": ["*"]},
	    {"peers": ["*"], "server": "*", "tools": ["echo"], "hidden": true},
	    {"peers": ["ops"], "server": "logs", "resources": ["log://*/today"]}
	  ]
	}`, t1, t2, o, b, a))
	if p.Grants() != 4 || p.Groups() != 2 {
		t.Errorf("Grants, Groups = %d, %d; want 4, 2", p.Grants(), p.Groups())
	}
	tests := []struct {
		name string
		a    Access
		want bool
	}{
		{"team member, any tool on node", Access{Caller: t1, Server: "node", Kind: Tool, Name: "anything"}, true},
		{"other team member", Access{Caller: t2, Server: "node", Kind: Tool, Name: "x"}, true},
		{"team member, other server", Access{Caller: t1, Server: "files", Kind: Tool, Name: "read_a"}, false},
		{"team member, a resource on node is not a tool", Access{Caller: t1, Server: "node", Kind: Resource, Name: "file:///x"}, false},
		{"team member acting for a stranger", Access{Caller: t1, For: stranger, Server: "node", Kind: Tool, Name: "x"}, false},
		{"For == Caller is a direct call", Access{Caller: t1, For: t1, Server: "node", Kind: Tool, Name: "x"}, true},
		{"stranger, echo everywhere", Access{Caller: stranger, Server: "whatever", Kind: Tool, Name: "echo"}, true},
		{"stranger, echo2", Access{Caller: stranger, Server: "node", Kind: Tool, Name: "echo2"}, false},
		{"B for A, read tool", Access{Caller: b, For: a, Server: "files", Kind: Tool, Name: "read_file"}, true},
		{"B for A, write tool", Access{Caller: b, For: a, Server: "files", Kind: Tool, Name: "write_file"}, false},
		{"B for A, resource deep", Access{Caller: b, For: a, Server: "files", Kind: Resource, Name: "file:///pub/a/b.txt"}, true},
		{"B for A, resource outside", Access{Caller: b, For: a, Server: "files", Kind: Resource, Name: "file:///priv/a"}, false},
		{"B for A, prompt", Access{Caller: b, For: a, Server: "files", Kind: Prompt, Name: "p"}, true},
		{"B alone is not B for A", Access{Caller: b, Server: "files", Kind: Tool, Name: "read_file"}, false},
		{"B for someone else", Access{Caller: b, For: stranger, Server: "files", Kind: Tool, Name: "read_file"}, false},
		{"A itself is not B", Access{Caller: a, Server: "files", Kind: Tool, Name: "read_file"}, false},
		{"ops: nested group member", Access{Caller: t1, Server: "logs", Kind: Resource, Name: "log://api/today"}, true},
		{"ops: direct member", Access{Caller: o, Server: "logs", Kind: Resource, Name: "log://a/b/today"}, true},
		{"ops: glob miss", Access{Caller: o, Server: "logs", Kind: Resource, Name: "log://a/yesterday"}, false},
		{"ops member is not team", Access{Caller: o, Server: "node", Kind: Tool, Name: "x"}, false},
		{"zero kind", Access{Caller: t1, Server: "node", Name: "x"}, false},
	}
	for _, tt := range tests {
		if got := p.Allows(tt.a); got != tt.want {
			t.Errorf("%s: Allows = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestPolicyFor checks the "for" forms: absent (self only), "self", "*",
// peers and groups.
func TestPolicyFor(t *testing.T) {
	b, a1, a2, a3 := peertest.ID(t, 1), peertest.ID(t, 2), peertest.ID(t, 3), peertest.ID(t, 4)
	for _, tt := range []struct {
		forJSON                   string
		direct, forA1, forA2, any bool
	}{
		{``, true, false, false, false},
		{`, "for": []`, true, false, false, false},
		{`, "for": ["self"]`, true, false, false, false},
		{`, "for": ["*"]`, true, true, true, true},
		{fmt.Sprintf(`, "for": [%q]`, a1), false, true, false, false},
		{fmt.Sprintf(`, "for": ["self", %q]`, a1), true, true, false, false},
		{`, "for": ["principals"]`, false, true, true, false},
	} {
		p := mustParsePolicy(t, fmt.Sprintf(`{"groups": {"principals": [%q, %q]},
			"grants": [{"peers": [%q]%s, "tools": ["t"]}]}`, a1, a2, b, tt.forJSON))
		call := func(forPeer lpeer.ID) bool {
			return p.Allows(Access{Caller: b, For: forPeer, Server: "s", Kind: Tool, Name: "t"})
		}
		got := [4]bool{call(""), call(a1), call(a2), call(a3)}
		want := [4]bool{tt.direct, tt.forA1, tt.forA2, tt.any}
		if got != want {
			t.Errorf("for %s: direct, A1, A2, other = %v, want %v", tt.forJSON, got, want)
		}
		if got := p.AllowsServer(b, a1, "s"); got != tt.forA1 {
			t.Errorf("for %s: AllowsServer(B for A1) = %v, want %v", tt.forJSON, got, tt.forA1)
		}
	}
}

func TestPolicyErrors(t *testing.T) {
	id := peertest.ID(t, 1).String()
	for _, tt := range []struct{ src, want string }{
		{`{"grants": [{"peers": ["*"], "tools": ["a"]}, {"peers": ["foo"], "tools": ["a"]}]}`,
			`policy: grant 2: peer "foo": not a peer ID or a group name`},
		{`{"grants": [{"peers": ["*"], "for": ["bar"], "tools": ["a"]}]}`,
			`policy: grant 1: for "bar": not a peer ID or a group name`},
		{`{"grants": [{"peers": ["*"], "tool": ["a"]}]}`, `policy: grant 1: json: unknown field "tool"`},
		{`{"grants": [{"peers": ["*"], "tools": ["a"]}, {"peers": "team", "tools": ["a"]}]}`, `policy: grant 2: json: cannot unmarshal string`},
		{`{"grants": [{"peers": ["*"], "tools": ["a"]}, null]}`, `policy: grant 2: no peers`},
		{`{"grant": []}`, `unknown field "grant"`},
		{`{"grants": [{"peers": ["*"]}]}`, `policy: grant 1: grants nothing`},
		{`{"grants": [{"tools": ["a"]}]}`, `policy: grant 1: no peers`},
		{`{"grants": [{"peers": ["*"], "server": "f*", "tools": ["a"]}]}`, `policy: grant 1: server "f*"`},
		{`{"grants": [{"peers": ["*"], "tools": [""]}]}`, `policy: grant 1: empty tool pattern`},
		{`{"groups": {"a": ["b"], "b": ["c"], "c": ["a"]}, "grants": []}`, `policy: group "a": cycle a → b → c → a`},
		{`{"groups": {"a": ["a"]}, "grants": []}`, `cycle a → a`},
		{`{"groups": {"a": ["nope"]}, "grants": []}`, `policy: group "a": member "nope": not a peer ID or a group name`},
		{`{"groups": {"a": ["*"]}, "grants": []}`, `policy: group "a": member "*"`},
		{`{"groups": {"self": []}, "grants": []}`, `policy: group "self": reserved name`},
		{fmt.Sprintf(`{"groups": {%q: []}, "grants": []}`, id), `the name is a peer ID`},
		{`{"grants": []} {}`, `policy: data after the value`},
		{`"everything"`, `want "open"`},
		{`[1]`, `policy: json: cannot unmarshal array`},
		{`{"grants": [{"peers": ["self"], "tools": ["a"]}]}`, `policy: grant 1: peer "self"`},
	} {
		_, err := Parse([]byte(tt.src))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%s) = %v, want an error with %q", tt.src, err, tt.want)
		}
	}
}

// TestPolicyInConfig round-trips a policy as a field of a config struct
// decoded strictly, and checks that the policy refuses unknown fields of its
// own even there.
func TestPolicyInConfig(t *testing.T) {
	a := peertest.ID(t, 1)
	type config struct {
		Name   string  `json:"name"`
		Policy *Policy `json:"policy"`
	}
	src := fmt.Sprintf(`{"name": "n", "policy": {"groups": {"g": [%q]}, "grants": [
		{"peers": ["g"], "for": ["*"], "server": "files", "tools": ["read_*"], "hidden": true},
		{"peers": ["*"], "prompts": ["p"]}]}}`, a)
	var c config
	dec := json.NewDecoder(strings.NewReader(src))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	if !c.Policy.Allows(Access{Caller: a, Server: "files", Kind: Tool, Name: "read_x"}) {
		t.Error("policy from config does not allow its grant")
	}
	out, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var c2 config
	if err := json.Unmarshal(out, &c2); err != nil {
		t.Fatalf("re-read %s: %v", out, err)
	}
	out2, _ := json.Marshal(c2)
	if !bytes.Equal(out, out2) {
		t.Errorf("round trip differs:\n%s\n%s", out, out2)
	}
	if c2.Policy.Grants() != 2 || c2.Policy.Groups() != 1 || !c2.Policy.Allows(Access{Caller: a, For: peertest.ID(t, 9), Server: "files", Kind: Tool, Name: "read_x"}) {
		t.Errorf("re-read policy differs: %s", out2)
	}

	for _, tt := range []struct {
		p    *Policy
		want string
	}{{Open(), `"open"`}, {Closed(), `{"grants":[]}`}, {nil, `null`}} {
		out, err := json.Marshal(config{Policy: tt.p})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), `"policy":`+tt.want) {
			t.Errorf("Marshal = %s, want policy %s", out, tt.want)
		}
		var back config
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatal(err)
		}
		if back.Policy.IsOpen() != tt.p.IsOpen() {
			t.Errorf("%s: IsOpen changed in the round trip", tt.want)
		}
	}

	bad := `{"policy": {"grants": [{"peers": ["*"], "tools": ["a"], "extra": 1}]}}`
	if err := json.Unmarshal([]byte(bad), &c); err == nil || !strings.Contains(err.Error(), `unknown field "extra"`) {
		t.Errorf("unknown field inside a config's policy: %v", err)
	}
}

func TestPolicyOpenClosedSelf(t *testing.T) {
	self, other := peertest.ID(t, 1), peertest.ID(t, 2)
	acc := func(caller lpeer.ID) Access {
		return Access{Caller: caller, For: other, Server: "s", Kind: Prompt, Name: "p"}
	}
	var nilPolicy *Policy
	for _, p := range []*Policy{nilPolicy, Closed(), mustParsePolicy(t, ""), mustParsePolicy(t, " null ")} {
		if p.Allows(acc(other)) || p.AllowsServer(other, "", "s") || p.Advertised("s", Tool, "t") || p.IsOpen() {
			t.Errorf("closed policy %v allows something", p)
		}
		if !p.WithSelf(self).Allows(acc(self)) || !p.WithSelf(self).AllowsServer(self, other, "s") {
			t.Error("closed policy WithSelf does not allow self")
		}
		if p.WithSelf(self).Allows(acc(other)) {
			t.Error("closed policy WithSelf allows another peer")
		}
	}
	for _, p := range []*Policy{Open(), mustParsePolicy(t, `"open"`)} {
		if !p.IsOpen() || !p.Allows(acc(other)) || !p.AllowsServer(other, "", "x") || !p.Advertised("s", Resource, "r") {
			t.Error("open policy refuses something")
		}
	}
	p := mustParsePolicy(t, `{"grants": [{"peers": ["*"], "tools": ["t"]}]}`)
	withSelf := p.WithSelf(self)
	if p.Allows(acc(self)) {
		t.Error("WithSelf changed the original policy")
	}
	if !withSelf.Allows(Access{Caller: other, Server: "s", Kind: Tool, Name: "t"}) {
		t.Error("WithSelf lost the grants")
	}
	if a, b := mustMarshal(t, p), mustMarshal(t, withSelf); a != b {
		t.Errorf("WithSelf changed the JSON: %s vs %s", a, b)
	}
}

func mustMarshal(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPolicyAdvertisedAndServer(t *testing.T) {
	a, b := peertest.ID(t, 1), peertest.ID(t, 2)
	p := mustParsePolicy(t, fmt.Sprintf(`{"grants": [
		{"peers": [%q], "server": "node", "tools": ["echo", "add"]},
		{"peers": ["*"], "server": "node", "tools": ["secret_*"], "hidden": true},
		{"peers": [%q], "for": [%q], "server": "files", "resources": ["file:///{path}"]}
	]}`, a, b, a))
	for _, tt := range []struct {
		server string
		kind   Kind
		name   string
		want   bool
	}{
		{"node", Tool, "echo", true},
		{"node", Tool, "add", true},
		{"node", Tool, "secret_x", false},
		{"node", Tool, "other", false},
		{"files", Tool, "echo", false},
		{"files", Resource, "file:///{path}", true},
		{"files", Prompt, "file:///{path}", false},
	} {
		if got := p.Advertised(tt.server, tt.kind, tt.name); got != tt.want {
			t.Errorf("Advertised(%s, %s, %s) = %v, want %v", tt.server, tt.kind, tt.name, got, tt.want)
		}
	}
	for _, tt := range []struct {
		caller, forPeer lpeer.ID
		server          string
		want            bool
	}{
		{a, "", "node", true},
		{b, "", "node", true}, // the hidden "*" grant
		{b, "", "files", false},
		{b, a, "files", true},
		{a, b, "files", false},
		{a, "", "files", false},
	} {
		if got := p.AllowsServer(tt.caller, tt.forPeer, tt.server); got != tt.want {
			t.Errorf("AllowsServer(%s, %q, %s) = %v, want %v", identity.Short(tt.caller), tt.forPeer, tt.server, got, tt.want)
		}
	}
}

// BenchmarkPolicyAllows checks a policy of 20 grants and 3 groups of 10
// peers: a hit through a group, a hit through a "*" grant, and a refusal.
func BenchmarkPolicyAllows(b *testing.B) {
	var groups []string
	var members [3][]lpeer.ID
	for g := range 3 {
		var ids []string
		for i := range 10 {
			id := peertest.ID(b, 100+10*g+i)
			members[g] = append(members[g], id)
			ids = append(ids, fmt.Sprintf("%q", id))
		}
		groups = append(groups, fmt.Sprintf(`"g%d": [%s]`, g, strings.Join(ids, ",")))
	}
	var grants []string
	for i := range 20 {
		switch i % 4 {
		case 0:
			grants = append(grants, fmt.Sprintf(`{"peers": ["g%d"], "server": "s%d", "tools": ["tool_%d", "read_*"]}`, i%3, i, i))
		case 1:
			grants = append(grants, fmt.Sprintf(`{"peers": ["g%d"], "for": ["g%d"], "server": "s%d", "tools": ["*_%d"], "resources": ["file:///%d/*"]}`, i%3, (i+1)%3, i, i, i))
		case 2:
			grants = append(grants, fmt.Sprintf(`{"peers": [%q], "server": "s%d", "prompts": ["p%d"]}`, peertest.ID(b, 500+i), i, i))
		case 3:
			grants = append(grants, fmt.Sprintf(`{"peers": ["*"], "server": "s%d", "tools": ["public_%d"], "hidden": true}`, i, i))
		}
	}
	src := fmt.Sprintf(`{"groups": {%s}, "grants": [%s]}`, strings.Join(groups, ","), strings.Join(grants, ","))
	p, err := Parse([]byte(src))
	if err != nil {
		b.Fatal(err)
	}
	if p.Grants() != 20 || p.Groups() != 3 {
		b.Fatalf("%d grants, %d groups", p.Grants(), p.Groups())
	}
	stranger := peertest.ID(b, 999)
	for _, bc := range []struct {
		name string
		a    Access
		want bool
	}{
		{"group-literal", Access{Caller: members[0][3], Server: "s12", Kind: Tool, Name: "tool_12"}, true},
		{"group-prefix", Access{Caller: members[0][3], Server: "s12", Kind: Tool, Name: "read_thing"}, true},
		{"delegated", Access{Caller: members[2][5], For: members[0][1], Server: "s5", Kind: Resource, Name: "file:///5/a/b"}, true},
		{"any-peer", Access{Caller: stranger, Server: "s19", Kind: Tool, Name: "public_19"}, true},
		{"refused", Access{Caller: members[1][0], Server: "s12", Kind: Tool, Name: "write_x"}, false},
		{"stranger-refused", Access{Caller: stranger, Server: "s0", Kind: Tool, Name: "tool_0"}, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if got := p.Allows(bc.a); got != bc.want {
				b.Fatalf("Allows = %v, want %v", got, bc.want)
			}
			b.ReportAllocs()
			for b.Loop() {
				p.Allows(bc.a)
			}
		})
	}
}

// Subscribing to events is a grant like a tool: closed by default, by name
// pattern, the node's and not a server's, and no session opener.
func TestPolicyEvents(t *testing.T) {
	a, b, stranger := peertest.ID(t, 1), peertest.ID(t, 2), peertest.ID(t, 3)
	p := mustParsePolicy(t, fmt.Sprintf(`{"grants": [
	  {"peers": [%q], "events": ["mcp.resource.updated", "job.*"]},
	  {"peers": [%q], "events": ["mesh.*"], "hidden": true}
	]}`, a, b))
	tests := []struct {
		a    Access
		want bool
	}{
		{Access{Caller: a, Kind: Event, Name: "mcp.resource.updated"}, true},
		{Access{Caller: a, Kind: Event, Name: "job.done"}, true},
		{Access{Caller: a, Kind: Event, Name: "mesh.peer.joined"}, false},
		{Access{Caller: b, Kind: Event, Name: "mesh.peer.joined"}, true},
		{Access{Caller: stranger, Kind: Event, Name: "job.done"}, false},
		{Access{Caller: a, Kind: Tool, Name: "job.done"}, false}, // an event grant is no tool grant
	}
	for _, tt := range tests {
		if got := p.Allows(tt.a); got != tt.want {
			t.Errorf("Allows(%v %s %s) = %v, want %v", tt.a.Caller, tt.a.Kind, tt.a.Name, got, tt.want)
		}
	}
	if Closed().Allows(Access{Caller: a, Kind: Event, Name: "job.done"}) {
		t.Error("the closed policy lets a peer subscribe")
	}
	if !Open().Allows(Access{Caller: a, Kind: Event, Name: "job.done"}) {
		t.Error("the open policy refuses a subscription")
	}
	if !p.Advertised("", Event, "job.done") || p.Advertised("", Event, "mesh.peer.left") {
		t.Error("Advertised: want job.done on the card, the hidden mesh.* not")
	}
	if p.AllowsServer(a, "", "node") {
		t.Error("a grant of events alone opens sessions to servers")
	}
	if _, err := Parse(fmt.Appendf(nil, `{"grants": [{"peers": [%q], "server": "files", "events": ["x"]}]}`, a)); err == nil || !strings.Contains(err.Error(), "grant 1: events belong to the node") {
		t.Errorf("a grant of events on a server: err %v", err)
	}
}
