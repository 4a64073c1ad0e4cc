package models

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"

	"github.com/nimbus-cloud/nimbus/api/cserr"
)

// Resource limits and counts.
//
// A limit row exists only where an admin set one (updateResourceLimit);
// otherwise an account's limit is the max.account.* setting and a domain's
// is the nearest ancestor's row, else the max.domain.* setting. Root-admin
// accounts and the ROOT domain are never limited. Max -1 is unlimited.
//
// Counts are kept per account and per domain (the use of its whole
// subtree), except for ROOT, whose use is the sum over all accounts
// (computed when shown, so that no reservation in the cloud serializes on
// one ROOT row). Units: cpu in cores, memory in MiB, primary_storage and
// secondary_storage in bytes (the API shows GiB), the rest in resources.
//
// ReserveResources moves counts with guarded updates
// (count = count + d WHERE count + d <= limit), in one global lock order
// (the account's rows by type, then each domain's, deepest first), so that
// concurrent reservations never exceed a limit and never deadlock.

// ResourceTypes are the resource types in CloudStack's numbering: the API's
// resourcetype n is ResourceTypes[n].
var ResourceTypes = []string{
	ResourceUserVM, ResourcePublicIP, ResourceVolume, ResourceSnapshot, ResourceTemplate, ResourceProject,
	ResourceNetwork, ResourceVPC, ResourceCPU, ResourceMemory, ResourcePrimaryStorage, ResourceSecondaryStorage,
}

// ResourceTypeNumber is CloudStack's number of a resource type, -1 if unknown.
func ResourceTypeNumber(typ string) int {
	for i, t := range ResourceTypes {
		if t == typ {
			return i
		}
	}
	return -1
}

// IsStorageResource tells whether a type counts bytes (shown in GiB).
func IsStorageResource(typ string) bool {
	return typ == ResourcePrimaryStorage || typ == ResourceSecondaryStorage
}

// Unlimited is the limit of a resource without limit.
const Unlimited = -1

// LimitSetting names the setting that holds the default limit of typ for
// accounts (domain false) or domains.
func LimitSetting(typ string, domain bool) string {
	owner := "account"
	if domain {
		owner = "domain"
	}
	suffix := map[string]string{
		ResourceUserVM: "user.vms", ResourcePublicIP: "public.ips", ResourceVolume: "volumes",
		ResourceSnapshot: "snapshots", ResourceTemplate: "templates", ResourceProject: "projects",
		ResourceNetwork: "networks", ResourceVPC: "vpcs", ResourceCPU: "cpus", ResourceMemory: "memory",
		ResourcePrimaryStorage: "primary.storage", ResourceSecondaryStorage: "secondary.storage",
	}[typ]
	if suffix == "" {
		return ""
	}
	return "max." + owner + "." + suffix
}

// limitConfigurations are the default limit settings (DefaultConfigurations
// adds them): CloudStack's account defaults, domains unlimited.
func limitConfigurations() []Configuration {
	acct := map[string]string{
		ResourceUserVM: "20", ResourcePublicIP: "20", ResourceVolume: "20", ResourceSnapshot: "20",
		ResourceTemplate: "20", ResourceProject: "10", ResourceNetwork: "20", ResourceVPC: "20",
		ResourceCPU: "40", ResourceMemory: "40960", ResourcePrimaryStorage: "200", ResourceSecondaryStorage: "400",
	}
	unit := func(typ string) string {
		switch typ {
		case ResourceCPU:
			return " (CPU cores)"
		case ResourceMemory:
			return " (MiB)"
		case ResourcePrimaryStorage, ResourceSecondaryStorage:
			return " (GiB)"
		}
		return ""
	}
	var out []Configuration
	for _, t := range ResourceTypes {
		what := strings.ReplaceAll(t, "_", " ")
		out = append(out, Configuration{
			Name: LimitSetting(t, false), Value: acct[t], DefaultValue: acct[t], Category: "Account Defaults", Scope: "account",
			Description: "The default maximum " + what + unit(t) + " an account may use; -1 is unlimited",
		})
	}
	for _, t := range ResourceTypes {
		what := strings.ReplaceAll(t, "_", " ")
		out = append(out, Configuration{
			Name: LimitSetting(t, true), Value: "-1", DefaultValue: "-1", Category: "Domain Defaults", Scope: "domain",
			Description: "The default maximum " + what + unit(t) + " a domain's accounts may use together; -1 is unlimited",
		})
	}
	return out
}

// defaultLimit reads a default limit setting, in the type's unit.
func defaultLimit(ctx context.Context, db bun.IDB, typ string, domain bool) (int64, error) {
	n, err := ConfigInt(ctx, db, LimitSetting(typ, domain))
	if err != nil {
		return 0, err
	}
	if n >= 0 && IsStorageResource(typ) {
		n *= GiB
	}
	if n < Unlimited {
		n = Unlimited
	}
	return n, nil
}

// ancestorPaths are the paths of a domain and its ancestors, "/" first.
func ancestorPaths(path string) []string {
	out := []string{"/"}
	for i := 1; i < len(path); i++ {
		if path[i] == '/' {
			out = append(out, path[:i+1])
		}
	}
	return out
}

// DomainChain returns a domain and its ancestors, deepest first (ROOT last).
func DomainChain(ctx context.Context, db bun.IDB, domainID int64) ([]Domain, error) {
	var d Domain
	if err := db.NewSelect().Model(&d).Where("id = ?", domainID).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
		return nil, NotFound(err, fmt.Sprintf("domain %d", domainID))
	}
	if d.ParentID == nil {
		return []Domain{d}, nil
	}
	var chain []Domain
	if err := db.NewSelect().Model(&chain).Where("path IN (?)", bun.In(ancestorPaths(d.Path))).
		Where("id <> ?", d.ID).Order("level DESC").Scan(ctx); err != nil {
		return nil, err
	}
	return append([]Domain{d}, chain...), nil
}

// displayPath is CloudStack's form of a domain path ("ROOT/a/b").
func displayPath(d *Domain) string {
	return "ROOT" + strings.TrimSuffix(d.Path, "/")
}

type limitRow struct {
	OwnerID int64  `bun:"owner_id"`
	Type    string `bun:"type"`
	Max     int64  `bun:"max"`
}

// limitRows loads explicit limits of accounts (domain false) or domains.
func limitRows(ctx context.Context, db bun.IDB, ids []int64, domain bool) (map[int64]map[string]int64, error) {
	out := map[int64]map[string]int64{}
	if len(ids) == 0 {
		return out, nil
	}
	col := "account_id"
	if domain {
		col = "domain_id"
	}
	var rows []limitRow
	if err := db.NewSelect().Model((*ResourceLimit)(nil)).ColumnExpr("? AS owner_id, type, max", bun.Ident(col)).
		Where("? IN (?)", bun.Ident(col), bun.In(ids)).Scan(ctx, &rows); err != nil {
		return nil, err
	}
	for _, r := range rows {
		if out[r.OwnerID] == nil {
			out[r.OwnerID] = map[string]int64{}
		}
		out[r.OwnerID][r.Type] = r.Max
	}
	return out, nil
}

// AccountsLimits returns the limit of every resource type for each account.
func AccountsLimits(ctx context.Context, db bun.IDB, accts []Account) (map[int64]map[string]int64, error) {
	ids := make([]int64, 0, len(accts))
	for _, a := range accts {
		ids = append(ids, a.ID)
	}
	rows, err := limitRows(ctx, db, ids, false)
	if err != nil {
		return nil, err
	}
	defaults := map[string]int64{}
	for _, t := range ResourceTypes {
		if defaults[t], err = defaultLimit(ctx, db, t, false); err != nil {
			return nil, err
		}
	}
	out := make(map[int64]map[string]int64, len(accts))
	for _, a := range accts {
		m := make(map[string]int64, len(ResourceTypes))
		for _, t := range ResourceTypes {
			switch v, ok := rows[a.ID][t]; {
			case a.Type == AccountTypeAdmin:
				m[t] = Unlimited
			case ok:
				m[t] = v
			default:
				m[t] = defaults[t]
			}
		}
		out[a.ID] = m
	}
	return out, nil
}

// AccountLimits returns the limit of every resource type for one account.
func AccountLimits(ctx context.Context, db bun.IDB, a *Account) (map[string]int64, error) {
	m, err := AccountsLimits(ctx, db, []Account{*a})
	if err != nil {
		return nil, err
	}
	return m[a.ID], nil
}

// DomainsLimits returns the limit of every resource type for each domain:
// its own row, else its nearest limited ancestor's (ROOT excluded), else
// the max.domain.* setting; ROOT is unlimited.
func DomainsLimits(ctx context.Context, db bun.IDB, doms []Domain) (map[int64]map[string]int64, error) {
	pathSet := map[string]bool{}
	for _, d := range doms {
		for _, p := range ancestorPaths(d.Path) {
			pathSet[p] = true
		}
	}
	paths := make([]string, 0, len(pathSet))
	for p := range pathSet {
		paths = append(paths, p)
	}
	var ancestors []Domain
	if len(paths) > 0 {
		if err := db.NewSelect().Model(&ancestors).Where("path IN (?)", bun.In(paths)).Scan(ctx); err != nil {
			return nil, err
		}
	}
	byPath := map[string]Domain{}
	ids := make([]int64, 0, len(ancestors)+len(doms))
	for _, d := range ancestors {
		byPath[d.Path] = d
		ids = append(ids, d.ID)
	}
	for _, d := range doms {
		ids = append(ids, d.ID)
	}
	rows, err := limitRows(ctx, db, ids, true)
	if err != nil {
		return nil, err
	}
	defaults := map[string]int64{}
	for _, t := range ResourceTypes {
		if defaults[t], err = defaultLimit(ctx, db, t, true); err != nil {
			return nil, err
		}
	}
	out := make(map[int64]map[string]int64, len(doms))
	for _, d := range doms {
		// The chain below ROOT, deepest first.
		chain := []int64{d.ID}
		ap := ancestorPaths(d.Path)
		for i := len(ap) - 2; i >= 1; i-- {
			if a, ok := byPath[ap[i]]; ok {
				chain = append(chain, a.ID)
			}
		}
		m := make(map[string]int64, len(ResourceTypes))
		for _, t := range ResourceTypes {
			m[t] = defaults[t]
			if d.ParentID == nil {
				m[t] = Unlimited
				continue
			}
			for _, id := range chain {
				if v, ok := rows[id][t]; ok {
					m[t] = v
					break
				}
			}
		}
		out[d.ID] = m
	}
	return out, nil
}

// DomainLimits returns the limit of every resource type for one domain.
func DomainLimits(ctx context.Context, db bun.IDB, d *Domain) (map[string]int64, error) {
	m, err := DomainsLimits(ctx, db, []Domain{*d})
	if err != nil {
		return nil, err
	}
	return m[d.ID], nil
}

// SetResourceLimit stores an explicit limit for an account (accountID set)
// or a domain (domainID set), in the type's unit.
func SetResourceLimit(ctx context.Context, db bun.IDB, accountID, domainID int64, typ string, max int64) error {
	if ResourceTypeNumber(typ) < 0 {
		return fmt.Errorf("unknown resource type %q", typ)
	}
	row := &ResourceLimit{Type: typ, AccountID: accountID, DomainID: domainID, Max: max}
	if _, err := db.NewInsert().Model(row).Ignore().Exec(ctx); err != nil {
		return err
	}
	q := db.NewUpdate().Model((*ResourceLimit)(nil)).Set("max = ?", max).Where("type = ?", typ)
	if accountID != 0 {
		q = q.Where("account_id = ?", accountID)
	} else {
		q = q.Where("domain_id = ?", domainID)
	}
	_, err := q.Exec(ctx)
	return err
}

type countRow struct {
	OwnerID int64  `bun:"owner_id"`
	Type    string `bun:"type"`
	Count   int64  `bun:"count"`
}

// AccountsCounts returns the stored counts of accounts (missing ones are 0).
func AccountsCounts(ctx context.Context, db bun.IDB, accountIDs []int64) (map[int64]map[string]int64, error) {
	out := map[int64]map[string]int64{}
	for _, id := range accountIDs {
		out[id] = map[string]int64{}
	}
	if len(accountIDs) == 0 {
		return out, nil
	}
	var rows []countRow
	if err := db.NewSelect().Model((*ResourceCount)(nil)).ColumnExpr("account_id AS owner_id, type, count").
		Where("account_id IN (?)", bun.In(accountIDs)).Scan(ctx, &rows); err != nil {
		return nil, err
	}
	for _, r := range rows {
		out[r.OwnerID][r.Type] = r.Count
	}
	return out, nil
}

// DomainsCounts returns the counts of domains (their subtrees' use); ROOT's
// is the sum over every live account.
func DomainsCounts(ctx context.Context, db bun.IDB, doms []Domain) (map[int64]map[string]int64, error) {
	out := map[int64]map[string]int64{}
	var ids []int64
	for _, d := range doms {
		out[d.ID] = map[string]int64{}
		if d.ParentID == nil {
			sums, err := subtreeSums(ctx, db, "/")
			if err != nil {
				return nil, err
			}
			out[d.ID] = sums
			continue
		}
		ids = append(ids, d.ID)
	}
	if len(ids) == 0 {
		return out, nil
	}
	var rows []countRow
	if err := db.NewSelect().Model((*ResourceCount)(nil)).ColumnExpr("domain_id AS owner_id, type, count").
		Where("domain_id IN (?)", bun.In(ids)).Scan(ctx, &rows); err != nil {
		return nil, err
	}
	for _, r := range rows {
		out[r.OwnerID][r.Type] = r.Count
	}
	return out, nil
}

// subtreeSums sums the stored counts of the live accounts of a subtree.
func subtreeSums(ctx context.Context, db bun.IDB, path string) (map[string]int64, error) {
	var rows []countRow
	q := db.NewSelect().TableExpr("resource_counts AS rc").ColumnExpr("rc.type, COALESCE(SUM(rc.count), 0) AS count").
		Join("JOIN accounts AS a ON a.id = rc.account_id").
		Where("a.removed IS NULL").Group("rc.type")
	if path != "/" {
		q = q.Join("JOIN domains AS d ON d.id = a.domain_id").
			Where("SUBSTR(d.path, 1, ?) = ?", utf8.RuneCountInString(path), path)
	}
	if err := q.Scan(ctx, &rows); err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, r := range rows {
		out[r.Type] = r.Count
	}
	return out, nil
}

// countOwner is one row set that a reservation moves: an account's or a
// domain's counts, with its limits.
type countOwner struct {
	accountID, domainID int64
	what                string // "account u1 in domain ROOT/d1", "domain ROOT/d1"
	limits              map[string]int64
}

// col and id select the owner's rows.
func (o *countOwner) col() (bun.Ident, int64) {
	if o.accountID != 0 {
		return bun.Ident("account_id"), o.accountID
	}
	return bun.Ident("domain_id"), o.domainID
}

// reservationOwners loads an account and the domains above it (ROOT
// excluded) with their limits, in lock order.
func reservationOwners(ctx context.Context, db bun.IDB, accountID int64) ([]countOwner, error) {
	var a Account
	if err := db.NewSelect().Model(&a).Where("id = ?", accountID).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
		return nil, NotFound(err, fmt.Sprintf("account %d", accountID))
	}
	chain, err := DomainChain(ctx, db, a.DomainID)
	if err != nil {
		return nil, err
	}
	acctLimits, err := AccountLimits(ctx, db, &a)
	if err != nil {
		return nil, err
	}
	var doms []Domain // without ROOT
	for _, d := range chain {
		if d.ParentID != nil {
			doms = append(doms, d)
		}
	}
	domLimits, err := DomainsLimits(ctx, db, doms)
	if err != nil {
		return nil, err
	}
	owners := []countOwner{{accountID: a.ID, what: "account " + a.Name + " in domain " + displayPath(&chain[0]), limits: acctLimits}}
	for i := range doms {
		owners = append(owners, countOwner{domainID: doms[i].ID, what: "domain " + displayPath(&doms[i]), limits: domLimits[doms[i].ID]})
	}
	return owners, nil
}

// ensureCounts makes sure the count rows exist. On MySQL, inside a
// transaction, the missing ones are inserted on a connection of their own
// (committed at once), so that the transaction only ever takes row locks on
// existing rows, in lock order: inserting there would take gap and shared
// next-key locks that concurrent first reservations deadlock on. If no
// connection frees up within ensureConnWait (a pool full of transactions
// waiting here too), the rows are created in the background once
// connections free up and this reservation fails with a plain (retryable)
// error, which rolls the caller's transaction back and frees its
// connection. SQLite serializes write transactions, so it inserts inside;
// given a *bun.DB, the inserts commit one by one.
func ensureCounts(ctx context.Context, db bun.IDB, owners []countOwner, types []string) error {
	var missing []*ResourceCount
	for _, o := range owners {
		var have []string
		col, id := o.col()
		q := db.NewSelect().Model((*ResourceCount)(nil)).Column("type").Where("type IN (?)", bun.In(types)).Where("? = ?", col, id)
		if err := q.Scan(ctx, &have); err != nil {
			return err
		}
		got := map[string]bool{}
		for _, t := range have {
			got[t] = true
		}
		for _, t := range types {
			if !got[t] {
				missing = append(missing, &ResourceCount{Type: t, AccountID: o.accountID, DomainID: o.domainID})
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}
	ins := db
	if _, isDB := db.(*bun.DB); !isDB && db.Dialect().Name() != dialect.SQLite {
		base := db.NewSelect().DB()
		cctx, cancel := context.WithTimeout(ctx, ensureConnWait)
		conn, err := base.Conn(cctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			go func() {
				bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
				defer cancel()
				for _, row := range missing {
					_, _ = base.NewInsert().Model(row).Ignore().Exec(bctx)
				}
			}()
			return fmt.Errorf("resource counts of %s are being created (no free database connection); try again", owners[0].what)
		}
		defer conn.Close()
		ins = conn
	}
	for _, row := range missing {
		if _, err := ins.NewInsert().Model(row).Ignore().Exec(ctx); err != nil {
			return fmt.Errorf("resource count row: %w", err)
		}
	}
	return nil
}

// ensureConnWait bounds how long ensureCounts waits for a free connection.
const ensureConnWait = 5 * time.Second

// EnsureResourceCounts creates the count rows of an account and of the
// domains above it, for every resource type, outside any transaction. Rows
// exist after an account's first reservation anyway; code that is about to
// run many reservations for a new account at once (a burst of deploys) may
// call it first so that none of them has to create rows.
func EnsureResourceCounts(ctx context.Context, db *bun.DB, accountID int64) error {
	_, err := PrepareReservation(ctx, db, accountID)
	return err
}

// Reservation is what ReserveResources reads before it moves counts (the
// account and the domains above it, their limits, their count rows made
// sure of), read once, outside the caller's transaction: a request that
// reserves inside its transaction spends only the guarded updates there.
type Reservation struct {
	accountID int64
	owners    []countOwner
}

// PrepareReservation loads an account's reservation and creates its count
// rows for every resource type (as EnsureResourceCounts). Count rows are
// never deleted, so they still exist when Reserve runs. Limits are read
// outside the transaction, as ReserveResources reads them without locking
// inside it.
func PrepareReservation(ctx context.Context, db *bun.DB, accountID int64) (*Reservation, error) {
	owners, err := reservationOwners(ctx, db, accountID)
	if err != nil {
		return nil, err
	}
	if err := ensureCounts(ctx, db, owners, append([]string(nil), ResourceTypes...)); err != nil {
		return nil, err
	}
	return &Reservation{accountID: accountID, owners: owners}, nil
}

// Reserve is ReserveResources for the prepared account, in tx.
func (r *Reservation) Reserve(ctx context.Context, tx bun.IDB, deltas map[string]int64) error {
	types, err := sortedDeltaTypes(deltas)
	if err != nil || len(types) == 0 {
		return err
	}
	return applyCounts(ctx, tx, r.owners, types, deltas, true)
}

func sortedDeltaTypes(deltas map[string]int64) ([]string, error) {
	types := make([]string, 0, len(deltas))
	for t, d := range deltas {
		if ResourceTypeNumber(t) < 0 {
			return nil, fmt.Errorf("unknown resource type %q", t)
		}
		if d != 0 {
			types = append(types, t)
		}
	}
	sort.Strings(types)
	return types, nil
}

// ReserveResources adds deltas (resource type -> amount in the type's unit,
// e.g. {user_vm: 1, cpu: 2, memory: 2048, volume: 1, primary_storage: bytes})
// to the counts of an account and of every domain above it, checking each
// one's limit. It is meant to run inside the caller's transaction (the one
// that creates the resources), so that a rollback undoes it; given a
// *bun.DB it runs its own. When a limit would be exceeded nothing is
// reserved and the error is a 532 naming the resource, the owner and the
// limit. Negative deltas release (never below 0).
func ReserveResources(ctx context.Context, tx bun.IDB, accountID int64, deltas map[string]int64) error {
	if db, ok := tx.(*bun.DB); ok {
		return db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			return moveCounts(ctx, tx, accountID, deltas, true)
		})
	}
	return moveCounts(ctx, tx, accountID, deltas, true)
}

// ReleaseResources subtracts deltas (positive amounts) from the counts of an
// account and of every domain above it, never below 0; no limit applies.
func ReleaseResources(ctx context.Context, tx bun.IDB, accountID int64, deltas map[string]int64) error {
	neg := make(map[string]int64, len(deltas))
	for t, d := range deltas {
		neg[t] = -d
	}
	if db, ok := tx.(*bun.DB); ok {
		return db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			return moveCounts(ctx, tx, accountID, neg, false)
		})
	}
	return moveCounts(ctx, tx, accountID, neg, false)
}

func moveCounts(ctx context.Context, tx bun.IDB, accountID int64, deltas map[string]int64, check bool) error {
	types, err := sortedDeltaTypes(deltas)
	if err != nil || len(types) == 0 {
		return err
	}
	owners, err := reservationOwners(ctx, tx, accountID)
	if err != nil {
		return err
	}
	if err := ensureCounts(ctx, tx, owners, types); err != nil {
		return err
	}
	return applyCounts(ctx, tx, owners, types, deltas, check)
}

// applyCounts moves the count rows of owners (in lock order) by deltas of
// types (sorted); a reservation (check) guards each limit.
func applyCounts(ctx context.Context, tx bun.IDB, owners []countOwner, types []string, deltas map[string]int64, check bool) error {
	for i := range owners {
		o := &owners[i]
		for _, t := range types {
			d := deltas[t]
			col, id := o.col()
			q := tx.NewUpdate().Model((*ResourceCount)(nil)).Where("type = ?", t).Where("? = ?", col, id)
			if d < 0 {
				q = q.Set("count = CASE WHEN count > ? THEN count - ? ELSE 0 END", -d, -d)
				if _, err := q.Exec(ctx); err != nil {
					return err
				}
				continue
			}
			q = q.Set("count = count + ?", d)
			limit := o.limits[t]
			if check && limit >= 0 {
				q = q.Where("count + ? <= ?", d, limit)
			}
			res, err := q.Exec(ctx)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				var used int64
				_ = tx.NewSelect().Model((*ResourceCount)(nil)).Column("count").
					Where("type = ?", t).Where("? = ?", col, id).Limit(1).Scan(ctx, &used)
				return cserr.New(cserr.AccountResourceLim,
					"Maximum number of resources of type '%s' for %s has been exceeded: the limit is %s, %s in use, %s requested",
					t, o.what, formatAmount(t, limit), formatAmount(t, used), formatAmount(t, d))
			}
		}
	}
	return nil
}

// formatAmount shows an amount of a resource type with its unit.
func formatAmount(typ string, n int64) string {
	switch typ {
	case ResourcePrimaryStorage, ResourceSecondaryStorage:
		return strconv.FormatFloat(float64(n)/float64(GiB), 'f', -1, 64) + " GiB"
	case ResourceMemory:
		return strconv.FormatInt(n, 10) + " MiB"
	case ResourceCPU:
		return strconv.FormatInt(n, 10) + " CPU cores"
	}
	return strconv.FormatInt(n, 10)
}

// InventoryCounts computes an account's use of every resource type from the
// inventory: user VMs not destroyed, expunging or in error (and their CPU
// cores and memory), volumes not destroyed (and their sizes), snapshots not
// destroyed, allocated public IPs, its templates and ISOs, its own guest
// networks; secondary storage is its snapshots' and templates' sizes.
func InventoryCounts(ctx context.Context, db bun.IDB, accountID int64) (map[string]int64, error) {
	out := make(map[string]int64, len(ResourceTypes))
	for _, t := range ResourceTypes {
		out[t] = 0
	}
	var vms, cpu, mem int64
	if err := db.NewSelect().Model((*VMInstance)(nil)).
		ColumnExpr("COUNT(*), COALESCE(SUM(cpu), 0), COALESCE(SUM(ram_size), 0)").
		Where("account_id = ? AND type = ?", accountID, VMTypeUser).
		Where("state NOT IN (?)", bun.In([]string{VMDestroyed, VMExpunging, VMError})).
		Scan(ctx, &vms, &cpu, &mem); err != nil {
		return nil, fmt.Errorf("count VMs: %w", err)
	}
	out[ResourceUserVM], out[ResourceCPU], out[ResourceMemory] = vms, cpu, mem

	var vols, volBytes int64
	if err := db.NewSelect().Model((*Volume)(nil)).ColumnExpr("COUNT(*), COALESCE(SUM(size), 0)").
		Where("account_id = ?", accountID).
		Where("state NOT IN (?)", bun.In([]string{VolumeDestroy, VolumeExpunging, VolumeExpunged, VolumeError})).
		Scan(ctx, &vols, &volBytes); err != nil {
		return nil, fmt.Errorf("count volumes: %w", err)
	}
	out[ResourceVolume], out[ResourcePrimaryStorage] = vols, volBytes

	var snaps, snapBytes int64
	if err := db.NewSelect().Model((*Snapshot)(nil)).ColumnExpr("COUNT(*), COALESCE(SUM(physical_size), 0)").
		Where("account_id = ?", accountID).
		Where("state NOT IN (?)", bun.In([]string{SnapshotDestroying, SnapshotDestroyed, SnapshotError})).
		Scan(ctx, &snaps, &snapBytes); err != nil {
		return nil, fmt.Errorf("count snapshots: %w", err)
	}
	out[ResourceSnapshot] = snaps

	var tmpls, tmplBytes int64
	if err := db.NewSelect().Model((*Template)(nil)).ColumnExpr("COUNT(*), COALESCE(SUM(size), 0)").
		Where("account_id = ? AND type = ?", accountID, TemplateTypeUser).
		Scan(ctx, &tmpls, &tmplBytes); err != nil {
		return nil, fmt.Errorf("count templates: %w", err)
	}
	out[ResourceTemplate], out[ResourceSecondaryStorage] = tmpls, snapBytes+tmplBytes

	ips, err := db.NewSelect().Model((*IPAddress)(nil)).
		Where("account_id = ? AND is_system = ?", accountID, false).
		Where("state IN (?)", bun.In([]string{IPAllocating, IPAllocated})).Count(ctx)
	if err != nil {
		return nil, fmt.Errorf("count public IPs: %w", err)
	}
	out[ResourcePublicIP] = int64(ips)

	nets, err := db.NewSelect().Model((*Network)(nil)).
		Where("account_id = ? AND acl_type = ? AND traffic_type = ?", accountID, "Account", "Guest").
		Where("state <> ?", NetworkDestroy).Count(ctx)
	if err != nil {
		return nil, fmt.Errorf("count networks: %w", err)
	}
	out[ResourceNetwork] = int64(nets)
	return out, nil
}

func checkTypes(types []string) ([]string, error) {
	if len(types) == 0 {
		types = append([]string(nil), ResourceTypes...)
	}
	for _, t := range types {
		if ResourceTypeNumber(t) < 0 {
			return nil, fmt.Errorf("unknown resource type %q", t)
		}
	}
	types = append([]string(nil), types...)
	sort.Strings(types)
	return types, nil
}

func lockForUpdate(db bun.IDB, q *bun.SelectQuery) *bun.SelectQuery {
	if db.Dialect().Name() == dialect.SQLite {
		return q // write transactions are serialized
	}
	return q.For("UPDATE")
}

// RecalculateAccountCounts sets an account's counts of types (all when
// empty) to what the inventory holds, moves its domains' counts by the same
// difference, and returns the new counts. It locks the account's count rows
// first, so a reservation in flight commits before it counts.
func RecalculateAccountCounts(ctx context.Context, db *bun.DB, accountID int64, types []string) (map[string]int64, error) {
	types, err := checkTypes(types)
	if err != nil {
		return nil, err
	}
	owners, err := reservationOwners(ctx, db, accountID)
	if err != nil {
		return nil, err
	}
	if err := ensureCounts(ctx, db, owners, types); err != nil {
		return nil, err
	}
	out := map[string]int64{}
	err = db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var cur []countRow
		q := tx.NewSelect().Model((*ResourceCount)(nil)).ColumnExpr("account_id AS owner_id, type, count").
			Where("account_id = ? AND type IN (?)", accountID, bun.In(types)).Order("type")
		if err := lockForUpdate(tx, q).Scan(ctx, &cur); err != nil {
			return err
		}
		old := map[string]int64{}
		for _, r := range cur {
			old[r.Type] = r.Count
		}
		inv, err := InventoryCounts(ctx, tx, accountID)
		if err != nil {
			return err
		}
		diff := map[string]int64{}
		for _, t := range types {
			out[t] = inv[t]
			if inv[t] == old[t] {
				continue
			}
			diff[t] = inv[t] - old[t]
			if _, err := tx.NewUpdate().Model((*ResourceCount)(nil)).Set("count = ?", inv[t]).
				Where("account_id = ? AND type = ?", accountID, t).Exec(ctx); err != nil {
				return err
			}
		}
		for _, o := range owners[1:] {
			for _, t := range types {
				d := diff[t]
				if d == 0 {
					continue
				}
				if _, err := tx.NewUpdate().Model((*ResourceCount)(nil)).
					Set("count = CASE WHEN count + ? > 0 THEN count + ? ELSE 0 END", d, d).
					Where("domain_id = ? AND type = ?", o.domainID, t).Exec(ctx); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// RecalculateDomainCounts recalculates every live account of a domain's
// subtree from the inventory, then sets each domain of the subtree to the
// sum of its accounts, and returns the domain's counts of types (all when
// empty).
func RecalculateDomainCounts(ctx context.Context, db *bun.DB, domainID int64, types []string) (map[string]int64, error) {
	types, err := checkTypes(types)
	if err != nil {
		return nil, err
	}
	var d Domain
	if err := db.NewSelect().Model(&d).Where("id = ?", domainID).Limit(1).Scan(ctx); err != nil {
		return nil, NotFound(err, fmt.Sprintf("domain %d", domainID))
	}
	n := utf8.RuneCountInString(d.Path)
	var subtree []Domain
	if err := db.NewSelect().Model(&subtree).Where("SUBSTR(path, 1, ?) = ?", n, d.Path).
		Order("level DESC", "id").Scan(ctx); err != nil {
		return nil, err
	}
	ids := make([]int64, 0, len(subtree))
	for _, s := range subtree {
		ids = append(ids, s.ID)
	}
	var acctIDs []int64
	if err := db.NewSelect().Model((*Account)(nil)).Column("id").Where("domain_id IN (?)", bun.In(ids)).
		Order("id").Scan(ctx, &acctIDs); err != nil {
		return nil, err
	}
	for _, id := range acctIDs {
		if _, err := RecalculateAccountCounts(ctx, db, id, types); err != nil {
			return nil, err
		}
	}
	for i := range subtree {
		s := &subtree[i]
		if s.ParentID == nil {
			continue // ROOT keeps no counts
		}
		if err := recalculateDomain(ctx, db, s, types); err != nil {
			return nil, err
		}
	}
	counts, err := DomainsCounts(ctx, db, []Domain{d})
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, t := range types {
		out[t] = counts[d.ID][t]
	}
	return out, nil
}

// recalculateDomain sets a domain's counts to the sum of its subtree's
// accounts, with its rows locked so reservations in flight land first.
func recalculateDomain(ctx context.Context, db *bun.DB, d *Domain, types []string) error {
	if err := ensureCounts(ctx, db, []countOwner{{domainID: d.ID}}, types); err != nil {
		return err
	}
	return db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var locked []int64
		q := tx.NewSelect().Model((*ResourceCount)(nil)).Column("id").
			Where("domain_id = ? AND type IN (?)", d.ID, bun.In(types)).Order("type")
		if err := lockForUpdate(tx, q).Scan(ctx, &locked); err != nil {
			return err
		}
		sums, err := subtreeSums(ctx, tx, d.Path)
		if err != nil {
			return err
		}
		for _, t := range types {
			if _, err := tx.NewUpdate().Model((*ResourceCount)(nil)).Set("count = ?", sums[t]).
				Where("domain_id = ? AND type = ?", d.ID, t).Exec(ctx); err != nil {
				return err
			}
		}
		return nil
	})
}
