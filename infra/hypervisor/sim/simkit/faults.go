package simkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// Mode is what a firing fault rule does to the call.
type Mode string

// Fault modes.
const (
	ModeError       Mode = "error"       // fail with an unclassified (retryable) error
	ModeUnreachable Mode = "unreachable" // fail with ErrUnreachable at once
	ModeHang        Mode = "hang"        // block until the call's context ends, then ErrUnreachable
	ModeNotFound    Mode = "notfound"    // fail with ErrNotFound
	ModeInvalid     Mode = "invalid"     // fail with ErrInvalid
	ModeCapacity    Mode = "capacity"    // fail with ErrCapacity
)

// Scope limits a rule to calls on a zone, pod, cluster, host or pool
// (inventory UUIDs); empty fields match anything.
type Scope struct {
	Zone    string `json:"zone,omitempty"`
	Pod     string `json:"pod,omitempty"`
	Cluster string `json:"cluster,omitempty"`
	Host    string `json:"host,omitempty"`
	Pool    string `json:"pool,omitempty"`
}

func (s Scope) covers(at Scope) bool {
	return (s.Zone == "" || s.Zone == at.Zone) &&
		(s.Pod == "" || s.Pod == at.Pod) &&
		(s.Cluster == "" || s.Cluster == at.Cluster) &&
		(s.Host == "" || s.Host == at.Host) &&
		(s.Pool == "" || s.Pool == at.Pool)
}

// Rule is one fault switch. A matching call first waits Latency, then fails
// when the rule fires: for the next Count calls (the rule is removed after
// the last), on every call (Count < 0), or with Probability. A rule with
// Count 0 and Probability 0 only adds latency.
type Rule struct {
	ID          int64         `json:"id"`
	Op          string        `json:"op,omitempty"` // operation name (StartVM, CreateVolume...); "" or "*" = all
	Scope       Scope         `json:"scope"`
	Count       int           `json:"count,omitempty"`
	Probability float64       `json:"probability,omitempty"`
	Mode        Mode          `json:"mode,omitempty"` // default ModeError
	Message     string        `json:"message,omitempty"`
	Latency     time.Duration `json:"latency,omitempty"`
}

func (r *Rule) matches(op string, at Scope) bool {
	return (r.Op == "" || r.Op == "*" || strings.EqualFold(r.Op, op)) && r.Scope.covers(at)
}

// Faults is a set of fault switches, safe for concurrent use, optionally
// kept in a file so they survive a restart of the process. A call with no
// rules set costs one atomic load.
type Faults struct {
	path   string
	n      atomic.Int32
	mu     sync.Mutex
	rules  []*Rule
	nextID int64
}

// NewFaults returns fault switches kept in path (loaded when it exists);
// an empty path keeps them in memory only.
func NewFaults(path string) (*Faults, error) {
	f := &Faults{path: path, nextID: 1}
	if path == "" {
		return f, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &f.rules); err != nil {
		return nil, fmt.Errorf("simulator faults %s: %w", path, err)
	}
	for _, r := range f.rules {
		f.nextID = max(f.nextID, r.ID+1)
	}
	f.n.Store(int32(len(f.rules)))
	return f, nil
}

// Add installs a rule and returns its id.
func (f *Faults) Add(r Rule) (int64, error) {
	switch r.Mode {
	case "":
		r.Mode = ModeError
	case ModeError, ModeUnreachable, ModeHang, ModeNotFound, ModeInvalid, ModeCapacity:
	default:
		return 0, hypervisor.NewError(hypervisor.ErrInvalid, "unknown fault mode %q", r.Mode)
	}
	if r.Probability < 0 || r.Probability > 1 {
		return 0, hypervisor.NewError(hypervisor.ErrInvalid, "fault probability %v outside [0,1]", r.Probability)
	}
	if r.Latency < 0 {
		return 0, hypervisor.NewError(hypervisor.ErrInvalid, "negative fault latency %v", r.Latency)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r.ID = f.nextID
	f.nextID++
	f.rules = append(f.rules, &r)
	f.n.Store(int32(len(f.rules)))
	return r.ID, f.saveLocked()
}

// Remove deletes a rule; a missing id is not an error.
func (f *Faults) Remove(id int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = slices.DeleteFunc(f.rules, func(r *Rule) bool { return r.ID == id })
	f.n.Store(int32(len(f.rules)))
	return f.saveLocked()
}

// Clear deletes every rule whose scope is exactly scope (Scope{} clears all
// rules when all is true).
func (f *Faults) Clear(scope Scope, all bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = slices.DeleteFunc(f.rules, func(r *Rule) bool { return all || r.Scope == scope })
	f.n.Store(int32(len(f.rules)))
	return f.saveLocked()
}

// Rules lists the rules in the order they were added.
func (f *Faults) Rules() []Rule {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Rule, len(f.rules))
	for i, r := range f.rules {
		out[i] = *r
	}
	return out
}

// HostDown makes every call on a host fail as unreachable (or hang until
// the caller's deadline) until HostUp.
func (f *Faults) HostDown(hostID string, hang bool) (int64, error) {
	mode := ModeUnreachable
	if hang {
		mode = ModeHang
	}
	return f.Add(Rule{Scope: Scope{Host: hostID}, Count: -1, Mode: mode, Message: "host does not answer"})
}

// HostUp removes the rules HostDown set on a host.
func (f *Faults) HostUp(hostID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = slices.DeleteFunc(f.rules, func(r *Rule) bool {
		return r.Scope == Scope{Host: hostID} && r.Count < 0 && (r.Mode == ModeUnreachable || r.Mode == ModeHang) && (r.Op == "" || r.Op == "*")
	})
	f.n.Store(int32(len(f.rules)))
	return f.saveLocked()
}

// Check applies the rules to one call: it waits out their latency and
// returns the error of the first that fires, as an OpError of the driver.
func (f *Faults) Check(ctx context.Context, driver, op, target string, at Scope) error {
	if f == nil || f.n.Load() == 0 {
		return nil
	}
	var (
		latency time.Duration
		fire    *Rule
		counted bool
	)
	f.mu.Lock()
	for _, r := range f.rules {
		if !r.matches(op, at) {
			continue
		}
		latency += r.Latency
		if fire != nil {
			continue
		}
		switch {
		case r.Count < 0:
			fire = r
		case r.Count > 0:
			fire, counted = r, true
			r.Count--
		case r.Probability > 0 && rand.Float64() < r.Probability:
			fire = r
		}
	}
	var saveErr error
	if fire != nil {
		copied := *fire
		if counted {
			if fire.Count == 0 { // failed its last call
				f.rules = slices.DeleteFunc(f.rules, func(r *Rule) bool { return r == fire })
				f.n.Store(int32(len(f.rules)))
			}
			saveErr = f.saveLocked()
		}
		fire = &copied
	}
	f.mu.Unlock()
	if saveErr != nil {
		return saveErr
	}
	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return &hypervisor.OpError{Driver: driver, Op: op, Target: target, Kind: hypervisor.ErrUnreachable,
				Err: fmt.Errorf("simulated latency of %v (fault rules): %w", latency, ctx.Err())}
		}
	}
	if fire == nil {
		return nil
	}
	cause := fmt.Sprintf("simulated failure (fault rule %d)", fire.ID)
	if fire.Message != "" {
		cause += ": " + fire.Message
	}
	e := &hypervisor.OpError{Driver: driver, Op: op, Target: target, Err: errors.New(cause)}
	switch fire.Mode {
	case ModeHang:
		<-ctx.Done()
		e.Kind, e.Err = hypervisor.ErrUnreachable, fmt.Errorf("%s: %w", cause, ctx.Err())
	case ModeUnreachable:
		e.Kind = hypervisor.ErrUnreachable
	case ModeNotFound:
		e.Kind = hypervisor.ErrNotFound
	case ModeInvalid:
		e.Kind = hypervisor.ErrInvalid
	case ModeCapacity:
		e.Kind = hypervisor.ErrCapacity
	}
	return e
}

func (f *Faults) saveLocked() error {
	if f.path == "" {
		return nil
	}
	b, err := json.MarshalIndent(f.rules, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(f.path, b)
}

// WriteFileAtomic replaces path with data so that a crash leaves the old or
// the new content, never a mix.
func WriteFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

// Active tells whether any rule is set (one atomic load), so callers skip
// working out a call's scope when none is.
func (f *Faults) Active() bool { return f != nil && f.n.Load() != 0 }
