package api

import (
	"context"
	"database/sql"
	"errors"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
)

// ruleTTL bounds how long another process keeps applying a role's old
// permission rules; local changes invalidate at once.
const ruleTTL = 5 * time.Second

// roleRule is one compiled permission rule.
type roleRule struct {
	pattern string // lower-cased; '*' matches any run of characters
	allow   bool
}

type ruleSet struct {
	rules   []roleRule
	expires time.Time
}

type ruleCache struct {
	mu sync.RWMutex
	m  map[int64]*ruleSet
}

func (c *ruleCache) get(roleID int64) *ruleSet {
	c.mu.RLock()
	e := c.m[roleID]
	c.mu.RUnlock()
	if e == nil || time.Now().After(e.expires) {
		return nil
	}
	return e
}

func (c *ruleCache) put(roleID int64, e *ruleSet) {
	c.mu.Lock()
	if c.m == nil {
		c.m = map[int64]*ruleSet{}
	}
	c.m[roleID] = e
	c.mu.Unlock()
}

func (c *ruleCache) drop(roleID int64) {
	c.mu.Lock()
	delete(c.m, roleID)
	c.mu.Unlock()
}

func (c *ruleCache) clear() {
	c.mu.Lock()
	c.m = nil
	c.mu.Unlock()
}

// roleRules returns a role's rules in evaluation order, cached for ruleTTL.
func (s *Server) roleRules(ctx context.Context, roleID int64) ([]roleRule, error) {
	if e := s.keys.rules.get(roleID); e != nil {
		return e.rules, nil
	}
	var perms []models.RolePermission
	err := s.DB.NewSelect().Model(&perms).Where("role_id = ?", roleID).
		Order("sort_order ASC", "id ASC").Scan(ctx)
	if err != nil {
		return nil, err
	}
	rules := make([]roleRule, len(perms))
	for i, p := range perms {
		rules[i] = roleRule{pattern: strings.ToLower(p.Rule), allow: strings.EqualFold(p.Permission, "allow")}
	}
	s.keys.rules.put(roleID, &ruleSet{rules: rules, expires: time.Now().Add(ruleTTL)})
	return rules, nil
}

// allowed decides whether the caller may call cmd: the first of its role's
// permission rules that matches the command name decides; with none
// matching, the command's declared Access for the role's type does
// (read-only user roles get only AccessReadOnly commands). If the rules
// cannot be read it denies.
func (s *Server) allowed(ctx context.Context, c *Caller, cmd *Command) bool {
	rules, err := s.roleRules(ctx, c.Role.ID)
	if err != nil {
		s.Log.Error("cannot read role permissions; denying", "role", c.Role.UUID, "err", err)
		return false
	}
	name := strings.ToLower(cmd.Name)
	for _, r := range rules {
		if globMatch(r.pattern, name) {
			return r.allow
		}
	}
	return cmd.Access&c.access() != 0
}

// globMatch matches name against a pattern whose '*' matches any run of
// characters (both lower-cased).
func globMatch(pattern, name string) bool {
	if !strings.Contains(pattern, "*") {
		return pattern == name
	}
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(name, parts[0]) {
		return false
	}
	name = name[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(name, p)
		if i < 0 {
			return false
		}
		name = name[i+len(p):]
	}
	return strings.HasSuffix(name, last)
}

// --- commands ---

var roleFields = []Field{
	{"id", "string", "the ID of the role"},
	{"name", "string", "the name of the role"},
	{"type", "string", "the type of the role: Admin, DomainAdmin or User"},
	{"description", "string", "the description of the role"},
	{"isdefault", "boolean", "true if the role is a default role, which cannot be changed or deleted"},
	{"ispublic", "boolean", "true if the role is visible to all (always true)"},
	{"isreadonly", "boolean", "true if the role's default access is read-only (list and get commands)"},
}

var rolePermissionFields = []Field{
	{"id", "string", "the ID of the role permission"},
	{"roleid", "string", "the ID of the role"},
	{"rolename", "string", "the name of the role"},
	{"rule", "string", "the API name or wildcard rule"},
	{"permission", "string", "allow or deny"},
	{"description", "string", "the description of the role permission"},
}

func init() {
	Register(
		&Command{
			Name: "listRoles", Description: "Lists roles: all for the root admin, admin-or-lower types for a domain admin, its own for a user",
			Access: AccessAll,
			Params: append(ListParams(),
				Param{Name: "id", Type: TUUID, Description: "List the role with this ID"},
				Param{Name: "name", Type: TString, Description: "List roles with this name"},
				Param{Name: "type", Type: TString, Description: "List roles of this type: Admin, DomainAdmin or User"},
			),
			ResponseName: "role", Response: roleFields, Since: "4.9.0", Handler: listRoles,
		},
		&Command{
			Name: "createRole", Description: "Creates a role of a type, or a copy of another role with its permissions",
			Access: AccessRootAdmin,
			Params: []Param{
				{Name: "name", Type: TString, Required: true, Description: "the name of the role"},
				{Name: "type", Type: TString, Description: "the type of the role: Admin, DomainAdmin or User; give type or roleid"},
				{Name: "roleid", Type: TUUID, Description: "the ID of a role to copy, permissions included; give type or roleid", Since: "4.15.0"},
				{Name: "description", Type: TString, Description: "the description of the role"},
				{Name: "ispublic", Type: TBoolean, Description: "accepted for compatibility; every role is public"},
			},
			ResponseName: "role", Response: roleFields, Since: "4.9.0", Handler: createRole,
		},
		&Command{
			Name: "updateRole", Description: "Updates a role's name, type or description; default roles cannot be changed",
			Access: AccessRootAdmin,
			Params: []Param{
				{Name: "id", Type: TUUID, Required: true, Description: "the ID of the role"},
				{Name: "name", Type: TString, Description: "the new name"},
				{Name: "type", Type: TString, Description: "the new type: Admin, DomainAdmin or User (only for a role no account uses)"},
				{Name: "description", Type: TString, Description: "the new description"},
				{Name: "ispublic", Type: TBoolean, Description: "accepted for compatibility; every role is public"},
			},
			ResponseName: "role", Response: roleFields, Since: "4.9.0", Handler: updateRole,
		},
		&Command{
			Name: "deleteRole", Description: "Deletes a role no account uses; default roles cannot be deleted",
			Access:       AccessRootAdmin,
			Params:       []Param{{Name: "id", Type: TUUID, Required: true, Description: "the ID of the role"}},
			ResponseName: "success", Response: roleSuccessFields, Since: "4.9.0", Handler: deleteRole,
		},
		&Command{
			Name: "createRolePermission", Description: "Adds a permission rule at the end of a role's rules",
			Access: AccessRootAdmin,
			Params: []Param{
				{Name: "roleid", Type: TUUID, Required: true, Description: "the ID of the role"},
				{Name: "rule", Type: TString, Required: true, Description: "an API name or a wildcard such as list*"},
				{Name: "permission", Type: TString, Required: true, Description: "allow or deny"},
				{Name: "description", Type: TString, Description: "the description of the rule"},
			},
			ResponseName: "rolepermission", Response: rolePermissionFields, Since: "4.9.0", Handler: createRolePermission,
		},
		&Command{
			Name: "listRolePermissions", Description: "Lists role permission rules in evaluation order",
			Access:       AccessRootAdmin,
			Params:       []Param{{Name: "roleid", Type: TUUID, Description: "list the rules of this role"}},
			ResponseName: "rolepermission", Response: rolePermissionFields, Since: "4.9.0", Handler: listRolePermissions,
		},
		&Command{
			Name: "updateRolePermission", Description: "Changes a rule's permission (ruleid and permission) or reorders a role's rules (ruleorder)",
			Access: AccessRootAdmin,
			Params: []Param{
				{Name: "roleid", Type: TUUID, Required: true, Description: "the ID of the role"},
				{Name: "ruleid", Type: TUUID, Description: "the ID of the rule whose permission changes", Since: "4.11"},
				{Name: "permission", Type: TString, Description: "the new permission of ruleid: allow or deny", Since: "4.11"},
				{Name: "ruleorder", Type: TList, Of: TUUID, Length: 65535, Description: "every rule ID of the role, in the new evaluation order"},
			},
			ResponseName: "success", Response: roleSuccessFields, Since: "4.9.0", Handler: updateRolePermission,
		},
		&Command{
			Name: "deleteRolePermission", Description: "Deletes a role permission rule",
			Access:       AccessRootAdmin,
			Params:       []Param{{Name: "id", Type: TUUID, Required: true, Description: "the ID of the rule"}},
			ResponseName: "success", Response: roleSuccessFields, Since: "4.9.0", Handler: deleteRolePermission,
		},
	)
}

var roleSuccessFields = []Field{
	{"success", "boolean", "true if the operation succeeded"},
	{"displaytext", "string", "any text associated with the success or failure"},
}

// RoleView is a role as the API shows it (cloudstack-go's Role).
type RoleView struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Type        string `json:"type"`
	Description string `json:"description,omitempty"`
	IsDefault   bool   `json:"isdefault"`
	IsPublic    bool   `json:"ispublic"`
	IsReadOnly  bool   `json:"isreadonly"`
}

func roleView(r *models.Role) RoleView {
	return RoleView{ID: r.UUID, Name: r.Name, Type: r.Type, Description: r.Description,
		IsDefault: r.IsDefault, IsPublic: true, IsReadOnly: r.ReadOnly}
}

// RolePermissionView is a rule as the API shows it (cloudstack-go's
// RolePermission).
type RolePermissionView struct {
	ID          string `json:"id"`
	RoleID      string `json:"roleid"`
	RoleName    string `json:"rolename"`
	Rule        string `json:"rule"`
	Permission  string `json:"permission"`
	Description string `json:"description,omitempty"`
}

func roleType(v string) (string, error) {
	for _, t := range []string{models.RoleTypeAdmin, models.RoleTypeDomainAdmin, models.RoleTypeUser} {
		if strings.EqualFold(v, t) {
			return t, nil
		}
	}
	return "", cserr.Param("Invalid role type %q: Admin, DomainAdmin or User expected", clip(v, 32))
}

func findRole(c *Call, id string) (*models.Role, error) {
	var r models.Role
	err := c.S.DB.NewSelect().Model(&r).Where("uuid = ?", id).Limit(1).Scan(c.Ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, cserr.Param("Unable to find role by id %s", id)
	}
	return &r, err
}

// escapeRoleLike escapes LIKE metacharacters with '!' (used with ESCAPE '!').
func escapeRoleLike(s string) string {
	return strings.NewReplacer("!", "!!", "%", "!%", "_", "!_").Replace(s)
}

func listRoles(c *Call) (any, error) {
	var roles []models.Role
	q := c.S.DB.NewSelect().Model(&roles).Order("id ASC")
	switch {
	case c.Caller.IsRootAdmin():
	case c.Caller.IsDomainAdmin():
		q = q.Where("type IN (?)", bun.In([]string{models.RoleTypeDomainAdmin, models.RoleTypeUser}))
	default:
		q = q.Where("id = ?", c.Caller.Role.ID)
	}
	if id := c.Str("id"); id != "" {
		q = q.Where("uuid = ?", id)
	}
	if n := c.Str("name"); n != "" {
		q = q.Where("name = ?", n)
	}
	if t := c.Str("type"); t != "" {
		typ, err := roleType(t)
		if err != nil {
			return nil, err
		}
		q = q.Where("type = ?", typ)
	}
	if kw := c.Str("keyword"); kw != "" {
		q = q.Where("LOWER(name) LIKE ? ESCAPE '!'", "%"+escapeRoleLike(strings.ToLower(kw))+"%")
	}
	limit, offset := c.Page()
	n, err := q.Limit(int64(limit)).Offset(int64(offset)).ScanAndCount(c.Ctx)
	if err != nil {
		return nil, err
	}
	out := make([]RoleView, len(roles))
	for i := range roles {
		out[i] = roleView(&roles[i])
	}
	return List{Key: "role", Count: int(n), Items: out}, nil
}

func roleNameTaken(c *Call, db bun.IDB, name string, except int64) error {
	n, err := db.NewSelect().Model((*models.Role)(nil)).Where("name = ?", name).Where("id <> ?", except).Count(c.Ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		return cserr.Param("A role named %q already exists", clip(name, 64))
	}
	return nil
}

func createRole(c *Call) (any, error) {
	name := strings.TrimSpace(c.Str("name"))
	if name == "" {
		return nil, cserr.Param("Unable to execute API command createrole due to missing parameter name")
	}
	if c.Has("type") == c.Has("roleid") {
		return nil, cserr.Param("Give either type or roleid (a role to copy), not both or neither")
	}
	role := &models.Role{UUID: models.NewUUID(), Name: name, Description: c.Str("description"), Created: models.Now()}
	var src *models.Role
	if c.Has("roleid") {
		var err error
		if src, err = findRole(c, c.Str("roleid")); err != nil {
			return nil, err
		}
		role.Type, role.ReadOnly = src.Type, src.ReadOnly
		if role.Description == "" {
			role.Description = src.Description
		}
	} else {
		t, err := roleType(c.Str("type"))
		if err != nil {
			return nil, err
		}
		role.Type = t
	}
	err := c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if err := roleNameTaken(c, tx, name, 0); err != nil {
			return err
		}
		if _, err := tx.NewInsert().Model(role).Exec(ctx); err != nil {
			return err
		}
		if src == nil {
			return nil
		}
		var perms []models.RolePermission
		if err := tx.NewSelect().Model(&perms).Where("role_id = ?", src.ID).Order("sort_order ASC", "id ASC").Scan(ctx); err != nil {
			return err
		}
		for i := range perms {
			perms[i].ID, perms[i].UUID, perms[i].RoleID, perms[i].SortOrder = 0, models.NewUUID(), role.ID, i
		}
		if len(perms) > 0 {
			_, err := tx.NewInsert().Model(&perms).Exec(ctx)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return Object{"role": roleView(role)}, nil
}

func updateRole(c *Call) (any, error) {
	role, err := findRole(c, c.Str("id"))
	if err != nil {
		return nil, err
	}
	if role.IsDefault {
		return nil, cserr.Param("Default roles cannot be changed")
	}
	q := c.S.DB.NewUpdate().Model(role).WherePK()
	changed := false
	if c.Has("name") {
		name := strings.TrimSpace(c.Str("name"))
		if name == "" {
			return nil, cserr.Param("A role's name cannot be empty")
		}
		if err := roleNameTaken(c, c.S.DB, name, role.ID); err != nil {
			return nil, err
		}
		role.Name, changed = name, true
		q = q.Set("name = ?", name)
	}
	if c.Has("description") {
		role.Description, changed = c.Str("description"), true
		q = q.Set("description = ?", role.Description)
	}
	if c.Has("type") {
		t, err := roleType(c.Str("type"))
		if err != nil {
			return nil, err
		}
		if t != role.Type {
			if n, err := roleUsers(c, role.ID); err != nil {
				return nil, err
			} else if n > 0 {
				return nil, cserr.InUse("The role's type cannot change while %d account(s) use it", n)
			}
			role.Type, changed = t, true
			q = q.Set("type = ?", t)
		}
	}
	if changed {
		if _, err := q.Exec(c.Ctx); err != nil {
			return nil, err
		}
		c.S.InvalidateKeys()
	}
	return Object{"role": roleView(role)}, nil
}

func roleUsers(c *Call, roleID int64) (int64, error) {
	return c.S.DB.NewSelect().Model((*models.Account)(nil)).Where("role_id = ?", roleID).Count(c.Ctx)
}

func deleteRole(c *Call) (any, error) {
	role, err := findRole(c, c.Str("id"))
	if err != nil {
		return nil, err
	}
	if role.IsDefault {
		return nil, cserr.Param("Default roles cannot be deleted")
	}
	if n, err := roleUsers(c, role.ID); err != nil {
		return nil, err
	} else if n > 0 {
		return nil, cserr.InUse("The role is in use by %d account(s); move them to another role first", n)
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewDelete().Model((*models.RolePermission)(nil)).Where("role_id = ?", role.ID).Exec(ctx); err != nil {
			return err
		}
		_, err := tx.NewDelete().Model(role).WherePK().Exec(ctx) // soft delete
		return err
	})
	if err != nil {
		return nil, err
	}
	c.S.keys.rules.drop(role.ID)
	return Success{Success: true}, nil
}

var ruleRe = regexp.MustCompile(`^[A-Za-z0-9*]{1,255}$`)

func permissionOf(v string) (string, error) {
	switch strings.ToLower(v) {
	case "allow":
		return "allow", nil
	case "deny":
		return "deny", nil
	}
	return "", cserr.Param("Invalid permission %q: allow or deny expected", clip(v, 32))
}

// editableRole finds a role whose rules may change: every role but the
// default root admin role, whose rules could lock every admin out.
func editableRole(c *Call, id string) (*models.Role, error) {
	role, err := findRole(c, id)
	if err != nil {
		return nil, err
	}
	if role.UUID == models.RoleRootAdminUUID {
		return nil, cserr.Param("The permissions of the default root admin role cannot be changed")
	}
	return role, nil
}

func createRolePermission(c *Call) (any, error) {
	role, err := editableRole(c, c.Str("roleid"))
	if err != nil {
		return nil, err
	}
	rule := c.Str("rule")
	if !ruleRe.MatchString(rule) {
		return nil, cserr.Param("Invalid rule %q: an API name or a wildcard of letters, digits and * expected", clip(rule, 64))
	}
	if !strings.Contains(rule, "*") {
		cmd := Lookup(rule)
		if cmd == nil {
			return nil, cserr.Param("Invalid rule %q: no such API", clip(rule, 64))
		}
		rule = cmd.Name
	}
	perm, err := permissionOf(c.Str("permission"))
	if err != nil {
		return nil, err
	}
	p := &models.RolePermission{UUID: models.NewUUID(), RoleID: role.ID, Rule: rule, Permission: perm, Description: c.Str("description")}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var max sql.NullInt64
		if err := tx.NewSelect().Model((*models.RolePermission)(nil)).ColumnExpr("MAX(sort_order)").
			Where("role_id = ?", role.ID).Scan(ctx, &max); err != nil {
			return err
		}
		if max.Valid {
			p.SortOrder = int(max.Int64) + 1
		}
		_, err := tx.NewInsert().Model(p).Exec(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	c.S.keys.rules.drop(role.ID)
	return Object{"rolepermission": RolePermissionView{ID: p.UUID, RoleID: role.UUID, RoleName: role.Name,
		Rule: p.Rule, Permission: p.Permission, Description: p.Description}}, nil
}

func listRolePermissions(c *Call) (any, error) {
	var perms []models.RolePermission
	q := c.S.DB.NewSelect().Model(&perms).Order("role_id ASC", "sort_order ASC", "id ASC")
	if id := c.Str("roleid"); id != "" {
		role, err := findRole(c, id)
		if err != nil {
			return nil, err
		}
		q = q.Where("role_id = ?", role.ID)
	}
	if err := q.Scan(c.Ctx); err != nil {
		return nil, err
	}
	var roles []models.Role
	if err := c.S.DB.NewSelect().Model(&roles).Scan(c.Ctx); err != nil {
		return nil, err
	}
	byID := make(map[int64]*models.Role, len(roles))
	for i := range roles {
		byID[roles[i].ID] = &roles[i]
	}
	out := make([]RolePermissionView, 0, len(perms))
	for _, p := range perms {
		r := byID[p.RoleID]
		if r == nil { // a deleted role's leftovers
			continue
		}
		out = append(out, RolePermissionView{ID: p.UUID, RoleID: r.UUID, RoleName: r.Name, Rule: p.Rule,
			Permission: p.Permission, Description: p.Description})
	}
	return List{Key: "rolepermission", Count: len(out), Items: out}, nil
}

func updateRolePermission(c *Call) (any, error) {
	role, err := editableRole(c, c.Str("roleid"))
	if err != nil {
		return nil, err
	}
	order := c.List("ruleorder")
	switch {
	case len(order) > 0 && (c.Has("ruleid") || c.Has("permission")):
		return nil, cserr.Param("Give ruleorder, or ruleid and permission, not both")
	case len(order) > 0:
		err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			var perms []models.RolePermission
			if err := tx.NewSelect().Model(&perms).Where("role_id = ?", role.ID).Scan(ctx); err != nil {
				return err
			}
			byUUID := make(map[string]*models.RolePermission, len(perms))
			for i := range perms {
				byUUID[perms[i].UUID] = &perms[i]
			}
			if len(order) != len(perms) {
				return cserr.Param("ruleorder must list each of the role's %d rules once", len(perms))
			}
			for i, id := range order {
				p := byUUID[id]
				if p == nil {
					return cserr.Param("ruleorder must list each of the role's %d rules once", len(perms))
				}
				delete(byUUID, id)
				if _, err := tx.NewUpdate().Model(p).Set("sort_order = ?", i).WherePK().Exec(ctx); err != nil {
					return err
				}
			}
			return nil
		})
	case c.Has("ruleid") && c.Has("permission"):
		var perm string
		if perm, err = permissionOf(c.Str("permission")); err != nil {
			return nil, err
		}
		var res sql.Result
		res, err = c.S.DB.NewUpdate().Model((*models.RolePermission)(nil)).Set("permission = ?", perm).
			Where("uuid = ?", c.Str("ruleid")).Where("role_id = ?", role.ID).Exec(c.Ctx)
		if err == nil {
			if n, _ := res.RowsAffected(); n == 0 {
				// MySQL counts changed rows only: tell "same value" from "no rule".
				cnt, cerr := c.S.DB.NewSelect().Model((*models.RolePermission)(nil)).
					Where("uuid = ?", c.Str("ruleid")).Where("role_id = ?", role.ID).Count(c.Ctx)
				if cerr != nil {
					err = cerr
				} else if cnt == 0 {
					err = cserr.Param("Unable to find rule %s of role %s", c.Str("ruleid"), role.UUID)
				}
			}
		}
	default:
		return nil, cserr.Param("Give ruleorder, or ruleid and permission")
	}
	if err != nil {
		return nil, err
	}
	c.S.keys.rules.drop(role.ID)
	return Success{Success: true}, nil
}

func deleteRolePermission(c *Call) (any, error) {
	var p models.RolePermission
	err := c.S.DB.NewSelect().Model(&p).Where("uuid = ?", c.Str("id")).Limit(1).Scan(c.Ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, cserr.Param("Unable to find role permission by id %s", c.Str("id"))
	}
	if err != nil {
		return nil, err
	}
	var role models.Role
	if err := c.S.DB.NewSelect().Model(&role).Where("id = ?", p.RoleID).WhereAllWithDeleted().Scan(c.Ctx); err != nil {
		return nil, err
	}
	if role.UUID == models.RoleRootAdminUUID {
		return nil, cserr.Param("The permissions of the default root admin role cannot be changed")
	}
	if _, err := c.S.DB.NewDelete().Model(&p).WherePK().Exec(c.Ctx); err != nil {
		return nil, err
	}
	c.S.keys.rules.drop(p.RoleID)
	return Success{Success: true}, nil
}
