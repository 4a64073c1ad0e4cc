package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nimbus-cloud/nimbus/api"
	"github.com/nimbus-cloud/nimbus/infra/config"
	"github.com/nimbus-cloud/nimbus/infra/secrets"
	ntemporal "github.com/nimbus-cloud/nimbus/infra/temporal"
)

func init() { benchmarks["api"] = runBenchAPI }

// runBenchAPI is `nimbus bench api`: signed versus unauthenticated
// throughput of read commands through the real HTTP stack, in one process.
// Two api.Servers share one inventory and Temporal client, each on its own
// loopback port: one normal (every request signed and verified, role rules
// checked), one with NoAuth (the baseline). Rounds alternate between them so
// that noise from other load hits both alike.
func runBenchAPI(ctx context.Context, args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("nimbus bench api", flag.ContinueOnError)
	dsn := fs.String("db", "", "inventory DSN (default: a SQLite file in a temp dir)")
	temporalAddr := fs.String("temporal-address", envDefault("NIMBUS_TEMPORAL_ADDRESS", "127.0.0.1:7233"), "Temporal frontend")
	n := fs.Int("n", 2000, "requests per mode and round")
	conc := fs.Int("c", 8, "concurrent clients")
	rounds := fs.Int("rounds", 10, "rounds; each runs unsigned then signed (or the reverse, alternating)")
	cmds := fs.String("commands", "listZones,listAccounts", "comma-separated read commands to cycle through")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var commands []string
	for _, c := range strings.Split(*cmds, ",") {
		if c = strings.TrimSpace(c); c == "" {
			continue
		}
		if api.Lookup(c) == nil {
			return fmt.Errorf("command %s is not registered", c)
		}
		commands = append(commands, c)
	}
	if len(commands) == 0 {
		return errors.New("no commands")
	}

	tmp, err := os.MkdirTemp("", "nimbus-bench-api-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cfg := config.Config{
		DB: *dsn, TemporalAddress: *temporalAddr, Namespace: "default", TaskQueue: "nimbus-bench-api",
		MaxBodyBytes: 1 << 20, MaxPageSize: 500, RateLimit: 0, DataDir: tmp,
	}
	if cfg.DB == "" {
		cfg.DB = "sqlite://" + filepath.Join(tmp, "nimbus.db")
	}
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	d, err := openInventory(ctx, cfg, true, quiet)
	if err != nil {
		return err
	}
	defer d.Close()
	// infra/db caps open connections but leaves database/sql's default of 2
	// idle ones, so under concurrency SQLite connections are closed and
	// reopened (schema parse, pragmas) all the time; that churn is noise to
	// both modes, so the benchmark keeps every connection idle-able.
	d.SetMaxIdleConns(runtime.GOMAXPROCS(0) * 8)
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	box, err := secrets.New(key)
	if err != nil {
		return err
	}
	admin, err := api.EnsureAdmin(ctx, d, box)
	if err != nil {
		return err
	}
	tc, err := ntemporal.Dial(ctx, cfg.TemporalAddress, cfg.Namespace, quiet)
	if err != nil {
		return err
	}
	defer tc.Close()

	signedSrv := api.New(d, tc, box, cfg, cfg.TaskQueue, quiet)
	openSrv := api.New(d, tc, box, cfg, cfg.TaskQueue, quiet)
	openSrv.NoAuth = true
	signedURL, stopSigned, err := serveLoopback(signedSrv.Handler())
	if err != nil {
		return err
	}
	defer stopSigned()
	openURL, stopOpen, err := serveLoopback(openSrv.Handler())
	if err != nil {
		return err
	}
	defer stopOpen()

	// Request URLs are built before timing, so the client's own signing does
	// not count against the server; the server verifies every request.
	var signedURLs, openURLs []string
	for _, c := range commands {
		p := url.Values{"command": {c}, "response": {"json"}, "apiKey": {admin.APIKey}}
		signedURLs = append(signedURLs, signedURL+"?"+api.EncodeSigned(p, admin.SecretKey))
		openURLs = append(openURLs, openURL+"?"+url.Values{"command": {c}, "response": {"json"}}.Encode())
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: *conc * 2, MaxIdleConnsPerHost: *conc * 2}, Timeout: 30 * time.Second}

	fmt.Printf("nimbus bench api: %s, %d requests per mode and round, %d rounds, concurrency %d, GOMAXPROCS %d, db %s\n",
		strings.Join(commands, "+"), *n, *rounds, *conc, runtime.GOMAXPROCS(0), config.RedactDSN(cfg.DB))
	// Warm up both (caches, connections, JIT of the DB's statement cache).
	for _, urls := range [][]string{signedURLs, openURLs} {
		if _, err := drive(ctx, client, urls, min(*n, 500), *conc); err != nil {
			return err
		}
	}
	var signed, open []time.Duration
	var signedWall, openWall time.Duration
	var pairRatios []float64
	for r := 0; r < *rounds; r++ {
		var rps [2]float64 // unsigned, signed
		order := []bool{false, true}
		if r%2 == 1 {
			order = []bool{true, false}
		}
		for _, isSigned := range order {
			urls := openURLs
			if isSigned {
				urls = signedURLs
			}
			start := time.Now()
			lat, err := drive(ctx, client, urls, *n, *conc)
			if err != nil {
				return err
			}
			wall := time.Since(start)
			res := summarize(lat, wall)
			mode := "unsigned"
			if isSigned {
				mode = "signed"
				signed, signedWall = append(signed, lat...), signedWall+wall
				rps[1] = res.rps
			} else {
				open, openWall = append(open, lat...), openWall+wall
				rps[0] = res.rps
			}
			fmt.Printf("  round %2d %-8s %s\n", r+1, mode, res)
		}
		pairRatios = append(pairRatios, rps[1]/rps[0])
	}
	slices.Sort(pairRatios)
	rs, ro := summarize(signed, signedWall), summarize(open, openWall)
	fmt.Printf("\nall rounds:\n  unsigned %s\n  signed   %s\n  signed/unsigned throughput: %.3f overall, %.3f median of the rounds (target >= 0.9)\n",
		ro, rs, rs.rps/ro.rps, pairRatios[len(pairRatios)/2])
	log.Info("bench api done", "signed_rps", int(rs.rps), "unsigned_rps", int(ro.rps), "ratio", fmt.Sprintf("%.3f", rs.rps/ro.rps))
	return nil
}

func serveLoopback(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	return "http://" + ln.Addr().String() + "/client/api", func() { _ = hs.Close() }, nil
}

// drive sends n GET requests over conc connections, cycling through urls,
// and returns each request's latency; any answer but 200 is an error.
func drive(ctx context.Context, client *http.Client, urls []string, n, conc int) ([]time.Duration, error) {
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				start := time.Now()
				resp, err := client.Get(urls[i%len(urls)])
				if err == nil {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, body)
					}
				}
				lat[i] = time.Since(start)
				if err != nil {
					once.Do(func() { firstErr = err })
					next.Store(int64(n))
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return lat, firstErr
}

type benchResult struct {
	n             int
	rps           float64
	p50, p99, max time.Duration
}

func (r benchResult) String() string {
	return fmt.Sprintf("%7d req  %8.0f req/s  p50 %7s  p99 %7s  max %7s", r.n, r.rps,
		r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.max.Round(time.Microsecond))
}

func summarize(lat []time.Duration, wall time.Duration) benchResult {
	s := slices.Clone(lat)
	slices.Sort(s)
	if len(s) == 0 || wall <= 0 {
		return benchResult{}
	}
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return benchResult{n: len(s), rps: float64(len(s)) / wall.Seconds(), p50: q(0.50), p99: q(0.99), max: s[len(s)-1]}
}
