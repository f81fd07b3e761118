package stunturn

import "errors"

var (
	// ErrInvalidConfig is a Config that Validate would refuse.
	ErrInvalidConfig = errors.New("invalid turn configuration")
	// ErrPortInUse is a TURN listen address that another process holds.
	ErrPortInUse = errors.New("address already in use")
	// ErrTotalQuota is an Allocate beyond turn.total_quota (508).
	ErrTotalQuota = errors.New("turn.total_quota reached")
	// ErrNoRelayPort is an Allocate when every relay port is taken (508).
	ErrNoRelayPort = errors.New("no free relay port")
	// ErrFileLimit is an Allocate that would eat into the file descriptors kept for the rest of
	// icebox (508).
	ErrFileLimit = errors.New("relay sockets would exceed the file descriptor budget")
	// ErrTCPRelay is a request for a TCP relay (RFC 6062), which icebox does not offer.
	ErrTCPRelay = errors.New("only UDP relays are offered")
	// ErrBadFrame is a TCP or TLS stream that is neither STUN nor ChannelData.
	ErrBadFrame = errors.New("not a STUN or ChannelData frame")
)
