package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/nimbus-cloud/nimbus/api"
	"github.com/nimbus-cloud/nimbus/infra/config"
	"github.com/nimbus-cloud/nimbus/infra/secrets"
	ntemporal "github.com/nimbus-cloud/nimbus/infra/temporal"
)

// devSeeders run after start when --seed-simulator is set (the datacenter
// code adds one); each gets the admin's credentials and the API URL.
var devSeeders []func(ctx context.Context, apiURL string, creds api.AdminCreds, log *slog.Logger) error

// runDev is the quickstart: everything in one process on a laptop.
func runDev(ctx context.Context, args []string, log *slog.Logger) error {
	cfg, _, err := parse("dev", args, config.FlagDB|config.FlagTemporal|config.FlagHTTP|config.FlagDev|config.FlagWorker)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}
	if err := portFree(cfg.Listen); err != nil {
		return err
	}

	// Temporal: an existing one, or a dev server we start and stop.
	if cfg.TemporalAddress == "" {
		dt, err := startDevTemporal(ctx, cfg, log)
		if err != nil {
			return err
		}
		defer dt.Stop()
		cfg.TemporalAddress = dt.Address
		if cfg.TemporalUIURL == "" {
			cfg.TemporalUIURL = dt.UIURL
		}
	}

	d, err := openInventory(ctx, cfg, true, log)
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
	creds, err := api.EnsureAdmin(ctx, d, box)
	if err != nil {
		return fmt.Errorf("admin account: %w", err)
	}
	adminFile := filepath.Join(cfg.DataDir, "admin.json")
	if err := writeAdminFile(adminFile, cfg, creds); err != nil {
		return err
	}

	srv := api.New(d, tc, box, cfg, cfg.TaskQueue, log)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(2)
	go func() { defer wg.Done(); errc <- runWorkerLoop(ctx, cfg, d, tc, box, log) }()
	go func() { defer wg.Done(); errc <- serveHTTP(ctx, cfg, srv.Handler(), log) }()

	fmt.Printf(`
Nimbus is running.
  API          %s/client/api
  Health       %s/healthz
  Temporal UI  %s
  API key      %s
  Secret key   %s
  Credentials  %s
Stop with Ctrl-C.

`, cfg.PublicURL, cfg.PublicURL, orNone(cfg.TemporalUIURL), creds.APIKey, creds.SecretKey, adminFile)

	if cfg.SeedSimulator {
		for _, seed := range devSeeders {
			if err := seed(ctx, cfg.PublicURL, creds, log); err != nil {
				log.Error("seeding the simulator zone failed", "err", err)
			}
		}
	}

	err = <-errc // the first to stop (an error, or ctx done)
	cancel()
	wg.Wait()
	fmt.Println("nimbus dev stopped")
	return err
}

func orNone(s string) string {
	if s == "" {
		return "(none: --temporal-address given)"
	}
	return s
}

// writeAdminFile records how to reach this cloud as the admin.
func writeAdminFile(path string, cfg config.Config, creds api.AdminCreds) error {
	out := map[string]string{
		"url": cfg.PublicURL + "/client/api", "apikey": creds.APIKey, "secretkey": creds.SecretKey,
		"temporal_ui": cfg.TemporalUIURL, "username": creds.Username,
	}
	// Keep a password generated at an earlier start: it is shown only once.
	if creds.Password == "" {
		var old map[string]string
		if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &old) == nil {
			creds.Password = old["password"]
		}
	}
	if creds.Password != "" {
		out["password"] = creds.Password
	}
	b, _ := json.MarshalIndent(out, "", "  ")
	if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func portFree(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("cannot listen on %s (another nimbus running? use --listen): %w", addr, err)
	}
	return ln.Close()
}

func hostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }
