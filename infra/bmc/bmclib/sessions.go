package bmclib

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"

	"github.com/nimbus-cloud/nimbus/infra/bmc"
)

// Opening a BMC session is most of what a call costs: for IPMI an RMCP ping
// and a whole ipmitool run (bmclib's Open reads the power state), for
// Redfish a session login and, at close, a logout. The cache keeps one
// opened client per BMC (provider, address, user; the password and TLS
// choice are part of the key too, so changed credentials never reuse a
// client opened with the old ones) for the idle timeout after its last use.
// A call that fails on a session drops it; a call that failed on a reused
// session before it changed anything is tried once more on a fresh one (the
// BMC may have ended the session, or restarted). Close closes them all.

type sessionKey struct {
	provider string
	target   string // scheme://host:port
	user     string
	secret   string // sha256 of the password
	insecure bool
}

type cachedSession struct {
	s    *session
	last time.Time
}

type sessionCache struct {
	idle time.Duration // 0: no caching

	mu      sync.Mutex
	m       map[sessionKey]*cachedSession
	stop    chan struct{}
	closed  bool
	opened  int // sessions opened (tests and benchmarks read it)
	reused  int
	dropped int
}

func newSessionCache(idle time.Duration) *sessionCache {
	return &sessionCache{idle: idle, m: map[sessionKey]*cachedSession{}}
}

func keyOf(provider string, t target, b bmc.BMC) sessionKey {
	sum := sha256.Sum256([]byte(b.Password))
	return sessionKey{provider: provider, target: t.scheme + "://" + t.String(), user: b.Username, secret: hex.EncodeToString(sum[:]), insecure: b.Insecure}
}

// SessionStats counts the sessions a driver opened, reused and dropped
// after a failure.
type SessionStats struct{ Opened, Reused, Dropped, Open int }

// Sessions reports the driver's session counters.
func (d *Driver) Sessions() SessionStats {
	c := d.sessions
	c.mu.Lock()
	defer c.mu.Unlock()
	return SessionStats{Opened: c.opened, Reused: c.reused, Dropped: c.dropped, Open: len(c.m)}
}

// acquire returns an open session to the BMC, cached or new, and whether
// it was reused.
func (d *Driver) acquire(ctx context.Context, op string, b bmc.BMC, fresh bool) (*session, bool, error) {
	t, err := d.parseAddress(b.Address)
	if err != nil {
		return nil, false, d.opError(op, b, err)
	}
	c := d.sessions
	k := keyOf(d.provider, t, b)
	c.mu.Lock()
	if e := c.m[k]; e != nil && !fresh && c.idle > 0 && !c.closed {
		e.last = time.Now()
		c.reused++
		c.mu.Unlock()
		return e.s, true, nil
	}
	c.mu.Unlock()
	s, err := d.open(ctx, op, b, t)
	if err != nil {
		return nil, false, err
	}
	s.key = k
	c.mu.Lock()
	defer c.mu.Unlock()
	c.opened++
	if c.idle <= 0 || c.closed {
		s.uncached = true
		return s, false, nil
	}
	if old := c.m[k]; old != nil && old.s != s {
		// Another call opened one meanwhile (or this replaces a dropped
		// one): keep the newest, close the other once nobody waits on it.
		go old.s.close()
	}
	c.m[k] = &cachedSession{s: s, last: time.Now()}
	if c.stop == nil {
		c.stop = make(chan struct{})
		go c.janitor(c.stop)
	}
	return s, false, nil
}

// release ends one use of a session: an uncached one is closed, a failed
// one dropped from the cache and closed.
func (d *Driver) release(s *session, failed bool) {
	if s.uncached {
		s.close()
		return
	}
	if !failed {
		return
	}
	c := d.sessions
	c.mu.Lock()
	if e := c.m[s.key]; e != nil && e.s == s {
		delete(c.m, s.key)
		c.dropped++
	}
	c.mu.Unlock()
	s.close()
}

// janitor closes sessions idle for longer than the idle timeout.
func (c *sessionCache) janitor(stop chan struct{}) {
	tick := time.NewTicker(max(c.idle/4, 50*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			var idle []*session
			c.mu.Lock()
			for k, e := range c.m {
				if now.Sub(e.last) > c.idle && e.s.users() == 0 {
					idle = append(idle, e.s)
					delete(c.m, k)
				}
			}
			c.mu.Unlock()
			for _, s := range idle {
				s.close()
			}
		}
	}
}

// closeAll closes every cached session; later calls open one per call.
func (c *sessionCache) closeAll() {
	c.mu.Lock()
	all := make([]*session, 0, len(c.m))
	for k, e := range c.m {
		all = append(all, e.s)
		delete(c.m, k)
	}
	c.closed = true
	if c.stop != nil {
		close(c.stop)
		c.stop = nil
	}
	c.mu.Unlock()
	for _, s := range all {
		s.close()
	}
}

// Close closes the driver's BMC sessions (worker shutdown).
func (d *Driver) Close() error {
	d.sessions.closeAll()
	return nil
}

// with runs fn on a session to the BMC. fn reports whether it changed
// anything on the BMC; a failure on a reused session that changed nothing
// is tried once more on a fresh session.
func (d *Driver) with(ctx context.Context, op string, b bmc.BMC, fn func(s *session) (changed bool, err error)) error {
	s, reused, err := d.acquire(ctx, op, b, false)
	if err != nil {
		return err
	}
	s.enter()
	s.b = b // this call's tuning (power_timeout) on a shared session
	changed, err := fn(s)
	s.leave()
	d.release(s, err != nil)
	if err == nil || !reused || changed || ctx.Err() != nil {
		return err
	}
	s, _, err = d.acquire(ctx, op, b, true)
	if err != nil {
		return err
	}
	s.enter()
	s.b = b
	_, err = fn(s)
	s.leave()
	d.release(s, err != nil)
	return err
}
