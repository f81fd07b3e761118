// Package httpapi is icebox's HTTP edge, shared by every endpoint (/ice-config,
// /turn-credentials, /ws, the operations endpoints): the contract's JSON error bodies and their
// codes, the origin policy of http.allowed_origins (CORS), who the client is (the TCP peer or,
// behind http.trusted_proxies, the X-Forwarded-For entry they vouch for, and an IPv6 client's
// /64), and rate limits per client.
//
// cmd/icebox compiles the http section into these types once, at start, and hands the same
// values to every package that needs them.
package httpapi
