package api

import (
	"context"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
)

// Caller is the authenticated user behind a request.
type Caller struct {
	User    models.User
	Account models.Account
	Domain  models.Domain
	Role    models.Role
	// SessionKey is set when the call came with a login session.
	SessionKey string
}

// IsRootAdmin tells whether the caller is a root administrator.
func (c *Caller) IsRootAdmin() bool { return c.Role.Type == models.RoleTypeAdmin }

// IsDomainAdmin tells whether the caller administers its domain subtree.
func (c *Caller) IsDomainAdmin() bool { return c.Role.Type == models.RoleTypeDomainAdmin }

// IsAdmin is root or domain admin.
func (c *Caller) IsAdmin() bool { return c.IsRootAdmin() || c.IsDomainAdmin() }

// access is the caller's Access bit.
func (c *Caller) access() Access {
	switch {
	case c.Role.Type == models.RoleTypeAdmin:
		return AccessRootAdmin
	case c.Role.Type == models.RoleTypeDomainAdmin:
		return AccessDomainAdmin
	case c.Role.ReadOnly:
		return AccessReadOnly
	default:
		return AccessUser
	}
}

// Call is one validated API request.
type Call struct {
	Ctx    context.Context
	S      *Server
	Cmd    *Command
	Caller *Caller // nil for NoAuth commands
	// RequestID identifies the request in logs.
	RequestID string

	params url.Values // keys lower-cased
	// SetCookies are cookies the handler wants sent (login).
	setCookies []cookie
}

type cookie struct{ name, value string }

// SetCookie asks the server to set a cookie on the response.
func (c *Call) SetCookie(name, value string) {
	c.setCookies = append(c.setCookies, cookie{name, value})
}

// Has tells whether the request carries a non-empty parameter.
func (c *Call) Has(name string) bool { return c.params.Get(strings.ToLower(name)) != "" }

// Str returns a parameter's value ("" when absent).
func (c *Call) Str(name string) string { return c.params.Get(strings.ToLower(name)) }

// Int returns an integer parameter (validated before the handler runs), or def.
func (c *Call) Int(name string, def int64) int64 {
	v := c.Str(name)
	if v == "" {
		return def
	}
	n, _ := strconv.ParseInt(v, 10, 64)
	return n
}

// Bool returns a boolean parameter, or def when absent.
func (c *Call) Bool(name string, def bool) bool {
	v := c.Str(name)
	if v == "" {
		return def
	}
	return strings.EqualFold(v, "true")
}

// BoolPtr returns a boolean parameter, or nil when absent.
func (c *Call) BoolPtr(name string) *bool {
	if !c.Has(name) {
		return nil
	}
	b := c.Bool(name, false)
	return &b
}

// List returns a comma-separated list parameter's elements.
func (c *Call) List(name string) []string {
	v := c.Str(name)
	if v == "" {
		return nil
	}
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

var mapKeyRe = regexp.MustCompile(`^([a-z0-9_]+)\[(\d+)\]\.([a-z0-9_]+)$`)

// Map returns a map parameter (name[0].key=v&name[0].value=w) as one
// map per index, in index order.
func (c *Call) Map(name string) []map[string]string {
	name = strings.ToLower(name)
	byIdx := map[int]map[string]string{}
	for k, vs := range c.params {
		m := mapKeyRe.FindStringSubmatch(k)
		if m == nil || m[1] != name || len(vs) == 0 {
			continue
		}
		i, _ := strconv.Atoi(m[2])
		if byIdx[i] == nil {
			byIdx[i] = map[string]string{}
		}
		byIdx[i][m[3]] = vs[0]
	}
	idx := make([]int, 0, len(byIdx))
	for i := range byIdx {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	out := make([]map[string]string, 0, len(idx))
	for _, i := range idx {
		out = append(out, byIdx[i])
	}
	return out
}

// Page returns the requested page as (limit, offset), with pagesize capped
// by the server's maximum. Without page/pagesize it returns the maximum from
// the first row; pagesize=-1 means "all", which is capped too.
func (c *Call) Page() (limit, offset int) {
	max := c.S.Cfg.MaxPageSize
	size := int(c.Int("pagesize", int64(max)))
	if size <= 0 || size > max {
		size = max
	}
	page := int(c.Int("page", 1))
	if page < 1 {
		page = 1
	}
	return size, (page - 1) * size
}

// validate checks the request's parameters against the command's
// declaration: required ones present, each value of its type and length.
func validate(cmd *Command, params url.Values) error {
	for _, p := range cmd.Params {
		key := strings.ToLower(p.Name)
		if p.Type == TMap {
			if p.Required && !hasMap(params, key) {
				return cserr.Param("Unable to execute API command %s due to missing parameter %s", strings.ToLower(cmd.Name), p.Name)
			}
			continue
		}
		v := params.Get(key)
		if v == "" {
			if p.Required {
				return cserr.Param("Unable to execute API command %s due to missing parameter %s", strings.ToLower(cmd.Name), p.Name)
			}
			continue
		}
		if err := checkValue(p, p.Type, v); err != nil {
			return err
		}
		if p.Type == TList {
			for _, e := range strings.Split(v, ",") {
				if e = strings.TrimSpace(e); e == "" {
					continue
				}
				if err := checkValue(p, p.Of, e); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func hasMap(params url.Values, key string) bool {
	for k := range params {
		if strings.HasPrefix(k, key+"[") {
			return true
		}
	}
	return false
}

func checkValue(p Param, t ParamType, v string) error {
	bad := func(want string) error {
		return cserr.Param("Unable to execute API command due to invalid value %q for parameter %s: %s expected", clip(v, 64), p.Name, want)
	}
	switch t {
	case TUUID:
		if _, err := uuid.Parse(v); err != nil || len(v) != 36 {
			return cserr.Param("Unable to execute API command due to invalid value %q for parameter %s: not a UUID", clip(v, 64), p.Name)
		}
	case TInteger, TShort:
		if _, err := strconv.ParseInt(v, 10, 32); err != nil {
			return bad("an integer")
		}
	case TLong:
		if _, err := strconv.ParseInt(v, 10, 64); err != nil {
			return bad("an integer")
		}
	case TBoolean:
		if !strings.EqualFold(v, "true") && !strings.EqualFold(v, "false") {
			return bad("true or false")
		}
	case TDate:
		if _, err := ParseDate(v); err != nil {
			return bad("a date (yyyy-MM-dd or yyyy-MM-dd HH:mm:ss)")
		}
	case TString, "":
		max := p.Length
		if max == 0 {
			max = 255
		}
		if max > 0 && len(v) > max {
			return cserr.Param("Value of parameter %s is too long: %d characters, at most %d", p.Name, len(v), max)
		}
	}
	return nil
}

// ParseDate accepts CloudStack's date forms.
func ParseDate(v string) (time.Time, error) {
	for _, f := range []string{"2006-01-02 15:04:05", "2006-01-02T15:04:05Z0700", time.RFC3339, "2006-01-02"} {
		if t, err := time.Parse(f, v); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, cserr.Param("bad date %q", v)
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
