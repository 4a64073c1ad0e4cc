// Package pxe is Nimbus's provisioning server for BareMetal hosts: what a
// machine that PXE-boots needs after DHCP, over HTTP, so iPXE (in the NIC's
// ROM, or chainloaded) fetches it:
//
//	GET /pxe/boot.ipxe            the DHCP boot file: chains to the script of the booting MAC
//	GET /pxe/script?mac=MAC       that machine's iPXE script: the kernel and initrd of the
//	                              template being deployed on it, or "exit" (boot from disk)
//	GET /pxe/files/TOKEN/vmlinuz  the kernel and initrd, streamed out of the template
//	GET /pxe/files/TOKEN/initrd.img
//	GET /pxe/done/TOKEN           the installed system's callback: the host is provisioned
//	                              (also /pxe/done?token=TOKEN[&mac=MAC], GET or POST)
//
// The kernel gets nimbus.callback=<the done URL> on its command line; the
// system it boots calls it when it is up (or installed), which completes
// the deployment waiting on it. TOKEN names one provisioning, so files are
// served only to the machine being provisioned, and only meanwhile.
//
// A BareMetal template is a tar archive (gzip-compressed or not) holding
// vmlinuz (or kernel), initrd.img (or initrd), and optionally cmdline (the
// kernel arguments), registered with hypervisor BareMetal and format
// BAREMETAL; it is downloaded to secondary storage like any template and
// served from there.
//
// The server knows nothing of the inventory: a Store answers for it.
package pxe

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
)

// Errors a Store returns.
var (
	ErrNotFound = errors.New("not found")        // nothing pending for that MAC / token
	ErrConflict = errors.New("token mismatch")   // a callback for another provisioning
	ErrInvalid  = errors.New("invalid template") // the archive lacks a kernel or initrd
)

// Boot is what one machine boots now.
type Boot struct {
	Token       string // names this provisioning
	Cmdline     string // kernel arguments (the template's cmdline)
	Description string // shown on the machine's console
}

// Store is the inventory side of the server.
type Store interface {
	// Boot tells what the machine with this MAC is to boot; ErrNotFound
	// when nothing is being provisioned on it.
	Boot(ctx context.Context, mac string) (Boot, error)
	// Image opens the template archive of a provisioning in progress;
	// ErrNotFound for an unknown or finished token.
	Image(ctx context.Context, token string) (io.ReadCloser, error)
	// Done records the callback of a provisioning (from the machine with
	// this MAC, when the caller said); ErrNotFound or ErrConflict when it
	// is not the pending one. A repeated callback is success.
	Done(ctx context.Context, mac, token string) error
}

// Server serves the provisioning endpoints.
type Server struct {
	Store   Store
	BaseURL string // how machines reach this server, e.g. http://10.0.0.2:8081
	Log     *slog.Logger
}

// Handler is the server's routes under /pxe/.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /pxe/boot.ipxe", s.bootFile)
	mux.HandleFunc("GET /pxe/script", s.script)
	mux.HandleFunc("GET /pxe/files/{token}/{name}", s.file)
	mux.HandleFunc("GET /pxe/done", s.done)
	mux.HandleFunc("POST /pxe/done", s.done)
	mux.HandleFunc("GET /pxe/done/{token}", s.done)
	mux.HandleFunc("POST /pxe/done/{token}", s.done)
	mux.HandleFunc("GET /pxe/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	return mux
}

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}

func (s *Server) base() string { return strings.TrimSuffix(s.BaseURL, "/") }

// bootFile is what DHCP names: it hands over to the booting NIC's script.
func (s *Server) bootFile(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "#!ipxe\necho Nimbus provisioning: asking for the script of ${netX/mac}\nchain --autofree %s/pxe/script?mac=${netX/mac} || exit\n", s.base())
}

// NormalizeMAC reads aa:bb:cc:dd:ee:ff in any common spelling.
func NormalizeMAC(mac string) (string, error) {
	hw, err := net.ParseMAC(strings.TrimSpace(mac))
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("bad MAC %q", mac)
	}
	return hw.String(), nil
}

func (s *Server) script(w http.ResponseWriter, r *http.Request) {
	mac, err := NormalizeMAC(r.URL.Query().Get("mac"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	b, err := s.Store.Boot(r.Context(), mac)
	if errors.Is(err, ErrNotFound) {
		s.log().Info("pxe: nothing to provision; booting from disk", "mac", mac, "from", r.RemoteAddr)
		fmt.Fprintf(w, "#!ipxe\necho Nimbus: nothing to provision on %s; booting from the next device\nexit\n", mac)
		return
	}
	if err != nil {
		s.log().Error("pxe: boot script", "mac", mac, "err", err)
		http.Error(w, "#!ipxe\necho Nimbus: "+err.Error()+"\nexit 1\n", http.StatusInternalServerError)
		return
	}
	// The callback carries the token in its path: iPXE scripts treat "&&"
	// and "||" as operators, so the kernel line keeps clear of "&".
	files := s.base() + "/pxe/files/" + url.PathEscape(b.Token)
	args := strings.TrimSpace(strings.Join(strings.Fields(b.Cmdline), " ") + " nimbus.callback=" + s.base() + "/pxe/done/" + url.PathEscape(b.Token))
	s.log().Info("pxe: provisioning script", "mac", mac, "from", r.RemoteAddr, "what", b.Description)
	fmt.Fprintf(w, "#!ipxe\necho Nimbus: %s\nkernel %s/vmlinuz initrd=initrd.img %s\ninitrd --name initrd.img %s/initrd.img\nboot\n",
		oneLine(b.Description), files, args, files)
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func (s *Server) file(w http.ResponseWriter, r *http.Request) {
	token, name := r.PathValue("token"), r.PathValue("name")
	var want []string
	switch name {
	case "vmlinuz":
		want = KernelNames
	case "initrd.img":
		want = InitrdNames
	default:
		http.NotFound(w, r)
		return
	}
	rc, err := s.Store.Image(r.Context(), token)
	if errors.Is(err, ErrNotFound) {
		http.Error(w, "no provisioning in progress with that token", http.StatusNotFound)
		return
	}
	if err != nil {
		s.log().Error("pxe: open template", "token", token, "err", err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer rc.Close()
	m, size, err := Member(rc, want...)
	if err != nil {
		s.log().Error("pxe: template archive", "token", token, "file", name, "err", err)
		http.Error(w, err.Error(), http.StatusUnprocessableEntity)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	start := time.Now()
	n, err := io.Copy(w, m)
	s.log().Info("pxe: served", "file", name, "bytes", n, "in", time.Since(start).Round(time.Millisecond), "to", r.RemoteAddr, "err", err)
}

func (s *Server) done(w http.ResponseWriter, r *http.Request) {
	var mac string
	if m := r.URL.Query().Get("mac"); m != "" {
		var err error
		if mac, err = NormalizeMAC(m); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	token := r.PathValue("token")
	if token == "" {
		token = r.URL.Query().Get("token")
	}
	if token == "" {
		http.Error(w, "no token", http.StatusBadRequest)
		return
	}
	err := s.Store.Done(r.Context(), mac, token)
	switch {
	case err == nil:
		s.log().Info("pxe: provisioned", "token", token, "from", r.RemoteAddr)
		_, _ = io.WriteString(w, "ok\n")
	case errors.Is(err, ErrNotFound):
		http.Error(w, "no provisioning in progress with that token", http.StatusNotFound)
	case errors.Is(err, ErrConflict):
		http.Error(w, "that token is not the provisioning in progress on "+mac, http.StatusConflict)
	default:
		s.log().Error("pxe: callback", "mac", mac, "err", err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// Names a template archive's members may have (their base name).
var (
	KernelNames  = []string{"vmlinuz", "kernel", "bzImage", "linux"}
	InitrdNames  = []string{"initrd.img", "initrd", "initramfs.img", "initramfs", "initrd.gz"}
	CmdlineNames = []string{"cmdline", "cmdline.txt"}
)

// tarReader reads a tar archive, gunzipping it first when it is gzipped.
func tarReader(r io.Reader) (*tar.Reader, error) {
	br := bufio.NewReader(r)
	if head, err := br.Peek(2); err == nil && head[0] == 0x1f && head[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		return tar.NewReader(gz), nil
	}
	return tar.NewReader(br), nil
}

// Member finds the first regular file whose base name is one of names and
// returns a reader of it (valid until r is read otherwise) and its size.
func Member(r io.Reader, names ...string) (io.Reader, int64, error) {
	tr, err := tarReader(r)
	if err != nil {
		return nil, 0, err
	}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, 0, fmt.Errorf("%w: the archive holds no %s", ErrInvalid, strings.Join(names, " or "))
		}
		if err != nil {
			return nil, 0, fmt.Errorf("%w: not a tar archive: %v", ErrInvalid, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		base := path.Base(h.Name)
		for _, n := range names {
			if base == n {
				return tr, h.Size, nil
			}
		}
	}
}

// Contents checks a template archive and reads its kernel arguments: it
// must hold a kernel and an initrd.
func Contents(r io.Reader) (cmdline string, err error) {
	tr, err := tarReader(r)
	if err != nil {
		return "", err
	}
	var kernel, initrd bool
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("%w: not a tar archive: %v", ErrInvalid, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		base := path.Base(h.Name)
		switch {
		case contains(KernelNames, base):
			kernel = true
		case contains(InitrdNames, base):
			initrd = true
		case contains(CmdlineNames, base) && h.Size < 4096:
			b, err := io.ReadAll(tr)
			if err != nil {
				return "", fmt.Errorf("%w: %v", ErrInvalid, err)
			}
			cmdline = oneLine(string(b))
		}
	}
	if !kernel || !initrd {
		return "", fmt.Errorf("%w: a BareMetal template is a tar archive holding vmlinuz and initrd.img (found kernel %v, initrd %v)", ErrInvalid, kernel, initrd)
	}
	return cmdline, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Start listens on addr (failing at once when it cannot) and serves in
// the background until ctx ends; the returned channel closes when the
// server has stopped.
func (s *Server) Start(ctx context.Context, addr string) (<-chan struct{}, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("provisioning server: listen on %s: %w", addr, err)
	}
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log().Error("provisioning server stopped", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	s.log().Info("provisioning server listening", "addr", ln.Addr().String(), "boot_file", s.base()+"/pxe/boot.ipxe")
	return done, nil
}
