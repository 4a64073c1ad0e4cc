// Package local is the image store driver for secondary storage this
// machine reaches as a directory: file:///dir, or an NFS export mounted at
// <mount root>/<server>/<export> (registered as provider NFS). Templates are
// downloaded for real over HTTP(S) with net/http.
//
// A download goes to <path>.part, is checksummed, fsynced and renamed into
// place, so the final path never holds a partial file. Transient failures
// (connection errors, 5xx, a stalled or cut transfer) are retried a bounded
// number of times, resuming with a Range request where the server allows
// it, then fail with ErrUnreachable. Final failures (404, bad checksum, too
// big) remove the partial file. When the caller's context ends (activity
// timeout, worker shutdown) the partial file stays, and the next attempt
// resumes from it.
package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

var _ storage.ImageStoreDriver = (*Driver)(nil)

const (
	driverName = "NFS"
	partSuffix = ".part"
	metaSuffix = ".part.json"
)

func init() {
	storage.RegisterImageStore(storage.ProviderNFS, func(cfg storage.Config) (storage.ImageStoreDriver, error) {
		o := Options{MountRoot: cfg.Options["mountroot"]}
		if o.MountRoot == "" && cfg.DataDir != "" {
			o.MountRoot = filepath.Join(cfg.DataDir, "mnt")
		}
		return New(o), nil
	})
}

// Options tunes the driver; zero values take the defaults.
type Options struct {
	MountRoot     string        // where nfs://server/export is mounted, as MountRoot/server/export
	Client        *http.Client  // nil = a client with connect and header timeouts
	Attempts      int           // tries of one download on transient failures; default 4
	Backoff       time.Duration // wait before the second try, doubling after; default 1s
	StallTimeout  time.Duration // give up a try that receives nothing for this long; default 60s
	ProgressEvery time.Duration // least time between progress reports; default 500ms
}

// Driver is the local image store driver.
type Driver struct {
	storage.UnsupportedImageStore
	o Options
}

// New returns a driver.
func New(o Options) *Driver {
	if o.Client == nil {
		o.Client = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			MaxIdleConnsPerHost:   4,
			DisableCompression:    true, // the bytes as served: lengths and ranges stay exact
		}}
	}
	if o.Attempts <= 0 {
		o.Attempts = 4
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = time.Minute
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = 500 * time.Millisecond
	}
	return &Driver{UnsupportedImageStore: storage.UnsupportedImageStore{DriverName: driverName}, o: o}
}

// Provider is "NFS".
func (d *Driver) Provider() string { return storage.ProviderNFS }

// root is the store's directory: created for file:// stores, required to
// exist (mounted) for NFS ones.
func (d *Driver) root(op string, s storage.ImageStore) (string, error) {
	dir, mounted, err := storage.LocalDir(s.URL, d.o.MountRoot)
	if err != nil {
		return "", hypervisor.Errorf(driverName, op, s.URL, nil, "%w", err)
	}
	if mounted {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return "", hypervisor.Errorf(driverName, op, s.URL, storage.ErrUnreachable, "export is not mounted at %s", dir)
		}
		return dir, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", hypervisor.Errorf(driverName, op, s.URL, storage.ErrUnreachable, "%w", err)
	}
	return dir, nil
}

// path resolves a store-relative path, refusing ones that leave the store.
func (d *Driver) path(op string, s storage.ImageStore, rel string) (string, error) {
	clean := filepath.Clean(rel)
	if rel == "" || filepath.IsAbs(rel) || clean == "." || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", hypervisor.Errorf(driverName, op, rel, storage.ErrInvalid, "want a relative path inside the store")
	}
	root, err := d.root(op, s)
	if err != nil {
		return "", err
	}
	return filepath.Join(root, clean), nil
}

// Stat reports a file, or a directory with the total size of its files.
func (d *Driver) Stat(ctx context.Context, s storage.ImageStore, rel string) (storage.Image, error) {
	p, err := d.path("Stat", s, rel)
	if err != nil {
		return storage.Image{}, err
	}
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return storage.Image{}, hypervisor.Errorf(driverName, "Stat", rel, storage.ErrNotFound, "")
	}
	if err != nil {
		return storage.Image{}, hypervisor.Errorf(driverName, "Stat", rel, nil, "%w", err)
	}
	img := storage.Image{Path: rel, SizeBytes: fi.Size()}
	if fi.IsDir() {
		img.SizeBytes = 0
		err = filepath.WalkDir(p, func(_ string, e fs.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() {
				if info, ierr := e.Info(); ierr == nil {
					img.SizeBytes += info.Size()
				}
			}
			return err
		})
	}
	return img, err
}

// Delete removes a file (with any partial download of it) or a directory.
func (d *Driver) Delete(ctx context.Context, s storage.ImageStore, rel string) error {
	p, err := d.path("Delete", s, rel)
	if err != nil {
		return err
	}
	for _, q := range []string{p, p + partSuffix, p + metaSuffix} {
		if err := os.RemoveAll(q); err != nil {
			return hypervisor.Errorf(driverName, "Delete", rel, nil, "%w", err)
		}
	}
	return nil
}

// Capacity reports the file system holding the store.
func (d *Driver) Capacity(ctx context.Context, s storage.ImageStore) (storage.StoreStats, error) {
	root, err := d.root("Capacity", s)
	if err != nil {
		return storage.StoreStats{}, err
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(root, &st); err != nil {
		return storage.StoreStats{}, hypervisor.Errorf(driverName, "Capacity", s.URL, storage.ErrUnreachable, "%w", err)
	}
	bs := int64(st.Bsize)
	return storage.StoreStats{
		TotalBytes:     int64(st.Blocks) * bs,
		UsedBytes:      int64(st.Blocks-st.Bfree) * bs,
		AvailableBytes: int64(st.Bavail) * bs,
	}, nil
}

// partMeta is what a resumed download must know of the partial file.
type partMeta struct {
	URL          string `json:"url"`
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"lastModified,omitempty"`
}

var errStalled = errors.New("stalled")

// DownloadTemplate downloads req.URL to req.Path; see the package doc.
func (d *Driver) DownloadTemplate(ctx context.Context, s storage.ImageStore, req storage.DownloadRequest, progress storage.ProgressFunc) (storage.Image, error) {
	const op = "DownloadTemplate"
	u, err := url.Parse(req.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return storage.Image{}, hypervisor.Errorf(driverName, op, req.URL, storage.ErrInvalid, "want an http:// or https:// url")
	}
	sum, err := storage.ParseChecksum(req.Checksum)
	if err != nil {
		return storage.Image{}, hypervisor.Errorf(driverName, op, req.URL, nil, "%w", err)
	}
	dest, err := d.path(op, s, req.Path)
	if err != nil {
		return storage.Image{}, err
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return storage.Image{}, hypervisor.Errorf(driverName, op, req.Path, nil, "%w", err)
	}
	if img, ok := d.existing(dest, req.Path, sum); ok {
		progress.Report(img.SizeBytes, img.SizeBytes)
		return img, nil
	}

	part := dest + partSuffix
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return storage.Image{}, hypervisor.Errorf(driverName, op, req.Path, nil, "%w", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return storage.Image{}, hypervisor.Errorf(driverName, op, req.Path, nil, "a download to this path is already running")
	}
	discard := func() {
		os.Remove(part)
		os.Remove(dest + metaSuffix)
	}

	size, digest, err := d.fetch(ctx, f, dest+metaSuffix, req, sum, progress)
	if err != nil {
		if ctx.Err() == nil {
			discard() // final failure: leave nothing behind
		}
		return storage.Image{}, err
	}
	if !sum.Matches(digest) {
		discard()
		return storage.Image{}, hypervisor.Errorf(driverName, op, req.URL, storage.ErrInvalid,
			"checksum mismatch: downloaded %d bytes with %s, expected %s", size, sum.Of(digest), sum)
	}
	info, err := storage.CheckImageFormat(f, size, req.Format)
	if err != nil {
		discard()
		return storage.Image{}, hypervisor.Errorf(driverName, op, req.URL, nil, "%w", err)
	}
	if err := f.Sync(); err != nil {
		discard()
		return storage.Image{}, hypervisor.Errorf(driverName, op, req.Path, nil, "%w", err)
	}
	if err := os.Rename(part, dest); err != nil {
		discard()
		return storage.Image{}, hypervisor.Errorf(driverName, op, req.Path, nil, "%w", err)
	}
	os.Remove(dest + metaSuffix)
	if dir, err := os.Open(filepath.Dir(dest)); err == nil {
		dir.Sync()
		dir.Close()
	}
	return storage.Image{Path: req.Path, SizeBytes: size, Checksum: sum.Of(digest).String(), VirtualSizeBytes: info.VirtualSizeBytes}, nil
}

// existing tells whether dest already holds the image: any file when no
// checksum is given, else one with that checksum (a stale one is removed).
func (d *Driver) existing(dest, rel string, sum storage.Checksum) (storage.Image, bool) {
	f, err := os.Open(dest)
	if err != nil {
		return storage.Image{}, false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return storage.Image{}, false
	}
	img := storage.Image{Path: rel, SizeBytes: fi.Size()}
	if info, err := storage.ReadImageInfo(f, fi.Size()); err == nil {
		img.VirtualSizeBytes = info.VirtualSizeBytes
	}
	if sum.IsZero() {
		return img, true
	}
	h := sum.New()
	if _, err := io.Copy(h, f); err != nil {
		return storage.Image{}, false
	}
	if !sum.Matches(h.Sum(nil)) {
		os.Remove(dest)
		return storage.Image{}, false
	}
	img.Checksum = sum.String()
	return img, true
}

// fetch runs attempts until one completes, a final error, the caller's
// context ends, or the attempts run out (ErrUnreachable).
func (d *Driver) fetch(ctx context.Context, f *os.File, metaPath string, req storage.DownloadRequest, sum storage.Checksum, progress storage.ProgressFunc) (int64, []byte, error) {
	backoff := d.o.Backoff
	for attempt := 1; ; attempt++ {
		size, digest, retry, err := d.attempt(ctx, f, metaPath, req, sum, progress)
		if err == nil {
			return size, digest, nil
		}
		if ctx.Err() != nil {
			return 0, nil, hypervisor.Errorf(driverName, "DownloadTemplate", req.URL, nil, "%w (partial download kept for resuming)", ctx.Err())
		}
		if !retry {
			return 0, nil, err
		}
		if attempt >= d.o.Attempts {
			return 0, nil, hypervisor.Errorf(driverName, "DownloadTemplate", req.URL, storage.ErrUnreachable, "gave up after %d attempts: %w", attempt, err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// attempt makes one request and appends what it receives to f, resuming
// from f's size when the server can. retry says whether a failure is
// transient.
func (d *Driver) attempt(ctx context.Context, f *os.File, metaPath string, req storage.DownloadRequest, sum storage.Checksum, progress storage.ProgressFunc) (size int64, digest []byte, retry bool, err error) {
	const op = "DownloadTemplate"
	transient := func(format string, args ...any) (int64, []byte, bool, error) {
		return 0, nil, true, hypervisor.Errorf(driverName, op, req.URL, nil, format, args...)
	}
	final := func(kind error, format string, args ...any) (int64, []byte, bool, error) {
		return 0, nil, false, hypervisor.Errorf(driverName, op, req.URL, kind, format, args...)
	}
	st, err := f.Stat()
	if err != nil {
		return final(nil, "%w", err)
	}
	offset := st.Size()
	var meta partMeta
	if b, err := os.ReadFile(metaPath); err == nil {
		json.Unmarshal(b, &meta)
	}
	validator := meta.ETag
	if validator == "" || strings.HasPrefix(validator, "W/") {
		validator = meta.LastModified
	}
	if offset > 0 && (meta.URL != req.URL || validator == "") {
		offset = 0 // cannot tell the partial file is of the same content
	}

	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	hreq, err := http.NewRequestWithContext(actx, http.MethodGet, req.URL, nil)
	if err != nil {
		return final(storage.ErrInvalid, "%w", err)
	}
	if offset > 0 {
		hreq.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
		hreq.Header.Set("If-Range", validator)
	}
	resp, err := d.o.Client.Do(hreq)
	if err != nil {
		return transient("%w", err)
	}
	defer resp.Body.Close()
	switch code := resp.StatusCode; {
	case code == http.StatusOK:
		offset = 0
	case code == http.StatusPartialContent && offset > 0:
		var start int64 = -1
		fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-", &start)
		if start != offset {
			os.Remove(metaPath)
			f.Truncate(0)
			return transient("server resumed at byte %d, not %d", start, offset)
		}
	case code == http.StatusNotFound || code == http.StatusGone:
		return final(storage.ErrNotFound, "the server answered %s", resp.Status)
	case code == http.StatusRequestedRangeNotSatisfiable:
		os.Remove(metaPath)
		f.Truncate(0)
		return transient("the server answered %s to a resumed download", resp.Status)
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		return transient("the server answered %s", resp.Status)
	default:
		return final(storage.ErrInvalid, "the server answered %s", resp.Status)
	}
	total := int64(-1)
	if resp.ContentLength >= 0 {
		total = offset + resp.ContentLength
	}
	if req.MaxBytes > 0 && total > req.MaxBytes {
		return final(storage.ErrInvalid, "image of %d bytes is over the limit of %d", total, req.MaxBytes)
	}
	if err := f.Truncate(offset); err != nil {
		return final(nil, "%w", err)
	}
	m := partMeta{URL: req.URL, ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified")}
	if b, err := json.Marshal(m); err == nil {
		os.WriteFile(metaPath, b, 0o644)
	}

	h := sum.New()
	if offset > 0 { // the digest covers the bytes already there
		if _, err := io.Copy(h, io.NewSectionReader(f, 0, offset)); err != nil {
			return final(nil, "%w", err)
		}
	}
	done, err := d.copyBody(actx, cancel, f, offset, resp.Body, h, req.MaxBytes, total, progress)
	if err != nil {
		if errors.Is(context.Cause(actx), errStalled) {
			return transient("no data for %v after %d bytes", d.o.StallTimeout, done)
		}
		if errors.Is(err, syscall.ENOSPC) {
			return final(storage.ErrCapacity, "%w", err)
		}
		var limit limitError
		if errors.As(err, &limit) {
			return final(storage.ErrInvalid, "%v", err)
		}
		var werr writeError
		if errors.As(err, &werr) {
			return final(nil, "%v", err)
		}
		return transient("after %d bytes: %w", done, err)
	}
	if total >= 0 && done != total {
		return transient("the transfer ended at byte %d of %d", done, total)
	}
	progress.Report(done, done)
	return done, h.Sum(nil), false, nil
}

type limitError struct{ max int64 }

func (e limitError) Error() string {
	return "image is over the limit of " + strconv.FormatInt(e.max, 10) + " bytes"
}

type writeError struct{ error }

func (e writeError) Unwrap() error { return e.error }

// copyBody appends the body to f at offset, hashing it, reporting progress
// and cancelling the request when nothing arrives for StallTimeout.
func (d *Driver) copyBody(ctx context.Context, cancel context.CancelCauseFunc, f *os.File, offset int64, body io.Reader, h hash.Hash,
	maxBytes, total int64, progress storage.ProgressFunc) (int64, error) {
	stall := time.AfterFunc(d.o.StallTimeout, func() { cancel(errStalled) })
	defer stall.Stop()
	done := offset
	progress.Report(done, total)
	last := time.Now()
	buf := make([]byte, 256<<10)
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			stall.Reset(d.o.StallTimeout)
			if maxBytes > 0 && done+int64(n) > maxBytes {
				return done, limitError{maxBytes}
			}
			if _, err := f.WriteAt(buf[:n], done); err != nil {
				return done, writeError{err}
			}
			h.Write(buf[:n])
			done += int64(n)
			if time.Since(last) >= d.o.ProgressEvery {
				progress.Report(done, total)
				last = time.Now()
			}
		}
		if rerr == io.EOF {
			return done, nil
		}
		if rerr != nil {
			return done, rerr
		}
		if ctx.Err() != nil {
			return done, ctx.Err()
		}
	}
}
