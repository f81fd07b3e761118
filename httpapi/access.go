package httpapi

import "sync/atomic"

// Access is the http section's origin policy and trusted proxies in force, shared by
// /ice-config, /turn-credentials and /ws; Set replaces both at once (a configuration reload),
// and a request sees either the old pair or the new one, never a mix.
type Access struct{ p atomic.Pointer[access] }

type access struct {
	origins Origins
	proxies Proxies
}

// NewAccess holds origins and proxies.
func NewAccess(origins Origins, proxies Proxies) *Access {
	a := &Access{}
	a.Set(origins, proxies)
	return a
}

// Set puts origins and proxies in force.
func (a *Access) Set(origins Origins, proxies Proxies) {
	a.p.Store(&access{origins: origins, proxies: proxies})
}

// Origins is http.allowed_origins in force.
func (a *Access) Origins() Origins { return a.p.Load().origins }

// Proxies is http.trusted_proxies in force.
func (a *Access) Proxies() Proxies { return a.p.Load().proxies }
