package api

import (
	"context"
	"strings"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/workflows"
)

func init() {
	acctRef := []Param{
		{Name: "id", Type: TUUID, Description: "the account; or give account and domainid"},
		{Name: "account", Type: TString, Description: "the account's name (with domainid)"},
		{Name: "domainid", Type: TUUID, Description: "the account's domain (with account)"},
	}
	Register(
		&Command{
			Name: "createAccount", Description: "Creates an account and its first user", Access: AccessAdmins,
			Params: []Param{
				{Name: "username", Type: TString, Required: true, Description: "unique username within the domain"},
				{Name: "password", Type: TString, Required: true, Description: "the user's password (stored as a bcrypt hash)"},
				{Name: "email", Type: TString, Required: true, Description: "the user's email"},
				{Name: "firstname", Type: TString, Required: true, Description: "the user's first name"},
				{Name: "lastname", Type: TString, Required: true, Description: "the user's last name"},
				{Name: "account", Type: TString, Description: "name of the account; the username when absent"},
				{Name: "accounttype", Type: TInteger, Description: "0 user, 1 root admin, 2 domain admin; or give roleid"},
				{Name: "roleid", Type: TUUID, Description: "the account's role; or give accounttype"},
				{Name: "domainid", Type: TUUID, Description: "the account's domain; the caller's domain when absent"},
				{Name: "networkdomain", Type: TString, Description: "network domain of the account's networks"},
				{Name: "timezone", Type: TString, Description: "the user's time zone"},
				{Name: "accountdetails", Type: TMap, Description: "details of the account (ignored)"},
				{Name: "accountid", Type: TString, Description: "the UUID to give the account"},
				{Name: "userid", Type: TString, Description: "the UUID to give the user"},
			},
			ResponseName: "account", Response: accountFields, Handler: createAccount,
		},
		&Command{
			Name: "listAccounts", Description: "Lists accounts and provides detailed account information for listed accounts", Access: AccessAll,
			Params: append(ListParams(),
				Param{Name: "id", Type: TUUID, Description: "list the account with this id"},
				Param{Name: "name", Type: TString, Description: "list accounts with this name"},
				Param{Name: "accounttype", Type: TInteger, Description: "list accounts of this type"},
				Param{Name: "state", Type: TString, Description: "list accounts in this state"},
				Param{Name: "iscleanuprequired", Type: TBoolean, Description: "list accounts that need cleanup"},
				Param{Name: "domainid", Type: TUUID, Description: "list accounts of this domain"},
				Param{Name: "isrecursive", Type: TBoolean, Description: "with domainid, include its subdomains"},
				Param{Name: "listall", Type: TBoolean, Description: "list every account the caller may see"},
				Param{Name: "details", Type: TList, Of: TString, Description: "details to show: all, resource, min"},
				Param{Name: "showicon", Type: TBoolean, Description: "show the account's icon (none are stored)"},
			),
			ResponseName: "account", Response: accountFields, Handler: listAccounts,
		},
		&Command{
			Name: "updateAccount", Description: "Updates account information for the authenticated user", Access: AccessAdmins,
			Params: append(append([]Param{}, acctRef...),
				Param{Name: "newname", Type: TString, Description: "new name of the account"},
				Param{Name: "networkdomain", Type: TString, Description: "new network domain"},
				Param{Name: "roleid", Type: TUUID, Description: "new role, of the same type"},
				Param{Name: "accountdetails", Type: TMap, Description: "details of the account (ignored)"},
			),
			ResponseName: "account", Response: accountFields, Handler: updateAccount,
		},
		&Command{
			Name: "disableAccount", Description: "Disables an account", Access: AccessAdmins, Async: true,
			Params:       append([]Param{{Name: "lock", Type: TBoolean, Required: true, Description: "true locks the account (its users cannot log in); false disables it"}}, acctRef...),
			ResponseName: "account", Response: accountFields, Handler: disableAccount,
		},
		&Command{
			Name: "enableAccount", Description: "Enables an account", Access: AccessAdmins,
			Params: acctRef, ResponseName: "account", Response: accountFields, Handler: enableAccount,
		},
		&Command{
			Name: "deleteAccount", Description: "Deletes an account and everything it owns", Access: AccessAdmins, Async: true,
			Params:       []Param{{Name: "id", Type: TUUID, Required: true, Description: "the account"}},
			ResponseName: "success", Response: tenancySuccessFields, Handler: deleteAccount,
		},
	)
	RegisterRenderer("Account", func(ctx context.Context, s *Server, id string) (any, error) {
		var a models.Account
		if err := s.DB.NewSelect().Model(&a).Where("uuid = ?", id).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
			return nil, models.NotFound(err, "account "+id)
		}
		views, err := accountViews(ctx, s.DB, []models.Account{a}, nil)
		if err != nil {
			return nil, err
		}
		return views[0], nil
	})
}

var accountFields = []Field{
	{"id", "string", "the id of the account"},
	{"name", "string", "the name of the account"},
	{"accounttype", "integer", "account type (admin, domain-admin, user)"},
	{"roleid", "string", "the ID of the role"},
	{"rolename", "string", "the name of the role"},
	{"roletype", "string", "the type of the role (Admin, DomainAdmin, User)"},
	{"domainid", "string", "id of the Domain the account belongs to"},
	{"domain", "string", "name of the Domain the account belongs to"},
	{"domainpath", "string", "path of the Domain the account belongs to"},
	{"state", "string", "the state of the account"},
	{"created", "date", "the date when this account was created"},
	{"networkdomain", "string", "the network domain"},
	{"isdefault", "boolean", "true if account is default, false otherwise"},
	{"iscleanuprequired", "boolean", "true if the account requires cleanup"},
	{"user", "list", "the list of users associated with account"},
	{"vmlimit", "string", "the total number of virtual machines that can be deployed by this account"},
	{"vmtotal", "long", "the total number of virtual machines deployed by this account"},
}

// AccountView is an account as listAccounts shows it (cloudstack-go Account).
type AccountView struct {
	ID                string     `json:"id"`
	Name              string     `json:"name"`
	AccountType       int        `json:"accounttype"`
	RoleID            string     `json:"roleid"`
	RoleName          string     `json:"rolename"`
	RoleType          string     `json:"roletype"`
	DomainID          string     `json:"domainid"`
	Domain            string     `json:"domain"`
	DomainPath        string     `json:"domainpath"`
	State             string     `json:"state"`
	Created           string     `json:"created"`
	NetworkDomain     string     `json:"networkdomain,omitempty"`
	IsDefault         bool       `json:"isdefault"`
	IsCleanupRequired bool       `json:"iscleanuprequired"`
	ReceivedBytes     int64      `json:"receivedbytes"`
	SentBytes         int64      `json:"sentbytes"`
	VMRunning         int        `json:"vmrunning"`
	VMStopped         int        `json:"vmstopped"`
	User              []UserView `json:"user"`
	ResourceCounts
}

// owner is an account with its domain and role, for rendering.
type owner struct {
	Account models.Account
	Domain  models.Domain
	Role    models.Role
}

// loadOwners loads accounts (removed ones too) with their domains and roles.
func loadOwners(ctx context.Context, db bun.IDB, accountIDs []int64) (map[int64]*owner, error) {
	out := map[int64]*owner{}
	if len(accountIDs) == 0 {
		return out, nil
	}
	var accts []models.Account
	if err := db.NewSelect().Model(&accts).Where("id IN (?)", bun.List(accountIDs)).WhereAllWithDeleted().Scan(ctx); err != nil {
		return nil, err
	}
	return ownersOf(ctx, db, accts)
}

func ownersOf(ctx context.Context, db bun.IDB, accts []models.Account) (map[int64]*owner, error) {
	out := map[int64]*owner{}
	if len(accts) == 0 {
		return out, nil
	}
	var domIDs, roleIDs []int64
	for _, a := range accts {
		domIDs = append(domIDs, a.DomainID)
		roleIDs = append(roleIDs, a.RoleID)
	}
	var doms []models.Domain
	if err := db.NewSelect().Model(&doms).Where("id IN (?)", bun.List(domIDs)).WhereAllWithDeleted().Scan(ctx); err != nil {
		return nil, err
	}
	var roles []models.Role
	if err := db.NewSelect().Model(&roles).Where("id IN (?)", bun.List(roleIDs)).WhereAllWithDeleted().Scan(ctx); err != nil {
		return nil, err
	}
	dm := map[int64]models.Domain{}
	for _, d := range doms {
		dm[d.ID] = d
	}
	rm := map[int64]models.Role{}
	for _, r := range roles {
		rm[r.ID] = r
	}
	for _, a := range accts {
		out[a.ID] = &owner{Account: a, Domain: dm[a.DomainID], Role: rm[a.RoleID]}
	}
	return out, nil
}

// domainPath is the path CloudStack shows for an owner's domain.
func (o *owner) domainPath() string {
	if !o.Domain.Removed.IsZero() {
		return o.Domain.Name
	}
	return DisplayPath(o.Domain.Path)
}

// accountViews renders accounts with their users. caller decides whether
// users' API keys show (nil: a job result, shown to the job's caller, who
// administers the account).
func accountViews(ctx context.Context, db bun.IDB, accts []models.Account, caller *Call) ([]AccountView, error) {
	owners, err := ownersOf(ctx, db, accts)
	if err != nil {
		return nil, err
	}
	ids := make([]int64, 0, len(accts))
	for _, a := range accts {
		ids = append(ids, a.ID)
	}
	usersByAcct := map[int64][]models.User{}
	if len(ids) > 0 {
		var users []models.User
		if err := db.NewSelect().Model(&users).Where("account_id IN (?)", bun.List(ids)).Order("id").Scan(ctx); err != nil {
			return nil, err
		}
		for _, u := range users {
			usersByAcct[u.AccountID] = append(usersByAcct[u.AccountID], u)
		}
	}
	counts, err := accountsResourceCounts(ctx, db, accts)
	if err != nil {
		return nil, err
	}
	out := make([]AccountView, 0, len(accts))
	for _, a := range accts {
		o := owners[a.ID]
		v := AccountView{
			ID: a.UUID, Name: a.Name, AccountType: a.Type, RoleID: o.Role.UUID, RoleName: o.Role.Name, RoleType: o.Role.Type,
			DomainID: o.Domain.UUID, Domain: o.Domain.Name, DomainPath: o.domainPath(), State: a.State,
			Created: FormatTime(a.Created), NetworkDomain: a.NetworkDomain,
			IsDefault:         a.UUID == models.AdminAccountUUID || a.UUID == models.SystemAccountUUID,
			IsCleanupRequired: a.NeedsCleanup, User: []UserView{}, ResourceCounts: counts[a.ID],
		}
		for _, u := range usersByAcct[a.ID] {
			v.User = append(v.User, userView(&u, o, caller))
		}
		out = append(out, v)
	}
	return out, nil
}

// accountRef finds the account a command names by id, or by account name
// and domainid, and checks the caller administers it (531 otherwise).
func (c *Call) accountRef() (*owner, error) {
	var a models.Account
	switch {
	case c.Has("id"):
		if err := c.S.DB.NewSelect().Model(&a).Where("uuid = ?", c.Str("id")).Limit(1).Scan(c.Ctx); err != nil {
			if isNoRows(err) {
				return nil, cserr.Param("Unable to find account by id %s", c.Str("id"))
			}
			return nil, err
		}
	case c.Has("account"):
		dom := &c.Caller.Domain
		if c.Has("domainid") {
			d, err := c.DomainByUUID(c.Str("domainid"))
			if err != nil {
				return nil, err
			}
			dom = d
		}
		if err := c.S.DB.NewSelect().Model(&a).Where("domain_id = ? AND name = ?", dom.ID, c.Str("account")).Limit(1).Scan(c.Ctx); err != nil {
			if isNoRows(err) {
				return nil, cserr.Param("Unable to find account %s in domain %s", clip(c.Str("account"), 64), dom.UUID)
			}
			return nil, err
		}
	default:
		return nil, cserr.Param("Either id or account and domainid must be given")
	}
	owners, err := ownersOf(c.Ctx, c.S.DB, []models.Account{a})
	if err != nil {
		return nil, err
	}
	o := owners[a.ID]
	if !c.CanAdminAccount(&o.Account, &o.Domain) {
		return nil, cserr.New(cserr.AccountError, "The caller does not have permission to operate on account %s", a.UUID)
	}
	return o, nil
}

// roleFor resolves createAccount's accounttype/roleid into a role and the
// account type it implies.
func (c *Call) roleFor() (models.Role, int, error) {
	var role models.Role
	typeOf := func(r models.Role) int {
		switch r.Type {
		case models.RoleTypeAdmin:
			return models.AccountTypeAdmin
		case models.RoleTypeDomainAdmin:
			return models.AccountTypeDomainAdmin
		}
		return models.AccountTypeUser
	}
	switch {
	case c.Has("roleid"):
		if err := c.S.DB.NewSelect().Model(&role).Where("uuid = ?", c.Str("roleid")).Limit(1).Scan(c.Ctx); err != nil {
			if isNoRows(err) {
				return role, 0, cserr.Param("Unable to find role by id %s", c.Str("roleid"))
			}
			return role, 0, err
		}
		if c.Has("accounttype") && int(c.Int("accounttype", 0)) != typeOf(role) {
			return role, 0, cserr.Param("accounttype %d does not match the type of role %s (%s)", c.Int("accounttype", 0), role.Name, role.Type)
		}
	case c.Has("accounttype"):
		var id string
		switch c.Int("accounttype", -1) {
		case models.AccountTypeUser:
			id = models.RoleUserUUID
		case models.AccountTypeAdmin:
			id = models.RoleRootAdminUUID
		case models.AccountTypeDomainAdmin:
			id = models.RoleDomainAdminUUID
		default:
			return role, 0, cserr.Param("Invalid accounttype %d: 0 (user), 1 (root admin) or 2 (domain admin) expected", c.Int("accounttype", 0))
		}
		if err := c.S.DB.NewSelect().Model(&role).Where("uuid = ?", id).Limit(1).Scan(c.Ctx); err != nil {
			return role, 0, err
		}
	default:
		return role, 0, cserr.Param("Both account type and role ID are not provided: give accounttype or roleid")
	}
	if role.Type == models.RoleTypeAdmin && !c.Caller.IsRootAdmin() {
		return role, 0, cserr.New(cserr.AccountError, "Only a root admin may create root admin accounts")
	}
	return role, typeOf(role), nil
}

// optionalUUID reads a caller-chosen UUID parameter, or makes one.
func (c *Call) optionalUUID(name string) (string, error) {
	v := c.Str(name)
	if v == "" {
		return models.NewUUID(), nil
	}
	if _, err := uuid.Parse(v); err != nil || len(v) != 36 {
		return "", cserr.Param("Invalid value %q for parameter %s: not a UUID", clip(v, 64), name)
	}
	return strings.ToLower(v), nil
}

// usernameTaken tells whether a live user of domain domainID has username.
func usernameTaken(ctx context.Context, db bun.IDB, domainID int64, username string, except int64) (bool, error) {
	return db.NewSelect().Model((*models.User)(nil)).
		Join("JOIN accounts AS a ON a.id = ?TableAlias.account_id").
		Where("a.domain_id = ? AND a.removed IS NULL", domainID).
		Where("?TableAlias.username = ? AND ?TableAlias.id <> ?", username, except).Exists(ctx)
}

func checkName(what, v string) (string, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return "", cserr.Param("%s must not be empty", what)
	}
	if strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 }) {
		return "", cserr.Param("%s must not contain control characters", what)
	}
	return v, nil
}

func createAccount(c *Call) (any, error) {
	username, err := checkName("username", c.Str("username"))
	if err != nil {
		return nil, err
	}
	name := username
	if c.Has("account") {
		if name, err = checkName("account", c.Str("account")); err != nil {
			return nil, err
		}
	}
	if err := checkNetworkDomain(c.Str("networkdomain")); err != nil {
		return nil, err
	}
	dom := c.Caller.Domain
	if c.Has("domainid") {
		d, err := c.DomainByUUID(c.Str("domainid"))
		if err != nil {
			return nil, err
		}
		dom = *d
	}
	if !c.CanAccessDomain(&dom) {
		return nil, cserr.New(cserr.AccountError, "The caller does not have access to domain %s", dom.UUID)
	}
	if dom.State != "Active" {
		return nil, cserr.Param("Domain %s is not active (it is being deleted)", dom.UUID)
	}
	role, typ, err := c.roleFor()
	if err != nil {
		return nil, err
	}
	acctID, err := c.optionalUUID("accountid")
	if err != nil {
		return nil, err
	}
	userID, err := c.optionalUUID("userid")
	if err != nil {
		return nil, err
	}
	hash, err := HashPassword(c.Str("password"))
	if err != nil {
		return nil, err
	}
	now := models.Now()
	acct := models.Account{UUID: acctID, Name: name, DomainID: dom.ID, Type: typ, RoleID: role.ID, State: "enabled",
		NetworkDomain: c.Str("networkdomain"), Created: now}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if ok, err := tx.NewSelect().Model((*models.Account)(nil)).Where("domain_id = ? AND name = ?", dom.ID, name).Exists(ctx); err != nil {
			return err
		} else if ok {
			return cserr.Param("The specified account: %s already exists in domain %s", clip(name, 64), DisplayPath(dom.Path))
		}
		if ok, err := usernameTaken(ctx, tx, dom.ID, username, 0); err != nil {
			return err
		} else if ok {
			return cserr.Param("The user %s already exists in domain %s", clip(username, 64), DisplayPath(dom.Path))
		}
		if _, err := tx.NewInsert().Model(&acct).Exec(ctx); err != nil {
			if isDuplicate(err) {
				return cserr.Param("An account with id %s already exists", acctID)
			}
			return err
		}
		u := models.User{UUID: userID, AccountID: acct.ID, Username: username, PasswordHash: hash,
			FirstName: c.Str("firstname"), LastName: c.Str("lastname"), Email: c.Str("email"), Timezone: c.Str("timezone"),
			State: "enabled", Created: now}
		if _, err := tx.NewInsert().Model(&u).Exec(ctx); err != nil {
			if isDuplicate(err) {
				return cserr.Param("A user with id %s already exists", userID)
			}
			return err
		}
		if err := tenancyEvent(ctx, tx, c.Caller, "ACCOUNT.CREATE", "Account", acct.UUID, "Account "+name+" created in domain "+DisplayPath(dom.Path)); err != nil {
			return err
		}
		return tenancyEvent(ctx, tx, c.Caller, "USER.CREATE", "User", u.UUID, "User "+username+" created in account "+name)
	})
	if err != nil {
		return nil, err
	}
	views, err := accountViews(c.Ctx, c.S.DB, []models.Account{acct}, c)
	if err != nil {
		return nil, err
	}
	return Object{"account": views[0]}, nil
}

func listAccounts(c *Call) (any, error) {
	scope, err := c.Visibility()
	if err != nil {
		return nil, err
	}
	var accts []models.Account
	q := c.S.DB.NewSelect().Model(&accts).
		Apply(scope.Modifier("account.id", "account.domain_id")).
		Where("account.uuid <> ?", models.SystemAccountUUID)
	if c.Has("accounttype") {
		q = q.Where("account.type = ?", c.Int("accounttype", 0))
	}
	if c.Has("state") {
		q = q.Where("LOWER(account.state) = ?", strings.ToLower(c.Str("state")))
	}
	if c.Has("iscleanuprequired") {
		q = q.Where("account.needs_cleanup = ?", c.Bool("iscleanuprequired", false))
	}
	q = c.Filtered(q, Filter{ID: "account.uuid", Name: "account.name", Keyword: []string{"account.name"}}).Order("account.id")
	n, err := c.ScanPage(q)
	if err != nil {
		return nil, err
	}
	views, err := accountViews(c.Ctx, c.S.DB, accts, c)
	if err != nil {
		return nil, err
	}
	return List{Key: "account", Count: n, Items: views}, nil
}

func updateAccount(c *Call) (any, error) {
	o, err := c.accountRef()
	if err != nil {
		return nil, err
	}
	a := o.Account
	if err := checkNetworkDomain(c.Str("networkdomain")); err != nil {
		return nil, err
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		q := tx.NewUpdate().Model((*models.Account)(nil)).Where("id = ?", a.ID)
		changed := false
		if c.Has("newname") {
			name, err := checkName("newname", c.Str("newname"))
			if err != nil {
				return err
			}
			if a.UUID == models.SystemAccountUUID {
				return cserr.Param("The system account cannot be renamed")
			}
			if name != a.Name {
				if ok, err := tx.NewSelect().Model((*models.Account)(nil)).Where("domain_id = ? AND name = ? AND id <> ?", a.DomainID, name, a.ID).Exists(ctx); err != nil {
					return err
				} else if ok {
					return cserr.Param("The specified account: %s already exists in domain %s", clip(name, 64), DisplayPath(o.Domain.Path))
				}
				q, a.Name, changed = q.Set("name = ?", name), name, true
			}
		}
		if c.Has("networkdomain") {
			q, a.NetworkDomain, changed = q.Set("network_domain = ?", c.Str("networkdomain")), c.Str("networkdomain"), true
		}
		if c.Has("roleid") {
			var r models.Role
			if err := tx.NewSelect().Model(&r).Where("uuid = ?", c.Str("roleid")).Limit(1).Scan(ctx); err != nil {
				if isNoRows(err) {
					return cserr.Param("Unable to find role by id %s", c.Str("roleid"))
				}
				return err
			}
			if r.Type != o.Role.Type {
				return cserr.Param("The new role must be of the account's role type %s", o.Role.Type)
			}
			q, a.RoleID, changed = q.Set("role_id = ?", r.ID), r.ID, true
		}
		if !changed {
			return nil
		}
		if _, err := q.Exec(ctx); err != nil {
			return err
		}
		return tenancyEvent(ctx, tx, c.Caller, "ACCOUNT.UPDATE", "Account", a.UUID, "Account "+a.Name+" updated")
	})
	if err != nil {
		return nil, err
	}
	c.S.InvalidateKeys()
	views, err := accountViews(c.Ctx, c.S.DB, []models.Account{a}, c)
	if err != nil {
		return nil, err
	}
	return Object{"account": views[0]}, nil
}

// refuseSpecialAccount refuses to disable or delete (verb) the system and
// admin accounts, or the caller's own account.
func (c *Call) refuseSpecialAccount(o *owner, verb string) error {
	if o.Account.UUID == models.SystemAccountUUID || o.Account.UUID == models.AdminAccountUUID {
		return cserr.New(cserr.AccountError, "Account %s is a system account and cannot be %sd", o.Account.Name, verb)
	}
	if o.Account.ID == c.Caller.Account.ID {
		return cserr.Param("An account cannot %s itself", verb)
	}
	return nil
}

func disableAccount(c *Call) (any, error) {
	o, err := c.accountRef()
	if err != nil {
		return nil, err
	}
	if err := c.refuseSpecialAccount(o, "disable"); err != nil {
		return nil, err
	}
	resp, err := c.StartJob(JobSpec{
		Workflow:     workflows.DisableAccount,
		Input:        workflows.DisableAccountInput{AccountUUID: o.Account.UUID, Lock: c.Bool("lock", false), Actor: actorOf(c.Caller)},
		InstanceType: "Account", InstanceUUID: o.Account.UUID, ResponseID: o.Account.UUID,
		Summary: "disable account " + o.Account.Name,
	})
	if err != nil {
		return nil, err
	}
	c.S.InvalidateKeys()
	return resp, nil
}

func enableAccount(c *Call) (any, error) {
	o, err := c.accountRef()
	if err != nil {
		return nil, err
	}
	a := o.Account
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if a.State != "enabled" {
			if err := models.Transition(ctx, tx, (*models.Account)(nil), a.ID, "enabled", []string{a.State}, nil); err != nil {
				return cserr.Param("Account %s changed state meanwhile; try again", a.Name)
			}
			a.State = "enabled"
		}
		return tenancyEvent(ctx, tx, c.Caller, "ACCOUNT.ENABLE", "Account", a.UUID, "Account "+a.Name+" enabled")
	})
	if err != nil {
		return nil, err
	}
	c.S.InvalidateKeys()
	views, err := accountViews(c.Ctx, c.S.DB, []models.Account{a}, c)
	if err != nil {
		return nil, err
	}
	return Object{"account": views[0]}, nil
}

func deleteAccount(c *Call) (any, error) {
	o, err := c.accountRef()
	if err != nil {
		return nil, err
	}
	if err := c.refuseSpecialAccount(o, "delete"); err != nil {
		return nil, err
	}
	resp, err := c.StartJob(JobSpec{
		Workflow:     workflows.DeleteAccount,
		Input:        workflows.DeleteAccountInput{AccountUUID: o.Account.UUID, Actor: actorOf(c.Caller)},
		InstanceType: "Account", InstanceUUID: o.Account.UUID,
		Summary: "delete account " + o.Account.Name + " of domain " + o.domainPath(),
	})
	if err != nil {
		return nil, err
	}
	c.S.InvalidateKeys()
	return resp, nil
}
