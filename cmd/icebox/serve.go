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
shutdown.timeout. A second signal exits at once.

SIGHUP (systemctl reload icebox), or a change of the configuration file, reloads the
configuration: secrets, auth, origins, rate limits, quotas, peer lists, the log level and
certificates change in place, without closing a connection or an allocation. A file with
any invalid value is refused whole and the running configuration stays; keys that need a
restart (listen addresses, the relay range, redis_url) are logged and keep their value.`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		// From the start: a SIGHUP while icebox starts is a reload once it runs, not the end.
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		l, err := cf.load()
		if err != nil {
			return err
		}
		log, level := newLogger(l.cfg.Log, stderr)
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
		a.reloader = newReloader(a, cf.load, level)
		a.watchReloads(ctx, hup, l.files)
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

// watchReloads reloads the configuration on SIGHUP and when one of its files (the
// configuration file, the secret files) changes, one reload at a time, until ctx ends.
func (a *app) watchReloads(ctx context.Context, hup <-chan os.Signal, files []string) {
	changed := make(chan []byte, 1)
	if len(files) > 0 {
		a.reloader.files, a.reloader.sum = files, filesSum(files)
		err := watchFiles(ctx, files, a.log, func(sum []byte) {
			select {
			case changed <- sum:
			default:
			}
		})
		if err != nil {
			a.log.Warn("cannot watch the configuration files; reload with SIGHUP (systemctl reload icebox)", "files", files, "err", err)
		}
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				a.reloader.reload("SIGHUP")
			case sum := <-changed:
				if !a.reloader.loadedContent(sum) {
					a.reloader.reload("file changed")
				}
			}
		}
	}()
}

func configFileForLog(file string) string {
	if file == "" {
		return "(none: defaults, environment and flags)"
	}
	return file
}
