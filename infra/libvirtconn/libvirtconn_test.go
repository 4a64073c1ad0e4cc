package libvirtconn

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

func TestParse(t *testing.T) {
	tests := map[string]struct {
		url       string
		transport string
		host      string
		port      string
		remote    string
		err       error
	}{
		"local qemu":        {url: "qemu:///system", transport: "unix", remote: "qemu:///system"},
		"local lxc":         {url: "lxc:///", transport: "unix", remote: "lxc:///"},
		"local lxc bare":    {url: "lxc://", transport: "unix", remote: "lxc:///"},
		"local xen":         {url: "xen:///", transport: "unix", remote: "xen:///"},
		"test driver":       {url: "test:///default", transport: "unix", remote: "test:///default"},
		"tcp":               {url: "qemu+tcp://10.0.0.5/system", transport: "tcp", host: "10.0.0.5", remote: "qemu:///system"},
		"tcp port":          {url: "qemu+tcp://10.0.0.5:16000/system", transport: "tcp", host: "10.0.0.5", port: "16000", remote: "qemu:///system"},
		"tls":               {url: "qemu+tls://kvm1.example.com/system?no_verify=1", transport: "tls", host: "kvm1.example.com", remote: "qemu:///system"},
		"no transport tls":  {url: "qemu://kvm1/system", transport: "tls", host: "kvm1", remote: "qemu:///system"},
		"ssh":               {url: "qemu+ssh://root@10.0.0.6:2222/system", transport: "ssh", host: "10.0.0.6", port: "2222", remote: "qemu:///system"},
		"libssh":            {url: "qemu+libssh://10.0.0.6/system", transport: "ssh", host: "10.0.0.6", remote: "qemu:///system"},
		"lxc over ssh":      {url: "lxc+ssh://10.0.0.6/", transport: "ssh", host: "10.0.0.6", remote: "lxc:///"},
		"name override":     {url: "qemu+tcp://h/system?name=qemu:///session", transport: "tcp", host: "h", remote: "qemu:///session"},
		"http":              {url: "http://10.0.0.5", err: hypervisor.ErrInvalid},
		"unknown driver":    {url: "vbox:///session", err: hypervisor.ErrInvalid},
		"unknown transport": {url: "qemu+foo://h/system", err: hypervisor.ErrInvalid},
		"unix with host":    {url: "qemu+unix://h/system", err: hypervisor.ErrInvalid},
		"tcp without host":  {url: "qemu+tcp:///system", err: hypervisor.ErrInvalid},
		"qemu no path":      {url: "qemu+tcp://h", err: hypervisor.ErrInvalid},
		"bad port":          {url: "qemu+tcp://h:99999/system", err: hypervisor.ErrInvalid},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := Parse(tc.url)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("Parse(%q) = %+v, %v; want %v", tc.url, got, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Transport != tc.transport || got.Host != tc.host || got.Port != tc.port || got.RemoteURI != tc.remote {
				t.Fatalf("Parse(%q) = %+v", tc.url, got)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	if got := Redact("qemu+ssh://root:secret@h/system"); got != "qemu+ssh://root:xxxxx@h/system" {
		t.Fatal(got)
	}
}

// libvirtURL is the local libvirtd's URL, or skips when none runs.
func libvirtURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("NIMBUS_TEST_LIBVIRT")
	if u == "" {
		t.Skip("NIMBUS_TEST_LIBVIRT is unset: no libvirtd to test against (scripts/services.sh starts one)")
	}
	return u
}

func TestGetSharesAndDrops(t *testing.T) {
	u := libvirtURL(t)
	p := NewPool()
	t.Cleanup(func() { p.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, url := range []string{u, "test:///default", "lxc:///"} {
		l, err := p.Get(ctx, url, "", "")
		if err != nil {
			t.Fatalf("Get %s: %v", url, err)
		}
		if _, err := l.ConnectGetVersion(); err != nil {
			t.Fatalf("%s version: %v", url, err)
		}
		l2, err := p.Get(ctx, url, "", "")
		if err != nil || l2 != l {
			t.Fatalf("second Get %s = %p, %v; want the same connection %p", url, l2, err, l)
		}
		uri, err := l.ConnectGetUri()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s opened %s", url, uri)
	}

	l, _ := p.Get(ctx, u, "", "")
	p.Drop(u)
	l2, err := p.Get(ctx, u, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if l2 == l {
		t.Fatal("Get after Drop returned the dropped connection")
	}
}

func TestGetUnreachable(t *testing.T) {
	// A port nothing listens on: refused at once.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := NewPool()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = p.Get(ctx, "qemu+tcp://"+addr+"/system", "", "")
	if !errors.Is(err, hypervisor.ErrUnreachable) {
		t.Fatalf("Get on a closed port = %v; want ErrUnreachable", err)
	}
	_, err = p.Get(ctx, "qemu:///system?socket=/nonexistent/libvirt-sock", "", "")
	if !errors.Is(err, hypervisor.ErrUnreachable) {
		t.Fatalf("Get on a missing socket = %v; want ErrUnreachable", err)
	}

	// A listener that accepts and never answers: the context bounds Get.
	hung, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	go func() {
		for {
			c, err := hung.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	short, cancel2 := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel2()
	start := time.Now()
	_, err = p.Get(short, "qemu+tcp://"+hung.Addr().String()+"/system", "", "")
	if !errors.Is(err, hypervisor.ErrUnreachable) || time.Since(start) > 5*time.Second {
		t.Fatalf("Get on a hung libvirtd = %v after %v; want ErrUnreachable within the deadline", err, time.Since(start))
	}
}

func TestKind(t *testing.T) {
	u := libvirtURL(t)
	p := NewPool()
	t.Cleanup(func() { p.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := p.Get(ctx, u, "", "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.DomainLookupByName("nimbus-no-such-domain")
	if !errors.Is(Kind(err), hypervisor.ErrNotFound) {
		t.Fatalf("lookup of a missing domain: %v (code %d) kind %v", err, Code(err), Kind(err))
	}
	_, err = l.DomainDefineXMLFlags("<domain", 0)
	if !errors.Is(Kind(err), hypervisor.ErrInvalid) {
		t.Fatalf("bad xml: %v (code %d) kind %v", err, Code(err), Kind(err))
	}
	werr := Wrap("KVM", "VMState", "x", err)
	if !errors.Is(werr, hypervisor.ErrInvalid) {
		t.Fatalf("Wrap lost the kind: %v", werr)
	}
}
