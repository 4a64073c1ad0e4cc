package local

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nimbus-cloud/nimbus/infra/storage"
)

// template is the image every test serves: 3 MiB of random bytes.
var template = func() []byte {
	b := make([]byte, 3<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}()

func sha256Of(b []byte) string { s := sha256.Sum256(b); return "{SHA-256}" + hex.EncodeToString(s[:]) }

// slowReader hands out data in small pieces with pauses, so a download
// takes long enough for progress to be seen moving.
type slowReader struct {
	*bytes.Reader
	pause time.Duration
}

func (r slowReader) Read(p []byte) (int, error) {
	time.Sleep(r.pause)
	return r.Reader.Read(p[:min(len(p), 128<<10)])
}

// server serves the template at /tpl.qcow2 (with ranges, ETag) and counts
// requests; handler, when set, answers instead for the first requests it
// accepts (it returns false to let the normal path serve).
type server struct {
	*httptest.Server
	hits    atomic.Int32
	ranges  []string
	mu      sync.Mutex
	pause   time.Duration
	handler func(n int, w http.ResponseWriter, r *http.Request) bool
}

func newServer(t *testing.T) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(s.hits.Add(1))
		s.mu.Lock()
		s.ranges = append(s.ranges, r.Header.Get("Range"))
		s.mu.Unlock()
		if s.handler != nil && s.handler(n, w, r) {
			return
		}
		if r.URL.Path != "/tpl.qcow2" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("ETag", `"tpl-v1"`)
		http.ServeContent(w, r, "tpl.qcow2", time.Unix(1700000000, 0), seeker{slowReader{bytes.NewReader(template), s.pause}})
	}))
	t.Cleanup(s.Close)
	return s
}

type seeker struct{ slowReader }

func (s seeker) Seek(off int64, whence int) (int64, error) { return s.Reader.Seek(off, whence) }

func newDriver() *Driver {
	return New(Options{Attempts: 3, Backoff: 10 * time.Millisecond, StallTimeout: 200 * time.Millisecond, ProgressEvery: time.Millisecond})
}

func store(t *testing.T) (storage.ImageStore, string) {
	t.Helper()
	dir := t.TempDir()
	return storage.ImageStore{ID: "s1", Provider: "NFS", URL: "file://" + dir}, dir
}

// leftovers lists what a download left in the store other than want.
func leftovers(t *testing.T, dir string, want ...string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			for _, w := range want {
				if w == rel {
					return nil
				}
			}
			out = append(out, rel)
		}
		return nil
	})
	return out
}

func TestDownloadTemplate(t *testing.T) {
	md := md5.Sum(template)
	tests := map[string]struct {
		path     string // URL path
		checksum string
		maxBytes int64
		handler  func(n int, w http.ResponseWriter, r *http.Request) bool
		kind     error  // nil = success
		message  string // part of the error
		hits     int    // requests made, 0 = don't check
	}{
		"sha-256":   {path: "/tpl.qcow2", checksum: sha256Of(template), hits: 1},
		"plain md5": {path: "/tpl.qcow2", checksum: hex.EncodeToString(md[:]), hits: 1},
		"none":      {path: "/tpl.qcow2", hits: 1},
		"bad checksum": {path: "/tpl.qcow2", checksum: "{SHA-256}" + strings.Repeat("0", 64),
			kind: storage.ErrInvalid, message: "checksum mismatch", hits: 1},
		"malformed checksum": {path: "/tpl.qcow2", checksum: "{SHA-256}abc", kind: storage.ErrInvalid, hits: -1},
		"404":                {path: "/missing.qcow2", kind: storage.ErrNotFound, message: "404 Not Found", hits: 1},
		"403": {path: "/tpl.qcow2", kind: storage.ErrInvalid, message: "403 Forbidden", hits: 1,
			handler: func(n int, w http.ResponseWriter, r *http.Request) bool { w.WriteHeader(403); return true }},
		"503 twice then ok": {path: "/tpl.qcow2", checksum: sha256Of(template), hits: 3,
			handler: func(n int, w http.ResponseWriter, r *http.Request) bool {
				if n <= 2 {
					w.WriteHeader(503)
					return true
				}
				return false
			}},
		"503 always": {path: "/tpl.qcow2", kind: storage.ErrUnreachable, message: "gave up after 3 attempts", hits: 3,
			handler: func(n int, w http.ResponseWriter, r *http.Request) bool { w.WriteHeader(503); return true }},
		"connection dropped always": {path: "/tpl.qcow2", kind: storage.ErrUnreachable, hits: 3,
			handler: func(n int, w http.ResponseWriter, r *http.Request) bool {
				c, _, _ := w.(http.Hijacker).Hijack()
				c.Close()
				return true
			}},
		"cut mid-body, resumed": {path: "/tpl.qcow2", checksum: sha256Of(template), hits: 2,
			handler: func(n int, w http.ResponseWriter, r *http.Request) bool {
				if n > 1 {
					return false
				}
				cutAfter(w, len(template)/3)
				return true
			}},
		"stalled, resumed": {path: "/tpl.qcow2", checksum: sha256Of(template), hits: 2,
			handler: func(n int, w http.ResponseWriter, r *http.Request) bool {
				if n > 1 {
					return false
				}
				w.Header().Set("ETag", `"tpl-v1"`)
				w.Header().Set("Content-Length", "3145728")
				w.Write(template[:1<<20])
				w.(http.Flusher).Flush()
				<-r.Context().Done() // then nothing
				return true
			}},
		"over the limit": {path: "/tpl.qcow2", maxBytes: 1 << 20, kind: storage.ErrInvalid, message: "over the limit", hits: 1},
		"not http":       {path: "", kind: storage.ErrInvalid, hits: -1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			srv := newServer(t)
			srv.handler = tc.handler
			st, dir := store(t)
			d := newDriver()
			url := srv.URL + tc.path
			if tc.path == "" {
				url = "ftp://example.com/tpl"
			}
			var reports []storage.Progress
			img, err := d.DownloadTemplate(context.Background(), st, storage.DownloadRequest{
				URL: url, Path: "template/tmpl/2/201/tpl.qcow2", Checksum: tc.checksum, MaxBytes: tc.maxBytes,
			}, func(p storage.Progress) { reports = append(reports, p) })
			if tc.hits > 0 && int(srv.hits.Load()) != tc.hits {
				t.Errorf("%d requests, want %d", srv.hits.Load(), tc.hits)
			}
			if tc.hits < 0 && srv.hits.Load() != 0 {
				t.Errorf("%d requests, want none", srv.hits.Load())
			}
			if tc.kind != nil {
				if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.message) {
					t.Fatalf("err %v, want kind %v with %q", err, tc.kind, tc.message)
				}
				if left := leftovers(t, dir); len(left) != 0 {
					t.Errorf("failed download left %v", left)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join(dir, "template/tmpl/2/201/tpl.qcow2"))
			if err != nil || !bytes.Equal(got, template) {
				t.Fatalf("stored file differs (%d bytes, %v)", len(got), err)
			}
			if img.SizeBytes != int64(len(template)) || img.Path != "template/tmpl/2/201/tpl.qcow2" || img.Checksum == "" {
				t.Errorf("image %+v", img)
			}
			if tc.checksum != "" && !strings.EqualFold(img.Checksum, tc.checksum) && !strings.HasSuffix(img.Checksum, tc.checksum) {
				t.Errorf("checksum %s, want %s", img.Checksum, tc.checksum)
			}
			if last := reports[len(reports)-1]; last.Done != int64(len(template)) || last.Percent() != 100 {
				t.Errorf("last progress %+v", last)
			}
			if left := leftovers(t, dir, "template/tmpl/2/201/tpl.qcow2"); len(left) != 0 {
				t.Errorf("download left %v", left)
			}
			if strings.Contains(name, "resumed") {
				srv.mu.Lock()
				if r := srv.ranges[len(srv.ranges)-1]; !strings.HasPrefix(r, "bytes=") || r == "bytes=0-" {
					t.Errorf("second request did not resume: Range %q", r)
				}
				srv.mu.Unlock()
			}
		})
	}
}

// cutAfter sends headers and the first n bytes, then drops the connection.
func cutAfter(w http.ResponseWriter, n int) {
	c, buf, _ := w.(http.Hijacker).Hijack()
	buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 3145728\r\nETag: \"tpl-v1\"\r\nContent-Type: application/octet-stream\r\n\r\n")
	buf.Write(template[:n])
	buf.Flush()
	c.Close()
}

func TestDownloadProgressMoves(t *testing.T) {
	srv := newServer(t)
	srv.pause = 5 * time.Millisecond // ~24 reads of 128 KiB
	st, _ := store(t)
	var reports []storage.Progress
	_, err := newDriver().DownloadTemplate(context.Background(), st, storage.DownloadRequest{URL: srv.URL + "/tpl.qcow2", Path: "t.qcow2"},
		func(p storage.Progress) { reports = append(reports, p) })
	if err != nil {
		t.Fatal(err)
	}
	distinct := 0
	for i, p := range reports {
		if p.Total != int64(len(template)) {
			t.Fatalf("report %+v without the total", p)
		}
		if i > 0 && p.Done < reports[i-1].Done {
			t.Fatalf("progress went back: %+v", reports)
		}
		if i == 0 || p.Done != reports[i-1].Done {
			distinct++
		}
	}
	if distinct < 5 {
		t.Errorf("progress hardly moved: %+v", reports)
	}
}

func TestDownloadUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	st, dir := store(t)
	start := time.Now()
	_, err = newDriver().DownloadTemplate(context.Background(), st, storage.DownloadRequest{URL: "http://" + addr + "/tpl.qcow2", Path: "t.qcow2"}, nil)
	if !errors.Is(err, storage.ErrUnreachable) || !strings.Contains(err.Error(), "gave up after 3 attempts") {
		t.Fatalf("err %v", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("took %v", el)
	}
	if left := leftovers(t, dir); len(left) != 0 {
		t.Errorf("left %v", left)
	}
}

func TestDownloadCancelledResumes(t *testing.T) {
	srv := newServer(t)
	srv.pause = 20 * time.Millisecond
	st, dir := store(t)
	d := newDriver()
	req := storage.DownloadRequest{URL: srv.URL + "/tpl.qcow2", Path: "t.qcow2", Checksum: sha256Of(template)}
	ctx, cancel := context.WithCancel(context.Background())
	_, err := d.DownloadTemplate(ctx, st, req, func(p storage.Progress) {
		if p.Done > 1<<20 {
			cancel() // the activity timed out or the worker is stopping
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "t.qcow2")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a partial file is at the final path")
	}
	fi, err := os.Stat(filepath.Join(dir, "t.qcow2"+partSuffix))
	if err != nil || fi.Size() == 0 {
		t.Fatalf("no partial file kept for resuming: %v", err)
	}
	srv.pause = 0
	if _, err := d.DownloadTemplate(context.Background(), st, req, nil); err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	if r := srv.ranges[len(srv.ranges)-1]; r == "" {
		t.Error("the retry did not resume")
	}
	srv.mu.Unlock()
	if got, _ := os.ReadFile(filepath.Join(dir, "t.qcow2")); !bytes.Equal(got, template) {
		t.Fatal("resumed file differs")
	}
}

func TestDownloadIdempotent(t *testing.T) {
	srv := newServer(t)
	st, dir := store(t)
	d := newDriver()
	req := storage.DownloadRequest{URL: srv.URL + "/tpl.qcow2", Path: "a/t.qcow2", Checksum: sha256Of(template)}
	for i := 0; i < 2; i++ {
		if _, err := d.DownloadTemplate(context.Background(), st, req, nil); err != nil {
			t.Fatal(err)
		}
	}
	if srv.hits.Load() != 1 {
		t.Errorf("%d requests for one image", srv.hits.Load())
	}
	// A stale file with another checksum is replaced.
	os.WriteFile(filepath.Join(dir, "a/t.qcow2"), []byte("old"), 0o644)
	if _, err := d.DownloadTemplate(context.Background(), st, req, nil); err != nil {
		t.Fatal(err)
	}
	if srv.hits.Load() != 2 {
		t.Errorf("stale file not replaced")
	}
	// Another download of the same path running elsewhere is refused.
	part, _ := os.OpenFile(filepath.Join(dir, "b.qcow2"+partSuffix), os.O_CREATE|os.O_RDWR, 0o644)
	defer part.Close()
	syscall.Flock(int(part.Fd()), syscall.LOCK_EX)
	_, err := d.DownloadTemplate(context.Background(), st, storage.DownloadRequest{URL: req.URL, Path: "b.qcow2"}, nil)
	if err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("concurrent download: %v", err)
	}
}

func TestStatDeleteCapacity(t *testing.T) {
	st, dir := store(t)
	d := newDriver()
	ctx := context.Background()
	os.MkdirAll(filepath.Join(dir, "snapshots/2/7"), 0o755)
	os.WriteFile(filepath.Join(dir, "snapshots/2/7/a"), make([]byte, 100), 0o644)
	os.WriteFile(filepath.Join(dir, "snapshots/2/7/b"), make([]byte, 50), 0o644)
	os.WriteFile(filepath.Join(dir, "t.qcow2"), make([]byte, 10), 0o644)
	os.WriteFile(filepath.Join(dir, "t.qcow2"+partSuffix), make([]byte, 3), 0o644)
	tests := map[string]struct {
		do   func() (any, error)
		want any
		kind error
	}{
		"stat file":        {do: func() (any, error) { i, err := d.Stat(ctx, st, "t.qcow2"); return i.SizeBytes, err }, want: int64(10)},
		"stat dir":         {do: func() (any, error) { i, err := d.Stat(ctx, st, "snapshots/2"); return i.SizeBytes, err }, want: int64(150)},
		"stat missing":     {do: func() (any, error) { return d.Stat(ctx, st, "nope") }, kind: storage.ErrNotFound},
		"stat outside":     {do: func() (any, error) { return d.Stat(ctx, st, "../etc/passwd") }, kind: storage.ErrInvalid},
		"delete the store": {do: func() (any, error) { return nil, d.Delete(ctx, st, ".") }, kind: storage.ErrInvalid},
		"delete absolute":  {do: func() (any, error) { return nil, d.Delete(ctx, st, "/etc") }, kind: storage.ErrInvalid},
		"capacity": {do: func() (any, error) {
			c, err := d.Capacity(ctx, st)
			return c.TotalBytes > 0 && c.AvailableBytes > 0 && c.UsedBytes <= c.TotalBytes, err
		}, want: true},
		"nfs not mounted": {do: func() (any, error) {
			return New(Options{MountRoot: t.TempDir()}).Capacity(ctx, storage.ImageStore{URL: "nfs://10.9.9.9/export"})
		}, kind: storage.ErrUnreachable},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := tc.do()
			if tc.kind != nil {
				if !errors.Is(err, tc.kind) {
					t.Fatalf("err %v, want %v", err, tc.kind)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	for _, p := range []string{"t.qcow2", "snapshots/2", "t.qcow2", "never-was"} {
		if err := d.Delete(ctx, st, p); err != nil {
			t.Fatalf("Delete(%s): %v", p, err)
		}
	}
	if left := leftovers(t, dir); len(left) != 0 {
		t.Errorf("left %v", left)
	}
	// An NFS store mounted under the mount root works like a directory.
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "10.0.0.5/export/sec"), 0o755)
	nfs := New(Options{MountRoot: root})
	os.WriteFile(filepath.Join(root, "10.0.0.5/export/sec/x"), []byte("x"), 0o644)
	if img, err := nfs.Stat(ctx, storage.ImageStore{URL: "nfs://10.0.0.5/export/sec"}, "x"); err != nil || img.SizeBytes != 1 {
		t.Errorf("nfs stat %+v %v", img, err)
	}
}

func TestRegisteredAsNFS(t *testing.T) {
	d, err := storage.OpenImageStore("nfs", storage.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if d.Provider() != "NFS" {
		t.Errorf("provider %s", d.Provider())
	}
}
