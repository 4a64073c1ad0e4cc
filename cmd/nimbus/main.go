// Command nimbus is the one Nimbus binary: server, worker, migrate, dev and
// bench subcommands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

const usage = `nimbus: an IaaS cloud manager with CloudStack's API and durable workflows.

Usage: nimbus <command> [flags]

Commands:
  dev       all in one for a laptop: SQLite, a Temporal dev server, API and worker
  server    the HTTP API (CloudStack's /client/api, /healthz, /metrics)
  worker    the Temporal worker that runs workflows and activities
  migrate   apply inventory migrations and exit
  api       a signed API call with the keys nimbus dev wrote (nimbus api listZones)
  bench     benchmarks (nimbus bench -h)

Run "nimbus <command> -h" for its flags. Every flag also reads NIMBUS_<FLAG>.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	slog.SetDefault(log)

	var err error
	args := os.Args[2:]
	switch os.Args[1] {
	case "dev":
		err = runDev(ctx, args, log)
	case "server":
		err = runServer(ctx, args, log)
	case "worker":
		err = runWorker(ctx, args, log)
	case "migrate":
		err = runMigrate(ctx, args, log)
	case "api":
		err = runAPI(ctx, args, log)
	case "bench":
		err = runBench(ctx, args, log)
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "nimbus: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil && !errors.Is(err, flag.ErrHelp) && !errors.Is(err, context.Canceled) {
		// One clear line, no stack trace.
		fmt.Fprintf(os.Stderr, "nimbus %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
