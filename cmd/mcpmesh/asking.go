package main

// Questions a called tool asks its caller (MCP elicitation), from any hop of
// the call's tree, answered at the terminal: the message, then a prompt per
// field of the requested schema, the answer checked against the schema
// before it goes back.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/jsonschema-go/jsonschema"

	"github.com/mcpmesh/mcpmesh/control"
	"github.com/mcpmesh/mcpmesh/internal/elicitcheck"
)

// asker answers the questions of one call: with the --answer values first,
// then at the prompt if it may prompt, else by declining (saying why and
// how to answer).
type asker struct {
	w       io.Writer // stderr: questions, prompts, notices
	in      *lines    // where typed answers come from; nil: no prompting
	answers []string  // --answer values not used yet
	noInput string    // why the call cannot prompt, when in is nil
	fix     string    // and what to change so that it can
	echo    bool      // show each answer read (the input is no terminal, which would)
	view    *progressView
}

// printable drops what a terminal would take for a command (escape
// sequences, carriage returns, other control characters but new lines and
// tabs) from text a peer wrote: a question must not rewrite the screen.
func printable(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || (unicode.IsControl(r) && r != '\n' && r != '\t') {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == utf8.RuneError:
			b.WriteRune('?')
		case unicode.IsControl(r) && r != '\n' && r != '\t':
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// printableWriter writes what printable leaves of each write.
type printableWriter struct{ w io.Writer }

func (p printableWriter) Write(b []byte) (int, error) {
	if _, err := io.WriteString(p.w, printable(string(b))); err != nil {
		return 0, err
	}
	return len(b), nil
}

// lines reads a reader's lines on a goroutine of its own, started at the
// first prompt, so that a prompt can stop waiting when the call ends. The
// goroutine ends at the reader's end (or with the process: a terminal read
// cannot be interrupted).
type lines struct {
	r       io.Reader
	ch      chan string
	started bool
	err     error // after ch is closed
}

func newLines(r io.Reader) *lines { return &lines{r: r, ch: make(chan string)} }

// next returns the next line, without its end.
func (l *lines) next(ctx context.Context) (string, error) {
	if !l.started {
		l.started = true
		go func() {
			defer close(l.ch)
			br := bufio.NewReader(l.r)
			for {
				s, err := br.ReadString('\n')
				if s != "" || err == nil {
					l.ch <- strings.TrimRight(s, "\r\n")
				}
				if err != nil {
					l.err = err
					return
				}
			}
		}()
	}
	select {
	case s, ok := <-l.ch:
		if !ok {
			if l.err == io.EOF {
				return "", io.EOF
			}
			return "", fmt.Errorf("read the answer: %w", l.err)
		}
		return s, nil
	case <-ctx.Done():
		return "", context.Cause(ctx)
	}
}

// unused says, after the call, that --answer values were left over: the
// tool asked fewer questions than the script expected.
func (a *asker) unused() {
	if n := len(a.answers); n > 0 {
		fmt.Fprintf(a.w, "note: %d --answer value(s) went unused: the tool asked fewer questions\n", n)
	}
}

func (a *asker) question(ctx context.Context, q control.Question) (control.Answer, error) {
	a.view.pause()
	defer a.view.resume()
	if q.Kind == control.QuestionSampling {
		fmt.Fprintf(a.w, "declined a sampling request: %s\n", q.Declined)
		return control.Answer{}, nil
	}
	if q.Kind != control.QuestionElicitation || q.Elicit == nil {
		fmt.Fprintf(a.w, "declined a question of a kind this mcpmesh does not know (%q)\n", q.Kind)
		return control.Answer{Action: "decline"}, nil
	}
	p := q.Elicit
	var f *form
	if p.Mode != "url" {
		var err error
		if f, err = parseForm(p.RequestedSchema); err == nil && len(f.fields) > maxFields {
			err = fmt.Errorf("%d fields, more than the %d a prompt asks", len(f.fields), maxFields)
		}
		if err != nil {
			fmt.Fprintf(a.w, "declined the tool's question %q: its schema is not one a terminal can fill in (%v)\n", p.Message, err)
			return control.Answer{Action: "decline"}, nil
		}
	}
	if len(a.answers) > 0 {
		given := a.answers[0]
		a.answers = a.answers[1:]
		return answerGiven(p.Message, f, given)
	}
	if a.in == nil {
		what := fmt.Sprintf("%q", p.Message)
		how := a.fix + ", give the answer beforehand with --answer"
		if f != nil {
			what += " (" + f.summary() + ")"
			how += " '" + f.example() + "'"
		} else {
			what += " (open " + p.URL + ")"
			how += " accept"
		}
		fmt.Fprintf(a.w, "declined the tool's question %s: %s\n  to answer it: %s, or read answers from stdin with --prompt\n", what, a.noInput, how)
		return control.Answer{Action: "decline"}, nil
	}
	return a.prompt(ctx, p.Message, p.URL, f)
}

// answerGiven answers with an --answer value: accept, decline, cancel, or
// a JSON object, which accepts with it as the content.
func answerGiven(message string, f *form, given string) (control.Answer, error) {
	switch given {
	case "accept":
		if f == nil {
			return control.Answer{Action: "accept"}, nil // a link: no content
		}
		if len(f.required) > 0 {
			return control.Answer{}, usageError("--answer accept: the question %q has required fields: give them, like --answer '%s'", message, f.example())
		}
		return control.Answer{Action: "accept", Content: map[string]any{}}, nil
	case "decline", "cancel":
		return control.Answer{Action: given}, nil
	}
	if f == nil {
		return control.Answer{}, usageError("--answer %q: the question %q asks to open a link: answer accept, decline or cancel", given, message)
	}
	var content map[string]any
	if err := json.Unmarshal([]byte(given), &content); err != nil || content == nil {
		return control.Answer{}, usageError("--answer %q: want a JSON object of the question's fields, or accept, decline or cancel", given)
	}
	if err := f.check(content); err != nil {
		return control.Answer{}, usageError("--answer %s does not answer the question %q: %v (%s)", given, message, err, f.summary())
	}
	return control.Answer{Action: "accept", Content: content}, nil
}

// prompt asks the question at the prompt: accept, decline or cancel, then,
// to accept, each field in turn. The end of the input cancels the question.
func (a *asker) prompt(ctx context.Context, message, url string, f *form) (control.Answer, error) {
	ans, err := a.promptUntilEOF(ctx, message, url, f)
	if err == io.EOF {
		fmt.Fprintln(a.w, "\nthe input ended before the question was answered: cancelled it")
		return control.Answer{Action: "cancel"}, nil
	}
	return ans, err
}

func (a *asker) promptUntilEOF(ctx context.Context, message, url string, f *form) (control.Answer, error) {
	read := func() (string, error) {
		s, err := a.in.next(ctx)
		if err == nil && a.echo {
			fmt.Fprintln(a.w, s)
		}
		return strings.TrimSpace(s), err
	}
	fmt.Fprintf(a.w, "The tool asks: %s\n", message)
	if f == nil {
		fmt.Fprintf(a.w, "  open this link: %s\n", url)
	}
	for {
		fmt.Fprint(a.w, "Answer (a)ccept, (d)ecline or (c)ancel? [a] ")
		s, err := read()
		if err != nil {
			return control.Answer{}, err
		}
		switch strings.ToLower(s) {
		case "", "a", "accept", "y", "yes":
		case "d", "decline", "n", "no":
			return control.Answer{Action: "decline"}, nil
		case "c", "cancel":
			return control.Answer{Action: "cancel"}, nil
		default:
			fmt.Fprintf(a.w, "  %q: type a, d or c\n", s)
			continue
		}
		break
	}
	if f == nil {
		return control.Answer{Action: "accept"}, nil
	}
	for {
		content := map[string]any{}
		for _, fl := range f.fields {
			for {
				fmt.Fprintf(a.w, "  %s: ", fl.prompt())
				s, err := read()
				if err != nil {
					return control.Answer{}, err
				}
				v, set, err := fl.parse(s)
				if err == nil && set {
					err = fl.check(v)
				}
				if err != nil {
					fmt.Fprintf(a.w, "    %v\n", err)
					continue
				}
				if set {
					content[fl.name] = v
				}
				break
			}
		}
		if err := f.check(content); err != nil {
			fmt.Fprintf(a.w, "  that answer does not fit the question: %v; again:\n", err)
			continue
		}
		return control.Answer{Action: "accept", Content: content}, nil
	}
}

// maxFields bounds the fields a question may ask at the prompt.
const maxFields = 64

// form is an elicitation's requested schema: a flat object of fields.
type form struct {
	schema   *jsonschema.Resolved
	fields   []field
	required []string
}

// field is one property of the form, as the prompt shows and reads it.
type field struct {
	name, title, desc string
	kind              string // string, integer, number, boolean, or array (several of choices)
	format            string // of a string: email, uri, date, date-time (MCP's), or another, not checked
	required          bool
	def               any
	choices           []choice
	schema            *jsonschema.Resolved // the field's own, to check it as it is typed; nil if it cannot stand alone
	limits            string               // its bounds and format, as the prompt says them
}

type choice struct{ value, title string }

// parseForm reads an elicitation's requested schema (as JSON decodes it).
func parseForm(requested any) (*form, error) {
	s, err := elicitcheck.Schema(requested)
	if err != nil {
		return nil, err
	}
	rs, err := s.Resolve(nil)
	if err != nil {
		return nil, err
	}
	f := &form{schema: rs, required: s.Required}
	names := make([]string, 0, len(s.Properties))
	for name := range s.Properties {
		names = append(names, name)
	}
	// Required fields first, in the order the schema names them; the
	// others by name (the order of properties does not survive the hops).
	sort.SliceStable(names, func(i, j int) bool {
		ri, rj := slices.Index(s.Required, names[i]), slices.Index(s.Required, names[j])
		switch {
		case ri >= 0 && rj >= 0:
			return ri < rj
		case ri >= 0 || rj >= 0:
			return ri >= 0
		}
		return names[i] < names[j]
	})
	for _, name := range names {
		p := s.Properties[name]
		if p == nil {
			continue
		}
		fl := field{name: name, title: p.Title, desc: p.Description, kind: p.Type, required: slices.Contains(s.Required, name)}
		fl.schema, _ = p.Resolve(nil)
		fl.limits, fl.format = limitsOf(p), p.Format
		if len(p.Default) > 0 {
			json.Unmarshal(p.Default, &fl.def)
		}
		opts := p
		if p.Type == "array" {
			if p.Items == nil {
				return nil, fmt.Errorf("field %q is a list of nothing named", name)
			}
			opts = p.Items
		}
		fl.choices = choicesOf(opts)
		switch {
		case p.Type == "array" && len(fl.choices) == 0:
			return nil, fmt.Errorf("field %q is a list without choices", name)
		case p.Type == "string", p.Type == "integer", p.Type == "number", p.Type == "boolean", p.Type == "array":
		default:
			return nil, fmt.Errorf("field %q has type %q", name, p.Type)
		}
		f.fields = append(f.fields, fl)
	}
	return f, nil
}

// limitsOf says a field's bounds and format: "2 to 12", "at least 1 item".
func limitsOf(p *jsonschema.Schema) string {
	var parts []string
	bounds := func(lo, hi *float64, unit string) {
		switch {
		case lo != nil && hi != nil:
			parts = append(parts, fmt.Sprintf("%v to %v%s", *lo, *hi, unit))
		case lo != nil:
			parts = append(parts, fmt.Sprintf("at least %v%s", *lo, unit))
		case hi != nil:
			parts = append(parts, fmt.Sprintf("at most %v%s", *hi, unit))
		}
	}
	asFloat := func(n *int) *float64 {
		if n == nil {
			return nil
		}
		f := float64(*n)
		return &f
	}
	bounds(p.Minimum, p.Maximum, "")
	bounds(asFloat(p.MinLength), asFloat(p.MaxLength), " characters")
	bounds(asFloat(p.MinItems), asFloat(p.MaxItems), " chosen")
	if p.Format != "" {
		parts = append(parts, p.Format)
	}
	return strings.Join(parts, ", ")
}

// choicesOf lists the values a field may take, with their titles: enum
// (with the legacy enumNames), or oneOf/anyOf of consts.
func choicesOf(s *jsonschema.Schema) []choice {
	var out []choice
	names, _ := s.Extra["enumNames"].([]any)
	for i, v := range s.Enum {
		c := choice{value: fmt.Sprint(v)}
		if i < len(names) {
			c.title, _ = names[i].(string)
		}
		out = append(out, c)
	}
	for _, alt := range append(slices.Clone(s.OneOf), s.AnyOf...) {
		if alt != nil && alt.Const != nil {
			out = append(out, choice{value: fmt.Sprint(*alt.Const), title: alt.Title})
		}
	}
	return out
}

// check validates content against the requested schema.
func (f *form) check(content map[string]any) error {
	for _, fl := range f.fields {
		if v, ok := content[fl.name].(string); ok && fl.kind == "string" {
			if err := elicitcheck.Format(fl.format, v); err != nil {
				return fmt.Errorf("%s: %w", fl.name, err)
			}
		}
	}
	return elicitcheck.Validate(f.schema, content)
}

// check validates a field's value against the field's own schema.
func (fl field) check(v any) error {
	if fl.schema == nil {
		return nil
	}
	return elicitcheck.Validate(fl.schema, v)
}

// summary lists the fields: "name string, required; age integer".
func (f *form) summary() string {
	if len(f.fields) == 0 {
		return "no fields: a yes or no"
	}
	var parts []string
	for _, fl := range f.fields {
		parts = append(parts, fl.name+" ("+fl.typeText()+")")
	}
	return "fields: " + strings.Join(parts, ", ")
}

// example is a JSON answer of the form's shape, for the advice to use
// --answer: its required fields (the others take their defaults), or its
// first.
func (f *form) example() string {
	ex := map[string]any{}
	for i, fl := range f.fields {
		if !fl.required && (i > 0 || len(f.required) > 0) {
			continue
		}
		switch {
		case fl.def != nil:
			ex[fl.name] = fl.def
		case len(fl.choices) > 0 && fl.kind == "array":
			ex[fl.name] = []string{fl.choices[0].value}
		case len(fl.choices) > 0:
			ex[fl.name] = fl.choices[0].value
		case fl.kind == "string":
			ex[fl.name] = "…"
		case fl.kind == "boolean":
			ex[fl.name] = true
		default:
			ex[fl.name] = 0
		}
	}
	b, _ := json.Marshal(ex)
	return string(b)
}

func (fl field) typeText() string {
	var s string
	switch {
	case fl.kind == "array":
		s = "any of " + fl.choiceText() + ", separated by commas"
	case len(fl.choices) > 0:
		s = "one of " + fl.choiceText()
	case fl.kind == "boolean":
		s = "yes or no"
	default:
		s = fl.kind
	}
	if fl.limits != "" {
		s += ", " + fl.limits
	}
	if fl.required {
		s += ", required"
	}
	if fl.def != nil {
		s += ", default " + fmt.Sprint(fl.def)
	}
	return s
}

func (fl field) choiceText() string {
	var parts []string
	for i, c := range fl.choices {
		t := fmt.Sprintf("%d=%s", i+1, c.value)
		if c.title != "" && c.title != c.value {
			t += " (" + c.title + ")"
		}
		parts = append(parts, t)
	}
	return strings.Join(parts, ", ")
}

// prompt is what the prompt shows for the field.
func (fl field) prompt() string {
	label := fl.name
	if fl.title != "" && fl.title != fl.name {
		label = fl.title + " [" + fl.name + "]"
	}
	if fl.desc != "" {
		label += " — " + firstLine(fl.desc, 80)
	}
	return label + " (" + fl.typeText() + ")"
}

// parse reads what was typed for the field: the value, and whether there
// is one (an empty line takes the default, or leaves an optional field
// out).
func (fl field) parse(s string) (any, bool, error) {
	if s == "" {
		switch {
		case fl.def != nil:
			return fl.def, true, nil
		case fl.required:
			return nil, false, errors.New("required: type a value")
		}
		return nil, false, nil
	}
	switch {
	case fl.kind == "array":
		var out []string
		for _, part := range strings.Split(s, ",") {
			v, err := fl.pick(strings.TrimSpace(part))
			if err != nil {
				return nil, false, err
			}
			out = append(out, v)
		}
		return out, true, nil
	case len(fl.choices) > 0:
		v, err := fl.pick(s)
		return v, err == nil, err
	}
	switch fl.kind {
	case "integer":
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, false, fmt.Errorf("%q is not a whole number", s)
		}
		return n, true, nil
	case "number":
		n, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsInf(n, 0) || math.IsNaN(n) {
			return nil, false, fmt.Errorf("%q is not a number", s)
		}
		return n, true, nil
	case "boolean":
		switch strings.ToLower(s) {
		case "y", "yes", "true", "1":
			return true, true, nil
		case "n", "no", "false", "0":
			return false, true, nil
		}
		return nil, false, fmt.Errorf("%q: type y or n", s)
	}
	if err := elicitcheck.Format(fl.format, s); err != nil {
		return nil, false, err
	}
	return s, true, nil
}

// pick finds a choice by its number or its value.
func (fl field) pick(s string) (string, error) {
	if i, err := strconv.Atoi(s); err == nil && i >= 1 && i <= len(fl.choices) {
		return fl.choices[i-1].value, nil
	}
	for _, c := range fl.choices {
		if c.value == s {
			return c.value, nil
		}
	}
	return "", fmt.Errorf("%q is not one of the choices: %s", s, fl.choiceText())
}
