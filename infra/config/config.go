// Package config holds the one configuration struct of every nimbus
// subcommand, filled from flags with NIMBUS_* environment variables as
// defaults, so that a bare `nimbus dev` runs.
package config

import (
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Config is shared by all subcommands; each registers the flags it uses.
type Config struct {
	DB              string // sqlite://PATH or mysql://user:pw@tcp(host:port)/db?parseTime=true
	TemporalAddress string // host:port of the Temporal frontend
	Namespace       string
	TaskQueue       string // default temporal.DefaultTaskQueue; tests isolate stacks by it
	Listen          string // host:port of the HTTP API
	DataDir         string
	ServerKeyFile   string // key that encrypts user secret keys at rest
	PublicURL       string // base URL clients reach the API at (for links)
	TemporalUIURL   string // base URL of the Temporal Web UI (for job links)

	// nimbus dev only.
	TemporalPort   int
	TemporalUIPort int
	SeedSimulator  bool

	// API limits.
	RateLimit    float64 // requests per second per API key; 0 = unlimited
	RateBurst    int
	MaxBodyBytes int64
	MaxPageSize  int

	// Worker tuning.
	WorkerPollers int

	// BareMetal provisioning server, run by workers (and nimbus dev) when
	// PXEListen is set: what PXE-booting machines fetch after DHCP.
	PXEListen string // host:port it listens on, e.g. 0.0.0.0:8081; "" = off
	PXEURL    string // how machines reach it, e.g. http://10.0.0.2:8081; default http://<pxe-listen>

	ShutdownTimeout time.Duration
}

// envOr returns the environment variable NIMBUS_<NAME> or def.
func envOr(name, def string) string {
	if v, ok := os.LookupEnv("NIMBUS_" + name); ok && v != "" {
		return v
	}
	return def
}

func envInt(name string, def int) int {
	if v := envOr(name, ""); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	return def
}

func envFloat(name string, def float64) float64 {
	if v := envOr(name, ""); v != "" {
		if n, err := strconv.ParseFloat(v, 64); err == nil {
			return n
		}
	}
	return def
}

// Flags is the set of flag groups a subcommand can ask for.
type Flags uint

const (
	FlagDB Flags = 1 << iota
	FlagTemporal
	FlagHTTP
	FlagDev
	FlagWorker
)

// Register adds the flags of the given groups to fs, bound to c.
func (c *Config) Register(fs *flag.FlagSet, groups Flags) {
	fs.StringVar(&c.DataDir, "data-dir", envOr("DATA_DIR", ".nimbus"), "directory for local state (SQLite inventory, Temporal history, keys) [NIMBUS_DATA_DIR]")
	fs.StringVar(&c.ServerKeyFile, "server-key-file", envOr("SERVER_KEY_FILE", ""), "file holding the key that encrypts secret keys at rest; default <data-dir>/server.key [NIMBUS_SERVER_KEY_FILE]")
	if groups&FlagDB != 0 {
		fs.StringVar(&c.DB, "db", envOr("DB", ""), "inventory DSN: sqlite://PATH or mysql://user:pw@tcp(host:port)/db?parseTime=true; default sqlite://<data-dir>/nimbus.db [NIMBUS_DB]")
	}
	if groups&FlagTemporal != 0 {
		fs.StringVar(&c.TemporalAddress, "temporal-address", envOr("TEMPORAL_ADDRESS", ""), "Temporal frontend host:port (nimbus dev starts its own when empty) [NIMBUS_TEMPORAL_ADDRESS]")
		fs.StringVar(&c.Namespace, "namespace", envOr("NAMESPACE", "default"), "Temporal namespace [NIMBUS_NAMESPACE]")
		fs.StringVar(&c.TaskQueue, "task-queue", envOr("TASK_QUEUE", "nimbus"), "Temporal task queue of the workers [NIMBUS_TASK_QUEUE]")
		fs.StringVar(&c.TemporalUIURL, "temporal-ui-url", envOr("TEMPORAL_UI_URL", ""), "Temporal Web UI base URL, for job links [NIMBUS_TEMPORAL_UI_URL]")
	}
	if groups&FlagHTTP != 0 {
		fs.StringVar(&c.Listen, "listen", envOr("LISTEN", "127.0.0.1:8080"), "HTTP API listen address [NIMBUS_LISTEN]")
		fs.StringVar(&c.PublicURL, "public-url", envOr("PUBLIC_URL", ""), "base URL clients use; default http://<listen> [NIMBUS_PUBLIC_URL]")
		fs.Float64Var(&c.RateLimit, "rate-limit", envFloat("RATE_LIMIT", 200), "API requests per second per key, 0 for none [NIMBUS_RATE_LIMIT]")
		fs.IntVar(&c.RateBurst, "rate-burst", envInt("RATE_BURST", 400), "API request burst per key [NIMBUS_RATE_BURST]")
		fs.Int64Var(&c.MaxBodyBytes, "max-request-bytes", int64(envInt("MAX_REQUEST_BYTES", 1<<20)), "largest accepted API request [NIMBUS_MAX_REQUEST_BYTES]")
		fs.IntVar(&c.MaxPageSize, "max-page-size", envInt("MAX_PAGE_SIZE", 500), "largest pagesize a list answers [NIMBUS_MAX_PAGE_SIZE]")
	}
	if groups&FlagDev != 0 {
		fs.IntVar(&c.TemporalPort, "temporal-port", envInt("TEMPORAL_PORT", 7233), "port of the Temporal dev server nimbus dev starts [NIMBUS_TEMPORAL_PORT]")
		fs.IntVar(&c.TemporalUIPort, "temporal-ui-port", envInt("TEMPORAL_UI_PORT", 8233), "port of its Web UI [NIMBUS_TEMPORAL_UI_PORT]")
		fs.BoolVar(&c.SeedSimulator, "seed-simulator", envOr("SEED_SIMULATOR", "") == "true", "build a ready simulator zone on first start [NIMBUS_SEED_SIMULATOR]")
	}
	if groups&FlagWorker != 0 {
		fs.IntVar(&c.WorkerPollers, "worker-pollers", envInt("WORKER_POLLERS", 8), "workflow and activity task pollers [NIMBUS_WORKER_POLLERS]")
		fs.StringVar(&c.PXEListen, "pxe-listen", envOr("PXE_LISTEN", ""), "run the BareMetal provisioning server (iPXE scripts, kernels, callbacks) on host:port; empty = off [NIMBUS_PXE_LISTEN]")
		fs.StringVar(&c.PXEURL, "pxe-url", envOr("PXE_URL", ""), "base URL PXE-booting machines reach the provisioning server at; default http://<pxe-listen> [NIMBUS_PXE_URL]")
	}
	c.ShutdownTimeout = 10 * time.Second
}

// Finish fills derived defaults and checks the values, after flag parsing.
func (c *Config) Finish() error {
	if c.DataDir == "" {
		c.DataDir = ".nimbus"
	}
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return fmt.Errorf("data dir %q: %w", c.DataDir, err)
	}
	c.DataDir = abs
	if c.DB == "" {
		c.DB = "sqlite://" + filepath.Join(c.DataDir, "nimbus.db")
	}
	if !strings.HasPrefix(c.DB, "sqlite://") && !strings.HasPrefix(c.DB, "mysql://") {
		return fmt.Errorf("--db %q: want sqlite://PATH or mysql://user:pw@tcp(host:port)/db", redactDSN(c.DB))
	}
	if c.ServerKeyFile == "" {
		c.ServerKeyFile = filepath.Join(c.DataDir, "server.key")
	}
	if c.PublicURL == "" && c.Listen != "" {
		c.PublicURL = "http://" + c.Listen
	}
	if c.MaxPageSize <= 0 {
		c.MaxPageSize = 500
	}
	if c.PXEListen != "" && c.PXEURL == "" {
		host, _, err := net.SplitHostPort(c.PXEListen)
		if err != nil {
			return fmt.Errorf("--pxe-listen %q: %w", c.PXEListen, err)
		}
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			return fmt.Errorf("--pxe-listen %q listens on every address: give --pxe-url, the URL machines reach it at", c.PXEListen)
		}
		c.PXEURL = "http://" + c.PXEListen
	}
	return nil
}

// redactDSN hides a password in a DSN for messages.
func redactDSN(dsn string) string {
	at := strings.LastIndex(dsn, "@")
	if at < 0 {
		return dsn
	}
	head := dsn[:at]
	if colon := strings.LastIndex(head, ":"); colon > strings.Index(head, "://")+2 {
		return head[:colon] + ":***" + dsn[at:]
	}
	return dsn
}

// RedactDSN is redactDSN for other packages' messages.
func RedactDSN(dsn string) string { return redactDSN(dsn) }
