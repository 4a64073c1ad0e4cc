package vsphere_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/vmware/govmomi/vim25/soap"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/vsphere"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/vsphere/vcsim"
)

// TestCertificateVerified: the simulator's self-signed certificate is
// refused unless the cluster URL gives its thumbprint (SHA-256 or SHA-1,
// any case, with or without colons) or says insecure=true; a wrong
// thumbprint is refused with the certificate's own in the error.
func TestCertificateVerified(t *testing.T) {
	sim, err := vcsim.Start(vcsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	ctx := context.Background()
	base := "https://" + sim.Host + "/DC0/DC0_C0"
	sha1 := strings.ToLower(strings.ReplaceAll(soap.ThumbprintSHA1(sim.Server.Certificate()), ":", ""))
	wrong := strings.Repeat("AB:", 31) + "AB"
	for name, tc := range map[string]struct {
		url  string
		want []string // in the error; none: success
	}{
		"sha-256 thumbprint":    {url: base + "?thumbprint=" + sim.Thumbprint()},
		"sha-1, lower, bare":    {url: base + "?thumbprint=" + sha1},
		"insecure":              {url: base + "?insecure=true"},
		"no thumbprint":         {url: base, want: []string{"not trusted", sim.Thumbprint(), "?thumbprint="}},
		"wrong thumbprint":      {url: base + "?thumbprint=" + wrong, want: []string{"does not match thumbprint " + wrong, sim.Thumbprint()}},
		"malformed thumbprint":  {url: base + "?thumbprint=xyz", want: []string{"SHA-256"}},
		"missing CA file":       {url: base + "?cafile=/nonexistent/ca.pem", want: []string{"CA file"}},
		"insecure not a bool":   {url: base + "?insecure=maybe", want: []string{"true or false"}},
		"insecure=false refuse": {url: base + "?insecure=false", want: []string{"not trusted"}},
	} {
		d := vsphere.New(hypervisor.Config{})
		hosts, err := d.DiscoverHosts(ctx, hypervisor.Cluster{URL: tc.url, Username: sim.Username, Password: sim.Password})
		d.Close()
		if len(tc.want) == 0 {
			if err != nil || len(hosts) != 3 {
				t.Errorf("%s: DiscoverHosts = %d hosts, %v", name, len(hosts), err)
			} else if !strings.HasSuffix(hosts[0].URL, "?"+strings.SplitN(tc.url, "?", 2)[1]) {
				t.Errorf("%s: a host's URL %s does not keep the cluster's trust", name, hosts[0].URL)
			}
			continue
		}
		if !errors.Is(err, hypervisor.ErrInvalid) {
			t.Errorf("%s: DiscoverHosts = %v, want invalid", name, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not say %q", name, err, w)
			}
		}
	}
}
