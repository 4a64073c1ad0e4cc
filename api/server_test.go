package api

import (
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/cloudstack-go/v2/cloudstack"

	"github.com/nimbus-cloud/nimbus/infra/config"
	"github.com/nimbus-cloud/nimbus/models"
)

// TestErrorStatusIsErrorCode: every CloudStack error code is the HTTP status,
// with errorcode, cserrorcode, errortext and uuidList.
func TestErrorStatusIsErrorCode(t *testing.T) {
	ts := newTestServer(t, nil)
	for _, code := range []int{401, 405, 429, 431, 432, 530, 531, 532, 533, 534, 535, 536, 537} {
		r := ts.admin(cmdParams("nimbusTestError", "code", strconv.Itoa(code)))
		wantError(t, r, code, "test error "+strconv.Itoa(code))
		if _, ok := r.Body["nimbustesterrorresponse"]; !ok {
			t.Fatalf("error not under nimbustesterrorresponse: %s", r.Raw)
		}
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("content type %q", ct)
		}
	}
	// The real paths to each client error.
	wantError(t, ts.get("command=listApis&response=json"), 401, "unable to verify")
	wantError(t, ts.admin(cmdParams("noSuchCommand")), 432, "noSuchCommand")
	wantError(t, ts.admin(cmdParams("nimbusTestError")), 431, "missing parameter code")
	wantError(t, ts.admin(cmdParams("nimbusTestError", "code", "abc")), 431, "code")
	xml := url.Values{"command": {"listApis"}, "response": {"xml"}, "apiKey": {ts.Admin.APIKey}}
	wantError(t, ts.get(EncodeSigned(xml, ts.Admin.SecretKey)), 431, "JSON")
	ro := ts.addUser(models.RoleReadOnlyUUID)
	wantError(t, ts.signed(ro.APIKey, ro.Secret, cmdParams("nimbusTestWrite")), 405, "nimbusTestWrite")
	user := ts.addUser(models.RoleUserUUID)
	wantError(t, ts.signed(user.APIKey, user.Secret, cmdParams("createRole", "name", "x", "type", "User")), 405, "createRole")
}

// TestPanicIs530WithRequestID: a panicking handler answers 530 and logs the
// panic with the request id the client sees.
func TestPanicIs530WithRequestID(t *testing.T) {
	ts := newTestServer(t, nil)
	r := ts.admin(cmdParams("nimbusTestPanic"))
	wantError(t, r, 530, "request ")
	m := regexp.MustCompile(`request ([0-9a-z]+-[0-9a-z]+)`).FindStringSubmatch(r.inner()["errortext"].(string))
	if m == nil {
		t.Fatalf("no request id in %s", r.Raw)
	}
	found := false
	for _, line := range strings.Split(ts.Log.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["request_id"] == m[1] && strings.Contains(line, "panic") {
			found = true
			if rec["panic"] != "test panic" || !strings.Contains(rec["stack"].(string), "server.go") {
				t.Fatalf("log line lacks panic or stack: %s", line)
			}
		}
	}
	if !found {
		t.Fatalf("no log line with request_id %s:\n%s", m[1], ts.Log.String())
	}
	// The server still serves.
	if r := ts.admin(cmdParams("listApis", "name", "listApis")); r.Status != 200 {
		t.Fatalf("after panic: %s", r)
	}
}

func TestMaxRequestSize(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) { c.MaxBodyBytes = 4096 })
	params := cmdParams("nimbusTestEcho", "value", strings.Repeat("v", 3500))
	params.Set("apiKey", ts.Admin.APIKey)
	params.Set("response", "json")
	params.Set("signature", Sign(params, ts.Admin.SecretKey))
	post := func(body string) reply {
		req, _ := http.NewRequest("POST", ts.URL, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return doRequest(t, req)
	}
	if r := post(params.Encode()); r.Status != 200 {
		t.Fatalf("a body under the limit: %s", r)
	}
	params.Set("value", strings.Repeat("v", 4096))
	params.Set("signature", Sign(params, ts.Admin.SecretKey))
	wantError(t, post(params.Encode()), 431, "larger than 4096 bytes")
}

func TestRateLimit(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) { c.RateLimit = 0.5; c.RateBurst = 3 })
	user := ts.addUser(models.RoleUserUUID)
	for i := 0; i < 3; i++ {
		if r := ts.admin(cmdParams("listApis", "name", "listApis")); r.Status != 200 {
			t.Fatalf("call %d: %s", i, r)
		}
	}
	r := ts.admin(cmdParams("listApis", "name", "listApis"))
	wantError(t, r, 429, "exceeded")
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}
	// Another key has its own bucket.
	if r := ts.signed(user.APIKey, user.Secret, cmdParams("listApis", "name", "listApis")); r.Status != 200 {
		t.Fatalf("other key: %s", r)
	}
	// Unauthenticated calls (login) are limited per remote address.
	for i := 0; i < 3; i++ {
		if r := ts.get(url.Values{"command": {"login"}, "username": {"nobody"}, "password": {"x"}}.Encode()); r.Status != 401 {
			t.Fatalf("login %d: %s", i, r)
		}
	}
	wantError(t, ts.get(url.Values{"command": {"login"}, "username": {"nobody"}, "password": {"x"}}.Encode()), 429, "exceeded")
}

func loginForm(ts *testServer, username, password, domain string) reply {
	ts.t.Helper()
	form := url.Values{"command": {"login"}, "username": {username}, "password": {password}, "response": {"json"}}
	if domain != "" {
		form.Set("domain", domain)
	}
	req, _ := http.NewRequest("POST", ts.URL, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return doRequest(ts.t, req)
}

func TestLoginSession(t *testing.T) {
	ts := newTestServer(t, nil)
	u := ts.addUser(models.RoleUserUUID)

	wantError(t, loginForm(ts, u.Username, "wrong", ""), 401, "Failed to authenticate")
	wantError(t, loginForm(ts, "nobody", u.Password, ""), 401, "Failed to authenticate")
	wantError(t, loginForm(ts, u.Username, u.Password, "/no/such/"), 401, "Failed to authenticate")
	if strings.Contains(ts.Log.String(), u.Password) || strings.Contains(ts.Log.String(), "wrong") {
		t.Fatal("a password reached the log")
	}

	r := loginForm(ts, u.Username, u.Password, "ROOT")
	if r.Status != 200 {
		t.Fatalf("login: %s", r)
	}
	var lr cloudstack.LoginResponse
	if err := json.Unmarshal(r.Body["loginresponse"], &lr); err != nil {
		t.Fatalf("login answer does not decode into cloudstack-go's LoginResponse: %v: %s", err, r.Raw)
	}
	if lr.Username != u.Username || lr.Userid != u.User.UUID || lr.Domainid != models.RootDomainUUID || lr.Account != u.Account.Name ||
		lr.Type != "0" || lr.Timeout != 1800 || lr.Sessionkey == "" || lr.Firstname != "Test" || lr.Registered != "false" {
		t.Fatalf("login answer %+v", lr)
	}
	var cookie *http.Cookie
	for _, c := range (&http.Response{Header: r.Header}).Cookies() {
		if c.Name == "sessionkey" {
			cookie = c
		}
	}
	if cookie == nil || cookie.Value != lr.Sessionkey || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode {
		t.Fatalf("sessionkey cookie %+v", cookie)
	}
	var n int64
	n, _ = ts.S.DB.NewSelect().Model((*models.Session)(nil)).Where("key_hash = ?", hashSessionKey(lr.Sessionkey)).Count(t.Context())
	if n != 1 {
		t.Fatalf("%d session rows hold the key's hash", n)
	}
	if n, _ = ts.S.DB.NewSelect().Model((*models.Session)(nil)).Where("key_hash = ?", lr.Sessionkey).Count(t.Context()); n != 0 {
		t.Fatal("the session key is stored in clear")
	}

	withCookie := func(q string, key string) reply {
		req, _ := http.NewRequest("GET", ts.URL+"?"+q, nil)
		req.AddCookie(&http.Cookie{Name: "sessionkey", Value: key})
		return doRequest(t, req)
	}
	// Cookie, parameter, both.
	if r := withCookie("command=listApis&name=listApis&response=json", lr.Sessionkey); r.Status != 200 {
		t.Fatalf("with cookie: %s", r)
	}
	if r := ts.get("command=listApis&name=listApis&response=json&sessionkey=" + url.QueryEscape(lr.Sessionkey)); r.Status != 200 {
		t.Fatalf("with parameter: %s", r)
	}
	if r := withCookie("command=listApis&name=listApis&response=json&sessionkey="+url.QueryEscape(lr.Sessionkey), lr.Sessionkey); r.Status != 200 {
		t.Fatalf("with both: %s", r)
	}
	wantError(t, withCookie("command=listApis&response=json&sessionkey=other", lr.Sessionkey), 401, "session")
	wantError(t, withCookie("command=listApis&response=json", lr.Sessionkey+"x"), 401, "session")
	// The session's user is a user: admin commands are refused.
	wantError(t, withCookie("command=createRole&name=x&type=User&response=json", lr.Sessionkey), 405, "createRole")

	if r := withCookie("command=logout&response=json", lr.Sessionkey); r.Status != 200 || !strings.Contains(string(r.Raw), `"description":"success"`) {
		t.Fatalf("logout: %s", r)
	}
	wantError(t, withCookie("command=listApis&response=json", lr.Sessionkey), 401, "session")
	wantError(t, ts.get("command=listApis&response=json&sessionkey="+url.QueryEscape(lr.Sessionkey)), 401, "session")

	// A disabled user cannot log in.
	if _, err := ts.S.DB.NewUpdate().Table("users").Set("state = 'disabled'").Where("id = ?", u.User.ID).Exec(t.Context()); err != nil {
		t.Fatal(err)
	}
	wantError(t, loginForm(ts, u.Username, u.Password, ""), 401, "Failed to authenticate")
}

func TestListApis(t *testing.T) {
	ts := newTestServer(t, nil)
	r := ts.admin(cmdParams("listApis"))
	if r.Status != 200 {
		t.Fatalf("listApis: %s", r)
	}
	var la cloudstack.ListApisResponse
	if err := json.Unmarshal(r.Body["listapisresponse"], &la); err != nil {
		t.Fatalf("does not decode into cloudstack-go's ListApisResponse: %v", err)
	}
	all := Commands()
	if la.Count != len(all) || len(la.Apis) != len(all) {
		t.Fatalf("admin sees %d/%d APIs, %d registered", la.Count, len(la.Apis), len(all))
	}
	// cmk reads these keys with type assertions: each must be there with its type.
	var raw struct {
		API []map[string]any `json:"api"`
	}
	_ = json.Unmarshal(r.Body["listapisresponse"], &raw)
	for _, a := range raw.API {
		_, ok1 := a["name"].(string)
		_, ok2 := a["isasync"].(bool)
		_, ok3 := a["description"].(string)
		params, ok4 := a["params"].([]any)
		resp, ok5 := a["response"].([]any)
		_, ok6 := a["related"].(string)
		if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 {
			t.Fatalf("bad api entry %v", a)
		}
		for _, p := range params {
			pm := p.(map[string]any)
			_, ok1 := pm["name"].(string)
			_, ok2 := pm["type"].(string)
			_, ok3 := pm["required"].(bool)
			_, ok4 := pm["description"].(string)
			_, ok5 := pm["length"].(float64)
			if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 {
				t.Fatalf("bad param %v of %v", pm, a["name"])
			}
		}
		for _, f := range resp {
			fm := f.(map[string]any)
			if _, ok := fm["name"].(string); !ok {
				t.Fatalf("bad response field %v of %v", fm, a["name"])
			}
		}
	}
	// Declared parameters show with their types.
	var create *cloudstack.Api
	for _, a := range la.Apis {
		if a.Name == "createRolePermission" {
			create = a
		}
	}
	if create == nil || create.Isasync || len(create.Params) != 4 || len(create.Response) == 0 {
		t.Fatalf("createRolePermission: %+v", create)
	}
	for _, p := range create.Params {
		if p.Name == "roleid" && (p.Type != "uuid" || !p.Required) {
			t.Fatalf("roleid param %+v", p)
		}
	}

	// A read-only user sees only what it may call.
	ro := ts.addUser(models.RoleReadOnlyUUID)
	r = ts.signed(ro.APIKey, ro.Secret, cmdParams("listApis"))
	var mine cloudstack.ListApisResponse
	_ = json.Unmarshal(r.Body["listapisresponse"], &mine)
	if mine.Count == 0 || mine.Count >= la.Count {
		t.Fatalf("read-only user sees %d of %d", mine.Count, la.Count)
	}
	for _, a := range mine.Apis {
		cmd := Lookup(a.Name)
		if !cmd.NoAuth && cmd.Access&AccessReadOnly == 0 {
			t.Fatalf("read-only user is shown %s", a.Name)
		}
	}
	// name= filters; an API the caller may not call is not described.
	r = ts.signed(ro.APIKey, ro.Secret, cmdParams("listApis", "name", "listapis"))
	if r.Status != 200 || !strings.Contains(string(r.Raw), `"count":1`) {
		t.Fatalf("name filter: %s", r)
	}
	wantError(t, ts.signed(ro.APIKey, ro.Secret, cmdParams("listApis", "name", "createRole")), 431, "createRole")
}

func TestAPIDocs(t *testing.T) {
	ts := newTestServer(t, nil)
	for _, format := range []string{"", "?format=md"} {
		resp, err := http.Get(ts.HTTP.URL + "/docs/api" + format)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		buf := make([]byte, 1<<16)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("/docs/api%s: %d", format, resp.StatusCode)
		}
		for _, c := range Commands() {
			if !strings.Contains(b.String(), c.Name) {
				t.Fatalf("/docs/api%s lacks %s", format, c.Name)
			}
		}
		if !strings.Contains(b.String(), "roleid") {
			t.Fatalf("/docs/api%s lacks parameters", format)
		}
	}
}
