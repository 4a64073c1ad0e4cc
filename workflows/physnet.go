package workflows

import (
	"time"

	"go.temporal.io/sdk/workflow"

	"github.com/nimbus-cloud/nimbus/activities"
)

// physNetAct names the physical network, traffic type, service provider and
// storage range activities.
var physNetAct *activities.PhysNet

// withNetworkInventory is withInventory with room for steps that write one
// row per VLAN id or IP address (up to 65,536 rows in one transaction).
func withNetworkInventory(ctx workflow.Context) workflow.Context {
	return workflow.WithStartToCloseTimeout(withInventory(ctx), 5*time.Minute)
}

// networkJob runs one inventory step as a job and reports the entity it
// leaves (or plain success when key is empty).
func networkJob(ctx workflow.Context, activity, in any, key, typ, uuid string) (JobOutcome, error) {
	return RunJob(ctx, func(ctx workflow.Context) (JobOutcome, error) {
		if err := workflow.ExecuteActivity(withNetworkInventory(ctx), activity, in).Get(ctx, nil); err != nil {
			return JobOutcome{}, err
		}
		if key == "" {
			return JobOutcome{}, nil
		}
		return JobOutcome{ResultKey: key, ResultType: typ, ResultUUID: uuid}, nil
	})
}

// CreatePhysicalNetwork is the createPhysicalNetwork job: the network, its
// default service providers and its guest VLAN rows.
func CreatePhysicalNetwork(ctx workflow.Context, in activities.PhysNetCreateInput) (JobOutcome, error) {
	return networkJob(ctx, physNetAct.PhysNetCreate, in, "physicalnetwork", "PhysicalNetwork", in.UUID)
}

// UpdatePhysicalNetwork is the updatePhysicalNetwork job.
func UpdatePhysicalNetwork(ctx workflow.Context, in activities.PhysNetUpdateInput) (JobOutcome, error) {
	return networkJob(ctx, physNetAct.PhysNetUpdate, in, "physicalnetwork", "PhysicalNetwork", in.UUID)
}

// DeletePhysicalNetwork is the deletePhysicalNetwork job.
func DeletePhysicalNetwork(ctx workflow.Context, in activities.PhysNetDeleteInput) (JobOutcome, error) {
	return networkJob(ctx, physNetAct.PhysNetDelete, in, "", "", "")
}

// AddTrafficType is the addTrafficType job.
func AddTrafficType(ctx workflow.Context, in activities.PhysNetTrafficAddInput) (JobOutcome, error) {
	return networkJob(ctx, physNetAct.PhysNetTrafficAdd, in, "traffictype", "TrafficType", in.UUID)
}

// UpdateTrafficType is the updateTrafficType job.
func UpdateTrafficType(ctx workflow.Context, in activities.PhysNetTrafficUpdateInput) (JobOutcome, error) {
	return networkJob(ctx, physNetAct.PhysNetTrafficUpdate, in, "traffictype", "TrafficType", in.UUID)
}

// DeleteTrafficType is the deleteTrafficType job.
func DeleteTrafficType(ctx workflow.Context, in activities.PhysNetTrafficDeleteInput) (JobOutcome, error) {
	return networkJob(ctx, physNetAct.PhysNetTrafficDelete, in, "", "", "")
}

// UpdateNetworkServiceProvider is the updateNetworkServiceProvider job.
func UpdateNetworkServiceProvider(ctx workflow.Context, in activities.PhysNetProviderUpdateInput) (JobOutcome, error) {
	return networkJob(ctx, physNetAct.PhysNetProviderUpdate, in, "networkserviceprovider", "NetworkServiceProvider", in.UUID)
}

// CreateStorageNetworkIPRange is the createStorageNetworkIpRange job.
func CreateStorageNetworkIPRange(ctx workflow.Context, in activities.NetworkStorageRangeCreateInput) (JobOutcome, error) {
	return networkJob(ctx, physNetAct.NetworkStorageRangeCreate, in, "storagenetworkiprange", "StorageNetworkIpRange", in.UUID)
}

// DeleteStorageNetworkIPRange is the deleteStorageNetworkIpRange job.
func DeleteStorageNetworkIPRange(ctx workflow.Context, in activities.NetworkStorageRangeDeleteInput) (JobOutcome, error) {
	return networkJob(ctx, physNetAct.NetworkStorageRangeDelete, in, "", "", "")
}
