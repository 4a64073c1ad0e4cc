package libvirt

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func baseSpec() hypervisor.VMSpec {
	return hypervisor.VMSpec{
		Name: "i-2-13-VM", UUID: "6f1c7a52-94c5-4a8e-9a55-0c2d3e4f5a6b", DisplayName: "web-1",
		VCPUs: 2, MHz: 1000, MemoryBytes: 512 << 20,
		Disks: []hypervisor.Disk{
			{VolumeID: "0b7e4f5c-1d2a-4c3b-8e9f-a1b2c3d4e5f6", Pool: "3d5e6f70-8192-4a3b-9c4d-5e6f708192a3", Path: "0b7e4f5c-1d2a-4c3b-8e9f-a1b2c3d4e5f6", DeviceID: 0},
			{VolumeID: "c1d2e3f4-0000-4000-8000-000000000001", Path: "/var/lib/nimbus/data-1.qcow2", DeviceID: 1},
		},
		NICs:            []hypervisor.NIC{{MAC: "02:00:11:22:33:44", Label: "cloudbr0", DeviceID: 0, Default: true}},
		ConsolePassword: "s3cret&<>",
		Metadata:        map[string]string{"account": "admin", "template": "tiny-linux"},
	}
}

func kvmParams() domainParams {
	return domainParams{Type: hypervisor.TypeKVM, DomainType: "kvm", Arch: "x86_64", CPUMode: "host-model"}
}

func TestDomainXMLGolden(t *testing.T) {
	tests := map[string]struct {
		spec   func() hypervisor.VMSpec
		params domainParams
	}{
		"kvm": {spec: baseSpec, params: kvmParams()},
		"kvm-tcg": {spec: func() hypervisor.VMSpec {
			s := baseSpec()
			s.Metadata["hostname"] = "web-1.example.com"
			return s
		}, params: domainParams{Type: hypervisor.TypeKVM, DomainType: "qemu", Arch: "x86_64", CPUMode: "host-model",
			ConsoleDir: "/srv/console", VNCListen: "10.0.0.5"}},
		"kvm-scalable": {spec: func() hypervisor.VMSpec {
			s := baseSpec()
			s.MaxVCPUs, s.MaxMemoryBytes = 8, 4<<30
			s.Disks = append(s.Disks, hypervisor.Disk{CDROM: true, ReadOnly: true, Path: "/mnt/iso/debian.iso"})
			s.BootOrder = []hypervisor.BootDevice{hypervisor.BootCDROM, hypervisor.BootDisk}
			return s
		}, params: domainParams{Type: hypervisor.TypeKVM, DomainType: "kvm", Arch: "x86_64", CPUMode: "custom", CPUModel: "Skylake-Server", Machine: "pc"}},
		// Deployed from an ISO: a blank root disk and the ISO's copy on the
		// same pool in the CD-ROM drive, booted first.
		"kvm-iso": {spec: func() hypervisor.VMSpec {
			s := baseSpec()
			s.Disks = append(s.Disks[:1], hypervisor.Disk{CDROM: true, ReadOnly: true, Format: "raw",
				Pool: "3d5e6f70-8192-4a3b-9c4d-5e6f708192a3", Path: "tmpl-9a8b7c6d-0000-4000-8000-00000000150a"})
			return s
		}, params: domainParams{Type: hypervisor.TypeKVM, DomainType: "qemu", Arch: "x86_64", CPUMode: "host-model"}},
		"kvm-vlan-linux-bridge": {spec: func() hypervisor.VMSpec {
			s := baseSpec()
			s.Disks = s.Disks[:1]
			s.Disks[0].Bus = "scsi"
			s.NICs = append(s.NICs, hypervisor.NIC{MAC: "02:00:11:22:33:55", Label: "cloudbr1", VLAN: 100, DeviceID: 1, Model: "e1000"})
			return s
		}, params: kvmParams()},
		"kvm-vlan-ovs": {spec: func() hypervisor.VMSpec {
			s := baseSpec()
			s.Disks = s.Disks[:1]
			s.NICs = append(s.NICs, hypervisor.NIC{MAC: "02:00:11:22:33:55", Label: "cloudbr1", VLAN: 100, DeviceID: 1})
			return s
		}, params: domainParams{Type: hypervisor.TypeKVM, DomainType: "kvm", Arch: "x86_64", CPUMode: "host-passthrough", OVS: true}},
		"lxc": {spec: func() hypervisor.VMSpec {
			s := baseSpec()
			s.Disks = []hypervisor.Disk{{Path: "/var/lib/nimbus/rootfs/i-2-13-VM", Format: "dir"},
				{Path: "/var/lib/libvirt/images/data-1.raw", Format: "raw", DeviceID: 1}}
			s.Metadata["lxc.init"] = "/bin/sh"
			return s
		}, params: domainParams{Type: hypervisor.TypeLXC, DomainType: "lxc"}},
		"lxc-image": {spec: func() hypervisor.VMSpec {
			s := baseSpec()
			s.Disks = []hypervisor.Disk{{Path: "/var/lib/nimbus/ct.qcow2"}}
			s.NICs = nil
			s.Metadata["hostname"] = "web-1"
			return s
		}, params: domainParams{Type: hypervisor.TypeLXC, DomainType: "lxc"}},
		"xen": {spec: baseSpec, params: domainParams{Type: hypervisor.TypeXenProject, DomainType: "xen", Arch: "x86_64"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := DomainXML(tc.spec(), tc.params)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", name+".xml")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to write it)", err)
			}
			if got != string(want) {
				t.Errorf("domain xml differs from %s (go test -update rewrites it):\n%s", golden, got)
			}
			// What DomainXML writes reads back to the same VM.
			d, err := parseDomain(got)
			if err != nil {
				t.Fatal(err)
			}
			vi := d.info(hypervisor.StateStopped)
			spec := tc.spec()
			if vi.UUID != spec.UUID || vi.Name != spec.Name || vi.VCPUs != spec.VCPUs || vi.MemoryBytes != spec.MemoryBytes {
				t.Errorf("read back %+v", vi)
			}
			for k, v := range spec.Metadata {
				if vi.Metadata[k] != v {
					t.Errorf("metadata %s = %q, want %q", k, vi.Metadata[k], v)
				}
			}
		})
	}
}

func TestDomainXMLInvalid(t *testing.T) {
	tests := map[string]func(*hypervisor.VMSpec){
		"no name":         func(s *hypervisor.VMSpec) { s.Name = "" },
		"no memory":       func(s *hypervisor.VMSpec) { s.MemoryBytes = 0 },
		"relative path":   func(s *hypervisor.VMSpec) { s.Disks[1].Path = "data.qcow2" },
		"unknown bus":     func(s *hypervisor.VMSpec) { s.Disks[1].Bus = "floppy" },
		"nic no label":    func(s *hypervisor.VMSpec) { s.NICs[0].Label = "" },
		"vlan too big":    func(s *hypervisor.VMSpec) { s.NICs[0].VLAN = 5000 },
		"same disk twice": func(s *hypervisor.VMSpec) { s.Disks[1].Path = s.Disks[0].Path },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			s := baseSpec()
			mutate(&s)
			if _, err := DomainXML(s, kvmParams()); !errors.Is(err, hypervisor.ErrInvalid) {
				t.Fatalf("DomainXML = %v; want ErrInvalid", err)
			}
		})
	}
}

// TestLXCImagePathLimit: libvirt's LXC driver cannot loop-mount an image
// whose path fills the loop device's 64-byte name; DomainXML says so
// instead of a start failing with "Unable to set backing file".
func TestLXCImagePathLimit(t *testing.T) {
	p := domainParams{Type: hypervisor.TypeLXC, DomainType: "lxc"}
	s := baseSpec()
	s.Disks = []hypervisor.Disk{{Path: "/var/lib/libvirt/images/0b7e4f5c-1d2a-4c3b-8e9f-a1b2c3d4e5f6", Format: "raw"}}
	if _, err := DomainXML(s, p); err != nil {
		t.Fatalf("60-character path: %v", err)
	}
	s.Disks[0].Path = "/mnt/3d5e6f70-8192-4a3b-9c4d-5e6f708192a3/0b7e4f5c-1d2a-4c3b-8e9f-a1b2c3d4e5f6"
	if _, err := DomainXML(s, p); !errors.Is(err, hypervisor.ErrInvalid) || !strings.Contains(err.Error(), "shorter path") {
		t.Fatalf("78-character path: %v; want ErrInvalid naming the limit", err)
	}
}

func TestDiskTargets(t *testing.T) {
	for id, want := range map[int]string{0: "vda", 1: "vdb", 25: "vdz", 26: "vdaa", 27: "vdab"} {
		if got := diskTarget("virtio", id); got != want {
			t.Errorf("diskTarget(%d) = %s, want %s", id, got, want)
		}
		if back := deviceIDOf(want); back != id {
			t.Errorf("deviceIDOf(%s) = %d, want %d", want, back, id)
		}
	}
	if got := deviceIDOf("xvdc"); got != 2 {
		t.Errorf("deviceIDOf(xvdc) = %d", got)
	}
}

func TestHostURL(t *testing.T) {
	tests := map[string]struct {
		typ, in, want string
		err           error
	}{
		"kvm local":     {typ: "KVM", in: "qemu:///system", want: "qemu:///system"},
		"kvm http":      {typ: "KVM", in: "http://10.0.0.5", want: "qemu+ssh://10.0.0.5/system"},
		"lxc http":      {typ: "LXC", in: "http://10.0.0.5", want: "lxc+ssh://10.0.0.5/"},
		"xen local":     {typ: "XenProject", in: "xen:///", want: "xen:///"},
		"kvm with lxc":  {typ: "KVM", in: "lxc:///", err: hypervisor.ErrInvalid},
		"lxc with qemu": {typ: "LXC", in: "qemu:///system", err: hypervisor.ErrInvalid},
		"test for any":  {typ: "LXC", in: "test:///default", want: "test:///default"},
		"http no host":  {typ: "KVM", in: "http://", err: hypervisor.ErrInvalid},
		"garbage":       {typ: "KVM", in: "not a url", err: hypervisor.ErrInvalid},
		"tcp":           {typ: "KVM", in: "qemu+tcp://kvm1:16509/system", want: "qemu+tcp://kvm1:16509/system"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := HostURL(tc.typ, tc.in)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("HostURL = %q, %v; want %v", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("HostURL = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
