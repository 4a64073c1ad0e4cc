package storage_test

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/nimbus-cloud/nimbus/infra/storage"
)

func TestParseChecksum(t *testing.T) {
	data := []byte("nimbus template")
	md := md5.Sum(data)
	s1 := sha1.Sum(data)
	s256 := sha256.Sum256(data)
	s512 := sha512.Sum512(data)
	h := func(b []byte) string { return hex.EncodeToString(b) }
	tests := map[string]struct {
		in     string
		algo   string // "" with bad=false: no checksum
		digest []byte
		bad    bool
	}{
		"empty":                  {in: ""},
		"blank":                  {in: "  "},
		"cloudstack md5":         {in: "{MD5}" + h(md[:]), algo: "MD5", digest: md[:]},
		"cloudstack sha-1":       {in: "{SHA-1}" + h(s1[:]), algo: "SHA-1", digest: s1[:]},
		"cloudstack sha-256":     {in: "{SHA-256}" + h(s256[:]), algo: "SHA-256", digest: s256[:]},
		"cloudstack sha-512":     {in: "{SHA-512}" + h(s512[:]), algo: "SHA-512", digest: s512[:]},
		"lower case sha256":      {in: "{sha256}" + strings.ToUpper(h(s256[:])), algo: "SHA-256", digest: s256[:]},
		"plain md5":              {in: h(md[:]), algo: "MD5", digest: md[:]},
		"plain sha1":             {in: h(s1[:]), algo: "SHA-1", digest: s1[:]},
		"plain sha256":           {in: h(s256[:]), algo: "SHA-256", digest: s256[:]},
		"plain sha512 uppercase": {in: strings.ToUpper(h(s512[:])), algo: "SHA-512", digest: s512[:]},
		"unknown algorithm":      {in: "{CRC32}abcd", bad: true},
		"no closing brace":       {in: "{SHA-256" + h(s256[:]), bad: true},
		"wrong length":           {in: "{SHA-256}" + h(md[:]), bad: true},
		"plain odd length":       {in: "abc", bad: true},
		"plain unknown length":   {in: strings.Repeat("ab", 24), bad: true},
		"not hex":                {in: "{MD5}" + strings.Repeat("zz", 16), bad: true},
		"algorithm only":         {in: "{MD5}", bad: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := storage.ParseChecksum(tc.in)
			if tc.bad {
				if !errors.Is(err, storage.ErrInvalid) {
					t.Fatalf("ParseChecksum(%q) = %+v, %v; want invalid", tc.in, c, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Algorithm != tc.algo {
				t.Fatalf("algorithm %q, want %q", c.Algorithm, tc.algo)
			}
			if tc.algo == "" {
				if !c.IsZero() || !c.Matches([]byte("anything")) || c.String() != "" {
					t.Errorf("zero checksum %+v", c)
				}
				return
			}
			hh := c.New()
			hh.Write(data)
			if sum := hh.Sum(nil); !c.Matches(sum) || !c.Matches(tc.digest) {
				t.Errorf("%s does not match its data", c)
			}
			if c.Matches(make([]byte, len(tc.digest))) {
				t.Errorf("%s matches zeros", c)
			}
			if c.String() != "{"+tc.algo+"}"+h(tc.digest) {
				t.Errorf("String() = %s", c)
			}
			if again, err := storage.ParseChecksum(c.String()); err != nil || again != c {
				t.Errorf("round trip %s: %+v %v", c, again, err)
			}
		})
	}
}

type fakePool struct{ storage.UnsupportedPool }

func (fakePool) Type() string { return "Simulator" }

var _ storage.PoolDriver = fakePool{}

type fakeStore struct{ storage.UnsupportedImageStore }

func (fakeStore) Provider() string { return "NFS" }

var _ storage.ImageStoreDriver = fakeStore{}

func TestRegistry(t *testing.T) {
	r := storage.NewRegistry()
	r.RegisterPool("simulator", func(storage.Config) (storage.PoolDriver, error) { return fakePool{}, nil })
	r.RegisterImageStore("nfs", func(storage.Config) (storage.ImageStoreDriver, error) { return fakeStore{}, nil })
	tests := map[string]struct {
		get     func() error
		kind    error
		message string
	}{
		"pool by type, any case": {get: func() error { _, err := r.OpenPool("SIMULATOR", storage.Config{}); return err }},
		"pool of a type without one": {get: func() error { _, err := r.GetPool("hyperv"); return err },
			kind: storage.ErrNotSupported, message: "primary storage for hypervisor type Hyperv is not supported yet"},
		"pool of an unknown type": {get: func() error { _, err := r.GetPool("bhyve"); return err }, kind: storage.ErrInvalid},
		"store by provider":       {get: func() error { _, err := r.OpenImageStore("Nfs", storage.Config{}); return err }},
		"store without driver": {get: func() error { _, err := r.GetImageStore("s3"); return err },
			kind: storage.ErrNotSupported, message: "image store provider S3 is not supported yet"},
		"unknown provider": {get: func() error { _, err := r.GetImageStore("ftp"); return err },
			kind: storage.ErrInvalid, message: `unknown image store provider "ftp" (known: NFS, S3, Swift, SMB)`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.get()
			if tc.kind == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tc.kind) {
				t.Fatalf("err %v, want %v", err, tc.kind)
			}
			if tc.message != "" && err.Error() != tc.message {
				t.Errorf("message %q, want %q", err, tc.message)
			}
		})
	}
	for name, reg := range map[string]func(){
		"pool twice":    func() { r.RegisterPool("Simulator", nil) },
		"unknown type":  func() { r.RegisterPool("Parallels", nil) },
		"store twice":   func() { r.RegisterImageStore("NFS", nil) },
		"unknown store": func() { r.RegisterImageStore("FTP", nil) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			reg()
		})
	}
	err := fakeStore{storage.UnsupportedImageStore{DriverName: "S3"}}.Delete(t.Context(), storage.ImageStore{}, "x")
	if !errors.Is(err, storage.ErrNotSupported) || err.Error() != "S3 Delete: not supported" {
		t.Errorf("unsupported: %v", err)
	}
}

func TestLocalDir(t *testing.T) {
	tests := map[string]struct {
		url, root string
		dir       string
		mounted   bool
		bad       bool
	}{
		"file url":          {url: "file:///srv/secondary", dir: "/srv/secondary"},
		"file localhost":    {url: "file://localhost/srv/x/../y", dir: "/srv/y"},
		"bare path":         {url: "/srv/secondary/", dir: "/srv/secondary"},
		"nfs":               {url: "nfs://10.0.0.5/export/secondary", root: "/mnt/nimbus", dir: "/mnt/nimbus/10.0.0.5/export/secondary", mounted: true},
		"nfs escaping root": {url: "nfs://srv/../../etc", root: "/mnt/nimbus", dir: "/mnt/nimbus/srv/etc", mounted: true},
		"nfs without root":  {url: "nfs://srv/export", bad: true},
		"nfs without path":  {url: "nfs://srv", root: "/mnt", bad: true},
		"remote file url":   {url: "file://other/srv", bad: true},
		"relative":          {url: "srv/secondary", bad: true},
		"s3":                {url: "https://s3.example.com/bucket", bad: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			dir, mounted, err := storage.LocalDir(tc.url, tc.root)
			if tc.bad {
				if !errors.Is(err, storage.ErrInvalid) {
					t.Fatalf("LocalDir(%q) = %q, %v", tc.url, dir, err)
				}
				return
			}
			if err != nil || dir != tc.dir || mounted != tc.mounted {
				t.Fatalf("LocalDir(%q) = %q, %v, %v; want %q, %v", tc.url, dir, mounted, err, tc.dir, tc.mounted)
			}
		})
	}
}

func TestProgressPercent(t *testing.T) {
	for _, tc := range []struct {
		p    storage.Progress
		want int
	}{{storage.Progress{Done: 5, Total: 10}, 50}, {storage.Progress{Done: 5, Total: -1}, -1}, {storage.Progress{Done: 11, Total: 10}, 100}} {
		if got := tc.p.Percent(); got != tc.want {
			t.Errorf("%+v: %d, want %d", tc.p, got, tc.want)
		}
	}
}
