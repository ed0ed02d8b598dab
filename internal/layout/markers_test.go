package layout

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// A merge left half-done in the docs passes every other test (the package
// table's check read a DESIGN.md with conflict markers in it): the docs a
// user reads hold none.
func TestDocsHoldNoMergeMarkers(t *testing.T) {
	dir := root(t)
	docs, _ := filepath.Glob(filepath.Join(dir, "docs", "*.md"))
	docs = append(docs, filepath.Join(dir, "README.md"), filepath.Join(dir, "DESIGN.md"))
	for _, p := range docs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range bytes.Split(b, []byte("\n")) {
			for _, m := range []string{"<<<<<<< ", ">>>>>>> ", "======="} {
				if bytes.HasPrefix(line, []byte(m)) && (m != "=======" || len(bytes.TrimSpace(line)) == 7) {
					t.Errorf("%s:%d: merge conflict marker %q", filepath.Base(p), i+1, line)
				}
			}
		}
	}
}
