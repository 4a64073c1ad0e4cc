package storage

import (
	"archive/tar"
	"io"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/ovf"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// ovaDiskSize reads an OVA's descriptor (the tar's .ovf) for the capacity
// of its first disk, the VM's boot disk: the size CloudStack shows for an
// OVA template and gives its root volumes, not the archive's bytes (a
// compressed disk of a few KiB can hold a disk of gigabytes).
func ovaDiskSize(r io.ReaderAt, size int64) (int64, error) {
	tr := tar.NewReader(io.NewSectionReader(r, 0, size))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return 0, hypervisor.NewError(ErrInvalid, "the image is not an OVA: its tar archive holds no .ovf descriptor")
		}
		if err != nil {
			return 0, hypervisor.NewError(ErrInvalid, "the image is not an OVA (a tar archive): %v", err)
		}
		if !strings.HasSuffix(strings.ToLower(h.Name), ".ovf") {
			continue
		}
		env, err := ovf.Unmarshal(io.LimitReader(tr, 4<<20))
		if err != nil {
			return 0, hypervisor.NewError(ErrInvalid, "the OVA's descriptor %s is not OVF: %v", h.Name, err)
		}
		if env.Disk == nil || len(env.Disk.Disks) == 0 {
			return 0, hypervisor.NewError(ErrInvalid, "the OVA's descriptor %s names no disk", h.Name)
		}
		d := env.Disk.Disks[0]
		n, err := strconv.ParseInt(d.Capacity, 10, 64)
		unit := int64(1)
		if d.CapacityAllocationUnits != nil {
			unit = ovf.ParseCapacityAllocationUnits(*d.CapacityAllocationUnits)
		}
		if err != nil || n <= 0 || unit <= 0 {
			return 0, hypervisor.NewError(ErrInvalid, "the OVA's disk %s has no capacity Nimbus can read (%q in units %v)", d.DiskID, d.Capacity, d.CapacityAllocationUnits)
		}
		return n * unit, nil
	}
}
