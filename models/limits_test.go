package models_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
)

// limitsFixture is ROOT > d1 > d11 with accounts: a1 in d1, a11 and b11 in
// d11, and root-admin r1 in d1.
type limitsFixture struct {
	d1, d11            models.Domain
	a1, a11, b11, root models.Account
}

func newLimitsFixture(t *testing.T, db *bun.DB) *limitsFixture {
	t.Helper()
	ctx := context.Background()
	var rootDom models.Domain
	if err := db.NewSelect().Model(&rootDom).Where("uuid = ?", models.RootDomainUUID).Scan(ctx); err != nil {
		t.Fatal(err)
	}
	var userRole models.Role
	if err := db.NewSelect().Model(&userRole).Where("uuid = ?", models.RoleUserUUID).Scan(ctx); err != nil {
		t.Fatal(err)
	}
	f := &limitsFixture{}
	mkDomain := func(d *models.Domain, name, path string, parent *models.Domain, level int) {
		*d = models.Domain{UUID: models.NewUUID(), Name: name, Path: path, ParentID: &parent.ID, Level: level, State: "Active", Created: models.Now()}
		if _, err := db.NewInsert().Model(d).Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	mkDomain(&f.d1, "d1", "/d1/", &rootDom, 1)
	mkDomain(&f.d11, "d11", "/d1/d11/", &f.d1, 2)
	mkAccount := func(a *models.Account, name string, d *models.Domain, typ int) {
		*a = models.Account{UUID: models.NewUUID(), Name: name, DomainID: d.ID, Type: typ, RoleID: userRole.ID, State: "enabled", Created: models.Now()}
		if _, err := db.NewInsert().Model(a).Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	mkAccount(&f.a1, "a1", &f.d1, models.AccountTypeUser)
	mkAccount(&f.a11, "a11", &f.d11, models.AccountTypeUser)
	mkAccount(&f.b11, "b11", &f.d11, models.AccountTypeUser)
	mkAccount(&f.root, "r1", &f.d1, models.AccountTypeAdmin)
	return f
}

func counts(t *testing.T, db *bun.DB, col string, id int64) map[string]int64 {
	t.Helper()
	var rows []models.ResourceCount
	if err := db.NewSelect().Model(&rows).Where("? = ?", bun.Ident(col), id).Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, r := range rows {
		out[r.Type] = r.Count
	}
	return out
}

// reserveMany runs n reservations at once, each in its own transaction, and
// returns how many succeeded; every failure must be a 532.
func reserveMany(t *testing.T, db *bun.DB, n int, account func(i int) int64, deltas map[string]int64) int {
	t.Helper()
	var ok atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			err := db.RunInTx(context.Background(), nil, func(ctx context.Context, tx bun.Tx) error {
				return models.ReserveResources(ctx, tx, account(i), deltas)
			})
			switch {
			case err == nil:
				ok.Add(1)
			case cserr.Code(err) != cserr.AccountResourceLim:
				errs <- err
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("reservation failed with something other than 532: %v", err)
	}
	return int(ok.Load())
}

func TestReserveResourcesAccountLimitConcurrent(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dsn string) {
		db := migrated(t, dsn)
		f := newLimitsFixture(t, db)
		// The default max.account.user.vms is 20; set it explicitly too.
		if err := models.SetResourceLimit(context.Background(), db, f.a11.ID, 0, models.ResourceUserVM, 20); err != nil {
			t.Fatal(err)
		}
		got := reserveMany(t, db, 50, func(int) int64 { return f.a11.ID },
			map[string]int64{models.ResourceUserVM: 1, models.ResourceCPU: 1, models.ResourceMemory: 512})
		if got != 20 {
			t.Fatalf("%d of 50 reservations succeeded against a limit of 20", got)
		}
		want := map[string]int64{models.ResourceUserVM: 20, models.ResourceCPU: 20, models.ResourceMemory: 20 * 512}
		for _, c := range []struct {
			col string
			id  int64
		}{{"account_id", f.a11.ID}, {"domain_id", f.d11.ID}, {"domain_id", f.d1.ID}} {
			got := counts(t, db, c.col, c.id)
			for typ, n := range want {
				if got[typ] != n {
					t.Errorf("%s %d: %s count = %d, want %d", c.col, c.id, typ, got[typ], n)
				}
			}
		}
	})
}

func TestReserveResourcesDomainLimitConcurrent(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db := migrated(t, dsn)
		f := newLimitsFixture(t, db)
		// d1 allows 20 VMs across its subtree; the accounts themselves are
		// unlimited, and d11 inherits d1's limit.
		if err := models.SetResourceLimit(ctx, db, 0, f.d1.ID, models.ResourceUserVM, 20); err != nil {
			t.Fatal(err)
		}
		for _, a := range []models.Account{f.a1, f.a11, f.b11} {
			if err := models.SetResourceLimit(ctx, db, a.ID, 0, models.ResourceUserVM, models.Unlimited); err != nil {
				t.Fatal(err)
			}
		}
		lim, err := models.DomainLimits(ctx, db, &f.d11)
		if err != nil {
			t.Fatal(err)
		}
		if lim[models.ResourceUserVM] != 20 || lim[models.ResourceCPU] != models.Unlimited {
			t.Fatalf("d11 limits = %v, want user_vm 20 inherited and cpu unlimited", lim)
		}
		accts := []int64{f.a1.ID, f.a11.ID, f.b11.ID}
		got := reserveMany(t, db, 50, func(i int) int64 { return accts[i%3] }, map[string]int64{models.ResourceUserVM: 1})
		if got != 20 {
			t.Fatalf("%d of 50 reservations succeeded against a domain limit of 20", got)
		}
		d1 := counts(t, db, "domain_id", f.d1.ID)[models.ResourceUserVM]
		d11 := counts(t, db, "domain_id", f.d11.ID)[models.ResourceUserVM]
		a1 := counts(t, db, "account_id", f.a1.ID)[models.ResourceUserVM]
		a11 := counts(t, db, "account_id", f.a11.ID)[models.ResourceUserVM]
		b11 := counts(t, db, "account_id", f.b11.ID)[models.ResourceUserVM]
		if d1 != 20 || a1+a11+b11 != 20 || d11 != a11+b11 {
			t.Fatalf("counts: d1 %d, d11 %d, a1 %d, a11 %d, b11 %d", d1, d11, a1, a11, b11)
		}
	})
}

// TestReserveResourcesSmallPool: first reservations of a new account while
// every pooled connection is held by a reserving transaction neither hang
// nor lose counts (a transaction that fails is retried, as activities are).
func TestReserveResourcesSmallPool(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dsn string) {
		db := migrated(t, dsn)
		f := newLimitsFixture(t, db)
		db.DB.SetMaxOpenConns(3)
		const n = 9
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var err error
				for attempt := 0; attempt < 20; attempt++ {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					err = db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
						return models.ReserveResources(ctx, tx, f.b11.ID, map[string]int64{models.ResourceUserVM: 1, models.ResourceVolume: 1})
					})
					cancel()
					if err == nil {
						return
					}
					time.Sleep(200 * time.Millisecond) // as an activity's retry backs off
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("reservation failed 20 times: %v", err)
		}
		for _, c := range []struct {
			col string
			id  int64
		}{{"account_id", f.b11.ID}, {"domain_id", f.d11.ID}, {"domain_id", f.d1.ID}} {
			if got := counts(t, db, c.col, c.id); got[models.ResourceUserVM] != n || got[models.ResourceVolume] != n {
				t.Errorf("%s %d: counts %v, want %d VMs and volumes", c.col, c.id, got, n)
			}
		}
	})
}

func TestReserveResourcesErrorsAndRelease(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db := migrated(t, dsn)
		f := newLimitsFixture(t, db)
		// A reservation over a limit reserves nothing, in any type.
		err := models.ReserveResources(ctx, db, f.a1.ID, map[string]int64{models.ResourceUserVM: 1, models.ResourceCPU: 41})
		if cserr.Code(err) != cserr.AccountResourceLim {
			t.Fatalf("cpu 41 over the default 40: err = %v, want 532", err)
		}
		e := cserr.As(err)
		for _, want := range []string{"'cpu'", "account a1", "40 CPU cores"} {
			if !strings.Contains(e.Text, want) {
				t.Errorf("error %q does not say %s", e.Text, want)
			}
		}
		if c := counts(t, db, "account_id", f.a1.ID); c[models.ResourceUserVM] != 0 || c[models.ResourceCPU] != 0 {
			t.Fatalf("a failed reservation left counts %v", c)
		}
		// Storage limits are in bytes: 200 GiB by default.
		if err := models.ReserveResources(ctx, db, f.a1.ID, map[string]int64{models.ResourcePrimaryStorage: 150 * models.GiB}); err != nil {
			t.Fatal(err)
		}
		err = models.ReserveResources(ctx, db, f.a1.ID, map[string]int64{models.ResourcePrimaryStorage: 60 * models.GiB})
		if cserr.Code(err) != cserr.AccountResourceLim || !strings.Contains(err.Error(), "200 GiB") {
			t.Fatalf("210 GiB over 200: err = %v", err)
		}
		// Root admins are never limited.
		if err := models.ReserveResources(ctx, db, f.root.ID, map[string]int64{models.ResourceCPU: 1000}); err != nil {
			t.Fatalf("root admin: %v", err)
		}
		// Release never goes below 0, and moves the domains too.
		if err := models.ReleaseResources(ctx, db, f.a1.ID, map[string]int64{models.ResourcePrimaryStorage: 200 * models.GiB}); err != nil {
			t.Fatal(err)
		}
		if c := counts(t, db, "account_id", f.a1.ID)[models.ResourcePrimaryStorage]; c != 0 {
			t.Fatalf("after release: %d", c)
		}
		if c := counts(t, db, "domain_id", f.d1.ID)[models.ResourceCPU]; c != 1000 {
			t.Fatalf("d1 cpu = %d, want the root admin's 1000", c)
		}
		// Unknown types are refused.
		if err := models.ReserveResources(ctx, db, f.a1.ID, map[string]int64{"gpu": 1}); err == nil {
			t.Fatal("unknown type accepted")
		}
		// The limit follows the setting (after the cache).
		if _, err := db.NewUpdate().Model((*models.Configuration)(nil)).Set("value = '1'").Where("name = ?", "max.account.snapshots").Exec(ctx); err != nil {
			t.Fatal(err)
		}
		models.InvalidateConfig("max.account.snapshots")
		if err := models.ReserveResources(ctx, db, f.a1.ID, map[string]int64{models.ResourceSnapshot: 2}); cserr.Code(err) != cserr.AccountResourceLim {
			t.Fatalf("2 snapshots over a setting of 1: %v", err)
		}
	})
}

func TestReserveRecalculateCounts(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db := migrated(t, dsn)
		f := newLimitsFixture(t, db)
		var offering models.ServiceOffering
		if err := db.NewSelect().Model(&offering).Where("uuid = ?", models.ServiceOfferingSmallUUID).Scan(ctx); err != nil {
			t.Fatal(err)
		}
		vm := func(a *models.Account, state string, cpu, ram int) {
			v := &models.VMInstance{UUID: models.NewUUID(), Name: "vm", InstanceName: "i", Type: models.VMTypeUser, State: state,
				ZoneID: 1, ServiceOfferingID: offering.ID, CPU: cpu, Speed: 500, RAMSize: ram, AccountID: a.ID, DomainID: a.DomainID, Created: models.Now()}
			if _, err := db.NewInsert().Model(v).Exec(ctx); err != nil {
				t.Fatal(err)
			}
		}
		vm(&f.a11, models.VMRunning, 2, 2048)
		vm(&f.a11, models.VMStopped, 1, 512)
		vm(&f.a11, models.VMDestroyed, 4, 4096)
		vm(&f.b11, models.VMRunning, 1, 1024)
		vol := &models.Volume{UUID: models.NewUUID(), Name: "v", VolumeType: models.VolumeRoot, State: models.VolumeReady, Size: 5 * models.GiB,
			ZoneID: 1, AccountID: f.a11.ID, DomainID: f.d11.ID, Created: models.Now()}
		if _, err := db.NewInsert().Model(vol).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		// A stale count that the recalculation must correct.
		if err := models.ReserveResources(ctx, db, f.a11.ID, map[string]int64{models.ResourceUserVM: 7}); err != nil {
			t.Fatal(err)
		}
		got, err := models.RecalculateAccountCounts(ctx, db, f.a11.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]int64{models.ResourceUserVM: 2, models.ResourceCPU: 3, models.ResourceMemory: 2560,
			models.ResourceVolume: 1, models.ResourcePrimaryStorage: 5 * models.GiB, models.ResourceSnapshot: 0}
		for typ, n := range want {
			if got[typ] != n {
				t.Errorf("a11 %s = %d, want %d", typ, got[typ], n)
			}
		}
		if c := counts(t, db, "domain_id", f.d11.ID)[models.ResourceUserVM]; c != 2 {
			t.Errorf("d11 user_vm after the account's recalculation = %d, want 2", c)
		}
		dom, err := models.RecalculateDomainCounts(ctx, db, f.d1.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		if dom[models.ResourceUserVM] != 3 || dom[models.ResourceCPU] != 4 || dom[models.ResourceMemory] != 3584 {
			t.Errorf("d1 after recalculation = %v", dom)
		}
		if c := counts(t, db, "domain_id", f.d11.ID)[models.ResourceUserVM]; c != 3 {
			t.Errorf("d11 user_vm = %d, want 3", c)
		}
		var root models.Domain
		if err := db.NewSelect().Model(&root).Where("uuid = ?", models.RootDomainUUID).Scan(ctx); err != nil {
			t.Fatal(err)
		}
		rc, err := models.DomainsCounts(ctx, db, []models.Domain{root})
		if err != nil {
			t.Fatal(err)
		}
		if rc[root.ID][models.ResourceUserVM] != 3 {
			t.Errorf("ROOT user_vm (sum of accounts) = %d, want 3", rc[root.ID][models.ResourceUserVM])
		}
	})
}

func TestConfigValue(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db := migrated(t, dsn)
		v, err := models.ConfigValue(ctx, db, "max.account.user.vms")
		if err != nil || v != "20" {
			t.Fatalf("max.account.user.vms = %q, %v", v, err)
		}
		if _, err := models.ConfigValue(ctx, db, "no.such.setting"); !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("unknown setting: %v", err)
		}
		// Cached: a change shows after InvalidateConfig (or the TTL).
		if _, err := db.NewUpdate().Model((*models.Configuration)(nil)).Set("value = '7'").Where("name = ?", "max.account.user.vms").Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if v, _ := models.ConfigValue(ctx, db, "max.account.user.vms"); v != "20" {
			t.Fatalf("cached value = %q, want 20 until invalidated", v)
		}
		models.InvalidateConfig("max.account.user.vms")
		if n, err := models.ConfigInt(ctx, db, "max.account.user.vms"); err != nil || n != 7 {
			t.Fatalf("after invalidation = %d, %v", n, err)
		}
		// A setting missing from an older inventory falls back to its default.
		if _, err := db.NewDelete().Model((*models.Configuration)(nil)).Where("name = ?", "max.domain.cpus").Exec(ctx); err != nil {
			t.Fatal(err)
		}
		models.InvalidateConfig("")
		if v, err := models.ConfigValue(ctx, db, "max.domain.cpus"); err != nil || v != "-1" {
			t.Fatalf("max.domain.cpus without a row = %q, %v", v, err)
		}
		for _, c := range []struct {
			name, value, want string
			ok                bool
		}{
			{"max.account.cpus", "-1", "-1", true},
			{"max.account.cpus", "-2", "", false},
			{"max.account.cpus", "1.5", "", false},
			{"expunge.delay", "60", "60", true},
			{"expunge.delay", "-5", "", false},
			{"cpu.overprovisioning.factor", "2.5", "2.5", true},
			{"cpu.overprovisioning.factor", "0", "", false},
			{"cpu.overprovisioning.factor", "x", "", false},
		} {
			def, _ := models.DefaultConfiguration(c.name)
			got, err := models.CheckConfigValue(&def, c.value)
			if (err == nil) != c.ok || got != c.want {
				t.Errorf("CheckConfigValue(%s, %q) = %q, %v", c.name, c.value, got, err)
			}
		}
		b := models.Configuration{Name: "x.enabled", DefaultValue: "false"}
		if v, err := models.CheckConfigValue(&b, "TRUE"); err != nil || v != "true" {
			t.Errorf("boolean TRUE = %q, %v", v, err)
		}
		if _, err := models.CheckConfigValue(&b, "yes"); err == nil {
			t.Error("boolean yes accepted")
		}
	})
}

func TestReserveAffinityHosts(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db := migrated(t, dsn)
		f := newLimitsFixture(t, db)
		group := func(a *models.Account, typ string) *models.AffinityGroup {
			g := &models.AffinityGroup{UUID: models.NewUUID(), Name: fmt.Sprint("g-", typ), Type: typ, ACLType: "Account",
				AccountID: a.ID, DomainID: a.DomainID, Created: models.Now()}
			if _, err := db.NewInsert().Model(g).Exec(ctx); err != nil {
				t.Fatal(err)
			}
			return g
		}
		anti, aff := group(&f.a1, models.AffinityHostAntiAffinity), group(&f.a1, models.AffinityHostAffinity)
		other := group(&f.a11, models.AffinityHostAntiAffinity)
		vm := func(state string, host int64, g *models.AffinityGroup) int64 {
			v := &models.VMInstance{UUID: models.NewUUID(), Name: "vm", InstanceName: "i", Type: models.VMTypeUser, State: state,
				HostID: host, ZoneID: 1, ServiceOfferingID: 1, CPU: 1, Speed: 500, RAMSize: 512, AccountID: f.a1.ID, DomainID: f.d1.ID, Created: models.Now()}
			if _, err := db.NewInsert().Model(v).Exec(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := db.NewInsert().Model(&models.AffinityGroupVMMap{AffinityGroupID: g.ID, InstanceID: v.ID}).Exec(ctx); err != nil {
				t.Fatal(err)
			}
			return v.ID
		}
		vm(models.VMRunning, 11, anti)
		self := vm(models.VMRunning, 12, anti)
		vm(models.VMDestroyed, 13, anti)
		vm(models.VMStopped, 0, anti)
		vm(models.VMRunning, 21, aff)
		a, b, err := models.AffinityHosts(ctx, db, f.a1.ID, []int64{anti.ID, aff.ID}, self)
		if err != nil {
			t.Fatal(err)
		}
		if len(a) != 1 || !a[11] || len(b) != 1 || !b[21] {
			t.Fatalf("anti %v, affinity %v", a, b)
		}
		if _, _, err := models.AffinityHosts(ctx, db, f.a1.ID, []int64{other.ID}, 0); !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("another account's group: %v", err)
		}
	})
}
