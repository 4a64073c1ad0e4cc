package models

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/migrate"
)

// Tables lists every model; the first migration creates them all. Add a new
// model here only before a release; afterwards add a migration below.
func Tables() []any {
	return []any{
		(*Region)(nil),
		(*Domain)(nil),
		(*Account)(nil),
		(*User)(nil),
		(*Role)(nil),
		(*RolePermission)(nil),
		(*Session)(nil),
		(*Configuration)(nil),
		(*AsyncJob)(nil),
		(*Event)(nil),
		// datacenter.go
		(*Zone)(nil),
		(*Pod)(nil),
		(*Cluster)(nil),
		(*ClusterDetail)(nil),
		(*Host)(nil),
		(*HostDetail)(nil),
		(*HostTag)(nil),
		(*OutOfBandManagement)(nil), // oobm.go
		(*ZoneDetail)(nil),
		// storage.go
		(*StoragePool)(nil),
		(*StoragePoolTag)(nil),
		(*ImageStore)(nil),
		(*ImageStoreDetail)(nil),
		(*Volume)(nil),
		(*Snapshot)(nil),
		(*SnapshotStoreRef)(nil),
		(*SnapshotPolicy)(nil),
		(*StoragePoolWork)(nil),
		(*PoolOrphan)(nil),
		(*VMSnapshot)(nil), // vmsnapshot.go
		// network.go
		(*PhysicalNetwork)(nil),
		(*PhysicalNetworkTrafficType)(nil),
		(*PhysicalNetworkServiceProvider)(nil),
		(*Vlan)(nil),
		(*IPAddress)(nil),
		(*StorageNetworkIPRange)(nil),
		(*StorageNetworkIPAddress)(nil),
		(*PodIPAddress)(nil),
		(*GuestVnet)(nil),
		(*Network)(nil),
		(*Nic)(nil),
		(*FirewallRule)(nil),
		(*PortForwardingRule)(nil),
		(*LoadBalancingRule)(nil),
		(*LoadBalancerVMMap)(nil),
		// catalog.go
		(*OSCategory)(nil),
		(*OSType)(nil),
		(*Template)(nil),
		(*TemplateStoreRef)(nil),
		(*TemplatePoolRef)(nil),
		(*TemplateZoneRef)(nil),
		(*ServiceOffering)(nil),
		(*DiskOffering)(nil),
		(*NetworkOffering)(nil),
		(*NetworkOfferingService)(nil),
		// compute.go
		(*VMInstance)(nil),
		(*SSHKeyPair)(nil),
		(*AffinityGroup)(nil),
		(*AffinityGroupVMMap)(nil),
		(*ResourceTag)(nil),
		// accounting.go
		(*UsageRecord)(nil),
		(*UsageEvent)(nil),
		(*Capacity)(nil),
		(*ResourceLimit)(nil),
		(*ResourceCount)(nil),
		(*Alert)(nil),
		(*ManagementServer)(nil),
	}
}

// Index is a secondary index created by the first migration.
type Index struct {
	Table   string
	Name    string
	Columns []string
	Unique  bool
}

// Indexes lists the secondary indexes: the columns lists and lookups filter on.
func Indexes() []Index {
	return []Index{
		{"domains", "idx_domains_parent", []string{"parent_id"}, false},
		{"accounts", "idx_accounts_domain_name", []string{"domain_id", "name"}, false},
		{"users", "idx_users_account", []string{"account_id"}, false},
		{"users", "idx_users_username", []string{"username"}, false},
		{"role_permissions", "idx_role_permissions_role", []string{"role_id", "sort_order"}, false},
		{"async_jobs", "idx_async_jobs_account", []string{"account_id", "created"}, false},
		{"async_jobs", "idx_async_jobs_instance", []string{"instance_uuid"}, false},
		{"events", "idx_events_account", []string{"account_id", "created"}, false},
		{"events", "idx_events_domain", []string{"domain_id", "created"}, false},

		// Datacenter: the planner walks zone > pod > cluster > host.
		{"pods", "idx_pods_zone", []string{"zone_id"}, false},
		{"clusters", "idx_clusters_zone", []string{"zone_id"}, false},
		{"clusters", "idx_clusters_pod", []string{"pod_id"}, false},
		{"cluster_details", "uq_cluster_details_name", []string{"cluster_id", "name"}, true},
		{"hosts", "idx_hosts_cluster_state", []string{"cluster_id", "state", "resource_state"}, false},
		{"hosts", "idx_hosts_zone_type", []string{"zone_id", "type"}, false},
		// A placement reads a zone's hosts by allocated memory, and its
		// largest host's memory (activities.hostsWithMostRoom).
		{"hosts", "idx_hosts_zone_type_mem_allocated", []string{"zone_id", "type", "mem_allocated"}, false},
		{"hosts", "idx_hosts_zone_type_ram", []string{"zone_id", "type", "ram"}, false},
		{"hosts", "idx_hosts_pod", []string{"pod_id"}, false},
		{"hosts", "idx_hosts_state_ping", []string{"state", "last_ping"}, false},
		{"hosts", "idx_hosts_mgmt_server", []string{"mgmt_server_id"}, false},
		{"host_details", "uq_host_details_name", []string{"host_id", "name"}, true},
		{"host_tags", "uq_host_tags_host_tag", []string{"host_id", "tag"}, true},
		{"host_tags", "idx_host_tags_tag", []string{"tag"}, false},
		{"zone_details", "uq_zone_details_name", []string{"zone_id", "name"}, true},

		// Storage.
		{"storage_pools", "idx_storage_pools_cluster_state", []string{"cluster_id", "state"}, false},
		{"storage_pools", "idx_storage_pools_zone_scope", []string{"zone_id", "scope"}, false},
		{"storage_pools", "idx_storage_pools_pod", []string{"pod_id"}, false},
		{"storage_pools", "idx_storage_pools_host", []string{"host_id"}, false},
		{"storage_pool_tags", "uq_storage_pool_tags_pool_tag", []string{"pool_id", "tag"}, true},
		{"storage_pool_tags", "idx_storage_pool_tags_tag", []string{"tag"}, false},
		{"storage_pool_work", "uq_storage_pool_work_pool_vm", []string{"pool_id", "vm_id"}, true},
		{"pool_orphans", "uq_pool_orphans_pool_path", []string{"pool_id", "path"}, true},
		{"image_stores", "idx_image_stores_zone_role", []string{"zone_id", "role"}, false},
		{"image_store_details", "uq_image_store_details_name", []string{"store_id", "name"}, true},
		{"volumes", "idx_volumes_instance", []string{"instance_id", "device_id"}, false},
		{"volumes", "idx_volumes_pool_state", []string{"pool_id", "state"}, false},
		{"volumes", "idx_volumes_zone_state", []string{"zone_id", "state"}, false},
		{"volumes", "idx_volumes_account", []string{"account_id", "state"}, false},
		{"volumes", "idx_volumes_domain", []string{"domain_id"}, false},
		{"volumes", "idx_volumes_state_updated", []string{"state", "updated"}, false},
		{"volumes", "idx_volumes_template", []string{"template_id"}, false},
		{"volumes", "idx_volumes_disk_offering", []string{"disk_offering_id"}, false},
		{"snapshots", "idx_snapshots_volume", []string{"volume_id", "state"}, false},
		{"snapshots", "idx_snapshots_account", []string{"account_id", "state"}, false},
		{"snapshots", "idx_snapshots_domain", []string{"domain_id"}, false},
		{"snapshots", "idx_snapshots_zone", []string{"zone_id"}, false},
		{"snapshots", "idx_snapshots_policy", []string{"policy_id"}, false},
		{"snapshot_store_refs", "idx_snapshot_store_refs_snapshot", []string{"snapshot_id", "store_role"}, false},
		{"snapshot_store_refs", "idx_snapshot_store_refs_store", []string{"store_id", "store_role"}, false},
		{"snapshot_store_refs", "idx_snapshot_store_refs_volume", []string{"volume_id"}, false},
		{"snapshot_policies", "idx_snapshot_policies_volume", []string{"volume_id"}, false},

		// Network.
		{"physical_networks", "idx_physical_networks_zone", []string{"zone_id"}, false},
		{"physical_network_traffic_types", "uq_pn_traffic_types", []string{"physical_network_id", "traffic_type"}, true},
		{"physical_network_service_providers", "uq_pn_service_providers", []string{"physical_network_id", "provider_name"}, true},
		{"vlans", "idx_vlans_zone_type", []string{"zone_id", "vlan_type"}, false},
		{"vlans", "idx_vlans_pod", []string{"pod_id"}, false},
		{"vlans", "idx_vlans_physical_network", []string{"physical_network_id"}, false},
		{"vlans", "idx_vlans_network", []string{"network_id"}, false},
		{"vlans", "idx_vlans_account", []string{"account_id"}, false},
		{"vlans", "idx_vlans_domain", []string{"domain_id"}, false},
		{"ip_addresses", "uq_ip_addresses_vlan_address", []string{"vlan_id", "public_ip_address"}, true},
		{"ip_addresses", "idx_ip_addresses_vlan_state", []string{"vlan_id", "state"}, false},
		{"ip_addresses", "idx_ip_addresses_zone_address", []string{"zone_id", "public_ip_address"}, false},
		{"ip_addresses", "idx_ip_addresses_zone_state", []string{"zone_id", "state"}, false},
		{"ip_addresses", "idx_ip_addresses_account", []string{"account_id"}, false},
		{"ip_addresses", "idx_ip_addresses_domain", []string{"domain_id"}, false},
		{"ip_addresses", "idx_ip_addresses_network", []string{"network_id"}, false},
		{"ip_addresses", "idx_ip_addresses_source_network", []string{"source_network_id", "state"}, false},
		{"ip_addresses", "idx_ip_addresses_instance", []string{"instance_id"}, false},
		{"storage_network_ip_ranges", "idx_storage_network_ip_ranges_pod", []string{"pod_id"}, false},
		{"storage_network_ip_ranges", "idx_storage_network_ip_ranges_zone", []string{"zone_id"}, false},
		{"op_dc_storage_network_ip_address", "uq_storage_network_ip_address", []string{"range_id", "ip_address"}, true},
		{"op_dc_storage_network_ip_address", "idx_storage_network_ip_taken", []string{"range_id", "taken"}, false},
		{"op_dc_storage_network_ip_address", "idx_storage_network_ip_nic", []string{"nic_id"}, false},
		// Pod management addresses are unique across the cloud (DESIGN.md).
		{"op_dc_ip_address_alloc", "uq_op_dc_ip_address", []string{"ip_address"}, true},
		{"op_dc_ip_address_alloc", "idx_op_dc_ip_pod_taken", []string{"pod_id", "taken"}, false},
		{"op_dc_ip_address_alloc", "idx_op_dc_ip_zone", []string{"zone_id"}, false},
		{"op_dc_ip_address_alloc", "idx_op_dc_ip_nic", []string{"nic_id"}, false},
		{"op_dc_ip_address_alloc", "idx_op_dc_ip_instance", []string{"instance_id"}, false},
		{"op_dc_vnet_alloc", "uq_op_dc_vnet", []string{"physical_network_id", "vnet"}, true},
		{"op_dc_vnet_alloc", "idx_op_dc_vnet_taken", []string{"physical_network_id", "taken"}, false},
		{"op_dc_vnet_alloc", "idx_op_dc_vnet_zone", []string{"zone_id"}, false},
		{"op_dc_vnet_alloc", "idx_op_dc_vnet_network", []string{"network_id"}, false},
		{"networks", "idx_networks_zone_state", []string{"zone_id", "state"}, false},
		{"networks", "idx_networks_account", []string{"account_id", "state"}, false},
		{"networks", "idx_networks_domain", []string{"domain_id"}, false},
		{"networks", "idx_networks_physical_network", []string{"physical_network_id"}, false},
		{"networks", "idx_networks_offering", []string{"network_offering_id"}, false},
		{"networks", "idx_networks_state", []string{"state"}, false},
		{"nics", "idx_nics_instance", []string{"instance_id", "device_id"}, false},
		{"nics", "idx_nics_network_state", []string{"network_id", "state"}, false},
		{"nics", "idx_nics_network_ip4", []string{"network_id", "ip4_address"}, false},
		{"firewall_rules", "idx_firewall_rules_ip_purpose", []string{"ip_address_id", "purpose"}, false},
		{"firewall_rules", "idx_firewall_rules_network", []string{"network_id", "purpose"}, false},
		{"firewall_rules", "idx_firewall_rules_account", []string{"account_id"}, false},
		{"firewall_rules", "idx_firewall_rules_domain", []string{"domain_id"}, false},
		{"firewall_rules", "idx_firewall_rules_state", []string{"state"}, false},
		{"port_forwarding_rules", "idx_port_forwarding_rules_instance", []string{"instance_id"}, false},
		{"load_balancer_vm_map", "uq_load_balancer_vm_map", []string{"load_balancer_id", "instance_id"}, true},
		{"load_balancer_vm_map", "idx_load_balancer_vm_map_instance", []string{"instance_id"}, false},

		// Catalog.
		{"os_types", "idx_os_types_category", []string{"category_id"}, false},
		{"vm_templates", "idx_vm_templates_account", []string{"account_id", "state"}, false},
		{"vm_templates", "idx_vm_templates_domain", []string{"domain_id"}, false},
		{"vm_templates", "idx_vm_templates_public", []string{"public", "featured"}, false},
		{"vm_templates", "idx_vm_templates_type", []string{"type", "format"}, false},
		{"vm_templates", "idx_vm_templates_os_type", []string{"os_type_id"}, false},
		{"template_store_refs", "uq_template_store_refs", []string{"store_id", "template_id"}, true},
		{"template_store_refs", "idx_template_store_refs_template", []string{"template_id", "download_state"}, false},
		{"template_store_refs", "idx_template_store_refs_zone", []string{"zone_id"}, false},
		{"template_pool_refs", "uq_template_pool_refs", []string{"pool_id", "template_id"}, true},
		{"template_pool_refs", "idx_template_pool_refs_template", []string{"template_id"}, false},
		{"template_zone_refs", "uq_template_zone_refs", []string{"zone_id", "template_id"}, true},
		{"template_zone_refs", "idx_template_zone_refs_template", []string{"template_id"}, false},
		{"service_offerings", "idx_service_offerings_state", []string{"state", "system_use"}, false},
		{"disk_offerings", "idx_disk_offerings_state", []string{"state", "system_use"}, false},
		{"network_offerings", "idx_network_offerings_state", []string{"state", "guest_type"}, false},
		{"network_offering_services", "uq_network_offering_services", []string{"network_offering_id", "service", "provider"}, true},

		// Compute and tenant objects.
		{"vm_instances", "idx_vm_instances_zone_state", []string{"zone_id", "state"}, false},
		{"vm_instances", "idx_vm_instances_host_state", []string{"host_id", "state"}, false},
		{"vm_instances", "idx_vm_instances_last_host", []string{"last_host_id"}, false},
		{"vm_instances", "idx_vm_instances_pod", []string{"pod_id"}, false},
		{"vm_instances", "idx_vm_instances_cluster", []string{"cluster_id"}, false},
		{"vm_instances", "idx_vm_instances_account_state", []string{"account_id", "state"}, false},
		{"vm_instances", "idx_vm_instances_domain", []string{"domain_id"}, false},
		{"vm_instances", "idx_vm_instances_state_updated", []string{"state", "update_time"}, false},
		{"vm_instances", "idx_vm_instances_instance_name", []string{"instance_name"}, false},
		{"vm_instances", "idx_vm_instances_name", []string{"name"}, false},
		{"vm_instances", "idx_vm_instances_template", []string{"template_id"}, false},
		{"vm_instances", "idx_vm_instances_iso", []string{"iso_id"}, false},
		{"vm_instances", "idx_vm_instances_service_offering", []string{"service_offering_id"}, false},
		// listVirtualMachines pages an admin's listall through this index alone.
		{"vm_instances", "idx_vm_instances_type_removed", []string{"type", "removed"}, false},
		{"ssh_keypairs", "uq_ssh_keypairs_account_name", []string{"account_id", "keypair_name"}, true},
		{"ssh_keypairs", "idx_ssh_keypairs_domain", []string{"domain_id"}, false},
		{"ssh_keypairs", "idx_ssh_keypairs_fingerprint", []string{"fingerprint"}, false},
		{"affinity_groups", "uq_affinity_groups_account_name", []string{"account_id", "name"}, true},
		{"affinity_groups", "idx_affinity_groups_domain", []string{"domain_id"}, false},
		{"affinity_group_vm_map", "uq_affinity_group_vm_map", []string{"affinity_group_id", "instance_id"}, true},
		{"affinity_group_vm_map", "idx_affinity_group_vm_map_instance", []string{"instance_id"}, false},
		{"vm_snapshots", "idx_vm_snapshots_vm_state", []string{"vm_id", "state"}, false},
		{"vm_snapshots", "idx_vm_snapshots_account", []string{"account_id"}, false},
		{"vm_snapshots", "idx_vm_snapshots_domain", []string{"domain_id"}, false},
		{"resource_tags", "uq_resource_tags_key", []string{"resource_type", "resource_uuid", "tag_key"}, true},
		{"resource_tags", "idx_resource_tags_resource", []string{"resource_uuid"}, false},
		{"resource_tags", "idx_resource_tags_account", []string{"account_id"}, false},
		{"resource_tags", "idx_resource_tags_domain", []string{"domain_id"}, false},

		// Accounting and operations.
		{"usage_records", "idx_usage_records_account", []string{"account_id", "start_date"}, false},
		{"usage_records", "idx_usage_records_domain", []string{"domain_id", "start_date"}, false},
		{"usage_records", "idx_usage_records_zone", []string{"zone_id", "start_date"}, false},
		{"usage_records", "idx_usage_records_type", []string{"usage_type", "start_date"}, false},
		{"usage_events", "idx_usage_events_processed", []string{"processed", "created"}, false},
		{"usage_events", "idx_usage_events_account", []string{"account_id", "created"}, false},
		{"op_host_capacity", "uq_op_host_capacity_host_type", []string{"host_id", "capacity_type"}, true},
		{"op_host_capacity", "idx_op_host_capacity_zone", []string{"zone_id", "capacity_type"}, false},
		{"op_host_capacity", "idx_op_host_capacity_pod", []string{"pod_id", "capacity_type"}, false},
		{"op_host_capacity", "idx_op_host_capacity_cluster", []string{"cluster_id", "capacity_type"}, false},
		// One limit/count per (account, type) and per (domain, type): the
		// other owner column is NULL, and NULLs never collide in a unique index.
		{"resource_limits", "uq_resource_limits_account", []string{"account_id", "type"}, true},
		{"resource_limits", "uq_resource_limits_domain", []string{"domain_id", "type"}, true},
		{"resource_counts", "uq_resource_counts_account", []string{"account_id", "type"}, true},
		{"resource_counts", "uq_resource_counts_domain", []string{"domain_id", "type"}, true},
		{"alerts", "idx_alerts_archived", []string{"archived", "created"}, false},
		{"alerts", "idx_alerts_zone", []string{"zone_id"}, false},
		{"alerts", "idx_alerts_type", []string{"type"}, false},
		{"management_servers", "idx_management_servers_state", []string{"state", "last_heartbeat"}, false},
	}
}

// migrations is the ordered list; each lives in a file named
// <14-digit version>_<name>.go that registers itself in init (bun derives the
// name from the file), and they apply in version order.
var migrations = migrate.NewMigrations()

func createSchema(ctx context.Context, db *bun.DB) error {
	for _, m := range Tables() {
		if _, err := db.NewCreateTable().Model(m).IfNotExists().Exec(ctx); err != nil {
			return fmt.Errorf("create table for %T: %w", m, err)
		}
	}
	for _, ix := range Indexes() {
		q := db.NewCreateIndex().Table(ix.Table).Index(ix.Name).Column(ix.Columns...)
		if ix.Unique {
			q = q.Unique()
		}
		if _, err := q.Exec(ctx); err != nil && !alreadyExists(err) {
			return fmt.Errorf("create index %s: %w", ix.Name, err)
		}
	}
	return nil
}

func alreadyExists(err error) bool {
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "already exists") || strings.Contains(s, "duplicate key name")
}

// Migrate applies every pending migration under the migration lock. Several
// processes may call it at once: the losers wait for the lock, then find
// nothing left to do. It returns the names of the migrations it applied.
func Migrate(ctx context.Context, db *bun.DB) ([]string, error) {
	m := migrate.NewMigrator(db, migrations,
		migrate.WithTableName("nimbus_migrations"),
		migrate.WithLocksTableName("nimbus_migration_locks"),
		migrate.WithMarkAppliedOnSuccess(true))
	if err := m.Init(ctx); err != nil {
		return nil, fmt.Errorf("migrate init: %w", err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		err := m.Lock(ctx)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("migration lock still held after 2 minutes (if no migration runs, delete the row in nimbus_migration_locks): %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	defer m.Unlock(context.WithoutCancel(ctx)) //nolint:errcheck
	group, err := m.Migrate(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	var names []string
	for _, mg := range group.Migrations {
		names = append(names, mg.Name)
	}
	if err := Seed(ctx, db); err != nil {
		return names, fmt.Errorf("seed: %w", err)
	}
	return names, nil
}

// Pending returns the names of migrations not yet applied, so that server
// and worker can refuse to run on an old schema with a clear message.
func Pending(ctx context.Context, db *bun.DB) ([]string, error) {
	m := migrate.NewMigrator(db, migrations,
		migrate.WithTableName("nimbus_migrations"),
		migrate.WithLocksTableName("nimbus_migration_locks"))
	// No migrations table yet: every migration is pending.
	var n int
	if err := db.NewSelect().TableExpr("nimbus_migrations").ColumnExpr("count(*)").Scan(ctx, &n); err != nil {
		var all []string
		for _, mg := range migrations.Sorted() {
			all = append(all, mg.Name)
		}
		return all, nil
	}
	ms, err := m.MigrationsWithStatus(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, mg := range ms.Unapplied() {
		out = append(out, mg.Name)
	}
	return out, nil
}
