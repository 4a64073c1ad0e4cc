// Package sim is the Simulator hypervisor: hosts and VMs that live in the
// worker's memory, persisted in a data directory, with fault switches. It is
// the default of `nimbus dev` and of scale tests; a host is "connected" by
// its URL (sim://host-1?cpus=32&mhz=2400&memory=131072, memory in MiB).
//
// Every operation that returned success survives kill -9 of the process:
// its journal record was written (write(2)) before it returned. Creations
// and removals are also fsynced (group commit); see simkit.SyncMode. One
// process owns a data directory at a time (flock); goroutines may share the
// Driver freely.
//
// Scale: hosts are kept in 64 shards, each with its own lock and a map
// keyed by host id; a host keeps its VMs in a map keyed by VM UUID, each VM
// as its spec in a compact binary encoding (codec.go) that doubles as its
// journal record, about 450 bytes per VM all told. 25,000 hosts with
// 250,000 VMs take about 110 MiB of heap and reopen in about a second
// (TestScale).
package sim

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/sim/simkit"
)

var _ hypervisor.Driver = (*Driver)(nil)

const (
	driverName  = hypervisor.TypeSimulator
	shardCount  = 64
	eventBuffer = 256
)

// init registers the simulator; Config.DataDir is its own directory ("" =
// memory only), Options["sync"] its sync mode (always, important, never).
// Its fault switches live in DataDir/faults.json; give them to the storage
// and BMC simulators (their Options.Faults) so that one switch drives all.
func init() {
	hypervisor.Register(hypervisor.TypeSimulator, func(cfg hypervisor.Config) (hypervisor.Driver, error) {
		var o Options
		switch cfg.Options["sync"] {
		case "", "important":
		case "always":
			o.Sync = simkit.SyncAlways
		case "never":
			o.Sync = simkit.SyncNever
		default:
			return nil, hypervisor.NewError(hypervisor.ErrInvalid, "simulator: sync=%q (want always, important or never)", cfg.Options["sync"])
		}
		return OpenWith(cfg.DataDir, o)
	})
}

// Options tunes OpenWith.
type Options struct {
	Sync         simkit.SyncMode
	CompactBytes int64          // see simkit.JournalOptions
	Faults       *simkit.Faults // share switches with the storage and BMC simulators; nil = own (kept in the data dir)
}

// Driver is the simulator. Create it with Open.
type Driver struct {
	hypervisor.Unsupported
	faults *simkit.Faults
	j      *simkit.Journal // nil when kept in memory only
	shards [shardCount]shard
	closed atomic.Bool
	done   chan struct{}
	snaps  vmSnapStore // VM snapshots (vmsnapshots.go)
}

type shard struct {
	mu    sync.Mutex
	hosts map[string]*host
}

type host struct {
	id       string
	url      string
	scope    simkit.Scope
	info     hypervisor.HostInfo
	vms      map[string]*vm // by UUID
	watchers []*watcher
}

type vm struct {
	spec  []byte // encoded spec (codec.go); never changed once stored: replaced whole
	mem   int64  // from the spec, for host stats
	vcpus int32
	mhz   int32
	state uint8 // stateCode
}

func (v *vm) head() specHead {
	h, _ := decodeHead(v.spec) // validated when stored
	return h
}

func (v *vm) State() hypervisor.State { return stateOf(v.state) }

type watcher struct {
	ch     chan hypervisor.VMEvent
	stop   chan struct{}
	lost   bool
	closed bool
}

// Open opens (or creates) a simulator whose state lives in dataDir, with
// default options. An empty dataDir keeps everything in memory.
func Open(dataDir string) (*Driver, error) { return OpenWith(dataDir, Options{}) }

// OpenWith opens a simulator with options.
func OpenWith(dataDir string, o Options) (*Driver, error) {
	d := &Driver{Unsupported: hypervisor.Unsupported{DriverName: driverName}, done: make(chan struct{}), faults: o.Faults}
	for i := range d.shards {
		d.shards[i].hosts = map[string]*host{}
	}
	if dataDir != "" {
		j, err := simkit.OpenJournal(dataDir, simkit.JournalOptions{Sync: o.Sync, CompactBytes: o.CompactBytes},
			func(b []byte) error {
				r, err := parseRecord(b)
				if err != nil {
					return err
				}
				r.Spec = slices.Clone(r.Spec) // b is the reader's buffer
				return d.apply(&r)
			}, d.dump)
		if err != nil {
			return nil, err
		}
		d.j = j
	}
	if d.faults == nil {
		path := ""
		if dataDir != "" {
			path = filepath.Join(dataDir, "faults.json")
		}
		f, err := simkit.NewFaults(path)
		if err != nil {
			if d.j != nil {
				d.j.Close()
			}
			return nil, err
		}
		d.faults = f
	}
	return d, nil
}

// Type is "Simulator".
func (d *Driver) Type() string { return driverName }

// Faults returns the simulator's fault switches (configureSimulator).
func (d *Driver) Faults() *simkit.Faults { return d.faults }

// Close flushes the journal and releases the data directory; watchers'
// channels are closed.
func (d *Driver) Close() error {
	if !d.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(d.done)
	if d.j != nil {
		return d.j.Close()
	}
	return nil
}

// crash drops the driver as kill -9 would (tests).
func (d *Driver) crash() {
	if d.closed.CompareAndSwap(false, true) {
		close(d.done)
		if d.j != nil {
			d.j.Abandon()
		}
	}
}

// Compact writes a snapshot of the state now rather than when the journal
// has grown.
func (d *Driver) Compact() error {
	if d.j == nil {
		return nil
	}
	return d.j.Compact()
}

// Stats counts what the simulator holds.
type Stats struct {
	Hosts, VMs, RunningVMs int
}

// Stats counts hosts and VMs.
func (d *Driver) Stats() Stats {
	var st Stats
	for i := range d.shards {
		s := &d.shards[i]
		s.mu.Lock()
		st.Hosts += len(s.hosts)
		for _, h := range s.hosts {
			st.VMs += len(h.vms)
			for _, v := range h.vms {
				if v.State() == hypervisor.StateRunning {
					st.RunningVMs++
				}
			}
		}
		s.mu.Unlock()
	}
	return st
}

// SetHostDown makes a host stop answering: every call on it fails with
// ErrUnreachable, or hangs until the caller's deadline when hang is set.
func (d *Driver) SetHostDown(hostID string, hang bool) error {
	_, err := d.faults.HostDown(hostID, hang)
	return err
}

// SetHostUp undoes SetHostDown.
func (d *Driver) SetHostUp(hostID string) error { return d.faults.HostUp(hostID) }

// SetVMState changes a VM's state behind the orchestrator's back, as a
// guest shutting itself down or crashing does; watchers see the event.
func (d *Driver) SetVMState(hostID, vmUUID string, st hypervisor.State, reason string) error {
	switch st {
	case hypervisor.StateRunning, hypervisor.StateStopped, hypervisor.StatePaused, hypervisor.StateUnknown:
	default:
		return hypervisor.NewError(hypervisor.ErrInvalid, "simulator: no vm state %q", st)
	}
	s := d.shard(hostID)
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.hosts[hostID]
	if h == nil {
		return hypervisor.Errorf(driverName, "SetVMState", hostID, hypervisor.ErrNotFound, "host is not connected")
	}
	v := h.vms[vmUUID]
	if v == nil {
		return hypervisor.Errorf(driverName, "SetVMState", vmUUID, hypervisor.ErrNotFound, "no such vm on host %s", hostID)
	}
	if err := d.logApply(&record{T: recState, Host: hostID, UUID: vmUUID, State: stateCode(st)}, nil); err != nil {
		return err
	}
	h.emit(v, reason)
	return nil
}

// RemoveHost forgets a host and its VMs (deleteHost of a simulated host
// whose hardware is gone). A missing host is success.
func (d *Driver) RemoveHost(hostID string) error {
	s := d.shard(hostID)
	s.mu.Lock()
	h := s.hosts[hostID]
	if h == nil {
		s.mu.Unlock()
		return nil
	}
	var seq uint64
	err := d.logApply(&record{T: recHostDel, Host: hostID}, &seq)
	if err == nil {
		h.closeWatchers()
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return d.commit(seq, true)
}

func (d *Driver) shard(hostID string) *shard { return &d.shards[shardIndex(hostID)] }

// shardIndex hashes a host id (FNV-1a, inline: no allocation).
func shardIndex(hostID string) uint32 {
	var x uint32 = 2166136261
	for i := 0; i < len(hostID); i++ {
		x ^= uint32(hostID[i])
		x *= 16777619
	}
	return x % shardCount
}

// begin checks the driver is open, the context alive, and applies the
// fault switches (outside any lock: they may sleep).
func (d *Driver) begin(ctx context.Context, op string, h hypervisor.Host, target string) error {
	if d.closed.Load() {
		return hypervisor.Errorf(driverName, op, target, nil, "simulator closed")
	}
	if h.ID == "" {
		return hypervisor.Errorf(driverName, op, target, hypervisor.ErrInvalid, "host has no id")
	}
	if err := ctx.Err(); err != nil {
		return hypervisor.Errorf(driverName, op, target, nil, "%w", err)
	}
	if !d.faults.Active() {
		return nil
	}
	return d.faults.Check(ctx, driverName, op, target, d.scopeOf(h))
}

// scopeOf is the host's zone/pod/cluster as connected, else as passed.
func (d *Driver) scopeOf(h hypervisor.Host) simkit.Scope {
	s := d.shard(h.ID)
	s.mu.Lock()
	defer s.mu.Unlock()
	if sh := s.hosts[h.ID]; sh != nil {
		return sh.scope
	}
	return simkit.Scope{Zone: h.ZoneID, Pod: h.PodID, Cluster: h.ClusterID, Host: h.ID}
}

// withHost runs fn with the host's shard locked.
func (d *Driver) withHost(op string, h hypervisor.Host, fn func(sh *host) error) error {
	s := d.shard(h.ID)
	s.mu.Lock()
	defer s.mu.Unlock()
	sh := s.hosts[h.ID]
	if sh == nil {
		return hypervisor.Errorf(driverName, op, h.ID, hypervisor.ErrNotFound, "host is not connected to the simulator")
	}
	return fn(sh)
}

func (d *Driver) commit(seq uint64, important bool) error {
	if d.j == nil || seq == 0 {
		return nil
	}
	return d.j.Commit(seq, important)
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// logApply journals a record, then applies it; the caller holds the locks
// of the shards it touches. seq, when not nil, receives the record's
// sequence for commit.
func (d *Driver) logApply(r *record, seq *uint64) error {
	if d.j != nil {
		bp := bufPool.Get().(*[]byte)
		*bp = r.appendTo((*bp)[:0])
		n, err := d.j.Write(*bp)
		bufPool.Put(bp)
		if err != nil {
			return err
		}
		if seq != nil {
			*seq = n
		}
	}
	return d.apply(r)
}

// apply changes the in-memory state by one record. Records about hosts or
// VMs that are gone are skipped: replayed over a snapshot, they precede
// the record that removed them.
func (d *Driver) apply(r *record) error {
	find := func(id string) *host { return d.shard(id).hosts[id] }
	switch r.T {
	case recHost:
		info, err := ParseHostURL(r.URL)
		if err != nil {
			return err
		}
		h := find(r.Host)
		if h == nil {
			h = &host{id: r.Host, vms: map[string]*vm{}}
			d.shard(r.Host).hosts[r.Host] = h
		}
		h.url, h.info, h.scope = r.URL, info, r.Scope
		h.scope.Host = r.Host
	case recHostDel:
		delete(d.shard(r.Host).hosts, r.Host)
	case recVM:
		head, err := decodeHead(r.Spec)
		if err != nil {
			return err
		}
		h := find(r.Host)
		if h == nil {
			return nil
		}
		v := h.vms[string(head.uuid)]
		if v == nil {
			v = &vm{state: stateCode(hypervisor.StateStopped)}
			h.vms[string(head.uuid)] = v
		}
		v.spec, v.mem, v.vcpus, v.mhz = r.Spec, head.mem, int32(head.vcpus), int32(head.mhz)
		if r.State != 0 {
			v.state = r.State
		}
	case recVMDel:
		if h := find(r.Host); h != nil {
			delete(h.vms, r.UUID)
		}
	case recState:
		if h := find(r.Host); h != nil {
			if v := h.vms[r.UUID]; v != nil {
				v.state = r.State
			}
		}
	case recMove:
		src, dst := find(r.Host), find(r.To)
		if src != nil {
			if v := src.vms[r.UUID]; v != nil {
				delete(src.vms, r.UUID)
				if dst != nil {
					dst.vms[r.UUID] = v
				}
			}
		}
		if dst != nil && r.State != 0 {
			if v := dst.vms[r.UUID]; v != nil {
				v.state = r.State
			}
		}
	default:
		return fmt.Errorf("unknown record type %d", r.T)
	}
	return nil
}

// dump writes the whole state as records, one shard at a time. VMs are
// already encoded, so this is mostly copying.
func (d *Driver) dump(emit func([]byte) error) error {
	var buf []byte
	for i := range d.shards {
		s := &d.shards[i]
		s.mu.Lock()
		for _, h := range s.hosts {
			buf = (&record{T: recHost, Host: h.id, URL: h.url, Scope: h.scope}).appendTo(buf[:0])
			if err := emit(buf); err != nil {
				s.mu.Unlock()
				return err
			}
			for _, v := range h.vms {
				buf = (&record{T: recVM, Host: h.id, State: v.state, Spec: v.spec}).appendTo(buf[:0])
				if err := emit(buf); err != nil {
					s.mu.Unlock()
					return err
				}
			}
		}
		s.mu.Unlock()
	}
	return nil
}

// emit tells the host's watchers about a VM's state; it never blocks: a
// watcher that is behind loses events and its next one says Resync.
func (h *host) emit(v *vm, reason string) {
	if len(h.watchers) == 0 {
		return
	}
	head := v.head()
	h.emitEvent(hypervisor.VMEvent{HostID: h.id, Name: string(head.name), UUID: string(head.uuid), State: v.State(), Reason: reason})
}

func (h *host) emitEvent(ev hypervisor.VMEvent) {
	if len(h.watchers) == 0 {
		return
	}
	ev.Time = time.Now()
	for _, w := range h.watchers {
		e := ev
		e.Resync = w.lost
		select {
		case w.ch <- e:
			w.lost = false
		default:
			w.lost = true
		}
	}
}

func (h *host) closeWatchers() {
	for _, w := range h.watchers {
		if !w.closed {
			w.closed = true
			close(w.ch)
			close(w.stop)
		}
	}
	h.watchers = nil
}

// find looks a VM up by UUID, else by name.
func (h *host) find(ref hypervisor.VMRef) *vm {
	if ref.UUID != "" {
		return h.vms[ref.UUID]
	}
	return h.byName(ref.Name)
}

func (h *host) byName(name string) *vm {
	for _, v := range h.vms {
		if string(specName(v.spec)) == name {
			return v
		}
	}
	return nil
}

func (h *host) vmInfo(v *vm) hypervisor.VMInfo {
	s, _ := decodeSpec(v.spec)
	return hypervisor.VMInfo{
		Name: s.Name, UUID: s.UUID, State: v.State(), VCPUs: s.VCPUs, MHz: s.MHz, MemoryBytes: s.MemoryBytes,
		Disks: s.Disks, NICs: s.NICs, HostID: h.id, Metadata: s.Metadata,
	}
}

func sortVMs(vms []hypervisor.VMInfo) {
	sort.Slice(vms, func(i, j int) bool { return vms[i].Name < vms[j].Name })
}
