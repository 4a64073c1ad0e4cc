package models

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/uptrace/bun"
)

// Fixed UUIDs of the rows every inventory starts with, so that all processes
// and tests agree on them.
const (
	RootDomainUUID      = "5e1a5d2c-0000-4000-8000-000000000001"
	RegionUUID          = "5e1a5d2c-0000-4000-8000-000000000002"
	SystemAccountUUID   = "5e1a5d2c-0000-4000-8000-000000000003"
	AdminAccountUUID    = "5e1a5d2c-0000-4000-8000-000000000004"
	RoleRootAdminUUID   = "5e1a5d2c-0000-4000-8000-000000000011"
	RoleDomainAdminUUID = "5e1a5d2c-0000-4000-8000-000000000012"
	RoleUserUUID        = "5e1a5d2c-0000-4000-8000-000000000013"
	RoleReadOnlyUUID    = "5e1a5d2c-0000-4000-8000-000000000014"
)

// Seed inserts the rows every inventory needs (region, ROOT domain, default
// roles, system and admin accounts, global settings). It only adds what is
// missing, so it is safe to run after every migration.
func Seed(ctx context.Context, db *bun.DB) error {
	return db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		now := Now()
		if err := insertMissing(ctx, tx, &Region{UUID: RegionUUID, Name: "Region1", Created: now}, "uuid", RegionUUID); err != nil {
			return err
		}
		root := &Domain{UUID: RootDomainUUID, Name: "ROOT", Path: "/", Level: 0, State: "Active", Created: now}
		if err := insertMissing(ctx, tx, root, "uuid", RootDomainUUID); err != nil {
			return err
		}
		roles := []*Role{
			{UUID: RoleRootAdminUUID, Name: "Root Admin", Type: RoleTypeAdmin, Description: "Default root admin role", IsDefault: true},
			{UUID: RoleDomainAdminUUID, Name: "Domain Admin", Type: RoleTypeDomainAdmin, Description: "Default domain admin role", IsDefault: true},
			{UUID: RoleUserUUID, Name: "User", Type: RoleTypeUser, Description: "Default user role", IsDefault: true},
			{UUID: RoleReadOnlyUUID, Name: "Read-Only User", Type: RoleTypeUser, Description: "Default read-only user role", IsDefault: true, ReadOnly: true},
		}
		for _, r := range roles {
			r.Created = now
			if err := insertMissing(ctx, tx, r, "uuid", r.UUID); err != nil {
				return err
			}
		}
		for _, a := range []*Account{
			{UUID: SystemAccountUUID, Name: "system", DomainID: root.ID, Type: AccountTypeAdmin, RoleID: roles[0].ID, State: "enabled", Created: now},
			{UUID: AdminAccountUUID, Name: "admin", DomainID: root.ID, Type: AccountTypeAdmin, RoleID: roles[0].ID, State: "enabled", Created: now},
		} {
			if err := insertMissing(ctx, tx, a, "uuid", a.UUID); err != nil {
				return err
			}
		}
		for _, c := range DefaultConfigurations() {
			c := c
			if err := insertMissing(ctx, tx, &c, "name", c.Name); err != nil {
				return err
			}
		}
		if err := seedOSTypes(ctx, tx, now); err != nil {
			return err
		}
		return seedOfferings(ctx, tx, now)
	})
}

// insertMissing inserts row unless a row with col = val exists; either way
// row ends up holding the stored row's id.
func insertMissing(ctx context.Context, tx bun.IDB, row any, col string, val any) error {
	q := tx.NewSelect().Model(row).Where("? = ?", bun.Ident(col), val).Limit(1)
	if tx.Dialect().Tables().Get(reflect.TypeOf(row)).SoftDeleteField != nil {
		q = q.WhereAllWithDeleted()
	}
	err := q.Scan(ctx)
	if err == nil {
		return nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("seed lookup %T: %w", row, err)
	}
	if _, err := tx.NewInsert().Model(row).Exec(ctx); err != nil {
		return fmt.Errorf("seed insert %T: %w", row, err)
	}
	return nil
}

// DefaultConfigurations are the global settings and their defaults.
func DefaultConfigurations() []Configuration {
	return append([]Configuration{
		{Name: "expunge.delay", Value: "86400", DefaultValue: "86400", Category: "Advanced", Scope: "global", Description: "Seconds a destroyed VM waits before it is expunged"},
		{Name: "expunge.interval", Value: "86400", DefaultValue: "86400", Category: "Advanced", Scope: "global", Description: "Seconds between runs of the expunge schedule"},
		{Name: "cpu.overprovisioning.factor", Value: "1.0", DefaultValue: "1.0", Category: "Advanced", Scope: "cluster", Description: "CPU overcommit ratio"},
		{Name: "mem.overprovisioning.factor", Value: "1.0", DefaultValue: "1.0", Category: "Advanced", Scope: "cluster", Description: "Memory overcommit ratio"},
		{Name: "storage.overprovisioning.factor", Value: "2.0", DefaultValue: "2.0", Category: "Storage", Scope: "zone", Description: "Thin-provisioned primary storage overcommit ratio"},
		{Name: "cluster.cpu.allocated.capacity.disablethreshold", Value: "1.0", DefaultValue: "1.0", Category: "Alert", Scope: "cluster", Description: "CPU allocation fraction beyond which a cluster takes no new VMs"},
		{Name: "cluster.memory.allocated.capacity.disablethreshold", Value: "1.0", DefaultValue: "1.0", Category: "Alert", Scope: "cluster", Description: "Memory allocation fraction beyond which a cluster takes no new VMs"},
		{Name: "pool.storage.allocated.capacity.disablethreshold", Value: "0.85", DefaultValue: "0.85", Category: "Alert", Scope: "zone", Description: "Storage allocation fraction beyond which a pool takes no new volumes"},
		{Name: "default.page.size", Value: "500", DefaultValue: "500", Category: "Advanced", Scope: "global", Description: "Page size when a list call gives none"},
		{Name: "cluster.cpu.allocated.capacity.notificationthreshold", Value: "0.75", DefaultValue: "0.75", Category: "Alert", Scope: "cluster", Description: "CPU allocation fraction beyond which a cluster raises a capacity alert"},
		{Name: "cluster.memory.allocated.capacity.notificationthreshold", Value: "0.75", DefaultValue: "0.75", Category: "Alert", Scope: "cluster", Description: "Memory allocation fraction beyond which a cluster raises a capacity alert"},
		{Name: "pool.storage.allocated.capacity.notificationthreshold", Value: "0.75", DefaultValue: "0.75", Category: "Alert", Scope: "zone", Description: "Storage allocation fraction beyond which a primary storage pool raises a capacity alert"},
		{Name: "host.reconcile.interval", Value: "300", DefaultValue: "300", Category: "Advanced", Scope: "global", Description: "Seconds between reconciliations of hosts against the inventory"},
		{Name: "storage.orphan.cleanup.delay", Value: "0", DefaultValue: "0", Category: "Storage", Scope: "global", Description: "Seconds after which the reconciler deletes a disk it found on a primary pool with no volume or template copy in the inventory; 0 only reports such disks (as STORAGE.ORPHAN events)"},
		{Name: "baremetal.provision.done.notification.timeout", Value: "1800", DefaultValue: "1800", Category: "Advanced", Scope: "global", Description: "Seconds a BareMetal deployment waits for the PXE-booted system to call back before it fails"},
		{Name: "outofbandmanagement.action.timeout", Value: "60", DefaultValue: "60", Category: "Advanced", Scope: "global", Description: "Seconds an out-of-band management power action may take to be read back from the BMC"},
		{Name: "outofbandmanagement.sync.interval", Value: "300000", DefaultValue: "300000", Category: "Advanced", Scope: "global", Description: "Milliseconds between background reads of the power state of every host with out-of-band management enabled (set at worker start)"},
		{Name: "outofbandmanagement.sync.poolsize", Value: "50", DefaultValue: "50", Category: "Advanced", Scope: "global", Description: "How many BMCs the background power-state sync reads at once"},
		{Name: "vmsnapshot.max", Value: "10", DefaultValue: "10", Category: "Advanced", Scope: "global", Description: "Maximum VM snapshots for a single VM"},
		{Name: "redfish.use.https", Value: "true", DefaultValue: "true", Category: "Advanced", Scope: "global", Description: "Out-of-band management over Redfish uses HTTPS (false: plain HTTP)"},
		{Name: "redfish.ignore.ssl", Value: "false", DefaultValue: "false", Category: "Advanced", Scope: "global", Description: "Out-of-band management over Redfish accepts a BMC's self-signed or otherwise unverifiable certificate"},
	}, limitConfigurations()...)
}

// Fixed UUIDs of the default offerings, as CloudStack ships them.
const (
	DiskOfferingSmallUUID            = "5e1a5d2c-0003-4000-8000-000000000001"
	DiskOfferingMediumUUID           = "5e1a5d2c-0003-4000-8000-000000000002"
	DiskOfferingLargeUUID            = "5e1a5d2c-0003-4000-8000-000000000003"
	DiskOfferingCustomUUID           = "5e1a5d2c-0003-4000-8000-000000000004"
	ServiceOfferingSmallUUID         = "5e1a5d2c-0004-4000-8000-000000000001"
	ServiceOfferingMediumUUID        = "5e1a5d2c-0004-4000-8000-000000000002"
	NetworkOfferingDefaultSharedUUID = "5e1a5d2c-0005-4000-8000-000000000001"
)

// NetworkOfferingDefaultSharedName is the name and unique name of the
// default shared network offering.
const NetworkOfferingDefaultSharedName = "DefaultSharedNetworkOffering"

// Fixed UUIDs of OS rows that code and tests pick by default (all seeded OS
// rows have fixed UUIDs; see DefaultOSTypes).
const (
	OSCategoryOtherUUID    = "5e1a5d2c-0001-4000-8000-000000000008"
	OSTypeOtherLinux64UUID = "5e1a5d2c-0002-4000-8000-000000000802"
	OSTypeOther64UUID      = "5e1a5d2c-0002-4000-8000-000000000804"
)

// GiB is 2^30 bytes, the unit of disk offering sizes.
const GiB = int64(1) << 30

// DefaultOSCategories are the OS categories every inventory starts with.
func DefaultOSCategories() []OSCategory {
	names := []string{"CentOS", "Debian", "Ubuntu", "RedHat", "SUSE", "Windows", "Unix", "Other"}
	out := make([]OSCategory, len(names))
	for i, n := range names {
		out[i] = OSCategory{UUID: fmt.Sprintf("5e1a5d2c-0001-4000-8000-%012d", i+1), Name: n}
	}
	return out
}

// DefaultOSTypes are the OS types every inventory starts with. CategoryID
// holds the 1-based position of the category in DefaultOSCategories (Seed
// maps it to the stored id). UUIDs end in C*100+N (C the category, N the
// position in it), so they never change; append, never reorder.
func DefaultOSTypes() []OSType {
	byCategory := [][]string{
		{"CentOS 6.10 (64-bit)", "CentOS 7 (64-bit)", "CentOS 8 (64-bit)", "CentOS Stream 8 (64-bit)", "CentOS Stream 9 (64-bit)"},
		{"Debian GNU/Linux 9 (64-bit)", "Debian GNU/Linux 10 (64-bit)", "Debian GNU/Linux 11 (64-bit)", "Debian GNU/Linux 12 (64-bit)", "Debian GNU/Linux 13 (64-bit)"},
		{"Ubuntu 16.04 LTS (64-bit)", "Ubuntu 18.04 LTS (64-bit)", "Ubuntu 20.04 LTS (64-bit)", "Ubuntu 22.04 LTS (64-bit)", "Ubuntu 24.04 LTS (64-bit)"},
		{"Red Hat Enterprise Linux 7 (64-bit)", "Red Hat Enterprise Linux 8 (64-bit)", "Red Hat Enterprise Linux 9 (64-bit)",
			"Rocky Linux 8 (64-bit)", "Rocky Linux 9 (64-bit)", "AlmaLinux 8 (64-bit)", "AlmaLinux 9 (64-bit)",
			"Oracle Linux 8 (64-bit)", "Oracle Linux 9 (64-bit)", "Fedora Linux (64-bit)"},
		{"SUSE Linux Enterprise Server 12 SP5 (64-bit)", "SUSE Linux Enterprise Server 15 (64-bit)", "openSUSE Leap 15 (64-bit)"},
		{"Windows Server 2016 (64-bit)", "Windows Server 2019 (64-bit)", "Windows Server 2022 (64-bit)", "Windows Server 2025 (64-bit)",
			"Windows 10 (64-bit)", "Windows 11 (64-bit)"},
		{"FreeBSD 13 (64-bit)", "FreeBSD 14 (64-bit)"},
		// The 02 and 04 entries are OSTypeOtherLinux64UUID and OSTypeOther64UUID.
		{"Other Linux (32-bit)", "Other Linux (64-bit)", "Other (32-bit)", "Other (64-bit)"},
	}
	var out []OSType
	for c, names := range byCategory {
		for i, n := range names {
			out = append(out, OSType{
				UUID:       fmt.Sprintf("5e1a5d2c-0002-4000-8000-%012d", (c+1)*100+i+1),
				CategoryID: int64(c + 1), Name: n, DisplayName: n, ForDisplay: true,
			})
		}
	}
	return out
}

func seedOSTypes(ctx context.Context, tx bun.Tx, now time.Time) error {
	cats := DefaultOSCategories()
	catIDs := make(map[int64]int64, len(cats))
	for i := range cats {
		if err := insertMissing(ctx, tx, &cats[i], "uuid", cats[i].UUID); err != nil {
			return err
		}
		catIDs[int64(i+1)] = cats[i].ID
	}
	for _, t := range DefaultOSTypes() {
		t := t
		t.CategoryID = catIDs[t.CategoryID]
		t.Created = now
		if err := insertMissing(ctx, tx, &t, "uuid", t.UUID); err != nil {
			return err
		}
	}
	return nil
}

// seedOfferings adds the disk, compute and network offerings CloudStack
// ships, so a fresh cloud can deploy without an admin defining any. They
// carry no domain or zone restriction: they are public.
func seedOfferings(ctx context.Context, tx bun.Tx, now time.Time) error {
	disks := []*DiskOffering{
		{UUID: DiskOfferingSmallUUID, Name: "Small", DisplayText: "Small Disk, 5 GB", DiskSize: 5 * GiB, SortKey: 1},
		{UUID: DiskOfferingMediumUUID, Name: "Medium", DisplayText: "Medium Disk, 20 GB", DiskSize: 20 * GiB, SortKey: 2},
		{UUID: DiskOfferingLargeUUID, Name: "Large", DisplayText: "Large Disk, 100 GB", DiskSize: 100 * GiB, SortKey: 3},
		{UUID: DiskOfferingCustomUUID, Name: "Custom", DisplayText: "Custom Disk", Customized: true, SortKey: 4},
	}
	for _, d := range disks {
		d.ProvisioningType, d.State, d.DisplayOffering, d.Created = ProvisioningThin, OfferingActive, true, now
		if err := insertMissing(ctx, tx, d, "uuid", d.UUID); err != nil {
			return err
		}
	}
	computes := []*ServiceOffering{
		{UUID: ServiceOfferingSmallUUID, Name: "Small Instance", DisplayText: "Small Instance", CPU: 1, Speed: 500, RAMSize: 512, SortKey: 1},
		{UUID: ServiceOfferingMediumUUID, Name: "Medium Instance", DisplayText: "Medium Instance", CPU: 1, Speed: 1000, RAMSize: 1024, SortKey: 2},
	}
	for _, o := range computes {
		o.State, o.Created = OfferingActive, now
		if err := insertMissing(ctx, tx, o, "uuid", o.UUID); err != nil {
			return err
		}
	}
	shared := &NetworkOffering{
		UUID: NetworkOfferingDefaultSharedUUID, Name: NetworkOfferingDefaultSharedName,
		UniqueName: NetworkOfferingDefaultSharedName, DisplayText: "Offering for Shared networks",
		GuestType: GuestTypeShared, TrafficType: TrafficGuest, State: NetworkOfferingEnabled,
		IsDefault: true, SpecifyVlan: true, SpecifyIPRanges: true, ConserveMode: true,
		Availability: "Optional", Created: now,
	}
	if err := insertMissing(ctx, tx, shared, "uuid", shared.UUID); err != nil {
		return err
	}
	for _, svc := range []string{"Dhcp", "Dns", "UserData"} {
		n, err := tx.NewSelect().Model((*NetworkOfferingService)(nil)).
			Where("network_offering_id = ? AND service = ?", shared.ID, svc).Count(ctx)
		if err != nil {
			return fmt.Errorf("seed lookup network offering service: %w", err)
		}
		if n > 0 {
			continue
		}
		row := &NetworkOfferingService{NetworkOfferingID: shared.ID, Service: svc,
			Provider: "VirtualRouter", Created: now}
		if _, err := tx.NewInsert().Model(row).Exec(ctx); err != nil {
			return fmt.Errorf("seed insert network offering service: %w", err)
		}
	}
	return nil
}
