package models

import (
	"time"

	"github.com/uptrace/bun"
)

// Usage types as CloudStack numbers them (usagetype).
const (
	UsageRunningVM       = 1
	UsageAllocatedVM     = 2
	UsageIPAddress       = 3
	UsageNetworkSent     = 4
	UsageNetworkRecv     = 5
	UsageVolume          = 6
	UsageTemplate        = 7
	UsageISO             = 8
	UsageSnapshot        = 9
	UsageLoadBalancer    = 11
	UsagePortForwarding  = 12
	UsageNetworkOffering = 13
	UsageVPNUsers        = 14
)

// UsageRecord is one aggregated usage line (listUsageRecords), produced by
// the usage schedule from usage events. It has no uuid: CloudStack shows
// none for it, and there are many.
type UsageRecord struct {
	bun.BaseModel `bun:"table:usage_records"`
	ID            int64     `bun:"id,pk,autoincrement"`
	UsageType     int       `bun:"usage_type,notnull"`
	Description   string    `bun:"description,type:text"`
	UsageDisplay  string    `bun:"usage_display"` // e.g. "24 Hrs"
	RawUsage      float64   `bun:"raw_usage,notnull"`
	ZoneID        int64     `bun:"zone_id,notnull"`
	AccountID     int64     `bun:"account_id,notnull"`
	DomainID      int64     `bun:"domain_id,notnull"`
	ResourceID    int64     `bun:"usage_id,nullzero"` // the resource's internal id
	ResourceUUID  string    `bun:"resource_uuid,type:varchar(40)"`
	ResourceName  string    `bun:"resource_name"`
	VMInstanceID  int64     `bun:"vm_instance_id,nullzero"`
	OfferingID    int64     `bun:"offering_id,nullzero"`
	TemplateID    int64     `bun:"template_id,nullzero"`
	NetworkID     int64     `bun:"network_id,nullzero"`
	Size          int64     `bun:"size,nullzero"`
	VirtualSize   int64     `bun:"virtual_size,nullzero"`
	CPUSpeed      int       `bun:"cpu_speed,nullzero"`
	CPUCores      int       `bun:"cpu_cores,nullzero"`
	Memory        int       `bun:"memory,nullzero"`
	StartDate     time.Time `bun:"start_date,notnull"`
	EndDate       time.Time `bun:"end_date,notnull"`
}

// UsageEvent records a billable change (VM.CREATE, VOLUME.DELETE...) for the
// usage schedule to aggregate; Processed marks it done.
type UsageEvent struct {
	bun.BaseModel `bun:"table:usage_events"`
	ID            int64     `bun:"id,pk,autoincrement"`
	Type          string    `bun:"type,notnull,type:varchar(64)"`
	AccountID     int64     `bun:"account_id,notnull"`
	DomainID      int64     `bun:"domain_id,notnull"`
	ZoneID        int64     `bun:"zone_id,notnull"`
	ResourceID    int64     `bun:"resource_id,notnull"`
	ResourceName  string    `bun:"resource_name"`
	ResourceType  string    `bun:"resource_type"`
	OfferingID    int64     `bun:"offering_id,nullzero"`
	TemplateID    int64     `bun:"template_id,nullzero"`
	Size          int64     `bun:"size,nullzero"`
	VirtualSize   int64     `bun:"virtual_size,nullzero"`
	Processed     bool      `bun:"processed,notnull"`
	Created       time.Time `bun:"created,notnull"`
}

// Capacity types as CloudStack numbers them (com.cloud.capacity.Capacity).
const (
	CapacityMemory                 = 0
	CapacityCPU                    = 1
	CapacityStorage                = 2
	CapacityStorageAllocated       = 3
	CapacityVirtualNetworkPublicIP = 4
	CapacityPrivateIP              = 5
	CapacitySecondaryStorage       = 6
	CapacityVLAN                   = 7
	CapacityDirectAttachedPublicIP = 8
	CapacityLocalStorage           = 9
	CapacityGPU                    = 19
	CapacityCPUCore                = 90
)

// Capacity is one capacity figure of a host, a pool (HostID holds the pool
// id for storage types, as in CloudStack), a pod or a zone (listCapacity,
// alerts). Used and Reserved are in the type's unit (MHz, bytes, count).
type Capacity struct {
	bun.BaseModel `bun:"table:op_host_capacity"`
	ID            int64     `bun:"id,pk,autoincrement"`
	HostID        int64     `bun:"host_id,nullzero"`
	ZoneID        int64     `bun:"zone_id,notnull"`
	PodID         int64     `bun:"pod_id,nullzero"`
	ClusterID     int64     `bun:"cluster_id,nullzero"`
	CapacityType  int       `bun:"capacity_type,notnull"`
	UsedCapacity  int64     `bun:"used_capacity,notnull"`
	Reserved      int64     `bun:"reserved_capacity,notnull"`
	TotalCapacity int64     `bun:"total_capacity,notnull"`
	CapacityState string    `bun:"capacity_state,notnull"` // Enabled, Disabled
	Created       time.Time `bun:"created,notnull"`
	Updated       time.Time `bun:"update_time,nullzero"`
}

// Resource types of limits and counts (CloudStack's Resource.ResourceType).
const (
	ResourceUserVM           = "user_vm"
	ResourcePublicIP         = "public_ip"
	ResourceVolume           = "volume"
	ResourceSnapshot         = "snapshot"
	ResourceTemplate         = "template"
	ResourceProject          = "project"
	ResourceNetwork          = "network"
	ResourceVPC              = "vpc"
	ResourceCPU              = "cpu"
	ResourceMemory           = "memory"
	ResourcePrimaryStorage   = "primary_storage"
	ResourceSecondaryStorage = "secondary_storage"
)

// ResourceLimit caps a resource type for one account (AccountID set) or one
// domain (DomainID set); Max -1 is unlimited.
type ResourceLimit struct {
	bun.BaseModel `bun:"table:resource_limits"`
	ID            int64  `bun:"id,pk,autoincrement"`
	Type          string `bun:"type,notnull,type:varchar(32)"`
	AccountID     int64  `bun:"account_id,nullzero"`
	DomainID      int64  `bun:"domain_id,nullzero"`
	Max           int64  `bun:"max,notnull"`
}

// ResourceCount is the current use of a resource type by one account or one
// domain (its subtree), moved in the same transaction as the resource.
type ResourceCount struct {
	bun.BaseModel `bun:"table:resource_counts"`
	ID            int64  `bun:"id,pk,autoincrement"`
	Type          string `bun:"type,notnull,type:varchar(32)"`
	AccountID     int64  `bun:"account_id,nullzero"`
	DomainID      int64  `bun:"domain_id,nullzero"`
	Count         int64  `bun:"count,notnull"`
}

// Alert is an operator alert (listAlerts); Type is CloudStack's numeric
// AlertType (0 memory, 1 CPU, 2 storage, 7 host, ...).
type Alert struct {
	bun.BaseModel `bun:"table:alerts"`
	ID            int64     `bun:"id,pk,autoincrement"`
	UUID          string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	Type          int       `bun:"type,notnull"`
	Name          string    `bun:"name"`
	Subject       string    `bun:"subject,type:text"`
	ZoneID        int64     `bun:"zone_id,nullzero"`
	PodID         int64     `bun:"pod_id,nullzero"`
	ClusterID     int64     `bun:"cluster_id,nullzero"`
	SentCount     int       `bun:"sent_count,notnull"`
	Archived      bool      `bun:"archived,notnull"`
	Created       time.Time `bun:"created,notnull"`
	LastSent      time.Time `bun:"last_sent,nullzero"`
	Resolved      time.Time `bun:"resolved,nullzero"`
}

// ManagementServer is a running nimbus server or worker process
// (listManagementServers); it heartbeats LastHeartbeat, and one that stops
// doing so is marked Down.
type ManagementServer struct {
	bun.BaseModel `bun:"table:management_servers"`
	ID            int64     `bun:"id,pk,autoincrement"`
	UUID          string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	Name          string    `bun:"name,notnull"`
	Kind          string    `bun:"kind,notnull"` // server, worker
	ServiceIP     string    `bun:"service_ip,type:varchar(40)"`
	Version       string    `bun:"version"`
	State         string    `bun:"state,notnull"` // Up, Down
	LastHeartbeat time.Time `bun:"last_heartbeat,nullzero"`
	Created       time.Time `bun:"created,notnull"`
	Removed       time.Time `bun:"removed,soft_delete,nullzero"`
}
