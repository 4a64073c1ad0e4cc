package api

import (
	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/workflows"
)

func init() {
	Register(
		&Command{
			Name: "attachIso", Description: "Puts an ISO into a VM's CD-ROM drive: live when the VM runs (copied first to the VM's primary storage), at its next start when it is stopped",
			Access: AccessAllWrite, Async: true,
			Params: []Param{
				{Name: "id", Type: TUUID, Required: true, Description: "the ISO"},
				{Name: "virtualmachineid", Type: TUUID, Required: true, Description: "the VM"},
				{Name: "forced", Type: TBoolean, Description: "ignored: the medium is always changed, even when the guest locked the drive"},
			},
			ResponseName: "virtualmachine", Response: vmFields, Handler: attachISOCmd,
		},
		&Command{
			Name: "detachIso", Description: "Empties a VM's CD-ROM drive: live when the VM runs",
			Access: AccessAllWrite, Async: true,
			Params: []Param{
				{Name: "virtualmachineid", Type: TUUID, Required: true, Description: "the VM"},
				{Name: "forced", Type: TBoolean, Description: "ignored: the medium is always ejected, even when the guest locked the drive"},
			},
			ResponseName: "virtualmachine", Response: vmFields, Handler: detachISOCmd,
		},
	)
}

// isoVM loads a VM whose CD-ROM drive may change: the caller's, Running
// or Stopped, on a hypervisor with CD-ROM drives.
func (c *Call) isoVM(id string) (*models.VMInstance, error) {
	vm, err := c.vmForUse(id)
	if err != nil {
		return nil, err
	}
	if vm.State != models.VMRunning && vm.State != models.VMStopped {
		return nil, cserr.Param("Virtual machine %s is %s: ISOs are attached to and detached from Running or Stopped VMs", vm.Name, vm.State)
	}
	switch vm.HypervisorType {
	case models.HypervisorLXC, models.HypervisorBareMetal:
		return nil, cserr.New(cserr.UnsupportedAction, "Virtual machine %s runs on %s, which has no CD-ROM drive", vm.Name, vm.HypervisorType)
	}
	return vm, nil
}

func attachISOCmd(c *Call) (any, error) {
	vm, err := c.isoVM(c.Str("virtualmachineid"))
	if err != nil {
		return nil, err
	}
	var t models.Template
	if err := c.S.DB.NewSelect().Model(&t).Where("uuid = ?", c.Str("id")).Limit(1).Scan(c.Ctx); err != nil {
		if isNoRows(err) {
			return nil, cserr.Param("Unable to find ISO by id %s", c.Str("id"))
		}
		return nil, err
	}
	if t.Format != models.FormatISO {
		return nil, cserr.Param("%s is a template, not an ISO: only ISOs go into a CD-ROM drive", t.Name)
	}
	if vm.ISOID != 0 {
		return nil, cserr.Param("Virtual machine %s already has an ISO attached; detach it first", vm.Name)
	}
	owners, err := loadOwners(c.Ctx, c.S.DB, []int64{vm.AccountID})
	if err != nil {
		return nil, err
	}
	o := owners[vm.AccountID]
	if o == nil {
		return nil, cserr.Param("Unable to find virtual machine by id %s", vm.UUID)
	}
	var zone models.Zone
	if err := c.S.DB.NewSelect().Model(&zone).Where("id = ?", vm.ZoneID).WhereAllWithDeleted().Limit(1).Scan(c.Ctx); err != nil {
		return nil, err
	}
	// Active, usable by the VM's owner, and downloaded in the VM's zone.
	if err := c.templateUsable(&t, o, &zone); err != nil {
		return nil, err
	}
	in := activities.VMISOInput{VMUUID: vm.UUID, ISOUUID: t.UUID, Actor: actorOf(c.Caller)}
	return c.StartJob(JobSpec{Workflow: workflows.AttachISO, Input: in, InstanceType: "VirtualMachine", InstanceUUID: vm.UUID,
		ResponseID: vm.UUID, Summary: "attach ISO " + t.Name + " to " + vm.Name})
}

func detachISOCmd(c *Call) (any, error) {
	vm, err := c.isoVM(c.Str("virtualmachineid"))
	if err != nil {
		return nil, err
	}
	if vm.ISOID == 0 {
		return nil, cserr.Param("Virtual machine %s has no ISO attached", vm.Name)
	}
	in := activities.VMISOInput{VMUUID: vm.UUID, Actor: actorOf(c.Caller)}
	return c.StartJob(JobSpec{Workflow: workflows.DetachISO, Input: in, InstanceType: "VirtualMachine", InstanceUUID: vm.UUID,
		ResponseID: vm.UUID, Summary: "detach ISO from " + vm.Name})
}
