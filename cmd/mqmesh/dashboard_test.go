package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"

	"github.com/mqmesh/mqmesh/internal/secrets"
	"github.com/mqmesh/mqmesh/internal/secrets/secretstest"
	"github.com/mqmesh/mqmesh/mqnode"
)

// chromium finds the browser (scripts/test.sh installs Debian's chromium).
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("MQMESH_NO_BROWSER") != "" {
		t.Skip("SKIPPED LOUDLY: no Chromium and MQMESH_NO_BROWSER set: the dashboard's browser test did not run")
	}
	t.Fatal("no Chromium found: install Debian's chromium (scripts/test.sh does), or set MQMESH_NO_BROWSER=1 to skip this test")
	return ""
}

// The web dashboard in a real headless Chromium against a running 2 × 2
// mesh with secrets: an unauthenticated request is refused, the map shows
// the four nodes, a burst shows as backlog within 2 s, and a DLQ purge
// from the UI empties the dead letter queue. With MQMESH_SCREENSHOT set
// (a path), the page is saved as a PNG (docs/dashboard.png in the README).
func TestDashboardInABrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	browser := chromium(t)
	dir := secretstest.Dir(t)
	set, err := secrets.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	token, _ := set.AdminToken()
	sec := []string{"--secrets", dir, "--log-level", "warn"}
	a1, base := runNodeHTTP(t, append(append([]string{"--name", "a1", "--idc", "east"}, sec...), meshFlags...)...)
	urls := map[string]string{"a1": a1.URL}
	for _, n := range []struct{ name, idc string }{{"a2", "east"}, {"b1", "west"}, {"b2", "west"}} {
		r, _ := meshNode(t, append(append([]string{"--name", n.name, "--idc", n.idc, "--seed", a1.Gossip}, sec...), meshFlags...)...)
		urls[n.name] = r.URL
	}
	admin := func(url string) *mqnode.Client {
		opts, err := set.ClientOptions(secrets.RoleAdmin)
		if err != nil {
			t.Fatal(err)
		}
		c, err := mqnode.Dial(ctxT(t), url, append(opts, nats.Timeout(5*time.Second))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	// Three dead letters on a1.
	ca := admin(urls["a1"])
	enqueueN(t, ca, "mail", 3)
	var ds []*mqnode.Delivery
	for len(ds) < 3 { // the CPU throttle of a busy machine may hand out fewer at a time
		got, _, err := ca.Pull(ctxT(t), mqnode.PullRequest{Queue: "mail", MaxTasks: 3 - len(ds), MaxWait: time.Second, WorkerID: "w"})
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, got...)
	}
	for _, d := range ds {
		if _, err := ca.AckOne(ctxT(t), &mqnode.AckItem{Receipt: d.Receipt, Kind: mqnode.AckDead, Error: "mailbox gone"}); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := chromedp.NewExecAllocator(ctxT(t),
		chromedp.ExecPath(browser), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("ignore-certificate-errors", true), // the node's certificate is for mqmesh-node, dialled as 127.0.0.1
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "chromium")), chromedp.WindowSize(1280, 1000))
	defer cancel()
	ctx, cancel = chromedp.NewContext(ctx, chromedp.WithLogf(t.Logf))
	defer cancel()
	// Start the browser on ctx itself: a first Run on a shorter-lived
	// child context would close it when that context ends.
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("start %s: %v", browser, err)
	}
	run := func(what string, actions ...chromedp.Action) {
		t.Helper()
		tctx, tcancel := context.WithTimeout(ctx, 30*time.Second)
		defer tcancel()
		if err := chromedp.Run(tctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	// Unauthenticated: the page sends the browser to the login form, and
	// the API refuses.
	var loc string
	var status int
	run("unauthenticated", chromedp.Navigate(base+"/"), chromedp.WaitVisible("#token", chromedp.ByID), chromedp.Location(&loc),
		chromedp.Evaluate(`fetch("/api/snapshot").then(r => r.status)`, &status, awaitPromise))
	if !strings.HasSuffix(loc, "/login") || status != 401 {
		t.Fatalf("unauthenticated: at %s, API status %d; want the login page and 401", loc, status)
	}
	run("wrong token", chromedp.SendKeys("#token", "not-the-token", chromedp.ByID), chromedp.Click("#signin", chromedp.ByID),
		chromedp.WaitVisible("#failed", chromedp.ByID))
	run("sign in", chromedp.SendKeys("#token", token, chromedp.ByID), chromedp.Click("#signin", chromedp.ByID),
		chromedp.WaitVisible(`#map .node[data-node="b2"]`, chromedp.ByQuery))

	var nodes []string
	run("map", chromedp.Evaluate(`[...document.querySelectorAll("#map .idc")].map(g => g.dataset.idc + ":" + [...g.querySelectorAll(".node")].map(n => n.dataset.node).join(","))`, &nodes))
	if strings.Join(nodes, " ") != "east:a1,a2 west:b1,b2" {
		t.Fatalf("map groups %q, want east:a1,a2 west:b1,b2", nodes)
	}

	var latRows []string
	run("latency table", chromedp.WaitVisible(`#latency tr[data-queue="mail"]`, chromedp.ByQuery),
		chromedp.Evaluate(`[...document.querySelectorAll("#latency tbody tr")].map(r => r.dataset.queue)`, &latRows))
	if !slices.Contains(latRows, "mail") {
		t.Fatalf("latency rows %q: want the mail queue", latRows)
	}
	var qs []string // the page's quantile of cumulative bucket counts
	run("quantiles", chromedp.Evaluate(`[quant([0.1,0.2,0.4],[0,5,10,10],0.5), quant([0.1,0.2,0.4],[0,5,10,10],0.99), quant([0.1],[0,0],0.5), quant([0.1],[0,4],0.5)]`, &qs))
	if strings.Join(qs, "|") != "200 ms|396 ms|-|> 100 ms" {
		t.Fatalf("quantiles %q", qs)
	}

	// A burst on b2 (no workers: it stays) shows on its card within 2 s.
	cb := admin(urls["b2"])
	start := time.Now()
	enqueueN(t, cb, "push", 500)
	var shown time.Duration
	for deadline := start.Add(10 * time.Second); time.Now().Before(deadline); {
		var txt string // by script: the map is redrawn on every snapshot
		run("read b2", chromedp.Evaluate(`(document.querySelector('#map .node[data-node="b2"] .ready') || {}).textContent || ""`, &txt))
		if n, _ := strconv.Atoi(strings.TrimSpace(txt)); n == 500 {
			shown = time.Since(start)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("burst of 500 on b2 shown on the map after %s", shown)
	if shown == 0 || shown > 2*time.Second {
		t.Fatalf("burst shown after %s (0: never), want within 2s", shown)
	}

	// Purge a1's dead letters from the UI.
	key := `east/a1/mail`
	run("dlq row", chromedp.WaitVisible(fmt.Sprintf(`button[data-browse=%q]`, key), chromedp.ByQuery),
		click(fmt.Sprintf(`button[data-browse=%q]`, key)), chromedp.WaitVisible(`#dlq-list table`, chromedp.ByQuery))
	if os.Getenv("MQMESH_SCREENSHOT") != "" {
		// The trace of one dead task in the search box, then the picture.
		var buf []byte
		run("screenshot", chromedp.SendKeys("#trace-id", ds[0].Task.Id, chromedp.ByID), click("#trace-form button"),
			chromedp.WaitVisible("#trace-table", chromedp.ByID), chromedp.FullScreenshot(&buf, 100))
		if err := os.WriteFile(os.Getenv("MQMESH_SCREENSHOT"), buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var result string
	run("purge", click(fmt.Sprintf(`button[data-purge=%q]`, key)),
		chromedp.WaitVisible("#dlq-result", chromedp.ByID), chromedp.Text("#dlq-result", &result, chromedp.ByID))
	if result != "purged 3 from "+key {
		t.Fatalf("purge result %q", result)
	}
	if st := queueStats(t, ca, "mail"); st.Dead != 0 {
		t.Fatalf("after the purge: %d dead", st.Dead)
	}
	run("dlq table empties", chromedp.WaitNotPresent(fmt.Sprintf(`tr[data-dlq=%q]`, key), chromedp.ByQuery))
}

// click clicks the element of a CSS selector by script, in one step (the
// tables are redrawn on every snapshot, so a node found a moment earlier
// may be gone).
func click(sel string) chromedp.Action {
	return chromedp.Evaluate(fmt.Sprintf(`document.querySelector(%q).click()`, sel), nil)
}

func awaitPromise(p *runtime.EvaluateParams) *runtime.EvaluateParams { return p.WithAwaitPromise(true) }
