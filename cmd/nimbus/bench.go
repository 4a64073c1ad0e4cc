package main

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
)

// benchmarks maps "nimbus bench <name>" to its runner; files of this
// package add theirs in init.
var benchmarks = map[string]func(ctx context.Context, args []string, log *slog.Logger) error{}

func runBench(ctx context.Context, args []string, log *slog.Logger) error {
	names := make([]string, 0, len(benchmarks))
	for n := range benchmarks {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(args) == 0 || benchmarks[args[0]] == nil {
		fmt.Printf("usage: nimbus bench <%v> [flags]\n", names)
		if len(args) == 0 {
			return nil
		}
		return fmt.Errorf("unknown benchmark %q", args[0])
	}
	return benchmarks[args[0]](ctx, args[1:], log)
}
