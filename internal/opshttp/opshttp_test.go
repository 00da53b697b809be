package opshttp

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// noRedirect shows redirects instead of following them.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func get(t *testing.T, c *http.Client, u string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestTokenGuardsEverythingButTheProbes(t *testing.T) {
	extra := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "secret page") })
	s := start(t, Config{Token: "tok", Handlers: map[string]http.Handler{"GET /page": extra}})
	for _, path := range []string{"/metrics", "/page"} {
		if r, _ := get(t, noRedirect, s.URL()+path, nil); r.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s without a token: %d", path, r.StatusCode)
		}
		if r, _ := get(t, noRedirect, s.URL()+path, map[string]string{"Authorization": "Bearer nope"}); r.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s with a wrong token: %d", path, r.StatusCode)
		}
	}
	if r, body := get(t, noRedirect, s.URL()+"/page", map[string]string{"Authorization": "Bearer tok"}); r.StatusCode != 200 || body != "secret page" {
		t.Errorf("with the token: %d %q", r.StatusCode, body)
	}
	if r, body := get(t, noRedirect, s.URL()+"/metrics", map[string]string{"Authorization": "Bearer tok"}); r.StatusCode != 200 || !strings.Contains(body, "go_goroutines") {
		t.Errorf("metrics with the token: %d", r.StatusCode)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if r, _ := get(t, noRedirect, s.URL()+p, nil); r.StatusCode != 200 {
			t.Errorf("probe %s: %d", p, r.StatusCode)
		}
	}
	// A browser is sent to the sign-in form; a wrong token is refused, the
	// right one sets the cookie that then opens the page.
	if r, _ := get(t, noRedirect, s.URL()+"/page", map[string]string{"Accept": "text/html"}); r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/login" {
		t.Errorf("browser without a token: %d to %q", r.StatusCode, r.Header.Get("Location"))
	}
	post := func(tok string) *http.Response {
		r, err := noRedirect.PostForm(s.URL()+"/login", url.Values{"token": {tok}})
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		return r
	}
	if r := post("nope"); r.Header.Get("Location") != "/login?failed=1" || len(r.Cookies()) != 0 {
		t.Errorf("wrong login: to %q, cookies %v", r.Header.Get("Location"), r.Cookies())
	}
	r := post("tok")
	if len(r.Cookies()) != 1 || !r.Cookies()[0].HttpOnly || r.Cookies()[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("login cookies %v", r.Cookies())
	}
	if r2, body := get(t, noRedirect, s.URL()+"/page", map[string]string{"Cookie": TokenCookie + "=" + r.Cookies()[0].Value}); r2.StatusCode != 200 || body != "secret page" {
		t.Errorf("with the cookie: %d %q", r2.StatusCode, body)
	}
}

func TestReadyzSaysWhy(t *testing.T) {
	ok := true
	s := start(t, Config{Ready: []Check{
		{Name: "store", Check: func() error { return nil }},
		{Name: "disk", Check: func() error {
			if ok {
				return nil
			}
			return errors.New("disk full: 0 bytes free")
		}},
	}})
	if r, body := get(t, http.DefaultClient, s.URL()+"/readyz", nil); r.StatusCode != 200 || !strings.Contains(body, `"status":"ready"`) {
		t.Fatalf("ready: %d %s", r.StatusCode, body)
	}
	ok = false
	r, body := get(t, http.DefaultClient, s.URL()+"/readyz", nil)
	if r.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, `{"name":"disk","ok":false,"reason":"disk full: 0 bytes free"}`) || !strings.Contains(body, `{"name":"store","ok":true}`) {
		t.Fatalf("not ready: %d %s", r.StatusCode, body)
	}
}

// Close ends open streams (their request contexts) instead of waiting.
func TestCloseEndsStreams(t *testing.T) {
	started := make(chan struct{})
	stream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
	})
	s, err := Start(Config{Addr: "127.0.0.1:0", Registry: prometheus.NewRegistry(), Handlers: map[string]http.Handler{"GET /stream": stream}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(s.URL() + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	<-started
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}
