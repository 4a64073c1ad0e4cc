package activities

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/uptrace/bun"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/bmc"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/baremetal"
	"github.com/nimbus-cloud/nimbus/infra/pxe"
	"github.com/nimbus-cloud/nimbus/infra/storage"
	"github.com/nimbus-cloud/nimbus/models"
)

// A BareMetal VM is the whole machine. Which VM owns a machine, and where
// its provisioning stands, are host details of the machine's host row, so
// they survive worker restarts and every worker (and the provisioning
// server) sees them:
//
//	vm.uuid, vm.name  the VM that owns the machine (from its provisioning
//	                  until the VM is destroyed; a stopped VM keeps it, so
//	                  its next start boots what was installed)
//	pxe.state         pending (the machine PXE-boots the template) or done
//	                  (its system called back)
//	pxe.token         names the provisioning in its URLs
//	pxe.template      the template's UUID
//	pxe.deadline      when waiting for the callback gives up (unix seconds)
const (
	bmVMUUID   = baremetal.DetailVMUUID
	bmVMName   = baremetal.DetailVMName
	bmState    = "pxe.state"
	bmToken    = "pxe.token"
	bmTemplate = "pxe.template"
	bmDeadline = "pxe.deadline"
	bmMAC      = baremetal.DetailDiscoveredMAC

	bmPending = "pending"
	bmDone    = "done"
)

// bmKeys are the details a machine's owner and provisioning use.
var bmKeys = []string{bmVMUUID, bmVMName, bmState, bmToken, bmTemplate, bmDeadline}

// BareMetalProvisionTimeout is the configuration (seconds) of how long a
// deployment waits for the PXE-booted system's callback; CloudStack's name.
const BareMetalProvisionTimeout = "baremetal.provision.done.notification.timeout"

// ErrTypeProvision is the error type of a provisioning that did not
// complete (no callback in time, machine released meanwhile).
const ErrTypeProvision = "ProvisionFailed"

// BareMetal holds the steps that deploy onto BareMetal hosts.
type BareMetal struct{ Deps }

// provisioner is what the BareMetal driver adds to hypervisor.Driver.
type provisioner interface {
	ProvisionVM(ctx context.Context, h hypervisor.Host, vm hypervisor.VMRef) error
}

// hostDetails reads a host's details.
func hostDetails(ctx context.Context, db bun.IDB, hostID int64) (map[string]string, error) {
	var rows []models.HostDetail
	if err := db.NewSelect().Model(&rows).Where("host_id = ?", hostID).Scan(ctx); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(rows))
	for _, r := range rows {
		out[r.Name] = r.Value
	}
	return out, nil
}

// bmForget clears the owner and provisioning of every machine the VM owns
// (destroy, a failed deployment): the machine is free again.
func bmForget(ctx context.Context, db bun.IDB, vmUUID string) error {
	var hostIDs []int64
	if err := db.NewSelect().Model((*models.HostDetail)(nil)).Column("host_id").
		Where("name = ? AND value = ?", bmVMUUID, vmUUID).Scan(ctx, &hostIDs); err != nil {
		return err
	}
	if len(hostIDs) == 0 {
		return nil
	}
	_, err := db.NewDelete().Model((*models.HostDetail)(nil)).
		Where("host_id IN (?) AND name IN (?)", bun.In(hostIDs), bun.In(bmKeys)).Exec(ctx)
	return err
}

// BareMetalStartResult says whether the machine is being provisioned (the
// workflow then waits for its callback) and for how long.
type BareMetalStartResult struct {
	Provisioning bool
	HostUUID     string
	Timeout      time.Duration
}

// bmVM loads a VM placed on a BareMetal host with the host and its driver.
func (a *BareMetal) bmVM(ctx context.Context, vmUUID string) (*models.VMInstance, *models.Host, hypervisor.Host, hypervisor.Driver, error) {
	vm, err := mustVM(ctx, a.DB, vmUUID)
	if err != nil {
		return nil, nil, hypervisor.Host{}, nil, err
	}
	if vm.HostID == 0 {
		return vm, nil, hypervisor.Host{}, nil, vmStateFail(vm, vm.State+" on a host")
	}
	row, target, drv, err := (&VMs{Deps: a.Deps}).vmHost(ctx, vm.HostID)
	if err != nil {
		return vm, nil, target, nil, err
	}
	if row.HypervisorType != models.HypervisorBareMetal {
		return vm, row, target, drv, fail(cserr.ParamError, "host %s is a %s host, not BareMetal", row.Name, row.HypervisorType)
	}
	return vm, row, target, drv, nil
}

// BareMetalStart powers the VM's machine on. A machine this VM owns and
// that was provisioned for it boots what is installed; any other is
// provisioned: the VM becomes its owner, a provisioning token is recorded
// (before anything is powered, so a retry reuses it), and the machine is
// powered off, set to boot from the network once and powered on, each
// read back from its BMC. The template is checked first: a BareMetal
// template must hold a kernel and an initrd.
func (a *BareMetal) BareMetalStart(ctx context.Context, in VMRefInput) (BareMetalStartResult, error) {
	vm, row, target, drv, err := a.bmVM(ctx, in.VMUUID)
	if err != nil {
		return BareMetalStartResult{}, err
	}
	if vm.State != models.VMStarting && vm.State != models.VMRunning {
		return BareMetalStartResult{}, vmStateFail(vm, models.VMStarting)
	}
	out := BareMetalStartResult{HostUUID: row.UUID}
	ref := hypervisor.VMRef{Name: vm.InstanceName, UUID: vm.UUID}
	d, err := hostDetails(ctx, a.DB, row.ID)
	if err != nil {
		return out, err
	}
	if d[bmVMUUID] == vm.UUID && d[bmState] == bmDone {
		target.Details = mergeDetails(target.Details, d)
		_, err := callHeartbeating(ctx, func(ctx context.Context) (struct{}, error) { return struct{}{}, drv.StartVM(ctx, target, ref) })
		return out, driverFailure(err)
	}
	prov, ok := drv.(provisioner)
	if !ok {
		return out, fail(cserr.UnsupportedAction, "the %s driver cannot provision machines", row.HypervisorType)
	}
	timeout := time.Duration(1800) * time.Second
	if n, err := models.ConfigInt(ctx, a.DB, BareMetalProvisionTimeout); err == nil && n > 0 {
		timeout = time.Duration(n) * time.Second
	}
	if d[bmVMUUID] != vm.UUID || d[bmState] != bmPending || d[bmToken] == "" {
		if vm.TemplateID == 0 {
			return out, fail(cserr.ParamError, "VM %s has no template to provision its machine from (BareMetal VMs boot a template by PXE)", vm.Name)
		}
		var t models.Template
		if err := a.DB.NewSelect().Model(&t).Where("id = ?", vm.TemplateID).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
			return out, err
		}
		if _, err := a.bmImageCheck(ctx, &t, vm.ZoneID); err != nil {
			return out, err
		}
		token := make([]byte, 16)
		_, _ = rand.Read(token)
		set := map[string]string{bmVMUUID: vm.UUID, bmVMName: vm.InstanceName, bmState: bmPending, bmToken: hex.EncodeToString(token),
			bmTemplate: t.UUID, bmDeadline: strconv.FormatInt(time.Now().Add(timeout).Unix(), 10)}
		err := a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			// The placement reserved the machine for this VM: another owner
			// recorded is a VM that left it (stopped and moved, or failed).
			if _, err := tx.NewDelete().Model((*models.HostDetail)(nil)).Where("host_id = ? AND name IN (?)", row.ID, bun.In(bmKeys)).Exec(ctx); err != nil {
				return err
			}
			return setHostDetails(ctx, tx, row.ID, set)
		})
		if err != nil {
			return out, err
		}
		d = mergeDetails(d, set)
	} else if dl, err := strconv.ParseInt(d[bmDeadline], 10, 64); err == nil {
		timeout = max(time.Until(time.Unix(dl, 0)), time.Second)
	}
	target.Details = mergeDetails(target.Details, d)
	_, err = callHeartbeating(ctx, func(ctx context.Context) (struct{}, error) { return struct{}{}, prov.ProvisionVM(ctx, target, ref) })
	if err != nil {
		return out, driverFailure(err)
	}
	out.Provisioning, out.Timeout = true, timeout
	return out, nil
}

func mergeDetails(a, b map[string]string) map[string]string {
	out := make(map[string]string, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// BareMetalAwaitInput names the provisioning to wait for.
type BareMetalAwaitInput struct {
	VMUUID string
	// Poll is the interval between looks at the inventory (default 2s).
	Poll time.Duration
}

// BareMetalAwaitProvisioned waits, heartbeating, until the machine's system
// called back (the provisioning server marked it done) or its deadline
// passed. It reads the inventory only, so a retry on another worker (after
// this one died) waits on where the last one was.
func (a *BareMetal) BareMetalAwaitProvisioned(ctx context.Context, in BareMetalAwaitInput) error {
	poll := in.Poll
	if poll <= 0 {
		poll = 2 * time.Second
	}
	start := time.Now()
	for {
		vm, err := mustVM(ctx, a.DB, in.VMUUID)
		if err != nil {
			return err
		}
		if vm.HostID == 0 {
			return temporal.NewNonRetryableApplicationError(fmt.Sprintf("VM %s left its machine while it was provisioned", vm.Name), ErrTypeProvision, nil)
		}
		d, err := hostDetails(ctx, a.DB, vm.HostID)
		if err != nil {
			return err
		}
		if d[bmVMUUID] != vm.UUID {
			return temporal.NewNonRetryableApplicationError(fmt.Sprintf("the machine of VM %s was released while it was provisioned", vm.Name), ErrTypeProvision, nil)
		}
		if d[bmState] == bmDone {
			return nil
		}
		dl, _ := strconv.ParseInt(d[bmDeadline], 10, 64)
		if time.Now().After(time.Unix(dl, 0)) {
			var h models.Host
			_ = a.DB.NewSelect().Model(&h).Column("name").Where("id = ?", vm.HostID).Scan(ctx)
			return temporal.NewNonRetryableApplicationError(fmt.Sprintf(
				"host %s did not report provisioned in time: the system it PXE-booted never called back (is the provisioning server, nimbus worker --pxe-url, reachable from the machine's network, and does the template's system call nimbus.callback?)",
				h.Name), ErrTypeProvision, nil)
		}
		if activity.IsActivity(ctx) {
			activity.RecordHeartbeat(ctx, fmt.Sprintf("waiting for the callback for %s", time.Since(start).Round(time.Second)))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
}

// BareMetalReleaseInput undoes a BareMetal start.
type BareMetalReleaseInput struct {
	VMUUID string
	// Forget clears the VM's ownership of the machine even when it was
	// provisioned (a failed deployment); otherwise only an unfinished
	// provisioning is forgotten (nothing usable was installed).
	Forget bool
}

// BareMetalRelease powers the VM's machine off (read back) and gives it up
// as the input says. A VM not on a machine is success.
func (a *BareMetal) BareMetalRelease(ctx context.Context, in BareMetalReleaseInput) error {
	vm, err := vmByUUID(ctx, a.DB, in.VMUUID)
	if errors.Is(err, models.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if vm.HostID == 0 {
		return bmForget(ctx, a.DB, vm.UUID)
	}
	row, target, drv, err := (&VMs{Deps: a.Deps}).vmHost(ctx, vm.HostID)
	if errors.Is(err, errVMHostGone) {
		return bmForget(ctx, a.DB, vm.UUID)
	}
	if err != nil {
		return err
	}
	d, err := hostDetails(ctx, a.DB, row.ID)
	if err != nil {
		return err
	}
	if d[bmVMUUID] != vm.UUID {
		return nil // not this VM's machine (any more)
	}
	_, err = callHeartbeating(ctx, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, drv.DestroyVM(ctx, target, hypervisor.VMRef{Name: vm.InstanceName, UUID: vm.UUID})
	})
	if err != nil {
		return driverFailure(err)
	}
	if in.Forget || d[bmState] != bmDone {
		return bmForget(ctx, a.DB, vm.UUID)
	}
	return nil
}

// bmImage opens a template's archive on the zone's secondary storage.
func (a *BareMetal) bmImage(ctx context.Context, t *models.Template, zoneID int64) (io.ReadCloser, error) {
	loc, err := (&VMs{Deps: a.Deps}).templateSource(ctx, t, zoneID)
	if err != nil {
		return nil, err
	}
	if a.ImageStores == nil {
		return nil, errors.New("this worker has no image store drivers")
	}
	drv, err := a.ImageStores(loc.Store.Provider)
	if err != nil {
		return nil, driverFailure(err)
	}
	op, ok := drv.(interface {
		Open(ctx context.Context, s storage.ImageStore, rel string) (io.ReadCloser, storage.Image, error)
	})
	if !ok {
		return nil, fail(cserr.UnsupportedAction, "image store provider %s cannot serve BareMetal templates", loc.Store.Provider)
	}
	rc, _, err := op.Open(ctx, loc.Store, loc.Path)
	if err != nil {
		return nil, driverFailure(err)
	}
	return rc, nil
}

// bmImageCheck checks a BareMetal template's archive and reads its kernel
// arguments.
func (a *BareMetal) bmImageCheck(ctx context.Context, t *models.Template, zoneID int64) (string, error) {
	rc, err := a.bmImage(ctx, t, zoneID)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	cmdline, err := pxe.Contents(rc)
	if err != nil {
		return "", fail(cserr.ParamError, "Template %s cannot be PXE-booted: %v", t.Name, err)
	}
	return cmdline, nil
}

// ---- the provisioning server's store ----

// PXEStore answers the provisioning server from the inventory.
type PXEStore struct {
	Deps
	mu       sync.Mutex
	cmdlines map[string]string // template UUID -> kernel arguments
}

var _ pxe.Store = (*PXEStore)(nil)

// bmProvisioning is one machine's provisioning in progress.
type bmProvisioning struct {
	host    models.Host
	details map[string]string
}

// pending finds the machine whose detail key has value, with a provisioning
// pending.
func (s *PXEStore) pending(ctx context.Context, key, value string) (*bmProvisioning, error) {
	var ids []int64
	if err := s.DB.NewSelect().Model((*models.HostDetail)(nil)).Column("host_id").Where("name = ? AND value = ?", key, value).Scan(ctx, &ids); err != nil {
		return nil, err
	}
	for _, id := range ids {
		var h models.Host
		if err := s.DB.NewSelect().Model(&h).Where("id = ? AND hypervisor_type = ?", id, models.HypervisorBareMetal).Limit(1).Scan(ctx); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			return nil, err
		}
		d, err := hostDetails(ctx, s.DB, id)
		if err != nil {
			return nil, err
		}
		return &bmProvisioning{host: h, details: d}, nil
	}
	return nil, pxe.ErrNotFound
}

// Boot answers the boot script of the machine with this MAC.
func (s *PXEStore) Boot(ctx context.Context, mac string) (pxe.Boot, error) {
	p, err := s.pending(ctx, bmMAC, mac)
	if err != nil {
		return pxe.Boot{}, err
	}
	if p.details[bmState] != bmPending || p.details[bmToken] == "" {
		return pxe.Boot{}, pxe.ErrNotFound
	}
	var t models.Template
	if err := s.DB.NewSelect().Model(&t).Where("uuid = ?", p.details[bmTemplate]).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
		return pxe.Boot{}, fmt.Errorf("template %s of the provisioning: %w", p.details[bmTemplate], err)
	}
	s.mu.Lock()
	cmdline, ok := s.cmdlines[t.UUID]
	s.mu.Unlock()
	if !ok {
		cmdline, err = (&BareMetal{Deps: s.Deps}).bmImageCheck(ctx, &t, p.host.ZoneID)
		if err != nil {
			return pxe.Boot{}, err
		}
		s.mu.Lock()
		if s.cmdlines == nil {
			s.cmdlines = map[string]string{}
		}
		s.cmdlines[t.UUID] = cmdline
		s.mu.Unlock()
	}
	return pxe.Boot{Token: p.details[bmToken], Cmdline: cmdline,
		Description: fmt.Sprintf("deploying VM %s from template %s on host %s", p.details[bmVMName], t.Name, p.host.Name)}, nil
}

// Image opens the template archive of the provisioning with this token.
func (s *PXEStore) Image(ctx context.Context, token string) (io.ReadCloser, error) {
	p, err := s.pending(ctx, bmToken, token)
	if err != nil {
		return nil, err
	}
	if p.details[bmState] != bmPending {
		return nil, pxe.ErrNotFound
	}
	var t models.Template
	if err := s.DB.NewSelect().Model(&t).Where("uuid = ?", p.details[bmTemplate]).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
		return nil, err
	}
	return (&BareMetal{Deps: s.Deps}).bmImage(ctx, &t, p.host.ZoneID)
}

// Done marks the provisioning with this token done (checking the caller's
// MAC when it gave one) and records an event on the host.
func (s *PXEStore) Done(ctx context.Context, mac, token string) error {
	return s.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var ids []int64
		if err := tx.NewSelect().Model((*models.HostDetail)(nil)).Column("host_id").Where("name = ? AND value = ?", bmToken, token).Scan(ctx, &ids); err != nil {
			return err
		}
		if len(ids) == 0 {
			return pxe.ErrNotFound
		}
		d, err := hostDetails(ctx, tx, ids[0])
		if err != nil {
			return err
		}
		if mac != "" && !strings.EqualFold(d[bmMAC], mac) {
			return pxe.ErrConflict
		}
		if d[bmState] == bmDone {
			return nil
		}
		res, err := tx.NewUpdate().Model((*models.HostDetail)(nil)).Set("value = ?", bmDone).
			Where("host_id = ? AND name = ? AND value = ?", ids[0], bmState, bmPending).Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return pxe.ErrNotFound
		}
		var h models.Host
		if err := tx.NewSelect().Model(&h).Column("uuid", "name").Where("id = ?", ids[0]).Scan(ctx); err != nil {
			return err
		}
		return WriteEvent(ctx, tx, EventInput{Type: "HOST.PROVISIONED", ResourceType: "Host", ResourceUUID: h.UUID,
			Description: fmt.Sprintf("Host %s was provisioned for VM %s: its system called back", h.Name, d[bmVMName])})
	})
}

// ---- fencing ----

// BMC holds the steps that act on hosts through their BMC.
type BMC struct{ Deps }

// BMCDrivers opens BMC drivers (IPMI, Redfish...) on first use and keeps
// them for the life of the worker.
type BMCDrivers struct {
	mu   sync.Mutex
	open map[string]bmc.Driver
	opts map[string]string
}

// NewBMCDrivers builds the cache; opts go to every driver (power_timeout...).
func NewBMCDrivers(opts map[string]string) *BMCDrivers {
	return &BMCDrivers{open: map[string]bmc.Driver{}, opts: opts}
}

// Get returns the driver of a provider.
func (d *BMCDrivers) Get(provider string) (bmc.Driver, error) {
	p, err := bmc.Canonical(provider)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if drv := d.open[p]; drv != nil {
		return drv, nil
	}
	drv, err := bmc.Open(p, bmc.Config{Options: d.opts})
	if err != nil {
		return nil, err
	}
	d.open[p] = drv
	return drv, nil
}

// Close closes every driver opened.
func (d *BMCDrivers) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for p, drv := range d.open {
		errs = append(errs, drv.Close())
		delete(d.open, p)
	}
	return errors.Join(errs...)
}

var defaultBMCs = NewBMCDrivers(nil)

// HostFenceInput names the host to fence.
type HostFenceInput struct {
	HostUUID string
	Reason   string // why (for the event), e.g. "stopped answering"
	Actor    Actor
}

// HostFenceResult is the power state read back after fencing.
type HostFenceResult struct {
	Power string
}

// HostFence powers a host off through its BMC and confirms it is off, so
// that its VMs can be restarted elsewhere without running twice. The BMC
// is the host's out-of-band management (configureOutOfBandManagement; a
// BareMetal host's is filled from its URL), which must be enabled; hosts
// without one may still name a BMC in the host details bmc.url,
// bmc.username and bmc.password (encrypted like host passwords). A host
// without a BMC cannot be fenced (NotSupported).
func (a *BMC) HostFence(ctx context.Context, in HostFenceInput) (HostFenceResult, error) {
	row, target, err := (&Hosts{Deps: a.Deps}).hostTarget(ctx, in.HostUUID)
	if err != nil {
		return HostFenceResult{}, err
	}
	var b bmc.BMC
	var drv bmc.Driver
	rec, err := OOBMRecord(ctx, a.DB, row.ID)
	if err != nil {
		return HostFenceResult{}, err
	}
	if rec != nil {
		// The host's out-of-band management: it must be enabled for the
		// host, its cluster and its zone, as for any power action.
		if _, err := OOBMCheckEnabled(ctx, a.DB, row); err != nil {
			return HostFenceResult{}, temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("host %s cannot be fenced through its BMC: %s", row.Name, cserr.As(err).Text), "NotSupported", nil)
		}
	}
	get := defaultBMCs.Get
	if a.BMCs != nil {
		get = a.BMCs
	}
	switch {
	case row.HypervisorType == models.HypervisorBareMetal:
		b, err = baremetal.BMCOf(target) // its URL, pointed at the OOBM record by hostTarget
	case rec != nil:
		b, drv, err = a.oobmBMC(ctx, row, rec)
		if err != nil {
			return HostFenceResult{}, err
		}
	default:
		u := target.Details["bmc.url"]
		if u == "" {
			return HostFenceResult{}, temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("host %s has no BMC to fence it through (configure its out-of-band management: configureOutOfBandManagement)", row.Name), "NotSupported", nil)
		}
		b, err = bmc.ParseURL(u)
		b.HostID, b.Username = target.ID, target.Details["bmc.username"]
		if pw := target.Details["bmc.password"]; pw != "" && err == nil {
			if a.Secrets == nil {
				return HostFenceResult{}, errors.New("worker has no server key to decrypt the BMC password")
			}
			if b.Password, err = a.Secrets.Decrypt(pw); err != nil {
				return HostFenceResult{}, temporal.NewNonRetryableApplicationError("cannot decrypt the host's BMC password: "+err.Error(), "Invalid", nil)
			}
		}
	}
	if err != nil {
		return HostFenceResult{}, driverFailure(err)
	}
	if drv == nil {
		if drv, err = get(b.Provider); err != nil {
			return HostFenceResult{}, driverFailure(err)
		}
	}
	_, err = callHeartbeating(ctx, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, baremetal.FenceBMC(ctx, drv, b, nil)
	})
	if err != nil {
		return HostFenceResult{}, driverFailure(err)
	}
	if rec != nil {
		if err := (&OOBM{Deps: a.Deps}).setPower(ctx, row.ID, models.OOBMPowerOff); err != nil {
			return HostFenceResult{}, err
		}
	}
	reason := in.Reason
	if reason == "" {
		reason = "fenced"
	}
	err = WriteEvent(ctx, a.DB, activityEvent(ctx, EventInput{Actor: in.Actor, Type: "HOST.FENCE", Level: "WARN", ResourceType: "Host", ResourceUUID: row.UUID,
		Description: fmt.Sprintf("Host %s was powered off through its BMC (%s) and reads back off: %s", row.Name, hostNameOf(b.Address), reason)}))
	return HostFenceResult{Power: string(bmc.PowerOff)}, err
}
