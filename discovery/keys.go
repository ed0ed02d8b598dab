package discovery

import (
	"fmt"
	"strings"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// Capability names what a provider record advertises: a tool name, a tag
// or an event type.
type Capability struct {
	Kind string // "tool", "tag" or "event"
	Name string
}

func (c Capability) String() string { return c.Kind + "/" + c.Name }

// ParseQuery reads a lookup as users write it: "tag:NAME" for a tag,
// "event:NAME" for the sources of an event type, anything else a tool name.
func ParseQuery(q string) (Capability, error) {
	q = strings.TrimSpace(q)
	for _, kind := range []string{"tag", "event"} {
		if name, ok := strings.CutPrefix(q, kind+":"); ok {
			if name == "" {
				return Capability{}, fmt.Errorf("query %q: empty %s", q, kind)
			}
			return Capability{Kind: kind, Name: name}, nil
		}
	}
	if q == "" {
		return Capability{}, fmt.Errorf("empty query: give a tool name, tag:NAME or event:NAME")
	}
	return Capability{Kind: "tool", Name: q}, nil
}

// CID returns the DHT key under which providers of c are recorded: the
// SHA-256 of "mcpmesh/<kind>/<name>", so keys are short whatever the name.
func (c Capability) CID() cid.Cid {
	h, err := mh.Sum([]byte("mcpmesh/"+c.Kind+"/"+c.Name), mh.SHA2_256, -1)
	if err != nil {
		panic(fmt.Sprintf("discovery: sha2-256 multihash: %v", err)) // cannot fail for sha2-256
	}
	return cid.NewCidV1(cid.Raw, h)
}
