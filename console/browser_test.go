package console_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/mcpmesh/mcpmesh/console"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
)

// chromiumPath finds a Chromium to drive: $MCPMESH_CHROMIUM, or chromium on
// the PATH (Debian's package; .ci/run installs it). Without one the browser
// tests skip, except in CI, where that is a failure.
func chromiumPath(t testing.TB) string {
	if p := os.Getenv("MCPMESH_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no chromium on the PATH: CI must have it (apt-get install -y chromium; .ci/run does)")
	}
	t.Skip("no chromium on the PATH (apt-get install -y chromium, or set MCPMESH_CHROMIUM)")
	return ""
}

// browser starts a headless Chromium with a fresh profile and returns a
// context for its one tab; the browser stops when the test ends. The flags
// keep it from reaching anything but the pages it is sent to (this network
// refuses other connections, and a test must not depend on them).
func browser(t testing.TB) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1366, 860), // a laptop screen
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// page runs browser actions with a deadline, failing the test with what
// was being done.
type page struct {
	t   testing.TB
	ctx context.Context
	dir string
	n   int
	axe string // axe-core's script, "" without it
}

func (p *page) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 60*time.Second) // generous: CI machines are busy
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.shot("failed")
		p.t.Fatalf("%s: %v", what, err)
	}
}

// wait waits until the JavaScript expression is truthy.
func (p *page) wait(what, expr string) {
	p.t.Helper()
	p.do("wait for "+what, chromedp.Steps(func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(45*time.Second), chromedp.WithPollingInterval(50*time.Millisecond))(ctx, t)
		return chromedp.Void{}, err
	}))
}

func (p *page) eval(expr string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// shot saves a screenshot of the viewport as NN-name.png.
func (p *page) shot(name string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		p.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	p.n++
	path := filepath.Join(p.dir, fmt.Sprintf("%02d-%s.png", p.n, name))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Errorf("save screenshot: %v", err)
		return
	}
	p.t.Logf("screenshot: %s", path)
}

// axeScript returns Deque's axe-core (npm, interop/axe), or "" without it
// on a developer's machine; CI installs it, and there its absence fails.
func axeScript(t testing.TB) string {
	b, err := os.ReadFile(filepath.Join("..", "interop", "axe", "node_modules", "axe-core", "axe.min.js"))
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("axe-core not installed (npm install --prefix interop/axe; .ci/run does): %v", err)
		}
		t.Logf("axe-core not installed, no accessibility checks (npm install --no-package-lock --prefix interop/axe)")
		return ""
	}
	return string(b)
}

// accessible runs axe-core's WCAG 2.1 A and AA rules on the page as it is
// and fails the test on any violation, naming the rule and the elements.
func (p *page) accessible(view string) {
	p.t.Helper()
	if p.axe == "" {
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, 60*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](p.axe)); err != nil {
		p.t.Fatalf("load axe-core: %v", err)
	}
	out, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`axe.run(document, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}})
		.then(r => r.violations.map(v => v.id + ": " + v.help + " — " + v.nodes.slice(0, 3).map(n => n.target.join(" ") + " (" + (n.failureSummary || "").replace(/\s+/g, " ") + ")").join("; ")))`,
		chromedp.EvalAwaitPromise))
	if err != nil {
		p.t.Fatalf("run axe-core: %v", err)
	}
	for _, v := range out {
		p.t.Errorf("%s view, accessibility: %s", view, v)
	}
}

// setValue sets a form control's value as a user would, firing the events
// the page listens to.
func setValue(sel, value string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => {
			const e = document.querySelector(%q);
			if (!e) throw new Error("no element " + %q);
			e.value = %q;
			e.dispatchEvent(new Event("input", {bubbles: true}));
			e.dispatchEvent(new Event("change", {bubbles: true}));
		})()`, sel, sel, value))(ctx, t)
	})
}

// TestConsoleInBrowser drives the console of a real three-node mesh from a
// real browser: sign in, the graph of the peers, a capability search, a
// three-hop call made from the page shown as a live tree, its cancel button
// stopping the leaf, a refused call in the audit view, the policy view.
func TestConsoleInBrowser(t *testing.T) {
	ctx := browser(t)
	m := newTestMesh(t)
	_, url := startConsole(t, m.a, console.Options{Interval: 200 * time.Millisecond})
	p := &page{t: t, ctx: ctx, dir: screenshotDir(t), axe: axeScript(t)}
	a, b, c := m.a.ID().String(), m.b.ID().String(), m.c.ID().String()

	// Sign in: the token is exchanged for a cookie, and the URL loses it.
	p.do("open the login URL", chromedp.Navigate(url))
	p.wait("the page", `document.querySelector("nav a[aria-current=page]")`)
	if loc := p.eval(`location.href`); strings.Contains(loc, "token") {
		t.Errorf("the page's URL still holds the token: %s", loc)
	}
	if cookies := p.eval(`document.cookie`); cookies != "" {
		t.Errorf("a script can read the session cookie: %q", cookies)
	}

	// Mesh: the graph shows this node and its two peers, by card name.
	p.wait("the live feed", `document.querySelector(".conn-live")`)
	p.wait("both peers in the graph, named from their cards", fmt.Sprintf(`(() => {
		const g = [...document.querySelectorAll("svg g.node[data-peer]")];
		const names = g.map(e => e.querySelector("text.name").textContent).sort().join(",");
		return g.length === 2 && names === "bravo,charlie"
			&& document.querySelector('g[data-peer=%q]').getAttribute("aria-label").startsWith("bravo, connected directly")
			&& document.querySelector("svg g.node-self text:last-of-type").textContent.startsWith("alpha");
	})()`, b))
	p.do("select charlie", chromedp.Click(fmt.Sprintf(`g[data-peer=%q]`, c)))
	p.wait("charlie's card", `document.querySelector("#peer-title")?.textContent === "charlie" && document.body.innerText.includes("leaf")`)
	p.do("search the mesh", setValue("#search-q", "leaf"), chromedp.Click(`#search-q + button`))
	// A search gives up after 3 s of DHT lookups, which a busy machine can
	// use up: search again while it finds nothing.
	p.wait("a search hit on charlie", `(() => {
		if ([...document.querySelectorAll("ul.hits li")].some(li => li.innerText.includes("node/leaf") && li.innerText.includes("charlie"))) return true;
		const b = document.querySelector("#search-q + button");
		if (!b.disabled && document.body.innerText.includes("Nothing in the mesh matches")) b.click();
		return false;
	})()`)
	p.shot("mesh")
	p.accessible("mesh")

	// Try a tool: a three-hop call from the page, drawn as a live tree.
	// The quickest user types the moment the form appears, in the same
	// task that drew it: what they typed must stay (it once was wiped by
	// the form's reset, and the browser then refused the empty required
	// field without a word).
	p.do("open Try a tool on alpha's plan, typing the topic as soon as it appears", chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => {
		const o = new MutationObserver(() => {
			const e = document.querySelector("#arg-topic");
			if (!e) return;
			o.disconnect();
			e.value = "rivers";
			e.dispatchEvent(new Event("input", {bubbles: true}));
		});
		o.observe(document.body, {childList: true, subtree: true});
		location.hash = %q;
	})()`, "#/try?peer="+a+"&tool=node/plan")))
	p.wait("the form from plan's input schema", `document.querySelector("#arg-topic") && document.querySelector("#arg-depth")?.type === "number"`)
	// Preact runs a render's effects after the next frame: two frames
	// drawn and a task later, whatever would reset the form has.
	sctx, cancelSettled := context.WithTimeout(p.ctx, 30*time.Second)
	settled, serr := chromedp.Run(sctx, chromedp.Evaluate[string](`new Promise(done =>
		requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(() => {
			const e = document.querySelector("#arg-topic");
			done(e.value + (e.form.checkValidity() ? "" : " (invalid)"));
		}))))`, chromedp.EvalAwaitPromise))
	cancelSettled()
	if serr != nil || settled != "rivers" {
		p.shot("failed")
		t.Fatalf("the topic typed as the form appeared, two frames later: %q (%v), want rivers", settled, serr)
	}
	p.do("call", chromedp.Click(`form button[type=submit]`))
	var leaf string
	select {
	case leaf = <-m.leafStarted:
	case <-time.After(45 * time.Second):
		p.shot("failed")
		t.Fatalf("the leaf on charlie did not start; the form: topic %q, valid %s, says %q",
			p.eval(`document.querySelector("#arg-topic")?.value ?? "(none)"`),
			p.eval(`String(document.querySelector("#arg-topic")?.form.checkValidity())`),
			p.eval(`document.querySelector("[aria-live]")?.innerText ?? ""`))
	}
	p.wait("the tree of four tasks on three nodes, all working", fmt.Sprintf(`(() => {
		const n = [...document.querySelectorAll("[data-tree] li.tnode")];
		return n.length === 4 && n.every(e => e.dataset.state === "working")
			&& n[3].dataset.task === %q && n[3].innerText.includes("node/leaf") && n[3].innerText.includes("on charlie")
			&& n[2].innerText.includes("node/relay") && n[2].innerText.includes("on bravo")
			&& n[3].innerText.includes("reading about rivers");
	})()`, leaf))
	p.shot("tree-running")
	p.accessible("try a tool")

	// Its cancel button stops the leaf.
	p.do("cancel the tree", chromedp.Click(`[data-tree] button.danger`))
	select {
	case id := <-m.leafCancelled:
		if id != leaf {
			t.Errorf("leaf %s saw the cancellation, want %s", id, leaf)
		}
	case <-time.After(30 * time.Second):
		p.shot("failed")
		t.Fatal("the leaf's handler did not see the cancellation")
	}
	p.wait("every task of the tree cancelled", `(() => {
		const n = [...document.querySelectorAll("[data-tree] li.tnode")];
		return n.length === 4 && n.every(e => e.dataset.state === "cancelled") && document.querySelector("[data-tree] button.danger").disabled;
	})()`)
	p.shot("tree-cancelled")

	// A refused call appears in the audit view, explained.
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err := m.c.CallServerTool(cctx, m.a.ID(), transport.DefaultServer, "secret", nil)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "not permitted") {
		t.Fatalf("charlie calling alpha's secret: %v, want not permitted", err)
	}
	p.do("open the audit view", chromedp.Navigate(strings.Split(url, "?")[0]+"#/audit"))
	p.do("show refusals only", setValue(`.filters select`, "refused"))
	p.wait("charlie's refused call, explained", fmt.Sprintf(`(() => {
		const rows = [...document.querySelectorAll("table.audit tbody tr")];
		return rows.length >= 1 && rows.every(r => r.dataset.outcome === "refused")
			&& rows.some(r => r.dataset.tool === "secret" && r.innerText.includes("charlie")
				&& r.innerText.includes("No grant of the policy lets")
				&& r.querySelector("code.grant")?.textContent.includes(%q));
	})()`, c))
	p.shot("audit-refused")
	p.accessible("audit")

	// Policy: bravo may call echo here, charlie nothing; ask about charlie.
	p.do("open the policy view", chromedp.Navigate(strings.Split(url, "?")[0]+"#/policy"))
	p.wait("the matrix", `(() => {
		const cols = [...document.querySelectorAll("table.matrix thead th")].map(th => th.textContent);
		const row = name => [...document.querySelectorAll("table.matrix tbody tr")].find(r => r.querySelector("th").textContent.startsWith(name));
		const cell = (name, tool) => row(name)?.children[cols.indexOf(tool)]?.textContent;
		return cell("bravo", "node/echo") === "yes" && cell("bravo", "node/plan") === "no" && cell("charlie", "node/echo") === "no";
	})()`)
	p.do("ask about charlie and secret", setValue("#ck-peer", c), setValue("#ck-name", "secret"), chromedp.Click(`.form-grid button[type=submit]`))
	p.wait("the answer", `document.querySelector(".answer")?.innerText.startsWith("No.")`)
	p.shot("policy")
	p.accessible("policy")

	p.do("open the tasks view", chromedp.Navigate(strings.Split(url, "?")[0]+"#/tasks"))
	p.wait("the cancelled call in the list", `[...document.querySelectorAll("table.grid tbody tr")].some(r => r.innerText.includes("node/plan") && r.innerText.includes("cancelled"))`)
	p.shot("tasks")
	p.do("show the cancelled tree", chromedp.Click(`table.grid tbody tr a`))
	p.wait("the tree in the tasks view", `document.querySelectorAll("[data-tree] li.tnode[data-state=cancelled]").length === 4`)
	p.accessible("tasks")

	// Keyboard: the views are reached with Tab and Enter, and a peer of the
	// graph is chosen with Enter.
	p.do("open the mesh view", chromedp.Navigate(strings.Split(url, "?")[0]+"#/mesh"))
	p.wait("the graph", `document.querySelectorAll("svg g.node[data-peer]").length === 2`)
	p.do("focus bravo and press Enter", chromedp.Focus(fmt.Sprintf(`g[data-peer=%q]`, b)), chromedp.KeyEvent("\r"))
	p.wait("bravo's card", `document.querySelector("#peer-title")?.textContent === "bravo"`)
}

// TestConsoleAnswersAToolsQuestions: a call from Try a tool to alpha's
// dinner, whose tool on charlie (two hops down) asks the caller for a
// booking: the page shows the question as a form made from its schema, an
// answer outside the schema is refused by the daemon with the reason, the
// answer given reaches charlie, a second question follows, and the result
// carries both answers.
func TestConsoleAnswersAToolsQuestions(t *testing.T) {
	ctx := browser(t)
	m := newTestMesh(t)
	_, url := startConsole(t, m.a, console.Options{Interval: 200 * time.Millisecond})
	p := &page{t: t, ctx: ctx, dir: screenshotDir(t), axe: axeScript(t)}
	a := m.a.ID().String()

	p.do("open the login URL", chromedp.Navigate(url))
	p.wait("the page", `document.querySelector("nav a[aria-current=page]")`)
	p.do("open Try a tool on alpha's dinner", chromedp.Navigate(strings.Split(url, "?")[0]+"#/try?peer="+a+"&tool=node/dinner"))
	p.wait("the form", `document.querySelector("#arg-restaurant")`)
	p.do("call dinner at Chez Max", setValue("#arg-restaurant", "Chez Max"), chromedp.Click(`form button[type=submit]`))

	p.wait("charlie's question, as a form with a labelled field of each kind", `(() => {
		const q = document.querySelector(".question");
		if (!q || !q.innerText.includes("Book a table at Chez Max for how many people?")) return false;
		const f = n => q.querySelector('[id$="-' + n + '"]');
		const labelled = [...q.querySelectorAll("input, select")].every(e => q.querySelector('label[for="' + e.id + '"]'));
		return f("people")?.type === "number" && f("people").step === "1" && f("name")?.type === "text" && f("name").required
			&& f("terrace")?.type === "checkbox" && f("time")?.tagName === "SELECT" && [...f("time").options].map(o => o.value).join() === ",19:00,20:00,21:00" && f("time").required
			&& f("budget")?.type === "number" && f("budget").step === "any" && labelled
			&& [...q.querySelectorAll("button")].map(b => b.textContent.trim()).join() === "Send,Decline,Cancel";
	})()`)
	p.shot("question")
	p.accessible("question")

	// 40 people is more than the schema's maximum: the daemon says so, and
	// the question stays.
	p.do("answer 40 people", setValue(`.question [id$="-people"]`, "40"), setValue(`.question [id$="-name"]`, "Ann"),
		setValue(`.question [id$="-time"]`, "20:00"), setValue(`.question [id$="-budget"]`, "35.5"),
		chromedp.Click(`.question [id$="-terrace"]`), chromedp.Click(`.question button[type=submit]`))
	p.wait("the daemon's refusal", `document.querySelector(".question [role=alert]")?.innerText.includes("people")`)
	p.do("answer 4 people", setValue(`.question [id$="-people"]`, "4"), chromedp.Click(`.question button[type=submit]`))
	p.wait("the second question", `document.querySelectorAll(".question").length === 1 && document.querySelector(".question").innerText.includes("Shall I confirm it?")`)
	p.do("confirm", chromedp.Click(`.question [id$="-confirm"]`), chromedp.Click(`.question button[type=submit]`))
	p.wait("the result with the answers in it", `(() => {
		const r = document.querySelector("[data-tree] .result");
		return r && r.innerText.includes("booked for 4 (name Ann, time 20:00, terrace true, budget 35.5); confirm: accept true")
			&& !document.querySelector(".question");
	})()`)
	p.shot("question-answered")
	p.accessible("question answered")

	// URL mode: the link is shown, not followed; accepted, the page says
	// when the tool's server reports the step done.
	p.do("open Try a tool on alpha's ask", chromedp.Navigate(strings.Split(url, "?")[0]+"#/try?peer="+a+"&tool=node/ask"))
	p.wait("the form", `document.querySelector("#arg-url")?.type === "checkbox"`)
	p.do("call ask with a link", chromedp.Click("#arg-url"), chromedp.Click(`form button[type=submit]`))
	p.wait("the link question", `(() => {
		const q = document.querySelector(".question");
		const l = q?.querySelector("a.ext");
		return q && q.innerText.includes("Sign in to book") && l && l.href === "https://example.com/signin"
			&& l.target === "_blank" && l.rel.includes("noopener") && l.textContent.includes("example.com");
	})()`)
	p.shot("question-link")
	p.accessible("link question")
	p.do("accept", chromedp.Click(`.question button[type=submit]`))
	p.wait("the note that the step is done", `document.querySelector(".link-done")?.innerText.includes("The server says the step at example.com is done")`)
	close(m.release)
	p.wait("the result", `document.querySelector("[data-tree] .result")?.innerText.includes("signed in")`)
}
