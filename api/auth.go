package api

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"errors"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
)

// keyTTL bounds how long a disabled user or a changed key keeps working on
// another server process; local changes invalidate at once.
const keyTTL = 30 * time.Second

// keyEntry is a cached API key: the caller and its decrypted secret.
type keyEntry struct {
	caller  Caller
	secret  []byte
	expires time.Time
}

type keyCache struct {
	mu sync.RWMutex
	m  map[string]*keyEntry
}

func newKeyCache() *keyCache { return &keyCache{m: map[string]*keyEntry{}} }

func (k *keyCache) get(apiKey string) *keyEntry {
	k.mu.RLock()
	e := k.m[apiKey]
	k.mu.RUnlock()
	if e == nil || time.Now().After(e.expires) {
		return nil
	}
	return e
}

func (k *keyCache) put(apiKey string, e *keyEntry) {
	k.mu.Lock()
	k.m[apiKey] = e
	k.mu.Unlock()
}

// InvalidateKeys drops cached credentials (after a user, account or role
// changes) so the next request reloads them.
func (s *Server) InvalidateKeys() {
	s.keys.mu.Lock()
	s.keys.m = map[string]*keyEntry{}
	s.keys.mu.Unlock()
}

var errUnauthorized = cserr.New(cserr.Unauthorized, "unable to verify user credentials and/or request signature")

// authenticate finds the caller of a request: a session key, or an API key
// with a valid signature.
func (s *Server) authenticate(c *gin.Context, raw url.Values) (*Caller, error) {
	if s.NoAuth {
		return s.rootCaller(c.Request.Context())
	}
	if sk := sessionKeyOf(c, raw); sk != "" && raw.Get("apikey") == "" && raw.Get("apiKey") == "" {
		return s.sessionCaller(c.Request.Context(), sk)
	}
	apiKey := first(raw, "apiKey", "apikey")
	sig := first(raw, "signature")
	if apiKey == "" || sig == "" {
		return nil, errUnauthorized
	}
	e, err := s.keyEntry(c.Request.Context(), apiKey)
	if err != nil {
		return nil, err
	}
	if !verifySignature(raw, e.secret, sig) {
		return nil, errUnauthorized
	}
	if v := first(raw, "signatureVersion", "signatureversion"); v == "3" {
		exp := first(raw, "expires")
		t, err := parseExpires(exp)
		if err != nil || time.Now().After(t) {
			return nil, cserr.New(cserr.Unauthorized, "request expired or expires missing (signatureversion=3)")
		}
	}
	caller := e.caller
	return &caller, nil
}

func parseExpires(v string) (time.Time, error) {
	for _, f := range []string{"2006-01-02T15:04:05-0700", time.RFC3339, "2006-01-02T15:04:05Z0700"} {
		if t, err := time.Parse(f, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errors.New("bad expires")
}

func first(v url.Values, names ...string) string {
	for _, n := range names {
		if s := v.Get(n); s != "" {
			return s
		}
	}
	for k, vs := range v {
		for _, n := range names {
			if strings.EqualFold(k, n) && len(vs) > 0 {
				return vs[0]
			}
		}
	}
	return ""
}

// keyEntry loads an API key's caller and secret, from cache when fresh.
func (s *Server) keyEntry(ctx context.Context, apiKey string) (*keyEntry, error) {
	if e := s.keys.get(apiKey); e != nil {
		return e, nil
	}
	var u models.User
	err := s.DB.NewSelect().Model(&u).Where("api_key = ?", apiKey).Limit(1).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errUnauthorized
	}
	if err != nil {
		return nil, err
	}
	caller, err := s.loadCaller(ctx, &u)
	if err != nil {
		return nil, err
	}
	secret, err := s.Secrets.Decrypt(u.SecretKeyCipher)
	if err != nil {
		s.Log.Error("cannot decrypt a user's secret key", "user", u.UUID, "err", err)
		return nil, errUnauthorized
	}
	e := &keyEntry{caller: *caller, secret: []byte(secret), expires: time.Now().Add(keyTTL)}
	s.keys.put(apiKey, e)
	return e, nil
}

// loadCaller loads the account, domain and role of a user and checks that
// all are enabled.
func (s *Server) loadCaller(ctx context.Context, u *models.User) (*Caller, error) {
	c := &Caller{User: *u}
	if err := s.DB.NewSelect().Model(&c.Account).Where("id = ?", u.AccountID).Scan(ctx); err != nil {
		return nil, errUnauthorized
	}
	if err := s.DB.NewSelect().Model(&c.Domain).Where("id = ?", c.Account.DomainID).Scan(ctx); err != nil {
		return nil, errUnauthorized
	}
	if err := s.DB.NewSelect().Model(&c.Role).Where("id = ?", c.Account.RoleID).Scan(ctx); err != nil {
		return nil, errUnauthorized
	}
	if u.State != "enabled" || c.Account.State != "enabled" || c.Domain.State != "Active" {
		return nil, cserr.New(cserr.Unauthorized, "user, account or domain is disabled or locked")
	}
	return c, nil
}

// rootCaller is the admin user, for the no-auth benchmark baseline.
func (s *Server) rootCaller(ctx context.Context) (*Caller, error) {
	var u models.User
	err := s.DB.NewSelect().Model(&u).
		Join("JOIN accounts AS a ON a.id = u.account_id").
		Where("a.uuid = ?", models.AdminAccountUUID).Limit(1).Scan(ctx)
	if err != nil {
		return nil, errUnauthorized
	}
	return s.loadCaller(ctx, &u)
}

// verifySignature checks CloudStack's request signature: parameters sorted
// by name without "signature", values URL-encoded, joined with &, the whole
// string lower-cased, HMAC-SHA1 with the secret, base64. Java's URLEncoder
// (the server CloudStack clients were written against) and Go's
// QueryEscape (what cloudstack-go uses) differ on '*' and '~'; either
// canonical form is accepted. Comparison is constant-time.
func verifySignature(raw url.Values, secret []byte, sig string) bool {
	want, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return false
	}
	ok := 0
	for _, enc := range []func(string) string{javaURLEncode, goQueryEscape} {
		mac := hmac.New(sha1.New, secret)
		mac.Write([]byte(strings.ToLower(canonical(raw, enc))))
		ok |= subtle.ConstantTimeCompare(mac.Sum(nil), want)
	}
	return ok == 1
}

// canonical builds the string to sign.
func canonical(raw url.Values, enc func(string) string) string {
	keys := make([]string, 0, len(raw))
	for k := range raw {
		if strings.EqualFold(k, "signature") {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		for _, v := range raw[k] {
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			b.WriteString(k)
			b.WriteByte('=')
			b.WriteString(enc(v))
		}
	}
	return b.String()
}

func goQueryEscape(v string) string {
	return strings.ReplaceAll(url.QueryEscape(v), "+", "%20")
}

// javaURLEncode is java.net.URLEncoder.encode(v, "UTF-8") with "+" as "%20":
// it keeps A-Z a-z 0-9 . - * _ and escapes everything else.
func javaURLEncode(v string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		ch := v[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9',
			ch == '.', ch == '-', ch == '*', ch == '_':
			b.WriteByte(ch)
		case ch == ' ':
			b.WriteString("%20")
		default:
			b.WriteByte('%')
			b.WriteByte(hex[ch>>4])
			b.WriteByte(hex[ch&15])
		}
	}
	return b.String()
}

// Sign computes a request signature the way clients do (for tests, the
// benchmark and the web UI's helpers).
func Sign(params url.Values, secret string) string {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(strings.ToLower(canonical(params, javaURLEncode))))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// authorize checks the caller's role lets it call the command.
func (s *Server) authorize(ctx context.Context, c *Caller, cmd *Command) error {
	if s.allowed(ctx, c, cmd) {
		return nil
	}
	return cserr.New(cserr.MethodNotAllowed, "the API %s is not allowed for the caller's role", cmd.Name)
}

// allowed decides by the command's default access for the caller's role
// type. Role permission rules refine this (roles.go).
func (s *Server) allowed(ctx context.Context, c *Caller, cmd *Command) bool {
	return cmd.Access&c.access() != 0
}

// sessionKeyOf finds a session key in the parameters or the cookie.
func sessionKeyOf(c *gin.Context, raw url.Values) string {
	if v := first(raw, "sessionkey"); v != "" {
		return v
	}
	if ck, err := c.Cookie("sessionkey"); err == nil {
		return ck
	}
	return ""
}

// sessionCaller resolves a session key (sessions.go fills this in).
func (s *Server) sessionCaller(ctx context.Context, key string) (*Caller, error) {
	return nil, errUnauthorized
}

// rateLimit applies the per-key request limit (ratelimit.go fills this in).
func (s *Server) rateLimit(c *Caller) error { return nil }
