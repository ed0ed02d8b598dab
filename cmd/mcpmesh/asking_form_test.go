package main

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/control"
)

// The choices of every enum form MCP allows (the conformance fixture's
// test_elicitation_sep1330_enums schema) are offered and read by number or
// value; the answer is checked against the schema.
func TestFormReadsEveryKindOfChoice(t *testing.T) {
	var schema any
	json.Unmarshal([]byte(`{"type":"object","properties":{
		"untitledSingle":{"type":"string","enum":["option1","option2","option3"]},
		"titledSingle":{"type":"string","oneOf":[{"const":"value1","title":"First Option"},{"const":"value2","title":"Second Option"}]},
		"legacyEnum":{"type":"string","enum":["opt1","opt2"],"enumNames":["Option One","Option Two"]},
		"untitledMulti":{"type":"array","minItems":1,"maxItems":2,"items":{"type":"string","enum":["option1","option2","option3"]}},
		"titledMulti":{"type":"array","items":{"type":"string","anyOf":[{"const":"value1","title":"First Option"},{"const":"value2","title":"Second Option"}]}}
	},"required":["titledMulti"]}`), &schema)
	f, err := parseForm(schema)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, fl := range f.fields {
		names = append(names, fl.name)
	}
	if want := []string{"titledMulti", "legacyEnum", "titledSingle", "untitledMulti", "untitledSingle"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("fields %v, want %v (required first)", names, want)
	}
	w := &strings.Builder{}
	a := &asker{w: w, in: newLines(strings.NewReader("\n2, value1\n2\nvalue1\n1,2,3\n1,3\n9\noption3\n")), view: newProgressView(w, false)}
	ans, err := a.question(context.Background(), control.Question{ID: "q", Kind: control.QuestionElicitation, Elicit: elicit("Pick", schema)})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"titledMulti": []string{"value2", "value1"}, "legacyEnum": "opt2", "titledSingle": "value1", "untitledMulti": []string{"option1", "option3"}, "untitledSingle": "option3"}
	if ans.Action != "accept" || !reflect.DeepEqual(ans.Content, want) {
		t.Fatalf("answer %+v, want %v\n%s", ans, want, w)
	}
	for _, shown := range []string{"legacyEnum (one of 1=opt1 (Option One), 2=opt2 (Option Two))", "titledSingle (one of 1=value1 (First Option), 2=value2 (Second Option))",
		"array length 3 is greater than 2" /* 1,2,3 is too many: asked again */, `"9" is not one of the choices`} {
		if !strings.Contains(w.String(), shown) {
			t.Errorf("the prompt lacks %q:\n%s", shown, w)
		}
	}
}

func TestAnswerGivenIsCheckedAgainstTheSchema(t *testing.T) {
	f, err := parseForm(map[string]any{"type": "object", "properties": map[string]any{"n": map[string]any{"type": "integer", "maximum": 3}}, "required": []any{"n"}})
	if err != nil {
		t.Fatal(err)
	}
	for given, ok := range map[string]bool{`{"n":2}`: true, `{"n":7}`: false, `{"n":"2"}`: false, `{}`: false, `[1]`: false, "accept": false, "decline": true, "cancel": true} {
		ans, err := answerGiven("how many?", f, given)
		if (err == nil) != ok {
			t.Errorf("--answer %s: %+v, %v", given, ans, err)
		}
	}
	// Formats, which the schema validator does not check.
	f, err = parseForm(map[string]any{"type": "object", "properties": map[string]any{
		"email": map[string]any{"type": "string", "format": "email"}, "uri": map[string]any{"type": "string", "format": "uri"},
		"date": map[string]any{"type": "string", "format": "date"}, "at": map[string]any{"type": "string", "format": "date-time"}}})
	if err != nil {
		t.Fatal(err)
	}
	for given, ok := range map[string]bool{
		`{"email":"ada@example.org","uri":"https://example.org/x","date":"2026-12-06","at":"2026-12-06T11:30:00Z"}`: true,
		`{"email":"ada"}`: false, `{"email":"Ada <ada@example.org>"}`: false, `{"uri":"example.org"}`: false, `{"date":"6/12/2026"}`: false, `{"at":"2026-12-06"}`: false,
	} {
		if _, err := answerGiven("when?", f, given); (err == nil) != ok {
			t.Errorf("--answer %s: %v", given, err)
		}
	}
	if _, err := parseForm(map[string]any{"type": "object", "properties": map[string]any{"x": map[string]any{"type": "object"}}}); err == nil {
		t.Error("a nested object was taken for a field")
	}
}

func elicit(message string, schema any) *sdkmcp.ElicitParams {
	return &sdkmcp.ElicitParams{Message: message, RequestedSchema: schema}
}

// A question is text from the network: it cannot move the cursor or clear
// the screen.
func TestAQuestionCannotCommandTheTerminal(t *testing.T) {
	var out strings.Builder
	schema := map[string]any{"type": "object", "properties": map[string]any{"x": map[string]any{"type": "string", "title": "X\r\x1b[1A", "enum": []any{"a\x1b]0;pwned\x07"}}}}
	a := &asker{w: printableWriter{&out}, in: newLines(strings.NewReader("\n1\n")), view: newProgressView(&out, false)}
	ans, err := a.question(context.Background(), control.Question{ID: "q", Kind: control.QuestionElicitation, Elicit: elicit("Clear\x1b[2J\x9b2J the screen?\nSecond line", schema)})
	if err != nil || ans.Content["x"] != "a\x1b]0;pwned\x07" {
		t.Fatalf("answer %+v, %v", ans, err) // the value goes back as the tool gave it
	}
	if strings.ContainsAny(out.String(), "\x1b\x07\r\u009b") || !strings.Contains(out.String(), "Clear[2J?2J the screen?\nSecond line") /* a stray byte shows as ? */ {
		t.Fatalf("shown: %q", out.String())
	}
}
