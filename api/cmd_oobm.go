package api

import (
	"context"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/workflows"
)

// Out-of-band management: a BMC for any host (docs/BAREMETAL.md).

func init() {
	hostID := Param{Name: "hostid", Type: TUUID, Required: true, Description: "the ID of the host"}
	async := func(name, desc string, p Param, scope, op string) *Command {
		return &Command{Name: name, Description: desc, Access: AccessRootAdmin, Async: true, Params: []Param{p},
			ResponseName: "outofbandmanagement", Response: oobmFields,
			Handler: func(c *Call) (any, error) { return oobmEnable(c, scope, op, c.Str(p.Name)) }}
	}
	Register(
		&Command{
			Name: "configureOutOfBandManagement", Description: "Configures a host's out-of-band management interface (its BMC)", Access: AccessRootAdmin,
			Params: []Param{
				hostID,
				{Name: "driver", Type: TString, Required: true, Description: "the driver: ipmitool (IPMI 2.0 over LAN) or redfish"},
				{Name: "address", Type: TString, Required: true, Description: "the BMC's host name or address"},
				{Name: "port", Type: TString, Required: true, Description: "the BMC's port (623 for IPMI, 443 for Redfish)"},
				{Name: "username", Type: TString, Required: true, Description: "the BMC user"},
				{Name: "password", Type: TString, Required: true, Description: "its password; stored encrypted, never shown"},
			},
			ResponseName: "outofbandmanagement", Response: oobmFields, Handler: configureOOBM,
		},
		async("enableOutOfBandManagementForHost", "Enables out-of-band management for a host", hostID, "Host", activities.OOBMOpEnable),
		async("disableOutOfBandManagementForHost", "Disables out-of-band management for a host", hostID, "Host", activities.OOBMOpDisable),
		async("enableOutOfBandManagementForCluster", "Enables out-of-band management for a cluster",
			Param{Name: "clusterid", Type: TUUID, Required: true, Description: "the ID of the cluster"}, "Cluster", activities.OOBMOpEnable),
		async("disableOutOfBandManagementForCluster", "Disables out-of-band management for a cluster",
			Param{Name: "clusterid", Type: TUUID, Required: true, Description: "the ID of the cluster"}, "Cluster", activities.OOBMOpDisable),
		async("enableOutOfBandManagementForZone", "Enables out-of-band management for a zone",
			Param{Name: "zoneid", Type: TUUID, Required: true, Description: "the ID of the zone"}, "Zone", activities.OOBMOpEnable),
		async("disableOutOfBandManagementForZone", "Disables out-of-band management for a zone",
			Param{Name: "zoneid", Type: TUUID, Required: true, Description: "the ID of the zone"}, "Zone", activities.OOBMOpDisable),
		&Command{
			Name: "issueOutOfBandManagementPowerAction", Description: "Runs a power action through a host's BMC and reads the power state back", Access: AccessRootAdmin, Async: true,
			Params: []Param{
				hostID,
				{Name: "action", Type: TString, Required: true, Description: "ON, OFF, CYCLE, RESET, SOFT or STATUS"},
				{Name: "timeout", Type: TLong, Description: "seconds the action may take to be read back (default: outofbandmanagement.action.timeout)"},
			},
			ResponseName: "outofbandmanagement", Response: oobmFields, Handler: issueOOBMPowerAction,
		},
		&Command{
			Name: "changeOutOfBandManagementPassword", Description: "Changes the password of a host's BMC user on the BMC (Redfish), then stores it", Access: AccessRootAdmin, Async: true,
			Params: []Param{
				hostID,
				{Name: "password", Type: TString, Description: "the new password"},
			},
			ResponseName: "outofbandmanagement", Response: oobmFields, Handler: changeOOBMPassword,
		},
	)
	RegisterRenderer("OutOfBandManagement", func(ctx context.Context, s *Server, id string) (any, error) {
		return s.oobmResult(ctx, id)
	})
}

var oobmFields = []Field{
	{"hostid", "string", "the ID of the host"}, {"enabled", "boolean", "whether out-of-band management is enabled for the host"},
	{"powerstate", "string", "the power state: On, Off, Unknown, Disabled"}, {"driver", "string", "ipmitool or redfish"},
	{"address", "string", "the BMC's address"}, {"port", "string", "the BMC's port"}, {"username", "string", "the BMC user"},
	{"action", "string", "the power action run"}, {"status", "boolean", "whether the operation succeeded"},
	{"description", "string", "what happened"},
}

// OOBMView is a host's out-of-band management as CloudStack shows it (the
// SDK's OutOfBandManagementResponse); the password is never shown.
type OOBMView struct {
	HostID      string `json:"hostid,omitempty"`
	Enabled     bool   `json:"enabled"`
	PowerState  string `json:"powerstate,omitempty"`
	Driver      string `json:"driver,omitempty"`
	Address     string `json:"address,omitempty"`
	Port        string `json:"port,omitempty"`
	Username    string `json:"username,omitempty"`
	Action      string `json:"action,omitempty"`
	Status      bool   `json:"status,omitempty"`
	Description string `json:"description,omitempty"`
}

func oobmViewOf(hostUUID string, r *models.OutOfBandManagement) OOBMView {
	if r == nil {
		return OOBMView{HostID: hostUUID, PowerState: models.OOBMPowerDisabled}
	}
	return OOBMView{HostID: hostUUID, Enabled: r.Enabled, PowerState: r.PowerState, Driver: r.Driver, Address: r.Address, Port: r.Port, Username: r.Username}
}

// oobmViews reads the out-of-band management of a page of hosts.
func (s *Server) oobmViews(ctx context.Context, db bun.IDB, hostIDs []int64) (map[int64]*models.OutOfBandManagement, error) {
	var rows []models.OutOfBandManagement
	if err := db.NewSelect().Model(&rows).Where("host_id IN (?)", bun.In(hostIDs)).Scan(ctx); err != nil {
		return nil, err
	}
	out := make(map[int64]*models.OutOfBandManagement, len(rows))
	for i := range rows {
		out[rows[i].HostID] = &rows[i]
	}
	return out, nil
}

// oobmResult renders an OOBM job's result (activities.OOBMResultID).
func (s *Server) oobmResult(ctx context.Context, id string) (any, error) {
	q, err := url.ParseQuery(id)
	if err != nil {
		return nil, err
	}
	v := OOBMView{Status: true, Action: q.Get("action")}
	if e := q.Get("enabled"); e != "" {
		v.Enabled = e == "true"
	}
	if hid := q.Get("hostid"); hid != "" {
		var h models.Host
		if err := s.DB.NewSelect().Model(&h).Column("id", "uuid").Where("uuid = ?", hid).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
			return nil, err
		}
		r, err := activities.OOBMRecord(ctx, s.DB, h.ID)
		if err != nil {
			return nil, err
		}
		rv := oobmViewOf(h.UUID, r)
		rv.Status, rv.Action = true, v.Action
		if v.Action != "" {
			rv.Description = "Power state is " + strings.ToLower(rv.PowerState)
		}
		return rv, nil
	}
	return v, nil
}

func configureOOBM(c *Call) (any, error) {
	h, err := c.hostByUUID(c.Str("hostid"))
	if err != nil {
		return nil, err
	}
	driver := strings.ToLower(strings.TrimSpace(c.Str("driver")))
	if driver != models.OOBMDriverIPMI && driver != models.OOBMDriverRedfish {
		return nil, cserr.Internal("Out-of-band management driver is not available. Please provide a valid driver name (ipmitool or redfish).")
	}
	addr := strings.TrimSpace(c.Str("address"))
	if addr == "" || strings.ContainsAny(addr, "/?#@ ") {
		return nil, cserr.Param("address %q is not a host name or address", clip(addr, 60))
	}
	port := strings.TrimSpace(c.Str("port"))
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return nil, cserr.Param("port %q is not a port number", clip(port, 20))
	}
	sealed, err := c.S.Secrets.Encrypt(c.Str("password"))
	if err != nil {
		return nil, err
	}
	now := models.Now()
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewUpdate().Model((*models.OutOfBandManagement)(nil)).
			Set("driver = ?", driver).Set("address = ?", addr).Set("port = ?", port).
			Set("username = ?", c.Str("username")).Set("password = ?", sealed).Set("updated = ?", now).
			Where("host_id = ?", h.ID).Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n > 0 {
			return nil
		}
		// A new configuration is off until enabled, as CloudStack's.
		_, err = tx.NewInsert().Model(&models.OutOfBandManagement{HostID: h.ID, PowerState: models.OOBMPowerDisabled, Driver: driver,
			Address: addr, Port: port, Username: c.Str("username"), Password: sealed, Created: now}).Exec(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	r, err := activities.OOBMRecord(c.Ctx, c.S.DB, h.ID)
	if err != nil {
		return nil, err
	}
	_ = activities.WriteEvent(c.Ctx, c.S.DB, activities.EventInput{Actor: actorOf(c.Caller), Type: "HOST.OOBM.CONFIGURE", ResourceType: "Host", ResourceUUID: h.UUID,
		Description: "Out-of-band management of host " + h.Name + " configured: " + driver + " " + addr + ":" + port})
	v := oobmViewOf(h.UUID, r)
	v.Status, v.Description = true, "Out-of-band management successfully configured for the host"
	return Object{"outofbandmanagement": v}, nil
}

func oobmEnable(c *Call, scope, op, id string) (any, error) {
	var name string
	switch scope {
	case "Host":
		h, err := c.hostByUUID(id)
		if err != nil {
			return nil, err
		}
		r, err := activities.OOBMRecord(c.Ctx, c.S.DB, h.ID)
		if err != nil {
			return nil, err
		}
		if r == nil {
			return nil, cserr.Internal("Out-of-band management is not configured for the host. Please configure the host before enabling/disabling it.")
		}
		name = "host " + h.Name
	case "Cluster":
		cl, err := c.clusterByUUID(id)
		if err != nil {
			return nil, err
		}
		name = "cluster " + cl.Name
	case "Zone":
		z, err := c.zoneByUUID(id)
		if err != nil {
			return nil, err
		}
		name = "zone " + z.Name
	}
	return c.StartJob(JobSpec{
		Workflow: workflows.OutOfBandManagement, Input: workflows.OutOfBandManagementInput{Op: op, Scope: scope, UUID: id, Actor: actorOf(c.Caller)},
		InstanceType: scope, InstanceUUID: id, Summary: op + " out-of-band management for " + name,
	})
}

func issueOOBMPowerAction(c *Call) (any, error) {
	h, err := c.hostByUUID(c.Str("hostid"))
	if err != nil {
		return nil, err
	}
	action := strings.ToUpper(strings.TrimSpace(c.Str("action")))
	if !slices.Contains(activities.OOBMActions, action) {
		return nil, cserr.Param("Unable to execute API command issueoutofbandmanagementpoweraction due to invalid value. Invalid parameter action value=%s: valid actions are %s",
			clip(c.Str("action"), 20), strings.Join(activities.OOBMActions, ", "))
	}
	// Refused at once, as the job would be (530, CloudStack's words).
	if _, err := activities.OOBMCheckEnabled(c.Ctx, c.S.DB, h); err != nil {
		return nil, err
	}
	secs := c.Int("timeout", 0)
	if c.Has("timeout") && secs <= 0 {
		return nil, cserr.Param("timeout must be a positive number of seconds")
	}
	if secs == 0 {
		if n, err := models.ConfigInt(c.Ctx, c.S.DB, "outofbandmanagement.action.timeout"); err == nil && n > 0 {
			secs = n
		} else {
			secs = 60
		}
	}
	return c.StartJob(JobSpec{
		Workflow: workflows.OutOfBandManagement,
		Input: workflows.OutOfBandManagementInput{Op: activities.OOBMOpPower, Scope: "Host", UUID: h.UUID, Action: action,
			Timeout: time.Duration(secs) * time.Second, Actor: actorOf(c.Caller)},
		InstanceType: "Host", InstanceUUID: h.UUID, Summary: "out-of-band power " + action + " of host " + h.Name,
	})
}

func changeOOBMPassword(c *Call) (any, error) {
	h, err := c.hostByUUID(c.Str("hostid"))
	if err != nil {
		return nil, err
	}
	if _, err := activities.OOBMCheckEnabled(c.Ctx, c.S.DB, h); err != nil {
		return nil, err
	}
	if c.Str("password") == "" {
		return nil, cserr.Internal("Cannot change out-of-band management password as provided new-password is null or empty for the host %s.", h.UUID)
	}
	sealed, err := c.S.Secrets.Encrypt(c.Str("password"))
	if err != nil {
		return nil, err
	}
	return c.StartJob(JobSpec{
		Workflow: workflows.OutOfBandManagement,
		Input: workflows.OutOfBandManagementInput{Op: activities.OOBMOpPassword, Scope: "Host", UUID: h.UUID, NewSealed: sealed,
			Actor: actorOf(c.Caller)},
		InstanceType: "Host", InstanceUUID: h.UUID, Summary: "change the out-of-band management password of host " + h.Name,
	})
}
