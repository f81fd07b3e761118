package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/httpapi"
)

// inPlace are the keys a reload changes without a restart. Every other key keeps its running
// value until icebox restarts, and a reload that changes one logs it by name.
var inPlace = map[string]bool{
	"credentials.secrets": true, "credentials.ttl": true, "credentials.max_ttl": true,
	"auth.mode": true, "auth.tokens": true, "auth.jwt_secret": true,
	"http.allowed_origins": true, "http.rate_limit": true, "http.trusted_proxies": true,
	"http.tls_cert": true, "http.tls_key": true, // while TLS stays on: the listener is the same
	"signaling.rate_limit": true, "signaling.max_conns_per_ip": true, "signaling.max_room_size": true,
	"turn.user_quota": true, "turn.total_quota": true, "turn.max_permissions": true, "turn.max_channels": true,
	"turn.allowed_peer_cidrs": true, "turn.denied_peer_cidrs": true,
	"log.level": true, "shutdown.drain": true, "shutdown.timeout": true,
}

// reloadResult is what the last reload did, for /readyz.
type reloadResult struct {
	Result   string    `json:"result"` // success or failure
	At       time.Time `json:"at"`
	Changed  []string  `json:"changed,omitempty"`  // keys put in force
	Restart  []string  `json:"restart,omitempty"`  // keys changed in the file that wait for a restart
	Problems []string  `json:"problems,omitempty"` // why a failed reload was refused
}

// reloader re-reads the configuration (SIGHUP, systemctl reload, a change of the file) and puts
// what changed in force in the running app, all of it or, when anything in it is invalid,
// none of it.
type reloader struct {
	a     *app
	load  func() (loaded, error)
	level *slog.LevelVar

	mu      sync.Mutex // one reload at a time
	running Config     // what is in force: the last good configuration, restart keys as started
	// files are the configuration files watched (the config file, the secret files), sum the
	// hash of their content at the last load, good or refused.
	files []string
	sum   []byte

	last     sync.Mutex
	result   *reloadResult // nil: no reload yet
	reloads  *prometheus.CounterVec
	ok       prometheus.Gauge
	lastTime prometheus.Gauge
}

func newReloader(a *app, load func() (loaded, error), level *slog.LevelVar) *reloader {
	r := &reloader{a: a, load: load, level: level, running: a.cfg,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_config_reloads_total",
			Help: "Configuration reloads (SIGHUP, systemctl reload, a change of the file), by result: success, or failure (the file was refused whole; the running configuration stays).",
		}, []string{"result"}),
		ok: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "icebox_config_last_reload_successful",
			Help: "1 when the last reload succeeded (or none was tried), 0 when it was refused.",
		}),
		lastTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "icebox_config_last_reload_timestamp_seconds",
			Help: "When the configuration was last loaded (the start, then each reload tried), as a Unix time.",
		}),
	}
	r.reloads.WithLabelValues("success")
	r.reloads.WithLabelValues("failure")
	r.ok.Set(1)
	r.lastTime.SetToCurrentTime()
	a.registry.MustRegister(r.reloads, r.ok, r.lastTime)
	return r
}

// loadedContent reports whether sum is the content of the file at the last load: a change of
// the file that a signal already reloaded, or a write that changed nothing.
func (r *reloader) loadedContent(sum []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Equal(sum, r.sum)
}

// lastResult is the last reload's result, nil before the first.
func (r *reloader) lastResult() *reloadResult {
	r.last.Lock()
	defer r.last.Unlock()
	return r.result
}

func (r *reloader) record(res *reloadResult) {
	r.last.Lock()
	r.result = res
	r.last.Unlock()
	r.lastTime.Set(float64(res.At.UnixNano()) / 1e9)
	r.reloads.WithLabelValues(res.Result).Inc()
	if res.Result == "success" {
		r.ok.Set(1)
	} else {
		r.ok.Set(0)
	}
}

// reload loads the configuration again and applies it; why says what asked for it (a signal,
// the file) for the log.
func (r *reloader) reload(why string) *reloadResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	log := r.a.log
	if len(r.files) > 0 {
		r.sum = filesSum(r.files)
	}
	l, err := r.load()
	if err != nil {
		res := &reloadResult{Result: "failure", At: time.Now(), Problems: problemsOf(err)}
		// Recorded before it is logged: whoever reads the log line and then asks /readyz or
		// /metrics sees this reload.
		r.record(res)
		for _, p := range res.Problems {
			log.Error("configuration reload refused", "problem", p)
		}
		log.Error("configuration reload refused whole: nothing of it was applied; the running configuration stays",
			"trigger", why, "problems", len(res.Problems))
		return res
	}
	for _, w := range l.warnings {
		log.Warn(w)
	}
	res := r.apply(l)
	res.At = time.Now()
	r.record(res)
	for _, k := range res.Restart {
		log.Warn("configuration key changed but needs a restart: the running value stays until icebox restarts", "key", k)
	}
	log.Info("configuration reloaded", "trigger", why, "config", configFileForLog(l.file),
		"changed", strings.Join(res.Changed, " "), "restart_needed", strings.Join(res.Restart, " "))
	return res
}

// apply puts the keys of l that change in place in force. l is valid: every value was checked
// and compiled by loadConfig, so nothing here can fail half-way.
func (r *reloader) apply(l loaded) *reloadResult {
	a, old, cfg := r.a, r.running, l.cfg
	res := &reloadResult{Result: "success"}

	// The keys that need a restart keep their running value.
	tlsStays := old.HTTP.TLS() && cfg.HTTP.TLS() && a.certs != nil
	nv, ov := reflect.ValueOf(&cfg).Elem(), reflect.ValueOf(old)
	for _, k := range configKeys() {
		n, o := nv.FieldByIndex(k.index), ov.FieldByIndex(k.index)
		if sameValue(n, o) {
			continue
		}
		keep := !inPlace[k.name]
		if k.name == "http.tls_cert" || k.name == "http.tls_key" {
			keep = !tlsStays
		}
		if keep {
			res.Restart = append(res.Restart, k.name)
			n.Set(o)
			continue
		}
		res.Changed = append(res.Changed, k.name)
	}
	if len(cfg.Credentials.Secrets) == 0 && len(old.Credentials.Secrets) != 0 {
		// An empty list would leave nothing to verify the credentials out there with.
		a.log.Warn("credentials.secrets is empty in the reloaded configuration: the secrets in force stay")
		cfg.Credentials.Secrets = old.Credentials.Secrets
	}
	if len(cfg.Credentials.Secrets) != 0 {
		a.secrets.Set(cfg.Credentials.Secrets)
	}
	a.creds.SetTTL(cfg.Credentials.TTL)
	a.auth.Set(cfg.Auth)
	a.access.Set(l.compiled.origins, httpapi.Proxies(cfg.HTTP.TrustedProxies))
	a.limiter.SetRate(cfg.HTTP.RateLimit)
	if err := a.turn.Reload(cfg.TURN, cfg.Credentials.MaxTTL); err != nil {
		a.log.Error("turn: reload", "err", err) // validated before: not expected
	}
	a.turn.SetQuotaByClient(cfg.Auth.Mode != credentials.AuthJWT)
	if err := a.hub.Reload(cfg.Signaling); err != nil {
		a.log.Error("signaling: reload", "err", err) // validated before: not expected
	}
	if lvl, err := parseLevel(cfg.Log.Level); err == nil && r.level != nil {
		r.level.Set(lvl)
	}
	if tlsStays && l.compiled.cert != nil {
		a.certs.set(cfg.HTTP.TLSCert, cfg.HTTP.TLSKey, l.compiled.cert)
	}
	a.shutdown.Store(&cfg.Shutdown)
	if cfg.Auth.Mode == credentials.AuthNone && old.Auth.Mode != credentials.AuthNone {
		a.warnOpenRelay()
	}
	r.running = cfg
	return res
}

// sameValue compares two values of a key; an empty list and none are the same.
func sameValue(a, b reflect.Value) bool {
	if a.Kind() == reflect.Slice && a.Len() == 0 && b.Len() == 0 {
		return true
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}

// problemsOf lists the problems of a configuration error, one per key.
func problemsOf(err error) []string {
	if ce, ok := err.(*configError); ok {
		return ce.problems
	}
	return []string{fmt.Sprint(err)}
}
