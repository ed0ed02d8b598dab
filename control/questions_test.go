package control_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/control"
	"github.com/mcpmesh/mcpmesh/mcp/ask"
	"github.com/mcpmesh/mcpmesh/node"
)

// A streamed call carries its tool's question to the caller, and the
// caller's answer (POST /v1/call/answer) back to the tool; a sampling
// request is declined, the caller told what it asked.
func TestCallCarriesQuestionsBothWays(t *testing.T) {
	d := newDaemon(t)
	node.AddTool(d.n, &sdkmcp.Tool{Name: "greet"}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, _ any) (*sdkmcp.CallToolResult, any, error) {
		res, err := ask.Elicit(ctx, &sdkmcp.ElicitParams{Message: "your name?", RequestedSchema: map[string]any{
			"type": "object", "properties": map[string]any{"name": map[string]any{"type": "string"}}, "required": []string{"name"}}})
		if err != nil {
			return nil, nil, err
		}
		text := res.Action
		if res.Action == "accept" {
			text = "hello " + res.Content["name"].(string)
		}
		return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: text}}}, nil, nil
	})
	node.AddTool(d.n, &sdkmcp.Tool{Name: "think"}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, _ any) (*sdkmcp.CallToolResult, any, error) {
		_, err := ask.Sample(ctx, &sdkmcp.CreateMessageParams{MaxTokens: 50, Messages: []*sdkmcp.SamplingMessage{{Role: "user", Content: &sdkmcp.TextContent{Text: "Summarise the news"}}}})
		return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "sampling: " + err.Error()}}}, nil, nil
	})
	c, err := control.Dial(context.Background(), d.home)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	self := d.n.ID().String()

	var asked []control.Question
	answer := func(action string, content map[string]any) control.CallHooks {
		return control.CallHooks{Question: func(_ context.Context, q control.Question) (control.Answer, error) {
			asked = append(asked, q)
			return control.Answer{Action: action, Content: content}, nil
		}}
	}
	res, err := c.CallWith(ctx, self, "node/greet", nil, answer("accept", map[string]any{"name": "Ada"}))
	if err != nil || resultText(res) != "hello Ada" {
		t.Fatalf("greet answered: %q, %v", resultText(res), err)
	}
	if len(asked) != 1 || asked[0].Kind != control.QuestionElicitation || asked[0].ID == "" || asked[0].Elicit.Message != "your name?" || asked[0].Elicit.Meta != nil {
		t.Fatalf("asked %+v", asked)
	}
	// The question is closed once answered.
	if err := c.Answer(ctx, control.Answer{Question: asked[0].ID, Action: "decline"}); err == nil || !strings.Contains(err.Error(), "no open question") {
		t.Errorf("a second answer: %v", err)
	}
	if err := c.Answer(ctx, control.Answer{Question: "x", Action: "maybe"}); err == nil || !strings.Contains(err.Error(), "want accept, decline or cancel") {
		t.Errorf("a bad action: %v", err)
	}
	res, err = c.CallWith(ctx, self, "node/greet", nil, answer("decline", nil))
	if err != nil || resultText(res) != "decline" {
		t.Fatalf("greet declined: %q, %v", resultText(res), err)
	}
	// A caller that does not answer questions is not asked.
	asked = nil
	res, err = c.CallProgress(ctx, self, "node/greet", nil, nil)
	if err == nil && !res.Result.IsError {
		t.Fatalf("greet asked no one: %q", resultText(res))
	}

	res, err = c.CallWith(ctx, self, "node/think", nil, answer("accept", nil))
	if err != nil || !strings.Contains(resultText(res), "cannot answer sampling requests") || !strings.Contains(resultText(res), `"Summarise the news"`) {
		t.Fatalf("think: %q, %v", resultText(res), err)
	}
	if len(asked) != 1 || asked[0].Kind != control.QuestionSampling || !strings.Contains(asked[0].Declined, "at most 50 tokens") {
		t.Fatalf("sampling told the caller %+v", asked)
	}
}

// A question left open when the caller goes away ends with the call.
func TestAnUnansweredQuestionEndsWithItsCall(t *testing.T) {
	d := newDaemon(t)
	ended := make(chan error, 1)
	node.AddTool(d.n, &sdkmcp.Tool{Name: "wait"}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, _ any) (*sdkmcp.CallToolResult, any, error) {
		_, err := ask.Elicit(ctx, &sdkmcp.ElicitParams{Message: "well?", RequestedSchema: map[string]any{"type": "object"}})
		ended <- err
		return nil, nil, err
	})
	c, err := control.Dial(context.Background(), d.home)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	callCtx, hangUp := context.WithCancel(ctx)
	_, err = c.CallWith(callCtx, d.n.ID().String(), "node/wait", nil, control.CallHooks{Question: func(context.Context, control.Question) (control.Answer, error) {
		hangUp() // Ctrl-C while the question is open
		return control.Answer{}, context.Canceled
	}})
	if err == nil {
		t.Fatal("the call went on")
	}
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("the tool got an answer")
		}
	case <-ctx.Done():
		t.Fatal("the tool still waits for its answer")
	}
}

func resultText(res control.CallResponse) string {
	if res.Result == nil || len(res.Result.Content) == 0 {
		return ""
	}
	t, _ := res.Result.Content[0].(*sdkmcp.TextContent)
	if t == nil {
		return ""
	}
	return t.Text
}

// One call's tools may not hold more than 16 questions open: the 17th is
// refused at once, and the others are still answered.
func TestACallHoldsAtMost16OpenQuestions(t *testing.T) {
	d := newDaemon(t)
	refused := make(chan string, 1)
	node.AddTool(d.n, &sdkmcp.Tool{Name: "flood"}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, _ any) (*sdkmcp.CallToolResult, any, error) {
		errs := make(chan error, 17)
		for range 17 {
			go func() {
				_, err := ask.Elicit(ctx, &sdkmcp.ElicitParams{Message: "?", RequestedSchema: map[string]any{"type": "object"}})
				errs <- err
			}()
		}
		failed := 0
		for range 17 {
			if err := <-errs; err != nil {
				failed++
				select {
				case refused <- err.Error():
				default:
				}
			}
		}
		return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: fmt.Sprint(failed, " refused")}}}, nil, nil
	})
	c, err := control.Dial(context.Background(), d.home)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var why string
	res, err := c.CallWith(ctx, d.n.ID().String(), "node/flood", nil, control.CallHooks{Question: func(ctx context.Context, q control.Question) (control.Answer, error) {
		if why == "" { // hold the first until one is refused
			select {
			case why = <-refused:
			case <-ctx.Done():
				return control.Answer{}, errors.New("no question was refused")
			}
		}
		return control.Answer{Action: "decline"}, nil
	}})
	if err != nil || resultText(res) != "1 refused" || !strings.Contains(why, "16 questions of this call open already") {
		t.Fatalf("flood: %q, %v (refused: %q)", resultText(res), err, why)
	}
}
