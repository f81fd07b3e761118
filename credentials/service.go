package credentials

import (
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/icebox-rtc/icebox/httpapi"
)

// ServiceOptions configure the credential endpoints.
type ServiceOptions struct {
	Secrets   *Secrets
	TTL       time.Duration // credentials.ttl
	Endpoints Endpoints
	Auth      *Authenticator
	// Access and Limiter are the http section (allowed_origins and trusted_proxies,
	// rate_limit), compiled once and shared with /ws; a reload changes them in place.
	Access   *httpapi.Access
	Limiter  *httpapi.RateLimiter
	Logger   *slog.Logger
	Registry prometheus.Registerer
}

// Service serves GET /ice-config and GET /turn-credentials: time-limited TURN credentials for
// whoever auth.mode lets in, from allowed origins, within the rate limit.
type Service struct {
	secrets   *Secrets
	ttl       atomic.Int64 // credentials.ttl
	endpoints Endpoints
	auth      *Authenticator
	access    *httpapi.Access
	limiter   *httpapi.RateLimiter
	log       *slog.Logger
	refusals  *httpapi.RefusalLog
	draining  atomic.Bool

	issued  *prometheus.CounterVec
	refused *prometheus.CounterVec
}

// NewService builds the credential endpoints; register them with Register.
func NewService(o ServiceOptions) *Service {
	s := &Service{
		secrets: o.Secrets, endpoints: o.Endpoints, auth: o.Auth,
		access: o.Access, limiter: o.Limiter, log: o.Logger,
		refusals: httpapi.NewRefusalLog(o.Logger, "credentials: refused"),
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_credentials_issued_total",
			Help: "TURN credentials issued, by endpoint (ice-config, turn-credentials, ws: the signaling welcome).",
		}, []string{"endpoint"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_credentials_refused_total",
			Help: "Credential requests refused, by reason (bad-request, unauthorized, forbidden, method-not-allowed, rate-limited, unavailable, internal).",
		}, []string{"reason"}),
	}
	if s.access == nil {
		s.access = httpapi.NewAccess(httpapi.Origins{}, nil)
	}
	s.SetTTL(o.TTL)
	o.Registry.MustRegister(s.issued, s.refused)
	// Every known label value from the start, so that dashboards show 0 rather than nothing.
	for _, e := range []string{"ice-config", "turn-credentials", "ws"} {
		s.issued.WithLabelValues(e)
	}
	for _, r := range []string{httpapi.CodeBadRequest, httpapi.CodeUnauthorized, httpapi.CodeForbidden, httpapi.CodeMethod,
		httpapi.CodeRateLimited, httpapi.CodeUnavailable, httpapi.CodeInternal} {
		s.refused.WithLabelValues(r)
	}
	return s
}

// SetTTL changes credentials.ttl for the credentials minted from now on (a configuration
// reload); those already out keep the expiry they carry.
func (s *Service) SetTTL(ttl time.Duration) { s.ttl.Store(int64(ttl)) }

func (s *Service) lifetime() time.Duration { return time.Duration(s.ttl.Load()) }

// Register adds /ice-config and /turn-credentials to mux.
func (s *Service) Register(mux *http.ServeMux) {
	mux.Handle("/ice-config", s.guard("ice-config", s.iceConfig))
	mux.Handle("/turn-credentials", s.guard("turn-credentials", s.turnCredentials))
}

// Drain refuses new credentials from now on (503 with Retry-After), so clients go to a node
// that is not shutting down.
func (s *Service) Drain() { s.draining.Store(true) }

// WelcomeICE is the iceServers and ttl of a signaling welcome for id: a fresh credential, as
// /ice-config would give, counted as issued through endpoint "ws".
func (s *Service) WelcomeICE(id Identity) ([]ICEServer, int64) {
	c := s.NewICEConfig(s.Mint(id))
	s.issued.WithLabelValues("ws").Inc()
	return c.ICEServers, c.TTL
}

// AllowMint takes one request from c's http.rate_limit for a credential minted through
// another door (the /ws welcome carries one), so that every door shares one limit per client;
// when refused, retryAfter says when one would pass.
func (s *Service) AllowMint(c httpapi.Client) (ok bool, retryAfter time.Duration) {
	return s.limiter.Allow(c, time.Now())
}

// handler serves one endpoint for an authenticated identity.
type handler func(w http.ResponseWriter, r *http.Request, id Identity) error

// guard applies, in order: CORS and the origin policy (preflight included), the method, the
// drain, the rate limit and authentication; then it runs h and writes any error it returns.
func (s *Service) guard(endpoint string, h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := s.check(w, r)
		if err == nil && r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent) // an allowed preflight
			return
		}
		var id Identity
		if err == nil {
			if id, err = s.auth.Authenticate(TokenFrom(r, "key")); err != nil {
				err = Refusal(err)
			}
		}
		if err == nil {
			err = h(w, r, id)
		}
		if err != nil {
			e := httpapi.ErrorOf(err)
			s.refused.WithLabelValues(e.Code).Inc()
			s.refusals.Refused(time.Now(), e.Code, e.Message)
			if e.Status == http.StatusInternalServerError {
				s.log.Error("credentials", "endpoint", endpoint, "err", err)
			}
			httpapi.WriteError(w, e)
			return
		}
		s.issued.WithLabelValues(endpoint).Inc()
	})
}

// check is everything before authentication.
func (s *Service) check(w http.ResponseWriter, r *http.Request) error {
	if e := s.access.Origins().CORS(w, r); e != nil {
		return e
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		w.Header().Set("Allow", "GET, HEAD, OPTIONS")
		return &httpapi.Error{Status: http.StatusMethodNotAllowed, Code: httpapi.CodeMethod, Message: r.Method + " is not allowed; use GET"}
	}
	if r.Method == http.MethodOptions {
		return nil
	}
	if s.draining.Load() {
		return &httpapi.Error{Status: http.StatusServiceUnavailable, Code: httpapi.CodeUnavailable,
			Message: "this node is shutting down; try another", RetryAfter: 5 * time.Second}
	}
	if ok, wait := s.limiter.Allow(s.access.Proxies().Client(r), time.Now()); !ok {
		return &httpapi.Error{Status: http.StatusTooManyRequests, Code: httpapi.CodeRateLimited,
			Message: "too many requests; slow down (http.rate_limit)", RetryAfter: wait}
	}
	return nil
}

// ICEConfig is the /ice-config answer: what new RTCPeerConnection(config) takes.
type ICEConfig struct {
	ICEServers         []ICEServer `json:"iceServers"`
	ICETransportPolicy string      `json:"iceTransportPolicy,omitempty"`
	TTL                int64       `json:"ttl"`
	ExpiresAt          time.Time   `json:"expiresAt"`
}

// NewICEConfig is the RTCConfiguration for cred.
func (s *Service) NewICEConfig(cred Credential) ICEConfig {
	return ICEConfig{
		ICEServers: s.endpoints.ICEServers(cred),
		TTL:        int64(s.lifetime() / time.Second),
		ExpiresAt:  cred.Expires.UTC(),
	}
}

// Mint issues a credential for id (a random opaque user when auth names none).
func (s *Service) Mint(id Identity) Credential {
	user := id.User
	if user == "" {
		user = RandomUser()
	}
	return s.secrets.Mint(user, s.lifetime(), time.Now())
}

func (s *Service) iceConfig(w http.ResponseWriter, r *http.Request, id Identity) error {
	cfg := s.NewICEConfig(s.Mint(id))
	switch policy := r.URL.Query().Get("policy"); policy {
	case "", "all":
	case "relay":
		cfg.ICETransportPolicy = "relay"
	default:
		return &httpapi.Error{Status: http.StatusBadRequest, Code: httpapi.CodeBadRequest, Message: "policy must be relay or all, not " + quote(policy)}
	}
	httpapi.WriteJSON(w, http.StatusOK, cfg)
	return nil
}

// TURNCredentials is the draft-uberti-behave-turn-rest-00 answer of /turn-credentials.
type TURNCredentials struct {
	Username string   `json:"username"`
	Password string   `json:"password"`
	TTL      int64    `json:"ttl"`
	URIs     []string `json:"uris"`
}

// NewTURNCredentials is the draft's answer for cred.
func NewTURNCredentials(cred Credential, ttl time.Duration, e Endpoints) TURNCredentials {
	return TURNCredentials{Username: cred.Username, Password: cred.Password, TTL: int64(ttl / time.Second), URIs: e.TURNURIs()}
}

func (s *Service) turnCredentials(w http.ResponseWriter, r *http.Request, id Identity) error {
	q := r.URL.Query()
	if service := q.Get("service"); service != "turn" {
		return &httpapi.Error{Status: http.StatusBadRequest, Code: httpapi.CodeBadRequest, Message: "service must be turn, not " + quote(service)}
	}
	// The user part is who auth proves (a JWT sub), else one of the server's choosing: the
	// draft's username parameter is ignored, because a caller that could name any user could
	// fill that user's turn.user_quota with credentials of its own.
	httpapi.WriteJSON(w, http.StatusOK, NewTURNCredentials(s.Mint(id), s.lifetime(), s.endpoints))
	return nil
}

func quote(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return "\"" + strings.ToValidUTF8(s, "?") + "\""
}
