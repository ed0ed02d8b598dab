package ask

import (
	"context"
	"testing"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/tasks"
)

// A question passed up through a task names that task's caller's task, in
// place of the task below that it named on its way here.
func TestAskParamsNamesTheCallersTask(t *testing.T) {
	ctx := tasks.WithAsk(context.Background(), "root")
	fresh := askParams(ctx, &sdkmcp.ElicitParams{Message: "m"})
	if got := tasks.AskedBy(fresh.Meta); got != "root" {
		t.Errorf("a question asked here names %q, want root", got)
	}
	below := &sdkmcp.ElicitParams{Message: "m", Meta: sdkmcp.Meta{tasks.AskKey: map[string]any{"task": "below"}}}
	passed := askParams(ctx, below)
	if got := tasks.AskedBy(passed.Meta); got != "root" {
		t.Errorf("a question passed up names %q, want root", got)
	}
	if got := tasks.AskedBy(below.Meta); got != "below" {
		t.Errorf("the question passed up was changed: it names %q", got)
	}
	if same := askParams(ctx, passed); same != passed {
		t.Errorf("params naming the right task already were copied")
	}
}
