package credentials

import (
	"errors"
	"fmt"
	"time"
)

// Config is the credentials section: the TURN REST shared secrets and credential lifetimes.
type Config struct {
	// Secrets are the shared secrets: the first signs, every one verifies (rotation).
	Secrets []string `mapstructure:"secrets" secret:"true"`
	// TTL is the lifetime of issued credentials.
	TTL time.Duration `mapstructure:"ttl"`
	// MaxTTL is the furthest ahead a username's expiry may lie for TURN to accept it.
	MaxTTL time.Duration `mapstructure:"max_ttl"`
}

// DefaultConfig returns the built-in defaults of the credentials section.
func DefaultConfig() Config {
	return Config{Secrets: []string{}, TTL: 24 * time.Hour, MaxTTL: 168 * time.Hour}
}

// Validate reports every invalid value, each error starting with the key's name.
func (c Config) Validate() error {
	var errs []error
	for i, s := range c.Secrets {
		if s == "" {
			errs = append(errs, fmt.Errorf("secrets: entry %d is empty", i+1))
		}
	}
	if c.TTL <= 0 {
		errs = append(errs, fmt.Errorf("ttl: %v must be positive", c.TTL))
	}
	if c.MaxTTL <= 0 {
		errs = append(errs, fmt.Errorf("max_ttl: %v must be positive", c.MaxTTL))
	}
	if c.TTL > 0 && c.MaxTTL > 0 && c.TTL > c.MaxTTL {
		errs = append(errs, fmt.Errorf("ttl: %v is longer than max_ttl %v, so TURN would refuse every credential issued", c.TTL, c.MaxTTL))
	}
	return errors.Join(errs...)
}

// Auth modes.
const (
	AuthNone  = "none"
	AuthToken = "token"
	AuthJWT   = "jwt"
)

// AuthConfig is the auth section: who may fetch credentials and open signaling connections.
type AuthConfig struct {
	// Mode is none, token or jwt.
	Mode string `mapstructure:"mode"`
	// Tokens are the accepted API keys in mode token.
	Tokens []string `mapstructure:"tokens" secret:"true"`
	// JWTSecret is the HS256 key in mode jwt.
	JWTSecret string `mapstructure:"jwt_secret" secret:"true"`
}

// DefaultAuthConfig returns the built-in defaults of the auth section.
func DefaultAuthConfig() AuthConfig {
	return AuthConfig{Mode: AuthNone, Tokens: []string{}}
}

// Validate reports every invalid value, each error starting with the key's name.
func (c AuthConfig) Validate() error {
	var errs []error
	switch c.Mode {
	case AuthNone:
	case AuthToken:
		if len(c.Tokens) == 0 {
			errs = append(errs, errors.New("tokens: mode token needs at least one token"))
		}
		for i, t := range c.Tokens {
			if t == "" {
				errs = append(errs, fmt.Errorf("tokens: entry %d is empty", i+1))
			}
		}
	case AuthJWT:
		if c.JWTSecret == "" {
			errs = append(errs, errors.New("jwt_secret: mode jwt needs a jwt_secret"))
		}
	default:
		errs = append(errs, fmt.Errorf("mode: unknown auth mode %q (want none, token or jwt)", c.Mode))
	}
	return errors.Join(errs...)
}
