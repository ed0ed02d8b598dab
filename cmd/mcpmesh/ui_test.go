package main

import (
	"net/http"
	"strings"
	"testing"
)

// The daemon prints its console's URL; 'mcpmesh ui' finds it through the
// control API; the URL signs a browser in.
func TestConsoleURLFromDaemonAndUI(t *testing.T) {
	d := startDaemon(t, "--ui", "127.0.0.1:0")
	var url string
	for _, line := range strings.Split(d.out.String(), "\n") {
		if u, ok := strings.CutPrefix(line, "  console: "); ok {
			url = u
		}
	}
	if !strings.HasPrefix(url, "http://127.0.0.1:") || !strings.Contains(url, "/?token=") {
		t.Fatalf("no console URL in the banner:\n%s", d.out)
	}
	out, errOut, code := run(t, "--home", d.home, "ui", "--print")
	if code != 0 || strings.TrimSpace(out) != url {
		t.Fatalf("mcpmesh ui --print: exit %d, %q (stderr %s), want %s", code, out, errOut, url)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Fatalf("login URL: %s, cookies %v", resp.Status, resp.Cookies())
	}
	req, _ := http.NewRequest("GET", strings.Split(url, "?")[0], nil)
	req.AddCookie(resp.Cookies()[0])
	if resp, err = client.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the page, signed in: %s", resp.Status)
	}

	// A daemon without a console says how to get one; --ui is loopback only.
	plain := startDaemon(t)
	if _, errOut, code := run(t, "--home", plain.home, "ui", "--print"); code != 1 || !strings.Contains(errOut, "--ui 127.0.0.1:PORT") {
		t.Errorf("mcpmesh ui without a console: exit %d, %s", code, errOut)
	}
	if _, errOut, code := run(t, "--home", t.TempDir(), "node", "--open", "--no-mdns", "--ui", "0.0.0.0:8780"); code != 2 || !strings.Contains(errOut, "loopback") {
		t.Errorf("--ui 0.0.0.0:8780: exit %d, %s; want a usage error", code, errOut)
	}
}
