package workflows

import (
	"time"

	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
)

// PingInput is empty; the health check starts one Ping per call.
type PingInput struct{}

// Ping runs one activity on a worker, proving that a worker polls the task
// queue and reaches the inventory.
func Ping(ctx workflow.Context, _ PingInput) (activities.PingResult, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout:    5 * time.Second,
		ScheduleToCloseTimeout: 10 * time.Second,
	})
	var res activities.PingResult
	err := workflow.ExecuteActivity(ctx, healthAct.HealthPing).Get(ctx, &res)
	return res, err
}
