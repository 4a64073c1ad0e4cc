package vsphere

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/session/keepalive"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// soapCalls counts every SOAP request the process sent to any vCenter, for
// `nimbus bench vsphere` and tests.
var soapCalls atomic.Int64

// SOAPCalls is how many SOAP requests this process has sent to vCenters.
func SOAPCalls() int64 { return soapCalls.Load() }

// fileCalls counts the HTTP requests to vCenters' datastore file access
// (vmdk descriptors read, OVA disks uploaded).
var fileCalls atomic.Int64

// FileCalls is how many datastore HTTP requests this process has sent.
func FileCalls() int64 { return fileCalls.Load() }

// endpoint is a vCenter and the user a session logs in as.
type endpoint struct {
	URL      *url.URL // https://vcenter[:port]/sdk, no user info
	Username string
	Password string
	trust
}

func (e endpoint) key() string {
	return e.URL.String() + "\x00" + e.Username + "\x00" + e.Thumbprint + "\x00" + e.CAFile + "\x00" + strconv.FormatBool(e.Insecure)
}

// sessions caches one logged-in client per vCenter and user, shared by
// every driver of the process (hypervisor and storage), so that a worker
// holds one session per vCenter however many activities run. A session is
// kept alive while idle and logged in again when vCenter forgets it.
type sessions struct {
	login     sync.Mutex // serializes first logins
	mu        sync.Mutex
	conns     map[string]*conn
	refs      int
	keepAlive time.Duration
}

var shared = &sessions{conns: map[string]*conn{}}

// acquire takes a reference on the shared cache; release drops it and logs
// every session out with the last one.
func acquireSessions(keepAlive time.Duration) *sessions {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	shared.refs++
	if keepAlive > 0 {
		shared.keepAlive = keepAlive
	}
	return shared
}

func (s *sessions) release() {
	s.mu.Lock()
	s.refs--
	var closing []*conn
	if s.refs <= 0 {
		for k, c := range s.conns {
			closing = append(closing, c)
			delete(s.conns, k)
		}
		s.refs = 0
	}
	s.mu.Unlock()
	for _, c := range closing {
		c.logout()
	}
}

// get returns the session of e, logging in the first time. A call with
// another password logs in on a new connection, which replaces the cached
// one only when the login succeeds: a wrong password in one request does
// not break the session every other activity uses.
func (s *sessions) get(ctx context.Context, e endpoint) (*conn, error) {
	s.mu.Lock()
	c := s.conns[e.key()]
	s.mu.Unlock()
	if c != nil && c.ep.Password == e.Password {
		return c, nil
	}
	s.login.Lock()
	defer s.login.Unlock()
	s.mu.Lock()
	c = s.conns[e.key()]
	s.mu.Unlock()
	if c != nil && c.ep.Password == e.Password {
		return c, nil // another call logged in meanwhile
	}
	nc := &conn{ep: e, keepAlive: s.keepAlive, cache: newObjCache()}
	if err := nc.connect(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.conns[e.key()] = nc
	s.mu.Unlock()
	if c != nil {
		go c.logout()
	}
	return nc, nil
}

// conn is one vCenter session and what the driver learned through it (the
// managed object ids of datacenters, hosts, datastores and networks, which
// do not change).
type conn struct {
	ep        endpoint
	keepAlive time.Duration

	mu    sync.Mutex // guards vc and logins (ep is fixed)
	vc    *vim25.Client
	about types.AboutInfo

	cache *objCache
	flags sync.Map // what the driver learned about objects (e.g. "linkable:<disk>")
}

// connect connects and logs in.
func (c *conn) connect(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	sc, err := c.ep.client()
	if err != nil {
		return err
	}
	// Many activities share the session: keep enough idle connections.
	if tr := sc.DefaultTransport(); tr != nil {
		tr.MaxIdleConnsPerHost = 64
	}
	sc.Client.Transport = drainingRT{sc.Client.Transport}
	vc, err := vim25.NewClient(ctx, &countingRT{rt: sc})
	if err != nil {
		if terr := c.ep.trustError(ctx, err); terr != nil {
			return terr
		}
		return unreachable("connect", c.ep.URL.Host, err)
	}
	vc.Client = sc
	rl := &reloginRT{rt: &countingRT{rt: sc}, login: c.login}
	idle := c.keepAlive
	if idle <= 0 {
		idle = 5 * time.Minute
	}
	vc.RoundTripper = keepalive.NewHandlerSOAP(rl, idle, nil)
	c.vc = vc
	c.about = vc.ServiceContent.About
	if err := c.loginLocked(ctx); err != nil {
		c.vc = nil
		return err
	}
	return nil
}

// login logs in again (the relogin round tripper calls it when vCenter
// answers NotAuthenticated).
func (c *conn) login(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loginLocked(ctx)
}

func (c *conn) loginLocked(ctx context.Context) error {
	if c.vc == nil {
		// Logged out (the last driver closed): a call still in flight, such
		// as a watch cleaning up, fails instead of logging in again.
		return hypervisor.NewError(hypervisor.ErrUnreachable, "vCenter %s: the session was closed", c.ep.URL.Host)
	}
	req := types.Login{This: *c.vc.ServiceContent.SessionManager, UserName: c.ep.Username, Password: c.ep.Password, Locale: "en_US"}
	if _, err := methods.Login(ctx, c.vc, &req); err != nil {
		if fault.Is(err, &types.InvalidLogin{}) {
			return hypervisor.NewError(hypervisor.ErrInvalid, "vCenter %s refused the login of %s: wrong user name or password", c.ep.URL.Host, c.ep.Username)
		}
		return unreachable("login", c.ep.URL.Host, err)
	}
	return nil
}

func (c *conn) logout() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.vc == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = methods.Logout(ctx, c.vc, &types.Logout{This: *c.vc.ServiceContent.SessionManager})
	c.vc = nil
}

// client returns the vim25 client of the session.
func (c *conn) client() *vim25.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.vc
}

// countingRT counts SOAP round trips.
type countingRT struct{ rt soap.RoundTripper }

func (r *countingRT) RoundTrip(ctx context.Context, req, res soap.HasFault) error {
	soapCalls.Add(1)
	return r.rt.RoundTrip(ctx, req, res)
}

// reloginRT logs in again and retries once when vCenter answers a call with
// NotAuthenticated: the session expired (idle too long, vCenter restarted,
// an administrator ended it).
type reloginRT struct {
	rt    soap.RoundTripper
	login func(context.Context) error
}

func (r *reloginRT) RoundTrip(ctx context.Context, req, res soap.HasFault) error {
	err := r.rt.RoundTrip(ctx, req, res)
	if !fault.Is(err, &types.NotAuthenticated{}) && !missingNotAuthenticated(res) {
		return err
	}
	switch req.(type) {
	case *methods.LoginBody, *methods.LogoutBody:
		return err
	}
	if lerr := r.login(ctx); lerr != nil {
		return fmt.Errorf("%w (logging in again: %v)", err, lerr)
	}
	// The answer holds the fault of the first try: start from a zero one.
	v := reflect.ValueOf(res)
	if v.Kind() == reflect.Pointer && !v.IsNil() {
		v.Elem().Set(reflect.Zero(v.Elem().Type()))
	}
	return r.rt.RoundTrip(ctx, req, res)
}

// missingNotAuthenticated tells whether a property retrieval answered
// NotAuthenticated per object (in missingSet) rather than as a fault, as
// govmomi's simulator does for an expired session.
func missingNotAuthenticated(res soap.HasFault) bool {
	var contents []types.ObjectContent
	switch r := res.(type) {
	case *methods.RetrievePropertiesExBody:
		if r.Res != nil && r.Res.Returnval != nil {
			contents = r.Res.Returnval.Objects
		}
	case *methods.RetrievePropertiesBody:
		if r.Res != nil {
			contents = r.Res.Returnval
		}
	}
	for _, oc := range contents {
		for _, m := range oc.MissingSet {
			if _, ok := m.Fault.Fault.(*types.NotAuthenticated); ok {
				return true
			}
		}
	}
	return false
}

// objCache remembers managed object references by what Nimbus names them
// with, per session.
type objCache struct {
	mu   sync.Mutex
	refs map[string]types.ManagedObjectReference
	nets map[string]types.BaseVirtualDeviceBackingInfo
	pgs  map[string]string // distributed port group key -> name
}

func newObjCache() *objCache {
	return &objCache{refs: map[string]types.ManagedObjectReference{}, nets: map[string]types.BaseVirtualDeviceBackingInfo{}, pgs: map[string]string{}}
}

func (o *objCache) net(key string) types.BaseVirtualDeviceBackingInfo {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.nets[key]
}

func (o *objCache) putNet(key string, b types.BaseVirtualDeviceBackingInfo) {
	o.mu.Lock()
	o.nets[key] = b
	o.mu.Unlock()
}

func (o *objCache) portgroupName(key string) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if n := o.pgs[key]; n != "" {
		return n
	}
	return key
}

func (o *objCache) putPortgroup(key, name string) {
	o.mu.Lock()
	o.pgs[key] = name
	o.mu.Unlock()
}

func (o *objCache) get(key string) (types.ManagedObjectReference, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	r, ok := o.refs[key]
	return r, ok
}

func (o *objCache) put(key string, r types.ManagedObjectReference) {
	o.mu.Lock()
	o.refs[key] = r
	o.mu.Unlock()
}

func (o *objCache) forget(key string) {
	o.mu.Lock()
	delete(o.refs, key)
	delete(o.nets, key)
	o.mu.Unlock()
}

// unreachable wraps a transport failure (or any unclassified vCenter
// error) as ErrUnreachable; faults that say the request was wrong keep
// their own kind (see classify).
func unreachable(op, target string, err error) error {
	return &hypervisor.OpError{Driver: driverName, Op: op, Target: target, Kind: hypervisor.ErrUnreachable, Err: err}
}

// classify maps a vCenter fault to the driver error kinds.
func classify(op, target string, err error) error {
	if err == nil {
		return nil
	}
	var kind error
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), errors.Is(err, hypervisor.ErrTaskPending):
		return err
	case fault.Is(err, &types.ManagedObjectNotFound{}), fault.Is(err, &types.FileNotFound{}), fault.Is(err, &types.NotFound{}):
		kind = hypervisor.ErrNotFound
	case fault.Is(err, &types.NotSupported{}), fault.Is(err, &types.NotImplemented{}):
		kind = hypervisor.ErrNotSupported
	case fault.Is(err, &types.InsufficientResourcesFault{}), fault.Is(err, &types.OutOfBounds{}),
		fault.Is(err, &types.NoDiskSpace{}), fault.Is(err, &types.InsufficientHostCapacityFault{}):
		kind = hypervisor.ErrCapacity
	case fault.Is(err, &types.InvalidArgument{}), fault.Is(err, &types.InvalidState{}), fault.Is(err, &types.InvalidPowerState{}),
		fault.Is(err, &types.DuplicateName{}), fault.Is(err, &types.FileAlreadyExists{}), fault.Is(err, &types.InvalidDeviceSpec{}),
		fault.Is(err, &types.InvalidVmConfig{}), fault.Is(err, &types.VmConfigFault{}), fault.Is(err, &types.InvalidDatastore{}),
		fault.Is(err, &types.MigrationFault{}), fault.Is(err, &types.InvalidLogin{}), fault.Is(err, &types.NoPermission{}):
		kind = hypervisor.ErrInvalid
	case soap.IsSoapFault(err) || soap.IsVimFault(err) || isTaskError(err):
		kind = nil // a fault vCenter raised but that we cannot classify
	default:
		kind = hypervisor.ErrUnreachable
	}
	return &hypervisor.OpError{Driver: driverName, Op: op, Target: target, Kind: kind, Err: err}
}

// objRef builds a managed object reference.
func objRef(typ, value string) types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: typ, Value: value}
}

// drainingRT reads what is left of a response body before closing it.
// soap.Client closes a response once its XML envelope is decoded; when the
// response was chunked (a large one), its last chunk is still unread then,
// and net/http closes a connection whose body was closed before EOF
// instead of reusing it: the next call dials and handshakes TLS again.
// With this and download, bench vsphere's 200 deployments made 25 TLS
// handshakes (the connection pool growing) instead of 193.
type drainingRT struct{ rt http.RoundTripper }

func (d drainingRT) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := d.rt.RoundTrip(r)
	if err == nil {
		res.Body = drainOnClose{res.Body}
	}
	return res, err
}

type drainOnClose struct{ io.ReadCloser }

// Close reads at most 64 KiB more: a connection is worth one small read,
// not the rest of a large download abandoned on purpose.
func (b drainOnClose) Close() error {
	_, _ = io.CopyN(io.Discard, b.ReadCloser, 64<<10)
	return b.ReadCloser.Close()
}
