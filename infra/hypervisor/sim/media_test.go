package sim

import (
	"context"
	"testing"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

func cdromOf(t *testing.T, d *Driver, h hypervisor.Host, ref hypervisor.VMRef) (hypervisor.Disk, int) {
	t.Helper()
	vi, err := d.VMState(context.Background(), h, ref)
	if err != nil {
		t.Fatal(err)
	}
	n, cd := 0, hypervisor.Disk{}
	for _, k := range vi.Disks {
		if k.CDROM {
			n, cd = n+1, k
		}
	}
	return cd, n
}

// TestChangeMedia puts an ISO into a running VM's drive, again (no
// change), swaps it, and ejects it; the drive stays one drive.
func TestChangeMedia(t *testing.T) {
	ctx := context.Background()
	d := open(t, t.TempDir())
	h := testHost("h1")
	connect(t, d, h)
	spec := testSpec(1)
	if _, err := d.DefineVM(ctx, h, spec); err != nil {
		t.Fatal(err)
	}
	mustKind(t, d.StartVM(ctx, h, spec.Ref()), nil)
	iso := hypervisor.Disk{CDROM: true, Pool: "pool-1", Path: "tmpl-iso-1"}
	for range 2 {
		mustKind(t, d.ChangeMedia(ctx, h, spec.Ref(), iso), nil)
		if cd, n := cdromOf(t, d, h, spec.Ref()); n != 1 || cd.Path != "tmpl-iso-1" || cd.Pool != "pool-1" || !cd.ReadOnly {
			t.Fatalf("after ChangeMedia: %d drives, %+v", n, cd)
		}
	}
	iso.Path = "tmpl-iso-2"
	mustKind(t, d.ChangeMedia(ctx, h, spec.Ref(), iso), nil)
	if cd, n := cdromOf(t, d, h, spec.Ref()); n != 1 || cd.Path != "tmpl-iso-2" {
		t.Fatalf("after the swap: %d drives, %+v", n, cd)
	}
	mustKind(t, d.ChangeMedia(ctx, h, spec.Ref(), hypervisor.Disk{CDROM: true}), nil)
	if cd, n := cdromOf(t, d, h, spec.Ref()); n != 1 || cd.Path != "" {
		t.Fatalf("after the eject: %d drives, %+v", n, cd)
	}
	mustKind(t, d.ChangeMedia(ctx, h, hypervisor.VMRef{Name: "i-9-9-VM"}, iso), hypervisor.ErrNotFound)
}

// TestSpecCodecOldISO decodes a spec recorded when the ISO was a path of
// its own: it comes back as the CD-ROM drive.
func TestSpecCodecOldISO(t *testing.T) {
	spec := testSpec(2)
	b := encodeSpec(&spec)
	// The old slot sits after the boot order (none here): an empty string.
	e := encoder{}
	e.str("")
	old := &encoder{}
	old.str("/mnt/iso/old.iso")
	i := len(b) - len(tailAfterISO(t, &spec))
	legacy := append(append(append([]byte{}, b[:i-len(e.b)]...), old.b...), b[i:]...)
	got, err := decodeSpec(legacy)
	if err != nil {
		t.Fatal(err)
	}
	cd, ok := got.CDROM()
	if !ok || cd.Path != "/mnt/iso/old.iso" || !cd.ReadOnly {
		t.Fatalf("decoded %+v", got.Disks)
	}
}

// tailAfterISO is the encoding of what follows the old ISO slot.
func tailAfterISO(t *testing.T, s *hypervisor.VMSpec) []byte {
	t.Helper()
	e := encoder{}
	e.str(s.UserData)
	e.str(s.ConsolePassword)
	e.uint(uint64(len(s.Metadata)))
	if len(s.Metadata) != 0 {
		t.Fatal("test spec has metadata")
	}
	return e.b
}
