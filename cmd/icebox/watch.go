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

// filesSum is the hash of the files' contents (through symlinks: the content in force), nil
// when one cannot be read.
func filesSum(files []string) []byte {
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(f) //nolint:gosec // the configuration's own files
		if err != nil {
			return nil
		}
		s := sha256.Sum256(b)
		h.Write(s[:])
	}
	return h.Sum(nil)
}

// watchFiles calls changed(sum) when the content of the files (the configuration file, the
// secret files) changes, once it has settled, until ctx ends. It watches their directories,
// not the files: editors replace a file (a new inode), and Kubernetes swaps a symlink (..data)
// when a ConfigMap or Secret changes. The caller compares sum with the content it loaded last:
// a write that leaves it as it was, or a change already reloaded by a signal, is no change.
func watchFiles(ctx context.Context, files []string, log *slog.Logger, changed func(sum []byte)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := w.Add(filepath.Dir(f)); err != nil {
			_ = w.Close()
			return err
		}
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
				log.Warn("watching the configuration files", "files", files, "err", err)
			case _, ok := <-w.Events:
				if !ok {
					return
				}
				// Any event in the directory: the file, its symlink's target or a temporary
				// file an editor renames over it. The content decides.
				settle.Reset(watchSettle)
			case <-settle.C:
				now := filesSum(files)
				if now == nil {
					log.Debug("a configuration file is not there (yet); waiting for it", "files", files)
					continue
				}
				changed(now)
			}
		}
	}()
	return nil
}
