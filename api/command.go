// Package api serves CloudStack's wire protocol at /client/api: signed or
// session-authenticated requests, one table of commands that drives
// validation, role checks, listApis and the docs, and async commands that
// start Temporal workflows whose IDs are the job ids.
package api

import (
	"sort"
	"strings"
	"sync"
)

// ParamType is a parameter type as listApis names it.
type ParamType string

// Parameter types (CloudStack's CommandType names, lower-cased).
const (
	TString  ParamType = "string"
	TUUID    ParamType = "uuid"
	TInteger ParamType = "integer"
	TLong    ParamType = "long"
	TShort   ParamType = "short"
	TBoolean ParamType = "boolean"
	TDate    ParamType = "date"
	TList    ParamType = "list" // comma-separated; elements of type Of
	TMap     ParamType = "map"  // name[0].key=value&name[0].value=...
)

// Param declares one request parameter.
type Param struct {
	Name        string
	Type        ParamType
	Of          ParamType // element type of a list
	Required    bool
	Description string
	Length      int // maximum length of a string; 0 means 255
	Since       string
}

// Field declares one response field for listApis and the docs.
type Field struct {
	Name        string
	Type        string
	Description string
}

// Access says which role types may call a command unless a role's own
// permission rules say otherwise.
type Access uint8

const (
	AccessRootAdmin Access = 1 << iota
	AccessDomainAdmin
	AccessUser
	// AccessReadOnly lets read-only users call it (list and get commands).
	AccessReadOnly

	// AccessAdmins is root and domain admins.
	AccessAdmins = AccessRootAdmin | AccessDomainAdmin
	// AccessAll is every authenticated caller, read-only users included.
	AccessAll = AccessRootAdmin | AccessDomainAdmin | AccessUser | AccessReadOnly
	// AccessAllWrite is every caller that may change things.
	AccessAllWrite = AccessRootAdmin | AccessDomainAdmin | AccessUser
)

// Handler runs a validated call and returns the response object (placed
// under "<command>response") or an error (see cserr).
type Handler func(c *Call) (any, error)

// Command is one API command: its declaration and its handler.
type Command struct {
	Name        string
	Description string
	Async       bool
	Access      Access
	// NoAuth commands run without credentials (login).
	NoAuth bool
	// List commands accept page, pagesize, keyword, listall... (ListParams).
	Params []Param
	// ResponseName is the entity key of the response ("zone"), for listApis.
	ResponseName string
	Response     []Field
	Since        string
	Handler      Handler
}

var (
	regMu    sync.RWMutex
	registry = map[string]*Command{}
)

// Register adds commands to the one command table; init functions of the
// files that implement them call it. A duplicate name is a programming
// error and panics at start.
func Register(cmds ...*Command) {
	regMu.Lock()
	defer regMu.Unlock()
	for _, c := range cmds {
		key := strings.ToLower(c.Name)
		if _, dup := registry[key]; dup {
			panic("api: command registered twice: " + c.Name)
		}
		if c.Access == 0 && !c.NoAuth {
			panic("api: command without access: " + c.Name)
		}
		registry[key] = c
	}
}

// Lookup finds a command by name, case-insensitively as CloudStack does.
func Lookup(name string) *Command {
	regMu.RLock()
	defer regMu.RUnlock()
	return registry[strings.ToLower(name)]
}

// Commands returns every command sorted by name.
func Commands() []*Command {
	regMu.RLock()
	defer regMu.RUnlock()
	out := make([]*Command, 0, len(registry))
	for _, c := range registry {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ListParams are the parameters every list command takes; add them with
// append(ListParams(), ...).
func ListParams() []Param {
	return []Param{
		{Name: "keyword", Type: TString, Description: "List by keyword"},
		{Name: "page", Type: TInteger, Description: "Page number, from 1"},
		{Name: "pagesize", Type: TInteger, Description: "Items per page"},
	}
}

// OwnerListParams are the visibility parameters of lists of owned resources.
func OwnerListParams() []Param {
	return append(ListParams(),
		Param{Name: "account", Type: TString, Description: "List resources of this account; needs domainid"},
		Param{Name: "domainid", Type: TUUID, Description: "List resources of this domain"},
		Param{Name: "isrecursive", Type: TBoolean, Description: "Include subdomains of domainid"},
		Param{Name: "listall", Type: TBoolean, Description: "List everything the caller may see, not just its own"},
	)
}
