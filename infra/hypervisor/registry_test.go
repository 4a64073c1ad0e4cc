package hypervisor_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

type fakeDriver struct {
	hypervisor.Unsupported
}

var _ hypervisor.Driver = (*fakeDriver)(nil)

func (fakeDriver) Type() string { return hypervisor.TypeSimulator }

func TestRegistryGet(t *testing.T) {
	r := hypervisor.NewRegistry()
	r.Register("simulator", func(hypervisor.Config) (hypervisor.Driver, error) {
		return &fakeDriver{hypervisor.Unsupported{DriverName: "Simulator"}}, nil
	})
	r.Register("KVM", func(hypervisor.Config) (hypervisor.Driver, error) {
		return &fakeDriver{hypervisor.Unsupported{DriverName: "KVM"}}, nil
	})
	tests := map[string]struct {
		name    string
		kind    error  // nil: found
		message string // exact error text when kind is set
		contain []string
	}{
		"exact":                     {name: "Simulator"},
		"lower case":                {name: "simulator"},
		"upper case":                {name: "KVM"},
		"mixed case":                {name: "kVm"},
		"hyperv not yet":            {name: "Hyperv", kind: hypervisor.ErrNotSupported, message: "hypervisor type Hyperv is not supported yet"},
		"hyper-v spelled with dash": {name: "Hyper-V", kind: hypervisor.ErrNotSupported, message: "hypervisor type Hyperv is not supported yet"},
		"xenserver not yet":         {name: "xenserver", kind: hypervisor.ErrNotSupported, message: "hypervisor type XenServer is not supported yet"},
		"xen project with space":    {name: "Xen Project", kind: hypervisor.ErrNotSupported, message: "hypervisor type XenProject is not supported yet"},
		"vsphere alias":             {name: "vSphere", kind: hypervisor.ErrNotSupported, message: "hypervisor type VMware is not supported yet"},
		"unknown": {name: "Ovm9", kind: hypervisor.ErrInvalid,
			contain: []string{`"Ovm9"`, "KVM", "LXC", "XenProject", "VMware", "BareMetal", "Hyperv", "XenServer", "Simulator"}},
		"empty": {name: "", kind: hypervisor.ErrInvalid, contain: []string{"unknown hypervisor type"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f, err := r.Get(tc.name)
			if tc.kind == nil {
				if err != nil {
					t.Fatalf("Get(%q): %v", tc.name, err)
				}
				d, err := f(hypervisor.Config{})
				if err != nil || d == nil {
					t.Fatalf("factory: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.kind) {
				t.Fatalf("Get(%q) = %v, want kind %v", tc.name, err, tc.kind)
			}
			if tc.message != "" && err.Error() != tc.message {
				t.Errorf("message %q, want %q", err.Error(), tc.message)
			}
			for _, s := range tc.contain {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("message %q does not name %q", err.Error(), s)
				}
			}
		})
	}
	if got := strings.Join(r.Supported(), ","); got != "KVM,Simulator" {
		t.Errorf("Supported() = %s", got)
	}
}

func TestRegistryRegisterPanics(t *testing.T) {
	tests := map[string]struct {
		first, second string
	}{
		"unknown type":            {second: "Parallels"},
		"twice":                   {first: "KVM", second: "KVM"},
		"twice in different case": {first: "KVM", second: "kvm"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := hypervisor.NewRegistry()
			f := func(hypervisor.Config) (hypervisor.Driver, error) { return nil, nil }
			if tc.first != "" {
				r.Register(tc.first, f)
			}
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%q) did not panic", tc.second)
				}
			}()
			r.Register(tc.second, f)
		})
	}
}

func TestUnsupportedNamesOpAndDriver(t *testing.T) {
	d := &fakeDriver{hypervisor.Unsupported{DriverName: "Hyperv"}}
	err := d.MigrateVM(context.Background(), hypervisor.Host{}, hypervisor.VMRef{}, hypervisor.Host{}, hypervisor.MigrateOptions{})
	if !errors.Is(err, hypervisor.ErrNotSupported) {
		t.Fatalf("err = %v", err)
	}
	if err.Error() != "Hyperv MigrateVM: not supported" {
		t.Errorf("message %q", err.Error())
	}
	if hypervisor.Retryable(err) || hypervisor.ErrorType(err) != "NotSupported" {
		t.Errorf("retryable %v, type %q", hypervisor.Retryable(err), hypervisor.ErrorType(err))
	}
}

func TestErrorTypes(t *testing.T) {
	cause := errors.New("connection refused")
	tests := map[string]struct {
		err       error
		typ       string
		retryable bool
		message   string
	}{
		"not found": {err: hypervisor.Errorf("Simulator", "StartVM", "i-2-3-VM", hypervisor.ErrNotFound, "no vm on host %s", "h1"),
			typ: "NotFound", message: "Simulator StartVM i-2-3-VM: not found: no vm on host h1"},
		"unreachable": {err: &hypervisor.OpError{Driver: "KVM", Op: "CheckHost", Target: "h1", Kind: hypervisor.ErrUnreachable, Err: cause},
			typ: "Unreachable", retryable: true, message: "KVM CheckHost h1: unreachable: connection refused"},
		"invalid":      {err: hypervisor.NewError(hypervisor.ErrInvalid, "bad spec"), typ: "Invalid", message: "bad spec"},
		"capacity":     {err: hypervisor.NewError(hypervisor.ErrCapacity, "pool full"), typ: "Capacity", message: "pool full"},
		"unclassified": {err: cause, retryable: true, message: "connection refused"},
		"wrapped":      {err: errors.Join(errors.New("x"), hypervisor.NewError(hypervisor.ErrNotFound, "gone")), typ: "NotFound", message: "x\ngone"},
		"canceled":     {err: context.Canceled, message: "context canceled"},
		"deadline":     {err: context.DeadlineExceeded, retryable: true, message: "context deadline exceeded"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := hypervisor.ErrorType(tc.err); got != tc.typ {
				t.Errorf("ErrorType = %q, want %q", got, tc.typ)
			}
			if got := hypervisor.Retryable(tc.err); got != tc.retryable {
				t.Errorf("Retryable = %v, want %v", got, tc.retryable)
			}
			if tc.err.Error() != tc.message {
				t.Errorf("message %q, want %q", tc.err.Error(), tc.message)
			}
		})
	}
	var op *hypervisor.OpError
	if err := hypervisor.Errorf("X", "Op", "", hypervisor.ErrNotFound, "%w", cause); !errors.As(err, &op) || !errors.Is(err, cause) {
		t.Errorf("OpError does not unwrap its cause")
	}
}

func TestVMSpecValidate(t *testing.T) {
	ok := hypervisor.VMSpec{Name: "i-2-3-VM", UUID: "u", VCPUs: 1, MemoryBytes: 1 << 30,
		Disks: []hypervisor.Disk{{Path: "a"}, {CDROM: true}}}
	tests := map[string]struct {
		mutate func(*hypervisor.VMSpec)
		ok     bool
	}{
		"valid":          {mutate: func(*hypervisor.VMSpec) {}, ok: true},
		"no name":        {mutate: func(s *hypervisor.VMSpec) { s.Name = "" }},
		"no uuid":        {mutate: func(s *hypervisor.VMSpec) { s.UUID = "" }},
		"no cpu":         {mutate: func(s *hypervisor.VMSpec) { s.VCPUs = 0 }},
		"no memory":      {mutate: func(s *hypervisor.VMSpec) { s.MemoryBytes = 0 }},
		"max below":      {mutate: func(s *hypervisor.VMSpec) { s.MaxVCPUs = 0; s.MaxMemoryBytes = 1 }},
		"duplicate disk": {mutate: func(s *hypervisor.VMSpec) { s.Disks = append(s.Disks, hypervisor.Disk{Path: "a"}) }},
		"disk no path":   {mutate: func(s *hypervisor.VMSpec) { s.Disks = []hypervisor.Disk{{DeviceID: 1}} }},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := ok
			s.Disks = append([]hypervisor.Disk(nil), ok.Disks...)
			tc.mutate(&s)
			err := s.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate = %v, want ok %v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, hypervisor.ErrInvalid) {
				t.Errorf("kind of %v", err)
			}
		})
	}
}
