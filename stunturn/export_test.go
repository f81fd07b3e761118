package stunturn

// PendingRequests is the number of authenticated requests icebox holds between its socket
// wrapper and pion's handlers: zero whenever nothing is in flight.
func (s *Server) PendingRequests() int {
	n := 0
	for _, t := range s.listeners {
		t.mu.Lock()
		n += len(t.pending)
		t.mu.Unlock()
	}
	return n
}

// QuotaUsers is the number of users holding a turn.user_quota slot.
func (s *Server) QuotaUsers() int {
	s.quota.mu.Lock()
	defer s.quota.mu.Unlock()
	return len(s.quota.n)
}

// FastBindings is the number of channels on the UDP fast path.
func (s *Server) FastBindings() int {
	n := 0
	for _, t := range s.listeners {
		n += int(t.fast.nchannels.Load())
	}
	return n
}

// PermissionsAndChannels is the number of permissions and channel bindings of every live
// allocation, as icebox learns them from pion's events.
func (s *Server) PermissionsAndChannels() (perms, channels int) {
	for _, t := range s.listeners {
		t.mu.Lock()
		for _, a := range t.allocs {
			perms += len(a.perms)
			channels += len(a.channels)
		}
		t.mu.Unlock()
	}
	return perms, channels
}
