package signaling

// Crash stops b as if its process died: no more heartbeats or messages, nothing cleaned up.
func (b *NodeBus) Crash() { b.crash() }
