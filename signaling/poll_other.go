//go:build !linux

package signaling

import "errors"

// poller is Linux's (epoll); elsewhere every connection has a reader goroutine of its own.
type poller struct{}

func newPoller() (*poller, error) { return nil, errors.ErrUnsupported }

func (*poller) watch(*conn) error { return errors.ErrUnsupported }
func (*poller) unread(*conn) bool { return true }
func (*poller) forget(*conn)      {}
func (*poller) close()            {}
