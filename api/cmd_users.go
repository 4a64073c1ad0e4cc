package api

import (
	"context"

	"github.com/uptrace/bun"
	"golang.org/x/crypto/bcrypt"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/secrets"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/workflows"
)

func init() {
	userID := []Param{{Name: "id", Type: TUUID, Required: true, Description: "the user"}}
	Register(
		&Command{
			Name: "createUser", Description: "Creates a user for an account that already exists", Access: AccessAdmins,
			Params: []Param{
				{Name: "account", Type: TString, Required: true, Description: "the account the user joins"},
				{Name: "domainid", Type: TUUID, Description: "the account's domain; the caller's domain when absent"},
				{Name: "username", Type: TString, Required: true, Description: "unique username within the domain"},
				{Name: "password", Type: TString, Required: true, Description: "the user's password (stored as a bcrypt hash)"},
				{Name: "email", Type: TString, Required: true, Description: "the user's email"},
				{Name: "firstname", Type: TString, Required: true, Description: "the user's first name"},
				{Name: "lastname", Type: TString, Required: true, Description: "the user's last name"},
				{Name: "timezone", Type: TString, Description: "the user's time zone"},
				{Name: "userid", Type: TString, Description: "the UUID to give the user"},
			},
			ResponseName: "user", Response: userFields, Handler: createUser,
		},
		&Command{
			Name: "listUsers", Description: "Lists user accounts", Access: AccessAll,
			Params: append(OwnerListParams(),
				Param{Name: "id", Type: TUUID, Description: "list the user with this id"},
				Param{Name: "username", Type: TString, Description: "list users with this username"},
				Param{Name: "accounttype", Type: TInteger, Description: "list users of accounts of this type"},
				Param{Name: "state", Type: TString, Description: "list users in this state"},
				Param{Name: "showicon", Type: TBoolean, Description: "show the user's icon (none are stored)"},
			),
			ResponseName: "user", Response: userFields, Handler: listUsers,
		},
		&Command{
			Name: "updateUser", Description: "Updates a user account", Access: AccessAllWrite,
			Params: append(append([]Param{}, userID...),
				Param{Name: "username", Type: TString, Description: "new username"},
				Param{Name: "password", Type: TString, Description: "new password"},
				Param{Name: "currentpassword", Type: TString, Description: "the current password; needed when users change their own password"},
				Param{Name: "email", Type: TString, Description: "new email"},
				Param{Name: "firstname", Type: TString, Description: "new first name"},
				Param{Name: "lastname", Type: TString, Description: "new last name"},
				Param{Name: "timezone", Type: TString, Description: "new time zone"},
				Param{Name: "userapikey", Type: TString, Description: "new API key (with usersecretkey)"},
				Param{Name: "usersecretkey", Type: TString, Description: "new secret key (with userapikey)"},
			),
			ResponseName: "user", Response: userFields, Handler: updateUser,
		},
		&Command{
			Name: "deleteUser", Description: "Deletes a user of an account", Access: AccessAdmins,
			Params: userID, ResponseName: "success", Response: tenancySuccessFields, Handler: deleteUser,
		},
		&Command{
			Name: "disableUser", Description: "Disables a user", Access: AccessAdmins, Async: true,
			Params: userID, ResponseName: "user", Response: userFields, Handler: disableUser,
		},
		&Command{
			Name: "enableUser", Description: "Enables a user", Access: AccessAdmins,
			Params: userID, ResponseName: "user", Response: userFields, Handler: enableUser,
		},
		&Command{
			Name: "lockUser", Description: "Locks a user", Access: AccessAdmins,
			Params: userID, ResponseName: "user", Response: userFields, Handler: lockUser,
		},
		&Command{
			Name: "registerUserKeys", Description: "Generates a new API key and secret key for a user", Access: AccessAllWrite,
			Params: userID, ResponseName: "userkeys", Response: userKeyFields, Handler: registerUserKeys,
		},
		&Command{
			Name: "getUserKeys", Description: "Returns the API key and secret key of a user", Access: AccessAll,
			Params: userID, ResponseName: "userkeys", Response: userKeyFields, Handler: getUserKeys,
		},
	)
	RegisterRenderer("User", func(ctx context.Context, s *Server, id string) (any, error) {
		var u models.User
		if err := s.DB.NewSelect().Model(&u).Where("uuid = ?", id).WhereAllWithDeleted().Limit(1).Scan(ctx); err != nil {
			return nil, models.NotFound(err, "user "+id)
		}
		owners, err := loadOwners(ctx, s.DB, []int64{u.AccountID})
		if err != nil {
			return nil, err
		}
		return userView(&u, owners[u.AccountID], nil), nil
	})
}

var userFields = []Field{
	{"id", "string", "the user ID"},
	{"username", "string", "the user name"},
	{"firstname", "string", "the user firstname"},
	{"lastname", "string", "the user lastname"},
	{"email", "string", "the user email address"},
	{"created", "date", "the date and time the user account was created"},
	{"state", "string", "the user state"},
	{"account", "string", "the account name of the user"},
	{"accountid", "string", "the account ID of the user"},
	{"accounttype", "integer", "the account type of the user"},
	{"domain", "string", "the domain name of the user"},
	{"domainid", "string", "the domain ID of the user"},
	{"roleid", "string", "the ID of the role"},
	{"rolename", "string", "the name of the role"},
	{"roletype", "string", "the type of the role"},
	{"timezone", "string", "the timezone user was created in"},
	{"apikey", "string", "the api key of the user (shown to the user and its admins)"},
	{"isdefault", "boolean", "true if user is default, false otherwise"},
	{"iscallerchilddomain", "boolean", "true if the user is in a subdomain of the caller's domain"},
	{"usersource", "string", "the source of the user: native"},
}

var userKeyFields = []Field{
	{"apikey", "string", "the api key of the registered user"},
	{"secretkey", "string", "the secret key of the registered user"},
}

// UserView is a user as listUsers shows it (cloudstack-go User). The secret
// key never shows in lists: as in CloudStack since getUserKeys exists, it is
// returned only by registerUserKeys and getUserKeys.
type UserView struct {
	ID                  string `json:"id"`
	Username            string `json:"username"`
	FirstName           string `json:"firstname"`
	LastName            string `json:"lastname"`
	Email               string `json:"email"`
	Created             string `json:"created"`
	State               string `json:"state"`
	Account             string `json:"account"`
	AccountID           string `json:"accountid"`
	AccountType         int    `json:"accounttype"`
	Domain              string `json:"domain"`
	DomainID            string `json:"domainid"`
	RoleID              string `json:"roleid"`
	RoleName            string `json:"rolename"`
	RoleType            string `json:"roletype"`
	Timezone            string `json:"timezone,omitempty"`
	APIKey              string `json:"apikey,omitempty"`
	IsDefault           bool   `json:"isdefault"`
	IsCallerChildDomain bool   `json:"iscallerchilddomain"`
	Is2FAEnabled        bool   `json:"is2faenabled"`
	Is2FAMandated       bool   `json:"is2famandated"`
	UserSource          string `json:"usersource"`
}

// UserKeys is the answer of registerUserKeys and getUserKeys.
type UserKeys struct {
	APIKey    string `json:"apikey,omitempty"`
	SecretKey string `json:"secretkey,omitempty"`
}

// userView renders a user. The API key shows to the user itself and to the
// admins of its account; c nil is a job result (its caller administers it).
func userView(u *models.User, o *owner, c *Call) UserView {
	v := UserView{
		ID: u.UUID, Username: u.Username, FirstName: u.FirstName, LastName: u.LastName, Email: u.Email,
		Created: FormatTime(u.Created), State: u.State, Timezone: u.Timezone, IsDefault: u.IsDefault, UserSource: "native",
	}
	if o != nil {
		v.Account, v.AccountID, v.AccountType = o.Account.Name, o.Account.UUID, o.Account.Type
		v.Domain, v.DomainID = o.Domain.Name, o.Domain.UUID
		v.RoleID, v.RoleName, v.RoleType = o.Role.UUID, o.Role.Name, o.Role.Type
	}
	show := c == nil
	if c != nil && c.Caller != nil && o != nil {
		show = u.ID == c.Caller.User.ID || c.CanAdminAccount(&o.Account, &o.Domain)
		v.IsCallerChildDomain = o.Domain.Path != c.Caller.Domain.Path && InSubtree(o.Domain.Path, c.Caller.Domain.Path)
	}
	if show && u.APIKey != nil {
		v.APIKey = *u.APIKey
	}
	return v
}

// userRef loads the user a command names by id with its owner. admin says
// whether the caller must administer the user's account; otherwise the user
// itself may act too. 431 when missing, 531 when not allowed.
func (c *Call) userRef(admin bool) (*models.User, *owner, error) {
	var u models.User
	if err := c.S.DB.NewSelect().Model(&u).Where("uuid = ?", c.Str("id")).Limit(1).Scan(c.Ctx); err != nil {
		if isNoRows(err) {
			return nil, nil, cserr.Param("Unable to find user by id %s", c.Str("id"))
		}
		return nil, nil, err
	}
	owners, err := loadOwners(c.Ctx, c.S.DB, []int64{u.AccountID})
	if err != nil {
		return nil, nil, err
	}
	o := owners[u.AccountID]
	if o == nil || !o.Account.Removed.IsZero() {
		return nil, nil, cserr.Param("Unable to find user by id %s", c.Str("id"))
	}
	self := u.ID == c.Caller.User.ID
	if !c.CanAdminAccount(&o.Account, &o.Domain) && (admin || !self) {
		return nil, nil, cserr.New(cserr.AccountError, "The caller does not have permission to operate on user %s", u.UUID)
	}
	return &u, o, nil
}

// refuseSpecialUser refuses to disable, lock or delete the caller itself, the
// system account's users and the default admin user.
func (c *Call) refuseSpecialUser(u *models.User, o *owner, verb string) error {
	if u.ID == c.Caller.User.ID {
		return cserr.Param("A user cannot %s itself", verb)
	}
	if o.Account.UUID == models.SystemAccountUUID || (u.IsDefault && o.Account.UUID == models.AdminAccountUUID) {
		return cserr.New(cserr.AccountError, "User %s is a system user and cannot be %sd", u.Username, verb)
	}
	return nil
}

func (c *Call) userResponse(u *models.User, o *owner) Object {
	return Object{"user": userView(u, o, c)}
}

func createUser(c *Call) (any, error) {
	username, err := checkName("username", c.Str("username"))
	if err != nil {
		return nil, err
	}
	dom := &c.Caller.Domain
	if c.Has("domainid") {
		if dom, err = c.DomainByUUID(c.Str("domainid")); err != nil {
			return nil, err
		}
	}
	var a models.Account
	if err := c.S.DB.NewSelect().Model(&a).Where("domain_id = ? AND name = ?", dom.ID, c.Str("account")).Limit(1).Scan(c.Ctx); err != nil {
		if isNoRows(err) {
			return nil, cserr.Param("Unable to find account %s in domain %s", clip(c.Str("account"), 64), dom.UUID)
		}
		return nil, err
	}
	owners, err := ownersOf(c.Ctx, c.S.DB, []models.Account{a})
	if err != nil {
		return nil, err
	}
	o := owners[a.ID]
	if !c.CanAdminAccount(&a, &o.Domain) {
		return nil, cserr.New(cserr.AccountError, "The caller does not have permission to add users to account %s", a.UUID)
	}
	if a.UUID == models.SystemAccountUUID {
		return nil, cserr.New(cserr.AccountError, "Users cannot be added to the system account")
	}
	id, err := c.optionalUUID("userid")
	if err != nil {
		return nil, err
	}
	hash, err := HashPassword(c.Str("password"))
	if err != nil {
		return nil, err
	}
	u := models.User{UUID: id, AccountID: a.ID, Username: username, PasswordHash: hash,
		FirstName: c.Str("firstname"), LastName: c.Str("lastname"), Email: c.Str("email"), Timezone: c.Str("timezone"),
		State: "enabled", Created: models.Now()}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if ok, err := usernameTaken(ctx, tx, dom.ID, username, 0); err != nil {
			return err
		} else if ok {
			return cserr.Param("The user %s already exists in domain %s", clip(username, 64), DisplayPath(dom.Path))
		}
		if _, err := tx.NewInsert().Model(&u).Exec(ctx); err != nil {
			if isDuplicate(err) {
				return cserr.Param("A user with id %s already exists", id)
			}
			return err
		}
		return tenancyEvent(ctx, tx, c.Caller, "USER.CREATE", "User", u.UUID, "User "+username+" created in account "+a.Name)
	})
	if err != nil {
		return nil, err
	}
	return c.userResponse(&u, o), nil
}

func listUsers(c *Call) (any, error) {
	scope, err := c.Visibility()
	if err != nil {
		return nil, err
	}
	var users []models.User
	q := c.S.DB.NewSelect().Model(&users).
		Join("JOIN accounts AS a ON a.id = ?TableAlias.account_id").
		Where("a.removed IS NULL").Where("a.uuid <> ?", models.SystemAccountUUID).
		Apply(scope.Modifier("a.id", "a.domain_id"))
	if c.Has("username") {
		q = q.Where("?TableAlias.username = ?", c.Str("username"))
	}
	if c.Has("accounttype") {
		q = q.Where("a.type = ?", c.Int("accounttype", 0))
	}
	if c.Has("state") {
		q = q.Where("LOWER(?TableAlias.state) = LOWER(?)", c.Str("state"))
	}
	q = c.Filtered(q, Filter{ID: "user.uuid", Keyword: []string{"user.username", "user.first_name", "user.last_name", "user.email", "a.name"}}).
		Order("user.id")
	n, err := c.ScanPage(q)
	if err != nil {
		return nil, err
	}
	ids := make([]int64, 0, len(users))
	for _, u := range users {
		ids = append(ids, u.AccountID)
	}
	owners, err := loadOwners(c.Ctx, c.S.DB, ids)
	if err != nil {
		return nil, err
	}
	views := make([]UserView, 0, len(users))
	for i := range users {
		views = append(views, userView(&users[i], owners[users[i].AccountID], c))
	}
	return List{Key: "user", Count: n, Items: views}, nil
}

func updateUser(c *Call) (any, error) {
	u, o, err := c.userRef(false)
	if err != nil {
		return nil, err
	}
	self := u.ID == c.Caller.User.ID
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		q := tx.NewUpdate().Model((*models.User)(nil)).Where("id = ?", u.ID)
		changed := false
		set := func(col string, v any) { q, changed = q.Set("? = ?", bun.Ident(col), v), true }
		if c.Has("username") {
			name, err := checkName("username", c.Str("username"))
			if err != nil {
				return err
			}
			if name != u.Username {
				if ok, err := usernameTaken(ctx, tx, o.Domain.ID, name, u.ID); err != nil {
					return err
				} else if ok {
					return cserr.Param("The user %s already exists in domain %s", clip(name, 64), DisplayPath(o.Domain.Path))
				}
				set("username", name)
				u.Username = name
			}
		}
		if c.Has("password") {
			if self {
				if !c.Has("currentpassword") {
					return cserr.Param("Changing your own password needs currentpassword")
				}
				if bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(c.Str("currentpassword"))) != nil {
					return cserr.Param("Current password is incorrect")
				}
			}
			hash, err := HashPassword(c.Str("password"))
			if err != nil {
				return err
			}
			set("password_hash", hash)
		}
		for param, col := range map[string]string{"email": "email", "firstname": "first_name", "lastname": "last_name", "timezone": "timezone"} {
			if c.Has(param) {
				set(col, c.Str(param))
			}
		}
		if c.Has("email") {
			u.Email = c.Str("email")
		}
		if c.Has("firstname") {
			u.FirstName = c.Str("firstname")
		}
		if c.Has("lastname") {
			u.LastName = c.Str("lastname")
		}
		if c.Has("timezone") {
			u.Timezone = c.Str("timezone")
		}
		if c.Has("userapikey") != c.Has("usersecretkey") {
			return cserr.Param("userapikey and usersecretkey must be given together")
		}
		if c.Has("userapikey") {
			key := c.Str("userapikey")
			if ok, err := tx.NewSelect().Model((*models.User)(nil)).Where("api_key = ? AND id <> ?", key, u.ID).WhereAllWithDeleted().Exists(ctx); err != nil {
				return err
			} else if ok {
				return cserr.Param("The API key is already in use")
			}
			sealed, err := c.S.Secrets.Encrypt(c.Str("usersecretkey"))
			if err != nil {
				return err
			}
			set("api_key", key)
			set("secret_key_cipher", sealed)
			u.APIKey = &key
		}
		if !changed {
			return nil
		}
		if _, err := q.Exec(ctx); err != nil {
			return err
		}
		return tenancyEvent(ctx, tx, c.Caller, "USER.UPDATE", "User", u.UUID, "User "+u.Username+" updated")
	})
	if err != nil {
		return nil, err
	}
	c.S.InvalidateKeys()
	return c.userResponse(u, o), nil
}

func deleteUser(c *Call) (any, error) {
	u, o, err := c.userRef(true)
	if err != nil {
		return nil, err
	}
	if err := c.refuseSpecialUser(u, o, "delete"); err != nil {
		return nil, err
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewDelete().Model((*models.Session)(nil)).Where("user_id = ?", u.ID).Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.NewUpdate().Model((*models.User)(nil)).Set("api_key = NULL").Set("secret_key_cipher = ''").
			Set("removed = ?", models.Now()).Where("id = ?", u.ID).Exec(ctx); err != nil {
			return err
		}
		return tenancyEvent(ctx, tx, c.Caller, "USER.DELETE", "User", u.UUID, "User "+u.Username+" of account "+o.Account.Name+" deleted")
	})
	if err != nil {
		return nil, err
	}
	c.S.InvalidateKeys()
	return Success{Success: true}, nil
}

func disableUser(c *Call) (any, error) {
	u, o, err := c.userRef(true)
	if err != nil {
		return nil, err
	}
	if err := c.refuseSpecialUser(u, o, "disable"); err != nil {
		return nil, err
	}
	resp, err := c.StartJob(JobSpec{
		Workflow: workflows.DisableUser, Input: workflows.DisableUserInput{UserUUID: u.UUID, Actor: actorOf(c.Caller)},
		InstanceType: "User", InstanceUUID: u.UUID, ResponseID: u.UUID, Summary: "disable user " + u.Username,
	})
	if err != nil {
		return nil, err
	}
	c.S.InvalidateKeys()
	return resp, nil
}

// setUserState is enableUser and lockUser.
func (c *Call) setUserState(state, eventType string) (any, error) {
	u, o, err := c.userRef(true)
	if err != nil {
		return nil, err
	}
	if state != "enabled" {
		if err := c.refuseSpecialUser(u, o, "lock"); err != nil {
			return nil, err
		}
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if u.State != state {
			if err := models.Transition(ctx, tx, (*models.User)(nil), u.ID, state, []string{u.State}, nil); err != nil {
				return cserr.Param("User %s changed state meanwhile; try again", u.Username)
			}
			u.State = state
		}
		if state != "enabled" {
			if _, err := tx.NewDelete().Model((*models.Session)(nil)).Where("user_id = ?", u.ID).Exec(ctx); err != nil {
				return err
			}
		}
		return tenancyEvent(ctx, tx, c.Caller, eventType, "User", u.UUID, "User "+u.Username+" "+state)
	})
	if err != nil {
		return nil, err
	}
	c.S.InvalidateKeys()
	return c.userResponse(u, o), nil
}

func enableUser(c *Call) (any, error) { return c.setUserState("enabled", "USER.ENABLE") }

func lockUser(c *Call) (any, error) { return c.setUserState("locked", "USER.LOCK") }

func registerUserKeys(c *Call) (any, error) {
	u, _, err := c.userRef(false)
	if err != nil {
		return nil, err
	}
	apiKey, secret := secrets.RandomKey(48), secrets.RandomKey(48)
	sealed, err := c.S.Secrets.Encrypt(secret)
	if err != nil {
		return nil, err
	}
	err = c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewUpdate().Model((*models.User)(nil)).Set("api_key = ?", apiKey).Set("secret_key_cipher = ?", sealed).
			Where("id = ?", u.ID).Exec(ctx); err != nil {
			return err
		}
		return tenancyEvent(ctx, tx, c.Caller, "REGISTER.USER.KEY", "User", u.UUID, "New API keys registered for user "+u.Username)
	})
	if err != nil {
		return nil, err
	}
	c.S.InvalidateKeys()
	return Object{"userkeys": UserKeys{APIKey: apiKey, SecretKey: secret}}, nil
}

func getUserKeys(c *Call) (any, error) {
	u, _, err := c.userRef(false)
	if err != nil {
		return nil, err
	}
	keys := UserKeys{}
	if u.APIKey != nil && u.SecretKeyCipher != "" {
		secret, err := c.S.Secrets.Decrypt(u.SecretKeyCipher)
		if err != nil {
			return nil, cserr.Internal("cannot read the user's secret key (request %s)", c.RequestID)
		}
		keys = UserKeys{APIKey: *u.APIKey, SecretKey: secret}
	}
	return Object{"userkeys": keys}, nil
}
