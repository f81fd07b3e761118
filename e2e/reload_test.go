package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/icebox-rtc/icebox/credentials"
	"github.com/icebox-rtc/icebox/stunturn/turnclient"
)

// reloadNode is icebox started on a configuration file, which the test rewrites.
type reloadNode struct {
	*proc
	file string
	url  string         // http://ADDR
	turn netip.AddrPort // turn.udp_listen
}

// reloadFile is a configuration on loopback: TURN over UDP relaying to the peers allowed, with
// secrets, and more YAML.
func reloadFile(allowed, secrets, extra string) string {
	return fmt.Sprintf(`public_host: 127.0.0.1
public_ip: 127.0.0.1
http:
  listen: 127.0.0.1:0
turn:
  udp_listen: 127.0.0.1:0
  tcp_listen: ""
  allowed_peer_cidrs: [%s]
credentials:
  secrets: [%s]
shutdown:
  drain: 0s
log:
  format: json
%s`, allowed, secrets, extra)
}

func startOnFile(t *testing.T, content string) *reloadNode {
	t.Helper()
	n := &reloadNode{file: writeFile(t, "icebox.yaml", content)}
	n.proc = startBinary(t, t.TempDir(), cleanEnv(), "serve", "--config", n.file)
	for {
		m := n.waitLog(t, "")
		switch m["msg"] {
		case "serving stun/turn":
			n.turn = netip.MustParseAddrPort(m["listen"].(string))
		case "serving http":
			n.url = "http://" + m["listen"].(string)
		case "icebox ready":
			return n
		}
	}
}

func (n *reloadNode) rewrite(t *testing.T, content string) {
	t.Helper()
	if err := os.WriteFile(n.file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (n *reloadNode) hup(t *testing.T) {
	t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
}

// credential is a TURN REST credential for user under secret, valid for an hour.
func credential(secret, user string) (username, password string) {
	username = credentials.Username(time.Now().Add(time.Hour), user)
	return username, credentials.Password(secret, username)
}

// udpPeer is a peer socket on a loopback address.
func udpPeer(t *testing.T, ip string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func peerAddr(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// TestBinaryReload: the built binary reloads on SIGHUP and on a change of its file while 20
// allocations relay, none of them losing a packet: a rotated secret (new first, old second:
// both allocate; then the old dropped: it no longer allocates, the allocations made with it
// relay on), a peer no longer allowed gets nothing more either way, a log level change takes
// effect at once, a restart key is named and keeps its value, an invalid file is refused whole
// with the process serving on.
func TestBinaryReload(t *testing.T) {
	n := startOnFile(t, reloadFile("127.0.0.2/32, 127.0.0.3/32", "old-secret", ""))
	relay := n.turn.String()

	// The echo peer every client relays to, over a channel: it sends every datagram back.
	echo := udpPeer(t, "127.0.0.2")
	go func() {
		buf := make([]byte, 1500)
		for {
			k, from, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteToUDPAddrPort(buf[:k], from)
		}
	}()
	const clients = 20
	type relayed struct {
		mu   sync.Mutex
		ok   int
		lost []string
	}
	var stats [clients]relayed
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := range clients {
		c, err := turnclient.Dial("udp", relay, turnclient.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		if _, err := c.Allocate(credential("old-secret", fmt.Sprintf("caller-%d", i))); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		if err := c.ChannelBind(0x4000, turnclient.PeerAddress{Addr: peerAddr(echo)}); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := &stats[i]
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				want := fmt.Sprintf("client %d packet %d", i, seq)
				if err := c.SendChannel(0x4000, []byte(want)); err != nil {
					s.mu.Lock()
					s.lost = append(s.lost, want+": "+err.Error())
					s.mu.Unlock()
					return
				}
				d, ok := c.Recv(5 * time.Second)
				s.mu.Lock()
				if ok && string(d.Payload) == want {
					s.ok++
				} else {
					s.lost = append(s.lost, fmt.Sprintf("%s: got %q", want, d.Payload))
				}
				s.mu.Unlock()
			}
		}()
	}
	progress := func() (counts [clients]int) {
		for i := range stats {
			stats[i].mu.Lock()
			counts[i] = stats[i].ok
			stats[i].mu.Unlock()
		}
		return counts
	}
	// waitProgress waits until every client relayed more than at before.
	waitProgress := func(what string, before [clients]int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			now, behind := progress(), 0
			for i := range now {
				if now[i] <= before[i] {
					behind++
				}
			}
			if behind == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d of %d clients relay nothing more", what, behind, clients)
			}
			time.Sleep(10 * time.Millisecond) // polling a condition, with a deadline
		}
	}
	waitProgress("before any reload", [clients]int{})

	// A probe client reaches the peer on 127.0.0.3 both ways before it is denied.
	denied := udpPeer(t, "127.0.0.3")
	probe, err := turnclient.Dial("udp", relay, turnclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(probe.Close)
	probeRelay, err := probe.Allocate(credential("old-secret", "probe"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*net.UDPConn{echo, denied} {
		if err := probe.CreatePermission(turnclient.PeerAddress{Addr: peerAddr(p)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := probe.ChannelBind(0x4001, turnclient.PeerAddress{Addr: peerAddr(denied)}); err != nil {
		t.Fatal(err)
	}
	// marker sends payload through the relay to the echo peer and waits for it back: whatever
	// the relay passed before it, to 127.0.0.3 or from it, is queued at its receiver by then.
	// Anything else the probe gets on the way is reported as unexpected.
	marker := func(payload string) {
		t.Helper()
		if err := probe.Send(peerAddr(echo), []byte(payload)); err != nil {
			t.Fatal(err)
		}
		for {
			d, ok := probe.Recv(10 * time.Second)
			if !ok {
				t.Fatalf("%q did not come back through the relay", payload)
			}
			if string(d.Payload) == payload {
				return
			}
			t.Errorf("the client got %q from %v, not from the echo peer", d.Payload, d.Peer)
		}
	}
	// queued reads a datagram waiting at the 127.0.0.3 peer without waiting (MSG_DONTWAIT: a
	// read with a past deadline would not even look).
	queued := func() (string, bool) {
		t.Helper()
		rc, err := denied.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1500)
		k := -1
		if err := rc.Read(func(fd uintptr) bool {
			k, _, _ = syscall.Recvfrom(int(fd), buf, syscall.MSG_DONTWAIT)
			return true
		}); err != nil {
			t.Fatal(err)
		}
		if k < 0 {
			return "", false
		}
		return string(buf[:k]), true
	}
	// Before the reload the peer gets the channel's data; the same check as after it finds it.
	if err := probe.SendChannel(0x4001, []byte("allowed")); err != nil {
		t.Fatal(err)
	}
	marker("marker 0")
	if got, ok := queued(); !ok || got != "allowed" {
		t.Fatalf("the peer on 127.0.0.3 before the reload: %q %v", got, ok)
	}

	// Reload 1 (SIGHUP): the new secret first, the old second; 127.0.0.3 no longer allowed;
	// http.listen changed (needs a restart); log level warn.
	before := progress()
	next := strings.Replace(reloadFile("127.0.0.2/32", "new-secret, old-secret", "  level: warn\n"),
		"listen: 127.0.0.1:0\nturn", "listen: 127.0.0.1:1\nturn", 1)
	n.rewrite(t, next)
	n.hup(t)
	first := n.waitLog(t, "configuration key changed but needs a restart: the running value stays until icebox restarts")
	if first["key"] != "http.listen" {
		t.Errorf("restart key logged: %v, want http.listen", first["key"])
	}
	waitReload(t, n, 1)
	waitProgress("after the first reload", before)
	if code, _ := get(t, &http.Client{}, n.url+"/healthz"); code != 200 {
		t.Errorf("the running http.listen after a reload that changed it: %d", code)
	}
	for _, secret := range []string{"new-secret", "old-secret"} {
		c, err := turnclient.Dial("udp", relay, turnclient.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Allocate(credential(secret, "late")); err != nil {
			t.Errorf("a credential of %s after the rotation: %v", secret, err)
		}
		c.Close()
	}

	// 127.0.0.3 gets nothing more, by channel or by Send indication, and what it sends does not
	// reach the client: each probe is followed by a marker through 127.0.0.2, and once the marker
	// is back, whatever the relay passed before it is already queued at its receiver.
	if err := probe.SendChannel(0x4001, []byte("denied by channel")); err != nil {
		t.Fatal(err)
	}
	if err := probe.Send(peerAddr(denied), []byte("denied by indication")); err != nil {
		t.Fatal(err)
	}
	if _, err := denied.WriteToUDPAddrPort([]byte("from the denied peer"), probeRelay); err != nil {
		t.Fatal(err)
	}
	marker("marker 1") // and what 127.0.0.3 sent does not reach the client
	if got, ok := queued(); ok {
		t.Errorf("the peer on 127.0.0.3 got %q after it was denied", got)
	}

	// Reload 2 (SIGHUP): the old secret dropped; log level info again. At warn, reload 1 said
	// nothing at info: the next line after its warning is reload 2's.
	before = progress()
	next = strings.Replace(reloadFile("127.0.0.2/32", "new-secret", "  level: info\n"),
		"listen: 127.0.0.1:0\nturn", "listen: 127.0.0.1:1\nturn", 1)
	n.rewrite(t, next)
	n.hup(t)
	if m := n.waitLog(t, ""); m["msg"] != first["msg"] {
		t.Errorf("after the reload to log.level warn, the next line is %v, want reload 2's warning", m)
	}
	if m := n.waitLog(t, ""); m["msg"] != "configuration reloaded" || m["trigger"] != "SIGHUP" {
		t.Errorf("log.level info again: got %v, want \"configuration reloaded\"", m)
	}
	waitProgress("after the old secret was dropped", before)
	c, err := turnclient.Dial("udp", relay, turnclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Allocate(credential("old-secret", "late")); err == nil {
		t.Errorf("a credential of the dropped secret allocated")
	}
	c.Close()

	// Reload 3 (SIGHUP): an invalid file, with a valid change in it too, is refused whole.
	before = progress()
	n.rewrite(t, reloadFile("127.0.0.2/32, 127.0.0.3/32", "new-secret", "  level: loud\nsignaling:\n  max_room_size: 1\n"))
	n.hup(t)
	var problems []string
	for {
		m := n.waitLog(t, "")
		if m["msg"] == "configuration reload refused" {
			problems = append(problems, m["problem"].(string))
		}
		if strings.HasPrefix(fmt.Sprint(m["msg"]), "configuration reload refused whole") {
			break
		}
	}
	if got := strings.Join(problems, " | "); !strings.Contains(got, "log.level") || !strings.Contains(got, "signaling.max_room_size") {
		t.Errorf("problems logged: %s, want log.level and signaling.max_room_size named", got)
	}
	code, body := get(t, &http.Client{}, n.url+"/readyz")
	if code != 200 || !strings.Contains(body, `"result":"failure"`) {
		t.Errorf("/readyz after a refused reload: %d %s", code, body)
	}
	if err := probe.SendChannel(0x4001, []byte("still denied")); err != nil {
		t.Fatal(err)
	}
	marker("marker 2")
	if got, ok := queued(); ok {
		t.Errorf("the refused file's allowed_peer_cidrs took effect: 127.0.0.3 got %q", got)
	}
	waitProgress("after a refused reload", before)

	// Reload 4: the file changes, no signal: the watch reloads it.
	before = progress()
	n.rewrite(t, strings.Replace(reloadFile("127.0.0.2/32", "new-secret", ""), "credentials:\n", "credentials:\n  ttl: 2h\n", 1))
	m := n.waitLog(t, "configuration reloaded")
	if m["trigger"] != "file changed" || !strings.Contains(fmt.Sprint(m["changed"]), "credentials.ttl") {
		t.Errorf("the file watch: %v", m)
	}
	code, body = get(t, &http.Client{}, n.url+"/ice-config")
	var ice credentials.ICEConfig
	if err := json.Unmarshal([]byte(body), &ice); code != 200 || err != nil || ice.TTL != 7200 {
		t.Errorf("/ice-config after the file changed to ttl 2h: %d %s", code, body)
	}
	waitProgress("after the file watch's reload", before)

	close(stop)
	wg.Wait()
	total := 0
	for i := range stats {
		total += stats[i].ok
		if len(stats[i].lost) > 0 {
			t.Errorf("client %d lost %d packets, first: %s", i, len(stats[i].lost), stats[i].lost[0])
		}
	}
	t.Logf("%d packets relayed and echoed across four reloads, by %d allocations", total, clients)
	select {
	case <-n.done:
		t.Errorf("icebox ended: %v", n.err)
	default:
	}
}

// waitReload waits until icebox_config_reloads_total{result="success"} is at least want.
func waitReload(t *testing.T, n *reloadNode, want int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, body := get(t, &http.Client{}, n.url+"/metrics")
		var got int
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, `icebox_config_reloads_total{result="success"} `) {
				_, _ = fmt.Sscan(strings.Fields(line)[1], &got)
			}
		}
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d successful reloads within 30 s, want %d", got, want)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, with a deadline
	}
}

// kubeVolume is a directory laid out as the kubelet lays out a ConfigMap or Secret volume: the
// files are symlinks through ..data, a symlink to a timestamped directory that an update
// replaces atomically (a rename of a new symlink over ..data).
type kubeVolume struct {
	dir     string
	version int
}

func newKubeVolume(t *testing.T, files map[string]string) *kubeVolume {
	t.Helper()
	v := &kubeVolume{dir: t.TempDir()}
	v.update(t, files)
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(v.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

func (v *kubeVolume) path(name string) string { return filepath.Join(v.dir, name) }

// update writes a new timestamped directory and swaps ..data to it, as the kubelet does.
func (v *kubeVolume) update(t *testing.T, files map[string]string) {
	t.Helper()
	v.version++
	ts := fmt.Sprintf("..2026_12_01_00_00_%02d.%d", v.version, v.version)
	if err := os.Mkdir(filepath.Join(v.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(v.dir, ts, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

// TestBinaryReloadKubernetesVolumes: a ConfigMap and a Secret mounted as the kubelet mounts
// them (the chart's layout: the config file, and the TURN secrets through
// ICEBOX_CREDENTIALS_SECRETS_FILE); an update of either, by the kubelet's symlink swap,
// reaches the running icebox with no signal and no restart.
func TestBinaryReloadKubernetesVolumes(t *testing.T) {
	config := newKubeVolume(t, map[string]string{"icebox.yaml": reloadFile("127.0.0.2/32", "ignored", "")})
	secret := newKubeVolume(t, map[string]string{"turn-secrets": "first-secret\n"})
	p := startBinary(t, t.TempDir(), cleanEnv("ICEBOX_CREDENTIALS_SECRETS_FILE="+secret.path("turn-secrets")),
		"serve", "--config", config.path("icebox.yaml"))
	var url string
	for url == "" {
		if m := p.waitLog(t, ""); m["msg"] == "serving http" {
			url = "http://" + m["listen"].(string)
		}
	}
	p.waitLog(t, "icebox ready")
	signedBy := func(secret string) bool {
		code, body := get(t, &http.Client{}, url+"/ice-config")
		var ice credentials.ICEConfig
		if err := json.Unmarshal([]byte(body), &ice); code != 200 || err != nil {
			t.Fatalf("/ice-config: %d %s", code, body)
		}
		for _, s := range ice.ICEServers {
			if s.Username != "" {
				return s.Credential == credentials.Password(secret, s.Username)
			}
		}
		return false
	}
	if !signedBy("first-secret") {
		t.Fatalf("the credential is not signed by the secret file's secret")
	}

	secret.update(t, map[string]string{"turn-secrets": "second-secret\nfirst-secret\n"})
	if m := p.waitLog(t, "configuration reloaded"); m["trigger"] != "file changed" || m["changed"] != "credentials.secrets" {
		t.Errorf("the Secret's update: %v", m)
	}
	if !signedBy("second-secret") {
		t.Errorf("after the Secret's update, credentials are not signed by its first secret")
	}

	config.update(t, map[string]string{"icebox.yaml": strings.Replace(reloadFile("127.0.0.2/32", "ignored", ""), "credentials:\n", "credentials:\n  ttl: 3h\n", 1)})
	if m := p.waitLog(t, "configuration reloaded"); m["trigger"] != "file changed" || m["changed"] != "credentials.ttl" {
		t.Errorf("the ConfigMap's update: %v", m)
	}
}
