package main

import (
	"fmt"
	"io"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/spf13/cobra"

	"github.com/icebox-rtc/icebox/credentials"
)

func newTokenCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token --sub USER",
		Short: "Mint a JWT for auth.mode jwt, as an app server would, and print it",
		Long: `Mint one HS256 JWT signed with auth.jwt_secret (or --secret), with the claims icebox
reads: sub (the user: TURN quotas count per sub, resume works for the same sub), exp, and
optionally room (the only signaling room it may join). Print it, for a test or the demo:

  https://HOST/?room=team&token=$(icebox token --config /etc/icebox/icebox.yaml --sub ada)

Your app server mints these for its signed-in users the same way (README, "Tokens for your
users").`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(cmd)
	sub := cmd.Flags().String("sub", "", "the user the token stands for (required)")
	room := cmd.Flags().String("room", "", "the only signaling room the token may join (default: any)")
	ttl := cmd.Flags().Duration("ttl", time.Hour, "lifetime of the token")
	secret := cmd.Flags().String("secret", "", "HS256 key (default: auth.jwt_secret)")
	cmd.RunE = func(*cobra.Command, []string) error {
		l, err := cf.load()
		if err != nil {
			return err
		}
		for _, w := range l.warnings {
			fmt.Fprintln(stderr, "warning:", w)
		}
		var problems []string
		key := *secret
		if key == "" {
			key = l.cfg.Auth.JWTSecret
		}
		if key == "" {
			problems = append(problems, "auth.jwt_secret: no key configured; set it, or pass --secret")
		}
		if _, err := credentials.SanitizeUser(*sub); *sub == "" || err != nil {
			problems = append(problems, fmt.Sprintf("--sub: %q: give the user the token stands for (at most 128 bytes once encoded)", *sub))
		}
		if *ttl <= 0 {
			problems = append(problems, fmt.Sprintf("--ttl: %v is not a positive duration (e.g. 1h)", *ttl))
		}
		if len(problems) > 0 {
			return &configError{problems: problems}
		}
		if l.cfg.Auth.Mode != credentials.AuthJWT {
			fmt.Fprintf(stderr, "warning: auth.mode is %q: this icebox does not ask for JWTs\n", l.cfg.Auth.Mode)
		}
		claims := jwt.MapClaims{"sub": *sub, "exp": time.Now().Add(*ttl).Unix()}
		if *room != "" {
			claims["room"] = *room
		}
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(key))
		if err != nil {
			return &runtimeError{err}
		}
		_, err = fmt.Fprintln(stdout, tok)
		return err
	}
	return cmd
}
