package main

import (
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

// fileSum is the hash of file's content (through symlinks: the content in force), nil when it
// cannot be read.
func fileSum(file string) []byte {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	s := sha256.Sum256(b)
	return s[:]
}

// watchFile calls changed(sum) when the content of file changes, once it has settled, until
// ctx ends. It watches the file's directory, not the file: editors replace the file (a new
// inode), and Kubernetes swaps a symlink (..data) when a ConfigMap or Secret changes. The
// caller compares sum with the content it loaded last: a write that leaves it as it was, or
// a change already reloaded by a signal, is no change.
func watchFile(ctx context.Context, file string, log *slog.Logger, changed func(sum []byte)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	if err := w.Add(filepath.Dir(file)); err != nil {
		_ = w.Close()
		return err
	}
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
				now := fileSum(file)
				if now == nil {
					log.Debug("the configuration file is not there (yet); waiting for it", "file", file)
					continue
				}
				changed(now)
			}
		}
	}()
	return nil
}
