package api

import (
	"net/url"
	"path"
	"strings"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/vsphere"
)

// vcenterSource reads registerTemplate's url when it names a template or
// VM in a vCenter (vsphere://<vcenter>[:port]/<datacenter>/<path>); nil
// for any other url. Such a template is checked in the vCenter of its zone
// and never downloaded, so it takes no checksum, and an ISO cannot be one.
func vcenterSource(c *Call, iso bool) (*vsphere.TemplateSource, error) {
	raw := strings.TrimSpace(c.Str("url"))
	if !vsphere.IsTemplateSource(raw) {
		return nil, nil
	}
	if iso {
		return nil, cserr.Param("url %s: an ISO is registered from an HTTP(S) URL", clip(raw, 200))
	}
	src, err := vsphere.ParseTemplateSource(raw)
	if err != nil {
		return nil, cserr.Param("%s", strings.TrimPrefix(err.Error(), "invalid: "))
	}
	if strings.TrimSpace(c.Str("checksum")) != "" {
		return nil, cserr.Param("url %s: a vCenter template is not downloaded, so it takes no checksum", clip(raw, 200))
	}
	return &src, nil
}

// refuseOVF refuses an OVA template whose url is a bare OVF descriptor
// (its disks beside it on the server) up front: secondary storage holds
// one file per template, and a descriptor alone would fail the download
// later as "not an OVA" with nothing to say why.
func refuseOVF(raw, format string) error {
	u, err := url.Parse(raw)
	if err != nil || format != "OVA" || !strings.EqualFold(path.Ext(u.Path), ".ovf") {
		return nil
	}
	return cserr.Param("url %s: an OVF descriptor with its disks beside it is not supported yet: pack it as an OVA (tar of the .ovf first, then the files it references), or register the template from vCenter (vsphere://<vcenter>/<datacenter>/<template>)", clip(raw, 200))
}
