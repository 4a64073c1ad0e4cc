package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uptrace/bun"
	"go.temporal.io/sdk/client"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api"
	"github.com/nimbus-cloud/nimbus/infra/config"
	"github.com/nimbus-cloud/nimbus/infra/secrets"
	ntemporal "github.com/nimbus-cloud/nimbus/infra/temporal"
	"github.com/nimbus-cloud/nimbus/worker"
)

// benchStack is a whole Nimbus in the benchmark's process: inventory (a temp
// SQLite unless a DSN is given), an API server on loopback and a worker on
// a task queue of its own (a run never picks up jobs an earlier one left),
// against a running Temporal. Get and Call are signed admin requests.
type benchStack struct {
	Cfg      config.Config
	Dir      string
	DB       *bun.DB
	Temporal client.Client
	Admin    api.AdminCreds

	ctx     context.Context
	url     string
	http    *http.Client
	closers []func()
}

func startBenchStack(ctx context.Context, name, dsn, temporalAddr string, pollers, conns int) (b *benchStack, err error) {
	b = &benchStack{ctx: ctx}
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	if b.Dir, err = os.MkdirTemp("", "nimbus-bench-"+name+"-"); err != nil {
		return nil, err
	}
	b.closers = append(b.closers, func() { os.RemoveAll(b.Dir) })
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	b.Cfg = config.Config{
		DB: dsn, TemporalAddress: temporalAddr, Namespace: "default",
		TaskQueue:    "nimbus-bench-" + name + "-" + hex.EncodeToString(suffix),
		MaxBodyBytes: 1 << 20, MaxPageSize: 500, DataDir: b.Dir, WorkerPollers: pollers,
	}
	if b.Cfg.DB == "" {
		b.Cfg.DB = "sqlite://" + filepath.Join(b.Dir, "nimbus.db")
	}
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	if b.DB, err = openInventory(ctx, b.Cfg, true, quiet); err != nil {
		return b, err
	}
	b.closers = append(b.closers, func() { b.DB.Close() })
	b.DB.SetMaxIdleConns(runtime.GOMAXPROCS(0) * 8) // see bench api: no connection churn
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return b, err
	}
	box, err := secrets.New(key)
	if err != nil {
		return b, err
	}
	if b.Admin, err = api.EnsureAdmin(ctx, b.DB, box); err != nil {
		return b, err
	}
	if b.Temporal, err = ntemporal.Dial(ctx, b.Cfg.TemporalAddress, b.Cfg.Namespace, quiet); err != nil {
		return b, err
	}
	b.closers = append(b.closers, b.Temporal.Close)
	if err := ntemporal.EnsureSearchAttributes(ctx, b.Temporal, b.Cfg.Namespace); err != nil {
		return b, err
	}
	srv := api.New(b.DB, b.Temporal, box, b.Cfg, b.Cfg.TaskQueue, quiet)
	hv := activities.NewHypervisorDrivers(b.Dir)
	b.closers = append(b.closers, func() { hv.Close() })
	st := activities.NewStorageDrivers(b.Dir, hv)
	b.closers = append(b.closers, func() { st.Close() })
	w := worker.New(b.Temporal, b.Cfg.TaskQueue, b.Cfg.WorkerPollers, activities.Deps{
		DB: b.DB, Render: srv.Render, Hypervisors: hv.Get, Pools: st.Pool, ImageStores: st.ImageStore, Secrets: box,
	})
	if err := w.Start(); err != nil {
		return b, err
	}
	b.closers = append(b.closers, w.Stop)
	apiURL, stop, err := serveLoopback(srv.Handler())
	if err != nil {
		return b, err
	}
	b.closers = append(b.closers, stop)
	b.url = apiURL
	b.http = &http.Client{Transport: &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns}, Timeout: 10 * time.Minute}
	return b, nil
}

// Close stops what the stack started, last first.
func (b *benchStack) Close() {
	for i := len(b.closers) - 1; i >= 0; i-- {
		b.closers[i]()
	}
	b.closers = nil
}

// Get sends a signed GET (key, value pairs) and returns the answer's body
// once read, which is what the latency figures time.
func (b *benchStack) Get(kv ...string) ([]byte, error) {
	p := url.Values{"response": {"json"}, "apiKey": {b.Admin.APIKey}}
	for i := 0; i+1 < len(kv); i += 2 {
		p.Set(kv[i], kv[i+1])
	}
	req, err := http.NewRequestWithContext(b.ctx, http.MethodGet, b.url+"?"+api.EncodeSigned(p, b.Admin.SecretKey), nil)
	if err != nil {
		return nil, err
	}
	resp, err := b.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d: %s", p.Get("command"), resp.StatusCode, body)
	}
	return body, nil
}

// Call is Get decoded: the object under "<command>response".
func (b *benchStack) Call(kv ...string) (map[string]any, error) {
	body, err := b.Get(kv...)
	if err != nil {
		return nil, err
	}
	var out map[string]map[string]any
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, err
	}
	for _, v := range out {
		return v, nil
	}
	return nil, fmt.Errorf("empty answer")
}

// benchCallWait is Call that, for an async command, waits for its job
// (polling every poll) and answers the job's result.
func benchCallWait(st *benchStack, poll time.Duration, kv ...string) (map[string]any, error) {
	r, err := st.Call(kv...)
	if err != nil {
		return nil, err
	}
	jobID, _ := r["jobid"].(string)
	if jobID == "" {
		return r, nil
	}
	for {
		time.Sleep(poll)
		j, err := st.Call("command", "queryAsyncJobResult", "jobid", jobID)
		if err != nil {
			return nil, err
		}
		switch s, _ := j["jobstatus"].(float64); s {
		case 0:
			continue
		case 1:
			res, _ := j["jobresult"].(map[string]any)
			if res == nil {
				res = r
			}
			if idIn(res) == "" {
				res["id"] = r["id"]
			}
			return res, nil
		default:
			b, _ := json.Marshal(j["jobresult"])
			return nil, fmt.Errorf("%s: job failed: %s", kv[1], b)
		}
	}
}

// benchParallel runs n calls of fn on conc goroutines; the first error
// stops it.
func benchParallel(ctx context.Context, n, conc int, fn func(i int) error) error {
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(i); err != nil {
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
	return firstErr
}
