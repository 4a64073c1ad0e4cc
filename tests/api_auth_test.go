package tests

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"

	"github.com/nimbus-cloud/nimbus/api"
	"github.com/nimbus-cloud/nimbus/infra/secrets"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/tests/testenv"
)

// authReply is one raw API answer.
type authReply struct {
	Status int
	Header http.Header
	Raw    string
	Inner  map[string]any // the one top-level object
}

func authDo(t *testing.T, req *http.Request) authReply {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Redacted(), err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := authReply{Status: resp.StatusCode, Header: resp.Header, Raw: string(b)}
	var top map[string]map[string]any
	_ = json.Unmarshal(b, &top)
	for _, v := range top {
		r.Inner = v
	}
	return r
}

func authGet(t *testing.T, u string) authReply {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return authDo(t, req)
}

// authSigned sends params signed with key/secret as a CloudStack client does.
func authSigned(t *testing.T, apiURL, key, secret string, params url.Values) authReply {
	t.Helper()
	params.Set("apiKey", key)
	params.Set("response", "json")
	return authGet(t, apiURL+"?"+api.EncodeSigned(params, secret))
}

func authCmd(command string, kv ...string) url.Values {
	v := url.Values{"command": {command}}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v
}

// wantAuthError checks HTTP status = errorcode = code, CloudStack's error
// fields, and that errortext holds textHas.
func wantAuthError(t *testing.T, r authReply, code int, textHas string) {
	t.Helper()
	ec, _ := r.Inner["errorcode"].(float64)
	if r.Status != code || int(ec) != code {
		t.Fatalf("got HTTP %d %s, want HTTP %d with errorcode %d", r.Status, r.Raw, code, code)
	}
	if _, ok := r.Inner["cserrorcode"].(float64); !ok {
		t.Fatalf("no cserrorcode: %s", r.Raw)
	}
	if _, ok := r.Inner["uuidList"].([]any); !ok {
		t.Fatalf("no uuidList: %s", r.Raw)
	}
	if txt, _ := r.Inner["errortext"].(string); !strings.Contains(txt, textHas) {
		t.Fatalf("errortext %q lacks %q", txt, textHas)
	}
}

// inventoryCounts counts the rows the negative tests must leave alone.
func inventoryCounts(t *testing.T, s *testenv.Stack) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, table := range []string{"roles", "role_permissions", "accounts", "users", "sessions", "async_jobs"} {
		var n int
		if err := s.DB.NewSelect().TableExpr(table).ColumnExpr("count(*)").Scan(context.Background(), &n); err != nil {
			t.Fatalf("count %s: %v", table, err)
		}
		out[table] = n
	}
	return out
}

// authUser is a user made directly in the inventory, with keys and password.
type authUser struct {
	Name, Password, APIKey, Secret string
}

// addAuthUser creates an account with the role and a user with API keys
// (the secret sealed with the stack's server key).
func addAuthUser(t *testing.T, s *testenv.Stack, roleUUID string) authUser {
	t.Helper()
	ctx := context.Background()
	box, err := secrets.LoadOrCreate(filepath.Join(s.Dir, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	var role models.Role
	if err := s.DB.NewSelect().Model(&role).Where("uuid = ?", roleUUID).Scan(ctx); err != nil {
		t.Fatal(err)
	}
	var root models.Domain
	if err := s.DB.NewSelect().Model(&root).Where("uuid = ?", models.RootDomainUUID).Scan(ctx); err != nil {
		t.Fatal(err)
	}
	typ := models.AccountTypeUser
	if role.Type == models.RoleTypeAdmin {
		typ = models.AccountTypeAdmin
	} else if role.Type == models.RoleTypeDomainAdmin {
		typ = models.AccountTypeDomainAdmin
	}
	name := testenv.RandomName("u")
	acct := models.Account{UUID: models.NewUUID(), Name: name, DomainID: root.ID, Type: typ, RoleID: role.ID, State: "enabled", Created: models.Now()}
	if _, err := s.DB.NewInsert().Model(&acct).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	u := authUser{Name: name, Password: "pw " + secrets.RandomKey(9), APIKey: secrets.RandomKey(32), Secret: secrets.RandomKey(32)}
	hash, err := api.HashPassword(u.Password)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := box.Encrypt(u.Secret)
	if err != nil {
		t.Fatal(err)
	}
	row := models.User{UUID: models.NewUUID(), AccountID: acct.ID, Username: name, PasswordHash: hash, FirstName: "Test", LastName: "User",
		State: "enabled", APIKey: &u.APIKey, SecretKeyCipher: sealed, Created: models.Now()}
	if _, err := s.DB.NewInsert().Model(&row).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	return u
}

// TestAPIAuth runs the authentication, authorization, validation and
// listApis checks against one real stack (nimbus server + worker on
// MariaDB and Temporal), with the CloudStack Go SDK as the main client.
func TestAPIAuth(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	admin := s.Admin

	t.Run("SDKSignedGETAndPOST", func(t *testing.T) {
		apis, err := s.Client.APIDiscovery.ListApis(s.Client.APIDiscovery.NewListApisParams())
		if err != nil || apis.Count == 0 {
			t.Fatalf("listApis over GET: %v %v", apis, err)
		}
		// POST mode of the SDK (used for large requests), awkward values.
		cs := cloudstack.NewClient(s.APIURL, admin.APIKey, admin.SecretKey, false)
		cs.HTTPGETOnly = false
		custom := cloudstack.NewCustomService(cs).(*cloudstack.CustomService)
		for _, kw := range []string{"with spaces", "star*", "tilde~", "é日本", "a+b&c=d/e?f", "*~ both"} {
			p := &cloudstack.CustomServiceParams{}
			p.SetParam("keyword", kw)
			var out map[string]any
			if err := custom.CustomPostRequest("listRoles", p, &out); err != nil {
				t.Fatalf("POST listRoles keyword=%q: %v", kw, err)
			}
			p2 := cs.Role.NewListRolesParams()
			p2.SetKeyword(kw)
			if _, err := cs.Role.ListRoles(p2); err != nil {
				t.Fatalf("GET listRoles keyword=%q: %v", kw, err)
			}
		}
		roles, err := s.Client.Role.ListRoles(s.Client.Role.NewListRolesParams())
		if err != nil || roles.Count != 4 {
			t.Fatalf("listRoles: %+v %v", roles, err)
		}
	})

	t.Run("SignatureVersion3", func(t *testing.T) {
		// cloudstack-go v2.16.1 does not sign version 3; sign by hand.
		p := authCmd("listApis", "name", "listRoles", "signatureVersion", "3",
			"expires", time.Now().Add(5*time.Minute).UTC().Format("2006-01-02T15:04:05-0700"))
		r := authSigned(t, s.APIURL, admin.APIKey, admin.SecretKey, p)
		if r.Status != 200 {
			t.Fatalf("v3: %d %s", r.Status, r.Raw)
		}
		var la cloudstack.ListApisResponse
		b, _ := json.Marshal(r.Inner)
		if err := json.Unmarshal(b, &la); err != nil || la.Count != 1 || la.Apis[0].Name != "listRoles" {
			t.Fatalf("v3 answer %s (%v)", r.Raw, err)
		}
	})

	t.Run("LoginSession", func(t *testing.T) {
		if admin.Password == "" {
			t.Fatal("stack admin has no password to log in with")
		}
		form := url.Values{"command": {"login"}, "username": {"admin"}, "password": {admin.Password}, "domain": {"/"}, "response": {"json"}}
		req, _ := http.NewRequest("POST", s.APIURL, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r := authDo(t, req)
		if r.Status != 200 {
			t.Fatalf("login: %d %s", r.Status, r.Raw)
		}
		var lr cloudstack.LoginResponse
		b, _ := json.Marshal(r.Inner)
		if err := json.Unmarshal(b, &lr); err != nil {
			t.Fatalf("login answer does not decode into cloudstack-go's LoginResponse: %v", err)
		}
		if lr.Username != "admin" || lr.Type != "1" || lr.Account != "admin" || lr.Domainid != models.RootDomainUUID || lr.Sessionkey == "" || lr.Timeout <= 0 || lr.Userid == "" {
			t.Fatalf("login answer %+v", lr)
		}
		var cookie *http.Cookie
		for _, c := range (&http.Response{Header: r.Header}).Cookies() {
			if c.Name == "sessionkey" {
				cookie = c
			}
		}
		if cookie == nil || cookie.Value != lr.Sessionkey {
			t.Fatalf("no sessionkey cookie: %v", r.Header["Set-Cookie"])
		}
		withCookie := func(q string) authReply {
			req, _ := http.NewRequest("GET", s.APIURL+"?"+q, nil)
			req.AddCookie(cookie)
			return authDo(t, req)
		}
		if r := withCookie("command=listRoles&response=json"); r.Status != 200 || r.Inner["count"] != 4.0 {
			t.Fatalf("listRoles with the cookie: %d %s", r.Status, r.Raw)
		}
		if r := authGet(t, s.APIURL+"?command=listRoles&response=json&sessionkey="+url.QueryEscape(lr.Sessionkey)); r.Status != 200 {
			t.Fatalf("listRoles with the parameter: %d %s", r.Status, r.Raw)
		}
		if r := withCookie("command=listApis&name=listRoles&response=json&sessionkey=" + url.QueryEscape(lr.Sessionkey)); r.Status != 200 {
			t.Fatalf("listApis with both: %d %s", r.Status, r.Raw)
		}
		wantAuthError(t, withCookie("command=listRoles&response=json&sessionkey=not-this-one"), 401, "session")
		// The SDK's own login decodes too (it signs as well, which login ignores).
		sdk := cloudstack.NewClient(s.APIURL, "", "", false)
		lp := sdk.Authentication.NewLoginParams(admin.Password, "admin")
		if sdkLogin, err := sdk.Authentication.Login(lp); err != nil || sdkLogin.Sessionkey == "" {
			t.Fatalf("SDK login: %+v %v", sdkLogin, err)
		}
		// Wrong password: 401, nothing created.
		before := inventoryCounts(t, s)
		form.Set("password", "wrong")
		req, _ = http.NewRequest("POST", s.APIURL, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		wantAuthError(t, authDo(t, req), 401, "Failed to authenticate")
		if after := inventoryCounts(t, s); after["sessions"] != before["sessions"] {
			t.Fatalf("a failed login made a session: %v -> %v", before, after)
		}

		if r := withCookie("command=logout&response=json"); r.Status != 200 || r.Inner["description"] != "success" {
			t.Fatalf("logout: %d %s", r.Status, r.Raw)
		}
		wantAuthError(t, withCookie("command=listRoles&response=json"), 401, "session")
		wantAuthError(t, authGet(t, s.APIURL+"?command=listRoles&response=json&sessionkey="+url.QueryEscape(lr.Sessionkey)), 401, "session")
	})

	user := addAuthUser(t, s, models.RoleUserUUID)
	readOnly := addAuthUser(t, s, models.RoleReadOnlyUUID)

	t.Run("Negatives", func(t *testing.T) {
		before := inventoryCounts(t, s)
		create := func() url.Values { return authCmd("createRole", "name", "neg-"+testenv.RandomName(""), "type", "User") }

		wantAuthError(t, authSigned(t, s.APIURL, admin.APIKey, admin.SecretKey+"x", create()), 401, "unable to verify")

		p := create()
		p.Set("apiKey", admin.APIKey)
		p.Set("response", "json")
		q := api.EncodeSigned(p, admin.SecretKey)
		tampered := strings.Replace(q, "type=User", "type=Admin", 1)
		if tampered == q {
			t.Fatal("tampering did not change the query")
		}
		wantAuthError(t, authGet(t, s.APIURL+"?"+tampered), 401, "unable to verify")

		p = create()
		p.Set("signatureVersion", "3")
		p.Set("expires", time.Now().Add(-time.Minute).UTC().Format("2006-01-02T15:04:05-0700"))
		wantAuthError(t, authSigned(t, s.APIURL, admin.APIKey, admin.SecretKey, p), 401, "expire")
		p = create()
		p.Set("signatureVersion", "3")
		wantAuthError(t, authSigned(t, s.APIURL, admin.APIKey, admin.SecretKey, p), 401, "expire")

		p = create()
		p.Set("response", "json")
		p.Set("signature", api.Sign(p, admin.SecretKey))
		wantAuthError(t, authGet(t, s.APIURL+"?"+p.Encode()), 401, "unable to verify")
		wantAuthError(t, authSigned(t, s.APIURL, "no-such-key", admin.SecretKey, create()), 401, "unable to verify")

		wantAuthError(t, authSigned(t, s.APIURL, admin.APIKey, admin.SecretKey, authCmd("createNothing", "name", "x")), 432, "createNothing")
		wantAuthError(t, authSigned(t, s.APIURL, admin.APIKey, admin.SecretKey, authCmd("createRole", "type", "User")), 431, "missing parameter name")
		wantAuthError(t, authSigned(t, s.APIURL, admin.APIKey, admin.SecretKey, authCmd("createRolePermission", "roleid", "not-a-uuid", "rule", "x", "permission", "allow")), 431, "roleid")
		wantAuthError(t, authSigned(t, s.APIURL, admin.APIKey, admin.SecretKey, authCmd("listRoles", "page", "two")), 431, "page")
		wantAuthError(t, authSigned(t, s.APIURL, admin.APIKey, admin.SecretKey, authCmd("createRole", "name", "x", "type", "User", "ispublic", "maybe")), 431, "ispublic")

		// A user calling admin-only commands.
		wantAuthError(t, authSigned(t, s.APIURL, user.APIKey, user.Secret, create()), 405, "createRole")
		wantAuthError(t, authSigned(t, s.APIURL, user.APIKey, user.Secret, authCmd("listRolePermissions")), 405, "listRolePermissions")
		// A read-only user calling a write command: any registered command
		// users may call but read-only users may not, else createRole.
		write := "createRole"
		for _, c := range api.Commands() {
			if !c.NoAuth && c.Access&api.AccessUser != 0 && c.Access&api.AccessReadOnly == 0 {
				write = c.Name
				break
			}
		}
		wantAuthError(t, authSigned(t, s.APIURL, readOnly.APIKey, readOnly.Secret, authCmd(write, "name", "x")), 405, write)
		if r := authSigned(t, s.APIURL, readOnly.APIKey, readOnly.Secret, authCmd("listRoles")); r.Status != 200 {
			t.Fatalf("read-only user listing roles: %d %s", r.Status, r.Raw)
		}

		// SQL metacharacters and very long strings: a correct empty answer
		// or a 431, never a 530.
		for _, v := range []string{"' OR '1'='1", "\"; DROP TABLE roles; --", "%", "_", "\\", "admin' --", "') UNION SELECT * FROM users --", strings.Repeat("x", 10240)} {
			for _, param := range []string{"keyword", "name"} {
				r := authSigned(t, s.APIURL, admin.APIKey, admin.SecretKey, authCmd("listRoles", param, v))
				switch {
				case r.Status == 200 && r.Raw == `{"listrolesresponse":{}}`:
				case r.Status == 431:
					wantAuthError(t, r, 431, param)
				default:
					t.Fatalf("listRoles %s=%q: %d %s", param, v[:min(len(v), 40)], r.Status, r.Raw)
				}
			}
		}
		if r := authSigned(t, s.APIURL, admin.APIKey, admin.SecretKey, authCmd("listRoles", "keyword", strings.Repeat("x", 10240))); r.Status != 431 {
			t.Fatalf("10 kB keyword: %d", r.Status)
		}

		if after := inventoryCounts(t, s); !mapsEqual(before, after) {
			t.Fatalf("the refused calls changed the inventory: %v -> %v", before, after)
		}
	})

	t.Run("ListApis", func(t *testing.T) {
		all, err := s.Client.APIDiscovery.ListApis(s.Client.APIDiscovery.NewListApisParams())
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]*cloudstack.Api{}
		for _, a := range all.Apis {
			got[a.Name] = a
		}
		for _, c := range api.Commands() {
			a := got[c.Name]
			if a == nil {
				t.Fatalf("listApis lacks %s", c.Name)
			}
			if a.Isasync != c.Async || a.Params == nil || a.Response == nil || len(a.Params) != len(c.Params) {
				t.Fatalf("%s described as %+v", c.Name, a)
			}
			for i, p := range a.Params {
				if p.Name != c.Params[i].Name || p.Type != string(c.Params[i].Type) || p.Required != c.Params[i].Required {
					t.Fatalf("%s param %d: %+v, declared %+v", c.Name, i, p, c.Params[i])
				}
			}
		}
		if all.Count != len(api.Commands()) {
			t.Fatalf("count %d, %d commands", all.Count, len(api.Commands()))
		}
		us := cloudstack.NewClient(s.APIURL, user.APIKey, user.Secret, false)
		mine, err := us.APIDiscovery.ListApis(us.APIDiscovery.NewListApisParams())
		if err != nil {
			t.Fatal(err)
		}
		if mine.Count == 0 || mine.Count >= all.Count {
			t.Fatalf("user sees %d APIs of %d", mine.Count, all.Count)
		}
		for _, a := range mine.Apis {
			if a.Name == "createRole" || a.Name == "listRolePermissions" {
				t.Fatalf("user is shown %s", a.Name)
			}
		}
		// The generated docs list every command.
		r, err := http.Get(s.URL + "/docs/api")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		for _, c := range api.Commands() {
			if !strings.Contains(string(b), ">"+c.Name+"<") {
				t.Fatalf("/docs/api lacks %s", c.Name)
			}
		}
	})

	t.Run("RolePermissionDeny", func(t *testing.T) {
		rp := s.Client.Role.NewCreateRoleParams("limited-" + testenv.RandomName(""))
		rp.SetRoleid(models.RoleUserUUID)
		role, err := s.Client.Role.CreateRole(rp)
		if err != nil || role.Id == "" || role.Type != "User" {
			t.Fatalf("createRole: %+v %v", role, err)
		}
		up := s.Client.Role.NewUpdateRoleParams(role.Id)
		up.SetDescription("cannot list roles")
		if upd, err := s.Client.Role.UpdateRole(up); err != nil || upd.Id != role.Id || upd.Description != "cannot list roles" {
			t.Fatalf("updateRole: %+v %v", upd, err)
		}
		u := addAuthUser(t, s, role.Id)
		us := cloudstack.NewClient(s.APIURL, u.APIKey, u.Secret, false)
		if _, err := us.Role.ListRoles(us.Role.NewListRolesParams()); err != nil {
			t.Fatalf("listRoles before the deny rule: %v", err)
		}
		perm, err := s.Client.Role.CreateRolePermission(s.Client.Role.NewCreateRolePermissionParams("deny", role.Id, "listRoles"))
		if err != nil || perm.Id == "" || perm.Rule != "listRoles" || perm.Permission != "deny" {
			t.Fatalf("createRolePermission: %+v %v", perm, err)
		}
		perms, err := s.Client.Role.ListRolePermissions(&cloudstack.ListRolePermissionsParams{})
		if err != nil || perms.Count == 0 {
			t.Fatalf("listRolePermissions: %+v %v", perms, err)
		}
		wantAuthError(t, authSigned(t, s.APIURL, u.APIKey, u.Secret, authCmd("listRoles")), 405, "listRoles")
		mine, err := us.APIDiscovery.ListApis(us.APIDiscovery.NewListApisParams())
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range mine.Apis {
			if a.Name == "listRoles" {
				t.Fatal("listApis still shows the denied listRoles")
			}
		}
		if _, err := s.Client.Role.DeleteRolePermission(s.Client.Role.NewDeleteRolePermissionParams(perm.Id)); err != nil {
			t.Fatal(err)
		}
		if _, err := us.Role.ListRoles(us.Role.NewListRolesParams()); err != nil {
			t.Fatalf("listRoles after the rule is gone: %v", err)
		}
		// A role in use cannot be deleted; a default one never.
		if _, err := s.Client.Role.DeleteRole(s.Client.Role.NewDeleteRoleParams(role.Id)); err == nil || !strings.Contains(err.Error(), "536") {
			t.Fatalf("deleteRole of a role in use: %v", err)
		}
		if _, err := s.Client.Role.DeleteRole(s.Client.Role.NewDeleteRoleParams(models.RoleUserUUID)); err == nil || !strings.Contains(err.Error(), "431") {
			t.Fatalf("deleteRole of a default role: %v", err)
		}
	})
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestAPIAuthRateLimit: a server limited to 5 requests per second per key
// answers 429 in CloudStack's error format beyond the burst, and serves
// again once tokens come back.
func TestAPIAuthRateLimit(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{Env: []string{"NIMBUS_RATE_LIMIT=5", "NIMBUS_RATE_BURST=5"}})
	var limited authReply
	ok := 0
	for i := 0; i < 20; i++ {
		r := authSigned(t, s.APIURL, s.Admin.APIKey, s.Admin.SecretKey, authCmd("listApis", "name", "listApis"))
		if r.Status == 200 {
			ok++
			continue
		}
		limited = r
		break
	}
	if limited.Status == 0 {
		t.Fatalf("20 quick calls all passed a 5/s limit")
	}
	if ok < 5 {
		t.Fatalf("limited after %d calls, burst is 5", ok)
	}
	wantAuthError(t, limited, 429, "exceeded")
	if limited.Header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	// The SDK sees the 429 as an error with the code.
	if _, err := s.Client.APIDiscovery.ListApis(s.Client.APIDiscovery.NewListApisParams()); err == nil || !strings.Contains(err.Error(), "429") {
		t.Fatalf("SDK call while limited: %v", err)
	}
	time.Sleep(1100 * time.Millisecond)
	if r := authSigned(t, s.APIURL, s.Admin.APIKey, s.Admin.SecretKey, authCmd("listApis", "name", "listApis")); r.Status != 200 {
		t.Fatalf("after a second: %d %s", r.Status, r.Raw)
	}
}
