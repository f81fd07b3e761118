// Package e2e holds icebox's end-to-end tests: the built binary as a user runs it, browsers
// (Chromium and Firefox) on the demo and the SDK against it, and the deploy files (systemd,
// Helm, Prometheus rules, the Grafana dashboard). It is its own module, so that the unit
// packages stay fast and the main module carries none of the tests' browser or Kubernetes
// dependencies; `make test` runs it beside them.
package e2e
