package api

import (
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
