package activities

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/bmc"
	"github.com/nimbus-cloud/nimbus/models"
)

// Background power-state sync of out-of-band management (CloudStack's
// PowerStateSync task): the OOBMPowerSync schedule reads the power state of
// every host whose management is enabled (for itself, its cluster and its
// zone) through the same BMC path as the power actions, a page of hosts at
// a time with bounded concurrency. A changed state is recorded with the
// time it was read; a BMC that refuses the credentials or does not answer
// turns the state Unknown and raises one alert until it answers again.

// OOBM alert types as CloudStack numbers them (AlertService.AlertType):
// ALERT.OOBM.AUTHERROR for refused credentials; a BMC that does not answer
// is a host alert (ALERT_TYPE_HOST).
const (
	AlertTypeHost          = 7
	AlertTypeOOBMAuthError = 29
)

// OOBMSyncAlertPrefix starts the name of the open alert of a host whose BMC
// could not be read (followed by the host's UUID): one per host until the
// BMC answers again.
const OOBMSyncAlertPrefix = "oobm.powerstate:"

// OOBMSyncHostsInput is one page of the sync: hosts after AfterID.
type OOBMSyncHostsInput struct {
	AfterID int64
	Limit   int
}

// OOBMSyncHost is a host whose BMC the sync reads.
type OOBMSyncHost struct {
	ID   int64
	UUID string
}

// OOBMSyncPage is one page of hosts and the concurrency to read them with
// (outofbandmanagement.sync.poolsize, read at every page so a change takes
// effect at the next run).
type OOBMSyncPage struct {
	Hosts    []OOBMSyncHost
	More     bool
	PoolSize int
}

// OOBMSyncHosts lists, by host id after AfterID, the hosts whose
// out-of-band management is enabled for themselves, their cluster and
// their zone.
func (a *OOBM) OOBMSyncHosts(ctx context.Context, in OOBMSyncHostsInput) (OOBMSyncPage, error) {
	if in.Limit <= 0 {
		in.Limit = 100
	}
	var out OOBMSyncPage
	pool, err := models.ConfigInt(ctx, a.DB, "outofbandmanagement.sync.poolsize")
	if err != nil {
		return out, err
	}
	out.PoolSize = int(max(1, min(pool, 1000)))
	var rows []OOBMSyncHost
	err = a.DB.NewSelect().TableExpr("oobm AS o").Join("JOIN hosts AS h ON h.id = o.host_id").
		ColumnExpr("h.id AS id").ColumnExpr("h.uuid AS uuid").
		Where("o.enabled = ? AND h.removed IS NULL AND o.host_id > ?", true, in.AfterID).
		Where("NOT EXISTS (SELECT 1 FROM zone_details AS zd WHERE zd.zone_id = h.zone_id AND zd.name = ? AND LOWER(zd.value) = 'false')", models.OOBMEnabledDetail).
		Where("NOT EXISTS (SELECT 1 FROM cluster_details AS cd WHERE cd.cluster_id = h.cluster_id AND cd.name = ? AND LOWER(cd.value) = 'false')", models.OOBMEnabledDetail).
		OrderExpr("o.host_id").Limit(int64(in.Limit+1)).Scan(ctx, &rows)
	if err != nil {
		return out, err
	}
	if len(rows) > in.Limit {
		rows, out.More = rows[:in.Limit], true
	}
	out.Hosts = rows
	return out, nil
}

// OOBMSyncResult is what one host's read found: the power state now shown,
// whether it changed, and why it is Unknown when the BMC failed.
type OOBMSyncResult struct {
	PowerState string
	Changed    bool
	Failure    string `json:",omitempty"`
	// Skipped: management was turned off (or the host removed) meanwhile.
	Skipped bool `json:",omitempty"`
}

// oobmSyncDefaultTimeout bounds one read when outofbandmanagement.action.timeout
// cannot be read.
const oobmSyncDefaultTimeout = 60 * time.Second

// OOBMSyncPower reads one host's power state from its BMC (within
// outofbandmanagement.action.timeout) and records it when it changed. A
// refused login or a BMC that does not answer records Unknown and raises
// an alert (and an event) unless one is open for the host; a read that
// works again resolves it. Idempotent: the updates are guarded by the
// state they change, so a retry writes nothing twice.
func (a *OOBM) OOBMSyncPower(ctx context.Context, in OOBMSyncHost) (OOBMSyncResult, error) {
	var out OOBMSyncResult
	var h models.Host
	if err := a.DB.NewSelect().Model(&h).Where("id = ?", in.ID).Limit(1).Scan(ctx); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			out.Skipped = true
			return out, nil
		}
		return out, err
	}
	r, err := OOBMCheckEnabled(ctx, a.DB, &h)
	if err != nil || r == nil {
		// Turned off since the page was read (a refusal), or the inventory
		// failed (retried).
		var refused *cserr.Error
		if err == nil || errors.As(err, &refused) {
			out.Skipped = true
			return out, nil
		}
		return out, err
	}
	timeout := oobmSyncDefaultTimeout
	if n, err := models.ConfigInt(ctx, a.DB, "outofbandmanagement.action.timeout"); err == nil && n > 0 {
		timeout = time.Duration(n) * time.Second
	}
	state, failure, alertType := models.OOBMPowerUnknown, "", 0
	b, drv, err := a.oobmBMC(ctx, &h, r)
	if err == nil {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		var st bmc.PowerState
		st, err = drv.PowerStatus(rctx, b)
		cancel()
		if err == nil {
			state = oobmPowerName(st)
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return out, ctx.Err() // the activity itself timed out or was cancelled: retried
		}
		if errors.Is(err, bmc.ErrInvalid) {
			alertType = AlertTypeOOBMAuthError
			failure = fmt.Sprintf("Out-of-band management auth-error detected for host %s (%s): %s. Please check configured credentials.", h.Name, h.UUID, err)
		} else {
			alertType = AlertTypeHost
			failure = fmt.Sprintf("Out-of-band management of host %s (%s) cannot read the power state from the BMC: %s", h.Name, h.UUID, err)
		}
	}
	out.PowerState, out.Failure = state, vmClip(failure, 3000)
	err = a.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		now := models.Now()
		res, err := tx.NewUpdate().Model((*models.OutOfBandManagement)(nil)).Set("power_state = ?", state).Set("updated = ?", now).
			Where("id = ? AND enabled = ? AND power_state <> ?", r.ID, true, state).Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n > 0 {
			out.Changed = true
			level, why := "INFO", ""
			if failure != "" {
				level, why = "WARN", ": "+out.Failure
			}
			if err := maintEvent(ctx, tx, EventInput{Type: "HOST.OOBM.POWERSTATE.TRANSITION", Level: level, ResourceType: "Host", ResourceUUID: h.UUID,
				Description: fmt.Sprintf("Out-of-band management power state of host %s changed from %s to %s%s", h.Name, r.PowerState, state, why)}, h.UUID); err != nil {
				return err
			}
		}
		return a.oobmSyncAlert(ctx, tx, &h, alertType, out.Failure)
	})
	return out, err
}

// oobmSyncAlert raises the host's alert when its BMC failed and none is
// open, and resolves the open one when the BMC answered.
func (a *OOBM) oobmSyncAlert(ctx context.Context, tx bun.Tx, h *models.Host, alertType int, failure string) error {
	key := OOBMSyncAlertPrefix + h.UUID
	var open models.Alert
	err := tx.NewSelect().Model(&open).Where("name = ? AND resolved IS NULL AND archived = ?", key, false).Order("id").Limit(1).Scan(ctx)
	has := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	now := models.Now()
	switch {
	case failure != "" && !has:
		if _, err := tx.NewInsert().Model(&models.Alert{UUID: models.NewUUID(), Type: alertType, Name: key, Subject: failure,
			ZoneID: h.ZoneID, PodID: h.PodID, ClusterID: h.ClusterID, SentCount: 1, Created: now, LastSent: now}).Exec(ctx); err != nil {
			return err
		}
		return maintEvent(ctx, tx, EventInput{Type: "ALERT.OOBM", Level: "ERROR", ResourceType: "Host", ResourceUUID: h.UUID, Description: failure}, key)
	case failure == "" && has:
		if _, err := tx.NewUpdate().Model((*models.Alert)(nil)).Set("resolved = ?", now).Where("id = ? AND resolved IS NULL", open.ID).Exec(ctx); err != nil {
			return err
		}
		return maintEvent(ctx, tx, EventInput{Type: "ALERT.OOBM", Level: "INFO", ResourceType: "Host", ResourceUUID: h.UUID,
			Description: fmt.Sprintf("Resolved: out-of-band management of host %s reads the power state from the BMC again", h.Name)}, key)
	}
	return nil
}
