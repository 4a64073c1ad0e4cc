package api

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"
)

// sdkSign signs exactly as cloudstack-go v2.16.1 does (newRawRequest).
func sdkSign(params url.Values, secret string) string {
	h := hmac.New(sha1.New, []byte(secret))
	h.Write([]byte(strings.ToLower(cloudstack.EncodeValues(params))))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

func TestCanonicalString(t *testing.T) {
	cases := []struct {
		name   string
		params url.Values
		java   string // CloudStack server's (URLEncoder) form
		sdk    string // cloudstack-go's form
	}{
		{"plain", url.Values{"command": {"listZones"}, "apiKey": {"KEY"}, "response": {"json"}},
			"apikey=key&command=listzones&response=json", ""},
		{"signature left out", url.Values{"command": {"x"}, "signature": {"abc"}, "Signature": {"def"}},
			"command=x", ""},
		{"space is %20", url.Values{"name": {"a b"}}, "name=a%20b", ""},
		{"star kept", url.Values{"name": {"a*b"}}, "name=a*b", ""},
		{"tilde", url.Values{"name": {"a~b"}}, "name=a%7eb", "name=a~b"},
		{"plus escaped", url.Values{"name": {"a+b"}}, "name=a%2bb", ""},
		{"reserved", url.Values{"v": {"/?&=#%:@,;$!'()"}}, "v=%2f%3f%26%3d%23%25%3a%40%2c%3b%24%21%27%28%29", ""},
		{"unreserved", url.Values{"v": {"AZaz09.-_"}}, "v=azaz09.-_", ""},
		{"unicode", url.Values{"name": {"é日本"}}, "name=%c3%a9%e6%97%a5%e6%9c%ac", ""},
		{"sorted by name as sent", url.Values{"alpha": {"2"}, "Zeta": {"1"}, "beta": {"3"}},
			"zeta=1&alpha=2&beta=3", ""},
		{"map parameter", url.Values{"tags[0].key": {"k"}, "tags[0].value": {"v v"}},
			"tags[0].key=k&tags[0].value=v%20v", ""},
		{"several values", url.Values{"a": {"1", "2"}}, "a=1&a=2", ""},
		{"empty value", url.Values{"a": {""}, "b": {"x"}}, "a=&b=x", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := canonical(tc.params, false); got != tc.java {
				t.Errorf("java form = %q, want %q", got, tc.java)
			}
			sdk := tc.sdk
			if sdk == "" {
				sdk = tc.java
			}
			if got := canonical(tc.params, true); got != sdk {
				t.Errorf("sdk form = %q, want %q", got, sdk)
			}
			// The SDK form is byte for byte what cloudstack-go signs.
			p := url.Values{}
			for k, v := range tc.params {
				if !strings.EqualFold(k, "signature") {
					p[k] = v
				}
			}
			if want := strings.ToLower(cloudstack.EncodeValues(p)); canonical(tc.params, true) != want {
				t.Errorf("sdk form = %q, cloudstack-go signs %q", canonical(tc.params, true), want)
			}
		})
	}
}

func TestCheckSignature(t *testing.T) {
	const secret = "s3cr3t-Key_value"
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	base := func(kv ...string) url.Values {
		v := url.Values{"command": {"listApis"}, "apiKey": {"KEY"}, "response": {"json"}}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}
	odd := "a b*c~d+e/f=g&h%i é 日本 'x' \"y\" <z>"
	future := now.Add(time.Minute).Format("2006-01-02T15:04:05-0700")
	past := now.Add(-time.Second).Format("2006-01-02T15:04:05-0700")
	cases := []struct {
		name   string
		params url.Values
		sign   func(url.Values) string
		edit   func(url.Values) // after signing
		ok     bool
	}{
		{"java v2", base("name", odd), func(v url.Values) string { return Sign(v, secret) }, nil, true},
		{"sdk v2", base("name", odd), func(v url.Values) string { return sdkSign(v, secret) }, nil, true},
		{"sdk v2 tilde only", base("name", "~"), func(v url.Values) string { return sdkSign(v, secret) }, nil, true},
		{"wrong secret", base(), func(v url.Values) string { return Sign(v, secret+"x") }, nil, false},
		{"tampered value", base("name", "a"), func(v url.Values) string { return Sign(v, secret) },
			func(v url.Values) { v.Set("name", "b") }, false},
		{"added parameter", base(), func(v url.Values) string { return Sign(v, secret) },
			func(v url.Values) { v.Set("listall", "true") }, false},
		{"removed parameter", base("name", "a"), func(v url.Values) string { return Sign(v, secret) },
			func(v url.Values) { v.Del("name") }, false},
		{"case of a value is not signed (CloudStack lower-cases)", base("name", "abc"), func(v url.Values) string { return Sign(v, secret) },
			func(v url.Values) { v.Set("name", "ABC") }, true},
		{"not base64", base(), func(url.Values) string { return "!!!" }, nil, false},
		{"short", base(), func(url.Values) string { return "AAAA" }, nil, false},
		{"v3 with expires", base("signatureVersion", "3", "expires", future), func(v url.Values) string { return Sign(v, secret) }, nil, true},
		{"v3 sdk form", base("signatureversion", "3", "expires", future), func(v url.Values) string { return sdkSign(v, secret) }, nil, true},
		{"v3 RFC 3339 expires", base("signatureVersion", "3", "expires", now.Add(time.Hour).Format(time.RFC3339)), func(v url.Values) string { return Sign(v, secret) }, nil, true},
		{"v3 without expires", base("signatureVersion", "3"), func(v url.Values) string { return Sign(v, secret) }, nil, false},
		{"v3 expired", base("signatureVersion", "3", "expires", past), func(v url.Values) string { return Sign(v, secret) }, nil, false},
		{"v3 expires now", base("signatureVersion", "3", "expires", now.Format("2006-01-02T15:04:05-0700")), func(v url.Values) string { return Sign(v, secret) }, nil, false},
		{"v3 bad expires", base("signatureVersion", "3", "expires", "tomorrow"), func(v url.Values) string { return Sign(v, secret) }, nil, false},
		{"v3 expires moved", base("signatureVersion", "3", "expires", future), func(v url.Values) string { return Sign(v, secret) },
			func(v url.Values) { v.Set("expires", now.Add(time.Hour).Format("2006-01-02T15:04:05-0700")) }, false},
		{"v2 with past expires", base("expires", past), func(v url.Values) string { return Sign(v, secret) }, nil, false},
		{"v3 dropped to v2", base("signatureVersion", "3", "expires", past), func(v url.Values) string { return Sign(v, secret) },
			func(v url.Values) { v.Del("signatureVersion") }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sig := tc.sign(tc.params)
			if tc.edit != nil {
				tc.edit(tc.params)
			}
			err := checkSignature(tc.params, []byte(secret), sig, now)
			if (err == nil) != tc.ok {
				t.Fatalf("checkSignature = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestCheckParamNames(t *testing.T) {
	for _, ok := range []string{"command", "apiKey", "details[0].cpuNumber", "tags[1].key", "_", "a-b"} {
		if err := checkParamNames(url.Values{ok: {"x"}}); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"a=b", "a&b", "a b", "é", "", strings.Repeat("a", 129), "a\x00"} {
		if err := checkParamNames(url.Values{bad: {"x"}}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestSDKSignedRequests drives a real cloudstack-go client, GET and POST,
// with awkward values through the HTTP server.
func TestSDKSignedRequests(t *testing.T) {
	ts := newTestServer(t, nil)
	values := []string{"plain", "with spaces", "star*", "tilde~", "*~ both", "plus+and&amp=eq", "é日本語", "100%", "'; DROP TABLE users; --", "a/b?c#d"}
	for _, post := range []bool{false, true} {
		cs := cloudstack.NewClient(ts.URL, ts.Admin.APIKey, ts.Admin.SecretKey, false)
		cs.HTTPGETOnly = !post
		for _, v := range values {
			p := &cloudstack.CustomServiceParams{}
			p.SetParam("value", v)
			var out map[string]string
			var err error
			custom := cloudstack.NewCustomService(cs).(*cloudstack.CustomService)
			if post {
				err = custom.CustomPostRequest("nimbusTestEcho", p, &out)
			} else {
				err = custom.CustomRequest("nimbusTestEcho", p, &out)
			}
			if err != nil {
				t.Fatalf("post=%v value %q: %v", post, v, err)
			}
			if out["value"] != v {
				t.Fatalf("post=%v: echoed %q, sent %q", post, out["value"], v)
			}
		}
		// A wrong secret fails with 401 through the SDK too.
		bad := cloudstack.NewClient(ts.URL, ts.Admin.APIKey, ts.Admin.SecretKey+"x", false)
		bad.HTTPGETOnly = !post
		_, err := bad.APIDiscovery.ListApis(bad.APIDiscovery.NewListApisParams())
		if err == nil || !strings.Contains(err.Error(), "401") {
			t.Fatalf("post=%v wrong secret: err = %v, want a 401", post, err)
		}
	}
}

// TestKeyCacheNoDBRoundTrip: a known key is served from the cache; a
// request still authenticates after the DB row is gone (until the TTL or an
// invalidation), which shows no per-request lookup happens.
func TestKeyCacheNoDBRoundTrip(t *testing.T) {
	ts := newTestServer(t, nil)
	u := ts.addUser("5e1a5d2c-0000-4000-8000-000000000013")
	if r := ts.signed(u.APIKey, u.Secret, cmdParams("listApis")); r.Status != 200 {
		t.Fatalf("first call: %s", r)
	}
	if _, err := ts.S.DB.NewUpdate().Table("users").Set("api_key = NULL").Where("id = ?", u.User.ID).Exec(t.Context()); err != nil {
		t.Fatal(err)
	}
	if r := ts.signed(u.APIKey, u.Secret, cmdParams("listApis")); r.Status != 200 {
		t.Fatalf("cached call: %s", r)
	}
	ts.S.InvalidateKeys()
	wantError(t, ts.signed(u.APIKey, u.Secret, cmdParams("listApis")), 401, "")
}

// BenchmarkCheckSignature is the per-request cost of verifying a signature
// (the only per-request work signing adds once the key is cached).
func BenchmarkCheckSignature(b *testing.B) {
	params := url.Values{"command": {"listZones"}, "apiKey": {strings.Repeat("k", 64)}, "response": {"json"},
		"listall": {"true"}, "keyword": {"some zone"}, "page": {"1"}, "pagesize": {"100"}}
	params.Set("signature", Sign(params, "secret"))
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if err := checkSignature(params, []byte("secret"), params.Get("signature"), now); err != nil {
			b.Fatal(err)
		}
	}
}
