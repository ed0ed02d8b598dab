package tasks

import (
	"context"
	"errors"
	"fmt"
)

// HopError is a failure that names the hop of a tree where it started: the
// peer and tool whose task failed, or the call that could not reach them.
type HopError struct {
	Hop Hop
	Err error
}

func (e *HopError) Error() string {
	return fmt.Sprintf("%v [failed at %s]", e.Err, e.Hop)
}

func (e *HopError) Unwrap() error { return e.Err }

// FailedAt returns the hop named by the first HopError in err's chain.
func FailedAt(err error) (*Hop, bool) {
	var he *HopError
	if errors.As(err, &he) {
		h := he.Hop
		return &h, true
	}
	return nil, false
}

// ResultMeta is what a served call's result carries under MetaKey: the task
// that served it and, for a failure, where the failure started.
type ResultMeta struct {
	Task     string `json:"task"`
	State    State  `json:"state"`
	FailedAt *Hop   `json:"failedAt,omitempty"`
}

// DecodeResult reads the ResultMeta of a result's _meta, if any.
func DecodeResult(meta map[string]any) (ResultMeta, bool) {
	var rm ResultMeta
	switch v := meta[MetaKey].(type) {
	case *ResultMeta:
		return *v, true
	case map[string]any:
		rm.Task, _ = v["task"].(string)
		s, _ := v["state"].(string)
		rm.State = State(s)
		if f, ok := v["failedAt"].(map[string]any); ok {
			h := &Hop{}
			h.Task, _ = f["task"].(string)
			h.Peer, _ = f["peer"].(string)
			h.Server, _ = f["server"].(string)
			h.Tool, _ = f["tool"].(string)
			if h.Peer != "" {
				rm.FailedAt = h
			}
		}
		return rm, rm.Task != ""
	}
	return rm, false
}

type askKey struct{}

// Asker is what the context of a served task carries for [AskMeta]:
// AskParent names the task of the calling node that the task belongs to
// (Meta.Parent), "" for none.
type Asker interface{ AskParent() string }

type askParent string

func (p askParent) AskParent() string { return string(p) }

// WithAsk records on ctx the task of the calling node that the task served
// under ctx belongs to (Meta.Parent), for [AskMeta].
func WithAsk(ctx context.Context, parent string) context.Context {
	return WithAsker(ctx, askParent(parent))
}

// WithAsker puts a on ctx, for [AskMeta] and [AskerFrom]. A node puts its
// own record of a served task there, so that one context value serves both
// it and AskMeta.
func WithAsker(ctx context.Context, a Asker) context.Context {
	return context.WithValue(ctx, askKey{}, a)
}

// AskerFrom returns what WithAsker or WithAsk put on ctx, or nil.
func AskerFrom(ctx context.Context) Asker {
	a, _ := ctx.Value(askKey{}).(Asker)
	return a
}

// AskMeta returns meta with _meta[AskKey] naming the calling node's task,
// when ctx is that of a nested task (see WithAsk): the calling node then
// knows which of its calls an elicitation or sampling request belongs to,
// though on protocol 2025-11-25 it arrives on the session, not on the call.
// meta is copied, never changed; it is returned as is when there is nothing
// to add.
func AskMeta(ctx context.Context, meta map[string]any) map[string]any {
	a := AskerFrom(ctx)
	if a == nil {
		return meta
	}
	parent := a.AskParent()
	if parent == "" {
		return meta
	}
	out := make(map[string]any, len(meta)+1)
	for k, v := range meta {
		out[k] = v
	}
	out[AskKey] = map[string]any{"task": parent}
	return out
}

// AskedBy returns the task named by _meta[AskKey], if any.
func AskedBy(meta map[string]any) string {
	v, _ := meta[AskKey].(map[string]any)
	id, _ := v["task"].(string)
	return id
}
