package workflows

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/temporalproto"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
)

// recordAndReplay runs wf once on a fresh task queue of the test Temporal
// server, with the workflows and fake activities that setup registers,
// checks it ends as wanted (failing with the job's application error when
// wantFail), checks its history replays with replayer, and with
// NIMBUS_UPDATE_HISTORIES=1 saves the history as testdata/file when that
// file does not exist yet (recorded histories are append-only).
func recordAndReplay(t *testing.T, c client.Client, setup func(worker.Worker), replayer worker.WorkflowReplayer, file string, wf, input any, wantFail bool) {
	t.Helper()
	queue := "nimbus-replay-" + uuid.NewString()
	w := worker.New(c, queue, worker.Options{})
	setup(w)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: uuid.NewString(), TaskQueue: queue}, wf, input)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	err = run.Get(ctx, &out)
	if (err != nil) != wantFail {
		t.Fatalf("run ended with %v (want failure: %v)", err, wantFail)
	}
	var ae *temporal.ApplicationError
	if wantFail && !errors.As(err, &ae) {
		t.Fatalf("run failed with %v, want the job's application error", err)
	}
	hist := &historypb.History{}
	it := c.GetWorkflowHistory(ctx, run.GetID(), run.GetRunID(), false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		hist.Events = append(hist.Events, ev)
	}
	if err := replayer.ReplayWorkflowHistory(nil, hist); err != nil {
		t.Fatalf("the fresh history does not replay: %v", err)
	}
	path := filepath.Join("testdata", file)
	if _, err := os.Stat(path); os.Getenv("NIMBUS_UPDATE_HISTORIES") == "1" && errors.Is(err, os.ErrNotExist) {
		b, err := temporalproto.CustomJSONMarshalOptions{Indent: "  "}.Marshal(hist)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
