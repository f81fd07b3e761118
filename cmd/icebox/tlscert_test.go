package main

import (
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/icebox-rtc/icebox/stunturn/turntest"
	"time"
)

func TestCertReload(t *testing.T) {
	certFile, keyFile := turntest.CertificateFiles(t)
	loaded, err := loadCertFiles(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	r := newCertReloader(certFile, keyFile, loaded, slog.New(slog.NewTextHandler(io.Discard, nil)))
	first, _ := r.GetCertificate(nil)

	// A renewal that does not parse keeps the certificate in service.
	if err := os.WriteFile(certFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	bumpMtime(t, certFile)
	r.checked = time.Time{}
	if got, _ := r.GetCertificate(nil); got != first {
		t.Fatalf("a broken renewal replaced the certificate")
	}

	// A good renewal is picked up at the next check, without a restart.
	newCert, newKey := turntest.CertificateFiles(t)
	copyFile(t, newCert, certFile)
	copyFile(t, newKey, keyFile)
	bumpMtime(t, certFile)
	r.checked = time.Time{}
	got, _ := r.GetCertificate(nil)
	if got == first || string(got.Certificate[0]) == string(first.Certificate[0]) {
		t.Fatalf("the renewed certificate was not picked up")
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// bumpMtime moves the file's modification time forward, as a renewal a second later would.
func bumpMtime(t *testing.T, path string) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	when := st.ModTime().Add(time.Duration(time.Now().UnixNano()%1000+1) * time.Second)
	if err := os.Chtimes(path, when, when); err != nil {
		t.Fatal(err)
	}
}
