package pebbletest

import (
	"os/exec"
	"syscall"
)

// dieWithParent ends the program when the test binary dies, even killed (a timeout, a pipe
// closed on it), so no CA outlives its test.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
