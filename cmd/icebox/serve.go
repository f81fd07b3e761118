package main

import (
	"context"
	"errors"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func newServeCmd(_, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run everything: STUN/TURN, signaling, credentials, health and metrics",
		Long: `Run icebox. With no configuration file it starts with development defaults:
HTTP on :8080, STUN/TURN on :3478 (UDP and TCP), and a random TURN secret.

SIGINT or SIGTERM starts a graceful shutdown: /readyz turns 503, new work is refused
for shutdown.drain while calls in progress go on, then everything closes within
shutdown.timeout. A second signal exits at once.`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		l, err := cf.load()
		if err != nil {
			return err
		}
		log := newLogger(l.cfg.Log, stderr)
		for _, w := range l.warnings {
			log.Warn(w)
		}
		info := readBuildInfo()
		log.Info("icebox starting", "version", info.Version, "commit", info.Commit, "config", configFileForLog(l.file))

		a, err := newApp(l.cfg, l.compiled, log, info)
		if err != nil {
			var ce *configError
			if errors.As(err, &ce) {
				return err
			}
			return &runtimeError{err}
		}

		sig, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		ctx, cancel := context.WithCancel(cmd.Context())
		defer cancel()
		go func() {
			<-sig.Done()
			// Give the signals their default action back before the drain starts, so that a
			// second one ends the process at once instead of waiting for the drain.
			stop()
			cancel()
		}()
		if err := a.run(ctx); err != nil {
			return &runtimeError{err}
		}
		return nil
	}
	return cmd
}

func configFileForLog(file string) string {
	if file == "" {
		return "(none: defaults, environment and flags)"
	}
	return file
}
