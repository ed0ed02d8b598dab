package inbox

import (
	"context"
	"encoding/json"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
)

// SubscribeIn is the input of mesh_subscribe.
type SubscribeIn struct {
	Event string          `json:"event"`
	From  string          `json:"from,omitempty"`
	Where json.RawMessage `json:"where,omitempty"`
}

// EventsIn is the input of mesh_events.
type EventsIn struct {
	IDs   []string `json:"ids,omitempty"`
	WaitS int      `json:"wait_s,omitempty"`
	Max   int      `json:"max,omitempty"`
}

// The tools' schemas are written by hand, short: every byte of a tool list
// is paid in the host's context.
var (
	subscribeSchema = json.RawMessage(`{"type":"object","properties":{"event":{"type":"string","description":"e.g. mcp.resource.updated, mcp.task.ended"},"from":{"type":"string","description":"peer ID, self, or any (default)"},"where":{"type":"object","description":"data filter: field path to value (\"*\" globs)"}},"required":["event"]}`)
	eventsSchema    = json.RawMessage(`{"type":"object","properties":{"ids":{"type":"array","items":{"type":"string"}},"wait_s":{"type":"integer","description":"default 30, at most 60"},"max":{"type":"integer"}}}`)
)

// AddTools adds mesh_subscribe and mesh_events, backed by ib, to s.
func AddTools(s *sdkmcp.Server, ib *Inbox) {
	s.AddTool(&sdkmcp.Tool{
		Name:        "mesh_subscribe",
		Description: "Subscribe to events of the mesh (from one peer or any); returns an id for mesh_events.",
		InputSchema: subscribeSchema,
	}, func(ctx context.Context, req *sdkmcp.CallToolRequest) (*sdkmcp.CallToolResult, error) {
		var in SubscribeIn
		if err := json.Unmarshal(req.Params.Arguments, &in); err != nil {
			return errorResult(err), nil
		}
		id, err := ib.Subscribe(ctx, in.From, in.Event, in.Where)
		if err != nil {
			return errorResult(err), nil
		}
		return text(map[string]string{"id": id})
	})
	s.AddTool(&sdkmcp.Tool{
		Name:        "mesh_events",
		Description: "Wait for events of your subscriptions (all, or ids) and return them.",
		InputSchema: eventsSchema,
		Annotations: &sdkmcp.ToolAnnotations{ReadOnlyHint: true},
	}, func(ctx context.Context, req *sdkmcp.CallToolRequest) (*sdkmcp.CallToolResult, error) {
		var in EventsIn
		if len(req.Params.Arguments) > 0 {
			if err := json.Unmarshal(req.Params.Arguments, &in); err != nil {
				return errorResult(err), nil
			}
		}
		b, err := ib.Wait(ctx, in.IDs, time.Duration(in.WaitS)*time.Second, in.Max)
		if err != nil {
			return errorResult(err), nil
		}
		return text(b)
	})
}

func text(v any) (*sdkmcp.CallToolResult, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: string(b)}}}, nil
}

func errorResult(err error) *sdkmcp.CallToolResult {
	return &sdkmcp.CallToolResult{IsError: true, Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: err.Error()}}}
}
