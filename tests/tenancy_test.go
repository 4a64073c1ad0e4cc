package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"
	"go.temporal.io/api/common/v1"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/nimbus-cloud/nimbus/api"
	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/tests/testenv"
)

// tenUser is an account created for a test with its first user's keys and
// an SDK client signed as that user.
type tenUser struct {
	AccountID, UserID, Name string
	Key, Secret             string
	Client                  *cloudstack.CloudStackClient
}

func tenCreateDomain(t *testing.T, cs *cloudstack.CloudStackClient, name, parent string) *cloudstack.CreateDomainResponse {
	t.Helper()
	p := cs.Domain.NewCreateDomainParams(name)
	if parent != "" {
		p.SetParentdomainid(parent)
	}
	d, err := cs.Domain.CreateDomain(p)
	if err != nil {
		t.Fatalf("createDomain %s: %v", name, err)
	}
	return d
}

// tenCreateAccount creates an account of type typ in domain, registers keys
// for its user and returns a client signed as that user.
func tenCreateAccount(t *testing.T, s *testenv.Stack, cs *cloudstack.CloudStackClient, name, domainID string, typ int) *tenUser {
	t.Helper()
	p := cs.Account.NewCreateAccountParams(name+"@example.com", "First", "Last", "pw-"+name, name)
	p.SetAccounttype(typ)
	p.SetDomainid(domainID)
	a, err := cs.Account.CreateAccount(p)
	if err != nil {
		t.Fatalf("createAccount %s: %v", name, err)
	}
	if a.Name != name || a.Accounttype != typ || a.Domainid != domainID || a.State != "enabled" || len(a.User) != 1 || a.User[0].Username != name {
		t.Fatalf("created account = %+v", a)
	}
	keys, err := cs.User.RegisterUserKeys(cs.User.NewRegisterUserKeysParams(a.User[0].Id))
	if err != nil {
		t.Fatalf("registerUserKeys %s: %v", name, err)
	}
	if keys.Apikey == "" || keys.Secretkey == "" {
		t.Fatalf("registerUserKeys answered %+v", keys)
	}
	c := cloudstack.NewAsyncClient(s.APIURL, keys.Apikey, keys.Secretkey, false)
	c.AsyncTimeout(120)
	return &tenUser{AccountID: a.Id, UserID: a.User[0].Id, Name: name, Key: keys.Apikey, Secret: keys.Secretkey, Client: c}
}

func tenAccountNames(t *testing.T, cs *cloudstack.CloudStackClient, set func(p *cloudstack.ListAccountsParams)) (int, []string) {
	t.Helper()
	p := cs.Account.NewListAccountsParams()
	if set != nil {
		set(p)
	}
	r, err := cs.Account.ListAccounts(p)
	if err != nil {
		t.Fatalf("listAccounts: %v", err)
	}
	var names []string
	for _, a := range r.Accounts {
		names = append(names, a.Name)
	}
	sort.Strings(names)
	return r.Count, names
}

func tenWantNames(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	sort.Strings(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}

// tenWantCode checks that err is a CloudStack error with code.
func tenWantCode(t *testing.T, what string, err error, code int) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: succeeded, want error %d", what, code)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("error %d ", code)) && !strings.Contains(err.Error(), fmt.Sprintf(`"errorcode":%d`, code)) {
		t.Fatalf("%s: error %v, want code %d", what, err, code)
	}
}

// tenRaw sends a signed request and returns the status and the body under
// the command's response key.
func tenRaw(t *testing.T, s *testenv.Stack, key, secret string, params url.Values) (int, json.RawMessage) {
	t.Helper()
	params.Set("response", "json")
	params.Set("apiKey", key)
	params.Set("signature", api.Sign(params, secret))
	resp, err := http.Get(s.APIURL + "?" + params.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: bad JSON %s", params.Get("command"), b)
	}
	for _, v := range m {
		return resp.StatusCode, v
	}
	return resp.StatusCode, nil
}

func TestTenancyVisibilityAndLifecycle(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	root := s.Client

	// A domain tree: ROOT > d1 > d11, ROOT > d2.
	d1 := tenCreateDomain(t, root, "d1", "")
	if d1.Level != 1 || d1.Path != "ROOT/d1" || d1.Parentdomainid != models.RootDomainUUID || d1.Parentdomainname != "ROOT" || d1.State != "Active" {
		t.Fatalf("created domain = %+v", d1)
	}
	d11 := tenCreateDomain(t, root, "d11", d1.Id)
	if d11.Level != 2 || d11.Path != "ROOT/d1/d11" {
		t.Fatalf("created subdomain = %+v", d11)
	}
	d2 := tenCreateDomain(t, root, "d2", "")
	_, err := root.Domain.CreateDomain(func() *cloudstack.CreateDomainParams {
		p := root.Domain.NewCreateDomainParams("d11")
		p.SetParentdomainid(d1.Id)
		return p
	}())
	tenWantCode(t, "createDomain with a sibling's name", err, 431)

	// Accounts: a domain admin and a user in d1, a user in d11 and in d2.
	dadmin := tenCreateAccount(t, s, root, "d1admin", d1.Id, models.AccountTypeDomainAdmin)
	u1 := tenCreateAccount(t, s, root, "u1", d1.Id, models.AccountTypeUser)
	u11 := tenCreateAccount(t, s, root, "u11", d11.Id, models.AccountTypeUser)
	u2 := tenCreateAccount(t, s, root, "u2", d2.Id, models.AccountTypeUser)
	_, err = root.Account.CreateAccount(func() *cloudstack.CreateAccountParams {
		p := root.Account.NewCreateAccountParams("x@example.com", "F", "L", "pw", "u1")
		p.SetAccounttype(0)
		p.SetDomainid(d1.Id)
		return p
	}())
	tenWantCode(t, "createAccount with a taken name", err, 431)

	// The domain admin adds a second user to u1's account.
	cu := dadmin.Client.User.NewCreateUserParams("u1", "u1b@example.com", "Second", "User", "pw-u1b", "u1b")
	cu.SetDomainid(d1.Id)
	u1b, err := dadmin.Client.User.CreateUser(cu)
	if err != nil {
		t.Fatalf("domain admin createUser: %v", err)
	}
	if u1b.Account != "u1" || u1b.Accountid != u1.AccountID || u1b.Domainid != d1.Id || u1b.Roletype != "User" {
		t.Fatalf("created user = %+v", u1b)
	}
	// ... but not to an account outside its subtree.
	cu = dadmin.Client.User.NewCreateUserParams("u2", "x@example.com", "X", "Y", "pw", "intruder")
	cu.SetDomainid(d2.Id)
	_, err = dadmin.Client.User.CreateUser(cu)
	tenWantCode(t, "domain admin createUser outside its domain", err, 531)

	t.Run("user sees its own account only", func(t *testing.T) {
		n, names := tenAccountNames(t, u1.Client, nil)
		if n != 1 {
			t.Fatalf("count = %d", n)
		}
		tenWantNames(t, "user listAccounts", names, "u1")
		_, names = tenAccountNames(t, u1.Client, func(p *cloudstack.ListAccountsParams) { p.SetListall(true) })
		tenWantNames(t, "user listAccounts listall", names, "u1")
		_, names = tenAccountNames(t, u1.Client, func(p *cloudstack.ListAccountsParams) { p.SetId(u2.AccountID) })
		tenWantNames(t, "user listAccounts id=other", names)
		_, err := u1.Client.Account.ListAccounts(func() *cloudstack.ListAccountsParams {
			p := u1.Client.Account.NewListAccountsParams()
			p.SetDomainid(d2.Id)
			return p
		}())
		tenWantCode(t, "user listAccounts domainid=other", err, 531)

		lu := u1.Client.User.NewListUsersParams()
		lu.SetListall(true)
		users, err := u1.Client.User.ListUsers(lu)
		if err != nil {
			t.Fatal(err)
		}
		var un []string
		for _, u := range users.Users {
			un = append(un, u.Username)
			if u.Secretkey != "" {
				t.Fatalf("listUsers shows a secret key: %+v", u)
			}
		}
		sort.Strings(un)
		tenWantNames(t, "user listUsers", un, "u1", "u1b")

		ld, err := u1.Client.Domain.ListDomains(func() *cloudstack.ListDomainsParams {
			p := u1.Client.Domain.NewListDomainsParams()
			p.SetListall(true)
			return p
		}())
		if err != nil {
			t.Fatal(err)
		}
		if ld.Count != 1 || ld.Domains[0].Id != d1.Id || !ld.Domains[0].Haschild {
			t.Fatalf("user listDomains = %+v", ld)
		}

		// Keys: its own, yes; another account's, no.
		k, err := u1.Client.User.GetUserKeys(u1.Client.User.NewGetUserKeysParams(u1.UserID))
		if err != nil || k.Apikey != u1.Key || k.Secretkey != u1.Secret {
			t.Fatalf("getUserKeys of itself = %+v, %v", k, err)
		}
		_, err = u1.Client.User.GetUserKeys(u1.Client.User.NewGetUserKeysParams(u2.UserID))
		tenWantCode(t, "getUserKeys of another account", err, 531)
		_, err = u1.Client.User.RegisterUserKeys(u1.Client.User.NewRegisterUserKeysParams(u2.UserID))
		tenWantCode(t, "registerUserKeys of another account", err, 531)
		// Users may not call admin commands.
		_, err = u1.Client.Domain.CreateDomain(u1.Client.Domain.NewCreateDomainParams("mine"))
		tenWantCode(t, "user createDomain", err, 405)
	})

	t.Run("domain admin sees its subtree", func(t *testing.T) {
		_, names := tenAccountNames(t, dadmin.Client, nil)
		tenWantNames(t, "domain admin listAccounts", names, "d1admin")
		n, names := tenAccountNames(t, dadmin.Client, func(p *cloudstack.ListAccountsParams) { p.SetListall(true) })
		tenWantNames(t, "domain admin listAccounts listall", names, "d1admin", "u1", "u11")
		if n != 3 {
			t.Fatalf("count = %d", n)
		}
		_, names = tenAccountNames(t, dadmin.Client, func(p *cloudstack.ListAccountsParams) { p.SetDomainid(d1.Id) })
		tenWantNames(t, "domain admin listAccounts domainid=d1", names, "d1admin", "u1")
		_, names = tenAccountNames(t, dadmin.Client, func(p *cloudstack.ListAccountsParams) {
			p.SetDomainid(d1.Id)
			p.SetIsrecursive(true)
		})
		tenWantNames(t, "domain admin listAccounts domainid=d1 isrecursive", names, "d1admin", "u1", "u11")
		_, err := dadmin.Client.Account.ListAccounts(func() *cloudstack.ListAccountsParams {
			p := dadmin.Client.Account.NewListAccountsParams()
			p.SetDomainid(d2.Id)
			return p
		}())
		tenWantCode(t, "domain admin listAccounts domainid=d2", err, 531)

		ld, err := dadmin.Client.Domain.ListDomains(func() *cloudstack.ListDomainsParams {
			p := dadmin.Client.Domain.NewListDomainsParams()
			p.SetListall(true)
			return p
		}())
		if err != nil {
			t.Fatal(err)
		}
		var dn []string
		for _, d := range ld.Domains {
			dn = append(dn, d.Name)
		}
		tenWantNames(t, "domain admin listDomains listall", dn, "d1", "d11")
		kids, err := dadmin.Client.Domain.ListDomainChildren(dadmin.Client.Domain.NewListDomainChildrenParams())
		if err != nil || kids.Count != 1 || kids.DomainChildren[0].Id != d11.Id {
			t.Fatalf("listDomainChildren = %+v, %v", kids, err)
		}

		// Keys of the users it administers, not of others.
		k, err := dadmin.Client.User.GetUserKeys(dadmin.Client.User.NewGetUserKeysParams(u11.UserID))
		if err != nil || k.Secretkey != u11.Secret {
			t.Fatalf("domain admin getUserKeys of its subtree = %+v, %v", k, err)
		}
		_, err = dadmin.Client.User.GetUserKeys(dadmin.Client.User.NewGetUserKeysParams(u2.UserID))
		tenWantCode(t, "domain admin getUserKeys outside", err, 531)
		// The API key shows to the admin, never the secret.
		lu := dadmin.Client.User.NewListUsersParams()
		lu.SetId(u11.UserID)
		users, err := dadmin.Client.User.ListUsers(lu)
		if err != nil || users.Count != 1 || users.Users[0].Apikey != u11.Key || users.Users[0].Secretkey != "" || !users.Users[0].Iscallerchilddomain {
			t.Fatalf("domain admin listUsers id = %+v, %v", users, err)
		}

		// It manages subdomains below its own, not its own domain.
		d12 := tenCreateDomain(t, dadmin.Client, "d12", "")
		if d12.Parentdomainid != d1.Id || d12.Path != "ROOT/d1/d12" {
			t.Fatalf("domain admin createDomain = %+v", d12)
		}
		if r, err := dadmin.Client.Domain.DeleteDomain(dadmin.Client.Domain.NewDeleteDomainParams(d12.Id)); err != nil || !r.Success {
			t.Fatalf("domain admin deleteDomain = %+v, %v", r, err)
		}
		_, err = dadmin.Client.Domain.DeleteDomain(dadmin.Client.Domain.NewDeleteDomainParams(d1.Id))
		tenWantCode(t, "domain admin deletes its own domain", err, 431)
		_, err = dadmin.Client.Domain.CreateDomain(func() *cloudstack.CreateDomainParams {
			p := dadmin.Client.Domain.NewCreateDomainParams("elsewhere")
			p.SetParentdomainid(d2.Id)
			return p
		}())
		tenWantCode(t, "domain admin createDomain outside its subtree", err, 531)
	})

	t.Run("root admin sees everything with listall", func(t *testing.T) {
		_, names := tenAccountNames(t, root, nil)
		tenWantNames(t, "root listAccounts", names, "admin")
		n, names := tenAccountNames(t, root, func(p *cloudstack.ListAccountsParams) { p.SetListall(true) })
		tenWantNames(t, "root listAccounts listall", names, "admin", "d1admin", "u1", "u11", "u2")
		if n != 5 {
			t.Fatalf("count = %d", n)
		}
		_, names = tenAccountNames(t, root, func(p *cloudstack.ListAccountsParams) { p.SetDomainid(d2.Id) })
		tenWantNames(t, "root listAccounts domainid=d2", names, "u2")

		// Paging: count is the total, the page holds pagesize items.
		var all []string
		for page := 1; page <= 3; page++ {
			n, names := tenAccountNames(t, root, func(p *cloudstack.ListAccountsParams) {
				p.SetListall(true)
				p.SetPage(page)
				p.SetPagesize(2)
			})
			if n != 5 {
				t.Fatalf("page %d: count = %d, want 5", page, n)
			}
			if want := map[int]int{1: 2, 2: 2, 3: 1}[page]; len(names) != want {
				t.Fatalf("page %d has %d items, want %d", page, len(names), want)
			}
			all = append(all, names...)
		}
		sort.Strings(all)
		tenWantNames(t, "all pages", all, "admin", "d1admin", "u1", "u11", "u2")

		// keyword matches a substring, case-insensitively; LIKE wildcards
		// and SQL metacharacters are plain text.
		_, names = tenAccountNames(t, root, func(p *cloudstack.ListAccountsParams) {
			p.SetListall(true)
			p.SetKeyword("U1")
		})
		tenWantNames(t, "keyword U1", names, "u1", "u11")
		for _, kw := range []string{"_", "%", "'; DROP TABLE accounts; --", `\`, strings.Repeat("x", 255)} {
			n, names := tenAccountNames(t, root, func(p *cloudstack.ListAccountsParams) {
				p.SetListall(true)
				p.SetKeyword(kw)
			})
			if n != 0 || len(names) != 0 {
				t.Fatalf("keyword %q matched %v", kw, names)
			}
		}
		n, _ = tenAccountNames(t, root, func(p *cloudstack.ListAccountsParams) { p.SetListall(true) })
		if n != 5 {
			t.Fatalf("accounts changed after metacharacter keywords: %d", n)
		}
		// name is exact; an empty list is {}.
		_, names = tenAccountNames(t, root, func(p *cloudstack.ListAccountsParams) {
			p.SetListall(true)
			p.SetName("u1")
		})
		tenWantNames(t, "name u1", names, "u1")
		code, body := tenRaw(t, s, s.Admin.APIKey, s.Admin.SecretKey, url.Values{"command": {"listAccounts"}, "listall": {"true"}, "name": {"nobody"}})
		if code != 200 || string(body) != "{}" {
			t.Fatalf("empty listAccounts = %d %s, want 200 {}", code, body)
		}
		// JSON types: numbers are numbers, booleans booleans.
		_, body = tenRaw(t, s, s.Admin.APIKey, s.Admin.SecretKey, url.Values{"command": {"listAccounts"}, "id": {u1.AccountID}})
		var raw struct {
			Count   json.Number      `json:"count"`
			Account []map[string]any `json:"account"`
		}
		if err := json.Unmarshal(body, &raw); err != nil || raw.Count != "1" {
			t.Fatalf("listAccounts id = %s (%v)", body, err)
		}
		if _, ok := raw.Account[0]["accounttype"].(float64); !ok {
			t.Fatalf("accounttype is not a number: %s", body)
		}
		if _, ok := raw.Account[0]["isdefault"].(bool); !ok {
			t.Fatalf("isdefault is not a boolean: %s", body)
		}

		ld, err := root.Domain.ListDomains(func() *cloudstack.ListDomainsParams {
			p := root.Domain.NewListDomainsParams()
			p.SetListall(true)
			return p
		}())
		if err != nil || ld.Count != 4 {
			t.Fatalf("root listDomains = %+v, %v", ld, err)
		}
		ld, err = root.Domain.ListDomains(func() *cloudstack.ListDomainsParams {
			p := root.Domain.NewListDomainsParams()
			p.SetLevel(2)
			return p
		}())
		if err != nil || ld.Count != 1 || ld.Domains[0].Id != d11.Id {
			t.Fatalf("root listDomains level=2 = %+v, %v", ld, err)
		}
	})

	t.Run("updates", func(t *testing.T) {
		// A user changes its own password only with the current one.
		up := u1.Client.User.NewUpdateUserParams(u1.UserID)
		up.SetPassword("new-pw")
		_, err := u1.Client.User.UpdateUser(up)
		tenWantCode(t, "updateUser own password without currentpassword", err, 431)
		up.SetCurrentpassword("pw-u1")
		up.SetFirstname("Renamed")
		if _, err := u1.Client.User.UpdateUser(up); err != nil {
			t.Fatalf("updateUser: %v", err)
		}
		lu := u1.Client.User.NewListUsersParams()
		lu.SetId(u1.UserID)
		users, err := u1.Client.User.ListUsers(lu)
		if err != nil || users.Users[0].Firstname != "Renamed" {
			t.Fatalf("after updateUser: %+v, %v", users, err)
		}

		ua := root.Account.NewUpdateAccountParams()
		ua.SetId(u11.AccountID)
		ua.SetNewname("u11-renamed")
		ua.SetNetworkdomain("u11.example.com")
		if _, err := root.Account.UpdateAccount(ua); err != nil {
			t.Fatalf("updateAccount: %v", err)
		}
		_, names := tenAccountNames(t, root, func(p *cloudstack.ListAccountsParams) { p.SetId(u11.AccountID) })
		tenWantNames(t, "renamed account", names, "u11-renamed")

		ud := root.Domain.NewUpdateDomainParams(d11.Id)
		ud.SetName("d11x")
		dom, err := root.Domain.UpdateDomain(ud)
		if err != nil || dom.Name != "d11x" || dom.Path != "ROOT/d1/d11x" {
			t.Fatalf("updateDomain = %+v, %v", dom, err)
		}
		ud = root.Domain.NewUpdateDomainParams(models.RootDomainUUID)
		ud.SetName("TOP")
		_, err = root.Domain.UpdateDomain(ud)
		tenWantCode(t, "rename ROOT", err, 431)
	})

	t.Run("disable and enable an account", func(t *testing.T) {
		p := dadmin.Client.Account.NewDisableAccountParams(false)
		p.SetId(u11.AccountID)
		a, err := dadmin.Client.Account.DisableAccount(p)
		if err != nil {
			t.Fatalf("disableAccount: %v", err)
		}
		if a.State != "disabled" || a.Id != u11.AccountID {
			t.Fatalf("disableAccount job result = %+v", a)
		}
		_, err = u11.Client.Account.ListAccounts(u11.Client.Account.NewListAccountsParams())
		tenWantCode(t, "disabled account's key", err, 401)
		ep := root.Account.NewEnableAccountParams()
		ep.SetId(u11.AccountID)
		if _, err := root.Account.EnableAccount(ep); err != nil {
			t.Fatalf("enableAccount: %v", err)
		}
		if _, err := u11.Client.Account.ListAccounts(u11.Client.Account.NewListAccountsParams()); err != nil {
			t.Fatalf("re-enabled account's key: %v", err)
		}
		// The system and admin accounts cannot be disabled or deleted.
		p = root.Account.NewDisableAccountParams(true)
		p.SetId(models.AdminAccountUUID)
		_, err = root.Account.DisableAccount(p)
		tenWantCode(t, "disable the admin account", err, 531)
		_, err = root.Account.DeleteAccount(root.Account.NewDeleteAccountParams(models.SystemAccountUUID))
		tenWantCode(t, "delete the system account", err, 531)
	})

	t.Run("jobs are visible to their account only", func(t *testing.T) {
		// The domain admin ran deleteDomain and disableAccount above: its
		// jobs, newest first.
		jobs, err := dadmin.Client.Asyncjob.ListAsyncJobs(dadmin.Client.Asyncjob.NewListAsyncJobsParams())
		if err != nil || jobs.Count != 2 || !strings.HasSuffix(jobs.AsyncJobs[0].Cmd, "disableAccount") ||
			!strings.HasSuffix(jobs.AsyncJobs[1].Cmd, "deleteDomain") || jobs.AsyncJobs[0].Jobstatus != 1 {
			t.Fatalf("domain admin listAsyncJobs = %+v, %v", jobs, err)
		}
		job := jobs.AsyncJobs[0]
		if job.Jobinstancetype != "Account" || job.Jobinstanceid != u11.AccountID || job.Accountid != dadmin.AccountID || job.Domainid != d1.Id {
			t.Fatalf("job = %+v", job)
		}
		var res struct {
			Account cloudstack.Account `json:"account"`
		}
		if err := json.Unmarshal(job.Jobresult, &res); err != nil || res.Account.Id != u11.AccountID || res.Account.State != "disabled" {
			t.Fatalf("jobresult = %s (%v)", job.Jobresult, err)
		}
		// A user of another account gets "not found" for it.
		_, err = u1.Client.Asyncjob.QueryAsyncJobResult(u1.Client.Asyncjob.NewQueryAsyncJobResultParams(job.JobID))
		tenWantCode(t, "user queries another account's job", err, 431)
		if err != nil && !strings.Contains(err.Error(), "Unable to find job") {
			t.Fatalf("error text: %v", err)
		}
		mine, err := u1.Client.Asyncjob.ListAsyncJobs(u1.Client.Asyncjob.NewListAsyncJobsParams())
		if err != nil || mine.Count != 0 {
			t.Fatalf("user listAsyncJobs = %+v, %v", mine, err)
		}
		all := root.Asyncjob.NewListAsyncJobsParams()
		all.SetListall(true)
		all.SetStartdate(time.Now().UTC().Add(-time.Hour).Format("2006-01-02 15:04:05"))
		rj, err := root.Asyncjob.ListAsyncJobs(all)
		if err != nil || rj.Count < 1 {
			t.Fatalf("root listAsyncJobs listall = %+v, %v", rj, err)
		}
		all.SetStartdate(time.Now().UTC().Add(time.Hour).Format("2006-01-02 15:04:05"))
		if rj, err = root.Asyncjob.ListAsyncJobs(all); err != nil || rj.Count != 0 {
			t.Fatalf("root listAsyncJobs from the future = %+v, %v", rj, err)
		}
	})

	t.Run("deleteAccount removes users and keys", func(t *testing.T) {
		r, err := root.Account.DeleteAccount(root.Account.NewDeleteAccountParams(u1.AccountID))
		if err != nil || !r.Success {
			t.Fatalf("deleteAccount = %+v, %v", r, err)
		}
		_, names := tenAccountNames(t, root, func(p *cloudstack.ListAccountsParams) { p.SetListall(true) })
		tenWantNames(t, "accounts after delete", names, "admin", "d1admin", "u11-renamed", "u2")
		lu := root.User.NewListUsersParams()
		lu.SetListall(true)
		lu.SetKeyword("u1b")
		users, err := root.User.ListUsers(lu)
		if err != nil || users.Count != 0 {
			t.Fatalf("users of the deleted account = %+v, %v", users, err)
		}
		var left int64
		if left, err = s.DB.NewSelect().Model((*models.User)(nil)).Join("JOIN accounts AS a ON a.id = ?TableAlias.account_id").
			Where("a.uuid = ?", u1.AccountID).Where("?TableAlias.api_key IS NOT NULL").WhereAllWithDeleted().Count(context.Background()); err != nil || left != 0 {
			t.Fatalf("keys left on the deleted account's users: %d, %v", left, err)
		}
		_, err = u1.Client.Account.ListAccounts(u1.Client.Account.NewListAccountsParams())
		tenWantCode(t, "deleted account's key", err, 401)
	})

	t.Run("deleteDomain refuses with accounts, cleans up with cleanup=true", func(t *testing.T) {
		_, err := root.Domain.DeleteDomain(root.Domain.NewDeleteDomainParams(d2.Id))
		tenWantCode(t, "deleteDomain with an account", err, 536)
		ld, err := root.Domain.ListDomains(func() *cloudstack.ListDomainsParams {
			p := root.Domain.NewListDomainsParams()
			p.SetId(d2.Id)
			return p
		}())
		if err != nil || ld.Count != 1 || ld.Domains[0].State != "Active" {
			t.Fatalf("refused domain = %+v, %v", ld, err)
		}
		p := root.Domain.NewDeleteDomainParams(d2.Id)
		p.SetCleanup(true)
		if r, err := root.Domain.DeleteDomain(p); err != nil || !r.Success {
			t.Fatalf("deleteDomain cleanup=true = %+v, %v", r, err)
		}
		_, names := tenAccountNames(t, root, func(p *cloudstack.ListAccountsParams) { p.SetListall(true) })
		tenWantNames(t, "accounts after deleteDomain", names, "admin", "d1admin", "u11-renamed")
		_, err = u2.Client.Account.ListAccounts(u2.Client.Account.NewListAccountsParams())
		tenWantCode(t, "key of an account of the deleted domain", err, 401)
		_, err = root.Domain.ListDomains(func() *cloudstack.ListDomainsParams {
			p := root.Domain.NewListDomainsParams()
			p.SetId(d2.Id)
			return p
		}())
		tenWantCode(t, "listDomains of a deleted domain", err, 431)
		// The name is free again.
		tenCreateDomain(t, root, "d2", "")
		// ROOT cannot go.
		_, err = root.Domain.DeleteDomain(root.Domain.NewDeleteDomainParams(models.RootDomainUUID))
		tenWantCode(t, "delete ROOT", err, 431)
	})

	t.Run("events", func(t *testing.T) {
		ev := root.Event.NewListEventsParams()
		ev.SetListall(true)
		ev.SetPagesize(500)
		all, err := root.Event.ListEvents(ev)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for _, e := range all.Events {
			seen[e.Type]++
			if e.Id == "" || e.Created == "" || e.Level == "" {
				t.Fatalf("event = %+v", e)
			}
		}
		for typ, min := range map[string]int{"DOMAIN.CREATE": 4, "ACCOUNT.CREATE": 4, "USER.CREATE": 5, "ACCOUNT.DELETE": 2,
			"DOMAIN.DELETE": 1, "ACCOUNT.DISABLE": 1, "ACCOUNT.ENABLE": 1, "REGISTER.USER.KEY": 4, "DOMAIN.UPDATE": 1, "USER.UPDATE": 1} {
			if seen[typ] < min {
				t.Fatalf("events of type %s = %d, want >= %d (all: %v)", typ, seen[typ], min, seen)
			}
		}
		ev.SetType("ACCOUNT.DELETE")
		del, err := root.Event.ListEvents(ev)
		if err != nil || del.Count != seen["ACCOUNT.DELETE"] {
			t.Fatalf("listEvents type=ACCOUNT.DELETE = %d, %v", del.Count, err)
		}
		ev = root.Event.NewListEventsParams()
		ev.SetListall(true)
		ev.SetStartdate(time.Now().UTC().Add(time.Hour).Format("2006-01-02 15:04:05"))
		if fut, err := root.Event.ListEvents(ev); err != nil || fut.Count != 0 {
			t.Fatalf("listEvents startdate in the future = %d, %v", fut.Count, err)
		}
		// The domain admin sees the events of its subtree: its own
		// (disableAccount, createUser), not the root admin's.
		dev := dadmin.Client.Event.NewListEventsParams()
		dev.SetListall(true)
		des, err := dadmin.Client.Event.ListEvents(dev)
		if err != nil || des.Count == 0 {
			t.Fatalf("domain admin listEvents = %+v, %v", des, err)
		}
		for _, e := range des.Events {
			if e.Domainid != d1.Id {
				t.Fatalf("domain admin sees an event of another domain: %+v", e)
			}
		}
	})

	t.Run("platform commands", func(t *testing.T) {
		caps, err := u11.Client.Configuration.ListCapabilities(u11.Client.Configuration.NewListCapabilitiesParams())
		if err != nil || caps.Capabilities == nil || !strings.HasPrefix(caps.Capabilities.Cloudstackversion, "4.20.0") {
			t.Fatalf("listCapabilities = %+v, %v", caps, err)
		}
		ms, err := root.InfrastructureUsage.ListManagementServersMetrics(root.InfrastructureUsage.NewListManagementServersMetricsParams())
		if err != nil || ms.Count < 1 || ms.ManagementServersMetrics[0].State != "Up" {
			t.Fatalf("listManagementServersMetrics = %+v, %v", ms, err)
		}
		if v := ms.ManagementServersMetrics[0].Version; !regexp.MustCompile(`^\d+\.\d+\.\d+`).MatchString(v) {
			t.Fatalf("version %q is not semver", v)
		}
		_, err = u11.Client.InfrastructureUsage.ListManagementServersMetrics(u11.Client.InfrastructureUsage.NewListManagementServersMetricsParams())
		tenWantCode(t, "user listManagementServersMetrics", err, 405)
	})
}

// tenTemporal dials the stack's Temporal.
func tenTemporal(t *testing.T, s *testenv.Stack) client.Client {
	t.Helper()
	c, err := client.Dial(client.Options{HostPort: s.Temporal, Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// tenJob polls queryAsyncJobResult until the job leaves pending.
func tenJob(t *testing.T, cs *cloudstack.CloudStackClient, id string, want int) *cloudstack.QueryAsyncJobResultResponse {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, err := cs.Asyncjob.QueryAsyncJobResult(cs.Asyncjob.NewQueryAsyncJobResultParams(id))
		if err != nil {
			t.Fatalf("queryAsyncJobResult: %v", err)
		}
		if r.Jobstatus == want {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s: status %d, want %d (%s)", id, r.Jobstatus, want, r.Jobresult)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func TestJobsSearchAttributesTerminateAndReset(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	root := s.Client
	nowait := cloudstack.NewClient(s.APIURL, s.Admin.APIKey, s.Admin.SecretKey, false) // answers jobid at once
	tc := tenTemporal(t, s)
	ctx := context.Background()

	dom := tenCreateDomain(t, root, "jobs", "")
	victim := tenCreateAccount(t, s, root, "victim", dom.Id, models.AccountTypeUser)

	t.Run("search attributes and memo", func(t *testing.T) {
		r, err := nowait.Account.DeleteAccount(nowait.Account.NewDeleteAccountParams(victim.AccountID))
		if err != nil || r.JobID == "" {
			t.Fatalf("deleteAccount = %+v, %v", r, err)
		}
		tenJob(t, root, r.JobID, 1)
		q := fmt.Sprintf("NimbusCommand = 'deleteAccount' AND WorkflowId = '%s'", r.JobID)
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := tc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: "default", Query: q})
			if err != nil {
				t.Fatalf("ListWorkflow %q: %v", q, err)
			}
			if len(resp.Executions) == 1 {
				ex := resp.Executions[0]
				fields := ex.GetSearchAttributes().GetIndexedFields()
				for name, want := range map[string]string{"NimbusAccount": "admin", "NimbusDomain": "/", "NimbusResourceType": "Account", "NimbusResourceId": victim.AccountID} {
					var got string
					if p := fields[name]; p == nil || json.Unmarshal(p.GetData(), &got) != nil || got != want {
						t.Fatalf("search attribute %s = %v, want %q", name, p, want)
					}
				}
				var cmd string
				if p := ex.GetMemo().GetFields()["command"]; p == nil || json.Unmarshal(p.GetData(), &cmd) != nil || cmd != "deleteAccount" {
					t.Fatalf("memo = %v", ex.GetMemo())
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("ListWorkflow %q found %d executions", q, len(resp.Executions))
			}
			time.Sleep(500 * time.Millisecond)
		}
	})

	t.Run("a job terminated in Temporal fails with a clear text", func(t *testing.T) {
		acct := tenCreateAccount(t, s, root, "terminated", dom.Id, models.AccountTypeUser)
		for _, w := range s.Workers() {
			w.Kill() // the job stays pending, as when an operator acts before a worker picks it up
		}
		r, err := nowait.Account.DeleteAccount(nowait.Account.NewDeleteAccountParams(acct.AccountID))
		if err != nil {
			t.Fatalf("deleteAccount: %v", err)
		}
		if q, err := root.Asyncjob.QueryAsyncJobResult(root.Asyncjob.NewQueryAsyncJobResultParams(r.JobID)); err != nil || q.Jobstatus != 0 {
			t.Fatalf("job before terminate = %+v, %v", q, err)
		}
		if err := tc.TerminateWorkflow(ctx, r.JobID, "", "stopped by the operator"); err != nil {
			t.Fatalf("TerminateWorkflow: %v", err)
		}
		q := tenJob(t, root, r.JobID, 2)
		var res struct {
			ErrorCode int    `json:"errorcode"`
			ErrorText string `json:"errortext"`
		}
		if err := json.Unmarshal(q.Jobresult, &res); err != nil || res.ErrorCode != 530 ||
			!strings.Contains(res.ErrorText, "terminated") || !strings.Contains(res.ErrorText, "stopped by the operator") {
			t.Fatalf("terminated job result = %s (%v)", q.Jobresult, err)
		}
		if q.Jobresultcode != 530 || q.Jobresulttype != "object" {
			t.Fatalf("terminated job = %+v", q)
		}
		s.StartWorker()
		s.WaitHealthy(60 * time.Second)
		// Nothing was deleted: the account is intact and its key works.
		if _, err := acct.Client.Account.ListAccounts(acct.Client.Account.NewListAccountsParams()); err != nil {
			t.Fatalf("account of the terminated job: %v", err)
		}
	})

	t.Run("a failed job reset in Temporal shows its new outcome", func(t *testing.T) {
		d := tenCreateDomain(t, root, "reset-me", "")
		holder := tenCreateAccount(t, s, root, "holder", d.Id, models.AccountTypeUser)
		r, err := nowait.Domain.DeleteDomain(nowait.Domain.NewDeleteDomainParams(d.Id))
		if err != nil {
			t.Fatalf("deleteDomain: %v", err)
		}
		q := tenJob(t, root, r.JobID, 2)
		if !strings.Contains(string(q.Jobresult), `"errorcode":536`) {
			t.Fatalf("refused deleteDomain = %s", q.Jobresult)
		}
		// The operator removes the account, then resets the failed job to
		// its first workflow task in the Temporal UI.
		if _, err := root.Account.DeleteAccount(root.Account.NewDeleteAccountParams(holder.AccountID)); err != nil {
			t.Fatalf("deleteAccount: %v", err)
		}
		var first int64
		it := tc.GetWorkflowHistory(ctx, r.JobID, "", false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		for it.HasNext() && first == 0 {
			ev, err := it.Next()
			if err != nil {
				t.Fatal(err)
			}
			if ev.GetEventType() == enums.EVENT_TYPE_WORKFLOW_TASK_COMPLETED {
				first = ev.GetEventId()
			}
		}
		if _, err := tc.ResetWorkflowExecution(ctx, &workflowservice.ResetWorkflowExecutionRequest{
			Namespace:                 "default",
			WorkflowExecution:         &common.WorkflowExecution{WorkflowId: r.JobID},
			Reason:                    "retry after removing the account",
			WorkflowTaskFinishEventId: first,
			RequestId:                 models.NewUUID(),
		}); err != nil {
			t.Fatalf("ResetWorkflowExecution: %v", err)
		}
		q = tenJob(t, root, r.JobID, 1)
		if !strings.Contains(string(q.Jobresult), `"success":true`) {
			t.Fatalf("reset job result = %s", q.Jobresult)
		}
		ld, err := root.Domain.ListDomains(func() *cloudstack.ListDomainsParams {
			p := root.Domain.NewListDomainsParams()
			p.SetListall(true)
			p.SetName("reset-me")
			return p
		}())
		if err != nil || ld.Count != 0 {
			t.Fatalf("domain after the reset job = %+v, %v", ld, err)
		}
	})
}
