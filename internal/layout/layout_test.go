// Package layout holds the tests that keep the map of packages in
// DESIGN.md ("Where things are") and the list of figures (docs/figures.md)
// true.
package layout

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/mcpmesh/mcpmesh"

// pkg is what go list says of a package.
type pkg struct {
	ImportPath string
	Name       string
	GoFiles    []string
	Imports    []string // of its non-test files
}

// root returns the module's root folder.
func root(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// packages lists the module's packages.
func packages(t *testing.T, dir string) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", "./...")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// layers reads the table of DESIGN.md's "Where things are": the layer of
// each package, by path inside the module.
func layers(t *testing.T, dir string) map[string]int {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "DESIGN.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	row := regexp.MustCompile(`^\| (\d+) \| (.+?) \|`)
	name := regexp.MustCompile("`([^`]+)`")
	out := map[string]int{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			in = line == "## Where things are"
			continue
		}
		m := row.FindStringSubmatch(line)
		if !in || m == nil {
			continue
		}
		layer, _ := strconv.Atoi(m[1])
		for _, n := range name.FindAllStringSubmatch(m[2], -1) {
			out[n[1]] = layer
		}
	}
	if len(out) == 0 {
		t.Fatal(`DESIGN.md has no "Where things are" table`)
	}
	return out
}

// TestPackagesKeepToTheMapInDESIGN checks the module against the map: every
// package is listed, each imports only packages of a lower layer, and no
// package shadows the MCP SDK's mcp or libp2p's peer.
func TestPackagesKeepToTheMapInDESIGN(t *testing.T) {
	dir := root(t)
	layer := layers(t, dir)
	listed := map[string]bool{}
	for _, p := range packages(t, dir) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		listed[rel] = true
		if p.Name == "mcp" || p.Name == "peer" {
			t.Errorf("%s is package %s, which shadows the SDK's mcp or libp2p's peer: name it after its job", rel, p.Name)
		}
		l, ok := layer[rel]
		if !ok {
			t.Errorf("%s is not in DESIGN.md's \"Where things are\": add it, with its layer and its one job", rel)
			continue
		}
		for _, imp := range p.Imports {
			dep, ok := strings.CutPrefix(imp, module+"/")
			if !ok {
				continue
			}
			if dl, ok := layer[dep]; ok && dl >= l {
				t.Errorf("%s (layer %d) imports %s (layer %d): a package imports only lower layers", rel, l, dep, dl)
			}
		}
	}
	for rel := range layer {
		if !listed[rel] {
			t.Errorf("DESIGN.md lists %s, which is not a package of the module", rel)
		}
	}
}

// The layers that matter most, said plainly: what the gateway and agents
// use of a node is node/iface, and nothing below the node reaches up to it.
func TestOnlyTheTopImportsTheNode(t *testing.T) {
	dir := root(t)
	may := []string{"control", "cmd/mcpmesh", "cmd/mcpmesh-fixture", "bench/load", "bench/dhtsim", "bench"}
	for _, p := range packages(t, dir) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		if slices.Contains(p.Imports, module+"/node") && !slices.Contains(may, rel) {
			t.Errorf("%s imports package node: depend on node/iface instead", rel)
		}
	}
}
