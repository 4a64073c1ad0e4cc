// Package libvirtconn keeps one go-libvirt connection per libvirt URL and
// credentials, shared by the hypervisor driver (domains) and the storage
// driver (pools and volumes) of the same worker.
//
// URLs are libvirt's own: qemu:///system, lxc:///, xen:/// and
// test:///default over the local socket (/var/run/libvirt/libvirt-sock, or
// ?socket=PATH), qemu+tcp://host[:port]/system (plain TCP, port 16509),
// qemu+tls://host[:port]/system (port 16514; ?pkipath=DIR, ?no_verify=1),
// qemu+ssh://[user@]host[:port]/system (SSH to the host, then its libvirt
// socket; ?keyfile=, ?socket=, ?known_hosts=, ?no_verify=1). The libvirt URI
// opened on the far side is the URL without its transport and host
// (qemu+ssh://h/system opens qemu:///system), or ?name=URI.
//
// A connection that dropped (libvirtd restarted, network cut) is noticed by
// the next Get, which dials again. Errors wrap hypervisor.ErrUnreachable
// (connection failures) or hypervisor.ErrInvalid (a URL that cannot work).
package libvirtconn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket"
	"github.com/digitalocean/go-libvirt/socket/dialers"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// DefaultSocket is libvirtd's read-write socket on the local machine.
const DefaultSocket = "/var/run/libvirt/libvirt-sock"

// DefaultDialTimeout bounds one dial when the context has no earlier deadline.
const DefaultDialTimeout = 15 * time.Second

// Target is a parsed libvirt URL: how to reach libvirtd and which of its
// drivers to open.
type Target struct {
	Driver    string // qemu, lxc, xen, test
	Transport string // unix, tcp, tls, ssh
	Host      string // host name or address; "" for unix
	Port      string // "" for the transport's default
	User      string // from the URL (ssh)
	Query     url.Values
	RemoteURI string // what ConnectToURI opens on libvirtd, e.g. qemu:///system
}

// drivers are the libvirt drivers Nimbus opens.
var drivers = map[string]bool{"qemu": true, "lxc": true, "xen": true, "test": true}

// Parse checks a libvirt URL and says how it will be reached. Bad URLs fail
// with hypervisor.ErrInvalid.
func Parse(raw string) (Target, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return Target{}, hypervisor.NewError(hypervisor.ErrInvalid, "libvirt url %q: %v", Redact(raw), err)
	}
	scheme := strings.ToLower(u.Scheme)
	driver, transport, _ := strings.Cut(scheme, "+")
	if !drivers[driver] {
		return Target{}, hypervisor.NewError(hypervisor.ErrInvalid,
			"libvirt url %q: scheme %q is not one of qemu, lxc, xen, test (with +tcp, +tls, +ssh or +unix)", Redact(raw), u.Scheme)
	}
	switch transport {
	case "":
		// As libvirt does: a host without a transport means TLS.
		transport = "unix"
		if u.Host != "" {
			transport = "tls"
		}
	case "unix", "tcp", "tls", "ssh":
	case "libssh", "libssh2":
		transport = "ssh"
	default:
		return Target{}, hypervisor.NewError(hypervisor.ErrInvalid,
			"libvirt url %q: transport %q is not one of tcp, tls, ssh, unix", Redact(raw), transport)
	}
	t := Target{Driver: driver, Transport: transport, Host: u.Hostname(), Port: u.Port(), Query: u.Query()}
	if u.User != nil {
		t.User = u.User.Username()
	}
	if transport == "unix" && t.Host != "" {
		return Target{}, hypervisor.NewError(hypervisor.ErrInvalid, "libvirt url %q: a unix socket url names no host", Redact(raw))
	}
	if transport != "unix" && t.Host == "" {
		return Target{}, hypervisor.NewError(hypervisor.ErrInvalid, "libvirt url %q: %s needs a host", Redact(raw), transport)
	}
	if t.Port != "" {
		if p, err := strconv.Atoi(t.Port); err != nil || p <= 0 || p > 65535 {
			return Target{}, hypervisor.NewError(hypervisor.ErrInvalid, "libvirt url %q: bad port %q", Redact(raw), t.Port)
		}
	}
	path := u.Path
	if path == "" {
		path = "/"
	}
	if driver == "qemu" && path != "/system" && path != "/session" {
		return Target{}, hypervisor.NewError(hypervisor.ErrInvalid, "libvirt url %q: qemu urls end in /system (or /session)", Redact(raw))
	}
	t.RemoteURI = (&url.URL{Scheme: driver, Path: path}).String()
	if name := t.Query.Get("name"); name != "" {
		t.RemoteURI = name
	}
	return t, nil
}

// Redact returns the URL without a password, for errors and logs.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// dialer builds go-libvirt's dialer for the target. user and password (the
// host's credentials in the inventory) are for SSH; a user in the URL wins.
func (t Target) dialer(user, password string, timeout time.Duration) (socket.Dialer, error) {
	q := t.Query
	switch t.Transport {
	case "unix":
		sock := q.Get("socket")
		if sock == "" {
			sock = DefaultSocket
		}
		return dialers.NewLocal(dialers.WithSocket(sock), dialers.WithLocalTimeout(timeout)), nil
	case "tcp":
		opts := []dialers.RemoteOption{dialers.WithRemoteTimeout(timeout)}
		if t.Port != "" {
			opts = append(opts, dialers.UsePort(t.Port))
		}
		return dialers.NewRemote(t.Host, opts...), nil
	case "tls":
		var opts []dialers.TLSOption
		if t.Port != "" {
			opts = append(opts, dialers.UseTLSPort(t.Port))
		}
		if p := q.Get("pkipath"); p != "" {
			opts = append(opts, dialers.UsePKIPath(p))
		}
		if nv := q.Get("no_verify"); nv != "" && nv != "0" {
			opts = append(opts, dialers.WithInsecureNoVerify())
		}
		return dialers.NewTLS(t.Host, opts...), nil
	case "ssh":
		if t.User != "" {
			user = t.User
		}
		if user == "" {
			// CloudStack adds KVM hosts as root over SSH.
			user = "root"
		}
		opts := []dialers.SSHOption{dialers.UseSSHUsername(user), dialers.UseSSHPassword(password)}
		if t.Port != "" {
			opts = append(opts, dialers.UseSSHPort(t.Port))
		}
		if s := q.Get("socket"); s != "" {
			opts = append(opts, dialers.WithRemoteSocket(s))
		}
		if k := q.Get("keyfile"); k != "" {
			opts = append(opts, dialers.UseKeyFile(k))
		}
		known := q.Get("known_hosts")
		if known == "" {
			if home, err := os.UserHomeDir(); err == nil {
				known = filepath.Join(home, ".ssh", "known_hosts")
			}
		}
		if known != "" {
			opts = append(opts, dialers.UseKnownHostsFile(known))
		}
		// Trust on first use: a new host's key is recorded, a changed key
		// is refused. no_verify=1 (or known_hosts_verify=ignore) skips the
		// check; known_hosts_verify=normal refuses unknown hosts.
		switch {
		case q.Get("no_verify") != "" && q.Get("no_verify") != "0", q.Get("known_hosts_verify") == "ignore":
			opts = append(opts, dialers.WithInsecureIgnoreHostKey())
		case q.Get("known_hosts_verify") == "normal":
		default:
			opts = append(opts, dialers.WithAcceptUnknownHostKey())
		}
		return dialers.NewSSH(t.Host, opts...), nil
	}
	return nil, hypervisor.NewError(hypervisor.ErrInvalid, "libvirt transport %q", t.Transport)
}

// Pool holds live connections keyed by URL and credentials. Its methods
// are safe for concurrent use; one go-libvirt connection serves concurrent
// calls.
type Pool struct {
	mu     sync.Mutex
	conns  map[string]*entry
	closed bool
}

type entry struct {
	mu  sync.Mutex // held while dialing, so one Get dials and the others wait
	url string
	l   *libvirt.Libvirt
}

// NewPool returns an empty pool.
func NewPool() *Pool { return &Pool{conns: map[string]*entry{}} }

// Default is the process-wide pool the hypervisor and storage drivers share.
var Default = NewPool()

// Get returns a connection from the process-wide pool; see Pool.Get.
func Get(ctx context.Context, rawURL, user, password string) (*libvirt.Libvirt, error) {
	return Default.Get(ctx, rawURL, user, password)
}

func key(rawURL, user, password string) string {
	return strings.TrimSpace(rawURL) + "\x00" + user + "\x00" + password
}

// Get returns the live connection for the URL and credentials, dialing it
// the first time and again after it dropped. Connection failures wrap
// hypervisor.ErrUnreachable, bad URLs hypervisor.ErrInvalid.
func (p *Pool) Get(ctx context.Context, rawURL, user, password string) (*libvirt.Libvirt, error) {
	t, err := Parse(rawURL)
	if err != nil {
		return nil, err
	}
	k := key(rawURL, user, password)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, hypervisor.NewError(hypervisor.ErrUnreachable, "libvirt %s: connection pool closed", Redact(rawURL))
	}
	e := p.conns[k]
	if e == nil {
		e = &entry{url: rawURL}
		p.conns[k] = e
	}
	p.mu.Unlock()

	e.mu.Lock()
	defer e.mu.Unlock()
	if e.l != nil && e.l.IsConnected() {
		return e.l, nil
	}
	e.l = nil
	l, err := dial(ctx, t, rawURL, user, password)
	if err != nil {
		return nil, err
	}
	e.l = l
	return l, nil
}

// dial connects and opens the target's libvirt URI, within ctx.
func dial(ctx context.Context, t Target, rawURL, user, password string) (*libvirt.Libvirt, error) {
	timeout := DefaultDialTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	d, err := t.dialer(user, password, timeout)
	if err != nil {
		return nil, err
	}
	l := libvirt.NewWithDialer(d)
	done := make(chan error, 1)
	// go-libvirt's handshake takes no context: run it aside, and if ctx
	// ends first, let it finish and close what it opened.
	go func() { done <- l.ConnectToURI(libvirt.ConnectURI(t.RemoteURI)) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		go func() {
			if <-done == nil {
				_ = l.Disconnect()
			}
		}()
		return nil, hypervisor.NewError(hypervisor.ErrUnreachable, "libvirt %s: connect: %w", Redact(rawURL), ctx.Err())
	}
	if err != nil {
		kind := hypervisor.ErrUnreachable
		var le libvirt.Error
		// libvirtd answered but refuses the URI (no such driver, denied):
		// retrying will not help.
		if errors.As(err, &le) && (le.Code == uint32(libvirt.ErrNoConnect) || le.Code == uint32(libvirt.ErrAuthFailed) ||
			le.Code == uint32(libvirt.ErrNoSupport) || le.Code == uint32(libvirt.ErrAccessDenied)) {
			kind = hypervisor.ErrInvalid
		}
		return nil, hypervisor.NewError(kind, "libvirt %s: connect %s: %w", Redact(rawURL), t.RemoteURI, err)
	}
	return l, nil
}

// Drop closes and forgets the connections to a URL (any credentials), so
// the next Get dials afresh; DisconnectHost and a call that timed out on a
// hung libvirtd use it.
func (p *Pool) Drop(rawURL string) {
	prefix := strings.TrimSpace(rawURL) + "\x00"
	p.mu.Lock()
	var drop []*entry
	for k, e := range p.conns {
		if strings.HasPrefix(k, prefix) {
			drop = append(drop, e)
			delete(p.conns, k)
		}
	}
	p.mu.Unlock()
	for _, e := range drop {
		e.close()
	}
}

func (e *entry) close() {
	e.mu.Lock()
	l := e.l
	e.l = nil
	e.mu.Unlock()
	if l != nil && l.IsConnected() {
		// Disconnect waits for libvirtd's answer: do not hold anyone up
		// on a hung daemon.
		go func() { _ = l.Disconnect() }()
	}
}

// Close closes every connection; later Gets fail.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = map[string]*entry{}
	p.mu.Unlock()
	for _, e := range conns {
		e.close()
	}
	return nil
}

// Do runs one libvirt call within ctx: go-libvirt's calls take no context
// and would wait forever on a hung libvirtd. When ctx ends first, the
// connection is dropped from the pool (a later Get redials) and the error
// wraps hypervisor.ErrUnreachable.
func Do[T any](ctx context.Context, p *Pool, rawURL string, fn func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := fn()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		if p != nil {
			p.Drop(rawURL)
		}
		var zero T
		return zero, hypervisor.NewError(hypervisor.ErrUnreachable, "libvirt %s: %w", Redact(rawURL), ctx.Err())
	}
}

// Kind maps a libvirt error to a hypervisor error kind (ErrNotFound,
// ErrInvalid, ErrNotSupported, ErrUnreachable), or nil when it has none.
func Kind(err error) error {
	if err == nil {
		return nil
	}
	for _, k := range []error{hypervisor.ErrNotFound, hypervisor.ErrNotSupported, hypervisor.ErrInvalid,
		hypervisor.ErrCapacity, hypervisor.ErrUnreachable} {
		if errors.Is(err, k) {
			return k
		}
	}
	var le libvirt.Error
	if errors.As(err, &le) {
		switch libvirt.ErrorNumber(le.Code) {
		case libvirt.ErrNoDomain, libvirt.ErrNoStoragePool, libvirt.ErrNoStorageVol, libvirt.ErrNoNetwork,
			libvirt.ErrNoDomainSnapshot, libvirt.ErrNoSecret, libvirt.ErrNoDomainMetadata, libvirt.ErrNoNodeDevice,
			libvirt.ErrNoInterface, libvirt.ErrDeviceMissing, libvirt.ErrNoNetworkPort:
			return hypervisor.ErrNotFound
		case libvirt.ErrNoSupport, libvirt.ErrOperationUnsupported, libvirt.ErrArgumentUnsupported,
			libvirt.ErrConfigUnsupported:
			return hypervisor.ErrNotSupported
		case libvirt.ErrInvalidArg, libvirt.ErrXMLError, libvirt.ErrXMLDetail, libvirt.ErrXMLInvalidSchema,
			libvirt.ErrDomExist, libvirt.ErrOperationInvalid, libvirt.ErrStorageVolExist, libvirt.ErrNetworkExist,
			libvirt.ErrInvalidMac, libvirt.ErrCPUIncompatible, libvirt.ErrMigrateUnsafe, libvirt.ErrOperationDenied,
			libvirt.ErrAccessDenied, libvirt.ErrAuthFailed:
			return hypervisor.ErrInvalid
		case libvirt.ErrNoConnect, libvirt.ErrInvalidConn, libvirt.ErrRPC, libvirt.ErrOperationTimeout,
			libvirt.ErrAgentUnresponsive, libvirt.ErrNoServer, libvirt.ErrNoClient:
			return hypervisor.ErrUnreachable
		}
		return nil
	}
	// Transport failures: the socket went away under the call.
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, libvirt.ErrInterrupted) || errors.Is(err, net.ErrClosed) {
		return hypervisor.ErrUnreachable
	}
	return nil
}

// Code returns the libvirt error number of err, or -1 when it is not a
// libvirt error.
func Code(err error) int {
	var le libvirt.Error
	if errors.As(err, &le) {
		return int(le.Code)
	}
	return -1
}

// Wrap returns err as a hypervisor.OpError of the kind Kind finds.
func Wrap(driver, op, target string, err error) error {
	if err == nil {
		return nil
	}
	var oe *hypervisor.OpError
	if errors.As(err, &oe) {
		return err
	}
	return &hypervisor.OpError{Driver: driver, Op: op, Target: target, Kind: Kind(err), Err: err}
}

// String names the target for messages.
func (t Target) String() string {
	if t.Host == "" {
		return t.RemoteURI
	}
	addr := t.Host
	if t.Port != "" {
		addr = net.JoinHostPort(t.Host, t.Port)
	}
	return fmt.Sprintf("%s via %s://%s", t.RemoteURI, t.Transport, addr)
}
