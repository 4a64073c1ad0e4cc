// Package workflows holds one durable workflow per long-running operation.
// Workflows are deterministic: they decide, activities act. Each exported
// workflow takes one input struct and returns one result struct.
package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
)

// Nil activity struct pointers: workflows name activities through their
// method values; the worker registers the real structs.
var (
	jobsAct   *activities.Jobs
	healthAct *activities.Health
)

// Non-retryable error types: bad input and capacity problems do not improve
// with retries. Anything of type CS4xx is non-retryable by construction
// (cserr.Temporal); these cover the rest.
var nonRetryable = []string{"CS431", "CS432", "CS533", "CS536", "CS532", "NotSupported"}

// withInventory sets options for quick inventory activities (DB only).
func withInventory(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        200 * time.Millisecond,
			BackoffCoefficient:     2,
			MaximumInterval:        10 * time.Second,
			MaximumAttempts:        20,
			NonRetryableErrorTypes: nonRetryable,
		},
	})
}

// withDriver sets options for activities that call a hypervisor, storage or
// BMC: longer, heartbeating, bounded retries.
func withDriver(ctx workflow.Context, timeout time.Duration) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: timeout,
		HeartbeatTimeout:    30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        30 * time.Second,
			MaximumAttempts:        5,
			NonRetryableErrorTypes: nonRetryable,
		},
	})
}
