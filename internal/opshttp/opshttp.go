// Package opshttp is the operations HTTP endpoint of an mqmesh process
// (`mqmesh node --http ADDR`, `mqmesh worker --http ADDR`):
//
//   - /metrics   Prometheus metrics (prometheus/client_golang's handler);
//   - /healthz   liveness: 200 while the process serves HTTP at all;
//   - /readyz    readiness: 200 when every readiness check passes, else 503;
//     both answer JSON {"status": "ready"|"not ready", "checks": [{"name",
//     "ok", "reason"}]}, so a failing probe says why;
//   - /debug/pprof/ the Go profiler (net/http/pprof), behind the token;
//   - anything registered in Config.Handlers (the web dashboard).
//
// With Config.Token set every path except /healthz and /readyz needs
// "Authorization: Bearer <token>" (the admin role's token); a request
// without it gets 401 and nothing else. With Config.TLS set the listener
// speaks TLS only.
package opshttp

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness condition: nil when met, else the reason.
type Check struct {
	Name  string
	Check func() error
}

// Config configures a Server.
type Config struct {
	// Addr is the listen address (host:port; port 0 picks one).
	Addr string
	// Registry holds the process's collectors. The Go runtime and process
	// collectors are added by New.
	Registry *prometheus.Registry
	// Ready are the readiness checks of /readyz, in order.
	Ready []Check
	// Token, when set, is the bearer token every path but the probes needs.
	Token string
	// TLS, when set, makes the listener TLS only.
	TLS *tls.Config
	// Handlers are extra paths (pattern → handler), behind the same auth.
	Handlers map[string]http.Handler
	// Logger for serve errors. Default slog.Default().
	Logger *slog.Logger
	// OnClose, when set, runs once the server has stopped (Close).
	OnClose func()
}

// Server serves the operations endpoint.
type Server struct {
	cfg    Config
	ln     net.Listener
	srv    *http.Server
	done   chan struct{}
	cancel context.CancelFunc // ends every request's context (streams) at Close
}

// Start listens on cfg.Addr and serves until Close.
func Start(cfg Config) (*Server, error) {
	if cfg.Registry == nil {
		return nil, errors.New("opshttp: Registry is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := cfg.Registry.Register(collectors.NewGoCollector()); err != nil && !isAlready(err) {
		return nil, fmt.Errorf("opshttp: %w", err)
	}
	if err := cfg.Registry.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil && !isAlready(err) {
		return nil, fmt.Errorf("opshttp: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("opshttp: listen %s: %w", cfg.Addr, err)
	}
	if cfg.TLS != nil {
		ln = tls.NewListener(ln, cfg.TLS)
	}
	base, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, ln: ln, done: make(chan struct{}), cancel: cancel}
	s.srv = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
		BaseContext: func(net.Listener) context.Context { return base }}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.Logger.Error("operations http server stopped", "err", err)
		}
	}()
	return s, nil
}

func isAlready(err error) bool {
	var are prometheus.AlreadyRegisteredError
	return errors.As(err, &are)
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the server's base URL (https with TLS).
func (s *Server) URL() string {
	if s.cfg.TLS != nil {
		return "https://" + s.Addr()
	}
	return "http://" + s.Addr()
}

// Close stops the server, letting requests in flight finish within ctx
// (server-sent event streams are cut). Safe twice.
func (s *Server) Close(ctx context.Context) error {
	s.cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	<-s.done
	if s.cfg.OnClose != nil {
		s.cfg.OnClose()
		s.cfg.OnClose = nil
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeStatus(w, http.StatusOK, status{Status: "live"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	if s.cfg.Token != "" {
		mux.HandleFunc("GET /login", loginPage)
		mux.HandleFunc("POST /login", s.login)
	}
	authed := http.NewServeMux()
	authed.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{Registry: s.cfg.Registry}))
	authed.HandleFunc("GET /debug/pprof/", pprof.Index)
	authed.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	authed.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	for pattern, h := range s.cfg.Handlers {
		authed.Handle(pattern, h)
	}
	mux.Handle("/", s.auth(authed))
	return mux
}

// auth refuses a request without the bearer token (when one is set).
func (s *Server) auth(next http.Handler) http.Handler {
	if s.cfg.Token == "" {
		return next
	}
	want := []byte("Bearer " + s.cfg.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 && !tokenCookie(r, s.cfg.Token) {
			if r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/html") {
				http.Redirect(w, r, "/login", http.StatusSeeOther) // a browser: to the login form
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="mqmesh"`)
			http.Error(w, "unauthorized: admin bearer token required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// TokenCookie is the cookie a browser may carry the admin token in (the
// dashboard's login form sets it; EventSource cannot send headers).
const TokenCookie = "mqmesh_admin"

func tokenCookie(r *http.Request, token string) bool {
	c, err := r.Cookie(TokenCookie)
	return err == nil && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(c.Value)), []byte(token)) == 1
}

type checkResult struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
}

type status struct {
	Status string        `json:"status"`
	Checks []checkResult `json:"checks,omitempty"`
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	st := status{Status: "ready"}
	code := http.StatusOK
	for _, c := range s.cfg.Ready {
		r := checkResult{Name: c.Name, OK: true}
		if err := c.Check(); err != nil {
			r.OK, r.Reason = false, err.Error()
			st.Status, code = "not ready", http.StatusServiceUnavailable
		}
		st.Checks = append(st.Checks, r)
	}
	writeStatus(w, code, st)
}

func writeStatus(w http.ResponseWriter, code int, st status) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(st)
}
