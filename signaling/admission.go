package signaling

import (
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/websocket"

	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/httpapi"
)

// ServeHTTP is /ws, the admission of connections: it checks the origin (403), the token
// (401), the drain (503), the sessions of the client (max_conns_per_ip) and its credential
// rate (429), all as JSON errors before any upgrade, then upgrades and sends the welcome.
// ?resume=TOKEN resumes a session; ?last=SEQ says which of its frames the client already has.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	refuse := func(status int, code, msg string, retry time.Duration) {
		h.metrics.refused.WithLabelValues(code).Inc()
		h.refusals.Refused(time.Now(), code, msg)
		httpapi.WriteError(w, &httpapi.Error{Status: status, Code: code, Message: msg, RetryAfter: retry})
	}
	if !websocket.IsWebSocketUpgrade(r) {
		refuse(http.StatusBadRequest, httpapi.CodeBadRequest, "/ws is a WebSocket endpoint", 0)
		return
	}
	if e := h.access.Origins().Refuse(r); e != nil {
		refuse(e.Status, e.Code, e.Message, 0)
		return
	}
	id, err := h.auth.Authenticate(credentials.TokenFrom(r))
	if err != nil {
		e := credentials.Refusal(err)
		refuse(e.Status, e.Code, e.Message, 0)
		return
	}
	q := r.URL.Query()
	resume := q.Get("resume")
	last, lastErr := strconv.ParseUint(q.Get("last"), 10, 64)
	client := h.access.Proxies().Client(r)
	maxConns := h.limits.Load().maxConnsPerIP

	h.mu.Lock()
	// A resume of a session this client already holds takes no new slot.
	s := h.tokens[resume]
	reserve := s == nil || s.client != client
	switch {
	case h.closed:
		h.mu.Unlock()
		refuse(http.StatusServiceUnavailable, httpapi.CodeUnavailable, "signaling is shut down", time.Second)
		return
	case h.draining && resume == "":
		h.mu.Unlock()
		refuse(http.StatusServiceUnavailable, httpapi.CodeUnavailable, "this node is shutting down; try another", 5*time.Second)
		return
	case reserve && maxConns > 0 && h.clients[client] >= maxConns:
		h.mu.Unlock()
		refuse(http.StatusTooManyRequests, httpapi.CodeRateLimited,
			"too many sessions from this address, connected or waiting for a resume (signaling.max_conns_per_ip)", 10*time.Second)
		return
	}
	if reserve {
		h.clients[client]++ // the session's from here, or released below
	}
	h.mu.Unlock()
	release := func() {
		if reserve {
			h.mu.Lock()
			h.release(client)
			h.mu.Unlock()
		}
	}
	if h.mint != nil {
		if ok, wait := h.mint(client); !ok {
			release()
			refuse(http.StatusTooManyRequests, httpapi.CodeRateLimited,
				"too many connections a second from this address: each welcome carries a TURN credential (http.rate_limit)", wait)
			return
		}
	}

	hj := &hijacker{ResponseWriter: w}
	ws, err := h.upgrader.Upgrade(hj, r, nil)
	if err != nil {
		release() // the upgrader has answered the client
		return
	}
	ws.SetReadLimit(int64(h.cfg.MaxMessageBytes))
	c := newConn(h, ws)
	c.br, c.sock, c.raw = hj.br, hj.sock, hj.pollable()
	c.wmu.Lock() // nothing from the mailbox before the welcome
	s, hello, err := h.open(opening{c: c, id: id, client: client, reserved: reserve, resume: resume, last: last, hasLast: lastErr == nil})
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
	if h.closed { // Shutdown ran meanwhile (and ended the session)
		h.mu.Unlock()
		c.wmu.Unlock()
		c.ping.Stop()
		_ = ws.Close()
		return
	}
	c.done.Add(2) // the reader and the closer, before Shutdown can see c
	c.running.Store(2)
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
