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
	storagesim "github.com/nimbus-cloud/nimbus/infra/storage/sim"
)

// TestSimulatorsShareFaults builds the three simulators as a worker does:
// the hypervisor one from the registry, the storage and BMC ones with its
// fault switches. A host made unreachable through the hypervisor simulator
// is then unreachable for storage and BMC calls too.
func TestSimulatorsShareFaults(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	hv, err := hypervisor.Open("Simulator", hypervisor.Config{DataDir: filepath.Join(dir, "simulator")})
	if err != nil {
		t.Fatal(err)
	}
	defer hv.Close()
	faults := hv.(*hvsim.Driver).Faults()
	st, err := storagesim.OpenWith(filepath.Join(dir, "simulator-storage"), storagesim.Options{Faults: faults})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var bm bmc.Driver
	bm, err = bmcsim.OpenWith(filepath.Join(dir, "simulator-bmc"), bmcsim.Options{Faults: faults})
	if err != nil {
		t.Fatal(err)
	}
	defer bm.Close()
	// The same data directory cannot be opened twice.
	if _, err := storage.OpenPool("Simulator", storage.Config{DataDir: filepath.Join(dir, "simulator-storage")}); err == nil {
		t.Error("a second simulator opened a data directory in use")
	}
	if _, err := os.Stat(filepath.Join(dir, "simulator", "LOCK")); err != nil {
		t.Errorf("state not in the given directory: %v", err)
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
}
