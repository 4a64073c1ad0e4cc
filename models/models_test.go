package models_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/schema"

	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/tests/testenv"
)

// forEachDialect runs f once per inventory dialect, in parallel, each on a
// fresh database.
func forEachDialect(t *testing.T, f func(t *testing.T, dsn string)) {
	t.Helper()
	for name, dsn := range testenv.Dialects(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f(t, dsn)
		})
	}
}

// migrated opens dsn and applies every migration.
func migrated(t *testing.T, dsn string) *bun.DB {
	t.Helper()
	db := testenv.OpenDB(t, dsn)
	if _, err := models.Migrate(context.Background(), db); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return db
}

func TestMigrateTwice(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db := testenv.OpenDB(t, dsn)
		first, err := models.Migrate(ctx, db)
		if err != nil {
			t.Fatalf("first migrate: %v", err)
		}
		if len(first) == 0 {
			t.Fatal("first migrate applied nothing on a fresh database")
		}
		second, err := models.Migrate(ctx, db)
		if err != nil {
			t.Fatalf("second migrate: %v", err)
		}
		if len(second) != 0 {
			t.Fatalf("second migrate applied %v, want nothing", second)
		}
		pending, err := models.Pending(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if len(pending) != 0 {
			t.Fatalf("pending after migrate: %v", pending)
		}
	})
}

func TestMigrateConcurrent(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		dbs := []*bun.DB{testenv.OpenDB(t, dsn), testenv.OpenDB(t, dsn)}
		applied := make([][]string, len(dbs))
		errs := make([]error, len(dbs))
		var wg sync.WaitGroup
		for i, db := range dbs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				applied[i], errs[i] = models.Migrate(ctx, db)
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("migrate %d: %v", i, err)
			}
		}
		// The lock makes one of them apply everything and the other nothing.
		if (len(applied[0]) == 0) == (len(applied[1]) == 0) {
			t.Fatalf("want exactly one migrator to apply the migrations, got %v and %v", applied[0], applied[1])
		}
		pending, err := models.Pending(ctx, dbs[0])
		if err != nil {
			t.Fatal(err)
		}
		if len(pending) != 0 {
			t.Fatalf("pending after concurrent migrate: %v", pending)
		}
	})
}

// TestRoundTrip writes one row of every model with every column non-zero and
// reads it back, so a column that a dialect truncates, rounds or cannot hold
// shows up here, including in models added later.
func TestRoundTrip(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db := migrated(t, dsn)
		g := &filler{}
		for _, m := range models.Tables() {
			typ := reflect.TypeOf(m).Elem()
			table := db.Dialect().Tables().Get(typ)
			t.Run(table.Name, func(t *testing.T) {
				want := reflect.New(typ)
				for _, f := range table.Fields {
					if f.AutoIncrement || isSoftDelete(table, f) {
						continue
					}
					g.fill(t, f, want.Elem().FieldByIndex(f.Index))
				}
				if _, err := db.NewInsert().Model(want.Interface()).Exec(ctx); err != nil {
					t.Fatalf("insert: %v", err)
				}
				if len(table.PKs) != 1 {
					t.Fatalf("want one primary key, have %d", len(table.PKs))
				}
				pk := table.PKs[0]
				id := want.Elem().FieldByIndex(pk.Index).Interface()
				if reflect.ValueOf(id).IsZero() {
					t.Fatal("insert did not set the primary key")
				}
				got := reflect.New(typ)
				if err := db.NewSelect().Model(got.Interface()).Where("? = ?", pk.SQLName, id).Scan(ctx); err != nil {
					t.Fatalf("select by %s = %v: %v", pk.Name, id, err)
				}
				for _, f := range table.Fields {
					w := want.Elem().FieldByIndex(f.Index).Interface()
					v := got.Elem().FieldByIndex(f.Index).Interface()
					if !sameValue(w, v) {
						t.Errorf("column %s: wrote %#v, read %#v", f.Name, w, v)
					}
				}
			})
		}
	})
}

func isSoftDelete(table *schema.Table, f *schema.Field) bool {
	return table.SoftDeleteField != nil && table.SoftDeleteField.Name == f.Name
}

// filler produces distinct non-zero values that fit their columns.
type filler struct{ n int }

var varcharLen = regexp.MustCompile(`(?i)^varchar\((\d+)\)$`)

func (g *filler) fill(t *testing.T, f *schema.Field, v reflect.Value) {
	t.Helper()
	g.n++
	if v.Kind() == reflect.Pointer {
		v.Set(reflect.New(v.Type().Elem()))
		v = v.Elem()
	}
	if v.Type() == reflect.TypeOf(time.Time{}) {
		// DATETIME holds whole seconds; the inventory keeps UTC.
		base := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
		v.Set(reflect.ValueOf(base.Add(time.Duration(g.n) * time.Minute)))
		return
	}
	switch v.Kind() {
	case reflect.String:
		// The 4-byte rune checks that MariaDB stores utf8mb4.
		s := fmt.Sprintf("v%d-%s-é🚀", g.n, f.Name)
		if m := varcharLen.FindStringSubmatch(f.UserSQLType); m != nil {
			n, _ := strconv.Atoi(m[1])
			if r := []rune(s); len(r) > n {
				s = string(r[:n])
			}
		} else if f.UserSQLType == "" && len([]rune(s)) > 255 {
			t.Fatalf("value for %s longer than varchar(255)", f.Name)
		}
		v.SetString(s)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(100 + g.n))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(100 + g.n))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(float64(g.n) + 0.25)
	case reflect.Bool:
		v.SetBool(true)
	default:
		t.Fatalf("column %s: no filler for Go type %s; teach the round-trip test", f.Name, v.Type())
	}
}

func sameValue(want, got any) bool {
	wv, gv := reflect.ValueOf(want), reflect.ValueOf(got)
	if wv.Kind() == reflect.Pointer && gv.Kind() == reflect.Pointer {
		if wv.IsNil() || gv.IsNil() {
			return wv.IsNil() == gv.IsNil()
		}
		return sameValue(wv.Elem().Interface(), gv.Elem().Interface())
	}
	if wt, ok := want.(time.Time); ok {
		gt, ok := got.(time.Time)
		return ok && wt.Equal(gt)
	}
	return reflect.DeepEqual(want, got)
}

func TestTransition(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db := migrated(t, dsn)
		vm := &models.VMInstance{
			UUID: models.NewUUID(), Name: "vm1", InstanceName: "i-2-1-VM", Type: models.VMTypeUser,
			State: models.VMStopped, ZoneID: 1, ServiceOfferingID: 1, AccountID: 2, DomainID: 1,
			CPU: 1, Speed: 500, RAMSize: 512, Created: models.Now(),
		}
		if _, err := db.NewInsert().Model(vm).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		err := models.Transition(ctx, db, (*models.VMInstance)(nil), vm.ID, models.VMStarting,
			[]string{models.VMStopped, models.VMError}, map[string]any{"host_id": 7})
		if err != nil {
			t.Fatalf("transition from Stopped: %v", err)
		}
		var got models.VMInstance
		if err := db.NewSelect().Model(&got).Where("id = ?", vm.ID).Scan(ctx); err != nil {
			t.Fatal(err)
		}
		if got.State != models.VMStarting || got.HostID != 7 {
			t.Fatalf("after transition: state %q host %d, want Starting on 7", got.State, got.HostID)
		}
		// Someone else moved it: the guard must refuse and change nothing.
		err = models.Transition(ctx, db, (*models.VMInstance)(nil), vm.ID, models.VMRunning,
			[]string{models.VMStopped}, map[string]any{"host_id": 9})
		if !errors.Is(err, models.ErrStateChanged) {
			t.Fatalf("transition from the wrong state: got %v, want ErrStateChanged", err)
		}
		if err := db.NewSelect().Model(&got).Where("id = ?", vm.ID).Scan(ctx); err != nil {
			t.Fatal(err)
		}
		if got.State != models.VMStarting || got.HostID != 7 {
			t.Fatalf("refused transition changed the row: state %q host %d", got.State, got.HostID)
		}
	})
}

func TestSeed(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db := migrated(t, dsn)

		countUUIDs := func(model any, uuids ...string) int {
			t.Helper()
			n, err := db.NewSelect().Model(model).Where("uuid IN (?)", bun.In(uuids)).Count(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return int(n)
		}
		checks := map[string]struct {
			model any
			uuids []string
		}{
			"ROOT domain":   {(*models.Domain)(nil), []string{models.RootDomainUUID}},
			"region":        {(*models.Region)(nil), []string{models.RegionUUID}},
			"roles":         {(*models.Role)(nil), []string{models.RoleRootAdminUUID, models.RoleDomainAdminUUID, models.RoleUserUUID, models.RoleReadOnlyUUID}},
			"accounts":      {(*models.Account)(nil), []string{models.AdminAccountUUID, models.SystemAccountUUID}},
			"disk offers":   {(*models.DiskOffering)(nil), []string{models.DiskOfferingSmallUUID, models.DiskOfferingMediumUUID, models.DiskOfferingLargeUUID, models.DiskOfferingCustomUUID}},
			"compute offer": {(*models.ServiceOffering)(nil), []string{models.ServiceOfferingSmallUUID, models.ServiceOfferingMediumUUID}},
			"network offer": {(*models.NetworkOffering)(nil), []string{models.NetworkOfferingDefaultSharedUUID}},
			"os":            {(*models.OSType)(nil), []string{models.OSTypeOtherLinux64UUID, models.OSTypeOther64UUID}},
			"os category":   {(*models.OSCategory)(nil), []string{models.OSCategoryOtherUUID}},
		}
		for what, c := range checks {
			if n := countUUIDs(c.model, c.uuids...); n != len(c.uuids) {
				t.Errorf("%s: %d of %d seeded rows present", what, n, len(c.uuids))
			}
		}
		var admin models.Account
		if err := db.NewSelect().Model(&admin).Where("uuid = ?", models.AdminAccountUUID).Scan(ctx); err != nil {
			t.Fatal(err)
		}
		if admin.Name != "admin" || admin.Type != models.AccountTypeAdmin {
			t.Errorf("admin account: %+v", admin)
		}

		osTypes := models.DefaultOSTypes()
		if len(osTypes) < 40 {
			t.Errorf("only %d default OS types", len(osTypes))
		}
		var ids []string
		for _, o := range osTypes {
			ids = append(ids, o.UUID)
		}
		if n := countUUIDs((*models.OSType)(nil), ids...); n != len(ids) {
			t.Errorf("%d of %d OS types seeded", n, len(ids))
		}
		var other models.OSType
		if err := db.NewSelect().Model(&other).Where("uuid = ?", models.OSTypeOtherLinux64UUID).Scan(ctx); err != nil {
			t.Fatal(err)
		}
		var cat models.OSCategory
		if err := db.NewSelect().Model(&cat).Where("id = ?", other.CategoryID).Scan(ctx); err != nil {
			t.Fatal(err)
		}
		if other.DisplayName != "Other Linux (64-bit)" || cat.UUID != models.OSCategoryOtherUUID {
			t.Errorf("Other Linux (64-bit): got %q in category %q", other.DisplayName, cat.Name)
		}

		var small models.ServiceOffering
		if err := db.NewSelect().Model(&small).Where("uuid = ?", models.ServiceOfferingSmallUUID).Scan(ctx); err != nil {
			t.Fatal(err)
		}
		if small.Name != "Small Instance" || small.CPU != 1 || small.Speed != 500 || small.RAMSize != 512 {
			t.Errorf("Small Instance: %+v", small)
		}
		var medium models.DiskOffering
		if err := db.NewSelect().Model(&medium).Where("uuid = ?", models.DiskOfferingMediumUUID).Scan(ctx); err != nil {
			t.Fatal(err)
		}
		if medium.DiskSize != 20*models.GiB || medium.Customized {
			t.Errorf("Medium disk offering: %+v", medium)
		}
		var shared models.NetworkOffering
		if err := db.NewSelect().Model(&shared).Where("uuid = ?", models.NetworkOfferingDefaultSharedUUID).Scan(ctx); err != nil {
			t.Fatal(err)
		}
		if shared.Name != models.NetworkOfferingDefaultSharedName || shared.GuestType != models.GuestTypeShared {
			t.Errorf("default shared network offering: %+v", shared)
		}
		var services []string
		if err := db.NewSelect().Model((*models.NetworkOfferingService)(nil)).Column("service").
			Where("network_offering_id = ?", shared.ID).Scan(ctx, &services); err != nil {
			t.Fatal(err)
		}
		sort.Strings(services)
		if strings.Join(services, ",") != "Dhcp,Dns,UserData" {
			t.Errorf("default shared network offering services: %v", services)
		}

		// Seeding again (every Migrate does) adds nothing anywhere.
		before := rowCounts(t, db)
		if err := models.Seed(ctx, db); err != nil {
			t.Fatalf("second seed: %v", err)
		}
		after := rowCounts(t, db)
		if !reflect.DeepEqual(before, after) {
			t.Errorf("second seed changed row counts:\nbefore %v\nafter  %v", before, after)
		}
	})
}

func rowCounts(t *testing.T, db *bun.DB) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, m := range models.Tables() {
		name := db.Dialect().Tables().Get(reflect.TypeOf(m).Elem()).Name
		n, err := db.NewSelect().Table(name).Count(context.Background())
		if err != nil {
			t.Fatalf("count %s: %v", name, err)
		}
		out[name] = int(n)
	}
	return out
}
