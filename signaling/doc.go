// Package signaling is icebox's WebSocket signaling service: rooms, and the relay of offers,
// answers and ICE candidates between the peers in them (protocol in spec section 5).
package signaling
