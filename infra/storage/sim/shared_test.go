package sim_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/nimbus-cloud/nimbus/infra/bmc"
	bmcsim "github.com/nimbus-cloud/nimbus/infra/bmc/sim"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	hvsim "github.com/nimbus-cloud/nimbus/infra/hypervisor/sim"
	"github.com/nimbus-cloud/nimbus/infra/storage"
	_ "github.com/nimbus-cloud/nimbus/infra/storage/sim"
)

// TestRegistrySimulatorsShareFaults builds the three simulators the way a
// worker does, from one data directory: each gets its own state directory,
// and a host made unreachable through the hypervisor simulator is
// unreachable for storage and BMC calls too.
func TestRegistrySimulatorsShareFaults(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	hv, err := hypervisor.Open("Simulator", hypervisor.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer hv.Close()
	st, err := storage.OpenPool("Simulator", storage.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	bm, err := bmc.Open("simulator", bmc.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer bm.Close()
	for _, sub := range []string{"hypervisor", "storage", "bmc"} {
		if _, err := os.Stat(filepath.Join(dir, "simulator", sub, "LOCK")); err != nil {
			t.Errorf("no state directory for %s: %v", sub, err)
		}
	}
	h := hypervisor.Host{ID: "h1", URL: "sim://h1"}
	if _, err := hv.ConnectHost(ctx, h); err != nil {
		t.Fatal(err)
	}
	p := storage.Pool{ID: "p1", URL: "nfs://s/e"}
	if _, err := st.CreatePool(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := hv.(*hvsim.Driver).SetHostDown("h1", false); err != nil {
		t.Fatal(err)
	}
	if _, err := hv.CheckHost(ctx, h); !errors.Is(err, hypervisor.ErrUnreachable) {
		t.Errorf("hypervisor: %v", err)
	}
	if err := st.ConnectPool(ctx, p, h); !errors.Is(err, storage.ErrUnreachable) {
		t.Errorf("storage: %v", err)
	}
	if _, err := bm.PowerStatus(ctx, bmc.BMC{HostID: "h1", Address: "sim://bmc-h1"}); !errors.Is(err, bmc.ErrUnreachable) {
		t.Errorf("bmc: %v", err)
	}
	if err := hv.(*hvsim.Driver).SetHostUp("h1"); err != nil {
		t.Fatal(err)
	}
	if err := st.ConnectPool(ctx, p, h); err != nil {
		t.Errorf("storage after host up: %v", err)
	}
	if _, ok := bm.(*bmcsim.Driver); !ok {
		t.Errorf("bmc driver %T", bm)
	}
}
