package api

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
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

// keyCache is a server's credential state: API keys, login sessions, role
// permission rules and rate limiters, so that a request by a known caller
// needs no database round trip to be authenticated and authorized.
type keyCache struct {
	mu sync.RWMutex
	m  map[string]*keyEntry

	sessions sessionCache
	rules    ruleCache
	limits   limiterSet
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

// InvalidateKeys drops cached credentials, sessions and role rules (after a
// user, account, role or key changes) so the next request reloads them.
func (s *Server) InvalidateKeys() {
	s.keys.mu.Lock()
	s.keys.m = map[string]*keyEntry{}
	s.keys.mu.Unlock()
	s.keys.sessions.clear()
	s.keys.rules.clear()
}

var errUnauthorized = cserr.New(cserr.Unauthorized, "unable to verify user credentials and/or request signature")

// authenticate finds the caller of a request: an API key with a valid
// signature, or else a login session key (parameter or cookie).
func (s *Server) authenticate(c *gin.Context, raw url.Values) (*Caller, error) {
	ctx := c.Request.Context()
	if s.NoAuth {
		return s.rootCaller(ctx)
	}
	apiKey := first(raw, "apiKey")
	if apiKey == "" {
		sk, err := sessionKeyOf(c, raw)
		if err != nil {
			return nil, err
		}
		if sk == "" {
			return nil, errUnauthorized
		}
		return s.sessionCaller(ctx, sk)
	}
	sig := first(raw, "signature")
	if sig == "" {
		return nil, errUnauthorized
	}
	e, err := s.keyEntry(ctx, apiKey)
	if err != nil {
		return nil, err
	}
	if err := checkSignature(raw, e.secret, sig, time.Now()); err != nil {
		return nil, err
	}
	caller := e.caller
	return &caller, nil
}

var errExpired = cserr.New(cserr.Unauthorized, "request expired or expires missing or malformed (signatureversion=3 needs expires=yyyy-MM-ddTHH:mm:ss+0000 in the future)")

// checkSignature verifies a request signed with secret: the HMAC-SHA1 of
// the canonical string (see canonical) must equal sig, compared in constant
// time. With signatureversion=3 the request must carry an expires time in
// the future; an expires given with version 2 is enforced too. The time is
// checked only after the signature, so it is a signed value.
func checkSignature(raw url.Values, secret []byte, sig string, now time.Time) error {
	want, err := base64.StdEncoding.Strict().DecodeString(sig)
	if err != nil || len(want) != sha1.Size {
		return errUnauthorized
	}
	ok := hmac.Equal(mac(secret, canonical(raw, false)), want)
	if !ok && hasTilde(raw) {
		ok = hmac.Equal(mac(secret, canonical(raw, true)), want)
	}
	if !ok {
		return errUnauthorized
	}
	exp := first(raw, "expires")
	if first(raw, "signatureVersion") == "3" && exp == "" {
		return errExpired
	}
	if exp != "" {
		t, err := parseExpires(exp)
		if err != nil || !now.Before(t) {
			return errExpired
		}
	}
	return nil
}

func mac(secret []byte, msg string) []byte {
	h := hmac.New(sha1.New, secret)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

func hasTilde(raw url.Values) bool {
	for k, vs := range raw {
		if strings.EqualFold(k, "signature") {
			continue
		}
		for _, v := range vs {
			if strings.IndexByte(v, '~') >= 0 {
				return true
			}
		}
	}
	return false
}

func parseExpires(v string) (time.Time, error) {
	for _, f := range []string{"2006-01-02T15:04:05-0700", time.RFC3339, "2006-01-02T15:04:05Z0700"} {
		if t, err := time.Parse(f, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errors.New("bad expires")
}

// first returns the first value of the first of names present, matching
// names case-insensitively.
func first(v url.Values, names ...string) string {
	for _, n := range names {
		if s := v.Get(n); s != "" {
			return s
		}
	}
	for k, vs := range v {
		for _, n := range names {
			if strings.EqualFold(k, n) && len(vs) > 0 && vs[0] != "" {
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

// rootCacheKey holds the no-auth caller in the key cache; it cannot collide
// with an API key (those are URL-safe base64).
const rootCacheKey = "\x00root"

// rootCaller is the admin user, for the no-auth benchmark baseline; it is
// cached like an API key so that the baseline does no per-request lookup.
func (s *Server) rootCaller(ctx context.Context) (*Caller, error) {
	if e := s.keys.get(rootCacheKey); e != nil {
		caller := e.caller
		return &caller, nil
	}
	var u models.User
	err := s.DB.NewSelect().Model(&u).
		Join("JOIN accounts AS a ON a.id = ?TableAlias.account_id").
		Where("a.uuid = ?", models.AdminAccountUUID).Limit(1).Scan(ctx)
	if err != nil {
		return nil, errUnauthorized
	}
	caller, err := s.loadCaller(ctx, &u)
	if err != nil {
		return nil, err
	}
	s.keys.put(rootCacheKey, &keyEntry{caller: *caller, expires: time.Now().Add(keyTTL)})
	return caller, nil
}

// canonical builds the string CloudStack signs: parameters sorted by name
// (as sent), "signature" left out, each value URL-encoded, joined as
// k=v&k=v, the whole lower-cased (ASCII; parameter names are ASCII, see
// checkParamNames, and values are percent-encoded).
//
// Values are encoded as java.net.URLEncoder does, with "+" written "%20"
// (CloudStack's server), which keeps A-Z a-z 0-9 . - * _ and escapes the
// rest. cloudstack-go encodes with url.QueryEscape, "+" as "%20" and "%2A"
// as "*": the same bytes except that it keeps '~'. sdkTilde selects that
// form; both are accepted.
func canonical(raw url.Values, sdkTilde bool) string {
	keys := make([]string, 0, len(raw))
	n := 0
	for k, vs := range raw {
		if strings.EqualFold(k, "signature") {
			continue
		}
		keys = append(keys, k)
		for _, v := range vs {
			n += len(k) + 2 + len(v)*3
		}
	}
	sort.Strings(keys)
	b := make([]byte, 0, n)
	for _, k := range keys {
		for _, v := range raw[k] {
			if len(b) > 0 {
				b = append(b, '&')
			}
			b = appendLower(b, k)
			b = append(b, '=')
			b = appendEncoded(b, v, sdkTilde)
		}
	}
	return string(b)
}

func appendLower(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch >= 'A' && ch <= 'Z' {
			ch += 'a' - 'A'
		}
		b = append(b, ch)
	}
	return b
}

// appendEncoded appends the lower-cased URL encoding of v.
func appendEncoded(b []byte, v string, keepTilde bool) []byte {
	const hex = "0123456789abcdef"
	for i := 0; i < len(v); i++ {
		ch := v[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= '0' && ch <= '9',
			ch == '.', ch == '-', ch == '*', ch == '_':
			b = append(b, ch)
		case ch >= 'A' && ch <= 'Z':
			b = append(b, ch+('a'-'A'))
		case ch == '~' && keepTilde:
			b = append(b, ch)
		default:
			b = append(b, '%', hex[ch>>4], hex[ch&15])
		}
	}
	return b
}

// javaURLEncode is java.net.URLEncoder.encode(v, "UTF-8") with "+" as "%20",
// not lower-cased: it keeps A-Z a-z 0-9 . - * _ and escapes everything else.
func javaURLEncode(v string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		ch := v[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9',
			ch == '.', ch == '-', ch == '*', ch == '_':
			b.WriteByte(ch)
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
	return base64.StdEncoding.EncodeToString(mac([]byte(secret), canonical(params, false)))
}

// EncodeSigned returns the query string of params signed with secret, the
// way CloudStack clients build it: values encoded as for the signature
// (spaces as %20, '*' kept), then &signature=.
func EncodeSigned(params url.Values, secret string) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		if !strings.EqualFold(k, "signature") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		for _, v := range params[k] {
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			b.WriteString(url.QueryEscape(k))
			b.WriteByte('=')
			b.WriteString(javaURLEncode(v))
		}
	}
	b.WriteString("&signature=")
	b.WriteString(url.QueryEscape(Sign(params, secret)))
	return b.String()
}

// checkParamNames refuses parameter names outside CloudStack's alphabet
// (letters, digits, _ . - and the [ ] of map parameters): the signature
// string does not encode names, so a name holding '=' or '&' could make
// two different requests sign alike.
func checkParamNames(v url.Values) error {
	for k := range v {
		if len(k) == 0 || len(k) > 128 {
			return cserr.Param("invalid parameter name %q", clip(k, 32))
		}
		for i := 0; i < len(k); i++ {
			ch := k[i]
			if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' ||
				ch == '_' || ch == '.' || ch == '-' || ch == '[' || ch == ']') {
				return cserr.Param("invalid parameter name %q", clip(k, 32))
			}
		}
	}
	return nil
}

// authorize checks the caller's role lets it call the command.
func (s *Server) authorize(ctx context.Context, c *Caller, cmd *Command) error {
	if s.allowed(ctx, c, cmd) {
		return nil
	}
	return cserr.New(cserr.MethodNotAllowed, "the API %s is not allowed for the caller's role", cmd.Name)
}
