package models

import (
	"time"

	"github.com/uptrace/bun"
)

// Out-of-band management drivers as CloudStack names them (driver).
const (
	OOBMDriverIPMI    = "ipmitool"
	OOBMDriverRedfish = "redfish"
)

// Out-of-band management power states (powerstate), as CloudStack shows
// them: Disabled while management is off for the host, its cluster or its
// zone; Unknown until the BMC was read.
const (
	OOBMPowerOn       = "On"
	OOBMPowerOff      = "Off"
	OOBMPowerUnknown  = "Unknown"
	OOBMPowerDisabled = "Disabled"
)

// OOBMEnabledDetail is the cluster and zone detail that turns out-of-band
// management off ("false") for all their hosts; absent means on
// (CloudStack's outOfBandManagementEnabled).
const OOBMEnabledDetail = "outOfBandManagementEnabled"

// OutOfBandManagement is how a host's BMC is reached (CloudStack's oobm
// table): any host may have one, for power actions and for fencing; a
// BareMetal host's is filled from its URL. Password is sealed with the
// server key (infra/secrets) and never shown.
type OutOfBandManagement struct {
	bun.BaseModel `bun:"table:oobm"`
	ID            int64     `bun:"id,pk,autoincrement"`
	HostID        int64     `bun:"host_id,notnull,unique"`
	Enabled       bool      `bun:"enabled,notnull"`
	PowerState    string    `bun:"power_state,notnull"`
	Driver        string    `bun:"driver,notnull"`
	Address       string    `bun:"address,notnull"`
	Port          string    `bun:"port,notnull"`
	Username      string    `bun:"username,notnull"`
	Password      string    `bun:"password,type:text"`
	Created       time.Time `bun:"created,notnull"`
	Updated       time.Time `bun:"updated,nullzero"`
}

// ZoneDetail is a key/value setting of a zone (CloudStack's
// data_center_details).
type ZoneDetail struct {
	bun.BaseModel `bun:"table:zone_details"`
	ID            int64  `bun:"id,pk,autoincrement"`
	ZoneID        int64  `bun:"zone_id,notnull"`
	Name          string `bun:"name,notnull"`
	Value         string `bun:"value,type:text"`
}
