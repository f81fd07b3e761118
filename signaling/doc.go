// Package signaling is icebox's WebSocket signaling service: rooms, and the relay of offers,
// answers and ICE candidates between the peers in them (protocol in spec section 5, as Go
// types in signaling/protocol).
//
// The Hub speaks the protocol with this node's connections (conn.go, admission.go) and keeps
// their sessions (session.go: the mailbox, bounded in messages and bytes), opened fresh,
// resumed here or adopted from another node (open.go). Rooms and delivery are a Bus's: the
// in-process LocalBus, or a NodeBus shared by nodes over a broker (Redis, or a Loopback in
// tests), which is also the hub's SessionStore. A NodeBus is made of parts with a file and a
// lock each: delivery, view, handovers, records and presence (see nodebus.go).
package signaling
