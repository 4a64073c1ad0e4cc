package sim

import (
	"context"
	"hash/fnv"
	"maps"
	"slices"
	"time"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/sim/simkit"
)

// ConnectHost registers (or refreshes) a host from its URL and returns what
// it reports. Reconnecting keeps the host's VMs.
func (d *Driver) ConnectHost(ctx context.Context, h hypervisor.Host) (hypervisor.HostInfo, error) {
	const op = "ConnectHost"
	if err := d.begin(ctx, op, h, h.ID); err != nil {
		return hypervisor.HostInfo{}, err
	}
	info, err := ParseHostURL(h.URL)
	if err != nil {
		return hypervisor.HostInfo{}, hypervisor.Errorf(driverName, op, h.ID, nil, "%w", err)
	}
	scope := simkit.Scope{Zone: h.ZoneID, Pod: h.PodID, Cluster: h.ClusterID, Host: h.ID}
	s := d.shard(h.ID)
	var seq uint64
	s.mu.Lock()
	cur := s.hosts[h.ID]
	if cur == nil || cur.url != h.URL || cur.scope != scope {
		err = d.logApply(&record{T: recHost, Host: h.ID, URL: h.URL, Scope: scope}, &seq)
	}
	s.mu.Unlock()
	if err != nil {
		return hypervisor.HostInfo{}, err
	}
	return info, d.commit(seq, true)
}

// DiscoverHosts lists the hosts of a simulated externally managed cluster,
// sim://NAME?hosts=N&<host parameters>: hosts NAME-1..NAME-N with the same
// parameters.
func (d *Driver) DiscoverHosts(ctx context.Context, c hypervisor.Cluster) ([]hypervisor.Host, error) {
	const op = "DiscoverHosts"
	if err := d.begin(ctx, op, hypervisor.Host{ID: c.ID, ZoneID: c.ZoneID, PodID: c.PodID, ClusterID: c.ID}, c.ID); err != nil {
		return nil, err
	}
	return discoverHosts(c)
}

// CheckHost answers with the host's load, or ErrUnreachable when its fault
// switches say it is down.
func (d *Driver) CheckHost(ctx context.Context, h hypervisor.Host) (hypervisor.HostStats, error) {
	const op = "CheckHost"
	if err := d.begin(ctx, op, h, h.ID); err != nil {
		return hypervisor.HostStats{}, err
	}
	var st hypervisor.HostStats
	err := d.withHost(op, h, func(sh *host) error {
		st.DefinedVMs = len(sh.vms)
		used := 0 // MHz
		for _, v := range sh.vms {
			if v.State() == hypervisor.StateRunning {
				st.RunningVMs++
				st.UsedVCPUs += int(v.vcpus)
				st.UsedMemoryBytes += v.mem
				used += int(v.vcpus) * int(v.mhz)
			}
		}
		st.FreeMemoryBytes = max(0, sh.info.MemoryBytes-st.UsedMemoryBytes)
		if total := sh.info.CPUCores * sh.info.CPUMHz; total > 0 {
			st.CPUUtilization = min(1, float64(used)/float64(total))
		}
		st.CheckedAt = time.Now()
		return nil
	})
	return st, err
}

// DisconnectHost closes the host's event streams; the simulated host and
// its VMs stay (see RemoveHost).
func (d *Driver) DisconnectHost(ctx context.Context, h hypervisor.Host) error {
	if err := d.begin(ctx, "DisconnectHost", h, h.ID); err != nil {
		return err
	}
	s := d.shard(h.ID)
	s.mu.Lock()
	defer s.mu.Unlock()
	if sh := s.hosts[h.ID]; sh != nil {
		sh.closeWatchers()
	}
	return nil
}

// DefineVM stores a stopped VM, or updates the VM with the same UUID
// (keeping its state).
func (d *Driver) DefineVM(ctx context.Context, h hypervisor.Host, spec hypervisor.VMSpec) (hypervisor.VMInfo, error) {
	const op = "DefineVM"
	if err := spec.Validate(); err != nil {
		return hypervisor.VMInfo{}, hypervisor.Errorf(driverName, op, spec.Name, nil, "%w", err)
	}
	if err := d.begin(ctx, op, h, spec.Name); err != nil {
		return hypervisor.VMInfo{}, err
	}
	enc := encodeSpec(&spec)
	var (
		info hypervisor.VMInfo
		seq  uint64
	)
	err := d.withHost(op, h, func(sh *host) error {
		if v := sh.byName(spec.Name); v != nil && string(v.head().uuid) != spec.UUID {
			return hypervisor.Errorf(driverName, op, spec.Name, hypervisor.ErrInvalid, "name is held by vm %s on host %s", v.head().uuid, h.ID)
		}
		cur := sh.vms[spec.UUID]
		st := stateCode(hypervisor.StateStopped)
		if cur != nil {
			st = cur.state
		}
		if err := d.logApply(&record{T: recVM, Host: h.ID, Spec: enc, State: st}, &seq); err != nil {
			return err
		}
		v := sh.vms[spec.UUID]
		if cur == nil {
			sh.emit(v, "defined")
		}
		info = hypervisor.VMInfo{Name: spec.Name, UUID: spec.UUID, State: v.State(), VCPUs: spec.VCPUs, MHz: spec.MHz,
			MemoryBytes: spec.MemoryBytes, Disks: slices.Clone(spec.Disks), NICs: slices.Clone(spec.NICs), HostID: h.ID, Metadata: maps.Clone(spec.Metadata)}
		return nil
	})
	if err != nil {
		return hypervisor.VMInfo{}, err
	}
	return info, d.commit(seq, true)
}

// transition runs a state change of one VM: change returns the new state
// (equal to the current one for "already there") or an error.
func (d *Driver) transition(ctx context.Context, op string, h hypervisor.Host, ref hypervisor.VMRef, reason string,
	change func(cur hypervisor.State) (hypervisor.State, error)) error {
	if ref.Name == "" && ref.UUID == "" {
		return hypervisor.Errorf(driverName, op, "", hypervisor.ErrInvalid, "no vm name or uuid")
	}
	if err := d.begin(ctx, op, h, ref.String()); err != nil {
		return err
	}
	var seq uint64
	err := d.withHost(op, h, func(sh *host) error {
		v := sh.find(ref)
		if v == nil {
			return hypervisor.Errorf(driverName, op, ref.String(), hypervisor.ErrNotFound, "no such vm on host %s", h.ID)
		}
		next, err := change(v.State())
		if err != nil {
			return hypervisor.Errorf(driverName, op, ref.String(), hypervisor.ErrInvalid, "%w", err)
		}
		if next == v.State() {
			if reason == "rebooted" {
				sh.emit(v, reason)
			}
			return nil
		}
		if err := d.logApply(&record{T: recState, Host: h.ID, UUID: string(v.head().uuid), State: stateCode(next)}, &seq); err != nil {
			return err
		}
		sh.emit(v, reason)
		return nil
	})
	if err != nil {
		return err
	}
	return d.commit(seq, false)
}

type stateError string

func (e stateError) Error() string { return string(e) }

// StartVM powers a VM on; a running VM is success.
func (d *Driver) StartVM(ctx context.Context, h hypervisor.Host, ref hypervisor.VMRef) error {
	return d.transition(ctx, "StartVM", h, ref, "started", func(hypervisor.State) (hypervisor.State, error) {
		return hypervisor.StateRunning, nil
	})
}

// StopVM powers a VM off (the simulator's guests always shut down in
// time); a stopped VM is success.
func (d *Driver) StopVM(ctx context.Context, h hypervisor.Host, ref hypervisor.VMRef, opts hypervisor.StopOptions) error {
	reason := "stopped"
	if opts.Force {
		reason = "powered-off"
	}
	return d.transition(ctx, "StopVM", h, ref, reason, func(hypervisor.State) (hypervisor.State, error) {
		return hypervisor.StateStopped, nil
	})
}

// RebootVM restarts a running VM; a stopped one is ErrInvalid.
func (d *Driver) RebootVM(ctx context.Context, h hypervisor.Host, ref hypervisor.VMRef) error {
	return d.transition(ctx, "RebootVM", h, ref, "rebooted", func(cur hypervisor.State) (hypervisor.State, error) {
		if cur != hypervisor.StateRunning {
			return cur, stateError("vm is " + string(cur) + ", not running")
		}
		return cur, nil
	})
}

// DestroyVM powers a VM off and undefines it; a missing VM is success.
func (d *Driver) DestroyVM(ctx context.Context, h hypervisor.Host, ref hypervisor.VMRef) error {
	const op = "DestroyVM"
	if ref.Name == "" && ref.UUID == "" {
		return hypervisor.Errorf(driverName, op, "", hypervisor.ErrInvalid, "no vm name or uuid")
	}
	if err := d.begin(ctx, op, h, ref.String()); err != nil {
		return err
	}
	var seq uint64
	err := d.withHost(op, h, func(sh *host) error {
		v := sh.find(ref)
		if v == nil {
			return nil
		}
		head := v.head()
		if err := d.logApply(&record{T: recVMDel, Host: h.ID, UUID: string(head.uuid)}, &seq); err != nil {
			return err
		}
		d.snaps.drop(h.ID, string(head.uuid))
		sh.emitEvent(hypervisor.VMEvent{HostID: h.ID, Name: string(head.name), UUID: string(head.uuid), Reason: "undefined"})
		return nil
	})
	if err != nil {
		return err
	}
	return d.commit(seq, true)
}

// VMState reports one VM.
func (d *Driver) VMState(ctx context.Context, h hypervisor.Host, ref hypervisor.VMRef) (hypervisor.VMInfo, error) {
	const op = "VMState"
	if err := d.begin(ctx, op, h, ref.String()); err != nil {
		return hypervisor.VMInfo{}, err
	}
	var info hypervisor.VMInfo
	err := d.withHost(op, h, func(sh *host) error {
		v := sh.find(ref)
		if v == nil {
			return hypervisor.Errorf(driverName, op, ref.String(), hypervisor.ErrNotFound, "no such vm on host %s", h.ID)
		}
		info = sh.vmInfo(v)
		return nil
	})
	return info, err
}

// Spec returns the spec a VM on host h was last defined with (user data,
// metadata and all, which VMInfo leaves out): what the simulated
// hypervisor was given, for tests and debugging. It passes no fault switch.
func (d *Driver) Spec(h hypervisor.Host, ref hypervisor.VMRef) (hypervisor.VMSpec, bool) {
	var spec hypervisor.VMSpec
	found := false
	_ = d.withHost("Spec", h, func(sh *host) error {
		if v := sh.find(ref); v != nil {
			s, err := decodeSpec(v.spec)
			if err == nil && s != nil {
				spec, found = *s, true
			}
		}
		return nil
	})
	return spec, found
}

// ListVMs reports every VM of the host, sorted by name.
func (d *Driver) ListVMs(ctx context.Context, h hypervisor.Host) ([]hypervisor.VMInfo, error) {
	const op = "ListVMs"
	if err := d.begin(ctx, op, h, h.ID); err != nil {
		return nil, err
	}
	var out []hypervisor.VMInfo
	err := d.withHost(op, h, func(sh *host) error {
		out = make([]hypervisor.VMInfo, 0, len(sh.vms))
		for _, v := range sh.vms {
			out = append(out, sh.vmInfo(v))
		}
		return nil
	})
	sortVMs(out)
	return out, err
}

// MigrateVM moves a VM to dst: live (running VM, both hosts capable, same
// cluster) or cold (stopped VM). A VM already on dst is success.
func (d *Driver) MigrateVM(ctx context.Context, src hypervisor.Host, ref hypervisor.VMRef, dst hypervisor.Host, opts hypervisor.MigrateOptions) error {
	const op = "MigrateVM"
	if ref.Name == "" && ref.UUID == "" {
		return hypervisor.Errorf(driverName, op, "", hypervisor.ErrInvalid, "no vm name or uuid")
	}
	if src.ID == dst.ID {
		return hypervisor.Errorf(driverName, op, ref.String(), hypervisor.ErrInvalid, "source and destination are both host %s", src.ID)
	}
	if err := d.begin(ctx, op, src, ref.String()); err != nil {
		return err
	}
	if err := d.begin(ctx, op, dst, ref.String()); err != nil {
		return err
	}
	s1, s2 := d.shard(src.ID), d.shard(dst.ID)
	first, second := s1, s2
	if shardIndex(dst.ID) < shardIndex(src.ID) { // one lock order: no deadlock
		first, second = s2, s1
	}
	first.mu.Lock()
	if second != first {
		second.mu.Lock()
	}
	var seq uint64
	err := func() error {
		sh, dh := s1.hosts[src.ID], s2.hosts[dst.ID]
		if sh == nil {
			return hypervisor.Errorf(driverName, op, src.ID, hypervisor.ErrNotFound, "source host is not connected to the simulator")
		}
		if dh == nil {
			return hypervisor.Errorf(driverName, op, dst.ID, hypervisor.ErrNotFound, "destination host is not connected to the simulator")
		}
		v := sh.find(ref)
		if v == nil {
			if dh.find(ref) != nil {
				return nil // moved already: a retry after success
			}
			return hypervisor.Errorf(driverName, op, ref.String(), hypervisor.ErrNotFound, "no such vm on host %s", src.ID)
		}
		invalid := func(format string, args ...any) error {
			return hypervisor.Errorf(driverName, op, ref.String(), hypervisor.ErrInvalid, format, args...)
		}
		head := v.head()
		if other := dh.byName(string(head.name)); other != nil && string(other.head().uuid) != string(head.uuid) {
			return invalid("name is held by vm %s on host %s", other.head().uuid, dst.ID)
		}
		if opts.Live {
			if v.State() != hypervisor.StateRunning {
				return invalid("vm is %s: live migration needs a running vm", v.State())
			}
			if !sh.info.Capabilities.LiveMigration || !dh.info.Capabilities.LiveMigration {
				return hypervisor.Errorf(driverName, op, ref.String(), hypervisor.ErrNotSupported, "host without live migration")
			}
			if sh.scope.Cluster != "" && dh.scope.Cluster != "" && sh.scope.Cluster != dh.scope.Cluster {
				return invalid("hosts %s and %s are in different clusters", src.ID, dst.ID)
			}
		} else if st := v.State(); st == hypervisor.StateRunning || st == hypervisor.StatePaused {
			return invalid("vm is %s: stop it or migrate it live", st)
		}
		if err := d.logApply(&record{T: recMove, Host: src.ID, To: dst.ID, UUID: string(head.uuid), State: v.state}, &seq); err != nil {
			return err
		}
		sh.emitEvent(hypervisor.VMEvent{HostID: src.ID, Name: string(head.name), UUID: string(head.uuid), Reason: "migrated"})
		dh.emit(v, "migrated")
		return nil
	}()
	if second != first {
		second.mu.Unlock()
	}
	first.mu.Unlock()
	if err != nil {
		return err
	}
	return d.commit(seq, true)
}

// change replaces a VM's spec with edit's result under the host's lock.
func (d *Driver) change(ctx context.Context, op string, h hypervisor.Host, ref hypervisor.VMRef,
	edit func(sh *host, v *vm, spec *hypervisor.VMSpec) (*hypervisor.VMSpec, error)) error {
	if ref.Name == "" && ref.UUID == "" {
		return hypervisor.Errorf(driverName, op, "", hypervisor.ErrInvalid, "no vm name or uuid")
	}
	if err := d.begin(ctx, op, h, ref.String()); err != nil {
		return err
	}
	var seq uint64
	err := d.withHost(op, h, func(sh *host) error {
		v := sh.find(ref)
		if v == nil {
			return hypervisor.Errorf(driverName, op, ref.String(), hypervisor.ErrNotFound, "no such vm on host %s", h.ID)
		}
		spec, err := decodeSpec(v.spec)
		if err != nil {
			return err
		}
		next, err := edit(sh, v, spec)
		if err != nil || next == nil {
			return err
		}
		return d.logApply(&record{T: recVM, Host: h.ID, Spec: encodeSpec(next), State: v.state}, &seq)
	})
	if err != nil {
		return err
	}
	return d.commit(seq, false)
}

// AttachVolume adds a disk; a disk with the same path already attached is
// success.
func (d *Driver) AttachVolume(ctx context.Context, h hypervisor.Host, ref hypervisor.VMRef, disk hypervisor.Disk) error {
	const op = "AttachVolume"
	if disk.Path == "" {
		return hypervisor.Errorf(driverName, op, ref.String(), hypervisor.ErrInvalid, "disk has no path")
	}
	return d.change(ctx, op, h, ref, func(sh *host, v *vm, spec *hypervisor.VMSpec) (*hypervisor.VMSpec, error) {
		for _, dk := range spec.Disks {
			if dk.Path == disk.Path {
				return nil, nil
			}
			if dk.DeviceID == disk.DeviceID {
				return nil, hypervisor.Errorf(driverName, op, ref.String(), hypervisor.ErrInvalid, "device id %d is taken by %s", disk.DeviceID, dk.Path)
			}
		}
		if v.State() == hypervisor.StateRunning && !sh.info.Capabilities.VolumeHotplug {
			return nil, hypervisor.Errorf(driverName, op, ref.String(), hypervisor.ErrNotSupported, "host without volume hotplug; stop the vm first")
		}
		spec.Disks = append(spec.Disks, disk)
		return spec, nil
	})
}

// ChangeMedia puts an ISO into the VM's CD-ROM drive (adding the drive
// when the VM has none) or empties it (cdrom.Path ""); the medium there
// already is success.
func (d *Driver) ChangeMedia(ctx context.Context, h hypervisor.Host, ref hypervisor.VMRef, cdrom hypervisor.Disk) error {
	const op = "ChangeMedia"
	return d.change(ctx, op, h, ref, func(sh *host, v *vm, spec *hypervisor.VMSpec) (*hypervisor.VMSpec, error) {
		cdrom.CDROM, cdrom.ReadOnly = true, true
		i := slices.IndexFunc(spec.Disks, func(dk hypervisor.Disk) bool { return dk.CDROM })
		switch {
		case i < 0 && cdrom.Path == "":
			return nil, nil
		case i < 0:
			spec.Disks = append(spec.Disks, cdrom)
		case spec.Disks[i].Path == cdrom.Path && spec.Disks[i].Pool == cdrom.Pool:
			return nil, nil
		default:
			spec.Disks[i] = cdrom
		}
		return spec, nil
	})
}

// DetachVolume removes the disk with disk.Path (or, without a path,
// disk.DeviceID); a disk not attached is success. The root disk of a
// running VM stays.
func (d *Driver) DetachVolume(ctx context.Context, h hypervisor.Host, ref hypervisor.VMRef, disk hypervisor.Disk) error {
	const op = "DetachVolume"
	return d.change(ctx, op, h, ref, func(sh *host, v *vm, spec *hypervisor.VMSpec) (*hypervisor.VMSpec, error) {
		i := slices.IndexFunc(spec.Disks, func(dk hypervisor.Disk) bool {
			if disk.Path != "" {
				return dk.Path == disk.Path
			}
			return dk.DeviceID == disk.DeviceID
		})
		if i < 0 {
			return nil, nil
		}
		running := v.State() == hypervisor.StateRunning
		if running && spec.Disks[i].DeviceID == 0 && !spec.Disks[i].CDROM {
			return nil, hypervisor.Errorf(driverName, op, ref.String(), hypervisor.ErrInvalid, "root disk of a running vm")
		}
		if running && !sh.info.Capabilities.VolumeHotplug {
			return nil, hypervisor.Errorf(driverName, op, ref.String(), hypervisor.ErrNotSupported, "host without volume hotplug; stop the vm first")
		}
		spec.Disks = slices.Delete(spec.Disks, i, i+1)
		return spec, nil
	})
}

// ResizeVM changes CPU and memory: freely while stopped; while running,
// only up and within MaxVCPUs/MaxMemoryBytes on a hotplug-capable host.
func (d *Driver) ResizeVM(ctx context.Context, h hypervisor.Host, ref hypervisor.VMRef, r hypervisor.Resize) error {
	const op = "ResizeVM"
	if r.VCPUs < 0 || r.MHz < 0 || r.MemoryBytes < 0 {
		return hypervisor.Errorf(driverName, op, ref.String(), hypervisor.ErrInvalid, "negative size")
	}
	return d.change(ctx, op, h, ref, func(sh *host, v *vm, cur *hypervisor.VMSpec) (*hypervisor.VMSpec, error) {
		next := *cur
		if r.VCPUs != 0 {
			next.VCPUs = r.VCPUs
		}
		if r.MHz != 0 {
			next.MHz = r.MHz
		}
		if r.MemoryBytes != 0 {
			next.MemoryBytes = r.MemoryBytes
		}
		if v.State() == hypervisor.StateRunning {
			maxCPU, maxMem := cur.MaxVCPUs, cur.MaxMemoryBytes
			if maxCPU == 0 {
				maxCPU = cur.VCPUs
			}
			if maxMem == 0 {
				maxMem = cur.MemoryBytes
			}
			unsupported := func(why string) error {
				return hypervisor.Errorf(driverName, op, ref.String(), hypervisor.ErrNotSupported, "%s; stop the vm first", why)
			}
			switch {
			case next.VCPUs < cur.VCPUs || next.MemoryBytes < cur.MemoryBytes:
				return nil, unsupported("scaling a running vm down")
			case next.VCPUs > cur.VCPUs && !sh.info.Capabilities.CPUHotplug:
				return nil, unsupported("host without cpu hotplug")
			case next.MemoryBytes > cur.MemoryBytes && !sh.info.Capabilities.MemoryHotplug:
				return nil, unsupported("host without memory hotplug")
			case next.VCPUs > maxCPU || next.MemoryBytes > maxMem:
				return nil, unsupported("beyond the vm's maximum size")
			}
		} else {
			if next.MaxVCPUs != 0 && next.MaxVCPUs < next.VCPUs {
				next.MaxVCPUs = next.VCPUs
			}
			if next.MaxMemoryBytes != 0 && next.MaxMemoryBytes < next.MemoryBytes {
				next.MaxMemoryBytes = next.MemoryBytes
			}
		}
		return &next, nil
	})
}

// ConsoleEndpoint returns a VNC endpoint on the host's address (nothing
// listens there: the simulator has no screens).
func (d *Driver) ConsoleEndpoint(ctx context.Context, h hypervisor.Host, ref hypervisor.VMRef) (hypervisor.Console, error) {
	const op = "ConsoleEndpoint"
	if err := d.begin(ctx, op, h, ref.String()); err != nil {
		return hypervisor.Console{}, err
	}
	var c hypervisor.Console
	err := d.withHost(op, h, func(sh *host) error {
		v := sh.find(ref)
		if v == nil {
			return hypervisor.Errorf(driverName, op, ref.String(), hypervisor.ErrNotFound, "no such vm on host %s", h.ID)
		}
		if v.State() != hypervisor.StateRunning {
			return hypervisor.Errorf(driverName, op, ref.String(), hypervisor.ErrInvalid, "vm is %s, not running", v.State())
		}
		spec, err := decodeSpec(v.spec)
		if err != nil {
			return err
		}
		f := fnv.New32a()
		f.Write([]byte(spec.UUID))
		c = hypervisor.Console{Protocol: "vnc", Host: sh.info.PrivateIP, Port: 5900 + int(f.Sum32()%10000), Password: spec.ConsolePassword}
		return nil
	})
	return c, err
}

// WatchVMs streams the host's VM events until ctx ends, the host is
// disconnected or the driver closes.
func (d *Driver) WatchVMs(ctx context.Context, h hypervisor.Host) (<-chan hypervisor.VMEvent, error) {
	const op = "WatchVMs"
	if err := d.begin(ctx, op, h, h.ID); err != nil {
		return nil, err
	}
	w := &watcher{ch: make(chan hypervisor.VMEvent, eventBuffer), stop: make(chan struct{})}
	err := d.withHost(op, h, func(sh *host) error {
		sh.watchers = append(sh.watchers, w)
		return nil
	})
	if err != nil {
		return nil, err
	}
	go func() {
		select {
		case <-ctx.Done():
		case <-d.done:
		case <-w.stop:
			return
		}
		s := d.shard(h.ID)
		s.mu.Lock()
		defer s.mu.Unlock()
		if w.closed {
			return
		}
		w.closed = true
		close(w.ch)
		if sh := s.hosts[h.ID]; sh != nil {
			sh.watchers = slices.DeleteFunc(sh.watchers, func(x *watcher) bool { return x == w })
		}
	}()
	return w.ch, nil
}
