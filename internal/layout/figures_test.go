package layout

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestFiguresAreListed keeps docs/figures.md, the list of the figures in
// README.md and DESIGN.md with the commands that produce them, true: every
// figure listed still appears word for word in the document it names (a
// figure changed there must be changed, and checked, here), and every test
// or benchmark a command names exists.
func TestFiguresAreListed(t *testing.T) {
	dir := root(t)
	list, err := os.ReadFile(filepath.Join(dir, "docs", "figures.md"))
	if err != nil {
		t.Fatal(err)
	}
	funcs := testFuncs(t, dir)
	docs := map[string]string{}
	statuses := regexp.MustCompile(`^(ok|fixed|asserted|fixed, asserted|not re-run|no command|external)$`)
	rows := 0
	for i, line := range strings.Split(string(list), "\n") {
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| figure |") || strings.HasPrefix(line, "| ---") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		if len(cells) != 5 {
			t.Errorf("docs/figures.md:%d: %d columns, want 5 (figure, where, command, checked, status)", i+1, len(cells))
			continue
		}
		rows++
		figure, where, command, status := cells[0], cells[1], cells[2], cells[4]
		doc, _, _ := strings.Cut(where, ",")
		text, ok := docs[doc]
		if !ok {
			b, err := os.ReadFile(filepath.Join(dir, doc))
			if err != nil {
				t.Errorf("docs/figures.md:%d: where %q: %v", i+1, where, err)
				continue
			}
			text = squeeze(string(b))
			docs[doc] = text
		}
		if !strings.Contains(text, squeeze(figure)) {
			t.Errorf("docs/figures.md:%d: %q is no longer in %s: check the figure there and correct this list", i+1, figure, doc)
		}
		if !statuses.MatchString(status) {
			t.Errorf("docs/figures.md:%d: status %q, want one of ok, fixed, asserted, not re-run, no command, external", i+1, status)
		}
		for _, name := range namedFuncs(command) {
			if !funcs[name] {
				t.Errorf("docs/figures.md:%d: the command names %s, which no test file defines", i+1, name)
			}
		}
	}
	if rows < 20 {
		t.Errorf("docs/figures.md lists %d figures: the table was not read", rows)
	}
}

// squeeze folds runs of white space into one space, as a paragraph wrapped
// differently reads the same.
func squeeze(s string) string { return strings.Join(strings.Fields(s), " ") }

var (
	funcName = regexp.MustCompile(`\b(?:Test|Benchmark|Fuzz)[A-Z]\w*`)
	benchArg = regexp.MustCompile(`-bench '?\^?([A-Za-z]\w*)`)
)

// namedFuncs returns the tests and benchmarks a command names: whole names,
// and -bench patterns (a benchmark's name without its Benchmark prefix).
func namedFuncs(command string) []string {
	names := funcName.FindAllString(command, -1)
	for _, m := range benchArg.FindAllStringSubmatch(command, -1) {
		if name := m[1]; !strings.HasPrefix(name, "Benchmark") {
			names = append(names, "Benchmark"+name)
		}
	}
	return names
}

// testFuncs returns the names of the Test, Benchmark and Fuzz functions of
// the module's test files.
func testFuncs(t *testing.T, dir string) map[string]bool {
	t.Helper()
	decl := regexp.MustCompile(`(?m)^func ((?:Test|Benchmark|Fuzz)\w*)\(`)
	funcs := map[string]bool{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) && path != dir {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range decl.FindAllStringSubmatch(string(b), -1) {
			funcs[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return funcs
}
