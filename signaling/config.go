package signaling

import (
	"errors"
	"fmt"
	"net/url"
	"time"
)

// Config is the signaling section.
type Config struct {
	// MaxRoomSize is the number of peers a room holds.
	MaxRoomSize int `mapstructure:"max_room_size"`
	// ResumeGrace is how long a dropped connection keeps its peer id and room.
	ResumeGrace time.Duration `mapstructure:"resume_grace"`
	// MaxMessageBytes is the largest text frame accepted; larger ones close with 1009.
	MaxMessageBytes int `mapstructure:"max_message_bytes"`
	// RateLimit is messages per second per connection (burst twice that); 0 is off.
	RateLimit float64 `mapstructure:"rate_limit"`
	// MaxConnsPerIP caps the sessions of one client (an IPv4 address, an IPv6 /64): connected
	// ones and those waiting for a resume; 0 is unlimited.
	MaxConnsPerIP int `mapstructure:"max_conns_per_ip"`
	// MaxQueuedBytes bounds the messages waiting for one session: unsent, and sent but not yet
	// acknowledged (kept for a resume). Acknowledged-to-be ones are forgotten first to make
	// room; a client whose unsent messages pass it reads too slowly and is closed with 1008.
	// 0 is no bound (the 256 messages remain).
	MaxQueuedBytes int `mapstructure:"max_queued_bytes"`
	// MaxQueuedBytesTotal bounds the messages waiting for every session of this node: past
	// it, the mailboxes forget what they keep for replays, then the sessions with the most
	// unsent bytes (the slowest readers) are ended. 0 is no bound.
	MaxQueuedBytesTotal int `mapstructure:"max_queued_bytes_total"`
	// PingInterval is the period of WebSocket ping frames.
	PingInterval time.Duration `mapstructure:"ping_interval"`
	// PongTimeout is the silence after which a connection counts as dropped.
	PongTimeout time.Duration `mapstructure:"pong_timeout"`
	// RedisURL, when set, shares rooms between every node on that Redis.
	RedisURL string `mapstructure:"redis_url" secret:"url"`
}

// DefaultConfig returns the built-in defaults of the signaling section.
func DefaultConfig() Config {
	return Config{
		MaxRoomSize:         16,
		ResumeGrace:         30 * time.Second,
		MaxMessageBytes:     65536,
		RateLimit:           50,
		MaxConnsPerIP:       50,
		MaxQueuedBytes:      1 << 20,
		MaxQueuedBytesTotal: 256 << 20,
		PingInterval:        20 * time.Second,
		PongTimeout:         45 * time.Second,
		RedisURL:            "",
	}
}

// Validate reports every invalid value, each error starting with the key's name.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.MaxRoomSize < 2 {
		bad("max_room_size", "%d is too small: a call needs at least 2 peers", c.MaxRoomSize)
	}
	if c.ResumeGrace < 0 {
		bad("resume_grace", "%v is negative", c.ResumeGrace)
	}
	if c.MaxMessageBytes < 1024 {
		bad("max_message_bytes", "%d is below 1024: an SDP offer would not fit", c.MaxMessageBytes)
	}
	if c.RateLimit < 0 {
		bad("rate_limit", "%v is negative (0 turns the limit off)", c.RateLimit)
	}
	if c.MaxConnsPerIP < 0 {
		bad("max_conns_per_ip", "%d is negative (0 means unlimited)", c.MaxConnsPerIP)
	}
	if c.MaxQueuedBytes < 0 {
		bad("max_queued_bytes", "%d is negative (0 means no bound)", c.MaxQueuedBytes)
	} else if c.MaxQueuedBytes > 0 && c.MaxQueuedBytes < c.MaxMessageBytes {
		bad("max_queued_bytes", "%d is below max_message_bytes %d: one message would not fit", c.MaxQueuedBytes, c.MaxMessageBytes)
	}
	if c.MaxQueuedBytesTotal < 0 {
		bad("max_queued_bytes_total", "%d is negative (0 means no bound)", c.MaxQueuedBytesTotal)
	}
	if c.PingInterval <= 0 {
		bad("ping_interval", "%v must be positive", c.PingInterval)
	}
	if c.PongTimeout <= c.PingInterval && c.PingInterval > 0 {
		bad("pong_timeout", "%v must be longer than ping_interval %v", c.PongTimeout, c.PingInterval)
	}
	if c.RedisURL != "" {
		u, err := url.Parse(c.RedisURL)
		switch {
		case err != nil:
			bad("redis_url", "not a URL: %v", RedactURL(c.RedisURL))
		case u.Scheme != "redis" && u.Scheme != "rediss":
			bad("redis_url", "scheme %q is not redis:// or rediss://", u.Scheme)
		case u.Host == "":
			bad("redis_url", "%s has no host", RedactURL(c.RedisURL))
		}
	}
	return errors.Join(errs...)
}

// RedactURL hides the password of a URL such as redis://:secret@host:6379/0, for logs and
// `icebox config print`.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	if u.User != nil {
		if _, ok := u.User.Password(); !ok {
			u.User = url.User("xxxxx") // redis://secret@host: the name may be the password
		}
	}
	return u.Redacted()
}
