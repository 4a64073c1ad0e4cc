package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/uptrace/bun"
	"go.temporal.io/sdk/client"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api"
	"github.com/nimbus-cloud/nimbus/infra/config"
	"github.com/nimbus-cloud/nimbus/infra/db"
	_ "github.com/nimbus-cloud/nimbus/infra/hypervisor/baremetal" // the BareMetal driver (IPMI, Redfish)
	_ "github.com/nimbus-cloud/nimbus/infra/hypervisor/libvirt"   // KVM, LXC and Xen Project
	_ "github.com/nimbus-cloud/nimbus/infra/hypervisor/sim"       // the Simulator driver
	_ "github.com/nimbus-cloud/nimbus/infra/hypervisor/vsphere"   // the VMware vSphere driver and its datastore pools
	"github.com/nimbus-cloud/nimbus/infra/pxe"
	"github.com/nimbus-cloud/nimbus/infra/secrets"
	_ "github.com/nimbus-cloud/nimbus/infra/storage/libvirtpool" // KVM, LXC, Xen Project primary storage
	_ "github.com/nimbus-cloud/nimbus/infra/storage/local"       // NFS (and file://) image stores
	ntemporal "github.com/nimbus-cloud/nimbus/infra/temporal"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/worker"
	"github.com/nimbus-cloud/nimbus/workflows"
)

// parse registers the flag groups, parses args and finishes the config.
func parse(name string, args []string, groups config.Flags) (config.Config, *flag.FlagSet, error) {
	var cfg config.Config
	fs := flag.NewFlagSet("nimbus "+name, flag.ContinueOnError)
	cfg.Register(fs, groups)
	if err := fs.Parse(args); err != nil {
		return cfg, fs, err
	}
	if fs.NArg() > 0 {
		return cfg, fs, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return cfg, fs, cfg.Finish()
}

// openInventory opens the DB; with migrate it applies pending migrations,
// without it refuses an out-of-date schema.
func openInventory(ctx context.Context, cfg config.Config, migrate bool, log *slog.Logger) (*bun.DB, error) {
	d, err := db.Open(ctx, cfg.DB)
	if err != nil {
		return nil, err
	}
	if migrate {
		applied, err := models.Migrate(ctx, d)
		if err != nil {
			d.Close()
			return nil, err
		}
		if len(applied) > 0 {
			log.Info("inventory migrated", "applied", strings.Join(applied, ","))
		}
		return d, nil
	}
	pending, err := models.Pending(ctx, d)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("inventory DB %s: cannot read schema version: %w", config.RedactDSN(cfg.DB), err)
	}
	if len(pending) > 0 {
		d.Close()
		return nil, fmt.Errorf("inventory DB %s needs migrations %s: run nimbus migrate", config.RedactDSN(cfg.DB), strings.Join(pending, ","))
	}
	return d, nil
}

func runMigrate(ctx context.Context, args []string, log *slog.Logger) error {
	cfg, _, err := parse("migrate", args, config.FlagDB)
	if err != nil {
		return err
	}
	d, err := openInventory(ctx, cfg, true, log)
	if err != nil {
		return err
	}
	defer d.Close()
	fmt.Println("inventory schema is up to date")
	return nil
}

func runServer(ctx context.Context, args []string, log *slog.Logger) error {
	cfg, _, err := parse("server", args, config.FlagDB|config.FlagTemporal|config.FlagHTTP)
	if err != nil {
		return err
	}
	if cfg.TemporalAddress == "" {
		cfg.TemporalAddress = "127.0.0.1:7233"
	}
	d, err := openInventory(ctx, cfg, false, log)
	if err != nil {
		return err
	}
	defer d.Close()
	box, err := secrets.LoadOrCreate(cfg.ServerKeyFile)
	if err != nil {
		return err
	}
	tc, err := ntemporal.Dial(ctx, cfg.TemporalAddress, cfg.Namespace, log)
	if err != nil {
		return err
	}
	defer tc.Close()
	srv := api.New(d, tc, box, cfg, cfg.TaskQueue, log)
	return serveHTTP(ctx, cfg, srv.Handler(), log)
}

func runWorker(ctx context.Context, args []string, log *slog.Logger) error {
	cfg, _, err := parse("worker", args, config.FlagDB|config.FlagTemporal|config.FlagWorker)
	if err != nil {
		return err
	}
	if cfg.TemporalAddress == "" {
		cfg.TemporalAddress = "127.0.0.1:7233"
	}
	d, err := openInventory(ctx, cfg, false, log)
	if err != nil {
		return err
	}
	defer d.Close()
	box, err := secrets.LoadOrCreate(cfg.ServerKeyFile)
	if err != nil {
		return err
	}
	tc, err := ntemporal.Dial(ctx, cfg.TemporalAddress, cfg.Namespace, log)
	if err != nil {
		return err
	}
	defer tc.Close()
	return runWorkerLoop(ctx, cfg, d, tc, box, log)
}

// runWorkerLoop runs the Temporal worker until ctx ends.
func runWorkerLoop(ctx context.Context, cfg config.Config, d *bun.DB, tc client.Client, box *secrets.Box, log *slog.Logger) error {
	if err := ntemporal.EnsureSearchAttributes(ctx, tc, cfg.Namespace); err != nil {
		return err
	}
	renderer := api.New(d, tc, box, cfg, cfg.TaskQueue, log)
	hv := activities.NewHypervisorDrivers(cfg.DataDir) // the simulator keeps its state in <data-dir>/simulator
	defer hv.Close()
	st := activities.NewStorageDrivers(cfg.DataDir, hv)
	defer st.Close()
	bmcs := activities.NewBMCDrivers(nil)
	defer bmcs.Close()
	deps := activities.Deps{DB: d, Render: renderer.Render, Hypervisors: hv.Get, Pools: st.Pool, ImageStores: st.ImageStore, BMCs: bmcs.Get, Secrets: box}
	if cfg.PXEListen != "" {
		ps := &pxe.Server{Store: &activities.PXEStore{Deps: deps}, BaseURL: cfg.PXEURL, Log: log}
		stopped, err := ps.Start(ctx, cfg.PXEListen)
		if err != nil {
			return err
		}
		defer func() { <-stopped }()
	}
	w := worker.New(tc, cfg.TaskQueue, cfg.WorkerPollers, deps)
	if err := w.Start(); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	log.Info("worker polling", "task_queue", cfg.TaskQueue, "namespace", cfg.Namespace)
	// Maintenance schedules are not worth refusing to work over: a worker
	// whose schedule update fails (Temporal busy, a race with another
	// worker) polls anyway and keeps trying in the background.
	go func() {
		for wait := time.Second; ; wait = min(2*wait, time.Minute) {
			err := ensureMaintenanceSchedules(ctx, d, tc, cfg.TaskQueue)
			if err == nil || ctx.Err() != nil {
				return
			}
			log.Warn("maintenance schedules not set yet; retrying", "err", err, "in", wait)
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
	}()
	<-ctx.Done()
	w.Stop()
	return nil
}

// ensureMaintenanceSchedules creates or updates the system schedules with
// the intervals configured now (a change takes effect at the next worker
// start).
func ensureMaintenanceSchedules(ctx context.Context, d *bun.DB, tc client.Client, taskQueue string) error {
	every := func(name string) (time.Duration, error) {
		n, err := models.ConfigInt(ctx, d, name)
		if err != nil {
			return 0, err
		}
		if n <= 0 {
			return 0, fmt.Errorf("configuration %s: %d seconds must be positive", name, n)
		}
		return time.Duration(n) * time.Second, nil
	}
	expunge, err := every("expunge.interval")
	if err != nil {
		return err
	}
	reconcile, err := every("host.reconcile.interval")
	if err != nil {
		return err
	}
	// CloudStack's outofbandmanagement.sync.interval is in milliseconds.
	oobmMS, err := models.ConfigInt(ctx, d, "outofbandmanagement.sync.interval")
	if err != nil {
		return err
	}
	if oobmMS <= 0 {
		return fmt.Errorf("configuration outofbandmanagement.sync.interval: %d ms must be positive", oobmMS)
	}
	specs := append(workflows.MaintenanceSchedules(expunge, reconcile), workflows.OOBMSyncSchedule(time.Duration(oobmMS)*time.Millisecond))
	return ntemporal.EnsureSchedules(ctx, tc, taskQueue, specs)
}

// serveHTTP listens and serves until ctx ends, then shuts down gracefully.
func serveHTTP(ctx context.Context, cfg config.Config, h http.Handler, log *slog.Logger) error {
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	log.Info("API listening", "url", "http://"+ln.Addr().String()+"/client/api")
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
