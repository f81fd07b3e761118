// Package edge serves icebox on one TCP port, typically 443, the one port strict networks
// (offices, hotels, some mobile carriers) still let through: the HTTPS pages, WebSocket
// signaling and JSON endpoints, TURN over TLS, plain TURN over TCP, and a redirect for plain
// HTTP, all told apart by their first bytes.
//
// Before TLS, a first byte of 0x16 starts a TLS handshake; a STUN message or ChannelData is
// TURN over TCP; an HTTP request line is plain HTTP (served a redirect to https). After the
// handshake, a connection is routed by its first bytes again: STUN or ChannelData to TURN over
// TLS, an HTTP request (or HTTP/2's preface) to the HTTP server. Routing looks at bytes, not
// at SNI or ALPN: Firefox sends no SNI for turns: and TURN clients send no ALPN; a client that
// negotiated h2 by ALPN goes to the HTTP server as it is, so HTTP/2 works. Anything else is
// closed.
//
// The edge does not serve HTTP or TURN itself: it hands each connection, past its first bytes
// (they are read again by whoever gets it), to one of four listeners, which the HTTP servers
// and package stunturn accept from. What a slow or hostile client can hold here is bounded: the
// TLS handshake and the first bytes each have a deadline, and the connections not yet routed are
// limited in number, the oldest closed to make room for a new one, so a flood of half-open
// handshakes only pushes out its own.
package edge
