package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/icebox-rtc/icebox/credentials"
)

func newCredentialsCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "credentials",
		Short: "Mint one TURN REST credential offline and print it as the TURN REST API JSON",
		Long: `Mint one time-limited TURN credential without a running icebox, and print it in the
draft-uberti-behave-turn-rest-00 form: {"username", "password", "ttl", "uris"}.

The secret, the lifetime and the URIs (listeners and public_host) come from the
configuration unless --secret, --ttl or --user say otherwise.`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(cmd)
	secret := cmd.Flags().String("secret", "", "shared secret to sign with (default: the first of credentials.secrets)")
	user := cmd.Flags().String("user", "", "user part of the username (default: a random opaque id)")
	ttlFlag := cmd.Flags().String("ttl", "", "lifetime, e.g. 1h (default: credentials.ttl)")
	cmd.RunE = func(*cobra.Command, []string) error {
		l, err := cf.load()
		if err != nil {
			return err
		}
		for _, w := range l.warnings {
			fmt.Fprintln(stderr, "warning:", w)
		}
		c := l.cfg
		key := *secret
		if key == "" {
			if len(c.Credentials.Secrets) == 0 {
				return &configError{problems: []string{"credentials.secrets: no secret configured; set it, or pass --secret"}}
			}
			key = c.Credentials.Secrets[0]
		}
		ttl := c.Credentials.TTL
		if *ttlFlag != "" {
			if ttl, err = time.ParseDuration(*ttlFlag); err != nil || ttl <= 0 {
				return &configError{problems: []string{fmt.Sprintf("--ttl: %q is not a positive duration (e.g. 1h)", *ttlFlag)}}
			}
		}
		if ttl > c.Credentials.MaxTTL {
			return &configError{problems: []string{fmt.Sprintf("--ttl: %v is longer than credentials.max_ttl %v: the TURN server would refuse it", ttl, c.Credentials.MaxTTL)}}
		}
		name := *user
		if name == "" {
			name = credentials.RandomUser()
		} else if name, err = credentials.SanitizeUser(name); err != nil {
			return &configError{problems: []string{"--user: " + err.Error()}}
		}
		cred := credentials.NewSecrets([]string{key}).Mint(name, ttl, time.Now())
		e := configEndpoints(c)
		out, err := json.MarshalIndent(credentials.NewTURNCredentials(cred, ttl, e), "", "  ") //nolint:gosec // printing the credential is the point
		if err != nil {
			return &runtimeError{err}
		}
		_, err = fmt.Fprintf(stdout, "%s\n", out)
		return err
	}
	return cmd
}

// configEndpoints is where the configuration says clients reach TURN, without binding anything:
// the configured ports (a listener on port 0 has no known port and is left out).
func configEndpoints(c Config) credentials.Endpoints {
	port := func(addr string) int {
		if addr == "" {
			return 0
		}
		_, p, _ := net.SplitHostPort(addr)
		n, _ := strconv.Atoi(p)
		return n
	}
	return credentials.Endpoints{
		Host: resolvePublicAddrs(c, interfaceAddrs).Host,
		UDP:  port(c.TURN.UDPListen), TCP: port(c.TURN.TCPListen), TLS: port(c.TURN.TLSListen),
		EdgeUDP: port(c.Edge.UDPListen), EdgeTLS: port(c.Edge.Listen),
	}
}
