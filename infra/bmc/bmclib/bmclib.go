// Package bmclib is the BMC driver for real machines, over
// github.com/bmc-toolbox/bmclib/v2: IPMI through its ipmitool provider and
// Redfish through its gofish provider. A client is opened for the one
// provider the BMC's address names (so bmclib never falls back to guessing
// another protocol) and kept in a session cache per BMC (see sessions.go):
// the next call to the same BMC reuses it until it sat idle for the idle
// timeout, failed (it is dropped and reopened), or the driver closed.
//
// Power changes are confirmed, not assumed: after the command the driver
// reads the power state back until it is what was asked for, or fails
// after the power timeout (default 30s; Config.Options["power_timeout"],
// or a BMC's Details["power_timeout"], as a Go duration or seconds) with an
// error naming the state the BMC still reports.
//
// Errors wrap the kinds of package bmc: a BMC that rejects the username or
// password is ErrInvalid; one that does not answer (no IPMI ping reply,
// Redfish connection refused or timed out) is ErrUnreachable; a power
// change that never takes effect is ErrUnreachable too (the machine does
// not do what its BMC was told) with the reason spelled out.
//
// Addresses: ipmi://HOST[:PORT] (default 623), redfish://HOST[:PORT]
// (HTTPS, default 443), redfish+http://HOST[:PORT] (plain HTTP, for test
// rigs), https://HOST[:PORT], or a bare HOST[:PORT] for the driver's own
// protocol.
package bmclib

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bmclib "github.com/bmc-toolbox/bmclib/v2"
	"github.com/bmc-toolbox/common"

	"github.com/nimbus-cloud/nimbus/infra/bmc"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

var _ bmc.Driver = (*Driver)(nil)

func init() {
	bmc.Register(bmc.ProviderIPMI, func(cfg bmc.Config) (bmc.Driver, error) { return New(bmc.ProviderIPMI, cfg) })
	bmc.Register(bmc.ProviderRedfish, func(cfg bmc.Config) (bmc.Driver, error) { return New(bmc.ProviderRedfish, cfg) })
}

// Defaults; Config.Options override them.
const (
	DefaultPowerTimeout = 30 * time.Second
	DefaultCallTimeout  = 30 * time.Second
	DefaultSessionIdle  = 2 * time.Minute
	defaultPoll         = time.Second
)

// Driver is one provider's BMC driver.
type Driver struct {
	bmc.Unsupported
	provider     string // ipmi or redfish
	powerTimeout time.Duration
	callTimeout  time.Duration
	poll         time.Duration
	ipmitool     string // path of ipmitool; "" = from PATH
	cipher       string // IPMI cipher suite
	sessions     *sessionCache
}

// New builds the driver of provider "ipmi" or "redfish". Options:
// power_timeout, call_timeout (per BMC request), poll (read-back
// interval), ipmitool (its path), ipmi_cipher (cipher suite, default 3:
// without one ipmitool tries suites in turn and each miss costs seconds),
// session_idle (how long an unused BMC session stays open, default 2m;
// "0" opens a session per call).
func New(provider string, cfg bmc.Config) (*Driver, error) {
	p, err := bmc.Canonical(provider)
	if err != nil {
		return nil, err
	}
	if p != bmc.ProviderIPMI && p != bmc.ProviderRedfish {
		return nil, hypervisor.NewError(bmc.ErrInvalid, "bmclib driver: provider %s is not ipmi or redfish", p)
	}
	d := &Driver{Unsupported: bmc.Unsupported{DriverName: p}, provider: p, powerTimeout: DefaultPowerTimeout,
		callTimeout: DefaultCallTimeout, poll: defaultPoll, ipmitool: cfg.Options["ipmitool"], cipher: "3"}
	idle := DefaultSessionIdle
	if v := cfg.Options["session_idle"]; v == "0" || v == "off" {
		idle = 0
	} else if v != "" {
		dur, err := parseDuration(v)
		if err != nil {
			return nil, hypervisor.NewError(bmc.ErrInvalid, "bmclib driver option session_idle=%q: %v", v, err)
		}
		idle = dur
	}
	d.sessions = newSessionCache(idle)
	for name, dst := range map[string]*time.Duration{"power_timeout": &d.powerTimeout, "call_timeout": &d.callTimeout, "poll": &d.poll} {
		if v := cfg.Options[name]; v != "" {
			dur, err := parseDuration(v)
			if err != nil {
				return nil, hypervisor.NewError(bmc.ErrInvalid, "bmclib driver option %s=%q: %v", name, v, err)
			}
			*dst = dur
		}
	}
	if v := cfg.Options["ipmi_cipher"]; v != "" {
		d.cipher = v
	}
	return d, nil
}

// parseDuration reads "90s", "2m" or a plain number of seconds.
func parseDuration(v string) (time.Duration, error) {
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		if n <= 0 {
			return 0, errors.New("must be positive")
		}
		return time.Duration(n * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(v)
	if err == nil && d <= 0 {
		return 0, errors.New("must be positive")
	}
	return d, err
}

// Provider is "ipmi" or "redfish".
func (d *Driver) Provider() string { return d.provider }

// target is where and how a BMC is reached.
type target struct {
	host   string // host name or address
	port   string
	scheme string // redfish: https or http
}

func (t target) String() string { return net.JoinHostPort(t.host, t.port) }

// parseAddress reads a BMC address for this driver's protocol.
func (d *Driver) parseAddress(addr string) (target, error) {
	addr = strings.TrimSpace(addr)
	if addr == "" {
		return target{}, hypervisor.NewError(bmc.ErrInvalid, "no bmc address")
	}
	t := target{scheme: "https", port: "443"}
	if d.provider == bmc.ProviderIPMI {
		t.scheme, t.port = "", "623"
	}
	hostport := addr
	if scheme, _, ok := strings.Cut(addr, "://"); ok {
		u, err := url.Parse(addr)
		if err != nil {
			return target{}, hypervisor.NewError(bmc.ErrInvalid, "bmc address %q: %v", addr, err)
		}
		switch strings.ToLower(scheme) {
		case "ipmi", "ipmitool", "ipmi2", "lanplus":
			if d.provider != bmc.ProviderIPMI {
				return target{}, hypervisor.NewError(bmc.ErrInvalid, "bmc address %q is an IPMI address, not %s", addr, d.provider)
			}
		case "redfish", "https":
			if d.provider != bmc.ProviderRedfish {
				return target{}, hypervisor.NewError(bmc.ErrInvalid, "bmc address %q is a Redfish address, not %s", addr, d.provider)
			}
		case "redfish+http", "http":
			if d.provider != bmc.ProviderRedfish {
				return target{}, hypervisor.NewError(bmc.ErrInvalid, "bmc address %q is a Redfish address, not %s", addr, d.provider)
			}
			t.scheme, t.port = "http", "80"
		default:
			return target{}, hypervisor.NewError(bmc.ErrInvalid, "bmc address %q: unknown scheme %q (want ipmi://, redfish:// or https://)", addr, scheme)
		}
		hostport = u.Host
	}
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		t.host, t.port = h, p
	} else {
		t.host = strings.Trim(hostport, "[]")
	}
	if t.host == "" {
		return target{}, hypervisor.NewError(bmc.ErrInvalid, "bmc address %q names no host", addr)
	}
	if n, err := strconv.Atoi(t.port); err != nil || n <= 0 || n > 65535 {
		return target{}, hypervisor.NewError(bmc.ErrInvalid, "bmc address %q: bad port %q", addr, t.port)
	}
	return t, nil
}

// powerTimeoutOf is the read-back budget for one BMC.
func (d *Driver) powerTimeoutOf(b bmc.BMC) time.Duration {
	if v := b.Details["power_timeout"]; v != "" {
		if dur, err := parseDuration(v); err == nil {
			return dur
		}
	}
	return d.powerTimeout
}

// session is one opened bmclib client.
type session struct {
	d *Driver
	b bmc.BMC
	t target
	c *bmclib.Client

	key      sessionKey
	uncached bool
	mu       sync.Mutex // one operation at a time per client: bmclib keeps per-call metadata
	n        atomic.Int32
	once     sync.Once
}

func (s *session) enter()       { s.n.Add(1); s.mu.Lock() }
func (s *session) leave()       { s.mu.Unlock(); s.n.Add(-1) }
func (s *session) users() int32 { return s.n.Load() }

// open connects to the BMC with only this driver's bmclib provider.
func (d *Driver) open(ctx context.Context, op string, b bmc.BMC, t target) (*session, error) {
	opts := []bmclib.Option{bmclib.WithPerProviderTimeout(d.callTimeout)}
	host := t.host
	provider := "ipmitool"
	if d.provider == bmc.ProviderIPMI {
		opts = append(opts, bmclib.WithIpmitoolPort(t.port), bmclib.WithIpmitoolCipherSuite(d.cipher))
		if d.ipmitool != "" {
			opts = append(opts, bmclib.WithIpmitoolPath(d.ipmitool))
		}
	} else {
		provider = "gofish"
		host = t.scheme + "://" + t.host
		if strings.Contains(t.host, ":") {
			host = t.scheme + "://[" + t.host + "]"
		}
		opts = append(opts, bmclib.WithRedfishPort(t.port), bmclib.WithHTTPClient(d.httpClient(b)))
	}
	if d.provider == bmc.ProviderIPMI {
		// ipmitool retries a silent BMC for half a minute; a ping answers
		// in milliseconds whether anything is there.
		pctx, cancel := context.WithTimeout(ctx, min(d.callTimeout, 5*time.Second))
		err := ipmiPing(pctx, t.String())
		cancel()
		if err != nil {
			return nil, d.opError(op, b, hypervisor.NewError(bmc.ErrUnreachable, "the BMC at %s does not answer (no reply to an IPMI ping on udp %s)", t, t))
		}
	}
	c := bmclib.NewClient(host, b.Username, b.Password, opts...)
	// Only the named provider: bmclib would otherwise try every protocol
	// it knows against the address, and report the last one's failure.
	c.Registry.Drivers = c.Registry.For(provider)
	if len(c.Registry.Drivers) == 0 {
		// The ipmitool provider registers only when ipmitool is installed.
		return nil, d.opError(op, b, hypervisor.NewError(bmc.ErrNotSupported, "bmclib has no %s provider here (is ipmitool installed?)", provider))
	}
	octx, cancel := context.WithTimeout(ctx, d.callTimeout)
	defer cancel()
	if err := c.Open(octx); err != nil {
		return nil, d.opError(op, b, d.classify(ctx, t, err))
	}
	return &session{d: d, b: b, t: t, c: c}, nil
}

// close logs out (Redfish); a session closes once however often asked.
func (s *session) close() {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.c.Close(ctx)
	})
}

// httpClient is the Redfish HTTP client: TLS verification off only for a
// BMC marked insecure (self-signed certificates are the norm on BMCs, so
// Nimbus's BareMetal driver marks them so unless told otherwise).
func (d *Driver) httpClient(b bmc.BMC) *http.Client {
	jar, _ := cookiejar.New(nil)
	tr := &http.Transport{
		TLSClientConfig:       &tls.Config{InsecureSkipVerify: b.Insecure}, //nolint:gosec // per-BMC choice
		DisableKeepAlives:     true,
		DialContext:           (&net.Dialer{Timeout: d.callTimeout}).DialContext,
		TLSHandshakeTimeout:   d.callTimeout,
		ResponseHeaderTimeout: d.callTimeout,
	}
	return &http.Client{Transport: tr, Jar: jar, Timeout: d.callTimeout}
}

// opError wraps err as an OpError of this driver, keeping its kind.
func (d *Driver) opError(op string, b bmc.BMC, err error) error {
	var oe *hypervisor.OpError
	if errors.As(err, &oe) {
		return err
	}
	kind := error(nil)
	for _, k := range []error{bmc.ErrInvalid, bmc.ErrUnreachable, bmc.ErrNotSupported, bmc.ErrNotFound} {
		if errors.Is(err, k) {
			kind = k
			break
		}
	}
	if kind != nil {
		// The message already says what happened; the kind only classifies.
		return &hypervisor.OpError{Driver: d.provider, Op: op, Target: b.String(), Kind: kind, Err: errors.New(strings.TrimPrefix(err.Error(), kind.Error()+": "))}
	}
	return &hypervisor.OpError{Driver: d.provider, Op: op, Target: b.String(), Err: err}
}

// classify turns a bmclib failure into one of the error kinds: whether
// the BMC answers at all tells a wrong password from a dead BMC, since
// ipmitool says "Unable to establish IPMI v2 / RMCP+ session" for both.
func (d *Driver) classify(ctx context.Context, t target, err error) error {
	msg := flatten(err)
	if ctx.Err() != nil {
		return hypervisor.NewError(bmc.ErrUnreachable, "the BMC at %s did not answer in time: %v", t, ctx.Err())
	}
	if d.provider == bmc.ProviderIPMI {
		if strings.Contains(msg, "Unable to establish") || strings.Contains(msg, "session") ||
			strings.Contains(msg, "deadline exceeded") || strings.Contains(msg, "Insufficient privilege") {
			pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			if perr := ipmiPing(pctx, t.String()); perr != nil {
				return hypervisor.NewError(bmc.ErrUnreachable, "the BMC at %s does not answer (no reply to an IPMI ping on udp %s)", t, t)
			}
			return hypervisor.NewError(bmc.ErrInvalid, "the BMC at %s rejected the username or password (it answers IPMI pings but refused the session)", t)
		}
		return fmt.Errorf("%s", firstLine(msg))
	}
	switch {
	case strings.Contains(msg, "401") || strings.Contains(msg, "403") || strings.Contains(strings.ToLower(msg), "unauthorized"):
		return hypervisor.NewError(bmc.ErrInvalid, "the BMC at %s rejected the username or password (HTTP 401)", t)
	case strings.Contains(msg, "connection refused") || strings.Contains(msg, "no such host") || strings.Contains(msg, "i/o timeout") ||
		strings.Contains(msg, "Client.Timeout") || strings.Contains(msg, "deadline exceeded") || strings.Contains(msg, "connection reset") ||
		strings.Contains(msg, "EOF") || strings.Contains(msg, "no route to host"):
		return hypervisor.NewError(bmc.ErrUnreachable, "the BMC at %s does not answer: %s", t, firstLine(msg))
	}
	return fmt.Errorf("%s", firstLine(msg))
}

// flatten is an error's text on one line (bmclib's multierrors span many).
func flatten(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

func firstLine(s string) string {
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// normalize maps what a BMC says ("Chassis Power is on", "On", "Off",
// "PoweringOn") to a power state; a transition is PowerUnknown.
func normalize(raw string) bmc.PowerState {
	s := strings.ToLower(strings.TrimSpace(raw))
	switch {
	case s == "on" || strings.HasSuffix(s, " is on"):
		return bmc.PowerOn
	case s == "off" || strings.HasSuffix(s, " is off"):
		return bmc.PowerOff
	}
	return bmc.PowerUnknown
}

func (s *session) status(ctx context.Context) (bmc.PowerState, error) {
	cctx, cancel := context.WithTimeout(ctx, s.d.callTimeout)
	defer cancel()
	raw, err := s.c.GetPowerState(cctx)
	if err != nil {
		return bmc.PowerUnknown, s.d.classify(ctx, s.t, err)
	}
	return normalize(raw), nil
}

// set sends a power action ("on", "off", "soft", "cycle").
func (s *session) set(ctx context.Context, action string) error {
	cctx, cancel := context.WithTimeout(ctx, s.d.callTimeout)
	defer cancel()
	ok, err := s.c.SetPowerState(cctx, action)
	if err == nil && ok {
		return nil
	}
	// bmclib's gofish provider answers a graceful shutdown with "not ok"
	// and no error even when the BMC took it; the read-back decides.
	if action == "soft" && len(s.c.GetMetadata().FailedProviderDetail) == 0 {
		return nil
	}
	if err == nil {
		err = errors.New("the BMC did not accept the command")
	}
	return s.d.classify(ctx, s.t, err)
}

// waitFor reads the power state back until it is want, or fails after the
// power timeout saying what the BMC still reports.
func (s *session) waitFor(ctx context.Context, want bmc.PowerState, what string) error {
	budget := s.d.powerTimeoutOf(s.b)
	deadline := time.Now().Add(budget)
	last := bmc.PowerUnknown
	for {
		st, err := s.status(ctx)
		if err == nil {
			if st == want {
				return nil
			}
			last = st
		} else if errors.Is(err, bmc.ErrInvalid) {
			return err
		}
		if time.Now().After(deadline) {
			return hypervisor.NewError(bmc.ErrUnreachable, "%s did not take effect within %s: the BMC at %s still reports power %s", what, budget, s.t, last)
		}
		select {
		case <-ctx.Done():
			return hypervisor.NewError(bmc.ErrUnreachable, "%s: gave up waiting for power %s (the BMC at %s reports %s): %v", what, want, s.t, last, ctx.Err())
		case <-time.After(s.d.poll):
		}
	}
}

// PowerStatus reads the machine's power state.
func (d *Driver) PowerStatus(ctx context.Context, b bmc.BMC) (bmc.PowerState, error) {
	st := bmc.PowerUnknown
	err := d.with(ctx, "PowerStatus", b, func(s *session) (bool, error) {
		var err error
		if st, err = s.status(ctx); err != nil {
			return false, d.opError("PowerStatus", b, err)
		}
		return false, nil
	})
	if err != nil {
		return bmc.PowerUnknown, err
	}
	return st, nil
}

// PowerOn powers the machine on and waits until the BMC reports it on.
func (d *Driver) PowerOn(ctx context.Context, b bmc.BMC) error {
	return d.power(ctx, "PowerOn", b, "on", bmc.PowerOn, "power on")
}

// PowerOff powers the machine off (ACPI unless force) and waits until the
// BMC reports it off.
func (d *Driver) PowerOff(ctx context.Context, b bmc.BMC, force bool) error {
	if force {
		return d.power(ctx, "PowerOff", b, "off", bmc.PowerOff, "power off")
	}
	return d.power(ctx, "PowerOff", b, "soft", bmc.PowerOff, "graceful shutdown")
}

func (d *Driver) power(ctx context.Context, op string, b bmc.BMC, action string, want bmc.PowerState, what string) error {
	return d.with(ctx, op, b, func(s *session) (bool, error) {
		if st, err := s.status(ctx); err == nil && st == want {
			return false, nil
		}
		if err := s.set(ctx, action); err != nil {
			return false, d.opError(op, b, err)
		}
		if err := s.waitFor(ctx, want, what); err != nil {
			return true, d.opError(op, b, err)
		}
		return true, nil
	})
}

// PowerCycle powers a running machine off and on (a machine that is off
// is powered on) and waits until the BMC reports it on.
func (d *Driver) PowerCycle(ctx context.Context, b bmc.BMC) error {
	return d.with(ctx, "PowerCycle", b, func(s *session) (bool, error) {
		st, err := s.status(ctx)
		if err != nil {
			return false, d.opError("PowerCycle", b, err)
		}
		action, what := "cycle", "power cycle"
		if st == bmc.PowerOff {
			action, what = "on", "power on"
		}
		if err := s.set(ctx, action); err != nil {
			// A cycle that may have been sent is not sent twice.
			return action == "cycle", d.opError("PowerCycle", b, err)
		}
		if err := s.waitFor(ctx, bmc.PowerOn, what); err != nil {
			return true, d.opError("PowerCycle", b, err)
		}
		return true, nil
	})
}

// bootDevices maps Nimbus boot devices to bmclib's names.
var bootDevices = map[bmc.BootDevice]string{bmc.BootPXE: "pxe", bmc.BootDisk: "disk", bmc.BootCDROM: "cdrom", bmc.BootBIOS: "bios"}

// SetBootDevice sets the next (or every) boot device. Where the provider
// can read the override back (Redfish), it checks the BMC kept it.
func (d *Driver) SetBootDevice(ctx context.Context, b bmc.BMC, dev bmc.BootDevice, opts bmc.BootOptions) error {
	name, ok := bootDevices[dev]
	if !ok {
		return d.opError("SetBootDevice", b, hypervisor.NewError(bmc.ErrInvalid, "unknown boot device %q", dev))
	}
	return d.with(ctx, "SetBootDevice", b, func(s *session) (bool, error) {
		cctx, cancel := context.WithTimeout(ctx, d.callTimeout)
		defer cancel()
		done, err := s.c.SetBootDevice(cctx, name, opts.Persistent, opts.EFI)
		if err == nil && !done {
			err = errors.New("the BMC did not accept the boot device")
		}
		if err != nil {
			return false, d.opError("SetBootDevice", b, d.classify(ctx, s.t, err))
		}
		if d.provider == bmc.ProviderRedfish {
			got, err := s.c.GetBootDeviceOverride(cctx)
			if err != nil {
				return true, d.opError("SetBootDevice", b, d.classify(ctx, s.t, err))
			}
			if string(got.Device) != name || got.IsPersistent != opts.Persistent {
				return true, d.opError("SetBootDevice", b, hypervisor.NewError(bmc.ErrUnreachable,
					"the BMC at %s reports boot override %q (persistent %v) after being set to %q (persistent %v)", s.t, got.Device, got.IsPersistent, name, opts.Persistent))
			}
		}
		return true, nil
	})
}

// Inventory reads what bmclib's provider reports of the hardware: Redfish
// BMCs report vendor, model, serial, firmware, CPUs, DIMMs, NICs and
// drives; bmclib's ipmitool provider reports none (ErrNotSupported).
func (d *Driver) Inventory(ctx context.Context, b bmc.BMC) (bmc.Inventory, error) {
	if d.provider == bmc.ProviderIPMI {
		return bmc.Inventory{}, d.opError("Inventory", b, hypervisor.NewError(bmc.ErrNotSupported, "bmclib's ipmitool provider reads no hardware inventory"))
	}
	var inv bmc.Inventory
	err := d.with(ctx, "Inventory", b, func(s *session) (bool, error) {
		cctx, cancel := context.WithTimeout(ctx, 2*d.callTimeout)
		defer cancel()
		dev, err := s.c.Inventory(cctx)
		if err != nil {
			return false, d.opError("Inventory", b, d.classify(ctx, s.t, err))
		}
		inv = inventoryOf(dev)
		return false, nil
	})
	return inv, err
}

// ChangePassword sets a new password for the BMC user b.Username on the
// BMC itself. bmclib can do it over Redfish (its AccountService); its
// ipmitool provider has no user management (ErrNotSupported).
func (d *Driver) ChangePassword(ctx context.Context, b bmc.BMC, password string) error {
	if d.provider == bmc.ProviderIPMI {
		return d.opError("ChangePassword", b, hypervisor.NewError(bmc.ErrNotSupported,
			"bmclib's ipmitool provider cannot change a BMC user's password (change it on the BMC, then configure the new one)"))
	}
	if password == "" {
		return d.opError("ChangePassword", b, hypervisor.NewError(bmc.ErrInvalid, "the new password is empty"))
	}
	return d.with(ctx, "ChangePassword", b, func(s *session) (bool, error) {
		cctx, cancel := context.WithTimeout(ctx, d.callTimeout)
		defer cancel()
		ok, err := s.c.UpdateUser(cctx, b.Username, password, "")
		if err == nil && !ok {
			err = errors.New("the BMC did not accept the new password")
		}
		if err != nil {
			if strings.Contains(err.Error(), "user not present") {
				return true, d.opError("ChangePassword", b, hypervisor.NewError(bmc.ErrNotFound, "the BMC at %s has no account %q", s.t, b.Username))
			}
			return true, d.opError("ChangePassword", b, d.classify(ctx, s.t, err))
		}
		return true, nil
	})
}

// inventoryOf maps bmclib's device to Nimbus's inventory.
func inventoryOf(dev *common.Device) bmc.Inventory {
	inv := bmc.Inventory{Vendor: dev.Vendor, Model: dev.Model, Serial: dev.Serial}
	if dev.BIOS != nil && dev.BIOS.Firmware != nil {
		inv.BIOSVersion = dev.BIOS.Firmware.Installed
	}
	if dev.BMC != nil && dev.BMC.Firmware != nil {
		inv.BMCVersion = dev.BMC.Firmware.Installed
	}
	for _, c := range dev.CPUs {
		if c == nil {
			continue
		}
		inv.CPUs = append(inv.CPUs, bmc.CPU{Model: c.Model, Cores: c.Cores, Threads: c.Threads, MHz: int(c.ClockSpeedHz / 1e6)})
	}
	for _, m := range dev.Memory {
		if m != nil {
			inv.MemoryBytes += m.SizeBytes
		}
	}
	for _, n := range dev.NICs {
		if n == nil {
			continue
		}
		for _, p := range n.NICPorts {
			if p != nil && p.MacAddress != "" {
				inv.NICs = append(inv.NICs, bmc.NIC{MAC: strings.ToLower(p.MacAddress), SpeedMbps: int(p.SpeedBits / 1e6)})
			}
		}
	}
	for _, dr := range dev.Drives {
		if dr != nil {
			inv.Disks = append(inv.Disks, bmc.Disk{Model: dr.Model, SizeBytes: dr.CapacityBytes})
		}
	}
	return inv
}
