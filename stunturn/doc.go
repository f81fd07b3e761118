// Package stunturn is icebox's STUN/TURN relay, built on github.com/pion/turn/v4.
//
// It owns everything between the TURN listeners and the relay sockets: the listeners themselves
// (UDP, TCP, TLS), TURN REST authentication (verified by the credentials package), the peer
// deny-list, per-user and per-node quotas, and the turn metrics. cmd/icebox hands it its Config,
// a *slog.Logger and a *prometheus.Registry; NewLoggerFactory routes pion's own logging into slog.
package stunturn
