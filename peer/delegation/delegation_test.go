package delegation

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"

	"github.com/mcpmesh/mcpmesh/peer/identity"
	"github.com/mcpmesh/mcpmesh/peer/internal/peertest"
	"github.com/mcpmesh/mcpmesh/proto/delegationpb"
)

// party is a peer of the delegation tests.
type party struct {
	key crypto.PrivKey
	id  lpeer.ID
}

// parties returns the principal A, the delegates B, C, D and an outsider X.
func parties(t testing.TB) (a, b, c, d, x party) {
	mk := func(seed int) party {
		k, id := peertest.Key(t, seed)
		return party{k, id}
	}
	return mk(11), mk(12), mk(13), mk(14), mk(15)
}

// must returns a function that fails the test on an error and returns the
// chain otherwise: must(t)(Delegate(...)).
func must(tb testing.TB) func(*Chain, error) *Chain {
	return func(c *Chain, err error) *Chain {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
		return c
	}
}

// wantErr fails unless err is of kind and its message holds every part.
func wantErr(t *testing.T, what string, err, kind error, parts ...string) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Errorf("%s: err = %v, want %v", what, err, kind)
		return
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: err = %q, want it to say %q", what, err, p)
		}
	}
}

func TestDelegationChainsVerify(t *testing.T) {
	a, b, c, d, _ := parties(t)
	now := time.Now()
	exp := now.Add(time.Hour)

	one := must(t)(Delegate(a.key, c.id, Scope{Tools: []string{"node/echo"}}, exp))
	two := must(t)(Delegate(a.key, b.id, FullScope(), exp))
	two = must(t)(two.Extend(b.key, c.id, Scope{Tools: []string{"files/read_*"}, Peers: []string{d.id.String()}}, now.Add(30*time.Minute)))
	three := must(t)(two.Extend(c.key, d.id, Scope{}, time.Time{}))

	for _, tt := range []struct {
		name         string
		chain        *Chain
		caller, self party
		server, tool string
	}{
		{"1 link", one, a, c, "node", "echo"},
		{"2 links", two, b, c, "files", "read_file"},
		{"3 links", three, c, d, "files", "read_dir"},
	} {
		// The chain as the callee gets it: through JSON in _meta.
		meta, err := json.Marshal(map[string]any{MetaKey: tt.chain.Encode()})
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := json.Unmarshal(meta, &got); err != nil {
			t.Fatal(err)
		}
		decoded, err := DecodeChain(got[MetaKey])
		if err != nil {
			t.Fatalf("%s: DecodeChain: %v", tt.name, err)
		}
		principal, err := decoded.Verify(tt.caller.id, tt.self.id, tt.server, tt.tool, now.Add(time.Minute))
		if err != nil {
			t.Errorf("%s: Verify: %v", tt.name, err)
		} else if principal != a.id {
			t.Errorf("%s: principal %s, want A %s", tt.name, principal, a.id)
		}
		if decoded.Principal() != a.id || decoded.Len() != tt.chain.Len() {
			t.Errorf("%s: Principal, Len = %s, %d", tt.name, decoded.Principal(), decoded.Len())
		}
		if !slices.Equal(decoded.Encode(), tt.chain.Encode()) {
			t.Errorf("%s: re-encoded chain differs", tt.name)
		}
	}

	links := three.Links()
	if len(links) != 3 {
		t.Fatalf("%d links", len(links))
	}
	// The third link inherited the second's scope and expiry.
	if !slices.Equal(links[2].Scope.Tools, []string{"files/read_*"}) || !links[2].Expires.Equal(links[1].Expires) {
		t.Errorf("link 2 did not inherit: %+v", links[2])
	}
	if links[0].Issuer != a.id || links[0].Audience != b.id || links[2].Issuer != c.id || links[2].Audience != d.id {
		t.Errorf("links: %+v", links)
	}
	if !links[1].Expires.Equal(time.UnixMilli(now.Add(30 * time.Minute).UnixMilli())) {
		t.Errorf("link 1 expires %v", links[1].Expires)
	}
	links[0].Scope.Tools[0] = "changed"
	if three.Links()[0].Scope.Tools[0] != "*" {
		t.Error("Links shares the chain's scope")
	}
	want := identity.Short(a.id) + " → " + identity.Short(b.id) + " → " + identity.Short(c.id) + " → " + identity.Short(d.id)
	if three.String() != want {
		t.Errorf("String = %q, want %q", three.String(), want)
	}
	if !strings.HasPrefix(identity.Short(a.id), "12D3…") || len(identity.Short(a.id)) != len("12D3…")+6 {
		t.Errorf("shortID = %q", identity.Short(a.id))
	}
	// Extending made a new chain and left the old one alone.
	if two.Len() != 2 {
		t.Errorf("Extend changed its chain: %d links", two.Len())
	}
}

// linkSpec is a link as a test wants it, whatever Extend would say.
type linkSpec struct {
	signer           party
	issuer, audience lpeer.ID // issuer "" = the signer
	tools, peers     []string
	issued, expires  time.Time
	parent           []byte // nil = the previous link's hash
}

// forge signs links as specified, chaining parents unless told otherwise,
// and returns their wire form.
func forge(t testing.TB, specs ...linkSpec) []string {
	t.Helper()
	var out []string
	var prev []byte
	for _, s := range specs {
		issuer := s.issuer
		if issuer == "" {
			issuer = s.signer.id
		}
		parent := s.parent
		if parent == nil && prev != nil {
			h := sha256.Sum256(prev)
			parent = h[:]
		}
		raw := sealPB(t, s.signer.key, &delegationpb.Link{
			Issuer: []byte(issuer), Audience: []byte(s.audience),
			Tools: s.tools, Peers: s.peers,
			IssuedAtMs: s.issued.UnixMilli(), ExpiresAtMs: s.expires.UnixMilli(),
			Parent: parent,
		})
		out = append(out, base64.StdEncoding.EncodeToString(raw))
		prev = raw
	}
	return out
}

func sealPB(t testing.TB, key crypto.PrivKey, pb *delegationpb.Link) []byte {
	t.Helper()
	env, err := record.Seal(&linkRecord{link: pb}, key)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestDelegationWidenedRefused builds chains whose later links grant more
// than the earlier ones; decoding refuses each, and so does Extend.
func TestDelegationWidenedRefused(t *testing.T) {
	a, b, c, d, _ := parties(t)
	now := time.Now()
	t0, exp := now.Add(-time.Minute), now.Add(time.Hour)
	all := []string{"*"}
	for _, tt := range []struct {
		name        string
		tools0      []string
		peers0      []string
		tools1      []string
		peers1      []string
		exp1        time.Time
		wantInError string
	}{
		{"tool outside", []string{"read_*"}, all, []string{"pay"}, nil, exp,
			`link 1 (` + identity.Short(b.id) + `→` + identity.Short(c.id) + `) widens the scope: tool "pay" not within ["read_*"]`},
		{"star from prefix", []string{"read_*"}, all, []string{"*"}, nil, exp, `tool "*" not within`},
		{"any server from one server", []string{"files/*"}, all, []string{"read"}, nil, exp, `tool "read" not within ["files/*"]`},
		{"other server", []string{"files/*"}, all, []string{"mail/read"}, nil, exp, `tool "mail/read" not within`},
		{"middle star is not a prefix", []string{"a*b"}, all, []string{"axb"}, nil, exp, `tool "axb" not within`},
		{"peers widened to any", []string{"*"}, []string{c.id.String()}, all, []string{"*"}, exp, `peer "*" not within`},
		{"peers widened to another", []string{"*"}, []string{c.id.String()}, all, []string{d.id.String()}, exp, `peer "` + d.id.String() + `" not within`},
		{"later expiry", all, all, all, nil, exp.Add(time.Second), `expires 1s after link 0`},
		{"audience not allowed", all, []string{d.id.String()}, all, nil, exp, `audience ` + identity.Short(c.id) + ` not within link 0's peers`},
		{"no further delegation", all, nil, all, nil, exp, `audience ` + identity.Short(c.id) + ` not within link 0's peers []`},
	} {
		enc := forge(t,
			linkSpec{signer: a, audience: b.id, tools: tt.tools0, peers: tt.peers0, issued: t0, expires: exp},
			linkSpec{signer: b, audience: c.id, tools: tt.tools1, peers: tt.peers1, issued: t0, expires: tt.exp1},
		)
		_, err := DecodeChain(enc)
		wantErr(t, tt.name, err, ErrWidened, tt.wantInError)

		first := must(t)(Delegate(a.key, b.id, Scope{Tools: tt.tools0, Peers: tt.peers0}, exp))
		_, err = first.Extend(b.key, c.id, Scope{Tools: tt.tools1, Peers: tt.peers1}, tt.exp1)
		if tt.name == "later expiry" {
			// Extend clamps a later expiry instead.
			if err != nil {
				t.Errorf("Extend with a later expiry: %v", err)
			}
			continue
		}
		wantErr(t, "Extend: "+tt.name, err, ErrWidened)
	}

	// Narrower in every way is fine.
	enc := forge(t,
		linkSpec{signer: a, audience: b.id, tools: []string{"files/*", "echo"}, peers: []string{"*"}, issued: t0, expires: exp},
		linkSpec{signer: b, audience: c.id, tools: []string{"files/read_*", "files/list", "echo"}, peers: []string{d.id.String()}, issued: t0, expires: exp.Add(-time.Minute)},
		linkSpec{signer: c, audience: d.id, tools: []string{"files/read_x*"}, peers: []string{d.id.String()}, issued: t0, expires: exp.Add(-time.Minute)},
	)
	ch, err := DecodeChain(enc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.Verify(c.id, d.id, "files", "read_xyz", now); err != nil {
		t.Errorf("narrowed chain: %v", err)
	}
	// The call itself must be within every link.
	_, err = ch.Verify(c.id, d.id, "files", "list", now)
	wantErr(t, "call outside the last link", err, ErrWidened, `link 2 (`, `does not cover tool "files/list": not within ["files/read_x*"]`)
	_, err = ch.Verify(c.id, d.id, "mail", "read_xyz", now)
	wantErr(t, "call on another server", err, ErrWidened, `link 0 (`, `"mail/read_xyz"`)
}

func TestDelegationReplayRefused(t *testing.T) {
	a, b, c, d, x := parties(t)
	now := time.Now()
	ch := must(t)(Delegate(a.key, b.id, FullScope(), now.Add(time.Hour)))
	ch = must(t)(ch.Extend(b.key, c.id, FullScope(), time.Time{}))

	if p, err := ch.Verify(b.id, c.id, "s", "t", now); err != nil || p != a.id {
		t.Fatalf("the right call: %s, %v", p, err)
	}
	_, err := ch.Verify(b.id, d.id, "s", "t", now)
	wantErr(t, "made for C, presented at D", err, ErrAudience,
		"delegation: made for "+identity.Short(c.id)+", presented to "+identity.Short(d.id))
	_, err = ch.Verify(c.id, d.id, "s", "t", now)
	wantErr(t, "C replays its chain at D", err, ErrForged, "presented by "+identity.Short(c.id))
	_, err = ch.Verify(x.id, c.id, "s", "t", now)
	wantErr(t, "X presents B's chain", err, ErrForged, "last link issued by "+identity.Short(b.id)+", presented by "+identity.Short(x.id))
	_, err = ch.Verify(a.id, c.id, "s", "t", now)
	wantErr(t, "the principal presents the chain", err, ErrForged)

	// B may not extend a chain it is no longer the last audience of.
	_, err = ch.Extend(b.key, d.id, FullScope(), time.Time{})
	wantErr(t, "B extends C's chain", err, ErrForged)
}

func TestDelegationExpiredRefused(t *testing.T) {
	a, b, c, _, _ := parties(t)
	now := time.Now()
	ch := must(t)(Delegate(a.key, b.id, FullScope(), now.Add(time.Hour)))
	ch = must(t)(ch.Extend(b.key, c.id, Scope{}, now.Add(10*time.Minute)))

	exp := ch.Links()[1].Expires
	_, err := ch.Verify(b.id, c.id, "s", "t", exp.Add(3*time.Minute))
	wantErr(t, "3 minutes late", err, ErrExpired, "delegation: expired 3m0s ago")
	_, err = ch.Verify(b.id, c.id, "s", "t", exp)
	wantErr(t, "at the expiry", err, ErrExpired)
	if _, err := ch.Verify(b.id, c.id, "s", "t", exp.Add(-time.Millisecond)); err != nil {
		t.Errorf("just before the expiry: %v", err)
	}
	err = ch.Covers(c.id, "s", "t", exp.Add(time.Second))
	wantErr(t, "Covers after the expiry", err, ErrExpired)

	// Issued in the future: allowed up to the clock skew.
	issued := now.Add(time.Minute)
	enc := forge(t, linkSpec{signer: a, audience: b.id, tools: []string{"*"}, issued: issued, expires: issued.Add(time.Hour)})
	future, err := DecodeChain(enc)
	if err != nil {
		t.Fatal(err)
	}
	_, err = future.Verify(a.id, b.id, "s", "t", now)
	wantErr(t, "issued a minute ahead", err, ErrExpired, "link 0 (", "issued 1m0s in the future")
	if _, err := future.Verify(a.id, b.id, "s", "t", issued.Add(-ClockSkew)); err != nil {
		t.Errorf("issued within the clock skew: %v", err)
	}

	_, err = Delegate(a.key, b.id, FullScope(), now.Add(-time.Second))
	wantErr(t, "Delegate with a past expiry", err, ErrExpired)
	_, err = Delegate(a.key, b.id, FullScope(), time.Time{})
	wantErr(t, "Delegate with no expiry", err, ErrExpired)
}

func TestDelegationForgedRefused(t *testing.T) {
	a, b, c, d, x := parties(t)
	now := time.Now()
	t0, exp := now.Add(-time.Minute), now.Add(time.Hour)
	all := []string{"*"}
	ab := linkSpec{signer: a, audience: b.id, tools: []string{"read_*"}, peers: all, issued: t0, expires: exp}
	bc := linkSpec{signer: b, audience: c.id, tools: []string{"read_*"}, peers: all, issued: t0, expires: exp}
	cd := linkSpec{signer: c, audience: d.id, tools: []string{"read_*"}, peers: all, issued: t0, expires: exp}
	good := forge(t, ab, bc, cd)
	if _, err := DecodeChain(good); err != nil {
		t.Fatalf("the good chain: %v", err)
	}

	// X signs a link that claims to be A's.
	xa := ab
	xa.signer, xa.issuer = x, a.id
	_, err := DecodeChain(forge(t, xa, bc))
	wantErr(t, "link signed by X as A", err, ErrForged, "link 0 claims issuer "+identity.Short(a.id)+" but is signed by "+identity.Short(x.id))

	// One byte of the payload changed: the tool pattern read_* → reae_*.
	raw, _ := base64.StdEncoding.DecodeString(good[1])
	i := bytes.Index(raw, []byte("read_*"))
	if i < 0 {
		t.Fatal("tool pattern not found in the envelope")
	}
	raw[i+3] = 'e'
	tampered := slices.Clone(good)
	tampered[1] = base64.StdEncoding.EncodeToString(raw)
	_, err = DecodeChain(tampered)
	wantErr(t, "tampered payload", err, ErrForged, "delegation: bad signature on link 1")

	_, err = DecodeChain([]string{good[1], good[0], good[2]})
	wantErr(t, "links swapped", err, ErrForged)
	_, err = DecodeChain([]string{good[0], good[2]})
	wantErr(t, "middle link dropped", err, ErrForged, "not chained")
	_, err = DecodeChain([]string{good[1], good[2]})
	wantErr(t, "first link dropped", err, ErrForged, "link 0 (", "extends another chain")

	// B's link to C was made under A's delegation; it does not fit under
	// another delegation to B, even a narrower one from A itself.
	other := ab
	other.tools = []string{"read_mail"}
	spliced := []string{forge(t, other)[0], good[1]}
	_, err = DecodeChain(spliced)
	wantErr(t, "link moved to another chain", err, ErrForged, "link 1 (", "does not extend link 0")

	// A's signature in another domain (say, a card's) is no link.
	env, err := record.Seal(&otherDomain{linkRecord{link: &delegationpb.Link{
		Issuer: []byte(a.id), Audience: []byte(b.id), Tools: all, IssuedAtMs: t0.UnixMilli(), ExpiresAtMs: exp.UnixMilli(),
	}}}, a.key)
	if err != nil {
		t.Fatal(err)
	}
	rawOther, _ := env.Marshal()
	_, err = DecodeChain([]string{base64.StdEncoding.EncodeToString(rawOther)})
	wantErr(t, "signed in another domain", err, ErrForged, "bad signature on link 0")
}

type otherDomain struct{ linkRecord }

func (otherDomain) Domain() string { return "mcpmesh-card" }

func TestDelegationCovers(t *testing.T) {
	a, b, c, d, _ := parties(t)
	now := time.Now()
	ch := must(t)(Delegate(a.key, b.id, Scope{Tools: []string{"files/read_*", "echo"}, Peers: []string{c.id.String()}}, now.Add(time.Hour)))
	if err := ch.Covers(c.id, "files", "read_x", now); err != nil {
		t.Errorf("B may call C: %v", err)
	}
	if err := ch.Covers(c.id, "other", "echo", now); err != nil {
		t.Errorf("echo on any server: %v", err)
	}
	wantErr(t, "B calls D", ch.Covers(d.id, "files", "read_x", now), ErrWidened, "does not allow use on "+identity.Short(d.id))
	wantErr(t, "B writes", ch.Covers(c.id, "files", "write_x", now), ErrWidened, `"files/write_x"`)
	var empty *Chain
	wantErr(t, "nil chain", empty.Covers(c.id, "s", "t", now), ErrMalformed)
	if _, err := empty.Verify(a.id, b.id, "s", "t", now); !errors.Is(err, ErrMalformed) {
		t.Errorf("Verify of a nil chain: %v", err)
	}
	if _, err := (&Chain{}).Extend(a.key, b.id, FullScope(), time.Time{}); !errors.Is(err, ErrMalformed) {
		t.Errorf("Extend of an empty chain: %v", err)
	}
}

func TestDecodeChainForms(t *testing.T) {
	a, b, c, _, _ := parties(t)
	now := time.Now()
	ch := must(t)(Delegate(a.key, b.id, FullScope(), now.Add(time.Hour)))
	ch = must(t)(ch.Extend(b.key, c.id, Scope{}, time.Time{}))
	enc := ch.Encode()
	js, _ := json.Marshal(enc)
	anys := make([]any, len(enc))
	for i, s := range enc {
		anys[i] = s
	}
	for _, v := range []any{enc, anys, json.RawMessage(js), js} {
		got, err := DecodeChain(v)
		if err != nil {
			t.Errorf("DecodeChain(%T): %v", v, err)
			continue
		}
		if !slices.Equal(got.Encode(), enc) || got.String() != ch.String() {
			t.Errorf("DecodeChain(%T) differs", v)
		}
	}
}

func TestDecodeChainGarbage(t *testing.T) {
	a, b, _, _, _ := parties(t)
	now := time.Now()
	one := must(t)(Delegate(a.key, b.id, FullScope(), now.Add(time.Hour))).Encode()

	// A chain of nine links, each properly made.
	var specs []linkSpec
	ps := make([]party, 10)
	for i := range ps {
		k, id := peertest.Key(t, 40+i)
		ps[i] = party{k, id}
	}
	for i := range 9 {
		specs = append(specs, linkSpec{signer: ps[i], audience: ps[i+1].id, tools: []string{"*"}, peers: []string{"*"}, issued: now, expires: now.Add(time.Hour)})
	}
	nine := forge(t, specs...)
	if _, err := DecodeChain(nine[:8]); err != nil {
		t.Fatalf("eight links: %v", err)
	}
	// A link over the size limit, properly signed.
	var many []string
	for range 40 {
		many = append(many, "a_rather_long_tool_name_*")
	}
	big := forge(t, linkSpec{signer: a, audience: b.id, tools: many, issued: now, expires: now.Add(time.Hour)})

	for _, tt := range []struct {
		name string
		v    any
		want string
	}{
		{"nil", nil, "no chain"},
		{"a string", one[0], "want an array"},
		{"a map", map[string]any{}, "want an array"},
		{"empty", []string{}, "no links"},
		{"not strings", []any{1.0}, "link 0: a float64"},
		{"not base64", []string{"!!!"}, "link 0: illegal base64"},
		{"unpadded base64", []string{strings.TrimRight(one[0], "=")}, "link 0"},
		{"junk bytes", []string{base64.StdEncoding.EncodeToString([]byte("hello, world"))}, "link 0"},
		{"empty link", []string{""}, "link 0"},
		{"nine links", nine, "9 links, over the limit of 8"},
		{"nine links as []any", []any{"", "", "", "", "", "", "", "", ""}, "9 links"},
		{"oversized link", big, "over the 1024-byte limit"},
		{"oversized base64", []string{strings.Repeat("A", 4000)}, "over the 1024-byte limit"},
		{"huge JSON", json.RawMessage(`["` + strings.Repeat("A", 100_000) + `"]`), "bytes of JSON"},
		{"JSON object", json.RawMessage(`{"a": 1}`), "want a JSON array"},
		{"JSON null", json.RawMessage(`null`), "no links"},
		{"good then junk", []string{one[0], "AAAA"}, "link 1"},
	} {
		_, err := DecodeChain(tt.v)
		wantErr(t, tt.name, err, ErrMalformed, tt.want)
	}

	// Delegate refuses what it could not send.
	_, err := Delegate(a.key, b.id, Scope{Tools: many}, now.Add(time.Hour))
	wantErr(t, "Delegate too big", err, ErrMalformed, "over the 1024-byte limit")
	_, err = Delegate(a.key, b.id, Scope{}, now.Add(time.Hour))
	wantErr(t, "Delegate no tools", err, ErrMalformed, "no tools")
	_, err = Delegate(a.key, b.id, Scope{Tools: []string{"*"}, Peers: []string{"bob"}}, now.Add(time.Hour))
	wantErr(t, "Delegate bad peer", err, ErrMalformed, `peer "bob"`)
	_, err = Delegate(a.key, "", FullScope(), now.Add(time.Hour))
	wantErr(t, "Delegate no audience", err, ErrMalformed, "audience")

	// Extend stops at the length limit.
	ch, err := DecodeChain(nine[:8])
	if err != nil {
		t.Fatal(err)
	}
	_, err = ch.Extend(ps[8].key, ps[9].id, Scope{}, time.Time{})
	wantErr(t, "Extend a ninth link", err, ErrMalformed, "8 links")
}

// BenchmarkDelegationVerify measures what a callee does with a 2-link chain
// found in a request's _meta: decode (signatures checked) and verify.
func BenchmarkDelegationVerify(b *testing.B) {
	pa, pb, pc, _, _ := parties(b)
	now := time.Now()
	ch := must(b)(Delegate(pa.key, pb.id, Scope{Tools: []string{"files/read_*", "echo"}, Peers: []string{pc.id.String()}}, now.Add(time.Hour)))
	ch = must(b)(ch.Extend(pb.key, pc.id, Scope{}, time.Time{}))
	enc := ch.Encode()
	meta := make([]any, len(enc))
	size := 0
	for i, s := range enc {
		meta[i] = s
		raw, _ := base64.StdEncoding.DecodeString(s)
		size += len(raw)
	}
	b.Run("decode+verify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c, err := DecodeChain(meta)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c.Verify(pb.id, pc.id, "files", "read_file", now); err != nil {
				b.Fatal(err)
			}
		}
		// After the loop: b.Loop resets the reported metrics when it starts.
		b.ReportMetric(float64(size)/float64(len(enc)), "B/link")
	})
	b.Run("verify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ch.Verify(pb.id, pc.id, "files", "read_file", now); err != nil {
				b.Fatal(err)
			}
		}
	})
}
