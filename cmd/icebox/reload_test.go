package main

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/stunturn/turnclient"
	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

// reloadConfig is a configuration file on loopback with free ports, relaying to peers on
// 127.0.0.1 (icebox's own address here); extra is more YAML, http and turn more keys indented
// under those sections.
func reloadConfig(http, turn, extra string) string {
	return "public_host: 127.0.0.1\npublic_ip: 127.0.0.1\nhttp:\n  listen: 127.0.0.1:0\n" + http +
		"turn:\n  udp_listen: 127.0.0.1:0\n  tcp_listen: 127.0.0.1:0\n  allowed_peer_cidrs: [127.0.0.1/32]\n" + turn + "shutdown:\n  drain: 0s\n" + extra
}

// startReloadable starts icebox in-process on the file content, with a reloader that reads the
// file again.
func startReloadable(t *testing.T, content string) (*app, string) {
	t.Helper()
	file := writeFile(t, "icebox.yaml", content)
	a, _, _ := startApp(t, mustLoad(t, file).cfg)
	a.reloader = newReloader(a, func() (loaded, error) { return load(t, file) }, new(slog.LevelVar))
	return a, file
}

func rewrite(t *testing.T, file, content string) {
	t.Helper()
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestReloadInPlace: a reload puts the keys that change in place in force for the next
// request (secrets, auth, origins, the log level) while an allocation made before keeps
// relaying; the keys that need a restart are named and keep their value (the old address still
// serves); /readyz and the metrics tell the result.
func TestReloadInPlace(t *testing.T) {
	a, file := startReloadable(t, reloadConfig("", "", `credentials:
  secrets: [old-secret]
`))
	base := "http://" + a.http.addr().String()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	turnUDP := a.turnAddrs.udp.String()

	// An allocation under the old secret, relaying to a peer.
	oldCred := a.secrets.Mint("before", time.Hour, time.Now())
	client := turntest.Dial(t, "udp", turnUDP, nil)
	if _, err := client.Allocate(oldCred.Username, oldCred.Password); err != nil {
		t.Fatal(err)
	}
	peer, echoed := turntest.Echo(t)
	if err := client.CreatePermission(turnclient.PeerAddress{Addr: peer.AddrPort()}); err != nil {
		t.Fatal(err)
	}

	rewrite(t, file, strings.Replace(reloadConfig("  allowed_origins: [https://app.example.com]\n", "", `credentials:
  secrets: [new-secret, old-secret]
  ttl: 2h
auth:
  mode: token
  tokens: [app-key]
log:
  level: debug
`), "listen: 127.0.0.1:0", "listen: 127.0.0.1:1", 1))
	res := a.reloader.reload("test")
	if res.Result != "success" || !slices.Equal(res.Restart, []string{"http.listen"}) {
		t.Fatalf("reload: %+v, want success with http.listen needing a restart", res)
	}
	for _, k := range []string{"credentials.secrets", "credentials.ttl", "auth.mode", "auth.tokens", "http.allowed_origins", "log.level"} {
		if !slices.Contains(res.Changed, k) {
			t.Errorf("changed %v lacks %s", res.Changed, k)
		}
	}
	if a.reloader.level.Level() != slog.LevelDebug {
		t.Errorf("log level %v after reloading debug", a.reloader.level.Level())
	}
	// The old address still serves (http.listen waits for a restart).
	if code, _ := get(t, c, base+"/healthz"); code != 200 {
		t.Errorf("/healthz on the running address: %d", code)
	}
	// auth.mode token from now on.
	if code, _ := get(t, c, base+"/ice-config"); code != http.StatusUnauthorized {
		t.Errorf("/ice-config without the token after auth.mode token: %d, want 401", code)
	}
	code, body := get(t, c, base+"/ice-config?token=app-key")
	if code != 200 {
		t.Fatalf("/ice-config with the token: %d %s", code, body)
	}
	var ice credentials.ICEConfig
	if err := json.Unmarshal([]byte(body), &ice); err != nil {
		t.Fatal(err)
	}
	if ice.TTL != 7200 {
		t.Errorf("ttl %d after credentials.ttl 2h, want 7200", ice.TTL)
	}
	var user, pass string
	for _, s := range ice.ICEServers {
		if s.Username != "" {
			user, pass = s.Username, s.Credential
		}
	}
	if want := credentials.Password("new-secret", user); pass != want {
		t.Errorf("the credential after the rotation is not signed by the new first secret")
	}
	// Origins in force for the next request.
	req, _ := http.NewRequest(http.MethodGet, base+"/ice-config?token=app-key", nil)
	req.Header.Set("Origin", "https://elsewhere.example.com")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("an origin not allowed after the reload: %d, want 403", resp.StatusCode)
	}
	// The allocation made before relays on; a credential of the old secret still allocates
	// (it is the second secret now), one of the new secret too.
	if err := client.Send(peer.AddrPort(), []byte("after the reload")); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-echoed:
		if string(got) != "after the reload" {
			t.Errorf("the peer got %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("the allocation made before the reload relays nothing after it")
	}
	if d, ok := client.Recv(10 * time.Second); !ok || string(d.Payload) != "after the reload" {
		t.Errorf("the echo back through the relay: %q %v", d.Payload, ok)
	}
	if _, err := turntest.Dial(t, "udp", turnUDP, nil).Allocate(oldCred.Username, oldCred.Password); err != nil {
		t.Errorf("a credential of the old, second secret: %v", err)
	}
	if _, err := turntest.Dial(t, "udp", turnUDP, nil).Allocate(user, pass); err != nil {
		t.Errorf("a credential of the new secret: %v", err)
	}

	code, body = get(t, c, base+"/readyz")
	if code != 200 || !strings.Contains(body, `"result":"success"`) || !strings.Contains(body, `"restart":["http.listen"]`) {
		t.Errorf("/readyz after the reload: %d %s", code, body)
	}
	if n := testutil.ToFloat64(a.reloader.reloads.WithLabelValues("success")); n != 1 {
		t.Errorf("icebox_config_reloads_total{result=success} %v, want 1", n)
	}
}

// TestReloadRefusedWhole: a file with an invalid value is refused whole: its valid changes are
// not applied either, every problem is named with its key, the running configuration serves
// on, and /readyz (still 200) and the metrics say the reload failed.
func TestReloadRefusedWhole(t *testing.T) {
	a, file := startReloadable(t, reloadConfig("", "", ""))
	base := "http://" + a.http.addr().String()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	rewrite(t, file, reloadConfig("", "  user_quota: -1\n", `auth:
  mode: token
  tokens: [app-key]
credentials:
  ttl: 1 day
`))
	res := a.reloader.reload("test")
	if res.Result != "failure" || len(res.Problems) != 2 ||
		!strings.Contains(res.Problems[0]+res.Problems[1], "credentials.ttl") || !strings.Contains(res.Problems[0]+res.Problems[1], "turn.user_quota") {
		t.Fatalf("reload: %+v, want a failure naming credentials.ttl and turn.user_quota", res)
	}
	if code, _ := get(t, c, base+"/ice-config"); code != 200 {
		t.Errorf("/ice-config after a refused reload: %d, want 200 (auth.mode none stays)", code)
	}
	if got := a.turn.RunningConfig().UserQuota; got != DefaultConfig().TURN.UserQuota {
		t.Errorf("turn.user_quota %d after a refused reload", got)
	}
	code, body := get(t, c, base+"/readyz")
	if code != 200 || !strings.Contains(body, `"result":"failure"`) || !strings.Contains(body, "credentials.ttl") {
		t.Errorf("/readyz after a refused reload: %d %s", code, body)
	}
	if n := testutil.ToFloat64(a.reloader.ok); n != 0 {
		t.Errorf("icebox_config_last_reload_successful %v, want 0", n)
	}
	if n := testutil.ToFloat64(a.reloader.reloads.WithLabelValues("failure")); n != 1 {
		t.Errorf("icebox_config_reloads_total{result=failure} %v, want 1", n)
	}

	// Fixed: the next reload succeeds and says so.
	rewrite(t, file, reloadConfig("", "", ""))
	if res := a.reloader.reload("test"); res.Result != "success" || len(res.Changed) != 0 {
		t.Errorf("the fixed file: %+v", res)
	}
	if n := testutil.ToFloat64(a.reloader.ok); n != 1 {
		t.Errorf("icebox_config_last_reload_successful %v after a good reload, want 1", n)
	}
}
