package api

import (
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
)

// Scope is the set of owners whose resources a list call may show, decided
// once per call by Visibility and applied to a query by Modifier.
type Scope struct {
	// All shows everything (a root admin with listall, or looking up an id).
	All bool
	// AccountIDs restricts to these accounts.
	AccountIDs []int64
	// DomainID restricts to accounts of this domain; with Recursive, of its
	// whole subtree (DomainPath is the domain's path).
	DomainID   int64
	DomainPath string
	Recursive  bool
}

// Visibility decides what the caller of a list command may see, from the
// parameters account, domainid, isrecursive, listall and id, following
// CloudStack's rule:
//   - a user sees its own account (domainid must be its own domain, account
//     its own account);
//   - with domainid (and optionally account) an admin sees that domain (its
//     subtree with isrecursive=true) or that account, provided the domain is
//     within the admin's reach (root admin: anywhere; domain admin: its own
//     domain subtree); otherwise 531;
//   - with listall=true a root admin sees everything and a domain admin its
//     domain subtree;
//   - looking up an id, admins see what they could see with listall;
//   - otherwise an admin sees its own account, as CloudStack does.
//
// projectid is ignored until projects exist.
func (c *Call) Visibility() (Scope, error) {
	caller := c.Caller
	own := Scope{AccountIDs: []int64{caller.Account.ID}}
	var dom *models.Domain
	if c.Has("domainid") {
		d, err := c.DomainByUUID(c.Str("domainid"))
		if err != nil {
			return Scope{}, err
		}
		if !c.CanAccessDomain(d) {
			return Scope{}, cserr.New(cserr.AccountError, "The caller does not have access to domain %s", d.UUID)
		}
		dom = d
	}
	if name := c.Str("account"); name != "" {
		d := dom
		if d == nil {
			d = &caller.Domain
		}
		var acct models.Account
		err := c.S.DB.NewSelect().Model(&acct).Where("domain_id = ? AND name = ?", d.ID, name).Limit(1).Scan(c.Ctx)
		if err != nil {
			if errors.Is(models.NotFound(err, ""), models.ErrNotFound) {
				return Scope{}, cserr.Param("Unable to find account %s in domain %s", clip(name, 64), d.UUID)
			}
			return Scope{}, err
		}
		if !c.CanSeeAccount(&acct, d) {
			return Scope{}, cserr.New(cserr.AccountError, "The caller does not have access to account %s", clip(name, 64))
		}
		return Scope{AccountIDs: []int64{acct.ID}}, nil
	}
	if !caller.IsAdmin() {
		return own, nil
	}
	if dom != nil {
		return Scope{DomainID: dom.ID, DomainPath: dom.Path, Recursive: c.Bool("isrecursive", false)}, nil
	}
	if c.Bool("listall", false) || c.Has("id") {
		if caller.IsRootAdmin() {
			return Scope{All: true}, nil
		}
		return Scope{DomainID: caller.Domain.ID, DomainPath: caller.Domain.Path, Recursive: true}, nil
	}
	return own, nil
}

// Modifier returns a query modifier (for SelectQuery.Apply) that keeps the
// rows whose owner columns fall in the scope. accountCol and domainCol name
// the owner columns of the listed table, qualified ("event.account_id").
func (s Scope) Modifier(accountCol, domainCol string) func(*bun.SelectQuery) *bun.SelectQuery {
	return func(q *bun.SelectQuery) *bun.SelectQuery {
		switch {
		case s.All:
			return q
		case len(s.AccountIDs) > 0:
			return q.Where("? IN (?)", bun.Ident(accountCol), bun.List(s.AccountIDs))
		case s.Recursive:
			return q.Where("? IN (?)", bun.Ident(domainCol), SubtreeIDs(q.DB(), s.DomainPath))
		default:
			return q.Where("? = ?", bun.Ident(domainCol), s.DomainID)
		}
	}
}

// SubtreeIDs is a subquery of the ids of the domain at path and its
// descendants (removed domains excluded). Paths are compared by prefix with
// SUBSTR rather than LIKE, so domain names with % or _ need no escaping.
func SubtreeIDs(db bun.IDB, path string) *bun.SelectQuery {
	return db.NewSelect().TableExpr("domains AS d_sub").Column("d_sub.id").
		Where("d_sub.removed IS NULL").
		Where("SUBSTR(d_sub.path, 1, ?) = ?", utf8.RuneCountInString(path), path)
}

// InSubtree tells whether path lies in the subtree rooted at root.
func InSubtree(path, root string) bool {
	return strings.HasPrefix(path, root)
}

// CanAccessDomain tells whether the caller may act in or list domain d: root
// admins anywhere, domain admins in their subtree, users in their domain.
func (c *Call) CanAccessDomain(d *models.Domain) bool {
	switch {
	case c.Caller.IsRootAdmin():
		return true
	case c.Caller.IsDomainAdmin():
		return InSubtree(d.Path, c.Caller.Domain.Path)
	default:
		return d.ID == c.Caller.Domain.ID
	}
}

// CanSeeAccount tells whether the caller may see account a (of domain d).
func (c *Call) CanSeeAccount(a *models.Account, d *models.Domain) bool {
	if a.ID == c.Caller.Account.ID || c.Caller.IsRootAdmin() {
		return true
	}
	return c.Caller.IsDomainAdmin() && InSubtree(d.Path, c.Caller.Domain.Path)
}

// CanAdminAccount tells whether the caller administers account a (of domain
// d): root admins every account, domain admins the accounts of their subtree
// except root-admin accounts. Users administer nothing.
func (c *Call) CanAdminAccount(a *models.Account, d *models.Domain) bool {
	switch {
	case c.Caller.IsRootAdmin():
		return true
	case c.Caller.IsDomainAdmin():
		return a.Type != models.AccountTypeAdmin && InSubtree(d.Path, c.Caller.Domain.Path)
	default:
		return false
	}
}

// DomainByUUID loads a domain (not removed), answering 431 when missing.
func (c *Call) DomainByUUID(id string) (*models.Domain, error) {
	var d models.Domain
	if err := c.S.DB.NewSelect().Model(&d).Where("uuid = ?", id).Limit(1).Scan(c.Ctx); err != nil {
		if errors.Is(models.NotFound(err, ""), models.ErrNotFound) {
			return nil, cserr.Param("Unable to find domain by id %s", clip(id, 64))
		}
		return nil, err
	}
	return &d, nil
}

// Filter names the columns the common list filters match.
type Filter struct {
	ID      string   // column the id parameter matches (a uuid column)
	Name    string   // column the name parameter matches exactly
	Keyword []string // columns the keyword matches, case-insensitively, as a substring
}

// Filtered adds the id, name and keyword filters of the request to q.
func (c *Call) Filtered(q *bun.SelectQuery, f Filter) *bun.SelectQuery {
	if f.ID != "" && c.Has("id") {
		q = q.Where("? = ?", bun.Ident(f.ID), c.Str("id"))
	}
	if f.Name != "" && c.Has("name") {
		q = q.Where("? = ?", bun.Ident(f.Name), c.Str("name"))
	}
	if kw := c.Str("keyword"); kw != "" && len(f.Keyword) > 0 {
		pat := "%" + likeEscape(strings.ToLower(kw)) + "%"
		q = q.WhereGroup(" AND ", func(q *bun.SelectQuery) *bun.SelectQuery {
			for _, col := range f.Keyword {
				q = q.WhereOr("LOWER(?) LIKE ? ESCAPE '!'", bun.Ident(col), pat)
			}
			return q
		})
	}
	return q
}

// likeEscape escapes LIKE's wildcards with '!' (the ESCAPE character used by
// Filtered: the same on MySQL and SQLite, unlike backslash).
func likeEscape(s string) string {
	return strings.NewReplacer("!", "!!", "%", "!%", "_", "!_").Replace(s)
}

// ScanPage applies the requested page to q, scans it and returns the total
// count of matching rows (CloudStack's count is the total, not the page).
func (c *Call) ScanPage(q *bun.SelectQuery, dest ...any) (int, error) {
	limit, offset := c.Page()
	n, err := q.Limit(int64(limit)).Offset(int64(offset)).ScanAndCount(c.Ctx, dest...)
	return int(n), err
}
