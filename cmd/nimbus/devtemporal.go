package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/nimbus-cloud/nimbus/infra/config"
)

// temporalCLIVersion is the Temporal CLI nimbus dev installs when missing
// (CLI v1.5.1 = server 1.29.1, UI 2.42.1).
const temporalCLIVersion = "v1.5.1"

// devTemporal is a Temporal dev server child process.
type devTemporal struct {
	Address string
	UIURL   string
	cmd     *exec.Cmd
	done    chan struct{}
}

// findTemporal returns the temporal CLI, installing it with go install when
// it is nowhere to be found.
func findTemporal(ctx context.Context, log *slog.Logger) (string, error) {
	if p := os.Getenv("NIMBUS_TEMPORAL_BIN"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("temporal"); err == nil {
		return p, nil
	}
	gobin := goBinDir()
	if p := filepath.Join(gobin, "temporal"); fileExists(p) {
		return p, nil
	}
	if _, err := exec.LookPath("go"); err != nil {
		return "", fmt.Errorf("temporal CLI not found and no Go toolchain to install it; install it or pass --temporal-address")
	}
	fmt.Fprintf(os.Stderr, "Temporal CLI not found: installing github.com/temporalio/cli/cmd/temporal@%s into %s with go install.\nThis builds a large binary and takes about 5 minutes the first time; it is cached afterwards.\n", temporalCLIVersion, gobin)
	cmd := exec.CommandContext(ctx, "go", "install", "github.com/temporalio/cli/cmd/temporal@"+temporalCLIVersion)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go install temporal CLI: %w", err)
	}
	fmt.Fprintf(os.Stderr, "Temporal CLI installed in %s.\n", time.Since(start).Round(time.Second))
	return filepath.Join(gobin, "temporal"), nil
}

func goBinDir() string {
	if out, err := exec.Command("go", "env", "GOBIN").Output(); err == nil && strings.TrimSpace(string(out)) != "" {
		return strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil && strings.TrimSpace(string(out)) != "" {
		return filepath.Join(strings.SplitN(strings.TrimSpace(string(out)), string(os.PathListSeparator), 2)[0], "bin")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, "go", "bin")
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// startDevTemporal starts `temporal server start-dev` with its history in the
// data dir (so a restart keeps it) and waits until it answers.
func startDevTemporal(ctx context.Context, cfg config.Config, log *slog.Logger) (*devTemporal, error) {
	addr := hostPort("127.0.0.1", cfg.TemporalPort)
	if err := portFree(addr); err != nil {
		return nil, fmt.Errorf("temporal port: %w (use --temporal-port, or --temporal-address to use a running Temporal)", err)
	}
	if err := portFree(hostPort("127.0.0.1", cfg.TemporalUIPort)); err != nil {
		return nil, fmt.Errorf("temporal UI port: %w (use --temporal-ui-port)", err)
	}
	bin, err := findTemporal(ctx, log)
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(cfg.DataDir, "temporal.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "server", "start-dev",
		"--ip", "127.0.0.1",
		"--port", fmt.Sprint(cfg.TemporalPort),
		"--ui-port", fmt.Sprint(cfg.TemporalUIPort),
		"--db-filename", filepath.Join(cfg.DataDir, "temporal.db"),
		"--namespace", cfg.Namespace,
		"--log-level", "warn",
		"--sqlite-pragma", "journal_mode=wal",
		"--sqlite-pragma", "synchronous=off",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group, and killed with us if we die without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start temporal dev server: %w", err)
	}
	dt := &devTemporal{Address: addr, UIURL: fmt.Sprintf("http://127.0.0.1:%d", cfg.TemporalUIPort), cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(dt.done) }()

	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := client.Dial(client.Options{HostPort: addr, Namespace: cfg.Namespace, Logger: nopLogger{}})
		if err == nil {
			_, herr := c.CheckHealth(ctx, &client.CheckHealthRequest{})
			c.Close()
			if herr == nil {
				log.Info("Temporal dev server up", "address", addr, "ui", dt.UIURL, "log", logPath)
				return dt, nil
			}
		}
		select {
		case <-dt.done:
			return nil, fmt.Errorf("temporal dev server exited at start; see %s", logPath)
		case <-ctx.Done():
			dt.Stop()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			dt.Stop()
			return nil, fmt.Errorf("temporal dev server did not answer on %s within 60s; see %s", addr, logPath)
		}
	}
}

// Stop ends the dev server's whole process group: TERM, then KILL.
func (d *devTemporal) Stop() {
	if d == nil || d.cmd.Process == nil {
		return
	}
	pgid := -d.cmd.Process.Pid
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(pgid, syscall.SIGKILL)
		<-d.done
	}
}

type nopLogger struct{}

func (nopLogger) Debug(string, ...any) {}
func (nopLogger) Info(string, ...any)  {}
func (nopLogger) Warn(string, ...any)  {}
func (nopLogger) Error(string, ...any) {}
