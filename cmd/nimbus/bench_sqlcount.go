package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/uptrace/bun"
)

// benchQueryCounter counts the inventory queries of the bench's process
// (API and worker share one *bun.DB), so that a phase can report its
// queries per operation. With NIMBUS_BENCH_SQLSITES=1 it also tallies them
// by the Nimbus function that issued them, printed by Sites.
type benchQueryCounter struct {
	n     atomic.Int64
	sites bool
	mu    sync.Mutex
	by    map[string]int
}

func newBenchQueryCounter() *benchQueryCounter {
	return &benchQueryCounter{sites: os.Getenv("NIMBUS_BENCH_SQLSITES") == "1", by: map[string]int{}}
}

func (h *benchQueryCounter) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context {
	return ctx
}

func (h *benchQueryCounter) AfterQuery(_ context.Context, ev *bun.QueryEvent) {
	h.n.Add(1)
	if !h.sites {
		return
	}
	pcs := make([]uintptr, 32)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs)])
	site := "?"
	for {
		f, more := frames.Next()
		if strings.Contains(f.Function, "nimbus-cloud/nimbus/") && !strings.Contains(f.Function, "cmd/nimbus") {
			site = strings.TrimPrefix(f.Function, "github.com/nimbus-cloud/nimbus/")
			break
		}
		if !more {
			break
		}
	}
	q := ev.Query
	if len(q) > 60 {
		q = q[:60]
	}
	h.mu.Lock()
	h.by[site+" | "+q]++
	h.mu.Unlock()
}

// Reset starts a phase's count.
func (h *benchQueryCounter) Reset() {
	h.n.Store(0)
	h.mu.Lock()
	h.by = map[string]int{}
	h.mu.Unlock()
}

// Sites prints the tally by call site, per operation (per ops), most first.
func (h *benchQueryCounter) Sites(ops int) {
	if !h.sites {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	keys := make([]string, 0, len(h.by))
	for k := range h.by {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return h.by[keys[i]] > h.by[keys[j]] })
	for _, k := range keys {
		fmt.Printf("  %6.2f  %s\n", float64(h.by[k])/float64(ops), k)
	}
}
