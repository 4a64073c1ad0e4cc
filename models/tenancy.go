package models

import (
	"time"

	"github.com/uptrace/bun"
)

// Region is the top of the hierarchy; one Nimbus deployment is one region.
type Region struct {
	bun.BaseModel `bun:"table:regions"`
	ID            int64     `bun:"id,pk,autoincrement"`
	UUID          string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	Name          string    `bun:"name,notnull,unique"`
	Endpoint      string    `bun:"endpoint"`
	Created       time.Time `bun:"created,notnull"`
}

// Domain is a node of the tenancy tree; Path is "/" for ROOT and
// "/child/grandchild/" below, so a subtree is a prefix match.
type Domain struct {
	bun.BaseModel `bun:"table:domains"`
	ID            int64     `bun:"id,pk,autoincrement"`
	UUID          string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	ParentID      *int64    `bun:"parent_id"`
	Name          string    `bun:"name,notnull"`
	Path          string    `bun:"path,notnull,unique"`
	Level         int       `bun:"level,notnull"`
	NetworkDomain string    `bun:"network_domain"`
	State         string    `bun:"state,notnull"` // Active, Inactive
	Created       time.Time `bun:"created,notnull"`
	Removed       time.Time `bun:"removed,soft_delete,nullzero"`
}

// Role types, as CloudStack names them.
const (
	RoleTypeAdmin       = "Admin"
	RoleTypeDomainAdmin = "DomainAdmin"
	RoleTypeUser        = "User"
)

// Account types as CloudStack numbers them in responses (accounttype).
const (
	AccountTypeUser        = 0
	AccountTypeAdmin       = 1
	AccountTypeDomainAdmin = 2
)

// Account owns resources inside a domain.
type Account struct {
	bun.BaseModel `bun:"table:accounts"`
	ID            int64     `bun:"id,pk,autoincrement"`
	UUID          string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	Name          string    `bun:"name,notnull"`
	DomainID      int64     `bun:"domain_id,notnull"`
	Type          int       `bun:"type,notnull"`
	RoleID        int64     `bun:"role_id,notnull"`
	State         string    `bun:"state,notnull"` // enabled, disabled, locked
	NetworkDomain string    `bun:"network_domain"`
	NeedsCleanup  bool      `bun:"needs_cleanup,notnull,default:false"` // a deleteAccount job failed part-way
	Created       time.Time `bun:"created,notnull"`
	Removed       time.Time `bun:"removed,soft_delete,nullzero"`
}

// User logs in with a password (bcrypt hash) or signs requests with an API
// key; the secret key is stored encrypted with the server key.
type User struct {
	bun.BaseModel   `bun:"table:users"`
	ID              int64     `bun:"id,pk,autoincrement"`
	UUID            string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	AccountID       int64     `bun:"account_id,notnull"`
	Username        string    `bun:"username,notnull"`
	PasswordHash    string    `bun:"password_hash,notnull"`
	FirstName       string    `bun:"first_name"`
	LastName        string    `bun:"last_name"`
	Email           string    `bun:"email"`
	Timezone        string    `bun:"timezone"`
	State           string    `bun:"state,notnull"` // enabled, disabled, locked
	APIKey          *string   `bun:"api_key,unique"`
	SecretKeyCipher string    `bun:"secret_key_cipher"`
	IsDefault       bool      `bun:"is_default,notnull"`
	Created         time.Time `bun:"created,notnull"`
	Removed         time.Time `bun:"removed,soft_delete,nullzero"`
}

// Role decides which commands its accounts may call.
type Role struct {
	bun.BaseModel `bun:"table:roles"`
	ID            int64     `bun:"id,pk,autoincrement"`
	UUID          string    `bun:"uuid,notnull,unique,type:varchar(40)"`
	Name          string    `bun:"name,notnull"`
	Type          string    `bun:"type,notnull"` // Admin, DomainAdmin, User
	Description   string    `bun:"description"`
	IsDefault     bool      `bun:"is_default,notnull"`
	ReadOnly      bool      `bun:"read_only,notnull"`
	Created       time.Time `bun:"created,notnull"`
	Removed       time.Time `bun:"removed,soft_delete,nullzero"`
}

// RolePermission allows or denies a command (or a wildcard such as list*)
// for a role; rules are evaluated in SortOrder, first match wins.
type RolePermission struct {
	bun.BaseModel `bun:"table:role_permissions"`
	ID            int64  `bun:"id,pk,autoincrement"`
	UUID          string `bun:"uuid,notnull,unique,type:varchar(40)"`
	RoleID        int64  `bun:"role_id,notnull"`
	Rule          string `bun:"rule,notnull"`
	Permission    string `bun:"permission,notnull"` // allow, deny
	Description   string `bun:"description"`
	SortOrder     int    `bun:"sort_order,notnull"`
}

// Session is a logged-in web/API session (login command).
type Session struct {
	bun.BaseModel `bun:"table:sessions"`
	ID            int64     `bun:"id,pk,autoincrement"`
	KeyHash       string    `bun:"key_hash,notnull,unique"` // sha256 of the session key
	UserID        int64     `bun:"user_id,notnull"`
	Created       time.Time `bun:"created,notnull"`
	Expires       time.Time `bun:"expires,notnull"`
}

// Configuration is a global setting (listConfigurations/updateConfiguration).
type Configuration struct {
	bun.BaseModel `bun:"table:configurations"`
	ID            int64     `bun:"id,pk,autoincrement"`
	Name          string    `bun:"name,notnull,unique"`
	Value         string    `bun:"value"`
	DefaultValue  string    `bun:"default_value"`
	Category      string    `bun:"category"`
	Description   string    `bun:"description"`
	Scope         string    `bun:"scope"` // global, zone, cluster, account...
	Updated       time.Time `bun:"updated,nullzero"`
}
