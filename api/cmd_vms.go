package api

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/activities"
	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/workflows"
)

func init() {
	vmID := []Param{{Name: "id", Type: TUUID, Required: true, Description: "the ID of the virtual machine"}}
	Register(
		&Command{
			Name: "deployVirtualMachine", Description: "Creates and automatically starts a virtual machine based on a service offering, disk offering, and template.",
			Access: AccessAllWrite, Async: true,
			Params: []Param{
				{Name: "serviceofferingid", Type: TUUID, Required: true, Description: "the compute offering"},
				{Name: "templateid", Type: TUUID, Required: true, Description: "the template or ISO"},
				{Name: "zoneid", Type: TUUID, Required: true, Description: "the zone"},
				{Name: "networkids", Type: TList, Of: TUUID, Description: "the networks of the VM's NICs, the first its default"},
				{Name: "ipaddress", Type: TString, Description: "the IPv4 address of the default NIC"},
				{Name: "iptonetworklist", Type: TMap, Description: "addresses per network: iptonetworklist[0].networkid=&iptonetworklist[0].ip="},
				{Name: "hostid", Type: TUUID, Description: "the host to deploy on (root admins)"},
				{Name: "podid", Type: TUUID, Description: "the pod to deploy in (root admins)"},
				{Name: "clusterid", Type: TUUID, Description: "the cluster to deploy in (root admins)"},
				{Name: "name", Type: TString, Length: 63, Description: "the host name of the VM, unique in its account"},
				{Name: "displayname", Type: TString, Description: "the display name of the VM"},
				{Name: "keypair", Type: TString, Description: "the SSH key pair of the VM"},
				{Name: "keypairs", Type: TList, Of: TString, Description: "SSH key pairs of the VM"},
				{Name: "userdata", Type: TString, Length: 1 << 20, Description: "base64 user data"},
				{Name: "startvm", Type: TBoolean, Description: "start the VM (default true); false leaves it Stopped"},
				{Name: "affinitygroupids", Type: TList, Of: TUUID, Description: "affinity groups of the VM"},
				{Name: "affinitygroupnames", Type: TList, Of: TString, Description: "affinity groups of the VM, by name"},
				{Name: "rootdisksize", Type: TLong, Description: "the root disk size in GiB"},
				{Name: "diskofferingid", Type: TUUID, Description: "a data disk's offering; for an ISO, the root disk's"},
				{Name: "size", Type: TLong, Description: "the data disk size in GiB, with a custom disk offering"},
				{Name: "hypervisor", Type: TString, Description: "the hypervisor of a VM booting an ISO"},
				{Name: "account", Type: TString, Description: "the owner account (with domainid)"},
				{Name: "domainid", Type: TUUID, Description: "the owner account's domain"},
				{Name: "details", Type: TMap, Description: "details[0].cpuNumber, cpuSpeed, memory for custom offerings"},
				{Name: "displayvm", Type: TBoolean, Description: "whether end users see the VM"},
				{Name: "group", Type: TString, Description: "a group name for the VM"},
				{Name: "keyboard", Type: TString, Description: "the console keyboard layout"},
				{Name: "macaddress", Type: TString, Description: "the MAC address of the default NIC"},
				{Name: "securitygroupids", Type: TList, Of: TUUID, Description: "security groups (not supported)"},
				{Name: "projectid", Type: TUUID, Description: "projects are not supported"},
			},
			ResponseName: "virtualmachine", Response: vmFields, Handler: deployVirtualMachine,
		},
		&Command{
			Name: "startVirtualMachine", Description: "Starts a virtual machine.", Access: AccessAllWrite, Async: true,
			Params: append(append([]Param{}, vmID...),
				Param{Name: "hostid", Type: TUUID, Description: "the host to start on (root admins)"},
				Param{Name: "podid", Type: TUUID, Description: "the pod to start in (root admins)"},
				Param{Name: "clusterid", Type: TUUID, Description: "the cluster to start in (root admins)"},
				Param{Name: "considerlasthost", Type: TBoolean, Description: "try the last host first (default true)"},
				Param{Name: "bootintosetup", Type: TBoolean, Description: "ignored"},
				Param{Name: "deploymentplanner", Type: TString, Description: "ignored"},
			),
			ResponseName: "virtualmachine", Response: vmFields, Handler: startVirtualMachine,
		},
		&Command{
			Name: "stopVirtualMachine", Description: "Stops a virtual machine.", Access: AccessAllWrite, Async: true,
			Params:       append(append([]Param{}, vmID...), Param{Name: "forced", Type: TBoolean, Description: "power off at once"}),
			ResponseName: "virtualmachine", Response: vmFields, Handler: stopVirtualMachine,
		},
		&Command{
			Name: "rebootVirtualMachine", Description: "Reboots a virtual machine.", Access: AccessAllWrite, Async: true,
			Params: append(append([]Param{}, vmID...), Param{Name: "forced", Type: TBoolean, Description: "ignored"},
				Param{Name: "bootintosetup", Type: TBoolean, Description: "ignored"}),
			ResponseName: "virtualmachine", Response: vmFields, Handler: rebootVirtualMachine,
		},
		&Command{
			Name: "destroyVirtualMachine", Description: "Destroys a virtual machine; it keeps its volumes and addresses until expunged, unless expunge is true.",
			Access: AccessAllWrite, Async: true,
			Params: append(append([]Param{}, vmID...),
				Param{Name: "expunge", Type: TBoolean, Description: "expunge at once (admins)"},
				Param{Name: "volumeids", Type: TList, Of: TUUID, Description: "data volumes to destroy with it (not supported)"}),
			ResponseName: "virtualmachine", Response: vmFields, Handler: destroyVirtualMachine,
		},
		&Command{
			Name: "recoverVirtualMachine", Description: "Recovers a destroyed virtual machine: it comes back Stopped.", Access: AccessAdmins,
			Params: vmID, ResponseName: "virtualmachine", Response: vmFields, Handler: recoverVirtualMachine,
		},
		&Command{
			Name: "expungeVirtualMachine", Description: "Expunges a destroyed virtual machine: its volumes, addresses and row go.", Access: AccessAdmins, Async: true,
			Params: vmID, ResponseName: "success", Response: successFields, Handler: expungeVirtualMachine,
		},
		&Command{
			Name: "updateVirtualMachine", Description: "Updates a virtual machine's names and settings.", Access: AccessAllWrite,
			Params: append(append([]Param{}, vmID...),
				Param{Name: "displayname", Type: TString, Description: "the new display name"},
				Param{Name: "name", Type: TString, Length: 63, Description: "the new host name (while stopped)"},
				Param{Name: "userdata", Type: TString, Length: 1 << 20, Description: "new base64 user data"},
				Param{Name: "haenable", Type: TBoolean, Description: "restart the VM elsewhere when its host fails"},
				Param{Name: "ostypeid", Type: TUUID, Description: "the new guest OS type"},
				Param{Name: "displayvm", Type: TBoolean, Description: "whether end users see the VM"},
				Param{Name: "group", Type: TString, Description: "a group name"},
				Param{Name: "isdynamicallyscalable", Type: TBoolean, Description: "ignored"},
				Param{Name: "details", Type: TMap, Description: "ignored"},
			),
			ResponseName: "virtualmachine", Response: vmFields, Handler: updateVirtualMachine,
		},
		&Command{
			Name: "scaleVirtualMachine", Description: "Changes a stopped virtual machine's service offering; its new size is placed at its next start.",
			Access: AccessAllWrite, Async: true,
			Params: append(append([]Param{}, vmID...),
				Param{Name: "serviceofferingid", Type: TUUID, Required: true, Description: "the new service offering"},
				Param{Name: "details", Type: TMap, Description: "cpuNumber, cpuSpeed, memory of a custom offering"},
				Param{Name: "automigrate", Type: TBoolean, Description: "ignored"},
				Param{Name: "shrinkok", Type: TBoolean, Description: "ignored"},
				Param{Name: "miniops", Type: TLong, Description: "ignored"},
				Param{Name: "maxiops", Type: TLong, Description: "ignored"},
			),
			ResponseName: "virtualmachine", Response: vmFields, Handler: scaleVirtualMachine,
		},
		&Command{
			Name: "migrateVirtualMachine", Description: "Migrates a running virtual machine live to another host of its cluster.", Access: AccessRootAdmin, Async: true,
			Params: []Param{
				{Name: "virtualmachineid", Type: TUUID, Required: true, Description: "the virtual machine"},
				{Name: "hostid", Type: TUUID, Description: "the target host; the best host of the cluster when absent"},
				{Name: "autoselect", Type: TBoolean, Description: "pick the target host (default true without hostid)"},
				{Name: "storageid", Type: TUUID, Description: "storage migration is not supported"},
			},
			ResponseName: "virtualmachine", Response: vmFields, Handler: migrateVirtualMachine,
		},
		&Command{
			Name: "findHostsForMigration", Description: "Finds the hosts a virtual machine may be migrated to.", Access: AccessRootAdmin,
			Params:       append(ListParams(), Param{Name: "virtualmachineid", Type: TUUID, Required: true, Description: "the virtual machine"}),
			ResponseName: "host", Response: hostFields, Handler: findHostsForMigration,
		},
		&Command{
			Name: "listVirtualMachines", Description: "Lists virtual machines.", Access: AccessAll,
			Params: append(OwnerListParams(),
				Param{Name: "id", Type: TUUID, Description: "the ID of the virtual machine"},
				Param{Name: "ids", Type: TList, Of: TUUID, Description: "IDs of virtual machines"},
				Param{Name: "name", Type: TString, Description: "a part of the name"},
				Param{Name: "state", Type: TString, Description: "the state"},
				Param{Name: "zoneid", Type: TUUID, Description: "the zone"},
				Param{Name: "podid", Type: TUUID, Description: "the pod (admins)"},
				Param{Name: "clusterid", Type: TUUID, Description: "the cluster (admins)"},
				Param{Name: "hostid", Type: TUUID, Description: "the host (admins)"},
				Param{Name: "storageid", Type: TUUID, Description: "VMs with a volume on this pool (admins)"},
				Param{Name: "templateid", Type: TUUID, Description: "the template"},
				Param{Name: "isoid", Type: TUUID, Description: "the ISO"},
				Param{Name: "serviceofferingid", Type: TUUID, Description: "the service offering"},
				Param{Name: "networkid", Type: TUUID, Description: "VMs with a NIC on this network"},
				Param{Name: "affinitygroupid", Type: TUUID, Description: "VMs in this affinity group"},
				Param{Name: "keypair", Type: TString, Description: "VMs with this SSH key pair"},
				Param{Name: "userdata", Type: TBoolean, Description: "show the VMs' user data (not shown by default)"},
				Param{Name: "hypervisor", Type: TString, Description: "the hypervisor type"},
				Param{Name: "haenable", Type: TBoolean, Description: "HA enabled or not"},
				Param{Name: "displayvm", Type: TBoolean, Description: "shown to end users or not"},
				Param{Name: "userid", Type: TUUID, Description: "the user that deployed them"},
				Param{Name: "details", Type: TList, Of: TString, Description: "details to show (all are)"},
				Param{Name: "tags", Type: TMap, Description: "tags[0].key=&tags[0].value="},
				Param{Name: "forvirtualnetwork", Type: TBoolean, Description: "ignored"},
				Param{Name: "showicon", Type: TBoolean, Description: "ignored"},
				Param{Name: "accumulate", Type: TBoolean, Description: "ignored"},
				Param{Name: "projectid", Type: TUUID, Description: "projects are not supported"},
			),
			ResponseName: "virtualmachine", Response: vmFields, Handler: listVirtualMachines,
		},
	)
	RegisterRenderer("VirtualMachine", func(ctx context.Context, s *Server, id string) (any, error) {
		// A job's result goes to its caller: admins see where it runs.
		var vm struct {
			ID       int64 `bun:"id"`
			AcctType *int  `bun:"acct_type"`
		}
		if err := s.DB.NewSelect().TableExpr("vm_instances AS vm").ColumnExpr("vm.id, a.type AS acct_type").
			Join("LEFT JOIN accounts AS a ON a.id = vm.account_id").Where("vm.uuid = ?", id).Limit(1).Scan(ctx, &vm); err != nil {
			return nil, models.NotFound(err, "virtual machine "+id)
		}
		admin := vm.AcctType != nil && *vm.AcctType != models.AccountTypeUser
		views, err := vmViews(ctx, s.DB, []int64{vm.ID}, admin)
		if err != nil {
			return nil, err
		}
		if len(views) == 0 {
			return nil, models.NotFound(sql.ErrNoRows, "virtual machine "+id)
		}
		return views[0], nil
	})
}

var vmFields = []Field{
	{"id", "string", "the ID of the virtual machine"}, {"name", "string", "the host name"},
	{"displayname", "string", "the display name"}, {"state", "string", "Starting, Running, Stopping, Stopped, Migrating, Destroyed, Expunging, Error"},
	{"account", "string", "the owner account"}, {"domainid", "string", "its domain"}, {"domain", "string", "its domain's name"},
	{"created", "date", "when it was deployed"}, {"zoneid", "string", "the zone"}, {"zonename", "string", "its name"},
	{"hostid", "string", "the host it runs on (admins)"}, {"hostname", "string", "its name (admins)"},
	{"templateid", "string", "the template"}, {"templatename", "string", "its name"},
	{"serviceofferingid", "string", "the service offering"}, {"serviceofferingname", "string", "its name"},
	{"cpunumber", "integer", "vCPUs"}, {"cpuspeed", "integer", "MHz per vCPU"}, {"memory", "integer", "memory, MiB"},
	{"nic", "list", "NICs: ipaddress, macaddress, networkid, networkname, isdefault, gateway, netmask"},
	{"hypervisor", "string", "the hypervisor type"}, {"instancename", "string", "the internal name (admins)"},
	{"rootdevicetype", "string", "ROOT"}, {"keypairs", "string", "SSH key pairs"}, {"userdata", "string", "base64 user data (with userdata=true)"}, {"affinitygroup", "list", "affinity groups"},
	{"tags", "list", "tags"}, {"haenable", "boolean", "HA enabled"},
}

// VMNicView is a NIC in a VM's response (the SDK's Nic).
type VMNicView struct {
	ID              string   `json:"id"`
	NetworkID       string   `json:"networkid"`
	NetworkName     string   `json:"networkname"`
	Netmask         string   `json:"netmask,omitempty"`
	Gateway         string   `json:"gateway,omitempty"`
	IPAddress       string   `json:"ipaddress,omitempty"`
	IsolationURI    string   `json:"isolationuri,omitempty"`
	BroadcastURI    string   `json:"broadcasturi,omitempty"`
	TrafficType     string   `json:"traffictype"`
	Type            string   `json:"type"`
	IsDefault       bool     `json:"isdefault"`
	MacAddress      string   `json:"macaddress"`
	DeviceID        string   `json:"deviceid"`
	SecondaryIP     []any    `json:"secondaryip"`
	ExtraDHCPOption []string `json:"extradhcpoption"`
}

// VMAffinityView is an affinity group in a VM's response.
type VMAffinityView struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Type        string `json:"type"`
	Description string `json:"description,omitempty"`
	Account     string `json:"account"`
	DomainID    string `json:"domainid"`
	Domain      string `json:"domain"`
}

// VMTagView is a tag in a VM's response (the SDK's Tags).
type VMTagView struct {
	Key          string `json:"key"`
	Value        string `json:"value"`
	ResourceType string `json:"resourcetype"`
	ResourceID   string `json:"resourceid"`
	Account      string `json:"account,omitempty"`
	DomainID     string `json:"domainid,omitempty"`
	Domain       string `json:"domain,omitempty"`
	Customer     string `json:"customer,omitempty"`
}

// VMView is a virtual machine as listVirtualMachines shows it (the SDK's
// VirtualMachine).
type VMView struct {
	ID                    string            `json:"id"`
	Name                  string            `json:"name"`
	DisplayName           string            `json:"displayname"`
	Account               string            `json:"account"`
	UserID                string            `json:"userid,omitempty"`
	Username              string            `json:"username,omitempty"`
	DomainID              string            `json:"domainid"`
	Domain                string            `json:"domain"`
	DomainPath            string            `json:"domainpath"`
	Created               string            `json:"created"`
	LastUpdated           string            `json:"lastupdated,omitempty"`
	State                 string            `json:"state"`
	HAEnable              bool              `json:"haenable"`
	Group                 string            `json:"group,omitempty"`
	ZoneID                string            `json:"zoneid"`
	ZoneName              string            `json:"zonename"`
	HostID                string            `json:"hostid,omitempty"`
	HostName              string            `json:"hostname,omitempty"`
	TemplateID            string            `json:"templateid,omitempty"`
	TemplateName          string            `json:"templatename,omitempty"`
	TemplateDisplayText   string            `json:"templatedisplaytext,omitempty"`
	TemplateType          string            `json:"templatetype,omitempty"`
	PasswordEnabled       bool              `json:"passwordenabled"`
	ISOID                 string            `json:"isoid,omitempty"`
	ISOName               string            `json:"isoname,omitempty"`
	ISODisplayText        string            `json:"isodisplaytext,omitempty"`
	ServiceOfferingID     string            `json:"serviceofferingid"`
	ServiceOfferingName   string            `json:"serviceofferingname"`
	DiskOfferingID        string            `json:"diskofferingid,omitempty"`
	DiskOfferingName      string            `json:"diskofferingname,omitempty"`
	CPUNumber             int               `json:"cpunumber"`
	CPUSpeed              int               `json:"cpuspeed"`
	Memory                int               `json:"memory"`
	GuestOSID             string            `json:"guestosid,omitempty"`
	OSTypeID              string            `json:"ostypeid,omitempty"`
	OSDisplayName         string            `json:"osdisplayname,omitempty"`
	RootDeviceID          int64             `json:"rootdeviceid"`
	RootDeviceType        string            `json:"rootdevicetype"`
	SecurityGroup         []any             `json:"securitygroup"`
	Nic                   []VMNicView       `json:"nic"`
	Hypervisor            string            `json:"hypervisor"`
	InstanceName          string            `json:"instancename,omitempty"`
	Details               map[string]string `json:"details"`
	AffinityGroup         []VMAffinityView  `json:"affinitygroup"`
	DisplayVM             bool              `json:"displayvm"`
	IsDynamicallyScalable bool              `json:"isdynamicallyscalable"`
	KeyPairs              string            `json:"keypairs,omitempty"`
	UserData              string            `json:"userdata,omitempty"` // listVirtualMachines userdata=true only
	Tags                  []VMTagView       `json:"tags"`
	PoolType              string            `json:"pooltype,omitempty"`
	BootMode              string            `json:"bootmode"`
	BootType              string            `json:"boottype"`
	HasAnnotations        bool              `json:"hasannotations"`
}

// byIDs loads rows of a model whose ids are in ids (removed ones too)
// into a map by id, in one query.
func byIDs[T any](ctx context.Context, db bun.IDB, ids []int64, id func(*T) int64, soft bool) (map[int64]*T, error) {
	out := map[int64]*T{}
	uniq := map[int64]bool{}
	var list []int64
	for _, i := range ids {
		if i != 0 && !uniq[i] {
			uniq[i] = true
			list = append(list, i)
		}
	}
	if len(list) == 0 {
		return out, nil
	}
	var rows []T
	q := db.NewSelect().Model(&rows).Where("?TableAlias.id IN (?)", bun.In(list))
	if soft {
		q = q.WhereAllWithDeleted()
	}
	if err := q.Scan(ctx); err != nil {
		return nil, err
	}
	for i := range rows {
		out[id(&rows[i])] = &rows[i]
	}
	return out, nil
}

// vmRow is a VM with what its view shows of the rows it refers to (its
// owner and the owner's domain, user, zone, host, template, ISO, offerings
// and OS type), read for a whole page in one query. Related rows are
// LEFT JOINed, removed ones included, as a view shows what a VM was made
// of even after it is gone.
type vmRow struct {
	models.VMInstance `bun:",extend"`
	AcctID            int64     `bun:"acct_id"`
	AcctName          string    `bun:"acct_name"`
	DomUUID           string    `bun:"dom_uuid"`
	DomName           string    `bun:"dom_name"`
	DomPath           string    `bun:"dom_path"`
	DomRemoved        time.Time `bun:"dom_removed"`
	UserUUID          string    `bun:"user_uuid"`
	UserName          string    `bun:"user_name"`
	ZoneUUID          string    `bun:"zone_uuid"`
	ZoneName          string    `bun:"zone_name"`
	HostUUID          string    `bun:"host_uuid"`
	HostName2         string    `bun:"host_name2"`
	TmplUUID          string    `bun:"tmpl_uuid"`
	TmplName          string    `bun:"tmpl_name"`
	TmplDisplay       string    `bun:"tmpl_display"`
	TmplType          string    `bun:"tmpl_type"`
	TmplPassword      bool      `bun:"tmpl_password"`
	ISOUUID           string    `bun:"iso_uuid"`
	ISOName           string    `bun:"iso_name"`
	ISODisplay        string    `bun:"iso_display"`
	SOUUID            string    `bun:"so_uuid"`
	SOName            string    `bun:"so_name"`
	DOUUID            string    `bun:"do_uuid"`
	DOName            string    `bun:"do_name"`
	OSUUID            string    `bun:"os_uuid"`
	OSName            string    `bun:"os_name"`
}

// ownerNames is what a view shows of an owner (an affinity group's or a
// tag's): its account name and its domain.
type ownerNames struct {
	AcctName string `bun:"acct_name"`
	DomUUID  string `bun:"dom_uuid"`
	DomName  string `bun:"dom_name"`
}

// queriesAtOnce scans qs, at once when db is a *bun.DB and together is
// set (each query then takes a connection of its own), else one after
// another (a transaction has a single connection).
func queriesAtOnce(ctx context.Context, db bun.IDB, together bool, qs ...*bun.SelectQuery) error {
	if _, ok := db.(*bun.DB); !ok || !together {
		for _, q := range qs {
			if err := q.Scan(ctx); err != nil {
				return err
			}
		}
		return nil
	}
	errs := make(chan error, len(qs))
	for _, q := range qs {
		go func() { errs <- q.Scan(ctx) }()
	}
	var first error
	for range qs {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// vmViews renders VMs by id, in the order given, with four queries whatever
// their number: the VMs with the rows they refer to, their NICs with their
// networks, their affinity groups and their tags (each with its owner).
func vmViews(ctx context.Context, db bun.IDB, ids []int64, admin bool) ([]VMView, error) {
	if len(ids) == 0 {
		return []VMView{}, nil
	}
	var rows []vmRow
	q := db.NewSelect().Model(&rows).
		Column("vm_instance.id", "vm_instance.uuid", "vm_instance.name", "vm_instance.display_name", "vm_instance.instance_name",
			"vm_instance.state", "vm_instance.state_reason", "vm_instance.hypervisor_type", "vm_instance.cpu", "vm_instance.speed",
			"vm_instance.ram_size", "vm_instance.keypairs", "vm_instance.ha_enabled", "vm_instance.display_vm",
			"vm_instance.update_time", "vm_instance.created").
		ColumnExpr("a.id AS acct_id, a.name AS acct_name").
		ColumnExpr("d.uuid AS dom_uuid, d.name AS dom_name, d.path AS dom_path, d.removed AS dom_removed").
		ColumnExpr("u.uuid AS user_uuid, u.username AS user_name, z.uuid AS zone_uuid, z.name AS zone_name").
		ColumnExpr("t.uuid AS tmpl_uuid, t.name AS tmpl_name, t.display_text AS tmpl_display, t.type AS tmpl_type, t.enable_password AS tmpl_password").
		ColumnExpr("iso.uuid AS iso_uuid, iso.name AS iso_name, iso.display_text AS iso_display").
		ColumnExpr("so.uuid AS so_uuid, so.name AS so_name, dof.uuid AS do_uuid, dof.name AS do_name, os.uuid AS os_uuid, os.display_name AS os_name").
		Join("LEFT JOIN accounts AS a ON a.id = vm_instance.account_id").
		Join("LEFT JOIN domains AS d ON d.id = a.domain_id").
		Join("LEFT JOIN users AS u ON u.id = vm_instance.user_id").
		Join("LEFT JOIN zones AS z ON z.id = vm_instance.zone_id").
		Join("LEFT JOIN vm_templates AS t ON t.id = vm_instance.template_id").
		Join("LEFT JOIN vm_templates AS iso ON iso.id = vm_instance.iso_id").
		Join("LEFT JOIN service_offerings AS so ON so.id = vm_instance.service_offering_id").
		Join("LEFT JOIN disk_offerings AS dof ON dof.id = vm_instance.disk_offering_id").
		Join("LEFT JOIN os_types AS os ON os.id = vm_instance.os_type_id").
		Where("vm_instance.id IN (?)", bun.In(ids)).WhereAllWithDeleted()
	if admin {
		q = q.ColumnExpr("h.uuid AS host_uuid, h.name AS host_name2").Join("LEFT JOIN hosts AS h ON h.id = vm_instance.host_id")
	}

	var nics []struct {
		models.Nic `bun:",extend"`
		NetID      int64  `bun:"net_id"`
		NetUUID    string `bun:"net_uuid"`
		NetName    string `bun:"net_name"`
		NetGuest   string `bun:"net_guest_type"`
		NetTraffic string `bun:"net_traffic_type"`
	}
	nicsQ := db.NewSelect().Model(&nics).
		Column("nic.uuid", "nic.instance_id", "nic.netmask", "nic.gateway", "nic.ip4_address", "nic.default_nic", "nic.mac_address",
			"nic.device_id", "nic.broadcast_uri", "nic.isolation_uri").
		ColumnExpr("nw.id AS net_id, nw.uuid AS net_uuid, nw.name AS net_name, nw.guest_type AS net_guest_type, nw.traffic_type AS net_traffic_type").
		Join("LEFT JOIN networks AS nw ON nw.id = nic.network_id").
		Where("nic.instance_id IN (?)", bun.In(ids)).Order("nic.instance_id", "nic.device_id")
	var groups []struct {
		models.AffinityGroup `bun:",extend"`
		InstanceID           int64 `bun:"instance_id"`
		ownerNames
	}
	groupsQ := db.NewSelect().Model(&groups).
		Column("affinity_group.uuid", "affinity_group.name", "affinity_group.type", "affinity_group.description").
		ColumnExpr("m.instance_id, a.name AS acct_name, d.uuid AS dom_uuid, d.name AS dom_name").
		Join("JOIN affinity_group_vm_map AS m ON m.affinity_group_id = affinity_group.id").
		Join("LEFT JOIN accounts AS a ON a.id = affinity_group.account_id").
		Join("LEFT JOIN domains AS d ON d.id = a.domain_id").
		Where("m.instance_id IN (?)", bun.In(ids)).Order("m.id")
	var tags []struct {
		models.ResourceTag `bun:",extend"`
		ownerNames
	}
	tagsQ := db.NewSelect().Model(&tags).
		Column("resource_tag.tag_key", "resource_tag.tag_value", "resource_tag.resource_type", "resource_tag.resource_uuid", "resource_tag.customer").
		ColumnExpr("a.name AS acct_name, d.uuid AS dom_uuid, d.name AS dom_name").
		Join("JOIN vm_instances AS tv ON tv.uuid = resource_tag.resource_uuid").
		Join("LEFT JOIN accounts AS a ON a.id = resource_tag.account_id").
		Join("LEFT JOIN domains AS d ON d.id = a.domain_id").
		Where("resource_tag.resource_type = ? AND tv.id IN (?)", "UserVm", bun.In(ids)).Order("resource_tag.id")
	// A page's four reads go together, each on a connection of its own.
	if err := queriesAtOnce(ctx, db, len(ids) > 1, q, nicsQ, groupsQ, tagsQ); err != nil {
		return nil, err
	}

	nicsOf := map[int64][]VMNicView{}
	for _, n := range nics {
		nv := VMNicView{ID: n.UUID, Netmask: n.Netmask, Gateway: n.Gateway, IPAddress: n.IP4Address, TrafficType: models.TrafficGuest,
			IsDefault: n.DefaultNic, MacAddress: n.MacAddress, DeviceID: strconv.Itoa(n.DeviceID), SecondaryIP: []any{}, ExtraDHCPOption: []string{}}
		if n.NetID != 0 {
			nv.NetworkID, nv.NetworkName, nv.Type, nv.TrafficType = n.NetUUID, n.NetName, n.NetGuest, n.NetTraffic
		}
		if admin {
			nv.BroadcastURI, nv.IsolationURI = n.BroadcastURI, n.IsolationURI
		}
		nicsOf[n.InstanceID] = append(nicsOf[n.InstanceID], nv)
	}

	groupsOf := map[int64][]VMAffinityView{}
	for _, g := range groups {
		groupsOf[g.InstanceID] = append(groupsOf[g.InstanceID], VMAffinityView{ID: g.UUID, Name: g.Name, Type: g.Type, Description: g.Description,
			Account: g.AcctName, DomainID: g.DomUUID, Domain: g.DomName})
	}

	tagsOf := map[string][]VMTagView{}
	for _, t := range tags {
		tagsOf[t.ResourceUUID] = append(tagsOf[t.ResourceUUID], VMTagView{Key: t.Key, Value: t.Value, ResourceType: t.ResourceType,
			ResourceID: t.ResourceUUID, Customer: t.Customer, Account: t.AcctName, DomainID: t.DomUUID, Domain: t.DomName})
	}

	at := make(map[int64]int, len(ids))
	for i, id := range ids {
		at[id] = i
	}
	byPos := make([]*VMView, len(ids))
	for i := range rows {
		r := &rows[i]
		vm := &r.VMInstance
		v := VMView{
			ID: vm.UUID, Name: vm.Name, DisplayName: vm.DisplayName, Created: FormatTime(vm.Created), LastUpdated: FormatTime(vm.Updated),
			State: vm.State, HAEnable: vm.HAEnabled, CPUNumber: vm.CPU, CPUSpeed: vm.Speed, Memory: vm.RAMSize,
			RootDeviceType: models.VolumeRoot, SecurityGroup: []any{}, Nic: nicsOf[vm.ID], Hypervisor: vm.HypervisorType,
			Details: map[string]string{}, AffinityGroup: groupsOf[vm.ID], DisplayVM: vm.DisplayVM, KeyPairs: vm.KeyPairs,
			Tags: tagsOf[vm.UUID], BootMode: "legacy", BootType: "BIOS",
			UserID: r.UserUUID, Username: r.UserName, ZoneID: r.ZoneUUID, ZoneName: r.ZoneName,
			TemplateID: r.TmplUUID, TemplateName: r.TmplName, TemplateDisplayText: r.TmplDisplay, TemplateType: r.TmplType,
			PasswordEnabled: r.TmplPassword, ISOID: r.ISOUUID, ISOName: r.ISOName, ISODisplayText: r.ISODisplay,
			ServiceOfferingID: r.SOUUID, ServiceOfferingName: r.SOName, DiskOfferingID: r.DOUUID, DiskOfferingName: r.DOName,
			GuestOSID: r.OSUUID, OSTypeID: r.OSUUID, OSDisplayName: r.OSName,
		}
		if v.Nic == nil {
			v.Nic = []VMNicView{}
		}
		if v.AffinityGroup == nil {
			v.AffinityGroup = []VMAffinityView{}
		}
		if v.Tags == nil {
			v.Tags = []VMTagView{}
		}
		if r.AcctID != 0 {
			o := owner{Domain: models.Domain{Name: r.DomName, Path: r.DomPath, Removed: r.DomRemoved}}
			v.Account, v.DomainID, v.Domain, v.DomainPath = r.AcctName, r.DomUUID, r.DomName, o.domainPath()
		}
		if admin {
			v.HostID, v.HostName = r.HostUUID, r.HostName2
			v.InstanceName = vm.InstanceName
		}
		if vm.StateReason != "" && vm.State == models.VMError || vm.StateReason != "" && admin {
			v.Details["statereason"] = vm.StateReason
		}
		byPos[at[vm.ID]] = &v
	}
	views := make([]VMView, 0, len(rows))
	for _, v := range byPos {
		if v != nil {
			views = append(views, *v)
		}
	}
	return views, nil
}

func vmUniq(ids []int64) []int64 {
	seen := map[int64]bool{}
	var out []int64
	for _, id := range ids {
		if id != 0 && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// ---- lookups ----

// vmToChange loads a user VM (not expunged) the caller may act on: its
// own, or one of an account it administers.
func (c *Call) vmToChange(id string) (*models.VMInstance, *owner, error) {
	var vm models.VMInstance
	if err := c.S.DB.NewSelect().Model(&vm).Where("uuid = ? AND type = ?", id, models.VMTypeUser).Limit(1).Scan(c.Ctx); err != nil {
		if isNoRows(err) {
			return nil, nil, cserr.Param("Unable to find virtual machine by id %s", clip(id, 64))
		}
		return nil, nil, err
	}
	owners, err := loadOwners(c.Ctx, c.S.DB, []int64{vm.AccountID})
	if err != nil {
		return nil, nil, err
	}
	o := owners[vm.AccountID]
	if o == nil || (o.Account.ID != c.Caller.Account.ID && !c.CanAdminAccount(&o.Account, &o.Domain)) {
		return nil, nil, cserr.New(cserr.AccountError, "The caller does not have permission to act on virtual machine %s", vm.UUID)
	}
	return &vm, o, nil
}

// vmOwner is the account a deployment is for: account/domainid (an admin
// deploying for another account) or the caller's.
func (c *Call) vmOwner() (*owner, error) {
	self := &owner{Account: c.Caller.Account, Domain: c.Caller.Domain, Role: c.Caller.Role}
	if !c.Has("account") {
		if c.Has("domainid") && c.Str("domainid") != c.Caller.Domain.UUID {
			return nil, cserr.Param("Give account with domainid to deploy for another account")
		}
		return self, nil
	}
	dom := &c.Caller.Domain
	if c.Has("domainid") {
		d, err := c.DomainByUUID(c.Str("domainid"))
		if err != nil {
			return nil, err
		}
		dom = d
	}
	var a models.Account
	if err := c.S.DB.NewSelect().Model(&a).Where("domain_id = ? AND name = ?", dom.ID, c.Str("account")).Limit(1).Scan(c.Ctx); err != nil {
		if isNoRows(err) {
			return nil, cserr.Param("Unable to find account %s in domain %s", clip(c.Str("account"), 64), dom.UUID)
		}
		return nil, err
	}
	if a.ID == c.Caller.Account.ID {
		return self, nil
	}
	owners, err := ownersOf(c.Ctx, c.S.DB, []models.Account{a})
	if err != nil {
		return nil, err
	}
	o := owners[a.ID]
	if !c.CanAdminAccount(&o.Account, &o.Domain) {
		return nil, cserr.New(cserr.AccountError, "The caller does not have permission to deploy for account %s", clip(a.Name, 64))
	}
	if o.Account.State != "enabled" {
		return nil, cserr.Param("Account %s is %s", o.Account.Name, o.Account.State)
	}
	return o, nil
}

var vmNameRe = regexp.MustCompile(`^[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// checkVMName applies CloudStack's host name rule.
func checkVMName(name string) error {
	if !vmNameRe.MatchString(name) {
		return cserr.Param("Invalid name %q: a VM name has 1 to 63 ASCII letters, digits and hyphens, starts with a letter and does not end with a hyphen", clip(name, 64))
	}
	return nil
}

// vmNameTaken tells whether a live VM of the account, or one with a NIC on
// one of the networks, already has the name.
func vmNameTaken(ctx context.Context, db bun.IDB, accountID int64, networkIDs []int64, name string, except int64) (bool, error) {
	q := db.NewSelect().Model((*models.VMInstance)(nil)).Where("name = ? AND id <> ?", name, except).
		Where("state NOT IN (?)", bun.In([]string{models.VMExpunging}))
	q = q.WhereGroup(" AND ", func(q *bun.SelectQuery) *bun.SelectQuery {
		q = q.Where("account_id = ?", accountID)
		if len(networkIDs) > 0 {
			q = q.WhereOr("id IN (?)", db.NewSelect().Model((*models.Nic)(nil)).Column("instance_id").Where("network_id IN (?)", bun.In(networkIDs)))
		}
		return q
	})
	return q.Exists(ctx)
}

// checkUserData checks user data is base64 of at most 1 MiB.
func checkUserData(v string) error {
	if v == "" {
		return nil
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		if b, err = base64.URLEncoding.DecodeString(v); err != nil {
			return cserr.Param("userdata is not base64: %v", err)
		}
	}
	if len(b) > 1<<20 {
		return cserr.Param("userdata is %d bytes decoded; at most 1048576", len(b))
	}
	return nil
}

// offeringShape is the CPU, MHz and MiB of a service offering, or of the
// custom values given in details for a customized one.
func (c *Call) offeringShape(so *models.ServiceOffering) (cpu, mhz, mem int, err error) {
	cpu, mhz, mem = so.CPU, so.Speed, so.RAMSize
	if so.Customized || cpu == 0 || mhz == 0 || mem == 0 {
		d := map[string]string{}
		for _, m := range c.Map("details") {
			for k, v := range m {
				d[strings.ToLower(k)] = v
			}
		}
		get := func(key string, cur int) (int, error) {
			if cur > 0 {
				return cur, nil
			}
			n, perr := strconv.Atoi(d[strings.ToLower(key)])
			if perr != nil || n <= 0 {
				return 0, cserr.Param("Service offering %s is custom: give details[0].%s", so.Name, key)
			}
			return n, nil
		}
		if cpu, err = get("cpuNumber", cpu); err != nil {
			return
		}
		if mhz, err = get("cpuSpeed", mhz); err != nil {
			return
		}
		if mem, err = get("memory", mem); err != nil {
			return
		}
		if so.MinCPU > 0 && cpu < so.MinCPU || so.MaxCPU > 0 && cpu > so.MaxCPU {
			return 0, 0, 0, cserr.Param("cpuNumber %d is outside %d-%d of offering %s", cpu, so.MinCPU, so.MaxCPU, so.Name)
		}
		if so.MinMemory > 0 && mem < so.MinMemory || so.MaxMemory > 0 && mem > so.MaxMemory {
			return 0, 0, 0, cserr.Param("memory %d is outside %d-%d of offering %s", mem, so.MinMemory, so.MaxMemory, so.Name)
		}
	}
	return cpu, mhz, mem, nil
}

// usableOffering checks a service offering may be used by the caller in
// the zone.
func (c *Call) usableOffering(so *models.ServiceOffering, zoneID int64) error {
	if so.State != models.OfferingActive || so.SystemUse {
		return cserr.Param("Service offering %s cannot be used to deploy virtual machines", so.Name)
	}
	if ids := idList(so.ZoneIDs); len(ids) > 0 {
		found := false
		for _, id := range ids {
			found = found || id == zoneID
		}
		if !found {
			return cserr.Param("Service offering %s is not available in this zone", so.Name)
		}
	}
	paths, err := c.domainPaths([]string{so.DomainIDs})
	if err != nil {
		return err
	}
	if !c.offeringVisible(so.DomainIDs, paths) {
		return cserr.Param("Unable to find service offering by id %s", so.UUID)
	}
	return nil
}

// templateUsable checks the caller (for owner) may deploy from the
// template and that it is downloaded in the zone.
func (c *Call) templateUsable(t *models.Template, o *owner, zone *models.Zone) error {
	if t.State != models.TemplateActive {
		return cserr.Param("Template %s is not active", t.Name)
	}
	if !t.Public && t.AccountID != o.Account.ID && !c.Caller.IsRootAdmin() {
		var d models.Domain
		if err := c.S.DB.NewSelect().Model(&d).Column("path").Where("id = ?", t.DomainID).WhereAllWithDeleted().Limit(1).Scan(c.Ctx); err != nil ||
			!c.Caller.IsDomainAdmin() || !InSubtree(d.Path, c.Caller.Domain.Path) {
			return cserr.Param("Unable to find template by id %s", t.UUID)
		}
	}
	ok, err := c.S.DB.NewSelect().Model((*models.TemplateStoreRef)(nil)).
		Join("JOIN image_stores AS st ON st.id = ?TableAlias.store_id").
		Where("?TableAlias.template_id = ? AND ?TableAlias.download_state = ? AND ?TableAlias.destroyed = ?", t.ID, models.DownloadDownloaded, false).
		Where("st.removed IS NULL AND (st.zone_id = ? OR st.zone_id IS NULL)", zone.ID).Exists(c.Ctx)
	if err != nil {
		return err
	}
	if !ok {
		return cserr.Param("Template %s is not ready in zone %s: it is not downloaded to its secondary storage", t.Name, zone.Name)
	}
	return nil
}

// networkUsableBy tells whether account o may put a NIC on network n:
// its own network, or a domain network of its domain or (with subdomain
// access) of an ancestor domain.
func (c *Call) networkUsableBy(n *models.Network, o *owner) (bool, error) {
	if n.ACLType == models.ACLTypeAccount || n.ACLType == "" {
		return n.AccountID == o.Account.ID, nil
	}
	if n.DomainID == o.Domain.ID {
		return true, nil
	}
	if !n.SubdomainAccess {
		return false, nil
	}
	var d models.Domain
	if err := c.S.DB.NewSelect().Model(&d).Column("path").Where("id = ?", n.DomainID).Limit(1).Scan(c.Ctx); err != nil {
		if isNoRows(err) {
			return false, nil
		}
		return false, err
	}
	return InSubtree(o.Domain.Path, d.Path), nil
}

// deployNIC is one NIC of a deployment.
type deployNIC struct {
	net *models.Network
	ip  string
}

// deployNetworks resolves networkids, ipaddress and iptonetworklist into
// the VM's NICs, the default first.
func (c *Call) deployNetworks(zone *models.Zone, o *owner) ([]deployNIC, error) {
	var ids []string
	ips := map[string]string{}
	for _, m := range c.Map("iptonetworklist") {
		id := m["networkid"]
		if id == "" {
			return nil, cserr.Param("iptonetworklist: each entry needs networkid")
		}
		ids = append(ids, id)
		if ip := m["ip"]; ip != "" {
			ips[id] = ip
		}
	}
	if len(ids) > 0 && c.Has("networkids") {
		return nil, cserr.Param("Give networkids or iptonetworklist, not both")
	}
	if len(ids) == 0 {
		ids = c.List("networkids")
	}
	var nets []*models.Network
	switch {
	case zone.NetworkType == models.NetworkTypeBasic:
		if len(ids) > 0 {
			return nil, cserr.Param("Zone %s is a Basic zone: its VMs go on its one guest network; do not give networkids", zone.Name)
		}
		n, err := activities.BasicGuestNetwork(c.Ctx, c.S.DB, zone)
		if err != nil {
			return nil, err
		}
		nets = append(nets, n)
		ids = []string{n.UUID}
		if c.Has("ipaddress") {
			ips[n.UUID] = c.Str("ipaddress")
		}
	case len(ids) == 0:
		// No network named: the one shared network the owner may use.
		var cands []models.Network
		if err := c.S.DB.NewSelect().Model(&cands).
			Where("zone_id = ? AND traffic_type = ? AND guest_type = ?", zone.ID, models.TrafficGuest, models.GuestTypeShared).
			Order("id").Scan(c.Ctx); err != nil {
			return nil, err
		}
		for i := range cands {
			ok, err := c.networkUsableBy(&cands[i], o)
			if err != nil {
				return nil, err
			}
			if ok {
				nets = append(nets, &cands[i])
			}
		}
		if len(nets) != 1 {
			return nil, cserr.Param("Give networkids: account %s may use %d guest networks in zone %s", o.Account.Name, len(nets), zone.Name)
		}
		ids = []string{nets[0].UUID}
		if c.Has("ipaddress") {
			ips[nets[0].UUID] = c.Str("ipaddress")
		}
	default:
		seen := map[string]bool{}
		for i, id := range ids {
			if seen[id] {
				return nil, cserr.Param("Network %s is given twice", id)
			}
			seen[id] = true
			var n models.Network
			if err := c.S.DB.NewSelect().Model(&n).Where("uuid = ?", id).Limit(1).Scan(c.Ctx); err != nil {
				if isNoRows(err) {
					return nil, cserr.Param("Unable to find network by id %s", clip(id, 64))
				}
				return nil, err
			}
			if n.ZoneID != zone.ID {
				return nil, cserr.Param("Network %s is not in zone %s", n.Name, zone.Name)
			}
			if n.TrafficType != models.TrafficGuest {
				return nil, cserr.Param("Network %s is not a guest network", n.Name)
			}
			ok, err := c.networkUsableBy(&n, o)
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, cserr.New(cserr.AccountError, "Account %s may not use network %s", o.Account.Name, n.Name)
			}
			nets = append(nets, &n)
			if i == 0 && c.Has("ipaddress") {
				if _, dup := ips[id]; dup {
					return nil, cserr.Param("Give the default NIC's address in ipaddress or iptonetworklist, not both")
				}
				ips[id] = c.Str("ipaddress")
			}
		}
	}
	out := make([]deployNIC, len(nets))
	for i, n := range nets {
		out[i] = deployNIC{net: n, ip: ips[n.UUID]}
		if ip := out[i].ip; ip != "" {
			a, err := netip.ParseAddr(ip)
			if err != nil || !a.Is4() {
				return nil, cserr.Param("%q is not an IPv4 address", clip(ip, 64))
			}
			out[i].ip = a.String()
			if zone.NetworkType == models.NetworkTypeBasic {
				continue // the pod is not known yet; the job checks it
			}
			ok, err := c.S.DB.NewSelect().Model((*models.IPAddress)(nil)).
				Where("zone_id = ? AND public_ip_address = ? AND state = ?", zone.ID, out[i].ip, models.IPFree).
				Where("vlan_id IN (?)", c.S.DB.NewSelect().Model((*models.Vlan)(nil)).Column("id").Where("network_id = ?", n.ID)).Exists(c.Ctx)
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, cserr.Param("The requested IP address %s is not available in network %s: it is taken or outside the network's IP ranges", out[i].ip, n.Name)
			}
		}
	}
	return out, nil
}

// ---- deploy ----

func deployVirtualMachine(c *Call) (any, error) {
	if c.Has("projectid") {
		return nil, cserr.New(cserr.UnsupportedAction, "projects are not supported")
	}
	if len(c.List("securitygroupids")) > 0 {
		return nil, cserr.New(cserr.UnsupportedAction, "security groups are not supported")
	}
	o, err := c.vmOwner()
	if err != nil {
		return nil, err
	}
	zone, err := c.zoneByUUID(c.Str("zoneid"))
	if err != nil {
		return nil, err
	}
	if zone.AllocationState != models.AllocationEnabled && !c.Caller.IsRootAdmin() {
		return nil, cserr.Param("Cannot perform this operation, zone %s is currently disabled", zone.Name)
	}
	if zone.DomainID != 0 {
		var d models.Domain
		if err := c.S.DB.NewSelect().Model(&d).Column("path").Where("id = ?", zone.DomainID).Limit(1).Scan(c.Ctx); err == nil && !InSubtree(o.Domain.Path, d.Path) {
			return nil, cserr.New(cserr.AccountError, "Zone %s is dedicated to another domain", zone.Name)
		}
	}
	so, err := c.serviceOfferingByUUID(c.Str("serviceofferingid"))
	if err != nil {
		return nil, err
	}
	if err := c.usableOffering(so, zone.ID); err != nil {
		return nil, err
	}
	cpu, mhz, mem, err := c.offeringShape(so)
	if err != nil {
		return nil, err
	}
	var t models.Template
	if err := c.S.DB.NewSelect().Model(&t).Where("uuid = ?", c.Str("templateid")).Limit(1).Scan(c.Ctx); err != nil {
		if isNoRows(err) {
			return nil, cserr.Param("Unable to find template by id %s", c.Str("templateid"))
		}
		return nil, err
	}
	if err := c.templateUsable(&t, o, zone); err != nil {
		return nil, err
	}
	iso := t.Format == models.FormatISO
	hv := t.HypervisorType
	if iso {
		if !t.Bootable {
			return nil, cserr.Param("ISO %s is not bootable", t.Name)
		}
		if !c.Has("diskofferingid") {
			return nil, cserr.Param("Deploying from ISO %s needs diskofferingid for the root disk", t.Name)
		}
		hv = c.Str("hypervisor")
	}
	if hv == "" || strings.EqualFold(hv, models.HypervisorNone) {
		hv = ""
	}
	// A BareMetal VM is a whole machine: its disks are the machine's own,
	// installed by what its template boots, so it gets no volumes.
	bare := hv == models.HypervisorBareMetal
	if bare {
		for _, p := range []string{"diskofferingid", "rootdisksize", "size"} {
			if c.Has(p) {
				return nil, cserr.Param("parameter %s: BareMetal VMs have no volumes (the machine's own disks are the VM's)", p)
			}
		}
	}
	// Admins' pins.
	var pins activities.VMPins
	pins.ConsiderLastHost = true
	if c.Has("hostid") || c.Has("podid") || c.Has("clusterid") {
		if !c.Caller.IsRootAdmin() {
			return nil, cserr.New(cserr.AccountError, "Only root admins may choose the host, pod or cluster")
		}
		if pins, err = c.vmPins(zone.ID); err != nil {
			return nil, err
		}
	}
	nics, err := c.deployNetworks(zone, o)
	if err != nil {
		return nil, err
	}
	netIDs := make([]int64, len(nics))
	for i, n := range nics {
		netIDs[i] = n.net.ID
	}
	uuid := models.NewUUID()
	name := c.Str("name")
	if name == "" {
		name = "VM-" + uuid
	} else if err := checkVMName(name); err != nil {
		return nil, err
	}
	display := c.Str("displayname")
	if display == "" {
		display = name
	}
	if err := checkUserData(c.Str("userdata")); err != nil {
		return nil, err
	}
	keyNames := c.List("keypairs")
	if c.Has("keypair") {
		keyNames = append([]string{c.Str("keypair")}, keyNames...)
	}
	keyNames = vmUniqStrings(keyNames)
	if len(keyNames) > 0 {
		n, err := c.S.DB.NewSelect().Model((*models.SSHKeyPair)(nil)).Where("account_id = ? AND keypair_name IN (?)", o.Account.ID, bun.In(keyNames)).Count(c.Ctx)
		if err != nil {
			return nil, err
		}
		if n != int64(len(keyNames)) {
			return nil, cserr.Param("Unable to find the SSH key pair(s) %s in account %s", strings.Join(keyNames, ", "), o.Account.Name)
		}
	}
	var groupIDs []int64
	if c.Has("affinitygroupids") || c.Has("affinitygroupnames") {
		if c.Has("affinitygroupids") && c.Has("affinitygroupnames") {
			return nil, cserr.Param("Give affinitygroupids or affinitygroupnames, not both")
		}
		var groups []models.AffinityGroup
		q := c.S.DB.NewSelect().Model(&groups).Where("account_id = ?", o.Account.ID)
		want := vmUniqStrings(c.List("affinitygroupids"))
		if len(want) > 0 {
			q = q.Where("uuid IN (?)", bun.In(want))
		} else {
			want = vmUniqStrings(c.List("affinitygroupnames"))
			q = q.Where("name IN (?)", bun.In(want))
		}
		if err := q.Scan(c.Ctx); err != nil {
			return nil, err
		}
		if len(groups) != len(want) {
			return nil, cserr.Param("Unable to find all the affinity groups given in account %s", o.Account.Name)
		}
		for _, g := range groups {
			groupIDs = append(groupIDs, g.ID)
		}
	}
	// Disks: the root disk from the template (at least its size), or blank
	// from the disk offering for an ISO; a data disk from diskofferingid.
	var rootDO *models.DiskOffering
	if so.DiskOfferingID != 0 {
		var d models.DiskOffering
		if err := c.S.DB.NewSelect().Model(&d).Where("id = ?", so.DiskOfferingID).WhereAllWithDeleted().Limit(1).Scan(c.Ctx); err == nil {
			rootDO = &d
		}
	}
	rootSize := t.Size
	var dataDO *models.DiskOffering
	var dataSize int64
	if c.Has("diskofferingid") {
		d, err := c.diskOfferingByUUID(c.Str("diskofferingid"))
		if err != nil {
			return nil, err
		}
		if d.State != models.OfferingActive {
			return nil, cserr.Param("Disk offering %s is not active", d.Name)
		}
		size := d.DiskSize
		if d.Customized {
			if c.Int("size", 0) <= 0 {
				return nil, cserr.Param("Disk offering %s is custom: give size in GiB", d.Name)
			}
			size = c.Int("size", 0) * models.GiB
		}
		if iso {
			rootDO, rootSize = d, size
		} else {
			dataDO, dataSize = d, size
		}
	}
	if !iso && rootDO != nil && rootDO.DiskSize > rootSize {
		rootSize = rootDO.DiskSize
	}
	if c.Has("rootdisksize") {
		want := c.Int("rootdisksize", 0) * models.GiB
		if want <= 0 || (t.Size > 0 && want < t.Size) {
			return nil, cserr.Param("rootdisksize %d GiB is smaller than the template's %d bytes", c.Int("rootdisksize", 0), t.Size)
		}
		rootSize = want
	}
	if rootSize <= 0 && !bare {
		return nil, cserr.Param("The size of template %s is not known yet: give rootdisksize", t.Name)
	}
	now := models.Now()
	vm := &models.VMInstance{
		UUID: uuid, Name: name, DisplayName: display, InstanceName: "i-pending-" + uuid, HostName: name, Type: models.VMTypeUser,
		State: models.VMStarting, ZoneID: zone.ID, ServiceOfferingID: so.ID, OSTypeID: t.OSTypeID, HypervisorType: hv,
		CPU: cpu, Speed: mhz, RAMSize: mem, AccountID: o.Account.ID, DomainID: o.Account.DomainID, UserID: c.Caller.User.ID,
		UserData: c.Str("userdata"), KeyPairs: strings.Join(keyNames, ","), HAEnabled: so.HAEnabled, LimitCPUUse: so.LimitCPUUse,
		DisplayVM: c.Bool("displayvm", true), Created: now, Updated: now,
	}
	if iso {
		vm.ISOID = t.ID
		if rootDO != nil {
			vm.DiskOfferingID = rootDO.ID
		}
	} else {
		vm.TemplateID = t.ID
	}
	// Count rows exist before the transaction that moves them, so that a
	// burst of first deployments of an account never creates them inside.
	// The reservation's reads (owner, limits) happen here too, once.
	res, err := models.PrepareReservation(c.Ctx, c.S.DB, o.Account.ID)
	if err != nil {
		return nil, err
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		taken, err := vmNameTaken(ctx, tx, o.Account.ID, netIDs, name, 0)
		if err != nil {
			return err
		}
		if taken {
			return cserr.Param("A virtual machine named %s already exists in account %s or on one of its networks", name, o.Account.Name)
		}
		if _, err := tx.NewInsert().Model(vm).Exec(ctx); err != nil {
			return err
		}
		vm.InstanceName = models.InstanceName(o.Account.ID, vm.ID)
		if _, err := tx.NewUpdate().Model(vm).Column("instance_name").WherePK().Exec(ctx); err != nil {
			return err
		}
		vols := []models.Volume{{
			UUID: models.NewUUID(), Name: fmt.Sprintf("ROOT-%d", vm.ID), VolumeType: models.VolumeRoot, State: models.VolumeAllocated,
			Size: rootSize, InstanceID: vm.ID, DeviceID: 0, ZoneID: zone.ID, AccountID: vm.AccountID, DomainID: vm.DomainID,
			ProvisioningType: models.ProvisioningThin, DisplayVolume: true, Created: now,
		}}
		if rootDO != nil {
			vols[0].DiskOfferingID, vols[0].ProvisioningType = rootDO.ID, orDefault(rootDO.ProvisioningType, models.ProvisioningThin)
		}
		if !iso {
			vols[0].TemplateID = t.ID
		}
		if dataDO != nil {
			vols = append(vols, models.Volume{
				UUID: models.NewUUID(), Name: fmt.Sprintf("DATA-%d", vm.ID), VolumeType: models.VolumeDataDisk, State: models.VolumeAllocated,
				Size: dataSize, InstanceID: vm.ID, DeviceID: 1, DiskOfferingID: dataDO.ID, ZoneID: zone.ID, AccountID: vm.AccountID,
				DomainID: vm.DomainID, ProvisioningType: orDefault(dataDO.ProvisioningType, models.ProvisioningThin), DisplayVolume: true, Created: now,
			})
		}
		if bare {
			vols = nil
		} else if _, err := tx.NewInsert().Model(&vols).Exec(ctx); err != nil {
			return err
		}
		for i, n := range nics {
			nic := &models.Nic{
				UUID: models.NewUUID(), InstanceID: vm.ID, NetworkID: n.net.ID, MacAddress: activities.NewMAC(), IP4Address: n.ip,
				DeviceID: i, DefaultNic: i == 0, Mode: models.NicModeDhcp, State: models.NicAllocated, ReserverName: "DirectNetworkGuru",
				VMType: models.VMTypeUser, DisplayNic: true, BroadcastURI: n.net.BroadcastURI, IsolationURI: n.net.BroadcastURI, Created: now,
			}
			if i == 0 && c.Has("macaddress") {
				nic.MacAddress = strings.ToLower(c.Str("macaddress"))
			}
			if _, err := tx.NewInsert().Model(nic).Exec(ctx); err != nil {
				if isDuplicate(err) {
					return cserr.Param("MAC address %s is in use", nic.MacAddress)
				}
				return err
			}
		}
		for _, g := range groupIDs {
			if _, err := tx.NewInsert().Model(&models.AffinityGroupVMMap{AffinityGroupID: g, InstanceID: vm.ID}).Exec(ctx); err != nil {
				return err
			}
		}
		counts := activities.VMCounts(vm)
		for k, v := range activities.VolumeCounts(vols) {
			counts[k] = v
		}
		return res.Reserve(ctx, tx, counts)
	})
	if err != nil {
		return nil, err
	}
	resp, err := c.StartJob(JobSpec{
		Workflow:     workflows.DeployVM,
		Input:        workflows.DeployVMInput{VMUUID: vm.UUID, StartVM: c.Bool("startvm", true), Pins: pins, Actor: actorOf(c.Caller)},
		InstanceType: "VirtualMachine", InstanceUUID: vm.UUID, ResponseID: vm.UUID,
		Summary: "deploy VM " + vm.Name + " for account " + o.Account.Name,
	})
	if err != nil {
		c.abandonDeploy(vm)
		return nil, err
	}
	return resp, nil
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func vmUniqStrings(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// abandonDeploy removes what a deployment whose job could not start wrote.
func (c *Call) abandonDeploy(vm *models.VMInstance) {
	ctx := context.WithoutCancel(c.Ctx)
	err := c.S.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var vols []models.Volume
		if err := tx.NewSelect().Model(&vols).Where("instance_id = ?", vm.ID).Scan(ctx); err != nil {
			return err
		}
		counts := activities.VMCounts(vm)
		for k, v := range activities.VolumeCounts(vols) {
			counts[k] = v
		}
		if err := activities.ReleaseCounts(ctx, tx, vm.AccountID, counts); err != nil {
			return err
		}
		if _, err := tx.NewDelete().Model((*models.AffinityGroupVMMap)(nil)).Where("instance_id = ?", vm.ID).Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.NewDelete().Model((*models.Nic)(nil)).Where("instance_id = ?", vm.ID).Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.NewDelete().Model((*models.Volume)(nil)).Where("instance_id = ?", vm.ID).Exec(ctx); err != nil {
			return err
		}
		_, err := tx.NewUpdate().Model((*models.VMInstance)(nil)).Set("state = ?", models.VMError).
			Set("state_reason = ?", "its deployment job could not start").Set("removed = ?", models.Now()).Where("id = ?", vm.ID).Exec(ctx)
		return err
	})
	if err != nil {
		c.S.Log.Error("cannot remove a deployment whose job did not start", "vm", vm.UUID, "err", err)
	}
}

// vmPins reads an admin's hostid, podid and clusterid within a zone.
func (c *Call) vmPins(zoneID int64) (activities.VMPins, error) {
	pins := activities.VMPins{ConsiderLastHost: c.Bool("considerlasthost", true)}
	if c.Has("podid") {
		p, err := c.podByUUID(c.Str("podid"))
		if err != nil {
			return pins, err
		}
		if p.ZoneID != zoneID {
			return pins, cserr.Param("Pod %s is not in the VM's zone", p.Name)
		}
		pins.PodID = p.ID
	}
	if c.Has("clusterid") {
		cl, err := c.clusterByUUID(c.Str("clusterid"))
		if err != nil {
			return pins, err
		}
		if cl.ZoneID != zoneID {
			return pins, cserr.Param("Cluster %s is not in the VM's zone", cl.Name)
		}
		pins.ClusterID = cl.ID
	}
	if c.Has("hostid") {
		h, err := c.hostByUUID(c.Str("hostid"))
		if err != nil {
			return pins, err
		}
		if h.ZoneID != zoneID || h.Type != models.HostTypeRouting {
			return pins, cserr.Param("Host %s is not a hypervisor host of the VM's zone", h.Name)
		}
		pins.HostID = h.ID
	}
	return pins, nil
}

// ---- lifecycle ----

// vmJob moves a VM into a transitional state with a guarded update (431
// when it is in none of from) and starts its job; a job that cannot start
// moves it back.
func (c *Call) vmJob(vm *models.VMInstance, from []string, to string, spec JobSpec) (*AsyncResponse, error) {
	res, err := c.S.DB.NewUpdate().Model((*models.VMInstance)(nil)).Set("state = ?", to).
		Set("update_count = update_count + 1").Set("update_time = ?", models.Now()).
		Where("id = ? AND state IN (?)", vm.ID, bun.In(from)).
		Where("NOT EXISTS (SELECT 1 FROM vm_snapshots AS b WHERE b.vm_id = ? AND b.state IN (?) AND b.removed IS NULL)", vm.ID, bun.In(models.VMSnapshotBusy)).
		Exec(c.Ctx)
	if err != nil {
		return nil, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		cur := vm.State
		_ = c.S.DB.NewSelect().Model((*models.VMInstance)(nil)).Column("state").Where("id = ?", vm.ID).Scan(c.Ctx, &cur)
		if slices.Contains(from, cur) {
			return nil, cserr.Param("Virtual machine %s has a VM snapshot operation in progress; try again when it ends", vm.Name)
		}
		return nil, vmWrongState(vm, cur, from)
	}
	spec.InstanceType, spec.InstanceUUID, spec.ResponseID = "VirtualMachine", vm.UUID, vm.UUID
	resp, err := c.StartJob(spec)
	if err != nil {
		_, _ = c.S.DB.NewUpdate().Model((*models.VMInstance)(nil)).Set("state = ?", vm.State).
			Set("update_count = update_count + 1").Where("id = ? AND state = ?", vm.ID, to).Exec(context.WithoutCancel(c.Ctx))
		return nil, err
	}
	return resp, nil
}

func vmWrongState(vm *models.VMInstance, cur string, want []string) error {
	busy := ""
	switch cur {
	case models.VMStarting, models.VMStopping, models.VMMigrating, models.VMExpunging:
		busy = " (an operation on it is in progress)"
	}
	return cserr.Param("Virtual machine %s is %s%s; this needs it %s", vm.Name, cur, busy, strings.Join(want, " or "))
}

func startVirtualMachine(c *Call) (any, error) {
	vm, _, err := c.vmToChange(c.Str("id"))
	if err != nil {
		return nil, err
	}
	pins := activities.VMPins{ConsiderLastHost: c.Bool("considerlasthost", true)}
	if c.Has("hostid") || c.Has("podid") || c.Has("clusterid") {
		if !c.Caller.IsRootAdmin() {
			return nil, cserr.New(cserr.AccountError, "Only root admins may choose the host, pod or cluster")
		}
		if pins, err = c.vmPins(vm.ZoneID); err != nil {
			return nil, err
		}
	}
	if err := c.vmPoolsUsable(vm); err != nil {
		return nil, err
	}
	return c.vmJob(vm, []string{models.VMStopped}, models.VMStarting, JobSpec{
		Workflow: workflows.StartVM, Input: workflows.VMOpInput{VMUUID: vm.UUID, Pins: pins, Actor: actorOf(c.Caller)},
		Summary: "start VM " + vm.Name,
	})
}

// vmPoolsUsable refuses to start a VM with a volume on primary storage in
// (or failing to enter) maintenance: cancelStorageMaintenance starts the
// VMs the maintenance stopped.
func (c *Call) vmPoolsUsable(vm *models.VMInstance) error {
	var row struct {
		Volume string `bun:"volume"`
		Pool   string `bun:"pool"`
		State  string `bun:"state"`
	}
	err := c.S.DB.NewSelect().TableExpr("volumes AS v").ColumnExpr("v.name AS volume, p.name AS pool, p.state AS state").
		Join("JOIN storage_pools AS p ON p.id = v.pool_id").
		Where("v.instance_id = ? AND v.removed IS NULL AND v.state NOT IN (?)", vm.ID, bun.In([]string{models.VolumeDestroy, models.VolumeExpunging, models.VolumeExpunged})).
		Where("p.state IN (?)", bun.In([]string{models.PoolPrepareForMaintenance, models.PoolMaintenance, models.PoolErrorInMaintenance, models.PoolErrorInPrepareForMaintenance})).
		Limit(1).Scan(c.Ctx, &row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	return cserr.Param("Virtual machine %s has volume %s on primary storage %s, which is %s: cancel its maintenance first", vm.Name, row.Volume, row.Pool, row.State)
}

func stopVirtualMachine(c *Call) (any, error) {
	vm, _, err := c.vmToChange(c.Str("id"))
	if err != nil {
		return nil, err
	}
	return c.vmJob(vm, []string{models.VMRunning}, models.VMStopping, JobSpec{
		Workflow: workflows.StopVM, Input: workflows.VMOpInput{VMUUID: vm.UUID, Forced: c.Bool("forced", false), Actor: actorOf(c.Caller)},
		Summary: "stop VM " + vm.Name,
	})
}

func rebootVirtualMachine(c *Call) (any, error) {
	vm, _, err := c.vmToChange(c.Str("id"))
	if err != nil {
		return nil, err
	}
	return c.vmJob(vm, []string{models.VMRunning}, models.VMStarting, JobSpec{
		Workflow: workflows.RebootVM, Input: workflows.VMOpInput{VMUUID: vm.UUID, Actor: actorOf(c.Caller)},
		Summary: "reboot VM " + vm.Name,
	})
}

func destroyVirtualMachine(c *Call) (any, error) {
	vm, _, err := c.vmToChange(c.Str("id"))
	if err != nil {
		return nil, err
	}
	if len(c.List("volumeids")) > 0 {
		return nil, cserr.New(cserr.UnsupportedAction, "volumeids: destroying data volumes with the VM is not supported; delete them after detaching")
	}
	expunge := c.Bool("expunge", false)
	if expunge && !c.Caller.IsAdmin() {
		return nil, cserr.New(cserr.AccountError, "Only admins may expunge a virtual machine")
	}
	from := []string{models.VMRunning, models.VMStopped, models.VMError, models.VMShutdown}
	return c.vmJob(vm, from, models.VMStopping, JobSpec{
		Workflow: workflows.DestroyVM, Input: workflows.VMOpInput{VMUUID: vm.UUID, Expunge: expunge, PrevState: vm.State, Actor: actorOf(c.Caller)},
		Summary: "destroy VM " + vm.Name,
	})
}

func expungeVirtualMachine(c *Call) (any, error) {
	vm, _, err := c.vmToChange(c.Str("id"))
	if err != nil {
		return nil, err
	}
	// An expunge that failed half-way is finished by expunging again.
	return c.vmJob(vm, []string{models.VMDestroyed, models.VMExpunging}, models.VMExpunging, JobSpec{
		Workflow: workflows.ExpungeVM, Input: workflows.VMOpInput{VMUUID: vm.UUID, Actor: actorOf(c.Caller)},
		Summary: "expunge VM " + vm.Name,
	})
}

func recoverVirtualMachine(c *Call) (any, error) {
	vm, _, err := c.vmToChange(c.Str("id"))
	if err != nil {
		return nil, err
	}
	if vm.State != models.VMDestroyed {
		return nil, vmWrongState(vm, vm.State, []string{models.VMDestroyed})
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if err := activities.RecoverVM(ctx, tx, vm); err != nil {
			return err
		}
		return activities.WriteEvent(ctx, tx, activities.EventInput{Actor: actorOf(c.Caller), Type: "VM.RECOVER",
			ResourceType: "VirtualMachine", ResourceUUID: vm.UUID, Description: "Recovered virtual machine " + vm.Name})
	})
	if err != nil {
		return nil, err
	}
	return c.vmObject(vm.UUID)
}

// vmObject answers a sync command with the VM as the caller lists it.
func (c *Call) vmObject(id string) (any, error) {
	var vmID int64
	if err := c.S.DB.NewSelect().Model((*models.VMInstance)(nil)).Column("id").Where("uuid = ?", id).WhereAllWithDeleted().Limit(1).Scan(c.Ctx, &vmID); err != nil {
		return nil, err
	}
	views, err := vmViews(c.Ctx, c.S.DB, []int64{vmID}, c.Caller.IsAdmin())
	if err != nil {
		return nil, err
	}
	if len(views) == 0 {
		return nil, sql.ErrNoRows
	}
	return Object{"virtualmachine": views[0]}, nil
}

func updateVirtualMachine(c *Call) (any, error) {
	vm, o, err := c.vmToChange(c.Str("id"))
	if err != nil {
		return nil, err
	}
	if err := checkUserData(c.Str("userdata")); err != nil {
		return nil, err
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		q := tx.NewUpdate().Model((*models.VMInstance)(nil)).Where("id = ?", vm.ID).
			Where("update_count = ?", vm.UpdateCount).Set("update_count = update_count + 1").Set("update_time = ?", models.Now())
		var changed []string
		if c.Has("displayname") {
			q, changed = q.Set("display_name = ?", c.Str("displayname")), append(changed, "displayname")
		}
		if c.Has("name") && c.Str("name") != vm.Name {
			name := c.Str("name")
			if err := checkVMName(name); err != nil {
				return err
			}
			if vm.State != models.VMStopped {
				return cserr.Param("Virtual machine %s must be Stopped to change its name; it is %s", vm.Name, vm.State)
			}
			var netIDs []int64
			if err := tx.NewSelect().Model((*models.Nic)(nil)).Column("network_id").Where("instance_id = ?", vm.ID).Scan(ctx, &netIDs); err != nil {
				return err
			}
			taken, err := vmNameTaken(ctx, tx, o.Account.ID, netIDs, name, vm.ID)
			if err != nil {
				return err
			}
			if taken {
				return cserr.Param("A virtual machine named %s already exists in account %s or on one of its networks", name, o.Account.Name)
			}
			q = q.Set("name = ?", name).Set("host_name = ?", name).Where("state = ?", models.VMStopped)
			changed = append(changed, "name")
		}
		if c.Has("userdata") {
			q, changed = q.Set("user_data = ?", c.Str("userdata")), append(changed, "userdata")
		}
		if b := c.BoolPtr("haenable"); b != nil {
			q, changed = q.Set("ha_enabled = ?", *b), append(changed, "haenable")
		}
		if b := c.BoolPtr("displayvm"); b != nil {
			q, changed = q.Set("display_vm = ?", *b), append(changed, "displayvm")
		}
		if c.Has("ostypeid") {
			os, err := c.osTypeByUUID(tx, c.Str("ostypeid"))
			if err != nil {
				return err
			}
			q, changed = q.Set("os_type_id = ?", os.ID), append(changed, "ostypeid")
		}
		if len(changed) == 0 {
			return nil
		}
		res, err := q.Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return cserr.Param("Virtual machine %s changed meanwhile; try again", vm.Name)
		}
		return activities.WriteEvent(ctx, tx, activities.EventInput{Actor: actorOf(c.Caller), Type: "VM.UPDATE",
			ResourceType: "VirtualMachine", ResourceUUID: vm.UUID, Description: "Updated virtual machine " + vm.Name + ": " + strings.Join(changed, ", ")})
	})
	if err != nil {
		return nil, err
	}
	return c.vmObject(vm.UUID)
}

func scaleVirtualMachine(c *Call) (any, error) {
	vm, _, err := c.vmToChange(c.Str("id"))
	if err != nil {
		return nil, err
	}
	if vm.State != models.VMStopped {
		return nil, cserr.Param("Virtual machine %s is %s: only a Stopped VM can be scaled (dynamic scaling is not supported)", vm.Name, vm.State)
	}
	so, err := c.serviceOfferingByUUID(c.Str("serviceofferingid"))
	if err != nil {
		return nil, err
	}
	if so.ID == vm.ServiceOfferingID && !so.Customized {
		return nil, cserr.Param("Virtual machine %s already has service offering %s", vm.Name, so.Name)
	}
	if err := c.usableOffering(so, vm.ZoneID); err != nil {
		return nil, err
	}
	cpu, mhz, mem, err := c.offeringShape(so)
	if err != nil {
		return nil, err
	}
	var old models.ServiceOffering
	_ = c.S.DB.NewSelect().Model(&old).Column("name").Where("id = ?", vm.ServiceOfferingID).WhereAllWithDeleted().Limit(1).Scan(c.Ctx)
	// The change is one guarded update (the VM must still be Stopped, and
	// unchanged); the counts move with it. The job records it.
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewUpdate().Model((*models.VMInstance)(nil)).
			Set("service_offering_id = ?", so.ID).Set("cpu = ?", cpu).Set("speed = ?", mhz).Set("ram_size = ?", mem).
			Set("ha_enabled = ?", so.HAEnabled).Set("update_count = update_count + 1").Set("update_time = ?", models.Now()).
			Where("id = ? AND state = ? AND update_count = ?", vm.ID, models.VMStopped, vm.UpdateCount).Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return cserr.Param("Virtual machine %s changed meanwhile (it must be Stopped); try again", vm.Name)
		}
		up := map[string]int64{models.ResourceCPU: int64(cpu - vm.CPU), models.ResourceMemory: int64(mem - vm.RAMSize)}
		grow, shrink := map[string]int64{}, map[string]int64{}
		for k, d := range up {
			if d > 0 {
				grow[k] = d
			} else if d < 0 {
				shrink[k] = -d
			}
		}
		if err := activities.ReserveCounts(ctx, tx, vm.AccountID, grow); err != nil {
			return err
		}
		return activities.ReleaseCounts(ctx, tx, vm.AccountID, shrink)
	})
	if err != nil {
		return nil, err
	}
	return c.StartJob(JobSpec{
		Workflow: workflows.ScaleVM,
		Input: workflows.VMOpInput{VMUUID: vm.UUID, Actor: actorOf(c.Caller),
			Description: fmt.Sprintf("Scaled virtual machine %s from %s to %s (%d x %d MHz, %d MiB)", vm.Name, old.Name, so.Name, cpu, mhz, mem)},
		InstanceType: "VirtualMachine", InstanceUUID: vm.UUID, ResponseID: vm.UUID, Summary: "scale VM " + vm.Name,
	})
}

// migrationTargets are the hosts of a running VM's cluster other than its
// own, each with whether it can take the VM now.
func (c *Call) migrationTargets(vm *models.VMInstance) ([]hostRow, map[int64]bool, error) {
	var cur models.Host
	if err := c.S.DB.NewSelect().Model(&cur).Where("id = ?", vm.HostID).WhereAllWithDeleted().Limit(1).Scan(c.Ctx); err != nil {
		return nil, nil, err
	}
	var rows []hostRow
	if err := selectHosts(c.S.DB, &rows).Where("host.cluster_id = ? AND host.id <> ? AND host.type = ?", cur.ClusterID, cur.ID, models.HostTypeRouting).
		Order("host.id").Scan(c.Ctx); err != nil {
		return nil, nil, err
	}
	fits := map[int64]bool{}
	need, mem := int64(vm.CPU)*int64(vm.Speed), int64(vm.RAMSize)<<20
	for _, r := range rows {
		h := &r.Host
		cpuCap := float64(int64(h.CPUs)*int64(h.Speed)) * r.CPURatio
		memCap := float64(h.RAM) * r.MemRatio
		fits[h.ID] = h.State == models.HostUp && h.ResourceState == models.ResourceEnabled &&
			float64(h.CPUAllocated+need) <= cpuCap && float64(h.MemAllocated+mem) <= memCap &&
			h.CPUs >= vm.CPU && h.Speed >= vm.Speed
	}
	return rows, fits, nil
}

// HostForMigrationView is a host findHostsForMigration lists (the SDK's
// HostForMigration: memoryallocated is a percentage there).
type HostForMigrationView struct {
	HostView
	MemoryAllocated       string `json:"memoryallocated"`
	RequiresStorageMotion bool   `json:"requiresStorageMotion"`
}

func findHostsForMigration(c *Call) (any, error) {
	vm, _, err := c.vmToChange(c.Str("virtualmachineid"))
	if err != nil {
		return nil, err
	}
	if vm.State != models.VMRunning || vm.HostID == 0 {
		return nil, vmWrongState(vm, vm.State, []string{models.VMRunning})
	}
	rows, fits, err := c.migrationTargets(vm)
	if err != nil {
		return nil, err
	}
	if kw := strings.ToLower(c.Str("keyword")); kw != "" {
		kept := rows[:0]
		for _, r := range rows {
			if strings.Contains(strings.ToLower(r.Name), kw) {
				kept = append(kept, r)
			}
		}
		rows = kept
	}
	sort.SliceStable(rows, func(i, j int) bool { return fits[rows[i].ID] && !fits[rows[j].ID] })
	total := len(rows)
	start, end := c.pageOf(total)
	views, err := c.S.hostViews(c.Ctx, rows[start:end])
	if err != nil {
		return nil, err
	}
	out := make([]HostForMigrationView, len(views))
	for i, v := range views {
		ok := fits[rows[start+i].ID]
		v.SuitableForMigration, v.HasEnoughCapacity = ok, ok
		out[i] = HostForMigrationView{HostView: v, MemoryAllocated: v.MemoryAllocatedPercentage}
	}
	return List{Key: "host", Count: total, Items: out}, nil
}

func migrateVirtualMachine(c *Call) (any, error) {
	vm, _, err := c.vmToChange(c.Str("virtualmachineid"))
	if err != nil {
		return nil, err
	}
	if c.Has("storageid") {
		return nil, cserr.New(cserr.UnsupportedAction, "storageid: migrating a VM's storage is not supported")
	}
	if vm.State != models.VMRunning || vm.HostID == 0 {
		return nil, cserr.Param("Virtual machine %s is %s: only a Running VM can be migrated (live, within its cluster)", vm.Name, vm.State)
	}
	if activities.VMSnapshotsBlockMigration(vm.HypervisorType) {
		if err := c.noVMSnapshots(vm.ID, "migrate the virtual machine"); err != nil {
			return nil, err
		}
	}
	rows, fits, err := c.migrationTargets(vm)
	if err != nil {
		return nil, err
	}
	var target *hostRow
	if c.Has("hostid") {
		h, err := c.hostByUUID(c.Str("hostid"))
		if err != nil {
			return nil, err
		}
		if h.ID == vm.HostID {
			return nil, cserr.Param("Virtual machine %s already runs on host %s", vm.Name, h.Name)
		}
		for i := range rows {
			if rows[i].ID == h.ID {
				target = &rows[i]
			}
		}
		if target == nil {
			return nil, cserr.Param("Host %s is not in the cluster of virtual machine %s: live migration stays within a cluster", h.Name, vm.Name)
		}
		if target.State != models.HostUp || target.ResourceState != models.ResourceEnabled {
			return nil, cserr.Param("Host %s is %s/%s: it takes no virtual machines", h.Name, target.State, target.ResourceState)
		}
	} else {
		for i := range rows {
			if fits[rows[i].ID] && (target == nil || rows[i].RAM-rows[i].MemAllocated > target.RAM-target.MemAllocated) {
				target = &rows[i]
			}
		}
		if target == nil {
			return nil, cserr.Capacity("No other host of the cluster of virtual machine %s can take it", vm.Name)
		}
	}
	return c.vmJob(vm, []string{models.VMRunning}, models.VMMigrating, JobSpec{
		Workflow: workflows.MigrateVM,
		Input:    workflows.VMOpInput{VMUUID: vm.UUID, TargetHostUUID: target.UUID, Actor: actorOf(c.Caller)},
		Summary:  "migrate VM " + vm.Name + " to host " + target.Name,
	})
}

// ---- list ----

func listVirtualMachines(c *Call) (any, error) {
	if c.Has("projectid") {
		return List{Key: "virtualmachine"}, nil
	}
	scope, err := c.Visibility()
	if err != nil {
		return nil, err
	}
	admin := c.Caller.IsAdmin()
	// The filters select ids only: the page is found in an index (a deep
	// page skips index entries, not whole rows), then vmViews reads its
	// rows by id.
	q := c.S.DB.NewSelect().Model((*models.VMInstance)(nil)).Column("vm_instance.id").Where("vm_instance.type = ?", models.VMTypeUser).
		Apply(scope.Modifier("vm_instance.account_id", "vm_instance.domain_id"))
	if c.Has("id") {
		q = q.Where("vm_instance.uuid = ?", c.Str("id"))
	}
	if ids := c.List("ids"); len(ids) > 0 {
		q = q.Where("vm_instance.uuid IN (?)", bun.In(ids))
	}
	if c.Has("name") {
		q = q.Where("LOWER(vm_instance.name) LIKE ? ESCAPE '!'", "%"+likeEscape(strings.ToLower(c.Str("name")))+"%")
	}
	if kw := c.Str("keyword"); kw != "" {
		pat := "%" + likeEscape(strings.ToLower(kw)) + "%"
		q = q.WhereGroup(" AND ", func(q *bun.SelectQuery) *bun.SelectQuery {
			q = q.Where("LOWER(vm_instance.name) LIKE ? ESCAPE '!'", pat).WhereOr("LOWER(vm_instance.display_name) LIKE ? ESCAPE '!'", pat)
			if admin {
				q = q.WhereOr("LOWER(vm_instance.instance_name) LIKE ? ESCAPE '!'", pat)
			}
			return q
		})
	}
	if c.Has("state") {
		q = q.Where("LOWER(vm_instance.state) = ?", strings.ToLower(c.Str("state")))
	} else if !admin {
		// CloudStack hides destroyed VMs from users.
		q = q.Where("vm_instance.state NOT IN (?)", bun.In([]string{models.VMDestroyed, models.VMExpunging}))
	}
	byUUID := func(param, col, table string) {
		if c.Has(param) {
			q = q.Where("? IN (SELECT id FROM ? WHERE uuid = ?)", bun.Ident(col), bun.Ident(table), c.Str(param))
		}
	}
	byUUID("zoneid", "vm_instance.zone_id", "zones")
	byUUID("templateid", "vm_instance.template_id", "vm_templates")
	byUUID("isoid", "vm_instance.iso_id", "vm_templates")
	byUUID("serviceofferingid", "vm_instance.service_offering_id", "service_offerings")
	byUUID("userid", "vm_instance.user_id", "users")
	if admin {
		byUUID("podid", "vm_instance.pod_id", "pods")
		byUUID("clusterid", "vm_instance.cluster_id", "clusters")
		byUUID("hostid", "vm_instance.host_id", "hosts")
		if c.Has("storageid") {
			q = q.Where("vm_instance.id IN (SELECT v.instance_id FROM volumes AS v JOIN storage_pools AS sp ON sp.id = v.pool_id WHERE sp.uuid = ? AND v.removed IS NULL)", c.Str("storageid"))
		}
	}
	if c.Has("networkid") {
		q = q.Where("vm_instance.id IN (SELECT n.instance_id FROM nics AS n JOIN networks AS nw ON nw.id = n.network_id WHERE nw.uuid = ? AND n.removed IS NULL)", c.Str("networkid"))
	}
	if c.Has("affinitygroupid") {
		q = q.Where("vm_instance.id IN (SELECT m.instance_id FROM affinity_group_vm_map AS m JOIN affinity_groups AS g ON g.id = m.affinity_group_id WHERE g.uuid = ?)", c.Str("affinitygroupid"))
	}
	if c.Has("keypair") {
		q = q.Where("CONCAT(',', vm_instance.keypairs, ',') LIKE ? ESCAPE '!'", "%,"+likeEscape(c.Str("keypair"))+",%")
	}
	if c.Has("hypervisor") {
		q = q.Where("LOWER(vm_instance.hypervisor_type) = ?", strings.ToLower(c.Str("hypervisor")))
	}
	if b := c.BoolPtr("haenable"); b != nil {
		q = q.Where("vm_instance.ha_enabled = ?", *b)
	}
	if b := c.BoolPtr("displayvm"); b != nil {
		q = q.Where("vm_instance.display_vm = ?", *b)
	} else if !admin {
		q = q.Where("vm_instance.display_vm = ?", true)
	}
	for _, t := range c.Map("tags") {
		q = q.Where("vm_instance.uuid IN (SELECT resource_uuid FROM resource_tags WHERE resource_type = ? AND tag_key = ? AND tag_value = ?)", "UserVm", t["key"], t["value"])
	}
	// The total is counted while the page is read and rendered.
	type counted struct {
		n   int
		err error
	}
	total := make(chan counted, 1)
	countQ := q.Clone()
	go func() {
		n, err := countQ.Count(c.Ctx)
		total <- counted{int(n), err}
	}()
	var ids []int64
	limit, offset := c.Page()
	err = q.Order("vm_instance.id").Limit(int64(limit)).Offset(int64(offset)).Scan(c.Ctx, &ids)
	var views []VMView
	if err == nil {
		views, err = vmViews(c.Ctx, c.S.DB, ids, admin)
	}
	if err == nil && c.Bool("userdata", false) {
		// User data (up to 1 MiB a VM) is shown only when asked for, as
		// CloudStack does (userdata=true): else it is not read either.
		err = vmUserData(c.Ctx, c.S.DB, views)
	}
	t := <-total
	switch {
	case err != nil:
		return nil, err
	case t.err != nil:
		return nil, t.err
	case t.n == 0:
		return List{Key: "virtualmachine"}, nil
	}
	return vmList{Count: t.n, VirtualMachine: views}, nil
}

// vmList is listVirtualMachines' answer, encoded in one pass (see hostList).
type vmList struct {
	Count          int      `json:"count"`
	VirtualMachine []VMView `json:"virtualmachine"`
}

// vmUserData fills the views' user data, read by the VMs' UUIDs.
func vmUserData(ctx context.Context, db bun.IDB, views []VMView) error {
	if len(views) == 0 {
		return nil
	}
	uuids := make([]string, len(views))
	for i := range views {
		uuids[i] = views[i].ID
	}
	var rows []models.VMInstance
	if err := db.NewSelect().Model(&rows).Column("uuid", "user_data").Where("uuid IN (?)", bun.In(uuids)).Scan(ctx); err != nil {
		return err
	}
	byUUID := make(map[string]string, len(rows))
	for _, r := range rows {
		byUUID[r.UUID] = r.UserData
	}
	for i := range views {
		views[i].UserData = byUUID[views[i].ID]
	}
	return nil
}
