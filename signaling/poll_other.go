//go:build !linux

package signaling

import "errors"

// poller is Linux's (epoll); elsewhere every connection has a reader goroutine of its own.
type poller struct{}

func newPoller() (*poller, error) { return nil, errors.ErrUnsupported }

func (*poller) add(*conn)             {}
func (*poller) arm(*conn, bool) error { return errors.ErrUnsupported }
func (*poller) forget(*conn)          {}
func (*poller) close()                {}
