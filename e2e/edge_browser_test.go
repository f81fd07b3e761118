package e2e

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/icebox-rtc/icebox/httpapi/httpapitest"

	"github.com/chromedp/chromedp"

	"github.com/icebox-rtc/icebox/acme/pebbletest"
	"github.com/icebox-rtc/icebox/edge/edgetest"
)

// jsTLSRelays describes, for each peer of the demo page, its RTCPeerConnection's iceServers
// and the local candidate of the selected pair.
const jsTLSRelays = `(async () => {
	const out = [];
	for (const p of window.demo.call.peers.values()) {
		const st = await p.pc.getStats();
		let pair = null;
		st.forEach(s => { if (s.type === 'transport' && s.selectedCandidatePairId) pair = st.get(s.selectedCandidatePairId); });
		const local = pair ? st.get(pair.localCandidateId) : null;
		out.push({urls: p.pc.getConfiguration().iceServers.flatMap(s => [].concat(s.urls)).join(' '),
			type: local ? local.candidateType : '', protocol: local ? (local.relayProtocol || '') : ''});
	}
	return out;
})()`

// spkiHashes are the base64 SHA-256 hashes of the public keys of the chain a TLS server
// presents, for Chromium's --ignore-certificate-errors-spki-list: the way to make a test CA's
// chain trusted (Pebble's intermediate) without touching the system's trust store.
func spkiHashes(t *testing.T, e edgetest.Target) string {
	t.Helper()
	c, err := tls.Dial("tcp", e.Addr, e.TLSConfig())
	if err != nil {
		t.Fatalf("TLS to the edge: %v", err)
	}
	defer c.Close()
	var hashes []string
	for _, cert := range c.ConnectionState().PeerCertificates {
		h := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
		hashes = append(hashes, base64.StdEncoding.EncodeToString(h[:]))
	}
	return strings.Join(hashes, ",")
}

// TestBrowserEdgeACME: Chromium loads the demo over https from icebox's name, with the
// certificate icebox got from the ACME CA: a secure context. Two pages call each other
// relay-only with nothing but the edge port's turns: URL in their iceServers, so the call goes
// through TURN over TLS on the one port that serves the page.
func TestBrowserEdgeACME(t *testing.T) {
	port := pebbletest.FreePort(t)
	ca := pebbletest.Start(t, pebbletest.Options{TLSPort: port})
	host := pebbletest.Name("call")
	// The edge port alone: relays reach each other as their own relay address.
	n := startIcebox(t, loopback().with(settings{
		"public_host": host, "edge.listen": "127.0.0.1:" + strconv.Itoa(port), "turn.udp_listen": "", "turn.tcp_listen": "",
		"acme.enabled": "true", "acme.email": "ops@icebox.test", "acme.ca": ca.Directory, "acme.ca_root": ca.APIRoot,
		"acme.storage": t.TempDir(), "credentials.secrets": "edge-secret", "http.rate_limit": "0", "signaling.max_conns_per_ip": "0",
	}))
	httpapitest.WaitStatus(t, &http.Client{}, n.url+"/readyz", http.StatusOK, 90*time.Second) // the certificate is in service
	e := edgetest.Target{Addr: n.edge, Host: host, Roots: ca.Roots}
	turns := "turns:" + host + ":" + e.Port() + "?transport=tcp"
	if uris, _ := edgetest.TURNURIs(t, e.ICEConfig(t)); len(uris) != 1 || uris[0] != turns {
		t.Fatalf("/ice-config lists %v, want only %s", uris, turns)
	}

	browser := newBrowser(t,
		chromedp.Flag("host-resolver-rules", "MAP "+host+" 127.0.0.1"),
		chromedp.Flag("ignore-certificate-errors-spki-list", spkiHashes(t, e)),
	)
	url := e.Base() + "/?room=edge&policy=relay&name="
	ada := openTab(t, browser, url+"Ada")
	bob := openTab(t, browser, url+"Bob")
	for _, tb := range []*tab{ada, bob} {
		if !eval[bool](tb, `window.isSecureContext && location.protocol === 'https:'`) {
			t.Fatalf("the demo over https is not a secure context")
		}
		tb.wait("a connected peer", jsConnected+` === 1`)
	}
	for i, tb := range []*tab{ada, bob} {
		got := eval[[]map[string]string](tb, jsTLSRelays)
		if len(got) != 1 || got[0]["urls"] != turns || got[0]["type"] != "relay" || got[0]["protocol"] != "tls" {
			t.Errorf("page %d: %v, want iceServers %s only and a relay candidate over tls selected", i, got, turns)
		}
	}
	ada.chat("hello over 443")
	bob.waitChat("hello over 443")
}
