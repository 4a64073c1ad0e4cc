package libvirt

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/google/uuid"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/libvirtconn"
)

// stateOf maps libvirt's domain state to the driver's.
func stateOf(s golibvirt.DomainState) hypervisor.State {
	switch s {
	case golibvirt.DomainRunning, golibvirt.DomainBlocked, golibvirt.DomainShutdown:
		return hypervisor.StateRunning
	case golibvirt.DomainPaused, golibvirt.DomainPmsuspended:
		return hypervisor.StatePaused
	case golibvirt.DomainShutoff, golibvirt.DomainCrashed:
		return hypervisor.StateStopped
	}
	return hypervisor.StateUnknown
}

func notFound(vm hypervisor.VMRef) error {
	return hypervisor.NewError(hypervisor.ErrNotFound, "no domain %s", vm)
}

// lookup finds a VM's domain: by UUID when the reference has one (a
// domain of that name but another UUID is not this VM), else by name.
func lookup(l *golibvirt.Libvirt, vm hypervisor.VMRef) (golibvirt.Domain, error) {
	if vm.UUID != "" {
		u, err := uuid.Parse(vm.UUID)
		if err != nil {
			return golibvirt.Domain{}, hypervisor.NewError(hypervisor.ErrInvalid, "vm uuid %q: %v", vm.UUID, err)
		}
		dom, err := l.DomainLookupByUUID(golibvirt.UUID(u))
		if golibvirt.IsNotFound(err) {
			return dom, notFound(vm)
		}
		return dom, err
	}
	if vm.Name == "" {
		return golibvirt.Domain{}, hypervisor.NewError(hypervisor.ErrInvalid, "vm reference without name or uuid")
	}
	dom, err := l.DomainLookupByName(vm.Name)
	if golibvirt.IsNotFound(err) {
		return dom, notFound(vm)
	}
	return dom, err
}

func uuidString(u golibvirt.UUID) string { return uuid.UUID(u).String() }

// domState reads a domain's state; a domain gone meanwhile is NotFound.
func domState(l *golibvirt.Libvirt, dom golibvirt.Domain) (golibvirt.DomainState, error) {
	s, _, err := l.DomainGetState(dom, 0)
	return golibvirt.DomainState(s), err
}

func running(s golibvirt.DomainState) bool {
	st := stateOf(s)
	return st == hypervisor.StateRunning || st == hypervisor.StatePaused
}

// vmInfo reads a domain's state and XML.
func vmInfo(l *golibvirt.Libvirt, h hypervisor.Host, dom golibvirt.Domain) (hypervisor.VMInfo, error) {
	s, err := domState(l, dom)
	if err != nil {
		return hypervisor.VMInfo{}, err
	}
	x, err := l.DomainGetXMLDesc(dom, 0)
	if err != nil {
		return hypervisor.VMInfo{}, err
	}
	d, err := parseDomain(x)
	if err != nil {
		return hypervisor.VMInfo{}, err
	}
	vi := d.info(stateOf(s))
	vi.HostID = h.ID
	if vi.UUID == "" {
		vi.UUID = uuidString(dom.UUID)
	}
	return vi, nil
}

// DefineVM defines (or redefines, for the same UUID) a stopped VM. A
// running VM's persistent definition is updated; it takes effect at its
// next start.
func (d *Driver) DefineVM(ctx context.Context, h hypervisor.Host, spec hypervisor.VMSpec) (hypervisor.VMInfo, error) {
	var vi hypervisor.VMInfo
	if err := spec.Validate(); err != nil {
		return vi, d.wrap("DefineVM", spec.Name, err)
	}
	err := d.run(ctx, h, "DefineVM", spec.Name, func(ctx context.Context, l *golibvirt.Libvirt) error {
		hs, err := d.state(ctx, h, l, false)
		if err != nil {
			return err
		}
		// The name is the host-wide key: another VM holding it is refused
		// rather than overwritten.
		if dom, err := l.DomainLookupByName(spec.Name); err == nil {
			if !strings.EqualFold(uuidString(dom.UUID), spec.UUID) {
				return hypervisor.NewError(hypervisor.ErrInvalid, "domain %s already exists on host %s with uuid %s",
					spec.Name, h, uuidString(dom.UUID))
			}
		} else if !golibvirt.IsNotFound(err) {
			return err
		}
		if dom, err := lookup(l, spec.Ref()); err == nil && dom.Name != spec.Name {
			return hypervisor.NewError(hypervisor.ErrInvalid, "uuid %s is already defined on host %s as domain %s",
				spec.UUID, h, dom.Name)
		}
		if err := checkBridges(l, spec, hs.params); err != nil {
			return err
		}
		if d.typ == hypervisor.TypeLXC {
			if spec, err = resolveVolumes(l, spec); err != nil {
				return err
			}
		}
		x, err := DomainXML(spec, hs.params)
		if err != nil {
			return err
		}
		if d.typ != hypervisor.TypeLXC {
			d.ensureConsoleDir(l, h, hs)
		}
		dom, err := l.DomainDefineXMLFlags(x, golibvirt.DomainDefineValidate)
		if err != nil {
			return err
		}
		vi, err = vmInfo(l, h, dom)
		return err
	})
	return vi, err
}

// resolveVolumes turns pool volumes into the paths of their files, for
// container filesystems (libvirt takes no pool volumes there).
func resolveVolumes(l *golibvirt.Libvirt, spec hypervisor.VMSpec) (hypervisor.VMSpec, error) {
	disks := make([]hypervisor.Disk, len(spec.Disks))
	copy(disks, spec.Disks)
	for i, disk := range disks {
		if disk.Pool == "" {
			continue
		}
		pool, err := l.StoragePoolLookupByName(disk.Pool)
		if err != nil {
			return spec, err
		}
		vol, err := l.StorageVolLookupByName(pool, disk.Path)
		if err != nil {
			return spec, err
		}
		p, err := l.StorageVolGetPath(vol)
		if err != nil {
			return spec, err
		}
		if disk.Format == "" {
			disk.Format = "raw"
		}
		disk.Pool, disk.Path = "", p
		disks[i] = disk
	}
	spec.Disks = disks
	return spec, nil
}

// checkBridges verifies that the bridges NICs join exist on the host, so a
// missing bridge fails the define with its name rather than the start with
// QEMU's "No such device". Hosts whose libvirt has no interface driver are
// not checked.
func checkBridges(l *golibvirt.Libvirt, spec hypervisor.VMSpec, p domainParams) error {
	for _, n := range spec.NICs {
		br := n.Label
		if n.VLAN != 0 && !p.OVS {
			br = VLANBridge(n.Label, n.VLAN)
		}
		if br == "" {
			continue
		}
		_, err := l.InterfaceLookupByName(br)
		switch {
		case err == nil:
		case libvirtconn.Code(err) == int(golibvirt.ErrNoInterface):
			if n.VLAN != 0 && !p.OVS {
				return hypervisor.NewError(hypervisor.ErrInvalid,
					"vlan %d of traffic label %s needs the bridge %s on the host (a Linux bridge over %s.%d), or host detail %s=openvswitch",
					n.VLAN, n.Label, br, n.Label, n.VLAN, DetailBridgeType)
			}
			return hypervisor.NewError(hypervisor.ErrInvalid, "bridge %s (traffic label) does not exist on the host", br)
		default:
			// No interface driver (ErrNoSupport) or another failure: let
			// the start tell.
			return nil
		}
	}
	return nil
}

// StartVM powers a defined VM on; a running VM is left alone and a paused
// one resumed.
func (d *Driver) StartVM(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef) error {
	return d.run(ctx, h, "StartVM", vm.String(), func(ctx context.Context, l *golibvirt.Libvirt) error {
		dom, err := lookup(l, vm)
		if err != nil {
			return err
		}
		s, err := domState(l, dom)
		if err != nil {
			return err
		}
		switch stateOf(s) {
		case hypervisor.StateRunning:
			return nil
		case hypervisor.StatePaused:
			return l.DomainResume(dom)
		}
		if d.typ != hypervisor.TypeLXC {
			if hs, err := d.state(ctx, h, l, false); err == nil {
				d.ensureConsoleDir(l, h, hs)
			}
		}
		_, err = l.DomainCreateWithFlags(dom, 0)
		if err != nil && libvirtconn.Code(err) == int(golibvirt.ErrOperationInvalid) {
			// Started meanwhile by another call.
			if s, serr := domState(l, dom); serr == nil && running(s) {
				return nil
			}
		}
		return err
	})
}

// StopVM shuts a VM down: an ACPI power-button press (repeated, as a guest
// still booting may miss the first), then a forced power-off when the
// timeout passes; at once with opts.Force. A stopped VM is success.
func (d *Driver) StopVM(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef, opts hypervisor.StopOptions) error {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = d.stopTimeout
	}
	return d.run(ctx, h, "StopVM", vm.String(), func(ctx context.Context, l *golibvirt.Libvirt) error {
		dom, err := lookup(l, vm)
		if err != nil {
			return err
		}
		s, err := domState(l, dom)
		if err != nil {
			return err
		}
		if !running(s) {
			return nil
		}
		if !opts.Force && stateOf(s) == hypervisor.StateRunning {
			stopped, err := d.shutdown(ctx, l, dom, timeout)
			if err != nil || stopped {
				return err
			}
		}
		err = l.DomainDestroyFlags(dom, golibvirt.DomainDestroyDefault)
		if err != nil && libvirtconn.Code(err) == int(golibvirt.ErrOperationInvalid) {
			return nil // already off
		}
		return err
	})
}

// shutdown asks the guest to power off and waits up to timeout.
func (d *Driver) shutdown(ctx context.Context, l *golibvirt.Libvirt, dom golibvirt.Domain, timeout time.Duration) (bool, error) {
	flags := golibvirt.DomainShutdownDefault
	if d.typ == hypervisor.TypeKVM {
		// Not the guest agent: images need not run one.
		flags = golibvirt.DomainShutdownAcpiPowerBtn
	}
	deadline := time.Now().Add(timeout)
	var lastPress time.Time
	for press := 0; ; {
		if time.Since(lastPress) >= 5*time.Second {
			if d.typ == hypervisor.TypeLXC && press > 0 {
				// libvirt's default for containers is the init's initctl
				// pipe; libvirt 9.0 reports it used even when the container
				// has none, and never sends the SIGTERM. Signal next time.
				flags = golibvirt.DomainShutdownSignal
			}
			press++
			err := l.DomainShutdownFlags(dom, flags)
			if err != nil {
				if libvirtconn.Code(err) == int(golibvirt.ErrOperationInvalid) || golibvirt.IsNotFound(err) {
					return true, nil // off meanwhile
				}
				return false, err
			}
			lastPress = time.Now()
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return false, err
		}
		s, err := domState(l, dom)
		if golibvirt.IsNotFound(err) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		if !running(s) {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, nil
		}
	}
}

// RebootVM restarts a running VM: the guest is asked (ACPI), and libvirt
// restarts it when it goes down. A stopped VM is ErrInvalid.
func (d *Driver) RebootVM(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef) error {
	return d.run(ctx, h, "RebootVM", vm.String(), func(ctx context.Context, l *golibvirt.Libvirt) error {
		dom, err := lookup(l, vm)
		if err != nil {
			return err
		}
		s, err := domState(l, dom)
		if err != nil {
			return err
		}
		if !running(s) {
			return hypervisor.NewError(hypervisor.ErrInvalid, "vm %s is not running", vm)
		}
		flags := golibvirt.DomainRebootDefault
		if d.typ == hypervisor.TypeKVM {
			flags = golibvirt.DomainRebootAcpiPowerBtn
		}
		return l.DomainReboot(dom, flags)
	})
}

// undefineFlags are what each libvirt driver accepts: QEMU drops managed
// save images, snapshot and checkpoint metadata and NVRAM; libxl managed
// save and NVRAM; LXC takes no flags.
func (d *Driver) undefineFlags() golibvirt.DomainUndefineFlagsValues {
	switch d.typ {
	case hypervisor.TypeLXC:
		return 0
	case hypervisor.TypeXenProject:
		return golibvirt.DomainUndefineManagedSave | golibvirt.DomainUndefineNvram
	}
	return golibvirt.DomainUndefineManagedSave | golibvirt.DomainUndefineSnapshotsMetadata |
		golibvirt.DomainUndefineNvram | golibvirt.DomainUndefineCheckpointsMetadata
}

// DestroyVM powers the VM off and undefines it; its disks stay. A
// missing VM is success.
func (d *Driver) DestroyVM(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef) error {
	return d.run(ctx, h, "DestroyVM", vm.String(), func(ctx context.Context, l *golibvirt.Libvirt) error {
		dom, err := lookup(l, vm)
		if errors.Is(err, hypervisor.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if s, err := domState(l, dom); err == nil && running(s) {
			err := l.DomainDestroyFlags(dom, golibvirt.DomainDestroyDefault)
			if err != nil && !golibvirt.IsNotFound(err) && libvirtconn.Code(err) != int(golibvirt.ErrOperationInvalid) {
				return err
			}
		} else if golibvirt.IsNotFound(err) {
			return nil
		}
		persistent, err := l.DomainIsPersistent(dom)
		if golibvirt.IsNotFound(err) {
			return nil // transient: gone with the destroy
		}
		if err != nil {
			return err
		}
		if persistent == 0 {
			return nil
		}
		if d.typ == hypervisor.TypeKVM {
			deleteAllSnapshots(l, dom)
		}
		err = l.DomainUndefineFlags(dom, d.undefineFlags())
		if c := libvirtconn.Code(err); c == int(golibvirt.ErrInvalidArg) || c == int(golibvirt.ErrNoSupport) {
			// A libvirt driver that knows none of these flags.
			err = l.DomainUndefineFlags(dom, 0)
		}
		if golibvirt.IsNotFound(err) {
			return nil
		}
		return err
	})
}

// VMState reports one VM.
func (d *Driver) VMState(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef) (hypervisor.VMInfo, error) {
	var vi hypervisor.VMInfo
	err := d.run(ctx, h, "VMState", vm.String(), func(ctx context.Context, l *golibvirt.Libvirt) error {
		dom, err := lookup(l, vm)
		if err != nil {
			return err
		}
		vi, err = vmInfo(l, h, dom)
		if golibvirt.IsNotFound(err) {
			return notFound(vm)
		}
		return err
	})
	return vi, err
}

// ListVMs reports every domain on the host (Nimbus's carry their metadata).
func (d *Driver) ListVMs(ctx context.Context, h hypervisor.Host) ([]hypervisor.VMInfo, error) {
	var out []hypervisor.VMInfo
	err := d.run(ctx, h, "ListVMs", h.String(), func(ctx context.Context, l *golibvirt.Libvirt) error {
		doms, _, err := l.ConnectListAllDomains(1, 0)
		if err != nil {
			return err
		}
		for _, dom := range doms {
			vi, err := vmInfo(l, h, dom)
			if golibvirt.IsNotFound(err) {
				continue // undefined meanwhile
			}
			if err != nil {
				return err
			}
			out = append(out, vi)
		}
		return nil
	})
	return out, err
}

// affect is where a device or size change applies: the running guest and
// its definition, or the definition alone.
func affect(l *golibvirt.Libvirt, dom golibvirt.Domain) (uint32, bool, error) {
	s, err := domState(l, dom)
	if err != nil {
		return 0, false, err
	}
	live := running(s)
	flags := uint32(golibvirt.DomainAffectConfig)
	if live {
		flags |= uint32(golibvirt.DomainAffectLive)
	}
	return flags, live, nil
}

// sameDisk tells whether a domain's disk is the volume described.
func sameDisk(x diskXML, disk hypervisor.Disk) bool {
	got := x.disk()
	if disk.Path != "" {
		return got.Path == disk.Path && (disk.Pool == "" || got.Pool == disk.Pool)
	}
	return !got.CDROM && disk.DeviceID > 0 && got.DeviceID == disk.DeviceID
}

// ChangeMedia puts an ISO into the VM's CD-ROM drive, or empties it
// (cdrom.Path ""): in the definition and, when the VM runs, live (QEMU
// opens the tray, swaps the medium and closes it; the guest sees a media
// change). The medium there already is success.
func (d *Driver) ChangeMedia(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef, cdrom hypervisor.Disk) error {
	if d.typ == hypervisor.TypeLXC {
		return d.wrap("ChangeMedia", vm.String(), hypervisor.NewError(hypervisor.ErrNotSupported, "containers have no CD-ROM drive"))
	}
	return d.run(ctx, h, "ChangeMedia", vm.String(), func(ctx context.Context, l *golibvirt.Libvirt) error {
		dom, err := lookup(l, vm)
		if err != nil {
			return err
		}
		flags, _, err := affect(l, dom)
		if err != nil {
			return err
		}
		cur, err := l.DomainGetXMLDesc(dom, 0)
		if err != nil {
			return err
		}
		dx, err := parseDomain(cur)
		if err != nil {
			return err
		}
		var drive *diskXML
		for i := range dx.Devices.Disks {
			if dx.Devices.Disks[i].Device == "cdrom" {
				drive = &dx.Devices.Disks[i]
				break
			}
		}
		if drive == nil {
			// Nimbus defines every VM with a drive; an IDE drive cannot be
			// plugged into a running guest.
			return hypervisor.NewError(hypervisor.ErrInvalid, "vm %s has no CD-ROM drive", vm)
		}
		got := drive.disk()
		if got.Path == cdrom.Path && (cdrom.Path == "" || cdrom.Pool == "" || got.Pool == cdrom.Pool) {
			return nil
		}
		cdrom.CDROM = true
		x := cdromOf(cdrom)
		x.Target = drive.Target
		dev, err := diskDeviceXML(x)
		if err != nil {
			return err
		}
		// Forced: a guest that locked the tray still has the medium changed,
		// as an administrator asked.
		return l.DomainUpdateDeviceFlags(dom, dev, golibvirt.DomainDeviceModifyFlags(flags)|golibvirt.DomainDeviceModifyForce)
	})
}

// AttachVolume attaches a disk to the VM's definition and, when it runs,
// to the guest. Attaching an attached disk is success.
func (d *Driver) AttachVolume(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef, disk hypervisor.Disk) error {
	if d.typ == hypervisor.TypeLXC {
		return d.wrap("AttachVolume", vm.String(), hypervisor.NewError(hypervisor.ErrNotSupported, "containers take no disks"))
	}
	return d.run(ctx, h, "AttachVolume", vm.String(), func(ctx context.Context, l *golibvirt.Libvirt) error {
		dom, err := lookup(l, vm)
		if err != nil {
			return err
		}
		hs, err := d.state(ctx, h, l, false)
		if err != nil {
			return err
		}
		flags, _, err := affect(l, dom)
		if err != nil {
			return err
		}
		cur, err := l.DomainGetXMLDesc(dom, 0)
		if err != nil {
			return err
		}
		dx, err := parseDomain(cur)
		if err != nil {
			return err
		}
		used := map[string]bool{}
		for _, x := range dx.Devices.Disks {
			if disk.Path != "" && sameDisk(x, disk) {
				return nil
			}
			used[x.Target.Dev] = true
		}
		x, err := diskOf(disk, hs.params)
		if err != nil {
			return err
		}
		if used[x.Target.Dev] {
			if disk.DeviceID > 0 {
				return hypervisor.NewError(hypervisor.ErrInvalid, "device id %d (%s) is taken on vm %s", disk.DeviceID, x.Target.Dev, vm)
			}
			// No device id given: the first free name after the root disk.
			for i := 1; ; i++ {
				if dev := diskTarget(x.Target.Bus, i); !used[dev] {
					x.Target.Dev = dev
					break
				}
			}
		}
		dev, err := diskDeviceXML(x)
		if err != nil {
			return err
		}
		return l.DomainAttachDeviceFlags(dom, dev, flags)
	})
}

// DetachVolume detaches the disk with disk.Path (or disk.DeviceID) and
// waits for the guest to let it go. A disk not attached is success.
func (d *Driver) DetachVolume(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef, disk hypervisor.Disk) error {
	if d.typ == hypervisor.TypeLXC {
		return d.wrap("DetachVolume", vm.String(), hypervisor.NewError(hypervisor.ErrNotSupported, "containers take no disks"))
	}
	return d.run(ctx, h, "DetachVolume", vm.String(), func(ctx context.Context, l *golibvirt.Libvirt) error {
		dom, err := lookup(l, vm)
		if err != nil {
			return err
		}
		find := func(flags golibvirt.DomainXMLFlags) (*diskXML, error) {
			x, err := l.DomainGetXMLDesc(dom, flags)
			if err != nil {
				return nil, err
			}
			dx, err := parseDomain(x)
			if err != nil {
				return nil, err
			}
			for _, x := range dx.Devices.Disks {
				if sameDisk(x, disk) {
					return &x, nil
				}
			}
			return nil, nil
		}
		flags, live, err := affect(l, dom)
		if err != nil {
			return err
		}
		for _, part := range []struct {
			flags  uint32
			xflags golibvirt.DomainXMLFlags
			on     bool
		}{
			{uint32(golibvirt.DomainAffectLive), 0, live},
			{uint32(golibvirt.DomainAffectConfig), golibvirt.DomainXMLInactive, flags&uint32(golibvirt.DomainAffectConfig) != 0},
		} {
			if !part.on {
				continue
			}
			x, err := find(part.xflags)
			if err != nil || x == nil {
				if err != nil {
					return err
				}
				continue
			}
			dev, err := diskDeviceXML(diskXML{Type: x.Type, Device: x.Device, Source: x.Source, Target: x.Target})
			if err != nil {
				return err
			}
			if err := l.DomainDetachDeviceFlags(dom, dev, part.flags); err != nil {
				if libvirtconn.Code(err) == int(golibvirt.ErrDeviceMissing) {
					continue
				}
				return err
			}
			if part.flags&uint32(golibvirt.DomainAffectLive) == 0 {
				continue
			}
			// Unplug is asynchronous: the guest must release the device.
			for {
				x, err := find(0)
				if err != nil {
					return err
				}
				if x == nil {
					break
				}
				if err := sleep(ctx, 200*time.Millisecond); err != nil {
					return hypervisor.NewError(hypervisor.ErrUnreachable, "guest did not release disk %s: %w", disk.Path, err)
				}
			}
		}
		return nil
	})
}

// ResizeVM changes vCPUs and memory: in the definition when stopped (the
// ceilings follow), live up to the ceilings when running. MHz is not
// changed (it is only a relative weight on libvirt).
func (d *Driver) ResizeVM(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef, r hypervisor.Resize) error {
	return d.run(ctx, h, "ResizeVM", vm.String(), func(ctx context.Context, l *golibvirt.Libvirt) error {
		dom, err := lookup(l, vm)
		if err != nil {
			return err
		}
		_, live, err := affect(l, dom)
		if err != nil {
			return err
		}
		x, err := l.DomainGetXMLDesc(dom, golibvirt.DomainXMLInactive)
		if err != nil {
			return err
		}
		dx, err := parseDomain(x)
		if err != nil {
			return err
		}
		maxCPU, maxMem := 0, bytesOf(dx.Memory)
		if dx.VCPU != nil {
			maxCPU = dx.VCPU.Value
		}
		if live {
			if r.VCPUs > maxCPU || r.MemoryBytes > maxMem {
				return hypervisor.NewError(hypervisor.ErrInvalid,
					"vm %s runs with at most %d vcpus and %d MiB: stop it to grow beyond", vm, maxCPU, maxMem>>20)
			}
			both := uint32(golibvirt.DomainAffectLive | golibvirt.DomainAffectConfig)
			if r.VCPUs > 0 {
				if err := l.DomainSetVcpusFlags(dom, uint32(r.VCPUs), both); err != nil {
					return err
				}
			}
			if r.MemoryBytes > 0 {
				if err := l.DomainSetMemoryFlags(dom, uint64(kib(r.MemoryBytes)), both); err != nil {
					return err
				}
			}
			return nil
		}
		cfg := uint32(golibvirt.DomainAffectConfig)
		if r.VCPUs > 0 {
			// The ceiling first when growing, the count first when shrinking.
			steps := []uint32{cfg | uint32(golibvirt.DomainVCPUMaximum), cfg}
			if r.VCPUs < maxCPU {
				steps = []uint32{cfg, cfg | uint32(golibvirt.DomainVCPUMaximum)}
			}
			for _, f := range steps {
				if err := l.DomainSetVcpusFlags(dom, uint32(r.VCPUs), f); err != nil {
					return err
				}
			}
		}
		if r.MemoryBytes > 0 {
			steps := []uint32{cfg | uint32(golibvirt.DomainMemMaximum), cfg}
			if r.MemoryBytes < maxMem {
				steps = []uint32{cfg, cfg | uint32(golibvirt.DomainMemMaximum)}
			}
			for _, f := range steps {
				if err := l.DomainSetMemoryFlags(dom, uint64(kib(r.MemoryBytes)), f); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// ConsoleEndpoint tells where the running VM's VNC console answers.
func (d *Driver) ConsoleEndpoint(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef) (hypervisor.Console, error) {
	var c hypervisor.Console
	err := d.run(ctx, h, "ConsoleEndpoint", vm.String(), func(ctx context.Context, l *golibvirt.Libvirt) error {
		dom, err := lookup(l, vm)
		if err != nil {
			return err
		}
		s, err := domState(l, dom)
		if err != nil {
			return err
		}
		if !running(s) {
			return hypervisor.NewError(hypervisor.ErrInvalid, "vm %s is not running: no console", vm)
		}
		x, err := l.DomainGetXMLDesc(dom, golibvirt.DomainXMLSecure)
		if err != nil {
			return err
		}
		dx, err := parseDomain(x)
		if err != nil {
			return err
		}
		for _, g := range dx.Devices.Graphics {
			if g.Type != "vnc" || g.Port <= 0 {
				continue
			}
			addr := g.Listen
			if len(g.Listens) > 0 && g.Listens[0].Address != "" {
				addr = g.Listens[0].Address
			}
			if ip := net.ParseIP(addr); addr == "" || (ip != nil && ip.IsUnspecified()) {
				addr = hostAddress(h.URL)
			}
			c = hypervisor.Console{Protocol: "vnc", Host: addr, Port: g.Port, Password: g.Passwd}
			return nil
		}
		return hypervisor.NewError(hypervisor.ErrNotFound, "vm %s has no vnc console", vm)
	})
	return c, err
}
