package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchSettle is how long the configuration file must stay unchanged before a change of it is
// reloaded: an editor or a Kubernetes volume update writes in several steps.
const watchSettle = 500 * time.Millisecond

// watchFile calls changed when the content of file changes, once it has settled, until ctx
// ends. It watches the file's directory, not the file: editors replace the file (a new inode),
// and Kubernetes swaps a symlink (..data) when a ConfigMap or Secret changes. A write that
// leaves the content as it was is no change.
func watchFile(ctx context.Context, file string, log *slog.Logger, changed func()) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	if err := w.Add(filepath.Dir(file)); err != nil {
		_ = w.Close()
		return err
	}
	sum := func() []byte {
		b, err := os.ReadFile(file) // through symlinks: the content in force
		if err != nil {
			return nil
		}
		s := sha256.Sum256(b)
		return s[:]
	}
	last := sum()
	go func() {
		defer func() { _ = w.Close() }()
		settle := time.NewTimer(time.Hour)
		settle.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				log.Warn("watching the configuration file", "file", file, "err", err)
			case _, ok := <-w.Events:
				if !ok {
					return
				}
				// Any event in the directory: the file, its symlink's target or a temporary
				// file an editor renames over it. The content decides.
				settle.Reset(watchSettle)
			case <-settle.C:
				now := sum()
				if now == nil {
					log.Debug("the configuration file is not there (yet); waiting for it", "file", file)
					continue
				}
				if bytes.Equal(now, last) {
					continue
				}
				last = now
				changed()
			}
		}
	}()
	return nil
}
