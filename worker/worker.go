// Package worker registers every workflow and activity in one place and runs
// the Temporal worker.
package worker

import (
	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/workflows"
)

// Register adds all workflows and activities to r. Keep this the only list.
func Register(r sdkworker.Registry, deps activities.Deps) {
	r.RegisterWorkflow(workflows.Ping)
	r.RegisterWorkflow(workflows.DeleteAccount)
	r.RegisterWorkflow(workflows.DeleteDomain)
	r.RegisterWorkflow(workflows.DisableAccount)
	r.RegisterWorkflow(workflows.DisableUser)

	r.RegisterWorkflow(workflows.CreatePhysicalNetwork)
	r.RegisterWorkflow(workflows.UpdatePhysicalNetwork)
	r.RegisterWorkflow(workflows.DeletePhysicalNetwork)
	r.RegisterWorkflow(workflows.AddTrafficType)
	r.RegisterWorkflow(workflows.UpdateTrafficType)
	r.RegisterWorkflow(workflows.DeleteTrafficType)
	r.RegisterWorkflow(workflows.UpdateNetworkServiceProvider)
	r.RegisterWorkflow(workflows.CreateStorageNetworkIPRange)
	r.RegisterWorkflow(workflows.DeleteStorageNetworkIPRange)

	r.RegisterActivity(&activities.Jobs{Deps: deps})
	r.RegisterActivity(&activities.PhysNet{Deps: deps})
	r.RegisterActivity(&activities.Health{Deps: deps})
	r.RegisterActivity(&activities.Tenancy{Deps: deps})
}

// New builds a worker on the task queue with every workflow and activity.
func New(c client.Client, taskQueue string, pollers int, deps activities.Deps) sdkworker.Worker {
	if pollers <= 0 {
		pollers = 8
	}
	w := sdkworker.New(c, taskQueue, sdkworker.Options{
		MaxConcurrentWorkflowTaskPollers: pollers,
		MaxConcurrentActivityTaskPollers: pollers,
		// Quick inventory steps run as local activities; give them room.
		MaxConcurrentLocalActivityExecutionSize: 256,
	})
	Register(w, deps)
	return w
}
