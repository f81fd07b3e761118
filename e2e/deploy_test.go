package e2e

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/icebox-rtc/icebox/acme"
	"github.com/icebox-rtc/icebox/stunturn/turntest"
)

var deployDir = filepath.Join("..", "deploy")

// tool finds a program in PATH or in GOPATH/bin (where make test go-installs helm).
func tool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return turntest.RequireTools(t, name)[0]
}

// TestSystemdUnit: systemd accepts the unit, with the binary at its ExecStart path, and its
// sandbox is tight.
func TestSystemdUnit(t *testing.T) {
	analyze := tool(t, "systemd-analyze")
	unit, err := os.ReadFile(filepath.Join(deployDir, "systemd", "icebox.service"))
	if err != nil {
		t.Fatal(err)
	}
	// A throwaway root holding the unit, the binary where ExecStart says, and systemd's units.
	root := t.TempDir()
	for _, d := range []string{"usr/local/bin", "etc/systemd/system", "usr/lib/systemd"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The binary where ExecStart says, and kill where ExecReload says.
	kill, err := exec.LookPath("kill")
	if err != nil {
		t.Fatal(err)
	}
	for from, to := range map[string]string{iceboxBinary(t): "usr/local/bin/icebox", kill: "bin/kill"} {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(to)), 0o755); err != nil {
			t.Fatal(err)
		}
		copyFile(t, from, filepath.Join(root, to))
		if err := os.Chmod(filepath.Join(root, to), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "etc/systemd/system/icebox.service"), unit, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-r", "/usr/lib/systemd/system", filepath.Join(root, "usr/lib/systemd/")).CombinedOutput(); err != nil {
		t.Fatalf("copying systemd's units: %v %s", err, out)
	}
	out, err := exec.Command(analyze, "verify", "--root="+root, "/etc/systemd/system/icebox.service").CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, _ = exec.Command(analyze, "security", "--offline=yes", "--root="+root, "/etc/systemd/system/icebox.service").CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for icebox.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security:\n%s", out)
	}
	if level, _ := strconv.ParseFloat(string(m[1]), 64); level > 2.5 {
		t.Errorf("exposure level %v, want at most 2.5 (systemd's OK)", level)
	}

	text := string(unit)
	for _, want := range []string{
		"ExecStart=/usr/local/bin/icebox serve --config /etc/icebox/icebox.yaml",
		"ExecReload=/bin/kill -HUP $MAINPID",
		"User=icebox", "AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
		"NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
		"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK", "Restart=on-failure", "StateDirectory=icebox",
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("the unit lacks %q", want)
		}
	}
	// The stop timeout covers the default drain and shutdown timeout.
	stop := regexp.MustCompile(`TimeoutStopSec=(\d+)s`).FindStringSubmatch(text)
	drain, timeout := defaultShutdown(t)
	if stop == nil {
		t.Fatalf("no TimeoutStopSec")
	}
	if n, _ := strconv.Atoi(stop[1]); float64(n) <= (drain + timeout).Seconds() {
		t.Errorf("TimeoutStopSec=%ss does not cover drain %v + timeout %v", stop[1], drain, timeout)
	}
	if nofile := regexp.MustCompile(`LimitNOFILE=(\d+)`).FindStringSubmatch(text); nofile == nil || len(nofile[1]) < 6 {
		t.Errorf("LimitNOFILE %v: want room for many relays", nofile)
	}
}

// TestInstallScript: install.sh into a throwaway root writes a config with a fresh secret, a
// fresh JWT key (never an open credential endpoint) and the given addresses, which icebox loads,
// and leaves an existing config alone; arguments icebox would refuse stop it.
func TestInstallScript(t *testing.T) {
	root := t.TempDir()
	script := filepath.Join(deployDir, "systemd", "install.sh")
	run := func(args ...string) string {
		cmd := exec.Command(script, append([]string{"--binary", iceboxBinary(t)}, args...)...)
		cmd.Env = append(os.Environ(), "DESTDIR="+root)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("install.sh %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run("--public-host", "turn.example.com", "--public-ip", "203.0.113.10")
	for _, f := range []string{"usr/local/bin/icebox", "etc/systemd/system/icebox.service", "etc/icebox/icebox.yaml"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("%s not installed: %v", f, err)
		}
	}
	config := filepath.Join(root, "etc/icebox/icebox.yaml")
	st, _ := os.Stat(config)
	if st.Mode().Perm()&0o007 != 0 {
		t.Errorf("the config holding the secret is %v, want no access for others", st.Mode().Perm())
	}
	l, f := loadConfig(t, config)
	if len(f.Credentials.Secrets) != 1 || !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(f.Credentials.Secrets[0]) {
		t.Errorf("secrets %v, want one 32-byte hex secret", f.Credentials.Secrets)
	}
	if l.PublicHost != "turn.example.com" || l.PublicIP != "203.0.113.10" {
		t.Errorf("got public_host %q, public_ip %q", l.PublicHost, l.PublicIP)
	}
	if f.Auth.Mode != "jwt" || !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(f.Auth.JWTSecret) ||
		f.Auth.JWTSecret == f.Credentials.Secrets[0] {
		t.Errorf("auth %+v: want mode jwt with its own 32-byte key", f.Auth)
	}
	first := f.Credentials.Secrets[0]

	// A second install keeps the config, and its secret.
	if out := run("--public-host", "other.example.com"); !strings.Contains(out, "keeping the existing") {
		t.Errorf("second install: %s", out)
	}
	if again, f := loadConfig(t, config); f.Credentials.Secrets[0] != first || again.PublicHost != "turn.example.com" {
		t.Errorf("the existing config was changed")
	}

	// A fresh root gets another secret.
	other := t.TempDir()
	cmd := exec.Command(script, "--binary", iceboxBinary(t))
	cmd.Env = append(os.Environ(), "DESTDIR="+other)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if _, f := loadConfig(t, filepath.Join(other, "etc/icebox/icebox.yaml")); f.Credentials.Secrets[0] == first {
		t.Errorf("two installs share the secret %s", first)
	}
	withToken := t.TempDir()
	cmd = exec.Command(script, "--binary", iceboxBinary(t), "--auth", "token")
	cmd.Env = append(os.Environ(), "DESTDIR="+withToken)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if _, f := loadConfig(t, filepath.Join(withToken, "etc/icebox/icebox.yaml")); f.Auth.Mode != "token" || len(f.Auth.Tokens) != 1 || len(f.Auth.Tokens[0]) != 64 {
		t.Errorf("--auth token: auth %+v, want one 32-byte API key", f.Auth)
	}
	for _, args := range [][]string{
		{"--public-ip", "not-an-ip"},
		{"--public-ip", "999.1.2"},
		{"--public-ip", "10.0.0.256"},
		{"--public-ip", "01.2.3.4"},
		{"--public-host", "turn_example!com"},
		{"--public-host", "-turn.example.com"},
		{"--auth", "none"},
		{"--acme-email", "ops@example.com"},                                  // no name
		{"--public-host", "203.0.113.10", "--acme-email", "ops@example.com"}, // an IP
		{"--public-host", "turn.example.com", "--acme-email", "not-an-email"},
	} {
		bad := exec.Command(script, append([]string{"--binary", iceboxBinary(t)}, args...)...)
		bad.Env = append(os.Environ(), "DESTDIR="+t.TempDir())
		if out, err := bad.CombinedOutput(); err == nil {
			t.Errorf("install.sh accepted %v:\n%s", args, out)
		}
	}
}

// TestInstallScriptACME: install.sh --public-host --acme-email writes a configuration that
// icebox loads: the certificate from Let's Encrypt, HTTPS and TURN on 443, HTTP-01 on 80, the
// plain HTTP listener kept to the machine.
func TestInstallScriptACME(t *testing.T) {
	root := t.TempDir()
	cmd := exec.Command(filepath.Join(deployDir, "systemd", "install.sh"), "--binary", iceboxBinary(t),
		"--public-host", "turn.example.com", "--acme-email", "ops@example.com")
	cmd.Env = append(os.Environ(), "DESTDIR="+root)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("install.sh: %v\n%s", err, out)
	}
	c, _ := loadConfig(t, filepath.Join(root, "etc/icebox/icebox.yaml"))
	if !c.ACME.Enabled || c.ACME.Email != "ops@example.com" || c.ACME.CA != acme.LetsEncrypt || c.ACME.HTTPListen != ":80" ||
		c.Edge.Listen != ":443" || c.Edge.UDPListen != ":443" || c.PublicHost != "turn.example.com" || c.HTTP.Listen != "127.0.0.1:8080" {
		t.Errorf("config: acme %+v, edge %+v, public_host %q, http.listen %q", c.ACME, c.Edge, c.PublicHost, c.HTTP.Listen)
	}
	storage := acme.Config{Storage: c.ACME.Storage}
	if got := storage.StoragePath(func(string) string { return "/var/lib/icebox" }); got != "/var/lib/icebox/acme" {
		t.Errorf("ACME storage under systemd: %s, want the unit's StateDirectory", got)
	}
}

// helmTemplate renders the chart with the values files and --set flags.
func helmTemplate(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	helm := tool(t, "helm")
	cmd := exec.Command(helm, append([]string{"template", "icebox", filepath.Join(deployDir, "helm", "icebox"),
		"--namespace", "calls", "--kube-version", "1.31.0"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, &exec.ExitError{Stderr: stderr.Bytes()}
	}
	return out, nil
}

// serviceMonitor is the part of the prometheus-operator CRD the chart uses (not in k8s.io/api).
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port      string `json:"port"`
			Path      string `json:"path"`
			Interval  string `json:"interval"`
			Scheme    string `json:"scheme,omitempty"`
			TLSConfig *struct {
				InsecureSkipVerify bool `json:"insecureSkipVerify"`
			} `json:"tlsConfig,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// manifests holds one render, each document strictly decoded into its API type.
type manifests struct {
	deployment     *appsv1.Deployment
	service        *corev1.Service
	configMap      *corev1.ConfigMap
	secret         *corev1.Secret
	pdb            *policyv1.PodDisruptionBudget
	serviceMonitor *serviceMonitor
}

// decodeManifests validates every rendered document offline against the Kubernetes API types:
// unknown fields and wrong types are errors.
func decodeManifests(t *testing.T, rendered []byte) manifests {
	t.Helper()
	var m manifests
	for _, doc := range strings.Split(string(rendered), "\n---") {
		if strings.TrimSpace(strings.TrimPrefix(doc, "---")) == "" {
			continue
		}
		js, err := yaml.YAMLToJSONStrict([]byte(doc))
		if err != nil {
			t.Fatalf("not YAML: %v\n%s", err, doc)
		}
		var tm metav1.TypeMeta
		if err := json.Unmarshal(js, &tm); err != nil {
			t.Fatal(err)
		}
		var into any
		switch tm.APIVersion + "/" + tm.Kind {
		case "apps/v1/Deployment":
			m.deployment = &appsv1.Deployment{}
			into = m.deployment
		case "v1/Service":
			m.service = &corev1.Service{}
			into = m.service
		case "v1/ConfigMap":
			m.configMap = &corev1.ConfigMap{}
			into = m.configMap
		case "v1/Secret":
			m.secret = &corev1.Secret{}
			into = m.secret
		case "policy/v1/PodDisruptionBudget":
			m.pdb = &policyv1.PodDisruptionBudget{}
			into = m.pdb
		case "monitoring.coreos.com/v1/ServiceMonitor":
			m.serviceMonitor = &serviceMonitor{}
			into = m.serviceMonitor
		default:
			t.Fatalf("unexpected kind %s %s", tm.APIVersion, tm.Kind)
		}
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.DisallowUnknownFields()
		if err := dec.Decode(into); err != nil {
			t.Fatalf("%s %s does not decode strictly: %v\n%s", tm.APIVersion, tm.Kind, err, doc)
		}
	}
	if m.deployment == nil || m.service == nil || m.configMap == nil || m.secret == nil {
		t.Fatalf("missing manifests: %+v", m)
	}
	return m
}

// checkPod checks what every render must have: probes, security, the config icebox loads.
func checkPod(t *testing.T, m manifests) {
	t.Helper()
	spec := m.deployment.Spec.Template.Spec
	c := spec.Containers[0]
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("probes: readiness %+v, liveness %+v", c.ReadinessProbe, c.LivenessProbe)
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) != 1 || sc.Capabilities.Add[0] != "NET_BIND_SERVICE" {
		t.Errorf("container security context: %+v", sc)
	}
	// Root only on the node's network with a port below 1024 (no other way to bind it there),
	// and then with NET_BIND_SERVICE alone (checked above).
	rootOnNode := func(psc *corev1.PodSecurityContext) bool {
		return spec.HostNetwork && psc.RunAsUser != nil && *psc.RunAsUser == 0
	}
	if psc := spec.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || (!*psc.RunAsNonRoot && !rootOnNode(psc)) {
		t.Errorf("pod security context: %+v", psc)
	}
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Fatalf("no preStop sleep: %+v", c.Lifecycle)
	}
	// The grace period covers the preStop wait, the drain and the shutdown timeout.
	drain, timeout := defaultShutdown(t)
	if want := c.Lifecycle.PreStop.Sleep.Seconds + int64((drain + timeout).Seconds()); spec.TerminationGracePeriodSeconds == nil || *spec.TerminationGracePeriodSeconds <= want {
		t.Errorf("terminationGracePeriodSeconds %v, want more than %d", spec.TerminationGracePeriodSeconds, want)
	}
	// The rendered configuration is one icebox accepts as the pod runs it: every volume the
	// container mounts is a directory here holding what the kubelet would put there (the
	// ConfigMap's files, the Secret's keys with the test's values, a test certificate), and the
	// arguments and environment point into them.
	secretValues := map[string]string{
		"turn-secrets": "from-the-secret", "auth-tokens": "k1,k2",
		"jwt-secret": "0123456789abcdef0123456789abcdef", "redis-url": "redis://redis:6379/0",
	}
	cert, key := turntest.CertificateFiles(t)
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	var mounted []string // mountPath, local dir
	for _, vm := range c.VolumeMounts {
		if vm.SubPath != "" && (vm.Name == "config" || volumes[vm.Name].Secret != nil) {
			t.Errorf("volume %s mounted with subPath: the kubelet never updates it, so a reload cannot see a change", vm.Name)
		}
		dir := t.TempDir()
		v := volumes[vm.Name]
		switch {
		case v.ConfigMap != nil:
			for name, content := range m.configMap.Data {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
		case v.Secret != nil && vm.Name == "tls":
			copyFile(t, cert, filepath.Join(dir, "tls.crt"))
			copyFile(t, key, filepath.Join(dir, "tls.key"))
		case v.Secret != nil:
			for name, content := range secretValues {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
		mounted = append(mounted, vm.MountPath+"/", dir+"/")
	}
	inPod := strings.NewReplacer(mounted...)
	if len(c.Args) != 3 || c.Args[0] != "serve" || c.Args[1] != "--config" {
		t.Fatalf("args %v, want serve --config FILE", c.Args)
	}
	file := inPod.Replace(c.Args[2])
	if rendered, err := os.ReadFile(file); err != nil {
		t.Fatalf("the config file %s is not in a mounted volume: %v", c.Args[2], err)
	} else if err := os.WriteFile(file, []byte(inPod.Replace(string(rendered))), 0o600); err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			// Only what a reload need not see comes from the environment.
			if e.Name != "ICEBOX_SIGNALING_REDIS_URL" {
				t.Errorf("%s from a Secret by the environment: a running icebox never sees it change; mount the Secret and set %s_FILE", e.Name, e.Name)
			}
			env = append(env, e.Name+"="+secretValues[e.ValueFrom.SecretKeyRef.Key])
		case strings.HasSuffix(e.Name, "_FILE"):
			env = append(env, e.Name+"="+inPod.Replace(e.Value))
		default:
			t.Errorf("environment variable %s: not an icebox setting the test knows", e.Name)
		}
	}
	loadConfig(t, file, env...)
	// The credentials it mints are signed with the secret from the Secret.
	code, out, stderr := runBinary(t, cleanEnv(env...), "credentials", "--config", file, "--user", "u")
	var cred struct{ Username, Password string }
	if err := json.Unmarshal([]byte(out), &cred); code != 0 || err != nil {
		t.Fatalf("icebox credentials with the chart's configuration: exit %d, %v: %s", code, err, stderr)
	}
	mac := hmac.New(sha1.New, []byte("from-the-secret"))
	mac.Write([]byte(cred.Username))
	if cred.Password != base64.StdEncoding.EncodeToString(mac.Sum(nil)) {
		t.Errorf("the credential is not signed with the secret from the Secret: %+v", cred)
	}
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "ICEBOX_CREDENTIALS_SECRETS_FILE" }) {
		t.Errorf("ICEBOX_CREDENTIALS_SECRETS_FILE not set: %+v", c.Env)
	}
	if _, rolls := m.deployment.Spec.Template.Annotations["checksum/config"]; rolls {
		t.Errorf("a config change rolls the pods by default; icebox reloads it in place")
	}
}

func TestHelmChart(t *testing.T) {
	helm := tool(t, "helm")
	chart := filepath.Join(deployDir, "helm", "icebox")
	multi := filepath.Join(chart, "ci", "multi-node-values.yaml")
	for _, args := range [][]string{{chart}, {chart, "-f", multi}} {
		if out, err := exec.Command(helm, append([]string{"lint", "--strict", "--kube-version", "1.31.0"}, args...)...).CombinedOutput(); err != nil {
			t.Errorf("helm lint %v: %v\n%s", args[1:], err, out)
		}
	}

	t.Run("default", func(t *testing.T) {
		out, err := helmTemplate(t)
		if err != nil {
			t.Fatalf("helm template: %s", err.(*exec.ExitError).Stderr)
		}
		m := decodeManifests(t, out)
		checkPod(t, m)
		spec := m.deployment.Spec.Template.Spec
		if !spec.HostNetwork || *m.deployment.Spec.Replicas != 1 || m.service.Spec.Type != corev1.ServiceTypeClusterIP {
			t.Errorf("default: hostNetwork %v, replicas %d, service %s", spec.HostNetwork, *m.deployment.Spec.Replicas, m.service.Spec.Type)
		}
		if len(m.secret.Data["turn-secrets"]) < 32 {
			t.Errorf("the chart did not generate a TURN secret")
		}
		// Never an open credential endpoint: jwt with a key the chart made.
		if cfg := m.configMap.Data["icebox.yaml"]; !strings.Contains(cfg, "mode: jwt") || len(m.secret.Data["jwt-secret"]) < 32 {
			t.Errorf("default auth: want mode jwt and a generated key (%d bytes):\n%s", len(m.secret.Data["jwt-secret"]), cfg)
		}
		// The key from the chart's Secret, as a file the kubelet updates (secrets volume).
		jwtFromSecret := false
		for _, e := range m.deployment.Spec.Template.Spec.Containers[0].Env {
			if e.Name == "ICEBOX_AUTH_JWT_SECRET_FILE" && e.Value == "/etc/icebox/secrets/jwt-secret" {
				jwtFromSecret = true
			}
		}
		for _, v := range m.deployment.Spec.Template.Spec.Volumes {
			if v.Name == "secrets" && (v.Secret == nil || v.Secret.SecretName != m.secret.Name) {
				jwtFromSecret = false
			}
		}
		if !jwtFromSecret {
			t.Errorf("auth.jwt_secret does not come from the chart's Secret")
		}
		if _, err := helmTemplate(t, "--set", "config.auth.mode=none", "--set", "auth.allowOpen=true"); err != nil {
			t.Errorf("auth.allowOpen (a lab): %s", err.(*exec.ExitError).Stderr)
		}
		if m.serviceMonitor != nil {
			t.Errorf("a ServiceMonitor without serviceMonitor.enabled")
		}
	})

	t.Run("an existing Secret", func(t *testing.T) {
		out, err := helmTemplate(t, "--set", "secret.existingSecret=my-turn-secrets")
		if err != nil {
			t.Fatalf("helm template: %s", err.(*exec.ExitError).Stderr)
		}
		m := decodeManifests(t, out)
		checkPod(t, m) // the turn secrets from my-turn-secrets, mounted
		mounted := false
		for _, v := range m.deployment.Spec.Template.Spec.Volumes {
			mounted = mounted || (v.Secret != nil && v.Secret.SecretName == "my-turn-secrets")
		}
		if !mounted {
			t.Errorf("secret.existingSecret is not mounted: %+v", m.deployment.Spec.Template.Spec.Volumes)
		}
	})
	t.Run("several nodes", func(t *testing.T) {
		out, err := helmTemplate(t, "-f", multi)
		if err != nil {
			t.Fatalf("helm template: %s", err.(*exec.ExitError).Stderr)
		}
		m := decodeManifests(t, out)
		checkPod(t, m)
		if *m.deployment.Spec.Replicas != 3 || m.deployment.Spec.Template.Spec.HostNetwork {
			t.Errorf("replicas %d, hostNetwork %v", *m.deployment.Spec.Replicas, m.deployment.Spec.Template.Spec.HostNetwork)
		}
		if m.service.Spec.Type != corev1.ServiceTypeLoadBalancer || m.service.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
			t.Errorf("service %s, externalTrafficPolicy %s", m.service.Spec.Type, m.service.Spec.ExternalTrafficPolicy)
		}
		relay := 0
		for _, p := range m.service.Spec.Ports {
			if strings.HasPrefix(p.Name, "relay-") && p.Protocol == corev1.ProtocolUDP && p.Port >= 50000 && p.Port <= 50099 {
				relay++
			}
		}
		if relay != 100 {
			t.Errorf("relay ports on the load balancer: got %d, want 100", relay)
		}
		cfg := m.configMap.Data["icebox.yaml"]
		for _, want := range []string{"relay_port_min: 50000", "relay_port_max: 50099", "tls_cert: /etc/icebox/tls/tls.crt", "public_ip: 203.0.113.10"} {
			if !strings.Contains(cfg, want) {
				t.Errorf("the config lacks %q:\n%s", want, cfg)
			}
		}
		if m.serviceMonitor == nil || m.serviceMonitor.Spec.Endpoints[0].Path != "/metrics" {
			t.Errorf("serviceMonitor: %+v", m.serviceMonitor)
		}
		if m.pdb == nil {
			t.Errorf("no PodDisruptionBudget")
		}
		if c := m.deployment.Spec.Template.Spec.Containers[0]; c.ReadinessProbe.HTTPGet.Scheme != corev1.URISchemeHTTPS {
			t.Errorf("probes over %s with TLS on", c.ReadinessProbe.HTTPGet.Scheme)
		}
	})

	t.Run("edge with acme on the nodes", func(t *testing.T) {
		out, err := helmTemplate(t, "--set", "config.public_host=turn.example.com", "--set", "config.acme.enabled=true",
			"--set", "config.acme.email=ops@example.com", "--set", "config.acme.http_listen=:80",
			"--set", "config.edge.listen=:443", "--set", "config.edge.udp_listen=:443")
		if err != nil {
			t.Fatalf("helm template: %s", err.(*exec.ExitError).Stderr)
		}
		m := decodeManifests(t, out)
		checkPod(t, m)
		spec := m.deployment.Spec.Template.Spec
		c := spec.Containers[0]
		if psc := spec.SecurityContext; !spec.HostNetwork || psc.RunAsUser == nil || *psc.RunAsUser != 0 {
			t.Errorf("hostNetwork %v, pod security %+v: want uid 0 to bind 443 on the node", spec.HostNetwork, psc)
		}
		ports := map[string]string{}
		for _, p := range c.Ports {
			ports[p.Name] = fmt.Sprintf("%d/%s", p.ContainerPort, p.Protocol)
		}
		if ports["edge"] != "443/TCP" || ports["edge-udp"] != "443/UDP" || ports["acme-http"] != "80/TCP" {
			t.Errorf("container ports %v", ports)
		}
		if c.StartupProbe.HTTPGet.Path != "/healthz" {
			t.Errorf("startup probe on %s: a pod waiting for its certificate would be restarted", c.StartupProbe.HTTPGet.Path)
		}
		state := false
		for _, v := range spec.Volumes {
			state = state || (v.Name == "state" && v.HostPath != nil && v.HostPath.Path == "/var/lib/icebox")
		}
		if !state || !strings.Contains(m.configMap.Data["icebox.yaml"], "storage: /var/lib/icebox/acme") {
			t.Errorf("ACME state not kept on the node: volumes %+v\n%s", spec.Volumes, m.configMap.Data["icebox.yaml"])
		}
	})

	t.Run("edge behind a load balancer", func(t *testing.T) {
		out, err := helmTemplate(t, "--set", "mode=loadBalancer", "--set", "tls.existingSecret=icebox-tls",
			"--set", "config.edge.listen=:443", "--set", "config.edge.udp_listen=:443")
		if err != nil {
			t.Fatalf("helm template: %s", err.(*exec.ExitError).Stderr)
		}
		m := decodeManifests(t, out)
		checkPod(t, m)
		var edge []string
		for _, p := range m.service.Spec.Ports {
			if strings.HasPrefix(p.Name, "edge") {
				edge = append(edge, fmt.Sprintf("%s %d/%s->%s", p.Name, p.Port, p.Protocol, p.TargetPort.String()))
			}
		}
		if strings.Join(edge, ", ") != "edge 443/TCP->edge, edge-udp 443/UDP->edge-udp" {
			t.Errorf("edge ports on the load balancer: %v", edge)
		}
		psc := m.deployment.Spec.Template.Spec.SecurityContext
		if !*psc.RunAsNonRoot || len(psc.Sysctls) != 1 || psc.Sysctls[0].Name != "net.ipv4.ip_unprivileged_port_start" || psc.Sysctls[0].Value != "0" {
			t.Errorf("pod security %+v: want non-root binding 443 in its own network namespace", psc)
		}
	})

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"replicas without redis", []string{"--set", "replicaCount=2"}, "needs Redis"},
		{"edge without certificate", []string{"--set", "config.edge.listen=:443"}, "config.edge.listen needs a certificate"},
		{"acme behind a load balancer", []string{"--set", "mode=loadBalancer", "--set", "config.acme.enabled=true",
			"--set", "config.public_host=turn.example.com", "--set", "config.edge.listen=:443"}, "with mode loadBalancer"},
		{"acme without a name", []string{"--set", "config.acme.enabled=true", "--set", "config.edge.listen=:443"}, "needs config.public_host"},
		{"unknown mode", []string{"--set", "mode=nodePort"}, "at '/mode': value must be one of 'hostNetwork', 'loadBalancer'"},
		{"open relay", []string{"--set", "config.auth.mode=none"}, "anyone could take TURN credentials"},
		{"tokens without any", []string{"--set", "config.auth.mode=token"}, "needs auth.tokens"},
		{"wide relay range", []string{"--set", "mode=loadBalancer", "--set", "loadBalancer.relayPortMax=60000"}, "keep it between 1 and 1000"},
		{"tls without certificate", []string{"--set", "config.turn.tls_listen=:5349"}, "needs a certificate"},
		{"unreadable duration", []string{"--set", "config.shutdown.drain=1m30s"}, "is not a whole number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := helmTemplate(t, tc.args...)
			var ee *exec.ExitError
			if err == nil || !asExitError(err, &ee) || !strings.Contains(string(ee.Stderr), tc.want) {
				t.Errorf("got %v, want a failure saying %q", err, tc.want)
			}
		})
	}
}

func asExitError(err error, target **exec.ExitError) bool {
	ee, ok := err.(*exec.ExitError)
	if ok {
		*target = ee
	}
	return ok
}

// defaultShutdown is icebox's default shutdown.drain and shutdown.timeout.
func defaultShutdown(t *testing.T) (drain, timeout time.Duration) {
	t.Helper()
	defaults, _ := loadConfig(t, "")
	drain, err1 := time.ParseDuration(defaults.Shutdown.Drain)
	timeout, err2 := time.ParseDuration(defaults.Shutdown.Timeout)
	if err1 != nil || err2 != nil {
		t.Fatalf("shutdown defaults %+v", defaults.Shutdown)
	}
	return drain, timeout
}

// TestHelmSchemaRefusesTypos: helm refuses, at render time, a typo in icebox's keys under config
// and in the chart's own values (values.schema.json; cmd/icebox's TestHelmSchema keeps it in
// step with icebox's keys), so it never becomes a pod in CrashLoopBackOff.
func TestHelmSchemaRefusesTypos(t *testing.T) {
	for _, bad := range []struct{ set, want string }{
		{"config.turn.relam=x", "relam"},
		{"config.turn.user_quota=many", "user_quota"},
		{"mode=hostnetwork", "mode"},
		{"replicaCount=-1", "replicaCount"},
		{"config.credentials.secrets[0]=in-a-configmap", "secrets"},
	} {
		_, err := helmTemplate(t, "--set", bad.set)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || !strings.Contains(string(exit.Stderr), bad.want) {
			t.Errorf("helm template --set %s: %v, want a schema error naming %s", bad.set, err, bad.want)
		}
	}
}
