// Command icebox is the one binary of icebox: STUN/TURN relay, WebSocket signaling and TURN REST
// credentials for WebRTC apps. It is the only package that reads configuration (cobra, viper):
// it composes one typed Config from every package's section, binds every listener, wires the
// components and runs their lifecycle.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// Exit codes of the contract: 0 ok, 1 runtime failure, 2 bad usage or invalid configuration.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr))
}

// runtimeError is a failure of a valid command (a port in use, a server that fails): exit 1.
type runtimeError struct{ err error }

func (e *runtimeError) Error() string { return e.err.Error() }
func (e *runtimeError) Unwrap() error { return e.err }

// execute runs the command line args and returns the exit code.
func execute(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "icebox: %v\n", err)
	var rt *runtimeError
	if errors.As(err, &rt) {
		return exitFailure
	}
	var ce *configError
	if !errors.As(err, &ce) {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return exitUsage
}
