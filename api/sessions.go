package api

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"golang.org/x/crypto/bcrypt"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/secrets"
	"github.com/nimbus-cloud/nimbus/models"
)

// sessionTimeout is how long a login session lives without use; each use
// extends it (CloudStack's session.timeout default).
const sessionTimeout = 30 * time.Minute

// sessionCacheTTL bounds how long another process keeps honouring a session
// that was logged out elsewhere; a local logout drops it at once.
const sessionCacheTTL = 5 * time.Second

// SessionCookie is the cookie that carries the session key.
const SessionCookie = "sessionkey"

type sessionEntry struct {
	caller  Caller
	expires time.Time // of the cache entry, never past the session's end
}

type sessionCache struct {
	mu sync.RWMutex
	m  map[string]*sessionEntry // by key hash
}

func (c *sessionCache) get(hash string) *sessionEntry {
	c.mu.RLock()
	e := c.m[hash]
	c.mu.RUnlock()
	if e == nil || time.Now().After(e.expires) {
		return nil
	}
	return e
}

func (c *sessionCache) put(hash string, e *sessionEntry) {
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]*sessionEntry{}
	}
	c.m[hash] = e
	c.mu.Unlock()
}

func (c *sessionCache) drop(hash string) {
	c.mu.Lock()
	delete(c.m, hash)
	c.mu.Unlock()
}

func (c *sessionCache) clear() {
	c.mu.Lock()
	c.m = nil
	c.mu.Unlock()
}

func hashSessionKey(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:])
}

var errBadSession = cserr.New(cserr.Unauthorized, "session expired or invalid: log in again")

// sessionKeyOf finds a session key in the parameters or the cookie; when
// both are given they must be the same session.
func sessionKeyOf(c *gin.Context, raw url.Values) (string, error) {
	param := first(raw, "sessionkey")
	ck, _ := c.Cookie(SessionCookie)
	if param != "" && ck != "" && param != ck {
		return "", errBadSession
	}
	if param != "" {
		return param, nil
	}
	return ck, nil
}

// sessionCaller resolves a session key to its caller: from the cache when
// fresh, else from the sessions table (which stores only the key's hash).
// Each use moves the session's end forward; the row is rewritten when less
// than half of its lifetime is left.
func (s *Server) sessionCaller(ctx context.Context, key string) (*Caller, error) {
	hash := hashSessionKey(key)
	if e := s.keys.sessions.get(hash); e != nil {
		caller := e.caller
		caller.SessionKey = key
		return &caller, nil
	}
	now := models.Now()
	var sess models.Session
	err := s.DB.NewSelect().Model(&sess).Where("key_hash = ?", hash).Limit(1).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) || err == nil && !now.Before(sess.Expires) {
		return nil, errBadSession
	}
	if err != nil {
		return nil, err
	}
	var u models.User
	if err := s.DB.NewSelect().Model(&u).Where("id = ?", sess.UserID).Limit(1).Scan(ctx); err != nil {
		return nil, errBadSession
	}
	caller, err := s.loadCaller(ctx, &u)
	if err != nil {
		return nil, err
	}
	if sess.Expires.Sub(now) < sessionTimeout/2 {
		sess.Expires = now.Add(sessionTimeout)
		if _, err := s.DB.NewUpdate().Model(&sess).Set("expires = ?", sess.Expires).WherePK().Exec(ctx); err != nil {
			return nil, err
		}
	}
	until := time.Now().Add(sessionCacheTTL)
	if sess.Expires.Before(until) {
		until = sess.Expires
	}
	s.keys.sessions.put(hash, &sessionEntry{caller: *caller, expires: until})
	caller.SessionKey = key
	return caller, nil
}

func init() {
	Register(&Command{
		Name:        "login",
		Description: "Logs a user in with username and password; answers a session key, also set as the sessionkey cookie, for later calls",
		NoAuth:      true,
		Params: []Param{
			{Name: "username", Type: TString, Required: true, Description: "the user's name"},
			{Name: "password", Type: TString, Required: true, Description: "the user's password (send it in a POST body, never in a URL)"},
			{Name: "domain", Type: TString, Description: "path of the user's domain, such as /dept/team (ROOT, / or empty for the root domain)"},
			{Name: "domainId", Type: TString, Description: "id of the user's domain (UUID or internal id); overrides domain"},
		},
		ResponseName: "login",
		Response:     loginFields,
		Handler:      login,
	}, &Command{
		Name:         "logout",
		Description:  "Ends the caller's login session (the sessionkey parameter or cookie); with an API key it does nothing",
		Access:       AccessAll,
		ResponseName: "logout",
		Response:     []Field{{"description", "string", "success"}},
		Handler:      logout,
	})
}

var loginFields = []Field{
	{"username", "string", "the user's name"},
	{"userid", "string", "the user's id"},
	{"domainid", "string", "the id of the user's domain"},
	{"account", "string", "the user's account"},
	{"type", "string", "the account type: 0 user, 1 root admin, 2 domain admin"},
	{"timeout", "integer", "seconds the session lives without use"},
	{"sessionkey", "string", "the session key to pass as sessionkey with later calls"},
	{"firstname", "string", "the user's first name"},
	{"lastname", "string", "the user's last name"},
	{"timezone", "string", "the user's time zone"},
	{"registered", "string", "whether the user is registered (false)"},
	{"is2faenabled", "string", "whether two-factor authentication is enabled (false)"},
	{"is2faverified", "string", "whether two-factor authentication is verified"},
}

// LoginResponse is CloudStack's login answer (cloudstack-go's LoginResponse:
// every field a string but timeout).
type LoginResponse struct {
	Username      string `json:"username"`
	UserID        string `json:"userid"`
	DomainID      string `json:"domainid"`
	Account       string `json:"account"`
	Type          string `json:"type"`
	Timeout       int    `json:"timeout"`
	SessionKey    string `json:"sessionkey"`
	FirstName     string `json:"firstname"`
	LastName      string `json:"lastname"`
	Timezone      string `json:"timezone,omitempty"`
	Registered    string `json:"registered"`
	Is2FAEnabled  string `json:"is2faenabled"`
	Is2FAVerified string `json:"is2faverified"`
}

// dummyHash is compared against when the user does not exist, so that a
// wrong username costs as long as a wrong password.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("nimbus-no-such-user"), bcrypt.DefaultCost)

func login(c *Call) (any, error) {
	username := c.Str("username")
	domainDesc := c.Str("domainid")
	if domainDesc == "" {
		domainDesc = c.Str("domain")
		if domainDesc == "" {
			domainDesc = "/"
		}
	}
	fail := cserr.New(cserr.Unauthorized, "Failed to authenticate user %s in domain %s; please provide valid credentials", clip(username, 64), clip(domainDesc, 64))

	dom, err := loginDomain(c)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	var u models.User
	if err == nil {
		err = c.S.DB.NewSelect().Model(&u).
			Join("JOIN accounts AS a ON a.id = ?TableAlias.account_id AND a.removed IS NULL").
			Where("a.domain_id = ?", dom.ID).Where("?TableAlias.username = ?", username).
			Limit(1).Scan(c.Ctx)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, err
		}
	}
	hash := dummyHash
	if err == nil && u.PasswordHash != "" {
		hash = []byte(u.PasswordHash)
	}
	pwErr := bcrypt.CompareHashAndPassword(hash, []byte(c.Str("password")))
	if err != nil || u.PasswordHash == "" || pwErr != nil {
		c.S.Log.Info("login failed", "username", clip(username, 64), "domain", clip(domainDesc, 64), "request_id", c.RequestID)
		return nil, fail
	}
	caller, err := c.S.loadCaller(c.Ctx, &u)
	if err != nil {
		c.S.Log.Info("login refused", "username", clip(username, 64), "user", u.UUID, "request_id", c.RequestID, "reason", err.Error())
		return nil, fail
	}
	key := secrets.RandomKey(24)
	now := models.Now()
	sess := &models.Session{KeyHash: hashSessionKey(key), UserID: u.ID, Created: now, Expires: now.Add(sessionTimeout)}
	if _, err := c.S.DB.NewInsert().Model(sess).Exec(c.Ctx); err != nil {
		return nil, err
	}
	// Ended sessions are removed now and then, by whoever logs in.
	if now.Unix()%16 == 0 {
		_, _ = c.S.DB.NewDelete().Model((*models.Session)(nil)).Where("expires < ?", now).Exec(c.Ctx)
	}
	c.SetCookie(SessionCookie, key)
	c.S.Log.Info("login", "user", u.UUID, "account", caller.Account.Name, "request_id", c.RequestID)
	return LoginResponse{
		Username: u.Username, UserID: u.UUID, DomainID: caller.Domain.UUID, Account: caller.Account.Name,
		Type: strconv.Itoa(caller.Account.Type), Timeout: int(sessionTimeout / time.Second), SessionKey: key,
		FirstName: u.FirstName, LastName: u.LastName, Timezone: u.Timezone,
		Registered: "false", Is2FAEnabled: "false", Is2FAVerified: "true",
	}, nil
}

// loginDomain finds the domain named by domainId (UUID or internal id) or
// domain (a path such as /dept/team; "", "/", "ROOT" and "/ROOT/..." are
// accepted too).
func loginDomain(c *Call) (*models.Domain, error) {
	var d models.Domain
	q := c.S.DB.NewSelect().Model(&d).Limit(1)
	if id := c.Str("domainid"); id != "" {
		if n, err := strconv.ParseInt(id, 10, 64); err == nil {
			q = q.Where("id = ?", n)
		} else if _, err := uuid.Parse(id); err == nil {
			q = q.Where("uuid = ?", id)
		} else {
			return nil, sql.ErrNoRows
		}
	} else {
		q = q.Where("path = ?", domainPath(c.Str("domain")))
	}
	if err := q.Scan(c.Ctx); err != nil {
		return nil, err
	}
	return &d, nil
}

// domainPath turns a login domain into the stored path form "/a/b/".
func domainPath(p string) string {
	p = strings.Trim(strings.TrimSpace(p), "/")
	if p == "ROOT" {
		p = ""
	} else {
		p = strings.TrimPrefix(p, "ROOT/")
	}
	if p == "" {
		return "/"
	}
	return "/" + p + "/"
}

func logout(c *Call) (any, error) {
	if key := c.Caller.SessionKey; key != "" {
		hash := hashSessionKey(key)
		if _, err := c.S.DB.NewDelete().Model((*models.Session)(nil)).Where("key_hash = ?", hash).Exec(c.Ctx); err != nil {
			return nil, err
		}
		c.S.keys.sessions.drop(hash)
		c.SetCookie(SessionCookie, "")
	}
	return map[string]string{"description": "success"}, nil
}
