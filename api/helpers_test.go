package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/config"
	"github.com/nimbus-cloud/nimbus/infra/db"
	"github.com/nimbus-cloud/nimbus/infra/secrets"
	"github.com/nimbus-cloud/nimbus/models"
)

// Test-only commands: an echo of its parameters, an error of a given code,
// and a panic.
func init() {
	Register(
		&Command{
			Name: "nimbusTestEcho", Description: "test only: echoes value", Access: AccessAll,
			Params: []Param{{Name: "value", Type: TString, Length: 4096, Description: "echoed"}},
			Handler: func(c *Call) (any, error) {
				return map[string]string{"value": c.Str("value")}, nil
			},
		},
		&Command{
			Name: "nimbusTestError", Description: "test only: fails with code", Access: AccessAll,
			Params: []Param{{Name: "code", Type: TInteger, Required: true, Description: "the code"}},
			Handler: func(c *Call) (any, error) {
				return nil, cserr.New(int(c.Int("code", 0)), "test error %d", c.Int("code", 0))
			},
		},
		&Command{
			Name: "nimbusTestPanic", Description: "test only: panics", Access: AccessAll,
			Handler: func(c *Call) (any, error) { panic("test panic") },
		},
		&Command{
			Name: "nimbusTestWrite", Description: "test only: a write command users may call", Access: AccessAllWrite,
			Handler: func(c *Call) (any, error) { return Success{Success: true}, nil },
		},
	)
}

// syncBuffer is a log sink tests can read while the server writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testServer is an API server on a fresh SQLite inventory (no Temporal)
// behind a real HTTP listener.
type testServer struct {
	t     testing.TB
	S     *Server
	HTTP  *httptest.Server
	URL   string // .../client/api
	Admin AdminCreds
	Log   *syncBuffer
}

func newTestServer(t testing.TB, tune func(*config.Config)) *testServer {
	t.Helper()
	ctx := context.Background()
	d, err := db.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "nimbus.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if _, err := models.Migrate(ctx, d); err != nil {
		t.Fatal(err)
	}
	box, err := secrets.New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	admin, err := EnsureAdmin(ctx, d, box)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Config{MaxBodyBytes: 1 << 20, MaxPageSize: 500, Namespace: "default"}
	if tune != nil {
		tune(&cfg)
	}
	logs := &syncBuffer{}
	s := New(d, nil, box, cfg, "test", slog.New(slog.NewJSONHandler(logs, nil)))
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	return &testServer{t: t, S: s, HTTP: hs, URL: hs.URL + "/client/api", Admin: admin, Log: logs}
}

// testUser is a user with keys, made directly in the inventory.
type testUser struct {
	User             models.User
	Account          models.Account
	APIKey, Secret   string
	Password         string
	Username, Domain string
}

// addUser creates an account of the given role in ROOT with one user that
// has a password and API keys.
func (ts *testServer) addUser(roleUUID string) *testUser {
	ts.t.Helper()
	ctx := context.Background()
	var role models.Role
	if err := ts.S.DB.NewSelect().Model(&role).Where("uuid = ?", roleUUID).Scan(ctx); err != nil {
		ts.t.Fatal(err)
	}
	var root models.Domain
	if err := ts.S.DB.NewSelect().Model(&root).Where("uuid = ?", models.RootDomainUUID).Scan(ctx); err != nil {
		ts.t.Fatal(err)
	}
	typ := models.AccountTypeUser
	switch role.Type {
	case models.RoleTypeAdmin:
		typ = models.AccountTypeAdmin
	case models.RoleTypeDomainAdmin:
		typ = models.AccountTypeDomainAdmin
	}
	name := "u" + strings.ReplaceAll(models.NewUUID()[:8], "-", "")
	acct := models.Account{UUID: models.NewUUID(), Name: name, DomainID: root.ID, Type: typ, RoleID: role.ID, State: "enabled", Created: models.Now()}
	if _, err := ts.S.DB.NewInsert().Model(&acct).Exec(ctx); err != nil {
		ts.t.Fatal(err)
	}
	pw := "pw-" + secrets.RandomKey(8)
	hash, err := HashPassword(pw)
	if err != nil {
		ts.t.Fatal(err)
	}
	key, secret := secrets.RandomKey(24), secrets.RandomKey(24)
	sealed, err := ts.S.Secrets.Encrypt(secret)
	if err != nil {
		ts.t.Fatal(err)
	}
	u := models.User{UUID: models.NewUUID(), AccountID: acct.ID, Username: name, PasswordHash: hash, FirstName: "Test", LastName: "User",
		State: "enabled", APIKey: &key, SecretKeyCipher: sealed, Created: models.Now()}
	if _, err := ts.S.DB.NewInsert().Model(&u).Exec(ctx); err != nil {
		ts.t.Fatal(err)
	}
	return &testUser{User: u, Account: acct, APIKey: key, Secret: secret, Password: pw, Username: name, Domain: "/"}
}

// reply is a decoded API answer.
type reply struct {
	Status int
	Header http.Header
	Raw    []byte
	Body   map[string]json.RawMessage
}

// inner decodes the one top-level object.
func (r reply) inner() map[string]any {
	for _, v := range r.Body {
		var m map[string]any
		_ = json.Unmarshal(v, &m)
		return m
	}
	return nil
}

// errCode is the errorcode of an error answer (0 when none).
func (r reply) errCode() int {
	if v, ok := r.inner()["errorcode"].(float64); ok {
		return int(v)
	}
	return 0
}

func (r reply) String() string { return fmt.Sprintf("%d %s", r.Status, r.Raw) }

func doRequest(t testing.TB, req *http.Request) reply {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{Status: resp.StatusCode, Header: resp.Header, Raw: b}
	_ = json.Unmarshal(b, &r.Body)
	return r
}

func (ts *testServer) get(query string) reply {
	ts.t.Helper()
	req, err := http.NewRequest("GET", ts.URL+"?"+query, nil)
	if err != nil {
		ts.t.Fatal(err)
	}
	return doRequest(ts.t, req)
}

// signed calls command with params signed by key/secret.
func (ts *testServer) signed(key, secret string, params url.Values) reply {
	ts.t.Helper()
	params.Set("apiKey", key)
	params.Set("response", "json")
	return ts.get(EncodeSigned(params, secret))
}

func (ts *testServer) admin(params url.Values) reply {
	ts.t.Helper()
	return ts.signed(ts.Admin.APIKey, ts.Admin.SecretKey, params)
}

func cmdParams(command string, kv ...string) url.Values {
	v := url.Values{"command": {command}}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v
}

// wantError checks an error answer: HTTP status = errorcode = code, with
// CloudStack's fields.
func wantError(t testing.TB, r reply, code int, textHas string) {
	t.Helper()
	if r.Status != code || r.errCode() != code {
		t.Fatalf("got %s, want HTTP %d with errorcode %d", r, code, code)
	}
	in := r.inner()
	if _, ok := in["cserrorcode"].(float64); !ok {
		t.Fatalf("no numeric cserrorcode in %s", r.Raw)
	}
	if _, ok := in["uuidList"].([]any); !ok {
		t.Fatalf("no uuidList array in %s", r.Raw)
	}
	if txt, _ := in["errortext"].(string); !strings.Contains(txt, textHas) {
		t.Fatalf("errortext %q does not contain %q", txt, textHas)
	}
}
