package tests

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-cloud/nimbus/tests/testenv"
)

// TestKVMAddHost adds the local libvirtd as a KVM host through the API:
// the host comes Up with what libvirt reports, and URLs the libvirt driver
// cannot use are refused before any job runs.
func TestKVMAddHost(t *testing.T) {
	libvirtURL := os.Getenv("NIMBUS_TEST_LIBVIRT")
	if libvirtURL == "" {
		t.Skip("NIMBUS_TEST_LIBVIRT is unset: no libvirtd (scripts/services.sh starts one)")
	}
	s := testenv.StartStack(t, testenv.StackOptions{})
	cs := s.Client
	cs.Timeout(3 * time.Minute)
	zoneID, podID := hostZonePod(t, s, "zone-kvm")
	cl, err := cs.Cluster.AddCluster(cs.Cluster.NewAddClusterParams("kvm1", "CloudManaged", "KVM", podID, zoneID))
	if err != nil {
		t.Fatalf("addCluster KVM: %v", err)
	}
	add := func(hv, rawURL string) error {
		p := cs.Host.NewAddHostParams(hv, podID, rawURL, zoneID)
		p.SetClusterid(cl.Id)
		p.SetUsername("root")
		p.SetPassword("unused")
		_, err := cs.Host.AddHost(p)
		return err
	}
	for name, u := range map[string]string{
		"lxc url":        "lxc:///",
		"unknown scheme": "vbox:///session",
		"no path":        "qemu+tcp://10.0.0.5",
		"unix with host": "qemu+unix://10.0.0.5/system",
	} {
		hostWantErr(t, "addHost KVM "+name, add("KVM", u), 431, "url")
	}

	p := cs.Host.NewAddHostParams("KVM", podID, libvirtURL, zoneID)
	p.SetClusterid(cl.Id)
	start := time.Now()
	h, err := cs.Host.AddHost(p)
	if err != nil {
		t.Fatalf("addHost %s: %v", libvirtURL, err)
	}
	t.Logf("addHost %s took %v", libvirtURL, time.Since(start).Round(time.Millisecond))
	if h.State != "Up" || h.Hypervisor != "KVM" || h.Cpunumber <= 0 || h.Cpuspeed <= 0 || h.Memorytotal <= 0 ||
		h.Hypervisorversion == "" || h.Clusterid != cl.Id {
		t.Fatalf("addHost = %+v", h)
	}
	if want, _ := os.Hostname(); want != "" && !strings.EqualFold(h.Name, want) {
		t.Logf("host name %q (machine %q)", h.Name, want)
	}
}
