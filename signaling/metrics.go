package signaling

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/icebox-rtc/icebox/httpapi"
	"github.com/icebox-rtc/icebox/signaling/protocol"
)

// metrics are the icebox_signaling_* series. Labels are bounded sets: message types, error
// codes, reasons; never a room, peer or user.
type metrics struct {
	connects      prometheus.Counter
	messages      *prometheus.CounterVec
	errors        *prometheus.CounterVec
	drops         *prometheus.CounterVec
	refused       *prometheus.CounterVec
	resumes       *prometheus.CounterVec
	sessionsEnded *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, h *Hub) *metrics {
	m := &metrics{
		connects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icebox_signaling_connections_total",
			Help: "WebSocket connections accepted.",
		}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_signaling_messages_total",
			Help: "Messages received from clients, by type (invalid: not a message of the protocol).",
		}, []string{"type"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_signaling_errors_total",
			Help: "Error messages sent to clients, by code.",
		}, []string{"code"}),
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_signaling_drops_total",
			Help: "Connections ended, by reason (closed_by_client, network, pong_timeout, too_large, policy, write_error, replaced, moved: resumed on another node, mailbox_full, memory, forbidden: its session was resumed with a token that keeps it out of its room, shutdown).",
		}, []string{"reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_signaling_refused_total",
			Help: "WebSocket requests refused before the upgrade, by error code.",
		}, []string{"code"}),
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_signaling_resumes_total",
			Help: "Resume attempts, by result (resumed, unknown_token).",
		}, []string{"result"}),
		sessionsEnded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_signaling_sessions_ended_total",
			Help: "Sessions ended, by reason (left: the client left its room, then its connection ended and no resume came within resume_grace; grace_expired: the connection ended without a leave and no resume came within resume_grace; mailbox_full: a slow reader past max_queued_bytes or 256 messages, memory: past max_queued_bytes_total, forbidden: resumed with a token that keeps it out of its room, moved: resumed on another node, shutdown: adopted from another node while this one shut down).",
		}, []string{"reason"}),
	}
	// Every known label value from the start, so that dashboards show 0 rather than nothing.
	initLabels(m.messages, protocol.TypeJoin, protocol.TypeSignal, protocol.TypeBroadcast, protocol.TypeLeave, protocol.TypePing, "invalid")
	initLabels(m.errors, protocol.CodeBadMessage, protocol.CodeBadRoom, protocol.CodeRoomFull, protocol.CodeNotJoined,
		protocol.CodeAlreadyJoined, protocol.CodeUnknownPeer, protocol.CodeForbidden, protocol.CodeRateLimited,
		protocol.CodeTooLarge, protocol.CodeUnavailable)
	initLabels(m.drops, "closed_by_client", "network", "pong_timeout", "too_large", "policy", "write_error",
		"replaced", "moved", "mailbox_full", "memory", "forbidden", "shutdown")
	initLabels(m.refused, httpapi.CodeBadRequest, httpapi.CodeForbidden, httpapi.CodeUnauthorized,
		httpapi.CodeRateLimited, httpapi.CodeUnavailable)
	initLabels(m.resumes, "resumed", "unknown_token")
	initLabels(m.sessionsEnded, "left", "grace_expired", "mailbox_full", "memory", "forbidden", "moved", "shutdown")
	reg.MustRegister(m.connects, m.messages, m.errors, m.drops, m.refused, m.resumes, m.sessionsEnded,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "icebox_signaling_connections",
			Help: "Open WebSocket connections on this node.",
		}, func() float64 {
			h.mu.Lock()
			defer h.mu.Unlock()
			return float64(len(h.conns))
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "icebox_signaling_sessions",
			Help: "Sessions on this node, connected or waiting for a resume.",
		}, func() float64 {
			h.mu.Lock()
			defer h.mu.Unlock()
			return float64(len(h.sessions))
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "icebox_signaling_queued_bytes",
			Help: "Bytes of messages waiting in the sessions' mailboxes (unsent, or sent and not yet acknowledged).",
		}, func() float64 { return float64(h.queued.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "icebox_signaling_rooms",
			Help: "Rooms with at least one peer.",
		}, func() float64 { return float64(h.bus.Rooms()) }),
	)
	return m
}

// messageLabel is the type label of an protocol.Message message: its type when it is one of the
// protocol's, else "invalid".
func messageLabel(typ string, perr *protocolError) string {
	switch typ {
	case protocol.TypeJoin, protocol.TypeSignal, protocol.TypeBroadcast, protocol.TypeLeave, protocol.TypePing:
		if perr == nil || perr.Code != protocol.CodeBadMessage {
			return typ
		}
	}
	return "invalid"
}

// busMetrics are the icebox_signaling_bus_* series of a NodeBus.
type busMetrics struct {
	published prometheus.Counter
	received  prometheus.Counter
	errors    *prometheus.CounterVec
	handovers *prometheus.CounterVec
}

func newBusMetrics(reg prometheus.Registerer, up func() bool) busMetrics {
	m := busMetrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icebox_signaling_bus_published_total",
			Help: "Messages this node published to other nodes through Redis.",
		}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icebox_signaling_bus_received_total",
			Help: "Messages this node received from other nodes through Redis.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_signaling_bus_errors_total",
			Help: "Failed Redis operations, by operation (join, leave, members, contains, publish, session, move, heartbeat, reap, resync, message).",
		}, []string{"op"}),
		handovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_signaling_bus_handovers_total",
			Help: "Sessions resumed from another node, by result (handed_over, adopted: from a dead node, unknown, timeout).",
		}, []string{"result"}),
	}
	initLabels(m.errors, "join", "leave", "members", "contains", "publish", "session", "move", "heartbeat", "reap", "resync", "message")
	initLabels(m.handovers, "handed_over", "adopted", "unknown", "timeout")
	reg.MustRegister(m.published, m.received, m.errors, m.handovers,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "icebox_signaling_bus_up",
			Help: "1 while Redis answers this node's heartbeats, 0 while it is lost.",
		}, func() float64 {
			if up() {
				return 1
			}
			return 0
		}))
	return m
}

// initLabels creates the series of v for each value of its one label, at 0.
func initLabels(v *prometheus.CounterVec, values ...string) {
	for _, l := range values {
		v.WithLabelValues(l)
	}
}
