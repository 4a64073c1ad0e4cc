package vsphere

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/vmware/govmomi/vim25/soap"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// trust says how a vCenter's TLS certificate is verified. By default it
// must chain to a CA the worker trusts (the system's roots) and name the
// vCenter's host. A vCenter on a self-signed certificate (the rule) is
// trusted by its certificate's thumbprint or by its CA, given with the
// cluster's URL as query parameters, which Nimbus carries to the hosts it
// discovers and to the cluster's datastore pools:
//
//	https://vcenter/DC/cluster?thumbprint=<SHA-256 or SHA-1, hex>
//	https://vcenter/DC/cluster?cafile=/etc/nimbus/vcenter-ca.pem
//	https://vcenter/DC/cluster?insecure=true   (no verification at all)
//
// The thumbprint is what `openssl x509 -fingerprint -sha256` prints (colons
// and case do not matter); the CA file is read on every worker.
type trust struct {
	Thumbprint string // AA:BB:..., upper case: soap.Client's form
	CAFile     string
	Insecure   bool
}

// trustParams are the URL query parameters trust reads.
var trustParams = []string{"thumbprint", "cafile", "insecure"}

// parseTrust reads trust from a URL's query.
func parseTrust(u *url.URL) (trust, error) {
	q := u.Query()
	var t trust
	if v := q.Get("insecure"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return t, hypervisor.NewError(hypervisor.ErrInvalid, "url %q: insecure=%q: want true or false", u.Redacted(), v)
		}
		t.Insecure = b
	}
	if v := q.Get("thumbprint"); v != "" {
		tp, err := normalThumbprint(v)
		if err != nil {
			return t, hypervisor.NewError(hypervisor.ErrInvalid, "url %q: thumbprint %q: %v", u.Redacted(), v, err)
		}
		t.Thumbprint = tp
	}
	t.CAFile = q.Get("cafile")
	return t, nil
}

// normalThumbprint turns a SHA-1 or SHA-256 thumbprint written with or
// without colons, in either case, into soap.Client's "AA:BB:..." form.
func normalThumbprint(s string) (string, error) {
	h := strings.ToLower(strings.NewReplacer(":", "", " ", "", "-", "").Replace(s))
	b, err := hex.DecodeString(h)
	if err != nil || (len(b) != 20 && len(b) != 32) {
		return "", errInvalidThumbprint
	}
	parts := make([]string, len(b))
	for i, x := range b {
		parts[i] = strings.ToUpper(hex.EncodeToString([]byte{x}))
	}
	return strings.Join(parts, ":"), nil
}

var errInvalidThumbprint = errors.New("want the hex SHA-256 (or SHA-1) of the certificate")

// client makes the SOAP client of an endpoint, verifying the certificate
// as its trust says.
func (e endpoint) client() (*soap.Client, error) {
	sc := soap.NewClient(e.URL, e.Insecure)
	if e.Thumbprint != "" {
		sc.SetThumbprint(e.URL.Host, e.Thumbprint)
		// The thumbprint checked during the one handshake: soap.Client
		// would first handshake against the system CAs, fail (a
		// self-signed vCenter), and dial again, two handshakes for every
		// new connection. The error keeps soap.Client's words, which
		// trustError recognises.
		host, want := e.URL.Host, e.Thumbprint
		cfg := sc.DefaultTransport().TLSClientConfig
		cfg.InsecureSkipVerify = true
		cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return fmt.Errorf("host %q sent no certificate", host)
			}
			cert, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			if soap.ThumbprintSHA256(cert) == want || soap.ThumbprintSHA1(cert) == want {
				return nil
			}
			return fmt.Errorf("host %q thumbprint does not match %q", host, want)
		}
	}
	if e.CAFile != "" {
		if err := sc.SetRootCAs(e.CAFile); err != nil {
			return nil, hypervisor.NewError(hypervisor.ErrInvalid, "vCenter %s: CA file %s: %v", e.URL.Host, e.CAFile, err)
		}
	}
	return sc, nil
}

// trustError explains a connection refused for the vCenter's certificate
// (nil for any other failure), with the certificate's SHA-256 thumbprint
// read without verifying it, for the operator to compare with vCenter's.
func (e endpoint) trustError(ctx context.Context, err error) error {
	mismatch := strings.Contains(err.Error(), "thumbprint does not match")
	if !mismatch && !soap.IsCertificateUntrusted(err) {
		return nil
	}
	seen := ""
	addr := e.URL.Host
	if e.URL.Port() == "" {
		addr = net.JoinHostPort(e.URL.Hostname(), "443")
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: &tls.Config{InsecureSkipVerify: true}}
	if conn, derr := d.DialContext(ctx, "tcp", addr); derr == nil {
		if certs := conn.(*tls.Conn).ConnectionState().PeerCertificates; len(certs) > 0 {
			seen = soap.ThumbprintSHA256(certs[0])
		}
		conn.Close()
	}
	if mismatch {
		return hypervisor.NewError(hypervisor.ErrInvalid, "vCenter %s: its TLS certificate does not match thumbprint %s (the certificate it presents has SHA-256 thumbprint %s): check the cluster URL's thumbprint",
			e.URL.Host, e.Thumbprint, seen)
	}
	return hypervisor.NewError(hypervisor.ErrInvalid, "vCenter %s: its TLS certificate is not trusted (%v); give its thumbprint (the certificate it presents has SHA-256 thumbprint %s) as ?thumbprint=... in the cluster URL, or its CA as ?cafile=..., or ?insecure=true to skip verification",
		e.URL.Host, err, seen)
}
