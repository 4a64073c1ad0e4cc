package models

import (
	"time"

	"github.com/uptrace/bun"
)

// Traffic types a physical network carries and networks serve.
const (
	TrafficGuest      = "Guest"
	TrafficManagement = "Management"
	TrafficPublic     = "Public"
	TrafficStorage    = "Storage"
	TrafficControl    = "Control"
)

// PhysicalNetwork is a zone's physical network. Vnet holds the guest VLAN
// ranges as CloudStack writes them ("100-199,300-310"); each VLAN is also a
// GuestVnet row, which is what allocation locks. IsolationMethods is a comma
// list (VLAN, VXLAN, L3...), Tags a comma list matched against network
// offerings.
type PhysicalNetwork struct {
	bun.BaseModel        `bun:"table:physical_networks"`
	ID                   int64     `bun:"id,pk,autoincrement"`
	UUID                 string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	Name                 string    `bun:"name,notnull"`
	ZoneID               int64     `bun:"zone_id,notnull"`
	DomainID             int64     `bun:"domain_id,nullzero"`
	Vnet                 string    `bun:"vnet,type:text"`
	Speed                string    `bun:"speed"`
	IsolationMethods     string    `bun:"isolation_methods"`
	BroadcastDomainRange string    `bun:"broadcast_domain_range,notnull"` // POD, ZONE
	State                string    `bun:"state,notnull"`                  // Enabled, Disabled
	Tags                 string    `bun:"tags"`
	Created              time.Time `bun:"created,notnull"`
	Removed              time.Time `bun:"removed,soft_delete,nullzero"`
}

// PhysicalNetworkTrafficType says a physical network carries a traffic type
// and under which host network label (bridge, vSwitch) per hypervisor.
type PhysicalNetworkTrafficType struct {
	bun.BaseModel         `bun:"table:physical_network_traffic_types"`
	ID                    int64  `bun:"id,pk,autoincrement"`
	UUID                  string `bun:"uuid,notnull,unique,type:varchar(40)"`
	PhysicalNetworkID     int64  `bun:"physical_network_id,notnull"`
	TrafficType           string `bun:"traffic_type,notnull,type:varchar(32)"`
	KVMNetworkLabel       string `bun:"kvm_network_label"`
	VMwareNetworkLabel    string `bun:"vmware_network_label"`
	XenNetworkLabel       string `bun:"xenserver_network_label"`
	HyperVNetworkLabel    string `bun:"hyperv_network_label"`
	SimulatorNetworkLabel string `bun:"simulator_network_label"`
	Vlan                  string `bun:"vlan"`
}

// PhysicalNetworkServiceProvider enables a network service provider
// (VirtualRouter, SecurityGroupProvider, ...) on a physical network.
type PhysicalNetworkServiceProvider struct {
	bun.BaseModel                `bun:"table:physical_network_service_providers"`
	ID                           int64  `bun:"id,pk,autoincrement"`
	UUID                         string `bun:"uuid,notnull,unique,type:varchar(40)"`
	PhysicalNetworkID            int64  `bun:"physical_network_id,notnull"`
	ProviderName                 string `bun:"provider_name,notnull,type:varchar(64)"`
	State                        string `bun:"state,notnull"` // Enabled, Disabled, Shutdown
	DestinationPhysicalNetworkID int64  `bun:"destination_physical_network_id,nullzero"`
	Services                     string `bun:"services,type:text"` // comma list of services it provides
}

// Vlan types (CloudStack's vlan_type): VirtualNetwork ranges are public IPs
// of a zone, DirectAttached ranges are guest IPs of a shared network. Storage
// ranges are StorageNetworkIPRange rows and management ranges are the pods'
// (PodIPAddress rows), as in CloudStack.
const (
	VlanTypeVirtualNetwork = "VirtualNetwork"
	VlanTypeDirectAttached = "DirectAttached"
	VlanUntagged           = "untagged"
)

// Vlan is a VLAN/IP range (createVlanIpRange). Each address in it is an
// IPAddress row. AccountID/DomainID are set when the range is dedicated.
// VlanTag is CloudStack's vlan.vlan_id ("100", "vlan://100" or "untagged"),
// renamed because vlan_id elsewhere means this table's id.
type Vlan struct {
	bun.BaseModel     `bun:"table:vlans"`
	ID                int64     `bun:"id,pk,autoincrement"`
	UUID              string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	VlanTag           string    `bun:"vlan_tag,notnull"`
	VlanType          string    `bun:"vlan_type,notnull"` // VirtualNetwork, DirectAttached
	Gateway           string    `bun:"vlan_gateway,type:varchar(40)"`
	Netmask           string    `bun:"vlan_netmask,type:varchar(40)"`
	StartIP           string    `bun:"start_ip,type:varchar(40)"`
	EndIP             string    `bun:"end_ip,type:varchar(40)"`
	IP6Gateway        string    `bun:"ip6_gateway"`
	IP6CIDR           string    `bun:"ip6_cidr"`
	IP6Range          string    `bun:"ip6_range"`
	ZoneID            int64     `bun:"zone_id,notnull"`
	PodID             int64     `bun:"pod_id,nullzero"`
	PhysicalNetworkID int64     `bun:"physical_network_id,nullzero"`
	NetworkID         int64     `bun:"network_id,nullzero"`
	AccountID         int64     `bun:"account_id,nullzero"`
	DomainID          int64     `bun:"domain_id,nullzero"`
	ForSystemVMs      bool      `bun:"for_systemvms,notnull"`
	Created           time.Time `bun:"created,notnull"`
	Removed           time.Time `bun:"removed,soft_delete,nullzero"`
}

// IP address states.
const (
	IPFree       = "Free"
	IPAllocating = "Allocating"
	IPAllocated  = "Allocated"
	IPReleasing  = "Releasing"
	IPReserved   = "Reserved"
)

// IPAddress is one address of a Vlan range (CloudStack's user_ip_address).
// Allocation moves it Free -> Allocating -> Allocated with guarded updates.
// Static NAT lives here: OneToOneNat with InstanceID and VMIPAddress.
// SourceNetworkID is the network the range belongs to, NetworkID the guest
// network the address is associated with.
type IPAddress struct {
	bun.BaseModel   `bun:"table:ip_addresses"`
	ID              int64     `bun:"id,pk,autoincrement"`
	UUID            string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	PublicIPAddress string    `bun:"public_ip_address,notnull,type:varchar(40)"`
	VlanID          int64     `bun:"vlan_id,notnull"`
	ZoneID          int64     `bun:"zone_id,notnull"`
	State           string    `bun:"state,notnull"`
	AccountID       int64     `bun:"account_id,nullzero"`
	DomainID        int64     `bun:"domain_id,nullzero"`
	SourceNat       bool      `bun:"source_nat,notnull"`
	OneToOneNat     bool      `bun:"one_to_one_nat,notnull"`
	InstanceID      int64     `bun:"instance_id,nullzero"` // static NAT target
	VMIPAddress     string    `bun:"vm_ip_address,type:varchar(40)"`
	NetworkID       int64     `bun:"network_id,nullzero"`
	SourceNetworkID int64     `bun:"source_network_id,nullzero"`
	IsSystem        bool      `bun:"is_system,notnull"`
	ForDisplay      bool      `bun:"display,notnull"`
	Allocated       time.Time `bun:"allocated,nullzero"`
}

// StorageNetworkIPRange is a storage traffic range of a pod
// (createStorageNetworkIpRange).
type StorageNetworkIPRange struct {
	bun.BaseModel `bun:"table:storage_network_ip_ranges"`
	ID            int64     `bun:"id,pk,autoincrement"`
	UUID          string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	StartIP       string    `bun:"start_ip,notnull,type:varchar(40)"`
	EndIP         string    `bun:"end_ip,notnull,type:varchar(40)"`
	Gateway       string    `bun:"gateway,type:varchar(40)"`
	Netmask       string    `bun:"netmask,type:varchar(40)"`
	Vlan          string    `bun:"vlan"`
	ZoneID        int64     `bun:"zone_id,notnull"`
	PodID         int64     `bun:"pod_id,notnull"`
	NetworkID     int64     `bun:"network_id,nullzero"`
	Created       time.Time `bun:"created,notnull"`
}

// StorageNetworkIPAddress is one address of a storage range, taken by a
// system VM's storage NIC (CloudStack's op_dc_storage_network_ip_address).
type StorageNetworkIPAddress struct {
	bun.BaseModel `bun:"table:op_dc_storage_network_ip_address"`
	ID            int64     `bun:"id,pk,autoincrement"`
	RangeID       int64     `bun:"range_id,notnull"`
	IPAddress     string    `bun:"ip_address,notnull,type:varchar(40)"`
	NicID         int64     `bun:"nic_id,nullzero"`
	Taken         time.Time `bun:"taken,nullzero"`
}

// PodIPAddress is one address of a pod's system reserved range
// (op_dc_ip_address_alloc). NicID and ReservationID are set while a system
// VM's NIC holds it. Addresses are unique across the cloud (DESIGN.md), so no
// host may take one.
type PodIPAddress struct {
	bun.BaseModel `bun:"table:op_dc_ip_address_alloc"`
	ID            int64     `bun:"id,pk,autoincrement"`
	IPAddress     string    `bun:"ip_address,notnull,type:varchar(40)"`
	ZoneID        int64     `bun:"zone_id,notnull"`
	PodID         int64     `bun:"pod_id,notnull"`
	NicID         int64     `bun:"nic_id,nullzero"`
	InstanceID    int64     `bun:"instance_id,nullzero"`
	ReservationID string    `bun:"reservation_id,type:varchar(40)"`
	Taken         time.Time `bun:"taken,nullzero"`
}

// GuestVnet is one guest VLAN (or VXLAN id) of a physical network
// (op_dc_vnet_alloc); an isolated network takes one when implemented and
// gives it back on shutdown.
type GuestVnet struct {
	bun.BaseModel     `bun:"table:op_dc_vnet_alloc"`
	ID                int64     `bun:"id,pk,autoincrement"`
	Vnet              string    `bun:"vnet,notnull,type:varchar(32)"`
	PhysicalNetworkID int64     `bun:"physical_network_id,notnull"`
	ZoneID            int64     `bun:"zone_id,notnull"`
	NetworkID         int64     `bun:"network_id,nullzero"`
	AccountID         int64     `bun:"account_id,nullzero"`
	ReservationID     string    `bun:"reservation_id,type:varchar(40)"`
	Taken             time.Time `bun:"taken,nullzero"`
}

// Network states.
const (
	NetworkAllocated    = "Allocated"
	NetworkSetup        = "Setup"
	NetworkImplementing = "Implementing"
	NetworkImplemented  = "Implemented"
	NetworkShutdown     = "Shutdown"
	NetworkDestroy      = "Destroy"
)

// Guest network types and ACL types.
const (
	GuestTypeShared   = "Shared"
	GuestTypeIsolated = "Isolated"
	GuestTypeL2       = "L2"

	ACLTypeAccount = "Account"
	ACLTypeDomain  = "Domain"
)

// Network is a guest (or system) network. BroadcastURI is where it lives on
// the wire (vlan://100); Vlan and Netmask are kept as given at creation.
type Network struct {
	bun.BaseModel       `bun:"table:networks"`
	ID                  int64     `bun:"id,pk,autoincrement"`
	UUID                string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	Name                string    `bun:"name,notnull"`
	DisplayText         string    `bun:"display_text,type:text"`
	TrafficType         string    `bun:"traffic_type,notnull"`
	GuestType           string    `bun:"guest_type"`                    // Shared, Isolated, L2
	BroadcastDomainType string    `bun:"broadcast_domain_type,notnull"` // Vlan, Native, Vxlan...
	BroadcastURI        string    `bun:"broadcast_uri"`
	CIDR                string    `bun:"cidr"`
	Gateway             string    `bun:"gateway,type:varchar(40)"`
	Netmask             string    `bun:"netmask,type:varchar(40)"`
	Vlan                string    `bun:"vlan"`
	IP6Gateway          string    `bun:"ip6_gateway"`
	IP6CIDR             string    `bun:"ip6_cidr"`
	DNS1                string    `bun:"dns1"`
	DNS2                string    `bun:"dns2"`
	Mode                string    `bun:"mode"` // Dhcp, Static
	State               string    `bun:"state,notnull"`
	NetworkOfferingID   int64     `bun:"network_offering_id,notnull"`
	PhysicalNetworkID   int64     `bun:"physical_network_id,nullzero"`
	ZoneID              int64     `bun:"zone_id,notnull"`
	AccountID           int64     `bun:"account_id,notnull"`
	DomainID            int64     `bun:"domain_id,notnull"`
	ACLType             string    `bun:"acl_type"` // Account, Domain
	SubdomainAccess     bool      `bun:"subdomain_access,notnull"`
	NetworkDomain       string    `bun:"network_domain"`
	SpecifyIPRanges     bool      `bun:"specify_ip_ranges,notnull"`
	RestartRequired     bool      `bun:"restart_required,notnull"`
	DisplayNetwork      bool      `bun:"display_network,notnull"`
	ReservationID       string    `bun:"reservation_id,type:varchar(40)"`
	Created             time.Time `bun:"created,notnull"`
	Removed             time.Time `bun:"removed,soft_delete,nullzero"`
}

// NIC states and modes.
const (
	NicAllocated    = "Allocated"
	NicReserving    = "Reserving"
	NicReserved     = "Reserved"
	NicReleasing    = "Releasing"
	NicDeallocating = "Deallocating"

	NicModeDhcp   = "Dhcp"
	NicModeStatic = "Static"
)

// Nic is a VM's interface on a network. MacAddress is unique (NULL until
// assigned); removed NICs keep theirs so it is never reused.
type Nic struct {
	bun.BaseModel `bun:"table:nics"`
	ID            int64     `bun:"id,pk,autoincrement"`
	UUID          string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	InstanceID    int64     `bun:"instance_id,notnull"`
	NetworkID     int64     `bun:"network_id,notnull"`
	MacAddress    string    `bun:"mac_address,nullzero,unique,type:varchar(17)"`
	IP4Address    string    `bun:"ip4_address,type:varchar(40)"`
	Netmask       string    `bun:"netmask,type:varchar(40)"`
	Gateway       string    `bun:"gateway,type:varchar(40)"`
	IP6Address    string    `bun:"ip6_address"`
	BroadcastURI  string    `bun:"broadcast_uri"`
	IsolationURI  string    `bun:"isolation_uri"`
	DeviceID      int       `bun:"device_id,notnull"`
	DefaultNic    bool      `bun:"default_nic,notnull"`
	Mode          string    `bun:"mode"` // Dhcp, Static
	State         string    `bun:"state,notnull"`
	ReserverName  string    `bun:"reserver_name"`
	ReservationID string    `bun:"reservation_id,type:varchar(40)"`
	VMType        string    `bun:"vm_type"`
	DisplayNic    bool      `bun:"display_nic,notnull"`
	Created       time.Time `bun:"created,notnull"`
	Updated       time.Time `bun:"update_time,nullzero"`
	Removed       time.Time `bun:"removed,soft_delete,nullzero"`
}

// Rule purposes and states.
const (
	PurposeFirewall       = "Firewall"
	PurposePortForwarding = "PortForwarding"
	PurposeStaticNat      = "StaticNat"
	PurposeLoadBalancing  = "LoadBalancing"

	RuleStaged = "Staged"
	RuleAdd    = "Add"
	RuleActive = "Active"
	RuleRevoke = "Revoke"
)

// FirewallRule is the common row of every rule on a public IP, as in
// CloudStack: a port forwarding or load balancing rule is a FirewallRule
// with that Purpose plus an extension row with the same id. Keeping them in
// one table makes "is this port of this IP taken" one query.
type FirewallRule struct {
	bun.BaseModel  `bun:"table:firewall_rules"`
	ID             int64     `bun:"id,pk,autoincrement"`
	UUID           string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	IPAddressID    int64     `bun:"ip_address_id,nullzero"`
	NetworkID      int64     `bun:"network_id,notnull"`
	Purpose        string    `bun:"purpose,notnull"`
	State          string    `bun:"state,notnull"` // Staged, Add, Active, Revoke
	Protocol       string    `bun:"protocol,notnull"`
	StartPort      int       `bun:"start_port,nullzero"`
	EndPort        int       `bun:"end_port,nullzero"`
	IcmpCode       int       `bun:"icmp_code,nullzero"`
	IcmpType       int       `bun:"icmp_type,nullzero"`
	SourceCIDRList string    `bun:"source_cidr_list,type:text"` // comma list
	TrafficType    string    `bun:"traffic_type"`               // Ingress, Egress
	Type           string    `bun:"type"`                       // User, System
	RelatedID      int64     `bun:"related,nullzero"`
	AccountID      int64     `bun:"account_id,notnull"`
	DomainID       int64     `bun:"domain_id,notnull"`
	Display        bool      `bun:"display,notnull"`
	Created        time.Time `bun:"created,notnull"`
}

// PortForwardingRule extends a FirewallRule (same ID) with where the
// traffic goes: the VM, its guest IP and the private ports.
type PortForwardingRule struct {
	bun.BaseModel `bun:"table:port_forwarding_rules"`
	ID            int64  `bun:"id,pk"` // = firewall_rules.id
	InstanceID    int64  `bun:"instance_id,notnull"`
	DestIPAddress string `bun:"dest_ip_address,notnull,type:varchar(40)"`
	DestPortStart int    `bun:"dest_port_start,notnull"`
	DestPortEnd   int    `bun:"dest_port_end,notnull"`
}

// LoadBalancingRule extends a FirewallRule (same ID; its StartPort is the
// public port) with the balancer's name, algorithm and private port.
type LoadBalancingRule struct {
	bun.BaseModel    `bun:"table:load_balancing_rules"`
	ID               int64  `bun:"id,pk"` // = firewall_rules.id
	Name             string `bun:"name,notnull"`
	Description      string `bun:"description,type:text"`
	Algorithm        string `bun:"algorithm,notnull"` // roundrobin, leastconn, source
	DefaultPortStart int    `bun:"default_port_start,notnull"`
	DefaultPortEnd   int    `bun:"default_port_end,notnull"`
	Scheme           string `bun:"scheme,notnull"` // Public, Internal
}

// LoadBalancerVMMap puts a VM behind a load balancing rule.
type LoadBalancerVMMap struct {
	bun.BaseModel  `bun:"table:load_balancer_vm_map"`
	ID             int64  `bun:"id,pk,autoincrement"`
	LoadBalancerID int64  `bun:"load_balancer_id,notnull"`
	InstanceID     int64  `bun:"instance_id,notnull"`
	InstanceIP     string `bun:"instance_ip,type:varchar(40)"`
	Revoke         bool   `bun:"revoked,notnull"` // CloudStack's "revoke" is reserved in MySQL
	State          string `bun:"state"`
}
