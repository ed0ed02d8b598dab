package sdkcompat

import (
	"encoding/json"
	"fmt"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
)

// InputRequiredResult builds the result of method (tools/call, prompts/get
// or resources/read) that carries pending questions for the caller (multi
// round-trip, protocol 2026-07-28) and the state to send back with the
// answers. It goes through JSON because resultType, which tells clients
// that this is not the final answer, is private to the SDK's result types.
func InputRequiredResult(method string, pending sdkmcp.InputRequestMap, state string) (sdkmcp.Result, error) {
	body, err := json.Marshal(map[string]any{
		"content":       []any{},
		"messages":      []any{},
		"contents":      []any{},
		"inputRequests": pending,
		"requestState":  state,
		"resultType":    "input_required",
	})
	if err != nil {
		return nil, fmt.Errorf("encode input requests: %w", err)
	}
	var res sdkmcp.Result
	switch method {
	case "tools/call":
		res = new(sdkmcp.CallToolResult)
	case "prompts/get":
		res = new(sdkmcp.GetPromptResult)
	default:
		res = new(sdkmcp.ReadResourceResult)
	}
	if err := json.Unmarshal(body, res); err != nil {
		return nil, fmt.Errorf("encode input requests: %w", err)
	}
	return res, nil
}
