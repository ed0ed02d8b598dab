package template

import (
	"reflect"
	"strings"
	"testing"
)

func TestExpand(t *testing.T) {
	vs := Vars{
		"task":  {Text: "Lisbon", What: "the task"},
		"event": {Text: `{"name":"x","data":{"uri":"file:///a","n":3,"tags":["p","q"]}}`, Doc: `{"name":"x","data":{"uri":"file:///a","n":3,"tags":["p","q"]}}`, What: "the event"},
	}
	for in, want := range map[string]string{
		"to {{task}}":               "to Lisbon",
		"{{ event.data.uri }}!":     "file:///a!",
		"n={{event.data.n}}":        "n=3",
		"{{event.data.tags.1}}":     "q",
		"{{event.data.tags}}":       `["p","q"]`,
		"{{other}} and {{task}}":    "{{other}} and Lisbon",
		"no placeholders at all {}": "no placeholders at all {}",
	} {
		got, err := vs.Expand(in)
		if err != nil || got != want {
			t.Errorf("Expand(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"{{task.x}}":            "the task has no fields",
		"{{event.data.nope}}":   `the event has no field "nope"`,
		"{{event.data.tags.9}}": `the event has no item "9" (it has 2)`,
	} {
		if _, err := vs.Expand(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Expand(%q): %v; want %q", in, err, want)
		}
	}
	args := map[string]any{"uri": "{{event.data.uri}}", "n": "{{event.data.n}}", "tags": "{{event.data.tags}}", "text": "n is {{event.data.n}}", "list": []any{"{{task}}", 1}}
	got, err := vs.ExpandValue(args, true)
	want := map[string]any{"uri": "file:///a", "n": float64(3), "tags": []any{"p", "q"}, "text": "n is 3", "list": []any{"Lisbon", 1}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("ExpandValue(whole) = %#v, %v", got, err)
	}
	got, _ = vs.ExpandValue(map[string]any{"n": "{{event.data.n}}"}, false)
	if got.(map[string]any)["n"] != "3" {
		t.Errorf("ExpandValue(not whole) kept the type: %#v", got)
	}
}
