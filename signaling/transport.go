package signaling

import (
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/websocket"

	"github.com/icebox-rtc/icebox/credentials"
)

// ServeHTTP is /ws: it checks the origin (403), the token (401), the drain (503), the
// connections of the client IP and its credential rate (429), all as JSON errors before any
// upgrade, then upgrades and sends the welcome. ?resume=TOKEN resumes a session; ?last=SEQ says which of its frames the
// client already has.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	refuse := func(status int, code, msg string, retry time.Duration) {
		h.metrics.refused.WithLabelValues(code).Inc()
		h.refusals.Refused(time.Now(), code, msg)
		credentials.WriteError(w, &credentials.Error{Status: status, Code: code, Message: msg, RetryAfter: retry})
	}
	if !websocket.IsWebSocketUpgrade(r) {
		refuse(http.StatusBadRequest, credentials.CodeBadRequest, "/ws is a WebSocket endpoint", 0)
		return
	}
	if origin := r.Header.Get("Origin"); origin != "" && !h.origins.Allowed(origin, r.Host) {
		refuse(http.StatusForbidden, credentials.CodeForbidden, "origin "+origin+" is not allowed (http.allowed_origins)", 0)
		return
	}
	id, err := h.auth.Authenticate(credentials.TokenFrom(r))
	if err != nil {
		e := credentials.ErrorFor(err)
		refuse(e.Status, e.Code, e.Message, 0)
		return
	}
	q := r.URL.Query()
	resume := q.Get("resume")
	last, lastErr := strconv.ParseUint(q.Get("last"), 10, 64)
	ip := h.proxies.ClientIP(r)

	h.mu.Lock()
	switch {
	case h.closed:
		h.mu.Unlock()
		refuse(http.StatusServiceUnavailable, credentials.CodeUnavailable, "signaling is shut down", time.Second)
		return
	case h.draining && resume == "":
		h.mu.Unlock()
		refuse(http.StatusServiceUnavailable, credentials.CodeUnavailable, "this node is shutting down; try another", 5*time.Second)
		return
	case h.cfg.MaxConnsPerIP > 0 && h.perIP[ip] >= h.cfg.MaxConnsPerIP:
		h.mu.Unlock()
		refuse(http.StatusTooManyRequests, credentials.CodeRateLimited, "too many connections from this address (signaling.max_conns_per_ip)", 10*time.Second)
		return
	}
	h.perIP[ip]++ // held from here, released by dropped or below
	h.mu.Unlock()
	release := func() {
		h.mu.Lock()
		if h.perIP[ip]--; h.perIP[ip] <= 0 {
			delete(h.perIP, ip)
		}
		h.mu.Unlock()
	}
	if h.mint != nil {
		if ok, wait := h.mint(ip); !ok {
			release()
			refuse(http.StatusTooManyRequests, credentials.CodeRateLimited,
				"too many connections a second from this address: each welcome carries a TURN credential (http.rate_limit)", wait)
			return
		}
	}

	ws, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil {
		release() // the upgrader has answered the client
		return
	}
	ws.SetReadLimit(int64(h.cfg.MaxMessageBytes))
	c := newConn(h, ws, ip)
	c.wmu.Lock() // nothing from the mailbox before the welcome
	s, hello, err := h.open(c, id, resume, last, lastErr == nil)
	if err != nil {
		c.wmu.Unlock()
		c.ping.Stop()
		release()
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseServiceRestart, "shutting down"), time.Now().Add(time.Second))
		_ = ws.Close()
		return
	}
	c.s = s
	h.mu.Lock()
	if h.closed { // Shutdown ran meanwhile
		h.mu.Unlock()
		c.wmu.Unlock()
		c.ping.Stop()
		release()
		_ = ws.Close()
		return
	}
	c.done.Add(2) // the reader and the closer, before Shutdown can see c
	h.conns[c] = struct{}{}
	h.mu.Unlock()
	h.metrics.connects.Inc()
	ok := c.hello(hello)
	c.wmu.Unlock()
	c.start()
	if !ok {
		c.close(websocket.CloseNormalClosure, "", nil, "write_error")
	}
}
