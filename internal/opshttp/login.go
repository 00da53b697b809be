package opshttp

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

const loginHTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>mqmesh — sign in</title>
<style>body{font:15px system-ui,sans-serif;margin:4em auto;max-width:28em;color:#222}
input{width:100%;padding:.5em;margin:.5em 0;font:inherit}button{padding:.5em 1.5em;font:inherit}
.err{color:#b00}</style></head>
<body><h1>mqmesh</h1><p>The dashboard needs the mesh's admin token
(<code>admin.token</code> in the secrets directory).</p>
<form method="post" action="/login"><input id="token" name="token" type="password" placeholder="admin token" autofocus>
<button id="signin" type="submit">Sign in</button></form>%s</body></html>`

func loginPage(w http.ResponseWriter, r *http.Request) {
	msg := ""
	if r.URL.Query().Get("failed") != "" {
		msg = `<p class="err" id="failed">Wrong token.</p>`
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(strings.Replace(loginHTML, "%s", msg, 1)))
}

// login checks the posted token and, when it is the admin token, keeps it
// in an HttpOnly, SameSite=Strict cookie (Secure over TLS).
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	tok := strings.TrimSpace(r.PostFormValue("token"))
	if subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.Token)) != 1 {
		http.Redirect(w, r, "/login?failed=1", http.StatusSeeOther)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: TokenCookie, Value: tok, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: s.cfg.TLS != nil})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}
