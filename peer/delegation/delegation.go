// Package delegation signs, verifies and narrows delegation chains: a
// peer's signed permission for another to act on its behalf, link by link
// (each a libp2p signed envelope over the previous link's hash), never wider
// than the link before it. A node serving a call verifies the chain that came
// with it; a node calling on someone's behalf extends it to the next peer.
package delegation

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	"google.golang.org/protobuf/proto"

	"github.com/mcpmesh/mcpmesh/internal/pattern"
	"github.com/mcpmesh/mcpmesh/peer/identity"
	"github.com/mcpmesh/mcpmesh/proto/delegationpb"
)

// MetaKey is the _meta key under which a call carries a delegation
// chain: a JSON array of strings, each a signed link envelope in standard
// padded base64, the principal's link first.
const MetaKey = "io.mcpmesh/delegation"

// Domain is the signed-envelope domain of delegation links, so a
// signature made for a link cannot pass for any other libp2p record and vice
// versa.
const Domain = "mcpmesh-delegation"

// delegationCodec is the links' envelope payload type, opaque to libp2p.
var delegationCodec = []byte("/mcpmesh/delegation/1")

// Limits of a delegation chain; longer or bigger ones are refused.
const (
	// MaxLinks is the most links a chain may have.
	MaxLinks = 8
	// MaxLinkSize bounds one link's signed envelope, in bytes.
	MaxLinkSize = 1 << 10
	// MaxChainSize bounds the sum of a chain's envelopes, in bytes.
	MaxChainSize = 4 << 10
	// ClockSkew is how far in the future a link's issue time may
	// be, for clocks that disagree a little. Expiry gets no such allowance.
	ClockSkew = 30 * time.Second
)

// maxEncodedChain bounds the JSON text of a chain given to DecodeChain:
// every link at its largest in padded base64, with room for escaped
// characters.
const maxEncodedChain = 2 * MaxLinks * ((MaxLinkSize+2)/3*4 + 4)

// Errors of delegation chains, for use with errors.Is.
var (
	// ErrExpired: a link is past its expiry, or issued in the
	// future.
	ErrExpired = errors.New("delegation expired")
	// ErrAudience: the chain was made for another peer than the
	// one it is presented to.
	ErrAudience = errors.New("delegation made for another peer")
	// ErrWidened: a link grants more than the link before it (more
	// tools, more peers, a later expiry, an audience the earlier links do not
	// allow), or the call asks for a tool the chain does not cover.
	ErrWidened = errors.New("delegation scope widened")
	// ErrForged: a bad signature, a link signed by another key than
	// its issuer's, links that do not follow one another, or a chain
	// presented by another peer than its last link's issuer.
	ErrForged = errors.New("delegation forged")
	// ErrMalformed: not a chain (bad encoding, too many links, too
	// big, missing or invalid fields).
	ErrMalformed = errors.New("delegation malformed")
)

// delegationError is an error of kind (one of the ErrDelegation sentinels)
// with a message saying what failed.
type delegationError struct {
	kind error
	msg  string
}

func (e *delegationError) Error() string { return "delegation: " + e.msg }
func (e *delegationError) Unwrap() error { return e.kind }

func delegationErr(kind error, format string, args ...any) error {
	return &delegationError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// Scope is what a delegation lets its audience do.
type Scope struct {
	// Tools are the tools the audience may call, as patterns: "TOOL" (on
	// any server) or "SERVER/TOOL", where "*" matches any run of characters.
	Tools []string `json:"tools"`
	// Peers are the peers (peer IDs, or "*" for any) on which the audience
	// may use the delegation: the audiences allowed further down the chain.
	// Empty means the audience may call no one else on the principal's
	// behalf.
	Peers []string `json:"peers"`
}

// FullScope returns the scope that allows every tool on every peer.
func FullScope() Scope { return Scope{Tools: []string{pattern.Any}, Peers: []string{pattern.Any}} }

func (s Scope) isZero() bool { return len(s.Tools) == 0 && len(s.Peers) == 0 }

func (s Scope) clone() Scope {
	return Scope{Tools: slices.Clone(s.Tools), Peers: slices.Clone(s.Peers)}
}

// Link is one delegation of a chain: Issuer lets Audience act within Scope
// between Issued and Expires.
type Link struct {
	Issuer, Audience lpeer.ID
	Scope            Scope
	Issued, Expires  time.Time
}

// Chain is a verified-as-made delegation chain: link 0 is the principal's
// delegation, and each following link is made by the previous link's
// audience. A Chain is immutable; it is only made by [Delegate],
// [Chain.Extend] and [DecodeChain], each of which checks the signatures,
// chaining, narrowing and sizes, so that [Chain.Verify] adds only what
// depends on the call: who presents it, to whom, what for and when.
type Chain struct {
	links []chainLink
}

// chainLink is a Link with its signed envelope and compiled scope.
type chainLink struct {
	Link
	raw   []byte
	hash  [sha256.Size]byte // of raw: the next link's parent
	tools []toolPattern
	// peers holds Scope.Peers parsed, "" for "*"; anyPeer is set by "*".
	peers   []lpeer.ID
	anyPeer bool
	parent  []byte // hash of the previous link's envelope, from the payload
}

// toolPattern is a compiled "TOOL" or "SERVER/TOOL" pattern.
type toolPattern struct {
	server, tool pattern.Pattern
}

func compileToolPattern(s string) toolPattern {
	srv, tool, ok := strings.Cut(s, "/")
	if !ok {
		srv, tool = pattern.Any, s
	}
	return toolPattern{server: pattern.Compile(srv), tool: pattern.Compile(tool)}
}

func (p *toolPattern) match(server, tool string) bool {
	return p.server.Match(server) && p.tool.Match(tool)
}

// toolPatternWithin reports whether every (server, tool) matched by inner is
// matched by outer, conservatively: outer part by part is "*", the same
// pattern, or a prefix wildcard "abc*" of which inner's part starts with
// "abc". Other pairs are taken as not covered.
func toolPatternWithin(inner, outer string) bool {
	is, it, ok := strings.Cut(inner, "/")
	if !ok {
		is, it = pattern.Any, inner
	}
	ocs, ot, ok := strings.Cut(outer, "/")
	if !ok {
		ocs, ot = pattern.Any, outer
	}
	return patternWithin(is, ocs) && patternWithin(it, ot)
}

func patternWithin(inner, outer string) bool {
	if outer == pattern.Any || outer == inner {
		return true
	}
	prefix, ok := strings.CutSuffix(outer, "*")
	return ok && !strings.Contains(prefix, "*") && strings.HasPrefix(inner, prefix)
}

// Delegate makes a new chain of one link, signed with key, that lets
// audience act on key's peer's behalf within scope until expires. The scope
// must name at least one tool; its Peers name the peers the audience may
// call with it ([FullScope]: any tool, anywhere). With no Peers the audience
// can pass it on to no one, and the chain serves only key's peer's own calls
// to audience.
func Delegate(key crypto.PrivKey, audience lpeer.ID, scope Scope, expires time.Time) (*Chain, error) {
	issued := time.Now()
	if len(scope.Tools) == 0 {
		return nil, delegationErr(ErrMalformed, "scope names no tools")
	}
	if !expires.After(issued) {
		return nil, delegationErr(ErrExpired, "expiry %s is not in the future", expires.UTC().Format(time.RFC3339))
	}
	l, err := sealLink(key, audience, scope, issued, expires, nil)
	if err != nil {
		return nil, err
	}
	c := &Chain{links: []chainLink{l}}
	if err := c.checkSize(); err != nil {
		return nil, err
	}
	return c, nil
}

// Extend returns a new chain, c followed by a link signed with key that
// lets audience act within scope until expires; c is unchanged. Key's peer
// must be c's last audience. A zero scope inherits the last link's scope,
// and a zero expiry, or one later than the last link's, is clamped to it;
// any other widening of the scope is refused with [ErrWidened], as
// is an audience that an earlier link's Peers do not allow.
func (c *Chain) Extend(key crypto.PrivKey, audience lpeer.ID, scope Scope, expires time.Time) (*Chain, error) {
	if c == nil || len(c.links) == 0 {
		return nil, delegationErr(ErrMalformed, "extend an empty chain")
	}
	issued := time.Now()
	last := &c.links[len(c.links)-1]
	issuer, err := lpeer.IDFromPrivateKey(key)
	if err != nil {
		return nil, delegationErr(ErrMalformed, "extend: %v", err)
	}
	if issuer != last.Audience {
		return nil, delegationErr(ErrForged, "the key of %s cannot extend a chain delegated to %s", identity.Short(issuer), identity.Short(last.Audience))
	}
	if len(c.links) >= MaxLinks {
		return nil, delegationErr(ErrMalformed, "chain already has %d links, the most allowed", len(c.links))
	}
	if !issued.Before(last.Expires) {
		return nil, delegationErr(ErrExpired, "expired %s ago", ago(issued.Sub(last.Expires)))
	}
	if scope.isZero() {
		scope = last.Scope
	}
	if expires.IsZero() || expires.After(last.Expires) {
		expires = last.Expires
	}
	if !expires.After(issued) {
		return nil, delegationErr(ErrExpired, "expiry %s is not in the future", expires.UTC().Format(time.RFC3339))
	}
	l, err := sealLink(key, audience, scope, issued, expires, last.hash[:])
	if err != nil {
		return nil, err
	}
	links := append(slices.Clone(c.links), l)
	if err := checkNarrowed(links, len(links)-1); err != nil {
		return nil, err
	}
	out := &Chain{links: links}
	if err := out.checkSize(); err != nil {
		return nil, err
	}
	return out, nil
}

// sealLink signs a link and returns it parsed.
func sealLink(key crypto.PrivKey, audience lpeer.ID, scope Scope, issued, expires time.Time, parent []byte) (chainLink, error) {
	issuer, err := lpeer.IDFromPrivateKey(key)
	if err != nil {
		return chainLink{}, delegationErr(ErrMalformed, "issuer key: %v", err)
	}
	if err := audience.Validate(); err != nil {
		return chainLink{}, delegationErr(ErrMalformed, "audience: %v", err)
	}
	pb := &delegationpb.Link{
		Issuer:      []byte(issuer),
		Audience:    []byte(audience),
		Tools:       scope.Tools,
		Peers:       scope.Peers,
		IssuedAtMs:  issued.UnixMilli(),
		ExpiresAtMs: expires.UnixMilli(),
		Parent:      parent,
	}
	env, err := record.Seal(&linkRecord{link: pb}, key)
	if err != nil {
		return chainLink{}, delegationErr(ErrMalformed, "seal link: %v", err)
	}
	raw, err := env.Marshal()
	if err != nil {
		return chainLink{}, delegationErr(ErrMalformed, "seal link: %v", err)
	}
	if len(raw) > MaxLinkSize {
		return chainLink{}, delegationErr(ErrMalformed, "link of %d bytes, over the %d-byte limit (name fewer tools or peers)", len(raw), MaxLinkSize)
	}
	return linkFromPB(pb, raw, -1)
}

// linkRecord adapts delegationpb.Link to libp2p's record.Record.
type linkRecord struct{ link *delegationpb.Link }

func (r *linkRecord) Domain() string { return Domain }
func (r *linkRecord) Codec() []byte  { return delegationCodec }
func (r *linkRecord) MarshalRecord() ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(r.link)
}
func (r *linkRecord) UnmarshalRecord(data []byte) error {
	r.link = new(delegationpb.Link)
	return proto.Unmarshal(data, r.link)
}

// openLink checks link i's envelope (size, signature, payload type, signer)
// and parses it.
func openLink(i int, raw []byte) (chainLink, error) {
	if len(raw) > MaxLinkSize {
		return chainLink{}, delegationErr(ErrMalformed, "link %d: %d bytes, over the %d-byte limit", i, len(raw), MaxLinkSize)
	}
	var rec linkRecord
	env, err := record.ConsumeTypedEnvelope(raw, &rec)
	if env == nil {
		return chainLink{}, delegationErr(ErrMalformed, "link %d: %v", i, err)
	}
	if !bytes.Equal(env.PayloadType, delegationCodec) {
		return chainLink{}, delegationErr(ErrMalformed, "link %d: payload type %q, want %q", i, env.PayloadType, delegationCodec)
	}
	if err != nil {
		if proto.Unmarshal(env.RawPayload, new(delegationpb.Link)) != nil {
			return chainLink{}, delegationErr(ErrMalformed, "link %d: %v", i, err)
		}
		return chainLink{}, delegationErr(ErrForged, "bad signature on link %d", i)
	}
	signer, err := lpeer.IDFromPublicKey(env.PublicKey)
	if err != nil {
		return chainLink{}, delegationErr(ErrMalformed, "link %d: signer key: %v", i, err)
	}
	l, err := linkFromPB(rec.link, raw, i)
	if err != nil {
		return chainLink{}, err
	}
	if l.Issuer != signer {
		return chainLink{}, delegationErr(ErrForged, "link %d claims issuer %s but is signed by %s", i, identity.Short(l.Issuer), identity.Short(signer))
	}
	return l, nil
}

// linkFromPB checks a link's fields and compiles its scope. i is the link's
// index for errors (-1 for a link being made).
func linkFromPB(pb *delegationpb.Link, raw []byte, i int) (chainLink, error) {
	bad := func(format string, args ...any) error {
		msg := fmt.Sprintf(format, args...)
		if i >= 0 {
			msg = fmt.Sprintf("link %d: %s", i, msg)
		}
		return delegationErr(ErrMalformed, "%s", msg)
	}
	issuer, err := lpeer.IDFromBytes(pb.Issuer)
	if err != nil {
		return chainLink{}, bad("issuer: %v", err)
	}
	audience, err := lpeer.IDFromBytes(pb.Audience)
	if err != nil {
		return chainLink{}, bad("audience: %v", err)
	}
	if pb.IssuedAtMs <= 0 || pb.ExpiresAtMs <= pb.IssuedAtMs {
		return chainLink{}, bad("issued at %d ms, expires at %d ms: want 0 < issued < expires", pb.IssuedAtMs, pb.ExpiresAtMs)
	}
	l := chainLink{
		Link: Link{
			Issuer:   issuer,
			Audience: audience,
			Scope:    Scope{Tools: slices.Clone(pb.Tools), Peers: slices.Clone(pb.Peers)},
			Issued:   time.UnixMilli(pb.IssuedAtMs),
			Expires:  time.UnixMilli(pb.ExpiresAtMs),
		},
		raw:    raw,
		hash:   sha256.Sum256(raw),
		parent: slices.Clone(pb.Parent),
	}
	if len(pb.Tools) == 0 {
		return chainLink{}, bad("scope names no tools")
	}
	for _, t := range pb.Tools {
		if t == "" {
			return chainLink{}, bad("empty tool pattern")
		}
		l.tools = append(l.tools, compileToolPattern(t))
	}
	for _, p := range pb.Peers {
		if p == pattern.Any {
			l.anyPeer = true
			l.peers = append(l.peers, "")
			continue
		}
		id, err := lpeer.Decode(p)
		if err != nil {
			return chainLink{}, bad("peer %q: not a peer ID or %q", p, pattern.Any)
		}
		l.peers = append(l.peers, id)
	}
	return l, nil
}

// allowsPeer reports whether l lets its audience use the delegation on p.
func (l *chainLink) allowsPeer(p lpeer.ID) bool {
	return l.anyPeer || (p != "" && slices.Contains(l.peers, p))
}

// covers reports whether l's tools include tool on server.
func (l *chainLink) covers(server, tool string) bool {
	for i := range l.tools {
		if l.tools[i].match(server, tool) {
			return true
		}
	}
	return false
}

func (l *chainLink) arrow() string {
	return identity.Short(l.Issuer) + "→" + identity.Short(l.Audience)
}

// checkNarrowed checks link j of links against the links before it: j's
// issuer is the previous audience, it names the previous link as parent, and
// it grants no more than the previous link (tools, peers, expiry) to an
// audience every earlier link allows.
func checkNarrowed(links []chainLink, j int) error {
	l := &links[j]
	if j == 0 {
		if len(l.parent) != 0 {
			return delegationErr(ErrForged, "link 0 (%s) extends another chain", l.arrow())
		}
		return nil
	}
	prev := &links[j-1]
	if l.Issuer != prev.Audience {
		return delegationErr(ErrForged, "link %d is issued by %s, not by link %d's audience %s: the links are not chained", j, identity.Short(l.Issuer), j-1, identity.Short(prev.Audience))
	}
	if !bytes.Equal(l.parent, prev.hash[:]) {
		return delegationErr(ErrForged, "link %d (%s) does not extend link %d", j, l.arrow(), j-1)
	}
	for _, t := range l.Scope.Tools {
		if !slices.ContainsFunc(prev.Scope.Tools, func(o string) bool { return toolPatternWithin(t, o) }) {
			return delegationErr(ErrWidened, "link %d (%s) widens the scope: tool %q not within %q", j, l.arrow(), t, prev.Scope.Tools)
		}
	}
	for k, p := range l.Scope.Peers {
		if !prev.anyPeer && (p == pattern.Any || !slices.Contains(prev.peers, l.peers[k])) {
			return delegationErr(ErrWidened, "link %d (%s) widens the scope: peer %q not within %q", j, l.arrow(), p, prev.Scope.Peers)
		}
	}
	if l.Expires.After(prev.Expires) {
		return delegationErr(ErrWidened, "link %d (%s) widens the scope: expires %s after link %d", j, l.arrow(), l.Expires.Sub(prev.Expires), j-1)
	}
	for i := range j {
		if !links[i].allowsPeer(l.Audience) {
			return delegationErr(ErrWidened, "link %d (%s) widens the scope: audience %s not within link %d's peers %q", j, l.arrow(), identity.Short(l.Audience), i, links[i].Scope.Peers)
		}
	}
	return nil
}

func (c *Chain) checkSize() error {
	total := 0
	for _, l := range c.links {
		total += len(l.raw)
	}
	if total > MaxChainSize {
		return delegationErr(ErrMalformed, "chain of %d bytes, over the %d-byte limit", total, MaxChainSize)
	}
	return nil
}

// Links returns a copy of the chain's links, the principal's first.
func (c *Chain) Links() []Link {
	if c == nil {
		return nil
	}
	out := make([]Link, len(c.links))
	for i, l := range c.links {
		out[i] = l.Link
		out[i].Scope = l.Scope.clone()
	}
	return out
}

// Principal returns the peer on whose behalf the chain acts: its first
// link's issuer ("" for an empty chain).
func (c *Chain) Principal() lpeer.ID {
	if c == nil || len(c.links) == 0 {
		return ""
	}
	return c.links[0].Issuer
}

// Len returns the number of links in c.
func (c *Chain) Len() int {
	if c == nil {
		return 0
	}
	return len(c.links)
}

// Encode returns the chain's wire form, the value to put under
// [MetaKey]: each link's signed envelope in standard base64.
func (c *Chain) Encode() []string {
	if c == nil {
		return nil
	}
	out := make([]string, len(c.links))
	for i, l := range c.links {
		out[i] = base64.StdEncoding.EncodeToString(l.raw)
	}
	return out
}

// String names the peers along the chain, principal first, in short form
// ("12D3…abcdef → 12D3…123456"), for logs.
func (c *Chain) String() string {
	if c == nil || len(c.links) == 0 {
		return "(empty delegation)"
	}
	var b strings.Builder
	b.WriteString(identity.Short(c.links[0].Issuer))
	for _, l := range c.links {
		b.WriteString(" → ")
		b.WriteString(identity.Short(l.Audience))
	}
	return b.String()
}

// DecodeChain reads a chain in its wire form, as found under
// [MetaKey]: a []any of strings (what encoding/json gives), a
// []string, or the JSON text as json.RawMessage or []byte. It checks the
// sizes, every signature and signer, that each link follows the previous
// one and grants no more than it; not the times, nor who presents the chain
// to whom (see [Chain.Verify]).
func DecodeChain(v any) (*Chain, error) {
	var enc []string
	switch v := v.(type) {
	case nil:
		return nil, delegationErr(ErrMalformed, "no chain")
	case []string:
		enc = v
	case []any:
		if len(v) > MaxLinks {
			return nil, tooManyLinks(len(v))
		}
		enc = make([]string, len(v))
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, delegationErr(ErrMalformed, "link %d: a %T, want a base64 string", i, e)
			}
			enc[i] = s
		}
	case json.RawMessage:
		return decodeChainJSON(v)
	case []byte:
		return decodeChainJSON(v)
	default:
		return nil, delegationErr(ErrMalformed, "a %T, want an array of base64 strings", v)
	}
	if len(enc) == 0 {
		return nil, delegationErr(ErrMalformed, "no links")
	}
	if len(enc) > MaxLinks {
		return nil, tooManyLinks(len(enc))
	}
	maxLen := base64.StdEncoding.EncodedLen(MaxLinkSize)
	raws := make([][]byte, len(enc))
	total := 0
	for i, s := range enc {
		if len(s) > maxLen {
			return nil, delegationErr(ErrMalformed, "link %d: %d base64 characters, over the %d-byte limit", i, len(s), MaxLinkSize)
		}
		raw, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, delegationErr(ErrMalformed, "link %d: %v", i, err)
		}
		total += len(raw)
		if total > MaxChainSize {
			return nil, delegationErr(ErrMalformed, "chain over the %d-byte limit", MaxChainSize)
		}
		raws[i] = raw
	}
	c := &Chain{links: make([]chainLink, 0, len(raws))}
	for i, raw := range raws {
		l, err := openLink(i, raw)
		if err != nil {
			return nil, err
		}
		c.links = append(c.links, l)
		if err := checkNarrowed(c.links, i); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func decodeChainJSON(data []byte) (*Chain, error) {
	if len(data) > maxEncodedChain {
		return nil, delegationErr(ErrMalformed, "%d bytes of JSON, over the limit for %d links", len(data), MaxLinks)
	}
	var enc []string
	if err := json.Unmarshal(data, &enc); err != nil {
		return nil, delegationErr(ErrMalformed, "want a JSON array of base64 strings: %v", err)
	}
	return DecodeChain(enc)
}

func tooManyLinks(n int) error {
	return delegationErr(ErrMalformed, "%d links, over the limit of %d", n, MaxLinks)
}

// Verify checks that the chain lets caller, the authenticated peer that
// presents it, call tool on server of self at now, and returns the principal
// on whose behalf caller acts. Caller must have issued the last link, whose
// audience must be self (a chain replayed to another peer fails); no link may
// be expired or issued more than [ClockSkew] in the future; and
// every link's tools must cover the call. (Signatures, chaining and
// narrowing were checked when c was made.) Errors number links from 0, the
// principal's, as [Chain.Links] does.
func (c *Chain) Verify(caller, self lpeer.ID, server, tool string, now time.Time) (principal lpeer.ID, err error) {
	if c == nil || len(c.links) == 0 {
		return "", delegationErr(ErrMalformed, "no links")
	}
	last := &c.links[len(c.links)-1]
	if last.Issuer != caller {
		return "", delegationErr(ErrForged, "last link issued by %s, presented by %s", identity.Short(last.Issuer), identity.Short(caller))
	}
	if last.Audience != self {
		return "", delegationErr(ErrAudience, "made for %s, presented to %s", identity.Short(last.Audience), identity.Short(self))
	}
	if err := c.checkTimes(now); err != nil {
		return "", err
	}
	for i := range c.links {
		if l := &c.links[i]; !l.covers(server, tool) {
			return "", delegationErr(ErrWidened, "link %d (%s) does not cover tool %q: not within %q", i, l.arrow(), server+"/"+tool, l.Scope.Tools)
		}
	}
	return c.links[0].Issuer, nil
}

func (c *Chain) checkTimes(now time.Time) error {
	// Expiries only shrink along a chain, so the last link expires first.
	for i := len(c.links) - 1; i >= 0; i-- {
		l := &c.links[i]
		if !now.Before(l.Expires) {
			return delegationErr(ErrExpired, "expired %s ago", ago(now.Sub(l.Expires)))
		}
		if d := l.Issued.Sub(now); d > ClockSkew {
			return delegationErr(ErrExpired, "link %d (%s) issued %s in the future", i, l.arrow(), ago(d))
		}
	}
	return nil
}

// Covers reports, as an error saying why not, whether a link from the
// chain's last audience to audience for tool on server would be within the
// chain's scope and unexpired at now: what the delegate checks before it
// calls audience on the principal's behalf.
func (c *Chain) Covers(audience lpeer.ID, server, tool string, now time.Time) error {
	if c == nil || len(c.links) == 0 {
		return delegationErr(ErrMalformed, "no links")
	}
	if err := c.checkTimes(now); err != nil {
		return err
	}
	for i := range c.links {
		l := &c.links[i]
		if !l.allowsPeer(audience) {
			return delegationErr(ErrWidened, "link %d (%s) does not allow use on %s: not within %q", i, l.arrow(), identity.Short(audience), l.Scope.Peers)
		}
		if !l.covers(server, tool) {
			return delegationErr(ErrWidened, "link %d (%s) does not cover tool %q: not within %q", i, l.arrow(), server+"/"+tool, l.Scope.Tools)
		}
	}
	return nil
}

// ago formats a positive duration for messages, to the second (or the
// millisecond below one second).
func ago(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
