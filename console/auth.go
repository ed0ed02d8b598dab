package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/mcpmesh/mcpmesh/internal/loopback"
)

// The console's protection, in the order a request meets it:
//
//  1. Host and Origin must be loopback (loopback.CheckRequest, as for the
//     HTTP gateway): no DNS rebinding.
//  2. The login token (random, printed by the daemon as part of the URL) is
//     exchanged once per browser for a session cookie (HttpOnly,
//     SameSite=Strict), then the browser is sent to the URL without it.
//     Every /api/ request needs the cookie.
//  3. Requests a page of another origin may have made are refused: a
//     Sec-Fetch-Site other than same-origin (or none: typed, opened by a
//     program), and, for actions (POST), an Origin other than the console's
//     own or a body that is not JSON (a form cannot send one, and a script
//     of another origin must ask first, which the console never allows).
//     Cookies are not scoped to a port, so SameSite alone would let a page
//     of another loopback port through.
//
// Everything a page may do is a POST under /api/; GETs only read.

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("console: no randomness: %v", err)) // crypto/rand does not fail on supported systems
	}
	return hex.EncodeToString(b)
}

func sameSecret(got, want string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// cookieName is per port: cookies are shared by every port of a host, and
// two daemons' consoles must not overwrite each other's.
func cookieName(r *http.Request) string {
	_, port, err := net.SplitHostPort(r.Host)
	if err != nil || port == "" {
		port = "80"
	}
	return "mcpmesh-console-" + port
}

// authenticated reports whether r carries the session cookie.
func (s *Server) authenticated(r *http.Request) bool {
	c, err := r.Cookie(cookieName(r))
	return err == nil && sameSecret(c.Value, s.session)
}

// login exchanges a valid ?token= for the session cookie and sends the
// browser to the same page without the token.
func (s *Server) login(w http.ResponseWriter, r *http.Request, token string) {
	if !sameSecret(token, s.token) {
		s.loginPage(w, http.StatusUnauthorized, "That login token is not this console's: the daemon makes a new one each time it starts.")
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name:     cookieName(r),
		Value:    s.session,
		Path:     "/",
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
	})
	q := r.URL.Query()
	q.Del("token")
	u := *r.URL
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
}

// errCrossSite is the answer to a request another site's page made.
var errCrossSite = errors.New("cross-site request refused")

// checkSite refuses requests to /api/ that a page of another origin sent.
func checkSite(r *http.Request) error {
	if err := loopback.CheckRequest(r); err != nil {
		return err
	}
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "", "same-origin", "none":
	default:
		return fmt.Errorf("%w (Sec-Fetch-Site: %s)", errCrossSite, site)
	}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		if o := r.Header.Get("Origin"); o != "" && o != "http://"+r.Host {
			return fmt.Errorf("%w (Origin %s)", errCrossSite, o)
		}
		return nil
	}
	if o := r.Header.Get("Origin"); o != "http://"+r.Host {
		return fmt.Errorf("%w: an action needs Origin http://%s, got %q", errCrossSite, r.Host, o)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return fmt.Errorf("an action needs a JSON body (Content-Type: application/json), got %q", ct)
	}
	return nil
}

// securityHeaders are sent with every answer: the page loads only its own
// files, is never framed, and sends no referrer.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}
