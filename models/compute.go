package models

import (
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// VM states.
const (
	VMStopped   = "Stopped"
	VMStarting  = "Starting"
	VMRunning   = "Running"
	VMStopping  = "Stopping"
	VMMigrating = "Migrating"
	VMDestroyed = "Destroyed"
	VMExpunging = "Expunging"
	VMError     = "Error"
	VMShutdown  = "Shutdown"
	VMUnknown   = "Unknown"
)

// VM types (CloudStack's vm_instance.type).
const (
	VMTypeUser               = "User"
	VMTypeDomainRouter       = "DomainRouter"
	VMTypeConsoleProxy       = "ConsoleProxy"
	VMTypeSecondaryStorageVM = "SecondaryStorageVm"
)

// VMInstance is a virtual machine, user or system (CloudStack's vm_instance
// and user_vm in one table). CPU, Speed and RAMSize are a snapshot of the
// offering (or the custom values) so capacity can be released exactly even
// after the offering changes. HostID is set while it runs, LastHostID keeps
// where it ran last (to prefer it on the next start). UpdateCount backs
// optimistic guards beside the state.
type VMInstance struct {
	bun.BaseModel     `bun:"table:vm_instances"`
	ID                int64  `bun:"id,pk,autoincrement"`
	UUID              string `bun:"uuid,notnull,unique,type:varchar(40)"`
	Name              string `bun:"name,notnull"`
	DisplayName       string `bun:"display_name"`
	InstanceName      string `bun:"instance_name,notnull"` // i-<account id>-<id>-VM
	HostName          string `bun:"host_name"`             // the guest's hostname
	Type              string `bun:"type,notnull"`          // User, DomainRouter, ...
	State             string `bun:"state,notnull"`
	StateReason       string `bun:"state_reason,type:text"`
	PowerState        string `bun:"power_state"` // as last seen on the hypervisor (reconcile)
	HostID            int64  `bun:"host_id,nullzero"`
	LastHostID        int64  `bun:"last_host_id,nullzero"`
	PodID             int64  `bun:"pod_id,nullzero"`
	ClusterID         int64  `bun:"cluster_id,nullzero"`
	ZoneID            int64  `bun:"zone_id,notnull"`
	TemplateID        int64  `bun:"template_id,nullzero"`
	ISOID             int64  `bun:"iso_id,nullzero"`
	ServiceOfferingID int64  `bun:"service_offering_id,notnull"`
	DiskOfferingID    int64  `bun:"disk_offering_id,nullzero"`
	OSTypeID          int64  `bun:"os_type_id,nullzero"`
	HypervisorType    string `bun:"hypervisor_type"`
	CPU               int    `bun:"cpu,notnull"`
	Speed             int    `bun:"speed,notnull"`    // MHz
	RAMSize           int    `bun:"ram_size,notnull"` // MB
	AccountID         int64  `bun:"account_id,notnull"`
	DomainID          int64  `bun:"domain_id,notnull"`
	UserID            int64  `bun:"user_id,nullzero"`
	// UserData is base64 as the API takes it; CloudStack allows up to 1 MB
	// with POST, more than TEXT holds on MySQL.
	UserData          string    `bun:"user_data,type:mediumtext"`
	KeyPairs          string    `bun:"keypairs,type:text"` // comma list of SSH key pair names
	HAEnabled         bool      `bun:"ha_enabled,notnull"`
	LimitCPUUse       bool      `bun:"limit_cpu_use,notnull"`
	DisplayVM         bool      `bun:"display_vm,notnull"`
	VNCPassword       string    `bun:"vnc_password"`
	ReservationID     string    `bun:"reservation_id,type:varchar(40)"`
	UpdateCount       int64     `bun:"update_count,notnull"`
	PowerStateUpdated time.Time `bun:"power_state_update_time,nullzero"`
	Updated           time.Time `bun:"update_time,nullzero"`
	Created           time.Time `bun:"created,notnull"`
	Removed           time.Time `bun:"removed,soft_delete,nullzero"`
}

// InstanceName is CloudStack's internal VM name, i-<account id>-<vm id>-VM,
// known once the row has its id.
func InstanceName(accountID, vmID int64) string {
	return fmt.Sprintf("i-%d-%d-VM", accountID, vmID)
}

// SSHKeyPair is a public key registered by an account; its name is unique
// within the account.
type SSHKeyPair struct {
	bun.BaseModel `bun:"table:ssh_keypairs"`
	ID            int64     `bun:"id,pk,autoincrement"`
	UUID          string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	Name          string    `bun:"keypair_name,notnull"`
	Fingerprint   string    `bun:"fingerprint,notnull"`
	PublicKey     string    `bun:"public_key,type:text"`
	AccountID     int64     `bun:"account_id,notnull"`
	DomainID      int64     `bun:"domain_id,notnull"`
	Created       time.Time `bun:"created,notnull"`
}

// Affinity group types.
const (
	AffinityHostAntiAffinity = "host anti-affinity"
	AffinityHostAffinity     = "host affinity"
)

// AffinityGroup constrains placement of its VMs relative to each other.
type AffinityGroup struct {
	bun.BaseModel `bun:"table:affinity_groups"`
	ID            int64     `bun:"id,pk,autoincrement"`
	UUID          string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	Name          string    `bun:"name,notnull"`
	Type          string    `bun:"type,notnull"`
	Description   string    `bun:"description,type:text"`
	ACLType       string    `bun:"acl_type,notnull"` // Account, Domain
	AccountID     int64     `bun:"account_id,notnull"`
	DomainID      int64     `bun:"domain_id,notnull"`
	Created       time.Time `bun:"created,notnull"`
}

// AffinityGroupVMMap puts a VM in an affinity group.
type AffinityGroupVMMap struct {
	bun.BaseModel   `bun:"table:affinity_group_vm_map"`
	ID              int64 `bun:"id,pk,autoincrement"`
	AffinityGroupID int64 `bun:"affinity_group_id,notnull"`
	InstanceID      int64 `bun:"instance_id,notnull"`
}

// ResourceTag is a user's key/value tag on any API resource (createTags).
// Its columns are tag_key/tag_value because "key" is reserved in MySQL.
type ResourceTag struct {
	bun.BaseModel `bun:"table:resource_tags"`
	ID            int64     `bun:"id,pk,autoincrement"`
	UUID          string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	Key           string    `bun:"tag_key,notnull"`
	Value         string    `bun:"tag_value,type:text"`
	ResourceID    int64     `bun:"resource_id,notnull"`
	ResourceUUID  string    `bun:"resource_uuid,notnull,type:varchar(40)"`
	ResourceType  string    `bun:"resource_type,notnull,type:varchar(64)"` // UserVm, Volume, Template...
	AccountID     int64     `bun:"account_id,notnull"`
	DomainID      int64     `bun:"domain_id,notnull"`
	Customer      string    `bun:"customer"`
	Created       time.Time `bun:"created,notnull"`
}
