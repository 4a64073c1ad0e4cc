// Command vcsim runs govmomi's vCenter simulator standalone, shaped for
// Nimbus (see infra/hypervisor/vsphere/vcsim), so that `nimbus dev` users
// can try the vSphere driver without a vCenter. It prints the vCenter's
// URL and login, the addCluster and createStoragePool URLs to use, and
// serves a tiny OVA to register as a VMware template.
//
//	go run ./cmd/vcsim [-listen 127.0.0.1:8989] [-hosts 3] [-datastores 2]
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor/vsphere/vcsim"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8989", "host:port the vCenter answers on (https)")
	hosts := flag.Int("hosts", 3, "ESXi hosts in the cluster DC0_C0")
	datastores := flag.Int("datastores", 2, "datastores (LocalDS_0...) shared by every host")
	vms := flag.Int("vms", 0, "VMs per host created with the inventory")
	user := flag.String("username", "administrator@vsphere.local", "the login the vCenter accepts")
	password := flag.String("password", "nimbus", "its password")
	ovaListen := flag.String("ova-listen", "127.0.0.1:8990", "host:port serving /tiny.ova over http (empty: none)")
	flag.Parse()
	if err := run(*listen, *hosts, *datastores, *vms, *user, *password, *ovaListen); err != nil {
		fmt.Fprintln(os.Stderr, "vcsim:", err)
		os.Exit(1)
	}
}

func run(listen string, hosts, datastores, vms int, user, password, ovaListen string) error {
	sim, err := vcsim.Start(vcsim.Options{Hosts: hosts, Datastores: datastores, VMs: vms, Listen: listen, Username: user, Password: password})
	if err != nil {
		return err
	}
	defer sim.Close()
	fmt.Printf("vCenter simulator on https://%s/sdk (self-signed certificate, SHA-256 thumbprint %s)\n", sim.Host, sim.Thumbprint())
	fmt.Printf("  login:    %s / %s\n", sim.Username, sim.Password)
	fmt.Printf("  addCluster:        hypervisor=VMware clustertype=ExternalManaged clustername=DC0_C0 url=%s username=%s password=%s\n",
		sim.ClusterURL(), sim.Username, sim.Password)
	for i := range datastores {
		fmt.Printf("  createStoragePool: url=%s\n", sim.PoolURL(fmt.Sprintf("LocalDS_%d", i)))
	}
	fmt.Printf("  traffic labels:    vmwarenetworklabel \"VM Network\" (standard) or \"DC0_DVPG0\" (distributed)\n")
	if ovaListen != "" {
		ova := vcsim.OVA("tiny", 64)
		sum := sha256.Sum256(ova)
		ln, err := net.Listen("tcp", ovaListen)
		if err != nil {
			return err
		}
		srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/tiny.ova" {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "application/x-tar")
			_, _ = w.Write(ova)
		})}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				fmt.Fprintln(os.Stderr, "vcsim: ova server:", err)
			}
		}()
		defer srv.Close()
		fmt.Printf("  registerTemplate:  format=OVA hypervisor=VMware url=http://%s/tiny.ova checksum={SHA-256}%s\n", ln.Addr(), hex.EncodeToString(sum[:]))
	}
	fmt.Println("Ctrl-C stops it; its inventory lives in memory only.")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return nil
}
