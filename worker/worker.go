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
	r.RegisterWorkflow(workflows.CreateTags)
	r.RegisterWorkflow(workflows.DeleteTags)
	r.RegisterWorkflow(workflows.CreateAffinityGroup)
	r.RegisterWorkflow(workflows.DeleteAffinityGroup)
	r.RegisterWorkflow(workflows.UpdateVMAffinityGroup)

	r.RegisterWorkflow(workflows.AddHost)
	r.RegisterWorkflow(workflows.DiscoverCluster)
	r.RegisterWorkflow(workflows.ReconnectHost)
	r.RegisterWorkflow(workflows.PrepareHostForMaintenance)
	r.RegisterWorkflow(workflows.CancelHostMaintenance)
	r.RegisterWorkflow(workflows.ConfigureSimulator)
	r.RegisterWorkflow(workflows.CreateStoragePool)
	r.RegisterWorkflow(workflows.EnableStorageMaintenance)
	r.RegisterWorkflow(workflows.CancelStorageMaintenance)
	r.RegisterWorkflow(workflows.DeleteStoragePool)
	r.RegisterWorkflow(workflows.AddImageStore)

	r.RegisterWorkflow(workflows.CreatePhysicalNetwork)
	r.RegisterWorkflow(workflows.UpdatePhysicalNetwork)
	r.RegisterWorkflow(workflows.DeletePhysicalNetwork)
	r.RegisterWorkflow(workflows.AddTrafficType)
	r.RegisterWorkflow(workflows.UpdateTrafficType)
	r.RegisterWorkflow(workflows.DeleteTrafficType)
	r.RegisterWorkflow(workflows.UpdateNetworkServiceProvider)
	r.RegisterWorkflow(workflows.CreateStorageNetworkIPRange)
	r.RegisterWorkflow(workflows.DeleteStorageNetworkIPRange)

	r.RegisterWorkflow(workflows.DeployVM)
	r.RegisterWorkflow(workflows.StartVM)
	r.RegisterWorkflow(workflows.StopVM)
	r.RegisterWorkflow(workflows.RebootVM)
	r.RegisterWorkflow(workflows.DestroyVM)
	r.RegisterWorkflow(workflows.ExpungeVM)
	r.RegisterWorkflow(workflows.ScaleVM)
	r.RegisterWorkflow(workflows.MigrateVM)
	r.RegisterWorkflow(workflows.SettleVMs)
	r.RegisterWorkflow(workflows.DeleteNetwork)
	r.RegisterWorkflow(workflows.UpdateNetwork)

	r.RegisterWorkflow(workflows.CreateVolume)
	r.RegisterWorkflow(workflows.AttachVolume)
	r.RegisterWorkflow(workflows.AttachISO)
	r.RegisterWorkflow(workflows.DetachISO)
	r.RegisterWorkflow(workflows.DetachVolume)
	r.RegisterWorkflow(workflows.ResizeVolume)
	r.RegisterWorkflow(workflows.MigrateVolume)
	r.RegisterWorkflow(workflows.DeleteVolume)
	r.RegisterWorkflow(workflows.CreateSnapshot)
	r.RegisterWorkflow(workflows.DeleteSnapshot)
	r.RegisterWorkflow(workflows.RevertSnapshot)
	r.RegisterWorkflow(workflows.CreateVMSnapshot)
	r.RegisterWorkflow(workflows.RevertVMSnapshot)
	r.RegisterWorkflow(workflows.DeleteVMSnapshot)
	r.RegisterWorkflow(workflows.CreateTemplateFromVolume)
	r.RegisterWorkflow(workflows.SnapshotPolicyRun)
	r.RegisterWorkflow(workflows.MaintExpunge)
	r.RegisterWorkflow(workflows.MaintExpungeVM)
	r.RegisterWorkflow(workflows.MaintReconcile)
	r.RegisterWorkflow(workflows.WatchHostVMs)
	r.RegisterWorkflow(workflows.WatchClusterVMs)
	r.RegisterWorkflow(workflows.MaintCapacityAlerts)
	r.RegisterWorkflow(workflows.OOBMPowerSync)

	r.RegisterWorkflow(workflows.RegisterTemplate)
	r.RegisterWorkflow(workflows.RegisterVCenterTemplate)
	r.RegisterWorkflow(workflows.CopyTemplate)
	r.RegisterWorkflow(workflows.DeleteTemplate)
	r.RegisterWorkflow(workflows.ExtractTemplate)
	r.RegisterWorkflow(workflows.OutOfBandManagement)

	r.RegisterActivity(&activities.Jobs{Deps: deps})
	r.RegisterActivity(&activities.PhysNet{Deps: deps})
	r.RegisterActivity(&activities.Health{Deps: deps})
	r.RegisterActivity(&activities.Hosts{Deps: deps})
	r.RegisterActivity(&activities.Simulator{Deps: deps})
	r.RegisterActivity(&activities.Storage{Deps: deps})
	r.RegisterActivity(&activities.Tenancy{Deps: deps})
	r.RegisterActivity(&activities.VMs{Deps: deps})
	r.RegisterActivity(&activities.IPAM{Deps: deps})
	r.RegisterActivity(&activities.Volumes{Deps: deps})
	r.RegisterActivity(&activities.Snapshots{Deps: deps})
	r.RegisterActivity(&activities.VMSnapshots{Deps: deps})
	r.RegisterActivity(&activities.Tags{Deps: deps})
	r.RegisterActivity(&activities.Affinity{Deps: deps})
	r.RegisterActivity(&activities.Templates{Deps: deps})
	r.RegisterActivity(&activities.Maintenance{Deps: deps})
	r.RegisterActivity(&activities.BareMetal{Deps: deps})
	r.RegisterActivity(&activities.BMC{Deps: deps})
	r.RegisterActivity(&activities.OOBM{Deps: deps})
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
