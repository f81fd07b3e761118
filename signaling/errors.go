package signaling

import "errors"

var (
	// ErrRoomFull is a join beyond signaling.max_room_size.
	ErrRoomFull = errors.New("room is full")
	// ErrClosed is the hub after Shutdown.
	ErrClosed = errors.New("signaling is shut down")
)
