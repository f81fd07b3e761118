// Package acme obtains the certificate for icebox's public name from an ACME CA (Let's Encrypt
// by default) and keeps it renewed, with github.com/caddyserver/certmagic doing the protocol:
// the account, the order, the challenges, ARI and the storage are certmagic's; this package
// decides when to try, what to log, what /readyz says, and hands the certificate to the TLS
// servers (the edge port, TURN over TLS) through GetCertificate.
//
// Challenges are answered by icebox's own listeners, bound before anything here runs:
// TLS-ALPN-01 by the edge port's TLS handshakes (GetCertificate serves the challenge
// certificate, NextProtos adds acme-tls/1), HTTP-01 by acme.http_listen (HTTPChallenge).
// certmagic never binds a port of its own: it finds the ports taken and leaves them to icebox.
//
// The first certificate is requested at once, then after failures with a doubling backoff;
// meanwhile icebox serves everything that needs no certificate, and Ready says why it is not
// ready. Renewals run in the background when a third of the certificate's lifetime is left
// (or within the CA's ARI window), timed from the certificate's own dates, and the renewed
// certificate is used for new handshakes at once, without closing any connection.
package acme
