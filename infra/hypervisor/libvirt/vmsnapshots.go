package libvirt

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"strings"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/libvirtconn"
)

// VM snapshots on KVM are libvirt internal snapshots: every qcow2 disk of
// the domain keeps the snapshot inside its own file (our root volumes are
// qcow2 overlays on the template, which takes them), and a running
// domain's memory goes into the snapshot too. QEMU cannot take an internal
// snapshot of a running VM without its memory, so a Disk snapshot of a
// running VM carries the memory all the same, and reverting to it as a
// Disk snapshot leaves the VM paused at that point and then powers it off:
// the disks are as they were, the VM Stopped, as CloudStack's Disk
// semantics want. Raw disks cannot hold internal snapshots: such a VM is
// refused with ErrNotSupported, naming the disk. Snapshots are named by
// the Nimbus snapshot's UUID and looked up by it, so every call is
// idempotent.

type snapXML struct {
	XMLName     xml.Name `xml:"domainsnapshot"`
	Name        string   `xml:"name"`
	Description string   `xml:"description,omitempty"`
	State       string   `xml:"state,omitempty"`
	Parent      *struct {
		Name string `xml:"name"`
	} `xml:"parent,omitempty"`
}

type diskListXML struct {
	Disks []struct {
		Device string `xml:"device,attr"`
		Driver struct {
			Type string `xml:"type,attr"`
		} `xml:"driver"`
		Target struct {
			Dev string `xml:"dev,attr"`
		} `xml:"target"`
		ReadOnly *struct{} `xml:"readonly"`
	} `xml:"devices>disk"`
}

// noSnapshot tells whether err says the snapshot (or its domain) is not there.
func noSnapshot(err error) bool {
	return err != nil && (golibvirt.IsNotFound(err) || libvirtconn.Code(err) == int(golibvirt.ErrNoDomainSnapshot))
}

func (d *Driver) snapshotsSupported(op string, vm hypervisor.VMRef) error {
	if d.typ != hypervisor.TypeKVM {
		return d.wrap(op, vm.String(), hypervisor.NewError(hypervisor.ErrNotSupported, "VM snapshots are supported on KVM only, not on %s", d.typ))
	}
	return nil
}

// checkQcow2 refuses a domain with a writable disk that is not qcow2:
// libvirt keeps internal snapshots only in qcow2 files.
func checkQcow2(l *golibvirt.Libvirt, dom golibvirt.Domain) error {
	desc, err := l.DomainGetXMLDesc(dom, golibvirt.DomainXMLInactive)
	if err != nil {
		return err
	}
	var dx diskListXML
	if err := xml.Unmarshal([]byte(desc), &dx); err != nil {
		return fmt.Errorf("domain xml: %w", err)
	}
	for _, dk := range dx.Disks {
		if dk.Device != "disk" || dk.ReadOnly != nil {
			continue
		}
		if dk.Driver.Type != "qcow2" {
			return hypervisor.NewError(hypervisor.ErrNotSupported,
				"VM snapshots on KVM are qcow2 internal snapshots, and disk %s is %s: it cannot hold one", dk.Target.Dev, dk.Driver.Type)
		}
	}
	return nil
}

// snapInfo reads a snapshot's name, parent, state and whether it is current.
func snapInfo(l *golibvirt.Libvirt, snap golibvirt.DomainSnapshot) (hypervisor.VMSnapshotInfo, error) {
	desc, err := l.DomainSnapshotGetXMLDesc(snap, 0)
	if err != nil {
		return hypervisor.VMSnapshotInfo{}, err
	}
	var sx snapXML
	if err := xml.Unmarshal([]byte(desc), &sx); err != nil {
		return hypervisor.VMSnapshotInfo{}, fmt.Errorf("snapshot xml: %w", err)
	}
	out := hypervisor.VMSnapshotInfo{Name: sx.Name, Ref: sx.Name, Memory: sx.State == "running" || sx.State == "paused"}
	if sx.Parent != nil {
		out.Parent = sx.Parent.Name
	}
	cur, err := l.DomainSnapshotIsCurrent(snap, 0)
	if err != nil {
		return out, err
	}
	out.Current = cur == 1
	return out, nil
}

// CreateVMSnapshot takes an internal snapshot of the domain, with its
// memory when it runs; one of that name already there is answered as it is.
func (d *Driver) CreateVMSnapshot(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef, s hypervisor.VMSnapshotSpec) (hypervisor.VMSnapshotInfo, error) {
	const op = "CreateVMSnapshot"
	if err := d.snapshotsSupported(op, vm); err != nil {
		return hypervisor.VMSnapshotInfo{}, err
	}
	if s.Name == "" {
		return hypervisor.VMSnapshotInfo{}, d.wrap(op, vm.String(), hypervisor.NewError(hypervisor.ErrInvalid, "no snapshot name"))
	}
	if s.Quiesce {
		return hypervisor.VMSnapshotInfo{}, d.wrap(op, vm.String(), hypervisor.NewError(hypervisor.ErrNotSupported,
			"libvirt cannot quiesce the guest for an internal snapshot"))
	}
	var out hypervisor.VMSnapshotInfo
	err := d.run(ctx, h, op, vm.String(), func(ctx context.Context, l *golibvirt.Libvirt) error {
		dom, err := lookup(l, vm)
		if err != nil {
			return err
		}
		if snap, err := l.DomainSnapshotLookupByName(dom, s.Name, 0); err == nil {
			out, err = snapInfo(l, snap)
			return err
		} else if !noSnapshot(err) {
			return err
		}
		st, err := domState(l, dom)
		if err != nil {
			return err
		}
		if s.Memory && !running(st) {
			return hypervisor.NewError(hypervisor.ErrInvalid, "a snapshot with memory needs the VM running")
		}
		if err := checkQcow2(l, dom); err != nil {
			return err
		}
		desc := s.DisplayName
		if s.Description != "" {
			desc = strings.TrimSpace(desc + ": " + s.Description)
		}
		body, err := xml.Marshal(snapXML{Name: s.Name, Description: desc})
		if err != nil {
			return err
		}
		snap, err := l.DomainSnapshotCreateXML(dom, string(body), uint32(golibvirt.DomainSnapshotCreateAtomic))
		if err != nil {
			return err
		}
		out, err = snapInfo(l, snap)
		return err
	})
	return out, err
}

// RevertVMSnapshot reverts the domain to the snapshot: running after one
// with memory, powered off after a Disk one (see above).
func (d *Driver) RevertVMSnapshot(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef, s hypervisor.VMSnapshotSpec) (hypervisor.State, error) {
	const op = "RevertVMSnapshot"
	if err := d.snapshotsSupported(op, vm); err != nil {
		return hypervisor.StateUnknown, err
	}
	out := hypervisor.StateStopped
	err := d.run(ctx, h, op, vm.String(), func(ctx context.Context, l *golibvirt.Libvirt) error {
		dom, err := lookup(l, vm)
		if err != nil {
			return err
		}
		snap, err := l.DomainSnapshotLookupByName(dom, s.Name, 0)
		if err != nil {
			return err
		}
		if s.Memory {
			out = hypervisor.StateRunning
			return l.DomainRevertToSnapshot(snap, uint32(golibvirt.DomainSnapshotRevertRunning))
		}
		if err := l.DomainRevertToSnapshot(snap, uint32(golibvirt.DomainSnapshotRevertPaused)); err != nil {
			return err
		}
		if st, err := domState(l, dom); err == nil && running(st) {
			err := l.DomainDestroyFlags(dom, golibvirt.DomainDestroyDefault)
			if err != nil && libvirtconn.Code(err) != int(golibvirt.ErrOperationInvalid) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return hypervisor.StateUnknown, err
	}
	return out, nil
}

// DeleteVMSnapshot deletes the snapshot (its data leaves the qcow2 files;
// its children stay); a missing domain or snapshot is success.
func (d *Driver) DeleteVMSnapshot(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef, name string) error {
	const op = "DeleteVMSnapshot"
	if err := d.snapshotsSupported(op, vm); err != nil {
		return err
	}
	return d.run(ctx, h, op, vm.String(), func(ctx context.Context, l *golibvirt.Libvirt) error {
		dom, err := lookup(l, vm)
		if errors.Is(err, hypervisor.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		snap, err := l.DomainSnapshotLookupByName(dom, name, 0)
		if noSnapshot(err) {
			return nil
		}
		if err != nil {
			return err
		}
		err = l.DomainSnapshotDelete(snap, 0)
		if noSnapshot(err) {
			return nil
		}
		return err
	})
}

// ListVMSnapshots lists the domain's snapshots, parents before children.
func (d *Driver) ListVMSnapshots(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef) ([]hypervisor.VMSnapshotInfo, error) {
	const op = "ListVMSnapshots"
	if err := d.snapshotsSupported(op, vm); err != nil {
		return nil, err
	}
	var out []hypervisor.VMSnapshotInfo
	err := d.run(ctx, h, op, vm.String(), func(ctx context.Context, l *golibvirt.Libvirt) error {
		dom, err := lookup(l, vm)
		if err != nil {
			return err
		}
		snaps, _, err := l.DomainListAllSnapshots(dom, 1, uint32(golibvirt.DomainSnapshotListTopological))
		if err != nil {
			return err
		}
		for _, s := range snaps {
			info, err := snapInfo(l, s)
			if err != nil {
				return err
			}
			out = append(out, info)
		}
		return nil
	})
	return out, err
}

// deleteAllSnapshots deletes a domain's internal snapshots before it is
// undefined, so its disks keep no data of a VM that is gone (undefining
// alone drops only libvirt's record of them). Best effort: the undefine
// still drops the metadata.
func deleteAllSnapshots(l *golibvirt.Libvirt, dom golibvirt.Domain) {
	snaps, _, err := l.DomainListAllSnapshots(dom, 1, uint32(golibvirt.DomainSnapshotListTopological))
	if err != nil {
		return
	}
	for i := len(snaps) - 1; i >= 0; i-- { // children first
		_ = l.DomainSnapshotDelete(snaps[i], 0)
	}
}
