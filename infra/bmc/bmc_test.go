package bmc_test

import (
	"context"
	"errors"
	"testing"

	"github.com/nimbus-cloud/nimbus/infra/bmc"
)

type fake struct{ bmc.Unsupported }

func (fake) Provider() string { return bmc.ProviderSimulator }

var _ bmc.Driver = fake{}

func TestRegistry(t *testing.T) {
	r := bmc.NewRegistry()
	r.Register("Simulator", func(bmc.Config) (bmc.Driver, error) { return fake{}, nil })
	tests := map[string]struct {
		name    string
		kind    error
		message string
	}{
		"simulator":        {name: "simulator"},
		"any case":         {name: "SIMULATOR"},
		"alias":            {name: "sim"},
		"ipmi not yet":     {name: "IPMI", kind: bmc.ErrNotSupported, message: "bmc provider ipmi is not supported yet"},
		"ipmitool alias":   {name: "ipmitool", kind: bmc.ErrNotSupported, message: "bmc provider ipmi is not supported yet"},
		"redfish not yet":  {name: "Redfish", kind: bmc.ErrNotSupported, message: "bmc provider redfish is not supported yet"},
		"unknown provider": {name: "ilo4", kind: bmc.ErrInvalid, message: `unknown bmc provider "ilo4" (known: ipmi, redfish, simulator)`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d, err := r.Open(tc.name, bmc.Config{})
			if tc.kind == nil {
				if err != nil || d.Provider() != "simulator" {
					t.Fatalf("Open(%q) = %v, %v", tc.name, d, err)
				}
				return
			}
			if !errors.Is(err, tc.kind) || err.Error() != tc.message {
				t.Fatalf("Open(%q) error %q, want %q (%v)", tc.name, err, tc.message, tc.kind)
			}
		})
	}
	defer func() {
		if recover() == nil {
			t.Error("second registration did not panic")
		}
	}()
	r.Register("sim", nil)
}

func TestUnsupported(t *testing.T) {
	err := fake{bmc.Unsupported{DriverName: "redfish"}}.SetBootDevice(context.Background(), bmc.BMC{}, bmc.BootPXE, bmc.BootOptions{})
	if !errors.Is(err, bmc.ErrNotSupported) || err.Error() != "redfish SetBootDevice: not supported" {
		t.Errorf("err %v", err)
	}
	inv := bmc.Inventory{CPUs: []bmc.CPU{{Cores: 8}, {Cores: 6}}}
	if inv.Cores() != 14 {
		t.Errorf("cores %d", inv.Cores())
	}
}
