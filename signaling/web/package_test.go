package web_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

// run runs a command in dir and returns its output, failing the test with it on error.
func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...) //nolint:gosec // the test's own tools
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "npm_config_update_notifier=false", "npm_config_fund=false", "npm_config_audit=false")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestPackage: the SDK folder packs into an npm tarball that an app installs (offline, it
// depends on nothing) and imports, and an app using every part of the API type-checks against
// its declarations with tsc --strict (TypeScript pinned in typecheck/package-lock.json,
// installed by make test with npm ci).
func TestPackage(t *testing.T) {
	paths := turntest.RequireTools(t, "node", "npm")
	node, npm := paths[0], paths[1]
	tsc, err := filepath.Abs("typecheck/node_modules/typescript/bin/tsc")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tsc); err != nil {
		turntest.SkipOrFail(t, "typescript is not installed in signaling/web/typecheck (make test runs npm ci there): %v", err)
	}
	sdk, _ := filepath.Abs("static/sdk")
	tmp := t.TempDir()
	out := run(t, sdk, npm, "pack", "--pack-destination", tmp)
	lines := strings.Fields(out)
	tarball := filepath.Join(tmp, lines[len(lines)-1])
	if _, err := os.Stat(tarball); err != nil {
		t.Fatalf("npm pack printed %q: %v", out, err)
	}
	listing := run(t, tmp, "tar", "-tzf", tarball)
	for _, f := range []string{"package/package.json", "package/icebox.js", "package/icebox.d.ts"} {
		if !strings.Contains(listing, f) {
			t.Errorf("the tarball lacks %s:\n%s", f, listing)
		}
	}

	app := filepath.Join(tmp, "app")
	if err := os.Mkdir(app, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(app, "package.json"), []byte(`{"name": "scratch-app", "private": true, "type": "module"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"app.ts", "tsconfig.json"} {
		b, err := os.ReadFile(filepath.Join("typecheck", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(app, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	run(t, app, npm, "install", "--offline", "--no-audit", "--no-fund", tarball)

	// Importing it in node: the module has no side effects and needs no browser to load.
	got := run(t, app, node, "--input-type=module", "-e", `
		const m = await import('@icebox-rtc/sdk');
		const e = new m.IceboxError('room-full', 'full');
		console.log(typeof m.join, typeof m.Call, e instanceof Error, e.code, e.name);`)
	if want := "function function true room-full IceboxError"; strings.TrimSpace(got) != want {
		t.Errorf("importing the installed package: got %q, want %q", strings.TrimSpace(got), want)
	}

	// The app type-checks; a mistake in it would not.
	run(t, app, node, tsc, "--noEmit", "--strict", "-p", ".")
	for name, body := range map[string]string{
		"bad.ts":            "import { join } from '@icebox-rtc/sdk';\nawait join('', { room: 1 });\n",
		"tsconfig.bad.json": `{"extends": "./tsconfig.json", "files": ["bad.ts"]}`,
	} {
		if err := os.WriteFile(filepath.Join(app, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(node, tsc, "--noEmit", "--strict", "-p", "tsconfig.bad.json") //nolint:gosec // the test's own tools
	cmd.Dir = app
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "bad.ts(2,") {
		t.Errorf("tsc accepted a join with a numeric room: %v\n%s", err, out)
	}
}
