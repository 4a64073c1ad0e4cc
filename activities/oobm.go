package activities

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/uptrace/bun"
	"go.temporal.io/sdk/temporal"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/bmc"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/baremetal"
	"github.com/nimbus-cloud/nimbus/infra/secrets"
	"github.com/nimbus-cloud/nimbus/models"
)

// Out-of-band management (CloudStack's OOBM): any host may be given a BMC
// (configureOutOfBandManagement), which power actions and fencing use while
// management is enabled for the host, its cluster and its zone. A BareMetal
// host's record is filled from its URL when it is added, and its driver
// reaches the machine through the record from then on.

// OOBM holds the out-of-band management steps.
type OOBM struct{ Deps }

// OOBM operations of the OutOfBandManagement job.
const (
	OOBMOpEnable   = "enable"
	OOBMOpDisable  = "disable"
	OOBMOpPower    = "power"
	OOBMOpPassword = "password"
)

// OOBM power actions (CloudStack's PowerOperation).
var OOBMActions = []string{"ON", "OFF", "CYCLE", "RESET", "SOFT", "STATUS"}

// OOBMInput is one out-of-band management job.
type OOBMInput struct {
	Op        string
	Scope     string // Host, Cluster, Zone (enable/disable)
	UUID      string // of the host, cluster or zone
	Action    string // power: ON, OFF...
	Timeout   time.Duration
	NewSealed string // password: the new password, sealed
	Actor     Actor
}

// OOBMResultID names what an OOBM job's result shows: the renderer of type
// "OutOfBandManagement" reads it back (host, action, scope enabled flag).
func OOBMResultID(hostUUID, action string, enabled *bool) string {
	v := url.Values{}
	if hostUUID != "" {
		v.Set("hostid", hostUUID)
	}
	if action != "" {
		v.Set("action", action)
	}
	if enabled != nil {
		v.Set("enabled", strconv.FormatBool(*enabled))
	}
	return v.Encode()
}

// oobmFail is how CloudStack fails OOBM operations: a CloudRuntimeException,
// error 530, not retried.
func oobmFail(format string, args ...any) error {
	return fail(cserr.InternalError, format, args...)
}

// OOBMRecord reads a host's out-of-band management record (nil when none).
func OOBMRecord(ctx context.Context, db bun.IDB, hostID int64) (*models.OutOfBandManagement, error) {
	var r models.OutOfBandManagement
	if err := db.NewSelect().Model(&r).Where("host_id = ?", hostID).Limit(1).Scan(ctx); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, nil
		}
		return nil, err
	}
	return &r, nil
}

// scopeOOBMEnabled tells whether a cluster or zone detail turned out-of-band
// management off.
func scopeOOBMEnabled(ctx context.Context, db bun.IDB, model any, col string, id int64) (bool, error) {
	if id == 0 {
		return true, nil
	}
	var v []string
	if err := db.NewSelect().Model(model).Column("value").Where("? = ? AND name = ?", bun.Ident(col), id, models.OOBMEnabledDetail).Scan(ctx, &v); err != nil {
		return false, err
	}
	return len(v) == 0 || v[0] == "" || !strings.EqualFold(v[0], "false"), nil
}

// OOBMCheckEnabled refuses (530, CloudStack's words) a host whose out-of-band
// management is off for its zone, its cluster or itself, or not configured.
func OOBMCheckEnabled(ctx context.Context, db bun.IDB, h *models.Host) (*models.OutOfBandManagement, error) {
	if ok, err := scopeOOBMEnabled(ctx, db, (*models.ZoneDetail)(nil), "zone_id", h.ZoneID); err != nil {
		return nil, err
	} else if !ok {
		return nil, cserr.Internal("Out-of-band management is disabled for the host's zone. Aborting Operation.")
	}
	if ok, err := scopeOOBMEnabled(ctx, db, (*models.ClusterDetail)(nil), "cluster_id", h.ClusterID); err != nil {
		return nil, err
	} else if !ok {
		return nil, cserr.Internal("Out-of-band management is disabled for the host's cluster. Aborting Operation.")
	}
	r, err := OOBMRecord(ctx, db, h.ID)
	if err != nil {
		return nil, err
	}
	if r == nil || !r.Enabled {
		return nil, cserr.Internal("Out-of-band management is disabled or not configured for the host. Aborting Operation.")
	}
	return r, nil
}

// oobmCheck is OOBMCheckEnabled for activities: a refusal is not retried.
func oobmCheck(ctx context.Context, db bun.IDB, h *models.Host) (*models.OutOfBandManagement, error) {
	r, err := OOBMCheckEnabled(ctx, db, h)
	var ce *cserr.Error
	if errors.As(err, &ce) {
		return nil, fail(ce.Code, "%s", ce.Text)
	}
	return r, err
}

// OOBMURL is the BMC URL of a record: ipmi://ADDRESS:PORT, or for Redfish
// redfish://... (HTTPS) or redfish+http://... as redfish.use.https says.
func OOBMURL(ctx context.Context, db bun.IDB, r *models.OutOfBandManagement) (u string, insecure bool, err error) {
	hostport := r.Address
	if r.Port != "" {
		hostport = net.JoinHostPort(strings.Trim(r.Address, "[]"), r.Port)
	}
	switch r.Driver {
	case models.OOBMDriverIPMI:
		return "ipmi://" + hostport, false, nil
	case models.OOBMDriverRedfish:
		scheme := "redfish://"
		if https, err := models.ConfigBool(ctx, db, "redfish.use.https"); err == nil && !https {
			scheme = "redfish+http://"
		}
		ignore, _ := models.ConfigBool(ctx, db, "redfish.ignore.ssl")
		return scheme + hostport, ignore, nil
	}
	return "", false, fmt.Errorf("out-of-band management driver %q is not available (ipmitool or redfish)", r.Driver)
}

// oobmBMC is how the record's BMC is reached, its password decrypted. A
// BareMetal host's is its URL pointed at the record (bareMetalOverlay), so
// the URL's tuning (insecure, power_timeout) still applies.
func (d Deps) oobmBMC(ctx context.Context, h *models.Host, r *models.OutOfBandManagement) (bmc.BMC, bmc.Driver, error) {
	var b bmc.BMC
	if h.HypervisorType == models.HypervisorBareMetal {
		_, target, err := (&Hosts{Deps: d}).hostTarget(ctx, h.UUID)
		if err != nil {
			return b, nil, err
		}
		if b, err = baremetal.BMCOf(target); err != nil {
			return b, nil, oobmFail("%s", err.Error())
		}
		drv, err := d.bmcDriver(b.Provider)
		return b, drv, err
	}
	u, insecure, err := OOBMURL(ctx, d.DB, r)
	if err != nil {
		return bmc.BMC{}, nil, oobmFail("%s", err.Error())
	}
	b, err = bmc.ParseURL(u)
	if err != nil {
		return b, nil, oobmFail("%s", err.Error())
	}
	b.HostID, b.Username, b.Insecure = h.UUID, r.Username, insecure
	if r.Password != "" {
		if d.Secrets == nil {
			return b, nil, errors.New("worker has no server key to decrypt the BMC password")
		}
		if b.Password, err = d.Secrets.Decrypt(r.Password); err != nil {
			return b, nil, oobmFail("cannot decrypt the host's out-of-band management password: %v", err)
		}
	}
	drv, err := d.bmcDriver(b.Provider)
	return b, drv, err
}

// bmcDriver is the worker's driver of a BMC provider.
func (d Deps) bmcDriver(provider string) (bmc.Driver, error) {
	get := defaultBMCs.Get
	if d.BMCs != nil {
		get = d.BMCs
	}
	drv, err := get(provider)
	if err != nil {
		return nil, driverFailure(err)
	}
	return drv, nil
}

func (a *OOBM) host(ctx context.Context, uuid string) (*models.Host, error) {
	var h models.Host
	if err := a.DB.NewSelect().Model(&h).Where("uuid = ?", uuid).Limit(1).Scan(ctx); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fail(cserr.ParamError, "Unable to find host by ID: %s", uuid)
		}
		return nil, err
	}
	return &h, nil
}

// oobmPowerName is the OOBM power state of a BMC's.
func oobmPowerName(st bmc.PowerState) string {
	switch st {
	case bmc.PowerOn:
		return models.OOBMPowerOn
	case bmc.PowerOff:
		return models.OOBMPowerOff
	}
	return models.OOBMPowerUnknown
}

// oobmDriverError words a BMC failure as CloudStack does: an authentication
// failure says to check the credentials.
func oobmDriverError(h *models.Host, action string, err error) error {
	msg := err.Error()
	if errors.Is(err, bmc.ErrInvalid) {
		return oobmFail("Out-of-band Management action (%s) on host (%s) failed due to authentication error: %s. Please check configured credentials.", action, h.UUID, msg)
	}
	if errors.Is(err, bmc.ErrNotSupported) {
		return fail(cserr.UnsupportedAction, "Out-of-band Management action (%s) on host (%s) is not supported: %s", action, h.UUID, msg)
	}
	return oobmFail("Out-of-band Management action (%s) on host (%s) failed with error: %s", action, h.UUID, msg)
}

// OOBMPowerResult is the power state read back.
type OOBMPowerResult struct {
	PowerState string
}

// OOBMPower runs a power action through the host's BMC and reads the power
// state back (ON, OFF, SOFT, CYCLE and RESET wait until the BMC reports the
// state they lead to; RESET is a power cycle). The state read is recorded.
func (a *OOBM) OOBMPower(ctx context.Context, in OOBMInput) (OOBMPowerResult, error) {
	h, err := a.host(ctx, in.UUID)
	if err != nil {
		return OOBMPowerResult{}, err
	}
	r, err := oobmCheck(ctx, a.DB, h)
	if err != nil {
		return OOBMPowerResult{}, err
	}
	if !slices.Contains(OOBMActions, in.Action) {
		return OOBMPowerResult{}, fail(cserr.ParamError, "unknown power action %q: valid actions are %s", in.Action, strings.Join(OOBMActions, ", "))
	}
	b, drv, err := a.oobmBMC(ctx, h, r)
	if err != nil {
		return OOBMPowerResult{}, err
	}
	if in.Timeout > 0 {
		b.Details["power_timeout"] = in.Timeout.String()
	}
	st, err := callHeartbeating(ctx, func(ctx context.Context) (bmc.PowerState, error) {
		var err error
		switch in.Action {
		case "ON":
			err = drv.PowerOn(ctx, b)
		case "OFF":
			err = drv.PowerOff(ctx, b, true)
		case "SOFT":
			err = drv.PowerOff(ctx, b, false)
		case "CYCLE", "RESET":
			err = drv.PowerCycle(ctx, b)
		}
		if err != nil {
			return bmc.PowerUnknown, err
		}
		return drv.PowerStatus(ctx, b)
	})
	if err != nil {
		if in.Action == "STATUS" {
			_ = a.setPower(ctx, h.ID, models.OOBMPowerUnknown)
		}
		return OOBMPowerResult{}, oobmDriverError(h, in.Action, err)
	}
	out := OOBMPowerResult{PowerState: oobmPowerName(st)}
	if err := a.setPower(ctx, h.ID, out.PowerState); err != nil {
		return out, err
	}
	if in.Action != "STATUS" {
		err = WriteEvent(ctx, a.DB, activityEvent(ctx, EventInput{Actor: in.Actor, Type: "HOST.OOBM.POWERACTION", ResourceType: "Host", ResourceUUID: h.UUID,
			Description: fmt.Sprintf("Out-of-band management action %s on host %s: power %s", in.Action, h.Name, out.PowerState)}))
	}
	return out, err
}

func (a *OOBM) setPower(ctx context.Context, hostID int64, state string) error {
	_, err := a.DB.NewUpdate().Model((*models.OutOfBandManagement)(nil)).Set("power_state = ?", state).Set("updated = ?", models.Now()).
		Where("host_id = ?", hostID).Exec(ctx)
	return err
}

// OOBMChangePassword changes the BMC user's password on the BMC, then
// records it. A retry after the BMC took the new password (the old one is
// refused, the new one works) only records it.
func (a *OOBM) OOBMChangePassword(ctx context.Context, in OOBMInput) error {
	h, err := a.host(ctx, in.UUID)
	if err != nil {
		return err
	}
	r, err := oobmCheck(ctx, a.DB, h)
	if err != nil {
		return err
	}
	if r.Password == "" {
		return oobmFail("Cannot change out-of-band management password as we've no previously configured password for the host %s.", h.UUID)
	}
	if a.Secrets == nil {
		return errors.New("worker has no server key to decrypt the new password")
	}
	newPass, err := a.Secrets.Decrypt(in.NewSealed)
	if err != nil {
		return oobmFail("cannot decrypt the new password: %v", err)
	}
	b, drv, err := a.oobmBMC(ctx, h, r)
	if err != nil {
		return err
	}
	_, err = callHeartbeating(ctx, func(ctx context.Context) (struct{}, error) {
		err := drv.ChangePassword(ctx, b, newPass)
		if errors.Is(err, bmc.ErrInvalid) {
			nb := b
			nb.Password = newPass
			if _, perr := drv.PowerStatus(ctx, nb); perr == nil {
				return struct{}{}, nil // a retry: the BMC has the new password already
			}
		}
		return struct{}{}, err
	})
	if err != nil {
		var msg = err.Error()
		if errors.Is(err, bmc.ErrNotSupported) {
			return fail(cserr.UnsupportedAction, "Cannot change the out-of-band management password of host %s: %s", h.UUID, msg)
		}
		return oobmFail("Failed to change out-of-band management password for host (%s) with error: %s", h.UUID, msg)
	}
	if _, err := a.DB.NewUpdate().Model((*models.OutOfBandManagement)(nil)).Set("password = ?", in.NewSealed).Set("updated = ?", models.Now()).
		Where("id = ?", r.ID).Exec(ctx); err != nil {
		return err
	}
	return WriteEvent(ctx, a.DB, activityEvent(ctx, EventInput{Actor: in.Actor, Type: "HOST.OOBM.CHANGEPASSWORD", ResourceType: "Host", ResourceUUID: h.UUID,
		Description: fmt.Sprintf("Out-of-band management password of host %s changed on its BMC", h.Name)}))
}

// OOBMSetEnabled turns out-of-band management on or off for a host (which
// must be configured), a cluster or a zone. Turning it off shows the power
// state of the hosts concerned as Disabled; on, as Unknown until read.
func (a *OOBM) OOBMSetEnabled(ctx context.Context, in OOBMInput) error {
	enabled := in.Op == OOBMOpEnable
	power := models.OOBMPowerUnknown
	if !enabled {
		power = models.OOBMPowerDisabled
	}
	return a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		switch in.Scope {
		case "Host":
			var h models.Host
			if err := tx.NewSelect().Model(&h).Column("id", "uuid").Where("uuid = ?", in.UUID).Limit(1).Scan(ctx); err != nil {
				return err
			}
			res, err := tx.NewUpdate().Model((*models.OutOfBandManagement)(nil)).Set("enabled = ?", enabled).Set("power_state = ?", power).
				Set("updated = ?", models.Now()).Where("host_id = ?", h.ID).Exec(ctx)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				return oobmFail("Out-of-band management is not configured for the host. Please configure the host before enabling/disabling it.")
			}
			return nil
		case "Cluster", "Zone":
			model, table, col := any((*models.ClusterDetail)(nil)), "clusters", "cluster_id"
			if in.Scope == "Zone" {
				model, table, col = (*models.ZoneDetail)(nil), "zones", "zone_id"
			}
			var id int64
			if err := tx.NewSelect().Table(table).Column("id").Where("uuid = ?", in.UUID).Limit(1).Scan(ctx, &id); err != nil {
				return err
			}
			if _, err := tx.NewDelete().Model(model).Where("? = ? AND name = ?", bun.Ident(col), id, models.OOBMEnabledDetail).Exec(ctx); err != nil {
				return err
			}
			if in.Scope == "Zone" {
				_, err := tx.NewInsert().Model(&models.ZoneDetail{ZoneID: id, Name: models.OOBMEnabledDetail, Value: strconv.FormatBool(enabled)}).Exec(ctx)
				if err != nil {
					return err
				}
			} else if _, err := tx.NewInsert().Model(&models.ClusterDetail{ClusterID: id, Name: models.OOBMEnabledDetail, Value: strconv.FormatBool(enabled)}).Exec(ctx); err != nil {
				return err
			}
			if !enabled {
				_, err := tx.NewUpdate().Model((*models.OutOfBandManagement)(nil)).Set("power_state = ?", power).
					Where("host_id IN (SELECT id FROM hosts WHERE ? = ?)", bun.Ident(col), id).Exec(ctx)
				return err
			}
			return nil
		}
		return fail(cserr.ParamError, "unknown out-of-band management scope %q", in.Scope)
	})
}

// bareMetalOOBM fills a BareMetal host's out-of-band management record from
// its URL and credentials when it has none (addHost), enabled.
func bareMetalOOBM(ctx context.Context, tx bun.IDB, h *models.Host) error {
	if r, err := OOBMRecord(ctx, tx, h.ID); err != nil || r != nil {
		return err
	}
	b, err := bmc.ParseURL(h.URL)
	if err != nil {
		return nil // the driver refused it already; nothing to record
	}
	rec := models.OutOfBandManagement{HostID: h.ID, Enabled: true, PowerState: models.OOBMPowerUnknown, Created: models.Now()}
	switch b.Provider {
	case bmc.ProviderIPMI:
		rec.Driver, rec.Port = models.OOBMDriverIPMI, "623"
	case bmc.ProviderRedfish:
		rec.Driver, rec.Port = models.OOBMDriverRedfish, "443"
	default:
		return nil // the simulator: no real BMC to record
	}
	u, err := url.Parse(b.Address)
	if err != nil {
		return nil
	}
	rec.Address = u.Hostname()
	if p := u.Port(); p != "" {
		rec.Port = p
	}
	d, err := hostDetails(ctx, tx, h.ID)
	if err != nil {
		return err
	}
	rec.Username, rec.Password = d["username"], d["password"]
	if v := d["power"]; v != "" {
		rec.PowerState = oobmPowerName(bmc.PowerState(v))
	}
	_, err = tx.NewInsert().Model(&rec).Exec(ctx)
	return err
}

// bareMetalOverlay points a BareMetal host's BMC URL and credentials at its
// out-of-band management record, so that a BMC reconfigured or a password
// changed through the OOBM API is what deployments use. The URL keeps its
// scheme and query (insecure, power_timeout, the machine's shape) unless the
// record names another driver.
func bareMetalOverlay(ctx context.Context, db bun.IDB, h *models.Host, t *hypervisor.Host, secrets *secrets.Box) error {
	r, err := OOBMRecord(ctx, db, h.ID)
	if err != nil || r == nil || r.Address == "" {
		return err
	}
	u, err := url.Parse(t.URL)
	if err != nil {
		return nil
	}
	b, err := bmc.ParseURL(t.URL)
	if err != nil {
		return nil
	}
	want := bmc.ProviderIPMI
	if r.Driver == models.OOBMDriverRedfish {
		want = bmc.ProviderRedfish
	}
	if b.Provider != want {
		ou, _, err := OOBMURL(ctx, db, r)
		if err != nil {
			return nil
		}
		nu, err := url.Parse(ou)
		if err != nil {
			return nil
		}
		u.Scheme = nu.Scheme
	}
	u.Host = r.Address
	if r.Port != "" {
		u.Host = net.JoinHostPort(strings.Trim(r.Address, "[]"), r.Port)
	}
	t.URL, t.Username = u.String(), r.Username
	if r.Password != "" && secrets != nil {
		pw, err := secrets.Decrypt(r.Password)
		if err != nil {
			return temporal.NewNonRetryableApplicationError("cannot decrypt the host's out-of-band management password: "+err.Error(), "Invalid", nil)
		}
		t.Password = pw
	}
	return nil
}
